//! The commit record `W`: a transaction's writes made atomic without a sled batch.
//!
//! sled 0.34's `apply_batch` makes a batch atomic by sealing its log buffer before and
//! after it (`PageCache::pin_log`): two writes of the log, each a `pwrite` and a
//! `sync_file_range` that waits for the disk, on sled's thread pool (whose every task wakes
//! all its idle threads). That was a fifth of the daemon's CPU with many small manifests,
//! on top of the sync that the commit pays anyway. A single `insert` only reserves room in
//! the current buffer, which the next sync writes once for every commit since the last.
//!
//! So a [`super::Txn`] that is not large is logged ([`apply_logged`]): all its writes, encoded
//! as one value, go first under the one key `W`, then each write on its own, the
//! manifest's record last. sled recovers a prefix of its log (it stops at the first torn
//! message, `LogIter::next`), so after a crash either none of the writes that follow a `W`
//! are there, or that `W` is there whole: [`Store::finish_cut_commit`], first thing at an
//! open, writes the last `W` again (the same values; a no-op when nothing was cut) and
//! removes it. `W` always holds the newest logged transaction: writers are serialised by
//! the writer's lock.
//!
//! The rule that keeps this true: **every other write to the tree removes `W` first**
//! (in its batch: [`forget_commit`]), so that an older `W` is never written again over
//! something newer. One exception, which cannot meet a `W`: a new manifest's blocks,
//! before its record ([`Store::insert_unreachable`]): keys no `W` holds or will hold, since
//! a `W` holds a transaction on a manifest already recorded, or a new one's keys other than
//! its blocks. Readers see a logged transaction's records one by one; the manifest's
//! record comes last, so whoever reads it new finds its items and jobs new too.

use super::{decode, encode, manifest_key, Store, StoreError};

/// The tree that holds `W` alone, in the store's sled database: sled copies a leaf at each
/// write to it, and `W`, some kilobytes rewritten at every commit, would make every write
/// to its neighbours copy them too. One log serves every tree, so the order holds across.
const COMMITS_TREE: &[u8] = b"commits";

/// `W`: the newest logged transaction's writes ([`StoredCommit`]).
pub(super) const COMMIT_KEY: &[u8] = b"W";

/// The largest transaction that is logged (keys and values, in bytes); a larger one (a
/// commit of hundreds of items) is a sled batch. Well under sled's inline limit (a
/// quarter of its 512 KiB segment), so `W` never becomes a blob file.
pub(super) const LOGGED_LIMIT: usize = 64 * 1024;

/// What `W` holds: the key and value of every write of one transaction, in order.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) enum StoredCommit {
    V1(Vec<(Vec<u8>, Vec<u8>)>),
}

/// [`StoredCommit`] borrowed, to encode without a copy (the same bytes).
#[derive(serde::Serialize)]
enum StoredCommitRef<'a> {
    V1(&'a [(Vec<u8>, Vec<u8>)]),
}

/// The bytes a transaction's writes add up to (for [`LOGGED_LIMIT`]).
pub(super) fn size_of(writes: &[(Vec<u8>, Vec<u8>)]) -> usize {
    writes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Writes a transaction as `W`, then each of its writes, then `manifest` (its id and
/// record) last.
pub(super) fn apply_logged(
    store: &Store,
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    manifest: (u64, Vec<u8>),
) -> Result<(), StoreError> {
    let (id, record) = manifest;
    let mut all = writes;
    all.push((manifest_key(id).to_vec(), record));
    store
        .commits()?
        .insert(COMMIT_KEY, encode(&StoredCommitRef::V1(&all))?)?;
    for (key, value) in all {
        store.tree.insert(key, value)?;
    }
    Ok(())
}

impl Store {
    /// The tree of `W`, looked up in the open database each time (a map lookup): a handle
    /// kept in [`Store`] could outlive a compaction's switch to a new database.
    fn commits(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(COMMITS_TREE)?)
    }

    /// Removes `W`: the first step of every write that is not a logged transaction (see
    /// the module's rule).
    pub(super) fn forget_commit(&self) -> Result<(), StoreError> {
        self.commits()?.remove(COMMIT_KEY)?;
        Ok(())
    }

    /// Writes records that nothing reaches until a later commit writes their manifest's
    /// record (a new manifest's blocks and item records): single inserts, neither a batch
    /// nor `W`. A crash leaves some of them behind, unreachable, which the next open
    /// removes ([`Store::remove_intake_leftovers`]); a record written after them finds
    /// them all, as sled recovers a prefix of its log.
    pub(super) fn insert_unreachable(
        &self,
        writes: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        for (key, value) in writes {
            if let Err(e) = self.tree.insert(key, value) {
                self.write_failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Applies a sled batch, `W` removed first.
    pub(super) fn apply_batch(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.forget_commit()?;
        Ok(self.tree.apply_batch(batch)?)
    }

    /// Writes again the transaction in `W`, if any, and removes it, synced: a transaction
    /// a crash cut short is whole again before anything reads the store. Returns how many
    /// records it wrote.
    pub(super) fn finish_cut_commit(&self) -> Result<usize, StoreError> {
        let Some(bytes) = self.commits()?.get(COMMIT_KEY)? else {
            return Ok(0);
        };
        let StoredCommit::V1(writes) = decode(COMMIT_KEY, &bytes)?;
        let mut batch = sled::Batch::default();
        let written = writes.len();
        for (key, value) in writes {
            batch.insert(key, value);
        }
        // Written whole before `W` goes: a crash in between writes it again at the next open.
        self.tree.apply_batch(batch)?;
        self.forget_commit()?;
        self.sync_blocking()?;
        Ok(written)
    }

    #[cfg(test)]
    pub(super) fn logged_commit(&self) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let bytes = self.commits().ok()?.get(COMMIT_KEY).ok()??;
        let StoredCommit::V1(writes) = decode(COMMIT_KEY, &bytes).ok()?;
        Some(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{committed_for_test, reopen, test_item};

    /// A store with one manifest of `items` items, committed.
    async fn store_with_manifest(dir: &std::path::Path, items: u32) -> (Store, u64) {
        let store = Store::open(dir).expect("open");
        let id = committed_for_test(&store, items).await;
        (store, id)
    }

    #[tokio::test]
    async fn a_logged_commit_leaves_its_record_and_a_batch_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, id) = store_with_manifest(dir.path(), 3).await;
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        txn.take_job_seq();
        txn.commit().await.expect("commit");
        let writes = store.logged_commit().expect("W is there");
        assert_eq!(
            writes.last().map(|(k, _)| k.clone()),
            Some(manifest_key(id).to_vec()),
            "the manifest's record is written last"
        );
        // A batch removes W, so that W is never written again over what it wrote.
        store.apply_batch(sled::Batch::default()).expect("batch");
        assert!(store.logged_commit().is_none());
    }

    #[tokio::test]
    async fn a_new_manifest_logs_all_but_its_items_which_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, id) = store_with_manifest(dir.path(), 3).await;
        let writes = store.logged_commit().expect("W is there");
        let keys: Vec<u8> = writes
            .iter()
            .filter_map(|(k, _)| k.first().copied())
            .collect();
        assert!(
            !keys.contains(&b'F') && !keys.contains(&b'I'),
            "no block or item in W: {keys:?}"
        );
        assert_eq!(
            writes.last().map(|(k, _)| k.clone()),
            Some(manifest_key(id).to_vec()),
            "the manifest's record is written last"
        );
        assert_eq!(
            store.items(id).expect("items").len(),
            3,
            "its items are there"
        );
        drop(store);
        let store = reopen(dir.path()).expect("reopens");
        assert_eq!(store.items(id).expect("items").len(), 3);
    }

    #[tokio::test]
    async fn a_new_manifest_cut_before_its_record_leaves_nothing_after_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let kept = committed_for_test(&store, 2).await;
        // What a crash leaves of a new manifest: its items, written before its record.
        let cut = store.new_manifest_id().expect("id");
        let mut items = super::super::blocks::NewItems::default();
        for index in 0..3 {
            let _ = items.add(test_item(cut, index));
        }
        let mut writes = Vec::new();
        items.write_blocks(cut, true, &mut writes).expect("blocks");
        assert!(!writes.is_empty());
        store.insert_unreachable(writes).expect("inserted");
        store.db.flush().expect("flush");
        let of_cut = |store: &Store| {
            super::super::records_for_test(store)
                .iter()
                .filter(|(k, _)| k.len() >= 9 && k[1..9] == cut.to_be_bytes())
                .count()
        };
        assert!(of_cut(&store) > 0, "its items were written");
        drop(store);
        let store = reopen(dir.path()).expect("reopens");
        assert!(store.manifest(cut).expect("read").is_none());
        assert_eq!(of_cut(&store), 0, "nothing of the cut manifest is left");
        assert_eq!(store.items(kept).expect("items").len(), 2);
    }

    #[tokio::test]
    async fn a_commit_cut_after_its_record_is_written_whole_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, id) = store_with_manifest(dir.path(), 3).await;
        let before = store.items(id).expect("items");
        // What a crash leaves of a logged commit: W and its first write, not the rest.
        let mut changed = test_item(id, 1);
        changed.client_item_id = "changed".into();
        let item_key = super::super::item_key(id, 1).to_vec();
        let item = encode(&super::super::StoredItem::V2(changed.clone())).expect("encode");
        let mut manifest = store.manifest(id).expect("read").expect("there");
        manifest.name = "renamed".into();
        let record = encode(&super::super::StoredManifest::V2(manifest.clone())).expect("encode");
        let all = vec![
            (item_key.clone(), item.clone()),
            (manifest_key(id).to_vec(), record),
        ];
        store
            .commits()
            .expect("tree")
            .insert(COMMIT_KEY, encode(&StoredCommit::V1(all)).expect("encode"))
            .expect("W");
        store.tree.insert(item_key, item).expect("first write");
        store.db.flush().expect("flush");
        assert_eq!(
            store.manifest(id).expect("read").expect("there").name,
            "daily",
            "the cut commit's record is missing"
        );
        drop(store);
        let store = reopen(dir.path()).expect("reopens");
        assert_eq!(
            store.manifest(id).expect("read").expect("there").name,
            "renamed",
            "the record is written at the open"
        );
        let after = store.items(id).expect("items");
        assert_eq!(after[1], changed);
        assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));
        assert!(store.logged_commit().is_none(), "W is gone");
    }
}
