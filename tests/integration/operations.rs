//! The real binary as an operator meets it: exit codes (78 for an invalid configuration),
//! each error printed once, `check-config`, `status` when the daemon is unhealthy,
//! unreachable or silent, logs under systemd, `STATUS=` and the watchdog.

use std::path::Path;
use std::time::Duration;

use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// Runs the binary with `args` and returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = command(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// No line of `stderr` holds the same text twice (": X: X").
fn assert_no_repeated_cause(stderr: &str) {
    for line in stderr.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for pair in parts.windows(2) {
            assert_ne!(pair[0], pair[1], "a cause printed twice: {line}");
        }
    }
}

#[test]
fn every_command_that_reads_an_invalid_configuration_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[poll]\nintervall = \"10s\"\n").expect("write config");
    let config = path_arg(&config);
    for args in [
        vec!["run", "--config", &config],
        vec!["check-config", "--config", &config],
        vec!["status", "--config", &config],
        vec!["list", "--config", &config],
        vec!["show", "x", "--config", &config],
        vec!["pause", "x", "--config", &config],
        vec!["resume", "x", "--config", &config],
        vec!["cancel", "x", "--config", &config],
    ] {
        let (code, _, stderr) = run(&args, &[("TENTED_API_KEY", "k")]);
        assert_eq!(code, Some(78), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.contains("intervall"),
            "{args:?}: names the key: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // An invalid value names its key too; a missing --config file is a configuration error.
    let (code, _, stderr) = run(
        &["check-config", "--config", &config],
        &[("TENTED_BULKD__API__REQUESTS_PER_SECOND", "0")],
    );
    assert_eq!(code, Some(78), "{stderr}");
    let missing = path_arg(&dir.path().join("missing.toml"));
    let (code, _, stderr) = run(&["run", "--config", &missing], &[("TENTED_API_KEY", "k")]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
    // The simulator's own configuration too.
    let (code, _, stderr) = run(&["sim", "--failure-rate", "7"], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    // Usage errors are 2 (clap).
    let (code, _, _) = run(&["list", "--limit", "many"], &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_missing_or_unreadable_key_is_a_configuration_error_and_other_failures_exit_1_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9"),
    );
    let config_arg = path_arg(&config);
    let (code, _, stderr) = run(&["run", "--config", &config_arg], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("no API key"), "{stderr}");
    let key_file = path_arg(&dir.path().join("no-such-key"));
    let (code, _, stderr) = run(
        &["run", "--config", &config_arg],
        &[("TENTED_BULKD__API__KEY_FILE", &key_file)],
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("api.key_file"), "{stderr}");
    assert_no_repeated_cause(&stderr);

    // A state folder that cannot be made is not the configuration's syntax: exit 1, with
    // the OS's reason once.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "a file").expect("write");
    let state = path_arg(&blocker.join("state"));
    let (code, _, stderr) = run(
        &["run", "--config", &config_arg],
        &[
            ("TENTED_API_KEY", "k"),
            ("TENTED_BULKD__PATHS__STATE", &state),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.matches("Not a directory").count(), 1, "{stderr}");
    assert_no_repeated_cause(&stderr);
}

#[test]
fn check_config_prints_the_effective_settings_with_the_key_redacted_and_its_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("api_key"), "secret-key-123\n").expect("write key");
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:8787")
            .set("api", "key_file", path_arg(&dir.path().join("api_key")))
            .set("api", "key", "another-secret"),
    );
    let config_arg = path_arg(&config);
    let (code, stdout, stderr) = run(
        &["check-config", "--config", &config_arg],
        &[("TENTED_BULKD__API__REQUESTS_PER_SECOND", "7")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stdout.contains("secret-key-123") && !stdout.contains("another-secret"),
        "{stdout}"
    );
    assert!(stdout.contains("key = \"[redacted]\""), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "from api.key_file ({})",
            dir.path().join("api_key").display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("requests_per_second = 7"),
        "the environment counts: {stdout}"
    );
    assert!(
        stdout.contains("interval = \"200ms\""),
        "the file counts: {stdout}"
    );
    assert!(stdout.contains(&config_arg), "names the file: {stdout}");
    // What it prints is a configuration that loads again as the same settings.
    let printed = dir.path().join("printed.toml");
    let without_comments: String = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&printed, without_comments.replace("\"[redacted]\"", "\"\"")).expect("write");
    let (code, again, stderr) = run(
        &["check-config", "--config", &path_arg(&printed)],
        &[("TENTED_BULKD__API__REQUESTS_PER_SECOND", "7")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let settings_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(" = ") && !l.starts_with("key =") && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(settings_lines(&again), settings_lines(&stdout));

    // The environment variable is a source too, named as such; with none, exit 78.
    let plain = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:8787"),
    );
    let (code, stdout, _) = run(
        &["check-config", "--config", &path_arg(&plain)],
        &[("TENTED_API_KEY", "k")],
    );
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("from the TENTED_API_KEY environment variable"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&["check-config", "--config", &path_arg(&plain)], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("no API key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exits_1_when_the_daemon_cannot_be_reached_or_does_not_answer_saying_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on this port.
    let closed = free_address();
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9").set("admin", "listen", closed.as_str()),
    );
    let config_arg = path_arg(&config);
    let (code, stdout, stderr) = run(&["status", "--config", &config_arg], &[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot reach the daemon") && stderr.contains(&closed),
        "{stderr}"
    );
    assert_no_repeated_cause(&stderr);

    // Something accepts the connection but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9").set(
            "admin",
            "listen",
            silent_addr.as_str(),
        ),
    );
    let started = std::time::Instant::now();
    let (code, _, stderr) = run(
        &["status", "--config", &path_arg(&config), "--timeout", "1s"],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the timeout holds"
    );
    drop(silent);
}

/// `DEVICE:INODE` of a file, as systemd writes `JOURNAL_STREAM` for the stream it hands over.
fn device_and_inode(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat");
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Runs a daemon with its stderr in `log` and `env` added, drops a good and a bad
/// manifest, waits for both results, stops it, and returns its stderr.
async fn daemon_log(dir: &Path, env: &[(&str, &str)], log_format: &str) -> String {
    let sim = start_simulator(quick_sim()).await;
    let config = write_config(
        dir,
        &TestConfig::new(dir, &sim.base_url()).set("log", "format", log_format),
    );
    let log = dir.join("daemon.log");
    std::fs::write(&log, "").expect("create the log");
    let journal = device_and_inode(&log);
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (*k, if *v == "@log" { journal.as_str() } else { *v }))
        .chain([("TENTED_API_KEY", "sim-key")])
        .collect();
    // The harness's command sets NO_COLOR; this daemon must decide without it.
    let daemon = BinaryDaemon::run_unsetting(&config, &log, &env, &["NO_COLOR"]);
    daemon.wait_ready().await.expect("the daemon gets ready");
    drop_manifest(dir, "good.json", &bulk_manifest(2));
    drop_bytes(dir, "bad.json", b"[1]");
    for name in ["good", "bad"] {
        daemon
            .wait_for_file(&dir.join(format!("outbox/{name}.result.json")), START_WAIT)
            .await
            .expect("the result");
    }
    daemon.sigterm().await.expect("SIGTERM exits 0");
    daemon.stderr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_every_line_carries_its_priority_and_no_timestamp_and_never_ansi() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = daemon_log(dir.path(), &[("JOURNAL_STREAM", "@log")], "text").await;
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI when stderr is not a terminal:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 4, "{stderr}");
    for line in &lines {
        let rest = line
            .strip_prefix("<6>")
            .or_else(|| line.strip_prefix("<4>"))
            .or_else(|| line.strip_prefix("<3>"))
            .unwrap_or_else(|| panic!("no priority prefix: {line}"));
        assert!(
            !rest.trim_start().starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp of its own: {line}"
        );
        // The priority is the level: no level word after it, no space before the text.
        assert!(!rest.starts_with(' '), "a space after the priority: {line}");
        for word in ["ERROR", "WARN", "INFO", "DEBUG"] {
            assert!(!rest.starts_with(word), "the level twice: {line}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("manifest rejected")),
        "the warning is a warning: {stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("is ready")),
        "{stderr}"
    );

    // JSON under journald: the priority, then one flat object per line.
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = daemon_log(dir.path(), &[("JOURNAL_STREAM", "@log")], "json").await;
    for line in stderr.lines() {
        let (prefix, json) = line.split_at(3);
        assert!(["<3>", "<4>", "<6>"].contains(&prefix), "{line}");
        let value: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("timestamp").is_none(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_journald_lines_have_timestamps_no_priority_and_no_ansi() {
    let dir = tempfile::tempdir().expect("temp dir");
    // JOURNAL_STREAM inherited from a service whose stderr this is not.
    let stderr = daemon_log(dir.path(), &[("JOURNAL_STREAM", "1:1")], "text").await;
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI when stderr is not a terminal:\n{stderr}"
    );
    for line in stderr.lines() {
        assert!(!line.starts_with('<'), "{line}");
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp first: {line}"
        );
    }
}

/// The datagrams a daemon sends to `NOTIFY_SOCKET`, with when they came.
struct NotifyListener {
    path: std::path::PathBuf,
    received: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NotifyListener {
    fn bind(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a read timeout");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let mut list = into.lock().unwrap_or_else(|p| p.into_inner());
                    for line in text.lines() {
                        list.push((std::time::Instant::now(), line.to_string()));
                    }
                }
            }
        });
        NotifyListener {
            path,
            received,
            stop,
        }
    }

    fn lines(&self) -> Vec<(std::time::Instant, String)> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_a_status_line_with_live_counts_and_keep_alives_at_half_watchdog_usec()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(SimConfig {
        generation_time: (Duration::from_secs(4), Duration::from_secs(5)),
        ..quick_sim()
    })
    .await;
    let notify = NotifyListener::bind(dir.path());
    let config = write_config(dir.path(), &TestConfig::new(dir.path(), &sim.base_url()));
    let socket = path_arg(&notify.path);
    let daemon = BinaryDaemon::run_with_watchdog_pid(
        &config,
        &dir.path().join("daemon.log"),
        &[
            ("TENTED_API_KEY", "sim-key"),
            ("NOTIFY_SOCKET", &socket),
            // A 2 s watchdog: a keep-alive about every second (the poll floor here is
            // 200 ms, so a period taken from it would ping five times as often).
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    daemon.wait_ready().await.expect("the daemon gets ready");
    drop_manifest(dir.path(), "live.json", &bulk_manifest(30));
    let status = wait_until(
        "a STATUS= line with the manifest in flight",
        START_WAIT,
        || async {
            notify
                .lines()
                .into_iter()
                .map(|(_, line)| line)
                .find(|line| {
                    line.starts_with("STATUS=")
                        && line.contains("items in flight")
                        && line.contains("next poll in")
                })
        },
    )
    .await;
    assert!(
        status.contains("1 manifest sending") || status.contains("0 manifests sending"),
        "{status}"
    );
    let in_flight: u64 = status
        .split(", ")
        .find_map(|part| part.strip_suffix(" items in flight"))
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a count of items in flight: {status}"));
    // The line is refreshed every 5 s: some of the first chunk may have finished by then.
    assert!((1..=30).contains(&in_flight), "{status}");
    // Keep-alives: at least three, about a second apart.
    let pings = wait_until("three WATCHDOG=1", START_WAIT, || async {
        let pings: Vec<std::time::Instant> = notify
            .lines()
            .into_iter()
            .filter(|(_, line)| line == "WATCHDOG=1")
            .map(|(at, _)| at)
            .collect();
        (pings.len() >= 3).then_some(pings)
    })
    .await;
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(800),
            "keep-alives {gap:?} apart"
        );
    }
    daemon.sigterm().await.expect("SIGTERM exits 0");
    let lines: Vec<String> = notify.lines().into_iter().map(|(_, l)| l).collect();
    assert!(lines.iter().any(|l| l == "READY=1"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "STOPPING=1"), "{lines:?}");
}

/// The log as an operator reads it (issue 18): a rejected manifest's "manifest taken"
/// comes before its "result written"; a create request's line names its item by
/// `client_item_id`; a 401 pause logs one error (a minute), not a warning and an info
/// line at every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_in_order_names_items_and_keeps_a_401_pause_quiet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(SimConfig {
        generation_time: (Duration::from_secs(4), Duration::from_secs(5)),
        ..quick_sim()
    })
    .await;
    let (_, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;

    drop_bytes(dir.path(), "broken.json", b"{ not json");
    daemon
        .wait_result(dir.path(), "broken", Duration::from_secs(10))
        .await
        .expect("a result for the broken manifest");
    let create = serde_json::json!({"kind": "create", "items": [
        {"client_item_id": "page-7", "name": "Seven", "prompt": "A page"}]});
    drop_manifest(dir.path(), "single.json", &create);
    drop_manifest(dir.path(), "slow.json", &bulk_manifest(3));
    daemon
        .wait_for_line("bulk request admitted", Duration::from_secs(10))
        .await
        .expect("the bulk job admitted");
    // The key stops working while the job is polled.
    sim.set_api_key("another-key");
    let before = daemon.stderr().lines().count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = daemon.stderr();
    let during: Vec<&str> = log.lines().skip(before).collect();
    sim.set_api_key("sim-key");
    daemon.sigterm().await.expect("stops");
    let refused = sim.calls().iter().filter(|c| c.status == Some(401)).count();
    assert!(
        refused >= 2,
        "the pause was tried: {refused} calls answered 401"
    );

    let at = |needle: &str, manifest: &str| {
        log.lines()
            .position(|l| l.contains(needle) && l.contains(&format!("manifest={manifest}")))
    };
    let taken = at("manifest taken from the inbox", "broken").expect("taken is logged");
    let written = at("result written", "broken").expect("result is logged");
    assert!(taken < written, "taken after its result:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("sending a create request") && l.contains("page-7")),
        "the create request's line names page-7:\n{log}"
    );
    let errors = during
        .iter()
        .filter(|l| l.contains("401 Unauthorized"))
        .count();
    assert!(
        errors <= 1,
        "one 401 error a minute at most:\n{}",
        during.join("\n")
    );
    for noise in ["WARN", "request budget"] {
        assert!(
            !during.iter().any(|l| l.contains(noise)),
            "`{noise}` logged during a 401 pause:\n{}",
            during.join("\n")
        );
    }
}

/// A refused control goes to stderr with the program's prefix, as every error does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_control_is_an_error_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let (config, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;
    let (code, stdout, stderr) = cli(&config, &["pause", "nobody"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.starts_with("tented-bulkd: "), "stderr: {stderr}");
    // A duration prints as it would be written (humantime's own form read 90d as
    // `2months 29days 2h 52m 48s`).
    let output = command(["check-config", "--config"])
        .arg(&config)
        .env("TENTED_API_KEY", "sim-key")
        .output()
        .expect("check-config runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("store = \"90d\""), "{stdout}");
    daemon.sigterm().await.expect("stops");
}

/// A store with a record and no format mark, as the development builds before format 3
/// left theirs, written with sled itself (no code of today writes one).
fn old_store(state: &Path) {
    let tree = sled_tree(state);
    tree.insert(b"Ndaily", &1u64.to_be_bytes()[..])
        .expect("insert");
    tree.flush().expect("flush");
}

/// The store's tree, opened with sled itself once its lock is free (sled's threads hold
/// it a moment after the last handle of a process is dropped).
fn sled_tree(state: &Path) -> sled::Tree {
    let started = std::time::Instant::now();
    loop {
        match sled::open(state) {
            Ok(db) => return db.open_tree("pipeline").expect("the tree"),
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("waiting for sled's lock: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("sled does not open {}: {e}", state.display()),
        }
    }
}

/// Waits until no handle of this process holds sled's lock on the store.
fn sled_let_go(state: &Path) {
    let started = std::time::Instant::now();
    let file = std::fs::File::open(state.join("db")).expect("sled's db");
    while file.try_lock().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sled's lock stays"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_an_older_format_stops_start_up_with_exit_78_naming_the_folder_and_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    old_store(&state);
    sled_let_go(&state);
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9"),
    );
    let daemon = BinaryDaemon::run(
        &config,
        &dir.path().join("daemon.log"),
        &[("TENTED_API_KEY", "k")],
    );
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    let stderr = daemon.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{stderr}");
    for needed in [
        format!("the store at {}", state.display()),
        "store format 1 or 2".to_string(),
        "reads format 3 only".to_string(),
        "left untouched".to_string(),
    ] {
        assert!(stderr.contains(&needed), "`{needed}` in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    let records: Vec<_> = sled_tree(&state)
        .iter()
        .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .expect("reads");
    assert_eq!(
        records,
        vec![(b"Ndaily".to_vec(), 1u64.to_be_bytes().to_vec())],
        "its records are as they were: no mark written"
    );
}
