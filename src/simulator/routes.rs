//! HTTP side of the simulator: the gatekeeper middleware (call log, latency, fault
//! injection, bearer token), request validation for the five endpoints, and the
//! `/_sim/*` control routes, which need no token and are not recorded.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::simulator::alias::validate_alias;
use crate::simulator::model::{
    asset_exists, BulkCandidate, BulkRequest, CandidateItem, CreateRequest, EditRequest, Endpoint,
    Fault, Rejection,
};
use crate::simulator::{ConnectionKill, RecordedCall, Shared};

/// Largest request body read, in bytes.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How long a request hit by the `hang` fault stays unanswered before its connection is
/// closed, so that a long-running simulator does not keep abandoned connections forever.
const HANG_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// Items per bulk request.
const MAX_BULK_ITEMS: usize = 25;
/// Asset ids per item, create or edit.
const MAX_ASSET_IDS: usize = 5;
/// Words of which a prompt must contain at least one (case-insensitive) to pass the
/// web-content intent check.
const PROMPT_INTENT_WORDS: [&str; 8] = [
    "page",
    "form",
    "site",
    "landing",
    "registration",
    "web",
    "signup",
    "website",
];
const PROMPT_INTENT_MESSAGE: &str = "Please enter a prompt that describes the web content you'd like to create (e.g., landing page, form, registration page).";
const DEFAULT_NAME_PREFIX: &str = "Bulk tent";

type SharedState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/tents/bulk", post(create_bulk))
        .route("/v1/tents", post(create_tent))
        .route("/v1/tents/", get(missing_tent_id))
        .route("/v1/tents/{tent_id}", get(tent_status))
        .route("/v1/tents/{tent_id}/edit", post(edit_tent))
        .route("/v1/bulk-jobs", get(missing_bulk_job_id))
        .route("/v1/bulk-jobs/", get(missing_bulk_job_id))
        .route("/v1/bulk-jobs/{bulk_job_id}", get(bulk_job_status))
        .route("/_sim/calls", get(sim_calls))
        .route("/_sim/credits", post(sim_credits))
        .route("/_sim/api-key", post(sim_api_key))
        .route("/_sim/healthz", get(sim_healthz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gatekeeper))
        .with_state(shared)
}

fn answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

// ---- gatekeeper ------------------------------------------------------------------

fn endpoint_of(method: &str, path: &str) -> Option<Endpoint> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["v1", "tents", "bulk"]) => Some(Endpoint::BulkCreate),
        ("POST", ["v1", "tents"]) => Some(Endpoint::Create),
        ("POST", ["v1", "tents", _, "edit"]) => Some(Endpoint::Edit),
        ("GET", ["v1", "tents", _]) => Some(Endpoint::TentStatus),
        ("GET", ["v1", "bulk-jobs", ..]) => Some(Endpoint::BulkStatus),
        _ => None,
    }
}

fn bearer_matches(headers: &HeaderMap, api_key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == api_key)
}

/// Records the call, adds latency, injects faults, checks the bearer token and finally
/// runs the handler. Faults that answer or drop "before" are injected ahead of the
/// token check, as a gateway in front of the API would; nothing is admitted then.
async fn gatekeeper(State(shared): SharedState, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let kill = request.extensions().get::<ConnectionKill>().cloned();
    let (parts, body) = request.into_parts();
    let (bytes, body_error) = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Bytes::new(), true),
    };
    let parsed = serde_json::from_slice::<Value>(&bytes).ok();
    let (authorized, latency, fault) = {
        let mut model = shared.model();
        let authorized = bearer_matches(&parts.headers, &model.config.api_key);
        let latency = model.draw_latency();
        let fault = endpoint_of(&method, &path).and_then(|e| model.roll_fault(e));
        (authorized, latency, fault)
    };
    let seq = {
        let mut calls = shared.calls_log();
        let seq = calls.len() as u64;
        calls.push(RecordedCall {
            seq,
            at_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            method,
            path,
            authorized,
            body: parsed,
            status: None,
            fault: fault.map(|f| f.label().to_owned()),
        });
        seq
    };
    let finish = |response: Response| {
        if let Some(call) = shared.calls_log().get_mut(seq as usize) {
            call.status = Some(response.status().as_u16());
        }
        response
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut response = answer(429, json!({ "error": "Too Many Requests" }));
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return finish(response);
        }
        Some(Fault::Internal) => {
            return finish(answer(500, json!({ "error": "Internal Server Error" })));
        }
        Some(Fault::Unavailable) => {
            return finish(answer(503, json!({ "error": "Service Unavailable" })));
        }
        Some(Fault::DropBefore) => return drop_connection(kill).await,
        Some(Fault::DropAfter) | Some(Fault::Hang) | None => {}
    }
    let response = if !authorized {
        answer(401, json!({ "error": "Unauthorized" }))
    } else if body_error {
        answer(413, json!({ "error": "Request body too large" }))
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    match fault {
        Some(Fault::DropAfter) => drop_connection(kill).await,
        Some(Fault::Hang) => {
            tokio::time::sleep(HANG_FOR).await;
            drop_connection(kill).await
        }
        _ => finish(response),
    }
}

/// Closes the request's connection without an answer; never returns.
async fn drop_connection(kill: Option<ConnectionKill>) -> Response {
    if let Some(ConnectionKill(token)) = kill {
        token.cancel();
    }
    // The connection task drops this future together with the connection.
    std::future::pending().await
}

async fn not_found() -> Response {
    answer(404, json!({ "error": "Not Found" }))
}

// ---- body helpers ----------------------------------------------------------------

/// Parses a JSON object body; the error is a message for a 400.
fn parse_object(bytes: &Bytes) -> Result<Map<String, Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("Request body is missing".to_owned());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("Request body must be a JSON object".to_owned()),
        Err(_) => Err("Invalid JSON body".to_owned()),
    }
}

/// An optional string field; JSON null counts as absent.
fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{key} must be a boolean")),
    }
}

fn opt_string_array(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .map(Some)
            .ok_or_else(|| format!("{key} must be an array of strings")),
        Some(_) => Err(format!("{key} must be an array of strings")),
    }
}

/// A required, non-empty string field.
fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match opt_string(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{key} is required")),
    }
}

fn prompt_has_web_intent(prompt: &str) -> bool {
    let lower = prompt.to_lowercase();
    PROMPT_INTENT_WORDS.iter().any(|w| lower.contains(w))
}

fn parse_tent_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

// ---- POST /v1/tents/bulk ---------------------------------------------------------

fn bulk_bad_request(message: impl Into<String>) -> Response {
    answer(
        400,
        json!({ "error": "Invalid request", "message": message.into() }),
    )
}

async fn create_bulk(State(shared): SharedState, body: Bytes) -> Response {
    let obj = match parse_object(&body) {
        Ok(obj) => obj,
        Err(message) => return bulk_bad_request(message),
    };
    let template_id = match required_string(&obj, "template_id") {
        Ok(t) => t,
        Err(message) => return bulk_bad_request(message),
    };
    let items = match obj.get("items") {
        Some(Value::Array(items)) if items.is_empty() => {
            return bulk_bad_request("items must contain between 1 and 25 items")
        }
        Some(Value::Array(items)) if items.len() > MAX_BULK_ITEMS => {
            return bulk_bad_request("items must contain between 1 and 25 items")
        }
        Some(Value::Array(items)) => items,
        Some(_) => return bulk_bad_request("items must be an array"),
        None => return bulk_bad_request("items is required"),
    };
    let top_level = (|| {
        let descriptor = opt_string(&obj, "client_job_descriptor")?;
        let prefix = opt_string(&obj, "default_tent_name_prefix")?;
        let start_index = match obj.get("start_index") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| "start_index must be an integer".to_owned())?,
        };
        let auto_publish = opt_bool(&obj, "auto_publish")?.unwrap_or(false);
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err("metadata must be an object".to_owned()),
        };
        Ok::<_, String>((descriptor, prefix, start_index, auto_publish, metadata))
    })();
    let (descriptor, prefix, start_index, auto_publish, metadata) = match top_level {
        Ok(t) => t,
        Err(message) => return bulk_bad_request(message),
    };
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let prefix = non_empty(prefix)
        .or_else(|| non_empty(descriptor))
        .unwrap_or_else(|| DEFAULT_NAME_PREFIX.to_owned());

    let candidates = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let counter = start_index.saturating_add(index as i64);
            examine_item(index, item, auto_publish, &format!("{prefix} {counter}"))
        })
        .collect();

    let mut model = shared.model();
    if !model.template_exists(&template_id) {
        return answer(404, json!({ "error": "Template not found" }));
    }
    let response = model.admit_bulk(
        BulkRequest {
            template_id,
            auto_publish,
            metadata,
            items: candidates,
        },
        Instant::now(),
        SystemTime::now(),
    );
    answer(202, response)
}

fn invalid_item(message: impl Into<String>) -> Rejection {
    Rejection {
        code: "INVALID_ITEM",
        message: message.into(),
    }
}

/// Validates one bulk item; `default_name` is the generated name for its position.
fn examine_item(
    index: usize,
    item: &Value,
    auto_publish: bool,
    default_name: &str,
) -> BulkCandidate {
    let client_item_id = item
        .get("client_item_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let verdict = (|| {
        let Value::Object(obj) = item else {
            return Err(invalid_item("Item must be an object"));
        };
        if !matches!(obj.get("input_data"), Some(Value::Object(_))) {
            return Err(invalid_item("input_data is required and must be an object"));
        }
        let fields = (|| {
            opt_string(obj, "client_item_id")?;
            opt_string(obj, "instructions")?;
            opt_bool(obj, "include_brand")?;
            let tent_name = opt_string(obj, "tent_name")?;
            let alias = opt_string(obj, "custom_page_alias")?;
            let asset_ids = opt_string_array(obj, "asset_ids")?.unwrap_or_default();
            Ok::<_, String>((tent_name, alias, asset_ids))
        })();
        let (tent_name, alias, asset_ids) = fields.map_err(invalid_item)?;
        if let Some(alias) = &alias {
            if !auto_publish {
                return Err(invalid_item(
                    "custom_page_alias requires top-level auto_publish: true",
                ));
            }
            if validate_alias(alias).is_err() {
                return Err(invalid_item("Invalid custom_page_alias"));
            }
        }
        if asset_ids.len() > MAX_ASSET_IDS {
            return Err(invalid_item("At most 5 asset_ids are allowed"));
        }
        if let Some(missing) = asset_ids.iter().find(|id| !asset_exists(id)) {
            return Err(Rejection {
                code: "NOT_FOUND",
                message: format!("Asset {missing} does not exist"),
            });
        }
        let tent_name = tent_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| default_name.to_owned());
        Ok(CandidateItem {
            tent_name,
            custom_page_alias: alias,
        })
    })();
    BulkCandidate {
        index,
        client_item_id,
        verdict,
    }
}

// ---- GET /v1/bulk-jobs/{id} ------------------------------------------------------

async fn missing_bulk_job_id() -> Response {
    answer(
        400,
        json!({ "error": "Invalid request", "message": "bulkJobId is missing" }),
    )
}

async fn bulk_job_status(State(shared): SharedState, Path(job_id): Path<String>) -> Response {
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return answer(
            400,
            json!({ "error": "Invalid request", "message": "bulkJobId is malformed" }),
        );
    }
    match shared.model().bulk_job(&job_id, Instant::now()) {
        Some(body) => answer(200, body),
        None => answer(404, json!({ "error": "Bulk job not found" })),
    }
}

// ---- POST /v1/tents --------------------------------------------------------------

fn create_bad_request(message: impl Into<String>) -> Response {
    answer(
        400,
        json!({ "error": "Invalid request", "message": message.into() }),
    )
}

async fn create_tent(State(shared): SharedState, body: Bytes) -> Response {
    let obj = match parse_object(&body) {
        Ok(obj) => obj,
        Err(message) => return create_bad_request(message),
    };
    let fields = (|| {
        required_string(&obj, "name")?;
        let prompt = required_string(&obj, "prompt")?;
        opt_string(&obj, "user_id")?;
        opt_bool(&obj, "include_brand")?;
        let auto_publish = opt_bool(&obj, "auto_publish")?.unwrap_or(false);
        let alias = opt_string(&obj, "custom_page_alias")?;
        let tent_id = opt_string(&obj, "tent_id")?;
        let asset_ids = opt_string_array(&obj, "asset_ids")?.unwrap_or_default();
        Ok::<_, String>((prompt, auto_publish, alias, tent_id, asset_ids))
    })();
    let (prompt, auto_publish, alias, tent_id, asset_ids) = match fields {
        Ok(f) => f,
        Err(message) => return create_bad_request(message),
    };
    if !asset_ids.is_empty() && tent_id.is_none() {
        return create_bad_request("asset_ids requires tent_id");
    }
    if asset_ids.len() > MAX_ASSET_IDS {
        return create_bad_request("At most 5 asset_ids are allowed");
    }
    let tent_id = match tent_id.as_deref().map(parse_tent_id) {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => return create_bad_request("tent_id must be a valid UUID"),
    };
    if let Some(alias) = &alias {
        if !auto_publish {
            return create_bad_request("custom_page_alias requires auto_publish: true");
        }
        if validate_alias(alias).is_err() {
            return create_bad_request("Invalid custom_page_alias");
        }
    }
    if !prompt_has_web_intent(&prompt) {
        return answer(
            400,
            json!({
                "error": "Invalid request",
                "message": PROMPT_INTENT_MESSAGE,
                "code": "INVALID_PROMPT_INTENT",
            }),
        );
    }
    let request = CreateRequest {
        auto_publish,
        custom_page_alias: alias,
        tent_id,
        asset_ids,
    };
    match shared
        .model()
        .create_tent(request, Instant::now(), SystemTime::now())
    {
        Ok(body) => answer(202, body),
        Err(e) => answer(e.status, e.body),
    }
}

// ---- POST /v1/tents/{id}/edit ----------------------------------------------------

/// Edit's 400 answers use the issue list shape the edit page documents.
fn edit_bad_request(path: &str, message: impl Into<String>) -> Response {
    answer(
        400,
        json!({
            "error": "Invalid request body",
            "details": { "issues": [ { "path": path, "message": message.into() } ] }
        }),
    )
}

async fn edit_tent(
    State(shared): SharedState,
    Path(raw_tent_id): Path<String>,
    body: Bytes,
) -> Response {
    let obj = match parse_object(&body) {
        Ok(obj) => obj,
        Err(message) => return edit_bad_request("", message),
    };
    if let Err(message) = required_string(&obj, "prompt") {
        return edit_bad_request("prompt", message);
    }
    let checks: [(&str, Result<(), String>); 2] = [
        ("include_brand", opt_bool(&obj, "include_brand").map(drop)),
        ("auto_publish", opt_bool(&obj, "auto_publish").map(drop)),
    ];
    for (path, check) in checks {
        if let Err(message) = check {
            return edit_bad_request(path, message);
        }
    }
    let auto_publish = opt_bool(&obj, "auto_publish")
        .ok()
        .flatten()
        .unwrap_or(false);
    let alias = match opt_string(&obj, "custom_page_alias") {
        Ok(a) => a,
        Err(message) => return edit_bad_request("custom_page_alias", message),
    };
    let asset_ids = match opt_string_array(&obj, "asset_ids") {
        Ok(a) => a.unwrap_or_default(),
        Err(message) => return edit_bad_request("asset_ids", message),
    };
    if asset_ids.len() > MAX_ASSET_IDS {
        return edit_bad_request("asset_ids", "At most 5 asset_ids are allowed");
    }
    if let Some(alias) = &alias {
        if !auto_publish {
            return edit_bad_request(
                "custom_page_alias",
                "custom_page_alias requires auto_publish: true",
            );
        }
        if validate_alias(alias).is_err() {
            return edit_bad_request("custom_page_alias", "Invalid custom_page_alias");
        }
    }
    // A path id that is not a uuid names no tent: 404, as for any unknown tent.
    let Some(tent_id) = parse_tent_id(&raw_tent_id) else {
        return answer(404, json!({ "error": "Tent not found" }));
    };
    let request = EditRequest {
        auto_publish,
        custom_page_alias: alias,
        asset_ids,
    };
    match shared
        .model()
        .edit_tent(tent_id, request, Instant::now(), SystemTime::now())
    {
        Ok(body) => answer(202, body),
        Err(e) => answer(e.status, e.body),
    }
}

// ---- GET /v1/tents/{id} ----------------------------------------------------------

async fn missing_tent_id() -> Response {
    answer(
        400,
        json!({ "error": "Invalid request", "message": "tentId is missing" }),
    )
}

async fn tent_status(State(shared): SharedState, Path(raw_tent_id): Path<String>) -> Response {
    let Some(tent_id) = parse_tent_id(&raw_tent_id) else {
        return answer(
            400,
            json!({ "error": "Invalid request", "message": "tentId must be a valid UUID" }),
        );
    };
    let (found, retry_after) = {
        let model = shared.model();
        (
            model.tent_status(tent_id, Instant::now()),
            model.config.retry_after_secs,
        )
    };
    match found {
        None => answer(404, json!({ "error": "Tent not found" })),
        Some((body, in_progress)) => {
            let mut response = answer(200, body);
            if let (true, Some(secs)) = (in_progress, retry_after) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

// ---- /_sim control routes --------------------------------------------------------

async fn sim_calls(State(shared): SharedState) -> Response {
    let calls = shared.calls_log().clone();
    (StatusCode::OK, Json(calls)).into_response()
}

async fn sim_credits(State(shared): SharedState, body: Bytes) -> Response {
    let credits = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(obj)) => match obj.get("credits") {
            Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(()),
            None => Err(()),
        },
        _ => Err(()),
    };
    match credits {
        Ok(credits) => {
            shared.model().config.credits = credits;
            answer(200, json!({ "credits": credits }))
        }
        Err(()) => answer(
            400,
            json!({ "error": "expected {\"credits\": <non-negative integer or null>}" }),
        ),
    }
}

async fn sim_api_key(State(shared): SharedState, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(|v| v.get("api_key"))
        .and_then(Value::as_str)
    {
        Some(key) => {
            shared.model().config.api_key = key.to_owned();
            answer(200, json!({ "ok": true }))
        }
        None => answer(400, json!({ "error": "expected {\"api_key\": \"...\"}" })),
    }
}

async fn sim_healthz() -> Response {
    answer(200, json!({ "status": "ok" }))
}
