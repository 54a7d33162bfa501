//! Polling: one scheduler for every admitted job, never faster than the floor.
//!
//! A single `DelayQueue` holds one entry per job that still has unfinished items, due at
//! [`next_poll_due_ms`]: at least `poll.interval` after admission, and at least
//! `max(poll.interval, Retry-After)` after the previous poll. The time of each poll is
//! recorded before the request goes out (durable with the next sync, at most 100 ms
//! later), and after a start no job is polled before a floor has passed: the floor holds
//! across restarts and crashes. An answer's `Retry-After` is synced before anything else.
//! Polls share the client's request budget; a few run at once so that a slow answer does
//! not hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

use crate::api::CallClass;
use crate::context::Context;
use crate::pipeline::policy::{holds_back, Answers, Window};
use crate::schedule::{
    job_due_ms, next_poll_due_ms, template_key, times_keys_nearest, with_expectation, ExpectedJob,
    Generations, JobKey, PollResult,
};
use crate::state::job::{JobKind, JobRecord, JobState};
use crate::store::StoreError;

/// The most polls under way at once; below it, as many as the budget and the time a
/// poll takes need (Little's law, as for creates: [`Window`]).
pub const MAX_CONCURRENT_POLLS: u32 = 32;

/// The furthest ahead a poll is scheduled; a later one is looked at again then.
pub const SCHEDULE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// The scheduler: the due-time queue and its bookkeeping.
pub struct Scheduler {
    queue: DelayQueue<JobKey>,
    entries: HashMap<JobKey, delay_queue::Key>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler {
            queue: DelayQueue::new(),
            entries: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Schedules (or reschedules) a job for the given tokio instant (at most
    /// [`SCHEDULE_HORIZON`] ahead: the queue cannot hold deadlines years away).
    pub fn schedule(&mut self, key: JobKey, at: tokio::time::Instant) {
        let at = at.min(tokio::time::Instant::now() + SCHEDULE_HORIZON);
        match self.entries.get(&key) {
            Some(entry) => self.queue.reset_at(entry, at),
            None => {
                let entry = self.queue.insert_at(key, at);
                self.entries.insert(key, entry);
            }
        }
    }

    /// The next job that is due; pending while none is.
    pub async fn next_due(&mut self) -> Option<JobKey> {
        let expired = std::future::poll_fn(|cx| self.queue.poll_expired(cx)).await?;
        let key = expired.into_inner();
        self.entries.remove(&key);
        Some(key)
    }
}

/// The poller task. It owns the receiving end of the admitted jobs ([`Context::poll_admitted`]).
pub async fn run(
    ctx: Arc<Context>,
    mut admitted: mpsc::UnboundedReceiver<JobKey>,
    generations: Generations,
    shutdown: CancellationToken,
) {
    let generations = Arc::new(generations);
    let mut scheduler = Scheduler::new();
    schedule_loaded(&ctx, &generations, &mut scheduler);
    let mut inflight: JoinSet<(JobKey, Result<PollResult, StoreError>, Option<Duration>)> =
        JoinSet::new();
    let mut window = Window::new(ctx.settings.api.requests_per_second, MAX_CONCURRENT_POLLS);
    // Which job each poll task polls, so that one that panics is scheduled again.
    let mut task_jobs: HashMap<tokio::task::Id, JobKey> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(key) = admitted.recv() => {
                match ctx.store.job(key.manifest_id, key.seq) {
                    Ok(Some(job)) => {
                        let due = next_poll_due_ms(&job, ctx.poll_floor_ms(), 0);
                        let due = with_expectation(due, &job, expected_ms(&ctx, &generations, &job));
                        scheduler.schedule(key, ctx.clock.instant_at(due));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!("polling: {e}"),
                }
            }
            Some(key) = scheduler.next_due(), if inflight.len() < window.size() && !scheduler.is_empty() => {
                let ctx = Arc::clone(&ctx);
                let generations = Arc::clone(&generations);
                let handle = inflight.spawn(async move {
                    let started = tokio::time::Instant::now();
                    match poll_job(&ctx, &generations, key).await {
                        // Only a poll that went out says how long one takes.
                        Ok((result, sent)) => (key, Ok(result), sent.then(|| started.elapsed())),
                        Err(e) => (key, Err(e), None),
                    }
                });
                task_jobs.insert(handle.id(), key);
            }
            Some(joined) = inflight.join_next_with_id() => {
                ctx.health.mark_progress();
                let retry_at = ctx.clock.now_ms().saturating_add(ctx.poll_floor_ms());
                match joined {
                    Ok((id, (key, result, took))) => {
                        task_jobs.remove(&id);
                        if let Some(took) = took {
                            window.admitted_in(took);
                        }
                        match result {
                            Ok(PollResult::Again(at)) => scheduler.schedule(key, ctx.clock.instant_at(at)),
                            Ok(PollResult::Done) => generations.job_finished(key),
                            Err(e) => {
                                tracing::error!(manifest_id = key.manifest_id, seq = key.seq, "polling: {e}");
                                scheduler.schedule(key, ctx.clock.instant_at(retry_at));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("a poll task ended abnormally: {e}");
                        if let Some(key) = task_jobs.remove(&e.id()) {
                            scheduler.schedule(key, ctx.clock.instant_at(retry_at));
                        }
                    }
                }
            }
        }
    }
    // Let the polls under way end (each is bounded by the request timeout).
    while inflight.join_next().await.is_some() {}
}

/// `None` when the job may be polled now; else when it may.
fn not_due_until(
    ctx: &Context,
    generations: &Generations,
    key: JobKey,
    floor: u64,
) -> Result<Option<PollResult>, StoreError> {
    let Some(job) = ctx.store.job(key.manifest_id, key.seq)? else {
        return Ok(Some(PollResult::Done));
    };
    if job.state() != JobState::Admitted {
        return Ok(Some(PollResult::Done));
    }
    let tent = match (job.admission(), job.kind) {
        (Some(admission), JobKind::Create | JobKind::Edit) => {
            ctx.store.tent_poll(admission.remote_id)?
        }
        _ => None,
    };
    let due = with_expectation(
        job_due_ms(&job, tent, floor),
        &job,
        expected_ms(ctx, generations, &job),
    );
    Ok((due > ctx.clock.now_ms()).then_some(PollResult::Again(due)))
}

/// Schedules every admitted job of every unfinished manifest, at start.
fn schedule_loaded(ctx: &Context, generations: &Generations, scheduler: &mut Scheduler) {
    // A poll recorded before a crash may have left a little after its recorded time (the
    // record's flush comes first): after a start, no job is polled sooner than one floor
    // from now, which is after every poll the previous run sent.
    let after_start = ctx.clock.now_ms().saturating_add(ctx.poll_floor_ms());
    match load_jobs(ctx) {
        Ok(jobs) => {
            for job in jobs {
                let due = next_poll_due_ms(&job, ctx.poll_floor_ms(), 0).max(after_start);
                let due = with_expectation(due, &job, expected_ms(ctx, generations, &job));
                scheduler.schedule(
                    JobKey {
                        manifest_id: job.manifest_id,
                        seq: job.seq,
                    },
                    ctx.clock.instant_at(due),
                );
            }
        }
        Err(e) => tracing::error!("polling: cannot load jobs: {e}"),
    }
}

/// When a bulk job that was never polled can first be expected to have finished, from
/// what the daemon learned of its template. Without an answer (none learned yet, or the
/// manifest cannot be read) the job is polled at the floor, as it always could be.
fn expected_ms(ctx: &Context, generations: &Generations, job: &JobRecord) -> Option<u64> {
    if job.kind != JobKind::Bulk || job.last_polled_at_ms.is_some() {
        return None;
    }
    let manifest = ctx.store.manifest(job.manifest_id).ok().flatten()?;
    let template_id = manifest.top.template_id.as_deref();
    let template = template_key(manifest.kind, template_id);
    let admitted = job.admission()?.at_ms;
    let id = JobKey {
        manifest_id: job.manifest_id,
        seq: job.seq,
    };
    generations.job_running(id, &template, admitted);
    // A manifest that holds chunks back until its first success (the slow start) polls
    // at the floor, for that success, not at the expected end of the whole job: it is
    // what lets the next chunks go. Once one came, the window opens by doubling, and
    // later jobs are polled where their answers are.
    if holds_back(ctx, &manifest) && Answers::of(&manifest).succeeded == 0 {
        return None;
    }
    let times_keys = times_keys_nearest(manifest.kind, template_id, job.item_indices.len());
    let expected = ExpectedJob {
        key: id,
        template: &template,
        times_keys: &times_keys,
        admitted_ms: admitted,
    };
    generations.expected_ms(&expected, ctx.clock.now_ms(), ctx.poll_floor_ms())
}

/// Every admitted job of every unfinished manifest.
fn load_jobs(ctx: &Context) -> Result<Vec<JobRecord>, StoreError> {
    let mut out = Vec::new();
    for id in ctx.active_ids() {
        for job in ctx.store.jobs(id)? {
            if job.state() == JobState::Admitted {
                out.push(job);
            }
        }
    }
    Ok(out)
}

/// Polls one job once (and fetches publication details it calls for).
/// Returns also whether a request went out (a job not due yet sends none).
pub async fn poll_job(
    ctx: &Context,
    generations: &Generations,
    key: JobKey,
) -> Result<(PollResult, bool), StoreError> {
    let floor = ctx.poll_floor_ms();
    if let Some(later) = not_due_until(ctx, generations, key, floor)? {
        return Ok((later, false));
    }
    // 1. Reserve the budget, then record the poll, then send it: the recorded time is
    //    the time it leaves. It needs no sync of its own before it leaves (one comes
    //    within `DURABLE_WITHIN`): after a start no job is polled before a floor has passed.
    let permit = ctx.client.reserve().await;
    if ctx.client.note_budget_wait(CallClass::Poll, &permit) {
        tracing::info!(
            waited_ms = permit.waited().as_millis() as u64,
            "the request budget (api.requests_per_second), not the poll floor, is what delays polls"
        );
    }
    let (job, remote_id) = {
        let writer = ctx.store.writer().await;
        let mut txn = match writer.begin(key.manifest_id) {
            Ok(txn) => txn,
            Err(StoreError::NoManifest(_)) => return Ok((PollResult::Done, false)),
            Err(e) => return Err(e),
        };
        let Some(mut job) = txn.job(key.seq)? else {
            return Ok((PollResult::Done, false));
        };
        if job.state() != JobState::Admitted {
            return Ok((PollResult::Done, false));
        }
        let now = ctx.clock.now_ms();
        let Some(remote_id) = job.admission().map(|a| a.remote_id.to_owned()) else {
            job.report_missing_admission();
            return Ok((PollResult::Done, false));
        };
        let tent = match job.kind {
            JobKind::Create | JobKind::Edit => txn.tent_poll(&remote_id)?,
            JobKind::Bulk => None,
        };
        // Checked again under the writer's lock: a detail fetch may have just polled it.
        let due = job_due_ms(&job, tent, floor);
        if due > now {
            return Ok((PollResult::Again(due), false));
        }
        ctx.metrics
            .observe_poll_lateness(Duration::from_millis(now.saturating_sub(due)));
        job.last_polled_at_ms = Some(now);
        if let JobKind::Create | JobKind::Edit = job.kind {
            txn.put_tent_poll(
                &remote_id,
                crate::schedule::TentPollRecord {
                    last_polled_at_ms: now,
                    retry_after_ms: tent.and_then(|t| t.retry_after_ms),
                },
            );
        }
        txn.put_job(job.clone());
        txn.commit_soon()?;
        (job, remote_id)
    };
    fail::fail_point!("poll-after-record", |_| crate::crash::simulated_crash());
    // 2. The poll itself, then its answer is recorded.
    let result = match job.kind {
        JobKind::Bulk => {
            let outcome = ctx.client.bulk_job_with(permit, &remote_id).await;
            crate::pipeline::reconciliation::record_bulk_poll(ctx, generations, key, outcome)
                .await?
        }
        JobKind::Create | JobKind::Edit => {
            let outcome = ctx.client.tent_with(permit, &remote_id).await;
            crate::pipeline::reconciliation::record_tent_poll(ctx, key, outcome).await?
        }
    };
    Ok((result, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(admitted: u64) -> JobRecord {
        JobRecord::admitted_for_test(1, 0, JobKind::Bulk, admitted)
    }

    #[tokio::test(start_paused = true)]
    async fn the_scheduler_releases_jobs_in_due_order_and_not_before() {
        let mut scheduler = Scheduler::new();
        let start = tokio::time::Instant::now();
        let a = JobKey {
            manifest_id: 1,
            seq: 0,
        };
        let b = JobKey {
            manifest_id: 1,
            seq: 1,
        };
        scheduler.schedule(a, start + Duration::from_secs(20));
        scheduler.schedule(b, start + Duration::from_secs(10));
        assert_eq!(scheduler.next_due().await, Some(b));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(scheduler.next_due().await, Some(a));
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(scheduler.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rescheduling_moves_an_entry_instead_of_adding_one() {
        let mut scheduler = Scheduler::new();
        let start = tokio::time::Instant::now();
        let a = JobKey {
            manifest_id: 1,
            seq: 0,
        };
        scheduler.schedule(a, start + Duration::from_secs(10));
        scheduler.schedule(a, start + Duration::from_secs(30));
        assert_eq!(scheduler.len(), 1);
        assert_eq!(scheduler.next_due().await, Some(a));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_restart_persisted_poll_times_keep_the_floor() {
        // The previous process polled job A 3 s and job B 12 s before this one started,
        // and Tented asked for 20 s on job C: a new scheduler must respect all three.
        let clock = crate::clock::Clock::starting_at(1_000_000);
        let now = clock.now_ms();
        let floor = 10_000;
        let mut a = job(now - 60_000);
        a.last_polled_at_ms = Some(now - 3_000);
        let mut b = job(now - 60_000);
        b.seq = 1;
        b.last_polled_at_ms = Some(now - 12_000);
        let mut c = job(now - 60_000);
        c.seq = 2;
        c.last_polled_at_ms = Some(now - 1_000);
        c.retry_after_ms = Some(20_000);
        let mut scheduler = Scheduler::new();
        for j in [&a, &b, &c] {
            let key = JobKey {
                manifest_id: 1,
                seq: j.seq,
            };
            scheduler.schedule(key, clock.instant_at(next_poll_due_ms(j, floor, 0)));
        }
        let start = tokio::time::Instant::now();
        let key = |seq| JobKey {
            manifest_id: 1,
            seq,
        };
        assert_eq!(scheduler.next_due().await, Some(key(1)));
        assert_eq!(start.elapsed(), Duration::ZERO, "B is overdue: at once");
        assert_eq!(scheduler.next_due().await, Some(key(0)));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(7),
            "A: 10 s after its last poll"
        );
        assert_eq!(scheduler.next_due().await, Some(key(2)));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(19),
            "C: its Retry-After"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_jobs_are_released_each_exactly_once() {
        let mut scheduler = Scheduler::new();
        let start = tokio::time::Instant::now();
        for seq in 0..10_000u32 {
            scheduler.schedule(
                JobKey {
                    manifest_id: 1,
                    seq,
                },
                start + Duration::from_millis(u64::from(seq % 97) * 100),
            );
        }
        let mut seen = std::collections::HashSet::new();
        while !scheduler.is_empty() {
            let key = scheduler.next_due().await.unwrap();
            assert!(seen.insert(key));
        }
        assert_eq!(seen.len(), 10_000);
    }
}
