//! A time-scaled soak with retention pruning as it goes (issue 9): many manifests through
//! the real binary against the in-process simulator, `retention.store` of one second (a
//! day of traffic per second, in effect), and the store's size on disk and the daemon's
//! resident memory sampled after every manifest. They must level off instead of growing
//! with the items processed.
//!
//! `SOAK_ITEMS` sets how many items (default 2,000, a few seconds; the 100,000-item run
//! in BENCHMARKS.md used `SOAK_ITEMS=100000`); `SOAK_RPS` the request budget (default
//! 100 calls a second, twenty times the default; sled 0.34's reclaiming of its log falls
//! behind at 1,000, where the store grows: see BENCHMARKS.md); `SOAK_COMPACT_MIB` the
//! compaction bound (`retention.compact_above_mib`); `SOAK_REPORT=FILE` writes the
//! samples as CSV.

use std::path::Path;
use std::time::Duration;

use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// Items per manifest.
const PER_MANIFEST: usize = 250;

fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 40 calls a second by default (eight times the real default). At 100, since creates'
/// intents no longer wait for each other's syncs and polls follow the budget, a loaded
/// 2-core machine (the whole suite running) wrote sled's log faster than sled gave
/// segments back within the test's few seconds (0.7 MB to 4.2 MB over 2,000 items, one
/// run in two); compaction (`retention.compact_above_mib`) is what bounds that in a
/// daemon that runs for months (BENCHMARKS.md, issue 16).
fn soak_rps() -> u32 {
    std::env::var("SOAK_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn soak_items() -> usize {
    std::env::var("SOAK_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// `retention.compact_above_mib` for the soak (`SOAK_COMPACT_MIB`, default the daemon's
/// default, 64: no compaction within a soak's few MiB).
fn soak_compact_mib() -> i64 {
    std::env::var("SOAK_COMPACT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_size_and_memory_level_off_while_retention_prunes_as_it_goes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(SimConfig {
        queue_time: (Duration::from_millis(5), Duration::from_millis(20)),
        generation_time: (Duration::from_millis(20), Duration::from_millis(80)),
        ..quick_sim()
    })
    .await;
    let (_, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url())
            .set("api", "requests_per_second", soak_rps())
            .set("retention", "store", "1s")
            .set("retention", "compact_above_mib", soak_compact_mib()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;
    let manifests = soak_items().div_ceil(PER_MANIFEST).max(8);
    let mut samples: Vec<(usize, u64, u64)> = Vec::new();
    for m in 0..manifests {
        let mut manifest = bulk_manifest(PER_MANIFEST);
        manifest["default_tent_name_prefix"] = serde_json::json!(format!("Soak {m}"));
        let name = format!("soak-{m:04}");
        drop_manifest(dir.path(), &format!("{name}.json"), &manifest);
        let result = daemon
            .wait_result(dir.path(), &name, Duration::from_secs(120))
            .await
            .expect("the result");
        assert_eq!(result.counts.completed as usize, PER_MANIFEST, "{name}");
        samples.push((
            (m + 1) * PER_MANIFEST,
            du(&dir.path().join("state")),
            resident_kib(daemon.pid()),
        ));
    }
    // The pruner has pruned what finished more than a second ago.
    daemon
        .wait_for_line(
            "pruned: retention.store has passed",
            Duration::from_secs(10),
        )
        .await
        .expect("pruning happened");
    daemon.sigterm().await.expect("SIGTERM exits 0");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        let csv: String = std::iter::once("items,store_bytes,rss_kib\n".to_string())
            .chain(samples.iter().map(|(i, s, r)| format!("{i},{s},{r}\n")))
            .collect();
        std::fs::write(path, csv).expect("write the report");
    }
    // Level: the second half's peak is no more than 1.5 times the first half's peak.
    let half = samples.len() / 2;
    let peak = |range: &[(usize, u64, u64)], pick: fn(&(usize, u64, u64)) -> u64| {
        range.iter().map(pick).max().unwrap_or(0)
    };
    let (store_early, store_late) = (
        peak(&samples[..half], |s| s.1),
        peak(&samples[half..], |s| s.1),
    );
    let (rss_early, rss_late) = (
        peak(&samples[..half], |s| s.2),
        peak(&samples[half..], |s| s.2),
    );
    assert!(store_early > 0 && rss_early > 0, "{samples:?}");
    assert!(
        store_late * 2 <= store_early * 3,
        "the store grows with the items: {samples:?}"
    );
    assert!(
        rss_late * 2 <= rss_early * 3,
        "memory grows with the items: {samples:?}"
    );
}
