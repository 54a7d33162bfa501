//! A new manifest's items as intake wrote them: 25 to a key (`F`), written once and never
//! rewritten, and its `client_item_id` index in 4,096 hash buckets (`K`), also written
//! once. An item's own record (`I`) is written the first time it changes, and from then on
//! is the item; an item without one is still exactly as intake wrote it.
//!
//! A block keeps what intake knows of an item (its text as given, and why it was rejected
//! locally, if it was), not its whole record: a pending item's typed fields are parsed
//! again from its text when it is read, by the same function that typed it at intake.
//!
//! Why: a 100,000-item manifest is 4,000 blocks and a few thousand buckets instead of
//! 200,000 keys, about half the bytes of whole records, which is what lets intake take it
//! in under a second (SPEC section 7).
//! Why written once: sled 0.34 does not give back the log space of large values that are
//! rewritten (a block rewritten at every transition of one of its items made the store grow
//! without bound under pruning), while values written once and removed once, and small
//! records rewritten in place, level off (measured by the soak test).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{decode, encode, prefixed_pair, StoreError};
use crate::manifest::ItemFields;
use crate::state::error_code::ErrorCode;
use crate::state::item::{ItemRecord, ItemState, RejectedBy};

/// Items per block: a bulk request's size, so a chunk is read from one block.
pub(super) const BLOCK: u32 = 25;

/// Buckets of the `client_item_id` index, per manifest.
pub(super) const BUCKETS: u16 = 4096;

/// `F` manifest_id:u64 block:u32, block = index / 25.
pub(super) fn block_key(manifest_id: u64, block: u32) -> [u8; 13] {
    prefixed_pair(b'F', manifest_id, block)
}

/// `K` bucket:u16 manifest_id:u64: one manifest's client ids in one bucket.
pub(super) fn bucket_key(bucket: u16, manifest_id: u64) -> [u8; 11] {
    let mut key = [0u8; 11];
    key[0] = b'K';
    key[1..3].copy_from_slice(&bucket.to_be_bytes());
    key[3..].copy_from_slice(&manifest_id.to_be_bytes());
    key
}

/// The bucket of a client id: FNV-1a, fixed forever (the buckets on disk depend on it).
pub(super) fn bucket_of(client_item_id: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_item_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(BUCKETS)) as u16
}

/// A block: its items in index order, as intake wrote them.
#[derive(Serialize, Deserialize)]
pub enum StoredBlock {
    V1(Vec<IntakeItem>),
}

/// An item as intake wrote it: pending, or rejected locally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntakeItem {
    pub index: u32,
    pub client_item_id: String,
    /// The item exactly as given, as JSON text.
    pub given: String,
    /// Why it was rejected locally; `None`: pending.
    pub rejection: Option<String>,
    /// For edits: the tent to edit, resolved at intake.
    pub target_tent_id: Option<String>,
}

impl IntakeItem {
    /// What a block keeps of a record just made by intake (moved, not copied); any other
    /// record is given back (it is then written as an item record of its own).
    pub(super) fn of(mut item: ItemRecord) -> Result<IntakeItem, Box<ItemRecord>> {
        let untouched = item.job_seq.is_none()
            && item.tent_id.is_none()
            && item.tent_name.is_none()
            && item.bulk_job_id.is_none()
            && item.generation_id.is_none()
            && item.generation_status.is_none()
            && item.publication.is_none();
        if !untouched {
            return Err(Box::new(item));
        }
        let rejection = match item.state() {
            ItemState::Pending
                if item.fields.is_some()
                    && item.rejected_by.is_none()
                    && item.error_code.is_none()
                    && item.message.is_none() =>
            {
                None
            }
            ItemState::Rejected
                if item.fields.is_none()
                    && item.rejected_by == Some(RejectedBy::Local)
                    && item.error_code == Some(ErrorCode::InvalidItem)
                    && item.message.is_some() =>
            {
                item.message.take()
            }
            _ => return Err(Box::new(item)),
        };
        Ok(IntakeItem {
            index: item.index,
            client_item_id: item.client_item_id,
            given: item.given,
            rejection,
            target_tent_id: item.target_tent_id,
        })
    }

    /// The state of [`IntakeItem::record`], without parsing the item.
    pub(super) fn state(&self) -> ItemState {
        match self.rejection {
            Some(_) => ItemState::Rejected,
            None => ItemState::Pending,
        }
    }

    /// The record again: a pending item's fields parsed from its text as at intake.
    pub(super) fn record(self, manifest_id: u64) -> Result<ItemRecord, StoreError> {
        let mut record = match self.rejection {
            Some(message) => ItemRecord::rejected_locally(
                manifest_id,
                self.index,
                self.client_item_id,
                self.given,
                message,
            ),
            None => {
                let fields = fields_of(&self.given).map_err(|detail| StoreError::IntakeItem {
                    manifest_id,
                    index: self.index,
                    detail,
                })?;
                ItemRecord::pending(
                    manifest_id,
                    self.index,
                    self.client_item_id,
                    self.given,
                    fields,
                )
            }
        };
        record.target_tent_id = self.target_tent_id;
        Ok(record)
    }
}

/// A pending item's typed fields from its text, exactly as intake typed them (the text
/// parsed as a JSON value first, then typed).
fn fields_of(given: &str) -> Result<ItemFields, String> {
    let value: serde_json::Value = serde_json::from_str(given).map_err(|e| e.to_string())?;
    ItemFields::from_validated(&value).map_err(|e| e.to_string())
}

/// A bucket: (client_item_id, index) of one manifest's items in it.
#[derive(Serialize, Deserialize)]
pub enum StoredBucket {
    V1(Vec<(String, u32)>),
}

/// A block's items as intake wrote them.
pub(super) fn decode_block(key: &[u8], bytes: &[u8]) -> Result<Vec<IntakeItem>, StoreError> {
    let StoredBlock::V1(items) = decode(key, bytes)?;
    Ok(items)
}

pub(super) fn decode_bucket(key: &[u8], bytes: &[u8]) -> Result<Vec<(String, u32)>, StoreError> {
    let StoredBucket::V1(entries) = decode(key, bytes)?;
    Ok(entries)
}

/// A new manifest's items and client ids, gathered into blocks and buckets as intake
/// hands them over; full blocks are written in slices, so the manifest is never held twice.
#[derive(Default)]
pub(super) struct NewItems {
    open: BTreeMap<u32, Vec<IntakeItem>>,
    full: Vec<(u32, Vec<IntakeItem>)>,
    full_items: usize,
    buckets: HashMap<u16, Vec<(String, u32)>>,
}

impl NewItems {
    /// An item as intake made it, in any order; a block is written once all 25 of its
    /// items are in (or at the end). Gives back a record intake would not have made.
    pub(super) fn add(&mut self, record: ItemRecord) -> Option<ItemRecord> {
        #[cfg(debug_assertions)]
        let (manifest_id, copy) = (record.manifest_id, record.clone());
        let item = match IntakeItem::of(record) {
            Ok(item) => item,
            Err(record) => return Some(*record),
        };
        // Every test run checks that a block gives back the record it was given.
        #[cfg(debug_assertions)]
        match item.clone().record(manifest_id) {
            Ok(again) => debug_assert_eq!(again, copy, "a block would not give the record back"),
            Err(e) => debug_assert!(false, "a block would not give the record back: {e}"),
        }
        let block = item.index / BLOCK;
        let items = self.open.entry(block).or_default();
        items.push(item);
        if items.len() == BLOCK as usize {
            if let Some(items) = self.open.remove(&block) {
                self.full_items += items.len();
                self.full.push((block, items));
            }
        }
        None
    }

    pub(super) fn index(&mut self, client_item_id: &str, index: u32) {
        self.buckets
            .entry(bucket_of(client_item_id))
            .or_default()
            .push((client_item_id.to_string(), index));
    }

    /// Items in full blocks not yet written.
    pub(super) fn full_items(&self) -> usize {
        self.full_items
    }

    /// Puts the full blocks into `batch` (every block, partial ones too, when `all`).
    pub(super) fn write_blocks(
        &mut self,
        manifest_id: u64,
        all: bool,
        writes: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut blocks = std::mem::take(&mut self.full);
        self.full_items = 0;
        if all {
            blocks.extend(std::mem::take(&mut self.open));
        }
        for (block, mut items) in blocks {
            items.sort_by_key(|item| item.index);
            writes.push((
                block_key(manifest_id, block).to_vec(),
                encode(&StoredBlock::V1(items))?,
            ));
        }
        Ok(())
    }

    /// The buckets gathered, to be merged with what the store holds for this manifest.
    pub(super) fn take_buckets(&mut self) -> HashMap<u16, Vec<(String, u32)>> {
        std::mem::take(&mut self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_of_a_client_id_never_changes() {
        // The index on disk depends on these values: a change would lose every edit target.
        assert_eq!(bucket_of(""), (0xcbf2_9ce4_8422_2325u64 % 4096) as u16);
        assert_eq!(bucket_of("crm-row-000001"), bucket_of("crm-row-000001"));
        let spread: std::collections::HashSet<u16> = (0..10_000)
            .map(|i| bucket_of(&format!("crm-row-{i:06}")))
            .collect();
        assert!(spread.len() > 3_500, "{} buckets used", spread.len());
        assert!(spread.iter().all(|b| *b < BUCKETS));
    }

    #[test]
    fn a_block_keeps_what_intake_made_and_gives_back_anything_else() {
        use crate::state::item::ItemEvent;
        let pending = crate::store::test_item(7, 3);
        let mut rejected =
            ItemRecord::rejected_locally(7, 4, "b".into(), "{}".into(), "bad".into());
        rejected.target_tent_id = Some("tent-1".into());
        for record in [pending.clone(), rejected] {
            let kept = IntakeItem::of(record.clone()).expect("intake made it");
            assert_eq!(kept.record(7).expect("reads back"), record);
        }
        let mut sending = pending;
        sending
            .apply(ItemEvent::SendIntent { job_seq: 0 })
            .expect("legal");
        assert_eq!(IntakeItem::of(sending.clone()), Err(Box::new(sending)));
        let mut new = NewItems::default();
        let mut annotated = crate::store::test_item(7, 5);
        annotated.tent_id = Some("tent-2".into());
        assert_eq!(new.add(annotated.clone()), Some(annotated));
    }

    #[test]
    fn blocks_fill_in_any_order_and_partial_ones_wait_for_the_end() {
        let mut new = NewItems::default();
        for index in (0..30).rev() {
            assert!(new.add(crate::store::test_item(7, index)).is_none());
        }
        assert_eq!(new.full_items(), 25);
        let mut writes = Vec::new();
        new.write_blocks(7, false, &mut writes).expect("encodes");
        assert_eq!(new.full_items(), 0);
        assert_eq!(writes.len(), 1, "one full block");
        assert_eq!(new.open.len(), 1, "items 25..30 wait for the end");
        new.write_blocks(7, true, &mut writes).expect("encodes");
        assert!(new.open.is_empty());
        assert_eq!(writes.len(), 2);
    }
}
