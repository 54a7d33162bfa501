//! `/metrics` (SPEC section 8), scraped over real HTTP from a running daemon and parsed.

use std::collections::BTreeMap;

use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// The samples of a scrape: `name{labels}` → value, and the families' TYPE lines.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, sample: &str) -> f64 {
        *self
            .samples
            .get(sample)
            .unwrap_or_else(|| panic!("no sample `{sample}` in {:#?}", self.samples.keys()))
    }
}

async fn scrape(admin: &str) -> Scrape {
    // As Prometheus asks (other clients get the text format 0.0.4: `monitoring::`).
    let response = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = header_text(&response, "content-type");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("a body");
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
        } else if line == "# EOF" || line.starts_with("# HELP ") {
            continue;
        } else {
            let (sample, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(
                samples.insert(sample.to_string(), value).is_none(),
                "{sample} twice"
            );
        }
    }
    Scrape { samples, types }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_finished_after_the_manifest_left_the_active_set() {
    let admin = free_address();
    let mut app = TestApp::spawn_with(
        SimConfig {
            failure_rate: 0.0,
            ..quick_sim()
        },
        &[("TENTED_BULKD__ADMIN__LISTEN", &admin)],
    )
    .await;
    let before = scrape(&admin).await;
    assert_eq!(
        before.value("tented_bulkd_items_finished_total{status=\"completed\"}"),
        0.0
    );
    assert_eq!(before.value("tented_bulkd_auth_paused"), 0.0);
    assert!(before.value("tented_bulkd_store_bytes") > 0.0);
    assert_eq!(
        before.value(&format!(
            "tented_bulkd_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    let mut manifest = bulk_manifest(30);
    manifest["items"][4]["input_data"] = serde_json::json!("not an object");
    app.drop_manifest("counted.json", &manifest);
    app.wait_result("counted", WAIT).await;
    let id = app.manifest_id("counted");
    wait_until("the manifest to leave the active set", WAIT, || async {
        !app.ctx().active_ids().contains(&id)
    })
    .await;

    let after = scrape(&admin).await;
    // Counters remember what finished; gauges show nothing unfinished.
    assert_eq!(
        after.value("tented_bulkd_items_finished_total{status=\"completed\"}"),
        29.0
    );
    assert_eq!(
        after.value("tented_bulkd_items_finished_total{status=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        after.value("tented_bulkd_items_finished_total{status=\"unknown\"}"),
        0.0
    );
    assert_eq!(
        after.value("tented_bulkd_manifests_finished_total{status=\"completed\"}"),
        1.0
    );
    for state in [
        "pending",
        "sending",
        "credit_wait",
        "admitted",
        "awaiting_details",
    ] {
        assert_eq!(
            after.value(&format!("tented_bulkd_items{{state=\"{state}\"}}")),
            0.0,
            "{state}"
        );
    }
    assert_eq!(after.value("tented_bulkd_manifests{state=\"active\"}"), 0.0);
    // Every call is counted by endpoint and answer, and timed.
    assert_eq!(
        after.value("tented_bulkd_api_calls_total{endpoint=\"bulk_create\",code=\"202\"}"),
        2.0
    );
    let polls = after.value("tented_bulkd_api_calls_total{endpoint=\"bulk_status\",code=\"200\"}");
    assert!(polls >= 2.0, "{polls}");
    assert_eq!(
        after.value("tented_bulkd_api_request_duration_seconds_count{endpoint=\"bulk_create\"}"),
        2.0
    );
    assert_eq!(
        after.value("tented_bulkd_api_request_duration_seconds_bucket{le=\"+Inf\",endpoint=\"bulk_create\"}"),
        2.0
    );
    assert_eq!(
        after.value("tented_bulkd_poll_lateness_seconds_count"),
        polls,
        "one lateness per poll sent"
    );
    assert!(after.value("tented_bulkd_poll_lateness_seconds_sum") >= 0.0);
    assert!(after.value("tented_bulkd_budget_wait_seconds_total") >= 0.0);
    for (family, kind) in [
        ("tented_bulkd_api_calls", "counter"),
        ("tented_bulkd_api_request_duration_seconds", "histogram"),
        ("tented_bulkd_poll_lateness_seconds", "histogram"),
        ("tented_bulkd_items_finished", "counter"),
        ("tented_bulkd_manifests_finished", "counter"),
        ("tented_bulkd_items", "gauge"),
        ("tented_bulkd_manifests", "gauge"),
        ("tented_bulkd_budget_wait_seconds", "counter"),
        ("tented_bulkd_auth_paused", "gauge"),
        ("tented_bulkd_store_bytes", "gauge"),
        ("tented_bulkd_build_info", "gauge"),
    ] {
        assert_eq!(
            after.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    app.stop_daemon().await;
}
