//! Disk full (SPEC section 8), on real full file systems: a small tmpfs mounted for the
//! outbox, the archive or the state folder, filled to the last byte. (sled 0.34 keeps
//! the first I/O error of its log for good: the daemon opens its store again, in the same
//! process, once the folder has room.) Nothing is lost, the daemon never
//! exits, `/healthz` is red (naming the folder) while it cannot write, and it goes on by
//! itself once space is back.
//!
//! These tests mount file systems, which needs root (CI and the sessions run as root).
//! Where mounting is impossible they fail, saying so: they never pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        Tmpfs::mount_with(path, &format!("size={size},mode=0755"))
    }

    /// A tmpfs with these mount options (`size=…,nr_inodes=…`).
    fn mount_with(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(out) if out.status.success() => Tmpfs { path: path.to_path_buf() },
            Ok(out) => panic!(
                "mounting a tmpfs is impossible here ({}): the disk-full tests need root and tmpfs",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("mounting a tmpfs is impossible here (cannot run mount: {e}): the disk-full tests need root and tmpfs"),
        }
    }

    /// Fills the file system to the last byte with `filler`; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // Smaller writes take what a block could not.
        loop {
            match file.write(&[0u8; 64]) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn healthz(admin: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{admin}/healthz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// Starts the real daemon with its `folder` ("outbox" or "archive") on a full tmpfs;
/// returns the daemon, the admin address, the mount and the filler.
async fn daemon_with_full(
    dir: &Path,
    folder: &str,
    base_url: &str,
) -> (BinaryDaemon, String, Tmpfs, PathBuf) {
    let mount = Tmpfs::mount(&dir.join(folder), "256k");
    let filler = mount.fill();
    let (_, daemon, admin) = daemon_ready(dir, base_url).await;
    (daemon, admin, mount, filler)
}

/// The real binary, ready, with its admin endpoint: (its config, it, the endpoint).
async fn daemon_ready(dir: &Path, base_url: &str) -> (PathBuf, BinaryDaemon, String) {
    let admin = free_address();
    let (config, daemon) = run_until_ready(
        dir,
        &TestConfig::new(dir, base_url).set("admin", "listen", admin.as_str()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;
    (config, daemon, admin)
}

async fn wait_health(admin: &str, daemon: &BinaryDaemon, want: u16, mentions: &str) -> String {
    wait_until(
        format!("/healthz {want} mentioning `{mentions}`"),
        START_WAIT,
        || async {
            match healthz(admin).await {
                Some((status, text)) if status == want && text.contains(mentions) => {
                    Progress::Done(text)
                }
                other => {
                    Progress::NotYet(format!("{other:?}; stderr:\n{}", daemon.stderr_tail(10)))
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_keeps_the_result_pending_turns_health_red_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let (daemon, admin, _mount, filler) =
        daemon_with_full(dir.path(), "outbox", &sim.base_url()).await;
    let red = wait_health(&admin, &daemon, 503, "paths.outbox").await;
    assert!(red.contains("No space left on device"), "{red}");

    drop_manifest(dir.path(), "full.json", &bulk_manifest(3));
    daemon
        .wait_for_line("the result is not written yet", START_WAIT)
        .await
        .expect("the log says the result waits");
    assert!(
        daemon.stderr().contains("cannot write to paths.outbox"),
        "the log says why"
    );
    assert!(!dir.path().join("outbox/full.result.json").exists());
    assert!(
        daemon.exited().is_none(),
        "the daemon never exits for a full disk"
    );

    // Space is back: the result follows by itself, and health turns green.
    std::fs::remove_file(&filler).expect("free the space");
    let result = daemon
        .wait_result(dir.path(), "full", START_WAIT)
        .await
        .expect("the result once space is back");
    assert_eq!(result.counts.completed, 3);
    wait_health(&admin, &daemon, 200, "ok").await;
    assert_eq!(bulk_posts(&sim.calls()).len(), 1, "nothing sent twice");
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_archive_keeps_the_manifest_in_the_inbox_until_it_can_be_moved() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let (daemon, admin, _mount, filler) =
        daemon_with_full(dir.path(), "archive", &sim.base_url()).await;
    wait_health(&admin, &daemon, 503, "paths.archive").await;
    drop_manifest(dir.path(), "kept.json", &bulk_manifest(2));
    daemon
        .wait_for_line("cannot move", START_WAIT)
        .await
        .expect("the log says the manifest cannot be moved");
    assert!(
        dir.path().join("inbox/kept.json").exists(),
        "the manifest stays in the inbox"
    );
    assert!(daemon.exited().is_none());

    std::fs::remove_file(&filler).expect("free the space");
    let archived = dir.path().join("archive/kept.json");
    wait_until("the manifest archived", START_WAIT, || async {
        archived.exists() && !dir.path().join("inbox/kept.json").exists()
    })
    .await;
    let result = daemon
        .wait_result(dir.path(), "kept", START_WAIT)
        .await
        .expect("the result");
    assert_eq!(result.counts.completed, 2);
    assert_eq!(bulk_posts(&sim.calls()).len(), 1, "taken once, sent once");
    wait_health(&admin, &daemon, 200, "ok").await;
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_folder_keeps_the_manifest_in_the_inbox_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let mount = Tmpfs::mount(&dir.path().join("state"), "8m");
    let (config, daemon, admin) = daemon_ready(dir.path(), &sim.base_url()).await;
    drop_manifest(dir.path(), "before.json", &bulk_manifest(2));
    daemon
        .wait_for_file(&dir.path().join("outbox/before.result.json"), START_WAIT)
        .await
        .expect("a result while there is room");
    let filler = mount.fill();
    wait_health(&admin, &daemon, 503, "paths.state").await;
    drop_manifest(dir.path(), "during.json", &bulk_manifest(40));
    daemon
        .wait_for_line("intake failed", START_WAIT)
        .await
        .expect("the log says the manifest could not be taken");
    assert!(
        dir.path().join("inbox/during.json").exists(),
        "the manifest stays in the inbox"
    );
    assert!(
        daemon.exited().is_none(),
        "the daemon never exits for a full disk"
    );
    std::fs::remove_file(&filler).expect("free the space");
    let result = daemon
        .wait_result(dir.path(), "during", START_WAIT)
        .await
        .expect("the result once space is back");
    assert_eq!(result.counts.completed, 40);
    assert!(
        daemon.stderr().contains("opening the store again"),
        "{}",
        daemon.stderr_tail(20)
    );
    wait_health(&admin, &daemon, 200, "ok").await;
    // Nothing was lost or sent twice: the earlier manifest is still known, once each.
    let sent = sent_client_ids(&sim.calls());
    assert_eq!(sent.len(), 42, "2 + 40 items, each sent once");
    let out = command(["list", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("\"before\"") && stdout.contains("\"during\""),
        "{stdout}"
    );
    daemon
        .sigterm()
        .await
        .expect("SIGTERM exits 0 (the same process throughout)");
}

/// SPEC 8: an answer to a create request that arrives while the state disk is full is
/// kept until it can be recorded; once space is back (and the store opened again) its
/// items go on as admitted: not `unknown`, not sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answer_arriving_on_a_full_state_disk_is_recorded_once_space_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every answer takes 2 s: the disk fills while the create request is on the wire.
    let sim = start_simulator(SimConfig {
        latency: (Duration::from_secs(2), Duration::from_secs(2)),
        ..quick_sim()
    })
    .await;
    let mount = Tmpfs::mount(&dir.path().join("state"), "8m");
    let (_, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;
    drop_manifest(dir.path(), "onwire.json", &bulk_manifest(25));
    wait_until("the create request on the wire", START_WAIT, || async {
        let posts = bulk_posts(&sim.calls()).len();
        if posts > 0 {
            Progress::Done(())
        } else {
            Progress::NotYet(daemon.stderr_tail(5))
        }
    })
    .await;
    let filler = mount.fill();
    daemon
        .wait_for_line("is kept in memory", START_WAIT)
        .await
        .expect("the log says the answer waits in memory");
    assert!(
        daemon.exited().is_none(),
        "the daemon never exits for a full disk"
    );
    std::fs::remove_file(&filler).expect("free the space");
    let result = daemon
        .wait_result(dir.path(), "onwire", START_WAIT)
        .await
        .expect("the result once space is back");
    assert_eq!(result.counts.completed, 25, "{:?}", result.counts);
    assert_eq!(result.counts.unknown, 0, "{:?}", result.counts);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("opening the store again")
            && stderr.contains("recorded the answer kept in memory"),
        "{}",
        daemon.stderr_tail(30)
    );
    assert_eq!(bulk_posts(&sim.calls()).len(), 1, "nothing sent twice");
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

/// Room for bytes but no inode left: no result can be created, though the probe's own file
/// can still be filled. Health says so (the probe checks the folder's inodes and renames
/// its file), and turns green once inodes are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_out_of_inodes_turns_health_red_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let mount = Tmpfs::mount_with(&dir.path().join("outbox"), "size=1m,nr_inodes=32,mode=0755");
    let (_, daemon, admin) = daemon_ready(dir.path(), &sim.base_url()).await;
    wait_health(&admin, &daemon, 200, "").await;
    let mut fillers = Vec::new();
    while let Ok(file) = std::fs::File::create(mount.path.join(format!("f{}", fillers.len()))) {
        drop(file);
        fillers.push(mount.path.join(format!("f{}", fillers.len())));
    }
    assert!(!fillers.is_empty(), "the inodes are used up");
    let red = wait_health(&admin, &daemon, 503, "paths.outbox").await;
    assert!(red.contains("no inode left"), "{red}");
    for filler in &fillers {
        std::fs::remove_file(filler).expect("free an inode");
    }
    wait_health(&admin, &daemon, 200, "").await;
    assert!(daemon.exited().is_none(), "the daemon never exits for it");
}
