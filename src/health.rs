//! Whether the daemon can write where it must (SPEC section 8, disk full): a small probe
//! file filled (and emptied again), renamed and back, and the inodes left, in the state,
//! outbox and archive folders, every
//! `min(poll.interval, 30s)`. While a probe fails, `/healthz` answers 503 naming the
//! folder and the error, `/status` and `STATUS=` say so, and an error is logged (at the
//! change and every minute). The pipeline itself never exits for it: a manifest that
//! cannot be made durable stays in the inbox, a result that cannot be written stays
//! pending, and both are tried again; once space is back the probe clears by itself.
//!
//! [`Health`] is the daemon's health as its supervision in `daemon.rs` (the storage
//! probe, the watchdog, the run loop) owns it: the probe's findings, the pipeline's
//! progress, and whether the store must be opened again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The probe's name in each folder (hidden; never a manifest or a result).
pub const PROBE_FILE: &str = ".tented-bulkd-write-probe";

/// The name the probe file is renamed to and back (the folder's entries can be written).
const PROBE_FILE_MOVED: &str = ".tented-bulkd-write-probe.moved";

/// How much the probe writes (16 KiB), so that a folder with no room for a result file
/// fails it.
const PROBE_BYTES: usize = 16 * 1024;

/// The longest time between two probes.
pub const PROBE_EVERY_MAX: Duration = Duration::from_secs(30);

/// How often a failing folder is logged again.
const LOG_AGAIN_EVERY: Duration = Duration::from_secs(60);

/// Fills the probe file in `dir` with 16 KiB, then empties it.
///
/// The file stays between probes (empty, hidden) and goes when the daemon stops
/// ([`remove_probe`]). Creating and removing it at every probe would leave a trail of
/// recently deleted inodes, which ext4 without a journal skips one by one at every later
/// file creation in the folder: with the 1 s floor of the throughput bench, that scan was
/// a tenth of the daemon's CPU, spent creating result files.
pub fn probe_folder(dir: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(PROBE_FILE))?;
    let written = file
        .write_all(&[0u8; PROBE_BYTES])
        .and_then(|()| file.flush());
    // Emptied whatever happened (a half-written probe must not keep the space).
    let emptied = file.set_len(0);
    written?;
    emptied?;
    // The folder itself, which writing into an existing file does not prove: its entries
    // can change (a rename, as every result and archive move needs; no inode made or
    // freed), and new files have inodes left.
    let moved = dir.join(PROBE_FILE_MOVED);
    std::fs::rename(dir.join(PROBE_FILE), &moved)?;
    std::fs::rename(&moved, dir.join(PROBE_FILE))?;
    inodes_left(dir)
}

/// Fails when the folder's file system has no inode left for a new file (a file system
/// that does not count inodes, as btrfs, passes).
fn inodes_left(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a folder name with a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if stats.f_files > 0 && stats.f_favail == 0 {
        return Err(std::io::Error::other(
            "no inode left for a new file (no space left on device)",
        ));
    }
    Ok(())
}

/// Removes the probe file from `dir` (when the daemon stops); a missing one is fine.
pub fn remove_probe(dir: &Path) -> std::io::Result<()> {
    for name in [PROBE_FILE, PROBE_FILE_MOVED] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The daemon's health, owned by its supervision (`daemon.rs`): the stages only mark
/// their progress and ask for the store to be opened again.
#[derive(Debug, Default)]
pub struct Health {
    /// The folders that cannot be written now (the storage probe's findings).
    storage: StorageHealth,
    /// Counts the main loops' progress (for the watchdog).
    progress: AtomicU64,
    /// Cancelled when the store must be opened again (it cannot write although its
    /// folder has room again, or it asks for a compaction): the run stops its tasks and
    /// its caller starts a new one.
    reopen: tokio_util::sync::CancellationToken,
}

impl Health {
    /// The storage probe's findings: recorded by the probe, read by `/healthz`,
    /// `/status` and the status line.
    pub fn storage(&self) -> &StorageHealth {
        &self.storage
    }

    /// A main loop made progress (the sweeper's tick, a poll, a send, an intake).
    pub fn mark_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// How much progress the main loops made since start (the watchdog compares).
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Asks for the store to be opened again: the run stops its tasks.
    pub fn reopen(&self) {
        self.reopen.cancel();
    }

    /// Whether the store must be opened again.
    pub fn must_reopen(&self) -> bool {
        self.reopen.is_cancelled()
    }

    /// Resolves once the store must be opened again.
    pub fn reopen_asked(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.reopen.cancelled()
    }
}

#[derive(Debug)]
struct Problem {
    message: String,
    logged_at: tokio::time::Instant,
}

/// The folders that cannot be written now, by configuration key.
#[derive(Debug, Default)]
pub struct StorageHealth {
    problems: Mutex<BTreeMap<&'static str, Problem>>,
}

impl StorageHealth {
    /// Records a probe's outcome for the folder named by `key`, logging changes.
    pub fn record(&self, key: &'static str, dir: &Path, outcome: std::io::Result<()>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        match outcome {
            Ok(()) => {
                if problems.remove(key).is_some() {
                    tracing::info!(folder = key, path = %dir.display(), "the folder can be written again");
                }
            }
            Err(e) => {
                let message = format!("cannot write to {key} ({}): {e}", dir.display());
                let due = problems
                    .get(key)
                    .is_none_or(|p| now.duration_since(p.logged_at) >= LOG_AGAIN_EVERY);
                if due {
                    tracing::error!(folder = key, path = %dir.display(), "{message}; what needs it waits and is tried again");
                }
                let logged_at = if due {
                    now
                } else {
                    problems.get(key).map_or(now, |p| p.logged_at)
                };
                problems.insert(key, Problem { message, logged_at });
            }
        }
    }

    /// What cannot be written now, one message per folder.
    pub fn problems(&self) -> Vec<String> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.values().map(|p| p.message.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_leaves_one_empty_file_that_stays_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = dir.path().join(PROBE_FILE);
        probe_folder(dir.path()).expect("writable");
        let inode = |path: &Path| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("probe"))
        };
        let first = inode(&probe);
        assert_eq!(std::fs::metadata(&probe).expect("probe").len(), 0);
        probe_folder(dir.path()).expect("writable again");
        // The same file, emptied again: no inode created or deleted per probe.
        assert_eq!(inode(&probe), first);
        assert_eq!(std::fs::metadata(&probe).expect("probe").len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        remove_probe(dir.path()).expect("removed");
        remove_probe(dir.path()).expect("removing twice is fine");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        assert!(probe_folder(&dir.path().join("gone")).is_err());
    }

    #[tokio::test]
    async fn problems_come_and_go_with_the_probes() {
        let health = StorageHealth::default();
        let dir = Path::new("/x");
        health.record(
            "paths.outbox",
            dir,
            Err(std::io::Error::from_raw_os_error(28)),
        );
        let problems = health.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("cannot write to paths.outbox (/x): No space left on device"),
            "{problems:?}"
        );
        health.record("paths.outbox", dir, Ok(()));
        assert!(health.problems().is_empty());
    }
}
