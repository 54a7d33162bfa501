//! The daemon: opens the store, recovers, then runs the pipeline's tasks until shutdown.
//!
//! Every task `select!`s on its work and on the shutdown token, and reaches a safe state
//! before it ends; all are tracked by one `TaskTracker`, so nothing outlives `run`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ClientConfig, TentedClient};
use crate::clock::Clock;
use crate::context::Context;
use crate::schedule::JobKey;
use crate::settings::{ApiKey, Settings};
use crate::store::{Store, StoreError};


/// How long shutdown waits for requests under way before it gives up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(12);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the folder {path}: {source}")]
    Folder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] crate::api::client::ClientError),
    #[error("cannot watch the inbox: {0}")]
    Inbox(#[from] crate::pipeline::intake::watch::InboxWatchError),
    #[error("cannot start the admin endpoint on {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Hooks for the outside world (systemd) that `run` calls.
pub trait Lifecycle: Send + Sync + 'static {
    /// The store is open and recovery is done.
    fn ready(&self) {}
    /// The main loop made progress (watchdog keep-alive).
    fn alive(&self) {}
    /// Shutdown has begun.
    fn stopping(&self) {}
}

/// A lifecycle that tells no one.
pub struct Quiet;
impl Lifecycle for Quiet {}

/// Creates the folders the daemon needs.
pub fn create_folders(settings: &Settings) -> Result<(), DaemonError> {
    for path in [
        &settings.paths.inbox,
        &settings.paths.outbox,
        &settings.paths.archive,
        &settings.paths.state,
    ] {
        create_folder(path)?;
    }
    Ok(())
}

fn create_folder(path: &Path) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path).map_err(|source| DaemonError::Folder {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the shared context: opens the store and the client.
pub fn build_context(
    settings: Settings,
    api_key: ApiKey,
) -> Result<(Arc<Context>, mpsc::UnboundedReceiver<JobKey>), DaemonError> {
    create_folders(&settings)?;
    let store = Store::open(&settings.paths.state)?;
    let client = TentedClient::new(ClientConfig {
        base_url: settings.api.base_url.clone(),
        api_key,
        timeout: settings.api.timeout,
        requests_per_second: settings.api.requests_per_second,
        auth_probe_interval: settings.poll.interval,
    })?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    client.observe_calls(Arc::clone(&metrics) as Arc<dyn crate::api::client::CallObserver>);
    let (new_jobs, jobs_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        settings,
        store,
        client,
        clock: Clock::new(),
        active: Mutex::new(BTreeSet::new()),
        wake_submitter: Notify::new(),
        new_jobs,
        progress: AtomicU64::new(0),
        budget_bound: std::sync::atomic::AtomicBool::new(false),
        finishing: tokio::sync::Mutex::new(()),
        metrics,
    });
    Ok((ctx, jobs_rx))
}

/// Runs the daemon until `shutdown` is cancelled, then stops taking work, lets requests
/// under way end (or time out), flushes the store and returns.
pub async fn run(
    settings: Settings,
    api_key: ApiKey,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
) -> Result<(), DaemonError> {
    let (ctx, jobs_rx) = build_context(settings, api_key)?;
    run_with_context(ctx, jobs_rx, shutdown, lifecycle).await
}

pub async fn run_with_context(
    ctx: Arc<Context>,
    jobs_rx: mpsc::UnboundedReceiver<JobKey>,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
) -> Result<(), DaemonError> {
    crate::pipeline::recovery::recover(&ctx).await?;
    let watcher = crate::pipeline::intake::watch::InboxWatcher::new(
        ctx.settings.paths.inbox.clone(),
        ctx.settings.inbox.settle,
        ctx.settings.inbox.rescan,
    )?;
    let admin_listener = match ctx.settings.admin_addr() {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Admin { addr, source })?,
        ),
        None => None,
    };
    lifecycle.ready();
    tracing::info!(
        active = ctx.active_ids().len(),
        "tented-bulkd is ready: store open, recovery done"
    );

    let tracker = TaskTracker::new();
    tracker.spawn(crate::pipeline::intake::run(
        Arc::clone(&ctx),
        watcher,
        shutdown.clone(),
    ));
    tracker.spawn(crate::pipeline::submission::run(Arc::clone(&ctx), shutdown.clone()));
    tracker.spawn(crate::pipeline::polling::run(
        Arc::clone(&ctx),
        jobs_rx,
        shutdown.clone(),
    ));
    tracker.spawn(crate::pipeline::reconciliation::sweep_loop(
        Arc::clone(&ctx),
        shutdown.clone(),
    ));
    if let Some(listener) = admin_listener {
        tracker.spawn(crate::admin::serve(
            Arc::clone(&ctx),
            listener,
            shutdown.clone(),
        ));
    }
    tracker.spawn(watchdog_loop(
        Arc::clone(&ctx),
        Arc::clone(&lifecycle),
        shutdown.clone(),
    ));
    tracker.close();

    shutdown.cancelled().await;
    lifecycle.stopping();
    tracing::info!("shutting down: no new work; waiting for requests under way");
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not end within the grace period; stopping anyway");
    }
    ctx.store.flush().await?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Sends a watchdog keep-alive only while the main loop makes progress: the sweeper
/// ticks at least every `poll.interval`, so a stuck loop stops the pings.
async fn watchdog_loop(
    ctx: Arc<Context>,
    lifecycle: Arc<dyn Lifecycle>,
    shutdown: CancellationToken,
) {
    let mut last = ctx.progress.load(Ordering::Relaxed);
    let period = ctx.settings.poll.interval.min(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = ctx.progress.load(Ordering::Relaxed);
        if now != last {
            lifecycle.alive();
            last = now;
        }
    }
}

/// SIGHUP: re-reads the configuration for the API key and the request budget.
pub fn reload(ctx: &Context, settings: &Settings) {
    match settings.resolve_api_key() {
        Ok(Some(key)) if ctx.client.uses_key(&key) => {
            tracing::info!("API key unchanged (under systemd, a new credential file needs a restart, not a reload)");
        }
        Ok(Some(key)) => {
            ctx.client.set_api_key(key);
            tracing::info!("API key reloaded: a new key is in use");
        }
        Ok(None) => tracing::error!("reload: no API key found; keeping the old one"),
        Err(e) => tracing::error!("reload: {e}; keeping the old key"),
    }
    ctx.client
        .budget()
        .set_rate(settings.api.requests_per_second);
    tracing::info!(
        requests_per_second = settings.api.requests_per_second,
        "request budget reloaded"
    );
}
