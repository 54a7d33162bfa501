//! The manifest-level rules before the items: the size limit, UTF-8, JSON, an object,
//! the kind, the top-level fields (with a create manifest's `defaults`), and an items
//! array of the right length. A rule broken here rejects the whole manifest.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::manifest::{ManifestKind, Priority, MAX_ITEMS, MAX_MANIFEST_BYTES, MAX_START_INDEX};

use super::alias::validate_alias;
use super::item::{check_optional_type, FieldType};
use super::rejection::{json_type, nearest_known_name, ManifestRejection};

/// The top-level fields of a bulk manifest (the body of `POST /v1/tents/bulk` plus `kind`).
pub(super) const BULK_TOP_FIELDS: &[&str] = &[
    "$schema",
    "kind",
    "priority",
    "template_id",
    "client_job_descriptor",
    "default_tent_name_prefix",
    "start_index",
    "auto_publish",
    "metadata",
    "items",
];

/// The fields of one bulk item.
pub(super) const BULK_ITEM_FIELDS: &[&str] = &[
    "input_data",
    "instructions",
    "client_item_id",
    "tent_name",
    "custom_page_alias",
    "include_brand",
    "asset_ids",
];

/// The top-level fields of a create manifest.
const CREATE_TOP_FIELDS: &[&str] = &["$schema", "kind", "priority", "defaults", "items"];

/// The fields of one create item. `asset_ids` is known only so that its use gets the
/// clear rejection "asset_ids is not allowed on create items" rather than "unknown field".
const CREATE_ITEM_FIELDS: &[&str] = &[
    "client_item_id",
    "name",
    "prompt",
    "user_id",
    "include_brand",
    "auto_publish",
    "custom_page_alias",
    "asset_ids",
];

/// The top-level fields of an edit manifest (the SPEC gives `defaults` to create only).
const EDIT_TOP_FIELDS: &[&str] = &["$schema", "kind", "priority", "items"];

/// The fields of one edit item.
pub(super) const EDIT_ITEM_FIELDS: &[&str] = &[
    "tent_id",
    "target_client_item_id",
    "client_item_id",
    "prompt",
    "include_brand",
    "auto_publish",
    "custom_page_alias",
    "asset_ids",
];

/// The limits that a manifest is held to; tests use smaller ones.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_bytes: u64,
    pub(super) max_items: usize,
}

/// The limits of SPEC section 4.
pub(super) const SPEC_LIMITS: Limits = Limits {
    max_bytes: MAX_MANIFEST_BYTES,
    max_items: MAX_ITEMS,
};

/// The top-level fields of a manifest (each parsed), and its items still as raw JSON
/// text borrowed from the file: items are parsed one at a time, so a manifest of 100,000
/// items is never held as one tree of values.
pub(super) struct RawDocument<'a> {
    pub(super) top: Map<String, Value>,
    /// `Err` holds what `items` was when it was not an array.
    pub(super) items: Option<Result<Vec<&'a RawValue>, Value>>,
}

impl<'de> serde::Deserialize<'de> for RawDocument<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawDocument<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut document = RawDocument {
                    top: Map::new(),
                    items: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "items" {
                        let raw: &'de RawValue = map.next_value()?;
                        let items = match serde_json::from_str::<Vec<&'de RawValue>>(raw.get()) {
                            Ok(items) => Ok(items),
                            Err(_) => Err(serde_json::from_str::<Value>(raw.get())
                                .map_err(serde::de::Error::custom)?),
                        };
                        document.items = Some(items);
                    } else {
                        let value: Value = map.next_value()?;
                        document.top.insert(key, value);
                    }
                }
                Ok(document)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Parse and shape: the size limit, UTF-8 (a byte order mark is skipped), JSON, and an
/// object at the top (its items left as raw text).
pub(super) fn parse_object(
    bytes: &[u8],
    limits: Limits,
) -> Result<RawDocument<'_>, ManifestRejection> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(ManifestRejection::TooLarge {
            size,
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| ManifestRejection::NotUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let not_json = |error: serde_json::Error| ManifestRejection::NotJson {
        message: error.to_string(),
    };
    if !text.trim_start().starts_with('{') {
        // Not an object: parsed whole only to say what it is (or why it is not JSON).
        let document: Value = serde_json::from_str(text).map_err(not_json)?;
        return Err(ManifestRejection::NotAnObject {
            found: json_type(&document),
        });
    }
    serde_json::from_str::<RawDocument<'_>>(text).map_err(not_json)
}

/// Kind: removes `kind` from the top-level fields and names the kind it selects
/// (bulk when absent).
pub(super) fn take_kind(top: &mut Map<String, Value>) -> Result<ManifestKind, ManifestRejection> {
    match top.remove("kind") {
        None => Ok(ManifestKind::Bulk),
        Some(Value::String(name)) => ManifestKind::from_name(&name).ok_or_else(|| {
            let kind_names: Vec<&str> =
                ManifestKind::ALL.iter().map(ManifestKind::as_str).collect();
            ManifestRejection::UnknownKind {
                suggestion: nearest_known_name(&name, &kind_names),
                kind: name,
            }
        }),
        Some(other) => Err(ManifestRejection::WrongTopLevelType {
            field: "kind",
            expected: "one of \"bulk\", \"create\" or \"edit\"",
            found: json_type(&other).to_owned(),
        }),
    }
}

/// The top-level fields and the item fields that a kind of manifest knows.
pub fn known_fields(kind: ManifestKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        ManifestKind::Bulk => (BULK_TOP_FIELDS, BULK_ITEM_FIELDS),
        ManifestKind::Create => (CREATE_TOP_FIELDS, CREATE_ITEM_FIELDS),
        ManifestKind::Edit => (EDIT_TOP_FIELDS, EDIT_ITEM_FIELDS),
    }
}

/// Top-level fields: no unknown one, and the known ones of the kind with their types.
pub(super) fn check_top_level_fields(
    kind: ManifestKind,
    top: &Map<String, Value>,
    top_fields: &[&str],
) -> Result<(), ManifestRejection> {
    if let Some(field) = top
        .keys()
        .find(|field| !top_fields.contains(&field.as_str()))
    {
        return Err(ManifestRejection::UnknownTopLevelField {
            suggestion: nearest_known_name(field, top_fields),
            field: field.clone(),
        });
    }
    check_common_top(top)?;
    match kind {
        ManifestKind::Bulk => check_bulk_top(top),
        ManifestKind::Create => check_create_defaults(top),
        ManifestKind::Edit => Ok(()),
    }
}

/// The top-level fields of every kind: `priority` names a priority; `$schema` is a string.
fn check_common_top(top: &Map<String, Value>) -> Result<(), ManifestRejection> {
    match top.get("priority") {
        None => {}
        Some(Value::String(name)) if Priority::from_name(name).is_some() => {}
        Some(other) => {
            return Err(ManifestRejection::WrongTopLevelType {
                field: "priority",
                expected: "one of \"high\", \"normal\" or \"low\"",
                found: match other {
                    Value::String(name) => format!("\"{name}\""),
                    other => json_type(other).to_owned(),
                },
            })
        }
    }
    match top.get("$schema") {
        Some(value) if !value.is_string() => Err(wrong_top_type("$schema", "a string", value)),
        _ => Ok(()),
    }
}

/// Items array: removes `items` from the top-level fields; an array of 1 to
/// `limits.max_items` entries.
pub(super) fn take_items(
    items: Option<Result<Vec<&RawValue>, Value>>,
    limits: Limits,
) -> Result<Vec<&RawValue>, ManifestRejection> {
    let items = match items {
        None => return Err(ManifestRejection::MissingItems),
        Some(Ok(items)) => items,
        Some(Err(other)) => {
            return Err(ManifestRejection::WrongTopLevelType {
                field: "items",
                expected: "an array",
                found: json_type(&other).to_owned(),
            })
        }
    };
    if items.is_empty() {
        return Err(ManifestRejection::NoItems);
    }
    if items.len() > limits.max_items {
        return Err(ManifestRejection::TooManyItems {
            count: items.len(),
            limit: limits.max_items,
        });
    }
    Ok(items)
}

/// Checks the top-level fields of a bulk manifest other than `kind` and `items`.
fn check_bulk_top(top: &Map<String, Value>) -> Result<(), ManifestRejection> {
    match top.get("template_id") {
        None => return Err(ManifestRejection::MissingTemplateId),
        Some(Value::String(template_id)) if template_id.trim().is_empty() => {
            return Err(ManifestRejection::EmptyTemplateId)
        }
        Some(Value::String(_)) => {}
        Some(other) => return Err(wrong_top_type("template_id", "a string", other)),
    }
    for field in ["client_job_descriptor", "default_tent_name_prefix"] {
        if let Some(value) = top.get(field) {
            if !value.is_string() {
                return Err(wrong_top_type(field, "a string", value));
            }
        }
    }
    if let Some(value) = top.get("start_index") {
        if value
            .as_u64()
            .is_none_or(|start_index| start_index > MAX_START_INDEX)
        {
            return Err(ManifestRejection::WrongTopLevelType {
                field: "start_index",
                expected: "an integer from 0 to 9007199254640991",
                found: match value {
                    Value::Number(number) => format!("{number}"),
                    other => json_type(other).to_owned(),
                },
            });
        }
    }
    if let Some(value) = top.get("auto_publish") {
        if !value.is_boolean() {
            return Err(wrong_top_type("auto_publish", "true or false", value));
        }
    }
    if let Some(value) = top.get("metadata") {
        if !value.is_object() {
            return Err(wrong_top_type("metadata", "an object", value));
        }
    }
    Ok(())
}

/// Builds the rejection for a known top-level field of the wrong JSON type.
fn wrong_top_type(field: &'static str, expected: &'static str, found: &Value) -> ManifestRejection {
    ManifestRejection::WrongTopLevelType {
        field,
        expected,
        found: json_type(found).to_owned(),
    }
}

/// Checks a create manifest's `defaults`, which apply to every item.
fn check_create_defaults(top: &Map<String, Value>) -> Result<(), ManifestRejection> {
    let Some(defaults) = top.get("defaults") else {
        return Ok(());
    };
    let Value::Object(defaults) = defaults else {
        return Err(wrong_top_type("defaults", "an object", defaults));
    };
    if let Some(field) = defaults
        .keys()
        .find(|field| !CREATE_ITEM_FIELDS.contains(&field.as_str()))
    {
        return Err(ManifestRejection::UnknownDefaultsField {
            suggestion: nearest_known_name(field, CREATE_ITEM_FIELDS),
            field: field.clone(),
        });
    }
    if defaults.contains_key("client_item_id") {
        return Err(ManifestRejection::InvalidDefaults {
            field: "client_item_id",
            reason:
                "client_item_id cannot have a default, because it must be unique within a manifest"
                    .to_owned(),
        });
    }
    if defaults.contains_key("asset_ids") {
        return Err(ManifestRejection::InvalidDefaults {
            field: "asset_ids",
            reason: "asset_ids is not allowed on create items".to_owned(),
        });
    }
    for (field, expected) in [
        ("name", FieldType::String),
        ("prompt", FieldType::String),
        ("user_id", FieldType::String),
        ("include_brand", FieldType::Bool),
        ("auto_publish", FieldType::Bool),
        ("custom_page_alias", FieldType::String),
    ] {
        let mut problems = Vec::new();
        check_optional_type(defaults, field, expected, &mut problems);
        if let Some(reason) = problems.pop() {
            return Err(ManifestRejection::InvalidDefaults { field, reason });
        }
    }
    if let Some(Value::String(alias)) = defaults.get("custom_page_alias") {
        if let Err(error) = validate_alias(alias) {
            return Err(ManifestRejection::InvalidDefaults {
                field: "custom_page_alias",
                reason: format!("custom_page_alias `{alias}` is invalid: {error}"),
            });
        }
    }
    Ok(())
}
