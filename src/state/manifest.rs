//! A manifest as a whole: where it stands ([`ManifestPhase`]), its items counted by state
//! ([`ItemCounts`]) and by final status, and the final status those counts give it (SPEC
//! section 5). One rule
//! each, used by the result file, the history, the pruned summary, `/status`, the
//! metrics and the systemd status line alike.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::control::Control;
use crate::state::item::ItemState;

/// Where a manifest stands, as `list`, `show`, `/status` and the status page name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ManifestPhase {
    /// Running: sending or polling.
    Active,
    /// Paused by the failure threshold, the operator or a restore.
    Paused,
    /// Running, but Tented is out of credits: sending tries again later.
    CreditWait,
    /// Canceled, still finishing (what was admitted is polled to the end).
    Canceled,
    /// Every item is final (its result file may still be being written).
    Finished,
    /// Pruned: only its summary is left.
    Pruned,
}

impl ManifestPhase {
    /// The phase of a manifest still in the store: `finished` when every item is final,
    /// `credit_wait` when a credit retry is due.
    pub fn of(finished: bool, control: &Control, credit_wait: bool) -> ManifestPhase {
        if finished {
            return ManifestPhase::Finished;
        }
        match control {
            Control::Paused { .. } => ManifestPhase::Paused,
            Control::Canceled => ManifestPhase::Canceled,
            Control::Running if credit_wait => ManifestPhase::CreditWait,
            Control::Running => ManifestPhase::Active,
        }
    }

    /// The word `list`, `show` and `/status` print.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestPhase::Active => "active",
            ManifestPhase::Paused => "paused",
            ManifestPhase::CreditWait => "credit_wait",
            ManifestPhase::Canceled => "canceled",
            ManifestPhase::Finished => "finished",
            ManifestPhase::Pruned => "pruned",
        }
    }

    /// Held by the operator, the failure threshold or the credits: nothing is sent now.
    pub fn is_held(self) -> bool {
        matches!(self, ManifestPhase::Paused | ManifestPhase::CreditWait)
    }
}

impl fmt::Display for ManifestPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many items are in each state: one number per [`ItemState`], in the order of
/// [`ItemState::ALL`] (which is how the store keeps them: the same bytes as the array it
/// replaced).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemCounts([u32; ItemState::COUNT]);

impl ItemCounts {
    pub fn get(&self, state: ItemState) -> u32 {
        self.0[slot(state)]
    }

    pub fn set(&mut self, state: ItemState, n: u32) {
        self.0[slot(state)] = n;
    }

    /// One item more in `state`.
    pub fn add(&mut self, state: ItemState) {
        self.0[slot(state)] += 1;
    }

    /// One item fewer in `state` (never below zero).
    pub fn remove(&mut self, state: ItemState) {
        self.0[slot(state)] = self.0[slot(state)].saturating_sub(1);
    }

    /// `(state, count)` for every state, in the order of [`ItemState::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (ItemState, u32)> + '_ {
        ItemState::ALL.into_iter().zip(self.0.iter().copied())
    }
}

/// A state's place in the counts: its place in [`ItemState::ALL`], which lists the states
/// in their declared order (a unit test checks it).
fn slot(state: ItemState) -> usize {
    state as usize
}

/// A manifest's final status, in the words of bulk job statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalStatus {
    /// Every item not rejected completed.
    Completed,
    CompletedWithFailures,
    /// No item completed.
    Failed,
    /// The manifest as a whole was rejected.
    Rejected,
}

impl FinalStatus {
    pub const ALL: [FinalStatus; 4] = [
        FinalStatus::Completed,
        FinalStatus::CompletedWithFailures,
        FinalStatus::Failed,
        FinalStatus::Rejected,
    ];

    /// The one rule: `rejected` for a manifest rejected as a whole, else `failed` when no
    /// item completed, `completed` when every item not rejected completed, and
    /// `completed_with_failures` otherwise.
    pub fn from_counts(rejected_as_whole: bool, counts: &FinalCounts) -> FinalStatus {
        if rejected_as_whole {
            FinalStatus::Rejected
        } else if counts.completed == 0 {
            FinalStatus::Failed
        } else if counts.completed == counts.total.saturating_sub(counts.rejected) {
            FinalStatus::Completed
        } else {
            FinalStatus::CompletedWithFailures
        }
    }

    /// The word of the result file, `list`, `show` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Completed => "completed",
            FinalStatus::CompletedWithFailures => "completed_with_failures",
            FinalStatus::Failed => "failed",
            FinalStatus::Rejected => "rejected",
        }
    }

    /// The status a word names, if any.
    pub fn parse(word: &str) -> Option<FinalStatus> {
        FinalStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == word)
    }
}

impl fmt::Display for FinalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its word, in JSON and in the store alike (a stored summary kept the word as text:
/// the bytes stay the same).
impl Serialize for FinalStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinalStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FinalStatus, D::Error> {
        let word = String::deserialize(deserializer)?;
        FinalStatus::parse(&word).ok_or_else(|| {
            serde::de::Error::unknown_variant(
                &word,
                &["completed", "completed_with_failures", "failed", "rejected"],
            )
        })
    }
}

// A manifest's items by final status, as the result file reports them (`counts`); the
// result's schema names it `Counts` and has no description of it (plain comments here).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[schemars(rename = "Counts")]
pub struct FinalCounts {
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
    // Unknown, and (before the manifest finished) every item not final yet.
    pub unknown: u32,
}

impl FinalCounts {
    /// The counts of `total` items from how many are in each state; items not final yet
    /// count as `unknown`, as in a result file.
    pub fn from_states(
        total: u32,
        states: impl IntoIterator<Item = (ItemState, u32)>,
    ) -> FinalCounts {
        let mut counts = FinalCounts {
            total,
            ..FinalCounts::default()
        };
        for (state, n) in states {
            let slot = match state {
                ItemState::Completed => &mut counts.completed,
                ItemState::Failed => &mut counts.failed,
                ItemState::Rejected => &mut counts.rejected,
                ItemState::TimedOut => &mut counts.timed_out,
                ItemState::Canceled => &mut counts.canceled,
                _ => &mut counts.unknown,
            };
            *slot += n;
        }
        counts
    }

    /// `(state, count)` for every final state with a count, in the result file's order.
    pub fn nonzero(&self) -> Vec<(ItemState, u32)> {
        [
            (ItemState::Completed, self.completed),
            (ItemState::Failed, self.failed),
            (ItemState::Rejected, self.rejected),
            (ItemState::TimedOut, self.timed_out),
            (ItemState::Canceled, self.canceled),
            (ItemState::Unknown, self.unknown),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u32, completed: u32, rejected: u32) -> FinalCounts {
        FinalCounts {
            total,
            completed,
            rejected,
            failed: total - completed - rejected,
            ..FinalCounts::default()
        }
    }

    #[test]
    fn item_counts_are_indexed_by_state_and_stored_as_the_array_they_replaced() {
        for (n, state) in ItemState::ALL.into_iter().enumerate() {
            assert_eq!(slot(state), n, "{state:?}");
        }
        let mut counts = ItemCounts::default();
        counts.add(ItemState::Pending);
        counts.add(ItemState::Pending);
        counts.remove(ItemState::Pending);
        counts.remove(ItemState::Unknown);
        counts.set(ItemState::Completed, 7);
        assert_eq!(counts.get(ItemState::Pending), 1);
        assert_eq!(counts.get(ItemState::Unknown), 0);
        let mut array = [0u32; ItemState::COUNT];
        array[0] = 1;
        array[5] = 7;
        assert_eq!(
            bincode::serialize(&counts).expect("bincode"),
            bincode::serialize(&array).expect("bincode")
        );
        let back: ItemCounts =
            bincode::deserialize(&bincode::serialize(&array).expect("bincode")).expect("decodes");
        assert_eq!(back, counts);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u32>(), 8);
    }

    #[test]
    fn the_phase_puts_finished_first_then_the_control_then_the_credits() {
        let paused = Control::Paused { reason: "r".into() };
        let phase = ManifestPhase::of;
        assert_eq!(phase(true, &paused, true), ManifestPhase::Finished);
        assert_eq!(phase(false, &paused, true), ManifestPhase::Paused);
        assert_eq!(
            phase(false, &Control::Canceled, true),
            ManifestPhase::Canceled
        );
        assert_eq!(
            phase(false, &Control::Running, true),
            ManifestPhase::CreditWait
        );
        assert_eq!(
            phase(false, &Control::Running, false),
            ManifestPhase::Active
        );
    }

    #[test]
    fn the_final_status_follows_the_one_rule() {
        let status = FinalStatus::from_counts;
        assert_eq!(status(true, &counts(3, 3, 0)), FinalStatus::Rejected);
        assert_eq!(status(false, &counts(3, 0, 1)), FinalStatus::Failed);
        assert_eq!(status(false, &counts(0, 0, 0)), FinalStatus::Failed);
        assert_eq!(status(false, &counts(3, 2, 1)), FinalStatus::Completed);
        assert_eq!(
            status(false, &counts(3, 1, 1)),
            FinalStatus::CompletedWithFailures
        );
    }

    #[test]
    fn a_final_status_is_its_word_in_json_and_in_the_store() {
        for status in FinalStatus::ALL {
            assert_eq!(FinalStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                bincode::serialize(&status).expect("bincode"),
                bincode::serialize(status.as_str()).expect("bincode")
            );
            let back: FinalStatus =
                bincode::deserialize(&bincode::serialize(&status).expect("bincode"))
                    .expect("decodes");
            assert_eq!(back, status);
        }
        assert!(serde_json::from_str::<FinalStatus>("\"done\"").is_err());
    }

    #[test]
    fn states_not_final_count_as_unknown() {
        let counts = FinalCounts::from_states(
            5,
            [
                (ItemState::Completed, 2),
                (ItemState::Pending, 1),
                (ItemState::Unknown, 1),
                (ItemState::Canceled, 1),
            ],
        );
        assert_eq!(counts.unknown, 2);
        assert_eq!(counts.completed, 2);
        assert_eq!(
            counts.nonzero(),
            [
                (ItemState::Completed, 2),
                (ItemState::Canceled, 1),
                (ItemState::Unknown, 2)
            ]
        );
    }
}
