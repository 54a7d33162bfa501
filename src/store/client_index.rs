//! The index of items by `client_item_id` (store format 3), which finds the tent an edit
//! item's `target_client_item_id` names: 4,096 buckets per manifest, bucket = FNV-1a of
//! the id modulo 4,096, key `K` bucket:u16 manifest_id:u64, value a [`StoredClientBucket`]:
//! the manifest's items whose id falls in that bucket, (client_item_id, index) sorted by
//! index. A lookup reads one bucket of every manifest (one prefix scan); a 100,000-item
//! intake writes at most 4,096 keys instead of 100,000.
//!
//! Format 2 kept one key per item (`C` len:u32 client_item_id manifest_id:u64 index:u32,
//! empty value); they are regrouped into buckets when the store opens (each batch writes
//! its buckets and removes its `C` keys atomically, so a crash halfway leaves every entry
//! in one layout and the next open finishes the job). Nothing reads `C` keys but the
//! migration.
//!
//! The bucket function is part of the format: it never changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, encode, hex, read_u64, Store, StoreError};

/// Buckets per manifest.
pub const CLIENT_BUCKETS: u32 = 4_096;

/// `C` keys regrouped per batch by the migration.
const MIGRATION_SLICE: usize = 2_000;

/// One indexed item of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    pub client_item_id: String,
    pub index: u32,
}

/// A manifest's items in one bucket, sorted by index. Shipped variants never change.
#[derive(Serialize, Deserialize)]
pub enum StoredClientBucket {
    V1(Vec<ClientEntry>),
}

/// Entries not written yet, by bucket.
pub(super) type PendingEntries = BTreeMap<u16, Vec<ClientEntry>>;

/// The bucket of a client_item_id: 32-bit FNV-1a of its bytes, modulo [`CLIENT_BUCKETS`].
pub(super) fn bucket_of(client_item_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in client_item_id.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Under 4,096: always fits.
    (hash % CLIENT_BUCKETS) as u16
}

fn bucket_key(bucket: u16, manifest_id: u64) -> [u8; 11] {
    let mut key = [0u8; 11];
    key[0] = b'K';
    key[1..3].copy_from_slice(&bucket.to_be_bytes());
    key[3..].copy_from_slice(&manifest_id.to_be_bytes());
    key
}

/// Adds an entry to the pending ones.
pub(super) fn add_entry(pending: &mut PendingEntries, client_item_id: &str, index: u32) {
    pending
        .entry(bucket_of(client_item_id))
        .or_default()
        .push(ClientEntry {
            client_item_id: client_item_id.to_string(),
            index,
        });
}

/// A format-2 client key's parts: (client_item_id, manifest_id, index).
fn parse_format_2_key(key: &[u8]) -> Option<(String, u64, u32)> {
    let len = u32::from_be_bytes(key.get(1..5)?.try_into().ok()?) as usize;
    let id_end = 5usize.checked_add(len)?;
    let client = std::str::from_utf8(key.get(5..id_end)?).ok()?.to_string();
    let rest = key.get(id_end..)?;
    if rest.len() != 12 {
        return None;
    }
    let index = u32::from_be_bytes(rest[8..12].try_into().ok()?);
    Some((client, read_u64(rest)?, index))
}

impl Store {
    fn client_bucket(&self, bucket: u16, manifest_id: u64) -> Result<Vec<ClientEntry>, StoreError> {
        let key = bucket_key(bucket, manifest_id);
        match self.tree.get(key)? {
            Some(bytes) => {
                let StoredClientBucket::V1(entries) = decode(&key, &bytes)?;
                Ok(entries)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Adds to `batch` the manifest's buckets with the pending entries merged in (an
    /// entry replaces one of the same index).
    pub(super) fn write_client_entries(
        &self,
        manifest_id: u64,
        pending: PendingEntries,
        batch: &mut sled::Batch,
    ) -> Result<(), StoreError> {
        for (bucket, entries) in pending {
            let mut stored = self.client_bucket(bucket, manifest_id)?;
            for entry in entries {
                match stored.binary_search_by_key(&entry.index, |e| e.index) {
                    Ok(at) => stored[at] = entry,
                    Err(at) => stored.insert(at, entry),
                }
            }
            let value = encode(&StoredClientBucket::V1(stored))?;
            batch.insert(&bucket_key(bucket, manifest_id)[..], value);
        }
        Ok(())
    }

    /// Adds to `batch` the removal of these items' entries (pruning).
    pub(super) fn remove_client_entries<'a>(
        &self,
        manifest_id: u64,
        items: impl Iterator<Item = (&'a str, u32)>,
        batch: &mut sled::Batch,
    ) -> Result<(), StoreError> {
        let mut by_bucket: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        for (client_item_id, index) in items {
            by_bucket
                .entry(bucket_of(client_item_id))
                .or_default()
                .push(index);
        }
        for (bucket, indices) in by_bucket {
            let mut stored = self.client_bucket(bucket, manifest_id)?;
            stored.retain(|e| !indices.contains(&e.index));
            let key = bucket_key(bucket, manifest_id);
            if stored.is_empty() {
                batch.remove(&key[..]);
            } else {
                batch.insert(&key[..], encode(&StoredClientBucket::V1(stored))?);
            }
        }
        Ok(())
    }

    /// Every (manifest_id, index) whose item carried this client_item_id, in order.
    pub fn items_with_client_id(
        &self,
        client_item_id: &str,
    ) -> Result<Vec<(u64, u32)>, StoreError> {
        let bucket = bucket_of(client_item_id).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([b'K', bucket[0], bucket[1]]) {
            let (key, bytes) = entry?;
            let manifest_id =
                read_u64(&key[3..]).ok_or_else(|| StoreError::BadKey { key: hex(&key) })?;
            let StoredClientBucket::V1(entries) = decode(&key, &bytes)?;
            out.extend(
                entries
                    .iter()
                    .filter(|e| e.client_item_id == client_item_id)
                    .map(|e| (manifest_id, e.index)),
            );
        }
        Ok(out)
    }

    /// Regroups format 2's client keys (`C`) into buckets, a batch at a time: each batch
    /// writes its buckets and removes its keys atomically. Returns how many moved.
    pub(super) fn migrate_client_keys(&self) -> Result<u64, StoreError> {
        let mut moved = 0u64;
        let mut pending: BTreeMap<u64, PendingEntries> = BTreeMap::new();
        let mut keys = Vec::new();
        let mut entries = self.tree.scan_prefix([b'C']).peekable();
        while let Some(entry) = entries.next() {
            let (key, _) = entry?;
            let (client, manifest_id, index) =
                parse_format_2_key(&key).ok_or_else(|| StoreError::BadKey { key: hex(&key) })?;
            add_entry(pending.entry(manifest_id).or_default(), &client, index);
            keys.push(key);
            if keys.len() >= MIGRATION_SLICE || entries.peek().is_none() {
                let mut batch = sled::Batch::default();
                for (manifest_id, entries) in std::mem::take(&mut pending) {
                    self.write_client_entries(manifest_id, entries, &mut batch)?;
                }
                moved += keys.len() as u64;
                for key in keys.drain(..) {
                    batch.remove(key);
                }
                self.tree.apply_batch(batch)?;
            }
        }
        if moved > 0 {
            self.db.flush()?;
        }
        Ok(moved)
    }

    /// How many client index keys of each layout the store holds: (format 2's `C` keys,
    /// buckets).
    pub fn client_index_keys(&self) -> (usize, usize) {
        (
            self.tree.scan_prefix([b'C']).count(),
            self.tree.scan_prefix([b'K']).count(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_function_is_fixed() {
        // FNV-1a 32 of "" and "a" (published test vectors), modulo 4,096.
        assert_eq!(bucket_of(""), (0x811c_9dc5u32 % CLIENT_BUCKETS) as u16);
        assert_eq!(bucket_of("a"), (0xe40c_292cu32 % CLIENT_BUCKETS) as u16);
        assert!(bucket_of("crm-row-000001") < CLIENT_BUCKETS as u16);
    }

    #[test]
    fn a_format_2_key_parses_and_a_damaged_one_does_not() {
        let mut key = vec![b'C'];
        key.extend_from_slice(&3u32.to_be_bytes());
        key.extend_from_slice(b"abc");
        key.extend_from_slice(&7u64.to_be_bytes());
        key.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(parse_format_2_key(&key), Some(("abc".into(), 7, 9)));
        assert_eq!(parse_format_2_key(&key[..key.len() - 1]), None);
        key[4] = 200;
        assert_eq!(parse_format_2_key(&key), None);
    }
}
