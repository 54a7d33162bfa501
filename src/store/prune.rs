//! Pruning (SPEC section 8, retention): a finished manifest's items, requests, client
//! index entries and tent poll records leave the store; its summary stays.
//!
//! In three steps, each under the writer's lock and each short, so that the pipeline's
//! own transactions go on between them (pruning never blocks the pipeline):
//!
//! 1. [`Store::begin_prune`] writes the summary (`S`). From then on the manifest counts
//!    as pruned (`list`, `show`, edits), even while its records are being removed.
//! 2. [`Store::prune_slice`] removes at most a slice of its items: intake blocks (`F`)
//!    each with the `K` buckets of its client ids and the records (`I`) of its items
//!    (with the `T` records of their tents that no longer hold back a poll), then any
//!    item record left without a block, then its jobs; called until it removes nothing.
//! 3. [`Store::finish_prune`] removes the manifest record (`M`) and flushes.
//!
//! A crash anywhere leaves a store that reads: the next pass finds the manifest (its `M`
//! is still there) and goes on from where it stopped. The name (`N`) and hash (`H`)
//! indexes are never removed.

use super::summary::{summary_key, StoredSummary};
use super::{
    blocks, decode, encode, manifest_key, prefixed, tent_key, Store, StoreError, StoredItem,
    StoredJob, StoredTentPoll,
};
use crate::state::item::ItemRecord;

/// What one [`Store::prune_slice`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Item records and intake blocks' items (an item that changed counts in both).
    pub items: usize,
    pub jobs: usize,
    pub tent_polls: usize,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        self.items == 0 && self.jobs == 0
    }
}

impl Store {
    /// Writes the summary of a finished manifest whose result is written, if it has none
    /// yet. Returns false when there is nothing to prune (no such manifest, or it is not
    /// finished).
    pub async fn begin_prune(&self, id: u64, now_ms: u64) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let Some(manifest) = self.manifest(id)? else {
            return Ok(false);
        };
        if manifest.finished_at_ms.is_none() || !manifest.result_written {
            return Ok(false);
        }
        if self.summary(id)?.is_none() {
            let summary = manifest.summary(now_ms);
            self.tree
                .insert(summary_key(id), encode(&StoredSummary::V1(summary))?)?;
            let ticket = self.durable.applied();
            self.sync(ticket).await?;
        }
        Ok(true)
    }

    /// Removes up to `slice` items of a manifest being pruned (their client index entries,
    /// and the poll records of their tents that are due anyway by `now_ms` with the floor
    /// `floor_ms`), or when no item is left, up to `slice` of its jobs.
    pub async fn prune_slice(
        &self,
        id: u64,
        slice: usize,
        now_ms: u64,
        floor_ms: u64,
    ) -> Result<Pruned, StoreError> {
        let _writer = self.writer.lock().await;
        if self.summary(id)?.is_none() {
            // Only a manifest whose summary is written is pruned.
            return Ok(Pruned::default());
        }
        let mut batch = sled::Batch::default();
        let mut pruned = Pruned::default();
        // Block by block, each with the records of its items, so that an item never reads
        // as intake wrote it once its own record is gone.
        let blocks_per_slice = slice.div_ceil(blocks::BLOCK as usize);
        for entry in self
            .tree
            .scan_prefix(prefixed(b'F', id))
            .take(blocks_per_slice)
        {
            let (key, bytes) = entry?;
            for item in blocks::decode_block(&key, &bytes)? {
                let bucket = blocks::bucket_of(&item.client_item_id);
                batch.remove(&blocks::bucket_key(bucket, id)[..]);
                pruned.items += 1;
            }
            let block = u32::from_be_bytes([key[9], key[10], key[11], key[12]]);
            let first = block.saturating_mul(blocks::BLOCK);
            let records = super::item_key(id, first)
                ..super::item_key(id, first.saturating_add(blocks::BLOCK));
            for entry in self.tree.range(records) {
                let (key, bytes) = entry?;
                pruned.tent_polls +=
                    self.prune_item_record(id, &key, &bytes, now_ms, floor_ms, &mut batch)?;
            }
            batch.remove(key);
        }
        // Item records with no block left (intake writes every item in a block, but a
        // record never goes unpruned for want of one).
        if pruned.items == 0 {
            for entry in self.tree.scan_prefix(prefixed(b'I', id)).take(slice) {
                let (key, bytes) = entry?;
                pruned.tent_polls +=
                    self.prune_item_record(id, &key, &bytes, now_ms, floor_ms, &mut batch)?;
                pruned.items += 1;
            }
        }
        if pruned.items == 0 {
            for entry in self.tree.scan_prefix(prefixed(b'J', id)).take(slice) {
                let (key, bytes) = entry?;
                // Decoded to be sure it is a job record before it goes.
                let StoredJob::V1(_) = decode(&key, &bytes)?;
                batch.remove(key);
                pruned.jobs += 1;
            }
        }
        self.apply_batch(batch)?;
        Ok(pruned)
    }

    /// Removes an item's own record, its client index bucket (`K`), and its tent's poll
    /// record if that no longer holds back a poll; returns the number of poll records
    /// removed.
    fn prune_item_record(
        &self,
        id: u64,
        key: &[u8],
        bytes: &[u8],
        now_ms: u64,
        floor_ms: u64,
        batch: &mut sled::Batch,
    ) -> Result<usize, StoreError> {
        let item = decode::<StoredItem>(key, bytes)?.current();
        let bucket = blocks::bucket_of(&item.client_item_id);
        batch.remove(&blocks::bucket_key(bucket, id)[..]);
        batch.remove(key);
        self.prune_tent_poll(&item, now_ms, floor_ms, batch)
    }

    /// Removes the poll record of the item's tent if it no longer holds back a poll (a
    /// newer edit of the same tent writes its own); 1 when it did.
    fn prune_tent_poll(
        &self,
        item: &ItemRecord,
        now_ms: u64,
        floor_ms: u64,
        batch: &mut sled::Batch,
    ) -> Result<usize, StoreError> {
        let Some(tent_id) = &item.tent_id else {
            return Ok(0);
        };
        let tent = tent_key(tent_id);
        let Some(bytes) = self.tree.get(&tent)? else {
            return Ok(0);
        };
        let StoredTentPoll::V1(poll) = decode(&tent, &bytes)?;
        if poll.next_due_ms(floor_ms) <= now_ms {
            batch.remove(tent);
            return Ok(1);
        }
        Ok(0)
    }

    /// Removes the manifest record once its items and jobs are gone (else nothing), and
    /// flushes.
    pub async fn finish_prune(&self, id: u64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let leftovers = [b'I', b'F', b'J'].iter().any(|prefix| {
            self.tree
                .scan_prefix(prefixed(*prefix, id))
                .next()
                .is_some()
        });
        if self.summary(id)?.is_none() || leftovers {
            // Not begun, or not done: the manifest record stays, and the next pass goes on.
            return Ok(());
        }
        // `W` first: it may hold this record, and must never be written again over it.
        self.forget_commit()?;
        self.tree.remove(manifest_key(id))?;
        let ticket = self.durable.applied();
        self.sync(ticket).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::schedule::TentPollRecord;
    use crate::state::job::{JobKind, JobRecord};

    async fn finished_manifest(store: &Store, name: &str, items: u32) -> u64 {
        let id = store.new_manifest_id().expect("an id");
        let writer = store.writer().await;
        let mut txn = writer
            .create(crate::store::received_for_test(id, name, items))
            .expect("create");
        for index in 0..items {
            let client = format!("{name}-{index}");
            txn.insert_item(crate::store::pending_for_test(id, index, &client))
                .expect("insert");
            txn.index_client_item(&client, index);
        }
        txn.index_name();
        txn.index_hash();
        txn.commit().await.expect("created");
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        txn.annotate(0, |item| item.tent_id = Some(format!("tent-{name}")))
            .expect("annotate");
        txn.put_job(JobRecord::sending(
            id,
            0,
            JobKind::Bulk,
            (0..items).collect(),
            2_000,
        ));
        txn.put_tent_poll(
            &format!("tent-{name}"),
            TentPollRecord {
                last_polled_at_ms: 3_000,
                retry_after_ms: None,
            },
        );
        txn.manifest_mut().finished_at_ms = Some(5_000);
        txn.manifest_mut().result_written = true;
        txn.commit().await.expect("finished");
        id
    }

    #[tokio::test]
    async fn pruning_leaves_the_summary_and_the_indexes_of_name_and_bytes_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id;
        {
            let store = Store::open(dir.path()).expect("opens");
            let kept = finished_manifest(&store, "kept", 2).await;
            id = finished_manifest(&store, "old", 7).await;
            assert!(store.begin_prune(id, 9_000).await.expect("begins"));
            // Slices of at most 3 items: the intake block with the record of its one item
            // that changed (7 items, a block is never split), then the job, then nothing.
            let mut slices = Vec::new();
            loop {
                let pruned = store
                    .prune_slice(id, 3, 9_000, 1_000)
                    .await
                    .expect("a slice");
                if pruned.is_empty() {
                    break;
                }
                slices.push((pruned.items, pruned.jobs));
            }
            assert_eq!(slices, [(7, 0), (0, 1)]);
            store.finish_prune(id).await.expect("finished");
            assert!(store.manifest(id).expect("reads").is_none());
            assert!(store.items(id).expect("reads").is_empty());
            assert!(store.jobs(id).expect("reads").is_empty());
            assert!(store
                .items_with_client_id("old-0")
                .expect("reads")
                .is_empty());
            assert!(
                store.tent_poll("tent-old").expect("reads").is_none(),
                "due anyway: removed"
            );
            assert_eq!(
                store
                    .tent_poll("tent-kept")
                    .expect("reads")
                    .map(|t| t.last_polled_at_ms),
                Some(3_000)
            );
            assert_eq!(store.manifest_named("old").expect("reads"), Some(id));
            assert_eq!(
                store.manifest_with_hash(&[id as u8; 32]).expect("reads"),
                Some(id)
            );
            let summary = store.summary(id).expect("reads").expect("a summary");
            assert_eq!(
                (
                    summary.name.as_str(),
                    summary.counts.total,
                    summary.pruned_at_ms
                ),
                ("old", 7, 9_000)
            );
            assert_eq!(summary.finished_at_ms, Some(5_000));
            let history = store.newest_first(10).expect("reads");
            let ids: Vec<(u64, bool)> = history
                .iter()
                .map(|e| (e.id(), matches!(e, HistoryEntry::Pruned(_))))
                .collect();
            assert_eq!(ids, [(id, true), (kept, false)]);
            assert!(store.any_pruned().expect("reads"));
            // The kept manifest is whole.
            assert_eq!(store.items(kept).expect("reads").len(), 2);
        }
        // The newest manifest was pruned: the store still opens (its summary counts).
        let store = Store::open(dir.path()).expect("reopens");
        assert!(store.summary(id).expect("reads").is_some());
    }

    async fn prune_whole(store: &Store, id: u64) {
        assert!(store.begin_prune(id, 9_000).await.expect("begins"));
        while !store
            .prune_slice(id, 500, 9_000, 1_000)
            .await
            .expect("a slice")
            .is_empty()
        {}
        store.finish_prune(id).await.expect("finished");
    }

    /// (id, pruned) of each entry, newest first.
    fn ids(entries: &[HistoryEntry]) -> Vec<(u64, bool)> {
        entries
            .iter()
            .map(|e| (e.id(), matches!(e, HistoryEntry::Pruned(_))))
            .collect()
    }

    #[tokio::test]
    async fn the_history_without_some_manifests_is_the_history_with_them_filtered_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut made = Vec::new();
        for (n, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            let id = finished_manifest(&store, name, 2).await;
            match n % 3 {
                0 => prune_whole(&store, id).await,
                // Being pruned: its record and its summary are both there.
                1 if n == 4 => assert!(store.begin_prune(id, 9_000).await.expect("begins")),
                _ => {}
            }
            made.push(id);
        }
        let all = store.newest_first(100).expect("reads");
        let expected: Vec<(u64, bool)> = made
            .iter()
            .rev()
            .enumerate()
            // Newest first: g (6), f, e (4, being pruned), d (3), c, b, a (0).
            .map(|(back, id)| (*id, matches!(6 - back, 0 | 3 | 4 | 6)))
            .collect();
        assert_eq!(ids(&all), expected);
        let skips: [&dyn Fn(u64) -> bool; 4] = [
            &|_| false,
            &|id| id == made[6],
            &|id| id == made[4] || id == made[1],
            &|id| id != made[0],
        ];
        for skip in skips {
            for limit in 0..9 {
                let filtered: Vec<(u64, bool)> = ids(&all)
                    .into_iter()
                    .filter(|(id, _)| !skip(*id))
                    .take(limit)
                    .collect();
                let read = store.newest_first_except(limit, skip).expect("reads");
                assert_eq!(ids(&read), filtered, "limit {limit}");
            }
        }
    }

    #[tokio::test]
    async fn an_unfinished_manifest_is_never_pruned_and_finish_waits_for_the_slices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let id = finished_manifest(&store, "busy", 2).await;
        {
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            txn.manifest_mut().result_written = false;
            txn.commit().await.expect("commit");
        }
        assert!(!store.begin_prune(id, 9_000).await.expect("reads"));
        assert!(store
            .prune_slice(id, 10, 9_000, 1_000)
            .await
            .expect("reads")
            .is_empty());
        assert_eq!(store.items(id).expect("reads").len(), 2);
        {
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            txn.manifest_mut().result_written = true;
            txn.commit().await.expect("commit");
        }
        assert!(store.begin_prune(id, 9_000).await.expect("begins"));
        // Called too early, finish leaves the record where it is.
        store.finish_prune(id).await.expect("no error");
        assert!(store.manifest(id).expect("reads").is_some());
    }
}
