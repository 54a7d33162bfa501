//! The manifest's control state machine: the operator's (and the failure threshold's)
//! hold on a manifest's sending (SPEC section 8).
//!
//! ```text
//!  Running ──ThresholdTripped(reason)──► Paused(reason) ──Resume──► Running (threshold overridden)
//!     ├──Pause──► Paused("paused by the operator")   │
//!     ├──Restored(reason)──► Paused(reason)           │   (Paused ──Restored(reason)──► Paused(reason))
//!     └──────────────Cancel─────────────────┴──Cancel──► Canceled
//! ```
//!
//! `Canceled` is final. Events that do not apply to the current state leave it as it is
//! (a resume of a running manifest, a second cancel, a threshold trip while paused): the
//! operator's commands are idempotent, so [`Control::next`] answers "no change" rather
//! than an error. The effects on the manifest's other fields are named by
//! [`ControlEffect`] and applied by the manifest record.

use serde::{Deserialize, Serialize};

/// The operator's hold on a manifest's sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Running,
    /// The failure threshold tripped, the operator paused it, or the store was restored
    /// from a backup (the reason says which); waits for `resume` or `cancel`.
    Paused {
        reason: String,
    },
    Canceled,
}

/// Something that happens to a manifest's control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// Too many of its items failed or were rejected (SPEC section 8).
    ThresholdTripped { reason: String },
    /// The operator's `pause NAME`: nothing more is sent until `resume`.
    Pause,
    /// The store was restored from a backup: what was sent after the snapshot is not
    /// known, so sending waits for the operator (the reason names the snapshot's time).
    Restored { reason: String },
    /// The operator's `resume NAME`.
    Resume,
    /// The operator's `cancel NAME`.
    Cancel,
}

/// What a transition does to the manifest's other fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlEffect {
    /// The failure threshold no longer pauses this manifest (after a resume).
    OverrideThreshold,
    /// Nothing more is sent, so no credit retry is due.
    ClearCreditRetry,
}

/// The reason a manifest paused by `pause NAME` shows.
pub const OPERATOR_PAUSE_REASON: &str = "paused by the operator";

impl Control {
    /// The transition table: the next control and its effect, or `None` when the event
    /// changes nothing in this state.
    pub fn next(&self, event: ControlEvent) -> Option<(Control, Option<ControlEffect>)> {
        match (self, event) {
            (Control::Running, ControlEvent::ThresholdTripped { reason }) => {
                Some((Control::Paused { reason }, None))
            }
            (Control::Running, ControlEvent::Pause) => Some((
                Control::Paused {
                    reason: OPERATOR_PAUSE_REASON.to_string(),
                },
                None,
            )),
            // A restore outranks any earlier hold: its reason is the one the operator
            // must read before resuming.
            (Control::Running | Control::Paused { .. }, ControlEvent::Restored { reason }) => {
                Some((Control::Paused { reason }, None))
            }
            (Control::Paused { .. }, ControlEvent::Resume) => {
                Some((Control::Running, Some(ControlEffect::OverrideThreshold)))
            }
            (Control::Running | Control::Paused { .. }, ControlEvent::Cancel) => {
                Some((Control::Canceled, Some(ControlEffect::ClearCreditRetry)))
            }
            _ => None,
        }
    }

    /// The word `/status` shows.
    pub fn is_running(&self) -> bool {
        *self == Control::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused() -> Control {
        Control::Paused { reason: "r".into() }
    }

    fn trip() -> ControlEvent {
        ControlEvent::ThresholdTripped {
            reason: "too many failed".into(),
        }
    }

    fn restored() -> ControlEvent {
        ControlEvent::Restored {
            reason: "restored".into(),
        }
    }

    #[test]
    fn an_operator_pause_is_released_by_resume_like_a_threshold_pause() {
        let (paused, effect) = Control::Running
            .next(ControlEvent::Pause)
            .expect("running pauses");
        assert_eq!(
            paused,
            Control::Paused {
                reason: OPERATOR_PAUSE_REASON.into()
            }
        );
        assert_eq!(effect, None);
        assert!(!paused.is_running());
        let (running, effect) = paused.next(ControlEvent::Resume).expect("paused resumes");
        assert_eq!(running, Control::Running);
        assert_eq!(effect, Some(ControlEffect::OverrideThreshold));
    }

    #[test]
    fn every_state_and_event_pair_follows_the_table() {
        use ControlEffect::*;
        type Next = Option<(Control, Option<ControlEffect>)>;
        let cases: Vec<(Control, ControlEvent, Next)> = vec![
            (
                Control::Running,
                trip(),
                Some((
                    Control::Paused {
                        reason: "too many failed".into(),
                    },
                    None,
                )),
            ),
            (Control::Running, ControlEvent::Resume, None),
            (
                Control::Running,
                ControlEvent::Pause,
                Some((
                    Control::Paused {
                        reason: OPERATOR_PAUSE_REASON.into(),
                    },
                    None,
                )),
            ),
            (
                Control::Running,
                restored(),
                Some((
                    Control::Paused {
                        reason: "restored".into(),
                    },
                    None,
                )),
            ),
            (
                Control::Running,
                ControlEvent::Cancel,
                Some((Control::Canceled, Some(ClearCreditRetry))),
            ),
            (paused(), trip(), None),
            (
                paused(),
                ControlEvent::Resume,
                Some((Control::Running, Some(OverrideThreshold))),
            ),
            (paused(), ControlEvent::Pause, None),
            (
                paused(),
                restored(),
                Some((
                    Control::Paused {
                        reason: "restored".into(),
                    },
                    None,
                )),
            ),
            (
                paused(),
                ControlEvent::Cancel,
                Some((Control::Canceled, Some(ClearCreditRetry))),
            ),
            (Control::Canceled, trip(), None),
            (Control::Canceled, ControlEvent::Resume, None),
            (Control::Canceled, ControlEvent::Cancel, None),
            (Control::Canceled, ControlEvent::Pause, None),
            (Control::Canceled, restored(), None),
        ];
        for (from, event, expected) in cases {
            assert_eq!(from.next(event.clone()), expected, "{from:?} on {event:?}");
        }
    }
}
