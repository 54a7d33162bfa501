//! Scheduling types and due times shared by the stages: which job, and when it may next
//! be polled (never under the floor, nor before a `Retry-After` has passed).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::Outcome;
use crate::state::job::{JobKind, JobRecord};

/// The longest backoff between two polls that got no usable answer.
pub const POLL_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A job is identified by its manifest and its sequence number in that manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub manifest_id: u64,
    pub seq: u32,
}

/// When a job may next be polled (wall ms). Pure, so it is tested directly.
///
/// `jitter_ms` is added only to backoff after failures, never below the floor.
pub fn next_poll_due_ms(job: &JobRecord, floor_ms: u64, jitter_ms: u64) -> u64 {
    let admitted = job.admission().map_or(job.sent_at_ms, |a| a.at_ms);
    let mut due = admitted.saturating_add(floor_ms);
    if let Some(last) = job.last_polled_at_ms {
        let gap = floor_ms.max(job.retry_after_ms.unwrap_or(0));
        let backoff = if job.poll_failures == 0 {
            0
        } else {
            let exp = floor_ms.saturating_mul(1u64 << (job.poll_failures - 1).min(16));
            exp.min(crate::clock::duration_ms(POLL_BACKOFF_MAX))
                .saturating_add(jitter_ms)
        };
        due = due.max(last.saturating_add(gap.max(backoff)));
    }
    due
}

/// The first poll of a job waits until the job can be expected to have finished, as
/// learned from the jobs of its template (never sooner than `due`, the floor's answer).
pub fn with_expectation(due: u64, job: &JobRecord, expected_ms: Option<u64>) -> u64 {
    match (job.last_polled_at_ms, job.admission(), expected_ms) {
        (None, Some(admission), Some(expected)) => {
            due.max(admission.at_ms.saturating_add(expected))
        }
        _ => due,
    }
}

/// How many recent job durations are kept per template.
pub const GENERATION_SAMPLES: usize = 16;

/// How long the recent bulk jobs of one template took, from admission to their last
/// item's final state (as Tented's own timestamps say): the daemon's memory of when a
/// new job of that template can first be expected to have finished. Kept in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationTimes {
    recent_ms: VecDeque<u64>,
}

impl GenerationTimes {
    pub fn record(&mut self, duration_ms: u64) {
        if self.recent_ms.len() == GENERATION_SAMPLES {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(duration_ms);
    }

    /// When a job can first be expected to have finished: nine in ten recent jobs of its
    /// template and size had by then. A job takes as long as its slowest item, so a job of
    /// 25 items takes longer, and more predictably, than one of 2: samples are kept per
    /// size class ([`times_key`]), and one poll per job is then enough nine times in ten
    /// (SPEC 7: about one poll per job). `None` until a job of the key has been seen.
    pub fn expected_ms(&self) -> Option<u64> {
        let mut sorted: Vec<u64> = self.recent_ms.iter().copied().collect();
        sorted.sort_unstable();
        let nine_in_ten = (sorted.len() * 9).div_ceil(10).checked_sub(1)?;
        sorted.get(nine_in_ten).copied()
    }
}

/// The key of a template (bulk), or of a kind (single creates and edits): what the slow
/// start's proof is kept by.
pub fn template_key(kind: crate::manifest::ManifestKind, template_id: Option<&str>) -> String {
    match (kind, template_id) {
        (crate::manifest::ManifestKind::Bulk, Some(template)) => template.to_string(),
        (kind, _) => format!("#{}", kind.as_str()),
    }
}

/// The key of a job's generation times: its template and its size class (1, 2, 4, 8, 16,
/// 32: the next power of two of its item count) for a bulk job, its kind otherwise.
pub fn times_key(
    kind: crate::manifest::ManifestKind,
    template_id: Option<&str>,
    items: usize,
) -> String {
    let key = template_key(kind, template_id);
    match kind {
        crate::manifest::ManifestKind::Bulk => {
            format!("{key}#{}", items.max(1).next_power_of_two().min(32))
        }
        _ => key,
    }
}

/// What a template has shown the failure threshold (SPEC 7, the slow start per
/// template): since when its items have been completing (without a gap of
/// `submit.proven_for`), when one last did, and whether the last of its manifests that
/// the threshold judged went over it. Kept in the store (`P`), so a restart keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateProof {
    pub proven_since_ms: Option<u64>,
    pub last_completed_at_ms: Option<u64>,
    pub tripped: bool,
}

impl TemplateProof {
    /// Whether a manifest received at `received_ms` starts with its window open: the
    /// template's items were completing before it arrived (its own successes prove
    /// nothing for it: they open its window by doubling), one completed within
    /// `proven_for_ms`, and its last judged manifest was under the threshold.
    pub fn proven_for_manifest(&self, received_ms: u64, now_ms: u64, proven_for_ms: u64) -> bool {
        self.proven(now_ms, proven_for_ms)
            && self
                .proven_since_ms
                .is_some_and(|since| since < received_ms)
    }

    /// Whether the template is proven now, for manifests that arrive from now on.
    pub fn proven(&self, now_ms: u64, proven_for_ms: u64) -> bool {
        !self.tripped
            && self
                .last_completed_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < proven_for_ms)
    }

    /// The proof after items completed at `now_ms`, if it is worth recording: a streak
    /// that had lapsed starts again; otherwise the time moves at most once per
    /// `proven_for / 60` (a minute for an hour), so that a busy template does not write
    /// its proof at every poll.
    pub fn completed(&self, now_ms: u64, proven_for_ms: u64) -> Option<TemplateProof> {
        if proven_for_ms == 0 {
            // "0s": no template is ever proven; nothing is worth a write.
            return None;
        }
        let lapsed = self
            .last_completed_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= proven_for_ms);
        if lapsed {
            return Some(TemplateProof {
                proven_since_ms: Some(now_ms),
                last_completed_at_ms: Some(now_ms),
                ..*self
            });
        }
        let step = (proven_for_ms / 60).max(1);
        match self.last_completed_at_ms {
            Some(at) if now_ms.saturating_sub(at) < step => None,
            _ => Some(TemplateProof {
                last_completed_at_ms: Some(now_ms),
                ..*self
            }),
        }
    }
}

/// A job whose first poll is being planned: [`Generations::expected_ms`].
pub struct ExpectedJob<'a> {
    pub key: JobKey,
    /// Its template's key ([`template_key`]).
    pub template: &'a str,
    /// Where its generation times may be learned, best first ([`times_keys_nearest`]).
    pub times_keys: &'a [String],
    pub admitted_ms: u64,
}

/// The keys whose generation times can stand for a job's: its own size class first, then
/// the template's larger classes, nearest first. Never a smaller class: a job takes as
/// long as its slowest item, so a smaller class's time is too short, and the first jobs to
/// finish are the small ones: borrowing theirs had every larger job polled early and then
/// again at every floor (in one run in three or four of the throughput bench's 100
/// manifests, 0.29 calls per item instead of 0.17). Without a larger class learned, the
/// job waits as an unlearned one does ([`Generations::expected_ms`]).
pub fn times_keys_nearest(
    kind: crate::manifest::ManifestKind,
    template_id: Option<&str>,
    items: usize,
) -> Vec<String> {
    if kind != crate::manifest::ManifestKind::Bulk {
        return vec![times_key(kind, template_id, items)];
    }
    let template = template_key(kind, template_id);
    let own = items.max(1).next_power_of_two().min(32).trailing_zeros();
    (own..=5)
        .map(|c| format!("{template}#{}", 1u64 << c))
        .collect()
}

/// What the poller knows of each template (its generation-times key) while it runs: the
/// learned generation times (a copy of the store's, kept in step by the poller with
/// what reconciliation records) and the bulk jobs still running, indexed so that no
/// lookup scans every job. Owned by the poller (`pipeline::polling::run`), which hands
/// it to each poll.
#[derive(Default)]
pub struct Generations {
    inner: std::sync::Mutex<GenerationsInner>,
}

#[derive(Default)]
struct GenerationsInner {
    times: HashMap<String, GenerationTimes>,
    /// Per template, its running jobs by admission time.
    running: HashMap<String, BTreeSet<(u64, JobKey)>>,
    /// Each running job's template and admission time.
    jobs: HashMap<JobKey, (String, u64)>,
}

impl Generations {
    pub fn new(times: HashMap<String, GenerationTimes>) -> Generations {
        Generations {
            inner: std::sync::Mutex::new(GenerationsInner {
                times,
                ..GenerationsInner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GenerationsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When a job admitted at `admitted_ms` can first be expected to have finished (ms
    /// after its admission): from what was learned of its size class, or failing that of
    /// the template's nearest class ([`times_keys_nearest`]); before anything was, not
    /// before an older job of the template that is still running has finished (only the
    /// oldest probes at the floor; a younger one is looked at again a floor later, and
    /// then uses what the oldest taught).
    pub fn expected_ms(&self, job: &ExpectedJob<'_>, now_ms: u64, floor_ms: u64) -> Option<u64> {
        let inner = self.lock();
        for key in job.times_keys {
            if let Some(learned) = inner.times.get(key).and_then(GenerationTimes::expected_ms) {
                return Some(learned);
            }
        }
        let (oldest, _) = inner
            .running
            .get(job.template)?
            .iter()
            .find(|(_, other)| *other != job.key)?;
        (*oldest < job.admitted_ms).then(|| {
            now_ms
                .saturating_sub(job.admitted_ms)
                .saturating_add(floor_ms)
        })
    }

    /// A job was admitted (or found admitted at start): it runs until its items are final.
    pub fn job_running(&self, job: JobKey, key: &str, admitted_ms: u64) {
        let mut inner = self.lock();
        if inner.jobs.contains_key(&job) {
            return;
        }
        inner.jobs.insert(job, (key.to_string(), admitted_ms));
        inner
            .running
            .entry(key.to_string())
            .or_default()
            .insert((admitted_ms, job));
    }

    /// A job's items are all final.
    pub fn job_finished(&self, job: JobKey) {
        let mut inner = self.lock();
        let Some((key, admitted)) = inner.jobs.remove(&job) else {
            return;
        };
        if let Some(running) = inner.running.get_mut(&key) {
            running.remove(&(admitted, job));
            if running.is_empty() {
                inner.running.remove(&key);
            }
        }
    }

    /// Keeps the in-memory copy in step with times the store recorded.
    pub fn learned(&self, key: String, times: GenerationTimes) {
        self.lock().times.insert(key, times);
    }

    /// Bulk jobs running now (for tests and the status line).
    pub fn running_jobs(&self) -> usize {
        self.lock().jobs.len()
    }
}

/// Each template's proof for the slow start (a copy of the store's `P` records, kept in
/// step by `pipeline::policy::judge`, the one writer; read by `policy::proven`).
#[derive(Default)]
pub struct TemplateProofs {
    proofs: std::sync::Mutex<HashMap<String, TemplateProof>>,
}

impl TemplateProofs {
    pub fn new(proofs: HashMap<String, TemplateProof>) -> TemplateProofs {
        TemplateProofs {
            proofs: std::sync::Mutex::new(proofs),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TemplateProof>> {
        self.proofs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn proof(&self, key: &str) -> TemplateProof {
        self.lock().get(key).copied().unwrap_or_default()
    }

    /// Keeps the in-memory copy in step with a proof the store records.
    pub fn set_proof(&self, key: &str, proof: TemplateProof) {
        self.lock().insert(key.to_string(), proof);
    }
}

/// The last poll of one tent, whichever job or fetch made it (version 1): the floor is
/// per tent, and one tent can be polled by a create job, edit jobs and detail fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TentPollRecord {
    pub last_polled_at_ms: u64,
    pub retry_after_ms: Option<u64>,
}

impl TentPollRecord {
    /// When the tent may be polled again.
    pub fn next_due_ms(&self, floor_ms: u64) -> u64 {
        self.last_polled_at_ms
            .saturating_add(floor_ms.max(self.retry_after_ms.unwrap_or(0)))
    }
}

/// What became of one poll.
#[derive(Debug, PartialEq, Eq)]
pub enum PollResult {
    /// Poll again at this wall time (ms).
    Again(u64),
    /// Every item of the job is final.
    Done,
}

/// When a job may be polled: its own floor and, for a tent, the tent's (another job or a
/// detail fetch may have polled the same tent).
pub fn job_due_ms(job: &JobRecord, tent: Option<TentPollRecord>, floor: u64) -> u64 {
    let own = next_poll_due_ms(job, floor, 0);
    match (job.kind, tent) {
        (JobKind::Create | JobKind::Edit, Some(tent)) => own.max(tent.next_due_ms(floor)),
        _ => own,
    }
}

/// The retry delay a failed poll asks for, never below the floor.
pub fn retry_after_ms<T>(outcome: &Outcome<T>) -> Option<u64> {
    match outcome {
        Outcome::Success { retry_after, .. } | Outcome::Refused { retry_after, .. } => {
            retry_after.map(crate::clock::duration_ms)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_poll_waits_for_the_expected_end_but_never_comes_before_the_floor() {
        let mut j = job(1_000);
        assert_eq!(with_expectation(11_000, &j, Some(30_000)), 31_000);
        assert_eq!(
            with_expectation(11_000, &j, Some(2_000)),
            11_000,
            "never under the floor"
        );
        assert_eq!(with_expectation(11_000, &j, None), 11_000);
        j.last_polled_at_ms = Some(40_000);
        assert_eq!(
            with_expectation(50_000, &j, Some(90_000)),
            50_000,
            "later polls keep the floor"
        );
    }

    #[test]
    fn generation_times_expect_nine_in_ten_and_forget_old_ones() {
        let mut times = GenerationTimes::default();
        assert_eq!(times.expected_ms(), None);
        times.record(9_000);
        assert_eq!(times.expected_ms(), Some(9_000));
        times.record(7_000);
        // Nine in ten of two: both.
        assert_eq!(times.expected_ms(), Some(9_000));
        for ms in [7_000, 7_200, 7_400, 7_600, 7_800, 8_000, 8_200, 8_400] {
            times.record(ms);
        }
        // 7.0, 7.0, 7.2, 7.4, 7.6, 7.8, 8.0, 8.2, 8.4, 9.0: the ninth of ten.
        assert_eq!(times.expected_ms(), Some(8_400));
        for _ in 0..GENERATION_SAMPLES {
            times.record(20_000);
        }
        assert_eq!(
            times.expected_ms(),
            Some(20_000),
            "the old samples are gone"
        );
        let stored = bincode::serialize(&times).expect("bincode");
        assert_eq!(
            bincode::deserialize::<GenerationTimes>(&stored).expect("back"),
            times
        );
    }

    #[test]
    fn a_template_proves_itself_for_the_manifests_that_arrive_after_its_completions() {
        let hour = 3_600_000;
        let none = TemplateProof::default();
        assert!(!none.proven(0, hour));
        let proof = none.completed(10_000, hour).expect("a first completion");
        assert_eq!(proof.proven_since_ms, Some(10_000));
        // The manifest whose item completed is not proven by it; a later one is.
        assert!(!proof.proven_for_manifest(5_000, 20_000, hour));
        assert!(proof.proven_for_manifest(15_000, 20_000, hour));
        // Within a minute of the last one, nothing worth writing; later, the time moves
        // and the streak keeps its start.
        assert_eq!(proof.completed(30_000, hour), None);
        let later = proof.completed(200_000, hour).expect("moved");
        assert_eq!(later.proven_since_ms, Some(10_000));
        // An hour without a completion: not proven; the next completion starts again.
        assert!(!later.proven_for_manifest(300_000, 200_000 + hour, hour));
        let again = later.completed(200_000 + hour, hour).expect("again");
        assert_eq!(again.proven_since_ms, Some(200_000 + hour));
        // A tripped template proves nothing; "0s" proves nothing.
        let tripped = TemplateProof {
            tripped: true,
            ..proof
        };
        assert!(!tripped.proven_for_manifest(15_000, 20_000, hour));
        assert!(!proof.proven_for_manifest(15_000, 20_000, 0));
        assert_eq!(none.completed(10_000, 0), None, "\"0s\" writes nothing");
    }

    #[test]
    fn a_class_not_learned_yet_borrows_the_nearest_larger_one_never_a_smaller() {
        use crate::manifest::ManifestKind::*;
        assert_eq!(
            times_keys_nearest(Bulk, Some("t"), 3),
            ["t#4", "t#8", "t#16", "t#32"]
        );
        assert_eq!(times_keys_nearest(Bulk, Some("t"), 30), ["t#32"]);
        assert_eq!(times_keys_nearest(Create, None, 1), ["#create"]);
        let templates = Generations::default();
        let keys = times_keys_nearest(Bulk, Some("t"), 3);
        let job = |seq, admitted_ms| ExpectedJob {
            key: JobKey {
                manifest_id: 1,
                seq,
            },
            template: "t",
            times_keys: &keys,
            admitted_ms,
        };
        templates.job_running(job(0, 1_000).key, "t", 1_000);
        templates.job_running(job(1, 1_050).key, "t", 1_050);
        // Nothing learned: the oldest probes at the floor, the younger is looked at again
        // a floor from now (not at once, again and again).
        assert_eq!(templates.expected_ms(&job(0, 1_000), 5_000, 1_000), None);
        assert_eq!(
            templates.expected_ms(&job(1, 1_050), 5_000, 1_000),
            Some(4_950)
        );
        // Learned for 2-item jobs only: a 3-item job does not take it (it would be polled
        // too early), and still waits for the oldest.
        let mut short = GenerationTimes::default();
        short.record(2_000);
        templates.learned("t#2".into(), short);
        assert_eq!(
            templates.expected_ms(&job(1, 1_050), 5_000, 1_000),
            Some(4_950)
        );
        // Learned for 16-item jobs: a 3-item job borrows it.
        let mut times = GenerationTimes::default();
        times.record(7_000);
        templates.learned("t#16".into(), times);
        assert_eq!(
            templates.expected_ms(&job(1, 1_050), 5_000, 1_000),
            Some(7_000)
        );
    }

    #[test]
    fn jobs_are_timed_by_template_and_size_class() {
        use crate::manifest::ManifestKind::*;
        assert_eq!(times_key(Bulk, Some("tpl"), 1), "tpl#1");
        assert_eq!(times_key(Bulk, Some("tpl"), 3), "tpl#4");
        assert_eq!(times_key(Bulk, Some("tpl"), 16), "tpl#16");
        assert_eq!(times_key(Bulk, Some("tpl"), 25), "tpl#32");
        assert_eq!(times_key(Create, None, 1), "#create");
        assert_eq!(template_key(Bulk, Some("tpl")), "tpl");
        assert_eq!(template_key(Edit, None), "#edit");
    }

    fn job(admitted: u64) -> JobRecord {
        JobRecord::admitted_for_test(1, 0, JobKind::Bulk, admitted)
    }

    #[test]
    fn first_poll_comes_a_floor_after_admission() {
        assert_eq!(next_poll_due_ms(&job(1_000), 10_000, 0), 11_000);
    }

    #[test]
    fn later_polls_keep_the_floor_and_honour_a_longer_retry_after() {
        let mut j = job(1_000);
        j.last_polled_at_ms = Some(20_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 30_000);
        j.retry_after_ms = Some(25_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 45_000);
        // A shorter Retry-After never goes below the floor.
        j.retry_after_ms = Some(1_000);
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 30_000);
    }

    #[test]
    fn failures_back_off_exponentially_but_are_capped() {
        let mut j = job(0);
        j.last_polled_at_ms = Some(100_000);
        j.poll_failures = 1;
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 110_000);
        j.poll_failures = 3;
        assert_eq!(next_poll_due_ms(&j, 10_000, 7), 140_007);
        j.poll_failures = 40;
        assert_eq!(next_poll_due_ms(&j, 10_000, 0), 100_000 + 600_000);
    }
}
