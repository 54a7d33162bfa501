//! The transaction that creates a manifest (intake's): its items, in intake blocks
//! written in slices as they come; its client ids, in buckets; its name and hash
//! indexes; and last its record, which is what makes the rest reachable.

use std::collections::BTreeMap;

use super::group::{apply_writes, holds_lock, put_items, KeyValues, WriterSlot};
use super::{
    blocks, encode, hash_key, name_key, Applied, ManifestRecord, Store, StoreError, StoredBucket,
    StoredManifest,
};
use crate::state::item::{ItemRecord, RejectedBy};
use crate::state::manifest::ItemCounts;

/// Items of a new manifest are written in batches of this many (80 blocks).
const NEW_MANIFEST_SLICE: usize = 2_000;

/// A manifest being created: nothing of it is reachable before its commit, and nothing of
/// it is read back through it (its items are on their way into blocks).
pub struct NewManifest<'w> {
    store: &'w Store,
    /// The writer's lock, let go at the commit.
    writer: &'w WriterSlot,
    manifest: ManifestRecord,
    /// Items intake would not have made (none does today): records of their own.
    items: BTreeMap<u32, ItemRecord>,
    /// The name and hash indexes.
    indexes: KeyValues,
    /// The items and client ids, on their way into blocks and buckets.
    new_items: blocks::NewItems,
    /// Items that are final from the start (rejected locally), by state slot.
    newly_final: ItemCounts,
}

impl<'w> NewManifest<'w> {
    pub(super) fn new(
        store: &'w Store,
        writer: &'w WriterSlot,
        manifest: ManifestRecord,
    ) -> NewManifest<'w> {
        NewManifest {
            store,
            writer,
            manifest,
            items: BTreeMap::new(),
            indexes: Vec::new(),
            new_items: Default::default(),
            newly_final: ItemCounts::default(),
        }
    }

    pub fn manifest(&self) -> &ManifestRecord {
        &self.manifest
    }

    /// Adds an item. Items are written to sled in blocks, in slices as they come, never
    /// all held at once; they stay unreachable leftovers (which a crash leaves harmlessly
    /// behind, and the next open removes) until the commit writes the manifest's record.
    pub fn insert_item(&mut self, item: ItemRecord) -> Result<(), StoreError> {
        self.manifest.counts.add(item.state());
        if item.state().is_final() {
            self.newly_final.add(item.state());
        }
        if item.rejected_by == Some(RejectedBy::Local) {
            self.manifest.local_rejections += 1;
        }
        if let Some(record) = self.new_items.add(item) {
            self.items.insert(record.index, record);
        }
        if self.new_items.full_items() >= NEW_MANIFEST_SLICE {
            let mut writes = Vec::new();
            self.new_items
                .write_blocks(self.manifest.id, false, &mut writes)?;
            self.store.insert_unreachable(writes)?;
        }
        Ok(())
    }

    /// Indexes the manifest's name (every NAME ever used).
    pub fn index_name(&mut self) {
        self.indexes.push((
            name_key(&self.manifest.name),
            self.manifest.id.to_be_bytes().to_vec(),
        ));
    }

    /// Indexes the manifest's bytes (accepted manifests only).
    pub fn index_hash(&mut self) {
        self.indexes.push((
            hash_key(&self.manifest.sha256),
            self.manifest.id.to_be_bytes().to_vec(),
        ));
    }

    /// Indexes an item's client id, for later edits.
    pub fn index_client_item(&mut self, client_item_id: &str, index: u32) {
        self.new_items.index(client_item_id, index);
    }

    /// Writes everything and waits until it is durable: the items went first, in blocks,
    /// unreachable until the record; the client id buckets, the indexes and the record come
    /// last, in one atomic commit (logged, or a batch when large).
    pub async fn commit(self) -> Result<ManifestRecord, StoreError> {
        let store = self.store;
        let applied = self.apply_without_sync()?;
        store.durable(applied).await
    }

    /// Writes everything as [`NewManifest::commit`] does and lets the writer's lock go,
    /// without waiting for the disk: the batch is applied (readers see it) but counts only
    /// once [`Store::durable_together`] returned for it. Several manifests applied one
    /// after another then share one sync (intake's groups of files).
    pub fn apply_without_sync(mut self) -> Result<Applied, StoreError> {
        let id = self.manifest.id;
        // A second transaction of its writer, which committed first, writes nothing.
        if !holds_lock(self.writer) {
            return Err(StoreError::WriterSpent);
        }
        // The last slice of items, before the rest: like every full slice, unreachable
        // until the record. Left out of the logged commit, whose `W` would copy them (its
        // size in memory and in the log: with 10,000 files dropped at once, one run peaked
        // at 173 MiB with them logged, against 117-150 MiB as batches).
        let mut blocks: KeyValues = Vec::new();
        self.new_items.write_blocks(id, true, &mut blocks)?;
        self.store.insert_unreachable(blocks)?;
        let mut writes: KeyValues = Vec::new();
        for (bucket, entries) in self.new_items.take_buckets() {
            let key = blocks::bucket_key(bucket, id);
            writes.push((key.to_vec(), encode(&StoredBucket::V1(entries))?));
        }
        writes.append(&mut self.indexes);
        put_items(&mut writes, id, std::mem::take(&mut self.items))?;
        let record = encode(&StoredManifest::V2(self.manifest.clone()))?;
        let ticket = apply_writes(self.store, self.writer, writes, (id, record))?;
        Ok(Applied {
            ticket,
            created: true,
            // A manifest is finished by a later transaction, never at its creation.
            finished_now: false,
            newly_final: self.newly_final,
            manifest: self.manifest,
        })
    }
}
