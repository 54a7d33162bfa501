//! `cargo bench --bench intake_many`: many small manifest files dropped into the inbox at
//! once (SPEC section 7: "10,000 files dropped at once are all taken within 10 s").
//!
//! For 1,000 and then 10,000 manifests of 1 to 24 items each, a fresh real binary (built
//! by cargo for the bench) is started against the in-process simulator, whose answers take
//! 30 s so that sending stays out of the figures. Every file is written beside the inbox
//! first, then all are renamed in, one after another; the clock runs from the first rename
//! until every file is in `archive/` (a file is archived only once its manifest is durable
//! in the store). It prints the time next to the target and exits 1 when it is missed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// SPEC section 7's bound for 10,000 files, scaled to the count (the same rate).
const SECONDS_PER_10_000: f64 = 10.0;
/// How long a run may take before it is given up (the target is missed by far then).
const GIVE_UP: Duration = Duration::from_secs(300);

type Failure = String;

/// A small manifest of `items` items (1 to 24), every field valid.
fn manifest_text(prefix: &str, items: usize) -> String {
    let mut out = format!(
        "{{\"template_id\":\"tpl_bench\",\"default_tent_name_prefix\":\"{prefix}\",\"items\":["
    );
    for i in 0..items {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"client_item_id\":\"{prefix}-{i:02}\",\"input_data\":{{\"first_name\":\"Person {i}\",\"company_name\":\"Acme\"}}}}"
        ));
    }
    out.push_str("]}");
    out
}

fn env(dir: &Path, base_url: &str) -> Vec<(String, String)> {
    let path = |sub: &str| dir.join(sub).display().to_string();
    [
        ("API__BASE_URL", base_url.to_string()),
        ("API__REQUESTS_PER_SECOND", "50".into()),
        ("API__TIMEOUT", "60s".into()),
        ("PATHS__INBOX", path("inbox")),
        ("PATHS__OUTBOX", path("outbox")),
        ("PATHS__ARCHIVE", path("archive")),
        ("PATHS__STATE", path("state")),
        ("ADMIN__LISTEN", String::new()),
        ("ADMIN__SOCKET", path("control.sock")),
    ]
    .into_iter()
    .map(|(k, v)| (format!("TENTED_BULKD__{k}"), v))
    .collect()
}

/// How many files `folder` holds.
fn count_files(folder: &Path) -> Result<usize, Failure> {
    Ok(std::fs::read_dir(folder)
        .map_err(|e| format!("read {}: {e}", folder.display()))?
        .count())
}

/// Waits until the daemon has made its state folder's marker of life: its lock file.
async fn wait_started(dir: &Path) -> Result<(), Failure> {
    let lock = dir.join("state").join("tented-bulkd.lock");
    let started = Instant::now();
    while !lock.exists() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the daemon did not start within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Recovery and the first scan of the (empty) inbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// One run: `count` manifests renamed into the inbox of a fresh daemon; returns the time
/// from the first rename until all were archived.
async fn drop_many(count: usize, base_url: &str) -> Result<Duration, Failure> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for sub in ["inbox", "outbox", "archive", "state", "staging"] {
        std::fs::create_dir_all(dir.path().join(sub)).map_err(|e| e.to_string())?;
    }
    let staging = dir.path().join("staging");
    let mut names = Vec::with_capacity(count);
    for n in 0..count {
        let name = format!("m{n:05}");
        let items = 1 + n % 24;
        std::fs::write(
            staging.join(format!("{name}.json")),
            manifest_text(&name, items),
        )
        .map_err(|e| format!("write {name}: {e}"))?;
        names.push(name);
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tented-bulkd"));
    let mut child = std::process::Command::new(binary)
        .arg("run")
        .envs(env(dir.path(), base_url))
        .env("TENTED_API_KEY", "sim-key")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    let outcome = measure(dir.path(), &names, count).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

async fn measure(dir: &Path, names: &[String], count: usize) -> Result<Duration, Failure> {
    wait_started(dir).await?;
    let (staging, inbox, archive) = (dir.join("staging"), dir.join("inbox"), dir.join("archive"));
    let start = Instant::now();
    for name in names {
        let file = format!("{name}.json");
        std::fs::rename(staging.join(&file), inbox.join(&file))
            .map_err(|e| format!("drop {name}: {e}"))?;
    }
    let renamed = start.elapsed();
    loop {
        let archived = count_files(&archive)?;
        if archived >= count {
            break;
        }
        if start.elapsed() > GIVE_UP {
            return Err(format!(
                "{archived} of {count} archived after {GIVE_UP:?}; given up"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    println!(
        "  {count} renamed in within {:.2} s; {} left in the inbox",
        renamed.as_secs_f64(),
        count_files(&inbox)?
    );
    Ok(took)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = common::runtime();
    let outcome = runtime.block_on(async {
        // Answers that take 30 s keep the daemon's sending out of the figures.
        let sim = common::slow_answering_simulator().await?;
        let mut failed = false;
        println!("many small manifests (1-24 items) renamed into the inbox at once");
        for count in [1_000usize, 10_000] {
            let took = drop_many(count, &sim.base_url()).await?;
            let bound = SECONDS_PER_10_000 * count as f64 / 10_000.0;
            let ok = took.as_secs_f64() <= bound;
            failed |= !ok;
            println!(
                "{:<46} {:>8.2} s   {:>6.1} ms each   target <= {bound:.0} s   {}",
                format!("{count} files: first rename to all archived"),
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / count as f64,
                if ok { "ok" } else { "MISSED" }
            );
        }
        Ok::<bool, Failure>(failed)
    });
    match outcome {
        Ok(failed) => std::process::exit(i32::from(failed)),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(2);
        }
    }
}
