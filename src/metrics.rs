//! `/metrics` (SPEC section 8), written with the `prometheus-client` crate.
//!
//! Two kinds of metric:
//! - observed as things happen, kept here: calls to Tented by endpoint and answer, their
//!   durations, and how late each poll left after it was due;
//! - read from the daemon's state at each scrape ([`Snapshot`]): items and manifests of
//!   unfinished manifests by state (gauges), items and manifests finished by status since
//!   start (counters the store keeps, so they go on counting after a manifest leaves the
//!   active set), the time calls waited for the budget, the 401 pause, the store's size
//!   on disk, the build.
//!
//! Every name begins `tented_bulkd_`, but the usual `process_*` ones; counters end
//! `_total`. A scraper that asks for OpenMetrics gets it; every other gets the text
//! format 0.0.4 ([`Format`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::api::client::{CallObserver, Endpoint};

/// The content type of the text [`Metrics::encode`] writes (OpenMetrics, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    /// The HTTP status, `not_sent` or `uncertain` (`code`, as Prometheus names it; `status`
    /// is the item-status label of other metrics).
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type DurationFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

fn request_duration_histogram() -> Histogram {
    // 10 ms to about 40 s (the default request timeout is 30 s).
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// The metrics observed as things happen. Cheap to share (`Arc` inside each family).
#[derive(Debug)]
pub struct Metrics {
    api_calls: Family<CallLabels, Counter>,
    api_duration: DurationFamily,
    poll_lateness: Histogram,
    /// Calls per second over the last hour, for the status page's plot.
    rates: crate::rates::CallRates,
    /// When the daemon started (`process_start_time_seconds`): recorded, because the
    /// unit's `ProcSubset=pid` hides `/proc/stat`, which the boot time would come from.
    started: std::time::SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the daemon's state says at a scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Items of unfinished manifests by (non-final) state.
    pub items: Vec<(&'static str, u64)>,
    /// Unfinished manifests by state (`active`, `paused`, `credit_wait`, `canceled`,
    /// `writing_result`).
    pub manifests: Vec<(&'static str, u64)>,
    /// Items that reached a final status since start, by status.
    pub items_finished: Vec<(&'static str, u64)>,
    /// Manifests that finished since start, by status.
    pub manifests_finished: Vec<(&'static str, u64)>,
    /// Time every call waited for the request budget, since start.
    pub budget_wait: Duration,
    pub auth_paused: bool,
    pub store_bytes: u64,
    /// The store's syncs (`fdatasync` of its files): how many, and how long each took.
    pub store_syncs: Option<crate::store::SyncStats>,
    /// Every folder (state, outbox, archive) could be written at the last probe.
    pub storage_healthy: bool,
    /// How long ago the oldest unfinished manifest was taken (none: nothing unfinished).
    pub oldest_unfinished_age: Option<Duration>,
    /// `api.requests_per_second`, the budget every call shares.
    pub budget_requests_per_second: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            api_calls: Family::default(),
            api_duration: Family::new_with_constructor(request_duration_histogram),
            // 10 ms to about 5 minutes.
            poll_lateness: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            rates: crate::rates::CallRates::default(),
            started: std::time::SystemTime::now(),
        }
    }

    /// Calls per second over the last hour (creates and polls apart).
    pub fn rates(&self) -> &crate::rates::CallRates {
        &self.rates
    }

    /// A poll left `late` after it was due.
    pub fn observe_poll_lateness(&self, late: Duration) {
        self.poll_lateness.observe(late.as_secs_f64());
    }

    /// The metrics in `format`: the observed ones, the snapshot's, and the process's.
    pub fn encode_as(
        &self,
        snapshot: &Snapshot,
        format: Format,
    ) -> Result<String, std::fmt::Error> {
        let open_metrics = self.encode(snapshot)?;
        Ok(match format {
            Format::OpenMetrics => open_metrics,
            Format::Text004 => text_004(&open_metrics),
        })
    }

    /// The metrics in the OpenMetrics text format, the observed ones, the snapshot's and
    /// the process's (`process_*`, unprefixed, as every exporter names them).
    pub fn encode(&self, snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut root = Registry::default();
        register_process(&mut root, self.started);
        let registry = root.sub_registry_with_prefix("tented_bulkd");
        registry.register(
            "api_calls",
            "Calls to the Tented API by endpoint and answer (HTTP status, not_sent or uncertain)",
            self.api_calls.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time from sending a call to Tented to its answer (or its failure), by endpoint",
            self.api_duration.clone(),
        );
        registry.register(
            "poll_lateness_seconds",
            "How long after its due time a poll was sent (the budget and concurrency delay it)",
            self.poll_lateness.clone(),
        );
        registry.register(
            "items",
            "Items of unfinished manifests by state (states that are not final)",
            gauge_family(&snapshot.items, |state| StateLabels { state }),
        );
        registry.register(
            "manifests",
            "Unfinished manifests by state",
            gauge_family(&snapshot.manifests, |state| StateLabels { state }),
        );
        registry.register(
            "items_finished",
            "Items that reached a final status since the daemon started, by status",
            counter_family(&snapshot.items_finished),
        );
        registry.register(
            "manifests_finished",
            "Manifests that finished since the daemon started, by status",
            counter_family(&snapshot.manifests_finished),
        );
        let budget_wait = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        budget_wait.inc_by(snapshot.budget_wait.as_secs_f64());
        registry.register(
            "budget_wait_seconds",
            "Time calls waited for the request budget (api.requests_per_second) since start",
            budget_wait,
        );
        registry.register(
            "auth_paused",
            "1 while a 401 from Tented pauses every call",
            gauge(i64::from(snapshot.auth_paused)),
        );
        registry.register(
            "store_bytes",
            "Size of the store on disk",
            gauge(i64::try_from(snapshot.store_bytes).unwrap_or(i64::MAX)),
        );
        register_health(registry, snapshot);
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build (always 1)", build);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &root)?;
        Ok(out)
    }
}

/// The text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0: what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for every other client (older scrapers, curl).
    Text004,
}

/// The content type of the text format 0.0.4.
pub const CONTENT_TYPE_004: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Format {
    /// OpenMetrics when the `Accept` header ranks it at least as high as the text format
    /// (and above 0), as content negotiation ranks media types by their `q`; else 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let (mut open_metrics, mut text) = (0.0_f64, 0.0_f64);
        for part in accept.unwrap_or("").split(',') {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let q = params
                .filter_map(|p| {
                    let (key, value) = p.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse().ok())?
                })
                .next()
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open_metrics = open_metrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text004
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::Text004 => CONTENT_TYPE_004,
        }
    }
}

/// OpenMetrics text as the text format 0.0.4: a counter's `# HELP` and `# TYPE` name its
/// `_total` series, `# UNIT` lines and the `# EOF` line go, an `info` or `unknown` family
/// becomes `untyped`. The samples are the same lines.
pub fn text_004(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            let name = if counters.contains(name) && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let tail = match tail {
                "info" | "unknown" | "stateset" if *prefix == "# TYPE " => "untyped",
                other => other,
            };
            Some(format!("{prefix}{name} {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The process's own metrics, as every Prometheus exporter names them; what `/proc` does
/// not give is left out.
fn register_process(registry: &mut Registry, started: std::time::SystemTime) {
    use procfs::prelude::*;
    use prometheus_client::metrics::counter::ConstCounter;
    let since_epoch = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        gauge(i64::try_from(since_epoch).unwrap_or(i64::MAX)),
    );
    let Ok(process) = procfs::process::Process::myself() else {
        return;
    };
    let ticks = procfs::ticks_per_second() as f64;
    if let Ok(stat) = process.stat() {
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent, in seconds",
            ConstCounter::new((stat.utime + stat.stime) as f64 / ticks),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes",
            gauge(i64::try_from(stat.rss_bytes().get()).unwrap_or(i64::MAX)),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes",
            gauge(i64::try_from(stat.vsize).unwrap_or(i64::MAX)),
        );
    }
    if let Ok(fds) = process.fd_count() {
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            gauge(i64::try_from(fds).unwrap_or(i64::MAX)),
        );
    }
    if let Ok(limits) = process.limits() {
        if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
            registry.register(
                "process_max_fds",
                "Maximum number of open file descriptors",
                gauge(i64::try_from(max).unwrap_or(i64::MAX)),
            );
        }
    }
}

/// What an alert watches: storage, the oldest unfinished manifest, the budget, the syncs.
fn register_health(registry: &mut Registry, snapshot: &Snapshot) {
    registry.register(
        "storage_healthy",
        "1 while the state, outbox and archive folders can all be written (the disk probe)",
        gauge(i64::from(snapshot.storage_healthy)),
    );
    registry.register(
        "oldest_unfinished_manifest_age_seconds",
        "Age of the oldest manifest taken and not finished (0 when there is none)",
        gauge(
            snapshot
                .oldest_unfinished_age
                .map_or(0, |age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
        ),
    );
    registry.register(
        "budget_requests_per_second",
        "The request budget every call to Tented shares (api.requests_per_second)",
        gauge(i64::try_from(snapshot.budget_requests_per_second).unwrap_or(i64::MAX)),
    );
    if let Some(syncs) = &snapshot.store_syncs {
        registry.register(
            "store_syncs",
            "Syncs of the store's files to the disk (one serves every commit waiting for it)",
            syncs.syncs.clone(),
        );
        registry.register(
            "store_sync_duration_seconds",
            "Time each sync of the store's files took",
            syncs.seconds.clone(),
        );
    }
}

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

fn gauge_family(
    rows: &[(&'static str, u64)],
    labels: impl Fn(&'static str) -> StateLabels,
) -> Family<StateLabels, Gauge> {
    let family = Family::<StateLabels, Gauge>::default();
    for (state, n) in rows {
        family
            .get_or_create(&labels(state))
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    family
}

fn counter_family(rows: &[(&'static str, u64)]) -> Family<StatusLabels, Counter> {
    let family = Family::<StatusLabels, Counter>::default();
    for (status, n) in rows {
        family.get_or_create(&StatusLabels { status }).inc_by(*n);
    }
    family
}

impl CallObserver for Metrics {
    fn call_finished(&self, endpoint: Endpoint, answer: &str, left: bool, took: Duration) {
        if left {
            let sent_at = std::time::Instant::now()
                .checked_sub(took)
                .unwrap_or_else(std::time::Instant::now);
            self.rates.record(sent_at, endpoint.is_create());
        }
        self.api_calls
            .get_or_create(&CallLabels {
                endpoint: endpoint.as_str(),
                code: answer.to_string(),
            })
            .inc();
        self.api_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; Q=0.9, */*; q=0.1")),
            Format::OpenMetrics
        );
        for other in [
            None,
            Some("*/*"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0"),
            Some("application/openmetrics-text;q=0.3,text/plain;version=0.0.4"),
        ] {
            assert_eq!(Format::from_accept(other), Format::Text004, "{other:?}");
        }
        let open = "# HELP tented_bulkd_api_calls Calls.\n# TYPE tented_bulkd_api_calls counter\ntented_bulkd_api_calls_total{endpoint=\"create\",code=\"202\"} 1\n# HELP up_time Up.\n# TYPE up_time gauge\n# UNIT up_time seconds\nup_time 3\n# EOF\n";
        assert_eq!(
            text_004(open),
            "# HELP tented_bulkd_api_calls_total Calls.\n# TYPE tented_bulkd_api_calls_total counter\ntented_bulkd_api_calls_total{endpoint=\"create\",code=\"202\"} 1\n# HELP up_time Up.\n# TYPE up_time gauge\nup_time 3\n"
        );
    }

    #[test]
    fn the_text_has_help_type_and_the_values_given() {
        let metrics = Metrics::new();
        metrics.call_finished(Endpoint::BulkCreate, "202", true, Duration::from_millis(30));
        metrics.observe_poll_lateness(Duration::from_millis(5));
        let syncs = crate::store::SyncStats::default();
        syncs.syncs.inc_by(7);
        syncs.seconds.observe(0.002);
        let snapshot = Snapshot {
            items: vec![("pending", 3)],
            manifests: vec![("active", 1)],
            items_finished: vec![("completed", 52), ("failed", 5)],
            manifests_finished: vec![("completed_with_failures", 1)],
            budget_wait: Duration::from_millis(1500),
            auth_paused: true,
            store_bytes: 4096,
            store_syncs: Some(syncs),
            storage_healthy: true,
            oldest_unfinished_age: Some(Duration::from_secs(90)),
            budget_requests_per_second: 5,
        };
        let text = metrics.encode(&snapshot).expect("encodes");
        for line in [
            "# TYPE tented_bulkd_api_calls counter",
            "tented_bulkd_api_calls_total{endpoint=\"bulk_create\",code=\"202\"} 1",
            "tented_bulkd_api_request_duration_seconds_count{endpoint=\"bulk_create\"} 1",
            "tented_bulkd_poll_lateness_seconds_count 1",
            "tented_bulkd_items{state=\"pending\"} 3",
            "tented_bulkd_manifests{state=\"active\"} 1",
            "tented_bulkd_items_finished_total{status=\"completed\"} 52",
            "tented_bulkd_manifests_finished_total{status=\"completed_with_failures\"} 1",
            "tented_bulkd_budget_wait_seconds_total 1.5",
            "tented_bulkd_auth_paused 1",
            "tented_bulkd_store_bytes 4096",
            "# HELP tented_bulkd_store_bytes Size of the store on disk.",
            "tented_bulkd_store_syncs_total 7",
            "tented_bulkd_storage_healthy 1",
            "tented_bulkd_oldest_unfinished_manifest_age_seconds 90",
            "tented_bulkd_budget_requests_per_second 5",
            "tented_bulkd_store_sync_duration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "tented_bulkd_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
