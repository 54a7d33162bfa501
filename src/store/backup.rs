//! Backup and restore (SPEC section 8).
//!
//! A backup is one point in time: every record of the store, read under the writer's
//! lock, so no transaction is half in it. The file:
//!
//! ```text
//! tented-bulkd backup 1\n
//! {"created_at_ms": …, "newest_manifest_id": …, "records": …}\n      (one JSON line)
//! the record stream (super::stream): per record, key length u32 BE,
//!   key, value length u32 BE, value                                  (× records)
//! sha256 of everything above (32 bytes)
//! ```
//!
//! A restore fills an empty state folder from such a file (checked whole first) and then
//! pauses every manifest that was unfinished at the snapshot: requests sent after it are
//! not in it, so sending waits for the operator (`resume` or `cancel`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::format::Judged;
use super::stream::{self, StreamError};
use super::{Store, StoreError};
use crate::state::control::ControlEvent;

/// The first line of every backup file.
pub const BACKUP_MAGIC: &str = "tented-bulkd backup 1\n";

/// Records per batch when a backup is restored.
const RESTORE_BATCH: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the backup: {0}")]
    Write(#[source] std::io::Error),
    #[error("cannot read the backup: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a tented-bulkd backup (it does not begin with `tented-bulkd backup 1`)")]
    NotABackup,
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the backup holds a store of format {found}, written by a development build before the first release; this tented-bulkd reads format {supported} only: restore it with the build that took it; nothing was written")]
    Older {
        found: super::FoundFormat,
        supported: u64,
    },
    #[error("the backup was taken by a newer tented-bulkd (store format {found}; this one reads up to {supported}): restore it with that version; nothing was written")]
    Newer { found: u64, supported: u64 },
    #[error("the state folder {path} is not empty: restore fills an empty one only (move it aside first; the daemon must not be running on it)")]
    StateNotEmpty { path: PathBuf },
    #[error("cannot look into the state folder {path}: {source}")]
    StateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a backup's header says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub created_at_ms: u64,
    /// The newest manifest id committed at the snapshot (the marker's), if any.
    pub newest_manifest_id: Option<u64>,
    pub records: u64,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Checks a backup as it streams past: every byte but the last 32 is hashed, and the
/// last 32 must be that hash.
#[derive(Default)]
pub struct StreamCheck {
    hasher: Sha256,
    tail: Vec<u8>,
    bytes: u64,
}

impl StreamCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 32 {
            let hashed = self.tail.len() - 32;
            self.hasher.update(&self.tail[..hashed]);
            self.tail.drain(..hashed);
        }
    }

    /// Whether what was fed is a whole backup (its checksum holds), and its size.
    pub fn finish(self) -> (bool, u64) {
        let whole = self.tail.len() == 32 && self.hasher.finalize().as_slice() == self.tail;
        (whole, self.bytes)
    }
}

impl Store {
    /// Writes a consistent snapshot of the whole store into `out` and returns the file
    /// (at its end) with the header: the writer's lock is held from the first record read
    /// to the last, so it is one point in time, and no transaction is half in it. The
    /// reading runs on a blocking thread; the pipeline's writers wait for it meanwhile
    /// (readers do not).
    pub async fn backup_to(
        &self,
        mut out: std::fs::File,
        created_at_ms: u64,
    ) -> Result<(BackupHeader, std::fs::File), BackupError> {
        let guard = std::sync::Arc::clone(&self.writer).lock_owned().await;
        // A commit lets the writer's lock go before its sync: what is applied may not be on
        // the disk yet, and a backup must hold nothing a power cut could take back.
        self.sync_applied().await.map_err(BackupError::Store)?;
        let store = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            store
                .write_backup(&mut out, created_at_ms)
                .map(|header| (header, out))
        })
        .await
        .map_err(|e| BackupError::Write(std::io::Error::other(e)))?;
        written
    }

    fn write_backup(
        &self,
        out: impl Write,
        created_at_ms: u64,
    ) -> Result<BackupHeader, BackupError> {
        let mut count = 0u64;
        for entry in self.tree.iter() {
            entry.map_err(StoreError::from)?;
            count += 1;
        }
        let header = BackupHeader {
            created_at_ms,
            newest_manifest_id: self.marked_newest(),
            records: count,
        };
        let mut out = Hashing {
            inner: std::io::BufWriter::new(out),
            hasher: Sha256::new(),
        };
        let header_line = serde_json::to_string(&header)
            .map_err(|e| BackupError::Damaged(format!("cannot encode the header: {e}")))?;
        out.write_all(BACKUP_MAGIC.as_bytes())
            .map_err(BackupError::Write)?;
        out.write_all(header_line.as_bytes())
            .map_err(BackupError::Write)?;
        out.write_all(b"\n").map_err(BackupError::Write)?;
        let written = stream::write_records(&self.tree, &mut out)?;
        if written != count {
            // Impossible under the writer's lock; refused rather than trusted.
            return Err(BackupError::Damaged(format!(
                "the store changed while it was read ({count} then {written} records)"
            )));
        }
        let digest = out.hasher.finalize();
        let mut inner = out.inner;
        inner.write_all(&digest).map_err(BackupError::Write)?;
        inner.flush().map_err(BackupError::Write)?;
        Ok(header)
    }

    /// The marker's newest manifest id, if it has one.
    fn marked_newest(&self) -> Option<u64> {
        std::fs::read_to_string(&self.marker)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Fills the empty state folder `path` from the backup file `backup` (checked whole
    /// first), then pauses every manifest unfinished at the snapshot with the reason
    /// that names it. Returns the header and how many manifests were paused.
    pub async fn restore(path: &Path, backup: &Path) -> Result<(BackupHeader, u32), BackupError> {
        refuse_non_empty(path)?;
        let header = verify_backup(backup)?;
        refuse_other_format(backup, &header)?;
        let store = Store::open(path)?;
        let mut reader = open_records(backup)?;
        stream::fill_tree(&store.tree, &mut reader, header.records, RESTORE_BATCH)?;
        store.sync_blocking()?;
        // What a crash left of an interrupted intake in the backed-up store goes now:
        // this store's ids start again after its newest manifest.
        store.remove_intake_leftovers()?;
        let newest = store.newest_recorded_id()?;
        store
            .newest_id
            .store(newest, std::sync::atomic::Ordering::SeqCst);
        if let Some(id) = header.newest_manifest_id {
            store.write_marker(id)?;
        }
        let reason = format!(
            "restored from a backup of {}: requests sent after it may be sent again",
            crate::clock::rfc3339(header.created_at_ms)
        );
        let mut paused = 0;
        for manifest in store.manifests()? {
            if manifest.finished_at_ms.is_some() {
                continue;
            }
            let writer = store.writer().await;
            let mut txn = writer.begin(manifest.id)?;
            if txn.manifest_mut().apply_control(ControlEvent::Restored {
                reason: reason.clone(),
            }) {
                paused += 1;
            }
            txn.commit().await?;
        }
        Ok((header, paused))
    }
}

/// Refuses a backup of a store whose format (its `V` record) is not the one this binary
/// reads, older or newer, before anything is written.
fn refuse_other_format(backup: &Path, header: &BackupHeader) -> Result<(), BackupError> {
    let mut reader = open_records(backup)?;
    let mut mark = None;
    for _ in 0..header.records {
        let (key, value) = stream::read_record(&mut reader)?;
        if key == super::FORMAT_KEY {
            mark = Some(value);
        }
    }
    let supported = super::STORE_FORMAT;
    match super::format::judge(mark.as_deref(), header.records > 0) {
        Judged::Current | Judged::Fresh => Ok(()),
        Judged::Older(found) => Err(BackupError::Older { found, supported }),
        Judged::Newer(found) => Err(BackupError::Newer { found, supported }),
        Judged::Unreadable => Err(BackupError::Damaged(
            "its store's format mark `V` is not a number".into(),
        )),
    }
}

/// A state folder that does not exist or is empty is fine; anything else is refused.
fn refuse_non_empty(path: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::StateNotEmpty {
                    path: path.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BackupError::StateFolder {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads the whole file once: the magic, the header, every record's framing, and the
/// checksum. Returns the header.
pub fn verify_backup(backup: &Path) -> Result<BackupHeader, BackupError> {
    let file = std::fs::File::open(backup).map_err(BackupError::Read)?;
    let size = file.metadata().map_err(BackupError::Read)?.len();
    if size < 32 {
        return Err(BackupError::NotABackup);
    }
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::new(file).take(size - 32);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer).map_err(BackupError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let mut expected = [0u8; 32];
    reader
        .into_inner()
        .read_exact(&mut expected)
        .map_err(BackupError::Read)?;
    if hasher.finalize().as_slice() != expected {
        return Err(BackupError::Damaged(
            "its checksum does not match (truncated or altered)".into(),
        ));
    }
    let (header, _) = read_header(backup)?;
    Ok(header)
}

fn read_header(
    backup: &Path,
) -> Result<(BackupHeader, std::io::BufReader<std::fs::File>), BackupError> {
    use std::io::BufRead;
    let file = std::fs::File::open(backup).map_err(BackupError::Read)?;
    let mut reader = std::io::BufReader::new(file);
    let mut magic = String::new();
    reader
        .read_line(&mut magic)
        .map_err(|_| BackupError::NotABackup)?;
    if magic != BACKUP_MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut line = String::new();
    reader.read_line(&mut line).map_err(BackupError::Read)?;
    let header: BackupHeader = serde_json::from_str(line.trim_end())
        .map_err(|e| BackupError::Damaged(format!("its header does not parse: {e}")))?;
    Ok((header, reader))
}

fn open_records(backup: &Path) -> Result<std::io::BufReader<std::fs::File>, BackupError> {
    Ok(read_header(backup)?.1)
}

impl From<StreamError> for BackupError {
    fn from(e: StreamError) -> BackupError {
        match e {
            StreamError::Store(e) => BackupError::Store(StoreError::Sled(e)),
            StreamError::Write(e) => BackupError::Write(e),
            damaged => BackupError::Damaged(damaged.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::control::Control;

    async fn add_manifest(store: &Store, name: &str, finished: bool) -> u64 {
        let id = store.new_manifest_id().expect("an id");
        let writer = store.writer().await;
        let mut txn = writer
            .create(crate::store::received_for_test(id, name, 1))
            .expect("create");
        txn.insert_item(crate::store::pending_for_test(id, 0, &format!("{name}-0")))
            .expect("insert");
        txn.index_name();
        txn.index_client_item(&format!("{name}-0"), 0);
        txn.commit().await.expect("commit");
        if finished {
            let writer = store.writer().await;
            let mut txn = writer.begin(id).expect("begin");
            txn.manifest_mut().finished_at_ms = Some(2_000);
            txn.commit().await.expect("commit");
        }
        id
    }

    #[tokio::test]
    async fn a_restored_store_holds_the_same_records_with_its_unfinished_manifests_paused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a")).expect("opens");
        let done = add_manifest(&store, "done", true).await;
        let busy = add_manifest(&store, "busy", false).await;
        let file = std::fs::File::create(dir.path().join("b.backup")).expect("create");
        let (header, _) = store
            .backup_to(file, 1_796_000_000_000)
            .await
            .expect("backs up");
        assert_eq!(header.newest_manifest_id, Some(busy));
        let backup = dir.path().join("b.backup");
        assert_eq!(verify_backup(&backup).expect("verifies"), header);
        let bytes = std::fs::read(&backup).expect("read");
        let mut check = StreamCheck::default();
        for chunk in bytes.chunks(5) {
            check.feed(chunk);
        }
        assert_eq!(check.finish(), (true, bytes.len() as u64));

        // Refused into a folder that holds anything.
        let err = Store::restore(&dir.path().join("a"), &backup)
            .await
            .expect_err("not empty");
        assert!(matches!(err, BackupError::StateNotEmpty { .. }), "{err}");

        let (restored_header, paused) = Store::restore(&dir.path().join("r"), &backup)
            .await
            .expect("restores");
        assert_eq!((restored_header, paused), (header, 1));
        let restored = Store::open(&dir.path().join("r")).expect("reopens");
        assert_eq!(
            restored.items(busy).expect("reads"),
            store.items(busy).expect("reads")
        );
        assert_eq!(restored.manifest_named("done").expect("reads"), Some(done));
        assert_eq!(
            restored.items_with_client_id("done-0").expect("reads"),
            vec![(done, 0)]
        );
        let record = restored.manifest(busy).expect("reads").expect("there");
        match record.control() {
            Control::Paused { reason } => assert_eq!(
                reason,
                "restored from a backup of 2026-11-30T00:53:20Z: requests sent after it may be sent again"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            restored
                .manifest(done)
                .expect("reads")
                .expect("there")
                .control(),
            &Control::Running
        );
        // New ids come after the restored ones.
        assert!(restored.new_manifest_id().expect("an id") > busy);
    }

    /// What restoring a backup of a store whose `V` was then set to `mark` (`None`:
    /// removed, as formats 1 and 2 had it) gives, once it checked that nothing was written.
    async fn restore_a_store_marked(mark: Option<u64>) -> BackupError {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a")).expect("opens");
        add_manifest(&store, "m", false).await;
        let key = super::super::FORMAT_KEY;
        match mark {
            Some(n) => store.tree.insert(key, &n.to_be_bytes()[..]).map(|_| ()),
            None => store.tree.remove(key).map(|_| ()),
        }
        .expect("write");
        let path = dir.path().join("b.backup");
        store
            .backup_to(std::fs::File::create(&path).expect("create"), 5)
            .await
            .expect("backs up");
        let err = Store::restore(&dir.path().join("r"), &path)
            .await
            .expect_err("refused");
        assert!(!dir.path().join("r").exists(), "nothing written: {err}");
        err
    }

    #[tokio::test]
    async fn a_backup_of_another_store_format_is_refused_before_anything_is_written() {
        let err = restore_a_store_marked(Some(super::super::STORE_FORMAT + 1)).await;
        assert!(
            matches!(
                err,
                BackupError::Newer {
                    found: 4,
                    supported: 3
                }
            ),
            "{err}"
        );
        let err = restore_a_store_marked(None).await;
        assert!(
            matches!(
                err,
                BackupError::Older {
                    found: crate::store::FoundFormat::Unmarked,
                    supported: 3
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("format 1 or 2"),
            "names the format: {err}"
        );
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_file_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a")).expect("opens");
        add_manifest(&store, "m", false).await;
        let path = dir.path().join("b.backup");
        store
            .backup_to(std::fs::File::create(&path).expect("create"), 5)
            .await
            .expect("backs up");
        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let err = Store::restore(&dir.path().join("r"), &path)
            .await
            .expect_err("damaged");
        assert!(matches!(err, BackupError::Damaged(_)), "{err}");
        assert!(!dir.path().join("r").exists(), "nothing written");
        std::fs::write(
            &path,
            b"{\"not\": \"a backup\"} plus enough bytes for a checksum",
        )
        .expect("write");
        let mut check = StreamCheck::default();
        for chunk in bytes.chunks(7) {
            check.feed(chunk);
        }
        assert!(!check.finish().0, "the stream check sees the damage too");
        let err = verify_backup(&path).expect_err("foreign");
        assert!(
            matches!(err, BackupError::Damaged(_) | BackupError::NotABackup),
            "{err}"
        );
    }
}
