//! The status page (SPEC section 8): `GET /` and `GET /ui/manifests/{name}` on the admin
//! endpoint, server-rendered HTML with no external asset and no script, refreshing itself
//! every [`REFRESH_SECS`] (`<meta http-equiv="refresh">`).
//!
//! Every value goes through maud, which escapes it: manifest names are file names and
//! may hold `<`, `"` or `&`. The page sends [`content_security_policy`]: nothing may load
//! or run but its own stylesheet (allowed by its hash); progress bars and the plot are
//! inline SVG drawn with attributes, so no inline style is needed.
//!
//! This module only renders: `admin` gathers the data (the same as `/status`, `list` and
//! `show --items`) and serves it.

use std::collections::BTreeMap;

use maud::{html, Markup, DOCTYPE};

use crate::history::{ManifestDetail, ManifestLine, ManifestStatus, StatusReport};
use crate::rates::RatePoint;
use crate::state::item::ItemState;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 5;

/// The most items a manifest's page lists (a 100,000-item manifest would make pages of
/// many megabytes); the rest are in `show --items` and the result file.
pub const PAGE_ITEMS: usize = 1_000;

/// The page's one stylesheet; the CSP allows it by its SHA-256.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;font-size:.92em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
.health{padding:.6em 1em;border-radius:4px;font-weight:600;margin:.3em 0}\
.ok{background:#e8f5e9;color:#1b5e20}.bad{background:#ffebee;color:#b71c1c}.warn{background:#fff8e1;color:#8a5a00}\
.muted{color:#777}.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.95em}\
.legend span{margin-right:1em;white-space:nowrap}";

/// The bar's segments: a word, the item states it counts, and its colour.
const SEGMENTS: [(&str, &[ItemState], &str); 8] = [
    ("completed", &[ItemState::Completed], "#2e7d32"),
    ("failed", &[ItemState::Failed], "#c62828"),
    ("rejected", &[ItemState::Rejected], "#ef6c00"),
    ("unknown", &[ItemState::Unknown], "#6a1b9a"),
    ("timed out", &[ItemState::TimedOut], "#8d6e63"),
    ("canceled", &[ItemState::Canceled], "#9e9e9e"),
    (
        "in flight",
        &[
            ItemState::Sending,
            ItemState::Admitted,
            ItemState::AwaitingDetails,
        ],
        "#1565c0",
    ),
    (
        "waiting",
        &[ItemState::Pending, ItemState::CreditWait],
        "#cfd8dc",
    ),
];

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The Content-Security-Policy of every page: nothing from anywhere, no script at all, the
/// page's own stylesheet by its hash.
pub fn content_security_policy() -> String {
    use sha2::Digest;
    let hash = base64(&sha2::Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; script-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, percent-encoded (a name may hold `/`, `?`, `#`, spaces or quotes).
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// The link to a manifest's own page.
pub fn manifest_href(name: &str) -> String {
    format!("/ui/manifests/{}", segment(name))
}

fn layout(title: &str, refresh: bool, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh {
                    meta http-equiv="refresh" content=(REFRESH_SECS);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// A bar of `total` items split by status, with its legend.
fn progress(counts: &BTreeMap<String, u32>, total: u32) -> Markup {
    const WIDTH: f64 = 320.0;
    let items: u32 = counts
        .iter()
        .filter(|(state, _)| state.as_str() != "total")
        .map(|(_, n)| n)
        .sum();
    let total = total.max(items).max(1);
    // (word, items, colour, x, width) of each segment, left to right.
    let mut x = 0.0;
    let mut parts = Vec::new();
    for (word, states, colour) in SEGMENTS {
        let n: u32 = states.iter().filter_map(|s| counts.get(s.as_str())).sum();
        let w = WIDTH * f64::from(n) / f64::from(total);
        parts.push((word, n, colour, x, w));
        x += w;
    }
    html! {
        svg width=(WIDTH) height="14" role="img" aria-label="progress by status" {
            rect x="0" y="0" width=(WIDTH) height="14" fill="#eceff1" {}
            @for (word, n, colour, x, w) in &parts {
                @if *n > 0 {
                    rect x=(format!("{x:.1}")) y="0" width=(format!("{w:.1}")) height="14" fill=(colour) {
                        title { (word) ": " (n) }
                    }
                }
            }
        }
        div.legend.muted {
            @for (word, n, ..) in &parts {
                @if *n > 0 { span { (word) " " (n) } }
            }
        }
    }
}

fn health(report: &StatusReport) -> Markup {
    html! {
        @if report.healthy {
            div.health.ok { "Healthy: Tented accepts the key, every folder can be written." }
        }
        @if report.auth_paused {
            div.health.bad { "Tented refuses the API key (401): every call is paused until it works again (reload it with SIGHUP)." }
        }
        @for problem in &report.storage_problems {
            div.health.bad { "Storage: " (problem) }
        }
    }
}

fn in_flight(manifests: &[ManifestStatus]) -> Markup {
    html! {
        h2 { "In flight (" (manifests.len()) ")" }
        @if manifests.is_empty() {
            p.muted { "Nothing in flight." }
        } @else {
            table {
                tr { th { "manifest" } th { "kind" } th { "priority" } th { "state" } th { "progress" } th { "next poll" } }
                @for m in manifests {
                    tr {
                        td { a href=(manifest_href(&m.name)) { (m.name) } }
                        td { (m.kind) }
                        td { (m.priority) }
                        td {
                            (m.state)
                            @if let Some(reason) = &m.reason { br; span.muted { (reason) } }
                            @if let Some(at) = &m.credit_retry_at { br; span.muted { "credits retried at " (at) } }
                        }
                        td { (progress(&m.counts, m.counts.get("total").copied().unwrap_or(0))) }
                        td {
                            @match &m.next_poll_at {
                                Some(at) => { (at) br; span.muted { (m.jobs_polling) " job(s) polling" } }
                                None => { span.muted { "—" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The calls per second over the last hour, creates and polls apart, against the budget.
fn rate_plot(points: &[RatePoint], budget: u64) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let top = points
        .iter()
        .map(|p| p.creates_per_sec.max(p.polls_per_sec))
        .fold(budget as f64, f64::max)
        .max(1.0);
    let n = points.len().max(2) as f64 - 1.0;
    let line = |pick: fn(&RatePoint) -> f64| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let x = W * i as f64 / n;
                let y = H - H * pick(p) / top;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let budget_y = H - H * budget as f64 / top;
    html! {
        svg width=(W) height=(H + 16.0) role="img" aria-label="calls per second over the last hour" {
            rect x="0" y="0" width=(W) height=(H) fill="#fff" stroke="#ccc" {}
            line x1="0" x2=(W) y1=(format!("{budget_y:.1}")) y2=(format!("{budget_y:.1}")) stroke="#999" stroke-dasharray="4 3" {}
            polyline points=(line(|p| p.polls_per_sec)) fill="none" stroke="#ef6c00" stroke-width="1.5" {}
            polyline points=(line(|p| p.creates_per_sec)) fill="none" stroke="#1565c0" stroke-width="1.5" {}
            text x="2" y=(H + 12.0) font-size="10" fill="#777" { "60 min ago" }
            text x=(W - 24.0) y=(H + 12.0) font-size="10" fill="#777" { "now" }
            text x="4" y="11" font-size="10" fill="#777" { (format!("{top:.0}/s")) }
        }
        div.legend.muted {
            span { "blue: creates per second" }
            span { "orange: polls per second" }
            span { "dashed: the budget, " (budget) "/s" }
        }
    }
}

fn budget(report: &StatusReport, points: &[RatePoint]) -> Markup {
    let last = points.last().copied();
    html! {
        h2 { "Request budget" }
        p {
            (report.requests_per_second) " calls a second. "
            @match &report.budget_holding_back {
                Some(what) => { strong { "Holding back now: " (what) "." } }
                None => { "Holding nothing back now." }
            }
            @if let Some(p) = last {
                " Last minute: " (format!("{:.2}", p.creates_per_sec)) " creates/s, "
                (format!("{:.2}", p.polls_per_sec)) " polls/s."
            }
        }
        (rate_plot(points, report.requests_per_second))
    }
}

fn recent(lines: &[ManifestLine]) -> Markup {
    let finished: Vec<&ManifestLine> = lines.iter().filter(|l| l.status.is_some()).collect();
    html! {
        h2 { "Recently finished" }
        @if finished.is_empty() {
            p.muted { "None yet." }
        } @else {
            table {
                tr { th { "manifest" } th { "kind" } th { "status" } th.num { "items" } th { "by status" } th { "finished" } }
                @for l in finished {
                    tr {
                        td { a href=(manifest_href(&l.name)) { (l.name) } }
                        td { (l.kind) }
                        td { (l.status.as_deref().unwrap_or("")) @if let Some(r) = &l.reason { br; span.muted { (r) } } }
                        td.num { (l.total()) }
                        td { (progress(&l.counts, l.total())) }
                        td { (l.finished_at.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// `GET /`: health, the manifests in flight, the budget, the recently finished.
pub fn overview(report: &StatusReport, finished: &[ManifestLine], rates: &[RatePoint]) -> String {
    let body = html! {
        h1 { "tented-bulkd" }
        (health(report))
        (in_flight(&report.manifests))
        (budget(report, rates))
        (recent(finished))
        p.muted { "Refreshes every " (REFRESH_SECS) " s. JSON: " code { "/status" } ", " code { "/manifests" } ", " code { "/metrics" } "." }
    };
    layout("tented-bulkd", true, body)
}

/// `GET /ui/manifests/{name}`: what `show --items` prints (its first [`PAGE_ITEMS`] items
/// of `total`).
pub fn manifest(detail: &ManifestDetail, total: usize) -> String {
    let l = &detail.line;
    let body = html! {
        p { a href="/" { "← all manifests" } }
        h1 { (l.name) }
        table {
            tr { th { "kind" } td { (l.kind) } }
            tr { th { "state" } td { (l.state) @if let Some(r) = &l.reason { " — " (r) } } }
            @if let Some(status) = &l.status { tr { th { "status" } td { (status) } } }
            tr { th { "items" } td { (l.total()) } }
            tr { th { "received" } td { (l.received_at) } }
            @if let Some(at) = &l.finished_at { tr { th { "finished" } td { (at) } } }
            @if let Some(path) = &detail.result_path { tr { th { "result" } td { code { (path) } } } }
            @if let Some(at) = &detail.pruned_at { tr { th { "pruned" } td { (at) " (only its summary is kept)" } } }
        }
        (progress(&l.counts, l.total()))
        @if !detail.requests.is_empty() {
            h2 { "Requests" }
            table {
                tr { th.num { "#" } th { "bulk_job_id / tent_id" } th { "state" } th { "status" } th.num { "items" } th { "sent" } th { "last polled" } th { "next poll" } }
                @for r in &detail.requests {
                    tr {
                        td.num { (r.seq) }
                        td { code { (r.id.get().unwrap_or("—")) } }
                        td { (r.state) }
                        td { (r.status.as_deref().unwrap_or("—")) }
                        td.num { (r.items) }
                        td { (r.sent_at) }
                        td { (r.last_polled_at.as_deref().unwrap_or("—")) }
                        td { (r.next_poll_at.as_deref().unwrap_or("—")) }
                    }
                }
            }
        }
        @if let Some(items) = &detail.items {
            h2 { "Items (" (total) ")" }
            @if items.len() < total {
                p.muted { "The first " (items.len()) " of " (total) " items; every item is in " code { "tented-bulkd show " (l.name) " --items" } " and the result file." }
            }
            table {
                tr { th.num { "index" } th { "client_item_id" } th { "status" } th { "tent_id" } th { "error" } }
                @for i in items {
                    tr {
                        td.num { (i.index) }
                        td { code { (i.client_item_id) } }
                        td { (i.status) }
                        td { code { (i.tent_id.as_deref().unwrap_or("")) } }
                        td {
                            @if let Some(code) = &i.error_code { code { (code) } " " }
                            (i.message.as_deref().unwrap_or(""))
                        }
                    }
                }
            }
        }
    };
    layout(&l.name, false, body)
}

/// A page for a manifest no one ever dropped.
pub fn not_found(name: &str) -> String {
    let body = html! {
        p { a href="/" { "← all manifests" } }
        h1 { "No manifest named " code { (name) } }
    };
    layout("not found", false, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> StatusReport {
        StatusReport {
            healthy: false,
            auth_paused: true,
            storage_problems: vec!["paths.outbox: No space left on device".into()],
            budget_limited: false,
            budget_holding_back: Some("creates".into()),
            requests_per_second: 5,
            manifests: vec![ManifestStatus {
                name: name.into(),
                manifest: format!("{name}.json"),
                kind: "bulk".into(),
                priority: "high".into(),
                state: "paused".into(),
                reason: Some("paused by the operator".into()),
                received_at: "2026-12-07T05:00:00Z".into(),
                counts: [
                    ("total".to_string(), 4),
                    ("completed".to_string(), 3),
                    ("pending".to_string(), 1),
                ]
                .into(),
                jobs_polling: 1,
                next_poll_at: Some("2026-12-07T05:00:10Z".into()),
                credit_retry_at: None,
            }],
        }
    }

    #[test]
    fn a_hostile_name_is_text_and_links_are_encoded() {
        let hostile = "<img src=x onerror=alert(1)> & \"q\"";
        let page = overview(&report(hostile), &[], &[]);
        assert!(!page.contains("<img"), "the name became markup: {page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;"));
        assert!(page.contains(
            "/ui/manifests/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%20%26%20%22q%22"
        ));
        assert!(!page.contains("<script"), "no script at all");
        assert!(page.contains("401"), "the pause is said");
        assert!(page.contains("No space left on device"));
        assert!(page.contains("Holding back now: creates"));
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_stylesheet() {
        use sha2::Digest;
        let policy = content_security_policy();
        let hash = base64(&sha2::Sha256::digest(STYLE.as_bytes()));
        assert!(policy.contains(&format!("style-src 'sha256-{hash}'")));
        assert!(policy.contains("script-src 'none'"));
        assert!(policy.contains("default-src 'none'"));
        let page = overview(&report("a"), &[], &[]);
        assert!(
            page.contains(&format!("<style>{STYLE}</style>")),
            "the hashed text is the style element's whole text"
        );
    }
}
