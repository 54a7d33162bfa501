//! Submission: cuts manifests into create requests and sends them, exactly once.
//!
//! For each request: the intent (a `Sending` job and `Sending` items) is committed and
//! flushed, then the request goes out, then its answer is committed before anything else
//! happens. Only answers that prove the request was not admitted (not sent, 401, 429,
//! 5xx) put items back to `Pending`; a lost answer makes them `Unknown`, never resent.
//!
//! Bulk manifests go in chunks of [`BULK_CHUNK`] consecutive items; chunk k is sent with
//! `start_index + 25*k`, and items whose counter would shift (because a neighbour was
//! left out) carry their documented default name as `tent_name`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

mod answer;

use crate::api::types::*;
use answer::{interpret, AnswerEffects, CreateAnswer, JobLearns, Retry, SentRequest, SingleAdmission};
use crate::api::{BudgetPermit, Outcome};
use crate::context::Context;
use crate::state::item::{ItemEvent, ItemRecord, ItemState};
use crate::manifest::ManifestKind;
use crate::schedule::JobKey;
use crate::state::control::{Control, ControlEvent};
use crate::state::job::{JobEvent, JobKind, JobRecord, JobState};
use crate::store::{ManifestRecord, StoreError, Txn};

/// Items per bulk request (the API's maximum).
pub const BULK_CHUNK: u32 = 25;

/// The failure threshold is judged once this many items have a final answer from the API.
pub const THRESHOLD_MIN_ANSWERS: u32 = 25;

/// First backoff after a 5xx, a 429 on a bulk create, or a request that was not sent
/// (shorter when `poll.interval` is shorter, i.e. against the simulator).
const SEND_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The longest backoff between two attempts of one request.
const SEND_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long the submitter sleeps after an internal error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// The default name Tented gives an item that has no `tent_name`.
pub fn default_tent_name(top: &Map<String, Value>, counter: i64) -> String {
    let prefix = top
        .get("default_tent_name_prefix")
        .and_then(Value::as_str)
        .or_else(|| top.get("client_job_descriptor").and_then(Value::as_str))
        .unwrap_or("Bulk tent");
    format!("{prefix} {counter}")
}

pub fn chunk_size(kind: ManifestKind) -> u32 {
    match kind {
        ManifestKind::Bulk => BULK_CHUNK,
        ManifestKind::Create | ManifestKind::Edit => 1,
    }
}

fn top_fields(manifest: &ManifestRecord) -> Map<String, Value> {
    match serde_json::from_str::<Value>(&manifest.top) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Builds the bulk request for `items` (in manifest order). `start_index` is chosen so the
/// first item keeps its counter; later items whose counter would differ from the one they
/// have in one large batch get their default name explicitly.
pub fn build_bulk_request(top: &Map<String, Value>, items: &[ItemRecord]) -> BulkCreateRequest {
    let base = top.get("start_index").and_then(Value::as_i64).unwrap_or(1);
    let first = items.first().map(|i| i64::from(i.index)).unwrap_or(0);
    let start = base + first;
    let bulk_items = items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let given: Value = serde_json::from_str(&item.given).unwrap_or(Value::Null);
            let text = |key: &str| given.get(key).and_then(Value::as_str).map(str::to_string);
            let intended = base + i64::from(item.index);
            let tent_name = text("tent_name").or_else(|| {
                (start + position as i64 != intended).then(|| default_tent_name(top, intended))
            });
            BulkItem {
                input_data: given.get("input_data").cloned().unwrap_or(Value::Null),
                instructions: text("instructions"),
                client_item_id: text("client_item_id"),
                tent_name,
                custom_page_alias: text("custom_page_alias"),
                include_brand: given.get("include_brand").and_then(Value::as_bool),
                asset_ids: given.get("asset_ids").and_then(|a| {
                    a.as_array().map(|ids| {
                        ids.iter()
                            .filter_map(|id| id.as_str().map(str::to_string))
                            .collect()
                    })
                }),
            }
        })
        .collect();
    let text = |key: &str| top.get(key).and_then(Value::as_str).map(str::to_string);
    BulkCreateRequest {
        template_id: text("template_id").unwrap_or_default(),
        items: bulk_items,
        client_job_descriptor: text("client_job_descriptor"),
        default_tent_name_prefix: text("default_tent_name_prefix"),
        start_index: Some(start),
        auto_publish: top.get("auto_publish").and_then(Value::as_bool),
        metadata: top.get("metadata").cloned(),
    }
}

/// The item merged over the create manifest's `defaults`.
fn merged_create_fields(top: &Map<String, Value>, item: &ItemRecord) -> Map<String, Value> {
    let mut fields = top
        .get("defaults")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Ok(Value::Object(given)) = serde_json::from_str::<Value>(&item.given) {
        for (k, v) in given {
            fields.insert(k, v);
        }
    }
    fields
}

pub fn build_create_request(top: &Map<String, Value>, item: &ItemRecord) -> CreateTentRequest {
    let fields = merged_create_fields(top, item);
    let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
    CreateTentRequest {
        name: text("name").unwrap_or_default(),
        prompt: text("prompt").unwrap_or_default(),
        user_id: text("user_id"),
        include_brand: fields.get("include_brand").and_then(Value::as_bool),
        auto_publish: fields.get("auto_publish").and_then(Value::as_bool),
        custom_page_alias: text("custom_page_alias"),
        tent_id: None,
        asset_ids: None,
    }
}

pub fn build_edit_request(item: &ItemRecord) -> EditTentRequest {
    let given: Value = serde_json::from_str(&item.given).unwrap_or(Value::Null);
    let text = |key: &str| given.get(key).and_then(Value::as_str).map(str::to_string);
    EditTentRequest {
        prompt: text("prompt").unwrap_or_default(),
        include_brand: given.get("include_brand").and_then(Value::as_bool),
        auto_publish: given.get("auto_publish").and_then(Value::as_bool),
        custom_page_alias: text("custom_page_alias"),
        asset_ids: given.get("asset_ids").and_then(|a| {
            a.as_array().map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_string))
                    .collect()
            })
        }),
    }
}

/// Whether an item asked for auto-publish (bulk: the manifest's flag).
pub fn wants_publication(manifest: &ManifestRecord, item: &ItemRecord) -> bool {
    let top = top_fields(manifest);
    match manifest.kind {
        ManifestKind::Bulk => top.get("auto_publish").and_then(Value::as_bool) == Some(true),
        ManifestKind::Create => {
            merged_create_fields(&top, item)
                .get("auto_publish")
                .and_then(Value::as_bool)
                == Some(true)
        }
        ManifestKind::Edit => {
            serde_json::from_str::<Value>(&item.given)
                .ok()
                .and_then(|g| g.get("auto_publish").and_then(Value::as_bool))
                == Some(true)
        }
    }
}

/// What the submitter did in one step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A request went out (whatever its answer).
    Sent,
    /// Nothing to send now; look again at this wall time (ms) or when woken.
    Idle { until_ms: Option<u64> },
}

/// Per-manifest backoff after answers that say "later", kept in memory.
pub struct Backoff {
    base: Duration,
    not_before_ms: HashMap<u64, u64>,
    attempts: HashMap<u64, u32>,
}

impl Backoff {
    pub fn new(poll_interval: Duration) -> Backoff {
        Backoff {
            base: SEND_BACKOFF_BASE.min(poll_interval),
            not_before_ms: HashMap::new(),
            attempts: HashMap::new(),
        }
    }

    fn delay(&mut self, manifest_id: u64, retry_after: Option<Duration>) -> Duration {
        let attempts = self.attempts.entry(manifest_id).or_insert(0);
        *attempts += 1;
        let exp = self
            .base
            .saturating_mul(1u32 << (*attempts - 1).min(16))
            .min(SEND_BACKOFF_MAX);
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (exp.as_millis() as u64 / 4 + 1));
        (exp + jitter).max(retry_after.unwrap_or_default())
    }

    fn reset(&mut self, manifest_id: u64) {
        self.attempts.remove(&manifest_id);
        self.not_before_ms.remove(&manifest_id);
    }
}

/// The submitter task.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(ctx.settings.poll.interval);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let step = step(&ctx, &mut backoff).await;
        ctx.mark_progress();
        match step {
            Ok(Step::Sent) => continue,
            Ok(Step::Idle { until_ms }) => {
                let wake = ctx.wake_submitter.notified();
                let sleep = match until_ms {
                    Some(at) => tokio::time::sleep_until(ctx.clock.instant_at(at)),
                    None => tokio::time::sleep(Duration::from_secs(3600)),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake => {}
                    _ = sleep => {}
                }
            }
            Err(e) => {
                tracing::error!("submission: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ERROR_PAUSE) => {}
                }
            }
        }
    }
}

/// What to send next for one manifest.
enum Plan {
    Items(Vec<ItemRecord>),
    Nothing,
    Later(u64),
}

/// Sends at most one request: the next one of the oldest manifest that has something to send.
pub async fn step(ctx: &Context, backoff: &mut Backoff) -> Result<Step, StoreError> {
    let now = ctx.clock.now_ms();
    let max_wait = crate::clock::duration_ms(ctx.settings.poll.max_wait);
    let slow_start = ctx.settings.submit.failure_threshold < 1.0;
    let mut wake_at: Option<u64> = None;
    let earliest = |at: u64, wake_at: &mut Option<u64>| {
        *wake_at = Some(wake_at.map_or(at, |w: u64| w.min(at)));
    };
    // 1. Find the oldest manifest with something to send (nothing is recorded yet).
    let mut chosen = None;
    for id in ctx.active_ids() {
        if let Some(&at) = backoff.not_before_ms.get(&id) {
            if at > now {
                earliest(at, &mut wake_at);
                continue;
            }
        }
        let writer = ctx.store.writer().await;
        let mut txn = match writer.begin(id) {
            Ok(txn) => txn,
            Err(StoreError::NoManifest(_)) => continue,
            Err(e) => return Err(e),
        };
        match plan_next(&mut txn, now, max_wait, slow_start)? {
            Plan::Items(_) => {
                chosen = Some(id);
                break;
            }
            Plan::Nothing => {
                // Only a moved cursor or a cleared credit retry is worth a write.
                let unchanged = writer
                    .store()
                    .manifest(id)?
                    .is_some_and(|stored| &stored == txn.manifest());
                if !unchanged {
                    txn.commit().await?;
                }
            }
            Plan::Later(at) => earliest(at, &mut wake_at),
        }
    }
    let Some(id) = chosen else {
        return Ok(Step::Idle { until_ms: wake_at });
    };
    // 2. Wait for the budget (and any 401 pause) before recording anything, so that a long
    //    wait, a shutdown or a crash in it never leaves items `Sending` that were not sent.
    let permit = ctx.client.reserve().await;
    // 3. Record the intent, durably, then send.
    let (manifest, seq, items) = {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(id)?;
        let now = ctx.clock.now_ms();
        let Plan::Items(items) = plan_next(&mut txn, now, max_wait, slow_start)? else {
            // Something changed while we waited (a cancel, a pause): look again.
            return Ok(Step::Sent);
        };
        let seq = txn.manifest().next_job_seq;
        txn.manifest_mut().next_job_seq += 1;
        let kind = match txn.manifest().kind {
            ManifestKind::Bulk => JobKind::Bulk,
            ManifestKind::Create => JobKind::Create,
            ManifestKind::Edit => JobKind::Edit,
        };
        for item in &items {
            txn.apply(item.index, ItemEvent::SendIntent { job_seq: seq })?;
        }
        txn.put_job(JobRecord::sending(
            id,
            seq,
            kind,
            items.iter().map(|i| i.index).collect(),
            now,
        ));
        let manifest = txn.commit().await?;
        (manifest, seq, items)
    };
    send(ctx, backoff, &manifest, seq, &items, permit).await;
    Ok(Step::Sent)
}

/// Whether a manifest must wait for answers before sending more: until the failure
/// threshold can judge it (25 final answers from the API), at most about 25 items are at
/// risk (sent and not yet answered), so that a broken template costs one chunk's worth,
/// not everything the budget could send before the first failure comes back. Create and
/// edit manifests (one item per request) may have 25 in flight, not one.
pub fn holds_for_answers(manifest: &ManifestRecord) -> bool {
    if manifest.threshold_overridden() {
        return false;
    }
    let api_rejected = manifest
        .count(ItemState::Rejected)
        .saturating_sub(manifest.local_rejections);
    let answered =
        manifest.count(ItemState::Completed) + manifest.count(ItemState::Failed) + api_rejected;
    let in_flight = manifest.count(ItemState::Sending)
        + manifest.count(ItemState::Admitted)
        + manifest.count(ItemState::AwaitingDetails);
    answered < THRESHOLD_MIN_ANSWERS && answered + in_flight >= THRESHOLD_MIN_ANSWERS
}

fn plan_next(
    txn: &mut Txn<'_>,
    now: u64,
    max_wait_ms: u64,
    slow_start: bool,
) -> Result<Plan, StoreError> {
    let manifest = txn.manifest().clone();
    if manifest.finished_at_ms.is_some()
        || manifest.rejection.is_some()
        || !manifest.control().is_running()
        // Past poll.max_wait nothing more is sent: the sweeper ends what is left.
        || now >= manifest.received_at_ms.saturating_add(max_wait_ms)
        || (slow_start && holds_for_answers(&manifest))
    {
        return Ok(Plan::Nothing);
    }
    let size = chunk_size(manifest.kind);
    if let Some(at) = manifest.credit_retry_at_ms {
        if at > now {
            return Ok(Plan::Later(at));
        }
        txn.manifest_mut().credit_retry_at_ms = None;
    }
    if manifest.count(ItemState::CreditWait) > 0 {
        // Items that waited for credits go first, one original chunk at a time.
        let mut chunk = 0;
        while chunk * size < manifest.item_count {
            let to = ((chunk + 1) * size).min(manifest.item_count);
            let waiting: Vec<ItemRecord> = txn
                .items_range(chunk * size, to)?
                .into_iter()
                .filter(|i| i.state() == ItemState::CreditWait)
                .collect();
            if !waiting.is_empty() {
                return Ok(Plan::Items(waiting));
            }
            chunk += 1;
        }
    }
    loop {
        let chunk = txn.manifest().next_chunk;
        let from = chunk.saturating_mul(size);
        if from >= manifest.item_count {
            return Ok(Plan::Nothing);
        }
        let to = from.saturating_add(size).min(manifest.item_count);
        let pending: Vec<ItemRecord> = txn
            .items_range(from, to)?
            .into_iter()
            .filter(|i| i.state() == ItemState::Pending)
            .collect();
        if !pending.is_empty() {
            return Ok(Plan::Items(pending));
        }
        txn.manifest_mut().next_chunk += 1;
    }
}

/// How long the submitter waits before trying again to record an answer it could not
/// record (the answer is kept in memory meanwhile: it is never dropped).
const RECORD_RETRY: Duration = Duration::from_secs(1);

async fn send(
    ctx: &Context,
    backoff: &mut Backoff,
    manifest: &ManifestRecord,
    seq: u32,
    items: &[ItemRecord],
    permit: BudgetPermit,
) {
    let top = top_fields(manifest);
    fail::fail_point!("submit-before-request", |_| crate::crash::simulated_crash(
    ));
    let answer = match (manifest.kind, items.first()) {
        (ManifestKind::Bulk, _) => {
            let request = build_bulk_request(&top, items);
            tracing::info!(manifest = %manifest.name, seq, items = items.len(), start_index = ?request.start_index, "sending a bulk request");
            CreateAnswer::Bulk(ctx.client.create_bulk_with(permit, &request).await)
        }
        (ManifestKind::Create, Some(item)) => {
            let request = build_create_request(&top, item);
            tracing::info!(manifest = %manifest.name, item = %item.client_item_id, "sending a create request");
            CreateAnswer::Single(
                ctx.client
                    .create_tent_with(permit, &request)
                    .await
                    .map(|r| SingleAdmission {
                        tent_id: r.id,
                        generation_id: None,
                    }),
            )
        }
        (ManifestKind::Edit, Some(item)) => {
            let request = build_edit_request(item);
            let Some(target) = item.target_tent_id.clone() else {
                // Intake resolves every edit's target or rejects the item, so this is a
                // bug: refuse to send `POST /v1/tents//edit`, and say so loudly.
                debug_assert!(false, "an edit item without a target tent id reached sending");
                tracing::error!(manifest = %manifest.name, item = %item.client_item_id, "an edit item has no target tent id (a bug): it is not sent");
                CreateAnswer::Unsendable {
                    reason: "the daemon recorded no target tent id for this edit (a bug); it was not sent".into(),
                }
                .record(ctx, backoff, manifest, seq, items)
                .await;
                return;
            };
            tracing::info!(manifest = %manifest.name, item = %item.client_item_id, tent_id = %target, "sending an edit request");
            CreateAnswer::Single(
                ctx.client
                    .edit_tent_with(permit, &target, &request)
                    .await
                    .map(|r| SingleAdmission {
                        tent_id: if r.id.is_empty() {
                            target.clone()
                        } else {
                            r.id
                        },
                        generation_id: r.generation_id,
                    }),
            )
        }
        (_, None) => return,
    };
    fail::fail_point!("submit-after-request", |_| crate::crash::simulated_crash());
    answer.record(ctx, backoff, manifest, seq, items).await;
}

impl CreateAnswer {
    /// Records the answer, however long it takes: it is what tells whether credits were
    /// spent, so it is never dropped.
    async fn record(
        &self,
        ctx: &Context,
        backoff: &mut Backoff,
        manifest: &ManifestRecord,
        seq: u32,
        items: &[ItemRecord],
    ) {
        loop {
            match record_answer(ctx, backoff, manifest, seq, items, self).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(manifest = %manifest.name, seq, "cannot record the answer to a create request (trying again): {e}");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
            }
        }
    }
}

/// Records an answer: interprets it, then applies the effects in one transaction.
async fn record_answer(
    ctx: &Context,
    backoff: &mut Backoff,
    manifest: &ManifestRecord,
    seq: u32,
    items: &[ItemRecord],
    answer: &CreateAnswer,
) -> Result<(), StoreError> {
    let id = manifest.id;
    let now = ctx.clock.now_ms();
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(id)?;
    let Some(mut job) = txn.job(seq)? else {
        return Ok(());
    };
    let indices = job.item_indices.clone();
    log_answer(manifest, answer, &indices);
    let single_tent_name = match answer {
        CreateAnswer::Single(Outcome::Success { .. }) => requested_tent_name(manifest, items),
        _ => None,
    };
    let effects = interpret(answer, &SentRequest { indices: &indices, single_tent_name });
    let any_admitted = apply_effects(&mut txn, &mut job, &effects, now)?;
    if effects.credits_short {
        let at = now.saturating_add(crate::clock::duration_ms(ctx.settings.submit.credit_retry));
        txn.manifest_mut().credit_retry_at_ms = Some(at);
        tracing::warn!(manifest = %manifest.name, retry_at = %crate::clock::rfc3339(at), "Tented is out of credits: this manifest's sending pauses and tries again later");
    }
    txn.put_job(job);
    check_failure_threshold(&mut txn, ctx.settings.submit.failure_threshold);
    txn.commit().await?;
    drop(writer);
    match effects.retry {
        Retry::Now => backoff.reset(id),
        Retry::Backoff { at_least } => {
            let delay = backoff.delay(id, at_least);
            backoff
                .not_before_ms
                .insert(id, now.saturating_add(crate::clock::duration_ms(delay)));
        }
        Retry::Unchanged => {}
    }
    if any_admitted {
        let _ = ctx.new_jobs.send(JobKey {
            manifest_id: id,
            seq,
        });
    }
    crate::pipeline::outbox::finish_if_done(ctx, id).await;
    Ok(())
}

/// Applies an answer's effects to the job and its items; returns whether any item was
/// admitted (the job then goes to the poller).
fn apply_effects(
    txn: &mut Txn<'_>,
    job: &mut JobRecord,
    effects: &AnswerEffects,
    now: u64,
) -> Result<bool, StoreError> {
    match &effects.job {
        JobLearns::Admitted { remote_id, status } => {
            job.remote_id = Some(remote_id.clone());
            job.admitted_at_ms = Some(now);
            job.status = status.clone();
        }
        JobLearns::AnswerLost => job.apply(JobEvent::AnswerLost)?,
        JobLearns::Nothing => {}
    }
    let canceled = *txn.manifest().control() == Control::Canceled;
    let (mut any_admitted, mut any_to_resend) = (false, false);
    for (index, event) in &effects.events {
        any_to_resend |= *event == ItemEvent::NotAdmitted;
        let state = txn.apply(*index, event.clone())?;
        any_admitted |= state == ItemState::Admitted;
        // Canceled while this request was on the wire: what was not admitted ends here.
        if canceled && state.is_sendable() {
            txn.apply(*index, ItemEvent::Cancel)?;
        }
    }
    if job.state() == JobState::Sending {
        job.apply(JobEvent::Answered {
            any_admitted,
            any_to_resend,
        })?;
    }
    if any_to_resend {
        // The chunk goes again: the cursor moves back to it.
        let size = chunk_size(txn.manifest().kind);
        let chunk = job.item_indices.first().copied().unwrap_or(0) / size;
        let cursor = &mut txn.manifest_mut().next_chunk;
        *cursor = (*cursor).min(chunk);
    }
    Ok(any_admitted)
}

/// The log line an answer deserves.
fn log_answer(manifest: &ManifestRecord, answer: &CreateAnswer, indices: &[u32]) {
    let name = &manifest.name;
    match answer {
        CreateAnswer::Bulk(Outcome::Success { body, .. }) => {
            tracing::info!(manifest = %name, bulk_job_id = %body.bulk_job_id, accepted = ?body.accepted_count, rejected = ?body.rejected_count, "bulk request admitted");
        }
        CreateAnswer::Single(Outcome::Success { body, .. }) => {
            tracing::info!(manifest = %name, tent_id = %body.tent_id, "tent admitted");
        }
        CreateAnswer::Bulk(Outcome::Refused { status, error, .. })
        | CreateAnswer::Single(Outcome::Refused { status, error, .. }) => {
            tracing::warn!(manifest = %name, status, "create request refused: {}", error.summary());
        }
        CreateAnswer::Bulk(Outcome::NotSent { reason })
        | CreateAnswer::Single(Outcome::NotSent { reason }) => {
            tracing::warn!(manifest = %name, "request not sent ({reason}); it will be tried again");
        }
        CreateAnswer::Bulk(Outcome::Uncertain { reason })
        | CreateAnswer::Single(Outcome::Uncertain { reason }) => {
            tracing::error!(manifest = %name, items = indices.len(), "the answer of a create request was lost ({reason}): its items end as unknown and are not resent");
        }
        // Logged where it was found.
        CreateAnswer::Unsendable { .. } => {}
    }
}

/// The tent name a single create asked for (the item's `name`, or the defaults').
fn requested_tent_name(manifest: &ManifestRecord, items: &[ItemRecord]) -> Option<String> {
    items.first().and_then(|item| {
        serde_json::from_str::<Value>(&item.given)
            .ok()
            .and_then(|g| g.get("name").and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                top_fields(manifest)
                    .get("defaults")
                    .and_then(|d| d.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    })
}

/// Pauses a manifest's remaining chunks when too many of its answered items went wrong.
pub fn check_failure_threshold(txn: &mut Txn<'_>, threshold: f64) {
    let manifest = txn.manifest();
    if manifest.threshold_overridden() || !manifest.control().is_running() {
        return;
    }
    let more_to_send =
        manifest.count(ItemState::Pending) > 0 || manifest.count(ItemState::CreditWait) > 0;
    if !more_to_send {
        return;
    }
    let api_rejected = manifest
        .count(ItemState::Rejected)
        .saturating_sub(manifest.local_rejections);
    let bad = manifest.count(ItemState::Failed) + api_rejected;
    let answered = manifest.count(ItemState::Completed) + bad;
    if answered >= THRESHOLD_MIN_ANSWERS && f64::from(bad) > threshold * f64::from(answered) {
        let name = manifest.name.clone();
        let reason = format!(
            "{bad} of the {answered} items answered so far failed or were rejected, over the failure threshold of {threshold}; the remaining items wait for `tented-bulkd resume {name}` or `tented-bulkd cancel {name}`"
        );
        tracing::warn!(manifest = %name, "manifest paused: {reason}");
        txn.manifest_mut()
            .apply_control(ControlEvent::ThresholdTripped { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Received;

    fn top(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    fn item(index: u32, given: serde_json::Value) -> ItemRecord {
        ItemRecord::pending(1, index, format!("c{index}"), given.to_string())
    }

    #[test]
    fn default_names_follow_the_documented_order() {
        let both =
            top(serde_json::json!({"default_tent_name_prefix": "P", "client_job_descriptor": "D"}));
        assert_eq!(default_tent_name(&both, 3), "P 3");
        let descriptor = top(serde_json::json!({"client_job_descriptor": "D"}));
        assert_eq!(default_tent_name(&descriptor, 3), "D 3");
        assert_eq!(default_tent_name(&Map::new(), 3), "Bulk tent 3");
    }

    #[test]
    fn items_after_a_gap_carry_their_default_name_and_the_first_keeps_its_counter() {
        let t = top(
            serde_json::json!({"template_id": "tpl_x", "default_tent_name_prefix": "P", "start_index": 5}),
        );
        // Items 25, 26 and 28 of chunk 1 (27 was rejected locally); 26 has its own name.
        let items = vec![
            item(25, serde_json::json!({"input_data": {}})),
            item(
                26,
                serde_json::json!({"input_data": {}, "tent_name": "Mine"}),
            ),
            item(28, serde_json::json!({"input_data": {}})),
        ];
        let request = build_bulk_request(&t, &items);
        assert_eq!(request.start_index, Some(30));
        assert_eq!(request.items[0].tent_name, None);
        assert_eq!(request.items[1].tent_name.as_deref(), Some("Mine"));
        assert_eq!(request.items[2].tent_name.as_deref(), Some("P 33"));
        assert_eq!(request.template_id, "tpl_x");
    }

    fn manifest_with(counts: &[(ItemState, u32)], local: u32) -> ManifestRecord {
        let mut m = ManifestRecord::received(Received {
            id: 1,
            name: "m".into(),
            inbox_file: "m.json".into(),
            kind: ManifestKind::Bulk,
            received_at_ms: 0,
            sha256: [0; 32],
            top: "{}".into(),
            item_count: 100,
            rejection: None,
        });
        for (state, n) in counts {
            m = m.with_count(*state, *n);
        }
        m.local_rejections = local;
        m
    }

    #[test]
    fn slow_start_holds_once_about_one_chunk_is_at_risk() {
        use ItemState::*;
        // Nothing sent yet: go.
        assert!(!holds_for_answers(&manifest_with(&[(Pending, 100)], 0)));
        // One full chunk generating, no answer yet: hold.
        assert!(holds_for_answers(&manifest_with(
            &[(Pending, 75), (Admitted, 25)],
            0
        )));
        // A chunk of 23 (two rejected locally) leaves room for the next.
        assert!(!holds_for_answers(&manifest_with(
            &[(Pending, 75), (Admitted, 23), (Rejected, 2)],
            2
        )));
        // 25 answers in: the threshold can judge, no more holding.
        assert!(!holds_for_answers(&manifest_with(
            &[(Pending, 50), (Admitted, 25), (Completed, 25)],
            0
        )));
        // Resumed by the operator: no holding.
        let mut resumed = manifest_with(&[(Pending, 75), (Admitted, 25)], 0);
        resumed.apply_control(ControlEvent::ThresholdTripped { reason: "r".into() });
        resumed.apply_control(ControlEvent::Resume);
        assert!(!holds_for_answers(&resumed));
    }
}
