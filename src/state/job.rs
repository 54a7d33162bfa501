//! The job state machine: one create request (a bulk request, or one single-tent create
//! or edit) from the moment its intent is recorded until every item it carried is final.
//!
//! ```text
//!  (intent recorded) ──► Sending ──Answered(some item admitted)──► Admitted ──ItemsFinal──► Done
//!                          ├──Answered(none admitted, some to resend)──► NotAdmitted
//!                          ├──Answered(none admitted, none to resend)──► Done
//!                          └──AnswerLost (also every Sending found at start-up)──► Lost
//! ```
//!
//! `Done`, `NotAdmitted` and `Lost` are final. Only [`JobRecord::apply`] changes a job's
//! state; the poll bookkeeping fields (last poll, Retry-After, backoff) are not states.

use serde::{Deserialize, Serialize};

/// What a job (one create request) targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    Bulk,
    Create,
    Edit,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// The request is (or was, before a crash) on the wire.
    Sending,
    /// Admitted: polled until its items are final.
    Admitted,
    /// Known not to have been admitted; its items went back to pending.
    NotAdmitted,
    /// Its answer was lost: its items are `unknown`.
    Lost,
    /// Every item it carried is final.
    Done,
}

/// Something that happened to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// The request got an answer, and its items' events were applied: whether any item
    /// was admitted, and whether any goes back to be sent again (429, 5xx, not sent).
    Answered {
        any_admitted: bool,
        any_to_resend: bool,
    },
    /// The request's answer never came (or the daemon stopped while it was on the wire).
    AnswerLost,
    /// Every item the job carried is final.
    ItemsFinal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {seq} of manifest {manifest_id}: no transition from {from:?} on {event:?}")]
pub struct IllegalJobTransition {
    pub manifest_id: u64,
    pub seq: u32,
    pub from: JobState,
    pub event: JobEvent,
}

impl JobState {
    /// The transition table: the next state, or `None` where the event is illegal.
    pub fn next(self, event: JobEvent) -> Option<JobState> {
        use JobEvent as E;
        use JobState as S;
        match (self, event) {
            (
                S::Sending,
                E::Answered {
                    any_admitted: true, ..
                },
            ) => Some(S::Admitted),
            (
                S::Sending,
                E::Answered {
                    any_to_resend: true,
                    ..
                },
            ) => Some(S::NotAdmitted),
            (S::Sending, E::Answered { .. }) => Some(S::Done),
            (S::Sending, E::AnswerLost) => Some(S::Lost),
            (S::Admitted, E::ItemsFinal) => Some(S::Done),
            _ => None,
        }
    }

    /// The word `show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Sending => "sending",
            JobState::Admitted => "admitted",
            JobState::NotAdmitted => "not_admitted",
            JobState::Lost => "lost",
            JobState::Done => "done",
        }
    }

    /// No event moves a job out of a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::NotAdmitted | JobState::Lost | JobState::Done
        )
    }
}

/// What Tented gave a request it admitted ([`JobRecord::admission`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission<'a> {
    /// The bulk_job_id (bulk) or the tent id (create, edit).
    pub remote_id: &'a str,
    /// When the answer came (wall ms).
    pub at_ms: u64,
}

/// One create request and, once admitted, its polling (version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub manifest_id: u64,
    pub seq: u32,
    pub kind: JobKind,
    /// Manifest indexes of the items it carried, in request order.
    pub item_indices: Vec<u32>,
    /// Private: only [`JobRecord::apply`] moves it.
    state: JobState,
    /// The bulk_job_id (bulk) or the tent id (create, edit). Private, with the time
    /// below: both are set together by [`JobRecord::admitted_as`] and read together
    /// through [`JobRecord::admission`], so no job has one without the other.
    remote_id: Option<String>,
    pub sent_at_ms: u64,
    admitted_at_ms: Option<u64>,
    pub last_polled_at_ms: Option<u64>,
    /// The last Retry-After Tented sent for this job or tent.
    pub retry_after_ms: Option<u64>,
    pub not_found_since_ms: Option<u64>,
    /// The last status word of the job.
    pub status: Option<String>,
    /// Polls in a row that got no usable answer (for backoff).
    pub poll_failures: u32,
}

impl JobRecord {
    /// A request whose intent is being recorded: it is about to go on the wire.
    pub fn sending(
        manifest_id: u64,
        seq: u32,
        kind: JobKind,
        item_indices: Vec<u32>,
        sent_at_ms: u64,
    ) -> JobRecord {
        JobRecord {
            manifest_id,
            seq,
            kind,
            item_indices,
            state: JobState::Sending,
            remote_id: None,
            sent_at_ms,
            admitted_at_ms: None,
            last_polled_at_ms: None,
            retry_after_ms: None,
            not_found_since_ms: None,
            status: None,
            poll_failures: 0,
        }
    }

    pub fn state(&self) -> JobState {
        self.state
    }

    /// Records what Tented's answer gave the request: its id, at `at_ms`. Not a state
    /// change (the items' events decide that: [`JobEvent::Answered`]), and only while
    /// the request is on the wire.
    pub fn admitted_as(&mut self, remote_id: String, at_ms: u64) {
        debug_assert_eq!(self.state, JobState::Sending, "an answer comes once");
        self.remote_id = Some(remote_id);
        self.admitted_at_ms = Some(at_ms);
    }

    /// Tented's id for the request and when it was admitted; `None` until an answer gave
    /// one (a request on the wire, refused, or whose answer was lost).
    pub fn admission(&self) -> Option<Admission<'_>> {
        match (&self.remote_id, self.admitted_at_ms) {
            (Some(remote_id), Some(at_ms)) => Some(Admission { remote_id, at_ms }),
            _ => None,
        }
    }

    /// Reports an admitted job without Tented's id, which cannot be: the answer that
    /// admitted it gave the id ([`JobRecord::admitted_as`]). Its caller stops polling it.
    pub fn report_missing_admission(&self) {
        debug_assert!(false, "an admitted job without Tented's id: {self:?}");
        tracing::error!(
            manifest_id = self.manifest_id,
            seq = self.seq,
            "an admitted request has no id from Tented: it cannot be polled"
        );
    }

    /// The manifest index of the first item it carried (every job carries one at least).
    pub fn first_index(&self) -> Option<u32> {
        self.item_indices.first().copied()
    }

    /// Applies one event: the only way a job's state changes.
    pub fn apply(&mut self, event: JobEvent) -> Result<(), IllegalJobTransition> {
        match self.state.next(event) {
            Some(next) => {
                self.state = next;
                Ok(())
            }
            None => Err(IllegalJobTransition {
                manifest_id: self.manifest_id,
                seq: self.seq,
                from: self.state,
                event,
            }),
        }
    }

    /// Test support: an admitted job, as the scheduler sees it.
    #[cfg(test)]
    pub(crate) fn admitted_for_test(
        manifest_id: u64,
        seq: u32,
        kind: JobKind,
        at_ms: u64,
    ) -> JobRecord {
        let mut job = JobRecord::sending(manifest_id, seq, kind, vec![0], at_ms);
        job.admitted_as("J".into(), at_ms);
        job.state = JobState::Admitted;
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [JobState; 5] = [
        JobState::Sending,
        JobState::Admitted,
        JobState::NotAdmitted,
        JobState::Lost,
        JobState::Done,
    ];

    fn every_event() -> Vec<JobEvent> {
        let mut events = vec![JobEvent::AnswerLost, JobEvent::ItemsFinal];
        for any_admitted in [false, true] {
            for any_to_resend in [false, true] {
                events.push(JobEvent::Answered {
                    any_admitted,
                    any_to_resend,
                });
            }
        }
        events
    }

    /// The table, written out a second way, pair by pair.
    fn expected(from: JobState, event: JobEvent) -> Option<JobState> {
        match (from, event) {
            (JobState::Sending, JobEvent::AnswerLost) => Some(JobState::Lost),
            (
                JobState::Sending,
                JobEvent::Answered {
                    any_admitted,
                    any_to_resend,
                },
            ) => Some(if any_admitted {
                JobState::Admitted
            } else if any_to_resend {
                JobState::NotAdmitted
            } else {
                JobState::Done
            }),
            (JobState::Admitted, JobEvent::ItemsFinal) => Some(JobState::Done),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_event_pair_follows_the_table() {
        for from in STATES {
            for event in every_event() {
                let mut job = JobRecord::sending(3, 7, JobKind::Bulk, vec![0, 1], 1_000);
                job.state = from;
                let before = job.clone();
                let outcome = job.apply(event);
                match expected(from, event) {
                    Some(next) => {
                        assert_eq!(outcome, Ok(()), "{from:?} on {event:?}");
                        assert_eq!(job.state(), next, "{from:?} on {event:?}");
                    }
                    None => {
                        assert_eq!(
                            outcome,
                            Err(IllegalJobTransition {
                                manifest_id: 3,
                                seq: 7,
                                from,
                                event
                            }),
                        );
                        assert_eq!(job, before, "an illegal event changes nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn final_states_accept_nothing_and_others_accept_something() {
        for from in STATES {
            let accepts = every_event().into_iter().any(|e| from.next(e).is_some());
            assert_eq!(accepts, !from.is_final(), "{from:?}");
        }
    }

    #[test]
    fn an_admission_is_the_id_and_the_time_together() {
        let mut job = JobRecord::sending(1, 2, JobKind::Bulk, vec![5, 6], 50);
        assert_eq!(job.admission(), None, "none before an answer");
        assert_eq!(job.first_index(), Some(5));
        job.admitted_as("bj_1".into(), 70);
        assert_eq!(
            job.admission(),
            Some(Admission {
                remote_id: "bj_1",
                at_ms: 70
            })
        );
        let empty = JobRecord::sending(1, 3, JobKind::Bulk, Vec::new(), 50);
        assert_eq!(empty.first_index(), None);
    }

    #[test]
    fn a_transition_leaves_the_other_fields_alone() {
        let mut job = JobRecord::sending(1, 2, JobKind::Create, vec![4], 50);
        job.admitted_as("tent".into(), 60);
        let before = job.clone();
        job.apply(JobEvent::Answered {
            any_admitted: true,
            any_to_resend: false,
        })
        .expect("legal");
        assert_eq!(
            JobRecord {
                state: JobState::Sending,
                ..job
            },
            before
        );
    }
}
