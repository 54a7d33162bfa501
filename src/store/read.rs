//! Reading the store: manifests, items (from their blocks, overlaid by their own records),
//! jobs, tent polls, learned times and proofs, and the indexes (names, hashes, client
//! ids). Readers take no lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;

use super::{
    blocks, decode, generation_key, hash_key, item_key, job_key, manifest_key, name_key, prefixed,
    read_u64, tent_key, ManifestRecord, Store, StoreError, StoredGenerationTimes, StoredItem,
    StoredJob, StoredManifest, StoredTemplateProof, StoredTentPoll,
};
use crate::schedule::{GenerationTimes, TemplateProof, TentPollRecord};
use crate::state::item::{ItemRecord, ItemState};
use crate::state::job::JobRecord;

impl Store {
    pub fn manifest(&self, id: u64) -> Result<Option<ManifestRecord>, StoreError> {
        let key = manifest_key(id);
        match self.tree.get(key)? {
            Some(bytes) => {
                let record = decode::<StoredManifest>(&key, &bytes)?.current();
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    /// Every manifest, oldest first.
    pub fn manifests(&self) -> Result<Vec<ManifestRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([b'M']) {
            let (key, bytes) = entry?;
            let record = decode::<StoredManifest>(&key, &bytes)?.current();
            out.push(record);
        }
        Ok(out)
    }

    /// An item: its own record once it changed, else as intake wrote it in its block.
    pub fn item(&self, manifest_id: u64, index: u32) -> Result<Option<ItemRecord>, StoreError> {
        let key = item_key(manifest_id, index);
        if let Some(bytes) = self.tree.get(key)? {
            return Ok(Some(decode::<StoredItem>(&key, &bytes)?.current()));
        }
        self.block(manifest_id, index / blocks::BLOCK)?
            .into_iter()
            .find(|item| item.index == index)
            .map(|item| item.record(manifest_id))
            .transpose()
    }

    /// The items of one block as intake wrote them (empty when there is no such block).
    pub(super) fn block(
        &self,
        manifest_id: u64,
        block: u32,
    ) -> Result<Vec<blocks::IntakeItem>, StoreError> {
        let key = blocks::block_key(manifest_id, block);
        match self.tree.get(key)? {
            Some(bytes) => blocks::decode_block(&key, &bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Items `from..to` of a manifest, in order: the blocks that hold them, overlaid by the
    /// records of the items that changed.
    pub fn items_range(
        &self,
        manifest_id: u64,
        from: u32,
        to: u32,
    ) -> Result<Vec<ItemRecord>, StoreError> {
        let out = self.range_with(manifest_id, from..to, Ok, |item| item.record(manifest_id))?;
        Ok(out.into_values().collect())
    }

    /// The states of items `from..to` of a manifest, in order, as [`Store::items_range`]
    /// gives them, but an item still as intake wrote it is not parsed: what a look at
    /// whether there is something to send needs.
    pub fn states_range(
        &self,
        manifest_id: u64,
        from: u32,
        to: u32,
    ) -> Result<Vec<(u32, ItemState)>, StoreError> {
        let out = self.range_with(
            manifest_id,
            from..to,
            |record| Ok(record.state()),
            |item| Ok(item.state()),
        )?;
        Ok(out.into_iter().collect())
    }

    /// Items `range` of a manifest by index, each made by `of_record` from its own record
    /// or, where it has none, by `of_intake` from its block.
    fn range_with<T>(
        &self,
        manifest_id: u64,
        range: std::ops::Range<u32>,
        of_record: impl Fn(ItemRecord) -> Result<T, StoreError>,
        of_intake: impl Fn(blocks::IntakeItem) -> Result<T, StoreError>,
    ) -> Result<BTreeMap<u32, T>, StoreError> {
        let mut out = BTreeMap::new();
        if range.is_empty() {
            return Ok(out);
        }
        let records = item_key(manifest_id, range.start)..item_key(manifest_id, range.end);
        for entry in self.tree.range(records) {
            let (key, bytes) = entry?;
            let record = decode::<StoredItem>(&key, &bytes)?.current();
            out.insert(record.index, of_record(record)?);
        }
        let blocks = blocks::block_key(manifest_id, range.start / blocks::BLOCK)
            ..=blocks::block_key(manifest_id, (range.end - 1) / blocks::BLOCK);
        for entry in self.tree.range(blocks) {
            let (key, bytes) = entry?;
            if block_covered(&key, range.clone(), &out) {
                continue;
            }
            for item in blocks::decode_block(&key, &bytes)? {
                if range.contains(&item.index) && !out.contains_key(&item.index) {
                    out.insert(item.index, of_intake(item)?);
                }
            }
        }
        Ok(out)
    }

    /// Every item of a manifest, in order.
    pub fn items(&self, manifest_id: u64) -> Result<Vec<ItemRecord>, StoreError> {
        self.items_range(manifest_id, 0, u32::MAX)
    }

    pub fn job(&self, manifest_id: u64, seq: u32) -> Result<Option<JobRecord>, StoreError> {
        let key = job_key(manifest_id, seq);
        match self.tree.get(key)? {
            Some(bytes) => {
                let StoredJob::V1(record) = decode(&key, &bytes)?;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    pub fn jobs(&self, manifest_id: u64) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(prefixed(b'J', manifest_id)) {
            let (key, bytes) = entry?;
            let StoredJob::V1(record) = decode(&key, &bytes)?;
            out.push(record);
        }
        Ok(out)
    }

    /// The last poll of a tent, if it was ever polled.
    pub fn tent_poll(&self, tent_id: &str) -> Result<Option<TentPollRecord>, StoreError> {
        let key = tent_key(tent_id);
        match self.tree.get(&key)? {
            Some(bytes) => {
                let StoredTentPoll::V1(record) = decode(&key, &bytes)?;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    /// Every template's generation times.
    pub fn generation_times(&self) -> Result<HashMap<String, GenerationTimes>, StoreError> {
        self.by_key_name(b'G', |StoredGenerationTimes::V1(times)| times)
    }

    /// Every template's proof (the slow start per template).
    pub fn template_proofs(&self) -> Result<HashMap<String, TemplateProof>, StoreError> {
        self.by_key_name(b'P', |StoredTemplateProof::V1(proof)| proof)
    }

    /// Every record under `prefix` whose key is the prefix and a name, by that name.
    fn by_key_name<S: for<'de> Deserialize<'de>, T>(
        &self,
        prefix: u8,
        current: impl Fn(S) -> T,
    ) -> Result<HashMap<String, T>, StoreError> {
        let mut out = HashMap::new();
        for entry in self.tree.scan_prefix([prefix]) {
            let (key, bytes) = entry?;
            let value = current(decode(&key, &bytes)?);
            out.insert(String::from_utf8_lossy(&key[1..]).into_owned(), value);
        }
        Ok(out)
    }

    /// One template's generation times.
    pub fn generation_times_of(&self, key: &str) -> Result<GenerationTimes, StoreError> {
        match self.tree.get(generation_key(key))? {
            Some(bytes) => {
                let StoredGenerationTimes::V1(times) = decode(&generation_key(key), &bytes)?;
                Ok(times)
            }
            None => Ok(GenerationTimes::default()),
        }
    }

    /// The manifest that used `name`, if any.
    pub fn manifest_named(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree
            .get(name_key(name))?
            .and_then(|bytes| read_u64(&bytes)))
    }

    /// The accepted manifest with these bytes, if any.
    pub fn manifest_with_hash(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree
            .get(hash_key(hash))?
            .and_then(|bytes| read_u64(&bytes)))
    }

    /// Every (manifest_id, index) whose item carried this client_item_id, from its bucket
    /// (`K`).
    pub fn items_with_client_id(
        &self,
        client_item_id: &str,
    ) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut found = self.items_with_client_ids(&[client_item_id].into())?;
        Ok(found.remove(client_item_id).unwrap_or_default())
    }

    /// [`Store::items_with_client_id`] for many ids at once (an edit manifest's targets):
    /// each bucket they fall in is read once, whatever the number of ids in it. Every id
    /// asked for is in the answer, with no items when none carried it.
    pub fn items_with_client_ids(
        &self,
        client_item_ids: &HashSet<&str>,
    ) -> Result<HashMap<String, Vec<(u64, u32)>>, StoreError> {
        let mut out: HashMap<String, Vec<(u64, u32)>> = client_item_ids
            .iter()
            .map(|id| (id.to_string(), Vec::new()))
            .collect();
        let buckets: BTreeSet<u16> = client_item_ids
            .iter()
            .map(|id| blocks::bucket_of(id))
            .collect();
        for bucket in buckets {
            for entry in self.tree.scan_prefix(&blocks::bucket_key(bucket, 0)[..3]) {
                let (key, bytes) = entry?;
                let id = read_u64(&key[3..]).unwrap_or(0);
                for (client, index) in blocks::decode_bucket(&key, &bytes)? {
                    if let Some(found) = out.get_mut(client.as_str()) {
                        found.push((id, index));
                    }
                }
            }
        }
        for found in out.values_mut() {
            found.sort_unstable();
        }
        Ok(out)
    }
}

/// Whether every item of `range` that the block under `key` could hold is in `out`
/// already (has a record of its own): then the block is not decoded, the usual case once
/// a manifest is under way. The last block may hold fewer than 25: it is decoded unless
/// every index it could hold is there.
fn block_covered<V>(key: &[u8], range: std::ops::Range<u32>, out: &BTreeMap<u32, V>) -> bool {
    let Some(block) = key.get(9..13).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return false;
    };
    let first = u32::from_be_bytes(block).saturating_mul(blocks::BLOCK);
    let lo = first.max(range.start);
    let hi = first.saturating_add(blocks::BLOCK).min(range.end);
    lo >= hi || out.range(lo..hi).count() == (hi - lo) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::item::{ItemEvent, ItemState};
    use crate::store::{committed_for_test, received_for_test, reopen};

    #[tokio::test]
    async fn learned_generation_times_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path()).expect("open");
            let id = committed_for_test(&store, 2).await;
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            let mut times = GenerationTimes::default();
            times.record(42_000);
            txn.put_generation_times("tpl_x", &times).expect("encode");
            let proof = TemplateProof {
                proven_since_ms: Some(5),
                last_completed_at_ms: Some(7),
                tripped: true,
            };
            txn.put_template_proof("tpl_x", proof).expect("encode");
            txn.commit().await.expect("commit");
        }
        let store = reopen(dir.path()).expect("reopen");
        let proofs = store.template_proofs().expect("read");
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs["tpl_x"].last_completed_at_ms, Some(7));
        assert!(proofs["tpl_x"].tripped);
        let all = store.generation_times().expect("read");
        assert_eq!(all.len(), 1);
        assert_eq!(all["tpl_x"].expected_ms(), Some(42_000));
        assert_eq!(
            store.generation_times_of("tpl_x").expect("read"),
            all["tpl_x"]
        );
        assert_eq!(
            store.generation_times_of("tpl_y").expect("read"),
            GenerationTimes::default()
        );
    }

    #[tokio::test]
    async fn a_committed_manifest_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let store = Store::open(dir.path()).unwrap();
            id = store.new_manifest_id().unwrap();
            let writer = store.writer().await;
            let mut txn = writer
                .create(received_for_test(id, "daily", 2))
                .expect("create");
            txn.insert_item(crate::store::pending_for_test(id, 0, "a"))
                .expect("insert");
            txn.insert_item(ItemRecord::rejected_locally(
                id,
                1,
                "b".into(),
                "{}".into(),
                "bad".into(),
            ))
            .expect("insert");
            txn.index_name();
            txn.index_hash();
            txn.index_client_item("a", 0);
            txn.commit().await.unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        let record = store.manifest(id).unwrap().unwrap();
        assert_eq!(record.count(ItemState::Pending), 1);
        assert_eq!(record.count(ItemState::Rejected), 1);
        assert_eq!(record.unfinished(), 1);
        assert_eq!(store.items(id).unwrap().len(), 2);
        assert_eq!(store.manifest_named("daily").unwrap(), Some(id));
        assert_eq!(store.manifest_with_hash(&[id as u8; 32]).unwrap(), Some(id));
        assert_eq!(store.items_with_client_id("a").unwrap(), vec![(id, 0)]);
        assert!(store.items_with_client_id("ab").unwrap().is_empty());
    }

    #[tokio::test]
    async fn states_are_read_without_parsing_an_item_still_in_its_block() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let id = committed_for_test(&store, 2).await;
        // The block again, its second item's text one that no parse accepts (a damaged
        // store): only reading that item's record can fail on it.
        let key = blocks::block_key(id, 0);
        let mut items = store.block(id, 0).expect("block");
        items[1].given = "{not json".into();
        let bytes = crate::store::encode(&blocks::StoredBlock::V1(items)).expect("encode");
        store.tree.insert(key, bytes).expect("write");
        assert_eq!(
            store
                .states_range(id, 0, 2)
                .expect("states, nothing parsed"),
            vec![(0, ItemState::Pending), (1, ItemState::Pending)]
        );
        assert!(matches!(
            store.items_range(id, 0, 2),
            Err(StoreError::IntakeItem { index: 1, .. })
        ));
    }

    #[tokio::test]
    async fn items_are_read_from_their_block_until_they_change_and_from_their_record_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        // 2,060 items: slices of 2,000 written before the commit, a partial last block.
        let id = committed_for_test(&store, 2_060).await;
        let keys = |prefix: u8| store.tree.scan_prefix(prefixed(prefix, id)).count();
        assert_eq!(keys(b'F'), 83, "blocks of 25");
        assert_eq!(keys(b'I'), 0, "no per-item record before a change");
        let all = store.items(id).expect("items");
        assert_eq!(all.len(), 2_060);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, item)| item.index == i as u32));
        {
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            for index in [24, 25, 2_059] {
                txn.apply(index, ItemEvent::SendIntent { job_seq: 1 })
                    .expect("apply");
            }
            txn.commit().await.expect("commit");
        }
        let sending = |item: &ItemRecord| item.state() == ItemState::Sending;
        let range = store.items_range(id, 20, 30).expect("range");
        assert_eq!(
            range.iter().map(|item| item.index).collect::<Vec<_>>(),
            (20..30).collect::<Vec<_>>()
        );
        assert_eq!(
            range
                .iter()
                .filter(|item| sending(item))
                .map(|item| item.index)
                .collect::<Vec<_>>(),
            vec![24, 25]
        );
        assert!(sending(
            &store.item(id, 2_059).expect("read").expect("exists")
        ));
        assert!(!sending(
            &store.item(id, 2_058).expect("read").expect("exists")
        ));
        assert!(store.item(id, 2_060).expect("read").is_none());
        assert_eq!(
            store.items_range(id, 2_050, 2_100).expect("range").len(),
            10
        );
        assert_eq!(
            store
                .items(id)
                .expect("items")
                .iter()
                .filter(|i| sending(i))
                .count(),
            3
        );
        let record = store.manifest(id).expect("read").expect("exists");
        assert_eq!(record.count(ItemState::Sending), 3);
        assert_eq!(record.count(ItemState::Pending), 2_057);
        // The client index, from the buckets; an id of another manifest is told apart.
        let other = committed_for_test(&store, 3).await;
        assert_eq!(
            store.items_with_client_id("row-1").expect("read"),
            vec![(id, 1), (other, 1)]
        );
        assert_eq!(
            store.items_with_client_id("row-2059").expect("read"),
            vec![(id, 2_059)]
        );
        assert!(store
            .items_with_client_id("row-20599")
            .expect("read")
            .is_empty());
    }
}
