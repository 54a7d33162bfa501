//! What stays of a manifest forever: its one-line summary (SPEC section 8, retention).
//!
//! When `retention.store` has passed since a manifest finished, its items, requests and
//! poll records leave the store ([`super::prune`]). What stays is small and never
//! changes again: the summary under `S` manifest_id (name, kind, final status, counts,
//! times, sha256), beside the name index `N` (so the NAME is never reused) and the hash
//! index `H` (so a second drop of the same bytes is still refused).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, manifest_key, prefixed, read_u64, ManifestRecord, Store, StoreError};
use crate::manifest::ManifestKind;
use crate::state::item::ItemState;
use crate::state::manifest::{FinalCounts, FinalStatus};

/// The one-line summary of a pruned manifest (version 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSummary {
    pub id: u64,
    pub name: String,
    pub kind: ManifestKind,
    /// The manifest's final status (stored as its word).
    pub status: FinalStatus,
    pub counts: FinalCounts,
    pub received_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub pruned_at_ms: u64,
    pub sha256: [u8; 32],
}

/// A summary as stored; shipped variants never change.
#[derive(Serialize, Deserialize)]
pub enum StoredSummary {
    V1(ManifestSummary),
}

/// A manifest as the history (`list`) sees it: still whole, or pruned to its summary.
#[derive(Clone, Debug)]
pub enum HistoryEntry {
    Whole(Box<ManifestRecord>),
    Pruned(ManifestSummary),
}

impl HistoryEntry {
    pub fn id(&self) -> u64 {
        match self {
            HistoryEntry::Whole(m) => m.id,
            HistoryEntry::Pruned(s) => s.id,
        }
    }
}

pub(super) fn summary_key(id: u64) -> [u8; 9] {
    prefixed(b'S', id)
}

impl ManifestRecord {
    /// Its items by final status, from the record's counts (items not final yet count as
    /// `unknown`, as in the result file).
    pub fn final_counts(&self) -> FinalCounts {
        FinalCounts::from_states(
            self.item_count,
            ItemState::ALL.map(|state| (state, self.count(state))),
        )
    }

    /// The manifest's final status, as its result file gives it (the one rule, read from
    /// the record's counts).
    pub fn final_status(&self) -> FinalStatus {
        FinalStatus::from_counts(self.rejection.is_some(), &self.final_counts())
    }

    /// Its summary, as pruning keeps it.
    pub fn summary(&self, pruned_at_ms: u64) -> ManifestSummary {
        ManifestSummary {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            status: self.final_status(),
            counts: self.final_counts(),
            received_at_ms: self.received_at_ms,
            finished_at_ms: self.finished_at_ms,
            pruned_at_ms,
            sha256: self.sha256,
        }
    }
}

impl Store {
    /// The summary of a pruned manifest (or of one being pruned).
    pub fn summary(&self, id: u64) -> Result<Option<ManifestSummary>, StoreError> {
        let key = summary_key(id);
        match self.tree.get(key)? {
            Some(bytes) => {
                let StoredSummary::V1(summary) = decode(&key, &bytes)?;
                Ok(Some(summary))
            }
            None => Ok(None),
        }
    }

    /// Whether any manifest has been pruned (or is being pruned).
    pub fn any_pruned(&self) -> Result<bool, StoreError> {
        Ok(self.tree.scan_prefix([b'S']).next().transpose()?.is_some())
    }

    /// The newest `limit` manifests, newest first, whole or pruned. A manifest whose
    /// pruning has begun (its summary is written) is shown pruned.
    pub fn newest_first(&self, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        self.newest_first_except(limit, |_| false)
    }

    /// [`Store::newest_first`] without the manifests whose id `skip` names: they are
    /// passed over by their key, never decoded, so that the status page, which leaves out
    /// the manifests in flight, reads at most `limit` records of each kind (whole and
    /// pruned) however many are in flight.
    pub fn newest_first_except(
        &self,
        limit: usize,
        skip: impl Fn(u64) -> bool,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let kept = |key: &[u8]| !key.get(1..).and_then(read_u64).is_some_and(&skip);
        // The newest `limit` of the union are among the newest `limit` of each prefix.
        let mut entries: BTreeMap<u64, HistoryEntry> = BTreeMap::new();
        let mut whole = 0;
        for entry in self.tree.scan_prefix([b'M']).rev() {
            if whole == limit {
                break;
            }
            let (key, bytes) = entry?;
            if !kept(&key) {
                continue;
            }
            let record = decode::<super::StoredManifest>(&key, &bytes)?.current();
            entries.insert(record.id, HistoryEntry::Whole(Box::new(record)));
            whole += 1;
        }
        let mut pruned = 0;
        for entry in self.tree.scan_prefix([b'S']).rev() {
            if pruned == limit {
                break;
            }
            let (key, bytes) = entry?;
            if !kept(&key) {
                continue;
            }
            let StoredSummary::V1(summary) = decode(&key, &bytes)?;
            // A manifest being pruned has both: its summary is what it is now.
            entries.insert(summary.id, HistoryEntry::Pruned(summary));
            pruned += 1;
        }
        Ok(entries.into_values().rev().take(limit).collect())
    }

    /// Whether the manifest `id` exists, whole or as a summary (the marker check).
    pub(super) fn manifest_ever_recorded(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(manifest_key(id))? || self.tree.contains_key(summary_key(id))?)
    }
}
