//! Time for the pipeline: wall-clock milliseconds, read through tokio's clock.
//!
//! Persisted times (admission, last poll) are wall-clock milliseconds so that they mean
//! something across restarts. Within a process they advance with tokio's monotonic clock
//! from an anchor taken at start, so that `tokio::time::pause()` moves them in tests and a
//! wall-clock step backwards cannot shorten the floor between two polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub struct Clock {
    anchor_wall_ms: u64,
    anchor: tokio::time::Instant,
    /// Time added by [`Clock::skip`] (tests that must cross long deadlines over real HTTP).
    skipped_ms: Arc<AtomicU64>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock::starting_at(wall_now_ms())
    }

    /// A clock whose "now" starts at the given wall time (tests).
    pub fn starting_at(wall_ms: u64) -> Clock {
        Clock {
            anchor_wall_ms: wall_ms,
            anchor: tokio::time::Instant::now(),
            skipped_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves this clock's "now" forward (persisted times are then that much older). Used
    /// by tests to cross deadlines of minutes, such as the 404 limit, without waiting.
    pub fn skip(&self, by: Duration) {
        self.skipped_ms
            .fetch_add(duration_ms(by), Ordering::Relaxed);
    }

    /// Milliseconds since the UNIX epoch.
    pub fn now_ms(&self) -> u64 {
        self.anchor_wall_ms
            + self.anchor.elapsed().as_millis() as u64
            + self.skipped_ms.load(Ordering::Relaxed)
    }

    /// The tokio instant at which the wall time `at_ms` comes (now, if it is past).
    pub fn instant_at(&self, at_ms: u64) -> tokio::time::Instant {
        let now_ms = self.now_ms();
        // Capped at a year ahead: far enough for any deadline here, and free of overflow.
        let ahead = at_ms.saturating_sub(now_ms).min(365 * 24 * 3600 * 1000);
        tokio::time::Instant::now() + Duration::from_millis(ahead)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-03-25T14:30:00Z`, the form of the result files.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
