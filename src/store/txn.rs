//! Writing the store: the writer's lock and the transactions begun from it. A
//! transaction on an existing manifest is a [`Txn`] (its items through their state
//! machine, its jobs, its record, the poll records and learned times it touches); one
//! that creates a manifest is a [`NewManifest`] (`new_manifest.rs`). Both apply their
//! writes through `group::apply_writes` and are made durable by [`Store::durable`].

use std::collections::BTreeMap;

use super::group::{apply_writes, holds_lock, put_items, KeyValues, WriterSlot};
use super::{
    blocks, decode, encode, generation_key, item_key, job_key, proof_key, tent_key, Applied,
    ManifestRecord, NewManifest, Store, StoreError, StoredGenerationTimes, StoredItem, StoredJob,
    StoredManifest, StoredTemplateProof, StoredTentPoll,
};
use crate::schedule::{GenerationTimes, TemplateProof, TentPollRecord};
use crate::state::item::{ItemEvent, ItemRecord, ItemState};
use crate::state::job::JobRecord;
use crate::state::manifest::ItemCounts;

/// The writer's lock, held from [`Store::writer`] until a transaction begun from it
/// commits (or the writer is dropped). Transactions are begun from it.
pub struct Writer<'a> {
    store: &'a Store,
    /// Taken (and so let go) by the commit once its batch is applied.
    guard: WriterSlot,
}

impl Store {
    /// Takes the single writer's lock: every transaction happens under it. A commit lets
    /// it go once its batch is applied (see [`Txn::commit`]): one writer, one commit.
    pub async fn writer(&self) -> Writer<'_> {
        let guard = std::sync::Arc::clone(&self.writer).lock_owned().await;
        Writer {
            store: self,
            guard: std::sync::Mutex::new(Some(guard)),
        }
    }
}

impl<'a> Writer<'a> {
    pub fn store(&self) -> &Store {
        self.store
    }

    /// A transaction on an existing manifest.
    pub fn begin(&self, manifest_id: u64) -> Result<Txn<'_>, StoreError> {
        if !holds_lock(&self.guard) {
            return Err(StoreError::WriterSpent);
        }
        let manifest = self
            .store
            .manifest(manifest_id)?
            .ok_or(StoreError::NoManifest(manifest_id))?;
        Ok(Txn {
            store: self.store,
            writer: &self.guard,
            finished_before: manifest.finished_at_ms.is_some(),
            manifest,
            items: BTreeMap::new(),
            jobs: BTreeMap::new(),
            extra: Vec::new(),
            block_cache: Default::default(),
            tent_polls: BTreeMap::new(),
            newly_final: ItemCounts::default(),
        })
    }

    /// A transaction that creates a manifest (intake): its items, its indexes, then its
    /// record.
    pub fn create(&self, manifest: ManifestRecord) -> Result<NewManifest<'_>, StoreError> {
        if !holds_lock(&self.guard) {
            return Err(StoreError::WriterSpent);
        }
        Ok(NewManifest::new(self.store, &self.guard, manifest))
    }
}

/// A set of changes to one existing manifest, its items, jobs, the tent poll records and
/// learned times they touch, committed atomically.
pub struct Txn<'w> {
    store: &'w Store,
    /// The writer's lock, let go at the commit.
    writer: &'w WriterSlot,
    manifest: ManifestRecord,
    items: BTreeMap<u32, ItemRecord>,
    jobs: BTreeMap<u32, JobRecord>,
    extra: KeyValues,
    /// The last block read, so that the items of one chunk decode their block once.
    block_cache: std::cell::RefCell<Option<(u32, Vec<blocks::IntakeItem>)>>,
    tent_polls: BTreeMap<String, TentPollRecord>,
    /// Items that reached a final state in this transaction, by state slot.
    newly_final: ItemCounts,
    /// Whether the manifest was finished before this transaction.
    finished_before: bool,
}

impl<'w> Txn<'w> {
    pub fn manifest(&self) -> &ManifestRecord {
        &self.manifest
    }

    /// The record itself, for the store's own code and tests: everyone else changes it
    /// through the named transitions below.
    pub(in crate::store) fn manifest_mut(&mut self) -> &mut ManifestRecord {
        &mut self.manifest
    }

    /// [`ManifestRecord::archive`].
    pub fn archive(&mut self) -> bool {
        self.manifest.archive()
    }

    /// [`ManifestRecord::finish`].
    pub fn finish(&mut self, now_ms: u64) -> bool {
        self.manifest.finish(now_ms)
    }

    /// [`ManifestRecord::mark_result_written`].
    pub fn mark_result_written(&mut self) -> bool {
        self.manifest.mark_result_written()
    }

    /// [`ManifestRecord::apply_control`].
    pub fn apply_control(&mut self, event: crate::state::control::ControlEvent) -> bool {
        self.manifest.apply_control(event)
    }

    /// [`ManifestRecord::take_job_seq`].
    pub fn take_job_seq(&mut self) -> u32 {
        self.manifest.take_job_seq()
    }

    /// [`ManifestRecord::move_chunk_cursor`].
    pub fn move_chunk_cursor(&mut self, to: super::ChunkCursor) {
        self.manifest.move_chunk_cursor(to);
    }

    /// [`ManifestRecord::set_credit_retry`].
    pub fn set_credit_retry(&mut self, at_ms: Option<u64>) {
        self.manifest.set_credit_retry(at_ms);
    }

    /// Items `from..to`, as this transaction sees them.
    pub fn items_range(&self, from: u32, to: u32) -> Result<Vec<ItemRecord>, StoreError> {
        let mut items = self.store.items_range(self.manifest.id, from, to)?;
        for item in &mut items {
            if let Some(changed) = self.items.get(&item.index) {
                *item = changed.clone();
            }
        }
        Ok(items)
    }

    /// The item as this transaction sees it.
    pub fn item(&self, index: u32) -> Result<ItemRecord, StoreError> {
        if let Some(item) = self.items.get(&index) {
            return Ok(item.clone());
        }
        let id = self.manifest.id;
        let key = item_key(id, index);
        if let Some(bytes) = self.store.tree.get(key)? {
            return Ok(decode::<StoredItem>(&key, &bytes)?.current());
        }
        let block = index / blocks::BLOCK;
        let mut cache = self.block_cache.borrow_mut();
        if cache.as_ref().map(|(cached, _)| *cached) != Some(block) {
            *cache = Some((block, self.store.block(id, block)?));
        }
        cache
            .as_ref()
            .and_then(|(_, items)| items.iter().find(|item| item.index == index))
            .cloned()
            .ok_or(StoreError::NoItem {
                manifest_id: id,
                index,
            })?
            .record(id)
    }

    /// The states of items `from..to`, in order, as this transaction sees them: an item
    /// still as intake wrote it is not parsed (see [`super::Store::states_range`]).
    pub fn states_range(&self, from: u32, to: u32) -> Result<Vec<(u32, ItemState)>, StoreError> {
        let mut states = self.store.states_range(self.manifest.id, from, to)?;
        for (index, state) in &mut states {
            if let Some(changed) = self.items.get(index) {
                *state = changed.state();
            }
        }
        Ok(states)
    }

    /// Applies an event to an item through the state machine and keeps the counts true.
    pub fn apply(&mut self, index: u32, event: ItemEvent) -> Result<ItemState, StoreError> {
        let item = self.item(index)?;
        self.apply_to(item, event)
    }

    /// [`Txn::apply`] to an item this transaction has just read (from
    /// [`Txn::items_range`] or [`Txn::item`]), so that it is not read and parsed again.
    /// A record of another manifest is refused; one this transaction has changed since is
    /// taken as changed, not as given. (A record read by an earlier transaction may be
    /// stale: not for this.)
    pub fn apply_read(
        &mut self,
        item: ItemRecord,
        event: ItemEvent,
    ) -> Result<ItemState, StoreError> {
        if item.manifest_id != self.manifest.id {
            return Err(StoreError::NoItem {
                manifest_id: self.manifest.id,
                index: item.index,
            });
        }
        let item = match self.items.get(&item.index) {
            Some(changed) => changed.clone(),
            None => item,
        };
        self.apply_to(item, event)
    }

    fn apply_to(
        &mut self,
        mut item: ItemRecord,
        event: ItemEvent,
    ) -> Result<ItemState, StoreError> {
        let index = item.index;
        let before = item.state();
        item.apply(event)?;
        let after = item.state();
        self.manifest.counts.remove(before);
        self.manifest.counts.add(after);
        if after.is_final() && !before.is_final() {
            self.newly_final.add(after);
        }
        self.items.insert(index, item);
        Ok(after)
    }

    /// Sets fields of an item that are not its state (e.g. the resolved edit target).
    pub fn annotate(
        &mut self,
        index: u32,
        f: impl FnOnce(&mut ItemRecord),
    ) -> Result<(), StoreError> {
        let mut item = self.item(index)?;
        // The closure cannot change the state: the field is private to the machine.
        f(&mut item);
        self.items.insert(index, item);
        Ok(())
    }

    pub fn job(&self, seq: u32) -> Result<Option<JobRecord>, StoreError> {
        if let Some(job) = self.jobs.get(&seq) {
            return Ok(Some(job.clone()));
        }
        self.store.job(self.manifest.id, seq)
    }

    pub fn put_job(&mut self, job: JobRecord) {
        self.jobs.insert(job.seq, job);
    }

    /// The last poll of a tent, as this transaction sees it.
    pub fn tent_poll(&self, tent_id: &str) -> Result<Option<TentPollRecord>, StoreError> {
        if let Some(record) = self.tent_polls.get(tent_id) {
            return Ok(Some(*record));
        }
        self.store.tent_poll(tent_id)
    }

    /// Records how long generations of this key (template) took, in this transaction.
    pub fn put_generation_times(
        &mut self,
        key: &str,
        times: &GenerationTimes,
    ) -> Result<(), StoreError> {
        let value = encode(&StoredGenerationTimes::V1(times.clone()))?;
        self.extra.push((generation_key(key), value));
        Ok(())
    }

    /// Records what a template has shown the failure threshold, in this transaction.
    pub fn put_template_proof(
        &mut self,
        key: &str,
        proof: TemplateProof,
    ) -> Result<(), StoreError> {
        let value = encode(&StoredTemplateProof::V1(proof))?;
        self.extra.push((proof_key(key), value));
        Ok(())
    }

    pub fn put_tent_poll(&mut self, tent_id: &str, record: TentPollRecord) {
        self.tent_polls.insert(tent_id.to_string(), record);
    }

    /// Writes everything and waits until it is durable: one atomic batch.
    pub async fn commit(self) -> Result<ManifestRecord, StoreError> {
        let store = self.store;
        let applied = self.apply_without_sync()?;
        store.durable(applied).await
    }

    /// Writes everything as [`Txn::commit`] does and returns at once: durable with the
    /// next sync, within [`super::DURABLE_WITHIN`] (see [`Store::durable_soon`] for
    /// what may be written so).
    pub fn commit_soon(self) -> Result<ManifestRecord, StoreError> {
        let store = self.store;
        let applied = self.apply_without_sync()?;
        Ok(store.durable_soon(applied))
    }

    /// Writes everything as [`Txn::commit`] does and lets the writer's lock go, without
    /// waiting for the disk: the batch is applied (readers see it) but counts only once
    /// [`Store::durable`] or [`Store::durable_together`] returned for it.
    pub fn apply_without_sync(mut self) -> Result<Applied, StoreError> {
        let id = self.manifest.id;
        let record = encode(&StoredManifest::V2(self.manifest.clone()))?;
        let mut writes: KeyValues = Vec::new();
        put_items(&mut writes, id, std::mem::take(&mut self.items))?;
        for (seq, job) in std::mem::take(&mut self.jobs) {
            writes.push((job_key(id, seq).to_vec(), encode(&StoredJob::V1(job))?));
        }
        writes.append(&mut self.extra);
        for (tent_id, record) in std::mem::take(&mut self.tent_polls) {
            writes.push((tent_key(&tent_id), encode(&StoredTentPoll::V1(record))?));
        }
        let ticket = apply_writes(self.store, self.writer, writes, (id, record))?;
        let finished_now = self.manifest.finished_at_ms.is_some() && !self.finished_before;
        if finished_now {
            self.store.finish_applied(id, ticket);
        }
        Ok(Applied {
            ticket,
            created: false,
            finished_now,
            newly_final: self.newly_final,
            manifest: self.manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::received_for_test;

    #[tokio::test]
    async fn a_second_transaction_of_one_writer_cannot_commit_without_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let (a, b) = (
            store.new_manifest_id().expect("id"),
            store.new_manifest_id().expect("id"),
        );
        let writer = store.writer().await;
        let first = writer.create(received_for_test(a, "a", 2)).expect("create");
        let second = writer.create(received_for_test(b, "b", 2)).expect("create");
        first.commit().await.expect("the first commits");
        assert!(matches!(
            second.commit().await,
            Err(StoreError::WriterSpent)
        ));
        assert!(
            store.manifest(b).expect("read").is_none(),
            "nothing of it was written"
        );
    }

    #[tokio::test]
    async fn states_range_agrees_with_items_range_and_apply_read_takes_what_was_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let id = store.new_manifest_id().expect("id");
        {
            // 60 items in three blocks, every seventh rejected locally.
            let writer = store.writer().await;
            let mut txn = writer
                .create(received_for_test(id, "daily", 60))
                .expect("create");
            for index in 0..60 {
                let item = if index % 7 == 0 {
                    let (client, given) = (format!("row-{index}"), "{}".into());
                    ItemRecord::rejected_locally(id, index, client, given, "bad".into())
                } else {
                    crate::store::test_item(id, index)
                };
                txn.insert_item(item).expect("insert");
            }
            txn.commit().await.expect("commit");
        }
        let other = crate::store::committed_for_test(&store, 3).await;
        {
            // Item 26 gets a record of its own.
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            txn.apply(26, ItemEvent::SendIntent { job_seq: 1 })
                .expect("apply");
            txn.commit().await.expect("commit");
        }
        let writer = store.writer().await;
        let mut txn = writer.begin(id).expect("begin");
        // Item 30 changes in this transaction only.
        txn.apply(30, ItemEvent::Cancel).expect("cancel");
        let items = txn.items_range(20, 55).expect("items");
        let states = txn.states_range(20, 55).expect("states");
        let expected: Vec<(u32, ItemState)> = items.iter().map(|i| (i.index, i.state())).collect();
        assert_eq!(states, expected);
        assert_eq!(states.len(), 35);
        assert_eq!(states[1], (21, ItemState::Rejected));
        assert_eq!(states[2], (22, ItemState::Pending));
        assert_eq!(states[6], (26, ItemState::Sending));
        assert_eq!(states[10], (30, ItemState::Canceled));
        assert!(txn.states_range(55, 55).expect("empty").is_empty());
        assert_eq!(txn.states_range(58, 100).expect("last block").len(), 2);

        // An item as read is applied without reading it again…
        let read = items[11].clone();
        assert_eq!(read.index, 31);
        let state = txn.apply_read(read, ItemEvent::SendIntent { job_seq: 2 });
        assert_eq!(state.expect("applied"), ItemState::Sending);
        // …one changed since it was read is taken as changed (canceled: not sendable)…
        let stale = items[12].clone();
        txn.apply(32, ItemEvent::Cancel).expect("cancel");
        assert!(txn
            .apply_read(stale, ItemEvent::SendIntent { job_seq: 2 })
            .is_err());
        // …and another manifest's item is refused.
        let foreign = store.items_range(other, 0, 1).expect("read").remove(0);
        assert!(matches!(
            txn.apply_read(foreign, ItemEvent::Cancel),
            Err(StoreError::NoItem { .. })
        ));
        let record = txn.commit().await.expect("commit");
        assert_eq!(record.count(ItemState::Sending), 2);
        assert_eq!(record.count(ItemState::Canceled), 2);
        assert_eq!(record.count(ItemState::Rejected), 9);
        assert_eq!(record.count(ItemState::Pending), 47);
        assert_eq!(
            store.item(id, 31).expect("read").expect("there").job_seq,
            Some(2)
        );
        let refused = store.item(id, 32).expect("read").expect("there");
        assert_eq!(
            refused.state(),
            ItemState::Canceled,
            "a refused event loses nothing"
        );
        assert_eq!(
            store.item(other, 0).expect("read").expect("there").state(),
            ItemState::Pending
        );
    }

    #[tokio::test]
    async fn apply_keeps_counts_and_refuses_illegal_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.new_manifest_id().unwrap();
        let writer = store.writer().await;
        let mut txn = writer
            .create(received_for_test(id, "daily", 2))
            .expect("create");
        txn.insert_item(crate::store::pending_for_test(id, 0, "a"))
            .expect("insert");
        txn.commit().await.unwrap();
        // The commit let the lock go: this writer begins nothing more, a new one can be had.
        assert!(matches!(writer.begin(id), Err(StoreError::WriterSpent)));
        let writer = store.writer().await;
        let mut txn = writer.begin(id).unwrap();
        txn.apply(0, ItemEvent::SendIntent { job_seq: 0 }).unwrap();
        assert!(txn.apply(0, ItemEvent::Cancel).is_err());
        let record = txn.commit().await.unwrap();
        assert_eq!(record.count(ItemState::Sending), 1);
        assert_eq!(record.count(ItemState::Pending), 0);
        assert_eq!(store.item(id, 0).unwrap().unwrap().job_seq, Some(0));
    }
}
