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

