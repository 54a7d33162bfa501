//! Writing the store: the writer's lock and the transactions begun from it.

use std::collections::BTreeMap;

use super::{
    blocks, decode, encode, generation_key, hash_key, item_key, job_key, manifest_key, name_key,
    proof_key, state_slot, tent_key, Applied, ManifestRecord, Store, StoreError, StoredBucket,
    StoredGenerationTimes, StoredItem, StoredJob, StoredManifest, StoredTemplateProof,
    StoredTentPoll,
};
use crate::schedule::{GenerationTimes, TemplateProof, TentPollRecord};
use crate::state::item::{ItemEvent, ItemRecord, ItemState};
use crate::state::job::JobRecord;

/// Items of a new manifest are written in batches of this many (80 blocks).
const NEW_MANIFEST_SLICE: usize = 2_000;

/// The writer's lock, held from [`Store::writer`] until a transaction begun from it
/// commits (or the writer is dropped). Transactions are begun from it.
pub struct Writer<'a> {
    store: &'a Store,
    /// Taken (and so let go) by the commit once its batch is applied.
    guard: std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
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

/// The lock slot a transaction lets go at its commit.
type WriterSlot = std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>;

/// Lets the writer's lock go: the next writer may begin.
fn release_writer(slot: &WriterSlot) {
    let guard = slot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    drop(guard);
}

impl<'a> Writer<'a> {
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Whether this writer still holds the lock (no transaction of it committed yet).
    fn holds_lock(&self) -> bool {
        self.guard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// A transaction on an existing manifest.
    pub fn begin(&self, manifest_id: u64) -> Result<Txn<'_>, StoreError> {
        if !self.holds_lock() {
            return Err(StoreError::WriterSpent);
        }
        let manifest = self
            .store
            .manifest(manifest_id)?
            .ok_or(StoreError::NoManifest(manifest_id))?;
        Ok(Txn::new(self.store, &self.guard, manifest, true))
    }

    /// A transaction that creates a manifest.
    pub fn create(&self, manifest: ManifestRecord) -> Result<Txn<'_>, StoreError> {
        if !self.holds_lock() {
            return Err(StoreError::WriterSpent);
        }
        Ok(Txn::new(self.store, &self.guard, manifest, false))
    }
}

/// Keys and values to write.
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// A set of changes to one manifest, its items, jobs and indexes, committed atomically.
pub struct Txn<'w> {
    store: &'w Store,
    /// The writer's lock, let go at the commit.
    writer: &'w WriterSlot,
    manifest: ManifestRecord,
    items: BTreeMap<u32, ItemRecord>,
    jobs: BTreeMap<u32, JobRecord>,
    extra: Vec<(Vec<u8>, Vec<u8>)>,
    /// A new manifest's items and client ids, on their way into blocks and buckets.
    new_items: blocks::NewItems,
    /// The last block read, so that the items of one chunk decode their block once.
    block_cache: std::cell::RefCell<Option<(u32, Vec<blocks::IntakeItem>)>>,
    tent_polls: BTreeMap<String, TentPollRecord>,
    exists: bool,
    /// Items that reached a final state in this transaction, by state slot.
    newly_final: [u32; 11],
    /// Whether the manifest was finished before this transaction.
    finished_before: bool,
}

impl<'w> Txn<'w> {
    fn new(
        store: &'w Store,
        writer: &'w WriterSlot,
        manifest: ManifestRecord,
        exists: bool,
    ) -> Txn<'w> {
        Txn {
            store,
            writer,
            finished_before: manifest.finished_at_ms.is_some(),
            manifest,
            items: BTreeMap::new(),
            jobs: BTreeMap::new(),
            extra: Vec::new(),
            new_items: Default::default(),
            block_cache: Default::default(),
            tent_polls: BTreeMap::new(),
            exists,
            newly_final: [0; 11],
        }
    }

    pub fn manifest(&self) -> &ManifestRecord {
        &self.manifest
    }

    pub fn manifest_mut(&mut self) -> &mut ManifestRecord {
        &mut self.manifest
    }

    /// Items `from..to`, as this transaction sees them.
    pub fn items_range(&self, from: u32, to: u32) -> Result<Vec<ItemRecord>, StoreError> {
        let mut items = if self.exists {
            self.store.items_range(self.manifest.id, from, to)?
        } else {
            Vec::new()
        };
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
        if !self.exists {
            return Err(StoreError::NoItem {
                manifest_id: self.manifest.id,
                index,
            });
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

    /// Adds an item of a new manifest (intake). Items are written to sled in blocks, in
    /// slices as they come, never all held at once; they stay unreachable leftovers (which
    /// a crash leaves harmlessly behind) until `commit` writes the manifest's record. A new
    /// manifest's items are therefore not read back through this transaction.
    pub fn insert_item(&mut self, item: ItemRecord) -> Result<(), StoreError> {
        self.manifest.counts[state_slot(item.state())] += 1;
        if item.state().is_final() {
            self.newly_final[state_slot(item.state())] += 1;
        }
        if item.rejected_by == Some(crate::state::item::RejectedBy::Local) {
            self.manifest.local_rejections += 1;
        }
        if self.exists {
            self.items.insert(item.index, item);
            return Ok(());
        }
        // A record intake would not have made (none does today) gets a record of its own.
        if let Some(record) = self.new_items.add(item) {
            self.items.insert(record.index, record);
        }
        if self.new_items.full_items() >= NEW_MANIFEST_SLICE {
            self.write_new_items(false)?;
        }
        Ok(())
    }

    /// Writes the new manifest's full blocks gathered so far (all of them when `all`).
    fn write_new_items(&mut self, all: bool) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        self.new_items
            .write_blocks(self.manifest.id, all, &mut batch)?;
        self.store.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The buckets of the client ids indexed in this transaction, merged with what the
    /// store holds for an existing manifest.
    fn bucket_writes(&mut self) -> Result<KeyValues, StoreError> {
        let mut out = Vec::new();
        for (bucket, mut entries) in self.new_items.take_buckets() {
            let key = blocks::bucket_key(bucket, self.manifest.id);
            if self.exists {
                if let Some(bytes) = self.store.tree.get(key)? {
                    let mut stored = blocks::decode_bucket(&key, &bytes)?;
                    stored.append(&mut entries);
                    entries = stored;
                }
            }
            out.push((key.to_vec(), encode(&StoredBucket::V1(entries))?));
        }
        Ok(out)
    }

    /// Applies an event to an item through the state machine and keeps the counts true.
    pub fn apply(&mut self, index: u32, event: ItemEvent) -> Result<ItemState, StoreError> {
        let mut item = self.item(index)?;
        let before = item.state();
        item.apply(event)?;
        let after = item.state();
        let slot_before = state_slot(before);
        self.manifest.counts[slot_before] = self.manifest.counts[slot_before].saturating_sub(1);
        self.manifest.counts[state_slot(after)] += 1;
        if after.is_final() && !before.is_final() {
            self.newly_final[state_slot(after)] += 1;
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

    pub fn index_name(&mut self) {
        self.extra.push((
            name_key(&self.manifest.name),
            self.manifest.id.to_be_bytes().to_vec(),
        ));
    }

    pub fn index_hash(&mut self) {
        self.extra.push((
            hash_key(&self.manifest.sha256),
            self.manifest.id.to_be_bytes().to_vec(),
        ));
    }

    pub fn index_client_item(&mut self, client_item_id: &str, index: u32) {
        self.new_items.index(client_item_id, index);
    }

    /// Writes everything and waits until it is durable: one atomic batch, except that a new
    /// manifest's full slices of items go first, in blocks; its last slice, its client
    /// index buckets and its record come last, in the one batch.
    pub async fn commit(self) -> Result<ManifestRecord, StoreError> {
        let store = self.store;
        let applied = self.apply_without_sync()?;
        store.durable(applied).await
    }

    /// Writes everything as [`Txn::commit`] does and lets the writer's lock go, without
    /// waiting for the disk: the batch is applied (readers see it) but counts only once
    /// [`Store::durable_together`] returned for it. Several transactions applied one after
    /// another then share one sync (intake's groups of files).
    pub fn apply_without_sync(mut self) -> Result<Applied, StoreError> {
        // A second transaction of one writer, begun before the first committed, would
        // write without the lock: refused.
        if self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none()
        {
            return Err(StoreError::WriterSpent);
        }
        let buckets = self.bucket_writes()?;
        let mut batch = sled::Batch::default();
        if !self.exists {
            // A new manifest's full slices of items went first, in batches of their own:
            // until its record is written, they are unreachable leftovers that a crash
            // leaves harmlessly behind. The last slice goes with the record, so that a
            // small manifest is one batch (each batch costs sled two writes of its log).
            self.new_items
                .write_blocks(self.manifest.id, true, &mut batch)?;
        }
        let record = encode(&StoredManifest::V2(self.manifest.clone()))?;
        let lone_record = if self.changes_record_only(&buckets) {
            Some(record)
        } else {
            batch.insert(&manifest_key(self.manifest.id)[..], record);
            None
        };
        for (index, item) in self.items {
            batch.insert(
                &item_key(self.manifest.id, index)[..],
                encode(&StoredItem::V2(item))?,
            );
        }
        for (seq, job) in std::mem::take(&mut self.jobs) {
            batch.insert(
                &job_key(self.manifest.id, seq)[..],
                encode(&StoredJob::V1(job))?,
            );
        }
        for (key, value) in std::mem::take(&mut self.extra) {
            batch.insert(key, value);
        }
        for (tent_id, record) in std::mem::take(&mut self.tent_polls) {
            batch.insert(tent_key(&tent_id), encode(&StoredTentPoll::V1(record))?);
        }
        for (key, value) in buckets {
            batch.insert(key, value);
        }
        fail::fail_point!("store-before-commit", |_| crate::crash::simulated_crash());
        let written = match lone_record {
            Some(record) => self
                .store
                .tree
                .insert(&manifest_key(self.manifest.id)[..], record)
                .map(|_| ()),
            None => self.store.tree.apply_batch(batch),
        };
        if let Err(e) = written {
            self.store
                .write_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e.into());
        }
        let ticket = self.store.durable.applied();
        // The batch is applied: the next writer may read it and write its own while this
        // one waits for the disk, and one sync serves both (group commit).
        release_writer(self.writer);
        Ok(Applied {
            ticket,
            created: !self.exists,
            finished_now: self.manifest.finished_at_ms.is_some() && !self.finished_before,
            newly_final: self.newly_final,
            manifest: self.manifest,
        })
    }

    /// Whether the transaction changes the manifest's record and nothing else (intake's
    /// `archived`, a moved cursor): sled's `insert` then writes it, atomic by itself,
    /// sparing the two writes of the log that a batch costs.
    fn changes_record_only(&self, buckets: &KeyValues) -> bool {
        self.exists
            && self.items.is_empty()
            && self.jobs.is_empty()
            && self.extra.is_empty()
            && self.tent_polls.is_empty()
            && buckets.is_empty()
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
    async fn apply_keeps_counts_and_refuses_illegal_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.new_manifest_id().unwrap();
        let writer = store.writer().await;
        let mut txn = writer
            .create(received_for_test(id, "daily", 2))
            .expect("create");
        txn.insert_item(ItemRecord::pending(
            id,
            0,
            "a".into(),
            "{}".into(),
            Default::default(),
        ))
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
