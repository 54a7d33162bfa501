//! Shared harness for the integration tests: a simulator on loopback, a daemon on a
//! temporary folder with a short floor, and typed helpers to drop manifests and read results.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tented_bulkd::context::Context;
use tented_bulkd::daemon::DaemonError;
use tented_bulkd::settings::{ApiKey, ConfigSource, Settings};
use tented_bulkd::simulator::{RecordedCall, SimConfig, Simulator};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An item's final statuses, as SPEC section 5 lists them (the tests' own copy, not the
/// daemon's, so that the two are checked against each other).
pub const FINAL_STATUSES: [&str; 6] = [
    "completed",
    "failed",
    "rejected",
    "timed_out",
    "canceled",
    "unknown",
];

/// The floor the tests run with (loopback only).
pub const TEST_FLOOR: Duration = Duration::from_millis(200);

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        tented_bulkd::telemetry::init(tented_bulkd::settings::LogFormat::Text);
    }
}

/// A quick, deterministic simulator.
pub fn quick_sim() -> SimConfig {
    SimConfig {
        queue_time: (Duration::from_millis(20), Duration::from_millis(60)),
        generation_time: (Duration::from_millis(100), Duration::from_millis(400)),
        publish_time: (Duration::from_millis(20), Duration::from_millis(60)),
        failure_rate: 0.0,
        publish_failure_rate: 0.0,
        retry_after_secs: None,
        seed: Some(42),
        ..SimConfig::default()
    }
}

pub fn test_env(dir: &Path, base_url: &str) -> Vec<(String, String)> {
    vec![
        ("TENTED_BULKD__API__BASE_URL".into(), base_url.into()),
        (
            "TENTED_BULKD__API__REQUESTS_PER_SECOND".into(),
            "200".into(),
        ),
        ("TENTED_BULKD__API__TIMEOUT".into(), "3s".into()),
        ("TENTED_BULKD__POLL__INTERVAL".into(), "200ms".into()),
        (
            "TENTED_BULKD__PATHS__INBOX".into(),
            dir.join("inbox").display().to_string(),
        ),
        (
            "TENTED_BULKD__PATHS__OUTBOX".into(),
            dir.join("outbox").display().to_string(),
        ),
        (
            "TENTED_BULKD__PATHS__ARCHIVE".into(),
            dir.join("archive").display().to_string(),
        ),
        (
            "TENTED_BULKD__PATHS__STATE".into(),
            dir.join("state").display().to_string(),
        ),
        ("TENTED_BULKD__INBOX__SETTLE".into(), "150ms".into()),
        ("TENTED_BULKD__INBOX__RESCAN".into(), "500ms".into()),
        ("TENTED_BULKD__ADMIN__LISTEN".into(), "".into()),
    ]
}

pub fn test_settings(dir: &Path, base_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env = test_env(dir, base_url);
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    Settings::load_with_env(&ConfigSource::BuiltIn, env).expect("test settings load")
}

/// A daemon running in this process.
pub struct TestDaemon {
    pub ctx: Arc<Context>,
    pub settings: Settings,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DaemonError>>,
}

impl TestDaemon {
    pub async fn start(settings: Settings) -> TestDaemon {
        // A restart in the same process: sled lets go of its folder lock only when its
        // background threads (a flush in progress) have dropped their handles, a moment
        // after the previous daemon returned. A new process would not wait at all.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (ctx, jobs) = loop {
            match tented_bulkd::daemon::build_context(settings.clone(), ApiKey::new("sim-key")) {
                Ok(built) => break built,
                Err(DaemonError::Store(tented_bulkd::store::StoreError::Locked { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("daemon context: {e}"),
            }
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(tented_bulkd::daemon::run_with_context(
            Arc::clone(&ctx),
            jobs,
            shutdown.clone(),
            Arc::new(tented_bulkd::daemon::Quiet),
        ));
        TestDaemon {
            ctx,
            settings,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("the daemon stops within 15 s")
            .expect("the daemon task does not panic");
        result.expect("the daemon stops cleanly");
    }
}

/// The simulator, a folder, and a daemon.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub sim: Simulator,
    pub daemon: Option<TestDaemon>,
    pub extra: Vec<(String, String)>,
}

impl TestApp {
    pub async fn spawn(sim: SimConfig) -> TestApp {
        Self::spawn_with(sim, &[]).await
    }

    pub async fn spawn_with(sim: SimConfig, extra: &[(&str, &str)]) -> TestApp {
        init_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = Simulator::start(sim, "127.0.0.1:0")
            .await
            .expect("simulator starts");
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut app = TestApp {
            dir,
            sim,
            daemon: None,
            extra,
        };
        app.start_daemon().await;
        app
    }

    pub fn settings(&self) -> Settings {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        test_settings(self.dir.path(), &self.sim.base_url(), &extra)
    }

    pub async fn start_daemon(&mut self) {
        let daemon = TestDaemon::start(self.settings()).await;
        self.daemon = Some(daemon);
    }

    pub async fn stop_daemon(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().await;
        }
    }

    pub fn ctx(&self) -> &Arc<Context> {
        &self.daemon.as_ref().expect("daemon running").ctx
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes the manifest elsewhere and renames it into the inbox, as writers should.
    pub fn drop_manifest(&self, file_name: &str, manifest: &Value) {
        self.drop_bytes(
            file_name,
            &serde_json::to_vec_pretty(manifest).expect("json"),
        );
    }

    pub fn drop_bytes(&self, file_name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(self.path("inbox")).expect("inbox");
        let staging = self.dir.path().join(format!(".staging-{file_name}"));
        std::fs::write(&staging, bytes).expect("write staging");
        std::fs::rename(&staging, self.path("inbox").join(file_name)).expect("rename into inbox");
    }

    pub fn result_path(&self, name: &str) -> PathBuf {
        self.path("outbox").join(format!("{name}.result.json"))
    }

    /// Waits for `outbox/NAME.result.json` and returns it.
    pub async fn wait_result(&self, name: &str, within: Duration) -> Value {
        let path = self.result_path(name);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                return serde_json::from_slice(&bytes).expect("the result file is JSON");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no result file {} within {within:?}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn read_json(&self, sub: &str) -> Option<Value> {
        std::fs::read(self.path(sub))
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("json"))
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.sim.calls()
    }
}

/// A bulk manifest with `n` plain items `row-000`…
pub fn bulk_manifest(n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"client_item_id": format!("row-{i:03}"), "input_data": {"first_name": format!("P{i}")}}))
        .collect();
    json!({"template_id": "tpl_test", "default_tent_name_prefix": "Test", "items": items})
}

/// The bulk create calls, in order.
pub fn bulk_posts(calls: &[RecordedCall]) -> Vec<&RecordedCall> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/v1/tents/bulk")
        .collect()
}

/// Checks that no two GETs of the same path arrived closer than `floor` (minus `slack`).
pub fn assert_poll_floor(calls: &[RecordedCall], floor: Duration, slack: Duration) {
    let mut last: std::collections::HashMap<&str, u64> = Default::default();
    for call in calls.iter().filter(|c| c.method == "GET") {
        if let Some(previous) = last.insert(call.path.as_str(), call.at_ms) {
            let gap = call.at_ms - previous;
            assert!(
                gap + slack.as_millis() as u64 >= floor.as_millis() as u64,
                "{} polled twice within {gap} ms (floor {floor:?})",
                call.path
            );
        }
    }
}

/// Every client_item_id sent in any create request, with repetitions.
pub fn sent_client_ids(calls: &[RecordedCall]) -> Vec<String> {
    let mut out = Vec::new();
    for call in bulk_posts(calls) {
        if let Some(items) = call.body.as_ref().and_then(|b| b["items"].as_array()) {
            for item in items {
                if let Some(id) = item["client_item_id"].as_str() {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}
