//! The admin endpoint: `/healthz`, `/metrics`, `/status`, and the operator controls
//! `POST /manifests/{name}/cancel` and `POST /manifests/{name}/resume`.
//!
//! Nothing here shows the API key.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::state::item::ItemState;
use crate::schedule::next_poll_due_ms;
use crate::state::control::Control;
use crate::state::job::JobState;
use crate::store::ManifestRecord;

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StatusReport {
    pub healthy: bool,
    pub auth_paused: bool,
    pub budget_limited: bool,
    /// Which calls the request budget is holding back now: "creates", "polls", "creates
    /// and polls", or none.
    pub budget_holding_back: Option<String>,
    pub requests_per_second: u64,
    pub manifests: Vec<ManifestStatus>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestStatus {
    pub name: String,
    pub kind: String,
    /// `active`, `paused`, `credit_wait`, `canceled` (still finishing) or `finished`.
    pub state: String,
    pub reason: Option<String>,
    pub received_at: String,
    pub counts: std::collections::BTreeMap<String, u32>,
    pub jobs_polling: u32,
    pub next_poll_at: Option<String>,
    pub credit_retry_at: Option<String>,
}

pub fn manifest_status(ctx: &Context, m: &ManifestRecord) -> ManifestStatus {
    let mut next_poll: Option<u64> = None;
    let mut polling = 0;
    if m.finished_at_ms.is_none() {
        if let Ok(jobs) = ctx.store.jobs(m.id) {
            for job in jobs.iter().filter(|j| j.state() == JobState::Admitted) {
                polling += 1;
                let due = next_poll_due_ms(job, ctx.poll_floor_ms(), 0);
                next_poll = Some(next_poll.map_or(due, |n| n.min(due)));
            }
        }
    }
    let (state, reason) = if m.finished_at_ms.is_some() {
        ("finished", m.rejection.clone())
    } else {
        match &m.control() {
            Control::Paused { reason } => ("paused", Some(reason.clone())),
            Control::Canceled => ("canceled", None),
            Control::Running if m.credit_retry_at_ms.is_some() => (
                "credit_wait",
                Some("Tented is out of credits; sending tries again later".to_string()),
            ),
            Control::Running => ("active", None),
        }
    };
    ManifestStatus {
        name: m.name.clone(),
        kind: m.kind.as_str().to_string(),
        state: state.to_string(),
        reason,
        received_at: crate::clock::rfc3339(m.received_at_ms),
        counts: ItemState::ALL
            .iter()
            .filter(|s| m.count(**s) > 0)
            .map(|s| (s.as_str().to_string(), m.count(*s)))
            .collect(),
        jobs_polling: polling,
        next_poll_at: next_poll.map(crate::clock::rfc3339),
        credit_retry_at: m.credit_retry_at_ms.map(crate::clock::rfc3339),
    }
}

pub fn status_report(ctx: &Context) -> StatusReport {
    let mut manifests = Vec::new();
    for id in ctx.active_ids() {
        if let Ok(Some(m)) = ctx.store.manifest(id) {
            manifests.push(manifest_status(ctx, &m));
        }
    }
    let auth_paused = ctx.client.auth_paused();
    StatusReport {
        healthy: !auth_paused,
        auth_paused,
        budget_limited: ctx.budget_bound.load(Ordering::Relaxed),
        budget_holding_back: match (
            ctx.creates_budget_bound.load(Ordering::Relaxed),
            ctx.budget_bound.load(Ordering::Relaxed),
        ) {
            (true, true) => Some("creates and polls".into()),
            (true, false) => Some("creates".into()),
            (false, true) => Some("polls".into()),
            (false, false) => None,
        },
        requests_per_second: ctx.client.budget().requests_per_second(),
        manifests,
    }
}

async fn healthz(State(ctx): State<Arc<Context>>) -> Response {
    if ctx.client.auth_paused() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: Tented refuses the API key (401); every call is paused\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn status(State(ctx): State<Arc<Context>>) -> Json<StatusReport> {
    Json(status_report(&ctx))
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    let mut out = String::new();
    let calls = ctx.client.call_counts().into_iter().map(|(endpoint, label, n)| {
        (format!("{{endpoint=\"{}\",status=\"{label}\"}}", endpoint.as_str()), n.to_string())
    });
    family(&mut out, "api_calls_total", "counter", "Calls to the Tented API by endpoint and answer.", calls);
    let mut by_state = [0u64; 11];
    let mut manifests_by_state: std::collections::BTreeMap<String, u64> = Default::default();
    for id in ctx.active_ids() {
        if let Ok(Some(m)) = ctx.store.manifest(id) {
            for (slot, state) in ItemState::ALL.iter().enumerate() {
                by_state[slot] += u64::from(m.count(*state));
            }
            *manifests_by_state
                .entry(manifest_status(&ctx, &m).state)
                .or_insert(0) += 1;
        }
    }
    let items = ItemState::ALL.iter().enumerate().map(|(slot, state)| {
        (format!("{{state=\"{}\"}}", state.as_str()), by_state[slot].to_string())
    });
    family(&mut out, "items", "gauge", "Items of unfinished manifests by state.", items);
    let manifests = ["active", "paused", "credit_wait", "canceled", "finished"].map(|state| {
        let n = manifests_by_state.get(state).copied().unwrap_or(0);
        (format!("{{state=\"{state}\"}}"), n.to_string())
    });
    family(&mut out, "manifests", "gauge", "Unfinished manifests by state.", manifests);
    let (delayed, waited) = ctx.client.budget().delays();
    let one = |value: String| [(String::new(), value)];
    family(&mut out, "budget_delayed_calls_total", "counter", "Calls that waited for the request budget.", one(delayed.to_string()));
    family(&mut out, "poll_delay_seconds_total", "counter", "Time calls waited for the request budget.", one(format!("{:.3}", waited.as_secs_f64())));
    family(&mut out, "auth_paused", "gauge", "1 while a 401 pauses every call.", one(u8::from(ctx.client.auth_paused()).to_string()));
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Writes one metric family in the Prometheus text format: HELP, TYPE, then a line per
/// (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: impl IntoIterator<Item = (String, String)>,
) {
    let _ = writeln!(out, "# HELP tented_bulkd_{name} {help}");
    let _ = writeln!(out, "# TYPE tented_bulkd_{name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "tented_bulkd_{name}{labels} {value}");
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

async fn cancel(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    let Some(m) = find(&ctx, &name) else {
        let message = format!("no manifest named `{name}`");
        return control_answer(StatusCode::NOT_FOUND, name, message);
    };
    if m.finished_at_ms.is_some() {
        return control_answer(
            StatusCode::CONFLICT,
            name,
            "the manifest is already finished".into(),
        );
    }
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
    let Some(m) = find(&ctx, &name) else {
        let message = format!("no manifest named `{name}`");
        return control_answer(StatusCode::NOT_FOUND, name, message);
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

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/manifests/{name}/cancel", post(cancel))
        .route("/manifests/{name}/resume", post(resume))
        .with_state(ctx)
}

pub async fn serve(
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let app = router(ctx);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("admin endpoint: {e}");
    }
}
