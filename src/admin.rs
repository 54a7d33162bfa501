//! The admin endpoint: the status page (`GET /`, `GET /ui/manifests/{name}`, rendered by
//! [`crate::page`]), `/healthz`, `/metrics`, `/status`, the history (`GET /manifests`,
//! `GET /manifests/{name}`), and the operator controls `POST /manifests/{name}/cancel`,
//! `.../pause`, `.../resume` and `POST /backup`.
//!
//! Over TCP (`admin.listen`) the endpoint is read-only: GET and HEAD only (405 otherwise)
//! and only for a `Host` naming the listen address or loopback (421 otherwise, against DNS
//! rebinding). The controls are served on the Unix socket `admin.socket` (mode 0660: the
//! daemon's user and group alone).
//!
//! Nothing here shows the API key.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::state::item::ItemState;
use crate::state::manifest::ManifestPhase;
use crate::store::ManifestRecord;

pub use crate::history::{manifest_status, status_report, ManifestStatus, StatusReport};

async fn healthz(State(ctx): State<Arc<Context>>) -> Response {
    let mut problems = Vec::new();
    if ctx.client.auth_paused() {
        problems.push("Tented refuses the API key (401); every call is paused".to_string());
    }
    problems.extend(ctx.health.storage().problems());
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let text: String = problems
            .iter()
            .map(|p| format!("unhealthy: {p}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

/// How many finished manifests the status page lists.
const PAGE_RECENT: usize = 20;

/// An HTML page with the headers every page sends: its CSP, no sniffing, no caching, no
/// referrer.
fn html_page(status: StatusCode, body: String) -> Response {
    use axum::http::header;
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                crate::page::content_security_policy(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the status page.
async fn page_overview(State(ctx): State<Arc<Context>>) -> Response {
    let report = status_report(&ctx);
    let finished = match crate::history::recent_finished(&ctx, PAGE_RECENT) {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!("the status page cannot read the history: {e}");
            Vec::new()
        }
    };
    let rates = ctx.metrics.rates().series(std::time::Instant::now(), 60);
    html_page(
        StatusCode::OK,
        crate::page::overview(&report, &finished, &rates),
    )
}

/// `GET /ui/manifests/NAME`: one manifest's page (what `show --items` prints).
async fn page_manifest(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    match crate::history::show(&ctx, &name, true) {
        Ok(Some(mut detail)) => {
            // A page a browser can hold: the first items (the rest are in `show --items`
            // and the result file).
            let total = detail.items.as_ref().map_or(0, Vec::len);
            if let Some(items) = detail.items.as_mut() {
                items.truncate(crate::page::PAGE_ITEMS);
            }
            html_page(StatusCode::OK, crate::page::manifest(&detail, total))
        }
        Ok(None) => html_page(StatusCode::NOT_FOUND, crate::page::not_found(&name)),
        Err(e) => history_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(ctx): State<Arc<Context>>) -> Json<StatusReport> {
    Json(status_report(&ctx))
}

/// The phases a manifest in the active set can be in, as `/metrics` lists them.
const IN_FLIGHT_PHASES: [ManifestPhase; 5] = [
    ManifestPhase::Active,
    ManifestPhase::Paused,
    ManifestPhase::CreditWait,
    ManifestPhase::Canceled,
    ManifestPhase::Finished,
];

/// A phase's word in `/metrics`: a finished manifest still in the active set is one whose
/// result file is still to be written.
fn metric_phase(phase: ManifestPhase) -> &'static str {
    match phase {
        ManifestPhase::Finished => "writing_result",
        other => other.as_str(),
    }
}

/// What the daemon's state says for `/metrics` now.
pub fn metrics_snapshot(ctx: &Context) -> crate::metrics::Snapshot {
    let mut items = [0u64; ItemState::COUNT];
    let mut manifests: std::collections::BTreeMap<ManifestPhase, u64> = Default::default();
    let mut oldest_received_ms: Option<u64> = None;
    for id in ctx.active_ids() {
        if let Ok(Some(m)) = ctx.store.manifest(id) {
            if m.finished_at_ms.is_none() {
                oldest_received_ms =
                    Some(oldest_received_ms.map_or(m.received_at_ms, |o| o.min(m.received_at_ms)));
            }
            for (slot, state) in ItemState::ALL.iter().enumerate() {
                items[slot] += u64::from(m.count(*state));
            }
            *manifests.entry(crate::history::phase(&m)).or_insert(0) += 1;
        }
    }
    crate::metrics::Snapshot {
        items: ItemState::ALL
            .iter()
            .enumerate()
            .filter(|(_, state)| !state.is_final())
            .map(|(slot, state)| (state.as_str(), items[slot]))
            .collect(),
        manifests: IN_FLIGHT_PHASES
            .map(|phase| {
                let count = manifests.get(&phase).copied().unwrap_or(0);
                (metric_phase(phase), count)
            })
            .to_vec(),
        items_finished: ctx.store.tally().items_finished(),
        manifests_finished: ctx.store.tally().manifests_finished(),
        budget_wait: ctx.client.budget().total_wait(),
        auth_paused: ctx.client.auth_paused(),
        store_bytes: ctx.store.size_on_disk(),
        store_syncs: Some(ctx.store.sync_stats().clone()),
        storage_healthy: ctx.health.storage().problems().is_empty(),
        oldest_unfinished_age: oldest_received_ms
            .map(|at| std::time::Duration::from_millis(ctx.clock.now_ms().saturating_sub(at))),
        budget_requests_per_second: ctx.client.budget().requests_per_second(),
    }
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does), the text
/// format 0.0.4 otherwise.
async fn metrics(State(ctx): State<Arc<Context>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::from_accept(accept);
    match ctx.metrics.encode_as(&metrics_snapshot(&ctx), format) {
        Ok(text) => ([("content-type", format.content_type())], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ControlAnswer {
    pub manifest: String,
    pub done: bool,
    pub message: String,
}

fn find(ctx: &Context, name: &str) -> Option<ManifestRecord> {
    let id = ctx.store.manifest_named(name).ok()??;
    ctx.store.manifest(id).ok()?
}

fn control_answer(status: StatusCode, manifest: String, message: String) -> Response {
    let done = status.is_success();
    (
        status,
        Json(ControlAnswer {
            manifest,
            done,
            message,
        }),
    )
        .into_response()
}

/// The manifest an operator command names, or the 404 answer.
fn named(ctx: &Context, name: &str) -> Result<ManifestRecord, Box<Response>> {
    find(ctx, name).ok_or_else(|| {
        let message = format!("no manifest named `{name}`");
        Box::new(control_answer(
            StatusCode::NOT_FOUND,
            name.to_string(),
            message,
        ))
    })
}

/// The unfinished manifest an operator command names, or the 404 or 409 answer.
fn unfinished(ctx: &Context, name: &str) -> Result<ManifestRecord, Box<Response>> {
    let m = named(ctx, name)?;
    if m.finished_at_ms.is_some() {
        let message = "the manifest is already finished".to_string();
        let answer = control_answer(StatusCode::CONFLICT, name.to_string(), message);
        return Err(Box::new(answer));
    }
    Ok(m)
}

async fn cancel(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let m = match unfinished(&ctx, &name) {
        Ok(m) => m,
        Err(answer) => return *answer,
    };
    match crate::pipeline::controls::cancel(&ctx, m.id).await {
        Ok(n) => control_answer(
            StatusCode::OK,
            name,
            format!("canceled: {n} unsent items will never be sent; admitted jobs are still polled and reported"),
        ),
        Err(e) => control_answer(StatusCode::INTERNAL_SERVER_ERROR, name, e.to_string()),
    }
}

async fn resume(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let m = match named(&ctx, &name) {
        Ok(m) => m,
        Err(answer) => return *answer,
    };
    match crate::pipeline::controls::resume(&ctx, m.id).await {
        Ok(true) => control_answer(
            StatusCode::OK,
            name,
            "resumed: its remaining items will be sent; the failure threshold no longer pauses it"
                .into(),
        ),
        Ok(false) => control_answer(
            StatusCode::CONFLICT,
            name,
            "the manifest is not paused".into(),
        ),
        Err(e) => control_answer(StatusCode::INTERNAL_SERVER_ERROR, name, e.to_string()),
    }
}

/// `?limit=N` of `GET /manifests`; `?items=true` of `GET /manifests/NAME`.
#[derive(Deserialize, Debug, Default)]
pub struct HistoryQuery {
    pub limit: Option<usize>,
    #[serde(default)]
    pub items: bool,
}

/// An answer of the read-only history endpoints that is not the document asked for.
#[derive(Serialize, Deserialize, Debug)]
pub struct HistoryError {
    pub error: String,
}

fn history_error(status: StatusCode, error: String) -> Response {
    (status, Json(HistoryError { error })).into_response()
}

/// `GET /manifests[?limit=N]`: what `list` prints.
async fn manifests(State(ctx): State<Arc<Context>>, Query(query): Query<HistoryQuery>) -> Response {
    let limit = query.limit.unwrap_or(crate::history::DEFAULT_LIST_LIMIT);
    match crate::history::list(&ctx, limit) {
        Ok(list) => Json(list).into_response(),
        Err(e) => history_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /manifests/NAME[?items=true]`: what `show` prints.
async fn manifest(
    State(ctx): State<Arc<Context>>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    match crate::history::show(&ctx, &name, query.items) {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => history_error(StatusCode::NOT_FOUND, format!("no manifest named `{name}`")),
        Err(e) => history_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn pause(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let m = match unfinished(&ctx, &name) {
        Ok(m) => m,
        Err(answer) => return *answer,
    };
    match crate::pipeline::controls::pause(&ctx, m.id).await {
        Ok(true) => control_answer(
            StatusCode::OK,
            name,
            "paused: nothing more of it is sent until `resume`; what was admitted is still polled"
                .into(),
        ),
        Ok(false) => {
            let phase = crate::history::phase(&m);
            control_answer(
                StatusCode::CONFLICT,
                name,
                format!("the manifest is not running (it is {phase})"),
            )
        }
        Err(e) => control_answer(StatusCode::INTERNAL_SERVER_ERROR, name, e.to_string()),
    }
}

/// `POST /backup`: a consistent snapshot of the store, streamed back (spooled first into
/// an unnamed file in the state folder, so the store's writers wait only for the copy).
async fn backup(State(ctx): State<Arc<Context>>) -> Response {
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!("backup failed: {e}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup failed: {e}\n"),
        )
            .into_response()
    };
    let spool = match tempfile::tempfile_in(&ctx.settings.paths.state) {
        Ok(file) => file,
        Err(e) => return failed(&e),
    };
    let (header, mut file) = match ctx.store.backup_to(spool, ctx.clock.now_ms()).await {
        Ok(done) => done,
        Err(e) => return failed(&e),
    };
    if let Err(e) = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)) {
        return failed(&e);
    }
    tracing::info!(records = header.records, "backup taken");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    (
        [
            ("content-type", "application/octet-stream".to_string()),
            (
                "x-tented-backup-created-at",
                crate::clock::rfc3339(header.created_at_ms),
            ),
            ("x-tented-backup-records", header.records.to_string()),
        ],
        body,
    )
        .into_response()
}

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(page_overview))
        .route("/ui/manifests/{name}", get(page_manifest))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/manifests", get(manifests))
        .route("/manifests/{name}", get(manifest))
        .route("/manifests/{name}/cancel", post(cancel))
        .route("/manifests/{name}/pause", post(pause))
        .route("/manifests/{name}/resume", post(resume))
        .route("/backup", post(backup))
        .with_state(ctx)
}

/// Whether a `Host` header value names the endpoint: its listen address (ip:port), or
/// `localhost`, `127.0.0.1`, `[::1]`, with or without the listening port.
pub fn host_allowed(host: &str, local: std::net::SocketAddr, allowed: &[String]) -> bool {
    if host.parse::<std::net::SocketAddr>() == Ok(local) {
        return true;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    let loopback = name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]";
    let on_our_port = port.is_none_or(|p| p.parse::<u16>() == Ok(local.port()));
    // `admin.allowed_hosts`: a name or address, or `name:port` (a port forwarded to ours:
    // then exactly that port).
    let listed = allowed.iter().any(|entry| {
        let entry = entry.trim();
        match entry.rsplit_once(':') {
            Some((entry_name, entry_port))
                if !entry_name.ends_with(':') && entry_port.parse::<u16>().is_ok() =>
            {
                entry_name.eq_ignore_ascii_case(name) && port == Some(entry_port)
            }
            _ => entry.eq_ignore_ascii_case(name) && on_our_port,
        }
    });
    (loopback && on_our_port) || listed
}

/// What the TCP endpoint's guard knows: its own address and the other names it answers to.
#[derive(Clone, Debug)]
struct Guard {
    local: std::net::SocketAddr,
    allowed_hosts: Arc<Vec<String>>,
}

/// The TCP endpoint's guard: read-only (405 for anything but GET and HEAD, before any
/// handler runs) and for its own `Host` alone (421, no data).
async fn read_only_guard(
    State(guard): State<Guard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::{header, Method};
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the TCP endpoint is read-only: the operator controls are on the control socket (admin.socket)\n",
        )
            .into_response();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| host_allowed(h, guard.local, &guard.allowed_hosts)) {
        return (StatusCode::MISDIRECTED_REQUEST, "misdirected request\n").into_response();
    }
    next.run(request).await
}

/// The router of the TCP endpoint: [`router`] behind the read-only guard.
pub fn read_only_router(ctx: Arc<Context>, local: std::net::SocketAddr) -> Router {
    let guard = Guard {
        local,
        allowed_hosts: Arc::new(ctx.settings.admin.allowed_hosts.clone()),
    };
    router(ctx).layer(axum::middleware::from_fn_with_state(guard, read_only_guard))
}

/// Serves the read-only endpoint on `listener` until `shutdown`.
pub async fn serve(
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let app = match listener.local_addr() {
        Ok(local) => read_only_router(ctx, local),
        Err(e) => {
            tracing::error!("admin endpoint: {e}");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("admin endpoint: {e}");
    }
}

/// Serves every route, the controls included, on the control socket until `shutdown`,
/// then removes the socket file (a stopped daemon leaves no socket nobody answers on).
pub async fn serve_socket(
    ctx: Arc<Context>,
    listener: tokio::net::UnixListener,
    shutdown: CancellationToken,
) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(std::path::Path::to_path_buf));
    if let Err(e) = axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("control socket: {e}");
    }
    if let Some(path) = path {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove the control socket {}: {e}", path.display());
        }
    }
}

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("admin.socket: cannot serve the control socket {}: {message}: {source}", .path.display())]
pub struct SocketError {
    pub path: std::path::PathBuf,
    pub message: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds the control socket at `path`: creates its folder if missing, removes a stale
/// socket file (one nobody answers on), and sets mode 0660.
pub fn bind_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener, SocketError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |message: &'static str| {
        move |source| SocketError {
            path: path.to_path_buf(),
            message,
            source,
        }
    };
    if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(fail("cannot create its folder"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let in_use = std::os::unix::net::UnixStream::connect(path).is_ok();
        if !meta.file_type().is_socket() || in_use {
            let why = std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                if in_use {
                    "another daemon answers on it"
                } else {
                    "a file that is not a socket is there"
                },
            );
            return Err(fail("cannot take its place")(why));
        }
        std::fs::remove_file(path).map_err(fail("cannot remove the stale socket"))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(fail("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(fail("cannot set its mode to 0660"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_the_listen_address_and_loopback_names_are_allowed_hosts() {
        let local: std::net::SocketAddr = "127.0.0.1:9187".parse().expect("addr");
        for ok in [
            "127.0.0.1:9187",
            "127.0.0.1",
            "localhost",
            "LOCALHOST:9187",
            "[::1]",
            "[::1]:9187",
        ] {
            assert!(host_allowed(ok, local, &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9187",
            "localhost:80",
            "127.0.0.1:1",
            "",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(bad, local, &[]), "{bad}");
        }
        let wide: std::net::SocketAddr = "192.0.2.7:9187".parse().expect("addr");
        assert!(host_allowed("192.0.2.7:9187", wide, &[]));
        assert!(!host_allowed("192.0.2.7:80", wide, &[]));
    }

    #[test]
    fn allowed_hosts_add_names_a_remote_scraper_uses_and_nothing_else() {
        let wide: std::net::SocketAddr = "0.0.0.0:9187".parse().expect("addr");
        let allowed = vec!["Tented-Host.example".to_string(), "192.0.2.7".to_string()];
        for ok in [
            "tented-host.example",
            "tented-host.example:9187",
            "192.0.2.7:9187",
            "localhost:9187",
        ] {
            assert!(host_allowed(ok, wide, &allowed), "{ok}");
        }
        for bad in [
            "tented-host.example:80",
            "evil.example",
            "other.tented-host.example",
            "192.0.2.8:9187",
        ] {
            assert!(!host_allowed(bad, wide, &allowed), "{bad}");
        }
        // `name:port`: a port forwarded to ours, and only that one.
        let forwarded = vec!["tented-1.example:19187".to_string()];
        assert!(host_allowed("tented-1.example:19187", wide, &forwarded));
        assert!(!host_allowed("tented-1.example:9187", wide, &forwarded));
        assert!(!host_allowed("tented-1.example", wide, &forwarded));
    }
}
