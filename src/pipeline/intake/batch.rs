//! Many ready files taken together, with the promises of one (SPEC sections 6 and 7:
//! 10,000 files dropped at once are all taken within 10 s).
//!
//! One file at a time cost about seven syncs each (its store commit, the marker's file and
//! folder, its bytes, the archive and inbox folders, its `archived` commit), one after
//! another. A group of ready files, in name order, goes through the same steps together:
//!
//! 1. each file is read, hashed, its bytes synced and judged, several at once on blocking
//!    threads (the bytes are synced before the record exists: the archive copy must be
//!    whole once the inbox's entry is gone, as one file's move made sure);
//! 2. each verdict is applied under the writer's lock, one after another (names, edit
//!    targets and duplicate bytes see the group's earlier files), then one sync covers
//!    them all and the marker moves once, to the group's newest manifest;
//! 3. each file is renamed into the archive, then the archive folder and the inbox folder
//!    are synced once; then the `archived` marks, applied one after another, one sync.
//!
//! Nothing of a file leaves the inbox before its record is durable, and each file's
//! failure is its own: a file that cannot be read, judged, recorded or moved stays in the
//! inbox (and is tried again) while the rest of its group is taken. Only a failed sync
//! fails every file it covers. A file with the same bytes as a file taken earlier in the
//! same look at the inbox is left for the next look, so that it is judged a duplicate of
//! that one's record, as when files came one at a time (it may have been judged before
//! that record existed). The next group of small files is read and judged while the
//! current one is recorded and archived; a file too large to share (over
//! [`GROUP_BYTES`]) is taken alone and read alone, so the intake of a big manifest
//! streams as before.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::pipeline::intake::{
    archive, earlier_copy, inbox_file_name, judge_file, read_inbox_file, record_verdict,
    IntakeError, Verdict,
};
use crate::store::{Applied, ManifestRecord};

/// At most this many files are taken together.
pub const GROUP_FILES: usize = 512;

/// Files are taken together while their sizes add up to at most this many bytes, so that
/// the verdicts a group holds at once stay small; a larger file is taken alone.
pub const GROUP_BYTES: u64 = 4 << 20;

/// The most files read and judged at once (their syncs wait on the disk, not a core).
const MAX_READERS: usize = 8;

/// What became of one ready file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable in the store and moved into the archive (or its record is, and the move is
    /// for the next try: see [`Unarchived`]).
    Taken,
    /// It vanished before it could be read.
    Gone,
    /// Left for the next look at the inbox (the same bytes as a file taken earlier in
    /// this one): still ready, it is returned again at once.
    Later,
    /// It stays in the inbox, the error logged, and is tried again once it settles.
    Failed,
}

/// A record whose file could not be moved into the archive yet: the next try of the same
/// file (name and bytes) finishes the move instead of taking it twice.
#[derive(Debug)]
struct UnarchivedRecord {
    inbox_file: String,
    id: u64,
    sha256: [u8; 32],
}

/// The records whose move into the archive is still to be made, so that finding one
/// costs nothing per file however many manifests are in flight.
#[derive(Debug, Default)]
pub struct Unarchived {
    records: Vec<UnarchivedRecord>,
}

impl Unarchived {
    /// The unfinished manifests whose file is not archived yet (recovery could not move
    /// it): read once, when intake starts.
    pub fn load(ctx: &Context) -> Unarchived {
        let mut records = Vec::new();
        for id in ctx.active_ids() {
            match ctx.store.manifest(id) {
                Ok(Some(record)) if !record.archived => records.push(UnarchivedRecord {
                    inbox_file: record.inbox_file,
                    id,
                    sha256: record.sha256,
                }),
                Ok(_) => {}
                Err(e) => tracing::error!(manifest_id = id, "cannot read a manifest: {e}"),
            }
        }
        Unarchived { records }
    }

    fn add(&mut self, record: &ManifestRecord) {
        self.records.push(UnarchivedRecord {
            inbox_file: record.inbox_file.clone(),
            id: record.id,
            sha256: record.sha256,
        });
    }

    /// The record of this very file (name and bytes), if its move is still to be made.
    fn find(&self, inbox_file: &str, sha256: &[u8; 32]) -> Option<u64> {
        self.records
            .iter()
            .find(|r| r.inbox_file == inbox_file && r.sha256 == *sha256)
            .map(|r| r.id)
    }

    fn remove(&mut self, id: u64) {
        self.records.retain(|r| r.id != id);
    }
}

/// Ready files taken together, in name order.
#[derive(Debug)]
struct Group {
    paths: Vec<PathBuf>,
    /// Their sizes when the group was cut.
    bytes: u64,
}

impl Group {
    /// Whether these are small files (not one large file alone): the next group may be
    /// read while this one is recorded, and this one while the last is.
    fn is_small(&self) -> bool {
        self.bytes <= GROUP_BYTES
    }
}

/// The ready files (in name order) cut into groups of at most [`GROUP_FILES`] files and
/// [`GROUP_BYTES`] bytes; a file larger than that is a group of its own.
fn groups(ready: Vec<PathBuf>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for path in ready {
        // A file that cannot be looked at now is judged (or found gone) in its group.
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        match out.last_mut() {
            Some(group) if group.paths.len() < GROUP_FILES && group.bytes + size <= GROUP_BYTES => {
                group.bytes += size;
                group.paths.push(path);
            }
            _ => out.push(Group {
                paths: vec![path],
                bytes: size,
            }),
        }
    }
    out
}

/// A file read, its bytes synced, and judged.
struct Judged {
    file_name: String,
    sha256: [u8; 32],
    verdict: Verdict,
}

/// Reads a file, syncs its bytes and judges it (on a blocking thread); `None` when it
/// vanished meanwhile.
fn read_and_judge(ctx: &Context, path: &Path) -> Result<Option<Judged>, IntakeError> {
    let file_name = inbox_file_name(path)?;
    let Some((content, sha256)) = read_inbox_file(path)? else {
        return Ok(None);
    };
    let earlier = earlier_copy(&ctx.store, &sha256)?;
    let verdict = judge_file(&file_name, &content, earlier.as_ref());
    Ok(Some(Judged {
        file_name,
        sha256,
        verdict,
    }))
}

/// What reading and judging a file gave.
type JudgedFile = Result<Option<Judged>, IntakeError>;

/// A group's files being read and judged, at most [`MAX_READERS`] at once, off the
/// runtime's workers (a large manifest's judgement takes every core a moment).
struct Reading {
    task: tokio::task::JoinHandle<Vec<JudgedFile>>,
}

impl Reading {
    fn start(ctx: &Arc<Context>, group: &Group) -> Reading {
        let (ctx, paths) = (Arc::clone(ctx), group.paths.clone());
        Reading {
            task: tokio::spawn(async move { read_and_judge_all(ctx, paths).await }),
        }
    }

    /// The judged files, in the group's order.
    async fn finish(self, group: &Group) -> Vec<JudgedFile> {
        match self.task.await {
            Ok(judged) => judged,
            Err(e) => group
                .paths
                .iter()
                .map(|path| {
                    Err(IntakeError::Judge {
                        path: path.clone(),
                        detail: format!("the reading task failed: {e}"),
                    })
                })
                .collect(),
        }
    }

    /// Stops reading (at shutdown): nothing was done with what was read.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn read_and_judge_all(ctx: Arc<Context>, paths: Vec<PathBuf>) -> Vec<JudgedFile> {
    let mut results: Vec<Option<JudgedFile>> = paths.iter().map(|_| None).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while next < paths.len() && running.len() < MAX_READERS {
            let (ctx, path, index) = (Arc::clone(&ctx), paths[next].clone(), next);
            running.spawn(async move {
                let judged = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || read_and_judge(&ctx, &path)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(IntakeError::Judge {
                        path,
                        detail: e.to_string(),
                    })
                });
                (index, judged)
            });
            next += 1;
        }
        match running.join_next().await {
            Some(Ok((index, judged))) => results[index] = Some(judged),
            // The task only awaits the blocking one, whose panic it turned into an error.
            Some(Err(e)) => tracing::error!("an intake task failed: {e}"),
            None => break,
        }
    }
    results
        .into_iter()
        .zip(&paths)
        .map(|(result, path)| {
            result.unwrap_or_else(|| {
                Err(IntakeError::Judge {
                    path: path.clone(),
                    detail: "the judging task was lost".into(),
                })
            })
        })
        .collect()
}

/// Takes every ready file of one look at the inbox, group after group (see the module's
/// documentation). Calls `done` with each file's outcome.
pub async fn take_ready(
    ctx: &Arc<Context>,
    unarchived: &mut Unarchived,
    ready: Vec<PathBuf>,
    shutdown: &CancellationToken,
    mut done: impl FnMut(&Path, Outcome),
) {
    let groups = groups(ready);
    let mut seen = HashSet::new();
    let mut reading = groups.first().map(|group| Reading::start(ctx, group));
    for (index, group) in groups.iter().enumerate() {
        let Some(current) = reading.take() else {
            break;
        };
        let judged = current.finish(group).await;
        let next = groups.get(index + 1);
        if let Some(next) = next.filter(|next| group.is_small() && next.is_small()) {
            reading = Some(Reading::start(ctx, next));
        }
        let outcomes = take_group(ctx, unarchived, &mut seen, group, judged).await;
        for (path, outcome) in group.paths.iter().zip(outcomes) {
            done(path, outcome);
        }
        ctx.health.mark_progress();
        if shutdown.is_cancelled() {
            if let Some(reading) = reading {
                reading.stop().await;
            }
            return;
        }
        if reading.is_none() {
            reading = next.map(|next| Reading::start(ctx, next));
        }
    }
}

/// Takes a group of ready files, read and judged (see the module's documentation); one
/// outcome per file, in the group's order. `seen` holds the bytes taken earlier in this
/// look at the inbox. Errors are logged here.
async fn take_group(
    ctx: &Context,
    unarchived: &mut Unarchived,
    seen: &mut HashSet<[u8; 32]>,
    group: &Group,
    judged: Vec<JudgedFile>,
) -> Vec<Outcome> {
    let started = Instant::now();
    let paths = &group.paths;
    let mut outcomes: Vec<Outcome> = paths.iter().map(|_| Outcome::Failed).collect();
    let mut to_record = Vec::new();
    for (index, result) in judged.into_iter().enumerate() {
        let path = &paths[index];
        outcomes[index] = match result {
            Ok(None) => Outcome::Gone,
            Err(e) => failed(path, &e),
            Ok(Some(judged)) => {
                let moved = match unarchived.find(&judged.file_name, &judged.sha256) {
                    Some(id) => finish_move(ctx, unarchived, id, path, started).await,
                    None => None,
                };
                match moved {
                    Some(outcome) => outcome,
                    None if !seen.insert(judged.sha256) => Outcome::Later,
                    None => {
                        to_record.push((index, judged));
                        continue;
                    }
                }
            }
        };
    }
    let recorded = record_all(ctx, paths, to_record, &mut outcomes).await;
    let durable = started.elapsed();
    fail::fail_point!("intake-before-archive", |_| crate::crash::simulated_crash());
    for (_, record) in &recorded {
        ctx.activate(record);
    }
    let taken_ids: Vec<u64> = recorded.iter().map(|(_, record)| record.id).collect();
    let archived = archive_all(ctx, unarchived, paths, recorded, &mut outcomes).await;
    tracing::debug!(
        files = paths.len(),
        taken = archived.len(),
        record_ms = durable.as_millis() as u64,
        archive_ms = (started.elapsed() - durable).as_millis() as u64,
        "intake of a group of files"
    );
    for (index, record) in &archived {
        taken(&record.name, &paths[*index], started);
    }
    // Sending starts once the group is archived (a file whose move failed is sent too:
    // its record is durable).
    for id in taken_ids {
        ctx.nudge(id);
    }
    // A manifest with nothing to send (rejected, or every item rejected) finishes now,
    // after the line that says it was taken.
    for (_, record) in archived {
        if record.unfinished() == 0 {
            crate::pipeline::outbox::finish_if_done(ctx, record.id).await;
        }
    }
    outcomes
}

/// The line that says a file was taken (durable and archived).
fn taken(name: &str, path: &Path, started: Instant) {
    let took_ms = started.elapsed().as_millis() as u64;
    tracing::info!(manifest = %name, file = %path.display(), took_ms, "manifest taken from the inbox");
}

/// Logs why a file stays in the inbox.
fn failed(path: &Path, e: &IntakeError) -> Outcome {
    // The file stays in the inbox; it must settle again before the next try, so a
    // persistent failure is not a hot loop.
    tracing::error!(file = %path.display(), "intake failed (it will be tried again): {e}");
    Outcome::Failed
}

/// A file already recorded but not archived (a failed move): finishes the move instead of
/// taking it twice. `None` when its record no longer waits for the move (it was pruned):
/// the file is then judged as any other.
async fn finish_move(
    ctx: &Context,
    unarchived: &mut Unarchived,
    id: u64,
    path: &Path,
    started: Instant,
) -> Option<Outcome> {
    let record = match ctx.store.manifest(id) {
        Ok(Some(record)) if !record.archived => record,
        Ok(_) => {
            unarchived.remove(id);
            return None;
        }
        Err(e) => return Some(failed(path, &e.into())),
    };
    Some(match archive(ctx, &record, path).await {
        Ok(()) => {
            unarchived.remove(id);
            taken(&record.name, path, started);
            Outcome::Taken
        }
        Err(e) => failed(path, &e),
    })
}

/// Applies every verdict under the writer's lock, one after another, then waits once for
/// all of them to be durable. Returns the durable records with their files' indexes.
async fn record_all(
    ctx: &Context,
    group: &[PathBuf],
    to_record: Vec<(usize, Judged)>,
    outcomes: &mut [Outcome],
) -> Vec<(usize, ManifestRecord)> {
    let mut applied: Vec<Applied> = Vec::with_capacity(to_record.len());
    let mut indexes = Vec::with_capacity(to_record.len());
    for (index, judged) in to_record {
        match record_verdict(ctx, &judged.file_name, judged.sha256, judged.verdict).await {
            Ok(one) => {
                applied.push(one);
                indexes.push(index);
            }
            Err(e) => outcomes[index] = failed(&group[index], &e),
        }
    }
    match ctx.store.durable_together(applied).await {
        Ok(records) => indexes.into_iter().zip(records).collect(),
        Err(e) => {
            tracing::error!(
                files = indexes.len(),
                "intake failed: the store could not make a group of manifests durable (they stay in the inbox and will be tried again): {e}"
            );
            Vec::new()
        }
    }
}

/// Moves every recorded file into the archive, syncs the archive and the inbox folders
/// once, then records them archived (one sync). Returns the records archived.
async fn archive_all(
    ctx: &Context,
    unarchived: &mut Unarchived,
    group: &[PathBuf],
    recorded: Vec<(usize, ManifestRecord)>,
    outcomes: &mut [Outcome],
) -> Vec<(usize, ManifestRecord)> {
    if recorded.is_empty() {
        return Vec::new();
    }
    let archive_dir = ctx.settings.paths.archive.clone();
    let moves: Vec<(PathBuf, PathBuf)> = recorded
        .iter()
        .map(|(index, record)| (group[*index].clone(), archive_target(&archive_dir, record)))
        .collect();
    let inbox_dir = ctx.settings.paths.inbox.clone();
    let moved = tokio::task::spawn_blocking(move || move_files(&moves, &archive_dir, &inbox_dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("the move task failed: {e}"))));
    let moved = match moved {
        Ok(moved) => moved,
        Err(e) => {
            tracing::error!("cannot sync the archive and inbox folders after moving files into the archive: {e}");
            return Vec::new();
        }
    };
    let mut archived = Vec::with_capacity(recorded.len());
    for ((index, record), result) in recorded.into_iter().zip(moved) {
        match result {
            Ok(()) => archived.push((index, record)),
            Err(e) => {
                unarchived.add(&record);
                outcomes[index] = failed(&group[index], &e);
            }
        }
    }
    mark_archived(ctx, archived, outcomes).await
}

/// Where a record's file goes in the archive: `NAME.json`, or `NAME.ID.json` when that
/// is taken (never overwriting).
fn archive_target(archive_dir: &Path, record: &ManifestRecord) -> PathBuf {
    let to = archive_dir.join(record.file_name());
    if to.exists() {
        return archive_dir.join(format!("{}.{}.json", record.name, record.id));
    }
    to
}

/// Renames each file (its bytes were synced when it was read) into the archive, then
/// syncs the archive folder and the inbox folder once for all. One result per file; an
/// error of a folder's sync is every file's.
fn move_files(
    moves: &[(PathBuf, PathBuf)],
    archive_dir: &Path,
    inbox_dir: &Path,
) -> std::io::Result<Vec<Result<(), IntakeError>>> {
    let results: Vec<Result<(), IntakeError>> = moves
        .iter()
        .map(|(from, to)| {
            rename_or_copy(from, to).map_err(|source| IntakeError::Archive {
                from: from.clone(),
                to: to.clone(),
                source,
            })
        })
        .collect();
    if results.iter().any(Result::is_ok) {
        std::fs::File::open(archive_dir)?.sync_all()?;
        std::fs::File::open(inbox_dir)?.sync_all()?;
    }
    Ok(results)
}

/// A rename, or across file systems a copy (synced, with its folder) and a removal.
fn rename_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the archive is on another file system.
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            if let Some(dir) = to.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Records the moved files archived: applied one after another, one sync.
async fn mark_archived(
    ctx: &Context,
    moved: Vec<(usize, ManifestRecord)>,
    outcomes: &mut [Outcome],
) -> Vec<(usize, ManifestRecord)> {
    let mut applied = Vec::with_capacity(moved.len());
    let mut indexes = Vec::with_capacity(moved.len());
    for (index, record) in moved {
        // The file is in the archive: whatever happens to its mark, it is taken (a
        // record left unarchived is settled by the next start's recovery).
        outcomes[index] = Outcome::Taken;
        let writer = ctx.store.writer().await;
        let marked = writer.begin(record.id).and_then(|mut txn| {
            txn.archive();
            txn.apply_without_sync()
        });
        match marked {
            Ok(one) => {
                applied.push(one);
                indexes.push(index);
            }
            Err(e) => {
                tracing::error!(manifest = %record.name, "cannot record the manifest archived: {e}")
            }
        }
    }
    match ctx.store.durable_together(applied).await {
        Ok(records) => indexes.into_iter().zip(records).collect(),
        Err(e) => {
            tracing::error!("cannot record a group of manifests archived: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_so_many_files_and_bytes_and_a_large_file_goes_alone() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = |name: &str, size: u64| {
            let path = dir.path().join(name);
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(size))
                .expect("a sparse file");
            path
        };
        let mut ready: Vec<PathBuf> = (0..GROUP_FILES + 3)
            .map(|n| file(&format!("a{n:04}.json"), 100))
            .collect();
        ready.push(file("b-large.json", GROUP_BYTES + 1));
        // Two halves fill a group exactly; one byte more starts the next.
        ready.push(file("c-half.json", GROUP_BYTES / 2));
        ready.push(file("d-half.json", GROUP_BYTES / 2));
        ready.push(file("e-byte.json", 1));
        // A file gone since the look at the inbox: judged (found gone) in its group.
        ready.push(dir.path().join("f-gone.json"));
        let cut = groups(ready.clone());
        let sizes: Vec<usize> = cut.iter().map(|g| g.paths.len()).collect();
        assert_eq!(sizes, [GROUP_FILES, 3, 1, 2, 2]);
        let small: Vec<bool> = cut.iter().map(Group::is_small).collect();
        assert_eq!(small, [true, true, false, true, true]);
        assert_eq!(cut[2].paths, [dir.path().join("b-large.json")]);
        let again: Vec<PathBuf> = cut.into_iter().flat_map(|g| g.paths).collect();
        assert_eq!(again, ready, "every file once, in order");
    }
}
