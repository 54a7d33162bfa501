//! The one request budget that every call to Tented shares (`api.requests_per_second`).
//!
//! A governor `direct` limiter, driven by a clock built on tokio's clock so that the
//! waiting obeys `tokio::time::pause()` in tests: governor's own `until_ready` would sleep
//! on a timer that paused time does not move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A governor clock that reads tokio's clock (so paused time works).
#[derive(Clone, Debug)]
pub struct TokioClock {
    anchor: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(tokio::time::Instant::now().saturating_duration_since(self.anchor))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Waits that are at least this long count as "the budget delayed a call".
const NOTABLE_BUDGET_WAIT: Duration = Duration::from_millis(50);

/// The shared request budget. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Budget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    clock: TokioClock,
    limiter: RwLock<Arc<Limiter>>,
    requests_per_second: AtomicU64,
    delayed_calls: AtomicU64,
    delayed_nanos: AtomicU64,
    /// Every wait, however short.
    waited_nanos: AtomicU64,
}

impl Budget {
    pub fn new(requests_per_second: u32) -> Budget {
        let clock = TokioClock::new();
        Budget {
            inner: Arc::new(BudgetInner {
                limiter: RwLock::new(Arc::new(limiter(requests_per_second, clock.clone()))),
                clock,
                requests_per_second: AtomicU64::new(u64::from(requests_per_second.max(1))),
                delayed_calls: AtomicU64::new(0),
                delayed_nanos: AtomicU64::new(0),
                waited_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Changes the rate (SIGHUP); calls already waiting finish on the old limiter.
    pub fn set_rate(&self, requests_per_second: u32) {
        let new = Arc::new(limiter(requests_per_second, self.inner.clock.clone()));
        let mut guard = self
            .inner
            .limiter
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = new;
        self.inner
            .requests_per_second
            .store(u64::from(requests_per_second.max(1)), Ordering::Relaxed);
    }

    pub fn requests_per_second(&self) -> u64 {
        self.inner.requests_per_second.load(Ordering::Relaxed)
    }

    /// Waits for one cell of the budget and returns how long that took.
    pub async fn acquire(&self) -> Duration {
        let start = tokio::time::Instant::now();
        loop {
            let limiter = {
                let guard = self
                    .inner
                    .limiter
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Arc::clone(&guard)
            };
            match limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.inner.clock.now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
        let waited = start.elapsed();
        self.inner
            .waited_nanos
            .fetch_add(waited.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        if waited >= NOTABLE_BUDGET_WAIT {
            self.inner.delayed_calls.fetch_add(1, Ordering::Relaxed);
            self.inner
                .delayed_nanos
                .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
        waited
    }

    /// How long every call waited for the budget, in all, since start.
    pub fn total_wait(&self) -> Duration {
        Duration::from_nanos(self.inner.waited_nanos.load(Ordering::Relaxed))
    }

    /// How many calls waited noticeably for the budget, and for how long in all.
    pub fn delays(&self) -> (u64, Duration) {
        (
            self.inner.delayed_calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.inner.delayed_nanos.load(Ordering::Relaxed)),
        )
    }
}

fn limiter(requests_per_second: u32, clock: TokioClock) -> Limiter {
    let per_second = std::num::NonZeroU32::new(requests_per_second.max(1)).unwrap_or(nonzero_one());
    // A burst of one: the budget is a steady rate, never a stampede after a quiet spell.
    let quota = Quota::per_second(per_second).allow_burst(nonzero_one());
    RateLimiter::direct_with_clock(quota, clock)
}

fn nonzero_one() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_spaces_calls_at_the_configured_rate() {
        let budget = Budget::new(5);
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            budget.acquire().await;
        }
        // Eleven calls at 5 per second with a burst of one take two seconds.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
        let (delayed, _) = budget.delays();
        assert_eq!(delayed, 10);
        let total = budget.total_wait();
        assert!(total >= Duration::from_millis(1990) && total <= Duration::from_millis(2100), "{total:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn set_rate_takes_effect_for_later_calls() {
        let budget = Budget::new(1);
        budget.acquire().await;
        budget.set_rate(100);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            budget.acquire().await;
        }
        assert!(start.elapsed() <= Duration::from_millis(150));
        assert_eq!(budget.requests_per_second(), 100);
    }
}
