//! Reconciliation: turns poll answers into item events, and ends what waits too long.
//!
//! An item is final when its generation is final and, with auto-publish, its publication
//! is no longer `pending`. Warnings, the applied alias and publish errors appear only in
//! `GET /v1/tents/{id}`: items published with warnings or whose publication failed get
//! exactly one such call (more only if it fails).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::types::*;
use crate::api::Outcome;
use crate::context::Context;
use crate::pipeline::policy::{judge, requested_alias, wants_publication};
use crate::schedule::TentPollRecord;
use crate::schedule::{
    next_poll_due_ms, retry_after_ms, times_key, GenerationTimes, Generations, JobKey, PollResult,
};
use crate::state::item::{ItemEvent, ItemRecord, ItemState, NoticeRecord, PublicationRecord};
use crate::state::job::{JobEvent, JobRecord, JobState};
use crate::store::{StoreError, Txn};

/// How long a bulk job may answer 404 before its unfinished items fail.
pub const JOB_NOT_FOUND_LIMIT: Duration = Duration::from_secs(600);

/// How often the sweeper looks for deadlines, unwritten results and credit retries, at most.
pub const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(10);

fn notice(n: &Notice) -> NoticeRecord {
    NoticeRecord {
        code: n.code.clone(),
        message: n.message.clone(),
    }
}

/// The result file's publication object from a tent's publication.
pub fn publication_record(p: &Publication) -> PublicationRecord {
    PublicationRecord {
        status: p.status.clone(),
        published_url: p.published_url.clone(),
        requested_custom_page_alias: p.requested_custom_page_alias.clone(),
        applied_custom_page_alias: p.applied_custom_page_alias.clone(),
        warnings: p.warnings.iter().map(notice).collect(),
        error: p.error.as_ref().map(notice),
    }
}

/// Whether the item's generation was already seen completed (by an earlier poll).
fn seen_completed(item: &ItemRecord) -> bool {
    item.generation_status == Some(GenerationStatus::Completed)
}

/// The event a bulk job's item status means for our item, if any.
pub fn bulk_item_event(
    item: &ItemRecord,
    job_item: &BulkJobItem,
    auto_publish: bool,
) -> Option<ItemEvent> {
    if item.state() != ItemState::Admitted {
        return None;
    }
    match &job_item.status {
        GenerationStatus::Completed if !auto_publish => {
            Some(ItemEvent::Generated { publication: None })
        }
        GenerationStatus::Completed => bulk_publication_event(item, job_item),
        GenerationStatus::Failed | GenerationStatus::Rejected => {
            Some(ItemEvent::GenerationFailed {
                message: job_item
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("generation {}", job_item.status)),
            })
        }
        GenerationStatus::Queued | GenerationStatus::Generating | GenerationStatus::Other(_) => {
            (item.generation_status.as_ref() != Some(&job_item.status)).then(|| {
                ItemEvent::Progress {
                    generation_status: job_item.status.clone(),
                    publication: None,
                }
            })
        }
    }
}

/// A completed, auto-published bulk item: where its publication stands.
fn bulk_publication_event(item: &ItemRecord, job_item: &BulkJobItem) -> Option<ItemEvent> {
    let requested = requested_alias(item);
    let partial = |status: PublicationStatus| PublicationRecord {
        status,
        published_url: job_item.published_url.clone(),
        requested_custom_page_alias: requested.clone(),
        applied_custom_page_alias: None,
        warnings: Vec::new(),
        error: None,
    };
    match &job_item.publication_status {
        Some(PublicationStatus::Published) => {
            // Success means the requested alias (if any) was applied.
            let mut publication = partial(PublicationStatus::Published);
            publication.applied_custom_page_alias = requested.clone();
            Some(ItemEvent::Generated {
                publication: Some(publication),
            })
        }
        Some(status) if status.needs_details() => Some(ItemEvent::GeneratedNeedsDetails {
            publication: partial(status.clone()),
        }),
        // Completed twice in a row with no publication state at all: none is coming.
        None if seen_completed(item) => Some(ItemEvent::Generated { publication: None }),
        // Pending, absent or an unknown word: not final yet.
        other => Some(ItemEvent::Progress {
            generation_status: GenerationStatus::Completed,
            publication: other.as_ref().map(|_| {
                partial(
                    job_item
                        .publication_status
                        .clone()
                        .unwrap_or(PublicationStatus::Pending),
                )
            }),
        }),
    }
}

/// The event a tent's status means for an admitted item (create, edit, or details).
pub fn tent_event(item: &ItemRecord, tent: &TentStatus, auto_publish: bool) -> Option<ItemEvent> {
    match item.state() {
        ItemState::AwaitingDetails => {
            let publication = tent.publication.as_ref()?;
            publication
                .status
                .is_final()
                .then(|| ItemEvent::DetailsFetched {
                    publication: publication_record(publication),
                })
        }
        ItemState::Admitted => match &tent.status {
            // Without auto-publish the result reports no publication, even when the tent
            // carries one from an earlier generation.
            GenerationStatus::Completed if !auto_publish => {
                Some(ItemEvent::Generated { publication: None })
            }
            GenerationStatus::Completed => match &tent.publication {
                Some(p) if p.status.is_final() => Some(ItemEvent::Generated {
                    publication: Some(publication_record(p)),
                }),
                // Completed twice in a row with no publication at all: none is coming
                // (e.g. a later edit of the same tent asked for none). Final as it is.
                None if seen_completed(item) => Some(ItemEvent::Generated { publication: None }),
                other => Some(ItemEvent::Progress {
                    generation_status: GenerationStatus::Completed,
                    publication: other.as_ref().map(publication_record),
                }),
            },
            GenerationStatus::Failed | GenerationStatus::Rejected => {
                Some(ItemEvent::GenerationFailed {
                    message: tent
                        .error_text()
                        .unwrap_or_else(|| "generation failed".to_string()),
                })
            }
            status => {
                (item.generation_status.as_ref() != Some(status)).then(|| ItemEvent::Progress {
                    generation_status: status.clone(),
                    publication: None,
                })
            }
        },
        _ => None,
    }
}

/// What a poll's answer means once its bookkeeping is done.
enum PollAnswer<T> {
    /// A body to reconcile.
    Usable(T),
    /// The job or tent has answered 404 for longer than [`JOB_NOT_FOUND_LIMIT`].
    VanishedTooLong,
    /// Nothing to reconcile: poll again at the floor (or later, after failures).
    Wait,
}

/// The bookkeeping every poll answer needs: the poll time (the floor counts from the
/// answer, which came after the request left), `Retry-After`, the failure count that
/// drives backoff, and since when the job has answered 404.
fn note_poll_answer<T>(
    job: &mut JobRecord,
    outcome: Outcome<T>,
    now: u64,
    manifest: &str,
    what: &str,
) -> PollAnswer<T> {
    job.last_polled_at_ms = Some(now);
    job.retry_after_ms = retry_after_ms(&outcome);
    match outcome {
        Outcome::Success { body, .. } => {
            job.poll_failures = 0;
            job.not_found_since_ms = None;
            PollAnswer::Usable(body)
        }
        Outcome::Refused { status: 404, .. } => {
            job.poll_failures = 0;
            let since = *job.not_found_since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= crate::clock::duration_ms(JOB_NOT_FOUND_LIMIT) {
                tracing::error!(manifest = %manifest, "{what} has answered 404 for over 10 minutes: its unfinished items fail");
                PollAnswer::VanishedTooLong
            } else {
                tracing::warn!(manifest = %manifest, "{what} answered 404");
                PollAnswer::Wait
            }
        }
        // A 401 pauses every call (the pause logs it once a minute); it says nothing of
        // the job, which is polled again at the floor once the key works.
        Outcome::Refused { status: 401, .. } => {
            tracing::debug!(manifest = %manifest, "{what}: 401, calls are paused");
            PollAnswer::Wait
        }
        other => {
            job.poll_failures = job.poll_failures.saturating_add(1);
            tracing::warn!(manifest = %manifest, outcome = %other.label(), "{what}: the poll got no usable answer; backing off");
            PollAnswer::Wait
        }
    }
}

/// Fails the job's items that are still generating: Tented no longer knows the job.
fn fail_vanished(txn: &mut Txn<'_>, job: &JobRecord, what: &str) -> Result<(), StoreError> {
    for index in &job.item_indices {
        let item = txn.item(*index)?;
        if item.state() == ItemState::Admitted && item.job_seq == Some(job.seq) {
            txn.apply(
                *index,
                ItemEvent::JobVanished {
                    message: format!("{what} answered 404 Not Found for over 10 minutes"),
                },
            )?;
        }
    }
    Ok(())
}

/// Applies a bulk job's answer to the items it carried (those a later request did not
/// take over).
fn apply_bulk_answer(
    txn: &mut Txn<'_>,
    job: &mut JobRecord,
    body: &BulkJobStatus,
    manifest: &crate::store::ManifestRecord,
) -> Result<(), StoreError> {
    job.status = Some(body.status.clone());
    let auto_publish = body.auto_publish.unwrap_or_else(|| {
        job.first_index()
            .and_then(|index| txn.item(index).ok())
            .is_some_and(|item| wants_publication(manifest, &item))
    });
    for job_item in &body.items {
        let Some(&index) = job.item_indices.get(job_item.index as usize) else {
            continue;
        };
        let item = txn.item(index)?;
        if item.job_seq != Some(job.seq) {
            // Sent again by a later request (after a credit refusal): not ours.
            continue;
        }
        if let Some(event) = bulk_item_event(&item, job_item, auto_publish) {
            // Applied to the record just read, not read again.
            txn.apply_read(item, event)?;
        }
    }
    Ok(())
}

/// How long a finished bulk job took: by Tented's own timestamps (`updated_at` -
/// `created_at`) when the answer has them, else from admission to this answer.
fn job_duration_ms(body: &BulkJobStatus, job: &JobRecord, now: u64) -> Option<u64> {
    let parse = |t: &Option<String>| {
        let text = t.as_deref()?;
        humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
    };
    match (parse(&body.created_at), parse(&body.updated_at)) {
        (Some(created), Some(updated)) => updated
            .duration_since(created)
            .ok()
            .map(crate::clock::duration_ms),
        _ => job
            .admission()
            .map(|admission| now.saturating_sub(admission.at_ms)),
    }
}

/// Records how long a finished job of this manifest's template took (kept in the store,
/// in this transaction), and returns the times to copy into the context once committed.
fn learn_generation_time(
    ctx: &Context,
    txn: &mut Txn<'_>,
    manifest: &crate::store::ManifestRecord,
    job: &JobRecord,
    took_ms: Option<u64>,
) -> Result<Option<(String, GenerationTimes)>, StoreError> {
    let Some(took_ms) = took_ms else {
        return Ok(None);
    };
    let key = times_key(
        manifest.kind,
        manifest.top.template_id.as_deref(),
        job.item_indices.len(),
    );
    let mut times = ctx.store.generation_times_of(&key)?;
    times.record(took_ms);
    txn.put_generation_times(&key, &times)?;
    Ok(Some((key, times)))
}

/// The job's items that wait for publication details (index, tent id), and whether any
/// of its items is unfinished.
fn still_unfinished(
    txn: &Txn<'_>,
    job: &JobRecord,
) -> Result<(Vec<(u32, String)>, bool), StoreError> {
    let mut needs = Vec::new();
    let mut unfinished = false;
    for index in &job.item_indices {
        let item = txn.item(*index)?;
        if item.job_seq != Some(job.seq) {
            continue;
        }
        match item.state() {
            ItemState::AwaitingDetails => {
                unfinished = true;
                if let Some(tent_id) = item.tent_id.clone() {
                    needs.push((*index, tent_id));
                }
            }
            s if !s.is_final() => unfinished = true,
            _ => {}
        }
    }
    Ok((needs, unfinished))
}

/// Answers may let the manifest send more (its slow start opens); a template that has
/// just become proven may let every manifest of it.
fn nudge_after_answers(ctx: &Context, manifest_id: u64, newly_proven: bool) {
    if newly_proven {
        ctx.nudge_all();
    } else {
        ctx.nudge(manifest_id);
    }
}

/// Records the answer to `GET /v1/bulk-jobs/{id}`, then fetches details it calls for.
/// Generation times learned from a finished job go to the store and to the poller's
/// copy (`generations`, which the poller hands over with the answer).
pub async fn record_bulk_poll(
    ctx: &Context,
    generations: &Generations,
    key: JobKey,
    outcome: Outcome<BulkJobStatus>,
) -> Result<PollResult, StoreError> {
    let now = ctx.clock.now_ms();
    let floor = ctx.poll_floor_ms();
    let details: Vec<(u32, String)>;
    let result;
    let mut took_ms = None;
    let mut learned = None;
    let newly_proven;
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(key.manifest_id)?;
        let Some(mut job) = txn.job(key.seq)? else {
            return Ok(PollResult::Done);
        };
        let held_back_before = keeps_the_job_back(&job);
        let manifest = txn.manifest().clone();
        let completed_before = manifest.count(ItemState::Completed);
        let Some(bulk_job_id) = job.admission().map(|a| a.remote_id.to_owned()) else {
            job.report_missing_admission();
            return Ok(PollResult::Done);
        };
        let what = format!("bulk job {bulk_job_id}");
        match note_poll_answer(&mut job, outcome, now, &manifest.name, &what) {
            PollAnswer::Usable(body) => {
                apply_bulk_answer(&mut txn, &mut job, &body, &manifest)?;
                tracing::debug!(manifest = %manifest.name, bulk_job_id = %bulk_job_id, status = %body.status, "bulk job polled");
                took_ms = job_duration_ms(&body, &job, now);
            }
            PollAnswer::VanishedTooLong => fail_vanished(&mut txn, &job, &what)?,
            PollAnswer::Wait => {}
        }
        let (needs, unfinished) = still_unfinished(&txn, &job)?;
        details = needs;
        if !unfinished {
            learned = learn_generation_time(ctx, &mut txn, &manifest, &job, took_ms)?;
        }
        if !unfinished {
            job.apply(JobEvent::ItemsFinal)?;
        }
        let jitter = rand::random::<u64>() % (floor / 10 + 1);
        result = if unfinished {
            PollResult::Again(next_poll_due_ms(&job, floor, jitter))
        } else {
            PollResult::Done
        };
        // A wait set or cleared (a cleared 404 clock lost to a crash would count an old
        // 404 against the job) is synced; so is a decision the answer led to (a threshold
        // pause, a template proven).
        let mut lasting = changes_a_wait(held_back_before, &job);
        txn.put_job(job);
        let control_before = txn.manifest().control().clone();
        newly_proven = judge(ctx, &mut txn, completed_before)?;
        lasting |= newly_proven || *txn.manifest().control() != control_before;
        // The last answer finishes the manifest in its own commit, durable before the
        // result is written; any other answer is a read that a restart repeats.
        commit_answer(txn, now, lasting).await?;
    }
    if let Some((key, times)) = learned {
        generations.learned(key, times);
    }
    // Answers may release a manifest that waits for its first answers.
    nudge_after_answers(ctx, key.manifest_id, newly_proven);
    let mut result = result;
    if !details.is_empty() {
        fetch_details(ctx, key, &details).await?;
        // The job is done once the details are in.
        if result != PollResult::Done && job_finished(ctx, key).await? {
            result = PollResult::Done;
        }
    }
    crate::pipeline::outbox::finish_if_done(ctx, key.manifest_id).await;
    Ok(result)
}

async fn job_finished(ctx: &Context, key: JobKey) -> Result<bool, StoreError> {
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(key.manifest_id)?;
    let Some(mut job) = txn.job(key.seq)? else {
        return Ok(true);
    };
    for index in &job.item_indices {
        let item = txn.item(*index)?;
        if item.job_seq == Some(key.seq) && !item.state().is_final() {
            return Ok(false);
        }
    }
    job.apply(JobEvent::ItemsFinal)?;
    txn.put_job(job);
    txn.commit_soon()?;
    Ok(true)
}

/// Whether a job carries what a restart must keep: a `Retry-After`, a backoff, the clock
/// of a job answering 404 (an answer that sets or clears one is synced).
fn keeps_the_job_back(job: &JobRecord) -> bool {
    job.retry_after_ms.is_some() || job.poll_failures > 0 || job.not_found_since_ms.is_some()
}

/// Whether an answer set, kept or cleared a wait on the job (`held_back_before`: it had
/// one before the answer): a restart must see the change.
fn changes_a_wait(held_back_before: bool, after: &JobRecord) -> bool {
    held_back_before || keeps_the_job_back(after)
}

/// Commits a poll's answer: synced when it finishes the manifest (its result follows and
/// rests on it) or when it is `lasting` ([`keeps_the_job_back`]: a restart must not poll
/// sooner than it says); else left to the next sync ([`crate::store::Store::durable_soon`]):
/// a poll is a read, which a restart repeats, and the next create's intent syncs it anyway.
async fn commit_answer(mut txn: Txn<'_>, now: u64, lasting: bool) -> Result<(), StoreError> {
    if txn.finish(now) || lasting {
        txn.commit().await?;
    } else {
        txn.commit_soon()?;
    }
    Ok(())
}

/// One `GET /v1/tents/{id}` per item that needs its publication details (more only when
/// one fails, and never sooner than the floor after the previous one for that tent).
async fn fetch_details(
    ctx: &Context,
    key: JobKey,
    items: &[(u32, String)],
) -> Result<(), StoreError> {
    let floor = ctx.poll_floor_ms();
    for (index, tent_id) in items {
        // Cheap check first, so that a tent not due yet costs no budget.
        if ctx
            .store
            .tent_poll(tent_id)?
            .is_some_and(|t| t.next_due_ms(floor) > ctx.clock.now_ms())
        {
            continue;
        }
        let permit = ctx.client.reserve().await;
        {
            let writer = ctx.store.writer().await;
            let mut txn = writer.begin(key.manifest_id)?;
            let now = ctx.clock.now_ms();
            let previous = txn.tent_poll(tent_id)?;
            if previous.is_some_and(|t| t.next_due_ms(floor) > now) {
                continue;
            }
            txn.put_tent_poll(
                tent_id,
                TentPollRecord {
                    last_polled_at_ms: now,
                    retry_after_ms: previous.and_then(|t| t.retry_after_ms),
                },
            );
            txn.commit_soon()?;
        }
        let outcome = ctx.client.tent_with(permit, tent_id).await;
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(key.manifest_id)?;
        // The floor counts from the answer, and honours the tent's Retry-After.
        let retry_after = retry_after_ms(&outcome);
        txn.put_tent_poll(
            tent_id,
            TentPollRecord {
                last_polled_at_ms: ctx.clock.now_ms(),
                retry_after_ms: retry_after,
            },
        );
        let item = txn.item(*index)?;
        let completed_before = txn.manifest().count(ItemState::Completed);
        match outcome {
            Outcome::Success { body, .. } => {
                if let Some(event) = tent_event(&item, &body, true) {
                    txn.apply(*index, event)?;
                }
            }
            other => {
                tracing::warn!(manifest = %txn.manifest().name, tent_id = %tent_id, outcome = %other.label(), "publication details not fetched; trying again at the next poll");
            }
        }
        // Details complete items: answers like a poll's, for the threshold, the proof
        // and the slow start (the manifest may be holding chunks back for them).
        let newly_proven = judge(ctx, &mut txn, completed_before)?;
        // Like a poll's answer: a read, synced only when a restart must honour its wait.
        if retry_after.is_some() {
            txn.commit().await?;
        } else {
            txn.commit_soon()?;
        }
        nudge_after_answers(ctx, key.manifest_id, newly_proven);
    }
    Ok(())
}

/// Records the answer to `GET /v1/tents/{id}` for a create or edit job.
pub async fn record_tent_poll(
    ctx: &Context,
    key: JobKey,
    outcome: Outcome<TentStatus>,
) -> Result<PollResult, StoreError> {
    let now = ctx.clock.now_ms();
    let floor = ctx.poll_floor_ms();
    let result;
    let newly_proven;
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(key.manifest_id)?;
        let Some(mut job) = txn.job(key.seq)? else {
            return Ok(PollResult::Done);
        };
        let held_back_before = keeps_the_job_back(&job);
        let manifest = txn.manifest().clone();
        let completed_before = manifest.count(ItemState::Completed);
        let (Some(tent_id), Some(index)) = (
            job.admission().map(|a| a.remote_id.to_owned()),
            job.first_index(),
        ) else {
            job.report_missing_admission();
            return Ok(PollResult::Done);
        };
        txn.put_tent_poll(
            &tent_id,
            TentPollRecord {
                last_polled_at_ms: now,
                retry_after_ms: retry_after_ms(&outcome),
            },
        );
        let what = format!("tent {tent_id}");
        match note_poll_answer(&mut job, outcome, now, &manifest.name, &what) {
            PollAnswer::Usable(body) => {
                job.status = Some(body.status.to_string());
                let item = txn.item(index)?;
                let auto_publish = wants_publication(&manifest, &item);
                if let Some(event) = tent_event(&item, &body, auto_publish) {
                    txn.apply(index, event)?;
                }
            }
            PollAnswer::VanishedTooLong => fail_vanished(&mut txn, &job, &what)?,
            PollAnswer::Wait => {}
        }
        let finished = txn.item(index)?.state().is_final();
        if finished {
            job.apply(JobEvent::ItemsFinal)?;
        }
        let jitter = rand::random::<u64>() % (floor / 10 + 1);
        result = if finished {
            PollResult::Done
        } else {
            PollResult::Again(next_poll_due_ms(&job, floor, jitter))
        };
        // A wait set or cleared (a cleared 404 clock lost to a crash would count an old
        // 404 against the job) is synced; so is a decision the answer led to (a threshold
        // pause, a template proven).
        let mut lasting = changes_a_wait(held_back_before, &job);
        txn.put_job(job);
        let control_before = txn.manifest().control().clone();
        newly_proven = judge(ctx, &mut txn, completed_before)?;
        lasting |= newly_proven || *txn.manifest().control() != control_before;
        // The last answer finishes the manifest in its own commit, durable before the
        // result is written; any other answer is a read that a restart repeats.
        commit_answer(txn, now, lasting).await?;
    }
    // Answers may release a manifest that waits for its first answers.
    nudge_after_answers(ctx, key.manifest_id, newly_proven);
    crate::pipeline::outbox::finish_if_done(ctx, key.manifest_id).await;
    Ok(result)
}

/// Ends every unfinished item of a manifest whose `poll.max_wait` has passed.
pub async fn expire(ctx: &Context, manifest_id: u64) -> Result<bool, StoreError> {
    let now = ctx.clock.now_ms();
    let max_wait = crate::clock::duration_ms(ctx.settings.poll.max_wait);
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        let manifest = txn.manifest().clone();
        if manifest.finished_at_ms.is_some()
            || manifest.unfinished() == 0
            || now < manifest.received_at_ms.saturating_add(max_wait)
        {
            return Ok(false);
        }
        tracing::warn!(manifest = %manifest.name, unfinished = manifest.unfinished(), "poll.max_wait has passed: unfinished items end now");
        for item in txn.items_range(0, manifest.item_count)? {
            if matches!(
                item.state(),
                ItemState::Pending
                    | ItemState::CreditWait
                    | ItemState::Admitted
                    | ItemState::AwaitingDetails
            ) {
                txn.apply(item.index, ItemEvent::MaxWait)?;
            }
        }
        for seq in 0..manifest.next_job_seq {
            if let Some(mut job) = txn.job(seq)? {
                if job.state() == JobState::Admitted {
                    job.apply(JobEvent::ItemsFinal)?;
                    txn.put_job(job);
                }
            }
        }
        txn.commit().await?;
    }
    crate::pipeline::outbox::finish_if_done(ctx, manifest_id).await;
    Ok(true)
}

/// The sweeper: manifests whose `poll.max_wait` has come, and results still to write.
/// It looks only at those (an index keeps them), never at every manifest; once every
/// [`FULL_SWEEP`] it also looks at every unfinished manifest, as a safety net.
pub async fn sweep_loop(ctx: Arc<Context>, shutdown: CancellationToken) {
    let period = ctx.settings.poll.interval.min(SWEEP_INTERVAL_MAX);
    let mut next_full = tokio::time::Instant::now() + FULL_SWEEP;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let past_max_wait: std::collections::BTreeSet<u64> = ctx
            .active
            .take_due(ctx.clock.now_ms())
            .into_iter()
            .collect();
        let mut due: std::collections::BTreeSet<u64> = past_max_wait.clone();
        due.extend(ctx.active.take_unwritten());
        if tokio::time::Instant::now() >= next_full {
            due.extend(ctx.active_ids());
            next_full = tokio::time::Instant::now() + FULL_SWEEP;
        }
        for id in due {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = expire(&ctx, id).await {
                tracing::error!("sweep: {e}");
            }
            crate::pipeline::outbox::finish_if_done(&ctx, id).await;
            if past_max_wait.contains(&id) {
                // Still active (an item was on the wire when its time came, or the
                // store could not write): looked at again at the next tick.
                ctx.active.again_at(id, ctx.clock.now_ms());
            }
        }
        ctx.health.mark_progress();
    }
}

/// How often the sweeper looks at every unfinished manifest (a safety net: the index
/// already brings each one whose time has come).
pub const FULL_SWEEP: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(given: &str) -> ItemRecord {
        let mut item = ItemRecord::pending(
            1,
            0,
            "a".into(),
            given.into(),
            crate::manifest::ItemFields::from_validated(
                &serde_json::from_str(given).expect("json"),
            )
            .expect("fits"),
        )
        .forced_into(ItemState::Admitted);
        item.tent_id = Some("t".into());
        item
    }

    fn job_item(status: &str, publication: Option<&str>) -> BulkJobItem {
        BulkJobItem {
            index: 0,
            client_item_id: None,
            tent_id: Some("t".into()),
            tent_name: None,
            status: status.into(),
            publication_status: publication.map(PublicationStatus::from),
            published_url: publication.map(|_| "https://x/y".to_string()),
            error_code: None,
            message: Some("boom".into()),
        }
    }

    #[test]
    fn an_answer_that_sets_or_clears_a_wait_is_synced_a_routine_one_is_not() {
        let success = || Outcome::Success {
            status: 200,
            body: (),
            retry_after: None,
        };
        let mut job = JobRecord::admitted_for_test(1, 0, crate::state::job::JobKind::Bulk, 1_000);
        let before = keeps_the_job_back(&job);
        let _ = note_poll_answer(&mut job, success(), 12_000, "m", "bulk job J");
        assert!(!changes_a_wait(before, &job), "a routine answer");
        // A 404 clock running, then cleared by a success: lost, an old 404 start would
        // count against the job after a restart.
        job.not_found_since_ms = Some(20_000);
        let before = keeps_the_job_back(&job);
        let _ = note_poll_answer(&mut job, success(), 32_000, "m", "bulk job J");
        assert_eq!(job.not_found_since_ms, None);
        assert!(changes_a_wait(before, &job), "a cleared 404 clock");
        // A Retry-After set by the answer.
        let before = keeps_the_job_back(&job);
        let waited = Outcome::Success {
            status: 200,
            body: (),
            retry_after: Some(Duration::from_secs(30)),
        };
        let _ = note_poll_answer(&mut job, waited, 44_000, "m", "bulk job J");
        assert!(changes_a_wait(before, &job), "a Retry-After set");
    }

    #[test]
    fn bulk_items_become_final_only_when_publication_is_no_longer_pending() {
        let item = admitted(r#"{"custom_page_alias":"spring"}"#);
        match bulk_item_event(&item, &job_item("completed", Some("pending")), true) {
            Some(ItemEvent::Progress {
                publication: Some(p),
                ..
            }) => assert_eq!(p.status, "pending"),
            other => panic!("{other:?}"),
        }
        match bulk_item_event(&item, &job_item("completed", Some("published")), true) {
            Some(ItemEvent::Generated {
                publication: Some(p),
            }) => {
                assert_eq!(p.applied_custom_page_alias.as_deref(), Some("spring"));
                assert_eq!(p.published_url.as_deref(), Some("https://x/y"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            bulk_item_event(
                &item,
                &job_item("completed", Some("published_with_warnings")),
                true
            ),
            Some(ItemEvent::GeneratedNeedsDetails { .. })
        ));
        assert!(matches!(
            bulk_item_event(&item, &job_item("completed", Some("failed")), true),
            Some(ItemEvent::GeneratedNeedsDetails { .. })
        ));
        assert!(matches!(
            bulk_item_event(&item, &job_item("completed", None), false),
            Some(ItemEvent::Generated { publication: None })
        ));
    }

    #[test]
    fn bulk_items_in_progress_change_only_when_their_status_does() {
        let mut item = admitted("{}");
        assert!(matches!(
            bulk_item_event(&item, &job_item("queued", None), false),
            Some(ItemEvent::Progress { .. })
        ));
        item.generation_status = Some("queued".into());
        assert_eq!(
            bulk_item_event(&item, &job_item("queued", None), false),
            None
        );
        // An unknown word is "not final yet".
        assert!(matches!(
            bulk_item_event(&item, &job_item("thinking", None), false),
            Some(ItemEvent::Progress { .. })
        ));
        match bulk_item_event(&item, &job_item("failed", None), false) {
            Some(ItemEvent::GenerationFailed { message }) => assert_eq!(message, "boom"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_publication_that_never_appears_ends_after_a_second_completed_poll() {
        let mut item = admitted("{}");
        assert!(matches!(
            bulk_item_event(&item, &job_item("completed", None), true),
            Some(ItemEvent::Progress { .. })
        ));
        item.generation_status = Some("completed".into());
        assert!(matches!(
            bulk_item_event(&item, &job_item("completed", None), true),
            Some(ItemEvent::Generated { publication: None })
        ));
    }

    #[test]
    fn details_end_awaiting_items_only_with_a_final_publication() {
        let item = admitted("{}").forced_into(ItemState::AwaitingDetails);
        let tent = |status: &str| TentStatus {
            id: "t".into(),
            status: "completed".into(),
            created_at: None,
            updated_at: None,
            result: None,
            error: None,
            publication: Some(Publication {
                status: status.into(),
                published_url: None,
                requested_custom_page_alias: Some("a".into()),
                applied_custom_page_alias: None,
                warnings: vec![Notice {
                    code: Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE".into()),
                    message: None,
                }],
                error: None,
            }),
        };
        assert_eq!(tent_event(&item, &tent("pending"), true), None);
        match tent_event(&item, &tent("published_with_warnings"), true) {
            Some(ItemEvent::DetailsFetched { publication }) => {
                assert_eq!(
                    publication.warnings[0].code.as_deref(),
                    Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE")
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
