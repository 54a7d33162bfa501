//! What a rejected manifest is told: the rule it broke, the input it gave (shortened),
//! its type, and the known name nearest to an unknown one.

use serde_json::Value;

use crate::manifest::{MAX_ITEMS, MAX_MANIFEST_NAME_CHARS};

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
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
