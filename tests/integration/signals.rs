//! The real binary and its signals: SIGHUP reloads the API key; SIGTERM stops cleanly.

use std::path::Path;

use serde_json::Value;
use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// The test configuration for the real binary, its key read from `DIR/api_key`.
fn config_with_key_file(dir: &Path, base_url: &str) -> TestConfig {
    TestConfig::new(dir, base_url).set("api", "key_file", dir.join("api_key").display().to_string())
}

/// Waits for `DIR/outbox/NAME.result.json`, written by `daemon`, and returns it.
async fn wait_result(daemon: &BinaryDaemon, dir: &Path, name: &str) -> ResultDocument {
    daemon
        .wait_result(dir, name, START_WAIT)
        .await
        .expect("the result file, a result document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_corrected_key_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "a-wrong-key\n").expect("write the key file");
    let admin = free_address();
    let (config, daemon) = run_until_ready(
        dir.path(),
        &config_with_key_file(dir.path(), &sim.base_url()).set("admin", "listen", admin.as_str()),
        &[],
    )
    .await;

    // The wrong key: the first call is refused and health turns red; nothing is failed.
    drop_manifest(dir.path(), "m.json", &bulk_manifest(5));
    wait_until("/healthz answering 503", START_WAIT, || async {
        match health(&admin).await {
            Some(503) => Progress::Done(()),
            other => Progress::NotYet(format!("{other:?}; stderr:\n{}", daemon.stderr_tail(15))),
        }
    })
    .await;
    assert!(!dir.path().join("outbox/m.result.json").exists());
    // `status` says so, with a header row, and exits 1.
    let output = command(["status", "--config"])
        .arg(&config)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("UNHEALTHY"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().take(3).eq(["NAME", "KIND", "STATE"])),
        "a header row: {stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unhealthy"));

    // The operator fixes the key file and sends SIGHUP: calls resume, the manifest completes.
    std::fs::write(&key_file, "sim-key\n").expect("write the key file");
    daemon.signal("HUP").expect("SIGHUP is sent");
    let result = wait_result(&daemon, dir.path(), "m").await;
    assert_eq!(result.counts.completed, 5);
    assert_eq!(health(&admin).await, Some(200));
    let logs = daemon.stderr();
    assert!(
        !logs.contains("a-wrong-key") && !logs.contains("sim-key"),
        "the key never reaches the log"
    );
    assert_eq!(
        bulk_posts(&sim.calls())
            .iter()
            .filter(|c| c.status == Some(202))
            .count(),
        1
    );

    // The write probe stays between probes, hidden and empty.
    let probe = dir.path().join("outbox/.tented-bulkd-write-probe");
    assert_eq!(std::fs::metadata(&probe).map(|m| m.len()).ok(), Some(0));

    // SIGTERM: a clean exit, status 0, well within 15 s, and no probe file left behind.
    daemon.sigterm().await.expect("SIGTERM exits 0");
    for folder in ["state", "outbox", "archive"] {
        let probe = dir.path().join(folder).join(".tented-bulkd-write-probe");
        assert!(!probe.exists(), "{} is left behind", probe.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_key_or_with_a_bad_config_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No key anywhere.
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9"),
    );
    let output = command(["run", "--config"])
        .arg(&config)
        .output()
        .expect("the binary runs");
    assert_eq!(
        output.status.code(),
        Some(78),
        "an invalid configuration: EX_CONFIG"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no API key"), "{stderr}");

    // An unknown key in the file names the key.
    std::fs::write(&config, "[poll]\nintervall = \"10s\"\n").expect("write config");
    let output = command(["run", "--config"])
        .arg(&config)
        .env("TENTED_API_KEY", "k")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("intervall"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_per_item_and_exits_one_when_anything_would_be_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&bulk_manifest(3)).expect("json"))
        .expect("write manifest");
    let output = succeeded(command(["validate"]).arg(&good), "validate good.json");
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 accepted, 0 rejected"));

    let mut manifest = bulk_manifest(3);
    manifest["items"][1]["custom_page_alias"] = serde_json::json!("Admin");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&manifest).expect("json")).expect("write manifest");
    let output = command(["validate"])
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("item 1 `row-001`: rejected"), "{stdout}");
    assert!(stdout.contains("custom_page_alias"), "{stdout}");

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, b"{\"items\": [}").expect("write manifest");
    let output = command(["validate"])
        .arg(&broken)
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("REJECTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cancel_and_resume_talk_to_the_running_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(SimConfig {
        templates: vec!["tpl_other".into()],
        ..quick_sim()
    })
    .await;
    std::fs::write(dir.path().join("api_key"), "sim-key").expect("write the key file");
    let admin = free_address();
    let (config, daemon) = run_until_ready(
        dir.path(),
        &config_with_key_file(dir.path(), &sim.base_url()).set("admin", "listen", admin.as_str()),
        &[],
    )
    .await;
    assert_eq!(health(&admin).await, Some(200), "healthy once ready");
    let out = command(["status", "--config"])
        .arg(&config)
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(0), "healthy: exit 0");
    // A broken template: the threshold pauses the manifest after one chunk.
    drop_manifest(dir.path(), "broken.json", &bulk_manifest(60));
    let cli = |args: &[&str]| {
        command(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("the binary runs")
    };
    let text = wait_until(
        "`status` to show the manifest paused",
        START_WAIT,
        || async {
            let out = cli(&["status", "--json"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("\"paused\"") {
                Progress::Done(text)
            } else {
                Progress::NotYet(text)
            }
        },
    )
    .await;
    assert!(text.contains("failure threshold"), "{text}");
    let out = cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("broken"));
    let out = cli(&["resume", "nope"]);
    assert!(!out.status.success());
    let out = cli(&["cancel", "broken"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("35 unsent items"));
    let result = wait_result(&daemon, dir.path(), "broken").await;
    assert_eq!(result.counts.canceled, 35);
    assert_eq!(result.counts.rejected, 25);
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_json_object_per_line_and_name_the_manifest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    std::fs::write(dir.path().join("api_key"), "sim-key").expect("write the key file");
    let (_, daemon) = run_until_ready(
        dir.path(),
        &config_with_key_file(dir.path(), &sim.base_url()).set("log", "format", "json"),
        &[],
    )
    .await;
    drop_manifest(dir.path(), "jsonlog.json", &bulk_manifest(2));
    wait_result(&daemon, dir.path(), "jsonlog").await;
    daemon.sigterm().await.expect("SIGTERM exits 0");
    let lines: Vec<Value> = daemon
        .stderr_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3);
    // Flat: the event's fields beside the message, not under "fields".
    assert!(lines
        .iter()
        .all(|l| l.get("fields").is_none() && l["message"].is_string()));
    assert!(lines
        .iter()
        .any(|l| l["manifest"] == "jsonlog" && l["bulk_job_id"].is_string()));
    // Numbers as numbers (never "Some(2)").
    let admitted = lines
        .iter()
        .find(|l| l["message"] == "bulk request admitted")
        .expect("the admission is logged");
    assert_eq!(admitted["accepted"], 2, "{admitted}");
    let sent = lines
        .iter()
        .find(|l| l["message"] == "sending a bulk request")
        .expect("the request is logged");
    assert!(sent["items"].is_u64() && sent["seq"].is_u64(), "{sent}");
    assert!(!daemon.stderr().contains("Some("), "{}", daemon.stderr());
}
