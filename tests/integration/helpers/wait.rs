//! The one way the tests wait: poll a condition at a short interval until it holds, under
//! a deadline, and fail with a message that says what was awaited (and what was last seen).
//!
//! A condition is a closure returning a future (`|| async { … }`) of one of:
//! - `bool`: done when `true`;
//! - `Option<T>`: done with `T` when `Some`;
//! - [`Progress<T>`]: done, not yet (with what was last seen, for the failure message), or
//!   stop now (something happened that makes waiting pointless, such as the process under
//!   test exiting).
//!
//! [`wait_until`] panics on failure; [`try_wait_until`] returns the failure, for the crash
//! scenarios, which collect every failing scenario with its logs instead of panicking.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// How often a condition is checked.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// A test failure as text. `Debug` prints it as is, so `expect` shows multi-line logs
/// readably.
pub struct Failure(pub String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Failure {
    fn from(text: String) -> Failure {
        Failure(text)
    }
}

impl From<&str> for Failure {
    fn from(text: &str) -> Failure {
        Failure(text.to_string())
    }
}

impl From<Failure> for String {
    fn from(failure: Failure) -> String {
        failure.0
    }
}

/// Where a condition stands.
pub enum Progress<T> {
    /// It holds; the wait returns this value.
    Done(T),
    /// Not yet; the text (what was last seen) goes into the failure message on timeout.
    NotYet(String),
    /// It can no longer hold (the text says why): the wait fails at once.
    Stop(String),
}

/// What a condition may return.
pub trait Condition {
    type Value;
    fn progress(self) -> Progress<Self::Value>;
}

impl Condition for bool {
    type Value = ();
    fn progress(self) -> Progress<()> {
        if self {
            Progress::Done(())
        } else {
            Progress::NotYet(String::new())
        }
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn progress(self) -> Progress<T> {
        match self {
            Some(value) => Progress::Done(value),
            None => Progress::NotYet(String::new()),
        }
    }
}

impl<T> Condition for Progress<T> {
    type Value = T;
    fn progress(self) -> Progress<T> {
        self
    }
}

/// Checks `condition` every [`POLL_EVERY`] until it holds, for at most `within`; the
/// failure names `what` was awaited.
pub async fn try_wait_until<C, F, Fut>(
    what: impl fmt::Display,
    within: Duration,
    mut condition: F,
) -> Result<C::Value, Failure>
where
    C: Condition,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let started = tokio::time::Instant::now();
    loop {
        match condition().await.progress() {
            Progress::Done(value) => return Ok(value),
            Progress::Stop(why) => {
                return Err(Failure(format!(
                    "gave up waiting for {what} after {:?}: {why}",
                    started.elapsed()
                )))
            }
            Progress::NotYet(last_seen) => {
                if started.elapsed() >= within {
                    let last_seen = if last_seen.is_empty() {
                        String::new()
                    } else {
                        format!("; last seen: {last_seen}")
                    };
                    return Err(Failure(format!(
                        "waited {within:?} for {what}, in vain{last_seen}"
                    )));
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`try_wait_until`], panicking with its message on failure.
pub async fn wait_until<C, F, Fut>(
    what: impl fmt::Display,
    within: Duration,
    condition: F,
) -> C::Value
where
    C: Condition,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    match try_wait_until(what, within, condition).await {
        Ok(value) => value,
        Err(failure) => panic!("{failure}"),
    }
}
