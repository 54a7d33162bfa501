//! Every item of a manifest, each parsed once and judged once: the manifest-level rules
//! on items (each an object, `client_item_id` a string not beginning with `#` and unique,
//! no unknown field) and the item-level rules. A large manifest's items are judged in
//! contiguous runs on several threads, with the same result as one pass.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::manifest::{ManifestKind, ValidatedItem};

use super::item::judge_item;
use super::rejection::{json_type, nearest_known_name, ManifestRejection};

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

/// Every item, each parsed once: the manifest-level rules on items (item by item in
/// manifest order, the first broken rule of the first item that breaks one rejects the
/// manifest, and nothing is judged item by item then), and each item judged on its own
/// (accepted, or rejected locally with every problem named). A large manifest's items are
/// judged in contiguous runs on several threads; the result is the same as one pass.
pub(super) fn judge_items(
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
    let threads = if on_one_thread() || items.len() < PARALLEL_FROM_ITEMS {
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

/// Whether every judgement must stay on the calling thread: never, outside tests.
#[cfg(not(test))]
fn on_one_thread() -> bool {
    false
}

#[cfg(test)]
thread_local! {
    /// Tests that measure this thread's own allocations judge on it alone.
    static ON_ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether every judgement must stay on the calling thread: in a test that asked for it.
#[cfg(test)]
fn on_one_thread() -> bool {
    ON_ONE_THREAD.with(std::cell::Cell::get)
}

/// Test support: runs `f` with every judgement on the calling thread.
#[cfg(test)]
pub(crate) fn judging_on_one_thread<T>(f: impl FnOnce() -> T) -> T {
    ON_ONE_THREAD.with(|one| one.set(true));
    let value = f();
    ON_ONE_THREAD.with(|one| one.set(false));
    value
}
