//! The outbox: one reconciled result file per manifest, the same result as CSV for
//! spreadsheets, and a retry manifest where needed.
//!
//! Each is written atomically (temporary file, fsync, rename, then one fsync of the folder
//! for a manifest's files) once every item is final, `NAME.result.json` last, so a reader
//! that waits for it finds every file of the manifest in place. The finishing time is
//! recorded first, so a result written again after a crash is the same file. The types
//! here are what `tented-bulkd schema result` is generated from.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::clock::rfc3339;
use crate::context::Context;
use crate::manifest::ManifestKind;
use crate::state::error_code::ErrorCode;
use crate::state::item::{ItemRecord, ItemState, NoticeRecord, PublicationRecord, RejectedBy};
use crate::state::job::{JobKind, JobRecord, JobState};
use crate::state::manifest::{FinalCounts, FinalStatus};
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
    #[error("cannot encode the result as CSV: {0}")]
    EncodeCsv(#[from] csv::Error),
}

fn manifest_status_schema(_: &mut SchemaGenerator) -> Schema {
    let statuses = FinalStatus::ALL.map(FinalStatus::as_str);
    json_schema!({"type": "string", "enum": statuses})
}

/// An item's final statuses, from the item state machine.
fn item_status_schema(_: &mut SchemaGenerator) -> Schema {
    let finals: Vec<&str> = ItemState::ALL
        .into_iter()
        .filter(|state| state.is_final())
        .map(ItemState::as_str)
        .collect();
    json_schema!({"type": "string", "enum": finals})
}

fn rejected_by_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": [RejectedBy::Local.as_str(), RejectedBy::Api.as_str(), null]})
}

/// Enums written in the result file as their words. (The store encodes [`ItemState`] and
/// [`RejectedBy`] by their variants, so their own serde derives are not the result's.)
mod as_word {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// An enum with a word for each value, and the parse of that word.
    pub trait Word: Copy + Sized {
        fn word(self) -> &'static str;
        fn from_word(word: &str) -> Option<Self>;
    }

    impl Word for crate::state::item::ItemState {
        fn word(self) -> &'static str {
            self.as_str()
        }
        fn from_word(word: &str) -> Option<Self> {
            Self::parse(word)
        }
    }

    impl Word for crate::state::item::RejectedBy {
        fn word(self) -> &'static str {
            self.as_str()
        }
        fn from_word(word: &str) -> Option<Self> {
            Self::parse(word)
        }
    }

    pub fn serialize<T: Word, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.word())
    }

    pub fn deserialize<'de, T: Word, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        let word = String::deserialize(deserializer)?;
        T::from_word(&word).ok_or_else(|| D::Error::custom(format!("unknown word `{word}`")))
    }

    /// The same for an optional value (null for none).
    pub mod option {
        use super::Word;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<T: Word, S: Serializer>(
            value: &Option<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.serialize_some(value.word()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: Word, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<T>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                Some(word) => T::from_word(&word)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown word `{word}`"))),
                None => Ok(None),
            }
        }
    }
}

/// `outbox/NAME.result.json` (SPEC section 5).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "tented-bulkd result",
    description = "The result of one manifest (SPEC section 5): written once every item is final."
)]
pub struct ResultDocument {
    /// The manifest's file name as taken (`NAME.json`, with any `~N` suffix).
    pub manifest: String,
    pub kind: ManifestKind,
    /// `completed` (every item not rejected completed), `completed_with_failures`,
    /// `failed` (none completed) or `rejected` (the manifest as a whole).
    #[schemars(schema_with = "manifest_status_schema")]
    pub status: FinalStatus,
    /// Why the manifest was rejected as a whole; null otherwise.
    pub error: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    pub received_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
    pub counts: FinalCounts,
    pub bulk_jobs: Vec<BulkJobSummary>,
    /// Every item by `client_item_id` (`#INDEX` for items without one), in manifest order;
    /// empty for a manifest rejected as a whole.
    pub items: ItemsById,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BulkJobSummary {
    pub bulk_job_id: String,
    pub first_index: u32,
    pub items: u32,
    pub status: Option<String>,
}

/// One item's outcome.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ItemResult {
    /// The item's zero-based position in the manifest.
    pub index: u32,
    #[serde(with = "as_word")]
    #[schemars(schema_with = "item_status_schema")]
    pub status: ItemState,
    pub tent_id: Option<String>,
    pub tent_name: Option<String>,
    pub bulk_job_id: Option<String>,
    pub generation_id: Option<String>,
    /// Null where the item was not auto-published.
    pub publication: Option<PublicationOut>,
    #[serde(with = "as_word::option")]
    #[schemars(schema_with = "rejected_by_schema")]
    pub rejected_by: Option<RejectedBy>,
    #[schemars(with = "Option<String>")]
    pub error_code: Option<ErrorCode>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PublicationOut {
    /// Tented's publication status (`published`, `published_with_warnings`, `failed`, …).
    pub status: String,
    pub published_url: Option<String>,
    pub requested_custom_page_alias: Option<String>,
    pub applied_custom_page_alias: Option<String>,
    pub warnings: Vec<Notice>,
    pub error: Option<Notice>,
}

/// A warning or error carried over from Tented.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Notice {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// Items keyed by client_item_id, in manifest order.
#[derive(Debug)]
pub struct ItemsById(pub Vec<(String, ItemResult)>);

impl ItemsById {
    /// The item with this key (`client_item_id`, or `#INDEX` for an item without one).
    pub fn get(&self, key: &str) -> Option<&ItemResult> {
        self.0
            .iter()
            .find(|(id, _)| id == key)
            .map(|(_, item)| item)
    }

    /// The items in manifest order.
    pub fn values(&self) -> impl Iterator<Item = &ItemResult> {
        self.0.iter().map(|(_, item)| item)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl JsonSchema for ItemsById {
    fn schema_name() -> Cow<'static, str> {
        "ItemsById".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<ItemResult>(),
        })
    }
}

impl Serialize for ItemsById {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, item) in &self.0 {
            map.serialize_entry(id, item)?;
        }
        map.end()
    }
}

/// In the file's order (which is manifest order).
impl<'de> Deserialize<'de> for ItemsById {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ItemsById, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = ItemsById;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of items by client_item_id")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ItemsById, A::Error> {
                let mut items = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    items.push(entry);
                }
                Ok(ItemsById(items))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

fn notice(record: &NoticeRecord) -> Notice {
    Notice {
        code: record.code.clone(),
        message: record.message.clone(),
    }
}

fn publication_out(p: &PublicationRecord) -> PublicationOut {
    PublicationOut {
        status: p.status.to_string(),
        published_url: p.published_url.clone(),
        requested_custom_page_alias: p.requested_custom_page_alias.clone(),
        applied_custom_page_alias: p.applied_custom_page_alias.clone(),
        warnings: p.warnings.iter().map(notice).collect(),
        error: p.error.as_ref().map(notice),
    }
}

/// Counts by final status, from the items themselves.
pub fn count_items(items: &[ItemRecord]) -> FinalCounts {
    FinalCounts::from_states(items.len() as u32, items.iter().map(|i| (i.state(), 1)))
}

pub fn build_result(
    manifest: &ManifestRecord,
    items: &[ItemRecord],
    jobs: &[JobRecord],
) -> ResultDocument {
    let counts = count_items(items);
    let bulk_jobs = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Bulk)
        .filter(|j| matches!(j.state(), JobState::Admitted | JobState::Done))
        .filter_map(|j| {
            Some(BulkJobSummary {
                bulk_job_id: j.admission()?.remote_id.to_owned(),
                first_index: j.first_index()?,
                items: j.item_indices.len() as u32,
                status: j.status.clone(),
            })
        })
        .collect();
    let items_out = items
        .iter()
        .map(|item| {
            (
                item.client_item_id.clone(),
                ItemResult {
                    index: item.index,
                    status: item.state(),
                    tent_id: item.tent_id.clone(),
                    tent_name: item.tent_name.clone(),
                    bulk_job_id: item.bulk_job_id.clone(),
                    generation_id: item.generation_id.clone(),
                    publication: item.publication.as_ref().map(publication_out),
                    rejected_by: item.rejected_by,
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
        kind: manifest.kind,
        status: FinalStatus::from_counts(manifest.rejection.is_some(), &counts),
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
        debug_assert!(
            false,
            "{what} of manifest {} does not parse: {e}",
            manifest.name
        );
        OutboxError::Damaged(format!("{what} of manifest {}: {e}", manifest.name))
    };
    let retry = items
        .iter()
        .filter(|i| i.state() != ItemState::Completed)
        .map(|i| {
            serde_json::from_str(&i.given).map_err(|e| damaged(format!("item {}", i.index), e))
        })
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

/// The header of `NAME.result.csv` (SPEC section 5): the field names of [`ResultCsvRow`].
pub const RESULT_CSV_HEADER: &str = "client_item_id,index,status,tent_id,tent_name,generation_id,published_url,publication_status,applied_custom_page_alias,error_code,message";

/// One row of `NAME.result.csv`: an item of the JSON result, flattened; `None` is an
/// empty cell.
#[derive(Serialize)]
struct ResultCsvRow<'a> {
    client_item_id: &'a str,
    index: u32,
    status: &'a str,
    tent_id: Option<&'a str>,
    tent_name: Option<&'a str>,
    generation_id: Option<&'a str>,
    published_url: Option<&'a str>,
    publication_status: Option<&'a str>,
    applied_custom_page_alias: Option<&'a str>,
    error_code: Option<&'a str>,
    message: Option<&'a str>,
}

/// `NAME.result.csv` for a result: RFC 4180 (CRLF line ends, fields quoted where
/// needed), UTF-8 without a byte order mark, the header row, then one row per item in
/// manifest order, built from the JSON result itself so the two cannot disagree.
pub fn result_csv(result: &ResultDocument) -> Result<Vec<u8>, OutboxError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    if result.items.0.is_empty() {
        // `serialize` writes the header with the first row; a result without items still
        // gets its header.
        writer.write_record(RESULT_CSV_HEADER.split(','))?;
    }
    for (client_item_id, item) in &result.items.0 {
        let publication = item.publication.as_ref();
        writer.serialize(ResultCsvRow {
            client_item_id,
            index: item.index,
            status: item.status.as_str(),
            tent_id: item.tent_id.as_deref(),
            tent_name: item.tent_name.as_deref(),
            generation_id: item.generation_id.as_deref(),
            published_url: publication.and_then(|p| p.published_url.as_deref()),
            publication_status: publication.map(|p| p.status.as_str()),
            applied_custom_page_alias: publication
                .and_then(|p| p.applied_custom_page_alias.as_deref()),
            error_code: item.error_code.as_ref().map(ErrorCode::as_str),
            message: item.message.as_deref(),
        })?;
    }
    writer
        .into_inner()
        .map_err(|e| OutboxError::EncodeCsv(e.into_error().into()))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    write_all_atomically(&[(path.to_path_buf(), bytes)])
}

/// Writes each of `files` atomically, all in one folder: each to a temporary file beside
/// it, synced; then each renamed into place, in order; then one `fsync` of the folder
/// for all of them. A crash before that sync can lose renames, never a file's bytes; the
/// result's files are then written again from the store, the same bytes. (One folder
/// sync a manifest, not one a file: a quarter of the outbox's `fsync`s.)
pub fn write_all_atomically<B: AsRef<[u8]>>(files: &[(PathBuf, B)]) -> Result<(), OutboxError> {
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| OutboxError::Write { path, source }
    };
    let Some(folder) = files.first().map(|(path, _)| folder_of(path).to_path_buf()) else {
        return Ok(());
    };
    let mut written = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        if folder_of(path) != folder.as_path() {
            return Err(wrap(path)(std::io::Error::other(
                "not in the folder of the other files written with it (a bug)",
            )));
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // The mode a plain `File::create` gives (0666 less the umask), not tempfile's
        // 0600: the outbox is read by whoever consumes the results.
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(&folder)
            .map_err(wrap(path))?;
        file.write_all(bytes.as_ref()).map_err(wrap(path))?;
        file.as_file().sync_all().map_err(wrap(path))?;
        written.push((path, file));
    }
    for (path, file) in written {
        file.persist(path).map_err(|e| wrap(path)(e.error))?;
    }
    std::fs::File::open(&folder)
        .and_then(|dir| dir.sync_all())
        .map_err(wrap(&folder))
}

/// The kinds of file [`write_all_atomically`] writes into the outbox.
const OUTBOX_SUFFIXES: [&str; 3] = [".result.json", ".result.csv", ".retry.json"];

/// Removes the temporary files a crash left in the outbox `folder` (between the writes of
/// [`write_all_atomically`] and their renames): `.NAME.result.json.XXXXXX.tmp` and the
/// like, nothing else. For the start, before any result is written: the outbox is this
/// daemon's. Returns how many went.
pub fn remove_leftover_temporaries(folder: &Path) -> Result<usize, OutboxError> {
    let wrap = |source: std::io::Error| OutboxError::Write {
        path: folder.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(wrap(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(wrap)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_leftover_temporary(name) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(wrap(e)),
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is one of [`write_all_atomically`]'s temporary files in the outbox.
fn is_leftover_temporary(name: &str) -> bool {
    let Some(inner) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    // `NAME.result.json` + `.` + tempfile's random part (no dot in it).
    let Some((target, random)) = inner.rsplit_once('.') else {
        return false;
    };
    !random.is_empty()
        && OUTBOX_SUFFIXES
            .iter()
            .any(|suffix| target.ends_with(suffix))
}

/// The folder a file is written in: its parent, or the current folder for a bare name
/// (`from-csv --out NAME.json`).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

pub fn result_path(ctx: &Context, manifest: &ManifestRecord) -> PathBuf {
    ctx.settings
        .paths
        .outbox
        .join(format!("{}.result.json", manifest.name))
}

pub fn result_csv_path(ctx: &Context, manifest: &ManifestRecord) -> PathBuf {
    ctx.settings
        .paths
        .outbox
        .join(format!("{}.result.csv", manifest.name))
}

pub fn retry_path(ctx: &Context, manifest: &ManifestRecord) -> PathBuf {
    ctx.settings
        .paths
        .outbox
        .join(format!("{}.retry.json", manifest.name))
}

/// Writes the retry manifest (where an item did not complete), the result CSV (unless the
/// manifest was rejected as a whole), then the JSON result: atomically, in that order.
fn write_result_files(
    ctx: &Context,
    manifest: &ManifestRecord,
    items: &[ItemRecord],
    result: &ResultDocument,
) -> Result<(), OutboxError> {
    let mut files = Vec::with_capacity(3);
    if let Some(retry) = build_retry_manifest(manifest, items)? {
        files.push((
            retry_path(ctx, manifest),
            serde_json::to_vec_pretty(&retry)?,
        ));
    }
    if manifest.rejection.is_none() {
        files.push((result_csv_path(ctx, manifest), result_csv(result)?));
    }
    files.push((
        result_path(ctx, manifest),
        serde_json::to_vec_pretty(result)?,
    ));
    write_all_atomically(&files)
}

/// If every item of the manifest is final: records the finishing time, writes the result
/// (and retry) file, and records that it is written. Failures are logged and retried by
/// the sweeper; nothing in the store is lost.
pub async fn finish_if_done(ctx: &Context, manifest_id: u64) {
    if let Err(e) = try_finish(ctx, manifest_id).await {
        ctx.active.result_unwritten(manifest_id);
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
    let _finishing = ctx.active.finishing().await;
    let manifest = {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        let manifest = txn.manifest().clone();
        if manifest.result_written {
            ctx.deactivate(manifest_id);
            return Ok(());
        }
        if manifest.unfinished() > 0 {
            return Ok(());
        }
        if txn.finish(ctx.clock.now_ms()) {
            txn.commit().await?
        } else {
            // Finished by an earlier commit, which may still be waiting for its sync (or
            // whose sync failed): the result is written only from state on the disk.
            drop(txn);
            drop(writer);
            ctx.store.sync_finish(manifest_id).await?;
            manifest
        }
    };
    let items = ctx.store.items(manifest_id)?;
    let jobs = ctx.store.jobs(manifest_id)?;
    let result = build_result(&manifest, &items, &jobs);
    fail::fail_point!("outbox-before-write", |_| crate::crash::simulated_crash());
    write_result_files(ctx, &manifest, &items, &result)?;
    fail::fail_point!("outbox-after-write", |_| crate::crash::simulated_crash());
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        txn.mark_result_written();
        // Lost to a crash, the mark only has the same result written again.
        txn.commit_soon()?;
    }
    ctx.deactivate(manifest_id);
    tracing::info!(
        manifest = %manifest.name,
        status = result.status.as_str(),
        completed = result.counts.completed,
        total = result.counts.total,
        "result written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: u32, status: ItemState) -> ItemResult {
        ItemResult {
            index,
            status,
            tent_id: None,
            tent_name: None,
            bulk_job_id: None,
            generation_id: None,
            publication: None,
            rejected_by: None,
            error_code: None,
            message: None,
        }
    }

    fn result(items: Vec<(String, ItemResult)>) -> ResultDocument {
        ResultDocument {
            manifest: "m.json".into(),
            kind: ManifestKind::Bulk,
            status: FinalStatus::CompletedWithFailures,
            error: None,
            received_at: "2026-03-25T14:30:00Z".into(),
            finished_at: Some("2026-03-25T14:41:10Z".into()),
            counts: FinalCounts::default(),
            bulk_jobs: Vec::new(),
            items: ItemsById(items),
        }
    }

    #[test]
    fn the_result_csv_is_rfc_4180_with_the_header_and_a_row_per_item_in_order() {
        let mut published = item(0, ItemState::Completed);
        published.tent_id = Some("T-1".into());
        published.tent_name = Some("Café, \"Zoë\"".into());
        published.generation_id = Some("G-1".into());
        published.bulk_job_id = Some("J-1".into());
        published.publication = Some(PublicationOut {
            status: "published_with_warnings".into(),
            published_url: Some("https://x.example/p".into()),
            requested_custom_page_alias: Some("wanted".into()),
            applied_custom_page_alias: Some("wanted-2".into()),
            warnings: vec![Notice {
                code: Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE".into()),
                message: None,
            }],
            error: None,
        });
        let mut failed = item(1, ItemState::Rejected);
        failed.error_code = Some(ErrorCode::InvalidItem);
        failed.message = Some("line one\nline two".into());
        let document = result(vec![("日本-1".into(), published), ("#1".into(), failed)]);
        let csv = String::from_utf8(result_csv(&document).expect("encodes")).expect("UTF-8");
        let expected = format!(
            "{RESULT_CSV_HEADER}\r\n\
             日本-1,0,completed,T-1,\"Café, \"\"Zoë\"\"\",G-1,https://x.example/p,published_with_warnings,wanted-2,,\r\n\
             #1,1,rejected,,,,,,,INVALID_ITEM,\"line one\nline two\"\r\n"
        );
        assert_eq!(csv, expected);
        assert_eq!(
            RESULT_CSV_HEADER,
            "client_item_id,index,status,tent_id,tent_name,generation_id,published_url,publication_status,applied_custom_page_alias,error_code,message"
        );
    }

    #[test]
    fn only_the_outbox_temporary_files_a_crash_left_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = [
            ".daily.result.json.aB3xYz.tmp",
            ".daily.result.csv.Q1w2E3.tmp",
            ".daily.retry.json.zzzzzz.tmp",
            // Not ours: kept.
            "daily.result.json",
            ".daily.result.json",
            ".notes.txt.abcdef.tmp",
            "report.tmp",
            ".daily.result.json.tmp",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        assert_eq!(remove_leftover_temporaries(dir.path()).expect("scan"), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut kept = names[3..].to_vec();
        kept.sort();
        assert_eq!(left, kept);
        // What write_all_atomically names its temporary files is what is removed.
        let file = tempfile::Builder::new()
            .prefix(".m.result.json.")
            .suffix(".tmp")
            .tempfile_in(dir.path())
            .expect("temporary");
        let (_, path) = file.keep().expect("kept");
        assert_eq!(remove_leftover_temporaries(dir.path()).expect("scan"), 1);
        assert!(!path.exists());
        assert_eq!(
            remove_leftover_temporaries(&dir.path().join("none")).expect("absent"),
            0
        );
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("daily.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("out/daily.json")), Path::new("out"));
        assert_eq!(folder_of(Path::new("/daily.json")), Path::new("/"));
    }

    #[test]
    fn files_written_together_are_all_in_place_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("a.result.json"), "old").expect("an older file");
        let files = vec![
            (path("a.retry.json"), b"retry".to_vec()),
            (path("a.result.csv"), b"csv".to_vec()),
            (path("a.result.json"), b"json".to_vec()),
        ];
        write_all_atomically(&files).expect("written");
        for (file, bytes) in &files {
            assert_eq!(&std::fs::read(file).expect("read"), bytes);
        }
        // Readable as a file made the plain way is (0666 less the umask), not 0600.
        let plain = tempfile::tempdir().expect("temp dir");
        let plain = plain.path().join("plain");
        std::fs::File::create(&plain).expect("a plain file");
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(p).expect("meta").permissions(),
            )
        };
        assert_eq!(mode(&path("a.result.json")), mode(&plain));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.result.csv", "a.result.json", "a.retry.json"]);
        // Files of two folders are refused, and nothing is put in place.
        let other = tempfile::tempdir().expect("temp dir");
        let mixed = vec![
            (path("b.result.csv"), b"csv".to_vec()),
            (other.path().join("b.result.json"), b"json".to_vec()),
        ];
        let refused = write_all_atomically(&mixed).expect_err("two folders");
        assert!(refused.to_string().contains("b.result.json"), "{refused}");
        assert!(!path("b.result.csv").exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 3);
    }

    #[test]
    fn a_result_read_back_writes_the_same_bytes() {
        let mut rejected = item(1, ItemState::Rejected);
        rejected.rejected_by = Some(RejectedBy::Api);
        rejected.error_code = Some(ErrorCode::InvalidItem);
        let items = vec![
            ("b".into(), item(0, ItemState::Completed)),
            ("#1".into(), rejected),
            ("a".into(), item(2, ItemState::Unknown)),
        ];
        let bytes = serde_json::to_vec_pretty(&result(items)).expect("json");
        let back: ResultDocument = serde_json::from_slice(&bytes).expect("reads back");
        assert_eq!(back.status, FinalStatus::CompletedWithFailures);
        assert_eq!(back.kind, ManifestKind::Bulk);
        let keys: Vec<&str> = back.items.0.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(keys, ["b", "#1", "a"], "manifest order, as written");
        let rejected = back.items.get("#1").expect("the item without an id");
        assert_eq!(rejected.rejected_by, Some(RejectedBy::Api));
        assert_eq!(rejected.status, ItemState::Rejected);
        assert_eq!(serde_json::to_vec_pretty(&back).expect("json"), bytes);
        let text = String::from_utf8(bytes).expect("UTF-8");
        assert!(text.contains(r#""rejected_by": "api""#), "{text}");
        assert!(text.contains(r#""status": "unknown""#), "{text}");
    }

    #[test]
    fn a_result_without_items_still_has_its_header() {
        let csv = result_csv(&result(Vec::new())).expect("encodes");
        assert_eq!(csv, format!("{RESULT_CSV_HEADER}\r\n").into_bytes());
    }

    #[test]
    fn the_result_json_keeps_its_shape_with_typed_notices() {
        let mut published = item(0, ItemState::Completed);
        published.publication = Some(PublicationOut {
            status: "failed".into(),
            published_url: None,
            requested_custom_page_alias: None,
            applied_custom_page_alias: None,
            warnings: vec![Notice {
                code: Some("W".into()),
                message: Some("w".into()),
            }],
            error: Some(Notice {
                code: None,
                message: Some("e".into()),
            }),
        });
        let json = serde_json::to_value(result(vec![("a".into(), published)])).expect("json");
        assert_eq!(
            json["items"]["a"]["publication"]["warnings"],
            serde_json::json!([{"code": "W", "message": "w"}])
        );
        assert_eq!(
            json["items"]["a"]["publication"]["error"],
            serde_json::json!({"code": null, "message": "e"})
        );
        assert_eq!(json["status"], "completed_with_failures");
    }
}
