//! What the answer to a create request means: a pure judgement, `interpret`, from the
//! answer and the items the request carried to typed effects, which the submitter then
//! applies in one store transaction. No store, clock or server is needed to test it.
//!
//! The policy (SPEC sections 6 and 8):
//! - 2xx: each item's admission is recorded (accepted, refused, out of credits); an item
//!   the answer does not mention, or mentions unclearly, may have been admitted: `unknown`.
//! - 429 with `Retry-After` is throttling, and 5xx a server fault: the items go back to be
//!   sent again after a backoff of at least `Retry-After`.
//! - 429 without `Retry-After` is the documented credit limit: the manifest waits for
//!   credits (`submit.credit_retry`).
//! - 401: the items go back; the client's 401 pause holds every call meanwhile.
//! - Any other 4xx is final for the items, with Tented's message.
//! - Not sent (the connection never opened): back, after a backoff.
//! - The answer never came: the request may have been admitted, so its items end
//!   `unknown` and are never resent.

use std::time::Duration;

use crate::api::types::{Admission, ApiErrorBody, BulkCreateResponse};
use crate::api::Outcome;
use crate::state::error_code::ErrorCode;
use crate::state::item::{ItemEvent, ANSWER_LOST_MESSAGE};

/// A create or edit's admission, in one shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleAdmission {
    pub tent_id: String,
    pub generation_id: Option<String>,
}

/// The answer to one create request, as the client returned it.
#[derive(Debug)]
pub enum CreateAnswer {
    Bulk(Outcome<BulkCreateResponse>),
    Single(Outcome<SingleAdmission>),
    /// Not sent, and never to be sent: the request could not be built (a bug).
    Unsendable {
        reason: String,
    },
}

impl CreateAnswer {
    /// Whether Tented answered (admitted or refused), rather than the request not being
    /// sent or its answer being lost.
    pub fn answered(&self) -> bool {
        matches!(
            self,
            CreateAnswer::Bulk(Outcome::Success { .. } | Outcome::Refused { .. })
                | CreateAnswer::Single(Outcome::Success { .. } | Outcome::Refused { .. })
        )
    }
}

/// What the request carried: the manifest indexes of its items, in request order, and
/// for a single create the tent name it asked for (for the result file).
#[derive(Clone, Debug)]
pub struct SentRequest<'a> {
    pub indices: &'a [u32],
    pub single_tent_name: Option<String>,
}

/// What the job record learns from the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobLearns {
    /// Admitted: the bulk_job_id or tent id, and the job's status word if any.
    Admitted {
        remote_id: String,
        status: Option<String>,
    },
    /// The answer never came: the job is lost.
    AnswerLost,
    /// A refusal or a request that was not sent: nothing but its items' events.
    Nothing,
}

/// When the manifest's next request may go, after this answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// As soon as the plan allows (and the manifest's backoff is reset).
    Now,
    /// Back off, for at least this `Retry-After` when the answer gave one.
    Backoff { at_least: Option<Duration> },
    /// Neither: the backoff is left as it is.
    Unchanged,
}

/// Everything an answer means, in the order the submitter applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerEffects {
    /// One event per item the request carried.
    pub events: Vec<(u32, ItemEvent)>,
    pub job: JobLearns,
    /// Tented is out of credits: the manifest waits `submit.credit_retry`.
    pub credits_short: bool,
    pub retry: Retry,
}

/// The judgement: what an answer means for the items a request carried.
pub fn interpret(answer: &CreateAnswer, sent: &SentRequest<'_>) -> AnswerEffects {
    match answer {
        CreateAnswer::Bulk(Outcome::Success { body, .. }) => bulk_admitted(body, sent.indices),
        CreateAnswer::Single(Outcome::Success { body, .. }) => {
            single_admitted(body, sent.indices, &sent.single_tent_name)
        }
        CreateAnswer::Bulk(Outcome::Refused {
            status,
            error,
            retry_after,
        })
        | CreateAnswer::Single(Outcome::Refused {
            status,
            error,
            retry_after,
        }) => refused(*status, error, *retry_after, sent.indices),
        CreateAnswer::Bulk(Outcome::NotSent { .. })
        | CreateAnswer::Single(Outcome::NotSent { .. }) => AnswerEffects {
            events: every(sent.indices, || ItemEvent::NotAdmitted),
            job: JobLearns::Nothing,
            credits_short: false,
            retry: Retry::Backoff { at_least: None },
        },
        CreateAnswer::Bulk(Outcome::Uncertain { reason })
        | CreateAnswer::Single(Outcome::Uncertain { reason }) => AnswerEffects {
            events: every(sent.indices, || ItemEvent::AnswerLost {
                message: format!("{ANSWER_LOST_MESSAGE} ({reason})"),
            }),
            job: JobLearns::AnswerLost,
            credits_short: false,
            retry: Retry::Unchanged,
        },
        CreateAnswer::Unsendable { reason } => AnswerEffects {
            events: every(sent.indices, || ItemEvent::RejectedByApi {
                error_code: ErrorCode::NotSent,
                message: reason.clone(),
            }),
            job: JobLearns::Nothing,
            credits_short: false,
            retry: Retry::Unchanged,
        },
    }
}

/// The same event for every item.
fn every(indices: &[u32], event: impl Fn() -> ItemEvent) -> Vec<(u32, ItemEvent)> {
    indices.iter().map(|index| (*index, event())).collect()
}

/// A 2xx to a bulk request: each item's admission, by its position in the request.
fn bulk_admitted(body: &BulkCreateResponse, indices: &[u32]) -> AnswerEffects {
    let mut events = Vec::with_capacity(indices.len());
    let mut seen = vec![false; indices.len()];
    let mut credits_short = false;
    for admission in &body.items {
        let position = admission.index as usize;
        let Some(&index) = indices.get(position) else {
            tracing::warn!(bulk_job_id = %body.bulk_job_id, index = admission.index, "the admission answer names an item that was not sent");
            continue;
        };
        if std::mem::replace(&mut seen[position], true) {
            continue;
        }
        let event = admission_event(body, admission);
        credits_short |= matches!(event, ItemEvent::NoCredits { .. });
        events.push((index, event));
    }
    for (position, index) in indices.iter().enumerate() {
        if !seen[position] {
            let message = format!(
                "the admission answer of bulk job {} did not mention this item; {ANSWER_LOST_MESSAGE}",
                body.bulk_job_id
            );
            events.push((*index, ItemEvent::AnswerLost { message }));
        }
    }
    AnswerEffects {
        events,
        job: JobLearns::Admitted {
            remote_id: body.bulk_job_id.clone(),
            status: body.status.clone(),
        },
        credits_short,
        retry: Retry::Now,
    }
}

/// One item's admission in a bulk answer.
fn admission_event(
    body: &BulkCreateResponse,
    admission: &crate::api::types::BulkAdmissionItem,
) -> ItemEvent {
    let message = |fallback: &str| {
        admission
            .message
            .clone()
            .unwrap_or_else(|| fallback.to_string())
    };
    match admission.admission() {
        Admission::Accepted { tent_id } => ItemEvent::Accepted {
            tent_id,
            tent_name: admission.tent_name.clone(),
            bulk_job_id: Some(body.bulk_job_id.clone()),
            generation_id: None,
        },
        Admission::Refused => match admission.error_code.as_deref().map(ErrorCode::parse) {
            Some(ErrorCode::InsufficientCredits) => ItemEvent::NoCredits {
                message: message("insufficient credits"),
            },
            code => ItemEvent::RejectedByApi {
                error_code: code.unwrap_or(ErrorCode::Rejected),
                message: message("rejected during admission"),
            },
        },
        Admission::Unclear => ItemEvent::AnswerLost {
            message: format!(
                "bulk job {}'s admission answer for this item is unclear (status `{}`, no tent id); {ANSWER_LOST_MESSAGE}",
                body.bulk_job_id, admission.status
            ),
        },
    }
}

/// A 2xx to a create or an edit: its one item is admitted.
fn single_admitted(
    body: &SingleAdmission,
    indices: &[u32],
    tent_name: &Option<String>,
) -> AnswerEffects {
    AnswerEffects {
        events: every(indices, || ItemEvent::Accepted {
            tent_id: body.tent_id.clone(),
            tent_name: tent_name.clone(),
            bulk_job_id: None,
            generation_id: body.generation_id.clone(),
        }),
        job: JobLearns::Admitted {
            remote_id: body.tent_id.clone(),
            status: None,
        },
        credits_short: false,
        retry: Retry::Now,
    }
}

/// A non-2xx answer: the server saw the request and said no, or "later".
fn refused(
    status: u16,
    error: &ApiErrorBody,
    retry_after: Option<Duration>,
    indices: &[u32],
) -> AnswerEffects {
    let event = refusal_event(status, error, retry_after);
    let credits_short = matches!(event, ItemEvent::NoCredits { .. });
    let throttled = status == 429 && retry_after.is_some();
    AnswerEffects {
        events: every(indices, || event.clone()),
        job: JobLearns::Nothing,
        credits_short,
        retry: if throttled || status >= 500 {
            Retry::Backoff {
                at_least: retry_after,
            }
        } else {
            Retry::Unchanged
        },
    }
}

/// What a non-2xx answer means for each item it carried.
pub fn refusal_event(
    status: u16,
    error: &ApiErrorBody,
    retry_after: Option<Duration>,
) -> ItemEvent {
    match status {
        // Without Retry-After, a 429 on a create is the documented credit limit.
        429 if retry_after.is_none() => ItemEvent::NoCredits {
            message: format!(
                "Tented answered 429 (credit limit exceeded): {}",
                error.summary()
            ),
        },
        401 | 429 | 500..=599 => ItemEvent::NotAdmitted,
        _ => ItemEvent::RejectedByApi {
            error_code: error.code.as_deref().map_or_else(
                || ErrorCode::Other(format!("HTTP_{status}")),
                ErrorCode::parse,
            ),
            message: format!("Tented answered {status}: {}", error.summary()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::BulkAdmissionItem;

    const SENT: [u32; 3] = [50, 51, 52];

    fn sent() -> SentRequest<'static> {
        SentRequest {
            indices: &SENT,
            single_tent_name: Some("Page".into()),
        }
    }

    fn admission(
        index: u32,
        status: &str,
        tent_id: Option<&str>,
        code: Option<&str>,
    ) -> BulkAdmissionItem {
        BulkAdmissionItem {
            index,
            client_item_id: None,
            tent_id: tent_id.map(str::to_string),
            tent_name: tent_id.map(|_| format!("P {index}")),
            custom_page_alias: None,
            status: status.into(),
            error_code: code.map(str::to_string),
            message: code.map(|c| format!("{c} message")),
        }
    }

    fn bulk_success(items: Vec<BulkAdmissionItem>) -> CreateAnswer {
        CreateAnswer::Bulk(Outcome::Success {
            status: 202,
            body: BulkCreateResponse {
                bulk_job_id: "JOB".into(),
                status: Some("queued".into()),
                accepted_count: None,
                rejected_count: None,
                items,
                created_at: None,
            },
            retry_after: None,
        })
    }

    fn refusal(status: u16, retry_after: Option<u64>) -> CreateAnswer {
        CreateAnswer::Single(Outcome::Refused {
            status,
            error: ApiErrorBody {
                error: None,
                message: Some("no".into()),
                code: (status == 400).then(|| "VALIDATION_ERROR".into()),
                details: None,
            },
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn names(effects: &AnswerEffects) -> Vec<(u32, &'static str)> {
        effects
            .events
            .iter()
            .map(|(index, event)| {
                let name = match event {
                    ItemEvent::Accepted { .. } => "accepted",
                    ItemEvent::RejectedByApi { .. } => "rejected",
                    ItemEvent::NoCredits { .. } => "no_credits",
                    ItemEvent::AnswerLost { .. } => "lost",
                    ItemEvent::NotAdmitted => "not_admitted",
                    _ => "other",
                };
                (*index, name)
            })
            .collect()
    }

    #[test]
    fn a_bulk_admission_maps_each_item_by_its_position() {
        let effects = interpret(
            &bulk_success(vec![
                admission(0, "accepted", Some("t0"), None),
                admission(1, "rejected", None, Some("INVALID_ITEM")),
                admission(2, "rejected", None, Some("INSUFFICIENT_CREDITS")),
            ]),
            &sent(),
        );
        assert_eq!(
            names(&effects),
            vec![(50, "accepted"), (51, "rejected"), (52, "no_credits")]
        );
        assert!(effects.credits_short);
        assert_eq!(effects.retry, Retry::Now);
        assert_eq!(
            effects.job,
            JobLearns::Admitted {
                remote_id: "JOB".into(),
                status: Some("queued".into())
            }
        );
        assert_eq!(
            effects.events[0].1,
            ItemEvent::Accepted {
                tent_id: "t0".into(),
                tent_name: Some("P 0".into()),
                bulk_job_id: Some("JOB".into()),
                generation_id: None,
            }
        );
    }

    #[test]
    fn items_an_admission_omits_or_garbles_may_have_been_admitted() {
        let effects = interpret(
            &bulk_success(vec![
                admission(0, "accepted", Some("t0"), None),
                admission(0, "rejected", None, Some("INVALID_ITEM")), // a repeat: ignored
                admission(1, "accepted", None, None),                 // no tent id: unclear
                admission(9, "accepted", Some("t9"), None),           // never sent: ignored
            ]),
            &sent(),
        );
        assert_eq!(
            names(&effects),
            vec![(50, "accepted"), (51, "lost"), (52, "lost")]
        );
        assert!(!effects.credits_short);
    }

    #[test]
    fn a_single_admission_names_the_tent_it_asked_for() {
        let answer = CreateAnswer::Single(Outcome::Success {
            status: 202,
            body: SingleAdmission {
                tent_id: "T".into(),
                generation_id: Some("G".into()),
            },
            retry_after: None,
        });
        let effects = interpret(
            &answer,
            &SentRequest {
                indices: &[7],
                single_tent_name: Some("Page".into()),
            },
        );
        assert_eq!(
            effects.events,
            vec![(
                7,
                ItemEvent::Accepted {
                    tent_id: "T".into(),
                    tent_name: Some("Page".into()),
                    bulk_job_id: None,
                    generation_id: Some("G".into()),
                }
            )]
        );
        assert_eq!(
            effects.job,
            JobLearns::Admitted {
                remote_id: "T".into(),
                status: None
            }
        );
        assert_eq!(effects.retry, Retry::Now);
    }

    #[test]
    fn refusals_follow_the_policy_status_by_status() {
        // (status, Retry-After, every item's event, credits short, retry)
        let cases = [
            (
                429,
                Some(30),
                "not_admitted",
                false,
                Retry::Backoff {
                    at_least: Some(Duration::from_secs(30)),
                },
            ),
            (429, None, "no_credits", true, Retry::Unchanged),
            (
                500,
                None,
                "not_admitted",
                false,
                Retry::Backoff { at_least: None },
            ),
            (
                503,
                Some(5),
                "not_admitted",
                false,
                Retry::Backoff {
                    at_least: Some(Duration::from_secs(5)),
                },
            ),
            (401, None, "not_admitted", false, Retry::Unchanged),
            (400, None, "rejected", false, Retry::Unchanged),
            (409, None, "rejected", false, Retry::Unchanged),
        ];
        for (status, retry_after, event, credits_short, retry) in cases {
            let effects = interpret(&refusal(status, retry_after), &sent());
            let expected: Vec<(u32, &str)> = SENT.iter().map(|i| (*i, event)).collect();
            assert_eq!(names(&effects), expected, "{status} {retry_after:?}");
            assert_eq!(
                effects.credits_short, credits_short,
                "{status} {retry_after:?}"
            );
            assert_eq!(effects.retry, retry, "{status} {retry_after:?}");
            assert_eq!(effects.job, JobLearns::Nothing);
        }
    }

    #[test]
    fn a_final_refusal_carries_tenteds_code_or_the_http_status() {
        let with_code = interpret(&refusal(400, None), &sent());
        assert!(matches!(
            &with_code.events[0].1,
            ItemEvent::RejectedByApi { error_code, message }
                if *error_code == ErrorCode::parse("VALIDATION_ERROR")
                    && message.starts_with("Tented answered 400")
        ));
        let without = interpret(&refusal(404, None), &sent());
        assert!(matches!(
            &without.events[0].1,
            ItemEvent::RejectedByApi { error_code, .. }
                if *error_code == ErrorCode::Other("HTTP_404".into())
        ));
    }

    #[test]
    fn not_sent_goes_back_and_a_lost_answer_is_never_resent() {
        let not_sent = interpret(
            &CreateAnswer::Bulk(Outcome::NotSent {
                reason: "refused".into(),
            }),
            &sent(),
        );
        assert_eq!(
            names(&not_sent),
            SENT.iter()
                .map(|i| (*i, "not_admitted"))
                .collect::<Vec<_>>()
        );
        assert_eq!(not_sent.retry, Retry::Backoff { at_least: None });
        let lost = interpret(
            &CreateAnswer::Bulk(Outcome::Uncertain {
                reason: "timeout".into(),
            }),
            &sent(),
        );
        assert_eq!(
            names(&lost),
            SENT.iter().map(|i| (*i, "lost")).collect::<Vec<_>>()
        );
        assert_eq!(lost.job, JobLearns::AnswerLost);
        assert_eq!(lost.retry, Retry::Unchanged);
        assert!(
            matches!(&lost.events[0].1, ItemEvent::AnswerLost { message } if message.contains("timeout"))
        );
    }

    #[test]
    fn an_unsendable_request_rejects_its_items_without_a_job() {
        let effects = interpret(
            &CreateAnswer::Unsendable {
                reason: "bug".into(),
            },
            &sent(),
        );
        assert_eq!(
            names(&effects),
            SENT.iter().map(|i| (*i, "rejected")).collect::<Vec<_>>()
        );
        assert_eq!(effects.job, JobLearns::Nothing);
    }
}
