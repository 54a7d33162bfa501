//! Compaction: sled 0.34 does not give back all the log space that pruning frees (a store
//! pruned as it goes still grows by tens of bytes per item processed: BENCHMARKS.md), so
//! a store whose files are more than [`Compaction::ratio`] times its live records, and
//! above [`Compaction::min_bytes`], is copied record by record into a fresh sled folder
//! when it is opened. The daemon opens its store again for that when the pruner finds it
//! due ([`Store::compaction_due`]).
//!
//! Layout: a store never compacted keeps sled's files in the state folder itself (`db`,
//! `conf`, `blobs/`, `snap.*`); a compacted one in `store-N/`, named by the file
//! `CURRENT`. The switch is the atomic rewrite of `CURRENT`: before it, the old files are
//! the store, and a half-made `store-N` is removed at the next open; after it, the new
//! folder is, and the old files are removed (at once, or at the next open when a crash
//! came first). The lock file `tented-bulkd.lock` (held for the store's life) keeps a
//! second process from opening either while files move.

use std::path::{Path, PathBuf};

use super::{Store, StoreError};

/// The lock file in the state folder.
pub const LOCK_FILE: &str = "tented-bulkd.lock";

/// The file naming the folder that holds sled's files, once the store was compacted.
pub const CURRENT_FILE: &str = "CURRENT";

/// When a store is compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Files at most this large are never compacted.
    pub min_bytes: u64,
    /// Files more than this many times the live records are compacted.
    pub ratio: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            min_bytes: 64 * 1024 * 1024,
            ratio: 4,
        }
    }
}

impl Compaction {
    /// Whether files of `file_bytes` holding `live_bytes` of records are compacted.
    pub fn due(&self, file_bytes: u64, live_bytes: u64) -> bool {
        file_bytes > self.min_bytes && file_bytes > live_bytes.saturating_mul(self.ratio)
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the state folder's lock (creating the folder), or says the store is in use.
pub(super) fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(path).map_err(io_error(path))?;
    let lock_path = path.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// The folder holding sled's files: the one `CURRENT` names, else the state folder.
pub(super) fn sled_folder(path: &Path) -> Result<PathBuf, StoreError> {
    let current = path.join(CURRENT_FILE);
    match std::fs::read_to_string(&current) {
        Ok(text) => {
            let name = text.trim();
            if store_number(name).is_none() {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("{} names `{name}`, not a store folder", current.display()),
                });
            }
            Ok(path.join(name))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(source) => Err(StoreError::Io {
            path: current,
            source,
        }),
    }
}

/// N of a folder named `store-N`.
fn store_number(name: &str) -> Option<u64> {
    name.strip_prefix("store-")?.parse().ok()
}

/// Whether a file of the state folder itself is one of sled's (a store never compacted).
fn is_sled_root_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

/// Whether a file of the state folder is a compaction's (its spool), wherever the store is.
fn is_compaction_file(name: &str) -> bool {
    name == SPOOL_FILE
}

/// Removes what an interrupted compaction left: `store-N` folders other than the current
/// one, and, once the store lives in one, sled's files in the state folder itself.
/// Called with the lock held. Returns the names removed.
pub(super) fn remove_leftovers(path: &Path, current: &Path) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    let compacted = current != path;
    for entry in std::fs::read_dir(path).map_err(io_error(path))? {
        let entry = entry.map_err(io_error(path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = (store_number(&name).is_some() && entry.path() != current)
            || (compacted && is_sled_root_file(&name))
            || is_compaction_file(&name);
        if leftover {
            remove_path(&entry.path())?;
            removed.push(name);
        }
    }
    Ok(removed)
}

fn remove_path(path: &Path) -> Result<(), StoreError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The bytes of every file under `dir`.
pub(super) fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => folder_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The bytes of every key and value in the tree.
pub(super) fn live_bytes(tree: &sled::Tree) -> Result<u64, StoreError> {
    let mut bytes = 0u64;
    for entry in tree.iter() {
        let (key, value) = entry?;
        bytes = bytes.saturating_add((key.len() + value.len()) as u64);
    }
    Ok(bytes)
}

/// The file the records are copied through during a compaction.
const SPOOL_FILE: &str = "compact.spool";

/// Copies every record of `tree` into the spool file (the record stream of
/// [`super::stream`]); returns the file's path and how many records it holds. The old store is closed
/// before the new one is filled (two sled stores open at once in one process keep memory
/// that is never given back).
pub(super) fn spool(path: &Path, tree: &sled::Tree) -> Result<(PathBuf, u64), StoreError> {
    use std::io::Write;
    let spool = path.join(SPOOL_FILE);
    let file = std::fs::File::create(&spool).map_err(io_error(&spool))?;
    let mut out = std::io::BufWriter::new(file);
    let records = super::stream::write_records(tree, &mut out).map_err(|e| e.at(&spool))?;
    out.flush().map_err(io_error(&spool))?;
    Ok((spool, records))
}

/// A store's sled files, filled from the spool in the next `store-N` folder and switched
/// to.
pub(super) struct Compacted {
    pub db: sled::Db,
    pub tree: sled::Tree,
    pub folder: PathBuf,
    pub durable: super::durable::Durability,
}

/// Fills a fresh sled in the next `store-N` folder from the spool, makes it durable, then
/// switches `CURRENT` to it. On any error before the switch, the new folder is removed
/// and the old store stays the store. The spool is removed either way.
pub(super) fn fill_and_switch(
    path: &Path,
    current: &Path,
    spool: &Path,
    records: u64,
    stats: &super::SyncStats,
) -> Result<Compacted, StoreError> {
    let number = current
        .file_name()
        .and_then(|name| store_number(&name.to_string_lossy()))
        .unwrap_or(0)
        + 1;
    let folder = path.join(format!("store-{number}"));
    let filled = remove_path(&folder)
        .and_then(|()| fill(&folder, spool, records, stats))
        .and_then(|filled| {
            fail::fail_point!("compaction-before-switch", |_| {
                crate::crash::simulated_crash()
            });
            switch_current(path, &folder)?;
            fail::fail_point!(
                "compaction-after-switch",
                |_| crate::crash::simulated_crash()
            );
            Ok(filled)
        });
    if let Err(e) = remove_path(spool) {
        tracing::warn!("cannot remove {}: {e}", spool.display());
    }
    match filled {
        Ok((db, tree, durable)) => Ok(Compacted {
            db,
            tree,
            folder,
            durable,
        }),
        Err(e) => {
            if let Err(cleanup) = remove_path(&folder) {
                tracing::warn!(
                    "cannot remove the half-made {}: {cleanup}",
                    folder.display()
                );
            }
            Err(e)
        }
    }
}

/// A new store's sled files, its tree, and their durability (everything in them synced).
type Filled = (sled::Db, sled::Tree, super::durable::Durability);

fn fill(
    folder: &Path,
    spool: &Path,
    records: u64,
    stats: &super::SyncStats,
) -> Result<Filled, StoreError> {
    const BATCH: usize = 10_000;
    let db = super::open_sled(folder)?;
    let tree = db.open_tree(super::TREE)?;
    let file = std::fs::File::open(spool).map_err(io_error(spool))?;
    let mut input = std::io::BufReader::new(file);
    super::stream::fill_tree(&tree, &mut input, records, BATCH).map_err(|e| e.at(spool))?;
    // Its log, its configuration, the folder and its entry in the state folder, on the disk
    // before `CURRENT` names it.
    let durable = super::durable::Durability::open(folder, &db, stats.clone())?;
    if let Some(state) = folder.parent() {
        super::durable::sync_folder(state)?;
    }
    Ok((db, tree, durable))
}

/// Names `folder` in `CURRENT`, atomically and durably.
fn switch_current(path: &Path, folder: &Path) -> Result<(), StoreError> {
    let current = path.join(CURRENT_FILE);
    let name = folder
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut file = atomic_write_file::AtomicWriteFile::options()
        .open(&current)
        .map_err(io_error(&current))?;
    std::io::Write::write_all(&mut file, format!("{name}\n").as_bytes())
        .map_err(io_error(&current))?;
    file.commit().map_err(io_error(&current))?;
    Ok(())
}

impl Store {
    /// The bytes of sled's files (what compaction is decided on; [`Store::size_on_disk`]
    /// counts the whole state folder).
    pub fn files_bytes(&self) -> u64 {
        folder_bytes(&self.folder)
    }

    /// Whether the store's files have grown past the compaction bounds for the records
    /// they hold (reads every record when the files are above the size bound).
    pub fn compaction_due(&self, compaction: Compaction) -> Result<bool, StoreError> {
        let files = self.files_bytes();
        if files <= compaction.min_bytes {
            return Ok(false);
        }
        Ok(compaction.due(files, live_bytes(&self.tree)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{records_for_test as records, reopen};

    /// Small bounds, so that a test store is compacted.
    const SMALL: Compaction = Compaction {
        min_bytes: 1024 * 1024,
        ratio: 4,
    };

    /// Writes 1,000 records of 4 kB and removes them again, keeping `kept` ones: files of
    /// several MB holding almost nothing.
    fn grow_and_shrink(store: &Store, kept: usize) {
        for i in 0..1_000u32 {
            let mut key = b"Zgarbage".to_vec();
            key.extend_from_slice(&i.to_be_bytes());
            store.tree.insert(key, vec![7u8; 4_000]).expect("insert");
        }
        for i in kept as u32..1_000u32 {
            let mut key = b"Zgarbage".to_vec();
            key.extend_from_slice(&i.to_be_bytes());
            store.tree.remove(key).expect("remove");
        }
        store.db.flush().expect("flush");
    }

    fn reopen_with(path: &Path, compaction: Compaction) -> Store {
        crate::store::when_unlocked(|| Store::open_with(path, compaction)).expect("reopens")
    }

    #[test]
    fn compaction_is_due_past_both_bounds_only() {
        let c = Compaction {
            min_bytes: 100,
            ratio: 4,
        };
        assert!(!c.due(100, 0), "not above the size bound");
        assert!(!c.due(400, 100), "not more than 4 times the records");
        assert!(c.due(401, 100));
        assert!(c.due(101, 0));
        assert_eq!(Compaction::default().min_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn a_store_grown_past_its_records_is_compacted_when_opened_and_nothing_is_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before;
        {
            let store = Store::open(dir.path()).expect("open");
            grow_and_shrink(&store, 3);
            assert!(store.compaction_due(SMALL).expect("reads"));
            assert!(!store.compaction_due(Compaction::default()).expect("reads"));
            before = records(&store);
            assert!(
                store.files_bytes() > 10 * 1024 * 1024,
                "{}",
                store.files_bytes()
            );
        }
        let store = reopen_with(dir.path(), SMALL);
        assert_eq!(records(&store), before, "every record, byte for byte");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CURRENT_FILE)).expect("CURRENT"),
            "store-1\n"
        );
        assert!(!dir.path().join("db").exists(), "the old files are gone");
        assert!(
            store.files_bytes() < 2 * 1024 * 1024,
            "{}",
            store.files_bytes()
        );
        assert!(!store.compaction_due(SMALL).expect("reads"));
        // It is written to and read in its new folder, and compacted again into the next.
        grow_and_shrink(&store, 3);
        drop(store);
        let store = reopen_with(dir.path(), SMALL);
        assert_eq!(records(&store), before);
        assert!(dir.path().join("store-2").is_dir());
        assert!(!dir.path().join("store-1").exists());
        drop(store);
        let store = reopen(dir.path()).expect("reopens with the default bounds");
        assert_eq!(records(&store), before);
    }

    #[test]
    fn what_an_interrupted_compaction_left_is_removed_and_the_store_is_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before;
        {
            let store = Store::open(dir.path()).expect("open");
            grow_and_shrink(&store, 5);
            before = records(&store);
        }
        // A crash before the switch: a half-made next folder and the spool.
        std::fs::create_dir_all(dir.path().join("store-1")).expect("mkdir");
        std::fs::write(dir.path().join("store-1/db"), b"half").expect("write");
        std::fs::write(dir.path().join(SPOOL_FILE), b"records").expect("write");
        let store = reopen(dir.path()).expect("reopens");
        assert!(!dir.path().join("store-1").exists());
        assert!(!dir.path().join(SPOOL_FILE).exists());
        assert!(!dir.path().join(CURRENT_FILE).exists());
        assert_eq!(records(&store), before);
        drop(store);
        // A crash after the switch, before the old files went.
        let store = reopen_with(dir.path(), SMALL);
        drop(store);
        std::fs::write(dir.path().join("db"), b"old").expect("write");
        std::fs::create_dir_all(dir.path().join("blobs")).expect("mkdir");
        std::fs::write(dir.path().join("snap.00000001"), b"old").expect("write");
        let store = reopen(dir.path()).expect("reopens");
        for old in ["db", "blobs", "snap.00000001"] {
            assert!(!dir.path().join(old).exists(), "{old} removed");
        }
        assert!(dir.path().join("store-1").is_dir());
        assert_eq!(records(&store), before);
    }

    #[test]
    fn a_second_open_of_a_state_folder_in_use_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _store = Store::open(dir.path()).expect("open");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn a_current_file_naming_anything_but_a_store_folder_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(CURRENT_FILE), "../elsewhere\n").expect("write");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
