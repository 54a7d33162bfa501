//! Items in blocks (store format 3): the items of a manifest are stored 25 consecutive
//! indices to a key, `B` manifest_id:u64 block:u32 with block = index / 25, the value a
//! [`StoredBlock`] holding the block's items sorted by index.
//!
//! One key per block rather than per item is what makes a 100,000-item intake cheap:
//! sled copies a leaf's data on every insert, so 4,000 inserts cost far less than
//! 100,000. It is a storage grouping only: requests still carry items one at a time or in
//! chunks, and every access goes through [`Store`] and [`super::Txn`], which read and write
//! whole blocks under the writer's lock.
//!
//! Format 2 kept one key per item (`I` manifest_id:u64 index:u32, a [`StoredItem`]); such
//! records (version 1 or 2) are regrouped into blocks when the store opens (and after a
//! backup of an older store is restored): each block is written and its `I` keys removed
//! in one atomic batch, so a crash halfway leaves every item in exactly one layout and the
//! next open finishes the job. Nothing reads `I` keys but the migration.

use serde::{Deserialize, Serialize};

use super::{decode, encode, prefixed, prefixed_pair, Store, StoreError, StoredItem};
use crate::state::item::ItemRecord;

/// Consecutive item indices stored under one key.
pub const ITEMS_PER_BLOCK: u32 = 25;

/// Items regrouped per batch by the migration (whole blocks; about this many).
const MIGRATION_SLICE: usize = 2_000;

/// A block of items as stored. `V1` holds today's [`ItemRecord`] (item layout version 2);
/// shipped variants never change: a new item layout gets a new variant.
#[derive(Serialize, Deserialize)]
pub enum StoredBlock {
    V1(Vec<ItemRecord>),
}

/// The same bytes as [`StoredBlock`], encoded from a borrowed slice (no copy of the items).
#[derive(Serialize)]
enum StoredBlockRef<'a> {
    V1(&'a [ItemRecord]),
}

pub(super) fn block_of(index: u32) -> u32 {
    index / ITEMS_PER_BLOCK
}

pub(super) fn block_key(manifest_id: u64, block: u32) -> [u8; 13] {
    prefixed_pair(b'B', manifest_id, block)
}

/// The manifest id and number (block or item index) of a 13-byte pair key.
pub(super) fn split_pair_key(key: &[u8]) -> Result<(u64, u32), StoreError> {
    let malformed = || StoreError::BadKey {
        key: super::hex(key),
    };
    if key.len() != 13 {
        return Err(malformed());
    }
    let id: [u8; 8] = key[1..9].try_into().map_err(|_| malformed())?;
    let n: [u8; 4] = key[9..13].try_into().map_err(|_| malformed())?;
    Ok((u64::from_be_bytes(id), u32::from_be_bytes(n)))
}

pub(super) fn encode_block(items: &[ItemRecord]) -> Result<Vec<u8>, StoreError> {
    encode(&StoredBlockRef::V1(items))
}

pub(super) fn decode_block(key: &[u8], bytes: &[u8]) -> Result<Vec<ItemRecord>, StoreError> {
    let StoredBlock::V1(items) = decode(key, bytes)?;
    Ok(items)
}

/// Puts `item` into a block sorted by index, replacing the item of the same index.
pub(super) fn put_in_block(block: &mut Vec<ItemRecord>, item: ItemRecord) {
    match block.binary_search_by_key(&item.index, |i| i.index) {
        Ok(at) => block[at] = item,
        Err(at) => block.insert(at, item),
    }
}

/// `later`'s items put into `block` (a later item replaces one of the same index).
pub(super) fn merge_blocks(mut block: Vec<ItemRecord>, later: Vec<ItemRecord>) -> Vec<ItemRecord> {
    if block.is_empty() {
        return later;
    }
    for item in later {
        put_in_block(&mut block, item);
    }
    block
}

impl Store {
    /// The items of one block (empty when it has none).
    pub(super) fn block(&self, manifest_id: u64, block: u32) -> Result<Vec<ItemRecord>, StoreError> {
        let key = block_key(manifest_id, block);
        match self.tree.get(key)? {
            Some(bytes) => decode_block(&key, &bytes),
            None => Ok(Vec::new()),
        }
    }

    /// The stored blocks `from..to` of a manifest, in order, with their numbers.
    pub(super) fn blocks_range(
        &self,
        manifest_id: u64,
        from: u32,
        to: u32,
    ) -> Result<Vec<(u32, Vec<ItemRecord>)>, StoreError> {
        let mut out = Vec::new();
        let start = block_key(manifest_id, from);
        let end = block_key(manifest_id, to);
        for entry in self.tree.range(start..end) {
            let (key, bytes) = entry?;
            let (_, block) = split_pair_key(&key)?;
            out.push((block, decode_block(&key, &bytes)?));
        }
        Ok(out)
    }

    /// Every item of a manifest, in order.
    pub(super) fn all_blocks(&self, manifest_id: u64) -> Result<Vec<ItemRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(prefixed(b'B', manifest_id)) {
            let (key, bytes) = entry?;
            out.extend(decode_block(&key, &bytes)?);
        }
        Ok(out)
    }

    /// Regroups every per-item record of format 2 (`I` keys, item version 1 or 2) into
    /// blocks, block by block: each block is written and its `I` keys removed in one
    /// atomic batch. Returns how many items moved. Runs before anything reads the store
    /// (at open, and after a restore).
    pub(super) fn migrate_items_to_blocks(&self) -> Result<u64, StoreError> {
        let mut regrouping = Regrouping::default();
        for entry in self.tree.scan_prefix([b'I']) {
            let (key, bytes) = entry?;
            let (id, index) = split_pair_key(&key)?;
            let group = (id, block_of(index));
            if regrouping.group != Some(group) {
                regrouping.close_group(self)?;
                regrouping.group = Some(group);
            }
            let item = decode::<StoredItem>(&key, &bytes)?.current()?;
            regrouping.items.push(item);
            regrouping.keys.push(key);
        }
        regrouping.close_group(self)?;
        if regrouping.in_batch > 0 {
            self.tree.apply_batch(std::mem::take(&mut regrouping.batch))?;
        }
        if regrouping.moved > 0 {
            self.db.flush()?;
        }
        Ok(regrouping.moved)
    }
}

/// The migration's progress: the block being gathered and the batch being filled.
#[derive(Default)]
struct Regrouping {
    group: Option<(u64, u32)>,
    items: Vec<ItemRecord>,
    keys: Vec<sled::IVec>,
    batch: sled::Batch,
    in_batch: usize,
    moved: u64,
}

impl Regrouping {
    /// Puts the gathered block into the batch (merged with a block already stored under
    /// its key, if any), removes its `I` keys in the same batch, and applies the batch
    /// once it holds a slice's worth.
    fn close_group(&mut self, store: &Store) -> Result<(), StoreError> {
        let Some((id, block)) = self.group.take() else {
            return Ok(());
        };
        let mut items = std::mem::take(&mut self.items);
        items.sort_by_key(|i| i.index);
        let count = items.len();
        let merged = merge_blocks(store.block(id, block)?, items);
        self.batch
            .insert(&block_key(id, block)[..], encode_block(&merged)?);
        for key in self.keys.drain(..) {
            self.batch.remove(key);
        }
        self.in_batch += count;
        self.moved += count as u64;
        if self.in_batch >= MIGRATION_SLICE {
            store.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.in_batch = 0;
        }
        Ok(())
    }
}
