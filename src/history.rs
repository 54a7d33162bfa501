//! The history of manifests as `list` and `show` print it, and as `GET /manifests` and
//! `GET /manifests/NAME` serve it (SPEC sections 2 and 8): read-only views of the store,
//! whole manifests and pruned summaries alike; and `/status` (the manifests in flight, the
//! daemon's health and budget), which `status` and the status page print.

use crate::api::CallClass;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;
use crate::context::Context;
use crate::schedule::next_poll_due_ms;
use crate::state::control::Control;
use crate::state::item::{ItemRecord, ItemState};
use crate::state::job::{JobRecord, JobState};
use crate::state::manifest::ManifestPhase;
use crate::store::{HistoryEntry, ManifestRecord, ManifestSummary, StoreError};

/// How many manifests `list` shows when no `--limit` is given.
pub const DEFAULT_LIST_LIMIT: usize = 50;

/// One line of `list`. The names and words are the result file's (SPEC section 5):
/// `manifest` (the file name), `status`, `error`, `received_at`, `finished_at`, and
/// `counts` with `total` and every status, zeros included; `name` is the handle that
/// `show`, `pause` and the others take.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct ManifestLine {
    pub name: String,
    /// The manifest's file name, as the result file's `manifest` gives it (empty from a
    /// daemon older than this field).
    #[serde(default)]
    pub manifest: String,
    pub kind: String,
    /// `active`, `paused`, `credit_wait`, `canceled` (still finishing), `finished` or
    /// `pruned` (only its summary is left).
    pub state: String,
    /// The final status (`completed`, `completed_with_failures`, `failed`, `rejected`)
    /// once finished.
    pub status: Option<String>,
    /// Why it is paused or waiting, or why it was rejected as a whole.
    pub reason: Option<String>,
    /// Why the manifest as a whole was rejected (the result file's `error`).
    pub error: Option<String>,
    /// `total`, then items by status: every final status of the result file and every
    /// state an unfinished item can be in, each listed, zeros included.
    pub counts: BTreeMap<String, u32>,
    pub received_at: String,
    pub finished_at: Option<String>,
}

impl ManifestLine {
    /// How many items it has (`counts.total`).
    pub fn total(&self) -> u32 {
        self.counts.get("total").copied().unwrap_or(0)
    }
}

/// What `list` prints (`GET /manifests`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct ManifestList {
    pub manifests: Vec<ManifestLine>,
    /// True when older manifests were left out by the limit.
    pub more: bool,
}

/// What a request is known by, named as in the result file: `bulk_job_id` for a bulk
/// manifest's, `tent_id` for a create or edit manifest's (null until admitted).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub enum RequestId {
    /// (`remote_id` is what a daemon older than this name said, for either kind.)
    #[serde(rename = "bulk_job_id", alias = "remote_id")]
    BulkJob(Option<String>),
    #[serde(rename = "tent_id")]
    Tent(Option<String>),
}

impl RequestId {
    /// The id, whichever it is (none before the admission).
    pub fn get(&self) -> Option<&str> {
        match self {
            RequestId::BulkJob(id) | RequestId::Tent(id) => id.as_deref(),
        }
    }
}

/// One create request of a manifest, as `show` prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct RequestLine {
    pub seq: u32,
    #[serde(flatten)]
    pub id: RequestId,
    /// The request's own life here: `sending`, `admitted`, `not_admitted`, `lost` or
    /// `done`.
    pub state: String,
    /// Tented's status of the job or tent as last polled (the result file's
    /// `bulk_jobs[].status`), null until one came.
    pub status: Option<String>,
    pub items: u32,
    /// The manifest index of its first item.
    pub first_index: Option<u32>,
    pub sent_at: String,
    pub last_polled_at: Option<String>,
    /// When it may next be polled (admitted requests only).
    pub next_poll_at: Option<String>,
    /// Earlier tries of the same items that were not admitted and were sent again (a
    /// 401, 429 or 5xx, or not sent at all): counted here rather than listed one by one.
    pub earlier_tries: u32,
}

/// One item, as `show --items` prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct ItemLine {
    pub index: u32,
    pub client_item_id: String,
    pub status: String,
    pub tent_id: Option<String>,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

/// What `show NAME` prints (`GET /manifests/NAME`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct ManifestDetail {
    #[serde(flatten)]
    pub line: ManifestLine,
    /// Its result file, once written.
    pub result_path: Option<String>,
    /// Its requests (none once pruned).
    pub requests: Vec<RequestLine>,
    /// Every item, with `--items` (`?items=true`); none once pruned.
    pub items: Option<Vec<ItemLine>>,
    pub pruned_at: Option<String>,
}

/// Where a manifest still in the store stands: the one place its phase is decided.
pub fn phase(m: &ManifestRecord) -> ManifestPhase {
    ManifestPhase::of(
        m.finished_at_ms.is_some(),
        m.control(),
        m.credit_retry_at_ms.is_some(),
    )
}

/// The phase of a whole manifest and its reason (as `/status` shows them too): why it is
/// paused or waiting, or why it was rejected as a whole.
pub fn phase_and_reason(m: &ManifestRecord) -> (ManifestPhase, Option<String>) {
    let phase = phase(m);
    let reason = match (phase, m.control()) {
        (ManifestPhase::Finished, _) => m.rejection.clone(),
        (ManifestPhase::Paused, Control::Paused { reason }) => Some(reason.clone()),
        (ManifestPhase::CreditWait, _) => {
            Some("Tented is out of credits; sending tries again later".to_string())
        }
        _ => None,
    };
    (phase, reason)
}

/// `total`, then items by state: every state listed, zeros included.
pub fn counts_by_state(m: &ManifestRecord) -> BTreeMap<String, u32> {
    let mut counts: BTreeMap<String, u32> = ItemState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), m.count(*s)))
        .collect();
    counts.insert("total".to_string(), m.item_count);
    counts
}

fn whole_line(m: &ManifestRecord) -> ManifestLine {
    let (phase, reason) = phase_and_reason(m);
    ManifestLine {
        name: m.name.clone(),
        manifest: m.file_name(),
        kind: m.kind.as_str().to_string(),
        state: phase.as_str().to_string(),
        status: m
            .finished_at_ms
            .map(|_| m.final_status().as_str().to_string()),
        reason,
        error: m.rejection.clone(),
        counts: counts_by_state(m),
        received_at: rfc3339(m.received_at_ms),
        finished_at: m.finished_at_ms.map(rfc3339),
    }
}

fn pruned_line(s: &ManifestSummary) -> ManifestLine {
    // What stays of a pruned manifest: its final counts; no item is unfinished.
    let mut counts: BTreeMap<String, u32> = ItemState::ALL
        .iter()
        .map(|state| (state.as_str().to_string(), 0))
        .collect();
    for (state, n) in s.counts.nonzero() {
        counts.insert(state.as_str().to_string(), n);
    }
    counts.insert("total".to_string(), s.counts.total);
    ManifestLine {
        name: s.name.clone(),
        manifest: format!("{}.json", s.name),
        kind: s.kind.as_str().to_string(),
        state: ManifestPhase::Pruned.as_str().to_string(),
        status: Some(s.status.as_str().to_string()),
        reason: None,
        error: None,
        counts,
        received_at: rfc3339(s.received_at_ms),
        finished_at: s.finished_at_ms.map(rfc3339),
    }
}

fn history_line(entry: &HistoryEntry) -> ManifestLine {
    match entry {
        HistoryEntry::Whole(m) => whole_line(m),
        HistoryEntry::Pruned(s) => pruned_line(s),
    }
}

/// `list`: the newest `limit` manifests, newest first.
pub fn list(ctx: &Context, limit: usize) -> Result<ManifestList, StoreError> {
    let mut entries = ctx.store.newest_first(limit.saturating_add(1))?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let manifests = entries.iter().map(history_line).collect();
    Ok(ManifestList { manifests, more })
}

/// The newest `limit` finished manifests, newest first, whole or pruned (the status
/// page's "recently finished"). The manifests in flight (the active set: every manifest
/// whose result is not written yet) are left out unread, so the cost does not grow with
/// how many are in flight.
pub fn recent_finished(ctx: &Context, limit: usize) -> Result<Vec<ManifestLine>, StoreError> {
    let active: std::collections::HashSet<u64> = ctx.active_ids().into_iter().collect();
    let entries = ctx
        .store
        .newest_first_except(limit, |id| active.contains(&id))?;
    Ok(entries
        .iter()
        .map(history_line)
        // Only a manifest recorded a moment ago and not yet marked active can be here
        // unfinished.
        .filter(|line| line.status.is_some())
        .collect())
}

fn request_line(job: &JobRecord, floor_ms: u64) -> RequestLine {
    let state = job.state();
    let remote_id = job.admission().map(|a| a.remote_id.to_owned());
    RequestLine {
        seq: job.seq,
        id: match job.kind {
            crate::state::job::JobKind::Bulk => RequestId::BulkJob(remote_id),
            crate::state::job::JobKind::Create | crate::state::job::JobKind::Edit => {
                RequestId::Tent(remote_id)
            }
        },
        state: state.as_str().to_string(),
        status: job.status.clone(),
        items: job.item_indices.len() as u32,
        first_index: job.item_indices.first().copied(),
        sent_at: rfc3339(job.sent_at_ms),
        last_polled_at: job.last_polled_at_ms.map(rfc3339),
        next_poll_at: (state == JobState::Admitted)
            .then(|| rfc3339(next_poll_due_ms(job, floor_ms, 0))),
        earlier_tries: 0,
    }
}

/// The requests in order, a try that was not admitted and whose items went again in a
/// later request folded into that request's `earlier_tries`.
fn request_lines(jobs: &[JobRecord], floor_ms: u64) -> Vec<RequestLine> {
    // Which item sets went again after each job: one pass from the end.
    let mut seen_later: std::collections::HashSet<&[u32]> = Default::default();
    let mut retried = vec![false; jobs.len()];
    for (n, job) in jobs.iter().enumerate().rev() {
        retried[n] = !seen_later.insert(job.item_indices.as_slice());
    }
    let mut out: Vec<RequestLine> = Vec::new();
    let mut pending_tries: std::collections::HashMap<Vec<u32>, u32> = Default::default();
    for (n, job) in jobs.iter().enumerate() {
        if job.state() == JobState::NotAdmitted && retried[n] {
            *pending_tries.entry(job.item_indices.clone()).or_default() += 1;
            continue;
        }
        let mut line = request_line(job, floor_ms);
        line.earlier_tries = pending_tries.remove(&job.item_indices).unwrap_or(0);
        out.push(line);
    }
    out
}

fn item_line(item: &ItemRecord) -> ItemLine {
    ItemLine {
        index: item.index,
        client_item_id: item.client_item_id.clone(),
        status: item.state().as_str().to_string(),
        tent_id: item.tent_id.clone(),
        error_code: item
            .error_code
            .as_ref()
            .map(|code| code.as_str().to_string()),
        message: item.message.clone(),
    }
}

/// `show NAME`: one manifest, with its requests and (with `items`) every item; `None`
/// when no manifest ever had that name.
pub fn show(ctx: &Context, name: &str, items: bool) -> Result<Option<ManifestDetail>, StoreError> {
    let Some(id) = ctx.store.manifest_named(name)? else {
        return Ok(None);
    };
    if let Some(summary) = ctx.store.summary(id)? {
        return Ok(Some(ManifestDetail {
            line: pruned_line(&summary),
            result_path: None,
            requests: Vec::new(),
            items: None,
            pruned_at: Some(rfc3339(summary.pruned_at_ms)),
        }));
    }
    let Some(m) = ctx.store.manifest(id)? else {
        return Ok(None);
    };
    let floor = ctx.poll_floor_ms();
    let requests = request_lines(&ctx.store.jobs(id)?, floor);
    let items = if items {
        Some(ctx.store.items(id)?.iter().map(item_line).collect())
    } else {
        None
    };
    let result = ctx
        .settings
        .paths
        .outbox
        .join(format!("{}.result.json", m.name));
    Ok(Some(ManifestDetail {
        line: whole_line(&m),
        result_path: m.result_written.then(|| result.display().to_string()),
        requests,
        items,
        pruned_at: None,
    }))
}

// ---- `/status`: the manifests in flight and the daemon's health ----------------------

#[derive(Serialize, Deserialize, Debug, Clone, schemars::JsonSchema)]
pub struct StatusReport {
    pub healthy: bool,
    pub auth_paused: bool,
    /// Folders the daemon cannot write now (disk full, unwritable), one message each.
    #[serde(default)]
    pub storage_problems: Vec<String>,
    pub budget_limited: bool,
    /// Which calls the request budget is holding back now: "creates", "polls", "creates
    /// and polls", or none.
    pub budget_holding_back: Option<String>,
    pub requests_per_second: u64,
    pub manifests: Vec<ManifestStatus>,
}

#[derive(Serialize, Deserialize, Debug, Clone, schemars::JsonSchema)]
pub struct ManifestStatus {
    pub name: String,
    /// The manifest's file name, as the result file's `manifest` gives it.
    #[serde(default)]
    pub manifest: String,
    pub kind: String,
    /// `high`, `normal` or `low`.
    #[serde(default)]
    pub priority: String,
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
    let (phase, reason) = phase_and_reason(m);
    ManifestStatus {
        name: m.name.clone(),
        manifest: m.file_name(),
        kind: m.kind.as_str().to_string(),
        priority: m.top.priority.as_str().to_string(),
        state: phase.as_str().to_string(),
        reason,
        received_at: crate::clock::rfc3339(m.received_at_ms),
        counts: counts_by_state(m),
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
    let storage_problems = ctx.health.storage().problems();
    let budget = ctx.client.budget();
    StatusReport {
        healthy: !auth_paused && storage_problems.is_empty(),
        auth_paused,
        storage_problems,
        budget_limited: budget.holding_back(CallClass::Poll),
        budget_holding_back: match (
            budget.holding_back(CallClass::Create),
            budget.holding_back(CallClass::Poll),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::job::{JobEvent, JobKind};

    fn job(seq: u32, items: std::ops::Range<u32>, event: JobEvent) -> JobRecord {
        let mut job = JobRecord::sending(1, seq, JobKind::Bulk, items.collect(), 1_000);
        job.apply(event).expect("a legal transition");
        job
    }

    #[test]
    fn tries_refused_before_admission_fold_into_the_request_that_went_again() {
        let refused = JobEvent::Answered {
            any_admitted: false,
            any_to_resend: true,
        };
        let admitted = JobEvent::Answered {
            any_admitted: true,
            any_to_resend: false,
        };
        let jobs = [
            job(0, 0..25, refused),
            job(1, 0..25, refused),
            job(2, 0..25, admitted),
            job(3, 25..30, admitted),
            // Not admitted and never sent again (yet): it stays a row of its own.
            job(4, 30..31, refused),
        ];
        let lines = request_lines(&jobs, 10_000);
        let seqs: Vec<u32> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(lines[0].earlier_tries, 2);
        assert_eq!(lines[1].earlier_tries, 0);
        assert_eq!(lines[2].state, "not_admitted");
    }
}
