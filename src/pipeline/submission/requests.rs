//! The requests a manifest's items become, built from their typed fields (parsed once,
//! at intake). A request that cannot be built (an item without fields, free-form JSON
//! that no longer parses, a required field missing) is a bug or a damaged store: it is
//! refused with [`Unsendable`], never sent with a made-up value.

use serde_json::Value;

use crate::api::types::{BulkCreateRequest, BulkItem, CreateTentRequest, EditTentRequest};
use crate::manifest::{ItemFields, JsonText, TopFields};
use crate::state::item::ItemRecord;
use crate::store::ManifestRecord;

/// Why a request cannot be built; its items are refused without being sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsendable(pub String);

/// An item's typed fields; an accepted item always has them.
fn fields_of(item: &ItemRecord) -> Result<&ItemFields, Unsendable> {
    item.fields.as_ref().ok_or_else(|| {
        Unsendable(format!(
            "item {} (`{}`) has no typed fields recorded (a bug): it was not sent",
            item.index, item.client_item_id
        ))
    })
}

/// Free-form JSON back from its text.
fn json_of(text: &JsonText, what: &str) -> Result<Value, Unsendable> {
    text.to_value().map_err(|e| {
        Unsendable(format!(
            "the stored {what} does not parse ({e}): it was not sent"
        ))
    })
}

/// A field validation requires.
fn required(value: &Option<String>, what: &str, item: &ItemRecord) -> Result<String, Unsendable> {
    value.clone().ok_or_else(|| {
        Unsendable(format!(
            "item {} (`{}`) has no {what} (a bug: validation requires it): it was not sent",
            item.index, item.client_item_id
        ))
    })
}

/// Builds the bulk request for `items` (in manifest order). `start_index` is chosen so the
/// first item keeps its counter; later items whose counter would differ from the one they
/// have in one large batch get their default name explicitly.
pub fn build_bulk_request(
    top: &TopFields,
    items: &[ItemRecord],
) -> Result<BulkCreateRequest, Unsendable> {
    let base = top.start_index.unwrap_or(1);
    let first = items.first().map_or(0, |i| i64::from(i.index));
    let start = base + first;
    let mut bulk_items = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let fields = fields_of(item)?;
        let intended = base + i64::from(item.index);
        let tent_name = fields.tent_name.clone().or_else(|| {
            (start + position as i64 != intended).then(|| top.default_tent_name(intended))
        });
        let input_data = match &fields.input_data {
            Some(text) => json_of(text, "input_data")?,
            None => {
                return Err(Unsendable(format!(
                    "item {} has no input_data (a bug)",
                    item.index
                )))
            }
        };
        bulk_items.push(BulkItem {
            input_data,
            instructions: fields.instructions.clone(),
            client_item_id: fields.client_item_id.clone(),
            tent_name,
            custom_page_alias: fields.custom_page_alias.clone(),
            include_brand: fields.include_brand,
            asset_ids: fields.asset_ids.clone(),
        });
    }
    let template_id = top.template_id.clone().ok_or_else(|| {
        Unsendable("the manifest has no template_id (a bug: validation requires it)".into())
    })?;
    Ok(BulkCreateRequest {
        template_id,
        items: bulk_items,
        client_job_descriptor: top.client_job_descriptor.clone(),
        default_tent_name_prefix: top.default_tent_name_prefix.clone(),
        start_index: Some(start),
        auto_publish: top.auto_publish,
        metadata: top
            .metadata
            .as_ref()
            .map(|m| json_of(m, "metadata"))
            .transpose()?,
    })
}

/// A create item over its manifest's `defaults`.
fn create_fields(top: &TopFields, item: &ItemRecord) -> Result<ItemFields, Unsendable> {
    Ok(fields_of(item)?.over(top.defaults.as_ref()))
}

pub fn build_create_request(
    top: &TopFields,
    item: &ItemRecord,
) -> Result<CreateTentRequest, Unsendable> {
    let fields = create_fields(top, item)?;
    Ok(CreateTentRequest {
        name: required(&fields.name, "name", item)?,
        prompt: required(&fields.prompt, "prompt", item)?,
        user_id: fields.user_id,
        include_brand: fields.include_brand,
        auto_publish: fields.auto_publish,
        custom_page_alias: fields.custom_page_alias,
        tent_id: None,
        asset_ids: None,
    })
}

/// The edit request and the tent it edits (resolved at intake).
pub fn build_edit_request(item: &ItemRecord) -> Result<(String, EditTentRequest), Unsendable> {
    let fields = fields_of(item)?;
    let target = required(&item.target_tent_id, "target tent id", item)?;
    Ok((
        target,
        EditTentRequest {
            prompt: required(&fields.prompt, "prompt", item)?,
            include_brand: fields.include_brand,
            auto_publish: fields.auto_publish,
            custom_page_alias: fields.custom_page_alias.clone(),
            asset_ids: fields.asset_ids.clone(),
        },
    ))
}

/// The tent name a single create asked for (the item's `name`, or the defaults').
pub fn requested_tent_name(manifest: &ManifestRecord, item: &ItemRecord) -> Option<String> {
    item.fields
        .as_ref()
        .and_then(|f| f.name.clone())
        .or_else(|| manifest.top.defaults.as_ref().and_then(|d| d.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn top(json: Value) -> TopFields {
        TopFields::from_validated(json.as_object().expect("object")).expect("fits")
    }

    fn item(index: u32, given: Value) -> ItemRecord {
        let fields = ItemFields::from_validated(&given).expect("fits");
        ItemRecord::pending(1, index, format!("c{index}"), given.to_string(), fields)
    }

    #[test]
    fn items_after_a_gap_carry_their_default_name_and_the_first_keeps_its_counter() {
        let t = top(
            json!({"template_id": "tpl_x", "default_tent_name_prefix": "P", "start_index": 5,
                           "metadata": {"m": [1]}}),
        );
        // Items 25, 26 and 28 of chunk 1 (27 was rejected locally); 26 has its own name.
        let items = vec![
            item(25, json!({"input_data": {"a": 1}})),
            item(26, json!({"input_data": {}, "tent_name": "Mine"})),
            item(28, json!({"input_data": {}})),
        ];
        let request = build_bulk_request(&t, &items).expect("buildable");
        assert_eq!(request.start_index, Some(30));
        assert_eq!(request.items[0].tent_name, None);
        assert_eq!(request.items[0].input_data, json!({"a": 1}));
        assert_eq!(request.items[1].tent_name.as_deref(), Some("Mine"));
        assert_eq!(request.items[2].tent_name.as_deref(), Some("P 33"));
        assert_eq!(request.template_id, "tpl_x");
        assert_eq!(request.metadata, Some(json!({"m": [1]})));
    }

    #[test]
    fn a_create_item_wins_over_its_defaults() {
        let t = top(
            json!({"defaults": {"name": "D", "prompt": "p", "auto_publish": true, "user_id": "u"}}),
        );
        let request =
            build_create_request(&t, &item(0, json!({"name": "Mine"}))).expect("buildable");
        assert_eq!(
            (request.name.as_str(), request.prompt.as_str()),
            ("Mine", "p")
        );
        assert_eq!(
            (request.auto_publish, request.user_id.as_deref()),
            (Some(true), Some("u"))
        );
    }

    #[test]
    fn impossible_records_are_refused_not_sent_with_made_up_values() {
        let rejected = ItemRecord::rejected_locally(1, 0, "c0".into(), "{}".into(), "rule".into());
        assert!(build_bulk_request(
            &top(json!({"template_id": "t"})),
            std::slice::from_ref(&rejected)
        )
        .is_err());
        assert!(
            build_bulk_request(&TopFields::default(), &[item(0, json!({"input_data": {}}))])
                .is_err()
        );
        assert!(
            build_create_request(&TopFields::default(), &item(0, json!({"name": "n"}))).is_err()
        );
        let no_target = item(0, json!({"prompt": "p"}));
        assert!(
            build_edit_request(&no_target).is_err(),
            "never POST /v1/tents//edit"
        );
        let mut targeted = no_target;
        targeted.target_tent_id = Some("T".into());
        let (target, request) = build_edit_request(&targeted).expect("buildable");
        assert_eq!((target.as_str(), request.prompt.as_str()), ("T", "p"));
    }
}
