//! A faithful, stateful simulator of the Tented HTTP API.
//!
//! It answers the five endpoints that `tented-bulkd` uses, built point by point from the
//! pages in `api/` (not from any client): the bearer-token check, request validation,
//! bulk admission with partial success, tents that move from `queued` to `generating`
//! to `completed` or `failed` over configurable times, auto-publish with alias
//! collisions and publish failures, and edits with new generation ids. Knobs inject
//! latency, HTTP errors, dropped connections and hanging requests per endpoint, and a
//! credit balance. Every call is recorded and served to tests.
//!
//! Components:
//! - [`SimConfig`] and friends (this file): the knobs;
//! - `knobs`: [`SimArgs`], the `tented-bulkd sim` command line;
//! - `model`: the state behind a mutex (tents, generations, bulk jobs, credits), whose
//!   lifecycle is computed lazily from timestamps when it is read;
//! - `routes`: the axum handlers, the gatekeeper middleware (recording, latency,
//!   bearer token, fault injection) and the `/_sim/*` control routes;
//! - `alias`: the custom page alias rules;
//! - the accept loop (this file), which serves each connection itself so that a
//!   handler can close the socket without answering.
//!
//! Choices where the pages are silent are listed in the README and at the places they
//! are made.

mod alias;
mod knobs;
mod model;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use alias::{validate_alias, AliasError};
pub use knobs::SimArgs;

/// Everything the simulator can be told. `SimConfig::default()` is a realistic setting.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The only accepted bearer token.
    pub api_key: String,
    /// Empty: every id starting with `tpl_` exists and is approved. Otherwise only these.
    pub templates: Vec<String>,
    /// Latency added to every `/v1` request, drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// How long a new generation stays `queued`.
    pub queue_time: (Duration, Duration),
    /// How long a generation stays `generating`.
    pub generation_time: (Duration, Duration),
    /// How long publication stays `pending` after generation completes.
    pub publish_time: (Duration, Duration),
    /// Share of generations that fail.
    pub failure_rate: f64,
    /// Share of auto-publishes that fail with `PUBLISH_LIMIT_EXCEEDED`.
    pub publish_failure_rate: f64,
    /// Aliases already in use in the workspace: requesting one publishes with warnings.
    pub taken_aliases: Vec<String>,
    /// Tent ids (uuids) that exist without a generation, as after an asset upload.
    pub idle_tents: Vec<String>,
    /// Injected HTTP errors and connection faults, per endpoint.
    pub errors: EndpointFaults,
    /// `Retry-After` sent by GET /v1/tents/{id} while in progress; None omits the header.
    pub retry_after_secs: Option<u64>,
    /// Credit balance; None is unlimited. Each admitted generation costs 1.
    pub credits: Option<u64>,
    /// Seed for the random choices (durations, outcomes, faults, ids).
    pub seed: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_key: "sim-key".to_owned(),
            templates: Vec::new(),
            latency: (Duration::ZERO, Duration::ZERO),
            queue_time: (Duration::from_secs(1), Duration::from_secs(3)),
            generation_time: (Duration::from_secs(5), Duration::from_secs(20)),
            publish_time: (Duration::from_secs(1), Duration::from_secs(2)),
            failure_rate: 0.05,
            publish_failure_rate: 0.02,
            taken_aliases: Vec::new(),
            idle_tents: Vec::new(),
            errors: EndpointFaults::default(),
            retry_after_secs: Some(10),
            credits: None,
            seed: None,
        }
    }
}

/// Fault rates for each of the five endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointFaults {
    /// POST /v1/tents/bulk
    pub bulk_create: FaultRates,
    /// GET /v1/bulk-jobs/{id}
    pub bulk_status: FaultRates,
    /// POST /v1/tents
    pub create: FaultRates,
    /// POST /v1/tents/{id}/edit
    pub edit: FaultRates,
    /// GET /v1/tents/{id}
    pub tent_status: FaultRates,
}

impl EndpointFaults {
    /// The same rates on every endpoint.
    pub fn all(rates: FaultRates) -> Self {
        EndpointFaults {
            bulk_create: rates.clone(),
            bulk_status: rates.clone(),
            create: rates.clone(),
            edit: rates.clone(),
            tent_status: rates,
        }
    }
}

/// Probabilities (0..=1) of each fault on one endpoint. At most one fault is injected per
/// request; the rates are shares of all requests, taken in the order of the fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRates {
    pub rate_429: f64,
    pub rate_500: f64,
    pub rate_503: f64,
    /// `Retry-After` header on injected 429s (None = no header).
    pub retry_after_429: Option<u64>,
    /// Close the connection without processing the request (nothing admitted).
    pub drop_before_rate: f64,
    /// Process the request fully (admit, charge credits), then close without answering.
    pub drop_after_rate: f64,
    /// Process the request fully, then never answer.
    pub hang_rate: f64,
}

/// One call received by the simulator (calls to `/_sim/*` are not recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedCall {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Milliseconds since the simulator started (monotonic), at arrival.
    pub at_ms: u64,
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Whether the bearer token was the current API key.
    pub authorized: bool,
    /// The request body, when it was JSON.
    pub body: Option<serde_json::Value>,
    /// Status answered; None while in flight, or when the connection was dropped or hung.
    pub status: Option<u16>,
    /// "429", "500", "503", "drop_before", "drop_after" or "hang" when injected.
    pub fault: Option<String>,
}

/// Why the simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid simulator setting: {0}")]
    InvalidConfig(String),
}

/// State shared by the accept loop, the handlers and the [`Simulator`] handle.
pub(crate) struct Shared {
    pub(crate) started: Instant,
    pub(crate) model: Mutex<model::Model>,
    pub(crate) calls: Mutex<Vec<RecordedCall>>,
}

impl Shared {
    fn new(config: SimConfig) -> Result<Arc<Shared>, SimError> {
        Ok(Arc::new(Shared {
            started: Instant::now(),
            model: Mutex::new(model::Model::new(config)?),
            calls: Mutex::new(Vec::new()),
        }))
    }

    /// Locks the model. A handler that panicked cannot leave it half-changed in a way
    /// that matters to a simulator, so a poisoned lock is used as it is.
    pub(crate) fn model(&self) -> std::sync::MutexGuard<'_, model::Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn calls_log(&self) -> std::sync::MutexGuard<'_, Vec<RecordedCall>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator, started by [`Simulator::start`].
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), SimError>>>,
}

impl Simulator {
    /// Binds `listen` (e.g. "127.0.0.1:0"), starts serving on a tokio task, returns at once.
    pub async fn start(config: SimConfig, listen: &str) -> Result<Simulator, SimError> {
        let shared = Shared::new(config)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: listen.to_owned(),
                source,
            })?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let task = tokio::spawn(run(listener, shared.clone(), async move {
            signal.cancelled().await
        }));
        Ok(Simulator {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "http://IP:PORT"
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call received, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.calls_log().clone()
    }

    pub fn set_api_key(&self, key: &str) {
        self.shared.model().config.api_key = key.to_owned();
    }

    /// Makes a bulk job answer 404 from now on (Tented losing it).
    pub fn forget_bulk_job(&self, bulk_job_id: &str) -> bool {
        self.shared.model().forget_bulk_job(bulk_job_id)
    }

    pub fn set_credits(&self, credits: Option<u64>) {
        self.shared.model().config.credits = credits;
    }

    /// The credit balance left (None = unlimited).
    pub fn credits(&self) -> Option<u64> {
        self.shared.model().config.credits
    }

    pub fn set_faults(&self, faults: EndpointFaults) {
        self.shared.model().config.errors = faults;
    }

    /// How long generations admitted from now on take (minimum, maximum).
    pub fn set_generation_time(&self, range: (std::time::Duration, std::time::Duration)) {
        self.shared.model().config.generation_time = range;
    }

    pub fn set_taken_aliases(&self, aliases: Vec<String>) {
        self.shared.model().config.taken_aliases = aliases;
    }

    /// Stops serving (open connections are closed) and waits for the serving task.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "simulator stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "simulator task failed"),
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // A handle dropped without `shutdown` still stops the serving task.
        self.stop.cancel();
    }
}

/// Serves the simulator on `listener` until `shutdown` completes. Used by `tented-bulkd sim`.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let shared = Shared::new(config)?;
    run(listener, shared, shutdown).await
}

/// Cancelling this token (found in each request's extensions) makes the connection task
/// drop the connection, closing the socket without an answer.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(pub(crate) CancellationToken);

/// How long to wait before accepting again after an accept error (e.g. too many files).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let router = routes::router(shared);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(stream, router.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: axum::Router,
    stop: CancellationToken,
) {
    let kill = CancellationToken::new();
    let kill_for_requests = kill.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request
            .extensions_mut()
            .insert(ConnectionKill(kill_for_requests.clone()));
        router.clone().oneshot(request)
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "simulator connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without answering.
        _ = kill.cancelled() => {}
        _ = stop.cancelled() => {}
    }
}
