//! What ships for monitoring (`monitoring/`, installed in `/usr/share/tented-bulkd/`): the
//! Prometheus alert rules, tested with `promtool test rules` on synthetic series (skipped,
//! saying why, where promtool is absent: Debian's `prometheus` package has it), and the
//! Grafana dashboard, whose every query, like every rule, names only metrics that a real
//! daemon's `/metrics` exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{bulk_manifest, free_address, quick_sim, succeeded, TestApp};

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitoring")
        .join(file)
}

/// Every `tented_bulkd_…` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tented_bulkd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The series names a scrape can hold, from its `# TYPE` lines (a family with no series
/// yet is still named): a counter's `_total`, a histogram's `_bucket`, `_sum` and
/// `_count`, a gauge's own name.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `expr` of the dashboard's panels, with the panel's title.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
    out
}

/// What Prometheus sends.
const OPEN_METRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `/metrics` with this `Accept` (none: reqwest's `*/*`).
async fn scrape(admin: &str, accept: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("http://{admin}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("text")
}

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    path.exists().then_some(path)
}

/// `promtool check metrics` on `text`: what it says (nothing when clean).
fn check_metrics(promtool: &Path, text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool ends");
    format!(
        "{}{}{}",
        if output.status.success() {
            ""
        } else {
            "(failed) "
        },
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_formats_of_metrics_pass_promtool_and_carry_the_process_metrics() {
    let admin = free_address();
    let app = TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__ADMIN__LISTEN", &admin)]).await;
    app.drop_manifest("seen.json", &bulk_manifest(3));
    app.wait_result("seen", Duration::from_secs(30)).await;
    let open = scrape(&admin, Some(OPEN_METRICS)).await;
    let text = scrape(&admin, Some("text/plain;version=0.0.4")).await;
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE tented_bulkd_api_calls_total counter"),
        "a counter's TYPE names its series in 0.0.4: {text}"
    );
    for body in [&open, &text] {
        for name in [
            "process_start_time_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(
                body.lines().any(|l| l.starts_with(name)),
                "{name} is missing: {body}"
            );
        }
        assert!(
            body.contains("tented_bulkd_api_calls_total{endpoint=\"bulk_create\",code=\"202\"}"),
            "{body}"
        );
    }
    let Some(promtool) = promtool() else {
        println!(
            "skipped: promtool check metrics: no promtool (Debian: apt-get install prometheus)"
        );
        return;
    };
    // promtool lints the 0.0.4 format (what a scraper that does not ask for OpenMetrics
    // gets). Fed OpenMetrics, it reads `# TYPE x counter` as naming `x`, not `x_total`,
    // and reports every counter as without help: the mismatch this negotiation exists
    // for, checked so that it stays visible.
    let said = check_metrics(&promtool, &text);
    assert!(
        said.trim().is_empty(),
        "promtool check metrics on the 0.0.4 text: {said}"
    );
    let said = check_metrics(&promtool, &open);
    assert!(
        said.contains("tented_bulkd_api_calls_total no help text"),
        "promtool reads OpenMetrics as 0.0.4 no more? then check both: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_query_only_metrics_the_daemon_exports() {
    let admin = free_address();
    let app = TestApp::spawn_with(
        quick_sim(),
        &[
            ("TENTED_BULKD__ADMIN__LISTEN", &admin),
            (
                "TENTED_BULKD__ADMIN__ALLOWED_HOSTS",
                "scraper.example,192.0.2.9",
            ),
        ],
    )
    .await;
    app.drop_manifest("seen.json", &bulk_manifest(3));
    app.wait_result("seen", Duration::from_secs(30)).await;
    let scrape = scrape(&admin, Some(OPEN_METRICS)).await;
    assert!(
        scrape.ends_with("# EOF\n"),
        "OpenMetrics, as asked: {scrape}"
    );
    let exported = exported(&scrape);
    for needed in [
        "tented_bulkd_storage_healthy",
        "tented_bulkd_oldest_unfinished_manifest_age_seconds",
        "tented_bulkd_budget_requests_per_second",
        "tented_bulkd_store_syncs_total",
        "tented_bulkd_poll_lateness_seconds_bucket",
    ] {
        assert!(exported.contains(needed), "{needed} is not in:\n{scrape}");
    }

    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(monitoring("tented-bulkd.dashboard.json")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 10,
        "a dashboard of {} queries",
        queries.len()
    );
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty() || expr.starts_with("up{"),
            "panel `{title}`: `{expr}` names no metric of the daemon"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "panel `{title}` queries {name}, which the daemon does not export"
            );
            used.insert(name);
        }
    }
    // The dashboard covers what an operator looks at first.
    for name in [
        "tented_bulkd_auth_paused",
        "tented_bulkd_storage_healthy",
        "tented_bulkd_api_calls_total",
        "tented_bulkd_items",
        "tented_bulkd_manifests",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }

    // A remote scraper's Host, when `admin.allowed_hosts` names it; no other.
    for (host, code) in [
        ("scraper.example", 200),
        ("192.0.2.9", 200),
        ("evil.example", 421),
    ] {
        let (got, text) = crate::control::raw(&admin, "GET", "/metrics", host);
        assert_eq!(got, code, "Host {host}: {text}");
    }

    let rules = std::fs::read_to_string(monitoring("tented-bulkd.rules.yml")).expect("rules");
    let in_rules = metric_names(&rules);
    assert!(in_rules.len() >= 6, "{in_rules:?}");
    for name in in_rules {
        assert!(
            exported.contains(&name),
            "an alert rule queries {name}, which the daemon does not export"
        );
    }
}

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let Some(promtool) = promtool() else {
        println!(
            "skipped: the alert rules' tests: no promtool (Debian: apt-get install prometheus)"
        );
        return;
    };
    for args in [
        vec!["check", "rules", "tented-bulkd.rules.yml"],
        vec!["test", "rules", "tented-bulkd.rules.test.yml"],
    ] {
        succeeded(
            Command::new(&promtool)
                .args(&args)
                .current_dir(monitoring("")),
            &format!("promtool {}", args.join(" ")),
        );
    }
    // Each alert of the rules has a test that makes it fire.
    let rules = std::fs::read_to_string(monitoring("tented-bulkd.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(monitoring("tented-bulkd.rules.test.yml")).expect("tests");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test makes {alert} fire"
        );
    }
}
