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
    pub(super) fn block(
        &self,
        manifest_id: u64,
        block: u32,
    ) -> Result<Vec<ItemRecord>, StoreError> {
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
            self.tree
                .apply_batch(std::mem::take(&mut regrouping.batch))?;
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

#[cfg(test)]
mod tests {
    use super::super::{
        client_prefix, item_key, received_for_test, ManifestKind, ManifestRecord, Received,
        TopFields,
    };
    use super::*;
    use crate::state::item::{ItemEvent, ItemState};

    fn pending(id: u64, index: u32) -> ItemRecord {
        ItemRecord::pending(
            id,
            index,
            format!("c-{index}"),
            format!("{{\"client_item_id\": \"c-{index}\"}}"),
            Default::default(),
        )
    }

    /// A store closed and opened again (sled lets go of the folder's lock a moment after
    /// the last handle is dropped).
    fn reopen(path: &std::path::Path) -> Store {
        let started = std::time::Instant::now();
        loop {
            match Store::open(path) {
                Err(StoreError::Locked { .. })
                    if started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.expect("reopens"),
            }
        }
    }

    /// A manifest record with no items, committed; its items are then written by hand.
    async fn empty_manifest(store: &Store, name: &str, items: u32) -> u64 {
        let id = store.new_manifest_id().expect("an id");
        let writer = store.writer().await;
        let txn = writer.create(received_for_test(id, name, items));
        txn.commit().await.expect("commit");
        id
    }

    /// Items as store format 2 wrote them: one `I` key each, and one `C` key each in the
    /// client index.
    fn write_format_2(store: &Store, id: u64, indices: std::ops::Range<u32>) -> Vec<ItemRecord> {
        let items: Vec<ItemRecord> = indices.map(|i| pending(id, i)).collect();
        for item in &items {
            let mut client_key = client_prefix(&item.client_item_id);
            client_key.extend_from_slice(&id.to_be_bytes());
            client_key.extend_from_slice(&item.index.to_be_bytes());
            store.tree.insert(client_key, &[][..]).expect("insert");
            store
                .tree
                .insert(
                    item_key(id, item.index),
                    encode(&StoredItem::V2(item.clone())).expect("encode"),
                )
                .expect("insert");
        }
        items
    }

    #[test]
    fn a_borrowed_block_encodes_to_the_bytes_of_a_stored_block() {
        let items = vec![pending(1, 0), pending(1, 1)];
        let owned = encode(&StoredBlock::V1(items.clone())).expect("encode");
        assert_eq!(encode_block(&items).expect("encode"), owned);
        assert_eq!(decode_block(b"B", &owned).expect("decode"), items);
    }

    #[tokio::test]
    async fn a_format_2_store_half_migrated_by_a_crash_opens_with_every_item_in_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, before);
        {
            let store = Store::open(dir.path()).expect("opens");
            a = empty_manifest(&store, "a", 60).await;
            b = empty_manifest(&store, "b", 3).await;
            let mut items = write_format_2(&store, a, 0..60);
            items.extend(write_format_2(&store, b, 0..3));
            // The state a crash leaves after the migration's first batch: block 0 of `a`
            // written as a block, its `I` keys gone, the rest still per item.
            let first: Vec<ItemRecord> = items[..25].to_vec();
            store
                .tree
                .insert(block_key(a, 0), encode_block(&first).expect("encode"))
                .expect("insert");
            for index in 0..25 {
                store.tree.remove(item_key(a, index)).expect("remove");
            }
            assert_eq!(
                store
                    .record_versions()
                    .expect("versions")
                    .get("item v2 (format 2 key)"),
                Some(&38)
            );
            before = items;
        }
        let store = reopen(dir.path());
        let versions = store.record_versions().expect("versions");
        assert_eq!(
            versions.into_iter().collect::<Vec<_>>(),
            vec![
                ("block v1", 4),
                ("item v2 (in blocks)", 63),
                ("manifest v2", 2)
            ],
            "every item in blocks, no per-item key left"
        );
        let mut after = store.items(a).expect("reads");
        assert_eq!(store.items_range(a, 20, 30).expect("reads"), before[20..30]);
        after.extend(store.items(b).expect("reads"));
        assert_eq!(after, before);
        // The migrated items go on through transactions.
        let writer = store.writer().await;
        let mut txn = writer.begin(a).expect("begin");
        txn.apply(59, ItemEvent::SendIntent { job_seq: 0 })
            .expect("apply");
        txn.commit().await.expect("commit");
        assert_eq!(
            store.item(a, 59).expect("reads").map(|i| i.state()),
            Some(ItemState::Sending)
        );
        assert_eq!(store.item(a, 60).expect("reads"), None);
        // The client index too: no `C` key left, every id found in its bucket.
        let (format_2_keys, buckets) = store.client_index_keys();
        assert_eq!(format_2_keys, 0);
        assert!(buckets > 3, "{buckets} buckets");
        assert_eq!(
            store.items_with_client_id("c-2").expect("reads"),
            [(a, 2), (b, 2)]
        );
        assert_eq!(
            store.items_with_client_id("c-59").expect("reads"),
            [(a, 59)]
        );
        assert!(store
            .items_with_client_id("c-60")
            .expect("reads")
            .is_empty());
    }

    #[tokio::test]
    async fn a_transaction_reads_its_own_changes_and_writes_each_block_it_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let id = store.new_manifest_id().expect("an id");
        let writer = store.writer().await;
        let mut txn = writer.create(received_for_test(id, "m", 60));
        for index in 0..60 {
            txn.insert_item(pending(id, index)).expect("insert");
        }
        txn.commit().await.expect("commit");
        assert_eq!(
            store.record_versions().expect("v").get("block v1"),
            Some(&3)
        );

        let mut txn = writer.begin(id).expect("begin");
        for index in [24, 25, 26] {
            txn.apply(index, ItemEvent::SendIntent { job_seq: 1 })
                .expect("apply");
        }
        txn.annotate(26, |i| i.tent_name = Some("t".into()))
            .expect("annotate");
        let seen: Vec<ItemState> = txn
            .items_range(23, 28)
            .expect("reads")
            .iter()
            .map(|i| i.state())
            .collect();
        use ItemState::{Pending as P, Sending as S};
        assert_eq!(seen, [P, S, S, S, P]);
        assert_eq!(txn.item(26).expect("reads").tent_name.as_deref(), Some("t"));
        assert!(matches!(
            txn.item(60),
            Err(StoreError::NoItem { index: 60, .. })
        ));
        // Not committed: the store has not changed.
        assert_eq!(
            store.item(id, 25).expect("reads").map(|i| i.state()),
            Some(P)
        );
        let record = txn.commit().await.expect("commit");
        assert_eq!((record.count(P), record.count(S)), (57, 3));
        let states: Vec<ItemState> = store
            .items(id)
            .expect("reads")
            .iter()
            .map(|i| i.state())
            .collect();
        assert_eq!(states.len(), 60);
        assert_eq!(states.iter().filter(|s| **s == S).count(), 3);
        assert_eq!(states[23..28], [P, S, S, S, P]);
        assert_eq!(
            store.item(id, 26).expect("reads").and_then(|i| i.tent_name),
            Some("t".into())
        );
    }

    #[tokio::test]
    async fn a_new_manifests_items_in_any_order_and_over_several_slices_are_all_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let id = store.new_manifest_id().expect("an id");
        let writer = store.writer().await;
        let count = 2 * super::super::NEW_MANIFEST_SLICE as u32 + 30;
        let mut txn = writer.create(ManifestRecord::received(Received {
            id,
            name: "big".into(),
            inbox_file: "big.json".into(),
            kind: ManifestKind::Bulk,
            received_at_ms: 1,
            sha256: [1; 32],
            top: TopFields::default(),
            top_given: "{}".into(),
            item_count: count,
            rejection: None,
        }));
        // Odd indices first, then even ones: every block is written by two slices.
        for index in (1..count).step_by(2).chain((0..count).step_by(2)) {
            txn.insert_item(pending(id, index)).expect("insert");
        }
        txn.commit().await.expect("commit");
        let items = store.items(id).expect("reads");
        let indices: Vec<u32> = items.iter().map(|i| i.index).collect();
        assert_eq!(indices, (0..count).collect::<Vec<_>>());
        assert_eq!(
            store.record_versions().expect("v").get("block v1"),
            Some(&(count as u64).div_ceil(25))
        );
    }
}
