//! `tented-bulkd demo`: the simulator on loopback, the daemon on a temporary folder, the
//! example manifest dropped into its inbox, and a summary of the result.
//!
//! It runs the real pipeline with a shorter floor (1 s, allowed on loopback only) and a
//! simulator whose generations take seconds, so it finishes in well under a minute.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::simulator::{SimConfig, Simulator};

/// The example manifest the demo drops.
const DEMO_MANIFEST: &str = include_str!("../examples/demo.json");

/// How long the demo waits for its result before it gives up.
const DEMO_DEADLINE: Duration = Duration::from_secs(180);

/// The simulator's default seed in the demo: one that shows every case.
pub const DEMO_SEED: u64 = 9;

/// The simulator as the demo sets it: quick generations, some failures, a taken alias.
fn demo_simulator_config(seed: u64) -> SimConfig {
    SimConfig {
        queue_time: (Duration::from_millis(200), Duration::from_millis(600)),
        generation_time: (Duration::from_millis(800), Duration::from_millis(2500)),
        publish_time: (Duration::from_millis(200), Duration::from_millis(500)),
        failure_rate: 0.1,
        publish_failure_rate: 0.05,
        taken_aliases: vec!["acme-onboarding".to_string()],
        retry_after_secs: Some(1),
        seed: Some(seed),
        ..SimConfig::default()
    }
}

/// Settings for a daemon on `dir` talking to `base_url` (loopback): the built-in
/// defaults with the demo's folders and control socket, no TCP endpoint, a quick inbox,
/// a generous budget and a 1 s floor (allowed on loopback only, as `check` says).
fn demo_settings(dir: &std::path::Path, base_url: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults()?;
    settings.api.base_url =
        url::Url::parse(base_url).context("the simulator's address is not a URL")?;
    settings.api.requests_per_second = 50;
    settings.api.timeout = Duration::from_secs(5);
    settings.poll.interval = Duration::from_secs(1);
    settings.paths = crate::settings::PathSettings {
        inbox: dir.join("inbox"),
        outbox: dir.join("outbox"),
        archive: dir.join("archive"),
        state: dir.join("state"),
    };
    settings.inbox.settle = Duration::from_millis(200);
    settings.inbox.rescan = Duration::from_secs(1);
    settings.admin.listen = None;
    settings.admin.socket = Some(dir.join("control.sock"));
    settings.check()?;
    Ok(settings)
}

pub async fn run(manifest: Option<PathBuf>, seed: u64) -> anyhow::Result<ExitCode> {
    // Warnings only: info lines would tear the progress bar apart (RUST_LOG asks for more).
    crate::telemetry::init_with_level(crate::settings::LogFormat::Text, "warn");
    let (bytes, file_name) = match &manifest {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "demo.json".into()),
        ),
        None => (DEMO_MANIFEST.as_bytes().to_vec(), "demo.json".to_string()),
    };
    let dir = tempfile_dir()?;
    let simulator = Simulator::start(demo_simulator_config(seed), "127.0.0.1:0").await?;
    let settings = demo_settings(&dir, &simulator.base_url())?;
    let key = crate::settings::ApiKey::new("sim-key");
    let (ctx, jobs_rx) = crate::daemon::build_context(settings.clone(), key)?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(crate::daemon::run_with_context(
        Arc::clone(&ctx),
        jobs_rx,
        shutdown.clone(),
        Arc::new(crate::daemon::Quiet),
    ));

    // Writers write elsewhere and rename into the inbox.
    let staging = dir.join(format!(".{file_name}.partial"));
    std::fs::write(&staging, &bytes)?;
    std::fs::rename(&staging, settings.paths.inbox.join(&file_name))?;
    eprintln!(
        "demo: simulator on {}, daemon on {}",
        simulator.base_url(),
        dir.display()
    );

    let stem = file_name.trim_end_matches(".json").to_string();
    let result_path = settings.paths.outbox.join(format!("{stem}.result.json"));
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} items final",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(stem.clone());
    let started = tokio::time::Instant::now();
    while !result_path.exists() {
        if started.elapsed() > DEMO_DEADLINE {
            bar.abandon();
            shutdown.cancel();
            bail!("no result after {}s", DEMO_DEADLINE.as_secs());
        }
        if let Ok(Some(id)) = ctx.store.manifest_named(&stem) {
            if let Ok(Some(m)) = ctx.store.manifest(id) {
                bar.set_length(u64::from(m.item_count));
                bar.set_position(u64::from(m.item_count - m.unfinished()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    shutdown.cancel();
    let _ = daemon.await;
    let calls = simulator.calls();
    simulator.shutdown().await;

    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&result_path)?)?;
    print_summary(&result);
    let posts = calls.iter().filter(|c| c.method == "POST").count();
    let gets = calls.len() - posts;
    println!();
    println!("calls to the simulator: {posts} create requests, {gets} polls");
    println!("result: {}", result_path.display());
    let retry = settings.paths.outbox.join(format!("{stem}.retry.json"));
    if retry.exists() {
        println!("retry manifest: {}", retry.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "tented-bulkd-demo-{}-{}",
        std::process::id(),
        crate::clock::wall_now_ms()
    ));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The summary table: one line per item, then the counts.
fn print_summary(result: &serde_json::Value) {
    println!("{}", summary_text(result, None));
}

/// The summary as text: a heading, then a table of the items with a header row, as wide
/// as `width` (the terminal's when `None` and stdout is one; whole lines otherwise).
fn summary_text(result: &serde_json::Value, width: Option<u16>) -> String {
    let mut out = format!(
        "manifest {}: {} ({})\n",
        text(&result["manifest"]),
        text(&result["status"]),
        result["counts"]
    );
    if let Some(error) = result["error"].as_str() {
        out.push_str(&format!("error: {error}\n"));
    }
    let mut table =
        crate::tables::new_table(["ITEM", "STATUS", "TENT_NAME", "PUBLICATION", "DETAIL"]);
    if let Some(width) = width {
        table.set_width(width);
    }
    if let Some(items) = result["items"].as_object() {
        for (id, item) in items {
            let publication = &item["publication"];
            let publication_text = if publication.is_null() {
                "-".to_string()
            } else {
                text(&publication["status"])
            };
            let detail = if !item["message"].is_null() {
                format!("{}: {}", text(&item["error_code"]), text(&item["message"]))
            } else if let Some(w) = publication["warnings"].as_array().and_then(|w| w.first()) {
                text(&w["code"])
            } else if !publication["error"].is_null() {
                text(&publication["error"]["code"])
            } else {
                text(&publication["published_url"])
            };
            table.add_row([
                id.clone(),
                text(&item["status"]),
                text(&item["tent_name"]),
                publication_text,
                detail,
            ]);
        }
    }
    out.push('\n');
    out.push_str(&crate::tables::render(&table));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_fits_the_width_it_is_given() {
        let long = "q".repeat(200);
        let result = serde_json::json!({
            "manifest": "demo.json", "status": "completed_with_failures", "error": null,
            "counts": {"total": 2},
            "items": {
                "row-1": {"status": "failed", "tent_name": "Acme Onboarding Page 1",
                          "publication": null, "error_code": "GENERATION_FAILED", "message": long},
                "row-2": {"status": "completed", "tent_name": "Acme Onboarding Page 2",
                          "publication": {"status": "published", "published_url": "https://x/y",
                                          "warnings": [], "error": null},
                          "error_code": null, "message": null}
            }
        });
        let text = summary_text(&result, Some(80));
        let table: Vec<&str> = text.lines().skip_while(|l| !l.contains("ITEM")).collect();
        assert!(
            table[0].split_whitespace().eq([
                "ITEM",
                "STATUS",
                "TENT_NAME",
                "PUBLICATION",
                "DETAIL"
            ]),
            "{text}"
        );
        assert!(table.iter().all(|l| l.chars().count() <= 80), "{text}");
        assert_eq!(text.matches('q').count(), 200, "wrapped, not cut: {text}");
        assert!(text.contains("https://x/y"), "{text}");
    }
}
