//! What every bench target shares (each includes it with `mod common;`).

use std::time::Duration;

use tented_bulkd::simulator::{SimConfig, Simulator};

/// The multi-threaded runtime a bench runs its daemon and simulator on; exits 2 (the
/// benches' "could not measure") when there is none.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(2);
        }
    }
}

/// A simulator whose every answer takes 30 s, which keeps the daemon's sending out of
/// what a bench measures of its intake.
#[allow(dead_code)] // Not every bench target measures intake alone.
pub async fn slow_answering_simulator() -> Result<Simulator, String> {
    Simulator::start(
        SimConfig {
            latency: (Duration::from_secs(30), Duration::from_secs(30)),
            seed: Some(16),
            ..SimConfig::default()
        },
        "127.0.0.1:0",
    )
    .await
    .map_err(|e| e.to_string())
}
