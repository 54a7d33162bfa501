//! From a spreadsheet (SPEC section 10): a CSV export becomes a manifest, judged exactly as
//! `tented-bulkd validate` judges a file, and may be dropped into the daemon's inbox.
//!
//! [`manifest_from_csv`] is pure: CSV bytes and [`CsvOptions`] in, a validated manifest
//! or a [`SpreadsheetError`] naming the CSV line and the rule out. The fields a kind of
//! manifest knows, and the type each value takes, come from the manifest schema
//! ([`crate::schema::kind_fields`]), itself generated from the types that parse
//! manifests, so a cell is typed exactly as the daemon will read it.
//!
//! - bulk: each row is an item. Columns named like an item field (`client_item_id`,
//!   `tent_name`, `custom_page_alias`, `instructions`, `include_brand`, `asset_ids`) fill
//!   that field; every other column goes into `input_data` under its header, as text.
//! - create and edit: the columns are the kind's item fields; any other is an error.
//! - A cell that is empty (not even a space) leaves its field out. Booleans are `true`,
//!   `false`, `yes`, `no`, `1` or `0` (any case); `asset_ids` are split on `;` or `,`.
//! - `--id-column COLUMN` names the column that becomes `client_item_id` (and only that:
//!   it is not copied into `input_data`); every row needs one, and no two the same.
//!   Without it, a `client_item_id` column is an ordinary field (empty leaves `#INDEX`).
//! - Rows whose every cell is empty (as spreadsheets export trailing rows) are skipped
//!   and reported, never sent.
//! - `--set KEY=VALUE` sets a top-level field of the kind, typed as the schema says;
//!   `--set FIELD.KEY=VALUE` sets one key of an object field (`metadata.source=crm`,
//!   or for create `defaults.auto_publish=true`).
//!
//! [`drop_into_inbox`] writes the manifest into the inbox as a hidden file, fsyncs it,
//! renames it to `NAME.json` (refusing to replace a file waiting there) and fsyncs the
//! folder: the daemon never sees it half-written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::manifest::ManifestKind;
use crate::pipeline::intake::judge::{judge_file, FileContent, FileRejection, Verdict};
use crate::pipeline::intake::validation::{
    check_manifest_name, nearest_known_name, ManifestRejection,
};
use crate::schema::{kind_fields, FieldShape, KindFields};

/// The file name a manifest written to standard output or `--out` is judged under (a
/// dropped one is judged under its own `NAME.json`).
pub const DEFAULT_FILE_NAME: &str = "from-csv.json";

/// What `from-csv` was asked for, besides the CSV itself.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    pub kind: ManifestKind,
    /// `--template ID`: the bulk manifest's `template_id`.
    pub template_id: Option<String>,
    /// `--id-column COLUMN`.
    pub id_column: Option<String>,
    /// Each `--set KEY=VALUE`, as given.
    pub set: Vec<String>,
    /// The file name the manifest is judged under (`NAME.json`).
    pub file_name: String,
}

impl CsvOptions {
    /// Options for `kind`, judged under [`DEFAULT_FILE_NAME`].
    pub fn new(kind: ManifestKind, template_id: Option<&str>) -> CsvOptions {
        CsvOptions {
            kind,
            template_id: template_id.map(str::to_owned),
            id_column: None,
            set: Vec::new(),
            file_name: DEFAULT_FILE_NAME.to_owned(),
        }
    }
}

/// A manifest made from a CSV file, which `validate` would accept whole.
#[derive(Clone, Debug)]
pub struct CsvManifest {
    pub manifest: Value,
    /// The manifest as written (pretty JSON and a newline): the bytes that were judged.
    pub bytes: Vec<u8>,
    /// The CSV line of each item, in item order (a row's first line).
    pub lines: Vec<u64>,
    /// The lines of rows whose every cell was empty, which were skipped.
    pub skipped: Vec<u64>,
}

/// An item that validation would reject, with its CSV line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    /// Validation's message: `item N (client_item_id `ID`): the rule`.
    pub message: String,
}

/// Why a CSV file does not make a manifest. Each names the CSV line (or the option) and
/// the rule; the caller adds the file's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpreadsheetError {
    #[error("CSV line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("the CSV file is empty: it needs a header row and at least one row")]
    Empty,
    #[error("the CSV file has a header (line {header_line}) but no rows: a manifest needs 1 to 100000 items")]
    NoRows { header_line: u64 },
    #[error("CSV line {line}: column {column} has no header; every column needs a name")]
    EmptyHeader { line: u64, column: usize },
    #[error("CSV line {line}: columns {first} and {second} are both named `{name}`; each column needs its own name")]
    DuplicateHeader {
        line: u64,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("CSV line {line}: unknown column `{name}`{}. A {kind} manifest's columns are its item fields: {known}", in_parentheses(.suggestion))]
    UnknownColumn {
        line: u64,
        name: String,
        kind: ManifestKind,
        suggestion: Option<String>,
        known: String,
    },
    #[error("--id-column `{name}`: the header (CSV line {line}) has no such column{}", did_you_mean(.suggestion))]
    NoIdColumn {
        line: u64,
        name: String,
        suggestion: Option<String>,
    },
    #[error("--id-column `{name}`: the header (CSV line {line}) also has a `client_item_id` column; give the ids in one column only")]
    TwoIdColumns { line: u64, name: String },
    #[error("CSV line {line}: the id column `{column}` is empty; with --id-column every row needs its client_item_id")]
    EmptyId { line: u64, column: String },
    #[error("CSV lines {first_line} and {second_line}: both rows have the client_item_id `{id}` (column `{column}`); client_item_id must be unique within a manifest")]
    DuplicateId {
        id: String,
        column: String,
        first_line: u64,
        second_line: u64,
    },
    #[error("CSV line {line}, column `{column}`: {reason}")]
    BadCell {
        line: u64,
        column: String,
        reason: String,
    },
    #[error("--template: a bulk manifest needs the template its items are generated from (--template ID)")]
    TemplateMissing,
    #[error("--template: only bulk manifests name a template; a manifest of kind `{kind}` has no template_id")]
    TemplateNotAllowed { kind: ManifestKind },
    #[error("--set `{given}`: write KEY=VALUE")]
    SetSyntax { given: String },
    #[error("--set {key}: {reason}")]
    SetKey { key: String, reason: String },
    #[error("--set {key}={value}: {reason}")]
    SetValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{}the manifest would be rejected as a whole: {reason}", at_line(.line))]
    Rejected { line: Option<u64>, reason: String },
    #[error("{} of {total} rows would be rejected (as `validate` judges them):{}", .rows.len(), rejected_rows(.rows))]
    RowsRejected {
        total: usize,
        rows: Vec<RejectedRow>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|name| format!(", did you mean `{name}`?"))
        .unwrap_or_default()
}

fn in_parentheses(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|name| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

fn at_line(line: &Option<u64>) -> String {
    line.map(|line| format!("CSV line {line}: "))
        .unwrap_or_default()
}

fn rejected_rows(rows: &[RejectedRow]) -> String {
    rows.iter()
        .map(|row| format!("\n  CSV line {}: {}", row.line, row.message))
        .collect()
}

/// Turns a CSV file into a manifest of `options.kind` and judges it as `validate` would:
/// it is returned only when nothing of it would be rejected.
pub fn manifest_from_csv(
    csv: &[u8],
    options: &CsvOptions,
) -> Result<CsvManifest, SpreadsheetError> {
    let fields = kind_fields(options.kind);
    let mut manifest = top_level(options, &fields)?;
    let table = read_table(csv)?;
    let columns = plan_columns(&table, options, &fields)?;
    let mut items = Vec::with_capacity(table.rows.len());
    let mut lines = Vec::with_capacity(table.rows.len());
    let mut skipped = Vec::new();
    let mut first_line_of_id: HashMap<String, u64> = HashMap::new();
    for (line, cells) in &table.rows {
        if cells.iter().all(String::is_empty) {
            skipped.push(*line);
            continue;
        }
        let item = row_to_item(*line, cells, &columns, options.kind)?;
        if let Some(Value::String(id)) = item.get("client_item_id") {
            if let Some(first_line) = first_line_of_id.insert(id.clone(), *line) {
                let column = columns
                    .iter()
                    .find(|c| matches!(c.role, Role::Id { .. }))
                    .map(|c| c.name.clone());
                return Err(SpreadsheetError::DuplicateId {
                    id: id.clone(),
                    column: column.unwrap_or_else(|| "client_item_id".to_owned()),
                    first_line,
                    second_line: *line,
                });
            }
        }
        items.push(Value::Object(item));
        lines.push(*line);
    }
    if items.is_empty() {
        return Err(SpreadsheetError::NoRows {
            header_line: table.header_line,
        });
    }
    manifest.insert("items".to_owned(), Value::Array(items));
    let manifest = Value::Object(manifest);
    let mut bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| SpreadsheetError::Rejected {
            line: None,
            reason: format!("cannot encode it as JSON: {e}"),
        })?;
    bytes.push(b'\n');
    judge(&options.file_name, &bytes, &lines)?;
    Ok(CsvManifest {
        manifest,
        bytes,
        lines,
        skipped,
    })
}

/// The top-level fields: `kind`, `template_id` from `--template`, then each `--set`.
fn top_level(
    options: &CsvOptions,
    fields: &KindFields,
) -> Result<Map<String, Value>, SpreadsheetError> {
    let mut top = Map::new();
    top.insert(
        "kind".to_owned(),
        Value::String(options.kind.as_str().to_owned()),
    );
    match (options.kind, &options.template_id) {
        (ManifestKind::Bulk, None) => return Err(SpreadsheetError::TemplateMissing),
        (ManifestKind::Bulk, Some(template_id)) => {
            top.insert("template_id".to_owned(), Value::String(template_id.clone()));
        }
        (kind, Some(_)) => return Err(SpreadsheetError::TemplateNotAllowed { kind }),
        (_, None) => {}
    }
    for given in &options.set {
        apply_set(&mut top, given, fields)?;
    }
    Ok(top)
}

/// One `--set KEY=VALUE` (or `FIELD.KEY=VALUE` for a key of an object field).
fn apply_set(
    top: &mut Map<String, Value>,
    given: &str,
    fields: &KindFields,
) -> Result<(), SpreadsheetError> {
    let Some((key, text)) = given.split_once('=') else {
        return Err(SpreadsheetError::SetSyntax {
            given: given.to_owned(),
        });
    };
    let key_error = |reason: String| SpreadsheetError::SetKey {
        key: key.to_owned(),
        reason,
    };
    let value_error = |reason: String| SpreadsheetError::SetValue {
        key: key.to_owned(),
        value: text.to_owned(),
        reason,
    };
    let (field, part) = match key.split_once('.') {
        Some((field, part)) => (field, Some(part)),
        None => (key, None),
    };
    let shape = match (field, fields.top_field(field)) {
        ("kind" | "items" | "template_id", _) | (_, None) => {
            return Err(key_error(unknown_set_key(field, fields)))
        }
        (_, Some(shape)) => shape,
    };
    let (shape, part) = match (shape, part) {
        (_, None) => (shape.clone(), None),
        (FieldShape::Object(None), Some(part)) => (FieldShape::Text, Some(part)),
        (FieldShape::Object(Some(known)), Some(part)) => {
            match known.iter().find(|(name, _)| name == part) {
                Some((_, shape)) => (shape.clone(), Some(part)),
                None => {
                    let names: Vec<&str> = known.iter().map(|(name, _)| name.as_str()).collect();
                    let reason = format!(
                        "`{field}` has no field `{part}`{}; it may hold: {}",
                        did_you_mean(&nearest_known_name(part, &names)),
                        names.join(", ")
                    );
                    return Err(key_error(reason));
                }
            }
        }
        (_, Some(_)) => {
            return Err(key_error(format!(
                "`{field}` is not an object: write --set {field}=VALUE"
            )))
        }
    };
    let value = typed_value(&shape, text).map_err(value_error)?;
    let slot = match part {
        None => top.get_mut(field),
        Some(part) => match top
            .entry(field.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(object) => object.get_mut(part),
            _ => {
                return Err(key_error(format!(
                    "`{field}` was set whole before; set it whole or by its keys"
                )))
            }
        },
    };
    if slot.is_some() {
        return Err(key_error("given twice".to_owned()));
    }
    match part {
        None => top.insert(field.to_owned(), value),
        Some(part) => top
            .get_mut(field)
            .and_then(Value::as_object_mut)
            .and_then(|o| o.insert(part.to_owned(), value)),
    };
    Ok(())
}

/// Why a `--set` key is refused: the options that set it, or the nearest known key.
fn unknown_set_key(field: &str, fields: &KindFields) -> String {
    match field {
        "kind" => "the kind is chosen with --kind".to_owned(),
        "items" => "the items are the CSV's rows".to_owned(),
        "template_id" => "the template is chosen with --template".to_owned(),
        _ => {
            let names: Vec<&str> = fields.top.iter().map(|(name, _)| name.as_str()).collect();
            format!(
                "not a top-level field of this kind of manifest{}; it has: {}",
                did_you_mean(&nearest_known_name(field, &names)),
                names.join(", ")
            )
        }
    }
}

/// A cell or a `--set` value as the JSON the field takes; the reason when it cannot be.
pub fn typed_value(shape: &FieldShape, text: &str) -> Result<Value, String> {
    match shape {
        FieldShape::Text => Ok(Value::String(text.to_owned())),
        FieldShape::Boolean => match text.trim().to_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "`{text}` is not a boolean: write true, false, yes, no, 1 or 0"
            )),
        },
        FieldShape::Integer { minimum, maximum } => {
            let number: i64 = text
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a whole number"))?;
            if minimum.is_some_and(|minimum| number < minimum)
                || maximum.is_some_and(|maximum| number > maximum)
            {
                return Err(format!(
                    "{number} is out of range: from {} to {}",
                    minimum.map_or("any".to_owned(), |m| m.to_string()),
                    maximum.map_or("any".to_owned(), |m| m.to_string())
                ));
            }
            Ok(Value::from(number))
        }
        FieldShape::OneOf(names) if names.iter().any(|name| name == text) => {
            Ok(Value::String(text.to_owned()))
        }
        FieldShape::OneOf(names) => Err(format!("`{text}` is not one of: {}", names.join(", "))),
        FieldShape::TextList => {
            let list: Vec<Value> = text
                .split([';', ','])
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| Value::String(part.to_owned()))
                .collect();
            if list.is_empty() {
                return Err(format!(
                    "`{text}` holds no value (list values are separated by `;` or `,`)"
                ));
            }
            Ok(Value::Array(list))
        }
        FieldShape::Object(_) => match serde_json::from_str(text) {
            Ok(Value::Object(object)) => Ok(Value::Object(object)),
            _ => Err(format!("`{text}` is not a JSON object")),
        },
    }
}

/// A CSV file's records: the header and each row, with the line each begins on.
struct Table {
    header_line: u64,
    header: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
}

/// Reads RFC 4180 CSV (a UTF-8 byte order mark is skipped; quoted fields may hold
/// commas, quotes and line breaks); every row must have as many cells as the header.
fn read_table(csv: &[u8]) -> Result<Table, SpreadsheetError> {
    let csv = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let lines = LineIndex::new(csv);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv);
    let mut records = reader.records();
    let line_of = |record: &csv::StringRecord| lines.line_of(record.position());
    let (header_line, header) = match records.next() {
        None => return Err(SpreadsheetError::Empty),
        Some(record) => {
            let record = record.map_err(|e| malformed(e, &lines))?;
            (
                line_of(&record),
                record.iter().map(str::to_owned).collect::<Vec<_>>(),
            )
        }
    };
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(|e| malformed(e, &lines))?;
        rows.push((line_of(&record), record.iter().map(str::to_owned).collect()));
    }
    Ok(Table {
        header_line,
        header,
        rows,
    })
}

/// Where each line of a CSV file begins, to name the line a record begins on, as an
/// editor numbers lines (`\r\n`, `\n` and `\r` each end one). The csv crate's own count
/// goes by `\n` alone, skips blank lines, and puts a record's start at the end of the
/// line before it.
struct LineIndex<'a> {
    csv: &'a [u8],
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(csv: &'a [u8]) -> LineIndex<'a> {
        let mut starts = vec![0];
        let mut at = 0;
        while at < csv.len() {
            match (csv[at], csv.get(at + 1)) {
                (b'\r', Some(b'\n')) => {
                    at += 1;
                    starts.push(at + 1);
                }
                (b'\r' | b'\n', _) => starts.push(at + 1),
                _ => {}
            }
            at += 1;
        }
        LineIndex { csv, starts }
    }

    /// The line (from 1) of the record the csv crate places at `position`: its first
    /// byte after any line ends.
    fn line_of(&self, position: Option<&csv::Position>) -> u64 {
        let Some(position) = position else { return 0 };
        let mut at = usize::try_from(position.byte()).unwrap_or(usize::MAX);
        while matches!(self.csv.get(at), Some(b'\r' | b'\n')) {
            at += 1;
        }
        self.starts.partition_point(|start| *start <= at) as u64
    }
}

/// A CSV reading error, with its line.
fn malformed(error: csv::Error, lines: &LineIndex) -> SpreadsheetError {
    let line = lines.line_of(error.position());
    let reason = match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "cell {} is not UTF-8 (invalid bytes after {} valid ones): save the file as UTF-8",
            err.field() + 1,
            err.valid_up_to()
        ),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("the row has {len} cells, but the header has {expected_len}; every row needs a cell per column (quote cells that hold commas)")
        }
        _ => format!("cannot read the CSV: {error}"),
    };
    SpreadsheetError::Malformed { line, reason }
}

/// What a column becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// The item's `client_item_id`; `required` with `--id-column`.
    Id { required: bool },
    /// An item field of this shape.
    Field(FieldShape),
    /// A key of a bulk item's `input_data`.
    Input,
}

#[derive(Clone, Debug)]
struct Column {
    name: String,
    role: Role,
}

/// What each header becomes; refuses unnamed, repeated and (for create and edit) unknown
/// columns, and an `--id-column` that is not there.
fn plan_columns(
    table: &Table,
    options: &CsvOptions,
    fields: &KindFields,
) -> Result<Vec<Column>, SpreadsheetError> {
    let line = table.header_line;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (position, name) in table.header.iter().enumerate() {
        if name.is_empty() {
            return Err(SpreadsheetError::EmptyHeader {
                line,
                column: position + 1,
            });
        }
        if let Some(first) = seen.insert(name, position + 1) {
            return Err(SpreadsheetError::DuplicateHeader {
                line,
                name: name.clone(),
                first,
                second: position + 1,
            });
        }
    }
    let headers: Vec<&str> = table.header.iter().map(String::as_str).collect();
    if let Some(id_column) = &options.id_column {
        if !seen.contains_key(id_column.as_str()) {
            let suggestion = nearest_known_name(id_column, &headers);
            return Err(SpreadsheetError::NoIdColumn {
                line,
                name: id_column.clone(),
                suggestion,
            });
        }
        if id_column != "client_item_id" && seen.contains_key("client_item_id") {
            return Err(SpreadsheetError::TwoIdColumns {
                line,
                name: id_column.clone(),
            });
        }
    }
    table
        .header
        .iter()
        .map(|name| column_role(name, line, options, fields))
        .collect()
}

/// The role of the column named `name`.
fn column_role(
    name: &str,
    line: u64,
    options: &CsvOptions,
    fields: &KindFields,
) -> Result<Column, SpreadsheetError> {
    let role = if options.id_column.as_deref() == Some(name) {
        Role::Id { required: true }
    } else if name == "client_item_id" {
        Role::Id { required: false }
    } else {
        match (fields.item_field(name), options.kind) {
            // `input_data` holds the other columns; a column of that name is one of them.
            (Some(FieldShape::Object(_)), ManifestKind::Bulk) | (None, ManifestKind::Bulk) => {
                Role::Input
            }
            (Some(shape), _) => Role::Field(shape.clone()),
            (None, kind) => {
                let names: Vec<&str> = fields.item.iter().map(|(name, _)| name.as_str()).collect();
                return Err(SpreadsheetError::UnknownColumn {
                    line,
                    name: name.to_owned(),
                    kind,
                    suggestion: nearest_known_name(name, &names),
                    known: names.join(", "),
                });
            }
        }
    };
    Ok(Column {
        name: name.to_owned(),
        role,
    })
}

/// One row as an item: `client_item_id` first, then (bulk) `input_data`, then the item
/// fields in column order; empty cells leave their field out.
fn row_to_item(
    line: u64,
    cells: &[String],
    columns: &[Column],
    kind: ManifestKind,
) -> Result<Map<String, Value>, SpreadsheetError> {
    let mut id = None;
    let mut input = Map::new();
    let mut fields = Map::new();
    for (column, cell) in columns.iter().zip(cells) {
        match &column.role {
            Role::Id { required: true } if cell.is_empty() => {
                return Err(SpreadsheetError::EmptyId {
                    line,
                    column: column.name.clone(),
                })
            }
            _ if cell.is_empty() => {}
            Role::Id { .. } => id = Some(Value::String(cell.clone())),
            Role::Input => {
                input.insert(column.name.clone(), Value::String(cell.clone()));
            }
            Role::Field(shape) => {
                let value =
                    typed_value(shape, cell).map_err(|reason| SpreadsheetError::BadCell {
                        line,
                        column: column.name.clone(),
                        reason,
                    })?;
                fields.insert(column.name.clone(), value);
            }
        }
    }
    let mut item = Map::new();
    if let Some(id) = id {
        item.insert("client_item_id".to_owned(), id);
    }
    if kind == ManifestKind::Bulk {
        item.insert("input_data".to_owned(), Value::Object(input));
    }
    item.extend(fields);
    Ok(item)
}

/// Judges the manifest's bytes with the daemon's own judgement; errors name CSV lines.
fn judge(file_name: &str, bytes: &[u8], lines: &[u64]) -> Result<(), SpreadsheetError> {
    let line_of_item = |index: usize| lines.get(index).copied();
    match judge_file(file_name, &FileContent::Bytes(bytes.to_vec()), None) {
        Verdict::Rejected { reason, .. } => {
            let line = match &reason {
                FileRejection::Manifest(rejection) => {
                    item_of_rejection(rejection).and_then(line_of_item)
                }
                _ => None,
            };
            Err(SpreadsheetError::Rejected {
                line,
                reason: reason.to_string(),
            })
        }
        Verdict::Accepted { manifest, .. } => {
            let rows: Vec<RejectedRow> = manifest
                .items
                .iter()
                .filter_map(|item| {
                    let message = item.rejection.clone()?;
                    Some(RejectedRow {
                        line: line_of_item(item.index as usize).unwrap_or(0),
                        message,
                    })
                })
                .collect();
            if rows.is_empty() {
                Ok(())
            } else {
                Err(SpreadsheetError::RowsRejected {
                    total: manifest.items.len(),
                    rows,
                })
            }
        }
    }
}

/// The item a whole-manifest rejection names, if it names one.
fn item_of_rejection(rejection: &ManifestRejection) -> Option<usize> {
    match rejection {
        ManifestRejection::ItemNotAnObject { index, .. }
        | ManifestRejection::ClientItemIdNotString { index, .. }
        | ManifestRejection::ClientItemIdReserved { index, .. }
        | ManifestRejection::UnknownItemField { index, .. } => Some(*index),
        ManifestRejection::DuplicateClientItemId { second_index, .. } => Some(*second_index),
        _ => None,
    }
}

/// Why a manifest could not be dropped into the inbox.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("--drop {name}: {rejection}")]
    Name {
        name: String,
        rejection: ManifestRejection,
    },
    #[error("{path} already exists: a manifest of that name is waiting in the inbox; choose another NAME")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `bytes` into `inbox` as `NAME.json`, atomically: first as a hidden file (which
/// the daemon ignores), fsynced, then renamed to `NAME.json` (never over a file waiting
/// there), then the folder fsynced. Returns the manifest's path.
pub fn drop_into_inbox(inbox: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, DropError> {
    let file_name = format!("{name}.json");
    check_manifest_name(&file_name).map_err(|rejection| DropError::Name {
        name: name.to_owned(),
        rejection,
    })?;
    let target = inbox.join(&file_name);
    if target.symlink_metadata().is_ok() {
        return Err(DropError::Exists { path: target });
    }
    let hidden = inbox.join(format!(".{file_name}.{}.from-csv", std::process::id()));
    let write_error = |source| DropError::Write {
        path: hidden.clone(),
        source,
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&hidden)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&hidden);
        return Err(write_error(source));
    }
    if let Err(source) = std::fs::rename(&hidden, &target) {
        let _ = std::fs::remove_file(&hidden);
        return Err(DropError::Rename {
            from: hidden,
            to: target,
            source,
        });
    }
    std::fs::File::open(inbox)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| DropError::Write {
            path: inbox.to_path_buf(),
            source,
        })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bulk() -> CsvOptions {
        CsvOptions::new(ManifestKind::Bulk, Some("tpl_x"))
    }

    fn convert(csv: &str, options: &CsvOptions) -> Result<CsvManifest, SpreadsheetError> {
        manifest_from_csv(csv.as_bytes(), options)
    }

    fn items(converted: &CsvManifest) -> &Vec<Value> {
        converted.manifest["items"].as_array().expect("items")
    }

    #[test]
    fn a_bulk_csv_with_every_awkward_case_becomes_the_expected_manifest() {
        // A BOM; a quoted cell with a comma, a doubled quote and a line break; non-ASCII
        // headers and cells; CRLF line ends; an empty cell; a row of empty cells.
        let csv = "\u{feff}client_item_id,Prénom,note,include_brand,asset_ids,tent_name\r\n\
                   r1,Zoë,\"Hello, \"\"world\"\"\nsecond line\",yes,\"asset_1; asset_2,asset_3\",\r\n\
                   ,,,,,\r\n\
                   日本-2,李,,0,,Page 東京\r\n";
        let converted = convert(csv, &bulk()).expect("converts");
        let expected = json!({
            "kind": "bulk",
            "template_id": "tpl_x",
            "items": [
                {"client_item_id": "r1",
                 "input_data": {"Prénom": "Zoë", "note": "Hello, \"world\"\nsecond line"},
                 "include_brand": true,
                 "asset_ids": ["asset_1", "asset_2", "asset_3"]},
                {"client_item_id": "日本-2", "input_data": {"Prénom": "李"},
                 "include_brand": false, "tent_name": "Page 東京"}
            ]
        });
        assert_eq!(converted.manifest, expected);
        // Row 1 spans lines 2 and 3; the empty row is line 4; the last row line 5.
        assert_eq!(converted.lines, vec![2, 5]);
        assert_eq!(converted.skipped, vec![4]);
        assert_eq!(
            serde_json::from_slice::<Value>(&converted.bytes).expect("json"),
            expected
        );
        assert!(converted.bytes.ends_with(b"}\n"));
    }

    #[test]
    fn lines_are_numbered_as_an_editor_numbers_them() {
        let csv = "a\n\nfirst\n\r\n\rsecond\r\"third\r\nstill third\"\rfourth\n";
        let converted = convert(csv, &bulk()).expect("converts");
        assert_eq!(converted.lines, vec![3, 6, 7, 9]);
        let values: Vec<&Value> = items(&converted)
            .iter()
            .map(|item| &item["input_data"]["a"])
            .collect();
        assert_eq!(
            values,
            vec!["first", "second", "third\r\nstill third", "fourth"]
        );
    }

    #[test]
    fn empty_cells_leave_their_fields_out_and_spaces_are_kept() {
        let csv = "client_item_id,city,tent_name,instructions\na,,,\nb, , Name ,x\n";
        let converted = convert(csv, &bulk()).expect("converts");
        assert_eq!(
            items(&converted)[0],
            json!({"client_item_id": "a", "input_data": {}})
        );
        assert_eq!(
            items(&converted)[1],
            json!({"client_item_id": "b", "input_data": {"city": " "}, "tent_name": " Name ", "instructions": "x"})
        );
        let without_ids = convert("city\nParis\n", &bulk()).expect("converts");
        assert_eq!(
            items(&without_ids)[0],
            json!({"input_data": {"city": "Paris"}})
        );
    }

    #[test]
    fn booleans_take_six_words_in_any_case_and_refuse_others_naming_line_and_column() {
        let csv = "include_brand\nTRUE\nno\n1\nYes\n0\nFalse\n";
        let converted = convert(csv, &bulk()).expect("converts");
        let values: Vec<&Value> = items(&converted)
            .iter()
            .map(|item| &item["include_brand"])
            .collect();
        assert_eq!(
            values,
            vec![
                &json!(true),
                &json!(false),
                &json!(true),
                &json!(true),
                &json!(false),
                &json!(false)
            ]
        );
        let error = convert("x,include_brand\n1,yes\n2,maybe\n", &bulk()).expect_err("maybe");
        assert_eq!(
            error.to_string(),
            "CSV line 3, column `include_brand`: `maybe` is not a boolean: write true, false, yes, no, 1 or 0"
        );
    }

    #[test]
    fn asset_ids_split_on_semicolons_and_commas() {
        let converted =
            convert("asset_ids\n\"a,b\"\n a ; b;c \nsolo\n", &bulk()).expect("converts");
        let lists: Vec<&Value> = items(&converted)
            .iter()
            .map(|item| &item["asset_ids"])
            .collect();
        assert_eq!(
            lists,
            vec![
                &json!(["a", "b"]),
                &json!(["a", "b", "c"]),
                &json!(["solo"])
            ]
        );
        let error = convert("asset_ids\n\";, ;\"\n", &bulk()).expect_err("no ids");
        assert!(
            matches!(error, SpreadsheetError::BadCell { line: 2, ref column, .. } if column == "asset_ids"),
            "{error}"
        );
        let too_many =
            convert("client_item_id,asset_ids\nsix,\"1;2;3;4;5;6\"\n", &bulk()).expect_err("six");
        assert_eq!(
            too_many.to_string(),
            "1 of 1 rows would be rejected (as `validate` judges them):\n  CSV line 2: item 0 (client_item_id `six`): asset_ids has 6 entries; at most 5 are allowed"
        );
    }

    #[test]
    fn the_id_column_becomes_client_item_id_and_a_duplicate_names_both_rows() {
        let mut options = bulk();
        options.id_column = Some("Email".to_owned());
        let csv = "Email,name\na@x.example,\"Ann\nB.\"\nb@x.example,Bob\n";
        let converted = convert(csv, &options).expect("converts");
        assert_eq!(
            items(&converted)[0],
            json!({"client_item_id": "a@x.example", "input_data": {"name": "Ann\nB."}})
        );
        assert_eq!(converted.lines, vec![2, 4]);
        let duplicate = "Email,name\na@x.example,\"Ann\nB.\"\nb@x.example,Bob\na@x.example,Again\n";
        assert_eq!(
            convert(duplicate, &options).expect_err("duplicate"),
            SpreadsheetError::DuplicateId {
                id: "a@x.example".into(),
                column: "Email".into(),
                first_line: 2,
                second_line: 5
            }
        );
        let plain = convert("client_item_id,x\nsame,1\nsame,2\n", &bulk()).expect_err("duplicate");
        assert_eq!(
            plain.to_string(),
            "CSV lines 2 and 3: both rows have the client_item_id `same` (column `client_item_id`); client_item_id must be unique within a manifest"
        );
    }

    #[test]
    fn the_id_column_must_exist_be_alone_and_be_filled_in() {
        let mut options = bulk();
        options.id_column = Some("email".to_owned());
        assert_eq!(
            convert("Email,name\na,b\n", &options).expect_err("missing").to_string(),
            "--id-column `email`: the header (CSV line 1) has no such column, did you mean `Email`?"
        );
        assert_eq!(
            convert("email,client_item_id\na,b\n", &options).expect_err("two"),
            SpreadsheetError::TwoIdColumns {
                line: 1,
                name: "email".into()
            }
        );
        assert_eq!(
            convert("email,name\na,A\n,B\n", &options).expect_err("empty"),
            SpreadsheetError::EmptyId {
                line: 3,
                column: "email".into()
            }
        );
        // Without --id-column, an empty client_item_id leaves the daemon's `#INDEX`.
        let converted = convert("client_item_id,name\n,A\n", &bulk()).expect("converts");
        assert_eq!(items(&converted)[0], json!({"input_data": {"name": "A"}}));
    }

    #[test]
    fn set_values_are_typed_as_their_fields_need() {
        let mut options = bulk();
        options.set = [
            "auto_publish=true",
            "start_index=5",
            "priority=high",
            "default_tent_name_prefix=Acme, Inc.",
            "metadata.source=crm",
            "metadata.batch=7",
            "client_job_descriptor=a=b",
        ]
        .map(str::to_owned)
        .to_vec();
        let converted = convert("x\n1\n", &options).expect("converts");
        let manifest = &converted.manifest;
        assert_eq!(manifest["auto_publish"], json!(true));
        assert_eq!(manifest["start_index"], json!(5));
        assert_eq!(manifest["priority"], json!("high"));
        assert_eq!(manifest["default_tent_name_prefix"], json!("Acme, Inc."));
        assert_eq!(manifest["metadata"], json!({"source": "crm", "batch": "7"}));
        assert_eq!(manifest["client_job_descriptor"], json!("a=b"));
        options.set = vec![r#"metadata={"a": [1]}"#.to_owned()];
        assert_eq!(
            convert("x\n1\n", &options).expect("converts").manifest["metadata"],
            json!({"a": [1]})
        );
    }

    #[test]
    fn an_unknown_set_key_is_refused_with_the_nearest_name() {
        let refused = |set: &str, kind: ManifestKind| {
            let mut options =
                CsvOptions::new(kind, (kind == ManifestKind::Bulk).then_some("tpl_x"));
            options.set = vec![set.to_owned()];
            convert("name,prompt\nn,p\n", &options)
                .expect_err(set)
                .to_string()
        };
        assert!(
            refused("default_tent_prefix=A", ManifestKind::Bulk)
                .starts_with("--set default_tent_prefix: not a top-level field of this kind of manifest, did you mean `default_tent_name_prefix`?"),
        );
        assert_eq!(
            refused("template_id=t", ManifestKind::Bulk),
            "--set template_id: the template is chosen with --template"
        );
        assert_eq!(
            refused("kind=edit", ManifestKind::Bulk),
            "--set kind: the kind is chosen with --kind"
        );
        assert!(refused("auto_publish=true", ManifestKind::Edit)
            .starts_with("--set auto_publish: not a top-level field"));
        assert!(refused("defaults.asset_ids=a", ManifestKind::Create)
            .starts_with("--set defaults.asset_ids: `defaults` has no field `asset_ids`"));
        assert_eq!(
            refused("priority", ManifestKind::Bulk),
            "--set `priority`: write KEY=VALUE"
        );
        let mut twice = bulk();
        twice.set = vec!["priority=low".into(), "priority=high".into()];
        assert_eq!(
            convert("x\n1\n", &twice).expect_err("twice").to_string(),
            "--set priority: given twice"
        );
    }

    #[test]
    fn a_bad_set_value_names_the_key_the_value_and_the_rule() {
        for (set, reason) in [
            (
                "auto_publish=maybe",
                "`maybe` is not a boolean: write true, false, yes, no, 1 or 0",
            ),
            ("start_index=one", "`one` is not a whole number"),
            (
                "start_index=-1",
                "-1 is out of range: from 0 to 9007199254640991",
            ),
            (
                "priority=urgent",
                "`urgent` is not one of: high, normal, low",
            ),
            ("metadata=[1]", "`[1]` is not a JSON object"),
        ] {
            let mut options = bulk();
            options.set = vec![set.to_owned()];
            let (key, value) = set.split_once('=').expect("KEY=VALUE");
            assert_eq!(
                convert("x\n1\n", &options).expect_err(set),
                SpreadsheetError::SetValue {
                    key: key.into(),
                    value: value.into(),
                    reason: reason.into()
                }
            );
        }
    }

    #[test]
    fn a_create_csv_has_item_field_columns_and_defaults_from_set() {
        let mut options = CsvOptions::new(ManifestKind::Create, None);
        options.id_column = Some("client_item_id".to_owned());
        options.set = vec![
            "defaults.include_brand=yes".into(),
            "defaults.prompt=Make a page".into(),
            "priority=low".into(),
        ];
        let csv = "client_item_id,name,auto_publish,custom_page_alias,user_id\nc1,Café,true,cafe,\nc2,Bar,,,u-7\n";
        let converted = convert(csv, &options).expect("converts");
        assert_eq!(
            converted.manifest,
            json!({"kind": "create", "defaults": {"include_brand": true, "prompt": "Make a page"}, "priority": "low",
                   "items": [
                       {"client_item_id": "c1", "name": "Café", "auto_publish": true, "custom_page_alias": "cafe"},
                       {"client_item_id": "c2", "name": "Bar", "user_id": "u-7"}]})
        );
        let unknown = convert(
            "name,promt\nn,p\n",
            &CsvOptions::new(ManifestKind::Create, None),
        )
        .expect_err("unknown");
        assert_eq!(
            unknown.to_string(),
            "CSV line 1: unknown column `promt` (did you mean `prompt`?). A create manifest's columns are its item fields: \
             client_item_id, name, user_id, prompt, auto_publish, custom_page_alias, include_brand, asset_ids"
        );
        assert_eq!(
            convert(
                "name,prompt\nn,p\n",
                &CsvOptions::new(ManifestKind::Create, Some("tpl"))
            )
            .expect_err("template"),
            SpreadsheetError::TemplateNotAllowed {
                kind: ManifestKind::Create
            }
        );
        let no_prompt = convert(
            "client_item_id,name\nc1,n\n",
            &CsvOptions::new(ManifestKind::Create, None),
        )
        .expect_err("prompt");
        assert_eq!(
            no_prompt,
            SpreadsheetError::RowsRejected {
                total: 1,
                rows: vec![RejectedRow {
                    line: 2,
                    message: "item 0 (client_item_id `c1`): prompt is missing".into()
                }]
            }
        );
    }

    #[test]
    fn an_edit_csv_names_its_tents_and_rejected_rows_name_their_lines() {
        let options = CsvOptions::new(ManifestKind::Edit, None);
        let csv = "client_item_id,tent_id,target_client_item_id,prompt,asset_ids,auto_publish\n\
                   e1,f11ef3cf-8664-4fe5-a261-c5b4d647b7d1,,Make it blue,asset_1;asset_2,no\n\
                   e2,,c1,\"Add a\nsection\",,\n\
                   e3,,c2,,,\n";
        let error = convert(csv, &options).expect_err("e3 has no prompt");
        assert_eq!(
            error.to_string(),
            "1 of 3 rows would be rejected (as `validate` judges them):\n  CSV line 5: item 2 (client_item_id `e3`): prompt is missing"
        );
        let fixed = csv.replace("e3,,c2,,,", "e3,,c2,p,,");
        let converted = convert(&fixed, &options).expect("converts");
        assert_eq!(
            items(&converted)[0],
            json!({"client_item_id": "e1", "tent_id": "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1", "prompt": "Make it blue",
                   "asset_ids": ["asset_1", "asset_2"], "auto_publish": false})
        );
        assert_eq!(
            items(&converted)[1],
            json!({"client_item_id": "e2", "target_client_item_id": "c1", "prompt": "Add a\nsection"})
        );
        assert_eq!(converted.manifest["kind"], json!("edit"));
    }

    #[test]
    fn validation_errors_name_the_csv_line() {
        let alias = convert(
            "client_item_id,custom_page_alias\na,ok\nb,Not Ok\n",
            &bulk(),
        )
        .expect_err("alias");
        let SpreadsheetError::RowsRejected { rows, total: 2 } = &alias else {
            panic!("{alias}")
        };
        assert_eq!(rows.len(), 2, "both need auto_publish: {alias}");
        assert_eq!((rows[0].line, rows[1].line), (2, 3));
        assert!(
            rows[1]
                .message
                .contains("custom_page_alias `Not Ok` is invalid"),
            "{alias}"
        );
        let reserved = convert("client_item_id,x\nok,1\n#2,2\n", &bulk()).expect_err("reserved");
        assert_eq!(
            reserved.to_string(),
            "CSV line 3: the manifest would be rejected as a whole: item 1: client_item_id `#2` begins with `#`, which is reserved for the ids the daemon gives items without one (`#INDEX`)"
        );
        let mut named = bulk();
        named.file_name = "bad name.json".into();
        assert!(matches!(
            convert("x\n1\n", &named),
            Err(SpreadsheetError::Rejected { line: None, .. })
        ));
    }

    #[test]
    fn malformed_csv_names_its_line() {
        assert_eq!(
            convert("a,b\n1,2\n\"3\n\",4,5\n", &bulk()).expect_err("three cells"),
            SpreadsheetError::Malformed {
                line: 3,
                reason: "the row has 3 cells, but the header has 2; every row needs a cell per column (quote cells that hold commas)".into()
            }
        );
        let latin1 = b"name,city\nA,Z\xfcrich\n";
        let error = manifest_from_csv(latin1, &bulk()).expect_err("not UTF-8");
        assert!(
            matches!(&error, SpreadsheetError::Malformed { line: 2, reason } if reason.contains("not UTF-8")),
            "{error}"
        );
        assert_eq!(
            convert("", &bulk()).expect_err("empty"),
            SpreadsheetError::Empty
        );
        assert_eq!(
            convert("\u{feff}a,b\r\n", &bulk()).expect_err("header only"),
            SpreadsheetError::NoRows { header_line: 1 }
        );
        assert_eq!(
            convert("a,,b\n1,2,3\n", &bulk()).expect_err("unnamed"),
            SpreadsheetError::EmptyHeader { line: 1, column: 2 }
        );
        assert_eq!(
            convert("a,b,a\n1,2,3\n", &bulk()).expect_err("twice"),
            SpreadsheetError::DuplicateHeader {
                line: 1,
                name: "a".into(),
                first: 1,
                second: 3
            }
        );
        assert_eq!(
            convert("a\n1\n", &CsvOptions::new(ManifestKind::Bulk, None)).expect_err("template"),
            SpreadsheetError::TemplateMissing
        );
    }

    #[test]
    fn the_manifest_is_exactly_what_validation_accepts_with_priority_kept() {
        let mut options = bulk();
        options.set = vec![
            "priority=high".into(),
            "$schema=https://example.invalid/manifest.schema.json".into(),
        ];
        let converted = convert("client_item_id,first_name\na,Ann\n", &options).expect("converts");
        let validated = crate::pipeline::intake::validation::validate_manifest(&converted.bytes)
            .expect("valid");
        assert_eq!(validated.top.get("priority"), Some(&json!("high")));
        assert!(
            !validated.top.contains_key("$schema"),
            "accepted and ignored"
        );
        let typed = crate::manifest::TopFields::from_validated(&validated.top).expect("typed");
        assert_eq!(typed.template_id.as_deref(), Some("tpl_x"));
    }

    #[test]
    fn a_drop_appears_whole_under_its_name_and_never_replaces_a_waiting_file() {
        let inbox = tempfile::tempdir().expect("inbox");
        let path = drop_into_inbox(inbox.path(), "daily", b"{\"a\": 1}\n").expect("dropped");
        assert_eq!(path, inbox.path().join("daily.json"));
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"a\": 1}\n");
        let names: Vec<String> = std::fs::read_dir(inbox.path())
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            vec!["daily.json".to_string()],
            "no hidden file left behind"
        );
        assert!(matches!(
            drop_into_inbox(inbox.path(), "daily", b"{}"),
            Err(DropError::Exists { .. })
        ));
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"a\": 1}\n",
            "the waiting file is untouched"
        );
        assert!(matches!(
            drop_into_inbox(inbox.path(), "bad name", b"{}"),
            Err(DropError::Name { .. })
        ));
        let missing = inbox.path().join("missing");
        assert!(matches!(
            drop_into_inbox(&missing, "x", b"{}"),
            Err(DropError::Write { .. })
        ));
    }
}
