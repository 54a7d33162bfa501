//! The `tented-bulkd sim` command line and its config file: listen address, API key,
//! templates and every knob.
//!
//! Precedence, knob by knob: a flag given on the command line, then the `[sim]` section
//! of the `--config` file, then the built-in default (`SimConfig::default()`, listening
//! on `127.0.0.1:8787`). A repeatable flag given at least once (`--template`,
//! `--taken-alias`, `--idle-tent`) replaces the file's list; `--fault` flags are applied
//! one by one on top of the file's `[sim.faults.*]` tables, so each overrides only the
//! rate it names. `examples/sim.toml` lists every key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::simulator::{EndpointFaults, FaultRates, SimConfig, SimError};

/// Where the simulator listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// `tented-bulkd sim [--config FILE] [--listen ADDR] [--api-key KEY] [--template ID]... [knobs]`
///
/// Durations are humantime strings ("500ms", "2s"); a range is "MIN..MAX" or a single
/// duration. Rates are shares between 0 and 1. Flags given here override the file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SimArgs {
    /// A TOML file whose [sim] section sets any knob below (keys in snake_case, see
    /// examples/sim.toml); flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The only bearer token accepted [default: sim-key].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// A template id that exists and is approved (repeatable). Without any, every id
    /// beginning with `tpl_` does.
    #[arg(long = "template", value_name = "ID")]
    pub templates: Vec<String>,
    /// Latency added to each /v1 request [default: 0ms].
    #[arg(long, value_name = "RANGE")]
    pub latency: Option<String>,
    /// Time a generation stays queued [default: 1s..3s].
    #[arg(long, value_name = "RANGE")]
    pub queue_time: Option<String>,
    /// Time a generation stays generating [default: 5s..20s].
    #[arg(long, value_name = "RANGE")]
    pub generation_time: Option<String>,
    /// Time a publication stays pending after generation completes [default: 1s..2s].
    #[arg(long, value_name = "RANGE")]
    pub publish_time: Option<String>,
    /// Share of generations that fail [default: 0.05].
    #[arg(long, value_name = "RATE")]
    pub failure_rate: Option<f64>,
    /// Share of auto-publishes that fail with PUBLISH_LIMIT_EXCEEDED [default: 0.02].
    #[arg(long, value_name = "RATE")]
    pub publish_failure_rate: Option<f64>,
    /// An alias already in use in the workspace (repeatable).
    #[arg(long = "taken-alias", value_name = "ALIAS")]
    pub taken_aliases: Vec<String>,
    /// A tent id (uuid) that exists without a generation (repeatable).
    #[arg(long = "idle-tent", value_name = "UUID")]
    pub idle_tents: Vec<String>,
    /// Retry-After seconds sent by GET /v1/tents/{id} while in progress [default: 10].
    #[arg(long, value_name = "SECS")]
    pub retry_after_secs: Option<u64>,
    /// Send no Retry-After header at all (wins over --retry-after-secs).
    #[arg(long)]
    pub no_retry_after: bool,
    /// Credit balance; unlimited when absent.
    #[arg(long)]
    pub credits: Option<u64>,
    /// Seed for reproducible random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// An injected fault, repeatable: ENDPOINT.KIND=VALUE, where ENDPOINT is one of
    /// all, bulk_create, bulk_status, create, edit, tent_status and KIND one of 429,
    /// 500, 503, drop_before, drop_after, hang (a rate) or retry_after_429 (seconds).
    /// Example: --fault all.503=0.05 --fault bulk_create.drop_after=0.1
    #[arg(long = "fault", value_name = "ENDPOINT.KIND=VALUE")]
    pub faults: Vec<String>,
}

impl SimArgs {
    /// The listen address and the configuration these flags describe, on top of the
    /// `--config` file when one is given.
    pub fn into_config(self) -> Result<(String, SimConfig), SimError> {
        let file = match &self.config {
            Some(path) => Some(SimFile::load(path)?),
            None => None,
        };
        self.merge(file.unwrap_or_default())
    }

    /// Built-in defaults, then the file, then the flags given.
    fn merge(self, file: SimFile) -> Result<(String, SimConfig), SimError> {
        let SimFile { origin, sim } = file;
        let key = |name: &str| format!("{origin}: [sim] {name}");
        let mut config = SimConfig::default();

        // The file.
        let mut listen = sim.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        if let Some(api_key) = sim.api_key {
            config.api_key = api_key;
        }
        if let Some(templates) = sim.templates {
            config.templates = templates;
        }
        let ranges = [
            (&sim.latency, "latency", &mut config.latency),
            (&sim.queue_time, "queue_time", &mut config.queue_time),
            (
                &sim.generation_time,
                "generation_time",
                &mut config.generation_time,
            ),
            (&sim.publish_time, "publish_time", &mut config.publish_time),
        ];
        for (text, name, target) in ranges {
            if let Some(text) = text {
                *target = parse_range(&key(name), text)?;
            }
        }
        if let Some(rate) = sim.failure_rate {
            config.failure_rate = check_rate(&key("failure_rate"), rate)?;
        }
        if let Some(rate) = sim.publish_failure_rate {
            config.publish_failure_rate = check_rate(&key("publish_failure_rate"), rate)?;
        }
        if let Some(aliases) = sim.taken_aliases {
            config.taken_aliases = aliases;
        }
        if let Some(tents) = sim.idle_tents {
            config.idle_tents = tents;
        }
        match sim.retry_after_secs {
            Some(RetryAfter::Seconds(secs)) => config.retry_after_secs = Some(secs),
            Some(RetryAfter::Off) => config.retry_after_secs = None,
            None => {}
        }
        if sim.credits.is_some() {
            config.credits = sim.credits;
        }
        if sim.seed.is_some() {
            config.seed = sim.seed;
        }
        sim.faults.apply(&origin, &mut config.errors)?;

        // The flags given on the command line.
        if let Some(addr) = self.listen {
            listen = addr;
        }
        if let Some(api_key) = self.api_key {
            config.api_key = api_key;
        }
        if !self.templates.is_empty() {
            config.templates = self.templates;
        }
        let ranges = [
            (&self.latency, "--latency", &mut config.latency),
            (&self.queue_time, "--queue-time", &mut config.queue_time),
            (
                &self.generation_time,
                "--generation-time",
                &mut config.generation_time,
            ),
            (
                &self.publish_time,
                "--publish-time",
                &mut config.publish_time,
            ),
        ];
        for (text, flag, target) in ranges {
            if let Some(text) = text {
                *target = parse_range(flag, text)?;
            }
        }
        if let Some(rate) = self.failure_rate {
            config.failure_rate = check_rate("--failure-rate", rate)?;
        }
        if let Some(rate) = self.publish_failure_rate {
            config.publish_failure_rate = check_rate("--publish-failure-rate", rate)?;
        }
        if !self.taken_aliases.is_empty() {
            config.taken_aliases = self.taken_aliases;
        }
        if !self.idle_tents.is_empty() {
            config.idle_tents = self.idle_tents;
        }
        if let Some(secs) = self.retry_after_secs {
            config.retry_after_secs = Some(secs);
        }
        if self.no_retry_after {
            config.retry_after_secs = None;
        }
        if self.credits.is_some() {
            config.credits = self.credits;
        }
        if self.seed.is_some() {
            config.seed = self.seed;
        }
        for spec in &self.faults {
            apply_fault(&mut config.errors, spec)?;
        }
        Ok((listen, config))
    }
}

/// A parsed `--config` file and where it came from (for messages).
#[derive(Debug, Default)]
struct SimFile {
    origin: String,
    sim: SimSection,
}

impl SimFile {
    fn load(path: &Path) -> Result<SimFile, SimError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::InvalidConfig(format!("cannot read {origin}: {e}")))?;
        SimFile::parse(&origin, &text)
    }

    /// Parses the TOML text; unknown sections and keys are refused by name.
    fn parse(origin: &str, text: &str) -> Result<SimFile, SimError> {
        let file: FileRoot = toml::from_str(text).map_err(|e| {
            SimError::InvalidConfig(format!("{origin}: {}", e.to_string().trim_end()))
        })?;
        Ok(SimFile {
            origin: origin.to_owned(),
            sim: file.sim,
        })
    }
}

/// The whole file: only a `[sim]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    #[serde(default)]
    sim: SimSection,
}

/// The `[sim]` section: the long flags' names in snake_case, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimSection {
    listen: Option<String>,
    api_key: Option<String>,
    templates: Option<Vec<String>>,
    latency: Option<String>,
    queue_time: Option<String>,
    generation_time: Option<String>,
    publish_time: Option<String>,
    failure_rate: Option<f64>,
    publish_failure_rate: Option<f64>,
    taken_aliases: Option<Vec<String>>,
    idle_tents: Option<Vec<String>>,
    /// Whole seconds, or `false` for no header (as `--no-retry-after`); absent keeps 10.
    retry_after_secs: Option<RetryAfter>,
    credits: Option<u64>,
    seed: Option<u64>,
    #[serde(default)]
    faults: FaultSections,
}

/// `retry_after_secs` in the file: a number of seconds, or `false`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RetryAfter {
    Seconds(u64),
    Off,
}

impl<'de> Deserialize<'de> for RetryAfter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RetryAfter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("whole seconds (e.g. 10), or false to send no Retry-After header")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RetryAfter, E> {
                if v {
                    Err(E::invalid_value(serde::de::Unexpected::Bool(true), &self))
                } else {
                    Ok(RetryAfter::Off)
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RetryAfter, E> {
                Ok(RetryAfter::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RetryAfter, E> {
                u64::try_from(v)
                    .map(RetryAfter::Seconds)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[sim.faults.ENDPOINT]` tables; `all` applies first, then each endpoint's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSections {
    all: Option<FaultTable>,
    bulk_create: Option<FaultTable>,
    bulk_status: Option<FaultTable>,
    create: Option<FaultTable>,
    edit: Option<FaultTable>,
    tent_status: Option<FaultTable>,
}

impl FaultSections {
    fn apply(&self, origin: &str, faults: &mut EndpointFaults) -> Result<(), SimError> {
        let tables = [
            ("all", &self.all),
            ("bulk_create", &self.bulk_create),
            ("bulk_status", &self.bulk_status),
            ("create", &self.create),
            ("edit", &self.edit),
            ("tent_status", &self.tent_status),
        ];
        for (endpoint, table) in tables {
            let Some(table) = table else { continue };
            let key = |name: &str| format!("{origin}: [sim.faults.{endpoint}] {name}");
            let rates = [
                (table.rate_429, "rate_429"),
                (table.rate_500, "rate_500"),
                (table.rate_503, "rate_503"),
                (table.drop_before, "drop_before"),
                (table.drop_after, "drop_after"),
                (table.hang, "hang"),
            ];
            for (rate, name) in rates {
                if let Some(rate) = rate {
                    check_rate(&key(name), rate)?;
                }
            }
            for target in endpoint_rates(faults, endpoint).into_iter().flatten() {
                table.apply(target);
            }
        }
        Ok(())
    }
}

/// One endpoint's faults in the file: rates between 0 and 1, `retry_after_429` in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultTable {
    rate_429: Option<f64>,
    rate_500: Option<f64>,
    rate_503: Option<f64>,
    drop_before: Option<f64>,
    drop_after: Option<f64>,
    hang: Option<f64>,
    retry_after_429: Option<u64>,
}

impl FaultTable {
    /// Sets the fields this table names (already checked), leaving the others.
    fn apply(&self, rates: &mut FaultRates) {
        let fields = [
            (self.rate_429, &mut rates.rate_429),
            (self.rate_500, &mut rates.rate_500),
            (self.rate_503, &mut rates.rate_503),
            (self.drop_before, &mut rates.drop_before_rate),
            (self.drop_after, &mut rates.drop_after_rate),
            (self.hang, &mut rates.hang_rate),
        ];
        for (value, field) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
        if self.retry_after_429.is_some() {
            rates.retry_after_429 = self.retry_after_429;
        }
    }
}

/// The fault rates an endpoint name designates (`all` is every endpoint).
fn endpoint_rates<'a>(
    faults: &'a mut EndpointFaults,
    endpoint: &str,
) -> Option<Vec<&'a mut FaultRates>> {
    Some(match endpoint {
        "all" => vec![
            &mut faults.bulk_create,
            &mut faults.bulk_status,
            &mut faults.create,
            &mut faults.edit,
            &mut faults.tent_status,
        ],
        "bulk_create" => vec![&mut faults.bulk_create],
        "bulk_status" => vec![&mut faults.bulk_status],
        "create" => vec![&mut faults.create],
        "edit" => vec![&mut faults.edit],
        "tent_status" => vec![&mut faults.tent_status],
        _ => return None,
    })
}

/// Parses "500ms" (a fixed duration) or "1s..3s" (a range).
pub fn parse_range(flag: &str, text: &str) -> Result<(Duration, Duration), SimError> {
    let parse = |s: &str| {
        humantime::parse_duration(s.trim())
            .map_err(|e| SimError::InvalidConfig(format!("{flag} {text:?}: {e}")))
    };
    let (lo, hi) = match text.split_once("..") {
        Some((lo, hi)) => (parse(lo)?, parse(hi)?),
        None => {
            let d = parse(text)?;
            (d, d)
        }
    };
    if lo > hi {
        return Err(SimError::InvalidConfig(format!(
            "{flag} {text:?}: the minimum is above the maximum"
        )));
    }
    Ok((lo, hi))
}

fn check_rate(flag: &str, rate: f64) -> Result<f64, SimError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(SimError::InvalidConfig(format!(
            "{flag} {rate}: a rate is between 0 and 1"
        )))
    }
}

fn apply_fault(faults: &mut EndpointFaults, spec: &str) -> Result<(), SimError> {
    let invalid = |why: &str| SimError::InvalidConfig(format!("--fault {spec:?}: {why}"));
    let (target, value) = spec
        .split_once('=')
        .ok_or_else(|| invalid("expected ENDPOINT.KIND=VALUE"))?;
    let (endpoint, kind) = target
        .split_once('.')
        .ok_or_else(|| invalid("expected ENDPOINT.KIND=VALUE"))?;
    let targets = endpoint_rates(faults, endpoint).ok_or_else(|| invalid("unknown endpoint"))?;
    if kind == "retry_after_429" {
        let secs: u64 = value
            .trim()
            .parse()
            .map_err(|_| invalid("retry_after_429 takes whole seconds"))?;
        for rates in targets {
            rates.retry_after_429 = Some(secs);
        }
        return Ok(());
    }
    let rate: f64 = value
        .trim()
        .parse()
        .map_err(|_| invalid("the rate is not a number"))?;
    let rate = check_rate("--fault", rate)?;
    for rates in targets {
        let field = match kind {
            "429" => &mut rates.rate_429,
            "500" => &mut rates.rate_500,
            "503" => &mut rates.rate_503,
            "drop_before" => &mut rates.drop_before_rate,
            "drop_after" => &mut rates.drop_after_rate,
            "hang" => &mut rates.hang_rate,
            _ => return Err(invalid("unknown fault kind")),
        };
        *field = rate;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn defaults_match_the_spec() {
        let cli = Cli::try_parse_from(["sim"]).map_err(|e| e.to_string());
        let (listen, config) = cli.map(|c| c.sim.into_config()).unwrap().unwrap();
        assert_eq!(listen, "127.0.0.1:8787");
        assert_eq!(config.api_key, "sim-key");
        assert_eq!(config.retry_after_secs, Some(10));
        let d = SimConfig::default();
        assert_eq!(config.queue_time, d.queue_time);
        assert_eq!(config.generation_time, d.generation_time);
        assert_eq!(config.publish_time, d.publish_time);
        assert_eq!(config.latency, d.latency);
        assert_eq!(config.failure_rate, d.failure_rate);
        assert_eq!(config.publish_failure_rate, d.publish_failure_rate);
    }

    #[test]
    fn knobs_parse() {
        let cli = Cli::try_parse_from([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--template",
            "tpl_a",
            "--template",
            "tpl_b",
            "--generation-time",
            "20ms..40ms",
            "--latency",
            "5ms",
            "--credits",
            "3",
            "--no-retry-after",
            "--fault",
            "all.503=0.1",
            "--fault",
            "bulk_create.drop_after=0.5",
            "--fault",
            "create.retry_after_429=7",
        ])
        .unwrap();
        let (listen, config) = cli.sim.into_config().unwrap();
        assert_eq!(listen, "127.0.0.1:0");
        assert_eq!(config.templates, vec!["tpl_a", "tpl_b"]);
        assert_eq!(
            config.generation_time,
            (Duration::from_millis(20), Duration::from_millis(40))
        );
        assert_eq!(
            config.latency,
            (Duration::from_millis(5), Duration::from_millis(5))
        );
        assert_eq!(config.credits, Some(3));
        assert_eq!(config.retry_after_secs, None);
        assert_eq!(config.errors.edit.rate_503, 0.1);
        assert_eq!(config.errors.bulk_create.drop_after_rate, 0.5);
        assert_eq!(config.errors.create.retry_after_429, Some(7));
        assert!(parse_range("x", "3s..1s").is_err());
        let bad = Cli::try_parse_from(["sim", "--fault", "nowhere.503=0.1"]).unwrap();
        assert!(bad.sim.into_config().is_err());
    }

    fn parse_args(args: &[&str]) -> SimArgs {
        let mut argv = vec!["sim"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().sim
    }

    fn with_file(args: &[&str], text: &str) -> Result<(String, SimConfig), SimError> {
        parse_args(args).merge(SimFile::parse("sim.toml", text)?)
    }

    fn error_of(result: Result<(String, SimConfig), SimError>) -> String {
        result.map(|_| ()).unwrap_err().to_string()
    }

    const FULL_FILE: &str = r#"
        [sim]
        listen = "127.0.0.1:9999"
        api_key = "file-key"
        templates = ["tpl_a", "tpl_b"]
        latency = "10ms..50ms"
        queue_time = "2s"
        generation_time = "3s..4s"
        publish_time = "100ms..200ms"
        failure_rate = 0.25
        publish_failure_rate = 0.5
        taken_aliases = ["taken"]
        idle_tents = ["f11ef3cf-8664-4fe5-a261-c5b4d647b7d1"]
        retry_after_secs = 3
        credits = 40
        seed = 9
    "#;

    #[test]
    fn file_only() {
        let (listen, config) = with_file(&[], FULL_FILE).unwrap();
        assert_eq!(listen, "127.0.0.1:9999");
        assert_eq!(config.api_key, "file-key");
        assert_eq!(config.templates, vec!["tpl_a", "tpl_b"]);
        assert_eq!(
            config.latency,
            (Duration::from_millis(10), Duration::from_millis(50))
        );
        assert_eq!(
            config.queue_time,
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!(
            config.generation_time,
            (Duration::from_secs(3), Duration::from_secs(4))
        );
        assert_eq!(
            config.publish_time,
            (Duration::from_millis(100), Duration::from_millis(200))
        );
        assert_eq!(config.failure_rate, 0.25);
        assert_eq!(config.publish_failure_rate, 0.5);
        assert_eq!(config.taken_aliases, vec!["taken"]);
        assert_eq!(
            config.idle_tents,
            vec!["f11ef3cf-8664-4fe5-a261-c5b4d647b7d1"]
        );
        assert_eq!(config.retry_after_secs, Some(3));
        assert_eq!(config.credits, Some(40));
        assert_eq!(config.seed, Some(9));
        assert_eq!(config.errors, EndpointFaults::default());

        // An empty file, or one with an empty [sim], is the built-in defaults.
        for text in ["", "[sim]\n"] {
            let (listen, config) = with_file(&[], text).unwrap();
            assert_eq!(listen, "127.0.0.1:8787");
            assert_eq!(config.api_key, "sim-key");
            assert_eq!(config.retry_after_secs, Some(10));
            assert_eq!(config.queue_time, SimConfig::default().queue_time);
        }
        // `false` turns the header off, like --no-retry-after; `true` means nothing.
        let (_, config) = with_file(&[], "[sim]\nretry_after_secs = false\n").unwrap();
        assert_eq!(config.retry_after_secs, None);
        let message = error_of(with_file(&[], "[sim]\nretry_after_secs = true\n"));
        assert!(message.contains("retry_after_secs"), "{message}");
    }

    #[test]
    fn flags_only() {
        let (listen, config) = parse_args(&[
            "--listen",
            "127.0.0.1:1",
            "--api-key",
            "flag-key",
            "--queue-time",
            "7ms",
            "--failure-rate",
            "0.5",
            "--retry-after-secs",
            "4",
            "--seed",
            "1",
        ])
        .into_config()
        .unwrap();
        assert_eq!(listen, "127.0.0.1:1");
        assert_eq!(config.api_key, "flag-key");
        assert_eq!(
            config.queue_time,
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        assert_eq!(config.failure_rate, 0.5);
        assert_eq!(config.retry_after_secs, Some(4));
        assert_eq!(config.seed, Some(1));
        assert_eq!(config.generation_time, SimConfig::default().generation_time);
    }

    #[test]
    fn flags_override_the_file() {
        let (listen, config) = with_file(
            &[
                "--api-key",
                "flag-key",
                "--template",
                "tpl_z",
                "--queue-time",
                "1ms",
                "--failure-rate",
                "0",
                "--no-retry-after",
                "--credits",
                "1",
            ],
            FULL_FILE,
        )
        .unwrap();
        assert_eq!(config.api_key, "flag-key");
        assert_eq!(config.templates, vec!["tpl_z"]);
        assert_eq!(
            config.queue_time,
            (Duration::from_millis(1), Duration::from_millis(1))
        );
        assert_eq!(config.failure_rate, 0.0);
        assert_eq!(config.retry_after_secs, None);
        assert_eq!(config.credits, Some(1));
        // What no flag names comes from the file.
        assert_eq!(listen, "127.0.0.1:9999");
        assert_eq!(config.publish_failure_rate, 0.5);
        assert_eq!(config.taken_aliases, vec!["taken"]);
        assert_eq!(config.seed, Some(9));
        // A flag turns back on what the file turned off.
        let (_, config) = with_file(
            &["--retry-after-secs", "2"],
            "[sim]\nretry_after_secs = false\n",
        )
        .unwrap();
        assert_eq!(config.retry_after_secs, Some(2));
    }

    #[test]
    fn faults_table() {
        let text = r#"
            [sim.faults.all]
            rate_503 = 0.1
            retry_after_429 = 1
            [sim.faults.bulk_create]
            drop_after = 0.05
            rate_503 = 0.2
            [sim.faults.tent_status]
            rate_429 = 0.3
            rate_500 = 0.4
            drop_before = 0.01
            hang = 0.02
        "#;
        let (_, config) = with_file(&[], text).unwrap();
        let e = &config.errors;
        assert_eq!(
            e.bulk_create.rate_503, 0.2,
            "the endpoint's table wins over all"
        );
        assert_eq!(e.bulk_create.drop_after_rate, 0.05);
        for rates in [&e.bulk_status, &e.create, &e.edit, &e.tent_status] {
            assert_eq!(rates.rate_503, 0.1);
            assert_eq!(rates.drop_after_rate, 0.0);
        }
        for rates in [&e.bulk_create, &e.bulk_status, &e.create, &e.edit] {
            assert_eq!(rates.retry_after_429, Some(1));
        }
        assert_eq!(
            e.tent_status,
            FaultRates {
                rate_429: 0.3,
                rate_500: 0.4,
                rate_503: 0.1,
                retry_after_429: Some(1),
                drop_before_rate: 0.01,
                drop_after_rate: 0.0,
                hang_rate: 0.02,
            }
        );
        // A --fault flag overrides only the rate it names.
        let (_, config) = with_file(&["--fault", "bulk_create.503=0"], text).unwrap();
        assert_eq!(config.errors.bulk_create.rate_503, 0.0);
        assert_eq!(config.errors.bulk_create.drop_after_rate, 0.05);
        assert_eq!(config.errors.edit.rate_503, 0.1);
        // Rates are checked and named.
        let message = error_of(with_file(&[], "[sim.faults.edit]\nhang = 2.0\n"));
        assert!(message.contains("[sim.faults.edit] hang"), "{message}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, name) in [
            ("[sim]\nlisten_addr = \"x\"\n", "listen_addr"),
            ("[sim]\napi-key = \"x\"\n", "api-key"),
            ("[simulator]\n", "simulator"),
            ("[sim.faults.all]\nrate_404 = 0.1\n", "rate_404"),
            ("[sim.faults.everywhere]\nrate_503 = 0.1\n", "everywhere"),
        ] {
            let message = error_of(with_file(&[], text));
            assert!(message.contains(name), "{name}: {message}");
            assert!(message.contains("sim.toml"), "{message}");
        }
    }

    #[test]
    fn bad_durations_and_rates_are_refused_by_key() {
        for (text, name) in [
            ("[sim]\nlatency = \"fast\"\n", "[sim] latency"),
            ("[sim]\nqueue_time = \"3s..1s\"\n", "[sim] queue_time"),
            (
                "[sim]\ngeneration_time = \"5..10\"\n",
                "[sim] generation_time",
            ),
            ("[sim]\npublish_time = \"1s..x\"\n", "[sim] publish_time"),
            ("[sim]\nfailure_rate = 1.5\n", "[sim] failure_rate"),
            (
                "[sim]\npublish_failure_rate = -1\n",
                "[sim] publish_failure_rate",
            ),
        ] {
            let message = error_of(with_file(&[], text));
            assert!(message.contains(name), "{name}: {message}");
        }
        // A value of the wrong type is named by the parser.
        let message = error_of(with_file(&[], "[sim]\ncredits = \"ten\"\n"));
        assert!(message.contains("credits"), "{message}");
    }

    #[test]
    fn the_example_file_parses_and_sets_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sim.toml");
        let args = SimArgs {
            config: Some(PathBuf::from(path)),
            ..SimArgs::default()
        };
        let (listen, config) = args.into_config().unwrap();
        assert_eq!(listen, "127.0.0.1:8787");
        assert_ne!(config.errors, EndpointFaults::default());
        let missing = SimArgs {
            config: Some(PathBuf::from("/nonexistent/sim.toml")),
            ..SimArgs::default()
        };
        let message = error_of(missing.into_config());
        assert!(message.contains("/nonexistent/sim.toml"), "{message}");
    }
}
