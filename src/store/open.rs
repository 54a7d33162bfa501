//! Opening the store: the state folder's lock, sled's files (compacted first when due),
//! the format, the marker, and what an intake a crash interrupted left.

use std::path::{Path, PathBuf};

use super::{
    compaction, durable, manifest_key, prefixed, read_u64, Compaction, Store, StoreError,
    SyncStats, MARKER_FILE,
};

/// sled's page cache (its default is 1 GiB, too much for a daemon that runs for months):
/// 64 MiB. A 100,000-item intake fills whatever cache there is while the validated
/// manifest is still held, and SPEC section 7 allows 200 MB for the whole process (the
/// intake's peak is 110-122 MiB, BENCHMARKS.md); blocks missing from the cache are read
/// back from the OS's page cache.
const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// `open` tried again for up to 5 s while it finds the store locked: sled's background
/// threads hold its lock a moment after its last handle in this process is dropped.
pub(super) fn when_unlocked<T>(
    mut open: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
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
pub(super) const TREE: &str = "pipeline";

/// Opens sled's files in `folder`. A folder held by another process or a corrupt one
/// stops with a clear error; it is never deleted or repaired.
pub(super) fn open_sled(folder: &Path) -> Result<sled::Db, StoreError> {
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
pub(super) fn compacted_or_reopened(
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
            finishes: Default::default(),
        };
        // First: a store of another format is left untouched, whatever else it holds.
        store.check_format(path)?;
        let rewritten = store.finish_cut_commit()?;
        if rewritten > 0 {
            tracing::info!(
                records = rewritten,
                "wrote again the last transaction, which a crash may have cut short"
            );
        }
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
        // sled's files are closed before the switch; the rest of the store (the folder's
        // lock among it) goes on into the compacted one.
        let Store {
            db, tree, durable, ..
        } = self;
        drop(tree);
        drop(durable);
        drop(db);
        let (db, tree, folder, durable) = compacted_or_reopened(
            path,
            folder,
            (&spool, records),
            &self.sync_stats,
            (files, live),
        )?;
        Ok(Store {
            db,
            tree,
            folder,
            durable: std::sync::Arc::new(durable),
            ..self
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
                    self.apply_batch(batch)?;
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
    pub(super) fn check_marker(&self, path: &Path) -> Result<(), StoreError> {
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
    pub(super) async fn mark_committed(&self, id: u64) -> Result<(), StoreError> {
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
    pub(super) fn write_marker(&self, id: u64) -> Result<(), StoreError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{committed_for_test, received_for_test, reopen, test_item};

    #[tokio::test]
    async fn the_items_of_an_intake_a_crash_interrupted_are_removed_at_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kept, lost);
        {
            let store = Store::open(dir.path()).expect("open");
            kept = committed_for_test(&store, 30).await;
            lost = store.new_manifest_id().expect("id");
            let writer = store.writer().await;
            let mut txn = writer
                .create(received_for_test(lost, "lost", 2_050))
                .expect("create");
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
}
