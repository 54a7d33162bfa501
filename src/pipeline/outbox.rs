//! The outbox: one reconciled result file per manifest, and a retry manifest where needed.
//!
//! Both are written atomically (temporary file, fsync, rename, fsync of the folder) once
//! every item is final. The finishing time is recorded first, so a result written again
//! after a crash is the same file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::clock::rfc3339;
use crate::context::Context;
use crate::state::item::{ItemRecord, ItemState, PublicationRecord};
use crate::state::job::{JobKind, JobRecord, JobState};
use crate::store::{ManifestRecord, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store holds damaged JSON text: {0}")]
    Damaged(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the result: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Serialize)]
pub struct ResultDocument {
    pub manifest: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    pub received_at: String,
    pub finished_at: Option<String>,
    pub counts: Counts,
    pub bulk_jobs: Vec<BulkJobSummary>,
    pub items: ItemsById,
}

#[derive(Serialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
    pub unknown: u32,
}

#[derive(Serialize)]
pub struct BulkJobSummary {
    pub bulk_job_id: String,
    pub first_index: u32,
    pub items: u32,
    pub status: Option<String>,
}

#[derive(Serialize)]
pub struct ItemResult {
    pub index: u32,
    pub status: &'static str,
    pub tent_id: Option<String>,
    pub tent_name: Option<String>,
    pub bulk_job_id: Option<String>,
    pub generation_id: Option<String>,
    pub publication: Option<PublicationOut>,
    pub rejected_by: Option<&'static str>,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

#[derive(Serialize)]
pub struct PublicationOut {
    pub status: String,
    pub published_url: Option<String>,
    pub requested_custom_page_alias: Option<String>,
    pub applied_custom_page_alias: Option<String>,
    pub warnings: Vec<Value>,
    pub error: Option<Value>,
}

/// Items keyed by client_item_id, in manifest order.
pub struct ItemsById(pub Vec<(String, ItemResult)>);

impl Serialize for ItemsById {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, item) in &self.0 {
            map.serialize_entry(id, item)?;
        }
        map.end()
    }
}

fn notice_json(code: &Option<String>, message: &Option<String>) -> Value {
    serde_json::json!({ "code": code, "message": message })
}

fn publication_out(p: &PublicationRecord) -> PublicationOut {
    PublicationOut {
        status: p.status.to_string(),
        published_url: p.published_url.clone(),
        requested_custom_page_alias: p.requested_custom_page_alias.clone(),
        applied_custom_page_alias: p.applied_custom_page_alias.clone(),
        warnings: p
            .warnings
            .iter()
            .map(|w| notice_json(&w.code, &w.message))
            .collect(),
        error: p.error.as_ref().map(|e| notice_json(&e.code, &e.message)),
    }
}

/// Counts by final status, from the items themselves.
pub fn count_items(items: &[ItemRecord]) -> Counts {
    let mut counts = Counts {
        total: items.len() as u32,
        ..Counts::default()
    };
    for item in items {
        match item.state() {
            ItemState::Completed => counts.completed += 1,
            ItemState::Failed => counts.failed += 1,
            ItemState::Rejected => counts.rejected += 1,
            ItemState::TimedOut => counts.timed_out += 1,
            ItemState::Canceled => counts.canceled += 1,
            _ => counts.unknown += 1,
        }
    }
    counts
}

/// The manifest's status, in the words of bulk job statuses.
pub fn manifest_status(manifest: &ManifestRecord, counts: &Counts) -> &'static str {
    if manifest.rejection.is_some() {
        "rejected"
    } else if counts.completed == 0 {
        "failed"
    } else if counts.completed == counts.total - counts.rejected {
        "completed"
    } else {
        "completed_with_failures"
    }
}

pub fn build_result(
    manifest: &ManifestRecord,
    items: &[ItemRecord],
    jobs: &[JobRecord],
) -> ResultDocument {
    let counts = count_items(items);
    let bulk_jobs = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Bulk && j.remote_id.is_some())
        .filter(|j| matches!(j.state(), JobState::Admitted | JobState::Done))
        .map(|j| BulkJobSummary {
            bulk_job_id: j.remote_id.clone().unwrap_or_default(),
            first_index: j.item_indices.first().copied().unwrap_or(0),
            items: j.item_indices.len() as u32,
            status: j.status.clone(),
        })
        .collect();
    let items_out = items
        .iter()
        .map(|item| {
            (
                item.client_item_id.clone(),
                ItemResult {
                    index: item.index,
                    status: item.state().as_str(),
                    tent_id: item.tent_id.clone(),
                    tent_name: item.tent_name.clone(),
                    bulk_job_id: item.bulk_job_id.clone(),
                    generation_id: item.generation_id.clone(),
                    publication: item.publication.as_ref().map(publication_out),
                    rejected_by: item.rejected_by.map(|r| r.as_str()),
                    error_code: if item.state() == ItemState::Completed {
                        None
                    } else {
                        item.error_code.clone()
                    },
                    message: if item.state() == ItemState::Completed {
                        None
                    } else {
                        item.message.clone()
                    },
                },
            )
        })
        .collect();
    ResultDocument {
        manifest: manifest.file_name(),
        kind: manifest.kind.as_str(),
        status: manifest_status(manifest, &counts),
        error: manifest.rejection.clone(),
        received_at: rfc3339(manifest.received_at_ms),
        finished_at: manifest.finished_at_ms.map(rfc3339),
        counts,
        bulk_jobs,
        items: ItemsById(items_out),
    }
}

/// The retry manifest: the manifest's top-level fields and exactly the items that did not
/// complete, as they were given.
pub fn build_retry_manifest(
    manifest: &ManifestRecord,
    items: &[ItemRecord],
) -> Result<Option<Value>, OutboxError> {
    // The texts were written by intake from parsed JSON: one that no longer parses means
    // a damaged store, refused loudly rather than written as `null`.
    let damaged = |what: String, e: serde_json::Error| {
        debug_assert!(false, "{what} of manifest {} does not parse: {e}", manifest.name);
        OutboxError::Damaged(format!("{what} of manifest {}: {e}", manifest.name))
    };
    let retry = items
        .iter()
        .filter(|i| i.state() != ItemState::Completed)
        .map(|i| serde_json::from_str(&i.given).map_err(|e| damaged(format!("item {}", i.index), e)))
        .collect::<Result<Vec<Value>, OutboxError>>()?;
    if retry.is_empty() || manifest.rejection.is_some() {
        return Ok(None);
    }
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(manifest.kind.as_str().into()));
    let top: Map<String, Value> = serde_json::from_str(&manifest.top_given)
        .map_err(|e| damaged("the top-level fields".into(), e))?;
    out.extend(top);
    out.insert("items".into(), Value::Array(retry));
    Ok(Some(Value::Object(out)))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let wrap = |source: std::io::Error| OutboxError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = atomic_write_file::AtomicWriteFile::options()
        .open(path)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    file.commit().map_err(wrap)?;
    Ok(())
}

pub fn result_path(ctx: &Context, manifest: &ManifestRecord) -> PathBuf {
    ctx.settings
        .paths
        .outbox
        .join(format!("{}.result.json", manifest.name))
}

pub fn retry_path(ctx: &Context, manifest: &ManifestRecord) -> PathBuf {
    ctx.settings
        .paths
        .outbox
        .join(format!("{}.retry.json", manifest.name))
}

/// If every item of the manifest is final: records the finishing time, writes the result
/// (and retry) file, and records that it is written. Failures are logged and retried by
/// the sweeper; nothing in the store is lost.
pub async fn finish_if_done(ctx: &Context, manifest_id: u64) {
    if let Err(e) = try_finish(ctx, manifest_id).await {
        tracing::error!(
            manifest_id,
            "the result is not written yet (it will be tried again): {e}"
        );
    }
}

async fn try_finish(ctx: &Context, manifest_id: u64) -> Result<(), OutboxError> {
    // One finisher at a time, so that a poll and the sweeper never both write a result.
    // The store's writer lock is held only for the two small commits: the result's items
    // are all final and can no longer change, so building and writing it needs no lock.
    let _finishing = ctx.finishing.lock().await;
    let manifest = {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        let manifest = txn.manifest().clone();
        if manifest.result_written {
            ctx.set_active(manifest_id, false);
            return Ok(());
        }
        if manifest.unfinished() > 0 {
            return Ok(());
        }
        if manifest.finished_at_ms.is_none() {
            txn.manifest_mut().finished_at_ms = Some(ctx.clock.now_ms());
            txn.commit().await?
        } else {
            manifest
        }
    };
    let items = ctx.store.items(manifest_id)?;
    let jobs = ctx.store.jobs(manifest_id)?;
    let result = build_result(&manifest, &items, &jobs);
    fail::fail_point!("outbox-before-write", |_| crate::crash::simulated_crash());
    if let Some(retry) = build_retry_manifest(&manifest, &items)? {
        write_atomically(
            &retry_path(ctx, &manifest),
            &serde_json::to_vec_pretty(&retry)?,
        )?;
    }
    write_atomically(
        &result_path(ctx, &manifest),
        &serde_json::to_vec_pretty(&result)?,
    )?;
    fail::fail_point!("outbox-after-write", |_| crate::crash::simulated_crash());
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        txn.manifest_mut().result_written = true;
        txn.commit().await?;
    }
    ctx.set_active(manifest_id, false);
    tracing::info!(
        manifest = %manifest.name,
        status = result.status,
        completed = result.counts.completed,
        total = result.counts.total,
        "result written"
    );
    Ok(())
}
