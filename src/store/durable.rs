//! One durable commit: the only place where the store's writes reach the disk.
//!
//! sled 0.34 on Linux makes its log "stable" with `sync_file_range`, which writes no
//! metadata (the log's growing length) and does not flush the disk's cache: after a power
//! cut a store flushed that way loses commits whose effects (requests, files) already
//! happened. So a commit counts only once [`Durability::sync`] has returned: sled's flush
//! (its buffers written), then `fdatasync` of its log file through a second handle
//! (`fsync` acts on the file, whoever opened it), then `fsync` of any blob file sled wrote
//! since the last sync and of their folder.
//!
//! Group commit: a writer applies its batch, takes a ticket ([`Durability::applied`]),
//! lets the writer's lock go and waits in [`Durability::sync`]. One sync at a time runs;
//! it covers every batch applied before it started, so the writers that queued behind it
//! find their ticket covered and return without a sync of their own. N commits that wait
//! together cost two syncs, not N. Under load (the last sync ended less than
//! [`BUSY_WITHIN`] ago) a sync first waits [`GATHER`], so that the commits applied
//! meanwhile ride on it too (PostgreSQL's `commit_delay`); an idle store syncs at once.
//! What a restart repairs needs no sync of its own
//! ([`super::Store::durable_soon`]): it rides on the next commit's, or on one run at most
//! [`super::DURABLE_WITHIN`] later.
//!
//! Nothing here runs unless something was written: an idle daemon does no sync and sled's
//! own periodic flusher stays off.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::StoreError;

/// sled's log file, in its folder.
const LOG_FILE: &str = "db";
/// sled's configuration file, written once when the folder is created.
const CONF_FILE: &str = "conf";
/// sled's folder of values too large for the log (one file each).
const BLOBS_FOLDER: &str = "blobs";

/// How many syncs ran and how long they took (for `/metrics`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SyncStats {
    pub syncs: Counter,
    pub seconds: Histogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            syncs: Counter::default(),
            // 0.1 ms to about 3 s.
            seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        }
    }
}

/// The durability of one sled folder: its files' handles and the group commit's counters.
#[derive(Debug)]
pub(crate) struct Durability {
    folder: PathBuf,
    /// A second handle on sled's log, for `fdatasync`.
    log: File,
    /// Batches applied to sled so far (tickets handed out).
    applied: AtomicU64,
    /// Every ticket up to this one is on the disk.
    durable: AtomicU64,
    /// One sync at a time; the waiters behind it are covered by the next one.
    gate: tokio::sync::Mutex<()>,
    /// Blob files already synced, with their length then: sled writes a blob in several
    /// writes from the committing thread, which may be under way while another commit's
    /// sync scans the folder; a blob whose length changed since is synced again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// A sync failed: Linux may have dropped the failed pages' dirty state, so a later
    /// `fdatasync` can succeed without writing them. Every sync fails from then on, until
    /// the store is opened again (the daemon does so when its write probe fails).
    poisoned: std::sync::atomic::AtomicBool,
    stats: SyncStats,
    /// Something was applied for [`super::Store::durable_soon`]: the loop
    /// [`super::Store::sync_soon`] syncs it.
    pub(super) soon: tokio::sync::Notify,
    /// Hands work to the store's sync thread, which ends when this is dropped.
    syncer: Mutex<std::sync::mpsc::Sender<SyncWork>>,
    /// When the last sync ended ([`BUSY_WITHIN`]).
    last_ended: Mutex<Option<tokio::time::Instant>>,
}

/// How long a sync waits before it starts when the store is busy: every commit applied
/// meanwhile rides on it. A sync is a write of sled's log handed to its thread pool (which
/// wakes all its idle threads), `sync_file_range`, `fdatasync` and a wake-up of every
/// waiter. With 1,000 small manifests at 200 calls a second, 5 ms took syncs from 1.47
/// to 0.55 per API call and context switches from 91k to 59k, and CPU per call fell by
/// 6-21% (three interleaved pairs; 2 ms gathered less, 0.84 syncs per call). A create's
/// intent and its answer each wait this long more, against admissions of a second and
/// polls ten seconds apart.
pub(crate) const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// A sync that begins within this long after the last one ended gathers first
/// ([`GATHER`]): syncs that close together mean more commits are coming.
pub(crate) const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// A sync to run on the store's sync thread.
type SyncWork = Box<dyn FnOnce() + Send>;

/// Starts the store's sync thread: it runs the syncs handed to it, one after another,
/// until every sender is gone.
fn start_sync_thread(folder: &Path) -> Result<std::sync::mpsc::Sender<SyncWork>, StoreError> {
    let (sender, receiver) = std::sync::mpsc::channel::<SyncWork>();
    std::thread::Builder::new()
        .name("store-sync".to_owned())
        .spawn(move || {
            while let Ok(work) = receiver.recv() {
                work();
            }
        })
        .map_err(io_error(folder))?;
    Ok(sender)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `fsync` of a folder (its entries: created, renamed, removed files).
pub(crate) fn sync_folder(folder: &Path) -> Result<(), StoreError> {
    File::open(folder)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(folder))
}

/// `fsync` of a file by its path (a handle of our own: `fsync` acts on the file).
pub(crate) fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(path))
}

impl Durability {
    /// Takes charge of the sled folder `folder` that `db` has open, and makes what is
    /// already in it durable: whatever an earlier process wrote and never synced (it was
    /// killed), sled's configuration file (written without a sync when the folder was
    /// made), the snapshot sled wrote while opening, and the folder's entries.
    pub(crate) fn open(
        folder: &Path,
        db: &sled::Db,
        stats: SyncStats,
    ) -> Result<Durability, StoreError> {
        let log_path = folder.join(LOG_FILE);
        let log = File::open(&log_path).map_err(io_error(&log_path))?;
        let durability = Durability {
            folder: folder.to_path_buf(),
            log,
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(()),
            synced_blobs: Mutex::new(HashMap::new()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            stats,
            soon: tokio::sync::Notify::new(),
            syncer: Mutex::new(start_sync_thread(folder)?),
            last_ended: Mutex::new(None),
        };
        let conf = folder.join(CONF_FILE);
        if conf.exists() {
            sync_file(&conf)?;
        }
        durability.sync_now(db)?;
        sync_folder(folder)?;
        // The folder's own entry, in case it was just made. Best effort: the parent of a
        // state folder may be one the daemon's user cannot open (a compaction's `store-N`
        // is synced by its caller, in the state folder, which is ours).
        if let Some(parent) = folder.parent() {
            if let Err(e) = sync_folder(parent) {
                tracing::debug!("cannot sync the store's parent folder: {e}");
            }
        }
        Ok(durability)
    }

    /// Takes a ticket for a batch just applied to sled: [`Durability::sync`] with it
    /// returns once that batch is on the disk.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once every batch up to `ticket` is on the disk: at once when a sync that
    /// began after it already ran, else after the next sync (which this call may run).
    pub(crate) async fn sync(
        self: &std::sync::Arc<Self>,
        db: &sled::Db,
        ticket: u64,
    ) -> Result<(), StoreError> {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _gate = self.gate.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        self.refuse_if_poisoned()?;
        if self.busy() {
            tokio::time::sleep(GATHER).await;
        }
        // Everything applied before this line is covered by the sync below.
        let target = self.applied.load(Ordering::SeqCst);
        let started = Instant::now();
        let synced = self.on_sync_thread(db).await;
        self.ended_now();
        self.poison_on_error(synced)?;
        self.count(started);
        self.durable.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the last sync ended within [`BUSY_WITHIN`].
    fn busy(&self) -> bool {
        self.last_ended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|ended| ended.elapsed() < BUSY_WITHIN)
    }

    /// A sync ended now.
    fn ended_now(&self) {
        *self
            .last_ended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(tokio::time::Instant::now());
    }

    /// sled's flush and the file syncs ([`Durability::sync_now`]'s work) on the store's
    /// own sync thread. One thread, not tokio's blocking pool: the flush allocates sled's
    /// next 8 MiB buffer, and on a different blocking thread each time glibc gave each its
    /// own arena (the pipeline bench's peak after 4,000 chunk commits went from 169 to
    /// 228 MiB). Not sled's `flush_async` either: that hands the flush to sled's pool,
    /// whose every task wakes all its idle threads (a `notify_all`), on top of the write
    /// the flush hands it anyway.
    async fn on_sync_thread(self: &std::sync::Arc<Self>, db: &sled::Db) -> Result<(), StoreError> {
        let gone = |what: &str| StoreError::Io {
            path: self.folder.clone(),
            source: std::io::Error::other(format!("the store's sync thread {what}")),
        };
        let (done, synced) = tokio::sync::oneshot::channel();
        let (this, db) = (std::sync::Arc::clone(self), db.clone());
        let work: SyncWork = Box::new(move || {
            let result = this.flush_and_sync_files(&db);
            // Poisoned here, not only by the waiter: one that stopped waiting (a dropped
            // future) must not let a failed sync pass unnoticed.
            if result.is_err() {
                this.poisoned.store(true, Ordering::SeqCst);
            }
            let _ = done.send(result);
        });
        self.syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(work)
            .map_err(|_| gone("is gone"))?;
        synced.await.unwrap_or_else(|_| Err(gone("stopped")))
    }

    /// Returns once everything applied so far is on the disk, without a ticket of its own
    /// (a backup, a result written from state another commit made).
    pub(crate) async fn sync_applied(
        self: &std::sync::Arc<Self>,
        db: &sled::Db,
    ) -> Result<(), StoreError> {
        let target = self.applied.load(Ordering::SeqCst);
        self.sync(db, target).await
    }

    fn refuse_if_poisoned(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: self.folder.clone(),
                source: std::io::Error::other(
                    "an earlier sync of the store failed: nothing counts as durable until the store is opened again",
                ),
            });
        }
        Ok(())
    }

    /// A failed sync poisons the store's durability for good (see `poisoned`).
    fn poison_on_error(&self, synced: Result<(), StoreError>) -> Result<(), StoreError> {
        if synced.is_err() {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        synced
    }

    /// [`Durability::sync`] of everything applied so far, on this thread: for the work
    /// done while the store opens (no runtime needed) and for blocking callers.
    pub(crate) fn sync_blocking(&self, db: &sled::Db) -> Result<(), StoreError> {
        self.refuse_if_poisoned()?;
        let target = self.applied.load(Ordering::SeqCst);
        let synced = self.sync_now(db);
        self.poison_on_error(synced)?;
        self.durable.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// sled's flush, `fdatasync` of its log, then the blob files it wrote since the last
    /// sync and their folder, on this thread.
    fn sync_now(&self, db: &sled::Db) -> Result<(), StoreError> {
        let started = Instant::now();
        self.flush_and_sync_files(db)?;
        self.count(started);
        Ok(())
    }

    /// sled's flush (its buffers written), then [`Durability::sync_files`].
    fn flush_and_sync_files(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush()?;
        self.sync_files()
    }

    /// After sled's flush: `fdatasync` of its log, then the blob files it wrote since the
    /// last sync and their folder.
    fn sync_files(&self) -> Result<(), StoreError> {
        fail::fail_point!("store-sync", |_| Err(StoreError::Io {
            path: self.folder.clone(),
            source: std::io::Error::other("fail point store-sync"),
        }));
        self.log
            .sync_data()
            .map_err(io_error(&self.folder.join(LOG_FILE)))?;
        self.sync_new_blobs()
    }

    /// One sync more in the metrics, begun at `started`.
    fn count(&self, started: Instant) {
        self.stats.syncs.inc();
        self.stats.seconds.observe(started.elapsed().as_secs_f64());
    }

    /// `fsync` of each blob file not synced before, then of the blobs folder. sled writes
    /// a blob before the log entry that points at it, so after its flush every blob the
    /// log can name is in the folder.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let blobs = self.folder.join(BLOBS_FOLDER);
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&blobs)(e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashMap::new();
        let mut any_new = false;
        for entry in entries {
            let entry = entry.map_err(io_error(&blobs))?;
            let name = entry.file_name();
            // The length before the sync: a write after it makes the length differ, and
            // the next sync syncs the file again.
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&entry.path())(e)),
            };
            if synced.get(&name) != Some(&len) {
                match sync_file(&entry.path()) {
                    Ok(()) => any_new = true,
                    // sled removed it meanwhile (a blob rewritten, then collected).
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
            present.insert(name, len);
        }
        if any_new {
            sync_folder(&blobs)?;
        }
        *synced = present;
        Ok(())
    }
}

/// Before sled opens `folder`: makes durable what an earlier process wrote there and never
/// synced (it was killed): the log, every blob file, their folders. sled then writes a
/// synced snapshot of what it finds, which must never be ahead of what is on the disk.
pub(crate) fn sync_before_open(folder: &Path) -> Result<(), StoreError> {
    let log = folder.join(LOG_FILE);
    if !log.exists() {
        return Ok(());
    }
    sync_file(&log)?;
    let blobs = folder.join(BLOBS_FOLDER);
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            match sync_file(&entry.path()) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        sync_folder(&blobs)?;
    }
    sync_folder(folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open(dir: &Path) -> (sled::Db, Arc<Durability>, SyncStats) {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .expect("sled opens");
        let stats = SyncStats::default();
        let durability = Durability::open(dir, &db, stats.clone()).expect("durability");
        (db, Arc::new(durability), stats)
    }

    #[tokio::test]
    async fn a_sync_runs_only_for_what_was_not_synced_yet() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, stats) = open(dir.path());
        let opened = stats.syncs.get();
        db.insert(b"k", b"v".to_vec()).expect("insert");
        let ticket = durability.applied();
        durability.sync(&db, ticket).await.expect("sync");
        assert_eq!(stats.syncs.get(), opened + 1, "one sync for one commit");
        durability.sync(&db, ticket).await.expect("sync again");
        assert_eq!(
            stats.syncs.get(),
            opened + 1,
            "a covered ticket syncs nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_that_wait_together_share_their_syncs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, stats) = open(dir.path());
        let opened = stats.syncs.get();
        const WRITERS: u64 = 64;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..WRITERS {
            let db = db.clone();
            let durability = Arc::clone(&durability);
            tasks.spawn(async move {
                db.insert(n.to_be_bytes(), vec![0u8; 100]).expect("insert");
                let ticket = durability.applied();
                durability.sync(&db, ticket).await.expect("sync");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer");
        }
        let syncs = stats.syncs.get() - opened;
        assert!(
            (1..WRITERS).contains(&syncs),
            "{WRITERS} commits waiting together took {syncs} syncs"
        );
        assert!(durability.durable.load(Ordering::SeqCst) >= WRITERS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_store_gathers_before_it_syncs_and_an_idle_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, stats) = open(dir.path());
        let commit = |n: u8| {
            db.insert([n], vec![n]).expect("insert");
            durability.applied()
        };
        // Idle: no sync ended within BUSY_WITHIN, so the first sync does not wait.
        tokio::time::advance(BUSY_WITHIN * 2).await;
        let first = commit(1);
        let before = tokio::time::Instant::now();
        durability.sync(&db, first).await.expect("sync");
        assert!(before.elapsed() < GATHER, "an idle store syncs at once");
        // Busy: the next sync gathers, and a commit applied meanwhile rides on it.
        let opened = stats.syncs.get();
        let second = commit(2);
        let gathering = {
            let (db, durability) = (db.clone(), Arc::clone(&durability));
            tokio::spawn(async move { durability.sync(&db, second).await })
        };
        tokio::time::sleep(GATHER / 5).await;
        let third = commit(3);
        durability.sync(&db, third).await.expect("sync");
        gathering.await.expect("task").expect("sync");
        assert_eq!(stats.syncs.get(), opened + 1, "one sync for both");
        assert!(durability.durable.load(Ordering::SeqCst) >= third);
    }

    #[tokio::test]
    async fn after_a_failed_sync_nothing_counts_as_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, _) = open(dir.path());
        db.insert(b"k", b"v".to_vec()).expect("insert");
        let ticket = durability.applied();
        let failed = durability.poison_on_error(Err(StoreError::Io {
            path: dir.path().to_path_buf(),
            source: std::io::Error::other("EIO"),
        }));
        assert!(failed.is_err());
        assert!(
            durability.sync(&db, ticket).await.is_err(),
            "the next sync refuses"
        );
        assert!(durability.sync_blocking(&db).is_err());
        assert!(durability.durable.load(Ordering::SeqCst) < ticket);
    }

    #[test]
    fn a_blob_that_grew_after_its_sync_is_synced_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, _) = open(dir.path());
        let blobs = dir.path().join(BLOBS_FOLDER);
        std::fs::create_dir_all(&blobs).expect("blobs");
        // Half written when a sync scans the folder…
        std::fs::write(blobs.join("42"), [1u8; 4]).expect("write");
        durability.sync_blocking(&db).expect("sync");
        let seen = |d: &Durability| {
            d.synced_blobs
                .lock()
                .expect("lock")
                .get(std::ffi::OsStr::new("42"))
                .copied()
        };
        assert_eq!(seen(&durability), Some(4));
        // …and finished after it: the next sync takes it again, at its whole length.
        std::fs::write(blobs.join("42"), [1u8; 4096]).expect("write");
        durability.sync_blocking(&db).expect("sync");
        assert_eq!(seen(&durability), Some(4096));
    }

    #[test]
    fn a_blob_is_synced_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, durability, stats) = open(dir.path());
        // A value over a quarter of sled's 512 KiB segment goes to a blob file.
        db.insert(b"big", vec![7u8; 300 * 1024]).expect("insert");
        durability.applied();
        durability.sync_blocking(&db).expect("sync");
        let blobs = std::fs::read_dir(dir.path().join(BLOBS_FOLDER))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert!(blobs >= 1, "the big value went to a blob file");
        let synced = durability.synced_blobs.lock().expect("lock").len();
        assert_eq!(synced, blobs, "every blob file was synced");
        assert!(stats.syncs.get() >= 2);
    }
}
