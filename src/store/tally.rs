//! What the store has seen finish since it was opened: items that reached a final state
//! and manifests that finished, counted as their commits become durable. The metrics'
//! `*_finished_total` counters read it, so they go on counting after a manifest leaves
//! the active set (and they start again from zero with the process, as counters do).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::item::ItemState;
use crate::state::manifest::{FinalStatus, ItemCounts};

#[derive(Debug, Default)]
pub struct Tally {
    items: [AtomicU64; ItemState::COUNT],
    manifests: [AtomicU64; FinalStatus::ALL.len()],
}

impl Tally {
    pub(super) fn add_items(&self, newly_final: &ItemCounts) {
        for (slot, (_, n)) in newly_final.iter().enumerate() {
            if n > 0 {
                self.items[slot].fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }

    pub(super) fn add_manifest(&self, status: FinalStatus) {
        if let Some(slot) = FinalStatus::ALL.iter().position(|s| *s == status) {
            self.manifests[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Items that reached each final state, as `(word, count)`, every final state listed.
    pub fn items_finished(&self) -> Vec<(&'static str, u64)> {
        ItemState::ALL
            .iter()
            .enumerate()
            .filter(|(_, state)| state.is_final())
            .map(|(slot, state)| (state.as_str(), self.items[slot].load(Ordering::Relaxed)))
            .collect()
    }

    /// Manifests that finished, by status, every status listed.
    pub fn manifests_finished(&self) -> Vec<(&'static str, u64)> {
        FinalStatus::ALL
            .iter()
            .enumerate()
            .map(|(slot, status)| {
                (
                    status.as_str(),
                    self.manifests[slot].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}
