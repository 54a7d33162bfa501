//! Manifest validation, before any credit is spent (SPEC section 4).
//!
//! [`validate_manifest`] either rejects a whole manifest with a [`ManifestRejection`]
//! (nothing of it is ever sent) or returns a [`ValidatedManifest`] in which single
//! items may carry a local rejection while the rest go on. `tented-bulkd validate`
//! and the daemon both judge a file with [`super::judge_file`], which calls it, so both
//! apply exactly the same rules.
//!
//! Choices where the SPEC is silent, for the README:
//! - A UTF-8 byte order mark at the start of the file is skipped.
//! - `null` is never accepted in place of a typed field: an optional field is either
//!   absent or of its documented type.
//! - `start_index` must be an integer from 0 to [`MAX_START_INDEX`].
//! - Strings that must be present (`template_id`, `name`, `prompt`,
//!   `target_client_item_id`, asset ids) must also hold more than white space.
//! - `tent_id` must be a UUID in its hyphenated 36-character form, because it becomes
//!   part of a request path.
//! - Field types in create `defaults`, and `asset_ids` or `client_item_id` there,
//!   reject the whole manifest, since they would break every item.
//! - `priority` (`high`, `normal` or `low`) and `$schema` (a string, for editors) are
//!   top-level fields of every kind. `priority` stays among the top-level fields (the
//!   daemon's own, never sent to Tented: requests are built from [`TopFields`], which do
//!   not carry it); `$schema` is accepted and dropped.
//!
//! [`TopFields`]: crate::manifest::TopFields
//!
//! The rules by seam: `name` the file's name, `alias` the alias rules, `document`
//! the manifest-level rules (parsing, kind, top-level fields, `defaults`, the items
//! array), `parallel` every item judged once (the manifest-level rules on items and a
//! large manifest's runs on several cores), `item` the item-level rules of each kind,
//! and `rejection` what a rejected manifest is told (with did-you-mean).

mod alias;
mod document;
mod item;
mod name;
mod parallel;
mod rejection;

pub use crate::manifest::{MANIFEST_SUFFIX, MAX_MANIFEST_NAME_CHARS, MAX_START_INDEX};
pub use alias::{
    validate_alias, AliasRuleError, MAX_ALIAS_CHARS, RESERVED_ALIAS_WORDS, ROOT_ALIAS,
};
pub use document::known_fields;
pub use name::{check_manifest_name, sanitize_manifest_name};
#[cfg(test)]
pub(crate) use parallel::judging_on_one_thread;
pub use rejection::{nearest_known_name, ManifestRejection};

use crate::manifest::ValidatedManifest;
use document::{
    check_top_level_fields, parse_object, take_items, take_kind, Limits, RawDocument, SPEC_LIMITS,
};
use parallel::judge_items;

/// Validates a manifest's bytes as SPEC section 4 says: a manifest-level rule broken
/// rejects the whole manifest; an item-level rule broken rejects only that item.
pub fn validate_manifest(bytes: &[u8]) -> Result<ValidatedManifest, ManifestRejection> {
    validate_manifest_with_limits(bytes, SPEC_LIMITS)
}

/// The manifest-level checks and the item-level ones, with limits as a parameter. Each
/// step either rejects the whole manifest or hands the next one what it left.
fn validate_manifest_with_limits(
    bytes: &[u8],
    limits: Limits,
) -> Result<ValidatedManifest, ManifestRejection> {
    let RawDocument { mut top, items } = parse_object(bytes, limits)?;
    let kind = take_kind(&mut top)?;
    let (top_fields, item_fields) = known_fields(kind);
    check_top_level_fields(kind, &top, top_fields)?;
    // Accepted and ignored: for editors only.
    top.remove("$schema");
    let items = take_items(items, limits)?;
    // Manifest-level rules on items are checked in the same pass as the items are
    // judged; a manifest rejected as a whole returns no item.
    let items = judge_items(items, kind, &top, item_fields)?;
    Ok(ValidatedManifest { kind, top, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestKind, Priority, ValidatedItem, MAX_ITEMS, MAX_MANIFEST_BYTES};
    use document::{BULK_ITEM_FIELDS, BULK_TOP_FIELDS, EDIT_ITEM_FIELDS};
    use serde_json::{json, Value};

    /// Validates a JSON value with the SPEC limits.
    fn validate(document: Value) -> Result<ValidatedManifest, ManifestRejection> {
        validate_manifest(document.to_string().as_bytes())
    }

    /// A bulk manifest with the given items and otherwise minimal fields.
    fn bulk(items: Value) -> Value {
        json!({"template_id": "tpl_1", "items": items})
    }

    /// The rejection message of the only item of a manifest, which must validate.
    fn only_rejection(document: Value) -> Option<String> {
        let manifest = validate(document).expect("the manifest itself is valid");
        assert_eq!(manifest.items.len(), 1);
        manifest.items[0].rejection.clone()
    }

    /// The rejection message of the manifest, which must be rejected.
    fn manifest_error(document: Value) -> String {
        validate(document)
            .expect_err("the manifest is rejected")
            .to_string()
    }

    #[test]
    fn priority_is_a_top_level_field_of_every_kind_and_names_a_priority() {
        let documents = [
            bulk(json!([{"input_data": {}}])),
            json!({"kind": "create", "items": [{"name": "n", "prompt": "p"}]}),
            json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a"}]}),
        ];
        for document in documents {
            for priority in ["high", "normal", "low"] {
                let mut given = document.clone();
                given["priority"] = json!(priority);
                let manifest = validate(given).expect("accepted");
                assert_eq!(
                    manifest.top.get("priority"),
                    Some(&json!(priority)),
                    "kept for the daemon"
                );
            }
            let mut urgent = document.clone();
            urgent["priority"] = json!("urgent");
            assert_eq!(
                manifest_error(urgent),
                "top-level field `priority` must be one of \"high\", \"normal\" or \"low\", found \"urgent\""
            );
            let mut number = document.clone();
            number["priority"] = json!(1);
            assert!(manifest_error(number).ends_with("found a number"));
            let mut typo = document;
            typo["prority"] = json!("high");
            assert!(manifest_error(typo).contains("did you mean `priority`?"));
        }
    }

    #[test]
    fn schema_is_accepted_and_dropped() {
        let mut document =
            json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a"}]});
        document["$schema"] = json!("./schema/manifest.schema.json");
        let manifest = validate(document.clone()).expect("accepted");
        assert!(
            !manifest.top.contains_key("$schema"),
            "ignored: not kept among the top-level fields"
        );
        document["$schema"] = json!({"not": "a string"});
        assert_eq!(
            manifest_error(document),
            "top-level field `$schema` must be a string, found an object"
        );
    }

    #[test]
    fn priority_is_the_daemons_and_typed_apart_from_tenteds_fields() {
        let mut document = bulk(json!([{"input_data": {}}]));
        document["priority"] = json!("high");
        let manifest = validate(document).expect("accepted");
        let typed = crate::manifest::TopFields::from_validated(&manifest.top).expect("typed");
        // Requests are built from Tented's fields only; `priority` weighs the fair share.
        assert_eq!(
            typed,
            crate::manifest::TopFields {
                template_id: Some("tpl_1".into()),
                priority: Priority::High,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_minimal_bulk_manifest_is_accepted_with_default_ids() {
        let manifest = validate(bulk(
            json!([{"input_data": {}}, {"input_data": {"a": 1}, "client_item_id": "x"}]),
        ))
        .expect("valid");
        assert_eq!(manifest.kind, ManifestKind::Bulk);
        assert_eq!(manifest.items[0].client_item_id, None);
        assert_eq!(manifest.items[0].key(), "#0");
        assert_eq!(manifest.items[1].key(), "x");
        assert_eq!(manifest.items[1].index, 1);
        let given: Value = serde_json::from_str(&manifest.items[1].given).expect("json text");
        assert_eq!(
            given,
            json!({"input_data": {"a": 1}, "client_item_id": "x"})
        );
        assert!(
            manifest.items[1].fields.is_some(),
            "typed once, at validation"
        );
        assert!(manifest.items.iter().all(ValidatedItem::is_accepted));
        assert_eq!(manifest.top.get("template_id"), Some(&json!("tpl_1")));
        assert!(!manifest.top.contains_key("items") && !manifest.top.contains_key("kind"));
    }

    #[test]
    fn the_full_documented_bulk_example_is_accepted() {
        let document = json!({
            "kind": "bulk",
            "template_id": "tpl_01JABC123XYZ",
            "client_job_descriptor": "Acme onboarding batch",
            "default_tent_name_prefix": "Acme onboarding",
            "start_index": 1,
            "auto_publish": true,
            "metadata": {"source": "crm-import", "anything": [1, {"goes": null}]},
            "items": [{
                "client_item_id": "acme-row-001",
                "tent_name": "Acme Onboarding Page 1",
                "custom_page_alias": "acme-onboarding-jane",
                "input_data": {"first_name": "Jane", "nested": {"free": ["form"]}},
                "instructions": "Make the tone more executive.",
                "include_brand": true,
                "asset_ids": ["a1", "a2", "a3", "a4", "a5"]
            }]
        });
        let manifest = validate(document).expect("valid");
        assert_eq!(manifest.items[0].rejection, None);
        assert_eq!(manifest.top.len(), 6);
    }

    #[test]
    fn the_file_must_be_utf8() {
        let error = validate_manifest(b"{\"template_id\": \"tpl\xff\"}").expect_err("rejected");
        assert_eq!(error, ManifestRejection::NotUtf8 { valid_up_to: 20 });
        assert!(error.to_string().contains("not UTF-8"));
        let with_bom = format!("\u{feff}{}", bulk(json!([{"input_data": {}}])));
        assert!(validate_manifest(with_bom.as_bytes()).is_ok());
    }

    #[test]
    fn the_file_must_be_json() {
        let error = validate_manifest(b"{\"template_id\": ").expect_err("rejected");
        assert!(matches!(error, ManifestRejection::NotJson { .. }));
        assert!(error
            .to_string()
            .starts_with("the manifest is not valid JSON"));
        assert!(validate_manifest(b"").is_err());
    }

    #[test]
    fn the_file_must_be_an_object() {
        assert_eq!(
            manifest_error(json!([1])),
            "the manifest must be a JSON object, found an array"
        );
        assert_eq!(
            validate(json!("x")),
            Err(ManifestRejection::NotAnObject { found: "a string" })
        );
    }

    #[test]
    fn the_file_must_not_exceed_the_size_limit() {
        let bytes = bulk(json!([{"input_data": {}}])).to_string().into_bytes();
        let exact = Limits {
            max_bytes: bytes.len() as u64,
            max_items: MAX_ITEMS,
        };
        assert!(validate_manifest_with_limits(&bytes, exact).is_ok());
        let smaller = Limits {
            max_bytes: bytes.len() as u64 - 1,
            max_items: MAX_ITEMS,
        };
        assert_eq!(
            validate_manifest_with_limits(&bytes, smaller),
            Err(ManifestRejection::TooLarge {
                size: bytes.len() as u64,
                limit: bytes.len() as u64 - 1
            })
        );
        assert_eq!(SPEC_LIMITS.max_bytes, 67_108_864);
    }

    #[test]
    fn the_kind_defaults_to_bulk_and_must_be_known() {
        assert_eq!(
            validate(bulk(json!([{"input_data": {}}])))
                .expect("valid")
                .kind,
            ManifestKind::Bulk
        );
        let create = json!({"kind": "create", "items": [{"name": "n", "prompt": "p"}]});
        assert_eq!(validate(create).expect("valid").kind, ManifestKind::Create);
        let edit =
            json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a"}]});
        assert_eq!(validate(edit).expect("valid").kind, ManifestKind::Edit);
        assert_eq!(
            manifest_error(json!({"kind": "crate", "items": []})),
            "unknown kind `crate`, did you mean `create`?; kind must be `bulk`, `create` or `edit`"
        );
        assert_eq!(
            validate(json!({"kind": "nonsense", "items": []})),
            Err(ManifestRejection::UnknownKind {
                kind: "nonsense".into(),
                suggestion: None
            })
        );
        assert!(matches!(
            validate(json!({"kind": 1, "items": []})),
            Err(ManifestRejection::WrongTopLevelType { field: "kind", .. })
        ));
    }

    #[test]
    fn kind_round_trips_through_serde_and_as_str() {
        for kind in ManifestKind::ALL {
            let text = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(text, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<ManifestKind>(&text).expect("parses"),
                kind
            );
        }
    }

    #[test]
    fn a_bulk_manifest_needs_a_template_id() {
        assert_eq!(
            validate(json!({"items": [{"input_data": {}}]})),
            Err(ManifestRejection::MissingTemplateId)
        );
        assert_eq!(
            validate(json!({"template_id": " ", "items": [{"input_data": {}}]})),
            Err(ManifestRejection::EmptyTemplateId)
        );
        assert_eq!(
            manifest_error(json!({"template_id": 5, "items": [{"input_data": {}}]})),
            "top-level field `template_id` must be a string, found a number"
        );
    }

    #[test]
    fn known_top_level_fields_must_have_their_types() {
        let cases = [
            ("start_index", json!(1.5), "start_index"),
            ("start_index", json!(-1), "start_index"),
            ("start_index", json!("1"), "start_index"),
            ("auto_publish", json!("true"), "auto_publish"),
            ("metadata", json!([]), "metadata"),
            ("client_job_descriptor", json!(1), "client_job_descriptor"),
            (
                "default_tent_name_prefix",
                json!(null),
                "default_tent_name_prefix",
            ),
        ];
        for (field, value, named) in cases {
            let mut document = bulk(json!([{"input_data": {}}]));
            document[field] = value;
            let error = validate(document).expect_err("rejected");
            assert!(error.to_string().contains(&format!("`{named}`")), "{error}");
        }
        let mut document = bulk(json!([{"input_data": {}}]));
        document["start_index"] = json!(0);
        document["auto_publish"] = json!(false);
        assert!(validate(document).is_ok());
        let mut document = bulk(json!([{"input_data": {}}]));
        document["start_index"] = json!(MAX_START_INDEX + 1);
        let message = manifest_error(document);
        assert!(
            message.contains(&format!("from 0 to {MAX_START_INDEX}")),
            "{message}"
        );
        let create =
            json!({"kind": "create", "defaults": [], "items": [{"name": "n", "prompt": "p"}]});
        assert!(manifest_error(create).contains("`defaults` must be an object"));
    }

    #[test]
    fn items_must_be_a_non_empty_array_of_at_most_the_limit() {
        assert_eq!(
            validate(json!({"template_id": "t"})),
            Err(ManifestRejection::MissingItems)
        );
        assert_eq!(validate(bulk(json!([]))), Err(ManifestRejection::NoItems));
        assert!(
            manifest_error(bulk(json!({}))).contains("`items` must be an array, found an object")
        );
        let bytes =
            bulk(json!([{"input_data": {}}, {"input_data": {}}, {"input_data": {}}])).to_string();
        let limits = Limits {
            max_bytes: MAX_MANIFEST_BYTES,
            max_items: 2,
        };
        assert_eq!(
            validate_manifest_with_limits(bytes.as_bytes(), limits),
            Err(ManifestRejection::TooManyItems { count: 3, limit: 2 })
        );
    }

    #[test]
    fn the_real_item_limit_is_one_hundred_thousand() {
        let items = |count: usize| Value::Array(vec![json!({"input_data": {}}); count]);
        let accepted = validate(bulk(items(MAX_ITEMS))).expect("valid");
        assert_eq!(accepted.items.len(), MAX_ITEMS);
        assert_eq!(accepted.items[MAX_ITEMS - 1].key(), "#99999");
        assert_eq!(
            validate(bulk(items(MAX_ITEMS + 1))),
            Err(ManifestRejection::TooManyItems {
                count: MAX_ITEMS + 1,
                limit: MAX_ITEMS
            })
        );
    }

    #[test]
    fn every_item_must_be_an_object() {
        assert_eq!(
            manifest_error(bulk(json!([{"input_data": {}}, 7]))),
            "item 1 must be a JSON object, found a number"
        );
    }

    #[test]
    fn client_item_ids_must_be_unique_strings_not_beginning_with_hash() {
        assert_eq!(
            validate(bulk(json!([
                {"input_data": {}, "client_item_id": "a"},
                {"input_data": {}, "client_item_id": "b"},
                {"input_data": {}, "client_item_id": "a"}
            ]))),
            Err(ManifestRejection::DuplicateClientItemId {
                id: "a".into(),
                first_index: 0,
                second_index: 2
            })
        );
        assert!(manifest_error(bulk(json!([{"input_data": {}, "client_item_id": "x"}, {"input_data": {}, "client_item_id": "x"}])))
            .contains("at items 0 and 1"));
        assert_eq!(
            validate(bulk(json!([{"input_data": {}, "client_item_id": 3}]))),
            Err(ManifestRejection::ClientItemIdNotString {
                index: 0,
                found: "a number"
            })
        );
        assert_eq!(
            validate(bulk(json!([{"input_data": {}, "client_item_id": "#1"}]))),
            Err(ManifestRejection::ClientItemIdReserved {
                index: 0,
                id: "#1".into()
            })
        );
        // An id that merely contains `#` is fine, and default ids never collide with given ones.
        let manifest = validate(bulk(
            json!([{"input_data": {}, "client_item_id": "1#"}, {"input_data": {}}]),
        ))
        .expect("valid");
        assert_eq!(manifest.items[1].key(), "#1");
    }

    /// 6,000 items (judged in runs on several threads), each changed by `edit`.
    fn large(edit: impl Fn(usize, &mut Value)) -> Result<ValidatedManifest, ManifestRejection> {
        let items: Vec<Value> = (0..6_000)
            .map(|i| {
                let mut item =
                    json!({"input_data": {"n": i}, "client_item_id": format!("row-{i}")});
                edit(i, &mut item);
                item
            })
            .collect();
        validate(bulk(Value::Array(items)))
    }

    #[test]
    fn a_large_manifest_judged_in_runs_is_judged_as_one_pass_would() {
        let manifest = large(|i, item| {
            if i == 5_999 {
                item["input_data"] = json!(1);
            }
        })
        .expect("valid");
        assert_eq!(manifest.items.len(), 6_000);
        assert!(manifest
            .items
            .iter()
            .enumerate()
            .all(|(i, item)| item.index as usize == i && item.key() == format!("row-{i}")));
        let rejected: Vec<u32> = manifest
            .items
            .iter()
            .filter(|item| item.rejection.is_some())
            .map(|item| item.index)
            .collect();
        assert_eq!(rejected, [5_999]);
        // The first broken manifest-level rule wins, wherever the runs are cut: a
        // duplicate late in the manifest (at 5,000) before a non-object even later; a
        // non-object early in the first run, or in the second half, before the duplicate…
        let not_an_object = |index| ManifestRejection::ItemNotAnObject {
            index,
            found: "a number",
        };
        let cases = [
            (
                5_500,
                ManifestRejection::DuplicateClientItemId {
                    id: "row-10".into(),
                    first_index: 10,
                    second_index: 5_000,
                },
            ),
            (100, not_an_object(100)),
            (3_500, not_an_object(3_500)),
        ];
        for (non_object, expected) in cases {
            let judged = large(|i, item| {
                if i == non_object {
                    *item = json!(7);
                }
                if i == 5_000 {
                    item["client_item_id"] = json!("row-10");
                }
            });
            assert_eq!(judged.map(|_| ()), Err(expected), "non-object {non_object}");
        }
        // …and for one item, its duplicate id before its unknown field.
        let both = large(|i, item| {
            if i == 4_000 {
                item["client_item_id"] = json!("row-3999");
                item["extra"] = json!(true);
            }
        });
        assert!(matches!(
            both,
            Err(ManifestRejection::DuplicateClientItemId {
                second_index: 4_000,
                ..
            })
        ));
        let unknown = large(|i, item| {
            if i == 100 || i == 4_000 {
                item["extra"] = json!(true);
            }
            if i == 3_000 {
                item["client_item_id"] = json!("row-1");
            }
        });
        assert!(matches!(
            unknown,
            Err(ManifestRejection::UnknownItemField { index: 100, .. })
        ));
    }

    #[test]
    fn unknown_fields_are_rejected_with_the_nearest_known_name() {
        assert_eq!(
            manifest_error(bulk(
                json!([{"input_data": {}}, {"input_data": {}}, {"input_data": {}}, {"input_data": {}, "tent_nmae": "x"}])
            )),
            "item 3: unknown field `tent_nmae`, did you mean `tent_name`?"
        );
        let mut document = bulk(json!([{"input_data": {}}]));
        document["templateId"] = json!("x");
        assert_eq!(
            manifest_error(document),
            "unknown top-level field `templateId`, did you mean `template_id`?"
        );
        let mut document = bulk(json!([{"input_data": {}}]));
        document["colour"] = json!("x");
        assert_eq!(manifest_error(document), "unknown top-level field `colour`");
        assert_eq!(
            manifest_error(bulk(json!([{"input": {}}]))),
            "item 0: unknown field `input`, did you mean `input_data`?"
        );
        assert_eq!(
            manifest_error(json!({"kind": "create", "items": [{"name": "n", "promt": "p"}]})),
            "item 0: unknown field `promt`, did you mean `prompt`?"
        );
        assert_eq!(
            manifest_error(
                json!({"kind": "edit", "items": [{"prompt": "p", "tent_id": "x", "IncludeBrand": true}]})
            ),
            "item 0: unknown field `IncludeBrand`, did you mean `include_brand`?"
        );
        // Fields of another kind are unknown in this one.
        assert!(
            manifest_error(bulk(json!([{"input_data": {}, "prompt": "p"}])))
                .contains("unknown field `prompt`")
        );
        assert!(manifest_error(
            json!({"kind": "edit", "defaults": {}, "items": [{"prompt": "p"}]})
        )
        .contains("unknown top-level field `defaults`"));
        assert!(manifest_error(
            json!({"kind": "create", "defaults": {"nmae": "x"}, "items": [{"prompt": "p"}]})
        )
        .contains("`defaults`: unknown field `nmae`, did you mean `name`?"));
    }

    #[test]
    fn suggestions_are_made_only_when_reasonably_close() {
        assert_eq!(nearest_known_name("abc", BULK_ITEM_FIELDS), None);
        assert_eq!(nearest_known_name("id", EDIT_ITEM_FIELDS), None);
        assert_eq!(
            nearest_known_name("instruction", BULK_ITEM_FIELDS).as_deref(),
            Some("instructions")
        );
        assert_eq!(
            nearest_known_name("asset-ids", BULK_ITEM_FIELDS).as_deref(),
            Some("asset_ids")
        );
        assert_eq!(
            nearest_known_name("templte", BULK_TOP_FIELDS).as_deref(),
            Some("template_id")
        );
    }

    #[test]
    fn free_form_contents_are_not_checked() {
        let mut document =
            bulk(json!([{"input_data": {"tent_nmae": 1, "anything": {"deep": [null]}}}]));
        document["metadata"] = json!({"promt": true});
        assert_eq!(only_rejection(document), None);
    }

    #[test]
    fn a_bulk_item_needs_an_input_data_object() {
        let manifest = validate(bulk(
            json!([{"client_item_id": "a"}, {"input_data": []}, {"input_data": {}}]),
        ))
        .expect("valid");
        assert_eq!(
            manifest.items[0].rejection.as_deref(),
            Some("item 0 (client_item_id `a`): input_data is missing; every bulk item needs an input_data object")
        );
        assert_eq!(
            manifest.items[1].rejection.as_deref(),
            Some("item 1 (client_item_id `#1`): input_data must be an object, found an array")
        );
        assert_eq!(manifest.items[2].rejection, None);
        assert_eq!(manifest.rejected_count(), 2);
    }

    #[test]
    fn bulk_item_fields_must_have_their_types() {
        for (field, value) in [
            ("tent_name", json!(1)),
            ("instructions", json!([])),
            ("include_brand", json!("yes")),
            ("custom_page_alias", json!(true)),
        ] {
            let mut item = json!({"input_data": {}});
            item[field] = value;
            let message = only_rejection(bulk(json!([item]))).expect("rejected");
            assert!(message.contains(&format!("{field} must be")), "{message}");
        }
        let item = json!({"input_data": {}, "tent_name": "n", "instructions": "i", "include_brand": false});
        assert_eq!(only_rejection(bulk(json!([item]))), None);
    }

    #[test]
    fn a_bulk_alias_needs_top_level_auto_publish() {
        let item = json!({"input_data": {}, "custom_page_alias": "jane"});
        let message = only_rejection(bulk(json!([item.clone()]))).expect("rejected");
        assert_eq!(
            message,
            "item 0 (client_item_id `#0`): custom_page_alias requires top-level auto_publish: true"
        );
        let mut document = bulk(json!([item.clone()]));
        document["auto_publish"] = json!(false);
        assert!(only_rejection(document).is_some());
        let mut document = bulk(json!([item]));
        document["auto_publish"] = json!(true);
        assert_eq!(only_rejection(document), None);
    }

    #[test]
    fn an_alias_breaking_a_rule_rejects_its_item() {
        let mut document = bulk(
            json!([{"input_data": {}, "custom_page_alias": "Jane"}, {"input_data": {}, "custom_page_alias": "/"}]),
        );
        document["auto_publish"] = json!(true);
        let manifest = validate(document).expect("valid");
        let message = manifest.items[0].rejection.as_deref().expect("rejected");
        assert!(
            message.contains("custom_page_alias `Jane` is invalid: the alias contains 'J'"),
            "{message}"
        );
        assert_eq!(manifest.items[1].rejection, None);
    }

    #[test]
    fn asset_ids_are_at_most_five_strings() {
        let six = json!({"input_data": {}, "asset_ids": ["a", "b", "c", "d", "e", "f"]});
        assert!(only_rejection(bulk(json!([six])))
            .expect("rejected")
            .contains("asset_ids has 6 entries; at most 5"));
        let five = json!({"input_data": {}, "asset_ids": ["a", "b", "c", "d", "e"]});
        assert_eq!(only_rejection(bulk(json!([five]))), None);
        let not_array = json!({"input_data": {}, "asset_ids": "a"});
        assert!(only_rejection(bulk(json!([not_array])))
            .expect("rejected")
            .contains("asset_ids must be an array of strings"));
        let not_strings = json!({"input_data": {}, "asset_ids": ["a", 2]});
        assert!(only_rejection(bulk(json!([not_strings])))
            .expect("rejected")
            .contains("asset_ids[1] must be a string"));
        let edit = json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a", "asset_ids": ["1", "2", "3", "4", "5", "6"]}]});
        assert!(only_rejection(edit)
            .expect("rejected")
            .contains("at most 5"));
    }

    #[test]
    fn a_create_item_needs_name_and_prompt_after_defaults() {
        let document = json!({
            "kind": "create",
            "defaults": {"prompt": "Create a landing page", "include_brand": true},
            "items": [
                {"name": "A"},
                {"prompt": "p"},
                {"name": " ", "client_item_id": "blank"},
                {"name": "B", "prompt": "own prompt"}
            ]
        });
        let manifest = validate(document).expect("valid");
        assert_eq!(manifest.items[0].rejection, None);
        assert_eq!(
            manifest.items[1].rejection.as_deref(),
            Some("item 1 (client_item_id `#1`): name is missing")
        );
        assert_eq!(
            manifest.items[2].rejection.as_deref(),
            Some("item 2 (client_item_id `blank`): name is empty")
        );
        assert_eq!(manifest.items[3].rejection, None);
        assert!(manifest.top.contains_key("defaults"));
        let no_defaults = json!({"kind": "create", "items": [{}]});
        assert_eq!(
            only_rejection(no_defaults).as_deref(),
            Some("item 0 (client_item_id `#0`): name is missing; prompt is missing")
        );
    }

    #[test]
    fn create_item_fields_must_have_their_types() {
        for (field, value) in [
            ("user_id", json!(1)),
            ("include_brand", json!(1)),
            ("auto_publish", json!("true")),
            ("name", json!(1)),
        ] {
            let mut item = json!({"name": "n", "prompt": "p"});
            item[field] = value;
            let message =
                only_rejection(json!({"kind": "create", "items": [item]})).expect("rejected");
            assert!(message.contains(&format!("{field} must be")), "{message}");
        }
        let item = json!({"name": "n", "prompt": "p", "user_id": "u", "include_brand": true, "auto_publish": false});
        assert_eq!(
            only_rejection(json!({"kind": "create", "items": [item]})),
            None
        );
    }

    #[test]
    fn a_create_alias_needs_auto_publish_from_the_item_or_defaults() {
        let refused = json!({"kind": "create", "items": [{"name": "n", "prompt": "p", "custom_page_alias": "spring"}]});
        assert!(only_rejection(refused)
            .expect("rejected")
            .contains("custom_page_alias requires"));
        let on_item = json!({"kind": "create", "items": [{"name": "n", "prompt": "p", "custom_page_alias": "spring", "auto_publish": true}]});
        assert_eq!(only_rejection(on_item), None);
        let in_defaults = json!({"kind": "create", "defaults": {"auto_publish": true}, "items": [{"name": "n", "prompt": "p", "custom_page_alias": "spring"}]});
        assert_eq!(only_rejection(in_defaults), None);
        let overridden = json!({"kind": "create", "defaults": {"auto_publish": true}, "items": [{"name": "n", "prompt": "p", "custom_page_alias": "spring", "auto_publish": false}]});
        assert!(only_rejection(overridden).is_some());
    }

    #[test]
    fn asset_ids_are_refused_on_create_items() {
        let item =
            json!({"kind": "create", "items": [{"name": "n", "prompt": "p", "asset_ids": ["a"]}]});
        assert!(only_rejection(item)
            .expect("rejected")
            .contains("asset_ids is not allowed on create items"));
        let in_defaults = json!({"kind": "create", "defaults": {"asset_ids": []}, "items": [{"name": "n", "prompt": "p"}]});
        assert!(matches!(
            validate(in_defaults),
            Err(ManifestRejection::InvalidDefaults {
                field: "asset_ids",
                ..
            })
        ));
    }

    #[test]
    fn create_defaults_are_checked_as_a_whole() {
        let with_id = json!({"kind": "create", "defaults": {"client_item_id": "x"}, "items": [{"name": "n", "prompt": "p"}]});
        assert!(matches!(
            validate(with_id),
            Err(ManifestRejection::InvalidDefaults {
                field: "client_item_id",
                ..
            })
        ));
        let bad_type = json!({"kind": "create", "defaults": {"include_brand": "yes"}, "items": [{"name": "n", "prompt": "p"}]});
        assert_eq!(
            manifest_error(bad_type),
            "`defaults.include_brand`: include_brand must be true or false, found a string"
        );
        let bad_alias = json!({"kind": "create", "defaults": {"custom_page_alias": "api"}, "items": [{"name": "n", "prompt": "p"}]});
        assert!(manifest_error(bad_alias).contains("reserved word"));
    }

    #[test]
    fn an_edit_item_needs_a_prompt_and_exactly_one_target() {
        let uuid = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
        let document = json!({"kind": "edit", "items": [
            {"tent_id": uuid, "prompt": "Make it blue"},
            {"target_client_item_id": "acme-row-001", "prompt": "p", "client_item_id": "e1"},
            {"tent_id": uuid},
            {"prompt": "p"},
            {"prompt": "p", "tent_id": uuid, "target_client_item_id": "a"},
            {"prompt": "p", "tent_id": "not-a-uuid"},
            {"prompt": "p", "tent_id": "f11ef3cf86644fe5a261c5b4d647b7d1"},
            {"prompt": "p", "target_client_item_id": ""},
            {"prompt": "p", "tent_id": 7}
        ]});
        let manifest = validate(document).expect("valid");
        let rejections: Vec<Option<&str>> = manifest
            .items
            .iter()
            .map(|item| item.rejection.as_deref())
            .collect();
        assert_eq!(rejections[0], None);
        assert_eq!(rejections[1], None);
        assert_eq!(
            rejections[2],
            Some("item 2 (client_item_id `#2`): prompt is missing")
        );
        assert_eq!(
            rejections[3],
            Some(
                "item 3 (client_item_id `#3`): either tent_id or target_client_item_id is required"
            )
        );
        assert_eq!(rejections[4], Some("item 4 (client_item_id `#4`): give either tent_id or target_client_item_id, not both"));
        assert_eq!(
            rejections[5],
            Some("item 5 (client_item_id `#5`): tent_id `not-a-uuid` is not a UUID")
        );
        assert!(rejections[6].is_some());
        assert_eq!(
            rejections[7],
            Some("item 7 (client_item_id `#7`): target_client_item_id is empty")
        );
        assert_eq!(
            rejections[8],
            Some("item 8 (client_item_id `#8`): tent_id must be a string, found a number")
        );
    }

    #[test]
    fn an_edit_alias_needs_the_items_auto_publish() {
        let refused = json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a", "custom_page_alias": "x"}]});
        assert!(only_rejection(refused)
            .expect("rejected")
            .contains("custom_page_alias requires the item's auto_publish: true"));
        let accepted = json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a", "custom_page_alias": "x", "auto_publish": true}]});
        assert_eq!(only_rejection(accepted), None);
        let bad_type = json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a", "include_brand": 1}]});
        assert!(only_rejection(bad_type)
            .expect("rejected")
            .contains("include_brand must be true or false"));
    }

    #[test]
    fn several_problems_of_one_item_are_all_named() {
        let item =
            json!({"client_item_id": "row-9", "custom_page_alias": "Admin", "asset_ids": [1]});
        let message = only_rejection(bulk(json!([item]))).expect("rejected");
        assert!(
            message.starts_with("item 0 (client_item_id `row-9`): input_data is missing"),
            "{message}"
        );
        assert!(
            message.contains("custom_page_alias `Admin` is invalid"),
            "{message}"
        );
        assert!(
            message.contains("requires top-level auto_publish: true"),
            "{message}"
        );
        assert!(
            message.contains("asset_ids[0] must be a string"),
            "{message}"
        );
    }
}
