//! Transactions made durable together: a commit is a transaction applied
//! ([`Txn::apply_without_sync`]) and then made durable ([`Store::durable`]). Intake
//! applies the records of many manifest files one after another and waits once for all
//! of them ([`Store::durable_together`]): one sync and one write of the marker for the
//! group, instead of one each. Both kinds of transaction ([`Txn`], [`NewManifest`]) apply
//! their writes here ([`apply_writes`]), under the writer's lock, which is let go then.
//!
//! [`Txn::apply_without_sync`]: super::Txn::apply_without_sync
//! [`Txn`]: super::Txn
//! [`NewManifest`]: super::NewManifest

use std::collections::BTreeMap;

use super::{
    encode, item_key, logged, manifest_key, ManifestRecord, Store, StoreError, StoredItem,
};
use crate::state::item::ItemRecord;
use crate::state::manifest::ItemCounts;

/// A transaction whose batch is applied to sled (readers see it) but not yet durable:
/// nothing may act on it (a request, a file moved or written) before
/// [`Store::durable`] or [`Store::durable_together`] returned for it.
#[must_use = "an applied transaction counts only once it is durable"]
#[derive(Debug)]
pub struct Applied {
    /// Its batch's ticket in the group commit.
    pub(super) ticket: u64,
    /// Whether it created its manifest (the marker then moves to it).
    pub(super) created: bool,
    /// Whether it finished its manifest.
    pub(super) finished_now: bool,
    /// Items that reached a final state in it, by state slot.
    pub(super) newly_final: ItemCounts,
    pub(super) manifest: ManifestRecord,
}

impl Applied {
    /// The manifest's record as the transaction left it (not durable yet).
    pub fn manifest(&self) -> &ManifestRecord {
        &self.manifest
    }
}

/// The longest a transaction left to [`Store::durable_soon`] waits for its sync.
pub const DURABLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// The lock slot a transaction lets go at its commit.
pub(super) type WriterSlot = std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>;

/// Whether the writer's lock is still held (no transaction of its writer committed yet).
pub(super) fn holds_lock(slot: &WriterSlot) -> bool {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .is_some()
}

/// Keys and values to write.
pub(super) type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Applies a transaction's writes, then `manifest` (its id and record) last, and lets the
/// writer's lock go: the next writer may read them and write its own while this one waits
/// for the disk, and one sync serves both (group commit). Returns the batch's ticket. A
/// second transaction of one writer, begun before the first committed, would write without
/// the lock: refused, before anything is written.
pub(super) fn apply_writes(
    store: &Store,
    writer: &WriterSlot,
    writes: KeyValues,
    manifest: (u64, Vec<u8>),
) -> Result<u64, StoreError> {
    if !holds_lock(writer) {
        return Err(StoreError::WriterSpent);
    }
    fail::fail_point!("store-before-commit", |_| crate::crash::simulated_crash());
    let small = logged::size_of(&writes) + manifest.1.len() <= logged::LOGGED_LIMIT;
    let written = if small {
        logged::apply_logged(store, writes, manifest)
    } else {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            batch.insert(key, value);
        }
        batch.insert(&manifest_key(manifest.0)[..], manifest.1);
        store.apply_batch(batch)
    };
    if let Err(e) = written {
        store
            .write_failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        return Err(e);
    }
    let ticket = store.durable.applied();
    let guard = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    drop(guard);
    Ok(ticket)
}

/// Adds the records of items to a transaction's writes.
pub(super) fn put_items(
    writes: &mut KeyValues,
    manifest_id: u64,
    items: BTreeMap<u32, ItemRecord>,
) -> Result<(), StoreError> {
    for (index, item) in items {
        writes.push((
            item_key(manifest_id, index).to_vec(),
            encode(&StoredItem::V2(item))?,
        ));
    }
    Ok(())
}

impl Store {
    /// Returns once `applied` is on the disk (see [`super::Txn::commit`]).
    pub async fn durable(&self, applied: Applied) -> Result<ManifestRecord, StoreError> {
        self.sync(applied.ticket).await?;
        if applied.finished_now {
            self.finish_durable(applied.manifest.id, applied.ticket);
        }
        if applied.created {
            self.mark_newest(applied.manifest.id).await;
        }
        self.count_finished(&applied);
        fail::fail_point!("store-after-commit", |_| crate::crash::simulated_crash());
        Ok(applied.manifest)
    }

    /// Returns `applied`'s record at once and lets it become durable with the next sync:
    /// any commit's, or at the latest [`DURABLE_WITHIN`] later, by [`Store::sync_soon`].
    ///
    /// Only for what a restart repairs if a crash or a power cut takes it first, and that
    /// no request or file rests on: a poll's time (after a start no job is polled before a
    /// floor has passed), a poll's answer that does not finish its manifest, even one that
    /// completes items (the job is polled again and answers the same), the mark that a
    /// result is written (it is written again, the same bytes, from durable state), a
    /// chunk cursor moved past sent chunks or a credit retry cleared (the submitter's next
    /// look moves and clears them again). A create's intent and answer, and the commit
    /// that finishes a manifest, are never left to it.
    pub fn durable_soon(&self, applied: Applied) -> ManifestRecord {
        debug_assert!(!applied.created, "a new manifest must be durable first");
        self.count_finished(&applied);
        self.durable.soon.notify_one();
        // The point after its commit comes before its sync: a crash there loses it (the
        // crash tests prove that a restart repairs that).
        fail::fail_point!("store-after-commit", |_| crate::crash::simulated_crash());
        applied.manifest
    }

    /// Until `stop`: syncs what [`Store::durable_soon`] left, [`DURABLE_WITHIN`] after it
    /// was applied. Under load another commit's sync has covered it by then, and this one
    /// finds nothing to do; idle, it waits without waking.
    pub async fn sync_soon(&self, stop: &tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.durable.soon.notified() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(DURABLE_WITHIN) => {}
            }
            if let Err(e) = self.sync_applied().await {
                tracing::error!("the store cannot make recent polls durable: {e}");
            }
        }
    }

    /// Returns once every one of `applied` is on the disk, with their records in the same
    /// order: one sync covers them all (it began after the last was applied), and the
    /// marker is written once, with the newest manifest they created.
    pub async fn durable_together(
        &self,
        applied: Vec<Applied>,
    ) -> Result<Vec<ManifestRecord>, StoreError> {
        let Some(ticket) = applied.iter().map(|a| a.ticket).max() else {
            return Ok(Vec::new());
        };
        self.sync(ticket).await?;
        let newest_created = applied
            .iter()
            .filter(|a| a.created)
            .map(|a| a.manifest.id)
            .max();
        if let Some(newest) = newest_created {
            self.mark_newest(newest).await;
        }
        let mut records = Vec::with_capacity(applied.len());
        for one in applied {
            self.count_finished(&one);
            records.push(one.manifest);
            // Each transaction passes the point after its commit, as it passed the one
            // before (`store-before-commit`), though all of them are durable by now.
            fail::fail_point!("store-after-commit", |_| crate::crash::simulated_crash());
        }
        Ok(records)
    }

    /// Moves the marker to manifest `id`, whose creating commit is durable. A marker that
    /// cannot be written is logged, not the commit's failure (the marker is only a check,
    /// and a failed intake commit would leave its manifest to be judged a duplicate of
    /// itself).
    async fn mark_newest(&self, id: u64) {
        if let Err(e) = self.mark_committed(id).await {
            tracing::error!("cannot record manifest {id} in the store's marker: {e}");
        }
    }

    /// What the durable transaction finished, in the tally (metrics).
    fn count_finished(&self, applied: &Applied) {
        self.tally.add_items(&applied.newly_final);
        if applied.finished_now {
            self.tally.add_manifest(applied.manifest.final_status());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{received_for_test, reopen, test_item, MARKER_FILE};
    use super::*;

    #[tokio::test]
    async fn manifests_applied_one_after_another_are_durable_with_one_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let before = store.sync_stats().syncs.get();
        let mut applied = Vec::new();
        for n in 0..20u32 {
            let id = store.new_manifest_id().expect("id");
            let writer = store.writer().await;
            let mut txn = writer
                .create(received_for_test(id, &format!("m{n}"), 1))
                .expect("create");
            txn.index_name();
            txn.insert_item(test_item(id, 0)).expect("item");
            applied.push(txn.apply_without_sync().expect("applied"));
        }
        let newest = applied.last().map(|a| a.manifest().id).expect("applied");
        let records = store.durable_together(applied).await.expect("durable");
        assert_eq!(records.len(), 20);
        assert_eq!(
            store.sync_stats().syncs.get() - before,
            1,
            "one sync for the group"
        );
        let marker = std::fs::read_to_string(dir.path().join(MARKER_FILE)).expect("marker");
        assert_eq!(
            marker.trim().parse::<u64>().ok(),
            Some(newest),
            "the newest of the group"
        );
        drop(store);
        let store = reopen(dir.path()).expect("reopen");
        assert_eq!(store.manifests().expect("manifests").len(), 20);
    }

    #[tokio::test]
    async fn a_small_manifest_and_a_change_of_its_record_alone_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let id = store.new_manifest_id().expect("id");
        {
            // Its items, its indexes and its record: one batch.
            let writer = store.writer().await;
            let mut txn = writer
                .create(received_for_test(id, "small", 3))
                .expect("create");
            txn.index_name();
            txn.index_client_item("row-1", 1);
            for index in 0..3 {
                txn.insert_item(test_item(id, index)).expect("item");
            }
            txn.commit().await.expect("commit");
        }
        {
            // Only the record changes: one insert.
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            txn.manifest_mut().archived = true;
            txn.commit().await.expect("commit");
        }
        drop(store);
        let store = reopen(dir.path()).expect("reopen");
        let record = store.manifest(id).expect("read").expect("the record");
        assert!(record.archived);
        assert_eq!(store.items(id).expect("items").len(), 3);
        assert_eq!(store.manifest_named("small").expect("name"), Some(id));
        let found = store
            .items_with_client_ids(&["row-1"].into_iter().collect())
            .expect("client ids");
        assert_eq!(found.get("row-1"), Some(&vec![(id, 1)]));
    }

    /// Cancels manifest `id`'s only item and finishes it, committed waiting for the disk
    /// (`wait`) or not.
    async fn finish_one(store: &Store, id: u64, wait: bool) {
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        txn.apply(0, crate::state::item::ItemEvent::Cancel)
            .expect("cancel");
        assert!(txn.finish(1), "its only item is final");
        if wait {
            txn.commit().await.expect("commit");
        } else {
            txn.commit_soon().expect("commit");
        }
    }

    /// Changes manifest `id`'s record, committed without waiting.
    async fn touch_soon(store: &Store, id: u64) {
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        txn.manifest_mut().archived = true;
        txn.commit_soon().expect("commit");
    }

    #[tokio::test]
    async fn a_finish_is_synced_for_its_result_alone_and_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let finished = super::super::committed_for_test(&store, 1).await;
        let other = super::super::committed_for_test(&store, 1).await;
        finish_one(&store, finished, false).await;
        let before = store.sync_stats().syncs.get();
        store.sync_finish(finished).await.expect("sync");
        assert_eq!(
            store.sync_stats().syncs.get(),
            before + 1,
            "its commit synced"
        );
        // Seen durable: neither it again nor another manifest's pending commit costs one.
        touch_soon(&store, other).await;
        store.sync_finish(finished).await.expect("sync");
        assert_eq!(store.sync_stats().syncs.get(), before + 1, "no sync more");
        // A manifest finished before the store opened is durable.
        drop(store);
        let store = reopen(dir.path()).expect("reopen");
        touch_soon(&store, other).await;
        let before = store.sync_stats().syncs.get();
        store.sync_finish(finished).await.expect("sync");
        assert_eq!(
            store.sync_stats().syncs.get(),
            before,
            "none after a reopen"
        );
    }

    #[tokio::test]
    async fn a_finish_waited_for_needs_no_sync_for_its_result() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let finished = super::super::committed_for_test(&store, 1).await;
        let other = super::super::committed_for_test(&store, 1).await;
        finish_one(&store, finished, true).await;
        touch_soon(&store, other).await;
        let before = store.sync_stats().syncs.get();
        store.sync_finish(finished).await.expect("sync");
        assert_eq!(store.sync_stats().syncs.get(), before, "already durable");
        store.sync_applied().await.expect("sync");
        assert_eq!(store.sync_stats().syncs.get(), before + 1, "the other's");
    }

    #[tokio::test]
    async fn nothing_applied_is_durable_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let before = store.sync_stats().syncs.get();
        let records = store.durable_together(Vec::new()).await.expect("durable");
        assert!(records.is_empty());
        assert_eq!(
            store.sync_stats().syncs.get(),
            before,
            "no sync for nothing"
        );
    }

    #[tokio::test]
    async fn a_commit_left_to_soon_returns_at_once_and_is_synced_within_its_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let id = super::super::committed_for_test(&store, 1).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let syncer = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move { store.sync_soon(&stop).await })
        };
        let before = store.sync_stats().syncs.get();
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        txn.manifest_mut().result_written = true;
        let started = std::time::Instant::now();
        let record = txn.commit_soon().expect("applied");
        assert!(record.result_written);
        assert_eq!(store.sync_stats().syncs.get(), before, "no sync of its own");
        // Readers see it at once.
        let read = store.manifest(id).expect("read").expect("there");
        assert!(read.result_written);
        // The loop syncs it, DURABLE_WITHIN after it was applied.
        while store.sync_stats().syncs.get() == before {
            assert!(started.elapsed() < 10 * DURABLE_WITHIN, "never synced");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(started.elapsed() >= DURABLE_WITHIN, "not before its bound");
        stop.cancel();
        syncer.await.expect("the loop stops");
        drop(store);
        let store = reopen(dir.path()).expect("reopen");
        assert!(
            store
                .manifest(id)
                .expect("read")
                .expect("there")
                .result_written
        );
    }
}
