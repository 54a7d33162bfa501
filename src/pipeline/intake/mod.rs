//! Intake: from a ready file in the inbox to durable items in the store, then to the archive.
//!
//! Order (each step durable before the next): validate → one flushed store commit of the
//! manifest, its items and its indexes → move the file to `archive/NAME.json` → mark it
//! archived. A crash between the commit and the move is finished by recovery, which
//! recognises the file by its bytes.

pub mod validation;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::pipeline::intake::watch::InboxWatcher;
use crate::state::item::ItemRecord;
use crate::manifest::{ManifestKind, ValidatedManifest, MAX_MANIFEST_BYTES};
use crate::store::{ManifestRecord, Received, Store, StoreError};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The inbox task: takes every ready file, one at a time, until shutdown.
pub async fn run(ctx: Arc<Context>, mut watcher: InboxWatcher, shutdown: CancellationToken) {
    loop {
        let ready = watcher.next_ready(&shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        for path in ready {
            if shutdown.is_cancelled() {
                return;
            }
            match take(&ctx, &path).await {
                Ok(Some(name)) => {
                    watcher.forget(&path);
                    tracing::info!(manifest = %name, file = %path.display(), "manifest taken from the inbox");
                }
                Ok(None) => watcher.forget(&path),
                Err(e) => {
                    // The file stays in the inbox; forgetting it makes it settle again
                    // before the next try, so a persistent failure is not a hot loop.
                    watcher.forget(&path);
                    tracing::error!(file = %path.display(), "intake failed (it will be tried again): {e}");
                }
            }
            ctx.mark_progress();
        }
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
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&hasher.finalize());
    Ok(out)
}

/// Takes one file: records it (accepted or rejected) and archives it. Returns its NAME,
/// or `None` when the file vanished before it could be read.
pub async fn take(ctx: &Context, path: &Path) -> Result<Option<String>, IntakeError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let too_large = match std::fs::metadata(path) {
        Ok(meta) => meta.len() > MAX_MANIFEST_BYTES,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IntakeError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let bytes = if too_large {
        Vec::new()
    } else {
        match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IntakeError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    };
    let hash = if too_large {
        match sha256_file(path) {
            Ok(hash) => hash,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IntakeError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    } else {
        sha256(&bytes)
    };

    // A file already recorded but not archived yet (a crash, or a failed move, in between;
    // accepted or rejected): finish the move instead of taking it twice.
    for id in ctx.active_ids() {
        if let Some(record) = ctx.store.manifest(id)? {
            if !record.archived && record.inbox_file == file_name && record.sha256 == hash {
                archive(ctx, &record, path).await?;
                return Ok(Some(record.name));
            }
        }
    }

    let name_check = validation::check_manifest_name(&file_name);
    let base_name = match &name_check {
        Ok(name) => name.clone(),
        Err(_) => validation::sanitize_manifest_name(&file_name),
    };
    let verdict: Result<ValidatedManifest, String> = if too_large {
        Err(format!(
            "the file is over {} MiB",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ))
    } else {
        match name_check {
            Err(e) => Err(e.to_string()),
            Ok(_) => validation::validate_manifest(&bytes).map_err(|e| e.to_string()),
        }
    };
    let verdict = match verdict {
        Ok(manifest) => match ctx.store.manifest_with_hash(&hash)? {
            Some(earlier) => {
                let earlier = ctx.store.manifest(earlier)?;
                Err(match earlier {
                    Some(m) => format!(
                        "its bytes are identical to the earlier manifest `{}` (received {}); sending it again would pay twice. To send it again on purpose, change anything in it",
                        m.file_name(),
                        crate::clock::rfc3339(m.received_at_ms)
                    ),
                    None => "its bytes are identical to an earlier manifest".to_string(),
                })
            }
            None => Ok(manifest),
        },
        Err(e) => Err(e),
    };

    let writer = ctx.store.writer().await;
    let name = unique_name(writer.store(), &base_name)?;
    let id = ctx.store.new_manifest_id()?;
    let now = ctx.clock.now_ms();
    let (kind, top, item_count) = match &verdict {
        Ok(m) => (
            m.kind,
            serde_json::Value::Object(m.top.clone()).to_string(),
            m.items.len() as u32,
        ),
        Err(_) => (kind_hint(&bytes), "{}".to_string(), 0),
    };
    let record = ManifestRecord::received(Received {
        id,
        name: name.clone(),
        inbox_file: file_name.clone(),
        kind,
        received_at_ms: now,
        sha256: hash,
        top,
        item_count,
        rejection: verdict.as_ref().err().map(|e| format!("{file_name}: {e}")),
    });
    let mut txn = writer.create(record);
    txn.index_name();
    match &verdict {
        Ok(manifest) => {
            txn.index_hash();
            for item in &manifest.items {
                let given = item.given.to_string();
                let mut rejection = item.rejection.clone();
                let mut target = None;
                if rejection.is_none() && manifest.kind == ManifestKind::Edit {
                    match resolve_edit_target(&ctx.store, &item.given) {
                        Ok(tent_id) => target = Some(tent_id),
                        Err(message) => {
                            rejection = Some(format!(
                                "item {} (`{}`): {message}",
                                item.index, item.client_item_id
                            ))
                        }
                    }
                }
                let mut record = match rejection {
                    Some(message) => ItemRecord::rejected_locally(
                        id,
                        item.index,
                        item.client_item_id.clone(),
                        given,
                        format!("{file_name}: {message}"),
                    ),
                    None => ItemRecord::pending(id, item.index, item.client_item_id.clone(), given),
                };
                record.target_tent_id = target;
                if !item.client_item_id.starts_with('#') {
                    txn.index_client_item(&item.client_item_id, item.index);
                }
                txn.insert_item(record);
            }
            if manifest.items.iter().all(|i| i.rejection.is_some()) {
                tracing::warn!(manifest = %name, "every item of the manifest was rejected locally");
            }
        }
        Err(message) => {
            tracing::warn!(manifest = %name, "manifest rejected: {file_name}: {message}");
        }
    }
    let record = txn.commit().await?;
    drop(writer);
    fail::fail_point!("intake-before-archive", |_| crate::crash::simulated_crash(
    ));
    ctx.set_active(id, true);
    archive(ctx, &record, path).await?;
    ctx.wake_submitter.notify_one();
    // A manifest with nothing to send (rejected, or every item rejected) finishes now.
    crate::pipeline::outbox::finish_if_done(ctx, id).await;
    Ok(Some(name))
}

/// `kind` of a manifest that failed validation, for its result file (default bulk).
fn kind_hint(bytes: &[u8]) -> ManifestKind {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .and_then(|k| match k.as_str() {
            "create" => Some(ManifestKind::Create),
            "edit" => Some(ManifestKind::Edit),
            _ => None,
        })
        .unwrap_or(ManifestKind::Bulk)
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
fn resolve_edit_target(store: &Store, given: &serde_json::Value) -> Result<String, String> {
    if let Some(tent_id) = given.get("tent_id").and_then(|t| t.as_str()) {
        return Ok(tent_id.to_string());
    }
    let Some(target) = given.get("target_client_item_id").and_then(|t| t.as_str()) else {
        return Err("names no tent (`tent_id` or `target_client_item_id`)".to_string());
    };
    let found = store
        .items_with_client_id(target)
        .map_err(|e| format!("cannot look up `{target}`: {e}"))?;
    let mut tents: Vec<String> = Vec::new();
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
        0 if found.is_empty() => Err(format!(
            "target_client_item_id `{target}` is unknown: no earlier manifest has an item with that client_item_id"
        )),
        0 => Err(format!(
            "target_client_item_id `{target}` has no tent: the earlier item was never admitted"
        )),
        n => Err(format!(
            "target_client_item_id `{target}` is ambiguous: {n} earlier items with that client_item_id have tents; name the tent by tent_id"
        )),
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
        move_file(from, &to).map_err(|source| IntakeError::Archive {
            from: from.to_path_buf(),
            to: to.clone(),
            source,
        })?;
    }
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(record.id)?;
    txn.manifest_mut().archived = true;
    txn.commit().await?;
    Ok(())
}

/// Rename, or copy-then-remove across file systems; both folders are synced.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the archive is on another file system.
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)?;
        }
        Err(e) => return Err(e),
    }
    for dir in [to.parent(), from.parent()].into_iter().flatten() {
        if let Ok(handle) = std::fs::File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    Ok(())
}
