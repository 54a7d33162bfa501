//! The daemon: opens the store, recovers, then runs the pipeline's tasks until shutdown.
//!
//! Every task `select!`s on its work and on the shutdown token, and reaches a safe state
//! before it ends; all are tracked by one `TaskTracker`, so nothing outlives `run`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ClientConfig, TentedClient};
use crate::context::{Context, Owned};
use crate::pipeline::submission::Parked;
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
    /// The control socket cannot be served: a configuration error (exit 78).
    #[error(transparent)]
    Socket(#[from] crate::admin::SocketError),
}

/// Hooks for the outside world (systemd) that `run` calls.
pub trait Lifecycle: Send + Sync + 'static {
    /// The store is open and recovery is done.
    fn ready(&self) {}
    /// The main loop made progress (watchdog keep-alive).
    fn alive(&self) {}
    /// Shutdown has begun.
    fn stopping(&self) {}
    /// Whether anyone reads [`Lifecycle::status`] (computing the line costs a store scan).
    fn wants_status(&self) -> bool {
        false
    }
    /// A one-line account of what the daemon is doing (`systemctl status`).
    fn status(&self, _line: &str) {}
    /// How often a keep-alive is due, when a watchdog is watching.
    fn watchdog_period(&self) -> Option<Duration> {
        None
    }
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
) -> Result<(Arc<Context>, Owned), DaemonError> {
    create_folders(&settings)?;
    let store = Store::open_with(&settings.paths.state, settings.retention.compaction())?;
    let generations = crate::schedule::Generations::new(store.generation_times()?);
    let proofs = crate::schedule::TemplateProofs::new(store.template_proofs()?);
    let client = TentedClient::new(ClientConfig {
        base_url: settings.api.base_url.clone(),
        api_key,
        timeout: settings.api.timeout,
        requests_per_second: settings.api.requests_per_second,
        auth_probe_interval: settings.poll.interval,
    })?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    client.observe_calls(Arc::clone(&metrics) as Arc<dyn crate::api::client::CallObserver>);
    let (ctx, owned) = Context::new(settings, store, client, metrics, proofs, generations);
    Ok((Arc::new(ctx), owned))
}

/// Runs the daemon until `shutdown` is cancelled, then stops taking work, lets requests
/// under way end (or time out), flushes the store and returns.
pub async fn run(
    settings: Settings,
    api_key: ApiKey,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
) -> Result<(), DaemonError> {
    let (ctx, owned) = build_context(settings, api_key)?;
    run_with_context(ctx, owned, shutdown, lifecycle).await
}

/// How long to wait between two tries to open the store again.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// Runs the daemon until `shutdown`, opening the store again whenever it must (a store
/// that cannot write although its folder can, after a full disk): the pipeline stops,
/// the store is opened again (tried every second while it cannot be), and a new run
/// recovers and goes on, in the same process. `publish` is told of every new context,
/// and of none while the store is being opened again (the signal handler reloads the
/// current one; it must not keep an old one, whose store holds the folder's lock).
pub async fn run_reopening(
    mut settings: Settings,
    mut api_key: ApiKey,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
    publish: impl Fn(Option<Arc<Context>>),
) -> Result<(), DaemonError> {
    let mut first = true;
    // Create answers the store could not record outlive each pipeline (see `Parked`).
    let parked = Parked::default();
    loop {
        let (ctx, owned) = match build_context(settings.clone(), api_key.clone()) {
            Ok(built) => built,
            // At start-up every error stops it; later, only a damaged store does.
            Err(e)
                if first
                    || matches!(&e, DaemonError::Store(store) if store.needs_an_operator()) =>
            {
                return Err(e)
            }
            Err(e) => {
                tracing::error!("cannot open the store again yet ({e}); trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        parked.log_lost();
                        return Ok(());
                    }
                    _ = tokio::time::sleep(REOPEN_RETRY) => continue,
                }
            }
        };
        first = false;
        publish(Some(Arc::clone(&ctx)));
        run_pipeline(
            Arc::clone(&ctx),
            owned,
            shutdown.clone(),
            Arc::clone(&lifecycle),
            parked.clone(),
        )
        .await?;
        if shutdown.is_cancelled() || !ctx.health.must_reopen() {
            parked.log_lost();
            return Ok(());
        }
        // What a SIGHUP changed carries over.
        api_key = ctx.client.api_key();
        settings.api.requests_per_second =
            u32::try_from(ctx.client.budget().requests_per_second()).unwrap_or(u32::MAX);
        publish(None);
        drop(ctx);
        tracing::warn!("opening the store again");
    }
}

pub async fn run_with_context(
    ctx: Arc<Context>,
    owned: Owned,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
) -> Result<(), DaemonError> {
    let parked = Parked::default();
    run_pipeline(ctx, owned, shutdown, lifecycle, parked.clone()).await?;
    parked.log_lost();
    Ok(())
}

/// Runs the pipeline on one opened store until shutdown or until the store must be
/// opened again. Answers kept in `parked` from the previous pipeline are recorded first:
/// recovery would report their items `unknown`.
async fn run_pipeline(
    ctx: Arc<Context>,
    owned: Owned,
    shutdown: CancellationToken,
    lifecycle: Arc<dyn Lifecycle>,
    parked: Parked,
) -> Result<(), DaemonError> {
    if parked.record_all(&ctx).await > 0 {
        tracing::error!(
            waiting = parked.len(),
            "answers kept in memory cannot be recorded yet: opening the store again"
        );
        ctx.health.reopen();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(REOPEN_RETRY) => {}
        }
        return Ok(());
    }
    crate::pipeline::recovery::recover(&ctx).await?;
    let watcher = crate::pipeline::intake::watch::InboxWatcher::new(
        ctx.settings.paths.inbox.clone(),
        ctx.settings.inbox.settle,
        ctx.settings.inbox.rescan,
    )?;
    let admin_listener = match ctx.settings.admin.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Admin { addr, source })?,
        ),
        None => None,
    };
    let socket = match &ctx.settings.admin.socket {
        Some(path) => Some(crate::admin::bind_socket(path)?),
        None => None,
    };
    lifecycle.ready();
    tracing::info!(
        active = ctx.active_ids().len(),
        "tented-bulkd is ready: store open, recovery done"
    );

    // The tasks stop on shutdown, or when the store must be opened again.
    let run = shutdown.child_token();
    let listeners = (admin_listener, socket);
    let tracker = spawn_tasks(&ctx, owned, watcher, listeners, &lifecycle, &run, parked);

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = ctx.health.reopen_asked() => {}
    }
    let reopening = !shutdown.is_cancelled();
    run.cancel();
    if reopening {
        tracing::warn!(
            "stopping the pipeline to open the store again; waiting for requests under way"
        );
    } else {
        lifecycle.stopping();
        tracing::info!("shutting down: no new work; waiting for requests under way");
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not end within the grace period; stopping anyway");
    }
    if reopening {
        // The store cannot write: nothing to flush; what it holds on disk is the truth.
        return Ok(());
    }
    ctx.store.flush().await?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Spawns the pipeline's tasks (and the admin endpoint, the storage probe, the
/// watchdog), every one stopping on `run`.
fn spawn_tasks(
    ctx: &Arc<Context>,
    owned: Owned,
    watcher: crate::pipeline::intake::watch::InboxWatcher,
    (admin_listener, socket): (
        Option<tokio::net::TcpListener>,
        Option<tokio::net::UnixListener>,
    ),
    lifecycle: &Arc<dyn Lifecycle>,
    run: &CancellationToken,
    parked: Parked,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    tracker.spawn(crate::pipeline::intake::run(
        Arc::clone(ctx),
        watcher,
        run.clone(),
    ));
    tracker.spawn(crate::pipeline::submission::run(
        Arc::clone(ctx),
        owned.nudges,
        run.clone(),
        parked,
    ));
    tracker.spawn(crate::pipeline::polling::run(
        Arc::clone(ctx),
        owned.admitted,
        owned.generations,
        run.clone(),
    ));
    tracker.spawn(crate::pipeline::reconciliation::sweep_loop(
        Arc::clone(ctx),
        run.clone(),
    ));
    tracker.spawn(storage_probe_loop(Arc::clone(ctx), run.clone()));
    let (store, stop) = (ctx.store.clone(), run.clone());
    tracker.spawn(async move { store.sync_soon(&stop).await });
    tracker.spawn(crate::pipeline::retention::run(
        Arc::clone(ctx),
        run.clone(),
    ));
    if let Some(listener) = admin_listener {
        tracker.spawn(crate::admin::serve(Arc::clone(ctx), listener, run.clone()));
    }
    if let Some(listener) = socket {
        tracker.spawn(crate::admin::serve_socket(
            Arc::clone(ctx),
            listener,
            run.clone(),
        ));
    }
    tracker.spawn(watchdog_loop(
        Arc::clone(ctx),
        Arc::clone(lifecycle),
        run.clone(),
    ));
    tracker.close();
    tracker
}

/// Probes the folders the daemon writes, every `min(poll.interval, 30s)` (on a blocking
/// thread: a full or hung disk must not stall the runtime).
async fn storage_probe_loop(ctx: Arc<Context>, shutdown: CancellationToken) {
    let period = ctx
        .settings
        .poll
        .interval
        .min(crate::health::PROBE_EVERY_MAX);
    // The state folder could not be written since the store last proved it can write.
    let mut suspect = false;
    loop {
        let paths = ctx.settings.paths.clone();
        let probed = tokio::task::spawn_blocking(move || {
            [
                ("paths.state", paths.state),
                ("paths.outbox", paths.outbox),
                ("paths.archive", paths.archive),
            ]
            .map(|(key, dir)| {
                let outcome = crate::health::probe_folder(&dir);
                (key, dir, outcome)
            })
        })
        .await;
        if let Ok(probed) = probed {
            for (key, dir, outcome) in probed {
                if key == "paths.state" {
                    suspect |= outcome.is_err();
                    if outcome.is_ok() && (suspect || ctx.store.write_failed()) {
                        if let Err(e) = ctx.store.write_probe().await {
                            tracing::error!("the store cannot write although its folder can ({e}): opening it again");
                            ctx.health.reopen();
                            return;
                        }
                        suspect = false;
                    }
                }
                ctx.health.storage().record(key, &dir, outcome);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                remove_probes(&ctx.settings.paths);
                return;
            }
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// A stopped daemon leaves no probe file behind (a crash leaves an empty one).
fn remove_probes(paths: &crate::settings::PathSettings) {
    for dir in [&paths.state, &paths.outbox, &paths.archive] {
        if let Err(e) = crate::health::remove_probe(dir) {
            tracing::warn!(path = %dir.display(), "cannot remove the write probe: {e}");
        }
    }
}

/// How often the status line is refreshed.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// Sends a watchdog keep-alive only while the main loop makes progress: the sweeper
/// ticks at least every `min(poll.interval, 10s)`, so a stuck loop stops the pings. The
/// keep-alive is due every half of the watchdog's interval (`WATCHDOG_USEC`), so the
/// interval must be longer than two sweeper ticks (the unit's 60 s is). Keeps the status
/// line current too.
async fn watchdog_loop(
    ctx: Arc<Context>,
    lifecycle: Arc<dyn Lifecycle>,
    shutdown: CancellationToken,
) {
    let mut last = ctx.health.progress();
    let period = lifecycle
        .watchdog_period()
        .unwrap_or_else(|| ctx.settings.poll.interval.min(Duration::from_secs(10)));
    let period = period.max(Duration::from_millis(10));
    let mut next_status = tokio::time::Instant::now();
    loop {
        if lifecycle.wants_status() && tokio::time::Instant::now() >= next_status {
            lifecycle.status(&status_line(&ctx));
            next_status = tokio::time::Instant::now() + STATUS_PERIOD;
        }
        let wake = if lifecycle.wants_status() {
            period.min(STATUS_PERIOD)
        } else {
            period
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wake) => {}
        }
        let now = ctx.health.progress();
        if now != last {
            lifecycle.alive();
            last = now;
        }
    }
}

/// `3 manifests sending, 1,250 items in flight, next poll in 4 s`: what `systemctl
/// status` shows.
pub fn status_line(ctx: &Context) -> String {
    use crate::state::item::ItemState;
    use crate::state::manifest::ManifestPhase;
    let (mut sending, mut held, mut in_flight) = (0u64, 0u64, 0u64);
    let mut next_poll: Option<u64> = None;
    for id in ctx.active_ids() {
        let Ok(Some(m)) = ctx.store.manifest(id) else {
            continue;
        };
        let phase = crate::history::phase(&m);
        let sendable = m.count(ItemState::Pending) + m.count(ItemState::CreditWait);
        if phase == ManifestPhase::Active && sendable > 0 {
            sending += 1;
        } else if phase.is_held() {
            held += 1;
        }
        in_flight += u64::from(
            m.count(ItemState::Sending)
                + m.count(ItemState::Admitted)
                + m.count(ItemState::AwaitingDetails),
        );
        let jobs = match ctx.store.jobs(id) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(
                    manifest_id = id,
                    "the status line cannot read the manifest's requests: {e}"
                );
                Vec::new()
            }
        };
        for job in jobs {
            if job.state() == crate::state::job::JobState::Admitted {
                let due = crate::schedule::next_poll_due_ms(&job, ctx.poll_floor_ms(), 0);
                next_poll = Some(next_poll.map_or(due, |n| n.min(due)));
            }
        }
    }
    let plural = |n: u64, one: &str, many: &str| {
        format!("{} {}", thousands(n), if n == 1 { one } else { many })
    };
    let mut line = format!(
        "{} sending, {} in flight",
        plural(sending, "manifest", "manifests"),
        plural(in_flight, "item", "items")
    );
    if held > 0 {
        line.push_str(&format!(
            ", {} paused or waiting for credits",
            thousands(held)
        ));
    }
    if let Some(due) = next_poll {
        let secs = due.saturating_sub(ctx.clock.now_ms()).div_ceil(1000);
        line.push_str(&format!(", next poll in {secs} s"));
    }
    if ctx.client.auth_paused() {
        line.push_str("; UNHEALTHY: Tented refuses the API key");
    }
    for problem in ctx.health.storage().problems() {
        line.push_str(&format!("; UNHEALTHY: {problem}"));
    }
    line
}

/// `1250` → `1,250`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_250), "1,250");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
