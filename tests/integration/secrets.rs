//! The API key never leaks (issue 10, point 2): one whole manifest through the real
//! binary with a distinctive key, then every output is searched for it: the daemon's
//! log at `debug`, the admin endpoint's `/status`, `/metrics` and `/healthz`, every file
//! the daemon wrote (results, retry manifests, the archive, the store's own files, as
//! bytes, a backup of the store among them), and what the CLI prints (`status`,
//! `check-config`, `list`, `show`, `backup`, in text and JSON).

use std::path::{Path, PathBuf};

use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// Distinctive, so that a match cannot be a coincidence.
const KEY: &str = "tbk_live_Zq7XsecretW4nK9pL2mV8";

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)
            .expect("the folder reads")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Fails when `haystack` holds the key, or its first or last half (a key cut or
/// wrapped in a message).
fn assert_no_key(what: &str, haystack: &[u8]) {
    let half = KEY.len() / 2;
    for needle in [KEY, &KEY[..half], &KEY[half..]] {
        let found = haystack
            .windows(needle.len())
            .position(|window| window == needle.as_bytes());
        if let Some(at) = found {
            let start = at.saturating_sub(80);
            let end = (at + needle.len() + 80).min(haystack.len());
            panic!(
                "{what} holds the API key at byte {at}: {}",
                String::from_utf8_lossy(&haystack[start..end])
            );
        }
    }
}

async fn get(admin: &str, path: &str) -> Vec<u8> {
    let response = reqwest::get(format!("http://{admin}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.bytes().await.expect("the body").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_appears_in_no_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("the work folder");
    let sim = start_simulator(SimConfig {
        api_key: KEY.to_owned(),
        failure_rate: 0.3,
        ..quick_sim()
    })
    .await;
    // The key file and the configuration lie outside `work`, the folder searched.
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, KEY).expect("write the key file");
    let admin = free_address();
    let config = write_config(
        dir.path(),
        &TestConfig::new(&work, &sim.base_url())
            .set("api", "key_file", key_file.display().to_string())
            .set("admin", "listen", admin.as_str())
            // A socket is no file to read: it lies outside `work` too.
            .set(
                "admin",
                "socket",
                dir.path().join("control.sock").display().to_string(),
            ),
    );
    let log = dir.path().join("daemon.log");
    let daemon = BinaryDaemon::run(&config, &log, &[("RUST_LOG", "debug")]);
    daemon.wait_ready().await.expect("the daemon gets ready");
    drop_manifest(&work, "secret.json", &bulk_manifest(40));
    let result_path = work.join("outbox/secret.result.json");
    let result = daemon
        .wait_for_file(&result_path, WAIT)
        .await
        .expect("the result file");
    let result: ResultDocument = serde_json::from_slice(&result).expect("a result document");
    // The key worked: items were created (a wrong key would reject them all).
    assert_eq!(result.counts.total, 40, "{result:?}");
    assert!(result.counts.completed > 0, "{result:?}");
    let calls = sim.calls();
    assert!(!calls.is_empty(), "the daemon called the simulator");

    // The admin endpoint.
    for path in ["/status", "/metrics", "/healthz"] {
        let body = get(&admin, path).await;
        assert!(!body.is_empty() || path == "/healthz", "{path} answers");
        assert_no_key(&format!("GET {path}"), &body);
    }
    // The CLI: what it prints, and a backup file of the store.
    let backup = work.join("store.backup");
    let backup_arg = backup.display().to_string();
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["check-config"],
        &["list"],
        &["list", "--json"],
        &["show", "secret", "--items"],
        &["show", "secret", "--json", "--items"],
        &["backup", backup_arg.as_str()],
    ] {
        let output = succeeded(
            command(args).arg("--config").arg(&config),
            &format!("{args:?}"),
        );
        assert!(!output.stdout.is_empty(), "{args:?} prints something");
        assert_no_key(&format!("{args:?} stdout"), &output.stdout);
        assert_no_key(&format!("{args:?} stderr"), &output.stderr);
    }
    daemon.sigterm().await.expect("SIGTERM exits 0");

    // Every file the daemon wrote, the store's included, as bytes.
    let files = files_under(&work);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&work).unwrap_or(f).display().to_string())
        .collect();
    for expected in [
        "outbox/secret.result.json",
        "archive/secret.json",
        "store.backup",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("state/")),
        "the store's files: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".retry.json")),
        "failed items give a retry manifest: {names:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).expect("the file reads");
        assert_no_key(&file.display().to_string(), &bytes);
    }
    // The log, at debug: it is long (requests, answers), and holds no key.
    let text = daemon.stderr();
    assert!(text.lines().count() > 20, "a debug log: {text}");
    assert!(text.contains("DEBUG"), "the log is at debug level");
    assert_no_key("the daemon's log", text.as_bytes());
}
