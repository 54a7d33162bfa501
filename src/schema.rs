//! The JSON Schemas of a manifest, of a result file and of the JSON that `list`, `show`
//! and `status` print (`tented-bulkd schema manifest|result|list|show|status`, SPEC
//! section 10), generated with `schemars` from the types that parse
//! manifests ([`ManifestDocument`]) and write results ([`ResultDocument`]), so that they
//! cannot drift from the code.
//!
//! A manifest's shape depends on its `kind`. The parsing types hold the fields of every
//! kind, each marked with the kinds that know it (`x-kinds`), those that require it
//! (`x-required-for`, or `x-required-unless-defaulted` where create `defaults` may give
//! it), those that know it only to refuse it (`x-refused-for`) and whether it may stand
//! in create `defaults` (`x-not-in-defaults`). This module cuts one schema
//! per kind from those marks and joins them with `if`/`then` on `kind` (absent means
//! bulk); the marks do not appear in the printed schema. [`kind_fields`] gives the same
//! fields with their value shapes to `from-csv`, which types cells and `--set` values by
//! them. The tests check the fields of each kind against validation's field lists.
//!
//! A manifest field is never `null` (validation refuses it), so the manifest schema drops
//! the `null` that an `Option` stands for; a result writes `null` where a value is
//! missing, so the result schema keeps it.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::manifest::{ManifestDocument, ManifestKind};
use crate::pipeline::outbox::ResultDocument;

/// The meta-schema both schemas are written in.
pub const META_SCHEMA: &str = "https://json-schema.org/draft/2020-12/schema";

/// The JSON Schema of a manifest file (every kind).
pub fn manifest_schema() -> Value {
    let marked = MarkedFields::generate();
    let mut definitions = Map::new();
    let mut branches = Vec::new();
    for kind in ManifestKind::ALL {
        definitions.insert(kind.as_str().to_owned(), marked.kind_schema(kind));
        // `properties` holds only where `kind` is present: an absent kind selects bulk.
        let mut condition = json!({"properties": {"kind": {"const": kind.as_str()}}});
        if kind != ManifestKind::Bulk {
            condition["required"] = json!(["kind"]);
        }
        branches.push(json!({
            "if": condition,
            "then": {"$ref": format!("#/$defs/{}", kind.as_str())},
        }));
    }
    json!({
        "$schema": META_SCHEMA,
        "title": marked.title,
        "description": "A tented-bulkd manifest (SPEC section 4): drop it as NAME.json into the daemon's inbox. Its `kind` selects its shape: bulk (the default), create or edit.",
        "type": "object",
        "properties": {"kind": marked.kind_property()},
        "required": ["items"],
        "allOf": branches,
        "$defs": definitions,
    })
}

/// The JSON Schema of a result file, `outbox/NAME.result.json`.
pub fn result_schema() -> Value {
    root_schema::<ResultDocument>()
}

/// The JSON Schema of what `list --json` prints (`GET /manifests`). This and the two
/// below speak the result file's words (`manifest`, `bulk_job_id` or `tent_id`,
/// `status`, `counts` with `total`).
pub fn list_schema() -> Value {
    root_schema::<crate::history::ManifestList>()
}

/// The JSON Schema of what `show --json` prints (`GET /manifests/NAME`).
pub fn show_schema() -> Value {
    root_schema::<crate::history::ManifestDetail>()
}

/// The JSON Schema of what `status --json` prints (`GET /status`).
pub fn status_schema() -> Value {
    root_schema::<crate::history::StatusReport>()
}

/// The schema of `T` as written (nulls kept), its identifying keys first for a reader.
fn root_schema<T: schemars::JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let generated = generator.into_root_schema_for::<T>().to_value();
    let mut ordered = Map::new();
    if let Value::Object(fields) = generated {
        for key in ["$schema", "title", "description"] {
            if let Some(value) = fields.get(key) {
                ordered.insert(key.to_owned(), value.clone());
            }
        }
        for (key, value) in fields {
            ordered.entry(key).or_insert(value);
        }
    }
    Value::Object(ordered)
}

/// The shape of a manifest field's value, as the schema gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldShape {
    /// A string.
    Text,
    /// `true` or `false`.
    Boolean,
    /// An integer, with the schema's bounds.
    Integer {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    /// One of these strings.
    OneOf(Vec<String>),
    /// An array of strings.
    TextList,
    /// An object: with its known fields (create `defaults`), or free-form (`metadata`,
    /// `input_data`) when `None`.
    Object(Option<Vec<(String, FieldShape)>>),
}

/// The fields a kind of manifest knows, in the order the types declare them, with the
/// shapes of their values: top-level fields (without `kind` and `items`) and item fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindFields {
    pub top: Vec<(String, FieldShape)>,
    pub item: Vec<(String, FieldShape)>,
}

impl KindFields {
    /// The shape of an item field, if the kind knows it.
    pub fn item_field(&self, name: &str) -> Option<&FieldShape> {
        self.item
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, shape)| shape)
    }

    /// The shape of a top-level field, if the kind knows it.
    pub fn top_field(&self, name: &str) -> Option<&FieldShape> {
        self.top
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, shape)| shape)
    }
}

/// The fields of `kind` with their shapes, from the same generated schema.
pub fn kind_fields(kind: ManifestKind) -> KindFields {
    let marked = MarkedFields::generate();
    let shapes = |properties: &Map<String, Value>, kind: ManifestKind| {
        properties
            .iter()
            .filter(|(name, property)| {
                knows(property, kind) && !matches!(name.as_str(), "kind" | "items")
            })
            .map(|(name, property)| {
                let shape = match name.as_str() {
                    "defaults" => FieldShape::Object(Some(marked.defaults_shapes())),
                    _ => shape_of(property),
                };
                (name.clone(), shape)
            })
            .collect()
    };
    KindFields {
        top: shapes(&marked.top, kind),
        item: shapes(&marked.item, kind),
    }
}

/// The generated schema of [`ManifestDocument`], its marks still on: the top-level
/// properties and the properties of one item, for every kind at once.
struct MarkedFields {
    title: Value,
    top: Map<String, Value>,
    item: Map<String, Value>,
}

impl MarkedFields {
    fn generate() -> MarkedFields {
        let mut settings = SchemaSettings::draft2020_12();
        settings.inline_subschemas = true;
        let mut root = settings
            .into_generator()
            .into_root_schema_for::<ManifestDocument>()
            .to_value();
        without_null(&mut root);
        let mut top = object_at(&root, "/properties");
        let item = top
            .get("items")
            .map(|items| object_at(items, "/items/properties"))
            .unwrap_or_default();
        // The items' own schema (their array bounds) stays with `items`; its element
        // schema is cut per kind.
        if let Some(items) = top.get_mut("items").and_then(Value::as_object_mut) {
            items.remove("items");
        }
        MarkedFields {
            title: root.get("title").cloned().unwrap_or(Value::Null),
            top,
            item,
        }
    }

    /// The schema of the `kind` property: the names of every kind.
    fn kind_property(&self) -> Value {
        let mut kind = self.top.get("kind").cloned().unwrap_or_else(|| json!({}));
        unmark(&mut kind);
        kind
    }

    /// The schema of `kind` in the manifest of that kind: the kind's name, described.
    fn kind_constant(&self, kind: ManifestKind) -> Value {
        let described = self.kind_property()["oneOf"].as_array().and_then(|kinds| {
            kinds
                .iter()
                .find(|choice| choice["const"] == kind.as_str())
                .cloned()
        });
        described.unwrap_or_else(|| json!({"const": kind.as_str()}))
    }

    /// The shapes of the fields that create `defaults` may hold.
    fn defaults_shapes(&self) -> Vec<(String, FieldShape)> {
        self.item
            .iter()
            .filter(|(_, property)| in_defaults(property))
            .map(|(name, property)| (name.clone(), shape_of(property)))
            .collect()
    }

    /// The schema of one kind of manifest: its own fields only, nothing else allowed.
    fn kind_schema(&self, kind: ManifestKind) -> Value {
        let (mut properties, mut required) = cut(&self.top, kind);
        properties.insert("kind".to_owned(), self.kind_constant(kind));
        if kind != ManifestKind::Bulk {
            required.insert(0, "kind".to_owned());
        }
        let (item_properties, item_required) = cut(&self.item, kind);
        let item = json!({
            "type": "object",
            "description": format!("One item of a {kind} manifest."),
            "properties": item_properties,
            "required": item_required,
            "additionalProperties": false,
        });
        if let Some(items) = properties.get_mut("items") {
            items["items"] = item;
        }
        if let Some(defaults) = properties.get_mut("defaults") {
            let fields: Map<String, Value> = cut(&self.item, kind)
                .0
                .into_iter()
                .filter(|(name, _)| self.item.get(name).is_some_and(in_defaults))
                .collect();
            defaults["properties"] = Value::Object(fields);
            defaults["required"] = json!([]);
            defaults["additionalProperties"] = json!(false);
        }
        required.push("items".to_owned());
        let mut schema = json!({
            "type": "object",
            "description": format!("A {kind} manifest."),
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        let defaulted = self.required_unless_defaulted(kind);
        if !defaulted.is_empty() {
            schema["allOf"] = Value::Array(defaulted);
        }
        schema
    }

    /// For each item field that `kind` requires of an item unless `defaults` gives it
    /// (`x-required-unless-defaulted`): without it in `defaults`, every item needs it.
    fn required_unless_defaulted(&self, kind: ManifestKind) -> Vec<Value> {
        self.item
            .iter()
            .filter(|(_, property)| marked_for(property, "x-required-unless-defaulted", kind))
            .map(|(name, _)| {
                json!({
                    "if": {"not": {"required": ["defaults"], "properties": {"defaults": {"required": [name]}}}},
                    "then": {"properties": {"items": {"items": {"required": [name]}}}},
                })
            })
            .collect()
    }
}

/// The properties that `kind` knows, their marks removed (a refused one becomes `false`),
/// and the names of those it requires.
fn cut(properties: &Map<String, Value>, kind: ManifestKind) -> (Map<String, Value>, Vec<String>) {
    let mut kept = Map::new();
    let mut required = Vec::new();
    for (name, property) in properties
        .iter()
        .filter(|(_, property)| knows(property, kind))
    {
        if marked_for(property, "x-required-for", kind) {
            required.push(name.clone());
        }
        let mut property = property.clone();
        if marked_for(&property, "x-refused-for", kind) {
            property = Value::Bool(false);
        }
        unmark(&mut property);
        kept.insert(name.clone(), property);
    }
    (kept, required)
}

/// Whether a property is known to `kind` (`x-kinds`; every kind when unmarked).
fn knows(property: &Value, kind: ManifestKind) -> bool {
    property.get("x-kinds").is_none() || marked_for(property, "x-kinds", kind)
}

/// Whether the mark `mark` of a property lists `kind`.
fn marked_for(property: &Value, mark: &str, kind: ManifestKind) -> bool {
    property
        .get(mark)
        .and_then(Value::as_array)
        .is_some_and(|kinds| kinds.iter().any(|name| name == kind.as_str()))
}

/// Whether an item property may stand in create `defaults`.
fn in_defaults(property: &Value) -> bool {
    knows(property, ManifestKind::Create)
        && property.get("x-not-in-defaults") != Some(&Value::Bool(true))
        && !marked_for(property, "x-refused-for", ManifestKind::Create)
}

/// Removes this module's marks from a schema and from every schema inside it.
fn unmark(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            object.retain(|key, _| !key.starts_with("x-"));
            object.values_mut().for_each(unmark);
        }
        Value::Array(values) => values.iter_mut().for_each(unmark),
        _ => {}
    }
}

/// Removes `null` from every type: `"type": ["string", "null"]` becomes `"string"`, and
/// `{"anyOf": [S, {"type": "null"}]}` becomes S (with the outer keys kept).
fn without_null(schema: &mut Value) {
    let Value::Object(object) = schema else {
        if let Value::Array(values) = schema {
            values.iter_mut().for_each(without_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|name| name != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".to_owned(), only);
        }
    }
    if let Some(Value::Array(enumerated)) = object.get_mut("enum") {
        enumerated.retain(|value| !value.is_null());
    }
    if let Some(Value::Array(choices)) = object.get("anyOf") {
        let not_null: Vec<&Value> = choices
            .iter()
            .filter(|choice| choice.get("type") != Some(&json!("null")))
            .collect();
        if let [only] = not_null.as_slice() {
            let only = (*only).clone();
            object.remove("anyOf");
            if let Value::Object(fields) = only {
                for (key, value) in fields {
                    object.entry(key).or_insert(value);
                }
            }
        }
    }
    object.values_mut().for_each(without_null);
}

/// The object at a JSON pointer of `value` (empty when there is none).
fn object_at(value: &Value, pointer: &str) -> Map<String, Value> {
    value
        .pointer(pointer)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The shape of a property's value, from its schema (null already removed).
fn shape_of(property: &Value) -> FieldShape {
    let strings = |key: &str| -> Option<Vec<String>> {
        let values = property.get(key)?.as_array()?;
        Some(
            values
                .iter()
                .filter_map(|value| value.as_str().map(str::to_owned))
                .collect(),
        )
    };
    if let Some(names) = strings("enum") {
        return FieldShape::OneOf(names);
    }
    if let Some(Value::Array(choices)) = property.get("oneOf") {
        let names = choices
            .iter()
            .filter_map(|choice| {
                choice
                    .get("const")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        return FieldShape::OneOf(names);
    }
    match property.get("type").and_then(Value::as_str) {
        Some("boolean") => FieldShape::Boolean,
        Some("integer") => FieldShape::Integer {
            minimum: property.get("minimum").and_then(Value::as_i64),
            maximum: property.get("maximum").and_then(Value::as_i64),
        },
        Some("array") => FieldShape::TextList,
        Some("object") => FieldShape::Object(None),
        _ => FieldShape::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::intake::validation::known_fields;
    use std::collections::BTreeSet;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

    fn names<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        names.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn each_kinds_schema_has_exactly_the_fields_validation_knows() {
        let schema = manifest_schema();
        for kind in ManifestKind::ALL {
            let (top, item) = known_fields(kind);
            let branch = &schema["$defs"][kind.as_str()];
            let top_in_schema = names(
                branch["properties"]
                    .as_object()
                    .expect("properties")
                    .keys()
                    .map(String::as_str),
            );
            assert_eq!(
                top_in_schema,
                names(top.iter().copied()),
                "{kind}: top-level fields"
            );
            let item_in_schema = names(
                branch["properties"]["items"]["items"]["properties"]
                    .as_object()
                    .expect("item properties")
                    .keys()
                    .map(String::as_str),
            );
            assert_eq!(
                item_in_schema,
                names(item.iter().copied()),
                "{kind}: item fields"
            );
            let fields = kind_fields(kind);
            let mut top_fields = names(fields.top.iter().map(|(name, _)| name.as_str()));
            top_fields.extend(["kind".to_owned(), "items".to_owned()]);
            assert_eq!(
                top_fields,
                names(top.iter().copied()),
                "{kind}: kind_fields top"
            );
            assert_eq!(
                names(fields.item.iter().map(|(name, _)| name.as_str())),
                names(item.iter().copied())
            );
        }
    }

    #[test]
    fn the_marks_make_the_rules_of_each_kind() {
        let schema = manifest_schema();
        let text = schema.to_string();
        assert!(
            !text.contains("\"x-") && !text.contains("\"null\""),
            "no mark and no null is left: {text}"
        );
        let bulk = &schema["$defs"]["bulk"];
        assert_eq!(bulk["required"], json!(["template_id", "items"]));
        assert_eq!(
            bulk["properties"]["items"]["items"]["required"],
            json!(["input_data"])
        );
        assert_eq!(
            bulk["properties"]["items"]["maxItems"],
            json!(crate::manifest::MAX_ITEMS)
        );
        let create = &schema["$defs"]["create"];
        assert_eq!(create["required"], json!(["kind", "items"]));
        assert_eq!(
            create["properties"]["items"]["items"]["properties"]["asset_ids"],
            json!(false)
        );
        let defaults = create["properties"]["defaults"]["properties"]
            .as_object()
            .expect("defaults");
        assert!(!defaults.contains_key("client_item_id") && !defaults.contains_key("asset_ids"));
        assert!(defaults.contains_key("prompt") && defaults.contains_key("auto_publish"));
        let edit = &schema["$defs"]["edit"];
        assert_eq!(
            edit["properties"]["items"]["items"]["required"],
            json!(["prompt"])
        );
        assert_eq!(
            edit["properties"]["priority"]["enum"],
            json!(["high", "normal", "low"])
        );
    }

    #[test]
    fn kind_fields_give_the_shapes_from_cli_use() {
        let bulk = kind_fields(ManifestKind::Bulk);
        assert_eq!(bulk.item_field("include_brand"), Some(&FieldShape::Boolean));
        assert_eq!(bulk.item_field("asset_ids"), Some(&FieldShape::TextList));
        assert_eq!(
            bulk.item_field("input_data"),
            Some(&FieldShape::Object(None))
        );
        assert_eq!(bulk.item_field("tent_name"), Some(&FieldShape::Text));
        assert_eq!(bulk.item_field("name"), None);
        assert_eq!(bulk.top_field("metadata"), Some(&FieldShape::Object(None)));
        assert_eq!(
            bulk.top_field("start_index"),
            Some(&FieldShape::Integer {
                minimum: Some(0),
                maximum: Some(crate::manifest::MAX_START_INDEX as i64)
            })
        );
        let priorities = FieldShape::OneOf(vec!["high".into(), "normal".into(), "low".into()]);
        assert_eq!(bulk.top_field("priority"), Some(&priorities));
        assert_eq!(bulk.top_field("$schema"), Some(&FieldShape::Text));
        let create = kind_fields(ManifestKind::Create);
        let Some(FieldShape::Object(Some(defaults))) = create.top_field("defaults") else {
            panic!("defaults has known fields: {create:?}");
        };
        assert!(defaults.contains(&("auto_publish".to_owned(), FieldShape::Boolean)));
        assert!(!defaults
            .iter()
            .any(|(name, _)| name == "client_item_id" || name == "asset_ids"));
        assert_eq!(create.top_field("template_id"), None);
    }

    /// Every example manifest, by file name, parsed.
    fn example_manifests() -> Vec<(String, Value)> {
        let mut examples = Vec::new();
        for entry in std::fs::read_dir(EXAMPLES).expect("examples/") {
            let path = entry.expect("entry").path();
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                let bytes = std::fs::read(&path).expect("read the example");
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                examples.push((name, serde_json::from_slice(&bytes).expect("JSON")));
            }
        }
        assert!(
            examples.len() >= 3,
            "the three example manifests: {examples:?}"
        );
        examples
    }

    /// The item indices under which the schema finds errors, and any error outside items.
    fn schema_errors(
        validator: &jsonschema::Validator,
        manifest: &Value,
    ) -> (BTreeSet<u32>, Vec<String>) {
        let mut items = BTreeSet::new();
        let mut elsewhere = Vec::new();
        for error in validator.iter_errors(manifest) {
            let path = error.instance_path().to_string();
            match path
                .strip_prefix("/items/")
                .and_then(|rest| rest.split('/').next()?.parse().ok())
            {
                Some(index) => {
                    items.insert(index);
                }
                None => elsewhere.push(format!("{path}: {error}")),
            }
        }
        (items, elsewhere)
    }

    #[test]
    fn every_example_manifest_names_its_schema_and_agrees_with_validation() {
        let validator = jsonschema::validator_for(&manifest_schema()).expect("a valid schema");
        for (name, manifest) in example_manifests() {
            assert_eq!(
                manifest["$schema"],
                json!("./schema/manifest.schema.json"),
                "{name}"
            );
            let bytes = serde_json::to_vec(&manifest).expect("bytes");
            let validated = crate::pipeline::intake::validation::validate_manifest(&bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // The whole document parses into the same typed fields as intake's path.
            let parsed: ManifestDocument =
                serde_json::from_value(manifest.clone()).expect("the parsing types read it");
            assert_eq!(parsed.item_count(), validated.items.len());
            let (top, _) = parsed.into_fields();
            assert_eq!(
                Some(top),
                crate::manifest::TopFields::from_validated(&validated.top).ok(),
                "{name}"
            );
            let rejected: BTreeSet<u32> = validated
                .items
                .iter()
                .filter(|i| !i.is_accepted())
                .map(|i| i.index)
                .collect();
            let (flagged, elsewhere) = schema_errors(&validator, &manifest);
            assert!(elsewhere.is_empty(), "{name}: {elsewhere:?}");
            // The examples break only rules that the schema can say (demo.json breaks some
            // on purpose): the schema flags exactly the items that validation rejects.
            assert_eq!(flagged, rejected, "{name}");
        }
    }

    #[test]
    fn the_manifest_schema_refuses_what_validation_refuses_as_a_whole() {
        let validator = jsonschema::validator_for(&manifest_schema()).expect("a valid schema");
        let good = json!({"template_id": "tpl_1", "priority": "high", "$schema": "x", "items": [{"input_data": {}}]});
        assert!(validator.is_valid(&good));
        for (bad, why) in [
            (json!({"items": [{"input_data": {}}]}), "no template_id"),
            (json!({"template_id": "t", "items": []}), "no items"),
            (
                json!({"template_id": "t", "tent_nmae": 1, "items": [{"input_data": {}}]}),
                "unknown field",
            ),
            (
                json!({"template_id": "t", "priority": "urgent", "items": [{"input_data": {}}]}),
                "priority",
            ),
            (
                json!({"template_id": null, "items": [{"input_data": {}}]}),
                "null",
            ),
            (
                json!({"kind": "crate", "items": [{"name": "n", "prompt": "p"}]}),
                "unknown kind",
            ),
            (
                json!({"kind": "create", "template_id": "t", "items": [{"name": "n", "prompt": "p"}]}),
                "template_id on create",
            ),
            (
                json!({"kind": "edit", "items": [{"prompt": "p", "name": "n"}]}),
                "name on edit",
            ),
            (
                json!({"template_id": "t", "items": [{"input_data": {}, "client_item_id": "#1"}]}),
                "reserved id",
            ),
        ] {
            assert!(!validator.is_valid(&bad), "{why}: {bad}");
            let bytes = serde_json::to_vec(&bad).expect("bytes");
            let verdict = crate::pipeline::intake::validation::validate_manifest(&bytes);
            assert!(
                verdict.is_err(),
                "validation refuses it as a whole too ({why})"
            );
        }
    }

    #[test]
    fn a_create_item_needs_name_and_prompt_unless_the_defaults_give_them() {
        let validator = jsonschema::validator_for(&manifest_schema()).expect("a valid schema");
        let both = json!({"kind": "create", "items": [{"name": "n", "prompt": "p"}]});
        assert!(validator.is_valid(&both));
        let defaulted =
            json!({"kind": "create", "defaults": {"prompt": "p"}, "items": [{"name": "n"}]});
        assert!(validator.is_valid(&defaulted));
        let missing =
            json!({"kind": "create", "defaults": {"name": "n"}, "items": [{"name": "n"}]});
        assert!(!validator.is_valid(&missing));
        let in_defaults = json!({"kind": "create", "defaults": {"client_item_id": "x"}, "items": [{"name": "n", "prompt": "p"}]});
        assert!(
            !validator.is_valid(&in_defaults),
            "client_item_id cannot have a default"
        );
    }

    #[test]
    fn the_committed_schemas_are_the_generated_ones() {
        for (file, schema) in [
            ("manifest.schema.json", manifest_schema()),
            ("result.schema.json", result_schema()),
            ("list.schema.json", list_schema()),
            ("show.schema.json", show_schema()),
            ("status.schema.json", status_schema()),
        ] {
            let path = format!("{EXAMPLES}/schema/{file}");
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            let generated = format!("{}\n", serde_json::to_string_pretty(&schema).expect("json"));
            assert!(
                committed == generated,
                "{path} is not the generated schema: run `cargo run -- schema {} > examples/schema/{file}`",
                file.trim_end_matches(".schema.json")
            );
        }
    }

    #[test]
    fn the_result_schema_requires_every_field_and_allows_null_where_the_result_writes_it() {
        let schema = result_schema();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let item = json!({"index": 0, "status": "completed", "tent_id": "t", "tent_name": "n",
            "bulk_job_id": null, "generation_id": null,
            "publication": {"status": "published", "published_url": "u", "requested_custom_page_alias": null,
                            "applied_custom_page_alias": null, "warnings": [{"code": "C", "message": null}], "error": null},
            "rejected_by": null, "error_code": null, "message": null});
        let result = json!({"manifest": "m.json", "kind": "bulk", "status": "completed", "error": null,
            "received_at": "2026-03-25T14:30:00Z", "finished_at": "2026-03-25T14:41:10Z",
            "counts": {"total": 1, "completed": 1, "failed": 0, "rejected": 0, "timed_out": 0, "canceled": 0, "unknown": 0},
            "bulk_jobs": [{"bulk_job_id": "J", "first_index": 0, "items": 1, "status": "completed"}],
            "items": {"a": item}});
        assert!(
            validator.is_valid(&result),
            "{:?}",
            validator
                .iter_errors(&result)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        let mut bad = result.clone();
        bad["items"]["a"]["status"] = json!("sending");
        assert!(!validator.is_valid(&bad), "a state that is not final");
        let mut bad = result.clone();
        bad["status"] = json!("done");
        assert!(!validator.is_valid(&bad));
        let mut bad = result.clone();
        bad["items"]["a"]
            .as_object_mut()
            .expect("item")
            .remove("message");
        assert!(!validator.is_valid(&bad), "every field is written");
        let mut bad = result;
        bad["items"]["a"]["rejected_by"] = json!("someone");
        assert!(!validator.is_valid(&bad));
    }
}
