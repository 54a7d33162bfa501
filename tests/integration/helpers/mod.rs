//! The integration tests' harness: the test configuration (a simulator on loopback, a
//! temporary folder, a short floor), a daemon in this process ([`TestApp`]), the real binary
//! ([`BinaryDaemon`]), the one way to wait ([`wait_until`]), and typed helpers to drop
//! manifests and read results and the simulator's call log. [`lazyfs`]: LazyFS mounts and
//! power cuts, for the power-cut tests.

mod binary;
pub mod lazyfs;
mod wait;

pub use binary::{
    cli, command, run_until_ready, succeeded, write_config, BinaryDaemon, READY_LINE, START_WAIT,
};
pub use wait::{try_wait_until, wait_until, Progress};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tented_bulkd::context::Context;
use tented_bulkd::daemon::DaemonError;
pub use tented_bulkd::manifest::ManifestKind;
pub use tented_bulkd::pipeline::outbox::{ItemResult, ResultDocument};
use tented_bulkd::settings::{ApiKey, ConfigSource, Settings};
use tented_bulkd::simulator::{RecordedCall, SimConfig, Simulator};
pub use tented_bulkd::state::error_code::ErrorCode;
pub use tented_bulkd::state::item::{ItemState, RejectedBy};
pub use tented_bulkd::state::manifest::FinalStatus;
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

/// The floor the tests run with (loopback only): `poll.interval` of [`TestConfig`].
pub const TEST_FLOOR: Duration = Duration::from_millis(200);

/// How long the in-process tests wait for anything, a result above all (a loaded run once
/// needed more than 30 s).
pub const WAIT: Duration = Duration::from_secs(60);

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

/// The configuration every test daemon runs with, in-process or the real binary: the
/// simulator on loopback, folders under one temporary folder, a 200 ms floor
/// ([`TEST_FLOOR`]), a quick inbox, a generous budget, no admin endpoint. The same keys
/// become `TENTED_BULKD__*` variables ([`TestConfig::env`]) or a TOML file
/// ([`TestConfig::toml`]).
#[derive(Clone, Debug)]
pub struct TestConfig {
    table: toml::Table,
}

impl TestConfig {
    pub fn new(dir: &Path, base_url: &str) -> TestConfig {
        let path = |sub: &str| dir.join(sub).display().to_string();
        TestConfig {
            table: toml::Table::new(),
        }
        .set("api", "base_url", base_url)
        .set("api", "requests_per_second", 200)
        .set("api", "timeout", "3s")
        .set("poll", "interval", "200ms")
        .set("paths", "inbox", path("inbox"))
        .set("paths", "outbox", path("outbox"))
        .set("paths", "archive", path("archive"))
        .set("paths", "state", path("state"))
        .set("inbox", "settle", "150ms")
        .set("inbox", "rescan", "500ms")
        .set("admin", "listen", "")
        .set("admin", "socket", path("control.sock"))
    }

    /// Sets `section.key` (replacing the test default, if any).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        let section = self
            .table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(keys) = section {
            keys.insert(key.to_string(), value.into());
        }
        self
    }

    /// As environment variables: `TENTED_BULKD__SECTION__KEY`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for (section, keys) in &self.table {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            for (key, value) in keys {
                let value = match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                env.push((
                    format!(
                        "TENTED_BULKD__{}__{}",
                        section.to_uppercase(),
                        key.to_uppercase()
                    ),
                    value,
                ));
            }
        }
        env
    }

    /// As a configuration file.
    pub fn toml(&self) -> String {
        toml::to_string(&self.table).expect("the test configuration serialises")
    }
}

pub fn test_env(dir: &Path, base_url: &str) -> Vec<(String, String)> {
    TestConfig::new(dir, base_url).env()
}

/// The test configuration, then `extra` environment overrides, loaded as the daemon does.
pub fn test_settings(dir: &Path, base_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env = test_env(dir, base_url);
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    Settings::load_with_env(&ConfigSource::BuiltIn, env).expect("test settings load")
}

/// A lifecycle that records readiness.
#[derive(Default)]
struct ReadySignal(std::sync::atomic::AtomicBool);

impl tented_bulkd::daemon::Lifecycle for ReadySignal {
    fn ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A daemon running in this process.
pub struct TestDaemon {
    pub ctx: Arc<Context>,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DaemonError>>,
}

impl TestDaemon {
    pub async fn start(settings: Settings) -> TestDaemon {
        // A restart in the same process: sled lets go of its folder lock only when its
        // background threads (a flush in progress) have dropped their handles, a moment
        // after the previous daemon returned. A new process would not wait at all.
        let (ctx, jobs) = wait_until(
            "the store's folder lock, released by the previous daemon",
            Duration::from_secs(5),
            || async {
                match tented_bulkd::daemon::build_context(settings.clone(), ApiKey::new("sim-key"))
                {
                    Ok(built) => Progress::Done(built),
                    Err(DaemonError::Store(tented_bulkd::store::StoreError::Locked { .. })) => {
                        Progress::NotYet("the store is locked".into())
                    }
                    Err(e) => Progress::Stop(format!("daemon context: {e}")),
                }
            },
        )
        .await;
        let shutdown = CancellationToken::new();
        let ready = Arc::new(ReadySignal::default());
        let handle = tokio::spawn(tented_bulkd::daemon::run_with_context(
            Arc::clone(&ctx),
            jobs,
            shutdown.clone(),
            Arc::clone(&ready) as Arc<dyn tented_bulkd::daemon::Lifecycle>,
        ));
        // Ready as the real binary's READY=1 means it: recovery done, the admin endpoint
        // bound (a test that asks it at once must not race its bind).
        wait_until("the daemon ready", WAIT, || async {
            if ready.0.load(Ordering::SeqCst) {
                Progress::Done(())
            } else if handle.is_finished() {
                Progress::Stop("the daemon task ended before it was ready".into())
            } else {
                Progress::NotYet(String::new())
            }
        })
        .await;
        TestDaemon {
            ctx,
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

    /// Waits until the sweeper has made `passes` whole passes that began after this call.
    /// Each pass tries to write pending results, expires what `poll.max_wait` ends, and
    /// wakes the submitter.
    ///
    /// For a daemon with nothing in flight (no poll due, no file arriving, nothing to send):
    /// the main loop's progress counter (the watchdog's) then moves once at the end of each
    /// sweeper pass and once per submitter step, and an idle submitter steps only when a
    /// pass wakes it (one wake-up may be pending). So `2 × (passes + 1)` moves include
    /// `passes + 1` pass ends: the last `passes` of them ends of passes begun after this call.
    pub async fn sweeper_passes(&self, passes: u64) {
        let from = self.ctx.health.progress();
        let moves = 2 * (passes + 1);
        wait_until(
            format!("{passes} whole passes of the sweeper"),
            WAIT,
            || async { self.ctx.health.progress() >= from + moves },
        )
        .await;
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

    pub fn daemon(&self) -> &TestDaemon {
        self.daemon.as_ref().expect("daemon running")
    }

    pub fn ctx(&self) -> &Arc<Context> {
        &self.daemon().ctx
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes the manifest elsewhere and renames it into the inbox, as writers should.
    pub fn drop_manifest(&self, file_name: &str, manifest: &Value) {
        drop_manifest(self.dir.path(), file_name, manifest);
    }

    pub fn drop_bytes(&self, file_name: &str, bytes: &[u8]) {
        drop_bytes(self.dir.path(), file_name, bytes);
    }

    pub fn result_path(&self, name: &str) -> PathBuf {
        self.path("outbox").join(format!("{name}.result.json"))
    }

    /// Waits for `outbox/NAME.result.json` and returns it, read through the typed
    /// result document.
    pub async fn wait_result(&self, name: &str, within: Duration) -> ResultDocument {
        wait_result_file(&self.result_path(name), within).await
    }

    /// The id of the manifest the store knows as `name`, which it must know.
    pub fn manifest_id(&self, name: &str) -> u64 {
        self.ctx()
            .store
            .manifest_named(name)
            .expect("reads")
            .expect("named")
    }

    pub fn read_json(&self, sub: &str) -> Option<Value> {
        std::fs::read(self.path(sub))
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("json"))
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.sim.calls()
    }

    /// Waits until the simulator's call log satisfies `condition`; returns the log.
    pub async fn wait_calls(
        &self,
        what: &str,
        condition: impl Fn(&[RecordedCall]) -> bool,
    ) -> Vec<RecordedCall> {
        wait_until(what, WAIT, || async {
            let calls = self.calls();
            condition(&calls).then_some(calls)
        })
        .await
    }

    /// Waits until the store holds a manifest named `name` whose record satisfies
    /// `condition` (`what` it stands for names the wait); returns its id.
    pub async fn wait_manifest(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&tented_bulkd::store::ManifestRecord) -> bool,
    ) -> u64 {
        let store = &self.ctx().store;
        wait_until(format!("{name}: {what}"), WAIT, || async {
            let id = store.manifest_named(name).expect("the store reads")?;
            let record = store
                .manifest(id)
                .expect("the store reads")
                .expect("the record");
            condition(&record).then_some(id)
        })
        .await
    }
}

/// Writes the manifest under `DIR/.staging-NAME` and renames it into `DIR/inbox`.
pub fn drop_manifest(dir: &Path, file_name: &str, manifest: &Value) {
    drop_bytes(
        dir,
        file_name,
        &serde_json::to_vec_pretty(manifest).expect("json"),
    );
}

pub fn drop_bytes(dir: &Path, file_name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir.join("inbox")).expect("inbox");
    let staging = dir.join(format!(".staging-{file_name}"));
    std::fs::write(&staging, bytes).expect("write staging");
    std::fs::rename(&staging, dir.join("inbox").join(file_name)).expect("rename into inbox");
}

/// Waits for a result file and returns it, read through the typed result document
/// (which refuses a file of any other shape).
pub async fn wait_result_file(path: &Path, within: Duration) -> ResultDocument {
    let bytes = wait_until(
        format!("the result file {}", path.display()),
        within,
        || async { std::fs::read(path).ok() },
    )
    .await;
    serde_json::from_slice(&bytes).expect("the result file is a result document")
}

/// The item of a result under `key` (its `client_item_id`, or `#INDEX`).
pub fn result_item<'a>(result: &'a ResultDocument, key: &str) -> &'a ItemResult {
    result
        .items
        .get(key)
        .unwrap_or_else(|| panic!("the result has no item `{key}`"))
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

/// A free port on loopback (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A loopback address with a free port, for `admin.listen`.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The simulator, listening on a free port of the loopback.
pub async fn start_simulator(config: SimConfig) -> Simulator {
    Simulator::start(config, "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

/// A header of `response` as text ("" when absent or not text).
pub fn header_text(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `GET http://ADMIN/healthz`: its status, or `None` when nothing answers.
pub async fn health(admin: &str) -> Option<u16> {
    reqwest::get(format!("http://{admin}/healthz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A POST over the control socket (`admin.socket`): (status, JSON answer).
pub async fn socket_post(socket: &Path, path: &str) -> (u16, serde_json::Value) {
    let mut response = tented_bulkd::cli::client::ask_socket(
        socket,
        hyper::Method::POST,
        path,
        Duration::from_secs(10),
    )
    .await
    .expect("the control socket answers");
    let status = response.status().as_u16();
    let body = tented_bulkd::cli::client::read_body(response.body_mut())
        .await
        .expect("the whole answer");
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}
