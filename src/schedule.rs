//! Scheduling types and due times shared by the stages: which job, and when it may next
//! be polled (never under the floor, nor before a `Retry-After` has passed).

use std::time::Duration;

use crate::api::Outcome;
use crate::state::job::{JobKind, JobRecord};
use crate::store::TentPollRecord;

/// The longest backoff between two polls that got no usable answer.
pub const POLL_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A job is identified by its manifest and its sequence number in that manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub manifest_id: u64,
    pub seq: u32,
}

/// When a job may next be polled (wall ms). Pure, so it is tested directly.
///
/// `jitter_ms` is added only to backoff after failures, never below the floor.
pub fn next_poll_due_ms(job: &JobRecord, floor_ms: u64, jitter_ms: u64) -> u64 {
    let admitted = job.admitted_at_ms.unwrap_or(job.sent_at_ms);
    let mut due = admitted.saturating_add(floor_ms);
    if let Some(last) = job.last_polled_at_ms {
        let gap = floor_ms.max(job.retry_after_ms.unwrap_or(0));
        let backoff = if job.poll_failures == 0 {
            0
        } else {
            let exp = floor_ms.saturating_mul(1u64 << (job.poll_failures - 1).min(16));
            exp.min(crate::clock::duration_ms(POLL_BACKOFF_MAX))
                .saturating_add(jitter_ms)
        };
        due = due.max(last.saturating_add(gap.max(backoff)));
    }
    due
}

/// What became of one poll.
#[derive(Debug, PartialEq, Eq)]
pub enum PollResult {
    /// Poll again at this wall time (ms).
    Again(u64),
    /// Every item of the job is final.
    Done,
}

/// When a job may be polled: its own floor and, for a tent, the tent's (another job or a
/// detail fetch may have polled the same tent).
pub fn job_due_ms(job: &JobRecord, tent: Option<TentPollRecord>, floor: u64) -> u64 {
    let own = next_poll_due_ms(job, floor, 0);
    match (job.kind, tent) {
        (JobKind::Create | JobKind::Edit, Some(tent)) => own.max(tent.next_due_ms(floor)),
        _ => own,
    }
}

/// The retry delay a failed poll asks for, never below the floor.
pub fn retry_after_ms<T>(outcome: &Outcome<T>) -> Option<u64> {
    match outcome {
        Outcome::Success { retry_after, .. } | Outcome::Refused { retry_after, .. } => {
            retry_after.map(crate::clock::duration_ms)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(admitted: u64) -> JobRecord {
        JobRecord::admitted_for_test(1, 0, JobKind::Bulk, admitted)
    }

    #[test]
    fn first_poll_comes_a_floor_after_admission() {
        assert_eq!(next_poll_due_ms(&job(1_000), 10_000, 0), 11_000);
    }

    #[test]
    fn later_polls_keep_the_floor_and_honour_a_longer_retry_after() {
        let mut j = job(1_000);
        j.last_polled_at_ms = Some(20_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 30_000);
        j.retry_after_ms = Some(25_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 45_000);
        // A shorter Retry-After never goes below the floor.
        j.retry_after_ms = Some(1_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 30_000);
    }

    #[test]
    fn failures_back_off_exponentially_but_are_capped() {
        let mut j = job(0);
        j.last_polled_at_ms = Some(100_000);
        j.poll_failures = 1;
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 110_000);
        j.poll_failures = 3;
        assert_eq!(next_poll_due_ms(&j, 10_000, 7), 140_007);
        j.poll_failures = 40;
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 100_000 + 600_000);
    }
}
