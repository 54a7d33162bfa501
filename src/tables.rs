//! Tables a person reads: `list`, `show`, `status` and the demo's summary, with a header
//! row, as wide as the terminal (columns wrap on a narrow one; a pipe gets them whole).
//!
//! `--json` prints the same documents for scripts; these functions are only for eyes.

use comfy_table::{presets, Cell, ContentArrangement, Table};

use crate::history::StatusReport;
use crate::history::{ItemLine, ManifestDetail, ManifestList, RequestLine};
use crate::state::item::ItemState;

/// A table with a header row and no borders, as wide as the terminal when there is one.
pub fn new_table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<Cell>,
{
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// The table's text without the padding at the ends of its lines.
pub fn render(table: &Table) -> String {
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// `52 completed, 5 failed` from counts by state, in the item machine's order.
pub fn counts_text(counts: &std::collections::BTreeMap<String, u32>) -> String {
    let words: Vec<&str> = ItemState::ALL.iter().map(|s| s.as_str()).collect();
    // The states with items (`total` has its own column).
    let mut keys: Vec<&String> = counts
        .iter()
        .filter(|(k, n)| **n > 0 && k.as_str() != "total")
        .map(|(k, _)| k)
        .collect();
    keys.sort_by_key(|k| words.iter().position(|w| w == k).unwrap_or(usize::MAX));
    let parts: Vec<String> = keys.iter().map(|k| format!("{} {k}", counts[*k])).collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

/// `list`: one row per manifest, newest first (`limit` of them at most).
pub fn list_table(list: &ManifestList, limit: usize) -> String {
    if list.manifests.is_empty() {
        return if list.more {
            format!("--limit {limit} shows no manifest; the store has some")
        } else {
            "no manifests in the store".to_string()
        };
    }
    let mut table = new_table([
        "NAME", "KIND", "STATE", "STATUS", "ITEMS", "COUNTS", "RECEIVED", "FINISHED",
    ]);
    for m in &list.manifests {
        table.add_row([
            m.name.clone(),
            m.kind.clone(),
            m.state.clone(),
            or_dash(m.status.as_deref()),
            m.total().to_string(),
            counts_text(&m.counts),
            m.received_at.clone(),
            or_dash(m.finished_at.as_deref()),
        ]);
    }
    let mut text = render(&table);
    if list.more {
        text.push_str("\n(older manifests left out: see --limit)");
    }
    text
}

fn requests_table(requests: &[RequestLine]) -> String {
    let mut table = new_table([
        "#",
        "BULK_JOB_ID / TENT",
        "STATE",
        "STATUS",
        "ITEMS",
        "FIRST",
        "SENT",
        "LAST POLL",
        "NEXT POLL",
    ]);
    for r in requests {
        table.add_row([
            r.seq.to_string(),
            or_dash(r.id.get()),
            if r.earlier_tries > 0 {
                format!("{} (after {} not admitted)", r.state, r.earlier_tries)
            } else {
                r.state.clone()
            },
            or_dash(r.status.as_deref()),
            r.items.to_string(),
            r.first_index.map_or("-".to_string(), |i| i.to_string()),
            r.sent_at.clone(),
            or_dash(r.last_polled_at.as_deref()),
            or_dash(r.next_poll_at.as_deref()),
        ]);
    }
    render(&table)
}

fn items_table(items: &[ItemLine]) -> String {
    let mut table = new_table(["INDEX", "CLIENT_ITEM_ID", "STATUS", "TENT_ID", "ERROR"]);
    for item in items {
        let message = item
            .message
            .as_deref()
            .map(|m| without_item_prefix(m, item.index, &item.client_item_id));
        let error = match (&item.error_code, message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, Some(message)) => message.to_string(),
            (None, None) => "-".to_string(),
        };
        table.add_row([
            item.index.to_string(),
            item.client_item_id.clone(),
            item.status.clone(),
            or_dash(item.tent_id.as_deref()),
            error,
        ]);
    }
    render(&table)
}

/// A local rejection's message without the `FILE: item N (client_item_id `ID`): ` that
/// opens it in the result file: the table's row already names the item.
fn without_item_prefix<'a>(message: &'a str, index: u32, client_item_id: &str) -> &'a str {
    let marker = format!("item {index} (client_item_id `{client_item_id}`): ");
    match message.find(&marker) {
        Some(at) if at == 0 || message[..at].ends_with(": ") => &message[at + marker.len()..],
        _ => message,
    }
}

/// `show NAME`: the manifest's fields, then its requests, then (with `--items`) its items.
pub fn show_text(detail: &ManifestDetail) -> String {
    let line = &detail.line;
    let mut fields = new_table(["FIELD", "VALUE"]);
    let mut rows: Vec<(&str, String)> = vec![
        ("name", line.name.clone()),
        ("kind", line.kind.clone()),
        ("state", line.state.clone()),
        ("status", or_dash(line.status.as_deref())),
        ("reason", or_dash(line.reason.as_deref())),
        ("items", line.total().to_string()),
        ("counts", counts_text(&line.counts)),
        ("received", line.received_at.clone()),
        ("finished", or_dash(line.finished_at.as_deref())),
        ("result", or_dash(detail.result_path.as_deref())),
    ];
    if let Some(pruned) = &detail.pruned_at {
        rows.push((
            "pruned",
            format!("{pruned} (retention.store): only this summary is left"),
        ));
    }
    for (field, value) in rows {
        fields.add_row([field.to_string(), value]);
    }
    let mut out = render(&fields);
    if detail.pruned_at.is_none() {
        out.push_str("\n\nrequests:\n");
        if detail.requests.is_empty() {
            out.push_str("none sent");
        } else {
            out.push_str(&requests_table(&detail.requests));
        }
    }
    if let Some(items) = &detail.items {
        out.push_str("\n\nitems:\n");
        out.push_str(&items_table(items));
    }
    out
}

/// `status`: health, then one row per unfinished manifest.
pub fn status_text(report: &StatusReport) -> String {
    let mut problems: Vec<String> = Vec::new();
    if report.auth_paused {
        problems.push("Tented refuses the API key (401); every call is paused".to_string());
    }
    problems.extend(report.storage_problems.iter().cloned());
    let health = if report.healthy {
        "ok".to_string()
    } else if problems.is_empty() {
        "UNHEALTHY".to_string()
    } else {
        format!("UNHEALTHY: {}", problems.join("; "))
    };
    let budget = if report.budget_limited {
        " (the budget is delaying polls)"
    } else {
        ""
    };
    let mut out = format!(
        "health: {health}\nbudget: {}/s{budget}\n\n",
        report.requests_per_second
    );
    if report.manifests.is_empty() {
        out.push_str("no unfinished manifests");
        return out;
    }
    let mut table = new_table(["NAME", "KIND", "STATE", "COUNTS", "NEXT POLL", "REASON"]);
    for m in &report.manifests {
        table.add_row([
            m.name.clone(),
            m.kind.clone(),
            m.state.clone(),
            counts_text(&m.counts),
            or_dash(m.next_poll_at.as_deref()),
            or_dash(m.reason.as_deref()),
        ]);
    }
    out.push_str(&render(&table));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ManifestLine;

    fn line(name: &str, state: &str) -> ManifestLine {
        ManifestLine {
            name: name.into(),
            manifest: format!("{name}.json"),
            kind: "bulk".into(),
            state: state.into(),
            status: Some("completed".into()),
            reason: None,
            error: None,
            counts: [
                ("total".to_string(), 3),
                ("failed".to_string(), 1),
                ("completed".to_string(), 2),
                ("unknown".to_string(), 0),
            ]
            .into(),
            received_at: "2026-03-25T14:30:00Z".into(),
            finished_at: None,
        }
    }

    #[test]
    fn an_items_error_does_not_repeat_the_item_the_row_names() {
        let message = "demo.json: item 4 (client_item_id `acme-5`): name is missing";
        assert_eq!(without_item_prefix(message, 4, "acme-5"), "name is missing");
        assert_eq!(
            without_item_prefix(
                "item 4 (client_item_id `acme-5`): name is missing",
                4,
                "acme-5"
            ),
            "name is missing"
        );
        let other = "Upstream generation failed.";
        assert_eq!(without_item_prefix(other, 4, "acme-5"), other);
    }

    #[test]
    fn counts_follow_the_item_machine_order() {
        let counts = [
            ("total".to_string(), 7),
            ("failed".to_string(), 1),
            ("completed".to_string(), 2),
            ("pending".to_string(), 4),
            ("unknown".to_string(), 0),
        ]
        .into();
        assert_eq!(counts_text(&counts), "4 pending, 2 completed, 1 failed");
        assert_eq!(counts_text(&Default::default()), "-");
    }

    #[test]
    fn the_list_has_a_header_row_then_one_row_per_manifest() {
        let list = ManifestList {
            manifests: vec![line("newer", "finished"), line("older", "pruned")],
            more: true,
        };
        let text = list_table(&list, 50);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].split_whitespace().eq([
                "NAME", "KIND", "STATE", "STATUS", "ITEMS", "COUNTS", "RECEIVED", "FINISHED"
            ]),
            "{text}"
        );
        assert!(
            lines[1].contains("newer") && lines[1].contains("finished"),
            "{text}"
        );
        assert!(
            lines[2].contains("older") && lines[2].contains("pruned"),
            "{text}"
        );
        assert!(
            text.ends_with("(older manifests left out: see --limit)"),
            "{text}"
        );
        let empty = ManifestList {
            manifests: vec![],
            more: false,
        };
        assert_eq!(list_table(&empty, 50), "no manifests in the store");
        let cut = ManifestList {
            manifests: Vec::new(),
            more: true,
        };
        assert_eq!(
            list_table(&cut, 0),
            "--limit 0 shows no manifest; the store has some"
        );
    }
}
