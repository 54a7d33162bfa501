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

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::manifest::{
    item_key, ClientItemId, ItemFields, ManifestKind, Priority, ValidatedItem, ValidatedManifest,
    MAX_ASSET_IDS, MAX_ITEMS, MAX_MANIFEST_BYTES,
};

pub use crate::manifest::MAX_START_INDEX;

/// Words that an alias may not be. The API pages list these "such as", so the list may
/// grow; it lives in this one place.
pub const RESERVED_ALIAS_WORDS: &[&str] = &["api", "admin", "submit", "assets"];

/// The longest alias the API accepts, in characters.
pub const MAX_ALIAS_CHARS: usize = 100;

/// The alias that publishes at the domain root.
pub const ROOT_ALIAS: &str = "/";

/// The longest manifest NAME (the file name without `.json`), in characters.
pub const MAX_MANIFEST_NAME_CHARS: usize = 200;

/// The suffix every manifest file name carries.
pub const MANIFEST_SUFFIX: &str = ".json";

/// The top-level fields of a bulk manifest (the body of `POST /v1/tents/bulk` plus `kind`).
const BULK_TOP_FIELDS: &[&str] = &[
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
const BULK_ITEM_FIELDS: &[&str] = &[
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
const EDIT_ITEM_FIELDS: &[&str] = &[
    "tent_id",
    "target_client_item_id",
    "client_item_id",
    "prompt",
    "include_brand",
    "auto_publish",
    "custom_page_alias",
    "asset_ids",
];

/// Why a whole manifest (or its file name) was rejected. The Display text names the
/// rule; the caller prefixes the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestRejection {
    #[error("the file name does not end in `.json`")]
    NameWithoutJsonSuffix,
    #[error("the manifest name is empty; a manifest file is NAME.json with 1 to {MAX_MANIFEST_NAME_CHARS} characters in NAME")]
    NameEmpty,
    #[error("the manifest name has {length} characters; NAME may have at most {MAX_MANIFEST_NAME_CHARS}")]
    NameTooLong { length: usize },
    #[error("the manifest name contains {character:?}; NAME may contain only ASCII letters, digits, `.`, `-` and `_`")]
    NameInvalidCharacter { character: char },
    #[error("the manifest is {size} bytes; at most {limit} bytes (64 MiB) are accepted")]
    TooLarge { size: u64, limit: u64 },
    #[error("the manifest is not UTF-8: invalid byte sequence at byte offset {valid_up_to}")]
    NotUtf8 { valid_up_to: usize },
    #[error("the manifest is not valid JSON: {message}")]
    NotJson { message: String },
    #[error("the manifest must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("unknown kind `{}`{}; kind must be `bulk`, `create` or `edit`", shorten(.kind), did_you_mean(.suggestion))]
    UnknownKind {
        kind: String,
        suggestion: Option<String>,
    },
    #[error("unknown top-level field `{}`{}", shorten(.field), did_you_mean(.suggestion))]
    UnknownTopLevelField {
        field: String,
        suggestion: Option<String>,
    },
    #[error("top-level field `{field}` must be {expected}, found {found}")]
    WrongTopLevelType {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("missing `template_id`: a bulk manifest must name its template")]
    MissingTemplateId,
    #[error("`template_id` is empty: a bulk manifest must name its template")]
    EmptyTemplateId,
    #[error("`defaults`: unknown field `{}`{}", shorten(.field), did_you_mean(.suggestion))]
    UnknownDefaultsField {
        field: String,
        suggestion: Option<String>,
    },
    #[error("`defaults.{field}`: {reason}")]
    InvalidDefaults { field: &'static str, reason: String },
    #[error("missing `items`: a manifest needs between 1 and {MAX_ITEMS} items")]
    MissingItems,
    #[error("`items` is empty: a manifest needs between 1 and {MAX_ITEMS} items")]
    NoItems,
    #[error("the manifest has {count} items; at most {limit} are accepted")]
    TooManyItems { count: usize, limit: usize },
    #[error("item {index} must be a JSON object, found {found}")]
    ItemNotAnObject { index: usize, found: &'static str },
    #[error("item {index}: `client_item_id` must be a string, found {found}")]
    ClientItemIdNotString { index: usize, found: &'static str },
    #[error("item {index}: client_item_id `{}` begins with `#`, which is reserved for the ids the daemon gives items without one (`#INDEX`)", shorten(.id))]
    ClientItemIdReserved { index: usize, id: String },
    #[error("duplicate client_item_id `{}` at items {first_index} and {second_index}; client_item_id must be unique within a manifest", shorten(.id))]
    DuplicateClientItemId {
        id: String,
        first_index: usize,
        second_index: usize,
    },
    #[error("item {index}: unknown field `{}`{}", shorten(.field), did_you_mean(.suggestion))]
    UnknownItemField {
        index: usize,
        field: String,
        suggestion: Option<String>,
    },
}

/// Which documented alias rule an alias breaks (create-tent.md, "Alias rules").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasRuleError {
    #[error("the alias is empty (use `/` to publish at the domain root)")]
    Empty,
    #[error("the alias has {length} characters; at most {MAX_ALIAS_CHARS} are allowed")]
    TooLong { length: usize },
    #[error("the alias contains {character:?} at position {position}; only lowercase letters, digits, `-`, `_` and `.` are allowed")]
    InvalidCharacter { character: char, position: usize },
    #[error(
        "the alias starts with {character:?}; it must start with a lowercase letter or a digit"
    )]
    BadFirstCharacter { character: char },
    #[error("the alias is a UUID, which is not allowed")]
    IsUuid,
    #[error("`{word}` is a reserved word and cannot be used as an alias")]
    ReservedWord { word: String },
}

/// The longest a name or id from the input is shown in a message, in characters.
const MAX_SHOWN_CHARS: usize = 80;

/// A name or id from the input, as a message shows it: whole when short, else its first
/// [`MAX_SHOWN_CHARS`] characters and how long it was (a message never copies a
/// megabyte of hostile input into a result file or the log).
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} characters)", &text[..end], text.chars().count()),
    }
}

/// Renders an optional suggestion as the tail of an error message.
fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(", did you mean `{name}`?"),
        None => String::new(),
    }
}

/// The limits that a manifest is held to; tests use smaller ones.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_bytes: u64,
    max_items: usize,
}

/// The limits of SPEC section 4.
const SPEC_LIMITS: Limits = Limits {
    max_bytes: MAX_MANIFEST_BYTES,
    max_items: MAX_ITEMS,
};

/// Validates a manifest's bytes as SPEC section 4 says: a manifest-level rule broken
/// rejects the whole manifest; an item-level rule broken rejects only that item.
pub fn validate_manifest(bytes: &[u8]) -> Result<ValidatedManifest, ManifestRejection> {
    validate_manifest_with_limits(bytes, SPEC_LIMITS)
}

/// Checks a manifest file name (`daily.json`) and returns its NAME (`daily`).
pub fn check_manifest_name(file_name: &str) -> Result<String, ManifestRejection> {
    let name = file_name
        .strip_suffix(MANIFEST_SUFFIX)
        .ok_or(ManifestRejection::NameWithoutJsonSuffix)?;
    if name.is_empty() {
        return Err(ManifestRejection::NameEmpty);
    }
    let length = name.chars().count();
    if length > MAX_MANIFEST_NAME_CHARS {
        return Err(ManifestRejection::NameTooLong { length });
    }
    if let Some(character) = name
        .chars()
        .find(|character| !is_manifest_name_char(*character))
    {
        return Err(ManifestRejection::NameInvalidCharacter { character });
    }
    Ok(name.to_owned())
}

/// Makes a best-effort NAME for a file whose name breaks the naming rule, so that its
/// rejected result file can still be named: the `.json` suffix is dropped when present,
/// every character outside the rule becomes `_`, the result is cut to 200 characters,
/// and it is never empty.
pub fn sanitize_manifest_name(file_name: &str) -> String {
    let stem = file_name.strip_suffix(MANIFEST_SUFFIX).unwrap_or(file_name);
    let mut name: String = stem
        .chars()
        .map(|character| {
            if is_manifest_name_char(character) {
                character
            } else {
                '_'
            }
        })
        .take(MAX_MANIFEST_NAME_CHARS)
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// Whether a character may appear in a manifest NAME.
fn is_manifest_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_')
}

/// Checks a `custom_page_alias` against the documented alias rules.
pub fn validate_alias(alias: &str) -> Result<(), AliasRuleError> {
    if alias == ROOT_ALIAS {
        return Ok(());
    }
    let Some(first) = alias.chars().next() else {
        return Err(AliasRuleError::Empty);
    };
    let length = alias.chars().count();
    if length > MAX_ALIAS_CHARS {
        return Err(AliasRuleError::TooLong { length });
    }
    let allowed = |character: char| {
        character.is_ascii_lowercase()
            || character.is_ascii_digit()
            || matches!(character, '-' | '_' | '.')
    };
    if let Some((position, character)) = alias
        .chars()
        .enumerate()
        .find(|(_, character)| !allowed(*character))
    {
        return Err(AliasRuleError::InvalidCharacter {
            character,
            position,
        });
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(AliasRuleError::BadFirstCharacter { character: first });
    }
    if uuid::Uuid::try_parse(alias).is_ok() {
        return Err(AliasRuleError::IsUuid);
    }
    if let Some(word) = RESERVED_ALIAS_WORDS.iter().find(|word| **word == alias) {
        return Err(AliasRuleError::ReservedWord {
            word: (*word).to_owned(),
        });
    }
    Ok(())
}

/// Finds the known field name nearest to an unknown one, when one is reasonably close:
/// the same name up to case, `_` and `-`; a known name that the unknown one begins
/// (at least four characters, as `input` for `input_data`); or a normalized
/// Damerau-Levenshtein similarity of at least 0.6.
pub fn nearest_known_name(unknown: &str, known: &[&str]) -> Option<String> {
    let fold = |name: &str| -> String {
        name.chars()
            .filter(|character| !matches!(character, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded_unknown = fold(unknown);
    if let Some(name) = known.iter().find(|name| fold(name) == folded_unknown) {
        return Some((*name).to_owned());
    }
    if folded_unknown.chars().count() >= 4 {
        if let Some(name) = known
            .iter()
            .find(|name| fold(name).starts_with(&folded_unknown))
        {
            return Some((*name).to_owned());
        }
    }
    let mut best: Option<(f64, &str)> = None;
    for name in known {
        let similarity = strsim::normalized_damerau_levenshtein(unknown, name);
        if similarity >= 0.6 && best.is_none_or(|(best_similarity, _)| similarity > best_similarity)
        {
            best = Some((similarity, name));
        }
    }
    best.map(|(_, name)| name.to_owned())
}

/// Names a JSON value's type for messages ("found a number").
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

/// The top-level fields of a manifest (each parsed), and its items still as raw JSON
/// text borrowed from the file: items are parsed one at a time, so a manifest of 100,000
/// items is never held as one tree of values.
struct RawDocument<'a> {
    top: Map<String, Value>,
    /// `Err` holds what `items` was when it was not an array.
    items: Option<Result<Vec<&'a RawValue>, Value>>,
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
fn parse_object(bytes: &[u8], limits: Limits) -> Result<RawDocument<'_>, ManifestRejection> {
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
fn take_kind(top: &mut Map<String, Value>) -> Result<ManifestKind, ManifestRejection> {
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
fn check_top_level_fields(
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
fn take_items(
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

/// One raw item, parsed. The file parsed as a whole, but its items were only skipped
/// over as raw text, which has no depth limit: an item nested deeper than serde_json's
/// recursion limit (128) fails here, and rejects the manifest as not JSON, saying which
/// item.
fn parse_item_checked(index: u32, raw: &RawValue) -> Result<Value, ManifestRejection> {
    serde_json::from_str(raw.get()).map_err(|e| ManifestRejection::NotJson {
        message: format!("item {index}: {e}"),
    })
}

/// Where a manifest-level rule on items stands among the rules checked for one item: an
/// item that is not an object or has a bad `client_item_id` is refused before its id is
/// compared with the others, an unknown field after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RuleStage {
    BeforeUniqueIds,
    AfterUniqueIds,
}

/// The first manifest-level rule a run of items breaks: by index, then by stage.
type FirstBroken = Option<(u32, RuleStage, ManifestRejection)>;

/// The manifest-level rules on one parsed item other than unique ids: it is an object,
/// its `client_item_id` (if given) is a string not beginning with `#`, and it has no
/// unknown field.
fn check_item_as_part(
    index: u32,
    item: &Value,
    item_fields: &[&str],
) -> Option<(RuleStage, ManifestRejection)> {
    let at = index as usize;
    let Value::Object(fields) = item else {
        let found = json_type(item);
        return Some((
            RuleStage::BeforeUniqueIds,
            ManifestRejection::ItemNotAnObject { index: at, found },
        ));
    };
    match fields.get("client_item_id") {
        None => {}
        Some(Value::String(id)) if id.starts_with('#') => {
            let id = id.to_owned();
            let rule = ManifestRejection::ClientItemIdReserved { index: at, id };
            return Some((RuleStage::BeforeUniqueIds, rule));
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            let found = json_type(other);
            let rule = ManifestRejection::ClientItemIdNotString { index: at, found };
            return Some((RuleStage::BeforeUniqueIds, rule));
        }
    }
    let field = fields
        .keys()
        .find(|field| !item_fields.contains(&field.as_str()))?;
    let rule = ManifestRejection::UnknownItemField {
        index: at,
        suggestion: nearest_known_name(field, item_fields),
        field: field.clone(),
    };
    Some((RuleStage::AfterUniqueIds, rule))
}

/// Items of a manifest at least this large are judged on every core (up to 4).
const PARALLEL_FROM_ITEMS: usize = 2_000;

#[cfg(test)]
thread_local! {
    /// Tests that measure this thread's own allocations judge on it alone.
    static ON_ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test support: runs `f` with every judgement on the calling thread.
#[cfg(test)]
pub(crate) fn judging_on_one_thread<T>(f: impl FnOnce() -> T) -> T {
    ON_ONE_THREAD.with(|one| one.set(true));
    let value = f();
    ON_ONE_THREAD.with(|one| one.set(false));
    value
}

/// Every item, each parsed once: the manifest-level rules on items (item by item in
/// manifest order, the first broken rule of the first item that breaks one rejects the
/// manifest, and nothing is judged item by item then), and each item judged on its own
/// (accepted, or rejected locally with every problem named). A large manifest's items are
/// judged in contiguous runs on several threads; the result is the same as one pass.
fn judge_items(
    items: Vec<&RawValue>,
    kind: ManifestKind,
    top: &Map<String, Value>,
    item_fields: &[&str],
) -> Result<Vec<ValidatedItem>, ManifestRejection> {
    // `take_items` allowed at most `limits.max_items` (100,000 in the SPEC), far below
    // u32::MAX; a limit raised past it must refuse rather than number items wrongly.
    debug_assert!(
        u32::try_from(items.len()).is_ok(),
        "{} items cannot be numbered with u32",
        items.len()
    );
    if u32::try_from(items.len()).is_err() {
        tracing::error!(
            items = items.len(),
            "a manifest passed the item limit with more items than u32 can number; refused"
        );
        return Err(ManifestRejection::TooManyItems {
            count: items.len(),
            limit: u32::MAX as usize,
        });
    }
    let runs = judge_in_runs(&items, kind, top, item_fields);
    let first_broken = runs
        .iter()
        .filter_map(|(_, broken)| broken.as_ref())
        .map(|(index, stage, _)| (*index, *stage))
        .min();
    // The first run's items are the start of the whole (grown in place, not copied).
    let mut judged = Vec::new();
    let mut broken_rule = None;
    for (run, broken) in runs {
        if judged.is_empty() {
            judged = run;
        } else {
            judged.extend(run);
        }
        // Nothing after the first broken rule counts (later runs went on without it).
        if first_broken.is_some()
            && broken.as_ref().map(|(index, stage, _)| (*index, *stage)) == first_broken
        {
            broken_rule = broken.map(|(_, _, rule)| rule);
            break;
        }
    }
    check_unique_ids(&judged, first_broken, broken_rule)?;
    Ok(judged)
}

/// The items judged in contiguous runs, one per core (up to 4) for a large manifest, in
/// manifest order; each run stops at the first manifest-level rule it finds broken.
fn judge_in_runs(
    items: &[&RawValue],
    kind: ManifestKind,
    top: &Map<String, Value>,
    item_fields: &[&str],
) -> Vec<(Vec<ValidatedItem>, FirstBroken)> {
    #[cfg(test)]
    let one_thread = ON_ONE_THREAD.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let one_thread = false;
    let threads = if one_thread || items.len() < PARALLEL_FROM_ITEMS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    };
    let run = items.len().div_ceil(threads).max(1);
    let judge = |first: usize, raws: &[&RawValue]| judge_run(first, raws, kind, top, item_fields);
    if threads == 1 {
        return vec![judge(0, items)];
    }
    // The first run on this thread, the others each on its own.
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(run).enumerate();
        let first = chunks.next();
        let handles: Vec<_> = chunks
            .map(|(n, raws)| scope.spawn(move || judge(n * run, raws)))
            .collect();
        let mut out = Vec::with_capacity(threads);
        if let Some((_, raws)) = first {
            out.push(judge(0, raws));
        }
        for handle in handles {
            match handle.join() {
                Ok(judged) => out.push(judged),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// One run of items from index `first`, each parsed once and judged, up to the first
/// manifest-level rule broken.
fn judge_run(
    first: usize,
    raws: &[&RawValue],
    kind: ManifestKind,
    top: &Map<String, Value>,
    item_fields: &[&str],
) -> (Vec<ValidatedItem>, FirstBroken) {
    let mut judged = Vec::with_capacity(raws.len());
    for (offset, raw) in raws.iter().enumerate() {
        // Below u32::MAX: `judge_items` checked the count.
        let index = (first + offset) as u32;
        let item = match parse_item_checked(index, raw) {
            Ok(item) => item,
            Err(e) => return (judged, Some((index, RuleStage::BeforeUniqueIds, e))),
        };
        let broken = check_item_as_part(index, &item, item_fields);
        if let Some((RuleStage::BeforeUniqueIds, rule)) = broken {
            return (judged, Some((index, RuleStage::BeforeUniqueIds, rule)));
        }
        // An item with an unknown field is still compared by id: a duplicate id comes
        // first among its broken rules.
        judged.push(judge_item(index, raw, item, kind, top));
        if let Some((stage, rule)) = broken {
            return (judged, Some((index, stage, rule)));
        }
    }
    (judged, None)
}

/// Unique ids, in manifest order up to the first other broken rule (which wins when it
/// comes first): a given `client_item_id` may appear once per manifest.
fn check_unique_ids(
    judged: &[ValidatedItem],
    first_broken: Option<(u32, RuleStage)>,
    broken_rule: Option<ManifestRejection>,
) -> Result<(), ManifestRejection> {
    let mut first_index_of_id: HashMap<&str, u32> = HashMap::with_capacity(judged.len());
    for item in judged {
        if first_broken == Some((item.index, RuleStage::BeforeUniqueIds)) {
            break;
        }
        if let Some(id) = &item.client_item_id {
            if let Some(first_index) = first_index_of_id.insert(id.as_str(), item.index) {
                return Err(ManifestRejection::DuplicateClientItemId {
                    id: id.to_string(),
                    first_index: first_index as usize,
                    second_index: item.index as usize,
                });
            }
        }
        if first_broken == Some((item.index, RuleStage::AfterUniqueIds)) {
            break;
        }
    }
    match broken_rule {
        Some(rule) => Err(rule),
        None => Ok(()),
    }
}

/// The item-level rules of one item, by kind; its `client_item_id` (if it gave one) and
/// its rejection message (naming it by its key, `#INDEX` without an id), if any.
fn judge_item(
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

/// The JSON type that a known optional item field must have.
#[derive(Clone, Copy, Debug)]
enum FieldType {
    String,
    Bool,
}

/// Adds a problem when `field` is present in `fields` with the wrong type; returns the
/// value when it is present with the right one.
fn check_optional_type<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        // duplicate late in the manifest before a non-object even later…
        assert_eq!(
            large(|i, item| match i {
                5_000 => item["client_item_id"] = json!("row-10"),
                5_500 => *item = json!(7),
                _ => {}
            })
            .map(|_| ()),
            Err(ManifestRejection::DuplicateClientItemId {
                id: "row-10".into(),
                first_index: 10,
                second_index: 5_000
            })
        );
        // …a non-object early in the first run before a duplicate in the last one…
        assert_eq!(
            large(|i, item| match i {
                100 => *item = json!(7),
                5_000 => item["client_item_id"] = json!("row-10"),
                _ => {}
            })
            .map(|_| ()),
            Err(ManifestRejection::ItemNotAnObject {
                index: 100,
                found: "a number"
            })
        );
        // …a non-object in the second half before a duplicate after it…
        assert_eq!(
            large(|i, item| match i {
                3_500 => *item = json!(7),
                5_000 => item["client_item_id"] = json!("row-10"),
                _ => {}
            })
            .map(|_| ()),
            Err(ManifestRejection::ItemNotAnObject {
                index: 3_500,
                found: "a number"
            })
        );
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
    fn alias_rules_each_accept_and_refuse() {
        assert_eq!(validate_alias("acme-onboarding_jane.v2"), Ok(()));
        assert_eq!(validate_alias("/"), Ok(()));
        assert_eq!(validate_alias(""), Err(AliasRuleError::Empty));

        assert_eq!(validate_alias(&"a".repeat(100)), Ok(()));
        assert_eq!(
            validate_alias(&"a".repeat(101)),
            Err(AliasRuleError::TooLong { length: 101 })
        );

        assert_eq!(validate_alias("abc"), Ok(()));
        assert_eq!(
            validate_alias("aBc"),
            Err(AliasRuleError::InvalidCharacter {
                character: 'B',
                position: 1
            })
        );
        assert_eq!(
            validate_alias("a/b"),
            Err(AliasRuleError::InvalidCharacter {
                character: '/',
                position: 1
            })
        );
        assert_eq!(
            validate_alias("a b"),
            Err(AliasRuleError::InvalidCharacter {
                character: ' ',
                position: 1
            })
        );
        assert_eq!(
            validate_alias("é"),
            Err(AliasRuleError::InvalidCharacter {
                character: 'é',
                position: 0
            })
        );

        assert_eq!(validate_alias("9lives"), Ok(()));
        assert_eq!(
            validate_alias("-x"),
            Err(AliasRuleError::BadFirstCharacter { character: '-' })
        );
        assert_eq!(
            validate_alias(".x"),
            Err(AliasRuleError::BadFirstCharacter { character: '.' })
        );
        assert_eq!(
            validate_alias("_x"),
            Err(AliasRuleError::BadFirstCharacter { character: '_' })
        );

        assert_eq!(
            validate_alias("f11ef3cf-8664-4fe5-a261-c5b4d647b7d"),
            Ok(())
        );
        assert_eq!(
            validate_alias("f11ef3cf-8664-4fe5-a261-c5b4d647b7d1"),
            Err(AliasRuleError::IsUuid)
        );
        assert_eq!(
            validate_alias("f11ef3cf86644fe5a261c5b4d647b7d1"),
            Err(AliasRuleError::IsUuid)
        );

        assert_eq!(validate_alias("api-docs"), Ok(()));
        for word in RESERVED_ALIAS_WORDS {
            assert_eq!(
                validate_alias(word),
                Err(AliasRuleError::ReservedWord {
                    word: (*word).to_owned()
                })
            );
        }
        assert_eq!(
            AliasRuleError::ReservedWord { word: "api".into() }.to_string(),
            "`api` is a reserved word and cannot be used as an alias"
        );
    }

    #[test]
    fn manifest_names_follow_the_rule() {
        assert_eq!(check_manifest_name("daily.json"), Ok("daily".to_owned()));
        assert_eq!(
            check_manifest_name("Daily_2026-03.v2.json"),
            Ok("Daily_2026-03.v2".to_owned())
        );
        assert_eq!(
            check_manifest_name("daily.txt"),
            Err(ManifestRejection::NameWithoutJsonSuffix)
        );
        assert_eq!(
            check_manifest_name("daily.JSON"),
            Err(ManifestRejection::NameWithoutJsonSuffix)
        );
        assert_eq!(
            check_manifest_name(".json"),
            Err(ManifestRejection::NameEmpty)
        );
        let longest = format!("{}.json", "a".repeat(200));
        assert!(check_manifest_name(&longest).is_ok());
        let too_long = format!("{}.json", "a".repeat(201));
        assert_eq!(
            check_manifest_name(&too_long),
            Err(ManifestRejection::NameTooLong { length: 201 })
        );
        assert_eq!(
            check_manifest_name("dai ly.json"),
            Err(ManifestRejection::NameInvalidCharacter { character: ' ' })
        );
        assert_eq!(
            check_manifest_name("daily~2.json"),
            Err(ManifestRejection::NameInvalidCharacter { character: '~' })
        );
        assert_eq!(
            check_manifest_name("é.json"),
            Err(ManifestRejection::NameInvalidCharacter { character: 'é' })
        );
    }

    #[test]
    fn sanitized_names_always_follow_the_rule() {
        assert_eq!(sanitize_manifest_name("daily.json"), "daily");
        assert_eq!(sanitize_manifest_name("dai ly~2.json"), "dai_ly_2");
        assert_eq!(sanitize_manifest_name("notes.txt"), "notes.txt");
        assert_eq!(sanitize_manifest_name(".json"), "_");
        assert_eq!(sanitize_manifest_name(""), "_");
        assert_eq!(sanitize_manifest_name("été.json"), "_t_");
        let long = sanitize_manifest_name(&format!("{}.json", "é".repeat(300)));
        assert_eq!(long.len(), 200);
        for file_name in ["dai ly~2.json", "été.json", ".json", "x/y.json"] {
            let name = sanitize_manifest_name(file_name);
            assert_eq!(check_manifest_name(&format!("{name}.json")), Ok(name));
        }
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
