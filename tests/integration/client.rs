//! The real `TentedClient` against the real simulator over loopback: every documented
//! response shape and error of the five endpoints (shared/api/*.md), the naming and alias
//! rules, credits, every fault knob, the three outcome classes and the 401 pause.
//!
//! Simulator times are short (10-100 ms) and its random choices seeded with rates of 0 or
//! 1, so every outcome is deterministic; lifecycle changes are awaited with `wait_until`
//! (polling the endpoint under a deadline).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tented_bulkd::api::types::{
    ApiErrorBody, BulkCreateRequest, BulkCreateResponse, BulkItem, BulkJobStatus,
    CreateTentRequest, EditTentRequest, GenerationStatus, PublicationStatus, TentStatus,
};
use tented_bulkd::api::{CallObserver, ClientConfig, Endpoint, Outcome, TentedClient};
use tented_bulkd::settings::ApiKey;
use tented_bulkd::simulator::{EndpointFaults, FaultRates, SimConfig, Simulator};

use crate::helpers::{start_simulator, wait_until, Progress};

const KEY: &str = "sim-key";
/// The longest any lifecycle wait may take.
const DEADLINE: Duration = Duration::from_secs(5);
const IDLE_TENT: &str = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
const UNKNOWN_TENT: &str = "0b7e6f1c-2d3a-4b5c-8d9e-0f1a2b3c4d5e";
const WEB_PROMPT: &str = "Create a launch page for Acme Analytics with a lead capture form";

// ---- helpers -------------------------------------------------------------------------

fn fixed(ms: u64) -> (Duration, Duration) {
    (Duration::from_millis(ms), Duration::from_millis(ms))
}

/// Short lifecycle, no failures, no Retry-After, seeded.
fn fast() -> SimConfig {
    SimConfig {
        api_key: KEY.to_string(),
        queue_time: fixed(10),
        generation_time: fixed(30),
        publish_time: fixed(20),
        failure_rate: 0.0,
        publish_failure_rate: 0.0,
        retry_after_secs: None,
        idle_tents: vec![IDLE_TENT.to_string()],
        seed: Some(7),
        ..SimConfig::default()
    }
}

fn client_for(base_url: String, timeout: Duration) -> TentedClient {
    TentedClient::new(ClientConfig {
        base_url: base_url.parse().expect("the simulator's URL"),
        api_key: ApiKey::new(KEY),
        timeout,
        requests_per_second: 1000,
        auth_probe_interval: Duration::from_millis(100),
    })
    .expect("client builds")
}

async fn start(config: SimConfig) -> (Simulator, TentedClient) {
    let sim = start_simulator(config).await;
    let client = client_for(sim.base_url(), Duration::from_secs(5));
    (sim, client)
}

/// Every call the client reports to its observer, as `/metrics` counts them: the
/// endpoint and the answer's label.
#[derive(Default)]
struct CallLog(std::sync::Mutex<Vec<(Endpoint, String)>>);

impl CallObserver for CallLog {
    fn call_finished(&self, endpoint: Endpoint, answer: &str, _left: bool, _took: Duration) {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.push((endpoint, answer.to_string()));
    }
}

impl CallLog {
    /// Attached to `client`, from now on.
    fn on(client: &TentedClient) -> std::sync::Arc<CallLog> {
        let log = std::sync::Arc::new(CallLog::default());
        client.observe_calls(log.clone());
        log
    }

    fn labels(&self) -> Vec<String> {
        let calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.iter().map(|(_, label)| label.clone()).collect()
    }
}

#[track_caller]
fn ok<T: Debug>(outcome: Outcome<T>) -> (u16, T, Option<Duration>) {
    match outcome {
        Outcome::Success {
            status,
            body,
            retry_after,
        } => (status, body, retry_after),
        other => panic!("expected a 2xx answer, got {other:?}"),
    }
}

#[track_caller]
fn refused<T: Debug>(outcome: Outcome<T>) -> (u16, ApiErrorBody, Option<Duration>) {
    match outcome {
        Outcome::Refused {
            status,
            error,
            retry_after,
        } => (status, error, retry_after),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[track_caller]
fn uncertain<T: Debug>(outcome: Outcome<T>) -> String {
    match outcome {
        Outcome::Uncertain { reason } => reason,
        other => panic!("expected Outcome::Uncertain, got {other:?}"),
    }
}

fn item(cid: &str) -> BulkItem {
    BulkItem {
        input_data: json!({ "first_name": cid, "company_name": "Acme" }),
        instructions: None,
        client_item_id: Some(cid.to_string()),
        tent_name: None,
        custom_page_alias: None,
        include_brand: None,
        asset_ids: None,
    }
}

fn aliased(cid: &str, alias: &str) -> BulkItem {
    BulkItem {
        custom_page_alias: Some(alias.to_string()),
        ..item(cid)
    }
}

fn bulk(items: Vec<BulkItem>) -> BulkCreateRequest {
    BulkCreateRequest {
        template_id: "tpl_01JABC123XYZ".to_string(),
        items,
        client_job_descriptor: None,
        default_tent_name_prefix: None,
        start_index: None,
        auto_publish: None,
        metadata: None,
    }
}

fn n_items(n: usize) -> Vec<BulkItem> {
    (0..n).map(|i| item(&format!("row-{i:03}"))).collect()
}

fn create_req(name: &str) -> CreateTentRequest {
    CreateTentRequest {
        name: name.to_string(),
        prompt: WEB_PROMPT.to_string(),
        user_id: None,
        include_brand: None,
        auto_publish: None,
        custom_page_alias: None,
        tent_id: None,
        asset_ids: None,
    }
}

fn publish_req(name: &str, alias: Option<&str>) -> CreateTentRequest {
    CreateTentRequest {
        auto_publish: Some(true),
        custom_page_alias: alias.map(str::to_string),
        ..create_req(name)
    }
}

fn edit_req(prompt: &str) -> EditTentRequest {
    EditTentRequest {
        prompt: prompt.to_string(),
        include_brand: None,
        auto_publish: None,
        custom_page_alias: None,
        asset_ids: None,
    }
}

async fn create_ok(client: &TentedClient, request: &CreateTentRequest) -> String {
    let (status, body, _) = ok(client.create_tent(request).await);
    assert_eq!(status, 202);
    body.id
}

async fn bulk_ok(client: &TentedClient, request: &BulkCreateRequest) -> BulkCreateResponse {
    let (status, body, _) = ok(client.create_bulk(request).await);
    assert_eq!(status, 202);
    body
}

/// Polls GET /v1/tents/{id} until `done`, within [`DEADLINE`].
async fn wait_tent(
    client: &TentedClient,
    id: &str,
    done: impl Fn(&TentStatus) -> bool,
) -> (TentStatus, Option<Duration>) {
    wait_until(format!("tent {id} to get there"), DEADLINE, || async {
        let (status, tent, retry_after) = ok(client.tent(id).await);
        assert_eq!(status, 200);
        if done(&tent) {
            Progress::Done((tent, retry_after))
        } else {
            Progress::NotYet(format!("{tent:?}"))
        }
    })
    .await
}

fn generation_final(t: &TentStatus) -> bool {
    t.status.clone().is_final()
}

fn publication_final(t: &TentStatus) -> bool {
    t.publication
        .as_ref()
        .is_some_and(|p| p.status.clone().is_final())
}

/// Polls GET /v1/bulk-jobs/{id} until `done`, within [`DEADLINE`].
async fn wait_job(
    client: &TentedClient,
    id: &str,
    done: impl Fn(&BulkJobStatus) -> bool,
) -> BulkJobStatus {
    wait_until(format!("bulk job {id} to get there"), DEADLINE, || async {
        let (status, job, _) = ok(client.bulk_job(id).await);
        assert_eq!(status, 200);
        if done(&job) {
            Progress::Done(job)
        } else {
            Progress::NotYet(format!("{job:?}"))
        }
    })
    .await
}

fn job_final(job: &BulkJobStatus) -> bool {
    matches!(
        job.status.as_str(),
        "completed" | "completed_with_failures" | "failed"
    )
}

/// A raw request, for the body-level errors that the typed client cannot produce.
async fn raw(sim: &Simulator, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(KEY);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("raw request answered");
    let status = response.status().as_u16();
    let text = response.text().await.expect("raw body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn count_calls(sim: &Simulator, method: &str, path: &str) -> usize {
    sim.calls()
        .iter()
        .filter(|c| c.method == method && c.path == path)
        .count()
}

/// A port on which nothing listens.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

// ---- POST /v1/tents/bulk ---------------------------------------------------------------

#[tokio::test]
async fn bulk_create_answers_202_with_partial_success() {
    let (sim, client) = start(fast()).await;
    let mut request = bulk(vec![
        BulkItem {
            tent_name: Some("Acme Onboarding Page 1".into()),
            instructions: Some("Make the tone more executive.".into()),
            include_brand: Some(true),
            ..aliased("acme-row-001", "acme-onboarding-jane")
        },
        aliased("acme-row-002", "Bad Alias"),
        item("acme-row-003"),
        BulkItem {
            input_data: Value::Null,
            ..item("acme-row-004")
        },
        BulkItem {
            asset_ids: Some(vec!["asset_logo".into()]),
            ..item("acme-row-005")
        },
        BulkItem {
            asset_ids: Some(vec!["no-such-asset".into()]),
            ..item("acme-row-006")
        },
        BulkItem {
            asset_ids: Some((0..6).map(|i| format!("asset_{i}")).collect()),
            ..item("acme-row-007")
        },
    ]);
    request.auto_publish = Some(true);
    request.default_tent_name_prefix = Some("Acme onboarding".into());
    request.metadata = Some(json!({ "source": "crm-import" }));

    let body = bulk_ok(&client, &request).await;
    assert!(!body.bulk_job_id.is_empty());
    assert_eq!(body.status.as_deref(), Some("accepted"));
    assert_eq!(body.accepted_count, Some(3));
    assert_eq!(body.rejected_count, Some(4));
    assert!(body.created_at.is_some());
    assert_eq!(body.items.len(), 7);
    for (i, it) in body.items.iter().enumerate() {
        assert_eq!(it.index as usize, i, "items come back in request order");
        assert_eq!(
            it.client_item_id.as_deref(),
            Some(format!("acme-row-00{}", i + 1).as_str())
        );
    }
    let accepted: Vec<usize> = body
        .items
        .iter()
        .filter(|i| i.is_accepted())
        .map(|i| i.index as usize)
        .collect();
    assert_eq!(accepted, vec![0, 2, 4]);
    for it in body.items.iter().filter(|i| i.is_accepted()) {
        assert!(is_uuid(it.tent_id.as_deref().unwrap()), "{it:?}");
        assert!(it.error_code.is_none());
    }
    let first = &body.items[0];
    assert_eq!(first.tent_name.as_deref(), Some("Acme Onboarding Page 1"));
    assert_eq!(
        first.custom_page_alias.as_deref(),
        Some("acme-onboarding-jane")
    );
    assert_eq!(
        body.items[2].tent_name.as_deref(),
        Some("Acme onboarding 3")
    );
    let ids: std::collections::HashSet<_> = body
        .items
        .iter()
        .filter_map(|i| i.tent_id.clone())
        .collect();
    assert_eq!(ids.len(), 3, "every tent gets its own id");

    let rejection = |i: usize| {
        let it = &body.items[i];
        assert_eq!(it.status, "rejected", "{it:?}");
        assert!(it.tent_id.is_none(), "{it:?}");
        assert!(
            it.message.as_deref().is_some_and(|m| !m.is_empty()),
            "{it:?}"
        );
        it.error_code.clone().unwrap_or_default()
    };
    assert_eq!(rejection(1), "INVALID_ITEM");
    assert_eq!(
        body.items[1].message.as_deref(),
        Some("Invalid custom_page_alias")
    );
    assert_eq!(rejection(3), "INVALID_ITEM");
    assert_eq!(rejection(5), "NOT_FOUND");
    assert_eq!(rejection(6), "INVALID_ITEM");

    // The simulator recorded exactly what the client sent, once.
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/tents/bulk")
    );
    assert!(call.authorized);
    assert_eq!(call.status, Some(202));
    assert_eq!(call.fault, None);
    let sent = call.body.as_ref().expect("JSON body recorded");
    assert_eq!(sent["template_id"], "tpl_01JABC123XYZ");
    assert_eq!(sent["auto_publish"], true);
    assert_eq!(sent["metadata"]["source"], "crm-import");
    assert_eq!(sent["items"].as_array().unwrap().len(), 7);
    assert!(
        sent["items"][2].get("tent_name").is_none(),
        "absent optional fields are not sent as null"
    );
    assert!(sent.get("start_index").is_none());
}

#[tokio::test]
async fn bulk_create_echoes_job_metadata() {
    let (sim, _client) = start(fast()).await;
    let (status, body) = raw(
        &sim,
        "/v1/tents/bulk",
        Some(
            r#"{"template_id":"tpl_a","metadata":{"batch_label":"q2"},
                "items":[{"input_data":{"x":1}}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["metadata"]["batch_label"], "q2");
    assert_eq!(body["template_id"], "tpl_a");
    assert_eq!(body["auto_publish"], false);
}

#[tokio::test]
async fn bulk_create_request_errors() {
    let mut config = fast();
    config.credits = Some(100);
    let (sim, client) = start(config).await;

    // Between 1 and 25 items.
    let (status, error, _) = refused(client.create_bulk(&bulk(vec![])).await);
    assert_eq!(status, 400);
    assert!(error.summary().contains("between 1 and 25"), "{error:?}");
    let (status, _, _) = refused(client.create_bulk(&bulk(n_items(26))).await);
    assert_eq!(status, 400);
    // 25 is allowed.
    let body = bulk_ok(&client, &bulk(n_items(25))).await;
    assert_eq!(body.accepted_count, Some(25));

    // template_id is required.
    let mut request = bulk(n_items(1));
    request.template_id = String::new();
    let (status, error, _) = refused(client.create_bulk(&request).await);
    assert_eq!(status, 400);
    assert!(error.summary().contains("template_id"), "{error:?}");

    // The template must exist (and be approved).
    let mut request = bulk(n_items(1));
    request.template_id = "not_a_template".into();
    let (status, error, _) = refused(client.create_bulk(&request).await);
    assert_eq!(status, 404);
    assert!(
        error.summary().to_lowercase().contains("template"),
        "{error:?}"
    );

    // Invalid JSON and a missing body.
    let (status, body) = raw(&sim, "/v1/tents/bulk", Some("{\"template_id\": ")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(&sim, "/v1/tents/bulk", None).await;
    assert_eq!(status, 400, "{body}");

    // Refused requests spent nothing: only the 25 admitted items were charged.
    assert_eq!(sim.credits(), Some(75));
}

#[tokio::test]
async fn bulk_create_rejects_items_with_insufficient_credits_mid_request() {
    let mut config = fast();
    config.credits = Some(2);
    let (sim, client) = start(config).await;
    let mut items = n_items(4);
    items[1].input_data = json!("not an object"); // invalid: must not consume a credit
    items.push(item("row-004"));
    let body = bulk_ok(&client, &bulk(items)).await;
    let verdicts: Vec<(String, Option<String>)> = body
        .items
        .iter()
        .map(|i| (i.status.clone(), i.error_code.clone()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("accepted".into(), None),
            ("rejected".into(), Some("INVALID_ITEM".into())),
            ("accepted".into(), None),
            ("rejected".into(), Some("INSUFFICIENT_CREDITS".into())),
            ("rejected".into(), Some("INSUFFICIENT_CREDITS".into())),
        ]
    );
    assert_eq!(body.accepted_count, Some(2));
    assert_eq!(body.rejected_count, Some(3));
    assert_eq!(sim.credits(), Some(0));

    // The job reports the same rejections, and still runs its accepted items.
    let job = wait_job(&client, &body.bulk_job_id, job_final).await;
    assert_eq!(job.status, "completed");
    assert_eq!(job.total, Some(5));
    assert_eq!(job.completed, Some(2));
    assert_eq!(job.items[3].status, "rejected");
    assert_eq!(
        job.items[3].error_code.as_deref(),
        Some("INSUFFICIENT_CREDITS")
    );

    // With no credit left, every item is refused; with credits back, they are admitted.
    let body = bulk_ok(&client, &bulk(n_items(2))).await;
    assert_eq!(body.accepted_count, Some(0));
    assert!(body
        .items
        .iter()
        .all(|i| i.error_code.as_deref() == Some("INSUFFICIENT_CREDITS")));
    sim.set_credits(Some(10));
    let body = bulk_ok(&client, &bulk(n_items(2))).await;
    assert_eq!(body.accepted_count, Some(2));
    assert_eq!(sim.credits(), Some(8));
}

#[tokio::test]
async fn bulk_naming_behaviour() {
    let (_sim, client) = start(fast()).await;
    let names = |body: &BulkCreateResponse| -> Vec<Option<String>> {
        body.items.iter().map(|i| i.tent_name.clone()).collect()
    };

    // default_tent_name_prefix wins over client_job_descriptor; the counter starts at
    // start_index and counts every position, named or rejected.
    let mut request = bulk(vec![
        item("a"),
        BulkItem {
            tent_name: Some("Custom Name".into()),
            ..item("b")
        },
        BulkItem {
            input_data: Value::Null,
            ..item("c")
        },
        item("d"),
    ]);
    request.default_tent_name_prefix = Some("Acme onboarding".into());
    request.client_job_descriptor = Some("Acme batch".into());
    request.start_index = Some(5);
    let body = bulk_ok(&client, &request).await;
    assert_eq!(
        names(&body),
        vec![
            Some("Acme onboarding 5".into()),
            Some("Custom Name".into()),
            None,
            Some("Acme onboarding 8".into()),
        ]
    );

    // Otherwise client_job_descriptor; start_index defaults to 1.
    let mut request = bulk(n_items(2));
    request.client_job_descriptor = Some("Spring batch".into());
    let body = bulk_ok(&client, &request).await;
    assert_eq!(
        names(&body),
        vec![Some("Spring batch 1".into()), Some("Spring batch 2".into())]
    );

    // Otherwise "Bulk tent"; a later chunk continues the count.
    let mut request = bulk(n_items(2));
    request.start_index = Some(26);
    let body = bulk_ok(&client, &request).await;
    assert_eq!(
        names(&body),
        vec![Some("Bulk tent 26".into()), Some("Bulk tent 27".into())]
    );
    let body = bulk_ok(&client, &bulk(n_items(1))).await;
    assert_eq!(names(&body), vec![Some("Bulk tent 1".into())]);

    // The bulk job reports the same names.
    let job = wait_job(&client, &body.bulk_job_id, |_| true).await;
    assert_eq!(job.items[0].tent_name.as_deref(), Some("Bulk tent 1"));
}

/// One accepted and one refused example of each documented alias rule.
fn alias_cases() -> Vec<(String, bool)> {
    vec![
        // Maximum 100 characters.
        ("a".repeat(100), true),
        ("a".repeat(101), false),
        // Lowercase letters, numbers, hyphens, underscores and dots only.
        ("spring.launch_2026-v2".into(), true),
        ("Spring-Launch".into(), false),
        ("spring launch".into(), false),
        // Must start with a letter or number.
        ("9-lives".into(), true),
        ("-spring".into(), false),
        ("_spring".into(), false),
        // Must not be a UUID.
        ("f11ef3cf-8664-launch".into(), true),
        ("b6f8d617-7cfe-4d63-a8e9-5d971780d57f".into(), false),
        // Reserved words.
        ("api-docs".into(), true),
        ("api".into(), false),
        ("admin".into(), false),
        ("submit".into(), false),
        ("assets".into(), false),
        // "/" publishes at the domain root.
        ("/".into(), true),
    ]
}

#[tokio::test]
async fn alias_rules_on_bulk_items() {
    let (_sim, client) = start(fast()).await;
    let cases = alias_cases();
    let mut request = bulk(
        cases
            .iter()
            .enumerate()
            .map(|(i, (alias, _))| aliased(&format!("alias-{i}"), alias))
            .collect(),
    );
    request.auto_publish = Some(true);
    let body = bulk_ok(&client, &request).await;
    for ((alias, allowed), it) in cases.iter().zip(&body.items) {
        if *allowed {
            assert!(it.is_accepted(), "alias {alias:?} must be accepted: {it:?}");
            assert_eq!(it.custom_page_alias.as_deref(), Some(alias.as_str()));
        } else {
            assert_eq!(
                it.status, "rejected",
                "alias {alias:?} must be refused: {it:?}"
            );
            assert_eq!(it.error_code.as_deref(), Some("INVALID_ITEM"), "{alias:?}");
        }
    }

    // custom_page_alias requires top-level auto_publish: true, else the item is rejected.
    for auto_publish in [Some(false), None] {
        let mut request = bulk(vec![aliased("x", "valid-alias"), item("y")]);
        request.auto_publish = auto_publish;
        let body = bulk_ok(&client, &request).await;
        assert_eq!(body.items[0].status, "rejected", "{auto_publish:?}");
        assert_eq!(body.items[0].error_code.as_deref(), Some("INVALID_ITEM"));
        assert!(body.items[1].is_accepted());
    }
}

// ---- GET /v1/bulk-jobs/{id} ------------------------------------------------------------

#[tokio::test]
async fn bulk_job_status_while_accepted_and_running() {
    // All queued: "accepted".
    let mut config = fast();
    config.queue_time = fixed(60_000);
    let (_sim, client) = start(config).await;
    let mut items = n_items(3);
    items[2].input_data = Value::Null;
    let created = bulk_ok(&client, &bulk(items)).await;
    let (status, job, _) = ok(client.bulk_job(&created.bulk_job_id).await);
    assert_eq!(status, 200);
    assert_eq!(job.bulk_job_id, created.bulk_job_id);
    assert_eq!(job.status, "accepted");
    assert_eq!(job.template_id.as_deref(), Some("tpl_01JABC123XYZ"));
    assert_eq!(job.auto_publish, Some(false));
    assert_eq!(job.total, Some(3));
    assert_eq!(
        (job.queued, job.generating, job.completed, job.failed),
        (Some(2), Some(0), Some(0), Some(0))
    );
    assert_eq!(job.items[0].status, "queued");
    assert_eq!(job.items[0].tent_id, created.items[0].tent_id);
    assert_eq!(job.items[0].client_item_id.as_deref(), Some("row-000"));
    assert_eq!(job.items[0].tent_name.as_deref(), Some("Bulk tent 1"));
    assert_eq!(job.items[2].status, "rejected");
    assert_eq!(job.items[2].error_code.as_deref(), Some("INVALID_ITEM"));
    assert!(job.items[2].message.is_some());
    assert!(job.items[2].tent_id.is_none());
    assert!(job.created_at.is_some() && job.updated_at.is_some());
    assert!(job.credits.is_some(), "credits kept as raw JSON");

    // Generating: "running".
    let mut config = fast();
    config.queue_time = fixed(0);
    config.generation_time = fixed(60_000);
    let (_sim, client) = start(config).await;
    let created = bulk_ok(&client, &bulk(n_items(2))).await;
    let (_, job, _) = ok(client.bulk_job(&created.bulk_job_id).await);
    assert_eq!(job.status, "running");
    assert_eq!((job.queued, job.generating), (Some(0), Some(2)));
    assert!(job.items.iter().all(|i| i.status == "generating"));
    assert!(!job.items[0].status.clone().is_final());
}

#[tokio::test]
async fn bulk_job_completed() {
    let (_sim, client) = start(fast()).await;
    let created = bulk_ok(&client, &bulk(n_items(3))).await;
    let job = wait_job(&client, &created.bulk_job_id, job_final).await;
    assert_eq!(job.status, "completed");
    assert_eq!(
        (
            job.total,
            job.queued,
            job.generating,
            job.completed,
            job.failed
        ),
        (Some(3), Some(0), Some(0), Some(3), Some(0))
    );
    assert!(job.items.iter().all(|i| i.status == "completed"));
    assert!(job.items.iter().all(|i| i.publication_status.is_none()));
    assert!(job.credits.as_ref().is_some_and(Value::is_object));
}

#[tokio::test]
async fn bulk_job_completed_with_failures() {
    let mut config = fast();
    config.failure_rate = 0.5; // seeded: the same mix on every run
    let (_sim, client) = start(config).await;
    let created = bulk_ok(&client, &bulk(n_items(20))).await;
    let job = wait_job(&client, &created.bulk_job_id, job_final).await;
    assert_eq!(job.status, "completed_with_failures");
    let completed = job.completed.unwrap();
    let failed = job.failed.unwrap();
    assert!(completed > 0 && failed > 0, "{job:?}");
    assert_eq!(completed + failed, 20);
    for it in &job.items {
        match it.status.as_str() {
            "completed" => assert!(it.message.is_none()),
            "failed" => assert!(it.message.as_deref().is_some_and(|m| !m.is_empty())),
            other => panic!("unexpected item status {other}"),
        }
    }
}

#[tokio::test]
async fn bulk_job_failed() {
    let mut config = fast();
    config.failure_rate = 1.0;
    let (_sim, client) = start(config).await;
    let created = bulk_ok(&client, &bulk(n_items(3))).await;
    let job = wait_job(&client, &created.bulk_job_id, job_final).await;
    assert_eq!(job.status, "failed");
    assert_eq!((job.completed, job.failed), (Some(0), Some(3)));
    for it in &job.items {
        assert_eq!(it.status, "failed");
        assert_eq!(it.message.as_deref(), Some("Upstream generation failed."));
    }

    // A job whose every item was rejected has nothing that completed: failed too.
    let created = bulk_ok(
        &client,
        &bulk(vec![BulkItem {
            input_data: Value::Null,
            ..item("bad")
        }]),
    )
    .await;
    assert_eq!(created.accepted_count, Some(0));
    let (_, job, _) = ok(client.bulk_job(&created.bulk_job_id).await);
    assert_eq!(job.status, "failed");
}

#[tokio::test]
async fn bulk_job_items_report_publication() {
    let mut config = fast();
    config.taken_aliases = vec!["taken-alias".into()];
    let (_sim, client) = start(config).await;
    let mut request = bulk(vec![
        aliased("a", "job-alias-1"),
        aliased("b", "taken-alias"),
        item("c"),
    ]);
    request.auto_publish = Some(true);
    let created = bulk_ok(&client, &request).await;

    let pub_final = |job: &BulkJobStatus| {
        job.items.iter().all(|i| {
            i.publication_status
                .as_ref()
                .map(|s| s.as_str())
                .is_some_and(|s| PublicationStatus::parse(s).is_final())
        })
    };
    let job = wait_job(&client, &created.bulk_job_id, pub_final).await;
    assert_eq!(job.status, "completed");
    assert_eq!(job.auto_publish, Some(true));
    let a = &job.items[0];
    assert_eq!(
        a.publication_status.as_ref().map(|s| s.as_str()),
        Some("published")
    );
    assert!(
        a.published_url
            .as_deref()
            .unwrap()
            .ends_with("/job-alias-1"),
        "{a:?}"
    );
    let b = &job.items[1];
    assert_eq!(
        b.publication_status.as_ref().map(|s| s.as_str()),
        Some("published_with_warnings")
    );
    let b_id = b.tent_id.clone().unwrap();
    assert!(
        b.published_url.as_deref().unwrap().ends_with(&b_id),
        "{b:?}"
    );
    let c = &job.items[2];
    assert_eq!(
        c.publication_status.as_ref().map(|s| s.as_str()),
        Some("published")
    );
    assert!(c.published_url.is_some());

    // Warnings are only in GET /v1/tents/{id}.
    let (_, tent, _) = ok(client.tent(&b_id).await);
    let publication = tent.publication.unwrap();
    assert_eq!(
        publication.warnings[0].code.as_deref(),
        Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE")
    );

    // A publication that fails: status failed, no URL.
    let mut config = fast();
    config.publish_failure_rate = 1.0;
    let (_sim, client) = start(config).await;
    let mut request = bulk(n_items(1));
    request.auto_publish = Some(true);
    let created = bulk_ok(&client, &request).await;
    let job = wait_job(&client, &created.bulk_job_id, pub_final).await;
    assert_eq!(
        job.status, "completed",
        "a failed publication is not a failed generation"
    );
    assert_eq!(
        job.items[0].publication_status.as_ref().map(|s| s.as_str()),
        Some("failed")
    );
    assert!(job.items[0].published_url.is_none());
}

#[tokio::test]
async fn bulk_job_status_errors() {
    let (sim, client) = start(fast()).await;
    // Malformed id.
    let (status, error, _) = refused(client.bulk_job("not/a valid!id").await);
    assert_eq!(status, 400, "{error:?}");
    // Missing id.
    let (status, error, _) = refused(client.bulk_job("").await);
    assert_eq!(status, 400, "{error:?}");
    // Unknown job.
    let (status, error, _) = refused(client.bulk_job("01JQZB4H8A7T5B3R2W1X9Y6Z0K").await);
    assert_eq!(status, 404);
    assert!(
        error.summary().to_lowercase().contains("not found"),
        "{error:?}"
    );
    // Another workspace's key.
    let created = bulk_ok(&client, &bulk(n_items(1))).await;
    sim.set_api_key("someone-else");
    let (status, _, _) = refused(client.bulk_job(&created.bulk_job_id).await);
    assert_eq!(status, 401);
}

// ---- POST /v1/tents ------------------------------------------------------------------

#[tokio::test]
async fn create_tent_answers_202_pending() {
    let (sim, client) = start(fast()).await;
    let mut request = create_req("Acme launch page");
    request.user_id = Some("user-42".into());
    request.include_brand = Some(true);
    let (status, body, _) = ok(client.create_tent(&request).await);
    assert_eq!(status, 202);
    assert!(is_uuid(&body.id), "{body:?}");
    assert_eq!(body.status.as_deref(), Some("pending"));
    assert!(body.created_at.is_some());
    // "pending" is not a listed tent status: not final for the client.
    assert!(!GenerationStatus::parse("pending").is_final());
    let sent = sim.calls().last().unwrap().body.clone().unwrap();
    assert_eq!(sent["name"], "Acme launch page");
    assert_eq!(sent["user_id"], "user-42");
    assert!(sent.get("tent_id").is_none());

    // Into an idle tent (assets uploaded first), with its assets.
    let mut request = create_req("Partner landing page");
    request.tent_id = Some(IDLE_TENT.into());
    request.asset_ids = Some(vec!["asset_01JPAEWP9PY5SCX1V6X03XK9M2".into()]);
    let (status, body, _) = ok(client.create_tent(&request).await);
    assert_eq!(status, 202);
    assert_eq!(body.id, IDLE_TENT);
    // Generated into: a second initial generation is a conflict.
    let (status, error, _) = refused(client.create_tent(&request).await);
    assert_eq!(status, 409);
    assert_eq!(
        error.error.as_deref(),
        Some("Tent already has a generation")
    );
}

#[tokio::test]
async fn create_tent_errors() {
    let mut config = fast();
    config.credits = Some(50);
    let (sim, client) = start(config).await;

    let expect_400 = |outcome, what: &str| {
        let (status, error, _) = refused(outcome);
        assert_eq!(status, 400, "{what}: {error:?}");
        error
    };
    // Missing name / prompt.
    let error = expect_400(client.create_tent(&create_req("")).await, "no name");
    assert!(error.summary().contains("name"), "{error:?}");
    let mut request = create_req("x");
    request.prompt = String::new();
    let error = expect_400(client.create_tent(&request).await, "no prompt");
    assert!(error.summary().contains("prompt"), "{error:?}");
    // asset_ids without tent_id.
    let mut request = create_req("x");
    request.asset_ids = Some(vec!["asset_1".into()]);
    let error = expect_400(client.create_tent(&request).await, "assets without tent");
    assert!(error.summary().contains("tent_id"), "{error:?}");
    // An invalid alias; an alias without auto_publish.
    let error = expect_400(
        client
            .create_tent(&publish_req("x", Some("Not Valid")))
            .await,
        "invalid alias",
    );
    assert!(error.summary().contains("custom_page_alias"), "{error:?}");
    let mut request = create_req("x");
    request.custom_page_alias = Some("valid-alias".into());
    let error = expect_400(client.create_tent(&request).await, "alias without publish");
    assert!(error.summary().contains("auto_publish"), "{error:?}");
    request.auto_publish = Some(false);
    expect_400(
        client.create_tent(&request).await,
        "alias with auto_publish false",
    );
    // Prompt intent.
    let mut request = create_req("x");
    request.prompt = "Tell me a joke about databases".into();
    let error = expect_400(client.create_tent(&request).await, "prompt intent");
    assert_eq!(error.code.as_deref(), Some("INVALID_PROMPT_INTENT"));
    assert_eq!(error.error.as_deref(), Some("Invalid request"));
    assert!(error
        .message
        .as_deref()
        .unwrap()
        .starts_with("Please enter a prompt"));
    // Invalid JSON, missing body.
    let (status, _) = raw(&sim, "/v1/tents", Some("{not json")).await;
    assert_eq!(status, 400);
    let (status, _) = raw(&sim, "/v1/tents", None).await;
    assert_eq!(status, 400);

    // tent_id that does not exist; an asset that does not exist.
    let mut request = create_req("x");
    request.tent_id = Some(UNKNOWN_TENT.into());
    let (status, _, _) = refused(client.create_tent(&request).await);
    assert_eq!(status, 404);
    let mut request = create_req("x");
    request.tent_id = Some(IDLE_TENT.into());
    request.asset_ids = Some(vec!["missing-asset".into()]);
    let (status, error, _) = refused(client.create_tent(&request).await);
    assert_eq!(status, 404, "{error:?}");

    // Nothing refused so far was charged.
    assert_eq!(sim.credits(), Some(50));

    // Credits exhausted: 429, and no tent.
    sim.set_credits(Some(0));
    let (status, error, _) = refused(client.create_tent(&create_req("x")).await);
    assert_eq!(status, 429);
    assert!(
        error.summary().to_lowercase().contains("credit"),
        "{error:?}"
    );
    sim.set_credits(Some(1));
    create_ok(&client, &create_req("x")).await;
    assert_eq!(sim.credits(), Some(0));

    // 401.
    sim.set_api_key("rotated");
    let (status, _, _) = refused(client.create_tent(&create_req("x")).await);
    assert_eq!(status, 401);
}

// ---- POST /v1/tents/{id}/edit --------------------------------------------------------

#[tokio::test]
async fn edit_tent_answers_202_with_a_new_generation() {
    let mut config = fast();
    config.queue_time = fixed(200); // long enough to see the edit in progress
    let (sim, client) = start(config).await;
    let id = create_ok(&client, &publish_req("Launch", Some("launch-page"))).await;
    let (first, _) = wait_tent(&client, &id, publication_final).await;
    assert_eq!(first.publication.as_ref().unwrap().status, "published");

    let mut request = edit_req("Make the header blue and add a testimonial section");
    request.auto_publish = Some(true);
    request.custom_page_alias = Some("launch-page".into());
    request.include_brand = Some(true);
    let (status, body, _) = ok(client.edit_tent(&id, &request).await);
    assert_eq!(status, 202);
    assert_eq!(body.id, id);
    assert_eq!(body.status.as_deref(), Some("pending"));
    assert!(body.updated_at.is_some());
    let gen1 = body.generation_id.clone().expect("generation_id");
    assert!(!gen1.is_empty());
    let call = sim.calls().last().unwrap().clone();
    assert_eq!(call.path, format!("/v1/tents/{id}/edit"));
    assert_eq!(call.body.unwrap()["prompt"], request.prompt);

    // The tent is back in progress with the new generation, then completes again; its own
    // alias is not "taken" by itself.
    let (_, tent, _) = ok(client.tent(&id).await);
    assert!(
        !generation_final(&tent) || !publication_final(&tent),
        "{tent:?}"
    );
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    assert_eq!(tent.status, "completed");
    let s3 = tent.result.as_ref().unwrap()["s3Key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        s3.contains(&gen1),
        "result belongs to the new generation: {s3}"
    );
    let publication = tent.publication.unwrap();
    assert_eq!(publication.status, "published");
    assert_eq!(
        publication.applied_custom_page_alias.as_deref(),
        Some("launch-page")
    );

    // Each edit gets its own generation id.
    let (_, body, _) = ok(client.edit_tent(&id, &edit_req("Tighten the copy")).await);
    let gen2 = body.generation_id.unwrap();
    assert_ne!(gen1, gen2);
}

#[tokio::test]
async fn edit_tent_errors() {
    let mut config = fast();
    config.credits = Some(10);
    let (sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Existing page")).await;
    assert_eq!(sim.credits(), Some(9));

    // Missing prompt; invalid fields.
    let (status, error, _) = refused(client.edit_tent(&id, &edit_req("")).await);
    assert_eq!(status, 400);
    assert!(error.summary().contains("prompt"), "{error:?}");
    // Alias without auto_publish: 400 in the issues shape.
    let mut request = edit_req("Make it blue");
    request.custom_page_alias = Some("valid-alias".into());
    let (status, error, _) = refused(client.edit_tent(&id, &request).await);
    assert_eq!(status, 400);
    assert!(error.summary().contains("auto_publish"), "{error:?}");
    // Invalid alias.
    request.auto_publish = Some(true);
    request.custom_page_alias = Some("admin".into());
    let (status, _, _) = refused(client.edit_tent(&id, &request).await);
    assert_eq!(status, 400);
    // Invalid JSON body.
    let (status, body) = raw(&sim, &format!("/v1/tents/{id}/edit"), Some("[1,")).await;
    assert_eq!(status, 400, "{body}");

    // The tent exists but has never been generated.
    let (status, error, _) = refused(client.edit_tent(IDLE_TENT, &edit_req("Make it blue")).await);
    assert_eq!(status, 400);
    assert_eq!(error.error.as_deref(), Some("Invalid request body"));
    let issues = &error.details.as_ref().unwrap()["issues"];
    assert_eq!(issues[0]["path"], "tent_id");
    assert!(
        error.summary().contains("Tent has no existing generation"),
        "{error:?}"
    );

    // The tent does not exist; an asset that is not on the tent.
    let (status, _, _) = refused(
        client
            .edit_tent(UNKNOWN_TENT, &edit_req("Make it blue"))
            .await,
    );
    assert_eq!(status, 404);
    let mut request = edit_req("Use the new logo");
    request.asset_ids = Some(vec!["not-on-this-tent".into()]);
    let (status, _, _) = refused(client.edit_tent(&id, &request).await);
    assert_eq!(status, 404);

    // Nothing refused was charged.
    assert_eq!(sim.credits(), Some(9));

    // Credits exhausted: 429.
    sim.set_credits(Some(0));
    let (status, error, retry_after) =
        refused(client.edit_tent(&id, &edit_req("Make it blue")).await);
    assert_eq!(status, 429);
    assert_eq!(retry_after, None);
    assert!(
        error.summary().to_lowercase().contains("credit"),
        "{error:?}"
    );

    // 401.
    sim.set_credits(None);
    sim.set_api_key("rotated");
    let (status, _, _) = refused(client.edit_tent(&id, &edit_req("Make it blue")).await);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn alias_rules_on_create_and_edit() {
    let (_sim, client) = start(fast()).await;
    let base = create_ok(&client, &create_req("Base")).await;
    for (i, (alias, allowed)) in alias_cases().into_iter().enumerate() {
        let created = client
            .create_tent(&publish_req(&format!("t{i}"), Some(&alias)))
            .await;
        let mut edit = edit_req("Make the page blue");
        edit.auto_publish = Some(true);
        edit.custom_page_alias = Some(alias.clone());
        let edited = client.edit_tent(&base, &edit).await;
        if allowed {
            assert_eq!(ok(created).0, 202, "create with {alias:?}");
            assert_eq!(ok(edited).0, 202, "edit with {alias:?}");
        } else {
            let (status, error, _) = refused(created);
            assert_eq!(status, 400, "create with {alias:?}");
            assert!(error.summary().contains("custom_page_alias"), "{error:?}");
            assert_eq!(refused(edited).0, 400, "edit with {alias:?}");
        }
    }
}

// ---- GET /v1/tents/{id} --------------------------------------------------------------

#[tokio::test]
async fn tent_status_queued_with_retry_after() {
    let mut config = fast();
    config.queue_time = fixed(60_000);
    config.retry_after_secs = Some(10);
    let (sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Queued page")).await;
    let (status, tent, retry_after) = ok(client.tent(&id).await);
    assert_eq!(status, 200);
    assert_eq!(tent.id, id);
    assert_eq!(tent.status, "queued");
    assert_eq!(tent.status.clone(), GenerationStatus::Queued);
    assert!(tent.created_at.is_some() && tent.updated_at.is_some());
    assert!(tent.result.is_none() && tent.error.is_none() && tent.publication.is_none());
    assert_eq!(
        retry_after,
        Some(Duration::from_secs(10)),
        "Retry-After: 10 parsed"
    );
    assert_eq!(sim.calls().last().unwrap().status, Some(200));
}

#[tokio::test]
async fn tent_status_generating_then_no_retry_after_without_the_knob() {
    let mut config = fast();
    config.queue_time = fixed(0);
    config.generation_time = fixed(60_000);
    config.retry_after_secs = Some(10);
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Generating page")).await;
    let (_, tent, retry_after) = ok(client.tent(&id).await);
    assert_eq!(tent.status, "generating");
    assert!(!generation_final(&tent));
    assert_eq!(retry_after, Some(Duration::from_secs(10)));

    // retry_after_secs: None sends no header while in progress.
    let mut config = fast();
    config.queue_time = fixed(60_000);
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Quiet page")).await;
    let (_, tent, retry_after) = ok(client.tent(&id).await);
    assert_eq!(tent.status, "queued");
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn tent_status_completed_with_result() {
    let mut config = fast();
    config.retry_after_secs = Some(10);
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Done page")).await;
    let (tent, retry_after) = wait_tent(&client, &id, generation_final).await;
    assert_eq!(tent.status, "completed");
    assert_eq!(retry_after, None, "no Retry-After once final");
    let result = tent.result.expect("result object");
    assert_eq!(result["tentId"], id.as_str());
    assert!(result["s3Key"].as_str().unwrap().contains(&id));
    assert!(result["s3Key"].as_str().unwrap().ends_with("/index.html"));
    assert_eq!(result["filePath"], "index.html");
    assert!(tent.error.is_none());
    assert!(
        tent.publication.is_none(),
        "no publication without auto_publish"
    );
}

#[tokio::test]
async fn tent_status_failed_with_error() {
    let mut config = fast();
    config.failure_rate = 1.0;
    config.retry_after_secs = Some(10);
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &publish_req("Doomed page", None)).await;
    let (tent, retry_after) = wait_tent(&client, &id, generation_final).await;
    assert_eq!(tent.status, "failed");
    assert_eq!(tent.status.clone(), GenerationStatus::Failed);
    assert_eq!(
        tent.error_text().as_deref(),
        Some("Upstream generation failed.")
    );
    assert!(tent.result.is_none());
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn tent_status_errors() {
    let (sim, client) = start(fast()).await;
    let (status, _, _) = refused(client.tent("not-a-uuid").await);
    assert_eq!(status, 400);
    let (status, _, _) = refused(client.tent("").await);
    assert_eq!(status, 400, "a missing tentId is a 400");
    let (status, error, _) = refused(client.tent(UNKNOWN_TENT).await);
    assert_eq!(status, 404);
    assert!(
        error.summary().to_lowercase().contains("not found"),
        "{error:?}"
    );
    sim.set_api_key("rotated");
    let (status, _, _) = refused(client.tent(UNKNOWN_TENT).await);
    assert_eq!(status, 401);
}

// ---- publication ---------------------------------------------------------------------

#[tokio::test]
async fn publication_published_pending_and_root() {
    let mut config = fast();
    config.retry_after_secs = Some(10);
    let (_sim, client) = start(config).await;

    let id = create_ok(&client, &publish_req("Launch page", Some("launch-page"))).await;
    let (tent, retry_after) = wait_tent(&client, &id, publication_final).await;
    assert_eq!(tent.status, "completed");
    assert!(tent.result.is_some());
    assert_eq!(retry_after, None);
    let p = tent.publication.unwrap();
    assert_eq!(p.status.clone(), PublicationStatus::Published);
    assert!(
        p.published_url
            .as_deref()
            .unwrap()
            .ends_with("/launch-page"),
        "{p:?}"
    );
    assert_eq!(
        p.requested_custom_page_alias.as_deref(),
        Some("launch-page")
    );
    assert_eq!(p.applied_custom_page_alias.as_deref(), Some("launch-page"));
    assert!(p.warnings.is_empty() && p.error.is_none());

    // Without an alias: the default URL, which carries the tent id.
    let id = create_ok(&client, &publish_req("Plain page", None)).await;
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    let p = tent.publication.unwrap();
    assert_eq!(p.status, "published");
    assert!(p.published_url.as_deref().unwrap().ends_with(&id), "{p:?}");
    assert_eq!(p.applied_custom_page_alias, None);

    // "/" publishes at the domain root.
    let id = create_ok(&client, &publish_req("Home", Some("/"))).await;
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    let p = tent.publication.unwrap();
    assert_eq!(p.status, "published");
    assert!(
        p.published_url.as_deref().unwrap().ends_with(".com/"),
        "{p:?}"
    );
    assert_eq!(p.requested_custom_page_alias.as_deref(), Some("/"));
    assert_eq!(p.applied_custom_page_alias.as_deref(), Some("/"));

    // Pending publication: generation completed, still in progress (Retry-After).
    let mut config = fast();
    config.publish_time = fixed(60_000);
    config.retry_after_secs = Some(10);
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &publish_req("Slow publish", Some("slow-page"))).await;
    let (tent, retry_after) = wait_tent(&client, &id, generation_final).await;
    assert_eq!(tent.status, "completed");
    let p = tent
        .publication
        .expect("publication exists once generation completed");
    assert_eq!(p.status.clone(), PublicationStatus::Pending);
    assert!(!p.status.clone().is_final());
    assert_eq!(p.requested_custom_page_alias.as_deref(), Some("slow-page"));
    assert!(p.published_url.is_none());
    assert_eq!(retry_after, Some(Duration::from_secs(10)));
}

#[tokio::test]
async fn publication_with_warnings_when_alias_is_taken() {
    let mut config = fast();
    config.taken_aliases = vec!["launch-page".into()];
    let (sim, client) = start(config).await;

    let check_warned = |tent: &TentStatus, alias: &str| {
        let p = tent.publication.as_ref().unwrap();
        assert_eq!(p.status.clone(), PublicationStatus::PublishedWithWarnings);
        assert!(p.status.clone().needs_details());
        assert!(
            p.published_url.as_deref().unwrap().ends_with(&tent.id),
            "{p:?}"
        );
        assert_eq!(p.requested_custom_page_alias.as_deref(), Some(alias));
        assert_eq!(p.applied_custom_page_alias, None);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            p.warnings[0].code.as_deref(),
            Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE")
        );
        assert!(p.warnings[0]
            .message
            .as_deref()
            .unwrap()
            .contains("already in use"));
        assert!(p.error.is_none());
    };

    // Taken in the workspace already.
    let id = create_ok(&client, &publish_req("Launch", Some("launch-page"))).await;
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    assert_eq!(tent.status, "completed");
    check_warned(&tent, "launch-page");

    // Taken by another tent of ours: the first wins, the second gets the warning.
    let first = create_ok(&client, &publish_req("First", Some("spring-launch"))).await;
    let second = create_ok(&client, &publish_req("Second", Some("spring-launch"))).await;
    let (tent, _) = wait_tent(&client, &first, publication_final).await;
    assert_eq!(
        tent.publication
            .unwrap()
            .applied_custom_page_alias
            .as_deref(),
        Some("spring-launch")
    );
    let (tent, _) = wait_tent(&client, &second, publication_final).await;
    check_warned(&tent, "spring-launch");

    // set_taken_aliases works at run time.
    sim.set_taken_aliases(vec!["later".into()]);
    let id = create_ok(&client, &publish_req("Later", Some("later"))).await;
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    check_warned(&tent, "later");
}

#[tokio::test]
async fn publication_failed_with_error_object() {
    let mut config = fast();
    config.publish_failure_rate = 1.0;
    let (_sim, client) = start(config).await;
    let id = create_ok(&client, &publish_req("Limited", Some("limited-page"))).await;
    let (tent, _) = wait_tent(&client, &id, publication_final).await;
    assert_eq!(tent.status, "completed", "generation stays completed");
    assert!(tent.result.is_some());
    let p = tent.publication.unwrap();
    assert_eq!(p.status.clone(), PublicationStatus::Failed);
    assert_eq!(p.applied_custom_page_alias, None);
    assert!(p.published_url.is_none());
    let error = p.error.expect("error object");
    assert_eq!(error.code.as_deref(), Some("PUBLISH_LIMIT_EXCEEDED"));
    assert!(error.message.as_deref().unwrap().contains("published tent"));
}

// ---- fault knobs ---------------------------------------------------------------------

fn faults_on_bulk(rates: FaultRates) -> EndpointFaults {
    EndpointFaults {
        bulk_create: rates,
        ..EndpointFaults::default()
    }
}

#[tokio::test]
async fn fault_429_with_and_without_retry_after() {
    let mut config = fast();
    config.credits = Some(10);
    let (sim, client) = start(config).await;

    sim.set_faults(faults_on_bulk(FaultRates {
        rate_429: 1.0,
        retry_after_429: Some(7),
        ..FaultRates::default()
    }));
    let (status, _, retry_after) = refused(client.create_bulk(&bulk(n_items(2))).await);
    assert_eq!(status, 429);
    assert_eq!(retry_after, Some(Duration::from_secs(7)));

    sim.set_faults(faults_on_bulk(FaultRates {
        rate_429: 1.0,
        ..FaultRates::default()
    }));
    let (status, _, retry_after) = refused(client.create_bulk(&bulk(n_items(2))).await);
    assert_eq!(status, 429);
    assert_eq!(retry_after, None);

    let faults: Vec<_> = sim
        .calls()
        .iter()
        .map(|c| (c.fault.clone(), c.status))
        .collect();
    assert_eq!(
        faults,
        vec![
            (Some("429".into()), Some(429)),
            (Some("429".into()), Some(429))
        ]
    );
    assert_eq!(sim.credits(), Some(10), "an injected 429 admits nothing");

    // Faults are per endpoint: the others still work.
    let id = create_ok(&client, &create_req("Unaffected")).await;
    ok(client.tent(&id).await);
}

#[tokio::test]
async fn fault_500_and_503() {
    let mut config = fast();
    config.credits = Some(10);
    let (sim, client) = start(config).await;
    let id = create_ok(&client, &create_req("Page")).await;

    for (rates, code) in [
        (
            FaultRates {
                rate_500: 1.0,
                ..FaultRates::default()
            },
            500u16,
        ),
        (
            FaultRates {
                rate_503: 1.0,
                ..FaultRates::default()
            },
            503u16,
        ),
    ] {
        sim.set_faults(EndpointFaults::all(rates));
        let (status, error, retry_after) = refused(client.create_bulk(&bulk(n_items(1))).await);
        assert_eq!(status, code);
        assert_eq!(retry_after, None);
        assert!(error.error.is_some(), "{error:?}");
        assert_eq!(refused(client.create_tent(&create_req("x")).await).0, code);
        assert_eq!(
            refused(
                client
                    .edit_tent(&id, &edit_req("Make it a blue page"))
                    .await
            )
            .0,
            code
        );
        assert_eq!(refused(client.tent(&id).await).0, code);
        assert_eq!(
            refused(client.bulk_job("01JQZB4H8A7T5B3R2W1X9Y6Z0K").await).0,
            code
        );
        let last = sim.calls().last().unwrap().clone();
        assert_eq!(last.fault.as_deref(), Some(code.to_string().as_str()));
    }
    assert_eq!(sim.credits(), Some(9), "only the first create was charged");

    sim.set_faults(EndpointFaults::default());
    ok(client.tent(&id).await);
}

#[tokio::test]
async fn fault_latency_delays_answers() {
    let mut config = fast();
    config.latency = fixed(150);
    let (_sim, client) = start(config).await;
    let started = Instant::now();
    let id = create_ok(&client, &create_req("Slow")).await;
    let (_, _, _) = ok(client.tent(&id).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "two calls of 150 ms took {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn fault_drop_before_is_uncertain_and_admits_nothing() {
    let mut config = fast();
    config.credits = Some(10);
    let (sim, client) = start(config).await;
    sim.set_faults(faults_on_bulk(FaultRates {
        drop_before_rate: 1.0,
        ..FaultRates::default()
    }));
    // The request was written and the connection closed: the client cannot know.
    let reason = uncertain(client.create_bulk(&bulk(n_items(3))).await);
    assert!(!reason.is_empty());
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "never resent: {calls:?}");
    assert_eq!(calls[0].fault.as_deref(), Some("drop_before"));
    assert_eq!(calls[0].status, None);
    assert_eq!(sim.credits(), Some(10), "nothing was admitted");

    // The same client works once the fault is gone.
    sim.set_faults(EndpointFaults::default());
    let body = bulk_ok(&client, &bulk(n_items(3))).await;
    assert_eq!(body.accepted_count, Some(3));
}

#[tokio::test]
async fn fault_drop_after_is_uncertain_but_the_job_was_created() {
    let mut config = fast();
    config.credits = Some(10);
    let (sim, client) = start(config).await;
    sim.set_faults(faults_on_bulk(FaultRates {
        drop_after_rate: 1.0,
        ..FaultRates::default()
    }));
    let reason = uncertain(client.create_bulk(&bulk(n_items(3))).await);
    assert!(!reason.is_empty());
    let calls = sim.calls();
    assert_eq!(
        calls.len(),
        1,
        "an uncertain create is never resent: {calls:?}"
    );
    assert_eq!(calls[0].path, "/v1/tents/bulk");
    assert_eq!(calls[0].fault.as_deref(), Some("drop_after"));
    assert_eq!(calls[0].status, None);
    assert!(calls[0].authorized);
    assert_eq!(
        calls[0].body.as_ref().unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        sim.credits(),
        Some(7),
        "the bulk job was admitted and charged"
    );

    // Same for a single create.
    sim.set_faults(EndpointFaults {
        create: FaultRates {
            drop_after_rate: 1.0,
            ..FaultRates::default()
        },
        ..EndpointFaults::default()
    });
    uncertain(client.create_tent(&create_req("Lost answer")).await);
    assert_eq!(sim.credits(), Some(6));
    assert_eq!(count_calls(&sim, "POST", "/v1/tents"), 1);
}

#[tokio::test]
async fn fault_hang_times_out_as_uncertain() {
    let mut config = fast();
    config.credits = Some(10);
    let sim = Simulator::start(config, "127.0.0.1:0").await.unwrap();
    let client = client_for(sim.base_url(), Duration::from_millis(300));
    sim.set_faults(faults_on_bulk(FaultRates {
        hang_rate: 1.0,
        ..FaultRates::default()
    }));
    let started = Instant::now();
    let reason = uncertain(client.create_bulk(&bulk(n_items(2))).await);
    let elapsed = started.elapsed();
    assert!(reason.contains("timeout"), "{reason}");
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].fault.as_deref(), Some("hang"));
    assert_eq!(calls[0].status, None);
    assert_eq!(sim.credits(), Some(8), "a hung request was processed fully");
}

#[tokio::test]
async fn not_sent_when_nothing_listens() {
    let client = client_for(
        format!("http://127.0.0.1:{}", dead_port()),
        Duration::from_secs(2),
    );
    let log = CallLog::on(&client);
    match client.create_bulk(&bulk(n_items(1))).await {
        Outcome::NotSent { reason } => assert!(!reason.is_empty()),
        other => panic!("expected NotSent, got {other:?}"),
    }
    assert!(matches!(
        client.create_tent(&create_req("x")).await,
        Outcome::NotSent { .. }
    ));
    assert!(matches!(
        client.tent(UNKNOWN_TENT).await,
        Outcome::NotSent { .. }
    ));
    assert!(!client.auth_paused());
    let labels = log.labels();
    assert_eq!(labels, ["not_sent"; 3], "every call is reported");
}

#[tokio::test]
async fn three_outcome_classes_success_refused_uncertain() {
    let (sim, client) = start(fast()).await;
    let log = CallLog::on(&client);
    assert!(matches!(
        client.create_bulk(&bulk(n_items(1))).await,
        Outcome::Success { status: 202, .. }
    ));
    assert!(matches!(
        client.bulk_job("01JQZB4H8A7T5B3R2W1X9Y6Z0K").await,
        Outcome::Refused { status: 404, .. }
    ));
    sim.set_faults(faults_on_bulk(FaultRates {
        drop_after_rate: 1.0,
        ..FaultRates::default()
    }));
    assert!(matches!(
        client.create_bulk(&bulk(n_items(1))).await,
        Outcome::Uncertain { .. }
    ));
    assert_eq!(log.labels(), ["202", "404", "uncertain"]);
}

// ---- 401 and the pause ---------------------------------------------------------------

#[tokio::test]
async fn unauthorized_on_every_endpoint() {
    let (sim, good) = start(fast()).await;
    let id = create_ok(&good, &create_req("Existing")).await;
    let job = bulk_ok(&good, &bulk(n_items(1))).await.bulk_job_id;

    let bad = TentedClient::new(ClientConfig {
        base_url: sim.base_url().parse().expect("the simulator's URL"),
        api_key: ApiKey::new("wrong-key"),
        timeout: Duration::from_secs(5),
        requests_per_second: 1000,
        auth_probe_interval: Duration::from_millis(10),
    })
    .unwrap();
    assert_eq!(refused(bad.create_bulk(&bulk(n_items(1))).await).0, 401);
    assert_eq!(refused(bad.bulk_job(&job).await).0, 401);
    assert_eq!(refused(bad.create_tent(&create_req("x")).await).0, 401);
    assert_eq!(
        refused(bad.edit_tent(&id, &edit_req("Make it a blue page")).await).0,
        401
    );
    assert_eq!(refused(bad.tent(&id).await).0, 401);
    let unauthorized: Vec<_> = sim.calls().into_iter().filter(|c| !c.authorized).collect();
    assert_eq!(unauthorized.len(), 5);
    assert!(unauthorized.iter().all(|c| c.status == Some(401)));
    assert!(bad.auth_paused());
    assert!(!good.auth_paused());
}

#[tokio::test]
async fn unauthorized_pauses_calls_until_the_server_key_works_again() {
    let (sim, client) = start(fast()).await;
    let id = create_ok(&client, &create_req("Page")).await;
    assert!(!client.auth_paused());

    sim.set_api_key("rotated");
    let (status, _, _) = refused(client.tent(&id).await);
    assert_eq!(status, 401);
    assert!(client.auth_paused());

    // While paused, one probe goes out per auth_probe_interval (100 ms).
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(refused(client.tent(&id).await).0, 401);
        assert!(client.auth_paused());
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "three probes should take about 300 ms, took {elapsed:?}"
    );

    // The key works again on the server: the next probe succeeds and calls resume.
    sim.set_api_key(KEY);
    let (status, _, _) = ok(client.tent(&id).await);
    assert_eq!(status, 200);
    assert!(!client.auth_paused());
    // Five paced calls would take at least 500 ms.
    let started = Instant::now();
    for _ in 0..5 {
        ok(client.tent(&id).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "calls are no longer paced by the probe interval: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unauthorized_pause_ends_when_the_client_gets_a_new_key() {
    let (sim, _) = start(fast()).await;
    // A long probe interval: only set_api_key can release the waiting call soon.
    let client = TentedClient::new(ClientConfig {
        base_url: sim.base_url().parse().expect("the simulator's URL"),
        api_key: ApiKey::new(KEY),
        timeout: Duration::from_secs(5),
        requests_per_second: 1000,
        auth_probe_interval: Duration::from_secs(60),
    })
    .unwrap();
    let id = create_ok(&client, &create_req("Page")).await;

    sim.set_api_key("new-key");
    assert_eq!(refused(client.tent(&id).await).0, 401);
    assert!(client.auth_paused());
    let calls_before = sim.calls().len();

    // A call made while paused waits and is not sent.
    let waiting = {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move { client.tent(&id).await })
    };
    // A window, not a wait: nothing may happen in it (no event marks "still waiting").
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the call must wait during the pause"
    );
    assert_eq!(
        sim.calls().len(),
        calls_before,
        "nothing was sent during the pause"
    );

    // The new key (SIGHUP) releases it at once, and it succeeds.
    client.set_api_key(ApiKey::new("new-key"));
    let outcome = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("released by set_api_key")
        .expect("task");
    let (status, tent, _) = ok(outcome);
    assert_eq!(status, 200);
    assert_eq!(tent.id, id);
    assert!(!client.auth_paused());
    let last = sim.calls().last().unwrap().clone();
    assert!(last.authorized);
}
