//! The manifest as the rest of the daemon sees it once validation has accepted it.
//!
//! A manifest is a JSON file `NAME.json` dropped into the inbox (SPEC section 4). The
//! `validation` module turns its bytes into a [`ValidatedManifest`]; nothing in this
//! module parses or checks anything itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most items one manifest may carry.
pub const MAX_ITEMS: usize = 100_000;

/// The largest manifest file the daemon accepts, in bytes (64 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// The most `asset_ids` one item may carry.
pub const MAX_ASSET_IDS: usize = 5;

/// The largest `start_index` accepted: every tent counter of the largest manifest then
/// stays a safe integer in JavaScript (2^53 - 1), whatever the API is written in.
pub const MAX_START_INDEX: u64 = (1u64 << 53) - 1 - MAX_ITEMS as u64;

/// The longest manifest NAME (the file name without `.json`), in characters.
pub const MAX_MANIFEST_NAME_CHARS: usize = 200;

/// The suffix every manifest file name carries.
pub const MANIFEST_SUFFIX: &str = ".json";

/// Which of the three manifest shapes a manifest has, chosen by its `kind` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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

/// A manifest's share of the request budget when several manifests are sending (SPEC
/// section 7), chosen by its `priority` field. Like `kind`, it is the daemon's own and
/// never sent to Tented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The value of the manifest's `priority` field that selects this priority.
    pub fn as_str(&self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses the value of a manifest's `priority` field; `None` when it names none.
    pub fn from_name(name: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == name)
    }

    /// Create slots per round of the fair share: high 4, normal 2, low 1.
    pub fn weight(self) -> u32 {
        match self {
            Priority::High => 4,
            Priority::Normal => 2,
            Priority::Low => 1,
        }
    }
}

/// A manifest that passed every manifest-level rule; some of its items may still
/// have been rejected locally (see [`ValidatedItem::rejection`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedManifest {
    /// The manifest's kind (`"bulk"` when the file gave none).
    pub kind: ManifestKind,
    /// Top-level fields other than `kind`, `items` and `$schema` (for bulk: template_id,
    /// client_job_descriptor, default_tent_name_prefix, start_index, auto_publish,
    /// metadata; for create: `defaults`; for every kind: `priority`), exactly as given.
    pub top: serde_json::Map<String, serde_json::Value>,
    /// Every item of the manifest, in manifest order, accepted or locally rejected.
    pub items: Vec<ValidatedItem>,
}

/// A `client_item_id` as an item gave it. Never begins with `#`: that is reserved for the
/// result file's key of an item without one (`#INDEX`, [`item_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientItemId(String);

impl ClientItemId {
    /// The id, unless it begins with `#` (validation refuses such a manifest).
    pub fn new(id: String) -> Option<ClientItemId> {
        (!id.starts_with('#')).then_some(ClientItemId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An item's key in the result file, the store and the tables: its `client_item_id`, or
/// `#INDEX` (SPEC section 5) when it gave none. The one place `#INDEX` is made.
pub fn item_key(index: u32, id: Option<&ClientItemId>) -> String {
    match id {
        Some(id) => id.0.clone(),
        None => format!("#{index}"),
    }
}

/// One item of a validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedItem {
    /// The zero-based position of the item in the manifest.
    pub index: u32,
    /// The item's `client_item_id`, if it gave one.
    pub client_item_id: Option<ClientItemId>,
    /// The item's JSON text exactly as given (used to write retry manifests).
    pub given: String,
    /// The item's fields, typed, when it was accepted.
    pub fields: Option<ItemFields>,
    /// `Some(message naming the item and the rule)` when the item was rejected
    /// locally; such an item is never sent.
    pub rejection: Option<String>,
}

impl ValidatedItem {
    /// Its key: its `client_item_id`, or `#INDEX` ([`item_key`]).
    pub fn key(&self) -> String {
        item_key(self.index, self.client_item_id.as_ref())
    }

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

/// Free-form JSON (`input_data`, `metadata`) kept as its text: bincode, which writes the
/// store, cannot hold a `serde_json::Value`. Only the daemon writes it, from a value it
/// parsed, so reading it back fails only if the store was damaged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonText(String);

impl JsonText {
    pub fn of(value: &serde_json::Value) -> JsonText {
        // The compact text `Display` gives, written into one buffer grown by doubling
        // (`Display` grows a `String` a token at a time). A value always serializes; the
        // fallback is never taken.
        JsonText(serde_json::to_string(value).unwrap_or_else(|_| value.to_string()))
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

/// A whole manifest file as JSON gives it (SPEC section 4): what `tented-bulkd schema
/// manifest` is generated from, so the printed schema and the parsing types cannot drift.
///
/// Its parts are the types that parse validated manifests ([`TopDocument`] into
/// [`TopFields`], [`ItemDocument`] into [`ItemFields`]), which hold the fields of every
/// kind. Each field says which kinds know it (`x-kinds`, every kind when absent), which
/// require it, and so on (see [`crate::schema`]); the schema module cuts the schema of
/// each kind from these marks, and its tests check them against validation's field lists.
/// `null` is never accepted for a field (validation refuses it): an optional field is
/// absent or of its type.
#[derive(Deserialize, JsonSchema)]
#[schemars(title = "tented-bulkd manifest")]
pub struct ManifestDocument {
    /// The JSON Schema that editors check this file against; the daemon accepts and
    /// ignores it.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    /// The manifest's shape: `bulk` (the default), `create` or `edit`.
    pub kind: Option<ManifestKind>,
    /// The manifest's share of the request budget when several are sending (default
    /// `normal`); never sent to Tented.
    pub priority: Option<Priority>,
    #[serde(flatten)]
    top: TopDocument,
    /// The items, 1 to 100,000, in the order they are sent.
    #[schemars(length(min = 1, max = MAX_ITEMS))]
    items: Vec<ItemDocument>,
}

impl ManifestDocument {
    /// How many items the manifest has.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// The typed fields, as intake makes them from a validated manifest: the top-level
    /// fields and each item's.
    pub fn into_fields(self) -> (TopFields, Vec<ItemFields>) {
        let items = self.items.into_iter().map(ItemFields::from).collect();
        let priority = self.priority.unwrap_or_default();
        (
            TopFields {
                priority,
                ..TopFields::from(self.top)
            },
            items,
        )
    }
}

/// The top-level fields as JSON gives them (free-form `metadata` as a value).
#[derive(Deserialize, JsonSchema)]
struct TopDocument {
    /// The template every item is generated from (bulk).
    #[schemars(extend("x-kinds" = ["bulk"], "x-required-for" = ["bulk"]), regex(pattern = r"\S"))]
    template_id: Option<String>,
    /// A label for the job; also the tents' default name prefix when
    /// `default_tent_name_prefix` is absent (bulk).
    #[schemars(extend("x-kinds" = ["bulk"]))]
    client_job_descriptor: Option<String>,
    /// Tents without a `tent_name` are named `PREFIX N` (bulk).
    #[schemars(extend("x-kinds" = ["bulk"]))]
    default_tent_name_prefix: Option<String>,
    /// The counter of the first item's default name (bulk; default 1).
    #[schemars(extend("x-kinds" = ["bulk"]), range(min = 0, max = MAX_START_INDEX))]
    start_index: Option<i64>,
    /// Publish every tent once generated (bulk; required for `custom_page_alias`).
    #[schemars(extend("x-kinds" = ["bulk"]))]
    auto_publish: Option<bool>,
    /// Free-form data sent with every bulk request (bulk).
    #[schemars(extend("x-kinds" = ["bulk"]), with = "Option<serde_json::Map<String, serde_json::Value>>")]
    metadata: Option<serde_json::Value>,
    /// Item fields that apply to every item (create).
    #[schemars(extend("x-kinds" = ["create"]))]
    defaults: Option<ItemDocument>,
}

/// One item as JSON gives it (free-form `input_data` as a value).
#[derive(Deserialize, JsonSchema)]
struct ItemDocument {
    /// Your key for this item, unique within the manifest, not beginning with `#`; the
    /// result is keyed by it (`#INDEX` when absent).
    #[schemars(extend("x-not-in-defaults" = true), regex(pattern = "^([^#]|$)"))]
    client_item_id: Option<String>,
    /// The template's inputs (bulk).
    #[schemars(extend("x-kinds" = ["bulk"], "x-required-for" = ["bulk"]), with = "Option<serde_json::Map<String, serde_json::Value>>")]
    input_data: Option<serde_json::Value>,
    /// Extra instructions for this item's generation (bulk).
    #[schemars(extend("x-kinds" = ["bulk"]))]
    instructions: Option<String>,
    /// The tent's name; the default name when absent (bulk).
    #[schemars(extend("x-kinds" = ["bulk"]))]
    tent_name: Option<String>,
    /// The tent's name (create; here or in `defaults`).
    #[schemars(extend("x-kinds" = ["create"], "x-required-unless-defaulted" = ["create"]), regex(pattern = r"\S"))]
    name: Option<String>,
    /// The user the tent is created for (create).
    #[schemars(extend("x-kinds" = ["create"]))]
    user_id: Option<String>,
    /// The tent to edit, a hyphenated UUID (edit; or `target_client_item_id`).
    #[schemars(extend("x-kinds" = ["edit"]))]
    tent_id: Option<String>,
    /// The `client_item_id` of an item an earlier manifest created: the tent to edit
    /// (edit; or `tent_id`).
    #[schemars(extend("x-kinds" = ["edit"]), regex(pattern = r"\S"))]
    target_client_item_id: Option<String>,
    /// What to generate (create: here or in `defaults`) or change (edit).
    #[schemars(
        extend("x-kinds" = ["create", "edit"], "x-required-for" = ["edit"], "x-required-unless-defaulted" = ["create"]),
        regex(pattern = r"\S")
    )]
    prompt: Option<String>,
    /// Publish the tent once generated (create, edit; required for `custom_page_alias`).
    #[schemars(extend("x-kinds" = ["create", "edit"]))]
    auto_publish: Option<bool>,
    /// The page's alias (lowercase letters, digits, `-`, `_`, `.`; or `/` for the root);
    /// needs `auto_publish: true`.
    #[schemars(regex(pattern = "^(/|[a-z0-9][a-z0-9._-]{0,99})$"))]
    custom_page_alias: Option<String>,
    /// Whether the workspace's brand applies.
    include_brand: Option<bool>,
    /// Up to 5 uploaded asset ids (bulk, edit; not on create items).
    #[schemars(extend("x-refused-for" = ["create"]), length(max = MAX_ASSET_IDS), inner(regex(pattern = r"\S")))]
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

impl From<TopDocument> for TopFields {
    fn from(document: TopDocument) -> TopFields {
        TopFields {
            template_id: document.template_id,
            client_job_descriptor: document.client_job_descriptor,
            default_tent_name_prefix: document.default_tent_name_prefix,
            start_index: document.start_index,
            auto_publish: document.auto_publish,
            metadata: document.metadata.as_ref().map(JsonText::of),
            defaults: document.defaults.map(ItemFields::from),
            // The daemon's own field is not among Tented's: set by the callers below.
            priority: Priority::default(),
        }
    }
}

impl TopFields {
    /// The typed fields of a validated manifest's top level (without `kind`, `items`).
    pub fn from_validated(
        top: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<TopFields, FieldsError> {
        let document: TopDocument = serde_json::from_value(serde_json::Value::Object(top.clone()))
            .map_err(|source| FieldsError {
                what: "top level",
                source,
            })?;
        let priority = top
            .get("priority")
            .and_then(serde_json::Value::as_str)
            .and_then(Priority::from_name)
            .unwrap_or_default();
        Ok(TopFields {
            priority,
            ..TopFields::from(document)
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
        // Typed from the borrowed value, not from a copy of it.
        ItemDocument::deserialize(item)
            .map(ItemFields::from)
            .map_err(|source| FieldsError {
                what: "item",
                source,
            })
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
            target_client_item_id: item
                .target_client_item_id
                .or(d.target_client_item_id.clone()),
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
        let item =
            ItemFields::from_validated(&json!({"input_data": {"x": null}, "asset_ids": ["a"]}))
                .expect("fits");
        assert_eq!(
            item.input_data.expect("input").to_value().expect("json"),
            json!({"x": null})
        );
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
        let defaults = ItemFields {
            name: Some("D".into()),
            user_id: Some("u".into()),
            auto_publish: Some(true),
            ..Default::default()
        };
        let item = ItemFields {
            name: Some("I".into()),
            auto_publish: Some(false),
            ..Default::default()
        };
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
