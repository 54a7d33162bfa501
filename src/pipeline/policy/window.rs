//! How many create requests to keep on the wire (SPEC section 7): as many as the budget
//! and the admission time need, by Little's law (requests on the wire = rate × time on
//! the wire): the budget's rate (creates may have all of it while no poll waits) times
//! a recent high percentile of the admission time, rounded up, at least 1, at most
//! `submit.max_in_flight`. That cap is also the most requests a crash can leave
//! `unknown`. The poller sizes its polls under way the same way (a poll's time, up to
//! `polling::MAX_CONCURRENT_POLLS`). Submission and polling each keep one.

use std::collections::VecDeque;
use std::time::Duration;

/// How many recent admission times the window follows.
pub const ADMISSION_SAMPLES: usize = 32;

/// The admission time assumed before any was measured.
pub const ASSUMED_ADMISSION: Duration = Duration::from_secs(1);

/// The create window: recent admission times and what they imply.
#[derive(Debug)]
pub struct Window {
    requests_per_second: f64,
    cap: usize,
    recent: VecDeque<Duration>,
}

impl Window {
    pub fn new(requests_per_second: u32, max_in_flight: u32) -> Window {
        Window {
            requests_per_second: f64::from(requests_per_second.max(1)),
            cap: max_in_flight.max(1) as usize,
            recent: VecDeque::with_capacity(ADMISSION_SAMPLES),
        }
    }

    /// A request's answer came (and was recorded) this long after it left.
    pub fn admitted_in(&mut self, took: Duration) {
        if self.recent.len() == ADMISSION_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
    }

    /// A recent high percentile (nine in ten) of the admission time.
    pub fn admission_time(&self) -> Duration {
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        if sorted.is_empty() {
            return ASSUMED_ADMISSION;
        }
        sorted.sort_unstable();
        sorted[(sorted.len() * 9).div_ceil(10).saturating_sub(1)]
    }

    /// How many create requests may be on the wire now.
    pub fn size(&self) -> usize {
        let needed = (self.requests_per_second * self.admission_time().as_secs_f64()).ceil();
        (needed as usize).clamp(1, self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_after(rps: u32, cap: u32, ms: &[u64]) -> Window {
        let mut window = Window::new(rps, cap);
        for took in ms {
            window.admitted_in(Duration::from_millis(*took));
        }
        window
    }

    #[test]
    fn the_window_is_the_budget_times_the_admission_time() {
        // 50 a second, answered in 0.2 s: 10 on the wire keep the budget busy.
        assert_eq!(window_after(50, 16, &[200; 10]).size(), 10);
        // Answered in 1.1 s at 5 a second: 6 (rounded up).
        assert_eq!(window_after(5, 16, &[1_100; 10]).size(), 6);
        // Fast answers: at least one.
        assert_eq!(window_after(5, 16, &[10; 10]).size(), 1);
        // Slow answers: never more than the cap.
        assert_eq!(window_after(50, 16, &[2_000; 10]).size(), 16);
    }

    #[test]
    fn a_high_percentile_counts_and_old_samples_are_forgotten() {
        // One slow answer in ten does not set it: nine in ten came within 0.1 s.
        let mut ms = vec![100; 9];
        ms.push(400);
        assert_eq!(window_after(50, 16, &ms).size(), 5);
        // Two slow answers in ten: the slow ones set it (20, capped at 16).
        ms[0] = 400;
        assert_eq!(window_after(50, 16, &ms).size(), 16);
        // The slow answers leave the window after ADMISSION_SAMPLES fast ones.
        let mut window = window_after(50, 16, &ms);
        for _ in 0..ADMISSION_SAMPLES {
            window.admitted_in(Duration::from_millis(100));
        }
        assert_eq!(window.size(), 5);
    }

    #[test]
    fn before_any_answer_one_second_is_assumed() {
        assert_eq!(Window::new(5, 16).size(), 5);
        assert_eq!(Window::new(200, 16).size(), 16);
        assert_eq!(Window::new(1, 16).size(), 1);
    }
}
