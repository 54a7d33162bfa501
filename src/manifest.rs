//! The manifest as the rest of the daemon sees it once validation has accepted it.
//!
//! A manifest is a JSON file `NAME.json` dropped into the inbox (SPEC section 4). The
//! `validation` module turns its bytes into a [`ValidatedManifest`]; nothing in this
//! module parses or checks anything itself.

use serde::{Deserialize, Serialize};

/// The most items one manifest may carry.
pub const MAX_ITEMS: usize = 100_000;

/// The largest manifest file the daemon accepts, in bytes (64 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// The most `asset_ids` one item may carry.
pub const MAX_ASSET_IDS: usize = 5;

/// Which of the three manifest shapes a manifest has, chosen by its `kind` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    /// Items become `POST /v1/tents/bulk` requests of at most 25 items each.
    Bulk,
    /// Each item becomes one `POST /v1/tents` request.
    Create,
    /// Each item becomes one `POST /v1/tents/{tentId}/edit` request.
    Edit,
}

impl ManifestKind {
    /// Every kind, in the order the SPEC lists them.
    pub const ALL: [ManifestKind; 3] =
        [ManifestKind::Bulk, ManifestKind::Create, ManifestKind::Edit];

    /// The value of the manifest's `kind` field that selects this kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ManifestKind::Bulk => "bulk",
            ManifestKind::Create => "create",
            ManifestKind::Edit => "edit",
        }
    }

    /// Parses the value of a manifest's `kind` field; `None` when it names no kind.
    pub fn from_name(name: &str) -> Option<ManifestKind> {
        ManifestKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ManifestKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A manifest that passed every manifest-level rule; some of its items may still
/// have been rejected locally (see [`ValidatedItem::rejection`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedManifest {
    /// The manifest's kind (`"bulk"` when the file gave none).
    pub kind: ManifestKind,
    /// Top-level fields other than `kind` and `items` (for bulk: template_id,
    /// client_job_descriptor, default_tent_name_prefix, start_index, auto_publish,
    /// metadata; for create: `defaults`), exactly as given.
    pub top: serde_json::Map<String, serde_json::Value>,
    /// Every item of the manifest, in manifest order, accepted or locally rejected.
    pub items: Vec<ValidatedItem>,
}

/// One item of a validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedItem {
    /// The zero-based position of the item in the manifest.
    pub index: u32,
    /// The item's `client_item_id` as given, or `#INDEX` when it gave none.
    pub client_item_id: String,
    /// The item object exactly as given (used to write retry manifests).
    pub given: serde_json::Value,
    /// `Some(message naming the item and the rule)` when the item was rejected
    /// locally; such an item is never sent.
    pub rejection: Option<String>,
}

impl ValidatedItem {
    /// Whether the item passed every item-level rule and may be sent.
    pub fn is_accepted(&self) -> bool {
        self.rejection.is_none()
    }
}

impl ValidatedManifest {
    /// How many items were rejected locally.
    pub fn rejected_count(&self) -> usize {
        self.items.iter().filter(|item| !item.is_accepted()).count()
    }
}
