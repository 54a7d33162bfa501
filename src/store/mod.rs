//! The durable store: manifests, items, jobs and their indexes in one sled tree.
//!
//! Invariant: this is the only module that touches sled. Every change goes through a
//! transaction, a [`Txn`] on an existing manifest or a [`NewManifest`] that creates one,
//! which applies its writes atomically (logged after the commit record `W`, or a sled
//! batch when large: `logged.rs`; a new manifest's items go first, reachable only once
//! its record, written last, is there) and returns only after [`durable`] has made
//! them durable (sled's flush, then `fdatasync` of its log: sled's own `sync_file_range`
//! does not survive a power cut), so that callers can perform side effects (requests,
//! files) knowing the state that explains them survives a crash or a power cut. The one
//! exception, [`Txn::commit_soon`], is for what a restart repairs and nothing rests on: it
//! returns at once and is durable with the next sync, at most [`DURABLE_WITHIN`] later.
//! The writer's lock is let go before that wait, so that commits waiting together share
//! one sync (group commit).
//!
//! Key layout (all integers big-endian, so that byte order is numeric order):
//!
//! | key | value |
//! |---|---|
//! | `M` manifest_id:u64 | [`StoredManifest`] |
//! | `I` manifest_id:u64 index:u32 | [`StoredItem`]: the item, from its first change on (until then its block holds it) |
//! | `J` manifest_id:u64 job_seq:u32 | [`StoredJob`] |
//! | `N` name bytes | manifest_id:u64 (names ever used) |
//! | `H` sha256:32 bytes | manifest_id:u64 (bytes of accepted manifests) |
//! | `F` manifest_id:u64 block:u32 | [`blocks::StoredBlock`]: items 25×block.. as intake wrote them (written once) |
//! | `K` bucket:u16 manifest_id:u64 | [`blocks::StoredBucket`]: the manifest's client ids in that hash bucket (for edits) |
//! | `T` tent_id | [`StoredTentPoll`]: when the tent was last polled (any job, any fetch) |
//! | `G` template key `#` size class | [`StoredGenerationTimes`]: how long its recent bulk jobs of that size took |
//! | `P` template key | [`StoredTemplateProof`]: when its items last completed, and whether its last judged manifest tripped the failure threshold |
//! | `S` manifest_id:u64 | [`summary::StoredSummary`]: what stays of a pruned manifest |
//! | `V` | the store's format, u64 ([`STORE_FORMAT`]); any other is refused ([`StoreError::Older`], [`StoreError::Newer`]) |
//!
//! Records are bincode 1.3.3 (`bincode::serialize`, fixed-width integers, forever) of an
//! enum whose variants are versions; shipped variants never change.
//!
//! sled 0.34 treats a damaged log as a torn tail and silently drops what follows, which
//! could turn a damaged store into an empty one (and re-send everything). So beside sled a
//! small marker file, [`MARKER_FILE`], holds the newest manifest id ever committed; a store
//! that no longer has that manifest is refused as corrupt.
//!
//! The files: `records` what is stored and under which key; `open` the opening (lock,
//! compaction, format, marker, an interrupted intake's leftovers); `read` the readers;
//! `txn` the writer's lock and [`Txn`]; `new_manifest` [`NewManifest`]; `format` the `V` mark; `blocks`,
//! `durable`, `group`, [`compaction`], [`backup`] (with `stream`, the record stream it
//! shares with compaction), [`prune`], [`summary`], [`tally`].

pub mod backup;
mod blocks;
pub mod compaction;
mod durable;
mod format;
mod group;
mod logged;
mod new_manifest;
mod open;
pub mod prune;
mod read;
mod records;
mod stream;
pub mod summary;
pub mod tally;
mod txn;

pub use blocks::{StoredBlock, StoredBucket};
pub use compaction::Compaction;
pub use durable::SyncStats;
pub(crate) use format::FORMAT_KEY;
pub use format::{FoundFormat, STORE_FORMAT};
pub use group::{Applied, DURABLE_WITHIN};
pub use prune::Pruned;
pub use summary::{HistoryEntry, ManifestSummary};

pub use new_manifest::NewManifest;
pub use records::{
    ChunkCursor, ManifestRecord, Received, Retired, StoredGenerationTimes, StoredItem, StoredJob,
    StoredManifest, StoredTemplateProof, StoredTentPoll,
};
pub use txn::{Txn, Writer};

use std::path::PathBuf;

#[cfg(test)]
use open::when_unlocked;
use open::{open_sled, TREE};
use records::{
    decode, encode, generation_key, hash_key, item_key, job_key, manifest_key, name_key, prefixed,
    prefixed_pair, proof_key, read_u64, tent_key,
};

use crate::state::item::IllegalTransition;
use crate::state::job::IllegalJobTransition;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (is another tented-bulkd running on this state folder?)")]
    Locked { path: PathBuf },
    #[error("the store at {path} is corrupt ({detail}); it was left untouched: restore it from a backup or move it aside")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the store at {path} is corrupt: it has lost commits it once made durable ({marker} says manifest {newest} was committed; the newest the store holds is {found}): the disk did not keep writes it reported as synced. It was left untouched. To recover, with the daemon stopped, either restore the newest backup taken after manifest {newest} was received (move {path} aside, then `tented-bulkd restore FILE`; its unfinished manifests start paused), or start from the archive (move {path} aside, start the daemon, and move back into the inbox the archived manifests that have no result file in the outbox; check the Tented workspace first, as their requests may already have been sent). README: \"Recovery after a lost write\"")]
    LostCommits {
        path: PathBuf,
        marker: PathBuf,
        newest: u64,
        found: u64,
    },
    #[error("the store at {path} is of store format {found}, written by a development build before the first release; this tented-bulkd reads format {supported} only. It was left untouched: finish its manifests with the build that wrote it, or move it aside and start with an empty state folder (drop again into the inbox the archived manifests that have no result in the outbox)")]
    Older {
        path: PathBuf,
        found: FoundFormat,
        supported: u64,
    },
    #[error("the store at {path} was written by a newer tented-bulkd (store format {found}; this one reads up to {supported}); it was left untouched: run the newer version, or restore a backup taken by this one")]
    Newer {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("store: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record `{key}` cannot be decoded: {source}")]
    Decode { key: String, source: bincode::Error },
    #[error("store record cannot be encoded: {0}")]
    Encode(bincode::Error),
    #[error("store: manifest {0} does not exist")]
    NoManifest(u64),
    #[error("store: item {index} of manifest {manifest_id} does not exist")]
    NoItem { manifest_id: u64, index: u32 },
    #[error("store: item {index} of manifest {manifest_id} as intake wrote it does not read back: {detail}")]
    IntakeItem {
        manifest_id: u64,
        index: u32,
        detail: String,
    },
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error(transparent)]
    JobTransition(#[from] IllegalJobTransition),
    #[error("store: a transaction was begun from a writer whose lock a commit already let go (take a new writer)")]
    WriterSpent,
}

impl StoreError {
    /// A store that no start can use as it is (damaged, behind its marker, of another
    /// format, older or newer): the process exits 78, which systemd does not restart.
    pub fn needs_an_operator(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::LostCommits { .. }
                | StoreError::Older { .. }
                | StoreError::Newer { .. }
        )
    }
}

/// The file beside sled's own that records the newest manifest id committed.
pub const MARKER_FILE: &str = "tented-bulkd.newest-manifest";

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    marker: PathBuf,
    tally: std::sync::Arc<tally::Tally>,
    /// The newest manifest id in use: new ids are above it, whatever sled's generator
    /// says (a restored store's generator starts again from zero).
    newest_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A commit failed to write (a full disk): sled 0.34 then keeps failing until the
    /// store is opened again, which [`Store::write_probe`] finds out.
    write_failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The state folder's lock ([`compaction::LOCK_FILE`]), held while any clone lives.
    _lock: std::sync::Arc<std::fs::File>,
    /// The folder holding sled's files: the state folder, or its `store-N` once compacted.
    folder: PathBuf,
    /// Makes commits durable, several at a time ([`durable`]).
    durable: std::sync::Arc<durable::Durability>,
    /// How many syncs ran and how long they took (kept across a compaction).
    sync_stats: SyncStats,
    /// The newest manifest id written into [`MARKER_FILE`]: the marker only moves forward,
    /// and commits that finish together write it once.
    marked: std::sync::Arc<tokio::sync::Mutex<u64>>,
    /// The newest manifest id whose creating commit is durable.
    committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Manifests finished by a commit of this process not yet seen durable, with that
    /// commit's ticket ([`Store::sync_finish`]). Whatever was committed before the store
    /// opened is durable.
    finishes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, u64>>>,
}

impl Store {
    /// Whether a commit failed to write since the last good [`Store::write_probe`].
    pub fn write_failed(&self) -> bool {
        self.write_failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes and removes a small record, durably, under the writer's lock: whether the
    /// store can write now. sled 0.34 keeps the first I/O error of its log (a full disk)
    /// for good, so a store that fails this while its folder has room again must be
    /// opened again.
    pub async fn write_probe(&self) -> Result<(), StoreError> {
        const PROBE_KEY: &[u8] = b"Zwrite-probe";
        let _writer = self.writer.lock().await;
        self.tree.insert(PROBE_KEY, &[1u8][..])?;
        self.tree.remove(PROBE_KEY)?;
        let ticket = self.durable.applied();
        self.sync(ticket).await?;
        self.write_failed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// What finished since the store was opened (for the metrics).
    pub fn tally(&self) -> &tally::Tally {
        &self.tally
    }

    /// The store's size on disk, in bytes: every file in its folder (sled's log, snapshots,
    /// the marker), as `du` would count them.
    pub fn size_on_disk(&self) -> u64 {
        self.marker.parent().map_or(0, compaction::folder_bytes)
    }

    /// Makes everything written so far durable (at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.durable.applied();
        self.sync(ticket).await
    }

    /// Returns once the batch of `ticket` (from `self.durable.applied()`, taken after it was
    /// applied) is on the disk; a failure marks the store as failing to write.
    pub(crate) async fn sync(&self, ticket: u64) -> Result<(), StoreError> {
        let synced = self.durable.sync(&self.db, ticket).await;
        if synced.is_err() {
            self.write_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        synced
    }

    /// Returns once the commit that finished manifest `id` is on the disk: at once when it
    /// was seen durable already (or made before the store opened), else after the sync
    /// that covers it. Not [`Store::sync_applied`]: under load other commits are always
    /// waiting, and syncing them too cost a sync per finished manifest.
    pub async fn sync_finish(&self, id: u64) -> Result<(), StoreError> {
        let Some(ticket) = self.finish_ticket(id) else {
            return Ok(());
        };
        self.sync(ticket).await?;
        self.finish_durable(id, ticket);
        Ok(())
    }

    /// The ticket of the commit of this process that finished manifest `id`, until seen
    /// durable.
    fn finish_ticket(&self, id: u64) -> Option<u64> {
        self.finishes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .copied()
    }

    /// Manifest `id` was finished by the commit of `ticket`, not durable yet.
    pub(super) fn finish_applied(&self, id: u64, ticket: u64) {
        self.finishes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, ticket);
    }

    /// The commit of `ticket`, which finished manifest `id`, is durable.
    pub(super) fn finish_durable(&self, id: u64, ticket: u64) {
        let mut finishes = self
            .finishes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if finishes.get(&id).is_some_and(|t| *t <= ticket) {
            finishes.remove(&id);
        }
    }

    /// Returns once everything applied so far is on the disk (without a batch of its own).
    pub(crate) async fn sync_applied(&self) -> Result<(), StoreError> {
        let synced = self.durable.sync_applied(&self.db).await;
        if synced.is_err() {
            self.write_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        synced
    }

    /// Makes everything written so far durable, on this thread (while opening, restoring,
    /// compacting: no commit is waiting).
    pub(crate) fn sync_blocking(&self) -> Result<(), StoreError> {
        self.durable.applied();
        self.durable.sync_blocking(&self.db)
    }

    /// How many syncs the store ran and how long they took (for `/metrics`).
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// A new manifest id, never reused.
    pub fn new_manifest_id(&self) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let generated = self.db.generate_id()? + 1;
        let mut newest = self.newest_id.load(Ordering::SeqCst);
        loop {
            let id = generated.max(newest + 1);
            match self
                .newest_id
                .compare_exchange(newest, id, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(id),
                Err(actual) => newest = actual,
            }
        }
    }

    /// The highest manifest id the store holds, whole or pruned (0 when empty).
    fn newest_recorded_id(&self) -> Result<u64, StoreError> {
        let mut newest = 0;
        for prefix in [b'M', b'S'] {
            if let Some(entry) = self.tree.scan_prefix([prefix]).next_back() {
                let (key, _) = entry?;
                newest = newest.max(read_u64(&key[1..]).unwrap_or(0));
            }
        }
        Ok(newest)
    }
}

/// Test support: opens a store again in the same process, waiting for sled's lock.
#[cfg(test)]
pub(crate) fn reopen(path: &std::path::Path) -> Result<Store, StoreError> {
    when_unlocked(|| Store::open(path))
}

/// Test support: a pending item with no fields.
#[cfg(test)]
pub(crate) fn test_item(manifest_id: u64, index: u32) -> crate::state::item::ItemRecord {
    pending_for_test(manifest_id, index, &format!("row-{index}"))
}

/// Test support: a pending item with no fields, of the given client item id.
#[cfg(test)]
pub(crate) fn pending_for_test(
    manifest_id: u64,
    index: u32,
    client_item_id: &str,
) -> crate::state::item::ItemRecord {
    crate::state::item::ItemRecord::pending(
        manifest_id,
        index,
        client_item_id.to_owned(),
        "{}".into(),
        Default::default(),
    )
}

#[cfg(test)]
pub(crate) fn received_for_test(id: u64, name: &str, item_count: u32) -> ManifestRecord {
    ManifestRecord::received(Received {
        id,
        name: name.into(),
        inbox_file: format!("{name}.json"),
        kind: crate::manifest::ManifestKind::Bulk,
        received_at_ms: 1_000,
        sha256: [id as u8; 32],
        top: crate::manifest::TopFields::default(),
        top_given: "{}".into(),
        item_count,
        rejection: None,
    })
}

/// Test support: a manifest of `n` items (client ids `row-N`) committed as intake
/// commits it.
#[cfg(test)]
pub(crate) async fn committed_for_test(store: &Store, n: u32) -> u64 {
    let id = store.new_manifest_id().expect("id");
    let writer = store.writer().await;
    let mut txn = writer
        .create(received_for_test(id, "daily", n))
        .expect("create");
    for index in 0..n {
        txn.index_client_item(&format!("row-{index}"), index);
        txn.insert_item(test_item(id, index)).expect("insert");
    }
    txn.commit().await.expect("commit");
    id
}

/// Test support: every record of the store, in key order.
#[cfg(test)]
pub(crate) fn records_for_test(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree_records_for_test(&store.tree)
}

/// Test support: every record of a tree, in key order.
#[cfg(test)]
pub(crate) fn tree_records_for_test(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .expect("reads")
}
