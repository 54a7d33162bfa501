//! Power cuts (SPEC section 6: "state survives `kill -9` and power loss at any instant").
//! Each scenario's whole folder (config, inbox, outbox, archive, state) lives on its own
//! LazyFS mount ([`crate::helpers::lazyfs`]), which writes to the disk below only on
//! fsync/fdatasync. A power cut is: the daemon dies (a fail point aborts it, or SIGKILL),
//! then every byte not yet synced is dropped ([`LazyFs::cut`]), then the daemon starts again
//! on what is left. Its logs and control socket stay outside the mount.
//!
//! - at named moments: right after intake, after an intent is recorded, after an
//!   admission's answer arrives (first and second), mid-polling, after a result file
//!   appears, and after store commits spread over a run; then a clean run finishes, and
//!   `crash::check_invariants` judges it, as for the crash tests;
//! - a storm: SIGKILL and a cut every 1 to 4 s (seeded; `POWERCUT_SEED=N` replays it) while
//!   a bulk, a create and an edit manifest run under simulator faults, then a clean run;
//!   every manifest is judged by [`check_storm`].
//!
//! After every cut the daemon must start (its ready line) and never say "corrupt"; a result
//! file seen once must never change or vanish, cut or not.
//!
//! Without LazyFS (no binary, not root, no /dev/fuse) each test prints `skipped: REASON`
//! and passes, unless `POWERCUT_REQUIRED=1` (CI), which makes it fail with the reason.
//! The binary: `LAZYFS_BIN`, else where `shared/tools/lazyfs-build.sh` builds it.
//! `POWERCUT_DRY=1` checks the harness itself: each cut first writes LazyFS's cache down,
//! so nothing is lost and the scenarios test what `kill -9` alone does.
//!
//! `cargo test --test integration powercut:: -- --nocapture` (run as root).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tented_bulkd::pipeline::outbox::ResultDocument;
use tented_bulkd::simulator::{EndpointFaults, FaultRates, RecordedCall, SimConfig};
use tented_bulkd::state::item::{ItemState, RejectedBy};
use tented_bulkd::state::manifest::FinalStatus;

use crate::crash::{
    self, accepted_result, check_invariants, check_poll_floor, check_retry_manifest, crash_sim,
    crashed_or_finished, ensure, nth, posted_ids, says_the_answer_was_lost, seed_from, sim_tent,
    tent_of, visible_files, Check, Fire, Scenario, CRASH_WAIT, NAME, RESULT_WAIT, RESULT_WRITTEN,
};
use crate::helpers::lazyfs::{self, write_synced, LazyFs, Skip};
use crate::helpers::{self, try_wait_until, BinaryDaemon, TestConfig, READY_LINE, START_WAIT};

/// Scenarios running at once, over every test of this module (each has its own mount,
/// simulator and daemon): the machine has two cores.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// How long the storm cuts the power before its clean run.
const STORM_TIME: Duration = Duration::from_secs(14);
/// Kill-and-cut interval of the storm, in milliseconds.
const STORM_EVERY_MS: (u64, u64) = (1000, 4000);

/// One scenario on its own LazyFS mount. `lazy` is declared first so that it is dropped
/// (unmounted) before `sc`'s folder, which holds the mount point, is removed.
struct PowerScenario {
    lazy: LazyFs,
    sc: Scenario,
    /// Every result file (by file name) as first seen: it must never change or vanish.
    seen: BTreeMap<String, Vec<u8>>,
    /// The state folder's files before and after the last cut, for failure messages.
    last_cut: String,
}

/// The lines of a daemon's stderr that say "corrupt", joined; `None` if there is none.
fn corrupt_lines(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("corrupt"))
        .collect();
    (!lines.is_empty()).then(|| lines.join(" / "))
}

/// Whether `POWERCUT_DRY=1`: each cut first writes LazyFS's whole cache down
/// (`lazyfs::cache-checkpoint`), so that it loses nothing and the scenarios test what
/// `kill -9` alone does. A check of this harness: on a daemon that survives `kill -9`,
/// every scenario must pass with it.
fn dry() -> bool {
    std::env::var("POWERCUT_DRY").is_ok_and(|v| v == "1")
}

impl PowerScenario {
    /// A folder with `root/` (the disk below) and `mnt/` (LazyFS over it); the scenario's
    /// daemon works in `mnt/`, its logs and control socket go beside.
    async fn new(label: impl Into<String>, sim: SimConfig) -> Result<PowerScenario, Skip> {
        let dir = tempfile::tempdir().expect("temp dir");
        let below = dir.path().join("root");
        let mount = dir.path().join("mnt");
        std::fs::create_dir_all(&below).expect("root folder");
        std::fs::create_dir_all(&mount).expect("mount folder");
        let lazy = LazyFs::mount(&below, &mount)?;
        let root = lazy.mount_point().to_path_buf();
        let socket = dir.path().join("control.sock");
        let sc = Scenario::in_folder(label, sim, dir, root).await;
        let ps = PowerScenario {
            lazy,
            sc,
            seen: BTreeMap::new(),
            last_cut: String::new(),
        };
        let config = TestConfig::new(&ps.sc.root, &ps.sc.sim.base_url()).set(
            "admin",
            "socket",
            socket.display().to_string(),
        );
        ps.write_config(&config);
        Ok(ps)
    }

    /// The configuration, synced: the test's own files must survive a cut.
    fn write_config(&self, config: &TestConfig) {
        write_synced(&self.sc.path("config.toml"), config.toml().as_bytes())
            .expect("write config.toml on the mount");
    }

    /// Drops a manifest into the inbox as a careful writer does (written beside it, synced,
    /// renamed in, the folder synced): a cut must not take the manifest's own bytes away.
    fn drop_synced(&self, file_name: &str, bytes: &[u8]) {
        write_synced(&self.sc.path(&format!("inbox/{file_name}")), bytes)
            .expect("drop the manifest on the mount");
    }

    /// Reads every result file now; one seen before must be there with the same bytes.
    /// `when` says when this look happens, for the message.
    fn observe_results(&mut self, when: &str) -> Check {
        let outbox = self.sc.path("outbox");
        for name in visible_files(&outbox) {
            if !name.ends_with(".result.json") {
                continue;
            }
            if let Ok(bytes) = std::fs::read(outbox.join(&name)) {
                self.seen.entry(name).or_insert(bytes);
            }
        }
        for (name, before) in &self.seen {
            match std::fs::read(outbox.join(name)) {
                Ok(now) if &now == before => {}
                Ok(now) if now.is_empty() => {
                    return Err(format!(
                        "{when}: the result file {name}, seen with {} bytes, is now empty",
                        before.len()
                    ))
                }
                Ok(_) => {
                    return Err(format!(
                        "{when}: the result file {name} changed after it was seen"
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{when}: the result file {name}, seen before, is gone ({e})"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The power cut: the daemon is dead; every unsynced byte is dropped. Results seen
    /// before must be there after.
    async fn cut(&mut self) -> Check {
        self.observe_results("before the power cut")?;
        let before = self.state_files();
        if dry() {
            self.lazy.checkpoint().await?;
        }
        self.lazy.cut().await?;
        let n = self.lazy.cuts();
        self.last_cut = format!(
            "the state folder's files (bytes) before power cut #{n}: {before}; after it: {}",
            self.state_files()
        );
        self.observe_results(&format!("after power cut #{n}"))
    }

    /// The files of the state folder with their sizes, as the daemon would see them now.
    fn state_files(&self) -> String {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    walk(&path, base, out);
                } else {
                    let name = path
                        .strip_prefix(base)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    out.push(format!("{name} {}", meta.len()));
                }
            }
        }
        let state = self.sc.path("state");
        let mut out = Vec::new();
        walk(&state, &state, &mut out);
        if out.is_empty() {
            "none".into()
        } else {
            out.join(", ")
        }
    }

    /// Starts the daemon (no fail point) and waits for its ready line: after a cut it must
    /// open the store, recover and be ready, never calling the store corrupt.
    async fn start(&mut self) -> Result<BinaryDaemon, String> {
        let daemon = self.sc.spawn(None);
        let ready = daemon.wait_for_line(READY_LINE, START_WAIT).await;
        let when = match self.lazy.cuts() {
            0 => "before any power cut".to_string(),
            n => format!("after power cut #{n}"),
        };
        if let Some(lines) = corrupt_lines(&daemon.stderr()) {
            return Err(format!(
                "{when}, {} says the store is corrupt{}: {lines}\n    ({})",
                daemon.label,
                match daemon.exited() {
                    Some(status) => format!(" and exited ({status})"),
                    None => String::new(),
                },
                self.last_cut
            ));
        }
        ready.map_err(|e| {
            format!(
                "{when}, {} did not start: {e}\n    ({})",
                daemon.label, self.last_cut
            )
        })?;
        Ok(daemon)
    }

    /// What a scenario's checks came to, with every run's log tail when they failed.
    fn outcome(&self, checked: Result<String, String>) -> Outcome {
        match checked {
            Ok(summary) => Outcome::Passed(summary),
            Err(e) => Outcome::Failed(format!("{e}\n{}", self.sc.log_tails())),
        }
    }

    /// Every run's log is free of "corrupt".
    fn no_corrupt_logs(&self) -> Check {
        for run in 1..=self.sc.logs.len() {
            if let Some(line) = corrupt_lines(&self.sc.log(run)) {
                return Err(format!(
                    "run {run} logged that the store is corrupt: {line}"
                ));
            }
        }
        Ok(())
    }
}

/// What one scenario came to.
enum Outcome {
    Passed(String),
    Failed(String),
    Skipped(Skip),
}

/// A cut after a fail point fired.
#[derive(Clone)]
struct CutPlan {
    failpoints: String,
    fire: Fire,
    seed: u64,
}

/// Runs the daemon with `plan.failpoints` armed until it aborts (or, for a point it may
/// not reach, finishes), cuts the power, then runs it cleanly to the end and checks the
/// crash tests' invariants.
async fn cut_after_fail_point(plan: &CutPlan) -> Outcome {
    let mut ps = match PowerScenario::new(
        format!("{} then power cut", plan.failpoints),
        crash_sim(plan.seed),
    )
    .await
    {
        Ok(ps) => ps,
        Err(skip) => return Outcome::Skipped(skip),
    };
    let outcome = async {
        ps.drop_synced(&format!("{NAME}.json"), &ps.sc.manifest_bytes);
        let failpoints = plan.failpoints.as_str();
        let daemon = ps.sc.spawn(Some(failpoints));
        let fired = crashed_or_finished(&daemon, failpoints, plan.fire).await?;
        drop(daemon);
        // The power goes: a crash is followed by losing whatever was not synced.
        ps.cut().await?;
        // A clean run finishes the manifest.
        let had_result = ps.seen.contains_key(&format!("{NAME}.result.json"));
        let daemon = ps.start().await?;
        if had_result {
            ps.sc.wait_result(&daemon, RESULT_WAIT).await?;
        } else {
            ps.sc.wait_result_recorded(&daemon).await?;
        }
        daemon.sigterm().await?;
        ps.observe_results("after the clean run")?;
        ps.no_corrupt_logs()?;
        let summary = check_invariants(&ps.sc).await?;
        Ok::<_, String>(format!(
            "{}; {summary}",
            if fired {
                "crashed, cut"
            } else {
                "not reached, cut"
            }
        ))
    }
    .await;
    ps.outcome(outcome)
}

/// Prints every scenario's outcome and fails with every failing one; a scenario that
/// cannot use LazyFS skips the test (or fails it under `POWERCUT_REQUIRED=1`).
fn report(test: &str, outcomes: Vec<(String, Duration, Outcome)>) {
    let mut failures = Vec::new();
    let total = outcomes.len();
    for (label, took, outcome) in outcomes {
        match outcome {
            Outcome::Passed(summary) => println!("[{test}] ok   {label} ({took:.1?}): {summary}"),
            Outcome::Failed(e) => {
                println!("[{test}] FAIL {label} ({took:.1?}): {e}");
                failures.push(format!("FAIL {label}: {e}"));
            }
            Outcome::Skipped(skip) => {
                lazyfs::skip_or_panic(test, &skip);
                return;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} power-cut scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A scenario's run, not started yet.
type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;
/// Runs with their labels.
type Scenarios = Vec<(String, Run)>;

/// Runs `scenarios` a few at a time ([`GATE`]), then reports them in their order.
async fn run_scenarios(test: &str, scenarios: Scenarios) {
    let mut set = tokio::task::JoinSet::new();
    for (n, (label, scenario)) in scenarios.into_iter().enumerate() {
        set.spawn(async move {
            let _permit = GATE.acquire().await.expect("semaphore");
            let started = Instant::now();
            let outcome = scenario.await;
            (n, label, started.elapsed(), outcome)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next().await {
        outcomes.push(joined.expect("a scenario task panicked"));
    }
    outcomes.sort_by_key(|(n, ..)| *n);
    report(
        test,
        outcomes
            .into_iter()
            .map(|(_, label, took, outcome)| (label, took, outcome))
            .collect(),
    );
}

async fn run_cut_plans(test: &str, plans: Vec<CutPlan>) {
    let scenarios: Scenarios = plans
        .into_iter()
        .map(|plan| {
            let label = plan.failpoints.clone();
            let run: Run = Box::pin(async move { cut_after_fail_point(&plan).await });
            (label, run)
        })
        .collect();
    run_scenarios(test, scenarios).await;
}

/// Whether this machine can run LazyFS at all; if not, the test says so and returns.
fn lazyfs_or_skip(test: &str) -> bool {
    match lazyfs::usable() {
        Ok(_) => true,
        Err(skip) => {
            lazyfs::skip_or_panic(test, &skip);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_each_named_moment_loses_and_repeats_nothing() {
    let test = "powercut::named";
    if !lazyfs_or_skip(test) {
        return;
    }
    let plans = [
        // Right after intake: the items are in the store, the manifest still in the inbox.
        nth("intake-before-archive", 0),
        // Right after an intent is recorded, before the request goes.
        nth("submit-before-request", 0),
        // Right after an admission's answer arrives (before it is recorded): the first
        // chunk's, then the second's.
        nth("submit-after-request", 0),
        nth("submit-after-request", 1),
        // Mid-polling: right after the second poll was recorded (two jobs: there are at
        // least two polls however fast the generations end).
        nth("poll-after-record", 1),
        // Right after the result file appears, before it is recorded as written.
        nth("outbox-after-write", 0),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, failpoints)| CutPlan {
        failpoints,
        fire: Fire::Must,
        seed: 300 + n as u64,
    })
    .collect();
    run_cut_plans(test, plans).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_store_commits_loses_and_repeats_nothing() {
    let test = "powercut::after-commit";
    if !lazyfs_or_skip(test) {
        return;
    }
    // How many commits a clean run makes (the crash tests' count, on an ordinary folder).
    let (_, commits) = crash::clean_run_commits().await;
    let mut ns = vec![0, 3, commits / 4, commits / 2, commits * 3 / 4];
    ns.sort();
    ns.dedup();
    let plans = ns
        .into_iter()
        .map(|n| CutPlan {
            failpoints: nth("store-after-commit", n),
            // Later commits depend on timing: a run may end before a late one.
            fire: if n * 10 < commits * 6 {
                Fire::Must
            } else {
                Fire::May
            },
            seed: 400 + n as u64,
        })
        .collect();
    run_cut_plans(test, plans).await;
}

// ---- many files at once ---------------------------------------------------------------

/// Good manifests dropped together (and one bad one beside them).
const MANY: usize = 40;

/// Drops [`MANY`] small manifests and a bad one (synced) before the daemon starts, so that
/// its first scans find them ready together and it takes them as one group; runs it with
/// `failpoints` armed until it aborts, cuts the power, then runs it cleanly until every
/// file has its result, and checks [`check_many`].
async fn cut_while_many_are_taken(failpoints: String, seed: u64) -> Outcome {
    let sim = SimConfig {
        seed: Some(seed),
        ..helpers::quick_sim()
    };
    let label = format!("{MANY} files, {failpoints} then power cut");
    let mut ps = match PowerScenario::new(label, sim).await {
        Ok(ps) => ps,
        Err(skip) => return Outcome::Skipped(skip),
    };
    let outcome = async {
        let mut files = crate::intake::good_files(MANY);
        files.push(("not-json.json".into(), b"{ this is not json".to_vec()));
        for (name, bytes) in &files {
            ps.drop_synced(name, bytes);
        }
        let daemon = ps.sc.spawn(Some(&failpoints));
        let run = daemon.label.clone();
        let status = try_wait_until(
            format!("{run}: with `{failpoints}`, the daemon crashing"),
            CRASH_WAIT,
            || async { daemon.exited() },
        )
        .await?;
        ensure!(
            status.signal() == Some(6) && daemon.stderr().contains("simulated crash"),
            "{run}: with `{failpoints}` the daemon ended with {status}, not the fail point's abort: {}",
            daemon.stderr_tail(10)
        );
        drop(daemon);
        ps.cut().await?;
        let daemon = ps.start().await?;
        let outbox = ps.sc.path("outbox");
        let want = files.len();
        try_wait_until("a result for every file", RESULT_WAIT, || async {
            if daemon.exited().is_some() {
                return Some(Err(format!("the clean run exited: {}", daemon.stderr_tail(10))));
            }
            let results = visible_files(&outbox)
                .iter()
                .filter(|n| n.ends_with(".result.json"))
                .count();
            (results >= want).then_some(Ok(()))
        })
        .await??;
        daemon.sigterm().await?;
        ps.observe_results("after the clean run")?;
        ps.no_corrupt_logs()?;
        check_many(&ps, &files)
    }
    .await;
    ps.outcome(outcome)
}

/// Every file dropped was taken once: one result under its own name (a file taken twice
/// would also have a `NAME~2`), one archive copy with its bytes, none left in the inbox;
/// the good manifests completed with every item sent once, the bad one rejected.
fn check_many(ps: &PowerScenario, files: &[(String, Vec<u8>)]) -> Result<String, String> {
    let sc = &ps.sc;
    let mut want_results: Vec<String> = files
        .iter()
        .map(|(name, _)| name.replace(".json", ".result.json"))
        .collect();
    want_results.sort();
    let results: Vec<String> = visible_files(&sc.path("outbox"))
        .into_iter()
        .filter(|n| n.ends_with(".result.json"))
        .collect();
    ensure!(
        results == want_results,
        "one result per file, each under its own name: {results:?}"
    );
    let mut want_archive: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    want_archive.sort();
    let archive = visible_files(&sc.path("archive"));
    ensure!(
        archive == want_archive,
        "the archive should hold each file once: {archive:?}"
    );
    let inbox = visible_files(&sc.path("inbox"));
    ensure!(inbox.is_empty(), "files left in the inbox: {inbox:?}");
    for (name, bytes) in files {
        let archived = std::fs::read(sc.path(&format!("archive/{name}"))).ok();
        ensure!(
            archived.as_deref() == Some(&bytes[..]),
            "{name}: the archive copy is not the file that was dropped"
        );
        let result_file = sc.path(&format!("outbox/{}", name.replace(".json", ".result.json")));
        let result: ResultDocument = std::fs::read(&result_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(format!("{name}: no readable result"))?;
        let want = if name == "not-json.json" {
            FinalStatus::Rejected
        } else {
            FinalStatus::Completed
        };
        ensure!(
            result.status == want,
            "{name}: status {} (want {want}): {:?}",
            result.status,
            result.error
        );
    }
    let sent: Vec<String> = sc
        .sim
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/v1/tents/bulk")
        .flat_map(posted_ids)
        .collect();
    let unique: HashSet<&String> = sent.iter().collect();
    ensure!(unique.len() == sent.len(), "an item was sent twice");
    let items: usize = (0..MANY).map(|n| 1 + n % 3).sum();
    ensure!(
        sent.len() == items,
        "{} items sent, {items} expected",
        sent.len()
    );
    Ok(format!(
        "{} files taken once each, {items} items sent once",
        files.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_while_many_files_are_taken_loses_and_repeats_nothing() {
    let test = "powercut::many-files";
    if !lazyfs_or_skip(test) {
        return;
    }
    let points = [
        // Half the group's records applied, none synced: the files are taken again.
        nth("store-before-commit", MANY / 2),
        // The group's records durable (and the marker moved), half of them past the point
        // after their commit; nothing moved yet.
        nth("store-after-commit", MANY / 2),
        // The same, at intake's own point before the moves.
        nth("intake-before-archive", 0),
        // The files moved and the folders synced; half the `archived` marks past their
        // commit (after the records' MANY + 1 passes).
        nth("store-after-commit", MANY + 1 + MANY / 2),
    ];
    let scenarios: Scenarios = points
        .into_iter()
        .enumerate()
        .map(|(n, failpoints)| {
            let label = format!("{MANY} files, {failpoints}");
            let run: Run = Box::pin(cut_while_many_are_taken(failpoints, 500 + n as u64));
            (label, run)
        })
        .collect();
    run_scenarios(test, scenarios).await;
}

// ---- the storm ------------------------------------------------------------------------

/// The storm's create manifest: 8 items, one rejected locally (no prompt), two published
/// (one with an alias). The simulator's calls carry no client_item_id: each item's `name`
/// is unique, and names its request.
fn create_manifest() -> Value {
    let items: Vec<Value> = (0..8)
        .map(|i| {
            let mut item = json!({
                "client_item_id": format!("page-{i}"),
                "name": format!("Storm page {i}"),
                "prompt": format!("Create a landing page for storm product {i}"),
            });
            match i {
                2 => {
                    item["auto_publish"] = json!(true);
                    item["custom_page_alias"] = json!("storm-two");
                }
                5 => {
                    item.as_object_mut().unwrap().remove("prompt");
                }
                6 => item["auto_publish"] = json!(true),
                _ => {}
            }
            item
        })
        .collect();
    json!({"kind": "create", "defaults": {"include_brand": true}, "items": items})
}

/// The storm's edit manifest: one edit per tent of `tents` (made before the storm), one
/// rejected locally (six asset_ids), one published. Each `prompt` is unique and names its
/// request.
fn edit_manifest(tents: &[String]) -> Value {
    let items: Vec<Value> = tents
        .iter()
        .enumerate()
        .map(|(i, tent)| {
            let mut item = json!({
                "client_item_id": format!("edit-{i}"),
                "tent_id": tent,
                "prompt": format!("Make the landing page header blue, variant {i}"),
            });
            match i {
                1 => item["asset_ids"] = json!(["a1", "a2", "a3", "a4", "a5", "a6"]),
                3 => item["auto_publish"] = json!(true),
                _ => {}
            }
            item
        })
        .collect();
    json!({"kind": "edit", "items": items})
}

/// Quick, with generation and publication failures, a taken alias, and faults on every
/// endpoint: 429/5xx answers (retried), answers lost after admission (items `unknown`),
/// connections dropped before processing.
fn storm_sim(seed: u64, slow: bool) -> SimConfig {
    let mut sim = SimConfig {
        generation_time: (Duration::from_millis(300), Duration::from_millis(1500)),
        ..crash_sim(seed)
    };
    if slow {
        sim.latency = (Duration::from_millis(100), Duration::from_millis(300));
    }
    sim
}

fn storm_faults() -> EndpointFaults {
    let posts = |drop_after: f64| FaultRates {
        rate_429: 0.05,
        rate_503: 0.05,
        retry_after_429: Some(1),
        drop_before_rate: 0.03,
        drop_after_rate: drop_after,
        ..FaultRates::default()
    };
    let gets = FaultRates {
        rate_429: 0.05,
        rate_500: 0.03,
        rate_503: 0.03,
        retry_after_429: Some(1),
        ..FaultRates::default()
    };
    EndpointFaults {
        bulk_create: posts(0.1),
        bulk_status: gets.clone(),
        create: posts(0.1),
        edit: posts(0.1),
        tent_status: gets,
    }
}

/// Makes `n` tents with a generation (edits need one) straight at the simulator, before
/// its faults are on; returns their ids.
async fn make_tents(base_url: &str, n: usize) -> Result<Vec<String>, String> {
    let client = reqwest::Client::new();
    let mut tents = Vec::new();
    for i in 0..n {
        let answer: Value = client
            .post(format!("{base_url}/v1/tents"))
            .bearer_auth("sim-key")
            .json(&json!({"name": format!("Base {i}"), "prompt": format!("A landing page to edit, {i}")}))
            .send()
            .await
            .map_err(|e| format!("creating a tent to edit: {e}"))?
            .json()
            .await
            .map_err(|e| format!("creating a tent to edit: {e}"))?;
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| format!("the simulator made no tent: {answer}"))?;
        tents.push(id.to_string());
    }
    Ok(tents)
}

/// The client_item_ids a recorded call carried, if it is one of a manifest's create (or
/// edit) requests.
type Carried = Box<dyn Fn(&RecordedCall) -> Option<Vec<String>> + Send + Sync>;

/// One manifest of the storm, as the checks need it.
struct Expected {
    name: &'static str,
    kind: &'static str,
    bytes: Vec<u8>,
    /// client_item_ids in manifest order.
    ids: Vec<String>,
    /// Items validation must reject (never sent).
    local: Vec<String>,
    carried: Carried,
}

fn expected(tents: &[String]) -> Vec<Expected> {
    let ids_of = |manifest: &Value| -> Vec<String> {
        manifest["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["client_item_id"].as_str().unwrap().to_string())
            .collect()
    };
    let bulk = crash::manifest();
    let create = create_manifest();
    let edit = edit_manifest(tents);
    let by_name: HashMap<String, String> = create["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["client_item_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let by_prompt: HashMap<String, String> = edit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["prompt"].as_str().unwrap().to_string(),
                i["client_item_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let body_field = |call: &RecordedCall, field: &str| -> Option<String> {
        call.body.as_ref()?[field].as_str().map(str::to_string)
    };
    vec![
        Expected {
            name: NAME,
            kind: "bulk",
            bytes: serde_json::to_vec_pretty(&bulk).unwrap(),
            ids: ids_of(&bulk),
            local: vec![crash::client_id(3)],
            carried: Box::new(|call: &RecordedCall| {
                (call.method == "POST" && call.path == "/v1/tents/bulk").then(|| posted_ids(call))
            }),
        },
        Expected {
            name: "pages",
            kind: "create",
            bytes: serde_json::to_vec_pretty(&create).unwrap(),
            ids: ids_of(&create),
            local: vec!["page-5".into()],
            carried: Box::new(move |call: &RecordedCall| {
                if call.method != "POST" || call.path != "/v1/tents" {
                    return None;
                }
                Some(
                    body_field(call, "name")
                        .and_then(|n| by_name.get(&n).cloned())
                        .into_iter()
                        .collect(),
                )
            }),
        },
        Expected {
            name: "edits",
            kind: "edit",
            bytes: serde_json::to_vec_pretty(&edit).unwrap(),
            ids: ids_of(&edit),
            local: vec!["edit-1".into()],
            carried: Box::new(move |call: &RecordedCall| {
                if call.method != "POST" || !call.path.ends_with("/edit") {
                    return None;
                }
                Some(
                    body_field(call, "prompt")
                        .and_then(|p| by_prompt.get(&p).cloned())
                        .into_iter()
                        .collect(),
                )
            }),
        },
    ]
}

/// Whether the answer to a create request says it was not admitted (an injected or real
/// 429/5xx, which the daemon retries): its items may be sent again.
fn refused(call: &RecordedCall) -> bool {
    matches!(call.fault.as_deref(), Some("429" | "500" | "503"))
        || call.status.is_some_and(|s| s == 429 || s >= 500)
}

/// Every invariant of the storm, for every manifest (the daemon is stopped; `calls` are
/// the daemon's calls, taken before the checks' own GETs).
async fn check_storm(
    ps: &PowerScenario,
    manifests: &[Expected],
    calls: &[RecordedCall],
) -> Result<String, String> {
    let sc = &ps.sc;
    let mut want_results: Vec<String> = manifests
        .iter()
        .map(|m| format!("{}.result.json", m.name))
        .collect();
    want_results.sort();
    let results: Vec<String> = visible_files(&sc.path("outbox"))
        .into_iter()
        .filter(|n| n.ends_with(".result.json"))
        .collect();
    ensure!(
        results == want_results,
        "the outbox should hold exactly one result file per manifest, {want_results:?}: {results:?}"
    );
    let mut want_archive: Vec<String> = manifests
        .iter()
        .map(|m| format!("{}.json", m.name))
        .collect();
    want_archive.sort();
    let archive = visible_files(&sc.path("archive"));
    ensure!(
        archive == want_archive,
        "the archive should hold exactly {want_archive:?}: {archive:?}"
    );
    let inbox = visible_files(&sc.path("inbox"));
    ensure!(inbox.is_empty(), "files left in the inbox: {inbox:?}");

    let base_url = sc.sim.base_url();
    let mut summary = Vec::new();
    for m in manifests {
        let name = m.name;
        let archived = std::fs::read(sc.path(&format!("archive/{name}.json"))).ok();
        ensure!(
            archived.as_deref() == Some(&m.bytes[..]),
            "{name}: the archive copy is not the manifest that was dropped"
        );
        let result = accepted_result(&sc.path(&format!("outbox/{name}.result.json")), name)?;
        ensure!(
            result.kind.as_str() == m.kind,
            "{name}: result kind {}",
            result.kind.as_str()
        );
        let items = crash::checked_items(&result, &m.ids).map_err(|e| format!("{name}: {e}"))?;

        // Nothing sent twice: no client_item_id in two create requests, leaving out those
        // answered 429/5xx (not admitted, and retried).
        let mine: Vec<(&RecordedCall, Vec<String>)> = calls
            .iter()
            .filter_map(|c| (m.carried)(c).map(|ids| (c, ids)))
            .collect();
        let mut sent: HashMap<&str, Vec<u64>> = HashMap::new();
        for (call, ids) in &mine {
            if refused(call) {
                continue;
            }
            for id in ids {
                sent.entry(id.as_str()).or_default().push(call.seq);
            }
        }
        let mut twice: Vec<String> = sent
            .iter()
            .filter(|(_, seqs)| seqs.len() > 1)
            .map(|(id, seqs)| format!("{id} (calls {seqs:?})"))
            .collect();
        twice.sort();
        ensure!(
            twice.is_empty(),
            "{name}: items sent in more than one create request: {twice:?}"
        );
        for id in &m.local {
            ensure!(
                !sent.contains_key(id.as_str()),
                "{name}: the locally rejected {id} was sent"
            );
            let item = items[id.as_str()];
            ensure!(
                item.status == ItemState::Rejected && item.rejected_by == Some(RejectedBy::Local),
                "{name}: the locally rejected {id} ended as {item:?}"
            );
        }

        // Every item the simulator admitted has its tent, or is unknown, or was refused at
        // admission (a bulk item's own rejection).
        let admitted: HashSet<&str> = mine
            .iter()
            .filter(|(c, _)| crash::is_2xx(c))
            .flat_map(|(_, ids)| ids.iter().map(String::as_str))
            .collect();
        for id in &admitted {
            let item = items[*id];
            ensure!(
                item.tent_id.is_some()
                    || item.status == ItemState::Unknown
                    || (item.status == ItemState::Rejected
                        && item.rejected_by == Some(RejectedBy::Api)),
                "{name}/{id} was admitted by the simulator but the result has {item:?}"
            );
        }

        // The retry manifest holds exactly the items that did not complete.
        let retry_path = sc.path(&format!("outbox/{name}.retry.json"));
        check_retry_manifest(&retry_path, &m.ids, &items).map_err(|e| format!("{name}: {e}"))?;

        // Final statuses agree with the simulator; unknown only with the answer-lost message.
        for (id, item) in &items {
            let status = item.status.as_str();
            match item.status {
                ItemState::Completed | ItemState::Failed => {
                    let tent_id = tent_of(&format!("{name}/{id}"), item)?;
                    ensure!(
                        admitted.contains(id),
                        "{name}/{id} has tent {tent_id} but was never in an admitted request"
                    );
                    let truth = sim_tent(&base_url, tent_id).await?;
                    ensure!(
                        truth["status"] == status,
                        "{name}/{id}: the result says {status}, the simulator says {}",
                        truth["status"]
                    );
                }
                ItemState::Unknown => {
                    says_the_answer_was_lost(&format!("{name}/{id}"), item)?;
                }
                _ => {}
            }
        }
        summary.push(format!(
            "{name}: {} requests, counts {}",
            mine.len(),
            serde_json::to_string(&result.counts).unwrap_or_default()
        ));
    }
    let smallest_gap = check_poll_floor(calls)?;
    Ok(format!(
        "{}; smallest poll gap {smallest_gap:?} ms",
        summary.join("; ")
    ))
}

/// The storm: three manifests, SIGKILL and a power cut every 1 to 4 s for
/// [`STORM_TIME`], then a clean run to the end.
async fn storm(seed: u64, slow: bool) -> Outcome {
    let mut ps = match PowerScenario::new(
        format!("storm, seed {seed}, slow {slow}"),
        storm_sim(seed, slow),
    )
    .await
    {
        Ok(ps) => ps,
        Err(skip) => return Outcome::Skipped(skip),
    };
    let outcome = async {
        let tents = make_tents(&ps.sc.sim.base_url(), 4).await?;
        let before_storm = ps.sc.sim.calls().len();
        ps.sc.sim.set_faults(storm_faults());
        let manifests = expected(&tents);
        for m in &manifests {
            ps.drop_synced(&format!("{}.json", m.name), &m.bytes);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        let mut kills = Vec::new();
        while started.elapsed() < STORM_TIME {
            let spawned = Instant::now();
            let daemon = ps.start().await?;
            // The kill time is what the seed draws (replayed with POWERCUT_SEED), not a
            // wait for something; the daemon must have become ready first.
            let at = Duration::from_millis(rng.random_range(STORM_EVERY_MS.0..=STORM_EVERY_MS.1));
            while spawned.elapsed() < at {
                ps.observe_results("during the storm")?;
                if let Some(status) = daemon.exited() {
                    return Err(format!(
                        "{}: the daemon exited by itself ({status}): {}",
                        daemon.label,
                        daemon.stderr_tail(10)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            daemon.kill9().await;
            kills.push(spawned.elapsed().as_millis() as u64);
            drop(daemon);
            ps.cut().await?;
        }
        // A clean run to the end: every result, each recorded as written.
        let daemon = ps.start().await?;
        let run = ps.sc.logs.len();
        for m in &manifests {
            let file = format!("{}.result.json", m.name);
            let path = ps.sc.path(&format!("outbox/{file}"));
            daemon.wait_for_file(&path, RESULT_WAIT).await?;
            if !ps.seen.contains_key(&file) {
                // Written by this run: wait for it to be recorded (its last commit).
                let needle = format!("manifest={}", m.name);
                let log = || ps.sc.log(run);
                try_wait_until(
                    format!(
                        "`{RESULT_WRITTEN}` for {} in the stderr of run {run}",
                        m.name
                    ),
                    RESULT_WAIT,
                    || async {
                        log()
                            .lines()
                            .any(|l| l.contains(RESULT_WRITTEN) && l.contains(&needle))
                    },
                )
                .await?;
            }
        }
        daemon.sigterm().await?;
        ps.observe_results("after the clean run")?;
        ps.no_corrupt_logs()?;
        let calls: Vec<RecordedCall> = ps.sc.sim.calls().split_off(before_storm);
        // The checks ask the simulator for its truth: without faults.
        ps.sc.sim.set_faults(EndpointFaults::default());
        let summary = check_storm(&ps, &manifests, &calls).await?;
        Ok::<_, String>(format!(
            "{} cuts, kills at {kills:?} ms after each start; {summary}",
            ps.lazy.cuts()
        ))
    }
    .await;
    ps.outcome(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_kills_and_power_cuts_over_three_kinds_of_manifest_loses_and_repeats_nothing() {
    let test = "powercut::storm";
    if !lazyfs_or_skip(test) {
        return;
    }
    let seed = seed_from("POWERCUT_SEED");
    println!("power-cut storm seed: {seed} (replay with POWERCUT_SEED={seed})");
    let scenarios: Scenarios = (0..2u64)
        .map(|k| {
            let label = format!("seed {}, slow {}", seed.wrapping_add(k), k == 1);
            let run: Run = Box::pin(storm(seed.wrapping_add(k), k == 1));
            (label, run)
        })
        .collect();
    run_scenarios(
        &format!("{test} (seed {seed}, replay with POWERCUT_SEED={seed})"),
        scenarios,
    )
    .await;
}

// ---- compaction and backup -------------------------------------------------------------

impl PowerScenario {
    /// Rewrites the configuration with `extra` settings (the control socket stays outside
    /// the mount, as [`PowerScenario::new`] put it).
    fn configure(&self, extra: &[(&str, &str, toml::Value)]) {
        let socket = self.sc.dir.path().join("control.sock");
        let mut config = TestConfig::new(&self.sc.root, &self.sc.sim.base_url()).set(
            "admin",
            "socket",
            socket.display().to_string(),
        );
        for (section, key, value) in extra {
            config = config.set(section, key, value.clone());
        }
        self.write_config(&config);
    }

    /// The folder `state/CURRENT` names (`None` for a store never compacted).
    fn current_store(&self) -> Option<String> {
        std::fs::read_to_string(self.sc.path("state/CURRENT"))
            .ok()
            .map(|text| text.trim().to_string())
    }
}

/// A bulk manifest of `n` items whose client ids begin with `prefix`.
fn bulk_of(prefix: &str, n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"client_item_id": format!("{prefix}-{i}"), "input_data": {"first_name": format!("P{i}")}}))
        .collect();
    serde_json::to_vec(
        &json!({"kind": "bulk", "template_id": format!("tpl_{prefix}"), "items": items}),
    )
    .expect("json")
}

/// No client_item_id in two create requests, over every call the simulator saw.
fn nothing_sent_twice(sc: &Scenario) -> Check {
    let mut sent: HashMap<String, usize> = HashMap::new();
    for post in helpers::bulk_posts(&sc.sim.calls()) {
        for id in posted_ids(post) {
            *sent.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<&String> = sent
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    ensure!(
        twice.is_empty(),
        "items sent in two create requests: {twice:?}"
    );
    Ok(())
}

/// A compaction crashed at `point` (before or after `CURRENT` names the new folder), then
/// the power cut: the next start finds one whole store (the old or the new), compacts
/// again if it still must, and goes on: the finished manifest's result stays as it was, a
/// new manifest is taken and sent, nothing is sent twice.
async fn compaction_cut(point: &str, seed: u64) -> Outcome {
    let mut ps = match PowerScenario::new(format!("{point} then power cut"), crash_sim(seed)).await
    {
        Ok(ps) => ps,
        Err(skip) => return Outcome::Skipped(skip),
    };
    // Pruned a second after its result; a store past 1 MiB and four times its records is
    // compacted, which the pruner asks for once the manifest is pruned. 400 items leave
    // sled's log past 1 MiB (30 leave about 150 KB).
    ps.configure(&[
        ("retention", "store", "1s".into()),
        ("retention", "compact_above_mib", 1.into()),
        ("api", "requests_per_second", 200.into()),
    ]);
    let outcome = async {
        ps.drop_synced("big.json", &bulk_of("big", 400));
        let failpoints = format!("{point}=return");
        let daemon = ps.sc.spawn(Some(&failpoints));
        let run = daemon.label.clone();
        let status = try_wait_until(
            format!("{run}: the manifest finishing, pruned, and its compaction crashing at `{point}`"),
            Duration::from_secs(60),
            || async { daemon.exited() },
        )
        .await
        .map_err(|e| format!("{e}; state files: {}", ps.state_files()))?;
        ensure!(
            status.signal() == Some(6) && daemon.stderr().contains("simulated crash"),
            "{run}: ended with {status}, not the fail point's abort: {}",
            daemon.stderr_tail(10)
        );
        drop(daemon);
        let before = ps.current_store();
        ps.cut().await?;
        let after_cut = ps.current_store();
        ensure!(
            before == after_cut,
            "CURRENT said {before:?} before the cut and {after_cut:?} after it: its switch was not durable"
        );
        let daemon = ps.start().await?;
        ensure!(
            ps.current_store().is_some(),
            "after the restart the store is still not compacted (no CURRENT): {}",
            daemon.stderr_tail(10)
        );
        ps.drop_synced("after.json", &bulk_of("after", 5));
        daemon.wait_result(&ps.sc.root, "after", RESULT_WAIT).await?;
        daemon.sigterm().await?;
        ps.observe_results("after the clean run")?;
        ps.no_corrupt_logs()?;
        nothing_sent_twice(&ps.sc)?;
        Ok::<_, String>(format!(
            "CURRENT {before:?} at the cut, {:?} after the restart",
            ps.current_store()
        ))
    }
    .await;
    ps.outcome(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_compaction_keeps_one_whole_store() {
    let test = "powercut::compaction";
    if !lazyfs_or_skip(test) {
        return;
    }
    let scenarios: Scenarios = ["compaction-before-switch", "compaction-after-switch"]
        .into_iter()
        .zip(500u64..)
        .map(|(point, seed)| {
            let run: Run = Box::pin(compaction_cut(point, seed));
            (point.to_string(), run)
        })
        .collect();
    run_scenarios(test, scenarios).await;
}

/// `backup FILE` returned: the daemon is killed and the power cut at once. FILE (on the
/// same disk) is whole and restores into an empty state folder; the daemon starts again
/// on its own store.
async fn backup_cut() -> Outcome {
    let mut ps = match PowerScenario::new("backup then power cut", crash_sim(600)).await {
        Ok(ps) => ps,
        Err(skip) => return Outcome::Skipped(skip),
    };
    let outcome = async {
        ps.drop_synced(&format!("{NAME}.json"), &ps.sc.manifest_bytes);
        let daemon = ps.start().await?;
        ps.sc.wait_result_recorded(&daemon).await?;
        let file = ps.sc.path("backups/power.backup");
        std::fs::create_dir_all(ps.sc.path("backups")).map_err(|e| e.to_string())?;
        lazyfs::write_synced(&ps.sc.path("backups/.keep"), b"").map_err(|e| e.to_string())?;
        let config = ps.sc.path("config.toml");
        let (code, stdout, stderr) =
            helpers::cli(&config, &["backup", &file.display().to_string()]);
        ensure!(code == Some(0), "backup exited {code:?}: {stdout}{stderr}");
        daemon.kill9().await;
        drop(daemon);
        ps.cut().await?;
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        ensure!(
            bytes > 0,
            "the backup that returned is gone or empty after the cut"
        );
        // Restore it into an empty state folder beside the store (the daemon is down).
        let socket = ps.sc.dir.path().join("restore.sock");
        let restored = TestConfig::new(&ps.sc.root, &ps.sc.sim.base_url())
            .set("admin", "socket", socket.display().to_string())
            .set(
                "paths",
                "state",
                ps.sc.path("restored").display().to_string(),
            );
        let restore_config = ps.sc.dir.path().join("restore.toml");
        std::fs::write(&restore_config, restored.toml()).map_err(|e| e.to_string())?;
        let (code, stdout, stderr) =
            helpers::cli(&restore_config, &["restore", &file.display().to_string()]);
        ensure!(
            code == Some(0) && stdout.contains("restored"),
            "the backup written before the cut does not restore (exit {code:?}): {stdout}{stderr}"
        );
        let daemon = ps.start().await?;
        daemon.sigterm().await?;
        ps.observe_results("after the restart")?;
        ps.no_corrupt_logs()?;
        nothing_sent_twice(&ps.sc)?;
        Ok::<_, String>(format!(
            "{bytes} bytes of backup, restored: {}",
            stdout.trim()
        ))
    }
    .await;
    ps.outcome(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_returned_survives_a_power_cut_and_restores() {
    let test = "powercut::backup";
    if !lazyfs_or_skip(test) {
        return;
    }
    let run: Run = Box::pin(backup_cut());
    run_scenarios(test, vec![("backup".to_string(), run)]).await;
}
