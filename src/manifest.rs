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
    /// The item's JSON text exactly as given (used to write retry manifests).
    pub given: String,
    /// The item's fields, typed, when it was accepted.
    pub fields: Option<ItemFields>,
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

/// A manifest's share of the create slots when several are sending (SPEC section 7):
/// the daemon's own field, never sent to Tented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Create slots per round: high 4, normal 2, low 1.
    pub fn weight(self) -> u32 {
        match self {
            Priority::High => 4,
            Priority::Normal => 2,
            Priority::Low => 1,
        }
    }

    pub fn from_name(name: &str) -> Option<Priority> {
        match name {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// Free-form JSON (`input_data`, `metadata`) kept as its text: bincode, which writes the
/// store, cannot hold a `serde_json::Value`. Only the daemon writes it, from a value it
/// parsed, so reading it back fails only if the store was damaged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonText(String);

impl JsonText {
    pub fn of(value: &serde_json::Value) -> JsonText {
        JsonText(value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value again.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// A manifest's top-level fields, typed, as the store keeps them (the fields of every
/// kind; a kind's validation allows only its own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopFields {
    pub template_id: Option<String>,
    pub client_job_descriptor: Option<String>,
    pub default_tent_name_prefix: Option<String>,
    pub start_index: Option<i64>,
    pub auto_publish: Option<bool>,
    pub metadata: Option<JsonText>,
    /// Create manifests: item fields that apply to every item.
    pub defaults: Option<ItemFields>,
    /// The manifest's share of the create slots (the daemon's; never sent).
    pub priority: Priority,
}

/// One item's fields, typed, as the store keeps them (the fields of every kind).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemFields {
    pub client_item_id: Option<String>,
    // Bulk.
    pub input_data: Option<JsonText>,
    pub instructions: Option<String>,
    pub tent_name: Option<String>,
    // Create.
    pub name: Option<String>,
    pub user_id: Option<String>,
    // Edit.
    pub tent_id: Option<String>,
    pub target_client_item_id: Option<String>,
    // Create and edit.
    pub prompt: Option<String>,
    pub auto_publish: Option<bool>,
    // Every kind.
    pub custom_page_alias: Option<String>,
    pub include_brand: Option<bool>,
    pub asset_ids: Option<Vec<String>>,
}

/// Why validated JSON did not fit the typed fields: validation and the types disagree,
/// which is a bug (validation checks every type first).
#[derive(Debug, thiserror::Error)]
#[error("the validated {what} does not fit its typed fields: {source}")]
pub struct FieldsError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

/// The top-level fields as JSON gives them (free-form `metadata` as a value).
#[derive(Deserialize)]
struct TopDocument {
    template_id: Option<String>,
    client_job_descriptor: Option<String>,
    default_tent_name_prefix: Option<String>,
    start_index: Option<i64>,
    auto_publish: Option<bool>,
    metadata: Option<serde_json::Value>,
    defaults: Option<ItemDocument>,
    #[serde(default)]
    priority: Priority,
}

/// One item as JSON gives it (free-form `input_data` as a value).
#[derive(Deserialize)]
struct ItemDocument {
    client_item_id: Option<String>,
    input_data: Option<serde_json::Value>,
    instructions: Option<String>,
    tent_name: Option<String>,
    name: Option<String>,
    user_id: Option<String>,
    tent_id: Option<String>,
    target_client_item_id: Option<String>,
    prompt: Option<String>,
    auto_publish: Option<bool>,
    custom_page_alias: Option<String>,
    include_brand: Option<bool>,
    asset_ids: Option<Vec<String>>,
}

impl From<ItemDocument> for ItemFields {
    fn from(d: ItemDocument) -> ItemFields {
        ItemFields {
            client_item_id: d.client_item_id,
            input_data: d.input_data.as_ref().map(JsonText::of),
            instructions: d.instructions,
            tent_name: d.tent_name,
            name: d.name,
            user_id: d.user_id,
            tent_id: d.tent_id,
            target_client_item_id: d.target_client_item_id,
            prompt: d.prompt,
            auto_publish: d.auto_publish,
            custom_page_alias: d.custom_page_alias,
            include_brand: d.include_brand,
            asset_ids: d.asset_ids,
        }
    }
}

impl TopFields {
    /// The typed fields of a validated manifest's top level (without `kind`, `items`).
    pub fn from_validated(top: &serde_json::Map<String, serde_json::Value>) -> Result<TopFields, FieldsError> {
        let document: TopDocument = serde_json::from_value(serde_json::Value::Object(top.clone()))
            .map_err(|source| FieldsError { what: "top level", source })?;
        Ok(TopFields {
            template_id: document.template_id,
            client_job_descriptor: document.client_job_descriptor,
            default_tent_name_prefix: document.default_tent_name_prefix,
            start_index: document.start_index,
            auto_publish: document.auto_publish,
            metadata: document.metadata.as_ref().map(JsonText::of),
            defaults: document.defaults.map(ItemFields::from),
            priority: document.priority,
        })
    }

    /// The default name Tented gives the item with this counter when it has no
    /// `tent_name` (the prefix, else the job descriptor, else "Bulk tent").
    pub fn default_tent_name(&self, counter: i64) -> String {
        let prefix = self
            .default_tent_name_prefix
            .as_deref()
            .or(self.client_job_descriptor.as_deref())
            .unwrap_or("Bulk tent");
        format!("{prefix} {counter}")
    }
}

impl ItemFields {
    /// The typed fields of an item that validation accepted.
    pub fn from_validated(item: &serde_json::Value) -> Result<ItemFields, FieldsError> {
        serde_json::from_value::<ItemDocument>(item.clone())
            .map(ItemFields::from)
            .map_err(|source| FieldsError { what: "item", source })
    }

    /// This item over a create manifest's `defaults`: a field the item gives wins.
    pub fn over(&self, defaults: Option<&ItemFields>) -> ItemFields {
        let Some(d) = defaults else {
            return self.clone();
        };
        let item = self.clone();
        ItemFields {
            client_item_id: item.client_item_id.or(d.client_item_id.clone()),
            input_data: item.input_data.or(d.input_data.clone()),
            instructions: item.instructions.or(d.instructions.clone()),
            tent_name: item.tent_name.or(d.tent_name.clone()),
            name: item.name.or(d.name.clone()),
            user_id: item.user_id.or(d.user_id.clone()),
            tent_id: item.tent_id.or(d.tent_id.clone()),
            target_client_item_id: item.target_client_item_id.or(d.target_client_item_id.clone()),
            prompt: item.prompt.or(d.prompt.clone()),
            auto_publish: item.auto_publish.or(d.auto_publish),
            custom_page_alias: item.custom_page_alias.or(d.custom_page_alias.clone()),
            include_brand: item.include_brand.or(d.include_brand),
            asset_ids: item.asset_ids.or(d.asset_ids.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validated_json_becomes_typed_fields_with_free_form_parts_as_text() {
        let top = json!({"template_id": "tpl_1", "start_index": 5, "auto_publish": true,
                         "metadata": {"campaign": ["a", 1]}});
        let top = TopFields::from_validated(top.as_object().expect("object")).expect("fits");
        assert_eq!(top.template_id.as_deref(), Some("tpl_1"));
        assert_eq!(top.start_index, Some(5));
        assert_eq!(top.auto_publish, Some(true));
        let metadata = top.metadata.expect("metadata").to_value().expect("json");
        assert_eq!(metadata, json!({"campaign": ["a", 1]}));
        let item = ItemFields::from_validated(&json!({"input_data": {"x": null}, "asset_ids": ["a"]}))
            .expect("fits");
        assert_eq!(item.input_data.expect("input").to_value().expect("json"), json!({"x": null}));
        assert_eq!(item.asset_ids, Some(vec!["a".to_string()]));
    }

    #[test]
    fn json_that_validation_would_refuse_does_not_fit() {
        assert!(ItemFields::from_validated(&json!({"include_brand": "yes"})).is_err());
        assert!(ItemFields::from_validated(&json!([1])).is_err());
        let top = json!({"start_index": "one"});
        assert!(TopFields::from_validated(top.as_object().expect("object")).is_err());
    }

    #[test]
    fn an_item_wins_over_the_defaults_field_by_field() {
        let defaults = ItemFields { name: Some("D".into()), user_id: Some("u".into()), auto_publish: Some(true), ..Default::default() };
        let item = ItemFields { name: Some("I".into()), auto_publish: Some(false), ..Default::default() };
        let merged = item.over(Some(&defaults));
        assert_eq!(merged.name.as_deref(), Some("I"));
        assert_eq!(merged.user_id.as_deref(), Some("u"));
        assert_eq!(merged.auto_publish, Some(false));
        assert_eq!(item.over(None), item);
    }

    #[test]
    fn default_names_use_the_prefix_then_the_descriptor() {
        let mut top = TopFields::default();
        assert_eq!(top.default_tent_name(3), "Bulk tent 3");
        top.client_job_descriptor = Some("Job".into());
        assert_eq!(top.default_tent_name(3), "Job 3");
        top.default_tent_name_prefix = Some("Acme".into());
        assert_eq!(top.default_tent_name(3), "Acme 3");
    }
}
