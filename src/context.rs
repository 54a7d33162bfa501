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
    /// True while the budget, not the slots or the answers, delays creates.
    pub creates_budget_bound: AtomicBool,
    /// What the daemon has learned of how long generations take, per template (a copy of
    /// the store's, read at start and kept in step by reconciliation).
    pub generation_times:
        Mutex<std::collections::HashMap<String, crate::schedule::GenerationTimes>>,
    /// Admitted bulk jobs still running: their generation-times key and admission time.
    pub running_jobs: Mutex<std::collections::BTreeMap<JobKey, (String, u64)>>,
    /// Serialises the writing of result files (not the store: other work goes on meanwhile).
    pub finishing: tokio::sync::Mutex<()>,
    /// The metrics observed as things happen (calls, poll lateness).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The folders that cannot be written now (disk full, unwritable).
    pub storage: crate::health::StorageHealth,
    /// Cancelled when the store must be opened again (it cannot write although its
    /// folder has room again): the run stops its tasks and its caller starts a new one.
    pub reopen: tokio_util::sync::CancellationToken,
}

impl Context {
    pub fn poll_floor_ms(&self) -> u64 {
        crate::clock::duration_ms(self.settings.poll.interval)
    }

    /// When a job of this template admitted at `admitted_ms` can first be expected to have
    /// finished (ms after its admission): from what was learned of the template; before
    /// anything was, not before an older job of the template that is still running has
    /// finished (only the oldest probes at the floor, the younger wait for what it teaches).
    pub fn expected_generation_ms(&self, key: &str, job: JobKey, admitted_ms: u64) -> Option<u64> {
        let learned = {
            let times = self
                .generation_times
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            times
                .get(key)
                .and_then(|t| t.expected_ms(self.poll_floor_ms()))
        };
        if learned.is_some() {
            return learned;
        }
        let running = self.running_jobs.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = running
            .iter()
            .filter(|(other, (template, _))| **other != job && template == key)
            .map(|(_, (_, admitted))| *admitted)
            .min()?;
        (oldest < admitted_ms).then(|| self.clock.now_ms().saturating_sub(oldest))
    }

    /// A job was admitted (or found admitted at start): it runs until its items are final.
    pub fn job_running(&self, job: JobKey, key: String, admitted_ms: u64) {
        let mut running = self.running_jobs.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(job, (key, admitted_ms));
    }

    /// A job's items are all final.
    pub fn job_finished(&self, job: JobKey) {
        let mut running = self.running_jobs.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&job);
    }

    /// Keeps the in-memory copy in step with a sample the store recorded.
    pub fn learned_generation_times(&self, key: String, times: crate::schedule::GenerationTimes) {
        let mut all = self
            .generation_times
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
