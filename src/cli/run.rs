//! `run`: the daemon in the foreground, with systemd's notifications and the signals
//! (SIGTERM and SIGINT stop it, SIGHUP reloads the API key and the request budget).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::settings::{ConfigSource, Settings};

/// systemd integration: readiness, watchdog, stopping.
struct Systemd;

impl crate::daemon::Lifecycle for Systemd {
    fn ready(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    fn alive(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
    fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    fn wants_status(&self) -> bool {
        std::env::var_os("NOTIFY_SOCKET").is_some()
    }
    fn status(&self, line: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
    }
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
    fn watchdog_period(&self) -> Option<std::time::Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| std::time::Duration::from_micros(usec / 2))
    }
}

pub(super) async fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = ConfigSource::from_arg(config);
    let settings = Settings::load(&source)?;
    crate::telemetry::init(settings.log.format);
    let key = settings
        .resolve_api_key()?
        .ok_or(crate::settings::SettingsError::NoApiKey)?;
    let shutdown = CancellationToken::new();
    // Installed before the daemon can say it is ready, so that a SIGTERM right after
    // readiness is a clean stop, never the default action (death by the signal).
    let installed = install_signals().context("cannot install the signal handlers")?;
    let (current, current_rx) = tokio::sync::watch::channel(None);
    let signals = tokio::spawn(handle_signals(
        current_rx,
        source,
        shutdown.clone(),
        installed,
    ));
    let result =
        crate::daemon::run_reopening(settings, key, shutdown.clone(), Arc::new(Systemd), |ctx| {
            let _ = current.send(ctx);
        })
        .await;
    shutdown.cancel();
    let _ = signals.await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, SIGINT and SIGHUP streams.
type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn install_signals() -> std::io::Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    ))
}

async fn handle_signals(
    current: tokio::sync::watch::Receiver<Option<Arc<crate::context::Context>>>,
    source: ConfigSource,
    shutdown: CancellationToken,
    (mut term, mut int, mut hup): Signals,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = term.recv() => { tracing::info!("SIGTERM"); shutdown.cancel(); return; }
            _ = int.recv() => { tracing::info!("SIGINT"); shutdown.cancel(); return; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the API key and the request budget");
                let ctx = current.borrow().clone();
                match Settings::load(&source) {
                    Ok(settings) => match ctx {
                        Some(ctx) => crate::daemon::reload(&ctx, &settings),
                        None => tracing::warn!("SIGHUP before the daemon was ready: nothing to reload"),
                    },
                    Err(e) => tracing::error!("SIGHUP: the configuration does not load, nothing changed: {e}"),
                }
            }
        }
    }
}
