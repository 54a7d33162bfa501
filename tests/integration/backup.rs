//! Backup and restore (SPEC section 8), with the real binary: a snapshot while the daemon
//! runs, written atomically; restore only into an empty state folder; a restored store
//! starts its unfinished manifests paused, and sends nothing until `resume`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

fn config_in(dir: &Path, base_url: &str, admin: &str) -> std::path::PathBuf {
    write_config(
        dir,
        // Every manifest starts slow, so that a second chunk waits while a backup is taken.
        &TestConfig::new(dir, base_url)
            .set("admin", "listen", admin)
            .set("submit", "proven_for", "0s"),
    )
}

fn show(config: &Path, name: &str) -> Value {
    let (code, stdout, stderr) = cli(config, &["show", name, "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    serde_json::from_str(&stdout).expect("show --json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_running_restores_into_an_empty_state_with_unfinished_work_paused() {
    let sim = start_simulator(SimConfig {
        generation_time: (Duration::from_millis(1500), Duration::from_millis(2000)),
        ..quick_sim()
    })
    .await;
    let key = [("TENTED_API_KEY", "sim-key")];
    let first = tempfile::tempdir().expect("temp dir");
    let admin = free_address();
    let config = config_in(first.path(), &sim.base_url(), &admin);
    let daemon = BinaryDaemon::run(&config, &first.path().join("daemon.log"), &key);
    daemon.wait_ready().await.expect("the daemon gets ready");
    drop_manifest(first.path(), "done.json", &bulk_manifest(3));
    daemon
        .wait_for_file(&first.path().join("outbox/done.result.json"), START_WAIT)
        .await
        .expect("the first result");
    // A manifest whose first chunk is admitted and whose second waits (slow start).
    drop_manifest(first.path(), "busy.json", &bulk_manifest(40));
    wait_until("busy's first request admitted", START_WAIT, || async {
        let (_, stdout, _) = cli(&config, &["show", "busy", "--json"]);
        serde_json::from_str::<Value>(&stdout)
            .is_ok_and(|shown| shown["requests"][0]["state"] == "admitted")
    })
    .await;

    let backup = first.path().join("store.backup");
    std::fs::write(&backup, b"an older file, replaced whole").expect("write");
    let (code, stdout, stderr) = cli(&config, &["backup", backup.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("backup of") && stdout.contains("store.backup"),
        "{stdout}"
    );
    let bytes = std::fs::read(&backup).expect("the backup");
    assert!(bytes.starts_with(b"tented-bulkd backup 1\n"));
    // Customers' data: 0600, though the file it replaced was 0644 (the umask's default).
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&backup)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600, "the backup's mode is {mode:o}");
    let leftovers: Vec<_> = std::fs::read_dir(first.path())
        .expect("list")
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().contains("store.backup")
                && e.file_name() != "store.backup"
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
    let posts_at_backup = bulk_posts(&sim.calls()).len();
    assert_eq!(posts_at_backup, 2, "done's request and busy's first");
    daemon.sigterm().await.expect("SIGTERM exits 0");

    // Not into a state folder that holds a store.
    let (code, _, stderr) = cli(&config, &["restore", backup.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");

    // Into an empty one: offline, then a daemon on it.
    let second = tempfile::tempdir().expect("temp dir");
    let admin = free_address();
    let config = config_in(second.path(), &sim.base_url(), &admin);
    let (code, stdout, stderr) = cli(&config, &["restore", backup.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("1 unfinished manifest(s) start paused"),
        "{stdout}"
    );
    let daemon = BinaryDaemon::run(&config, &second.path().join("daemon.log"), &key)
        .labelled("the restored daemon");
    daemon
        .wait_ready()
        .await
        .expect("the restored daemon gets ready");
    let busy = show(&config, "busy");
    assert_eq!(busy["state"], "paused", "{busy}");
    let reason = busy["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("restored from a backup of ")
            && reason.ends_with(": requests sent after it may be sent again"),
        "{reason}"
    );
    assert_eq!(show(&config, "done")["state"], "finished");
    // What was admitted is polled to the end; nothing more is sent while paused.
    wait_until("busy's first chunk completed", START_WAIT, || async {
        show(&config, "busy")["counts"]["completed"] == 25
    })
    .await;
    assert_eq!(
        bulk_posts(&sim.calls()).len(),
        posts_at_backup,
        "nothing sent while paused"
    );

    let (code, stdout, _) = cli(&config, &["resume", "busy"]);
    assert_eq!(code, Some(0), "{stdout}");
    let result = daemon
        .wait_result(second.path(), "busy", START_WAIT)
        .await
        .expect("busy's result");
    assert_eq!(result.counts.completed, 40);
    // A new manifest gets an id after the restored ones: newest first in the list.
    drop_manifest(second.path(), "fresh.json", &bulk_manifest(1));
    daemon
        .wait_for_file(&second.path().join("outbox/fresh.result.json"), START_WAIT)
        .await
        .expect("fresh's result");
    let (_, stdout, _) = cli(&config, &["list", "--json"]);
    let list: Value = serde_json::from_str(&stdout).expect("JSON");
    let names: Vec<&str> = list["manifests"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["fresh", "busy", "done"]);
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

#[test]
fn backup_says_why_when_the_daemon_cannot_be_reached_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_in(dir.path(), "http://127.0.0.1:9", &free_address());
    let target = dir.path().join("keep.backup");
    std::fs::write(&target, b"precious").expect("write");
    let (code, _, stderr) = cli(&config, &["backup", target.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
    assert_eq!(std::fs::read(&target).expect("read"), b"precious");
}
