//! What every stage of the pipeline shares, built by the daemon's wiring (`daemon.rs`):
//! the settings, the store, the client, the clock and the metrics; the two things several
//! stages genuinely share (the manifests in flight, each template's proof for the slow
//! start); the daemon's health; and the sending ends of the stages' handoffs.
//!
//! What one stage owns stays with it ([`Owned`]): the submitter's nudges (and its ready
//! queue, timers and window), the poller's admitted jobs and learned generation times
//! (and its due-time queue). The others reach them only through narrow methods
//! ([`Context::nudge`], [`Context::nudge_all`], [`Context::poll_admitted`]), or, for
//! reconciliation, the poller's handle passed with each poll answer.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

use crate::api::TentedClient;
use crate::clock::Clock;
use crate::schedule::JobKey;
use crate::schedule::{Generations, TemplateProofs};
use crate::settings::Settings;
use crate::store::Store;

/// What every stage of the pipeline shares.
pub struct Context {
    pub settings: Settings,
    pub store: Store,
    /// Tented's client, with the request budget every call waits for.
    pub client: TentedClient,
    pub clock: Clock,
    /// The metrics observed as things happen (calls, poll lateness).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The manifests in flight, shared by every stage: intake and recovery add them, the
    /// outbox takes them out once their result is written, the sweeper reads their
    /// deadlines, the submitter, the poller and the status views their ids.
    pub active: Active,
    /// Each template's proof for the slow start, shared by three stages through
    /// `pipeline::policy`: judged after every answer (`policy::judge`: create answers in
    /// submission, poll answers in reconciliation), read by `policy::holds_back`
    /// (submission's plan, polling's first poll). The store keeps the proofs; this is
    /// their in-memory copy.
    pub proofs: TemplateProofs,
    /// The daemon's health (its folders, its progress, a store to open again), owned by
    /// its supervision in `daemon.rs`; the stages mark progress and ask for a reopen.
    pub health: crate::health::Health,
    /// The sending ends of what the stages hand the submitter and the poller.
    handoff: Handoff,
}

impl Context {
    /// A context over an opened store and client, with the receiving ends of its
    /// handoffs, for the tasks that own them.
    pub fn new(
        settings: Settings,
        store: Store,
        client: TentedClient,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        proofs: TemplateProofs,
        generations: Generations,
    ) -> (Context, Owned) {
        let (handoff, owned) = handoff(generations);
        let ctx = Context {
            settings,
            store,
            client,
            clock: Clock::new(),
            active: Active::default(),
            proofs,
            metrics,
            health: Default::default(),
            handoff,
        };
        (ctx, owned)
    }

    /// This manifest may have something to send now (for the submitter).
    pub fn nudge(&self, id: u64) {
        self.handoff.nudges.nudge(id);
    }

    /// Every manifest may have something to send now (a template became proven).
    pub fn nudge_all(&self) {
        self.handoff.nudges.nudge_all();
    }

    /// A job was admitted: the poller schedules it.
    pub fn poll_admitted(&self, job: JobKey) {
        // The poller is gone only once the pipeline stops; the job is found at the next start.
        let _ = self.handoff.admitted.send(job);
    }

    pub fn poll_floor_ms(&self) -> u64 {
        crate::clock::duration_ms(self.settings.poll.interval)
    }

    pub fn active_ids(&self) -> Vec<u64> {
        self.active.ids()
    }

    /// A manifest that is not finished: taken now, or found at start. The caller nudges
    /// the submitter once the manifest may be sent (intake: once its file is archived).
    pub fn activate(&self, manifest: &crate::store::ManifestRecord) {
        let max_wait = crate::clock::duration_ms(self.settings.poll.max_wait);
        self.active.insert(
            manifest.id,
            manifest.received_at_ms.saturating_add(max_wait),
        );
    }

    /// A manifest whose result is written.
    pub fn deactivate(&self, id: u64) {
        self.active.remove(id);
    }
}

/// The manifests in flight, from intake (or recovery) until the outbox has written their
/// result: indexed by the time each reaches `poll.max_wait` (so that the sweeper looks
/// only at those whose time has come), those whose result could not be written yet
/// (tried again by the sweeper), and the outbox's lock that lets one finisher at a time
/// take a manifest out.
#[derive(Default)]
pub struct Active {
    inner: Mutex<ActiveInner>,
    /// Serialises the writing of result files (not the store: other work goes on
    /// meanwhile), so that a poll and the sweeper never both write a result.
    finishing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct ActiveInner {
    deadline: std::collections::HashMap<u64, u64>,
    by_deadline: BTreeSet<(u64, u64)>,
    unwritten: BTreeSet<u64>,
}

impl Active {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActiveInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: u64, deadline_ms: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.deadline.insert(id, deadline_ms) {
            inner.by_deadline.remove(&(old, id));
        }
        inner.by_deadline.insert((deadline_ms, id));
    }

    /// Brings a manifest still active back into the deadline index at `at_ms` (one whose
    /// `poll.max_wait` passed but that is not finished yet: looked at again then); a
    /// manifest no longer active stays out.
    pub fn again_at(&self, id: u64, at_ms: u64) {
        let mut inner = self.lock();
        let Some(old) = inner.deadline.get(&id).copied() else {
            return;
        };
        inner.by_deadline.remove(&(old, id));
        inner.deadline.insert(id, at_ms);
        inner.by_deadline.insert((at_ms, id));
    }

    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.deadline.remove(&id) {
            inner.by_deadline.remove(&(old, id));
        }
        inner.unwritten.remove(&id);
    }

    /// Every unfinished manifest, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.lock().deadline.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.lock().deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the manifests whose `poll.max_wait` has come by `now_ms` out of the index
    /// (they stay active until their result is written).
    pub fn take_due(&self, now_ms: u64) -> Vec<u64> {
        let mut inner = self.lock();
        let later = inner.by_deadline.split_off(&(now_ms.saturating_add(1), 0));
        let due = std::mem::replace(&mut inner.by_deadline, later);
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Waits for the outbox's turn to finish a manifest (one finisher at a time).
    pub async fn finishing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.finishing.lock().await
    }

    /// A manifest whose result could not be written (it is tried again).
    pub fn result_unwritten(&self, id: u64) {
        let mut inner = self.lock();
        if inner.deadline.contains_key(&id) {
            inner.unwritten.insert(id);
        }
    }

    /// Takes the manifests whose result is still to be written.
    pub fn take_unwritten(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().unwritten)
            .into_iter()
            .collect()
    }
}

/// What the stages hand the tasks that act on it: the sending ends, which every stage
/// reaches through the context's methods ([`Context::nudge`], [`Context::nudge_all`],
/// [`Context::poll_admitted`]).
struct Handoff {
    nudges: std::sync::Arc<Nudges>,
    admitted: mpsc::UnboundedSender<JobKey>,
}

/// What the daemon hands the one task that owns each part: the receiving ends of the
/// handoffs (the submitter's nudges, the poller's admitted jobs) and the poller's learned
/// generation times.
pub struct Owned {
    pub nudges: NudgeReceiver,
    pub admitted: mpsc::UnboundedReceiver<JobKey>,
    pub generations: Generations,
}

fn handoff(generations: Generations) -> (Handoff, Owned) {
    let nudges = std::sync::Arc::new(Nudges::default());
    let (admitted, admitted_rx) = mpsc::unbounded_channel();
    let handoff = Handoff {
        nudges: std::sync::Arc::clone(&nudges),
        admitted,
    };
    let owned = Owned {
        nudges: NudgeReceiver(nudges),
        admitted: admitted_rx,
        generations,
    };
    (handoff, owned)
}

/// The manifests that may have something new to send (a new manifest, an answer, a
/// resume): the submitter looks at these, never at every manifest.
#[derive(Default)]
struct Nudges {
    ids: Mutex<(bool, BTreeSet<u64>)>,
    notify: Notify,
}

/// The submitter's end of the nudges.
pub struct NudgeReceiver(std::sync::Arc<Nudges>);

impl Nudges {
    /// This manifest may have something to send now.
    fn nudge(&self, id: u64) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .insert(id);
        self.notify.notify_one();
    }

    /// Every manifest may (a template became proven, the store was opened again).
    fn nudge_all(&self) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
        self.notify.notify_one();
    }
}

impl NudgeReceiver {
    /// Whether every manifest was nudged, and the manifests nudged since the last take.
    pub fn take(&self) -> (bool, BTreeSet<u64>) {
        std::mem::take(&mut *self.0.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves at the next nudge (or at once if one came since the last wait).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notify.notified()
    }
}
