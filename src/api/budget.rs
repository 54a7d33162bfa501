//! The one request budget that every call to Tented shares (`api.requests_per_second`).
//!
//! A governor `direct` limiter (a steady rate with a tolerance of a quarter of a cell,
//! see [`limiter`]), driven by a clock built on tokio's clock so that the
//! waiting obeys `tokio::time::pause()` in tests: governor's own `until_ready` would sleep
//! on a timer that paused time does not move.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What a call is for, when creates and polls compete for the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallClass {
    /// A create request: it starts work, so it goes first.
    Create,
    /// A poll or a detail fetch: it only sees work end.
    Poll,
}

/// While creates and polls both wait for the budget, creates get [`CREATE_SHARE`] cells
/// for every [`POLL_SHARE`] that polls get (C C P C P): the budget goes to what starts
/// work first (the makespan is set by the last create plus a generation), and polls
/// never starve, nor fall so far behind that the last result lags its last tent by more
/// than a floor and a second. Measured (`BENCHMARKS.md`, bench scale: a 1 s floor): three
/// to one left the last result 2.6 s behind its last tent, two to one 1.9-2.0 s, three to
/// two 1.2 s, all for the same makespan; one to one ends the creates so late that the
/// makespan grows 1.4 s.
pub const CREATE_SHARE: u64 = 3;

/// See [`CREATE_SHARE`].
pub const POLL_SHARE: u64 = 2;

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
    /// Creates waiting for a cell now.
    creates_waiting: AtomicU64,
    /// Polls waiting for a cell now.
    polls_waiting: AtomicU64,
    /// What creates have had of their share while polls wait: each create adds
    /// [`POLL_SHARE`], each poll takes [`CREATE_SHARE`]; creates have had their share at
    /// [`CREATE_SHARE`].
    creates_since_poll: AtomicU64,
    /// Time each class waited for the budget, in all (nanoseconds): creates, polls.
    waited_nanos: [AtomicU64; 2],
    /// Whether the budget is what holds each class back now, as the stage that waited
    /// judged it (see [`Budget::note_holding_back`]): creates, polls.
    holding_back: [AtomicBool; 2],
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
                creates_waiting: AtomicU64::new(0),
                polls_waiting: AtomicU64::new(0),
                creates_since_poll: AtomicU64::new(0),
                waited_nanos: [AtomicU64::new(0), AtomicU64::new(0)],
                holding_back: [AtomicBool::new(false), AtomicBool::new(false)],
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

    /// Waits for one cell of the budget as a poll and returns how long that took.
    pub async fn acquire(&self) -> Duration {
        self.acquire_as(CallClass::Poll).await
    }

    /// Whether a call of this class must leave the next cell to the other class: polls
    /// wait while creates have had fewer than their share in a row, creates once they
    /// have had it and a poll waits.
    fn must_yield(&self, class: CallClass) -> bool {
        let creates_had_their_share =
            self.inner.creates_since_poll.load(Ordering::Relaxed) >= CREATE_SHARE;
        match class {
            CallClass::Poll => {
                self.inner.creates_waiting.load(Ordering::Relaxed) > 0 && !creates_had_their_share
            }
            CallClass::Create => {
                self.inner.polls_waiting.load(Ordering::Relaxed) > 0 && creates_had_their_share
            }
        }
    }

    /// The time one cell of the budget takes.
    fn cell(&self) -> Duration {
        Duration::from_secs(1) / self.requests_per_second().max(1) as u32
    }

    /// Waits for one cell of the budget for a call of this class (creates first, see
    /// [`CREATE_SHARE`]) and returns how long that took.
    pub async fn acquire_as(&self, class: CallClass) -> Duration {
        let start = tokio::time::Instant::now();
        let _waiting = Waiting::new(match class {
            CallClass::Create => &self.inner.creates_waiting,
            CallClass::Poll => &self.inner.polls_waiting,
        });
        loop {
            if self.must_yield(class) {
                tokio::time::sleep(self.cell()).await;
                continue;
            }
            let limiter = {
                let guard = self
                    .inner
                    .limiter
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Arc::clone(&guard)
            };
            let cells = std::num::NonZeroU32::new(SUBCELLS).unwrap_or(nonzero_one());
            match limiter.check_n(cells) {
                Ok(Ok(())) => break,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.inner.clock.now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
                // Never: a call's sub-cells are fewer than the burst.
                Err(_) => break,
            }
        }
        let credit = &self.inner.creates_since_poll;
        let _ = credit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |had| {
            Some(match class {
                CallClass::Create => had.saturating_add(POLL_SHARE),
                // Never more than one share ahead, however long creates went alone.
                CallClass::Poll => had.saturating_sub(CREATE_SHARE).min(CREATE_SHARE - 1),
            })
        });
        let waited = start.elapsed();
        self.inner.waited_nanos[class as usize]
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        if waited >= NOTABLE_BUDGET_WAIT {
            self.inner.delayed_calls.fetch_add(1, Ordering::Relaxed);
            self.inner
                .delayed_nanos
                .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
        waited
    }

    /// How long every call waited for the budget, in all, since start (creates and
    /// polls together: `tented_bulkd_budget_wait_seconds_total`).
    pub fn total_wait(&self) -> Duration {
        let (creates, polls) = self.waited_by_class();
        creates + polls
    }

    /// How long creates and polls have waited for the budget, in all.
    pub fn waited_by_class(&self) -> (Duration, Duration) {
        let [creates, polls] = &self.inner.waited_nanos;
        (
            Duration::from_nanos(creates.load(Ordering::Relaxed)),
            Duration::from_nanos(polls.load(Ordering::Relaxed)),
        )
    }

    /// Records whether the budget, and not the stage's own pace or a 401 pause, is what
    /// held `class`'s latest call back (the submitter and the poller judge it from their
    /// permit's wait); returns whether it has just begun to (worth a log line).
    pub fn note_holding_back(&self, class: CallClass, holding: bool) -> bool {
        let was = self.inner.holding_back[class as usize].swap(holding, Ordering::Relaxed);
        holding && !was
    }

    /// Whether the budget is what holds `class` back now (`/status`).
    pub fn holding_back(&self, class: CallClass) -> bool {
        self.inner.holding_back[class as usize].load(Ordering::Relaxed)
    }

    /// How many calls waited noticeably for the budget, and for how long in all.
    pub fn delays(&self) -> (u64, Duration) {
        (
            self.inner.delayed_calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.inner.delayed_nanos.load(Ordering::Relaxed)),
        )
    }
}

/// Counts a create as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicU64) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Each call takes this many sub-cells of the limiter, which lets it through up to one
/// sub-cell (a quarter of a call's cell) before its steady time; see [`limiter`].
const SUBCELLS: u32 = 4;

/// The budget's limiter: a steady rate of `requests_per_second`, with a tolerance of a
/// quarter of a cell. A waiter is told to come back a quarter of a cell before its cell
/// is due, so a timer that wakes it a little late (a millisecond on a loaded machine: 5%
/// of a 20 ms cell) does not push every later cell back and lose that time from the
/// budget for good. Never a stampede: after a quiet spell the second call waits three
/// quarters of a cell, and every later one a whole cell.
fn limiter(requests_per_second: u32, clock: TokioClock) -> Limiter {
    let rate = requests_per_second.max(1);
    let subcell = Duration::from_secs(1) / rate.saturating_mul(SUBCELLS).max(1);
    let burst = std::num::NonZeroU32::new(SUBCELLS + 1).unwrap_or(nonzero_one());
    let quota = Quota::with_period(subcell.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(nonzero_one()))
        .allow_burst(burst);
    RateLimiter::direct_with_clock(quota, clock)
}

fn nonzero_one() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_back_is_told_once_per_class_until_it_stops() {
        let budget = Budget::new(5);
        assert!(budget.note_holding_back(CallClass::Poll, true), "it begins");
        assert!(
            !budget.note_holding_back(CallClass::Poll, true),
            "told once"
        );
        assert!(budget.holding_back(CallClass::Poll));
        assert!(!budget.holding_back(CallClass::Create), "classes apart");
        assert!(!budget.note_holding_back(CallClass::Poll, false));
        assert!(!budget.holding_back(CallClass::Poll));
        assert!(
            budget.note_holding_back(CallClass::Poll, true),
            "begins again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_spaces_calls_at_the_configured_rate() {
        let budget = Budget::new(5);
        let start = tokio::time::Instant::now();
        let mut grants = Vec::new();
        for _ in 0..21 {
            budget.acquire().await;
            grants.push(start.elapsed());
        }
        // 21 calls at 5 per second take four seconds, less the quarter of a cell (50 ms)
        // by which a waiter may come early; none came sooner than 3/4 of a cell (150 ms)
        // after the previous one: a steady rate, never a stampede.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(3950), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(4100), "{elapsed:?}");
        assert!(
            grants
                .windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_millis(150)),
            "{grants:?}"
        );
        // No drift: every grant is within a quarter of a cell of its steady time.
        for (k, at) in grants.iter().enumerate() {
            let steady = Duration::from_millis(200 * k as u64);
            assert!(*at + Duration::from_millis(50) >= steady, "{k}: {at:?}");
        }
        let (delayed, _) = budget.delays();
        assert_eq!(delayed, 20);
        let total = budget.total_wait();
        assert!(
            total >= Duration::from_millis(3950) && total <= Duration::from_millis(4100),
            "{total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn creates_go_first_and_polls_never_starve() {
        let budget = Budget::new(10);
        let grants = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (class, n) in [(CallClass::Create, 3), (CallClass::Poll, 3)] {
            for _ in 0..n {
                let (budget, grants) = (budget.clone(), Arc::clone(&grants));
                tasks.push(tokio::spawn(async move {
                    for _ in 0..20 {
                        budget.acquire_as(class).await;
                        grants.lock().expect("grants").push(class);
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let seen = grants.lock().expect("grants").clone();
        let creates = seen.iter().filter(|c| **c == CallClass::Create).count();
        let polls = seen.len() - creates;
        // About 40 cells in 4 s: three creates for every two polls while creates wait.
        assert!(seen.len() >= 38, "{} cells", seen.len());
        assert!(
            (14..=18).contains(&polls),
            "{creates} creates, {polls} polls"
        );
        assert!(creates > polls, "{creates} creates, {polls} polls");
        // Interleaved: C C P C P, never more than two creates or two polls in a row.
        let runs = seen
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap_or(0);
        assert!(runs <= 2, "{seen:?}");
        let (create_wait, poll_wait) = budget.waited_by_class();
        assert!(create_wait > Duration::ZERO && poll_wait > Duration::ZERO);
        for task in tasks {
            task.abort();
        }
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
