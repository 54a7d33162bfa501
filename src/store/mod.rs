//! The durable store: manifests, items, jobs and their indexes in one sled tree.
//!
//! Invariant: this is the only module that touches sled. Every change goes through a
//! [`Txn`], which applies its writes as one atomic batch (for a new manifest: its items in
//! slices first, then its record, which is what makes them reachable) and returns only after
//! [`durable`] has made them durable (sled's flush, then `fdatasync` of its log: sled's own
//! `sync_file_range` does not survive a power cut), so that callers can perform side
//! effects (requests, files) knowing the state that explains them survives a crash or a
//! power cut. The writer's lock is let go before that wait, so that commits waiting
//! together share one sync (group commit).
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

pub mod backup;
mod blocks;
pub mod compaction;
mod durable;
mod format;
mod group;
pub mod prune;
mod stream;
pub mod summary;
pub mod tally;

pub use blocks::{StoredBlock, StoredBucket};
pub use compaction::Compaction;
pub use durable::SyncStats;
pub(crate) use format::FORMAT_KEY;
pub use format::{FoundFormat, STORE_FORMAT};
pub use group::Applied;
pub use prune::Pruned;
pub use summary::{FinalCounts, HistoryEntry, ManifestSummary};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestKind, TopFields};
use crate::schedule::{GenerationTimes, TemplateProof, TentPollRecord};
use crate::state::control::{Control, ControlEffect, ControlEvent};
use crate::state::item::{IllegalTransition, ItemEvent, ItemRecord, ItemState};
use crate::state::job::{IllegalJobTransition, JobRecord};

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
    /// A store that no start can use as it is (damaged, behind its marker, of a newer
    /// format): the process exits 78, which systemd does not restart.
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

/// A manifest as stored ([`StoredManifest::V2`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub id: u64,
    /// NAME, with its `~N` suffix when the name was used before.
    pub name: String,
    /// The file name it had in the inbox.
    pub inbox_file: String,
    pub kind: ManifestKind,
    pub received_at_ms: u64,
    /// Set once every item is final (the result file then follows).
    pub finished_at_ms: Option<u64>,
    pub sha256: [u8; 32],
    /// The top-level fields other than `kind` and `items`, parsed once at intake.
    pub top: TopFields,
    /// The same fields exactly as given, as JSON text, for the retry manifest.
    pub top_given: String,
    pub item_count: u32,
    /// Items rejected by validation (they count as `rejected` but had no API answer).
    pub local_rejections: u32,
    /// Why the manifest as a whole was rejected (then it has no items).
    pub rejection: Option<String>,
    /// Private: only [`ManifestRecord::apply_control`] moves it.
    control: Control,
    /// Set by `resume`: the failure threshold no longer pauses this manifest. Private:
    /// set only by the control machine's effect.
    threshold_overridden: bool,
    /// While credits are short: when sending tries again.
    pub credit_retry_at_ms: Option<u64>,
    pub next_job_seq: u32,
    /// Chunks below this number have all been taken for sending once.
    pub next_chunk: u32,
    /// Items by [`ItemState`], indexed as `ItemState::ALL`.
    /// Private: kept true by [`Txn::apply`] and [`Txn::insert_item`].
    counts: [u32; 11],
    /// The file has left the inbox for the archive.
    pub archived: bool,
    pub result_written: bool,
}

/// What intake knows of a manifest when it records it.
pub struct Received {
    pub id: u64,
    pub name: String,
    pub inbox_file: String,
    pub kind: ManifestKind,
    pub received_at_ms: u64,
    pub sha256: [u8; 32],
    pub top: TopFields,
    pub top_given: String,
    pub item_count: u32,
    pub rejection: Option<String>,
}

impl ManifestRecord {
    /// A manifest just taken from the inbox: running, nothing sent, nothing counted yet.
    pub fn received(r: Received) -> ManifestRecord {
        ManifestRecord {
            id: r.id,
            name: r.name,
            inbox_file: r.inbox_file,
            kind: r.kind,
            received_at_ms: r.received_at_ms,
            finished_at_ms: None,
            sha256: r.sha256,
            top: r.top,
            top_given: r.top_given,
            item_count: r.item_count,
            local_rejections: 0,
            rejection: r.rejection,
            control: Control::Running,
            threshold_overridden: false,
            credit_retry_at_ms: None,
            next_job_seq: 0,
            next_chunk: 0,
            counts: [0; 11],
            archived: false,
            result_written: false,
        }
    }

    pub fn threshold_overridden(&self) -> bool {
        self.threshold_overridden
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Applies a control event through the machine of [`Control`] and its effect on the
    /// record's other fields. Returns whether anything changed.
    pub fn apply_control(&mut self, event: ControlEvent) -> bool {
        let Some((next, effect)) = self.control.next(event) else {
            return false;
        };
        self.control = next;
        match effect {
            Some(ControlEffect::OverrideThreshold) => self.threshold_overridden = true,
            Some(ControlEffect::ClearCreditRetry) => self.credit_retry_at_ms = None,
            None => {}
        }
        true
    }

    /// Test support: a record with these counts, bypassing the store.
    #[cfg(test)]
    pub(crate) fn with_count(mut self, state: ItemState, n: u32) -> ManifestRecord {
        self.counts[state_slot(state)] = n;
        self
    }

    pub fn count(&self, state: ItemState) -> u32 {
        self.counts[state_slot(state)]
    }

    pub fn unfinished(&self) -> u32 {
        ItemState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| self.count(*s))
            .sum()
    }

    /// Records that every item is final, at `now_ms` (once): the result file follows.
    /// Returns whether it did now.
    pub fn finish(&mut self, now_ms: u64) -> bool {
        if self.finished_at_ms.is_some() || self.unfinished() > 0 {
            return false;
        }
        self.finished_at_ms = Some(now_ms);
        true
    }

    pub fn file_name(&self) -> String {
        format!("{}.json", self.name)
    }
}

fn state_slot(state: ItemState) -> usize {
    ItemState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
pub enum StoredGenerationTimes {
    V1(GenerationTimes),
}

#[derive(Serialize, Deserialize)]
pub enum StoredTemplateProof {
    V1(TemplateProof),
}

#[derive(Serialize, Deserialize)]
pub enum StoredTentPoll {
    V1(TentPollRecord),
}

/// A record version written only by development builds before store format 3, the first
/// release's baseline. Never read: a store that could hold one is refused when it opens
/// ([`StoreError::Older`]). The variant keeps its place so that the versions after it keep
/// their encoding (bincode writes a variant's index).
#[derive(Debug, Serialize, Deserialize)]
pub enum Retired {}

// Decoded and converted at once, never kept: the size of its variants is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum StoredManifest {
    V1(Retired),
    V2(ManifestRecord),
}

// Decoded and converted at once, never kept: the size of its variants is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum StoredItem {
    V1(Retired),
    V2(ItemRecord),
}

impl StoredManifest {
    fn current(self) -> ManifestRecord {
        match self {
            StoredManifest::V1(retired) => match retired {},
            StoredManifest::V2(record) => record,
        }
    }
}

impl StoredItem {
    fn current(self) -> ItemRecord {
        match self {
            StoredItem::V1(retired) => match retired {},
            StoredItem::V2(record) => record,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub enum StoredJob {
    V1(JobRecord),
}

/// sled's page cache (its default is 1 GiB, too much for a daemon that runs for months):
/// 64 MiB. A 100,000-item intake fills whatever cache there is while the validated
/// manifest is still held, and SPEC section 7 allows 200 MB for the whole process (the
/// intake's peak is 110-122 MiB, BENCHMARKS.md); blocks missing from the cache are read
/// back from the OS's page cache.
const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Items of a new manifest are written in batches of this many (80 blocks).
const NEW_MANIFEST_SLICE: usize = 2_000;

/// The file beside sled's own that records the newest manifest id committed.
pub const MARKER_FILE: &str = "tented-bulkd.newest-manifest";

fn manifest_key(id: u64) -> [u8; 9] {
    prefixed(b'M', id)
}

fn item_key(id: u64, index: u32) -> [u8; 13] {
    prefixed_pair(b'I', id, index)
}

fn job_key(id: u64, seq: u32) -> [u8; 13] {
    prefixed_pair(b'J', id, seq)
}

/// `prefix`, a manifest id and a number of that manifest (an item index, a job seq).
fn prefixed_pair(prefix: u8, id: u64, n: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..9].copy_from_slice(&prefixed(prefix, id));
    key[9..].copy_from_slice(&n.to_be_bytes());
    key
}

fn prefixed(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn name_key(name: &str) -> Vec<u8> {
    let mut key = vec![b'N'];
    key.extend_from_slice(name.as_bytes());
    key
}

fn generation_key(key: &str) -> Vec<u8> {
    let mut out = vec![b'G'];
    out.extend_from_slice(key.as_bytes());
    out
}

fn proof_key(key: &str) -> Vec<u8> {
    let mut out = vec![b'P'];
    out.extend_from_slice(key.as_bytes());
    out
}

fn tent_key(tent_id: &str) -> Vec<u8> {
    let mut key = vec![b'T'];
    key.extend_from_slice(tent_id.as_bytes());
    key
}

fn hash_key(hash: &[u8; 32]) -> Vec<u8> {
    let mut key = vec![b'H'];
    key.extend_from_slice(hash);
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(value).map_err(StoreError::Encode)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(&key[..1]).into_owned() + &hex(&key[1..]),
        source,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}

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
}

/// `open` tried again for up to 5 s while it finds the store locked: sled's background
/// threads hold its lock a moment after its last handle in this process is dropped.
fn when_unlocked<T>(mut open: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Err(StoreError::Locked { .. })
                if started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The one sled tree the store uses.
const TREE: &str = "pipeline";

/// Opens sled's files in `folder`. A folder held by another process or a corrupt one
/// stops with a clear error; it is never deleted or repaired.
fn open_sled(folder: &Path) -> Result<sled::Db, StoreError> {
    // What an earlier process wrote and never synced (it was killed) is made durable before
    // sled reads it: sled writes a snapshot of what it finds, synced, and a snapshot ahead
    // of the log on the disk is a store sled refuses after a power cut.
    durable::sync_before_open(folder)?;
    sled::Config::new()
        .path(folder)
        .cache_capacity(STORE_CACHE_BYTES)
        // Every commit flushes before its side effects; sled's own flush every 500 ms
        // would only wake an idle daemon twice a second.
        .flush_every_ms(None)
        .open()
        .map_err(|source| {
            let text = source.to_string();
            match &source {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || text.contains("lock")
                        || io.raw_os_error() == Some(11) =>
                {
                    StoreError::Locked {
                        path: folder.to_path_buf(),
                    }
                }
                sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
                    StoreError::Corrupt {
                        path: folder.to_path_buf(),
                        detail: text,
                    }
                }
                _ => StoreError::Open {
                    path: folder.to_path_buf(),
                    source,
                },
            }
        })
}

/// Fills the next `store-N` from the spool and switches to it; when that fails, opens the
/// old store again (it stays the store, and the next start tries again). `sizes` are the
/// files' and the records' bytes before, for the log line.
fn compacted_or_reopened(
    path: &Path,
    folder: &Path,
    (spool, records): (&Path, u64),
    stats: &SyncStats,
    (files, live): (u64, u64),
) -> Result<(sled::Db, sled::Tree, PathBuf, durable::Durability), StoreError> {
    let started = std::time::Instant::now();
    match compaction::fill_and_switch(path, folder, spool, records, stats) {
        Ok(compacted) => {
            if let Err(e) = compaction::remove_leftovers(path, &compacted.folder) {
                tracing::warn!("the store's old files stay until the next start: {e}");
            }
            tracing::info!(
                before_bytes = files,
                after_bytes = compaction::folder_bytes(&compacted.folder),
                records_bytes = live,
                took_ms = started.elapsed().as_millis() as u64,
                folder = %compacted.folder.display(),
                "store compacted"
            );
            Ok((
                compacted.db,
                compacted.tree,
                compacted.folder,
                compacted.durable,
            ))
        }
        Err(e) => {
            tracing::error!("cannot compact the store ({e}); it stays as it was, and is tried again at the next start");
            let db = when_unlocked(|| open_sled(folder))?;
            let tree = db.open_tree(TREE)?;
            let durable = durable::Durability::open(folder, &db, stats.clone())?;
            Ok((db, tree, folder.to_path_buf(), durable))
        }
    }
}

impl Store {
    /// Opens (or creates) the store in the state folder `path`, compacting it first when
    /// its files have grown past [`Compaction::default`]'s bounds. A store held by another
    /// process or a corrupt one stops with a clear error; it is never deleted or repaired.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, Compaction::default())
    }

    /// [`Store::open`] with the given compaction bounds.
    pub fn open_with(path: &Path, compaction: Compaction) -> Result<Store, StoreError> {
        let lock = compaction::lock(path)?;
        let folder = compaction::sled_folder(path)?;
        let removed = compaction::remove_leftovers(path, &folder)?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed what an interrupted compaction left");
        }
        let db = open_sled(&folder)?;
        let tree = db.open_tree(TREE)?;
        let sync_stats = SyncStats::default();
        let durable = durable::Durability::open(&folder, &db, sync_stats.clone())?;
        let store = Store {
            db,
            tree,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            marker: path.join(MARKER_FILE),
            tally: Default::default(),
            newest_id: Default::default(),
            write_failed: Default::default(),
            _lock: std::sync::Arc::new(lock),
            folder: folder.clone(),
            durable: std::sync::Arc::new(durable),
            sync_stats,
            marked: Default::default(),
            committed: Default::default(),
        };
        // First: a store of another format is left untouched, whatever else it holds.
        store.check_format(path)?;
        store.check_marker(path)?;
        let store = store.compact_if_due(path, &folder, compaction)?;
        store.newest_id.store(
            store.newest_recorded_id()?,
            std::sync::atomic::Ordering::SeqCst,
        );
        let leftovers = store.remove_intake_leftovers()?;
        if leftovers > 0 {
            tracing::info!(
                leftovers,
                "removed the items of an intake a crash interrupted (its manifest was never recorded)"
            );
        }
        Ok(store)
    }

    /// Compacts the store (see [`compaction`]) when its files are past the bounds: its
    /// records spooled to a file, the store closed, a fresh one filled from the spool and
    /// switched to. A compaction that fails before its switch (a full disk) leaves the
    /// store as it was (opened again), and is tried again at the next open.
    fn compact_if_due(
        self,
        path: &Path,
        folder: &Path,
        compaction: Compaction,
    ) -> Result<Store, StoreError> {
        let files = compaction::folder_bytes(folder);
        if files <= compaction.min_bytes {
            return Ok(self);
        }
        let live = compaction::live_bytes(&self.tree)?;
        if !compaction.due(files, live) {
            return Ok(self);
        }
        let (spool, records) = match compaction::spool(path, &self.tree) {
            Ok(spooled) => spooled,
            Err(e) => {
                tracing::error!("cannot compact the store ({e}); it stays as it was, and is tried again at the next start");
                return Ok(self);
            }
        };
        let Store {
            db,
            tree,
            writer,
            marker,
            tally,
            newest_id,
            write_failed,
            _lock,
            folder: _,
            durable,
            sync_stats,
            marked,
            committed,
        } = self;
        drop(tree);
        drop(durable);
        drop(db);
        let (db, tree, folder, durable) =
            compacted_or_reopened(path, folder, (&spool, records), &sync_stats, (files, live))?;
        Ok(Store {
            db,
            tree,
            writer,
            marker,
            tally,
            newest_id,
            write_failed,
            _lock,
            folder,
            durable: std::sync::Arc::new(durable),
            sync_stats,
            marked,
            committed,
        })
    }

    /// Removes the blocks and item records of manifests that have neither a record nor a
    /// summary: what an intake interrupted by a crash wrote before its manifest's record
    /// (which never came). Nothing else writes items without their manifest, and ids are
    /// never reused, so nothing reachable goes. Returns how many keys went.
    pub(crate) fn remove_intake_leftovers(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for prefix in [b'F', b'I'] {
            let mut from = prefixed(prefix, 0).to_vec();
            // One key per manifest read here: the scan jumps to the next manifest's keys.
            while let Some(entry) = self.tree.range(from.clone()..[prefix + 1].to_vec()).next() {
                let (key, _) = entry?;
                let Some(id) = read_u64(&key[1..]) else { break };
                if self.tree.get(manifest_key(id))?.is_none() && self.summary(id)?.is_none() {
                    let mut batch = sled::Batch::default();
                    for entry in self.tree.scan_prefix(prefixed(prefix, id)) {
                        let (key, _) = entry?;
                        batch.remove(key);
                        removed += 1;
                    }
                    self.tree.apply_batch(batch)?;
                }
                match id.checked_add(1) {
                    Some(next) => from = prefixed(prefix, next).to_vec(),
                    None => break,
                }
            }
        }
        if removed > 0 {
            self.sync_blocking()?;
        }
        Ok(removed)
    }

    /// Refuses a store that lost the newest manifest it once committed.
    fn check_marker(&self, path: &Path) -> Result<(), StoreError> {
        let text = match std::fs::read_to_string(&self.marker) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("cannot read {}: {e}", self.marker.display()),
                })
            }
        };
        let Ok(newest) = text.trim().parse::<u64>() else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("{} does not hold a manifest id", self.marker.display()),
            });
        };
        // A pruned manifest keeps its summary: it was recorded all the same.
        if !self.manifest_ever_recorded(newest).unwrap_or(false) {
            return Err(StoreError::LostCommits {
                path: path.to_path_buf(),
                marker: self.marker.clone(),
                newest,
                found: self.newest_recorded_id().unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Records that the commit creating manifest `id` is durable, in [`MARKER_FILE`]: the
    /// newest such id is written, once for commits that finish together, never backwards.
    async fn mark_committed(&self, id: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        self.committed.fetch_max(id, Ordering::SeqCst);
        let mut marked = self.marked.lock().await;
        let newest = self.committed.load(Ordering::SeqCst);
        if *marked >= newest {
            return Ok(());
        }
        // Three syncs of files: off the runtime's workers (a hung disk stalls one thread).
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_marker(newest))
            .await
            .map_err(|e| StoreError::Io {
                path: self.marker.clone(),
                source: std::io::Error::other(format!("the marker task failed: {e}")),
            })??;
        *marked = newest;
        Ok(())
    }

    /// Records `id` as the newest manifest committed (after its commit is durable). The
    /// first time: a new file, synced, renamed into place, the folder synced. After that
    /// the file is overwritten in place (21 bytes at offset 0, within one sector, which a
    /// disk writes whole) and synced: a rename over it at every commit deleted an inode
    /// each time, and on ext4 without a journal every later file creation then scans
    /// past the recently deleted inodes (measured: a quarter of the daemon's CPU with a
    /// thousand small manifests).
    fn write_marker(&self, id: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt as _;
        let io = |source: std::io::Error| StoreError::Open {
            path: self.marker.clone(),
            source: sled::Error::Io(source),
        };
        // Fixed width, so that an overwrite leaves nothing of a longer id behind.
        let text = format!("{id:020}\n");
        match std::fs::OpenOptions::new().write(true).open(&self.marker) {
            Ok(file) => {
                file.write_all_at(text.as_bytes(), 0).map_err(io)?;
                file.sync_data().map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut file = atomic_write_file::AtomicWriteFile::options()
                    .open(&self.marker)
                    .map_err(io)?;
                std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
                file.commit().map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(())
    }

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

    /// Takes the single writer's lock: every transaction happens under it. A commit lets
    /// it go once its batch is applied (see [`Txn::commit`]): one writer, one commit.
    pub async fn writer(&self) -> Writer<'_> {
        let guard = std::sync::Arc::clone(&self.writer).lock_owned().await;
        Writer {
            store: self,
            guard: std::sync::Mutex::new(Some(guard)),
        }
    }

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
    fn block(&self, manifest_id: u64, block: u32) -> Result<Vec<blocks::IntakeItem>, StoreError> {
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
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = BTreeMap::new();
        for entry in self
            .tree
            .range(item_key(manifest_id, from)..item_key(manifest_id, to))
        {
            let (key, bytes) = entry?;
            let record = decode::<StoredItem>(&key, &bytes)?.current();
            out.insert(record.index, record);
        }
        let blocks = blocks::block_key(manifest_id, from / blocks::BLOCK)
            ..=blocks::block_key(manifest_id, (to - 1) / blocks::BLOCK);
        for entry in self.tree.range(blocks) {
            let (key, bytes) = entry?;
            self.overlay_block(manifest_id, &key, &bytes, from..to, &mut out)?;
        }
        Ok(out.into_values().collect())
    }

    /// Adds the items of a block in `range` that have no record of their own to `out`.
    fn overlay_block(
        &self,
        manifest_id: u64,
        key: &[u8],
        bytes: &[u8],
        range: std::ops::Range<u32>,
        out: &mut BTreeMap<u32, ItemRecord>,
    ) -> Result<(), StoreError> {
        // A block whose items in range all have records of their own is not decoded (the
        // usual case once a manifest is under way). The last block may hold fewer than
        // 25: it is decoded unless every index it could hold is there.
        if let Some(block) = key.get(9..13).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            let first = u32::from_be_bytes(block).saturating_mul(blocks::BLOCK);
            let lo = first.max(range.start);
            let hi = first.saturating_add(blocks::BLOCK).min(range.end);
            if lo >= hi || out.range(lo..hi).count() == (hi - lo) as usize {
                return Ok(());
            }
        }
        for item in blocks::decode_block(key, bytes)? {
            if range.contains(&item.index) && !out.contains_key(&item.index) {
                out.insert(item.index, item.record(manifest_id)?);
            }
        }
        Ok(())
    }

    /// Every item of a manifest, in order.
    pub fn items(&self, manifest_id: u64) -> Result<Vec<ItemRecord>, StoreError> {
        let mut out = BTreeMap::new();
        for entry in self.tree.scan_prefix(prefixed(b'I', manifest_id)) {
            let (key, bytes) = entry?;
            let record = decode::<StoredItem>(&key, &bytes)?.current();
            out.insert(record.index, record);
        }
        for entry in self.tree.scan_prefix(prefixed(b'F', manifest_id)) {
            let (key, bytes) = entry?;
            self.overlay_block(manifest_id, &key, &bytes, 0..u32::MAX, &mut out)?;
        }
        Ok(out.into_values().collect())
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

/// The writer's lock, held from [`Store::writer`] until a transaction begun from it
/// commits (or the writer is dropped). Transactions are begun from it.
pub struct Writer<'a> {
    store: &'a Store,
    /// Taken (and so let go) by the commit once its batch is applied.
    guard: std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
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

/// Test support: a bulk manifest just received, as the store's own tests make them.
/// Test support: opens a store again in the same process, waiting for sled's lock.
#[cfg(test)]
pub(crate) fn reopen(path: &Path) -> Result<Store, StoreError> {
    when_unlocked(|| Store::open(path))
}

/// Test support: a pending item with no fields.
#[cfg(test)]
pub(crate) fn test_item(manifest_id: u64, index: u32) -> ItemRecord {
    ItemRecord::pending(
        manifest_id,
        index,
        format!("row-{index}"),
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
        kind: ManifestKind::Bulk,
        received_at_ms: 1_000,
        sha256: [id as u8; 32],
        top: TopFields::default(),
        top_given: "{}".into(),
        item_count,
        rejection: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: u64) -> ManifestRecord {
        ManifestRecord::received(Received {
            id,
            name: "daily".into(),
            inbox_file: "daily.json".into(),
            kind: ManifestKind::Bulk,
            received_at_ms: 1,
            sha256: [7; 32],
            top: TopFields::default(),
            top_given: "{}".into(),
            item_count: 2,
            rejection: None,
        })
    }

    #[tokio::test]
    async fn learned_generation_times_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path()).expect("open");
            let id = store.new_manifest_id().expect("id");
            let writer = store.writer().await;
            let mut txn = writer.create(manifest(id)).expect("create");
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
            let mut txn = writer.create(manifest(id)).expect("create");
            txn.insert_item(ItemRecord::pending(
                id,
                0,
                "a".into(),
                "{}".into(),
                Default::default(),
            ))
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
        assert_eq!(store.manifest_with_hash(&[7; 32]).unwrap(), Some(id));
        assert_eq!(store.items_with_client_id("a").unwrap(), vec![(id, 0)]);
        assert!(store.items_with_client_id("ab").unwrap().is_empty());
    }

    /// A manifest of `n` items (client ids `row-N`) committed as intake commits it.
    async fn committed(store: &Store, n: u32) -> u64 {
        let id = store.new_manifest_id().expect("id");
        let writer = store.writer().await;
        let mut record = manifest(id);
        record.item_count = n;
        let mut txn = writer.create(record).expect("create");
        for index in 0..n {
            txn.index_client_item(&format!("row-{index}"), index);
            txn.insert_item(test_item(id, index)).expect("insert");
        }
        txn.commit().await.expect("commit");
        id
    }

    #[tokio::test]
    async fn items_are_read_from_their_block_until_they_change_and_from_their_record_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        // 2,060 items: slices of 2,000 written before the commit, a partial last block.
        let id = committed(&store, 2_060).await;
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
        let other = committed(&store, 3).await;
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

    #[tokio::test]
    async fn the_items_of_an_intake_a_crash_interrupted_are_removed_at_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kept, lost);
        {
            let store = Store::open(dir.path()).expect("open");
            kept = committed(&store, 30).await;
            lost = store.new_manifest_id().expect("id");
            let writer = store.writer().await;
            let mut txn = writer.create(manifest(lost)).expect("create");
            // 2,050 items: the first slice of blocks is written before the commit.
            for index in 0..2_050 {
                txn.insert_item(test_item(lost, index)).expect("insert");
            }
            assert!(store
                .tree
                .scan_prefix(prefixed(b'F', lost))
                .next()
                .is_some());
            // The crash: no commit, so no manifest record.
            drop(txn);
            store.db.flush().expect("flush");
        }
        let store = reopen(dir.path()).expect("reopen");
        assert!(store
            .tree
            .scan_prefix(prefixed(b'F', lost))
            .next()
            .is_none());
        assert!(store.manifest(lost).expect("read").is_none());
        assert_eq!(
            store.items(kept).expect("read").len(),
            30,
            "a recorded manifest keeps its items"
        );
        assert_eq!(store.remove_intake_leftovers().expect("scan"), 0);
    }

    #[tokio::test]
    async fn a_second_transaction_of_one_writer_cannot_commit_without_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let (a, b) = (
            store.new_manifest_id().expect("id"),
            store.new_manifest_id().expect("id"),
        );
        let writer = store.writer().await;
        let first = writer.create(manifest(a)).expect("create");
        let second = writer.create(manifest(b)).expect("create");
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
        let mut txn = writer.create(manifest(id)).expect("create");
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
