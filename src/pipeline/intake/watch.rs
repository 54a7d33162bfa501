//! Decides which files in the inbox are ready to take (SPEC section 4).
//!
//! A candidate is a regular file directly in the inbox whose name ends in `.json` and
//! does not begin with `.`. Everything else is ignored: other suffixes, hidden files,
//! folders, and symbolic links (a link may point anywhere, and moving it to the archive
//! would move the link rather than the manifest; writers should rename real files in).
//!
//! A candidate is ready once it is no longer being written: its size, modification
//! time and inode have been seen unchanged by two looks at least `settle` apart, and
//! its modification time is at least `settle` in the past. Any change resets its clock.
//! A file renamed into the inbox (the documented way to drop one: write elsewhere, then
//! rename) is complete by construction and ready at once, unless it changes after the
//! rename, in which case the settle rule applies to it as to any other file.
//! A modification time in the future (a skewed clock, preserved timestamps) cannot be
//! judged and is left to the two-look rule alone, so that such a file is not stuck.
//!
//! `notify` events are hints only: an event that can change what is ready (a file
//! created, moved in or out, written, closed after writing, removed; a queue overflow,
//! flagged `Rescan`; a watcher error) triggers a full scan of the folder, the folder is
//! also scanned every `rescan_interval`, and while a candidate is not yet ready it is
//! looked at again as soon as it could be. Events that cannot change it are ignored:
//! notify 8 on Linux also reports `IN_OPEN` and reads, so the scan's own opening of the
//! folder (and intake's reading of a file) would otherwise trigger the next scan for ever
//! and keep an idle daemon on a whole core. The stability clock is tokio's, so the watcher
//! needs real (not paused) time, as it compares with file timestamps.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a rename seen for a file that is not a candidate is remembered.
const RENAME_MEMORY: Duration = Duration::from_secs(60);

/// The suffix of a candidate file name.
const CANDIDATE_SUFFIX: &[u8] = b".json";

/// Why the inbox cannot be watched or scanned.
#[derive(Debug, thiserror::Error)]
pub enum InboxWatchError {
    #[error("cannot watch the inbox folder {}: {source}", .dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot read the inbox folder {}: {source}", .dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies one state of a file's content, as far as the folder listing tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileSignature {
    size: u64,
    modified: SystemTime,
    inode: u64,
}

impl FileSignature {
    /// Reads the signature from a file's metadata.
    fn of(metadata: &Metadata) -> FileSignature {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        FileSignature {
            size: metadata.len(),
            // Every platform the daemon runs on has modification times; without one, only
            // the two-look rule applies.
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode,
        }
    }
}

/// What the watcher last saw of one candidate.
#[derive(Clone, Copy, Debug)]
struct Observation {
    signature: FileSignature,
    /// The first look that saw `signature`.
    unchanged_since: Instant,
}

/// The result of one scan of the folder.
#[derive(Debug, Default)]
struct ScanOutcome {
    /// The ready candidates, sorted by name.
    ready: Vec<PathBuf>,
    /// How long until the earliest candidate that is not yet ready could be ready.
    next_check: Option<Duration>,
}

/// Watches the inbox folder and tells which manifest files are ready to take.
pub struct InboxWatcher {
    dir: PathBuf,
    settle: Duration,
    rescan_interval: Duration,
    /// Kept alive for its events; dropping it stops the watch.
    _watcher: notify::RecommendedWatcher,
    /// One pending hint at most: a full channel already means "scan again".
    hints: mpsc::Receiver<()>,
    /// Whether the notify side of `hints` is still there.
    hints_open: bool,
    observed: HashMap<PathBuf, Observation>,
    /// Files the notify thread saw renamed into the folder, and when.
    renamed_in: Arc<Mutex<HashMap<PathBuf, std::time::Instant>>>,
    /// Renamed-in files, with what they looked like when first seen after the rename:
    /// ready while they still look the same.
    complete: HashMap<PathBuf, FileSignature>,
    /// How many scans of the folder this watcher has made (for tests and diagnostics).
    scans: u64,
}

impl std::fmt::Debug for InboxWatcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InboxWatcher")
            .field("dir", &self.dir)
            .field("settle", &self.settle)
            .field("rescan_interval", &self.rescan_interval)
            .field("observed", &self.observed.len())
            .finish_non_exhaustive()
    }
}

impl InboxWatcher {
    /// Starts a `notify` 8.2 recommended watcher on `dir` (non-recursive) feeding a
    /// tokio channel; events are hints only.
    pub fn new(
        dir: PathBuf,
        settle: Duration,
        rescan_interval: Duration,
    ) -> Result<InboxWatcher, InboxWatchError> {
        let (sender, hints) = mpsc::channel(1);
        let watched_dir = dir.clone();
        let renamed_in = Arc::new(Mutex::new(HashMap::new()));
        let renamed = Arc::clone(&renamed_in);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match &event {
                Err(error) => {
                    tracing::warn!(%error, dir = %watched_dir.display(), "inbox watcher error; scanning the folder")
                }
                Ok(event) if event.need_rescan() => {
                    tracing::debug!(dir = %watched_dir.display(), "inbox watcher lost events; scanning the folder")
                }
                Ok(event) if !can_change_what_is_ready(&event.kind) => return,
                Ok(event) => {
                    if let Some(path) = renamed_into(event) {
                        let mut renamed = renamed.lock().unwrap_or_else(|p| p.into_inner());
                        renamed.insert(path, std::time::Instant::now());
                    }
                }
            }
            // A full channel already holds a hint, and a closed one means nobody listens.
            let _ = sender.try_send(());
        })
        .map_err(|source| InboxWatchError::Watch { dir: dir.clone(), source })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| InboxWatchError::Watch {
                dir: dir.clone(),
                source,
            })?;
        Ok(InboxWatcher {
            dir,
            settle,
            rescan_interval,
            _watcher: watcher,
            hints,
            hints_open: true,
            observed: HashMap::new(),
            renamed_in,
            complete: HashMap::new(),
            scans: 0,
        })
    }

    /// Waits until at least one candidate file is ready and returns the ready paths
    /// (sorted by name), or returns an empty Vec when `shutdown` is cancelled.
    ///
    /// A ready file is returned by every call until it disappears or is passed to
    /// [`InboxWatcher::forget`]; after `forget`, a file still present must settle again.
    pub async fn next_ready(&mut self, shutdown: &CancellationToken) -> Vec<PathBuf> {
        loop {
            if shutdown.is_cancelled() {
                return Vec::new();
            }
            // Hints are drained before the scan, so that an event arriving during the scan
            // stays queued and causes one more scan.
            while self.hints.try_recv().is_ok() {}
            let wait = match self.scan() {
                Ok(outcome) if !outcome.ready.is_empty() => return outcome.ready,
                Ok(outcome) => outcome
                    .next_check
                    .map_or(self.rescan_interval, |next| next.min(self.rescan_interval)),
                Err(error) => {
                    tracing::warn!(%error, "inbox scan failed; trying again at the next rescan");
                    self.rescan_interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Vec::new(),
                _ = tokio::time::sleep(wait) => {}
                hint = self.hints.recv(), if self.hints_open => {
                    if hint.is_none() {
                        self.hints_open = false;
                    }
                }
            }
        }
    }

    /// One synchronous scan, used at start-up and by tests: returns the ready files now.
    pub fn scan_now(&mut self) -> Result<Vec<PathBuf>, InboxWatchError> {
        self.scan().map(|outcome| outcome.ready)
    }

    /// How many times this watcher has scanned the folder.
    pub fn scan_count(&self) -> u64 {
        self.scans
    }

    /// Tells the watcher a file was taken (moved away), so it forgets it.
    pub fn forget(&mut self, path: &Path) {
        self.observed.remove(path);
        self.complete.remove(path);
    }

    /// Looks at every candidate in the folder, updates what was seen of it, and forgets
    /// files that are gone.
    fn scan(&mut self) -> Result<ScanOutcome, InboxWatchError> {
        self.scans += 1;
        let entries = std::fs::read_dir(&self.dir).map_err(|source| InboxWatchError::ReadDir {
            dir: self.dir.clone(),
            source,
        })?;
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let mut outcome = ScanOutcome::default();
        let mut present = HashSet::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, dir = %self.dir.display(), "cannot read an inbox entry");
                    continue;
                }
            };
            if !is_candidate_name(&entry.file_name()) {
                continue;
            }
            // Neither `file_type` nor `metadata` of a folder entry follows symbolic links.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    tracing::warn!(%error, path = %entry.path().display(), "cannot read an inbox file's metadata");
                    continue;
                }
            };
            if !metadata.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let signature = FileSignature::of(&metadata);
            let observation = self.observed.entry(path.clone()).or_insert(Observation {
                signature,
                unchanged_since: now,
            });
            if observation.signature != signature {
                *observation = Observation {
                    signature,
                    unchanged_since: now,
                };
            }
            let stable_wait = self
                .settle
                .saturating_sub(now.saturating_duration_since(observation.unchanged_since));
            let age_wait = match wall_now.duration_since(signature.modified) {
                Ok(age) => self.settle.saturating_sub(age),
                Err(_) => Duration::ZERO,
            };
            let renamed_in = self.is_complete(&path, signature);
            let wait = if renamed_in {
                Duration::ZERO
            } else {
                stable_wait.max(age_wait)
            };
            if wait.is_zero() {
                outcome.ready.push(path.clone());
            } else {
                outcome.next_check = Some(outcome.next_check.map_or(wait, |next| next.min(wait)));
            }
            present.insert(path);
        }
        self.observed.retain(|path, _| present.contains(path));
        self.complete.retain(|path, _| present.contains(path));
        // Renames of files that are not candidates (hidden, other suffixes) are forgotten
        // after a while (not at once: a rename may land while this scan lists the folder).
        self.renamed_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, at| present.contains(path) || at.elapsed() < RENAME_MEMORY);
        outcome.ready.sort();
        Ok(outcome)
    }
}

impl InboxWatcher {
    /// Whether a file was renamed in and has not changed since it was first seen so.
    fn is_complete(&mut self, path: &Path, signature: FileSignature) -> bool {
        let fresh = self
            .renamed_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path)
            .is_some();
        if fresh {
            self.complete.insert(path.to_path_buf(), signature);
        }
        match self.complete.get(path) {
            Some(seen) if *seen == signature => true,
            Some(_) => {
                // Written to after the rename: it settles like any other file.
                self.complete.remove(path);
                false
            }
            None => false,
        }
    }
}

/// The file an event says was renamed into the folder, if any.
fn renamed_into(event: &notify::Event) -> Option<PathBuf> {
    use notify::event::{ModifyKind, RenameMode};
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first().cloned(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.last().cloned(),
        _ => None,
    }
}

/// Whether a notify event can change which files are ready: creations, changes of
/// content, names or metadata, closes after writing, removals and events of no known
/// kind. Opens, reads and closes after reading cannot, and the scan itself causes them.
fn can_change_what_is_ready(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

/// Whether a file name may be a manifest: it ends in `.json` and does not begin with `.`.
/// Names that are not UTF-8 still count; the name check rejects them later with a result.
fn is_candidate_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.ends_with(CANDIDATE_SUFFIX) && !bytes.starts_with(b".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const SETTLE: Duration = Duration::from_millis(200);
    const LONG_RESCAN: Duration = Duration::from_secs(60);

    /// A watcher on a fresh folder with the short test settle time.
    fn watcher_on(dir: &Path) -> InboxWatcher {
        InboxWatcher::new(dir.to_path_buf(), SETTLE, LONG_RESCAN).expect("watch the test folder")
    }

    /// Waits for `next_ready` at most ten seconds.
    async fn next_ready_within_ten_seconds(watcher: &mut InboxWatcher) -> Vec<PathBuf> {
        let shutdown = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(10), watcher.next_ready(&shutdown))
            .await
            .expect("a file became ready in time")
    }

    #[tokio::test]
    async fn only_visible_regular_json_files_are_candidates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inbox = dir.path();
        for name in [
            "a.json",
            ".hidden.json",
            "notes.txt",
            "b.json.tmp",
            "c.JSON",
            ".json",
        ] {
            std::fs::write(inbox.join(name), b"{}").expect("write");
        }
        std::fs::create_dir(inbox.join("folder.json")).expect("mkdir");
        std::fs::write(dir.path().join("target.txt"), b"{}").expect("write");
        std::os::unix::fs::symlink(inbox.join("target.txt"), inbox.join("link.json"))
            .expect("symlink");
        let mut watcher = watcher_on(inbox);
        assert_eq!(watcher.scan_now().expect("scan"), Vec::<PathBuf>::new());
        tokio::time::sleep(SETTLE + Duration::from_millis(50)).await;
        assert_eq!(
            watcher.scan_now().expect("scan"),
            vec![inbox.join("a.json")]
        );
        assert_eq!(
            next_ready_within_ten_seconds(&mut watcher).await,
            vec![inbox.join("a.json")]
        );
    }

    #[tokio::test]
    async fn a_file_written_slowly_is_returned_only_once_complete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("slow.json");
        let chunks: Vec<String> = (0..10)
            .map(|chunk| format!("{{\"chunk\": {chunk}}}\n"))
            .collect();
        let expected: String = chunks.concat();
        let settle = Duration::from_millis(300);
        let mut watcher =
            InboxWatcher::new(dir.path().to_path_buf(), settle, LONG_RESCAN).expect("watch");
        let finished = Arc::new(AtomicBool::new(false));
        let writer = {
            let path = path.clone();
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&path).expect("create");
                for chunk in chunks {
                    file.write_all(chunk.as_bytes()).expect("append");
                    file.flush().expect("flush");
                    std::thread::sleep(Duration::from_millis(50));
                }
                finished.store(true, Ordering::SeqCst);
            })
        };
        let ready = next_ready_within_ten_seconds(&mut watcher).await;
        assert!(
            finished.load(Ordering::SeqCst),
            "returned while the writer was still appending"
        );
        assert_eq!(ready, vec![path.clone()]);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), expected);
        writer.join().expect("writer thread");
    }

    #[tokio::test]
    async fn a_change_resets_the_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"{").expect("write");
        let mut watcher = watcher_on(dir.path());
        assert!(watcher.scan_now().expect("scan").is_empty());
        tokio::time::sleep(SETTLE + Duration::from_millis(50)).await;
        std::fs::write(&path, b"{}").expect("rewrite");
        assert!(watcher.scan_now().expect("scan").is_empty());
        tokio::time::sleep(SETTLE + Duration::from_millis(50)).await;
        assert_eq!(watcher.scan_now().expect("scan"), vec![path]);
    }

    #[tokio::test]
    async fn a_file_renamed_in_is_noticed_through_notify() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inbox = dir.path().join("inbox");
        let staging = dir.path().join("staging");
        std::fs::create_dir(&inbox).expect("mkdir");
        std::fs::create_dir(&staging).expect("mkdir");
        let mut watcher = watcher_on(&inbox);
        let started = std::time::Instant::now();
        let shutdown = CancellationToken::new();
        let drop_file = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::fs::write(staging.join("daily.json"), b"{}").expect("write");
            std::fs::rename(staging.join("daily.json"), inbox.join("daily.json")).expect("rename");
        };
        let (ready, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(watcher.next_ready(&shutdown), drop_file)
        })
        .await
        .expect("noticed well before the 60 s rescan");
        assert_eq!(ready, vec![inbox.join("daily.json")]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn forget_makes_a_file_settle_again_and_drops_taken_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"{}").expect("write");
        let mut watcher = watcher_on(dir.path());
        assert!(watcher.scan_now().expect("scan").is_empty());
        tokio::time::sleep(SETTLE + Duration::from_millis(50)).await;
        assert_eq!(watcher.scan_now().expect("scan"), vec![path.clone()]);
        assert_eq!(
            watcher.scan_now().expect("scan"),
            vec![path.clone()],
            "ready until forgotten"
        );
        watcher.forget(&path);
        assert!(
            watcher.scan_now().expect("scan").is_empty(),
            "a forgotten file settles again"
        );
        tokio::time::sleep(SETTLE + Duration::from_millis(50)).await;
        assert_eq!(watcher.scan_now().expect("scan"), vec![path.clone()]);
        std::fs::rename(&path, dir.path().join("taken")).expect("take");
        watcher.forget(&path);
        assert!(watcher.scan_now().expect("scan").is_empty());
        assert!(watcher.observed.is_empty());
    }

    #[tokio::test]
    async fn ready_files_are_returned_sorted_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["b.json", "a.json", "c.json"] {
            std::fs::write(dir.path().join(name), b"{}").expect("write");
        }
        let mut watcher = watcher_on(dir.path());
        let ready = next_ready_within_ten_seconds(&mut watcher).await;
        let expected: Vec<PathBuf> = ["a.json", "b.json", "c.json"]
            .iter()
            .map(|name| dir.path().join(name))
            .collect();
        assert_eq!(ready, expected);
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait_with_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut watcher = watcher_on(dir.path());
        let shutdown = CancellationToken::new();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            shutdown.cancel();
        };
        let (ready, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(watcher.next_ready(&shutdown), cancel)
        })
        .await
        .expect("returned on cancellation");
        assert!(ready.is_empty());
    }

    #[tokio::test]
    async fn a_file_renamed_in_is_ready_at_once_and_one_written_in_place_still_settles() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inbox = dir.path().join("inbox");
        std::fs::create_dir(&inbox).expect("mkdir");
        // A settle time far longer than the test: only the rename can make a file ready.
        let mut watcher =
            InboxWatcher::new(inbox.clone(), Duration::from_secs(60), LONG_RESCAN).expect("watch");
        std::fs::write(inbox.join("in-place.json"), b"{").expect("write in place");
        std::fs::write(dir.path().join("daily.json"), b"{}").expect("write elsewhere");
        std::fs::rename(dir.path().join("daily.json"), inbox.join("daily.json")).expect("rename");
        let shutdown = CancellationToken::new();
        let started = std::time::Instant::now();
        let ready = tokio::time::timeout(Duration::from_secs(10), watcher.next_ready(&shutdown))
            .await
            .expect("the renamed file is ready without its settle time");
        assert_eq!(
            ready,
            vec![inbox.join("daily.json")],
            "the file written in place still settles"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        // Written to after the rename: it settles like any other file.
        std::fs::write(inbox.join("daily.json"), b"{\"more\": 1}").expect("rewrite");
        assert!(watcher.scan_now().expect("scan").is_empty());
    }

    #[tokio::test]
    async fn an_idle_inbox_is_not_rescanned_by_its_own_scans() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A settled file is present too, as intake's hashing of files opens them.
        std::fs::write(dir.path().join("notes.txt"), b"{}").expect("write");
        let mut watcher = watcher_on(dir.path());
        let shutdown = CancellationToken::new();
        let outcome =
            tokio::time::timeout(Duration::from_secs(2), watcher.next_ready(&shutdown)).await;
        assert!(outcome.is_err(), "nothing is ready in an idle inbox");
        // One scan at the start; with a 60 s rescan interval nothing else may cause one.
        // (Before the fix, each scan's own open of the folder caused the next: thousands.)
        assert!(
            watcher.scan_count() <= 2,
            "an idle inbox was scanned {} times in 2 s",
            watcher.scan_count()
        );
    }

    #[test]
    fn events_that_cannot_make_a_file_ready_are_ignored() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        for ignored in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!can_change_what_is_ready(&ignored), "{ignored:?}");
        }
        for acted_on in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::File),
            EventKind::Other,
        ] {
            assert!(can_change_what_is_ready(&acted_on), "{acted_on:?}");
        }
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        assert!(matches!(
            InboxWatcher::new(missing, SETTLE, LONG_RESCAN),
            Err(InboxWatchError::Watch { .. })
        ));
    }
}
