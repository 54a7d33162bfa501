//! The failure threshold (SPEC section 8): a manifest whose answered items went wrong too
//! often pauses its remaining chunks. Judged after every answer, by submission (create
//! answers) and reconciliation (poll answers), through [`super::judge`].

use crate::state::control::ControlEvent;
use crate::state::item::ItemState;
use crate::store::{ManifestRecord, Txn};

/// The failure threshold is judged once this many items have a final answer from the API.
pub const THRESHOLD_MIN_ANSWERS: u32 = 25;

/// A manifest's final answers from the API: items that completed, and items that failed
/// or that the API refused (local rejections are not the template's doing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answers {
    pub succeeded: u32,
    pub went_wrong: u32,
}

impl Answers {
    pub fn of(manifest: &ManifestRecord) -> Answers {
        let api_rejected = manifest
            .count(ItemState::Rejected)
            .saturating_sub(manifest.local_rejections);
        Answers {
            succeeded: manifest.count(ItemState::Completed),
            went_wrong: manifest.count(ItemState::Failed) + api_rejected,
        }
    }

    pub fn total(self) -> u32 {
        self.succeeded + self.went_wrong
    }
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
    let answers = Answers::of(manifest);
    let (bad, answered) = (answers.went_wrong, answers.total());
    if answered >= THRESHOLD_MIN_ANSWERS && f64::from(bad) > threshold * f64::from(answered) {
        let name = manifest.name.clone();
        let reason = format!(
            "{bad} of the {answered} items answered so far failed or were rejected, over the failure threshold of {threshold}; the remaining items wait for `tented-bulkd resume {name}` or `tented-bulkd cancel {name}`"
        );
        tracing::warn!(manifest = %name, "manifest paused: {reason}");
        txn.apply_control(ControlEvent::ThresholdTripped { reason });
    }
}
