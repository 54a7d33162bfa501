//! Submission: cuts manifests into create requests and sends each at most once.
//!
//! For each request: the intent (a `Sending` job and `Sending` items) is committed and
//! flushed, then the request goes out, then its answer is committed before anything else
//! happens. Only answers that prove the request was not admitted (not sent, 401, 429,
//! 5xx) put items back to `Pending`; a lost answer makes them `Unknown`, never resent.
//!
//! Bulk manifests go in chunks of [`BULK_CHUNK`] consecutive items; chunk k is sent with
//! `start_index + 25*k`, and items whose counter would shift (because a neighbour was
//! left out) carry their documented default name as `tent_name`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod answer;
mod fair;
mod parked;
mod requests;

use fair::ReadyQueue;
pub use parked::Parked;
use tokio::task::JoinSet;

use requests::{
    build_bulk_request, build_create_request, build_edit_request, requested_tent_name, Unsendable,
};

use crate::api::types::*;
use crate::api::{BudgetPermit, Outcome};
use crate::context::{Context, NudgeReceiver};
use crate::manifest::ManifestKind;
use crate::pipeline::policy::{holds_back, judge, Window, BULK_CHUNK};
use crate::schedule::JobKey;
use crate::state::control::Control;
use crate::state::item::{ItemEvent, ItemRecord, ItemState};
use crate::state::job::{JobEvent, JobKind, JobRecord, JobState};
use crate::store::{Applied, ChunkCursor, ManifestRecord, StoreError, Txn};
use answer::{
    interpret, AnswerEffects, CreateAnswer, JobLearns, Retry, SentRequest, SingleAdmission,
};

/// First backoff after a 5xx, a 429 on a bulk create, or a request that was not sent
/// (shorter when `poll.interval` is shorter, i.e. against the simulator).
const SEND_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The longest backoff between two attempts of one request.
const SEND_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long the submitter sleeps after an internal error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

pub fn chunk_size(kind: ManifestKind) -> u32 {
    match kind {
        ManifestKind::Bulk => BULK_CHUNK,
        ManifestKind::Create | ManifestKind::Edit => 1,
    }
}

/// What the submitter did in one step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A request's intent was recorded and the request went on the wire (in its own task).
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

    /// What an answer says about the manifest's next request.
    fn settle(&mut self, manifest_id: u64, retry: Retry, now_ms: u64) {
        match retry {
            Retry::Now => self.reset(manifest_id),
            Retry::Backoff { at_least } => {
                let delay = self.delay(manifest_id, at_least);
                let at = now_ms.saturating_add(crate::clock::duration_ms(delay));
                self.not_before_ms.insert(manifest_id, at);
            }
            Retry::Unchanged => {}
        }
    }
}

/// A request that went out: its manifest, what its answer says about the next one, and
/// how long the answer took (when one came).
type Sent = (u64, Retry, Option<Duration>);

/// The submitter's memory between steps.
pub struct Submitter {
    backoff: Backoff,
    /// Manifests that may have something to send, in the order of their turns.
    ready: ReadyQueue,
    /// (wall ms, manifest id): manifests to look at again then (backoff, credit retry).
    timers: BTreeSet<(u64, u64)>,
    window: Window,
    in_flight: JoinSet<Sent>,
    parked: Parked,
}

impl Submitter {
    /// `parked` keeps the answers the store could not record (see [`Parked`]).
    pub fn new(settings: &crate::settings::Settings, parked: Parked) -> Submitter {
        Submitter {
            backoff: Backoff::new(settings.poll.interval),
            ready: ReadyQueue::default(),
            timers: BTreeSet::new(),
            window: Window::new(
                settings.api.requests_per_second,
                settings.submit.max_in_flight,
            ),
            in_flight: JoinSet::new(),
            parked,
        }
    }

    /// Applies what a finished request's answer says about its manifest's next one.
    fn settle(&mut self, ctx: &Context, done: Result<Sent, tokio::task::JoinError>) {
        match done {
            Ok((manifest_id, retry, took)) => {
                if let Some(took) = took {
                    self.window.admitted_in(took);
                }
                self.backoff.settle(manifest_id, retry, ctx.clock.now_ms());
                // Its answer may open the way for more (slow start, a chunk to send
                // again): looked at again, after the backoff just set, if any.
                self.ready.insert(manifest_id);
            }
            // Its intent is durable: the next start reports its items `unknown`.
            Err(e) => tracing::error!("a create request's task failed: {e}"),
        }
    }

    /// Queues the manifests nudged since the last look, and those whose timer is due.
    fn absorb(&mut self, ctx: &Context, nudges: &NudgeReceiver) {
        let (all, nudged) = nudges.take();
        if all {
            for id in ctx.active_ids() {
                self.ready.insert(id);
            }
        }
        for id in nudged {
            self.ready.insert(id);
        }
        let now = ctx.clock.now_ms();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.ready.insert(id);
        }
    }

    /// How many create requests may be on the wire now (see [`Window`]).
    pub fn window_size(&self) -> usize {
        self.window.size()
    }
}

/// The submitter task: keeps as many create requests on the wire as the budget and the
/// admission time need (at most `submit.max_in_flight`), and lets the requests under way
/// end (and their answers be recorded) at shutdown. Answers the store could not record
/// wait in `parked` (see [`Parked`]). It owns the receiving end of the nudges.
pub async fn run(
    ctx: Arc<Context>,
    nudges: NudgeReceiver,
    shutdown: CancellationToken,
    parked: Parked,
) {
    let mut submitter = Submitter::new(&ctx.settings, parked);
    while !shutdown.is_cancelled() {
        while let Some(done) = submitter.in_flight.try_join_next() {
            submitter.settle(&ctx, done);
        }
        if !submitter.parked.is_empty() && !ctx.store.write_failed() {
            // The store writes again without being opened again.
            submitter.parked.record_all(&ctx).await;
        }
        submitter.absorb(&ctx, &nudges);
        let mut wait = submitter.timers.first().map(|&(at, _)| at);
        if ctx.store.write_failed() {
            // No intent is recorded (its items would read `Sending`, never sent) until
            // the store writes again: looked at again after a pause.
            wait = Some(ctx.clock.now_ms() + crate::clock::duration_ms(ERROR_PAUSE));
        } else if submitter.in_flight.len() < submitter.window.size() {
            let step = step(&ctx, &mut submitter).await;
            ctx.health.mark_progress();
            match step {
                Ok(Step::Sent) => continue,
                Ok(Step::Idle { until_ms }) => wait = until_ms,
                Err(e) => {
                    tracing::error!("submission: {e}");
                    wait = Some(ctx.clock.now_ms() + crate::clock::duration_ms(ERROR_PAUSE));
                }
            }
        }
        let wait = wait.map_or(Duration::from_secs(3600), |at| {
            ctx.clock
                .instant_at(at)
                .saturating_duration_since(tokio::time::Instant::now())
        });
        let nudged = nudges.notified();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = submitter.in_flight.join_next(), if !submitter.in_flight.is_empty() => {
                submitter.settle(&ctx, done);
            }
            _ = nudged => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Requests under way end (or time out) and their answers are recorded.
    while let Some(done) = submitter.in_flight.join_next().await {
        submitter.settle(&ctx, done);
    }
}

/// What to send next for one manifest.
enum Plan {
    /// These items, to be recorded `Sending`. `rest_of_chunk`: they are every item of
    /// the cursor's chunk still to send, so the cursor moves on with them.
    Items {
        items: Vec<ItemRecord>,
        rest_of_chunk: bool,
    },
    /// Something to send (a [`Look::Probe`] does not read what).
    Ready,
    Nothing,
    Later(u64),
}

/// How [`plan_next`] looks at the items to send.
#[derive(Clone, Copy, PartialEq)]
enum Look {
    /// Whether there is any: the items' states only, not their records (an item still as
    /// intake wrote it is not parsed).
    Probe,
    /// Which: their records, to send.
    Take,
}

/// What [`probe`] finds of one manifest.
enum Probe {
    /// Something to send now; the manifest's weight.
    Ready(u32),
    /// Nothing to send before this time.
    Later(u64),
    Nothing,
}

/// Looks at one manifest: whether it has something to send now (then its weight), must
/// wait until a time, or has nothing (it leaves the queue until nudged). Nothing is
/// recorded but moved cursors.
async fn probe(ctx: &Context, id: u64, now: u64) -> Result<Probe, StoreError> {
    let writer = ctx.store.writer().await;
    let mut txn = match writer.begin(id) {
        Ok(txn) => txn,
        Err(StoreError::NoManifest(_)) => return Ok(Probe::Nothing),
        Err(e) => return Err(e),
    };
    let before = txn.manifest().clone();
    match plan_next(ctx, &mut txn, now, Look::Probe)? {
        Plan::Ready | Plan::Items { .. } => Ok(Probe::Ready(before.top.priority.weight())),
        Plan::Later(at) => Ok(Probe::Later(at)),
        Plan::Nothing => {
            // Only a moved cursor or a cleared credit retry is worth a write, and neither
            // a sync: lost to a crash, `plan_next` moves and clears them again. Synced,
            // this was a sync per manifest (after its last chunk went).
            if txn.manifest() != &before {
                txn.commit_soon()?;
            }
            Ok(Probe::Nothing)
        }
    }
}

/// The next manifest whose turn it is and that has something to send now, with its
/// weight; those that must wait get a timer, those with nothing leave the queue.
async fn next_turn(
    ctx: &Context,
    submitter: &mut Submitter,
    now: u64,
) -> Result<Option<(u64, u32)>, StoreError> {
    while let Some(id) = submitter.ready.pop() {
        if let Some(&at) = submitter.backoff.not_before_ms.get(&id) {
            if at > now {
                submitter.timers.insert((at, id));
                continue;
            }
        }
        match probe(ctx, id, now).await {
            Ok(Probe::Ready(weight)) => return Ok(Some((id, weight))),
            Ok(Probe::Nothing) => {}
            Ok(Probe::Later(at)) => {
                submitter.timers.insert((at, id));
            }
            Err(e) => {
                // Looked at again after a pause.
                let again = now.saturating_add(crate::clock::duration_ms(ERROR_PAUSE));
                submitter.timers.insert((again, id));
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// Puts at most one more request on the wire: the next one of the manifest whose turn it
/// is (fair share by priority), its intent durable before it leaves.
pub async fn step(ctx: &Arc<Context>, submitter: &mut Submitter) -> Result<Step, StoreError> {
    let now = ctx.clock.now_ms();
    let Some((id, weight)) = next_turn(ctx, submitter, now).await? else {
        return Ok(Step::Idle {
            until_ms: submitter.timers.first().map(|&(at, _)| at),
        });
    };
    // It had its turn; it comes back for the next one behind the others.
    submitter.ready.charge(id, weight);
    // Wait for the budget (and any 401 pause) before recording anything, so that a long
    // wait, a shutdown or a crash in it never leaves items `Sending` that were not sent.
    let permit = ctx.client.reserve_as(crate::api::CallClass::Create).await;
    if ctx
        .client
        .note_budget_wait(crate::api::CallClass::Create, &permit)
    {
        tracing::info!(
            waited_ms = permit.waited().as_millis() as u64,
            "the request budget (api.requests_per_second) is what delays create requests"
        );
    }
    let Some((manifest, seq, items, intent)) = record_intent(ctx, id).await? else {
        // Something changed while we waited (a cancel, a pause): look again.
        return Ok(Step::Sent);
    };
    let ctx = Arc::clone(ctx);
    let parked = submitter.parked.clone();
    submitter.in_flight.spawn(async move {
        // The slot is taken until the answer is recorded: that is the time the window
        // follows (only for answers that came: a lost one says nothing of it).
        let started = tokio::time::Instant::now();
        // The intent is durable before the request leaves.
        if let Err(e) = ctx.store.durable(intent).await {
            // Its items stay `Sending` in the store, which cannot write now; the store is
            // opened again and recovery reports them `unknown`: never sent twice.
            tracing::error!(manifest = %manifest.name, seq, "the intent of a create request is not durable; the request is not sent: {e}");
            return (manifest.id, Retry::Unchanged, None);
        }
        let (retry, answered) = send(&ctx, &manifest, seq, &items, permit, &parked).await;
        (manifest.id, retry, answered.then(|| started.elapsed()))
    });
    Ok(Step::Sent)
}

/// What a recorded intent gives the request's task: the manifest, the job's sequence
/// number, its items, and the writes to wait for before the request leaves.
type Intent = (ManifestRecord, u32, Vec<ItemRecord>, Applied);

/// Records that the manifest's next request is about to be sent: applied now (the next
/// plan sees its items `Sending`), durable once [`crate::store::Store::durable`] returns
/// for the returned [`Applied`].
async fn record_intent(ctx: &Context, id: u64) -> Result<Option<Intent>, StoreError> {
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(id)?;
    let now = ctx.clock.now_ms();
    let Plan::Items {
        items,
        rest_of_chunk,
    } = plan_next(ctx, &mut txn, now, Look::Take)?
    else {
        return Ok(None);
    };
    let seq = txn.take_job_seq();
    let kind = match txn.manifest().kind {
        ManifestKind::Bulk => JobKind::Bulk,
        ManifestKind::Create => JobKind::Create,
        ManifestKind::Edit => JobKind::Edit,
    };
    for item in &items {
        txn.apply_read(item.clone(), ItemEvent::SendIntent { job_seq: seq })?;
    }
    if rest_of_chunk {
        // Nothing of the chunk is left to send (a chunk not admitted moves the cursor
        // back to it): the next look starts at the next chunk, not reading this one again.
        txn.move_chunk_cursor(ChunkCursor::Next);
    }
    let indices = items.iter().map(|i| i.index).collect();
    txn.put_job(JobRecord::sending(id, seq, kind, indices, now));
    let applied = txn.apply_without_sync()?;
    Ok(Some((applied.manifest().clone(), seq, items, applied)))
}

fn plan_next(ctx: &Context, txn: &mut Txn<'_>, now: u64, look: Look) -> Result<Plan, StoreError> {
    let max_wait_ms = crate::clock::duration_ms(ctx.settings.poll.max_wait);
    let manifest = txn.manifest().clone();
    if manifest.finished_at_ms.is_some()
        || manifest.rejection.is_some()
        || !manifest.control().is_running()
        // Past poll.max_wait nothing more is sent: the sweeper ends what is left.
        || now >= manifest.received_at_ms.saturating_add(max_wait_ms)
        || holds_back(ctx, &manifest)
    {
        return Ok(Plan::Nothing);
    }
    let size = chunk_size(manifest.kind);
    if let Some(at) = manifest.credit_retry_at_ms {
        if at > now {
            return Ok(Plan::Later(at));
        }
        txn.set_credit_retry(None);
    }
    if manifest.count(ItemState::CreditWait) > 0 {
        // Items that waited for credits go first, one original chunk at a time.
        let mut chunk = 0;
        while chunk * size < manifest.item_count {
            let to = ((chunk + 1) * size).min(manifest.item_count);
            let range = (chunk * size, to);
            if let Some(plan) = items_in(txn, range, ItemState::CreditWait, look, false)? {
                return Ok(plan);
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
        if let Some(plan) = items_in(txn, (from, to), ItemState::Pending, look, true)? {
            return Ok(plan);
        }
        txn.move_chunk_cursor(ChunkCursor::Next);
    }
}

/// The plan of the items of `range` in `state`, if there are any: their records
/// ([`Look::Take`]) or only that there are ([`Look::Probe`]).
fn items_in(
    txn: &Txn<'_>,
    (from, to): (u32, u32),
    state: ItemState,
    look: Look,
    rest_of_chunk: bool,
) -> Result<Option<Plan>, StoreError> {
    if look == Look::Probe {
        let states = txn.states_range(from, to)?;
        return Ok(states
            .iter()
            .any(|&(_, s)| s == state)
            .then_some(Plan::Ready));
    }
    let items: Vec<ItemRecord> = txn
        .items_range(from, to)?
        .into_iter()
        .filter(|i| i.state() == state)
        .collect();
    Ok((!items.is_empty()).then_some(Plan::Items {
        items,
        rest_of_chunk,
    }))
}

/// How long the submitter waits before trying again to record an answer it could not
/// record (the answer is kept in memory meanwhile: it is never dropped).
const RECORD_RETRY: Duration = Duration::from_secs(1);

/// One request, built and ready to go.
enum Request {
    Bulk(BulkCreateRequest),
    Create(CreateTentRequest),
    Edit {
        target: String,
        request: EditTentRequest,
    },
}

/// The request a manifest's items become.
fn build_request(manifest: &ManifestRecord, items: &[ItemRecord]) -> Result<Request, Unsendable> {
    let first = items
        .first()
        .ok_or_else(|| Unsendable("a request with no items (a bug)".into()))?;
    Ok(match manifest.kind {
        ManifestKind::Bulk => Request::Bulk(build_bulk_request(&manifest.top, items)?),
        ManifestKind::Create => Request::Create(build_create_request(&manifest.top, first)?),
        ManifestKind::Edit => {
            let (target, request) = build_edit_request(first)?;
            Request::Edit { target, request }
        }
    })
}

/// Sends one request whose intent is durable, and records its answer; returns what the
/// answer says about the manifest's next request, and whether an answer came.
async fn send(
    ctx: &Context,
    manifest: &ManifestRecord,
    seq: u32,
    items: &[ItemRecord],
    permit: BudgetPermit,
    parked: &Parked,
) -> (Retry, bool) {
    fail::fail_point!("submit-before-request", |_| crate::crash::simulated_crash());
    let name = &manifest.name;
    let answer = match build_request(manifest, items) {
        Ok(Request::Bulk(request)) => {
            tracing::info!(manifest = %name, seq, items = items.len(), start_index = request.start_index, "sending a bulk request");
            CreateAnswer::Bulk(ctx.client.create_bulk_with(permit, &request).await)
        }
        Ok(Request::Create(request)) => {
            tracing::info!(manifest = %name, client_item_id = ?items.first().map(|i| &i.client_item_id), "sending a create request");
            let outcome = ctx.client.create_tent_with(permit, &request).await;
            CreateAnswer::Single(outcome.map(|r| SingleAdmission {
                tent_id: r.id,
                generation_id: None,
            }))
        }
        Ok(Request::Edit { target, request }) => {
            tracing::info!(manifest = %name, client_item_id = ?items.first().map(|i| &i.client_item_id), tent_id = %target, "sending an edit request");
            let outcome = ctx.client.edit_tent_with(permit, &target, &request).await;
            CreateAnswer::Single(outcome.map(|r| SingleAdmission {
                tent_id: if r.id.is_empty() {
                    target.clone()
                } else {
                    r.id
                },
                generation_id: r.generation_id,
            }))
        }
        Err(Unsendable(reason)) => {
            // Intake records every field a request needs, so this is a bug or a damaged
            // store: nothing made up is sent, and the items say why.
            debug_assert!(false, "an unsendable request reached sending: {reason}");
            tracing::error!(manifest = %name, seq, "a request cannot be built: {reason}");
            CreateAnswer::Unsendable { reason }
        }
    };
    fail::fail_point!("submit-after-request", |_| crate::crash::simulated_crash());
    let answered = answer.answered();
    (
        answer.record(ctx, manifest, seq, items, parked).await,
        answered,
    )
}

impl CreateAnswer {
    /// Records the answer, however long it takes: it is what tells whether credits were
    /// spent, so it is never dropped. While the store cannot write (a full disk), it
    /// waits in `parked`, which outlives this pipeline if the store must be opened again.
    async fn record(
        self,
        ctx: &Context,
        manifest: &ManifestRecord,
        seq: u32,
        items: &[ItemRecord],
        parked: &Parked,
    ) -> Retry {
        loop {
            match record_answer(ctx, manifest, seq, items, &self).await {
                Ok(retry) => return retry,
                Err(_) if ctx.store.write_failed() => {
                    parked.park(manifest, seq, items, self);
                    return Retry::Unchanged;
                }
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
    manifest: &ManifestRecord,
    seq: u32,
    items: &[ItemRecord],
    answer: &CreateAnswer,
) -> Result<Retry, StoreError> {
    let id = manifest.id;
    let now = ctx.clock.now_ms();
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(id)?;
    let Some(mut job) = txn.job(seq)? else {
        return Ok(Retry::Unchanged);
    };
    if job.state() != JobState::Sending {
        // Recorded already: a parked answer whose commit reached the disk although its
        // sync reported a failure (the store was opened again since).
        tracing::info!(manifest = %manifest.name, seq, "this answer was recorded already");
        return Ok(Retry::Unchanged);
    }
    let indices = job.item_indices.clone();
    let completed_before = txn.manifest().count(ItemState::Completed);
    log_answer(manifest, answer, &indices);
    let single_tent_name = match answer {
        CreateAnswer::Single(Outcome::Success { .. }) => items
            .first()
            .and_then(|item| requested_tent_name(manifest, item)),
        _ => None,
    };
    let effects = interpret(
        answer,
        &SentRequest {
            indices: &indices,
            single_tent_name,
        },
    );
    let any_admitted = apply_effects(&mut txn, &mut job, &effects, now)?;
    if effects.credits_short {
        let at = now.saturating_add(crate::clock::duration_ms(ctx.settings.submit.credit_retry));
        txn.set_credit_retry(Some(at));
        tracing::warn!(manifest = %manifest.name, retry_at = %crate::clock::rfc3339(at), "Tented is out of credits: this manifest's sending pauses and tries again later");
    }
    txn.put_job(job);
    let newly_proven = judge(ctx, &mut txn, completed_before)?;
    // The last answer finishes the manifest in its own commit (the result follows).
    txn.finish(now);
    txn.commit().await?;
    drop(writer);
    if any_admitted {
        ctx.poll_admitted(JobKey {
            manifest_id: id,
            seq,
        });
    }
    crate::pipeline::outbox::finish_if_done(ctx, id).await;
    // The manifest itself is queued again by the submitter once it has settled the
    // answer's backoff (`Submitter::settle`): a nudge from here could let its chunk go
    // again before the backoff is known.
    if newly_proven {
        ctx.nudge_all();
    }
    Ok(effects.retry)
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
            job.admitted_as(remote_id.clone(), now);
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
        if let Some(first) = job.first_index() {
            txn.move_chunk_cursor(ChunkCursor::BackTo(first / size));
        }
    }
    Ok(any_admitted)
}

/// The log line an answer deserves.
fn log_answer(manifest: &ManifestRecord, answer: &CreateAnswer, indices: &[u32]) {
    let name = &manifest.name;
    match answer {
        CreateAnswer::Bulk(Outcome::Success { body, .. }) => {
            tracing::info!(manifest = %name, bulk_job_id = %body.bulk_job_id, accepted = body.accepted_count, rejected = body.rejected_count, "bulk request admitted");
        }
        CreateAnswer::Single(Outcome::Success { body, .. }) => {
            tracing::info!(manifest = %name, tent_id = %body.tent_id, "tent admitted");
        }
        // A 401 pauses every call, and the pause logs it once a minute.
        CreateAnswer::Bulk(Outcome::Refused { status: 401, .. })
        | CreateAnswer::Single(Outcome::Refused { status: 401, .. }) => {
            tracing::debug!(manifest = %name, "create request refused: 401 (the key is refused; calls are paused)");
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
