//! The records as stored: the manifest's record, the versioned enums every value is
//! encoded in (bincode 1.3.3, `bincode::serialize`, fixed-width integers, forever; shipped
//! variants never change), and the keys they are stored under (integers big-endian, so
//! that byte order is numeric order).

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::manifest::{ManifestKind, TopFields};
use crate::schedule::{GenerationTimes, TemplateProof, TentPollRecord};
use crate::state::control::{Control, ControlEffect, ControlEvent};
use crate::state::item::{ItemRecord, ItemState};
use crate::state::job::JobRecord;
use crate::state::manifest::ItemCounts;

/// A manifest as stored ([`StoredManifest::V2`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub id: u64,
    /// NAME, with its `~N` suffix when the name was used before.
    pub name: String,
    /// The file name it had in the inbox.
    pub inbox_file: String,
    pub kind: ManifestKind,
    pub received_at_ms: u64,
    /// Set once every item is final (the result file then follows).
    pub finished_at_ms: Option<u64>,
    pub sha256: [u8; 32],
    /// The top-level fields other than `kind` and `items`, parsed once at intake.
    pub top: TopFields,
    /// The same fields exactly as given, as JSON text, for the retry manifest.
    pub top_given: String,
    pub item_count: u32,
    /// Items rejected by validation (they count as `rejected` but had no API answer).
    pub local_rejections: u32,
    /// Why the manifest as a whole was rejected (then it has no items).
    pub rejection: Option<String>,
    /// Private: only [`ManifestRecord::apply_control`] moves it.
    pub(super) control: Control,
    /// Set by `resume`: the failure threshold no longer pauses this manifest. Private:
    /// set only by the control machine's effect.
    pub(super) threshold_overridden: bool,
    /// While credits are short: when sending tries again.
    pub credit_retry_at_ms: Option<u64>,
    pub next_job_seq: u32,
    /// Chunks below this number have all been taken for sending once.
    pub next_chunk: u32,
    /// Items by [`ItemState`].
    /// Private: kept true by [`Txn::apply`] and [`super::NewManifest::insert_item`].
    pub(super) counts: ItemCounts,
    /// The file has left the inbox for the archive.
    pub archived: bool,
    pub result_written: bool,
}

/// Where [`ManifestRecord::move_chunk_cursor`] moves the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkCursor {
    Next,
    BackTo(u32),
}

/// What intake knows of a manifest when it records it.
pub struct Received {
    pub id: u64,
    pub name: String,
    pub inbox_file: String,
    pub kind: ManifestKind,
    pub received_at_ms: u64,
    pub sha256: [u8; 32],
    pub top: TopFields,
    pub top_given: String,
    pub item_count: u32,
    pub rejection: Option<String>,
}

impl ManifestRecord {
    /// A manifest just taken from the inbox: running, nothing sent, nothing counted yet.
    pub fn received(r: Received) -> ManifestRecord {
        ManifestRecord {
            id: r.id,
            name: r.name,
            inbox_file: r.inbox_file,
            kind: r.kind,
            received_at_ms: r.received_at_ms,
            finished_at_ms: None,
            sha256: r.sha256,
            top: r.top,
            top_given: r.top_given,
            item_count: r.item_count,
            local_rejections: 0,
            rejection: r.rejection,
            control: Control::Running,
            threshold_overridden: false,
            credit_retry_at_ms: None,
            next_job_seq: 0,
            next_chunk: 0,
            counts: ItemCounts::default(),
            archived: false,
            result_written: false,
        }
    }

    pub fn threshold_overridden(&self) -> bool {
        self.threshold_overridden
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Applies a control event through the machine of [`Control`] and its effect on the
    /// record's other fields. Returns whether anything changed.
    pub fn apply_control(&mut self, event: ControlEvent) -> bool {
        let Some((next, effect)) = self.control.next(event) else {
            return false;
        };
        self.control = next;
        match effect {
            Some(ControlEffect::OverrideThreshold) => self.threshold_overridden = true,
            Some(ControlEffect::ClearCreditRetry) => self.credit_retry_at_ms = None,
            None => {}
        }
        true
    }

    /// Test support: a record with these counts, bypassing the store.
    #[cfg(test)]
    pub(crate) fn with_count(mut self, state: ItemState, n: u32) -> ManifestRecord {
        self.counts.set(state, n);
        self
    }

    pub fn count(&self, state: ItemState) -> u32 {
        self.counts.get(state)
    }

    pub fn unfinished(&self) -> u32 {
        ItemState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| self.count(*s))
            .sum()
    }

    /// Records that every item is final, at `now_ms` (once): the result file follows.
    /// Returns whether it did now.
    pub fn finish(&mut self, now_ms: u64) -> bool {
        if self.finished_at_ms.is_some() || self.unfinished() > 0 {
            return false;
        }
        self.finished_at_ms = Some(now_ms);
        true
    }

    /// Records that the file has left the inbox for the archive. Returns whether it did now.
    pub fn archive(&mut self) -> bool {
        !std::mem::replace(&mut self.archived, true)
    }

    /// Records that the result files are written (once, after [`ManifestRecord::finish`]).
    /// Returns whether it did now.
    pub fn mark_result_written(&mut self) -> bool {
        if self.result_written {
            return false;
        }
        debug_assert!(self.finished_at_ms.is_some(), "a result before the finish");
        self.result_written = true;
        true
    }

    /// The sequence number of the manifest's next request, taken.
    pub fn take_job_seq(&mut self) -> u32 {
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        seq
    }

    /// The chunk cursor moves on (the chunk under it has nothing more to send), or back
    /// to `chunk` (a chunk that goes again).
    pub fn move_chunk_cursor(&mut self, to: ChunkCursor) {
        match to {
            ChunkCursor::Next => self.next_chunk += 1,
            ChunkCursor::BackTo(chunk) => self.next_chunk = self.next_chunk.min(chunk),
        }
    }

    /// When sending tries again after Tented ran out of credits (`None`: not waiting).
    pub fn set_credit_retry(&mut self, at_ms: Option<u64>) {
        self.credit_retry_at_ms = at_ms;
    }

    pub fn file_name(&self) -> String {
        format!("{}.json", self.name)
    }
}

#[derive(Serialize, Deserialize)]
pub enum StoredGenerationTimes {
    V1(GenerationTimes),
}

#[derive(Serialize, Deserialize)]
pub enum StoredTemplateProof {
    V1(TemplateProof),
}

#[derive(Serialize, Deserialize)]
pub enum StoredTentPoll {
    V1(TentPollRecord),
}

/// A record version written only by development builds before store format 3, the first
/// release's baseline. Never read: a store that could hold one is refused when it opens
/// ([`StoreError::Older`]). The variant keeps its place so that the versions after it keep
/// their encoding (bincode writes a variant's index).
#[derive(Debug, Serialize, Deserialize)]
pub enum Retired {}

// Decoded and converted at once, never kept: the size of its variants is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum StoredManifest {
    V1(Retired),
    V2(ManifestRecord),
}

// Decoded and converted at once, never kept: the size of its variants is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum StoredItem {
    V1(Retired),
    V2(ItemRecord),
}

impl StoredManifest {
    pub(super) fn current(self) -> ManifestRecord {
        match self {
            StoredManifest::V1(retired) => match retired {},
            StoredManifest::V2(record) => record,
        }
    }
}

impl StoredItem {
    pub(super) fn current(self) -> ItemRecord {
        match self {
            StoredItem::V1(retired) => match retired {},
            StoredItem::V2(record) => record,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub enum StoredJob {
    V1(JobRecord),
}

pub(super) fn manifest_key(id: u64) -> [u8; 9] {
    prefixed(b'M', id)
}

pub(super) fn item_key(id: u64, index: u32) -> [u8; 13] {
    prefixed_pair(b'I', id, index)
}

pub(super) fn job_key(id: u64, seq: u32) -> [u8; 13] {
    prefixed_pair(b'J', id, seq)
}

/// `prefix`, a manifest id and a number of that manifest (an item index, a job seq).
pub(super) fn prefixed_pair(prefix: u8, id: u64, n: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..9].copy_from_slice(&prefixed(prefix, id));
    key[9..].copy_from_slice(&n.to_be_bytes());
    key
}

pub(super) fn prefixed(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

pub(super) fn name_key(name: &str) -> Vec<u8> {
    let mut key = vec![b'N'];
    key.extend_from_slice(name.as_bytes());
    key
}

pub(super) fn generation_key(key: &str) -> Vec<u8> {
    let mut out = vec![b'G'];
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn proof_key(key: &str) -> Vec<u8> {
    let mut out = vec![b'P'];
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn tent_key(tent_id: &str) -> Vec<u8> {
    let mut key = vec![b'T'];
    key.extend_from_slice(tent_id.as_bytes());
    key
}

pub(super) fn hash_key(hash: &[u8; 32]) -> Vec<u8> {
    let mut key = vec![b'H'];
    key.extend_from_slice(hash);
    key
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(value).map_err(StoreError::Encode)
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(&key[..1]).into_owned() + &hex(&key[1..]),
        source,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn read_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}
