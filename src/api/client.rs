//! The Tented HTTP client: bearer auth, per-request timeout, the shared request budget,
//! the 401 pause, and the classification of every call's outcome.
//!
//! The classification is what makes "never send a create twice" possible: only a call
//! that certainly never reached the server ([`Outcome::NotSent`]) may be retried blindly.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::budget::{Budget, CallClass};
use super::types::*;
use crate::settings::ApiKey;

/// How often an error is logged while calls are paused by a 401.
const AUTH_PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// The endpoint a call went to, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    BulkCreate,
    BulkStatus,
    Create,
    Edit,
    TentStatus,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::BulkCreate => "bulk_create",
            Endpoint::BulkStatus => "bulk_status",
            Endpoint::Create => "create",
            Endpoint::Edit => "edit",
            Endpoint::TentStatus => "tent_status",
        }
    }

    /// Calls that create generations and spend credits.
    pub fn is_create(self) -> bool {
        matches!(
            self,
            Endpoint::BulkCreate | Endpoint::Create | Endpoint::Edit
        )
    }
}

/// What became of one call.
#[derive(Debug)]
pub enum Outcome<T> {
    /// A 2xx answer whose body we understood.
    Success {
        status: u16,
        body: T,
        retry_after: Option<Duration>,
    },
    /// A non-2xx answer: the server saw the request and said no (or "later").
    Refused {
        status: u16,
        error: ApiErrorBody,
        retry_after: Option<Duration>,
    },
    /// The request never reached the server (connection refused, DNS): safe to retry.
    NotSent { reason: String },
    /// The request may have reached the server and its answer was lost (timeout, reset
    /// after sending, an unreadable 2xx body). A create in this state must never be resent.
    Uncertain { reason: String },
}

impl<T> Outcome<T> {
    /// The same outcome with the success body turned into another type.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Success {
                status,
                body,
                retry_after,
            } => Outcome::Success {
                status,
                body: f(body),
                retry_after,
            },
            Outcome::Refused {
                status,
                error,
                retry_after,
            } => Outcome::Refused {
                status,
                error,
                retry_after,
            },
            Outcome::NotSent { reason } => Outcome::NotSent { reason },
            Outcome::Uncertain { reason } => Outcome::Uncertain { reason },
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> String {
        match self {
            Outcome::Success { status, .. } | Outcome::Refused { status, .. } => status.to_string(),
            Outcome::NotSent { .. } => "not_sent".to_string(),
            Outcome::Uncertain { .. } => "uncertain".to_string(),
        }
    }
}

/// The 401 pause: after a 401 every call waits, and one probe call is let through every
/// `probe_interval` until a call gets something other than 401.
struct AuthGate {
    state: Mutex<AuthState>,
    reopened: tokio::sync::Notify,
    probe_interval: Duration,
}

#[derive(Default)]
struct AuthState {
    paused_since: Option<tokio::time::Instant>,
    next_probe: Option<tokio::time::Instant>,
    last_logged: Option<tokio::time::Instant>,
}

impl AuthGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn wait(&self) {
        loop {
            let notified = self.reopened.notified();
            let sleep_until = {
                let mut state = self.lock();
                let Some(_) = state.paused_since else {
                    return;
                };
                let now = tokio::time::Instant::now();
                match state.next_probe {
                    Some(at) if at > now => at,
                    _ => {
                        // This call is the probe; the next one waits a whole interval.
                        state.next_probe = Some(now + self.probe_interval);
                        return;
                    }
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
    }

    fn observe(&self, status: Option<u16>) {
        let mut state = self.lock();
        let now = tokio::time::Instant::now();
        match status {
            Some(401) => {
                if state.paused_since.is_none() {
                    state.paused_since = Some(now);
                    state.next_probe = Some(now + self.probe_interval);
                }
                let due = state
                    .last_logged
                    .is_none_or(|at| now.duration_since(at) >= AUTH_PAUSE_LOG_INTERVAL);
                if due {
                    state.last_logged = Some(now);
                    tracing::error!(
                        "Tented answered 401 Unauthorized: every call is paused until the API key works again (reload it with SIGHUP)"
                    );
                }
            }
            // Only an answer that got past the token check proves the key works: a 429 or
            // 5xx may come from a gateway in front of the API.
            Some(status)
                if status != 429 && status < 500 && state.paused_since.take().is_some() =>
            {
                state.next_probe = None;
                state.last_logged = None;
                tracing::info!("the API key works again: calls resume");
                self.reopened.notify_waiters();
            }
            _ => {}
        }
    }

    fn paused(&self) -> bool {
        self.lock().paused_since.is_some()
    }

    fn reopen(&self) {
        let mut state = self.lock();
        if state.paused_since.is_some() {
            state.next_probe = None;
        }
        drop(state);
        self.reopened.notify_waiters();
    }
}

/// Told of every call once its outcome is known (the daemon's metrics).
pub trait CallObserver: Send + Sync {
    /// A call to `endpoint` ended with `answer` (the HTTP status, `not_sent` or
    /// `uncertain`, the label of `/metrics`) after `took`; `left` says whether it went on
    /// the wire at all (not `not_sent`).
    fn call_finished(&self, endpoint: Endpoint, answer: &str, left: bool, took: Duration);
}

/// A wait for the budget longer than this means the budget, not the caller's own pace,
/// is what holds its calls back.
pub const BUDGET_HOLDS_BACK_AFTER: Duration = Duration::from_secs(1);

/// Proof that one cell of the request budget was reserved for the next call.
#[derive(Debug)]
pub struct BudgetPermit {
    waited: Duration,
}

impl BudgetPermit {
    /// How long the reservation waited (for the 401 pause and the budget).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// The Tented API client. Cheap to clone.
#[derive(Clone)]
pub struct TentedClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    http: reqwest::Client,
    base: Url,
    key: RwLock<ApiKey>,
    budget: Budget,
    auth: AuthGate,
    observer: std::sync::OnceLock<Arc<dyn CallObserver>>,
}

/// What the client needs to know.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Tented's address (an http or https URL: `Settings` checked it).
    pub base_url: Url,
    pub api_key: ApiKey,
    pub timeout: Duration,
    pub requests_per_second: u32,
    /// How often a probe call goes out while a 401 pauses everything.
    pub auth_probe_interval: Duration,
}

impl TentedClient {
    pub fn new(config: ClientConfig) -> Result<TentedClient, ClientError> {
        let mut base = config.base_url;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tented-bulkd/", env!("CARGO_PKG_VERSION")))
            // A redirect would re-send a create elsewhere: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(TentedClient {
            inner: Arc::new(ClientInner {
                http,
                base,
                key: RwLock::new(config.api_key),
                budget: Budget::new(config.requests_per_second),
                auth: AuthGate {
                    state: Mutex::new(AuthState::default()),
                    reopened: tokio::sync::Notify::new(),
                    probe_interval: config.auth_probe_interval,
                },
                observer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Tells `observer` of every call from now on (once; a second observer is ignored).
    pub fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// Replaces the key (SIGHUP) and lets the next call probe it at once.
    pub fn set_api_key(&self, key: ApiKey) {
        let mut guard = self.inner.key.write().unwrap_or_else(|p| p.into_inner());
        *guard = key;
        drop(guard);
        self.inner.auth.reopen();
    }

    /// The key in use (to carry it over when the daemon opens its store again; it never
    /// prints).
    pub fn api_key(&self) -> ApiKey {
        self.inner
            .key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `key` is the key in use (for reload messages; the key itself never leaves).
    pub fn uses_key(&self, key: &ApiKey) -> bool {
        let guard = self.inner.key.read().unwrap_or_else(|p| p.into_inner());
        *guard == *key
    }

    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Notes whether the budget is what held back the call `permit` was reserved for (a
    /// wait over [`BUDGET_HOLDS_BACK_AFTER`]; a wait through a 401 pause is the pause's,
    /// which logs it once a minute); returns whether it has just begun to (worth a log
    /// line). Read back by [`Budget::holding_back`].
    pub fn note_budget_wait(&self, class: CallClass, permit: &BudgetPermit) -> bool {
        let holding = permit.waited() > BUDGET_HOLDS_BACK_AFTER && !self.auth_paused();
        self.budget().note_holding_back(class, holding)
    }

    /// True while a 401 pauses every call.
    pub fn auth_paused(&self) -> bool {
        self.inner.auth.paused()
    }

    pub async fn create_bulk(&self, request: &BulkCreateRequest) -> Outcome<BulkCreateResponse> {
        let permit = self.reserve().await;
        self.create_bulk_with(permit, request).await
    }

    /// `POST /v1/tents/bulk` on a budget cell already reserved (the submitter reserves,
    /// then records its intent, then sends: a long wait never holds items in `Sending`).
    pub async fn create_bulk_with(
        &self,
        permit: BudgetPermit,
        request: &BulkCreateRequest,
    ) -> Outcome<BulkCreateResponse> {
        self.call_with(
            permit,
            Endpoint::BulkCreate,
            Method::POST,
            "v1/tents/bulk",
            Some(request),
        )
        .await
    }

    pub async fn bulk_job(&self, bulk_job_id: &str) -> Outcome<BulkJobStatus> {
        let permit = self.reserve().await;
        self.bulk_job_with(permit, bulk_job_id).await
    }

    /// `GET /v1/bulk-jobs/{id}` on a budget cell already reserved.
    pub async fn bulk_job_with(
        &self,
        permit: BudgetPermit,
        bulk_job_id: &str,
    ) -> Outcome<BulkJobStatus> {
        let path = format!("v1/bulk-jobs/{}", encode_segment(bulk_job_id));
        self.call_with::<(), _>(permit, Endpoint::BulkStatus, Method::GET, &path, None)
            .await
    }

    pub async fn create_tent(&self, request: &CreateTentRequest) -> Outcome<CreateTentResponse> {
        let permit = self.reserve().await;
        self.create_tent_with(permit, request).await
    }

    pub async fn create_tent_with(
        &self,
        permit: BudgetPermit,
        request: &CreateTentRequest,
    ) -> Outcome<CreateTentResponse> {
        self.call_with(
            permit,
            Endpoint::Create,
            Method::POST,
            "v1/tents",
            Some(request),
        )
        .await
    }

    pub async fn edit_tent(
        &self,
        tent_id: &str,
        request: &EditTentRequest,
    ) -> Outcome<EditTentResponse> {
        let permit = self.reserve().await;
        self.edit_tent_with(permit, tent_id, request).await
    }

    pub async fn edit_tent_with(
        &self,
        permit: BudgetPermit,
        tent_id: &str,
        request: &EditTentRequest,
    ) -> Outcome<EditTentResponse> {
        let path = format!("v1/tents/{}/edit", encode_segment(tent_id));
        self.call_with(permit, Endpoint::Edit, Method::POST, &path, Some(request))
            .await
    }

    pub async fn tent(&self, tent_id: &str) -> Outcome<TentStatus> {
        let permit = self.reserve().await;
        self.tent_with(permit, tent_id).await
    }

    /// `GET /v1/tents/{id}` on a budget cell already reserved.
    pub async fn tent_with(&self, permit: BudgetPermit, tent_id: &str) -> Outcome<TentStatus> {
        let path = format!("v1/tents/{}", encode_segment(tent_id));
        self.call_with::<(), _>(permit, Endpoint::TentStatus, Method::GET, &path, None)
            .await
    }

    /// Waits until a call may go out (the 401 pause and the request budget) and reserves
    /// it. Pollers reserve first, then record the poll, then send: so the recorded time
    /// is the time the request left.
    /// Reserves one cell of the budget for a poll or detail fetch (after any 401 pause).
    pub async fn reserve(&self) -> BudgetPermit {
        self.reserve_as(CallClass::Poll).await
    }

    /// Reserves one cell of the budget for a call of this class (after any 401 pause).
    pub async fn reserve_as(&self, class: CallClass) -> BudgetPermit {
        self.inner.auth.wait().await;
        let waited = self.inner.budget.acquire_as(class).await;
        BudgetPermit { waited }
    }

    async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        _permit: BudgetPermit,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Outcome<T> {
        let started = tokio::time::Instant::now();
        let outcome = self.send(method, path, body).await;
        let took = started.elapsed();
        let status = match &outcome {
            Outcome::Success { status, .. } | Outcome::Refused { status, .. } => Some(*status),
            _ => None,
        };
        self.inner.auth.observe(status);
        let label = outcome.label();
        if let Some(observer) = self.inner.observer.get() {
            let left = !matches!(outcome, Outcome::NotSent { .. });
            observer.call_finished(endpoint, &label, left, took);
        }
        outcome
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Outcome<T> {
        let url = match self.inner.base.join(path) {
            Ok(url) => url,
            Err(e) => {
                return Outcome::NotSent {
                    reason: format!("cannot build the URL for `{path}`: {e}"),
                }
            }
        };
        let key = {
            let guard = self.inner.key.read().unwrap_or_else(|p| p.into_inner());
            guard.clone()
        };
        let mut request = self
            .inner
            .http
            .request(method, url)
            .bearer_auth(key.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return classify_send_error(&e),
        };
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if status.is_success() => {
                return Outcome::Uncertain {
                    reason: format!("HTTP {status} but the body was lost: {}", error_chain(&e)),
                }
            }
            Err(_) => Default::default(),
        };
        if status.is_success() {
            match serde_json::from_slice::<T>(&bytes) {
                Ok(body) => Outcome::Success {
                    status: status.as_u16(),
                    body,
                    retry_after,
                },
                Err(e) => Outcome::Uncertain {
                    reason: format!("HTTP {status} with a body that does not parse: {e}"),
                },
            }
        } else {
            let error =
                serde_json::from_slice::<ApiErrorBody>(&bytes).unwrap_or_else(|_| ApiErrorBody {
                    error: Some(default_reason(status)),
                    ..Default::default()
                });
            Outcome::Refused {
                status: status.as_u16(),
                error,
                retry_after,
            }
        }
    }
}

fn default_reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
}

/// Only a connect error (or a request that could not even be built) certainly never
/// reached the server; everything else may have.
fn classify_send_error<T>(e: &reqwest::Error) -> Outcome<T> {
    if e.is_builder() || e.is_connect() {
        Outcome::NotSent {
            reason: error_chain(e),
        }
    } else if e.is_timeout() {
        Outcome::Uncertain {
            reason: format!("no answer within the timeout: {}", error_chain(e)),
        }
    } else {
        Outcome::Uncertain {
            reason: format!("the connection failed after sending: {}", error_chain(e)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The longest `Retry-After` honoured; a larger one is read as this (a bogus header must not
/// park a job for years, or overflow the scheduler).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds (the form Tented documents), at most [`RETRY_AFTER_MAX`]; an
/// HTTP date is not used by Tented and is ignored.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// Ids are opaque: escape anything that would change the path.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(encode_segment("01JQZB"), "01JQZB");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn retry_after_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "10".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(10)));
        headers.insert(
            RETRY_AFTER,
            "99999999999999".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(parse_retry_after(&headers), Some(RETRY_AFTER_MAX));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(parse_retry_after(&headers), None);
    }
}
