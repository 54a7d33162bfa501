//! The calls to Tented per second over the last hour, creates and polls apart, for the
//! status page's plot: a ring of 3,600 one-second slots, written as each call ends.
//! Fixed size (about 56 KiB: 3,600 slots of 16 bytes), whatever the daemon does; nothing is kept across restarts.

use std::sync::Mutex;
use std::time::Instant;

/// Seconds kept.
pub const WINDOW_SECS: usize = 3600;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Slot {
    /// The second (since the ring began) this slot counts; a slot of an older second is
    /// stale and reads as zero.
    second: u64,
    creates: u32,
    polls: u32,
}

/// Calls per second, creates and polls, over the last [`WINDOW_SECS`].
#[derive(Debug)]
pub struct CallRates {
    started: Instant,
    slots: Mutex<Vec<Slot>>,
}

impl Default for CallRates {
    fn default() -> Self {
        CallRates::new(Instant::now())
    }
}

/// One point of the plot: the mean calls per second over `bucket` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatePoint {
    /// Seconds before now at which the bucket ends (0 = the latest).
    pub ago_secs: u64,
    pub creates_per_sec: f64,
    pub polls_per_sec: f64,
}

impl CallRates {
    pub fn new(started: Instant) -> CallRates {
        CallRates {
            started,
            slots: Mutex::new(vec![Slot::default(); WINDOW_SECS]),
        }
    }

    fn second_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() + 1
    }

    /// A call left at `at`: a create (it spends credits) or a poll.
    pub fn record(&self, at: Instant, create: bool) {
        let second = self.second_at(at);
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = &mut slots[(second as usize) % WINDOW_SECS];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        if create {
            slot.creates = slot.creates.saturating_add(1);
        } else {
            slot.polls = slot.polls.saturating_add(1);
        }
    }

    /// The last hour up to `now`, in buckets of `bucket_secs` (oldest first): the mean
    /// calls per second of each kind in each bucket. The second under way is left out.
    pub fn series(&self, now: Instant, bucket_secs: u64) -> Vec<RatePoint> {
        let bucket_secs = bucket_secs.clamp(1, WINDOW_SECS as u64);
        let latest = self.second_at(now).saturating_sub(1);
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let buckets = WINDOW_SECS as u64 / bucket_secs;
        (0..buckets)
            .rev()
            .map(|b| {
                let (mut creates, mut polls) = (0u64, 0u64);
                for offset in 0..bucket_secs {
                    let Some(second) = latest.checked_sub(b * bucket_secs + offset) else {
                        break;
                    };
                    let slot = slots[(second as usize) % WINDOW_SECS];
                    if slot.second == second && second > 0 {
                        creates += u64::from(slot.creates);
                        polls += u64::from(slot.polls);
                    }
                }
                RatePoint {
                    ago_secs: b * bucket_secs,
                    creates_per_sec: creates as f64 / bucket_secs as f64,
                    polls_per_sec: polls as f64 / bucket_secs as f64,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calls_land_in_their_minute_and_an_hour_later_they_are_gone() {
        let start = Instant::now();
        let rates = CallRates::new(start);
        // 120 creates and 60 polls in the first minute.
        for s in 0..60 {
            let at = start + Duration::from_secs(s);
            rates.record(at, true);
            rates.record(at, true);
            rates.record(at, false);
        }
        let now = start + Duration::from_secs(61);
        let series = rates.series(now, 60);
        assert_eq!(series.len(), 60);
        let latest = series.last().copied().expect("a point");
        assert_eq!(latest.ago_secs, 0);
        let total_creates: f64 = series.iter().map(|p| p.creates_per_sec * 60.0).sum();
        let total_polls: f64 = series.iter().map(|p| p.polls_per_sec * 60.0).sum();
        assert!((total_creates - 120.0).abs() < 1e-9, "{total_creates}");
        assert!((total_polls - 60.0).abs() < 1e-9, "{total_polls}");
        // An hour and more later the ring has moved on: the old calls read as zero.
        let later = start + Duration::from_secs(2 * WINDOW_SECS as u64);
        rates.record(later, false);
        let series = rates.series(later + Duration::from_secs(1), 60);
        let creates: f64 = series.iter().map(|p| p.creates_per_sec).sum();
        let polls: f64 = series.iter().map(|p| p.polls_per_sec * 60.0).sum();
        assert_eq!(creates, 0.0);
        assert!((polls - 1.0).abs() < 1e-9, "{polls}");
    }
}
