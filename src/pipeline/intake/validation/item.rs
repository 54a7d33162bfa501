//! The item-level rules of each kind. A rule broken here rejects only its item, with
//! every problem named; the other items go on.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::manifest::{
    item_key, ClientItemId, ItemFields, ManifestKind, ValidatedItem, MAX_ASSET_IDS,
};

use super::alias::validate_alias;
use super::rejection::json_type;

/// The item-level rules of one item, by kind; its `client_item_id` (if it gave one) and
/// its rejection message (naming it by its key, `#INDEX` without an id), if any.
pub(super) fn judge_item(
    index: u32,
    raw: &RawValue,
    given: Value,
    kind: ManifestKind,
    top: &Map<String, Value>,
) -> ValidatedItem {
    let client_item_id = match given.get("client_item_id") {
        Some(Value::String(id)) => ClientItemId::new(id.clone()),
        _ => None,
    };
    let mut problems = Vec::new();
    if let Value::Object(fields) = &given {
        match kind {
            ManifestKind::Bulk => check_bulk_item(fields, top, &mut problems),
            ManifestKind::Create => check_create_item(fields, top, &mut problems),
            ManifestKind::Edit => check_edit_item(fields, &mut problems),
        }
    }
    // Typed once, while the value is at hand; a misfit after every check passed is a bug.
    let fields = if problems.is_empty() {
        match ItemFields::from_validated(&given) {
            Ok(fields) => Some(fields),
            Err(e) => {
                debug_assert!(false, "validation and the typed fields disagree: {e}");
                tracing::error!(index, "{e} (a bug): the item is rejected");
                problems.push(format!("{e} (a bug in the daemon)"));
                None
            }
        }
    } else {
        None
    };
    let rejection = (!problems.is_empty()).then(|| {
        format!(
            "item {index} (client_item_id `{}`): {}",
            item_key(index, client_item_id.as_ref()),
            problems.join("; ")
        )
    });
    ValidatedItem {
        index,
        client_item_id,
        given: raw.get().to_owned(),
        fields,
        rejection,
    }
}

/// The JSON type that a known optional item field must have.
#[derive(Clone, Copy, Debug)]
pub(super) enum FieldType {
    String,
    Bool,
}

/// Adds a problem when `field` is present in `fields` with the wrong type; returns the
/// value when it is present with the right one.
pub(super) fn check_optional_type<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
    expected: FieldType,
    problems: &mut Vec<String>,
) -> Option<&'a Value> {
    let value = fields.get(field)?;
    let (matches, expected_text) = match expected {
        FieldType::String => (value.is_string(), "a string"),
        FieldType::Bool => (value.is_boolean(), "true or false"),
    };
    if matches {
        Some(value)
    } else {
        problems.push(format!(
            "{field} must be {expected_text}, found {}",
            json_type(value)
        ));
        None
    }
}

/// Checks a required string that may come from the item or, for create items, from
/// `defaults` (already type-checked at manifest level).
fn check_required_text(
    item: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
    field: &str,
    problems: &mut Vec<String>,
) {
    let value = item
        .get(field)
        .or_else(|| defaults.and_then(|defaults| defaults.get(field)));
    match value {
        None => problems.push(format!("{field} is missing")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            problems.push(format!("{field} is empty"))
        }
        Some(Value::String(_)) => {}
        Some(other) => problems.push(format!(
            "{field} must be a string, found {}",
            json_type(other)
        )),
    }
}

/// Checks an item's effective `custom_page_alias` against the alias rules and against
/// the requirement of `auto_publish: true`.
fn check_alias(
    alias: Option<&Value>,
    auto_publish: Option<&Value>,
    auto_publish_source: &str,
    problems: &mut Vec<String>,
) {
    let Some(alias) = alias else {
        return;
    };
    let Value::String(alias) = alias else {
        problems.push(format!(
            "custom_page_alias must be a string, found {}",
            json_type(alias)
        ));
        return;
    };
    if let Err(error) = validate_alias(alias) {
        problems.push(format!("custom_page_alias `{alias}` is invalid: {error}"));
    }
    if auto_publish != Some(&Value::Bool(true)) {
        problems.push(format!(
            "custom_page_alias requires {auto_publish_source} auto_publish: true"
        ));
    }
}

/// Checks an item's `asset_ids`: an array of at most five non-empty strings.
fn check_asset_ids(item: &Map<String, Value>, problems: &mut Vec<String>) {
    let Some(value) = item.get("asset_ids") else {
        return;
    };
    let Value::Array(asset_ids) = value else {
        problems.push(format!(
            "asset_ids must be an array of strings, found {}",
            json_type(value)
        ));
        return;
    };
    if asset_ids.len() > MAX_ASSET_IDS {
        problems.push(format!(
            "asset_ids has {} entries; at most {MAX_ASSET_IDS} are allowed",
            asset_ids.len()
        ));
    }
    for (position, asset_id) in asset_ids.iter().enumerate() {
        match asset_id {
            Value::String(text) if text.trim().is_empty() => {
                problems.push(format!("asset_ids[{position}] is empty"))
            }
            Value::String(_) => {}
            other => problems.push(format!(
                "asset_ids[{position}] must be a string, found {}",
                json_type(other)
            )),
        }
    }
}

/// The item-level rules of a bulk item.
fn check_bulk_item(
    item: &Map<String, Value>,
    top: &Map<String, Value>,
    problems: &mut Vec<String>,
) {
    match item.get("input_data") {
        None => problems
            .push("input_data is missing; every bulk item needs an input_data object".to_owned()),
        Some(Value::Object(_)) => {}
        Some(other) => problems.push(format!(
            "input_data must be an object, found {}",
            json_type(other)
        )),
    }
    check_optional_type(item, "instructions", FieldType::String, problems);
    check_optional_type(item, "tent_name", FieldType::String, problems);
    check_optional_type(item, "include_brand", FieldType::Bool, problems);
    check_alias(
        item.get("custom_page_alias"),
        top.get("auto_publish"),
        "top-level",
        problems,
    );
    check_asset_ids(item, problems);
}

/// The item-level rules of a create item, with the manifest's `defaults` applied.
fn check_create_item(
    item: &Map<String, Value>,
    top: &Map<String, Value>,
    problems: &mut Vec<String>,
) {
    let defaults = match top.get("defaults") {
        Some(Value::Object(defaults)) => Some(defaults),
        _ => None,
    };
    let effective = |field: &str| {
        item.get(field)
            .or_else(|| defaults.and_then(|defaults| defaults.get(field)))
    };
    check_required_text(item, defaults, "name", problems);
    check_required_text(item, defaults, "prompt", problems);
    check_optional_type(item, "user_id", FieldType::String, problems);
    check_optional_type(item, "include_brand", FieldType::Bool, problems);
    check_optional_type(item, "auto_publish", FieldType::Bool, problems);
    check_alias(
        effective("custom_page_alias"),
        effective("auto_publish"),
        "the item's (or the defaults')",
        problems,
    );
    if item.contains_key("asset_ids") {
        problems.push(
            "asset_ids is not allowed on create items (the API accepts asset ids only together with a tent_id)".to_owned(),
        );
    }
}

/// The item-level rules of an edit item.
fn check_edit_item(item: &Map<String, Value>, problems: &mut Vec<String>) {
    check_required_text(item, None, "prompt", problems);
    match (item.get("tent_id"), item.get("target_client_item_id")) {
        (None, None) => {
            problems.push("either tent_id or target_client_item_id is required".to_owned())
        }
        (Some(_), Some(_)) => {
            problems.push("give either tent_id or target_client_item_id, not both".to_owned());
        }
        (Some(Value::String(tent_id)), None) => {
            if !(tent_id.len() == 36 && uuid::Uuid::try_parse(tent_id).is_ok()) {
                problems.push(format!("tent_id `{tent_id}` is not a UUID"));
            }
        }
        (Some(other), None) => problems.push(format!(
            "tent_id must be a string, found {}",
            json_type(other)
        )),
        (None, Some(_)) => check_required_text(item, None, "target_client_item_id", problems),
    }
    check_optional_type(item, "include_brand", FieldType::Bool, problems);
    check_optional_type(item, "auto_publish", FieldType::Bool, problems);
    check_alias(
        item.get("custom_page_alias"),
        item.get("auto_publish"),
        "the item's",
        problems,
    );
    check_asset_ids(item, problems);
}
