//! `cargo bench --bench records`: the reading commands on a store of 100,000 manifests
//! (issue 16, SPEC section 7: `list`, `show` and `/status` answer in under 100 ms with
//! 100,000 manifests in the store, pruned summaries included).
//!
//! Two stores, each filled through the library's store API as intake, submission, polling
//! and retention write it (no file, no API call), each manifest of 1 to 24 items:
//! - "300 in flight": the oldest 96,700 manifests finished and pruned to their summaries,
//!   then 3,000 finished and whole with 300 in flight among them (half of them with
//!   their chunk admitted, the others with nothing sent yet);
//! - "10,000 in flight" (issue 16's many small manifests at once): 89,000 pruned, then
//!   1,000 finished and whole among 10,000 in flight; its figures are printed against
//!   the target for the record, not checked (`/status` and the page list every manifest
//!   in flight by contract: 4-5 MB, CPU-bound).
//!
//! Commits run 64 at a time, so that they share their syncs (group commit), in a folder
//! of `/dev/shm` where there is one; the store is then opened again, which compacts it
//! as a running daemon's pruner has it done, and copied to the disk.
//!
//! Then the real binary runs on that store against a simulator that answers nothing for
//! 30 s (the daemon's requests stay on the wire, so the store holds still while it is
//! read), and each figure is timed several times, the median checked against the target:
//! - the wall time of the `tented-bulkd list`, `list --json` and `show NAME` processes
//!   (a whole finished manifest, one in flight, a pruned one), start to exit;
//! - the HTTP round trip of `GET /status`, `GET /` (the status page) and, for the record,
//!   `GET /metrics`.
//!
//! It also prints the daemon's CPU over 2 s before the figures (its own work) and while
//! they are taken. Exits 1 when a target of the first scenario is missed.
//! `TENTED_BENCH_RECORDS_STORE=DIR` keeps the filled state folders in DIR (filled when
//! missing, reused otherwise: a fill takes minutes); `TENTED_BENCH_RECORDS_BINARY=FILE`
//! measures another build of the binary (to compare two builds on the same stores).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tented_bulkd::manifest::{ManifestKind, TopFields};
use tented_bulkd::pipeline::intake::{sha256, validation::validate_manifest};
use tented_bulkd::state::item::{ItemEvent, ItemRecord};
use tented_bulkd::state::job::{JobEvent, JobKind, JobRecord};
use tented_bulkd::store::{ChunkCursor, ManifestRecord, Received, Store};

/// Manifests in the store.
const MANIFESTS: u64 = 100_000;
/// Commits under way at once while filling (they share their syncs).
const FILL_TASKS: u64 = 64;
const DAY_MS: u64 = 86_400_000;
/// How often each figure is taken; the median is checked.
const RUNS: usize = 9;
const TARGET: Duration = Duration::from_millis(100);

type Failure = String;

/// A store's mix: the oldest `MANIFESTS - whole` pruned; among the `whole` newest,
/// `in_flight` spread evenly, the others finished. A scenario not `checked` prints its
/// figures against the target without failing the bench.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    whole: u64,
    in_flight: u64,
    checked: bool,
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "300-in-flight",
        whole: 3_300,
        in_flight: 300,
        checked: true,
    },
    Scenario {
        name: "10000-in-flight",
        whole: 11_000,
        in_flight: 10_000,
        // /status and the page list every manifest in flight (4-5 MB here): CPU-bound,
        // they pass 100 ms when other work shares the cores. For the record.
        checked: false,
    },
];

/// What a manifest of the store is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pruned,
    Finished,
    InFlight,
}

impl Scenario {
    fn pruned(&self) -> u64 {
        MANIFESTS - self.whole
    }

    fn fate(&self, n: u64) -> Fate {
        let Some(k) = n.checked_sub(self.pruned()) else {
            return Fate::Pruned;
        };
        // `in_flight` of the `whole`, evenly spread: where k * in_flight / whole steps.
        if (k + 1) * self.in_flight / self.whole != k * self.in_flight / self.whole {
            Fate::InFlight
        } else {
            Fate::Finished
        }
    }

    /// The first manifest of that fate, for `show`.
    fn first(&self, fate: Fate) -> u64 {
        (0..MANIFESTS).find(|n| self.fate(*n) == fate).unwrap_or(0)
    }
}

fn name_of(n: u64) -> String {
    format!("customer-{n:06}")
}

fn items_of(n: u64) -> u32 {
    1 + (n % 24) as u32
}

/// A small manifest as a CRM integration drops one per customer.
fn manifest_text(n: u64) -> String {
    let items: Vec<String> = (0..items_of(n))
        .map(|i| {
            format!(
                r#"{{"client_item_id":"c{n}-{i}","input_data":{{"first_name":"Person {i}","company_name":"Customer {n}"}},"instructions":"Keep it concise."}}"#
            )
        })
        .collect();
    format!(
        r#"{{"template_id":"tpl_crm","default_tent_name_prefix":"Customer {n}","items":[{}]}}"#,
        items.join(",")
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When manifest `n` was received: the pruned ones between 390 and 91 days ago (their
/// retention of 90 days has passed), the others within the last 30 days.
fn received_at(scenario: &Scenario, n: u64, now: u64) -> u64 {
    let pruned = scenario.pruned();
    if n < pruned {
        now - 390 * DAY_MS + n * (299 * DAY_MS / pruned)
    } else {
        now - 30 * DAY_MS + (n - pruned) * (29 * DAY_MS / scenario.whole)
    }
}

/// Records manifest `n` as intake does: its items (typed by the daemon's validation), the
/// indexes of its name and bytes, archived.
async fn receive(store: &Store, n: u64, at: u64) -> Result<u64, Failure> {
    let text = manifest_text(n);
    let validated = validate_manifest(text.as_bytes()).map_err(|e| e.to_string())?;
    let id = store.new_manifest_id().map_err(|e| e.to_string())?;
    let mut record = ManifestRecord::received(Received {
        id,
        name: name_of(n),
        inbox_file: format!("{}.json", name_of(n)),
        kind: ManifestKind::Bulk,
        received_at_ms: at,
        sha256: sha256(text.as_bytes()),
        top: TopFields::from_validated(&validated.top).map_err(|e| e.to_string())?,
        top_given: serde_json::Value::Object(validated.top.clone()).to_string(),
        item_count: validated.items.len() as u32,
        rejection: None,
    });
    record.archive();
    let writer = store.writer().await;
    let mut txn = writer.create(record).map_err(|e| e.to_string())?;
    txn.index_name();
    txn.index_hash();
    for item in validated.items {
        let key = item.key();
        if let Some(client_item_id) = &item.client_item_id {
            txn.index_client_item(client_item_id.as_str(), item.index);
        }
        let fields = item.fields.ok_or("a bench item was not typed")?;
        let pending = ItemRecord::pending(id, item.index, key, item.given, fields);
        txn.insert_item(pending).map_err(|e| e.to_string())?;
    }
    txn.commit().await.map_err(|e| e.to_string())?;
    Ok(id)
}

/// Sends the manifest's one chunk (its items admitted as one bulk job), and when
/// `finish`, completes every item (one in seven fails) and writes its result.
async fn send(store: &Store, id: u64, n: u64, at: u64, finish: bool) -> Result<(), Failure> {
    let items = items_of(n);
    let writer = store.writer().await;
    let mut txn = writer.begin(id).map_err(|e| e.to_string())?;
    let mut job = JobRecord::sending(id, 0, JobKind::Bulk, (0..items).collect(), at + 1_000);
    let job_id = format!("01JQZB{n:020}");
    for index in 0..items {
        let events = [
            ItemEvent::SendIntent { job_seq: 0 },
            ItemEvent::Accepted {
                tent_id: format!("tent-{n}-{index}"),
                tent_name: Some(format!("Customer {n} {}", index + 1)),
                bulk_job_id: Some(job_id.clone()),
                generation_id: None,
            },
        ];
        for event in events {
            txn.apply(index, event).map_err(|e| e.to_string())?;
        }
        if finish {
            let event = if (n + u64::from(index)).is_multiple_of(7) {
                ItemEvent::GenerationFailed {
                    message: "the generation failed".into(),
                }
            } else {
                ItemEvent::Generated { publication: None }
            };
            txn.apply(index, event).map_err(|e| e.to_string())?;
        }
    }
    job.admitted_as(job_id, at + 1_200);
    let answered = JobEvent::Answered {
        any_admitted: true,
        any_to_resend: false,
    };
    job.apply(answered).map_err(|e| e.to_string())?;
    if finish {
        job.last_polled_at_ms = Some(at + 60_000);
        job.status = Some("completed".into());
        job.apply(JobEvent::ItemsFinal).map_err(|e| e.to_string())?;
        txn.finish(at + 60_000);
        txn.mark_result_written();
    }
    txn.put_job(job);
    txn.take_job_seq();
    txn.move_chunk_cursor(ChunkCursor::Next);
    txn.commit().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Prunes a finished manifest as the retention task does.
async fn prune(store: &Store, id: u64, now: u64) -> Result<(), Failure> {
    let err = |e: tented_bulkd::store::StoreError| e.to_string();
    if !store.begin_prune(id, now).await.map_err(err)? {
        return Err(format!("manifest {id} is not prunable"));
    }
    while !store
        .prune_slice(id, 500, now, 10_000)
        .await
        .map_err(err)?
        .is_empty()
    {}
    store.finish_prune(id).await.map_err(err)
}

/// Manifest `n`, from intake to its fate.
async fn fill_one(store: &Store, scenario: &Scenario, n: u64, now: u64) -> Result<(), Failure> {
    let at = received_at(scenario, n, now);
    let id = receive(store, n, at).await?;
    match scenario.fate(n) {
        Fate::InFlight => {
            // Half of those in flight have their chunk admitted; the others sent nothing.
            if n.is_multiple_of(2) {
                send(store, id, n, at, false).await?;
            }
        }
        Fate::Finished => send(store, id, n, at, true).await?,
        Fate::Pruned => {
            send(store, id, n, at, true).await?;
            prune(store, id, now - DAY_MS).await?;
        }
    }
    Ok(())
}

/// Fills manifests `range`, `FILL_TASKS` at a time, in order of `n` within each task.
async fn fill_range(
    store: &Arc<Store>,
    scenario: Scenario,
    range: std::ops::Range<u64>,
) -> Result<(), Failure> {
    let now = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..FILL_TASKS {
        let store = Arc::clone(store);
        let range = range.clone();
        tasks.spawn(async move {
            for n in range.skip(task as usize).step_by(FILL_TASKS as usize) {
                fill_one(&store, &scenario, n, now).await?;
            }
            Ok::<(), Failure>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Fills the state folder `state`: the pruned manifests first (the oldest ids), then the
/// whole ones; then opens it again, which compacts it as a daemon's pruner has it done
/// (sled's log keeps the space of what pruning removed until then).
async fn fill(state: &Path, scenario: Scenario) -> Result<(), Failure> {
    std::fs::create_dir_all(state).map_err(|e| e.to_string())?;
    let store = Arc::new(Store::open(state).map_err(|e| e.to_string())?);
    let start = Instant::now();
    fill_range(&store, scenario, 0..scenario.pruned()).await?;
    fill_range(&store, scenario, scenario.pruned()..MANIFESTS).await?;
    store.flush().await.map_err(|e| e.to_string())?;
    let filled = start.elapsed();
    drop(store);
    drop(Store::open(state).map_err(|e| e.to_string())?);
    println!(
        "filled in {:.1} s, compacted in {:.1} s: {} pruned, {} finished whole, {} in flight",
        filled.as_secs_f64(),
        (start.elapsed() - filled).as_secs_f64(),
        scenario.pruned(),
        scenario.whole - scenario.in_flight,
        scenario.in_flight,
    );
    Ok(())
}

/// `cp -a from to`.
fn copy(from: &Path, to: &Path) -> Result<(), Failure> {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !copied.success() {
        return Err(format!(
            "cannot copy {} to {}",
            from.display(),
            to.display()
        ));
    }
    Ok(())
}

/// Fills a store into `filled` (which must not exist): in a folder of `/dev/shm` where
/// there is one (the same records, but a sync costs nothing there: minutes less), then
/// copied; renamed into place once whole, so that a fill cut short is never reused.
async fn fill_into(filled: &Path, scenario: Scenario) -> Result<(), Failure> {
    let partial = PathBuf::from(format!("{}.partial", filled.display()));
    let _ = std::fs::remove_dir_all(&partial);
    let shm = tempfile::Builder::new()
        .prefix("tented-bulkd-records-")
        .tempdir_in("/dev/shm");
    match shm {
        Ok(shm) => {
            let state = shm.path().join("state");
            fill(&state, scenario).await?;
            copy(&state, &partial)?;
        }
        Err(_) => fill(&partial, scenario).await?,
    }
    std::fs::rename(&partial, filled).map_err(|e| format!("{}: {e}", filled.display()))
}

/// The daemon's environment: its folders under `dir`, the admin endpoint on `admin`.
fn env(dir: &Path, base_url: &str, admin: &str) -> Vec<(String, String)> {
    let path = |sub: &str| dir.join(sub).display().to_string();
    [
        ("API__BASE_URL", base_url.to_string()),
        ("API__TIMEOUT", "60s".into()),
        ("PATHS__INBOX", path("inbox")),
        ("PATHS__OUTBOX", path("outbox")),
        ("PATHS__ARCHIVE", path("archive")),
        ("PATHS__STATE", path("state")),
        ("ADMIN__LISTEN", admin.to_string()),
        ("ADMIN__SOCKET", path("control.sock")),
    ]
    .into_iter()
    .map(|(k, v)| (format!("TENTED_BULKD__{k}"), v))
    .collect()
}

/// The binary measured: this build's, or `TENTED_BENCH_RECORDS_BINARY` (another build's,
/// to compare two builds on the same stores in turn).
fn binary() -> PathBuf {
    std::env::var_os("TENTED_BENCH_RECORDS_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tented-bulkd")),
        PathBuf::from,
    )
}

/// A loopback address with a port free a moment ago, for the daemon's admin endpoint.
fn free_loopback_address() -> Result<String, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(address.to_string())
}

/// The daemon, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPU time (user + system) the process `pid` has used so far, from `/proc`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    Some(Duration::from_millis(ticks * 10))
}

/// Runs `work`; with its output, the percentage of a core the process `pid` used meanwhile.
async fn with_cpu_share<T>(
    pid: u32,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<f64>) {
    let (before, start) = (cpu_time(pid), Instant::now());
    let output = work.await;
    let share = before.zip(cpu_time(pid)).map(|(before, after)| {
        100.0 * (after - before).as_secs_f64() / start.elapsed().as_secs_f64()
    });
    (output, share)
}

/// Starts the real binary on the filled store and waits until it answers `/healthz`.
async fn start_daemon(env: &[(String, String)], admin: &str) -> Result<Daemon, Failure> {
    let start = Instant::now();
    let child = std::process::Command::new(binary())
        .arg("run")
        .envs(env.iter().cloned())
        .env("TENTED_API_KEY", "sim-key")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    let daemon = Daemon(child);
    let client = reqwest::Client::new();
    while start.elapsed() < Duration::from_secs(120) {
        let answer = client.get(format!("http://{admin}/healthz")).send().await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            println!(
                "the daemon answers {:.2} s after its start",
                start.elapsed().as_secs_f64()
            );
            return Ok(daemon);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the daemon did not answer /healthz within 120 s".into())
}

struct Report {
    failed: bool,
    /// Whether a missed target fails the bench (see [`Scenario::checked`]).
    checked: bool,
}

impl Report {
    /// Prints the median and the slowest of `times` next to the target (checked on the
    /// median; `None`: a figure for the record, without a target), and the daemon's CPU
    /// per answer (`daemon_cpu` is the daemon's CPU time over all of `times`).
    fn line(
        &mut self,
        what: &str,
        mut times: Vec<Duration>,
        daemon_cpu: Option<Duration>,
        target: Option<Duration>,
    ) {
        times.sort();
        let median = times[times.len() / 2];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (bound, verdict) = match target {
            Some(target) => {
                let ok = median <= target;
                self.failed |= !ok && self.checked;
                let verdict = match (ok, self.checked) {
                    (true, _) => "ok",
                    (false, true) => "MISSED",
                    (false, false) => "over (not checked)",
                };
                (format!("target < {} ms", target.as_millis()), verdict)
            }
            None => (String::new(), ""),
        };
        let cpu = daemon_cpu.map_or("?".to_string(), |cpu| {
            format!("{:.1}", ms(cpu) / times.len() as f64)
        });
        println!(
            "{what:<44} median {:>7.1} ms  max {:>7.1} ms  daemon CPU {cpu:>5} ms  {bound:<16} {verdict}",
            ms(median),
            ms(*times.last().unwrap_or(&median)),
        );
    }
}

/// The wall time of one run of the binary with `args`, start to exit; fails on a
/// non-zero exit.
fn time_command(env: &[(String, String)], args: &[&str]) -> Result<(Duration, usize), Failure> {
    let start = Instant::now();
    let output = std::process::Command::new(binary())
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    let took = start.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{args:?} failed ({}): {stderr}", output.status));
    }
    Ok((took, output.stdout.len()))
}

/// The round trip of `GET path`, body read; fails unless 200.
async fn time_get(client: &reqwest::Client, url: &str) -> Result<(Duration, usize), Failure> {
    let start = Instant::now();
    let answer = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status();
    let body = answer.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let took = start.elapsed();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    Ok((took, body.len()))
}

/// Each reading command and endpoint, `RUNS` times.
async fn measure(
    report: &mut Report,
    scenario: &Scenario,
    env: &[(String, String)],
    (admin, pid): (&str, u32),
) -> Result<(), Failure> {
    let whole = name_of(scenario.first(Fate::Finished));
    let in_flight = name_of(scenario.first(Fate::InFlight));
    let pruned = name_of(scenario.pruned() / 2);
    let commands: [(String, Vec<&str>); 5] = [
        ("tented-bulkd list".into(), vec!["list"]),
        ("tented-bulkd list --json".into(), vec!["list", "--json"]),
        (
            format!("tented-bulkd show {whole} (finished)"),
            vec!["show", &whole],
        ),
        (
            format!("tented-bulkd show {in_flight} (in flight)"),
            vec!["show", &in_flight],
        ),
        (
            format!("tented-bulkd show {pruned} (pruned)"),
            vec!["show", &pruned],
        ),
    ];
    for (what, args) in &commands {
        let (mut times, mut bytes, cpu) = (Vec::new(), 0, cpu_time(pid));
        for _ in 0..RUNS {
            let (took, size) = time_command(env, args)?;
            times.push(took);
            bytes = size;
        }
        let cpu = cpu.zip(cpu_time(pid)).map(|(before, after)| after - before);
        report.line(&format!("{what} ({bytes} B)"), times, cpu, Some(TARGET));
    }
    let client = reqwest::Client::new();
    for (path, target) in [
        ("/status", Some(TARGET)),
        ("/", Some(TARGET)),
        ("/metrics", None),
    ] {
        let url = format!("http://{admin}{path}");
        let (mut times, mut bytes, cpu) = (Vec::new(), 0, cpu_time(pid));
        for _ in 0..RUNS {
            let (took, size) = time_get(&client, &url).await?;
            times.push(took);
            bytes = size;
        }
        let cpu = cpu.zip(cpu_time(pid)).map(|(before, after)| after - before);
        report.line(&format!("GET {path} ({bytes} B)"), times, cpu, target);
    }
    Ok(())
}

/// Where filled stores are kept (`TENTED_BENCH_RECORDS_STORE`), if anywhere.
fn kept_stores() -> Option<PathBuf> {
    std::env::var_os("TENTED_BENCH_RECORDS_STORE").map(PathBuf::from)
}

/// One scenario: its store filled (or reused), the daemon started on a copy, every figure.
async fn scenario(report: &mut Report, scenario: Scenario) -> Result<(), Failure> {
    println!("\n{MANIFESTS} manifests in the store, {}", scenario.name);
    report.checked = scenario.checked;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for sub in ["inbox", "outbox", "archive"] {
        std::fs::create_dir_all(dir.path().join(sub)).map_err(|e| e.to_string())?;
    }
    let filled = kept_stores()
        .unwrap_or_else(|| dir.path().to_path_buf())
        .join(format!("filled-{}", scenario.name));
    if filled.exists() {
        println!("reusing the store in {}", filled.display());
    } else {
        fill_into(&filled, scenario).await?;
    }
    // The daemon works on a copy: its start (recovery, sending) changes the store.
    let state = dir.path().join("state");
    copy(&filled, &state)?;
    let sim = common::slow_answering_simulator().await?;
    let admin = free_loopback_address()?;
    let env = env(dir.path(), &sim.base_url(), &admin);
    let daemon = start_daemon(&env, &admin).await?;
    let pid = daemon.0.id();
    let ((), idle) = with_cpu_share(pid, tokio::time::sleep(Duration::from_secs(2))).await;
    if let Some(idle) = idle {
        println!("the daemon's own CPU over 2 s before the figures: {idle:.0}% of a core");
    }
    println!("each figure {RUNS} times");
    let (measured, busy) =
        with_cpu_share(pid, measure(report, &scenario, &env, (&admin, pid))).await;
    if let Some(busy) = busy {
        println!(
            "the daemon's CPU while measured (its work and the answers): {busy:.0}% of a core"
        );
    }
    drop(daemon);
    measured
}

async fn run(report: &mut Report) -> Result<(), Failure> {
    if let Some(kept) = kept_stores() {
        std::fs::create_dir_all(&kept).map_err(|e| format!("{}: {e}", kept.display()))?;
    }
    for one in SCENARIOS {
        scenario(report, one).await?;
    }
    Ok(())
}

fn main() {
    // `cargo test` also runs bench targets with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = common::runtime();
    let mut report = Report {
        failed: false,
        checked: true,
    };
    if let Err(e) = runtime.block_on(run(&mut report)) {
        eprintln!("bench failed: {e}");
        std::process::exit(2);
    }
    std::process::exit(i32::from(report.failed));
}
