//! Intake: from a ready file in the inbox to durable items in the store, then to the archive.
//!
//! Order (each step durable before the next): read the file and sync its bytes → judge
//! it ([`judge_file`]: pure, the same judgement `tented-bulkd validate` prints) → apply
//! the verdict: the manifest, its items and its indexes, synced → move the file to
//! `archive/NAME.json` (the archive and inbox folders synced) → mark it archived. Ready
//! files go through these steps in groups, with one sync of each kind per group
//! ([`batch`]). A crash between the commit and the move is finished by recovery, which
//! recognises the file by its bytes.
//!
//! What the judgement needs from the store (whether its bytes are an earlier manifest's)
//! is looked up before it; what needs the writer (the `~N` name, edit targets) is done
//! while applying it.

pub mod batch;
#[cfg(test)]
mod hostile;
pub mod judge;
pub mod validation;
pub mod watch;

pub use judge::{judge_file, EarlierCopy, FileContent, FileRejection, Verdict};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::manifest::{ItemFields, ManifestKind, TopFields, ValidatedItem};
use crate::pipeline::intake::watch::InboxWatcher;
use crate::state::item::ItemRecord;
use crate::store::{Applied, ManifestRecord, Received, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move {from} to {to}: {source}")]
    Archive {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} names no file")]
    NoFileName { path: PathBuf },
    #[error("judging {path} failed (a bug in the daemon; the file stays in the inbox): {detail}")]
    Judge { path: PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the tent an edit item names cannot be found; the item is rejected locally with
/// this message.
#[derive(Debug, thiserror::Error)]
enum EditTargetError {
    #[error("names no tent (`tent_id` or `target_client_item_id`)")]
    NoTarget,
    #[error("target_client_item_id `{target}` is unknown: no earlier manifest has an item with that client_item_id")]
    Unknown { target: String },
    #[error("target_client_item_id `{target}` has no tent: the earlier item was never admitted")]
    NeverAdmitted { target: String },
    #[error("target_client_item_id `{target}` is ambiguous: {count} earlier items with that client_item_id have tents; name the tent by tent_id")]
    Ambiguous { target: String, count: usize },
    #[error("target_client_item_id `{target}` names an item of manifest `{manifest}`, which was pruned from the store (retention.store): its tent can no longer be looked up; name the tent by tent_id")]
    Pruned { target: String, manifest: String },
    #[error("target_client_item_id `{target}` is unknown: no manifest kept in the store has an item with that client_item_id, but older manifests were pruned (retention.store) and it may have been one of theirs, whose tents can no longer be looked up; name the tent by tent_id")]
    UnknownMaybePruned { target: String },
}

/// The inbox task: takes every ready file, in groups ([`batch`]), until shutdown.
pub async fn run(ctx: Arc<Context>, mut watcher: InboxWatcher, shutdown: CancellationToken) {
    let mut unarchived = batch::Unarchived::load(&ctx);
    loop {
        let ready = watcher.next_ready(&shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        batch::take_ready(&ctx, &mut unarchived, ready, &shutdown, |path, outcome| {
            // A file left for the next round stays ready. A file that failed must settle
            // again before the next try, so a persistent failure is not a hot loop.
            if outcome != batch::Outcome::Later {
                watcher.forget(path);
            }
        })
        .await;
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// The sha256 of a file, read in pieces (a file over the size limit is never held whole).
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    sha256_of(&mut std::fs::File::open(path)?)
}

/// The sha256 of what `reader` gives, read in pieces.
fn sha256_of(reader: &mut impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&hasher.finalize());
    Ok(out)
}

/// The file name of a path the inbox watcher gave. Every such path names a file, so a
/// path without one is a bug: refused (and the file left in the inbox), never judged
/// under an empty name.
fn inbox_file_name(path: &Path) -> Result<String, IntakeError> {
    let file_name = path.file_name();
    debug_assert!(
        file_name.is_some(),
        "the inbox watcher gave a path without a file name: {}",
        path.display()
    );
    match file_name {
        Some(name) => Ok(name.to_string_lossy().into_owned()),
        None => {
            tracing::error!(file = %path.display(), "an inbox path without a file name; not taken");
            Err(IntakeError::NoFileName {
                path: path.to_path_buf(),
            })
        }
    }
}

/// What the judgement needs of a manifest file: its bytes, or only its size when it is
/// over the size limit (such a file is never held whole). `validate` reads files with
/// this too, so both judge the same content.
pub fn read_manifest_file(path: &Path) -> std::io::Result<FileContent> {
    let size = std::fs::metadata(path)?.len();
    if judge::is_over_size_limit(size) {
        return Ok(FileContent::TooLarge { size });
    }
    Ok(FileContent::Bytes(std::fs::read(path)?))
}

/// Reads an inbox file and its sha256 (a file over the size limit is hashed in pieces)
/// and syncs its bytes, through one handle; `None` when it vanished meanwhile.
fn read_inbox_file(path: &Path) -> Result<Option<(FileContent, [u8; 32])>, IntakeError> {
    unless_vanished(path, read_and_sync(path))
}

/// What [`read_manifest_file`] reads, and the sha256 of the whole file; then its bytes are
/// synced: a writer that renamed it in may never have synced it, and the archive copy is
/// what an operator restores from, so its bytes are on the disk before it leaves the inbox.
fn read_and_sync(path: &Path) -> std::io::Result<(FileContent, [u8; 32])> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let read = if judge::is_over_size_limit(size) {
        (FileContent::TooLarge { size }, sha256_of(&mut file)?)
    } else {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        let hash = sha256(&bytes);
        (FileContent::Bytes(bytes), hash)
    };
    file.sync_all()?;
    Ok(read)
}

/// A read's result, with a file that is no longer there as `None`.
fn unless_vanished<T>(path: &Path, read: std::io::Result<T>) -> Result<Option<T>, IntakeError> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IntakeError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The earlier accepted manifest with these bytes, from the store's hash index.
fn earlier_copy(store: &Store, hash: &[u8; 32]) -> Result<Option<EarlierCopy>, StoreError> {
    let Some(id) = store.manifest_with_hash(hash)? else {
        return Ok(None);
    };
    Ok(Some(match store.manifest(id)? {
        Some(earlier) => EarlierCopy::Known {
            file_name: earlier.file_name(),
            received_at_ms: earlier.received_at_ms,
        },
        // Pruned (retention.store): its summary still names it.
        None => match store.summary(id)? {
            Some(pruned) => EarlierCopy::Known {
                file_name: format!("{}.json", pruned.name),
                received_at_ms: pruned.received_at_ms,
            },
            None => EarlierCopy::Unrecorded,
        },
    }))
}

/// What the manifest's record says of a verdict: its kind, typed top-level fields and
/// their text as given, its item count, and why it was rejected as a whole (if it was).
/// Validation checked every type, so typed fields that do not fit are a bug, refused
/// loudly as a rejection of the whole manifest (nothing is sent).
fn shape_of(
    file_name: &str,
    verdict: &Verdict,
) -> (ManifestKind, TopFields, String, u32, Option<String>) {
    let rejected =
        |kind, reason: String| (kind, TopFields::default(), "{}".into(), 0, Some(reason));
    match verdict {
        Verdict::Rejected { kind, reason, .. } => rejected(*kind, format!("{file_name}: {reason}")),
        Verdict::Accepted { manifest, .. } => match TopFields::from_validated(&manifest.top) {
            Ok(top) => (
                manifest.kind,
                top,
                serde_json::Value::Object(manifest.top.clone()).to_string(),
                // Validation numbers items with u32 and refuses a manifest it cannot number.
                manifest.items.len() as u32,
                None,
            ),
            Err(e) => {
                debug_assert!(false, "validation and the typed fields disagree: {e}");
                tracing::error!(file = %file_name, "{e} (a bug): the manifest is rejected, nothing is sent");
                rejected(
                    manifest.kind,
                    format!("{file_name}: {e} (a bug in the daemon; nothing was sent)"),
                )
            }
        },
    }
}

/// Applies a verdict under the writer's lock: the manifest record under a unique name
/// (`~N`), its name index, and for an accepted manifest its hash index and its items
/// (edit targets resolved against the store). Not durable yet: the caller waits for that
/// ([`Store::durable_together`], once for a group of files) before anything acts on it.
/// The verdict is consumed: each item's text and fields move into its record, which is
/// written in the store's next slice and dropped, so the manifest is never held twice.
async fn record_verdict(
    ctx: &Context,
    file_name: &str,
    sha256: [u8; 32],
    verdict: Verdict,
) -> Result<Applied, IntakeError> {
    let writer = ctx.store.writer().await;
    let name = unique_name(writer.store(), verdict.name())?;
    let id = ctx.store.new_manifest_id()?;
    let (kind, top, top_given, item_count, rejection) = shape_of(file_name, &verdict);
    let mut txn = writer.create(ManifestRecord::received(Received {
        id,
        name: name.clone(),
        inbox_file: file_name.to_string(),
        kind,
        received_at_ms: ctx.clock.now_ms(),
        sha256,
        top,
        top_given,
        item_count,
        rejection,
    }))?;
    let accepted = rejection_is_none(&txn);
    txn.index_name();
    match verdict {
        Verdict::Accepted { manifest, .. } if accepted => {
            txn.index_hash();
            let all_rejected = manifest.items.iter().all(|i| i.rejection.is_some());
            let targets = edit_targets(&ctx.store, &manifest)?;
            for item in manifest.items {
                if let Some(id) = &item.client_item_id {
                    txn.index_client_item(id.as_str(), item.index);
                }
                let record = item_record(&ctx.store, &targets, id, file_name, manifest.kind, item);
                txn.insert_item(record)?;
            }
            if all_rejected {
                tracing::warn!(manifest = %name, "every item of the manifest was rejected locally");
            }
        }
        Verdict::Accepted { .. } => {}
        Verdict::Rejected { reason, .. } => {
            tracing::warn!(manifest = %name, "manifest rejected: {file_name}: {reason}");
        }
    }
    Ok(txn.apply_without_sync()?)
}

/// The earlier items of every `target_client_item_id` an edit manifest names, looked up
/// at once (each index bucket read once, however many targets fall in it); empty for
/// other kinds.
fn edit_targets(
    store: &Store,
    manifest: &crate::manifest::ValidatedManifest,
) -> Result<HashMap<String, Vec<(u64, u32)>>, StoreError> {
    if manifest.kind != ManifestKind::Edit {
        return Ok(HashMap::new());
    }
    let wanted: HashSet<&str> = manifest
        .items
        .iter()
        .filter(|item| item.rejection.is_none())
        .filter_map(|item| item.fields.as_ref())
        .filter(|fields| fields.tent_id.is_none())
        .filter_map(|fields| fields.target_client_item_id.as_deref())
        .collect();
    store.items_with_client_ids(&wanted)
}

fn rejection_is_none(txn: &crate::store::NewManifest<'_>) -> bool {
    txn.manifest().rejection.is_none()
}

/// The record of one item of an accepted manifest: pending, or rejected locally (by
/// validation, or because the tent an edit item names cannot be found).
fn item_record(
    store: &Store,
    targets: &HashMap<String, Vec<(u64, u32)>>,
    manifest_id: u64,
    file_name: &str,
    kind: ManifestKind,
    item: ValidatedItem,
) -> ItemRecord {
    // The record keeps the item's key, `#INDEX` for an item without an id.
    let key = item.key();
    let given = item.given;
    let mut rejection = item.rejection;
    let mut target = None;
    if rejection.is_none() && kind == ManifestKind::Edit {
        match resolve_edit_target(store, targets, item.fields.as_ref()) {
            Ok(tent_id) => target = Some(tent_id),
            Err(error) => rejection = Some(format!("item {} (`{}`): {error}", item.index, key)),
        }
    }
    let typed = match (rejection, item.fields) {
        (Some(message), _) => Err(message),
        (None, Some(fields)) => Ok(fields),
        // Validation types every item it accepts.
        (None, None) => Err(format!(
            "item {}: no typed fields (a bug in the daemon)",
            item.index
        )),
    };
    let mut record = match typed {
        Ok(fields) => ItemRecord::pending(manifest_id, item.index, key, given, fields),
        Err(message) => ItemRecord::rejected_locally(
            manifest_id,
            item.index,
            key,
            given,
            format!("{file_name}: {message}"),
        ),
    };
    record.target_tent_id = target;
    record
}

/// `daily`, or `daily~2`, `daily~3`, … when the name was used before. `~` is not allowed
/// in names that users give, so a suffixed name never collides with one of theirs.
fn unique_name(store: &Store, base: &str) -> Result<String, StoreError> {
    if store.manifest_named(base)?.is_none() {
        return Ok(base.to_string());
    }
    let mut n = 2u64;
    loop {
        let candidate = format!("{base}~{n}");
        if store.manifest_named(&candidate)?.is_none() {
            return Ok(candidate);
        }
        n += 1;
    }
}

/// The tent an edit item names: its `tent_id`, or the tent created for the
/// `target_client_item_id` of an earlier manifest.
fn resolve_edit_target(
    store: &Store,
    targets: &HashMap<String, Vec<(u64, u32)>>,
    fields: Option<&ItemFields>,
) -> Result<String, EditTargetError> {
    let fields = fields.ok_or(EditTargetError::NoTarget)?;
    if let Some(tent_id) = &fields.tent_id {
        return Ok(tent_id.clone());
    }
    let Some(target) = fields.target_client_item_id.as_deref() else {
        return Err(EditTargetError::NoTarget);
    };
    // Looked up with the manifest's other targets (`edit_targets`).
    let found = targets.get(target).cloned().unwrap_or_default();
    let mut tents: Vec<String> = Vec::new();
    // Items of a manifest being pruned: their tents can no longer be trusted to be found.
    if let Some(pruned) = found
        .iter()
        .find_map(|(manifest_id, _)| store.summary(*manifest_id).ok().flatten())
    {
        return Err(EditTargetError::Pruned {
            target: target.to_string(),
            manifest: pruned.name,
        });
    }
    // Items of an intake that a crash interrupted have no manifest record: skip them.
    let found: Vec<(u64, u32)> = found
        .into_iter()
        .filter(|(manifest_id, _)| matches!(store.manifest(*manifest_id), Ok(Some(_))))
        .collect();
    for (manifest_id, index) in &found {
        if let Ok(Some(item)) = store.item(*manifest_id, *index) {
            if let Some(tent_id) = item.tent_id {
                if !tents.contains(&tent_id) {
                    tents.push(tent_id);
                }
            }
        }
    }
    match tents.len() {
        1 => Ok(tents.remove(0)),
        0 if found.is_empty() => match store.any_pruned() {
            Ok(true) => Err(EditTargetError::UnknownMaybePruned {
                target: target.to_string(),
            }),
            _ => Err(EditTargetError::Unknown {
                target: target.to_string(),
            }),
        },
        0 => Err(EditTargetError::NeverAdmitted {
            target: target.to_string(),
        }),
        count => Err(EditTargetError::Ambiguous {
            target: target.to_string(),
            count,
        }),
    }
}

/// Moves the manifest file to `archive/NAME.json` (never overwriting) and records it.
pub async fn archive(
    ctx: &Context,
    record: &ManifestRecord,
    from: &Path,
) -> Result<(), IntakeError> {
    let archive_dir = &ctx.settings.paths.archive;
    let mut to = archive_dir.join(record.file_name());
    if to.exists() {
        to = archive_dir.join(format!("{}.{}.json", record.name, record.id));
    }
    if from.exists() {
        // Syncs of the file and both folders: off the runtime's workers.
        let (source, target) = (from.to_path_buf(), to.clone());
        tokio::task::spawn_blocking(move || move_file(&source, &target))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the move task failed: {e}"))))
            .map_err(|source| IntakeError::Archive {
                from: from.to_path_buf(),
                to: to.clone(),
                source,
            })?;
    }
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(record.id)?;
    txn.archive();
    txn.commit().await?;
    Ok(())
}

/// Rename, or copy-then-remove across file systems, durably: the file's bytes are synced
/// first (a writer that renamed it into the inbox may never have synced it, and the
/// archive copy is what an operator restores from), then the folder it enters, then the
/// folder it left. An error of any step is an error of the move.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let sync_folder = |file: &Path| match file.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    };
    std::fs::File::open(from)?.sync_all()?;
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the archive is on another file system.
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            sync_folder(to)?;
            std::fs::remove_file(from)?;
        }
        Err(e) => return Err(e),
    }
    sync_folder(to)?;
    sync_folder(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_read_as_its_size_only() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let small = dir.path().join("small.json");
        std::fs::write(&small, b"{}").expect("write");
        assert_eq!(
            read_manifest_file(&small).expect("readable"),
            FileContent::Bytes(b"{}".to_vec())
        );
        let huge = dir.path().join("huge.json");
        let file = std::fs::File::create(&huge).expect("create");
        let size = crate::manifest::MAX_MANIFEST_BYTES + 1;
        file.set_len(size).expect("sparse file");
        assert_eq!(
            read_manifest_file(&huge).expect("readable"),
            FileContent::TooLarge { size }
        );
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            unless_vanished(&missing, read_manifest_file(&missing)),
            Ok(None)
        ));
        assert!(matches!(
            inbox_file_name(&small).as_deref(),
            Ok("small.json")
        ));
    }

    #[test]
    fn an_edit_target_is_the_given_tent_id_or_a_clear_refusal() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = Store::open(dir.path()).expect("store");
        let typed = |v: serde_json::Value| ItemFields::from_validated(&v).expect("fits");
        let given = typed(serde_json::json!({"tent_id": "6f1c2a9e-0000-4000-8000-000000000001"}));
        assert_eq!(
            resolve_edit_target(&store, &HashMap::new(), Some(&given)).expect("named"),
            "6f1c2a9e-0000-4000-8000-000000000001"
        );
        assert!(matches!(
            resolve_edit_target(
                &store,
                &HashMap::new(),
                Some(&typed(serde_json::json!({"prompt": "p"})))
            ),
            Err(EditTargetError::NoTarget)
        ));
        let given = typed(serde_json::json!({"target_client_item_id": "row-1"}));
        assert!(matches!(
            resolve_edit_target(&store, &HashMap::new(), Some(&given)),
            Err(EditTargetError::Unknown { target }) if target == "row-1"
        ));
    }

    #[test]
    fn edit_target_errors_say_which_case_it_is() {
        let target = "row-1".to_string();
        let cases = [
            (
                EditTargetError::NoTarget,
                "names no tent (`tent_id` or `target_client_item_id`)",
            ),
            (
                EditTargetError::Unknown {
                    target: target.clone(),
                },
                "target_client_item_id `row-1` is unknown: no earlier manifest has an item with that client_item_id",
            ),
            (
                EditTargetError::NeverAdmitted {
                    target: target.clone(),
                },
                "target_client_item_id `row-1` has no tent: the earlier item was never admitted",
            ),
            (
                EditTargetError::Ambiguous { target, count: 2 },
                "target_client_item_id `row-1` is ambiguous: 2 earlier items with that client_item_id have tents; name the tent by tent_id",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
