//! `cargo bench --bench throughput`: the real daemon (in this process) against the
//! in-process simulator, with time scaled down tenfold (SPEC section 7's ratios are the
//! same): a 1 s poll floor on loopback, generations of 2-6 s, admissions answered after
//! 40 ms, and a budget of 50 requests a second (5 a second at real scale).
//!
//! Three manifests overlap: A (10,000 items, normal priority), B (2,500, low) dropped
//! 1 s later, and C (5 items, high) dropped 3 s after A. It prints, next to their bounds:
//! the makespan against SPEC 7's bound `max(creates / budget + longest generation,
//! (creates + jobs) / budget)`, API calls per item, C's drop-to-result time, polls per
//! job, how busy the budget was; then the intake of a 100,000-item manifest renamed into
//! the inbox of the real binary (drop to archive, and the daemon's peak resident memory).
//!
//! Exits 1 when a target is missed, so a regression is visible.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tented_bulkd::settings::{ApiKey, ConfigSource, Settings};
use tented_bulkd::simulator::{SimConfig, Simulator};

const FLOOR: Duration = Duration::from_secs(1);
const BUDGET: u32 = 50;
const GENERATION: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(6));
const QUEUE: (Duration, Duration) = (Duration::from_millis(0), Duration::from_millis(200));
const LATENCY: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(50));
const INTAKE_ITEMS: usize = 100_000;

type Failure = String;

fn manifest_text(prefix: &str, items: usize, priority: &str) -> String {
    let mut out = format!(
        "{{\"template_id\":\"tpl_bench\",\"priority\":\"{priority}\",\"default_tent_name_prefix\":\"{prefix}\",\"items\":["
    );
    for i in 0..items {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"client_item_id\":\"{prefix}-{i:06}\",\"input_data\":{{\"first_name\":\"Person {i}\",\"company_name\":\"Acme\"}},\"instructions\":\"Keep it concise.\"}}"
        ));
    }
    out.push_str("]}");
    out
}

/// Writes a manifest beside the inbox, then renames it in (the documented way to drop).
fn drop_manifest(dir: &Path, name: &str, text: &str) -> Result<(), Failure> {
    let staging = dir.join(format!("{name}.json.part"));
    std::fs::write(&staging, text).map_err(|e| format!("write {name}: {e}"))?;
    std::fs::rename(&staging, dir.join("inbox").join(format!("{name}.json")))
        .map_err(|e| format!("drop {name}: {e}"))
}

fn env(dir: &Path, base_url: &str, admin: &str) -> Vec<(String, String)> {
    let path = |sub: &str| dir.join(sub).display().to_string();
    [
        ("API__BASE_URL", base_url.to_string()),
        ("API__REQUESTS_PER_SECOND", BUDGET.to_string()),
        ("API__TIMEOUT", "5s".into()),
        ("POLL__INTERVAL", format!("{}ms", FLOOR.as_millis())),
        ("PATHS__INBOX", path("inbox")),
        ("PATHS__OUTBOX", path("outbox")),
        ("PATHS__ARCHIVE", path("archive")),
        ("PATHS__STATE", path("state")),
        ("INBOX__SETTLE", "300ms".into()),
        ("ADMIN__LISTEN", admin.to_string()),
        ("ADMIN__SOCKET", path("control.sock")),
    ]
    .into_iter()
    .map(|(k, v)| (format!("TENTED_BULKD__{k}"), v))
    .collect()
}

fn sim_config() -> SimConfig {
    SimConfig {
        latency: LATENCY,
        queue_time: QUEUE,
        generation_time: GENERATION,
        publish_time: (Duration::ZERO, Duration::ZERO),
        failure_rate: 0.0,
        publish_failure_rate: 0.0,
        seed: Some(8),
        ..SimConfig::default()
    }
}

/// Waits for a result file; returns when it appeared (since `start`).
async fn wait_result(
    dir: &Path,
    name: &str,
    start: Instant,
    limit: Duration,
) -> Result<Duration, Failure> {
    let path = dir.join("outbox").join(format!("{name}.result.json"));
    while start.elapsed() < limit {
        if path.exists() {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no result for {name} within {limit:?}"))
}

/// A loopback address with a port free a moment ago, for the daemon's admin endpoint.
fn free_loopback_address() -> Result<String, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(address.to_string())
}

/// The store's syncs so far and the seconds they took, from the daemon's `/metrics`.
async fn store_syncs(admin: &str) -> Result<(f64, f64), Failure> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .map_err(|e| format!("/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    let value = |name: &str| -> Result<f64, Failure> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .ok_or_else(|| format!("/metrics has no {name}"))
    };
    Ok((
        value("tented_bulkd_store_syncs_total")?,
        value("tented_bulkd_store_sync_duration_seconds_sum")?,
    ))
}

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, what: &str, value: f64, unit: &str, bound: &str, ok: bool) {
        self.failed |= !ok;
        let verdict = if ok { "ok" } else { "MISSED" };
        println!("{what:<46} {value:>10.3} {unit:<6} {bound:<28} {verdict}");
    }
}

async fn overlapping_manifests(report: &mut Report) -> Result<(), Failure> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for sub in ["inbox", "outbox", "archive", "state"] {
        std::fs::create_dir_all(dir.path().join(sub)).map_err(|e| e.to_string())?;
    }
    let sim = Simulator::start(sim_config(), "127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let admin = free_loopback_address()?;
    let settings = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(dir.path(), &sim.base_url(), &admin),
    )
    .map_err(|e| e.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(tented_bulkd::daemon::run(
        settings,
        ApiKey::new("sim-key"),
        shutdown.clone(),
        Arc::new(tented_bulkd::daemon::Quiet),
    ));
    let sizes = [
        ("a", 10_000usize, "normal"),
        ("b", 2_500, "low"),
        ("c", 5, "high"),
    ];
    let texts: Vec<String> = sizes
        .iter()
        .map(|(n, i, p)| manifest_text(n, *i, p))
        .collect();
    let start = Instant::now();
    let start_wall = std::time::SystemTime::now();
    drop_manifest(dir.path(), "a", &texts[0])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop_manifest(dir.path(), "b", &texts[1])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c_dropped = start.elapsed();
    drop_manifest(dir.path(), "c", &texts[2])?;
    let limit = Duration::from_secs(300);
    let c_done = wait_result(dir.path(), "c", start, limit).await?;
    let b_done = wait_result(dir.path(), "b", start, limit).await?;
    let a_done = wait_result(dir.path(), "a", start, limit).await?;
    let makespan = a_done.max(b_done).max(c_done);
    let syncs = store_syncs(&admin).await?;
    shutdown.cancel();
    let _ = daemon.await;

    let calls = sim.calls();
    let items: usize = sizes.iter().map(|(_, n, _)| n).sum();
    let creates = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/v1/tents/bulk")
        .count();
    let polls = calls
        .iter()
        .filter(|c| c.path.starts_with("/v1/bulk-jobs/"))
        .count();
    let chunks: usize = sizes.iter().map(|(_, n, _)| n.div_ceil(25)).sum();
    let budget = f64::from(BUDGET);
    let longest = (GENERATION.1 + QUEUE.1).as_secs_f64();
    let bound = (chunks as f64 / budget + longest).max((2 * chunks) as f64 / budget);
    let span = makespan.as_secs_f64();
    println!("overlapping manifests: A 10,000 normal, B 2,500 low (+1 s), C 5 high (+3 s)");
    report.line(
        "makespan (drop of A to the last result)",
        span,
        "s",
        &format!("bound {bound:.1} s, target <= 1.25x"),
        span <= 1.25 * bound,
    );
    report.line(
        "  ratio to the bound",
        span / bound,
        "x",
        "target <= 1.25",
        span / bound <= 1.25,
    );
    let per_item = calls.len() as f64 / items as f64;
    report.line(
        "API calls per item",
        per_item,
        "",
        "floor 0.08, target <= 0.10",
        per_item <= 0.10,
    );
    report.line(
        "create requests",
        creates as f64,
        "",
        &format!("chunks {chunks}"),
        creates == chunks,
    );
    let per_job = polls as f64 / creates.max(1) as f64;
    report.line(
        "polls per job",
        per_job,
        "",
        "floor 1, target ~1.3",
        per_job <= 1.5,
    );
    let c_wait = (c_done - c_dropped).as_secs_f64();
    let c_bound = longest + 2.0 * FLOOR.as_secs_f64();
    report.line(
        "C (5 items) drop to result",
        c_wait,
        "s",
        &format!("its generation + floors {c_bound:.1} s"),
        c_wait <= c_bound + 2.0,
    );
    let last_tent = last_tent_finished(&sim.base_url(), &calls, start_wall).await?;
    let behind = span - last_tent.as_secs_f64();
    let behind_bound = FLOOR.as_secs_f64() + 1.0;
    report.line(
        "last result after the last tent finished",
        behind,
        "s",
        &format!("one floor + 1 s = {behind_bound:.1} s"),
        behind <= behind_bound,
    );
    let (sync_count, sync_seconds) = syncs;
    report.line(
        "store syncs (fdatasync) per API call",
        sync_count / calls.len().max(1) as f64,
        "",
        &format!("{sync_count} syncs, {} calls", calls.len()),
        true,
    );
    report.line(
        "  mean sync time",
        1000.0 * sync_seconds / sync_count.max(1.0),
        "ms",
        "",
        true,
    );
    let busy = calls.len() as f64 / (budget * span);
    report.line(
        "budget busy (calls / budget x makespan)",
        busy,
        "",
        "",
        true,
    );
    // Where the budget went, second by second (creates + polls per 2 s).
    let first = calls.first().map_or(0, |c| c.at_ms);
    let mut buckets: Vec<(usize, usize)> = Vec::new();
    for call in &calls {
        let slot = ((call.at_ms - first) / 2_000) as usize;
        if buckets.len() <= slot {
            buckets.resize(slot + 1, (0, 0));
        }
        if call.method == "POST" {
            buckets[slot].0 += 1;
        } else {
            buckets[slot].1 += 1;
        }
    }
    let timeline: Vec<String> = buckets.iter().map(|(c, p)| format!("{c}+{p}")).collect();
    println!(
        "calls per 2 s (creates+polls; the budget allows {}): {}",
        2 * BUDGET,
        timeline.join(" ")
    );
    Ok(())
}

/// When the last tent of the run finished, after `start_wall`: the latest `updated_at`
/// (Tented's own clock, the time of a job's last transition) of the bulk jobs polled.
async fn last_tent_finished(
    base_url: &str,
    calls: &[tented_bulkd::simulator::RecordedCall],
    start_wall: std::time::SystemTime,
) -> Result<Duration, Failure> {
    let ids: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter_map(|c| c.path.strip_prefix("/v1/bulk-jobs/"))
        .collect();
    let client = reqwest::Client::new();
    let mut last = start_wall;
    for id in ids {
        let body: serde_json::Value = client
            .get(format!("{base_url}/v1/bulk-jobs/{id}"))
            .bearer_auth("sim-key")
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let updated = body["updated_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .ok_or_else(|| format!("bulk job {id}: no updated_at in {body}"))?;
        last = last.max(updated);
    }
    last.duration_since(start_wall).map_err(|e| e.to_string())
}

/// The real binary takes a 100,000-item manifest renamed into its inbox: drop to archive,
/// and the daemon's peak resident memory.
async fn intake(report: &mut Report) -> Result<(), Failure> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for sub in ["inbox", "outbox", "archive", "state"] {
        std::fs::create_dir_all(dir.path().join(sub)).map_err(|e| e.to_string())?;
    }
    // A simulator that never answers quickly keeps the daemon's sending out of the figures.
    let sim = Simulator::start(
        SimConfig {
            latency: (Duration::from_secs(30), Duration::from_secs(30)),
            ..sim_config()
        },
        "127.0.0.1:0",
    )
    .await
    .map_err(|e| e.to_string())?;
    let text = manifest_text("big", INTAKE_ITEMS, "normal");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tented-bulkd"));
    let mut child = std::process::Command::new(binary)
        .arg("run")
        .envs(env(dir.path(), &sim.base_url(), ""))
        .env("TENTED_API_KEY", "sim-key")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    drop_manifest(dir.path(), "big", &text)?;
    let archived = dir.path().join("archive").join("big.json");
    while !archived.exists() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let peak_mb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0);
    println!(
        "intake: {INTAKE_ITEMS} items, {:.1} MiB, renamed into the inbox of the real binary",
        text.len() as f64 / 1048576.0
    );
    report.line(
        "drop to archive (durable, archived)",
        took.as_secs_f64(),
        "s",
        "target < 1 s",
        took < Duration::from_secs(1),
    );
    report.line(
        "daemon peak resident memory",
        peak_mb,
        "MiB",
        "target < 200 MB",
        peak_mb < 190.0,
    );
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(2);
        }
    };
    let mut report = Report { failed: false };
    let outcome = runtime.block_on(async {
        overlapping_manifests(&mut report).await?;
        intake(&mut report).await
    });
    if let Err(e) = outcome {
        eprintln!("bench failed: {e}");
        std::process::exit(2);
    }
    std::process::exit(i32::from(report.failed));
}
