//! The `tented-bulkd sim` command line: listen address, API key, templates and every knob.

use std::time::Duration;

use crate::simulator::{EndpointFaults, FaultRates, SimConfig, SimError};

/// `tented-bulkd sim [--listen ADDR] [--api-key KEY] [--template ID]... [knobs]`
///
/// Durations are humantime strings ("500ms", "2s"); a range is "MIN..MAX" or a single
/// duration. Rates are shares between 0 and 1.
#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// The only bearer token accepted.
    #[arg(long, default_value = "sim-key")]
    pub api_key: String,
    /// A template id that exists and is approved (repeatable). Without any, every id
    /// beginning with `tpl_` does.
    #[arg(long = "template", value_name = "ID")]
    pub templates: Vec<String>,
    /// Latency added to each /v1 request.
    #[arg(long, value_name = "RANGE", default_value = "0ms")]
    pub latency: String,
    /// Time a generation stays queued.
    #[arg(long, value_name = "RANGE", default_value = "1s..3s")]
    pub queue_time: String,
    /// Time a generation stays generating.
    #[arg(long, value_name = "RANGE", default_value = "5s..20s")]
    pub generation_time: String,
    /// Time a publication stays pending after generation completes.
    #[arg(long, value_name = "RANGE", default_value = "1s..2s")]
    pub publish_time: String,
    /// Share of generations that fail.
    #[arg(long, default_value_t = 0.05)]
    pub failure_rate: f64,
    /// Share of auto-publishes that fail with PUBLISH_LIMIT_EXCEEDED.
    #[arg(long, default_value_t = 0.02)]
    pub publish_failure_rate: f64,
    /// An alias already in use in the workspace (repeatable).
    #[arg(long = "taken-alias", value_name = "ALIAS")]
    pub taken_aliases: Vec<String>,
    /// A tent id (uuid) that exists without a generation (repeatable).
    #[arg(long = "idle-tent", value_name = "UUID")]
    pub idle_tents: Vec<String>,
    /// Retry-After seconds sent by GET /v1/tents/{id} while in progress.
    #[arg(long, default_value_t = 10)]
    pub retry_after_secs: u64,
    /// Send no Retry-After header at all.
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
    /// The listen address and the configuration these flags describe.
    pub fn into_config(self) -> Result<(String, SimConfig), SimError> {
        let mut errors = EndpointFaults::default();
        for spec in &self.faults {
            apply_fault(&mut errors, spec)?;
        }
        let config = SimConfig {
            api_key: self.api_key,
            templates: self.templates,
            latency: parse_range("--latency", &self.latency)?,
            queue_time: parse_range("--queue-time", &self.queue_time)?,
            generation_time: parse_range("--generation-time", &self.generation_time)?,
            publish_time: parse_range("--publish-time", &self.publish_time)?,
            failure_rate: check_rate("--failure-rate", self.failure_rate)?,
            publish_failure_rate: check_rate("--publish-failure-rate", self.publish_failure_rate)?,
            taken_aliases: self.taken_aliases,
            idle_tents: self.idle_tents,
            errors,
            retry_after_secs: (!self.no_retry_after).then_some(self.retry_after_secs),
            credits: self.credits,
            seed: self.seed,
        };
        Ok((self.listen, config))
    }
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
    let targets: Vec<&mut FaultRates> = match endpoint {
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
        _ => return Err(invalid("unknown endpoint")),
    };
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
}
