//! Version 1 of the stored records, frozen as the daemon wrote them up to the store
//! migration (CHANGELOG: "store format 2"), and their conversion to today's records.
//!
//! Never change these types: they are how the bytes of a version-1 store are read. A
//! version-1 record differs from today's in three ways: the manifest's top-level fields
//! and each item's fields were kept only as JSON text (and parsed again wherever they were
//! needed), and generation and publication statuses were bare words.

use serde::{Deserialize, Serialize};

use crate::manifest::{FieldsError, ManifestKind, TopFields};
use crate::state::control::Control;
pub use crate::state::item::{ItemMigrationError, ItemRecordV1, PublicationRecordV1};
use crate::store::ManifestRecord;

/// A manifest as stored in version 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecordV1 {
    pub id: u64,
    pub name: String,
    pub inbox_file: String,
    pub kind: ManifestKind,
    pub received_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub sha256: [u8; 32],
    pub top: String,
    pub item_count: u32,
    pub local_rejections: u32,
    pub rejection: Option<String>,
    pub control: Control,
    pub threshold_overridden: bool,
    pub credit_retry_at_ms: Option<u64>,
    pub next_job_seq: u32,
    pub next_chunk: u32,
    pub counts: [u32; 11],
    pub archived: bool,
    pub result_written: bool,
}

/// Why a version-1 record cannot become a current one.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("manifest {id}: its top-level fields are not a JSON object: {detail}")]
    TopNotAnObject { id: u64, detail: String },
    #[error(transparent)]
    Item(#[from] ItemMigrationError),
    #[error(transparent)]
    Fields(#[from] FieldsError),
}

impl ManifestRecordV1 {
    pub fn migrate(self) -> Result<ManifestRecord, MigrationError> {
        let top_value: serde_json::Value =
            serde_json::from_str(&self.top).map_err(|e| MigrationError::TopNotAnObject {
                id: self.id,
                detail: e.to_string(),
            })?;
        let serde_json::Value::Object(map) = top_value else {
            return Err(MigrationError::TopNotAnObject {
                id: self.id,
                detail: "another JSON value".into(),
            });
        };
        Ok(ManifestRecord::from_parts_v1(
            self,
            TopFields::from_validated(&map)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use crate::api::types::PublicationStatus;
    use crate::state::item::{ItemState, RejectedBy};
    use crate::store::Store;

    /// A copy of the store that the version-1 code wrote (tests/fixtures/store-v1).
    fn fixture_copy() -> tempfile::TempDir {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/state");
        let dir = tempfile::tempdir().expect("temp dir");
        copy_folder(&from, dir.path()).expect("copy the fixture");
        dir
    }

    fn copy_folder(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_folder(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), target)?;
            }
        }
        Ok(())
    }

    #[test]
    fn a_store_written_by_version_one_opens_migrated_with_nothing_lost() {
        let dir = fixture_copy();
        let store = Store::open(dir.path()).expect("the version-1 store opens");
        let versions = store.record_versions().expect("versions");
        assert_eq!(
            versions.into_iter().collect::<Vec<_>>(),
            vec![("item v2", 48), ("manifest v2", 3)],
            "every record rewritten in version 2"
        );
        let manifests = store.manifests().expect("manifests");
        let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
        // The inbox is taken in name order: single.json before unfinished.json.
        assert_eq!(names, ["finished", "single", "unfinished"]);
        let named = |name: &str| manifests.iter().find(|m| m.name == name).expect("present");

        // The finished manifest keeps its outcome (its result file: 2 completed, 3 failed).
        let finished = named("finished");
        assert!(finished.result_written && finished.finished_at_ms.is_some());
        assert_eq!(
            (
                finished.count(ItemState::Completed),
                finished.count(ItemState::Failed)
            ),
            (2, 3)
        );
        assert_eq!(
            finished.top.default_tent_name_prefix.as_deref(),
            Some("Fixture")
        );

        // The bulk manifest killed mid-flight: typed top-level fields, typed items, and
        // the locally rejected item kept as given without fields.
        let unfinished = named("unfinished");
        assert_eq!(unfinished.top.template_id.as_deref(), Some("tpl_fixture"));
        assert_eq!(unfinished.top.auto_publish, Some(true));
        assert_eq!(unfinished.count(ItemState::Admitted), 39);
        assert_eq!(unfinished.count(ItemState::Rejected), 1);
        let items = store.items(unfinished.id).expect("items");
        assert_eq!(items.len(), 40);
        let first = items[0].fields.as_ref().expect("typed");
        let input = first
            .input_data
            .as_ref()
            .expect("input_data")
            .to_value()
            .expect("json");
        assert_eq!(input, json!({"first_name": "N0"}));
        assert_eq!(first.custom_page_alias.as_deref(), Some("fx-0"));
        assert!(items[0].tent_id.is_some() && items[0].bulk_job_id.is_some());
        assert_eq!(items[7].rejected_by, Some(RejectedBy::Local));
        assert!(items[7].fields.is_none());
        assert!(items[7].given.contains("not an object"));

        // The create manifest: defaults typed, the item without a name rejected locally.
        let single = named("single");
        let defaults = single.top.defaults.as_ref().expect("defaults");
        assert_eq!(
            (defaults.user_id.as_deref(), defaults.include_brand),
            (Some("u1"), Some(true))
        );
        let items = store.items(single.id).expect("items");
        assert_eq!(
            items[0].fields.as_ref().and_then(|f| f.name.as_deref()),
            Some("One")
        );
        assert_eq!(items[2].state(), ItemState::Rejected);
        assert_eq!(
            store.jobs(single.id).expect("jobs").len(),
            2,
            "the two accepted items were sent"
        );
    }

    #[test]
    fn a_migrated_store_reopens_unchanged() {
        let dir = fixture_copy();
        let first: Vec<_> = {
            let store = Store::open(dir.path()).expect("opens");
            store.manifests().expect("manifests")
        };
        let store = crate::store::reopen(dir.path()).expect("reopens");
        assert_eq!(store.manifests().expect("manifests"), first);
        let items = store.items(first[0].id).expect("items");
        // Statuses read as typed words (the finished manifest had no auto-publish).
        assert!(items.iter().all(|i| i
            .publication
            .as_ref()
            .is_none_or(|p| p.status != PublicationStatus::Pending)));
        assert!(items.iter().all(|i| i.generation_status.is_some()));
    }
}
