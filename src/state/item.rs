//! The item state machine: every state an item can be in, and every transition, in one place.
//!
//! ```text
//!              intake
//!     ┌──────────┴───────────┐
//!     ▼                      ▼
//!  Pending ──Cancel──► Canceled        Rejected (local)
//!     │ ▲
//!     │ └──────NotAdmitted (not sent, 429/5xx, 401)──┐
//!  SendIntent                                        │
//!     ▼                                              │
//!  Sending ──────────────────────────────────────────┘
//!     ├──Accepted──────────► Admitted ──Progress──► Admitted
//!     ├──RejectedByApi─────► Rejected (api)
//!     ├──NoCredits─────────► CreditWait ──SendIntent──► Sending
//!     │                        ├──Cancel──► Canceled
//!     │                        └──MaxWait─► Rejected (INSUFFICIENT_CREDITS)
//!     └──AnswerLost────────► Unknown     (also every Sending found at start-up)
//!  Admitted ──Generated(publication final or none)──► Completed
//!           ──Generated(needs warnings/error)────────► AwaitingDetails ──DetailsFetched──► Completed
//!           ──GenerationFailed / JobVanished──────────► Failed
//!           ──MaxWait─────────────────────────────────► TimedOut
//!  Pending ──MaxWait──► TimedOut;   AwaitingDetails ──MaxWait──► Completed
//! ```
//!
//! Callers never assign a state: they apply an [`ItemEvent`] to an [`ItemRecord`] through
//! [`ItemRecord::apply`], and the store persists the record before any side effect.

use serde::{Deserialize, Serialize};

use crate::api::types::{GenerationStatus, PublicationStatus};
use crate::manifest::ItemFields;
use crate::state::error_code::ErrorCode;

/// Where an item stands. The last six are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ItemState {
    /// Validated and durable; not sent yet.
    Pending,
    /// A create request carrying it is (or was, before a crash) on the wire.
    Sending,
    /// Admission said INSUFFICIENT_CREDITS (or a create answered 429): to be sent again.
    CreditWait,
    /// Admitted by Tented; generation (and publication) under way.
    Admitted,
    /// Generated; its publication warnings or error still have to be fetched.
    AwaitingDetails,
    Completed,
    Failed,
    Rejected,
    TimedOut,
    Canceled,
    Unknown,
}

impl ItemState {
    /// How many states there are: the length of every count indexed by state.
    pub const COUNT: usize = 11;

    /// Every state, in the order of the store's counts (never reorder: stored counts are
    /// indexed by it).
    pub const ALL: [ItemState; ItemState::COUNT] = [
        ItemState::Pending,
        ItemState::Sending,
        ItemState::CreditWait,
        ItemState::Admitted,
        ItemState::AwaitingDetails,
        ItemState::Completed,
        ItemState::Failed,
        ItemState::Rejected,
        ItemState::TimedOut,
        ItemState::Canceled,
        ItemState::Unknown,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Completed
                | ItemState::Failed
                | ItemState::Rejected
                | ItemState::TimedOut
                | ItemState::Canceled
                | ItemState::Unknown
        )
    }

    /// The word used in result files, `/status` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Sending => "sending",
            ItemState::CreditWait => "credit_wait",
            ItemState::Admitted => "admitted",
            ItemState::AwaitingDetails => "awaiting_details",
            ItemState::Completed => "completed",
            ItemState::Failed => "failed",
            ItemState::Rejected => "rejected",
            ItemState::TimedOut => "timed_out",
            ItemState::Canceled => "canceled",
            ItemState::Unknown => "unknown",
        }
    }

    /// The state a word of [`ItemState::as_str`] names, if any.
    pub fn parse(word: &str) -> Option<ItemState> {
        ItemState::ALL
            .into_iter()
            .find(|state| state.as_str() == word)
    }

    /// Items that were never admitted and may still be sent.
    pub fn is_sendable(self) -> bool {
        matches!(self, ItemState::Pending | ItemState::CreditWait)
    }
}

/// Who rejected an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectedBy {
    Local,
    Api,
}

impl RejectedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectedBy::Local => "local",
            RejectedBy::Api => "api",
        }
    }

    /// Who a word of [`RejectedBy::as_str`] names, if anyone.
    pub fn parse(word: &str) -> Option<RejectedBy> {
        [RejectedBy::Local, RejectedBy::Api]
            .into_iter()
            .find(|by| by.as_str() == word)
    }
}

/// A warning or error carried over from Tented (`code`, `message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// What the result file reports about an item's publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicationRecord {
    pub status: PublicationStatus,
    pub published_url: Option<String>,
    pub requested_custom_page_alias: Option<String>,
    pub applied_custom_page_alias: Option<String>,
    pub warnings: Vec<NoticeRecord>,
    pub error: Option<NoticeRecord>,
}

/// The durable record of one manifest item (stored as `StoredItem::V2`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub manifest_id: u64,
    pub index: u32,
    pub client_item_id: String,
    /// The item exactly as given, as JSON text, for the retry manifest.
    pub given: String,
    /// The item's fields, parsed once at intake; `None` for an item validation rejected.
    pub fields: Option<ItemFields>,
    /// Private: only [`ItemRecord::apply`] moves it.
    state: ItemState,
    /// The job (request) that carries or carried it.
    pub job_seq: Option<u32>,
    pub tent_id: Option<String>,
    pub tent_name: Option<String>,
    pub bulk_job_id: Option<String>,
    pub generation_id: Option<String>,
    /// The last generation status Tented reported.
    pub generation_status: Option<GenerationStatus>,
    pub publication: Option<PublicationRecord>,
    pub rejected_by: Option<RejectedBy>,
    /// Stored as its text (as when it was a `String`).
    pub error_code: Option<ErrorCode>,
    pub message: Option<String>,
    /// For edits: the tent to edit, resolved at intake.
    pub target_tent_id: Option<String>,
}

/// Something that happened to an item.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemEvent {
    /// A create request carrying the item is about to be sent (recorded first).
    SendIntent {
        job_seq: u32,
    },
    /// The request is known not to have been admitted (never sent, 429, 5xx, 401): send again later.
    NotAdmitted,
    /// Admission accepted the item.
    Accepted {
        tent_id: String,
        tent_name: Option<String>,
        bulk_job_id: Option<String>,
        generation_id: Option<String>,
    },
    /// Admission (or a 4xx answer to its request) rejected the item for good.
    RejectedByApi {
        error_code: ErrorCode,
        message: String,
    },
    /// Admission had no credits for it.
    NoCredits {
        message: String,
    },
    /// The request's answer never came: it may or may not have been admitted.
    AnswerLost {
        message: String,
    },
    /// A poll saw the generation still under way (or a status word we do not know).
    Progress {
        generation_status: GenerationStatus,
        publication: Option<PublicationRecord>,
    },
    /// The generation completed; `publication` is its final state, if it was auto-published.
    Generated {
        publication: Option<PublicationRecord>,
    },
    /// The generation completed and was published with warnings or failed to publish:
    /// the details come from `GET /v1/tents/{id}`.
    GeneratedNeedsDetails {
        publication: PublicationRecord,
    },
    /// The details of the publication arrived.
    DetailsFetched {
        publication: PublicationRecord,
    },
    GenerationFailed {
        message: String,
    },
    /// The job answered 404 for longer than allowed.
    JobVanished {
        message: String,
    },
    /// The operator canceled the manifest.
    Cancel,
    /// `poll.max_wait` has passed since the manifest arrived.
    MaxWait,
}

impl ItemEvent {
    fn name(&self) -> &'static str {
        match self {
            ItemEvent::SendIntent { .. } => "SendIntent",
            ItemEvent::NotAdmitted => "NotAdmitted",
            ItemEvent::Accepted { .. } => "Accepted",
            ItemEvent::RejectedByApi { .. } => "RejectedByApi",
            ItemEvent::NoCredits { .. } => "NoCredits",
            ItemEvent::AnswerLost { .. } => "AnswerLost",
            ItemEvent::Progress { .. } => "Progress",
            ItemEvent::Generated { .. } => "Generated",
            ItemEvent::GeneratedNeedsDetails { .. } => "GeneratedNeedsDetails",
            ItemEvent::DetailsFetched { .. } => "DetailsFetched",
            ItemEvent::GenerationFailed { .. } => "GenerationFailed",
            ItemEvent::JobVanished { .. } => "JobVanished",
            ItemEvent::Cancel => "Cancel",
            ItemEvent::MaxWait => "MaxWait",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {index} of manifest {manifest_id}: no transition from {from:?} on {event}")]
pub struct IllegalTransition {
    pub manifest_id: u64,
    pub index: u32,
    pub from: ItemState,
    pub event: &'static str,
}

/// The message of an item whose create request's answer was lost.
pub const ANSWER_LOST_MESSAGE: &str = "the create request carrying this item got no answer (it may or may not have been admitted, and the Tented API offers no way to find out); it was not resent, to avoid paying twice: check the workspace and resend it from the retry manifest if it is missing";

impl ItemRecord {
    /// A validated item, waiting to be sent.
    pub fn pending(
        manifest_id: u64,
        index: u32,
        client_item_id: String,
        given: String,
        fields: ItemFields,
    ) -> ItemRecord {
        ItemRecord {
            manifest_id,
            index,
            client_item_id,
            given,
            fields: Some(fields),
            state: ItemState::Pending,
            job_seq: None,
            tent_id: None,
            tent_name: None,
            bulk_job_id: None,
            generation_id: None,
            generation_status: None,
            publication: None,
            rejected_by: None,
            error_code: None,
            message: None,
            target_tent_id: None,
        }
    }

    /// An item that validation rejected: final from the start, never sent.
    pub fn rejected_locally(
        manifest_id: u64,
        index: u32,
        client_item_id: String,
        given: String,
        message: String,
    ) -> ItemRecord {
        let mut item = ItemRecord::pending(
            manifest_id,
            index,
            client_item_id,
            given,
            ItemFields::default(),
        );
        item.fields = None;
        item.state = ItemState::Rejected;
        item.rejected_by = Some(RejectedBy::Local);
        item.error_code = Some(ErrorCode::InvalidItem);
        item.message = Some(message);
        item
    }

    /// Where the item stands.
    pub fn state(&self) -> ItemState {
        self.state
    }

    /// Applies one event: the only way an item's state changes. One match decides, for
    /// each legal (state, event) pair, both the next state and what the event records;
    /// every other pair is an [`IllegalTransition`] and changes nothing.
    pub fn apply(&mut self, event: ItemEvent) -> Result<(), IllegalTransition> {
        use ItemEvent as E;
        use ItemState as S;
        let event_name = event.name();
        let next = match (self.state, event) {
            (S::Pending | S::CreditWait, E::SendIntent { job_seq }) => {
                self.job_seq = Some(job_seq);
                S::Sending
            }
            (S::Pending | S::CreditWait, E::Cancel) => {
                self.note(
                    ErrorCode::Canceled,
                    "never sent: the operator canceled the manifest",
                );
                S::Canceled
            }
            (
                from @ (S::Pending | S::CreditWait | S::Admitted | S::AwaitingDetails),
                E::MaxWait,
            ) => self.deadline_passed(from),
            (S::Sending, E::NotAdmitted) => {
                self.job_seq = None;
                S::Pending
            }
            (S::Sending, accepted @ E::Accepted { .. }) => {
                self.accepted(accepted);
                S::Admitted
            }
            (S::Sending, rejected @ E::RejectedByApi { .. }) => {
                self.rejected_by_api(rejected);
                S::Rejected
            }
            (S::Sending, E::NoCredits { message }) => {
                self.note(ErrorCode::InsufficientCredits, message);
                self.job_seq = None;
                S::CreditWait
            }
            (S::Sending, E::AnswerLost { message }) => {
                self.note(ErrorCode::AnswerLost, message);
                S::Unknown
            }
            (S::Admitted, progress @ E::Progress { .. }) => {
                self.progressed(progress);
                S::Admitted
            }
            (S::Admitted, E::Generated { publication }) => {
                self.generated(publication);
                S::Completed
            }
            (S::Admitted, E::GeneratedNeedsDetails { publication }) => {
                self.generated(Some(publication));
                S::AwaitingDetails
            }
            (S::Admitted, E::GenerationFailed { message }) => {
                self.generation_status = Some(GenerationStatus::Failed);
                self.note(ErrorCode::GenerationFailed, message);
                S::Failed
            }
            (S::Admitted, E::JobVanished { message }) => {
                self.note(ErrorCode::NotFound, message);
                S::Failed
            }
            (S::AwaitingDetails, E::DetailsFetched { publication }) => {
                self.generated(Some(publication));
                S::Completed
            }
            (from, _) => return Err(self.illegal(from, event_name)),
        };
        self.state = next;
        Ok(())
    }

    /// Admission (or a 4xx answer) refused the item for good, with Tented's code.
    fn rejected_by_api(&mut self, event: ItemEvent) {
        self.rejected_by = Some(RejectedBy::Api);
        if let ItemEvent::RejectedByApi {
            error_code,
            message,
        } = event
        {
            self.note(error_code, message);
        }
    }

    /// A poll saw the generation still under way; a publication, when given, is kept.
    fn progressed(&mut self, event: ItemEvent) {
        if let ItemEvent::Progress {
            generation_status,
            publication,
        } = event
        {
            self.generation_status = Some(generation_status);
            self.publication = publication.or(self.publication.take());
        }
    }

    /// Admission accepted the item: its tent, and no error any more.
    fn accepted(&mut self, event: ItemEvent) {
        if let ItemEvent::Accepted {
            tent_id,
            tent_name,
            bulk_job_id,
            generation_id,
        } = event
        {
            (self.tent_id, self.tent_name) = (Some(tent_id), tent_name);
            (self.bulk_job_id, self.generation_id) = (bulk_job_id, generation_id);
            (self.error_code, self.message) = (None, None);
        }
    }

    /// `poll.max_wait` has passed: what it means depends on where the item stands.
    fn deadline_passed(&mut self, from: ItemState) -> ItemState {
        match from {
            ItemState::Pending => {
                self.note(
                    ErrorCode::TimedOut,
                    "never sent before poll.max_wait (the manifest was paused)",
                );
                ItemState::TimedOut
            }
            ItemState::CreditWait => {
                self.rejected_by = Some(RejectedBy::Api);
                self.note(
                    ErrorCode::InsufficientCredits,
                    "not enough credits to send this item before poll.max_wait",
                );
                ItemState::Rejected
            }
            // The generation completed: only the publication's details are missing.
            ItemState::AwaitingDetails => ItemState::Completed,
            _ => {
                let still = self
                    .generation_status
                    .as_ref()
                    .map_or("unfinished", GenerationStatus::as_str);
                self.note(
                    ErrorCode::TimedOut,
                    format!("still {still} at poll.max_wait"),
                );
                ItemState::TimedOut
            }
        }
    }

    /// The generation completed; a publication, when given, replaces the one known.
    fn generated(&mut self, publication: Option<PublicationRecord>) {
        self.generation_status = Some(GenerationStatus::Completed);
        self.publication = publication.or(self.publication.take());
    }

    fn illegal(&self, from: ItemState, event: &'static str) -> IllegalTransition {
        IllegalTransition {
            manifest_id: self.manifest_id,
            index: self.index,
            from,
            event,
        }
    }

    /// Records the error code and message the result file reports for this item.
    fn note(&mut self, error_code: ErrorCode, message: impl Into<String>) {
        self.error_code = Some(error_code);
        self.message = Some(message.into());
    }

    /// Test support: the same item in another state, bypassing the machine.
    #[cfg(test)]
    pub(crate) fn forced_into(mut self, state: ItemState) -> ItemRecord {
        self.state = state;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(state: ItemState) -> ItemRecord {
        let mut item = ItemRecord::pending(1, 0, "a".into(), "{}".into(), ItemFields::default());
        item.state = state;
        item
    }

    fn publication(status: &str) -> PublicationRecord {
        PublicationRecord {
            status: status.into(),
            published_url: None,
            requested_custom_page_alias: None,
            applied_custom_page_alias: None,
            warnings: vec![],
            error: None,
        }
    }

    fn every_event() -> Vec<ItemEvent> {
        vec![
            ItemEvent::SendIntent { job_seq: 3 },
            ItemEvent::NotAdmitted,
            ItemEvent::Accepted {
                tent_id: "t".into(),
                tent_name: Some("n".into()),
                bulk_job_id: Some("b".into()),
                generation_id: None,
            },
            ItemEvent::RejectedByApi {
                error_code: ErrorCode::InvalidItem,
                message: "m".into(),
            },
            ItemEvent::NoCredits {
                message: "m".into(),
            },
            ItemEvent::AnswerLost {
                message: "m".into(),
            },
            ItemEvent::Progress {
                generation_status: "generating".into(),
                publication: None,
            },
            ItemEvent::Generated { publication: None },
            ItemEvent::GeneratedNeedsDetails {
                publication: publication("failed"),
            },
            ItemEvent::DetailsFetched {
                publication: publication("failed"),
            },
            ItemEvent::GenerationFailed {
                message: "m".into(),
            },
            ItemEvent::JobVanished {
                message: "m".into(),
            },
            ItemEvent::Cancel,
            ItemEvent::MaxWait,
        ]
    }

    /// The full table of legal transitions; everything else must be refused.
    fn expected(from: ItemState, event: &ItemEvent) -> Option<ItemState> {
        use ItemEvent as E;
        use ItemState as S;
        match (from, event) {
            (S::Pending, E::SendIntent { .. }) => Some(S::Sending),
            (S::Pending, E::Cancel) => Some(S::Canceled),
            (S::Pending, E::MaxWait) => Some(S::TimedOut),
            (S::CreditWait, E::SendIntent { .. }) => Some(S::Sending),
            (S::CreditWait, E::Cancel) => Some(S::Canceled),
            (S::CreditWait, E::MaxWait) => Some(S::Rejected),
            (S::Sending, E::NotAdmitted) => Some(S::Pending),
            (S::Sending, E::Accepted { .. }) => Some(S::Admitted),
            (S::Sending, E::RejectedByApi { .. }) => Some(S::Rejected),
            (S::Sending, E::NoCredits { .. }) => Some(S::CreditWait),
            (S::Sending, E::AnswerLost { .. }) => Some(S::Unknown),
            (S::Admitted, E::Progress { .. }) => Some(S::Admitted),
            (S::Admitted, E::Generated { .. }) => Some(S::Completed),
            (S::Admitted, E::GeneratedNeedsDetails { .. }) => Some(S::AwaitingDetails),
            (S::Admitted, E::GenerationFailed { .. }) => Some(S::Failed),
            (S::Admitted, E::JobVanished { .. }) => Some(S::Failed),
            (S::Admitted, E::MaxWait) => Some(S::TimedOut),
            (S::AwaitingDetails, E::DetailsFetched { .. }) => Some(S::Completed),
            (S::AwaitingDetails, E::MaxWait) => Some(S::Completed),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_event_pair_follows_the_table() {
        let mut legal = 0;
        for from in ItemState::ALL {
            for event in every_event() {
                let mut record = item(from);
                let result = record.apply(event.clone());
                match expected(from, &event) {
                    Some(to) => {
                        assert_eq!(result, Ok(()), "{from:?} on {event:?}");
                        assert_eq!(record.state, to, "{from:?} on {event:?}");
                        legal += 1;
                    }
                    None => {
                        assert!(result.is_err(), "{from:?} on {event:?} must be refused");
                        assert_eq!(record, item(from), "a refused event changes nothing");
                    }
                }
            }
        }
        assert_eq!(legal, 19);
    }

    #[test]
    fn each_transition_records_what_the_result_file_reports() {
        use ItemState as S;
        let lost = || ItemEvent::AnswerLost {
            message: "lost".into(),
        };
        let no_credits = || ItemEvent::NoCredits {
            message: "none".into(),
        };
        let rejected = || ItemEvent::RejectedByApi {
            error_code: ErrorCode::InvalidItem,
            message: "bad".into(),
        };
        let failed = || ItemEvent::GenerationFailed {
            message: "boom".into(),
        };
        let vanished = || ItemEvent::JobVanished {
            message: "gone".into(),
        };
        // (from, event, error_code, rejected_by, the message contains)
        let cases = [
            (
                S::Pending,
                ItemEvent::Cancel,
                Some("CANCELED"),
                None,
                "canceled",
            ),
            (
                S::CreditWait,
                ItemEvent::Cancel,
                Some("CANCELED"),
                None,
                "canceled",
            ),
            (
                S::Pending,
                ItemEvent::MaxWait,
                Some("TIMED_OUT"),
                None,
                "never sent",
            ),
            (
                S::CreditWait,
                ItemEvent::MaxWait,
                Some("INSUFFICIENT_CREDITS"),
                Some(RejectedBy::Api),
                "credits",
            ),
            (
                S::Admitted,
                ItemEvent::MaxWait,
                Some("TIMED_OUT"),
                None,
                "still unfinished",
            ),
            (S::Sending, lost(), Some("ANSWER_LOST"), None, "lost"),
            (
                S::Sending,
                no_credits(),
                Some("INSUFFICIENT_CREDITS"),
                None,
                "none",
            ),
            (
                S::Sending,
                rejected(),
                Some("INVALID_ITEM"),
                Some(RejectedBy::Api),
                "bad",
            ),
            (
                S::Admitted,
                failed(),
                Some("GENERATION_FAILED"),
                None,
                "boom",
            ),
            (S::Admitted, vanished(), Some("NOT_FOUND"), None, "gone"),
        ];
        for (from, event, code, rejected_by, says) in cases {
            let mut record = item(from);
            record.apply(event.clone()).expect("legal");
            assert_eq!(
                record.error_code.as_ref().map(ErrorCode::as_str),
                code,
                "{from:?} on {event:?}"
            );
            assert_eq!(record.rejected_by, rejected_by, "{from:?} on {event:?}");
            let message = record.message.unwrap_or_default();
            assert!(message.contains(says), "{from:?} on {event:?}: {message}");
        }
        // Sending records the job; not being admitted forgets it; failing records the status.
        let mut record = item(S::Pending);
        record
            .apply(ItemEvent::SendIntent { job_seq: 4 })
            .expect("legal");
        assert_eq!(record.job_seq, Some(4));
        record.apply(ItemEvent::NotAdmitted).expect("legal");
        assert_eq!(record.job_seq, None);
        let mut record = item(S::Admitted);
        record.apply(failed()).expect("legal");
        assert_eq!(record.generation_status, Some(GenerationStatus::Failed));
        // A generation that completes keeps a publication seen earlier when none is new.
        let mut record = item(S::Admitted);
        let seen = publication("pending");
        record
            .apply(ItemEvent::Progress {
                generation_status: "generating".into(),
                publication: Some(seen.clone()),
            })
            .expect("legal");
        record
            .apply(ItemEvent::Generated { publication: None })
            .expect("legal");
        assert_eq!(record.generation_status, Some(GenerationStatus::Completed));
        assert_eq!(record.publication, Some(seen));
    }

    #[test]
    fn final_states_accept_nothing() {
        for from in ItemState::ALL.into_iter().filter(|s| s.is_final()) {
            for event in every_event() {
                assert!(item(from).apply(event).is_err());
            }
        }
    }

    #[test]
    fn accepted_records_the_tent_and_clears_credit_errors() {
        let mut record = item(ItemState::Sending);
        record.error_code = Some(ErrorCode::InsufficientCredits);
        record
            .apply(ItemEvent::Accepted {
                tent_id: "t-1".into(),
                tent_name: Some("Acme 1".into()),
                bulk_job_id: Some("job".into()),
                generation_id: None,
            })
            .unwrap();
        assert_eq!(record.tent_id.as_deref(), Some("t-1"));
        assert_eq!(record.bulk_job_id.as_deref(), Some("job"));
        assert_eq!(record.error_code, None);
    }

    #[test]
    fn credit_wait_times_out_as_rejected_by_the_api() {
        let mut record = item(ItemState::CreditWait);
        record.apply(ItemEvent::MaxWait).unwrap();
        assert_eq!(record.state, ItemState::Rejected);
        assert_eq!(record.rejected_by, Some(RejectedBy::Api));
        assert_eq!(record.error_code, Some(ErrorCode::InsufficientCredits));
    }

    #[test]
    fn local_rejection_is_final_and_named() {
        let record = ItemRecord::rejected_locally(1, 4, "x".into(), "{}".into(), "rule".into());
        assert!(record.state.is_final());
        assert_eq!(record.rejected_by, Some(RejectedBy::Local));
        assert_eq!(record.error_code, Some(ErrorCode::InvalidItem));
    }
}
