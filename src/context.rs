//! What every stage of the pipeline shares: settings, store, client, clock, and the
//! signals between the stages' tasks. Built by the daemon's wiring (`daemon.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

use crate::api::TentedClient;
use crate::clock::Clock;
use crate::schedule::JobKey;
use crate::settings::Settings;
use crate::store::Store;

/// What every stage of the pipeline shares.
pub struct Context {
    pub settings: Settings,
    pub store: Store,
    pub client: TentedClient,
    pub clock: Clock,
    /// Manifests that are not finished yet (their ids).
    pub active: Mutex<BTreeSet<u64>>,
    /// Wakes the submitter: a new manifest, a resume, a credit retry.
    pub wake_submitter: Notify,
    /// Admitted jobs for the poll scheduler.
    pub new_jobs: mpsc::UnboundedSender<JobKey>,
    /// Counts the main loop's progress (for the watchdog).
    pub progress: AtomicU64,
    /// True while the budget, not the floor, delays polls.
    pub budget_bound: AtomicBool,
    /// What the daemon has learned of how long generations take, per template (a copy of
    /// the store's, read at start and kept in step by reconciliation).
    pub generation_times: Mutex<std::collections::HashMap<String, crate::schedule::GenerationTimes>>,
    /// Serialises the writing of result files (not the store: other work goes on meanwhile).
    pub finishing: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn poll_floor_ms(&self) -> u64 {
        crate::clock::duration_ms(self.settings.poll.interval)
    }

    /// When a job of this template can first be expected to have finished (ms after admission).
    pub fn expected_generation_ms(&self, key: &str) -> Option<u64> {
        let times = self.generation_times.lock().unwrap_or_else(|p| p.into_inner());
        times.get(key).and_then(crate::schedule::GenerationTimes::expected_ms)
    }

    /// Keeps the in-memory copy in step with a sample the store recorded.
    pub fn learned_generation_times(&self, key: String, times: crate::schedule::GenerationTimes) {
        let mut all = self.generation_times.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(key, times);
    }

    pub fn mark_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub fn active_ids(&self) -> Vec<u64> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn set_active(&self, id: u64, active: bool) {
        let mut set = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }
}

