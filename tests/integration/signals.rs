//! The real binary and its signals: SIGHUP reloads the API key; SIGTERM stops cleanly.


use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use tented_bulkd::simulator::{SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_tented-bulkd");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn write_config(dir: &Path, base_url: &str, admin: &str, key_file: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"
[api]
base_url = "{base_url}"
key_file = "{key}"
timeout = "3s"
requests_per_second = 200

[poll]
interval = "200ms"

[paths]
inbox = "{d}/inbox"
outbox = "{d}/outbox"
archive = "{d}/archive"
state = "{d}/state"

[inbox]
settle = "150ms"
rescan = "500ms"

[admin]
listen = "{admin}"
"#,
        key = key_file.display(),
        d = dir.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn start(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env_remove("TENTED_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("the binary starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(admin: &str) -> Option<u16> {
    reqwest::get(format!("http://{admin}/healthz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_corrected_key_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(quick_sim(), "127.0.0.1:0").await.unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "a-wrong-key\n").unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &sim.base_url(), &admin, &key_file);
    let log = dir.path().join("daemon.log");
    let mut child = start(&config, &log);

    // The wrong key: the first call is refused and health turns red; nothing is failed.
    let staging = dir.path().join("m.json.partial");
    std::fs::write(&staging, serde_json::to_vec(&bulk_manifest(5)).unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !dir.path().join("inbox").exists() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&staging, dir.path().join("inbox/m.json")).unwrap();
    while health(&admin).await != Some(503) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never turned red: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.path().join("outbox/m.result.json").exists());

    // The operator fixes the key file and sends SIGHUP: calls resume, the manifest completes.
    std::fs::write(&key_file, "sim-key\n").unwrap();
    signal(&child, "HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let result_path = dir.path().join("outbox/m.result.json");
    while !result_path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result after SIGHUP: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    assert_eq!(result["counts"]["completed"], 5);
    assert_eq!(health(&admin).await, Some(200));
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
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

    // SIGTERM: a clean exit, status 0, well within 15 s.
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_key_or_with_a_bad_config_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // No key anywhere.
    let config = write_config(dir.path(), "http://127.0.0.1:9", "", Path::new(""));
    let output = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("TENTED_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no API key"), "{stderr}");

    // An unknown key in the file names the key.
    std::fs::write(&config, "[poll]\nintervall = \"10s\"\n").unwrap();
    let output = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("TENTED_API_KEY", "k")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("intervall"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_per_item_and_exits_one_when_anything_would_be_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&bulk_manifest(3)).unwrap()).unwrap();
    let output = Command::new(BIN)
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 accepted, 0 rejected"));

    let mut manifest = bulk_manifest(3);
    manifest["items"][1]["custom_page_alias"] = serde_json::json!("Admin");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let output = Command::new(BIN)
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("item 1 `row-001`: rejected"), "{stdout}");
    assert!(stdout.contains("custom_page_alias"), "{stdout}");

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, b"{\"items\": [}").unwrap();
    let output = Command::new(BIN)
        .arg("validate")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("REJECTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cancel_and_resume_talk_to_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            templates: vec!["tpl_other".into()],
            ..quick_sim()
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "sim-key").unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &sim.base_url(), &admin, &key_file);
    let log = dir.path().join("daemon.log");
    let mut child = start(&config, &log);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while health(&admin).await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken template: the threshold pauses the manifest after one chunk.
    let staging = dir.path().join("b.partial");
    std::fs::write(&staging, serde_json::to_vec(&bulk_manifest(60)).unwrap()).unwrap();
    std::fs::rename(&staging, dir.path().join("inbox/broken.json")).unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    loop {
        let out = cli(&["status", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("\"paused\"") {
            assert!(text.contains("failure threshold"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paused: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let result_path = dir.path().join("outbox/broken.result.json");
    while !result_path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    assert_eq!(result["counts"]["canceled"], 35);
    assert_eq!(result["counts"]["rejected"], 25);
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15))
        .await
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_json_object_per_line_and_name_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(quick_sim(), "127.0.0.1:0").await.unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "sim-key").unwrap();
    let config = write_config(dir.path(), &sim.base_url(), "", &key_file);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = start(&config, &log);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !dir.path().join("inbox").exists() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let staging = dir.path().join("j.partial");
    std::fs::write(&staging, serde_json::to_vec(&bulk_manifest(2)).unwrap()).unwrap();
    std::fs::rename(&staging, dir.path().join("inbox/jsonlog.json")).unwrap();
    while !dir.path().join("outbox/jsonlog.result.json").exists() {
        assert!(tokio::time::Instant::now() < deadline, "no result");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(15))
        .await
        .success());
    let logs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3);
    assert!(lines
        .iter()
        .any(|l| l["fields"]["manifest"] == "jsonlog" && l["fields"]["bulk_job_id"].is_string()));
}
