//! The `tented-bulkd sim` command line and its config file: listen address, API key,
//! templates and every knob.
//!
//! Precedence, knob by knob: a flag given on the command line, then the `[sim]` section
//! of the `--config` file, then the built-in default (`SimConfig::default()`, listening
//! on `127.0.0.1:8787`). A repeatable flag given at least once (`--template`,
//! `--taken-alias`, `--idle-tent`) replaces the file's list; `--fault` flags are applied
//! one by one on top of the file's `[sim.faults.*]` tables, so each overrides only the
//! rate it names. `examples/sim.toml` lists every key.
//!
//! How: the file and the flags each become a checked [`Layer`] (every knob an `Option`,
//! errors naming the file and key or the flag), the flags' layer goes over the file's,
//! and [`Layer::into_config`] fills what neither set from `SimConfig::default()`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::simulator::{EndpointFaults, FaultRates, SimConfig, SimError};

/// Where the simulator listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// A duration range: minimum, maximum.
type Range = (Duration, Duration);

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
            Some(path) => SimFile::load(path)?,
            None => SimFile::default(),
        };
        self.merge(file)
    }

    /// Built-in defaults, then the file, then the flags given. The file is checked
    /// first and whole, so its errors come before the flags' ones.
    fn merge(self, file: SimFile) -> Result<(String, SimConfig), SimError> {
        let file = file.layer()?;
        let flags = self.layer()?;
        Ok(file.under(flags).into_config())
    }

    /// The knobs the flags set, checked and named by flag. The flags are first written
    /// as a `[sim]` section (same keys); a repeatable flag counts only when given, and
    /// `--no-retry-after` wins over `--retry-after-secs`.
    fn layer(self) -> Result<Layer, KnobError> {
        let given = |list: Vec<String>| (!list.is_empty()).then_some(list);
        let retry_after = if self.no_retry_after {
            Some(RetryAfter::Off)
        } else {
            self.retry_after_secs.map(RetryAfter::Seconds)
        };
        let flags = SimSection {
            listen: self.listen,
            api_key: self.api_key,
            templates: given(self.templates),
            latency: self.latency,
            queue_time: self.queue_time,
            generation_time: self.generation_time,
            publish_time: self.publish_time,
            failure_rate: self.failure_rate,
            publish_failure_rate: self.publish_failure_rate,
            taken_aliases: given(self.taken_aliases),
            idle_tents: given(self.idle_tents),
            retry_after_secs: retry_after,
            credits: self.credits,
            seed: self.seed,
            faults: FaultSections::default(),
        };
        let mut layer = flags.layer(|key| format!("--{}", key.replace('_', "-")))?;
        layer.faults = self
            .faults
            .iter()
            .map(|spec| parse_fault(spec))
            .collect::<Result<_, _>>()?;
        Ok(layer)
    }
}

/// Why a knob is refused. Every message names where the value came from: the file (and
/// its key) or the flag. The causes are written into the message rather than kept as
/// `source`s, since the message becomes the text of `SimError::InvalidConfig`.
#[derive(Debug, thiserror::Error)]
enum KnobError {
    #[error("cannot read {origin}: {error}")]
    Read {
        origin: String,
        error: std::io::Error,
    },
    #[error("{origin}: {}", .error.to_string().trim_end())]
    Toml {
        origin: String,
        error: toml::de::Error,
    },
    #[error("{key} {text:?}: {error}")]
    Duration {
        key: String,
        text: String,
        error: humantime::DurationError,
    },
    #[error("{key} {text:?}: the minimum is above the maximum")]
    ReversedRange { key: String, text: String },
    #[error("{key} {rate}: a rate is between 0 and 1")]
    Rate { key: String, rate: f64 },
    #[error("--fault {spec:?}: {why}")]
    Fault { spec: String, why: &'static str },
}

/// The simulator's error keeps its shape: the message is the setting refused.
impl From<KnobError> for SimError {
    fn from(error: KnobError) -> Self {
        SimError::InvalidConfig(error.to_string())
    }
}

/// One source of knobs, already checked: a knob left `None` is left to the source below.
#[derive(Debug, Default)]
struct Layer {
    listen: Option<String>,
    api_key: Option<String>,
    templates: Option<Vec<String>>,
    latency: Option<Range>,
    queue_time: Option<Range>,
    generation_time: Option<Range>,
    publish_time: Option<Range>,
    failure_rate: Option<f64>,
    publish_failure_rate: Option<f64>,
    taken_aliases: Option<Vec<String>>,
    idle_tents: Option<Vec<String>>,
    retry_after: Option<RetryAfter>,
    credits: Option<u64>,
    seed: Option<u64>,
    /// Fault settings, applied in order on top of the ones below.
    faults: Vec<FaultEdit>,
}

impl Layer {
    /// This layer with `top` over it: each knob `top` sets wins, and its fault settings
    /// apply after these.
    fn under(self, top: Layer) -> Layer {
        Layer {
            listen: top.listen.or(self.listen),
            api_key: top.api_key.or(self.api_key),
            templates: top.templates.or(self.templates),
            latency: top.latency.or(self.latency),
            queue_time: top.queue_time.or(self.queue_time),
            generation_time: top.generation_time.or(self.generation_time),
            publish_time: top.publish_time.or(self.publish_time),
            failure_rate: top.failure_rate.or(self.failure_rate),
            publish_failure_rate: top.publish_failure_rate.or(self.publish_failure_rate),
            taken_aliases: top.taken_aliases.or(self.taken_aliases),
            idle_tents: top.idle_tents.or(self.idle_tents),
            retry_after: top.retry_after.or(self.retry_after),
            credits: top.credits.or(self.credits),
            seed: top.seed.or(self.seed),
            faults: self.faults.into_iter().chain(top.faults).collect(),
        }
    }

    /// The listen address and the configuration, with the built-in default for every
    /// knob no layer sets.
    fn into_config(self) -> (String, SimConfig) {
        let default = SimConfig::default();
        let mut errors = default.errors;
        for (endpoint, table) in &self.faults {
            for rates in endpoint.rates(&mut errors) {
                table.apply(rates);
            }
        }
        let config = SimConfig {
            api_key: self.api_key.unwrap_or(default.api_key),
            templates: self.templates.unwrap_or(default.templates),
            latency: self.latency.unwrap_or(default.latency),
            queue_time: self.queue_time.unwrap_or(default.queue_time),
            generation_time: self.generation_time.unwrap_or(default.generation_time),
            publish_time: self.publish_time.unwrap_or(default.publish_time),
            failure_rate: self.failure_rate.unwrap_or(default.failure_rate),
            publish_failure_rate: self
                .publish_failure_rate
                .unwrap_or(default.publish_failure_rate),
            taken_aliases: self.taken_aliases.unwrap_or(default.taken_aliases),
            idle_tents: self.idle_tents.unwrap_or(default.idle_tents),
            errors,
            retry_after_secs: self
                .retry_after
                .map_or(default.retry_after_secs, RetryAfter::secs),
            credits: self.credits.or(default.credits),
            seed: self.seed.or(default.seed),
        };
        let listen = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        (listen, config)
    }
}

/// A parsed `--config` file and where it came from (for messages).
#[derive(Debug, Default)]
struct SimFile {
    origin: String,
    sim: SimSection,
}

impl SimFile {
    fn load(path: &Path) -> Result<SimFile, KnobError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => SimFile::parse(&origin, &text),
            Err(error) => Err(KnobError::Read { origin, error }),
        }
    }

    /// Parses the TOML text; unknown sections and keys are refused by name.
    fn parse(origin: &str, text: &str) -> Result<SimFile, KnobError> {
        let file: FileRoot = toml::from_str(text).map_err(|error| KnobError::Toml {
            origin: origin.to_owned(),
            error,
        })?;
        Ok(SimFile {
            origin: origin.to_owned(),
            sim: file.sim,
        })
    }

    /// The knobs the file sets, checked and named "FILE: [sim] KEY" (the fault tables
    /// after the other keys).
    fn layer(self) -> Result<Layer, KnobError> {
        let SimFile { origin, mut sim } = self;
        let tables = std::mem::take(&mut sim.faults);
        let mut layer = sim.layer(|key| format!("{origin}: [sim] {key}"))?;
        layer.faults = tables.edits(&origin)?;
        Ok(layer)
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

impl SimSection {
    /// These knobs as a layer: durations parsed, rates checked, `name(key)` naming a
    /// value in errors. The fault tables are left to the caller.
    fn layer(self, name: impl Fn(&str) -> String) -> Result<Layer, KnobError> {
        let range = |key: &str, text: Option<String>| {
            text.map(|text| parse_range(&name(key), &text)).transpose()
        };
        let rate = |key: &str, rate: Option<f64>| {
            rate.map(|rate| check_rate(&name(key), rate)).transpose()
        };
        Ok(Layer {
            latency: range("latency", self.latency)?,
            queue_time: range("queue_time", self.queue_time)?,
            generation_time: range("generation_time", self.generation_time)?,
            publish_time: range("publish_time", self.publish_time)?,
            failure_rate: rate("failure_rate", self.failure_rate)?,
            publish_failure_rate: rate("publish_failure_rate", self.publish_failure_rate)?,
            listen: self.listen,
            api_key: self.api_key,
            templates: self.templates,
            taken_aliases: self.taken_aliases,
            idle_tents: self.idle_tents,
            retry_after: self.retry_after_secs,
            credits: self.credits,
            seed: self.seed,
            faults: Vec::new(),
        })
    }
}

/// `retry_after_secs`: a number of seconds, or `false` (or `--no-retry-after`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum RetryAfter {
    Seconds(u64),
    Off,
}

impl RetryAfter {
    /// The `Retry-After` header to send, if any.
    fn secs(self) -> Option<u64> {
        match self {
            RetryAfter::Seconds(secs) => Some(secs),
            RetryAfter::Off => None,
        }
    }
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

/// One fault setting: a table of rates applied to the endpoint(s) named. A `--fault`
/// flag is a table with a single key.
type FaultEdit = (Endpoint, FaultTable);

/// The endpoints a fault setting can name; `All` is every one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    All,
    BulkCreate,
    BulkStatus,
    Create,
    Edit,
    TentStatus,
}

impl Endpoint {
    fn from_name(name: &str) -> Option<Endpoint> {
        Some(match name {
            "all" => Endpoint::All,
            "bulk_create" => Endpoint::BulkCreate,
            "bulk_status" => Endpoint::BulkStatus,
            "create" => Endpoint::Create,
            "edit" => Endpoint::Edit,
            "tent_status" => Endpoint::TentStatus,
            _ => return None,
        })
    }

    /// The fault rates this endpoint designates.
    fn rates(self, faults: &mut EndpointFaults) -> Vec<&mut FaultRates> {
        match self {
            Endpoint::All => vec![
                &mut faults.bulk_create,
                &mut faults.bulk_status,
                &mut faults.create,
                &mut faults.edit,
                &mut faults.tent_status,
            ],
            Endpoint::BulkCreate => vec![&mut faults.bulk_create],
            Endpoint::BulkStatus => vec![&mut faults.bulk_status],
            Endpoint::Create => vec![&mut faults.create],
            Endpoint::Edit => vec![&mut faults.edit],
            Endpoint::TentStatus => vec![&mut faults.tent_status],
        }
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
    /// The tables given, in the order they apply, each rate checked and named
    /// "FILE: [sim.faults.ENDPOINT] KEY".
    fn edits(self, origin: &str) -> Result<Vec<FaultEdit>, KnobError> {
        let tables = [
            ("all", Endpoint::All, self.all),
            ("bulk_create", Endpoint::BulkCreate, self.bulk_create),
            ("bulk_status", Endpoint::BulkStatus, self.bulk_status),
            ("create", Endpoint::Create, self.create),
            ("edit", Endpoint::Edit, self.edit),
            ("tent_status", Endpoint::TentStatus, self.tent_status),
        ];
        let mut edits = Vec::new();
        for (name, endpoint, table) in tables {
            let Some(table) = table else { continue };
            for (key, rate) in table.rates() {
                if let Some(rate) = rate {
                    check_rate(&format!("{origin}: [sim.faults.{name}] {key}"), rate)?;
                }
            }
            edits.push((endpoint, table));
        }
        Ok(edits)
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
    /// The rates, by key.
    fn rates(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_503", self.rate_503),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("hang", self.hang),
        ]
    }

    /// The rate a `--fault` KIND names.
    fn rate_mut(&mut self, kind: &str) -> Option<&mut Option<f64>> {
        Some(match kind {
            "429" => &mut self.rate_429,
            "500" => &mut self.rate_500,
            "503" => &mut self.rate_503,
            "drop_before" => &mut self.drop_before,
            "drop_after" => &mut self.drop_after,
            "hang" => &mut self.hang,
            _ => return None,
        })
    }

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

/// Parses "500ms" (a fixed duration) or "1s..3s" (a range); `key` names it in errors.
fn parse_range(key: &str, text: &str) -> Result<Range, KnobError> {
    let parse = |s: &str| {
        humantime::parse_duration(s.trim()).map_err(|error| KnobError::Duration {
            key: key.to_owned(),
            text: text.to_owned(),
            error,
        })
    };
    let (lo, hi) = match text.split_once("..") {
        Some((lo, hi)) => (parse(lo)?, parse(hi)?),
        None => {
            let d = parse(text)?;
            (d, d)
        }
    };
    if lo > hi {
        return Err(KnobError::ReversedRange {
            key: key.to_owned(),
            text: text.to_owned(),
        });
    }
    Ok((lo, hi))
}

fn check_rate(key: &str, rate: f64) -> Result<f64, KnobError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(KnobError::Rate {
            key: key.to_owned(),
            rate,
        })
    }
}

/// A `--fault ENDPOINT.KIND=VALUE` flag, as the one-key fault table it amounts to.
fn parse_fault(spec: &str) -> Result<FaultEdit, KnobError> {
    let invalid = |why| KnobError::Fault {
        spec: spec.to_owned(),
        why,
    };
    let (target, value) = spec
        .split_once('=')
        .ok_or_else(|| invalid("expected ENDPOINT.KIND=VALUE"))?;
    let (endpoint, kind) = target
        .split_once('.')
        .ok_or_else(|| invalid("expected ENDPOINT.KIND=VALUE"))?;
    let endpoint = Endpoint::from_name(endpoint).ok_or_else(|| invalid("unknown endpoint"))?;
    let mut table = FaultTable::default();
    if kind == "retry_after_429" {
        let secs = value
            .trim()
            .parse()
            .map_err(|_| invalid("retry_after_429 takes whole seconds"))?;
        table.retry_after_429 = Some(secs);
    } else {
        let rate = value
            .trim()
            .parse()
            .map_err(|_| invalid("the rate is not a number"))?;
        let rate = check_rate("--fault", rate)?;
        *table
            .rate_mut(kind)
            .ok_or_else(|| invalid("unknown fault kind"))? = Some(rate);
    }
    Ok((endpoint, table))
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

    #[test]
    fn every_flag_overrides_its_file_key() {
        let (listen, config) = with_file(
            &[
                "--listen",
                "127.0.0.1:1",
                "--latency",
                "1ms",
                "--generation-time",
                "2ms..3ms",
                "--publish-time",
                "4ms",
                "--publish-failure-rate",
                "0.125",
                "--taken-alias",
                "a1",
                "--taken-alias",
                "a2",
                "--idle-tent",
                "0c9d3a51-7a8e-4a44-9d2e-6a4b3f0f2b11",
                "--retry-after-secs",
                "8",
                "--seed",
                "77",
            ],
            FULL_FILE,
        )
        .unwrap();
        assert_eq!(listen, "127.0.0.1:1");
        let ms = Duration::from_millis;
        assert_eq!(config.latency, (ms(1), ms(1)));
        assert_eq!(config.generation_time, (ms(2), ms(3)));
        assert_eq!(config.publish_time, (ms(4), ms(4)));
        assert_eq!(config.publish_failure_rate, 0.125);
        // A repeatable flag given replaces the file's whole list.
        assert_eq!(config.taken_aliases, vec!["a1", "a2"]);
        assert_eq!(
            config.idle_tents,
            vec!["0c9d3a51-7a8e-4a44-9d2e-6a4b3f0f2b11"]
        );
        assert_eq!(config.retry_after_secs, Some(8));
        assert_eq!(config.seed, Some(77));
        // The rest still comes from the file.
        assert_eq!(config.api_key, "file-key");
        assert_eq!(config.templates, vec!["tpl_a", "tpl_b"]);
        assert_eq!(
            config.queue_time,
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!(config.failure_rate, 0.25);
        assert_eq!(config.credits, Some(40));
    }

    #[test]
    fn no_retry_after_wins_over_retry_after_secs() {
        let args = ["--retry-after-secs", "4", "--no-retry-after"];
        let (_, config) = parse_args(&args).into_config().unwrap();
        assert_eq!(config.retry_after_secs, None);
        let (_, config) = with_file(&args, FULL_FILE).unwrap();
        assert_eq!(config.retry_after_secs, None);
        // Neither flag given: the file's value stands.
        let (_, config) = with_file(&["--seed", "1"], FULL_FILE).unwrap();
        assert_eq!(config.retry_after_secs, Some(3));
    }

    #[test]
    fn fault_flags_apply_in_order_over_the_file() {
        let text = "[sim.faults.all]\nrate_503 = 0.1\nretry_after_429 = 1\n\
                    [sim.faults.bulk_create]\nrate_503 = 0.2\ndrop_after = 0.05\n";
        // A later `all` flag overrides the file's endpoint table and an earlier flag.
        let (_, config) = with_file(
            &["--fault", "bulk_create.503=0.3", "--fault", "all.503=0.4"],
            text,
        )
        .unwrap();
        let e = &config.errors;
        for rates in [
            &e.bulk_create,
            &e.bulk_status,
            &e.create,
            &e.edit,
            &e.tent_status,
        ] {
            assert_eq!(rates.rate_503, 0.4);
            assert_eq!(rates.retry_after_429, Some(1));
        }
        assert_eq!(e.bulk_create.drop_after_rate, 0.05);
        // The other way round, the endpoint's flag wins over the earlier `all` one.
        let (_, config) = with_file(
            &[
                "--fault",
                "all.503=0.4",
                "--fault",
                "bulk_create.503=0.3",
                "--fault",
                "edit.retry_after_429=9",
            ],
            text,
        )
        .unwrap();
        let e = &config.errors;
        assert_eq!(e.bulk_create.rate_503, 0.3);
        assert_eq!(e.create.rate_503, 0.4);
        assert_eq!(e.edit.retry_after_429, Some(9));
        assert_eq!(e.create.retry_after_429, Some(1), "only the endpoint named");
        // The same flag twice: the last one counts.
        let (_, config) = with_file(
            &["--fault", "edit.hang=0.5", "--fault", "edit.hang=0.25"],
            "",
        )
        .unwrap();
        assert_eq!(config.errors.edit.hang_rate, 0.25);
    }

    #[test]
    fn the_file_is_checked_whole_before_the_flags() {
        // A bad key in the file is refused even where a flag would override it.
        let message = error_of(with_file(
            &["--latency", "1ms"],
            "[sim]\nlatency = \"slow\"\n",
        ));
        assert!(message.contains("sim.toml: [sim] latency"), "{message}");
        let message = error_of(with_file(
            &["--fault", "edit.hang=0"],
            "[sim.faults.edit]\nhang = 2.0\n",
        ));
        assert!(message.contains("[sim.faults.edit] hang"), "{message}");
        // Both bad: the file's error is the one reported.
        let message = error_of(with_file(
            &["--latency", "fast"],
            "[sim]\nlatency = \"slow\"\n",
        ));
        assert!(message.contains("sim.toml: [sim] latency"), "{message}");
        // With a good file, a bad flag is named by the flag, not the file's key.
        for (args, name) in [
            (["--latency", "fast"], "--latency \"fast\""),
            (["--queue-time", "3s..1s"], "--queue-time \"3s..1s\""),
            (["--publish-failure-rate", "2"], "--publish-failure-rate 2"),
            (["--fault", "all.503=5"], "--fault 5"),
        ] {
            let message = error_of(with_file(&args, FULL_FILE));
            assert!(message.contains(name), "{name}: {message}");
            assert!(!message.contains("sim.toml"), "{message}");
        }
    }
}
