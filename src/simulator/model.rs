//! The simulator's state: tents and their generations, bulk jobs, credits and alias
//! owners. Outcomes (durations, failure, publication) are drawn when a generation is
//! admitted; the lifecycle is computed from timestamps whenever it is read.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use ulid::Ulid;
use uuid::Uuid;

use crate::simulator::{FaultRates, SimConfig, SimError};

/// The workspace's publishing domain.
pub(crate) const WORKSPACE_URL: &str = "https://sim-workspace.tented-pages.com";
/// The organisation id used in result `s3Key`s.
const ORG_ID: &str = "sim-org";
pub(crate) const GENERATION_FAILED: &str = "Upstream generation failed.";
const ALIAS_UNAVAILABLE_CODE: &str = "CUSTOM_PAGE_ALIAS_UNAVAILABLE";
const ALIAS_UNAVAILABLE_MESSAGE: &str =
    "Requested alias is already in use. Published using default tent URL.";
const PUBLISH_LIMIT_CODE: &str = "PUBLISH_LIMIT_EXCEEDED";
const PUBLISH_LIMIT_MESSAGE: &str =
    "Free users can only have 1 published tent. Upgrade to publish more.";

/// An HTTP error answer decided by the model.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl ApiError {
    pub(crate) fn new(status: u16, body: Value) -> Self {
        ApiError { status, body }
    }
}

/// The endpoints that take fault knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    BulkCreate,
    BulkStatus,
    Create,
    Edit,
    TentStatus,
}

/// A fault chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    TooManyRequests { retry_after: Option<u64> },
    Internal,
    Unavailable,
    DropBefore,
    DropAfter,
    Hang,
}

impl Fault {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fault::TooManyRequests { .. } => "429",
            Fault::Internal => "500",
            Fault::Unavailable => "503",
            Fault::DropBefore => "drop_before",
            Fault::DropAfter => "drop_after",
            Fault::Hang => "hang",
        }
    }
}

/// A bulk item after the handler's per-item validation.
pub(crate) struct BulkCandidate {
    pub(crate) index: usize,
    pub(crate) client_item_id: Option<String>,
    pub(crate) verdict: Result<CandidateItem, Rejection>,
}

pub(crate) struct CandidateItem {
    pub(crate) tent_name: String,
    pub(crate) custom_page_alias: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Rejection {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) struct BulkRequest {
    pub(crate) template_id: String,
    pub(crate) auto_publish: bool,
    pub(crate) metadata: Option<Value>,
    pub(crate) items: Vec<BulkCandidate>,
}

pub(crate) struct CreateRequest {
    pub(crate) auto_publish: bool,
    pub(crate) custom_page_alias: Option<String>,
    pub(crate) tent_id: Option<Uuid>,
    pub(crate) asset_ids: Vec<String>,
}

pub(crate) struct EditRequest {
    pub(crate) auto_publish: bool,
    pub(crate) custom_page_alias: Option<String>,
    pub(crate) asset_ids: Vec<String>,
}

/// An asset id exists when it begins with this prefix.
pub(crate) fn asset_exists(asset_id: &str) -> bool {
    asset_id.starts_with("asset_")
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

struct Tent {
    created_wall: SystemTime,
    /// Every generation, oldest first; the last one is the current one.
    generations: Vec<Generation>,
}

struct Generation {
    id: Ulid,
    admitted: Instant,
    admitted_wall: SystemTime,
    queue: Duration,
    generation: Duration,
    succeeds: bool,
    /// Present when this generation asked for auto-publish.
    publication: Option<PublicationPlan>,
}

struct PublicationPlan {
    requested_alias: Option<String>,
    delay: Duration,
    outcome: PublishOutcome,
}

enum PublishOutcome {
    Published { applied_alias: Option<String> },
    AliasUnavailable,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    Generating,
    Completed,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Generating => "generating",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }
}

impl Generation {
    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.admitted)
    }

    fn finished_after(&self) -> Duration {
        self.queue + self.generation
    }

    fn phase(&self, now: Instant) -> Phase {
        let elapsed = self.elapsed(now);
        if elapsed < self.queue {
            Phase::Queued
        } else if elapsed < self.finished_after() {
            Phase::Generating
        } else if self.succeeds {
            Phase::Completed
        } else {
            Phase::Failed
        }
    }

    /// The publication, once it exists: from the moment generation completes.
    fn publication(&self, now: Instant) -> Option<(&PublicationPlan, bool)> {
        let plan = self.publication.as_ref()?;
        if self.phase(now) != Phase::Completed {
            return None;
        }
        let pending = self.elapsed(now) < self.finished_after() + plan.delay;
        Some((plan, pending))
    }

    /// True while generating or while the publication is pending.
    fn in_progress(&self, now: Instant) -> bool {
        matches!(self.phase(now), Phase::Queued | Phase::Generating)
            || self.publication(now).is_some_and(|(_, pending)| pending)
    }

    /// Wall time of the last transition reached by `now`.
    fn updated_wall(&self, now: Instant) -> SystemTime {
        let elapsed = self.elapsed(now);
        let mut transitions = vec![self.queue, self.finished_after()];
        if let (true, Some(plan)) = (self.succeeds, &self.publication) {
            transitions.push(self.finished_after() + plan.delay);
        }
        let last = transitions
            .into_iter()
            .filter(|t| *t <= elapsed)
            .max()
            .unwrap_or(Duration::ZERO);
        self.admitted_wall + last
    }
}

struct BulkJob {
    template_id: String,
    auto_publish: bool,
    metadata: Option<Value>,
    created_wall: SystemTime,
    charged: u64,
    items: Vec<JobItem>,
}

struct JobItem {
    index: usize,
    client_item_id: Option<String>,
    admission: Admission,
}

enum Admission {
    Accepted {
        tent_id: Uuid,
        generation_id: Ulid,
        tent_name: String,
    },
    Rejected(Rejection),
}

impl JobItem {
    fn is_accepted(&self) -> bool {
        matches!(self.admission, Admission::Accepted { .. })
    }
}

pub(crate) struct Model {
    pub(crate) config: SimConfig,
    rng: StdRng,
    tents: HashMap<Uuid, Tent>,
    jobs: HashMap<String, BulkJob>,
    /// Aliases applied (or about to be applied) by a successful publication, and to which tent.
    alias_owners: HashMap<String, Uuid>,
}

impl Model {
    pub(crate) fn new(config: SimConfig) -> Result<Model, SimError> {
        let started_wall = SystemTime::now();
        let mut tents = HashMap::new();
        for id in &config.idle_tents {
            let uuid = Uuid::parse_str(id).map_err(|_| {
                SimError::InvalidConfig(format!("idle tent id {id:?} is not a uuid"))
            })?;
            tents.insert(
                uuid,
                Tent {
                    created_wall: started_wall,
                    generations: Vec::new(),
                },
            );
        }
        for (name, (lo, hi)) in [
            ("latency", config.latency),
            ("queue_time", config.queue_time),
            ("generation_time", config.generation_time),
            ("publish_time", config.publish_time),
        ] {
            if lo > hi {
                return Err(SimError::InvalidConfig(format!(
                    "{name}: minimum {lo:?} is above maximum {hi:?}"
                )));
            }
        }
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Model {
            config,
            rng,
            tents,
            jobs: HashMap::new(),
            alias_owners: HashMap::new(),
        })
    }

    // ---- knobs -------------------------------------------------------------------

    fn draw(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        if hi <= lo {
            return lo;
        }
        let nanos = self.rng.random_range(lo.as_nanos()..=hi.as_nanos());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    pub(crate) fn draw_latency(&mut self) -> Duration {
        self.draw(self.config.latency)
    }

    pub(crate) fn roll_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let faults = &self.config.errors;
        let rates: FaultRates = match endpoint {
            Endpoint::BulkCreate => faults.bulk_create.clone(),
            Endpoint::BulkStatus => faults.bulk_status.clone(),
            Endpoint::Create => faults.create.clone(),
            Endpoint::Edit => faults.edit.clone(),
            Endpoint::TentStatus => faults.tent_status.clone(),
        };
        let table = [
            (
                rates.rate_429,
                Fault::TooManyRequests {
                    retry_after: rates.retry_after_429,
                },
            ),
            (rates.rate_500, Fault::Internal),
            (rates.rate_503, Fault::Unavailable),
            (rates.drop_before_rate, Fault::DropBefore),
            (rates.drop_after_rate, Fault::DropAfter),
            (rates.hang_rate, Fault::Hang),
        ];
        if table.iter().all(|(rate, _)| *rate <= 0.0) {
            return None;
        }
        let x: f64 = self.rng.random();
        let mut cumulative = 0.0;
        for (rate, fault) in table {
            cumulative += rate.max(0.0);
            if x < cumulative {
                return Some(fault);
            }
        }
        None
    }

    pub(crate) fn template_exists(&self, template_id: &str) -> bool {
        if self.config.templates.is_empty() {
            template_id.starts_with("tpl_")
        } else {
            self.config.templates.iter().any(|t| t == template_id)
        }
    }

    /// Takes one credit; false when the balance is exhausted.
    fn try_charge(&mut self) -> bool {
        if !has_credit(self.config.credits) {
            return false;
        }
        self.take_credit();
        true
    }

    /// Takes one credit from a limited balance; an unlimited balance stays unlimited.
    /// Callers check `has_credit` first; an exhausted balance stays at zero.
    fn take_credit(&mut self) {
        if let Some(n) = self.config.credits.as_mut() {
            *n = n.saturating_sub(1);
        }
    }

    fn new_uuid(&mut self) -> Uuid {
        loop {
            let id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
            if !self.tents.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_ulid(&mut self, wall: SystemTime) -> Ulid {
        let ms = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ulid::from_parts(ms, self.rng.random())
    }

    /// Draws the fate of a new generation of `tent_id` and claims its alias if it will
    /// be applied. The first admitted tent that will publish with an alias owns it.
    fn new_generation(
        &mut self,
        tent_id: Uuid,
        auto_publish: bool,
        requested_alias: Option<String>,
        now: Instant,
        wall: SystemTime,
    ) -> Generation {
        let queue = self.draw(self.config.queue_time);
        let generation = self.draw(self.config.generation_time);
        let succeeds = !self.chance(self.config.failure_rate);
        let publication = if auto_publish {
            let delay = self.draw(self.config.publish_time);
            let outcome = if !succeeds {
                // Never published: the plan is kept only to echo the request.
                PublishOutcome::Failed
            } else if self.chance(self.config.publish_failure_rate) {
                PublishOutcome::Failed
            } else {
                match &requested_alias {
                    None => PublishOutcome::Published {
                        applied_alias: None,
                    },
                    Some(alias) => {
                        let taken = self.config.taken_aliases.iter().any(|a| a == alias)
                            || self
                                .alias_owners
                                .get(alias)
                                .is_some_and(|owner| *owner != tent_id);
                        if taken {
                            PublishOutcome::AliasUnavailable
                        } else {
                            self.alias_owners.insert(alias.clone(), tent_id);
                            PublishOutcome::Published {
                                applied_alias: Some(alias.clone()),
                            }
                        }
                    }
                }
            };
            Some(PublicationPlan {
                requested_alias,
                delay,
                outcome,
            })
        } else {
            None
        };
        Generation {
            id: self.new_ulid(wall),
            admitted: now,
            admitted_wall: wall,
            queue,
            generation,
            succeeds,
            publication,
        }
    }

    // ---- POST /v1/tents/bulk -----------------------------------------------------

    /// Admits a bulk request: each item is judged in order, then its verdict is applied
    /// (an admitted item takes a credit and becomes a tent), and the job is kept for
    /// GET /v1/bulk-jobs/{id}. Random draws happen in this order: the job id, then for
    /// each admitted item its tent id and its generation.
    pub(crate) fn admit_bulk(
        &mut self,
        request: BulkRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Value {
        let job_id = self.new_ulid(wall).to_string();
        let mut items = Vec::with_capacity(request.items.len());
        let mut answers = Vec::with_capacity(request.items.len());
        for candidate in request.items {
            let mut answer = item_head(candidate.index, candidate.client_item_id.as_deref());
            let admission = match judge_item(candidate.verdict, self.config.credits) {
                ItemVerdict::Admit(item) => {
                    self.take_credit();
                    let (tent_id, generation_id) =
                        self.admit_tent(&item, request.auto_publish, now, wall);
                    insert_acceptance(&mut answer, tent_id, &item);
                    Admission::Accepted {
                        tent_id,
                        generation_id,
                        tent_name: item.tent_name,
                    }
                }
                ItemVerdict::Reject(rejection) => {
                    insert_rejection(&mut answer, &rejection);
                    Admission::Rejected(rejection)
                }
            };
            answers.push(Value::Object(answer));
            items.push(JobItem {
                index: candidate.index,
                client_item_id: candidate.client_item_id,
                admission,
            });
        }
        let charged = items.iter().filter(|item| item.is_accepted()).count() as u64;
        let job = BulkJob {
            template_id: request.template_id,
            auto_publish: request.auto_publish,
            metadata: request.metadata,
            created_wall: wall,
            charged,
            items,
        };
        let body = admission_body(&job_id, &job, answers);
        self.jobs.insert(job_id, job);
        body
    }

    /// Creates the tent of an admitted bulk item with its first generation, and returns
    /// the ids of both.
    fn admit_tent(
        &mut self,
        item: &CandidateItem,
        auto_publish: bool,
        now: Instant,
        wall: SystemTime,
    ) -> (Uuid, Ulid) {
        let tent_id = self.new_uuid();
        let generation = self.new_generation(
            tent_id,
            auto_publish,
            item.custom_page_alias.clone(),
            now,
            wall,
        );
        let generation_id = generation.id;
        self.tents.insert(
            tent_id,
            Tent {
                created_wall: wall,
                generations: vec![generation],
            },
        );
        (tent_id, generation_id)
    }

    // ---- GET /v1/bulk-jobs/{id} --------------------------------------------------

    /// Forgets a bulk job, as if Tented had lost it: it answers 404 from now on.
    pub(crate) fn forget_bulk_job(&mut self, job_id: &str) -> bool {
        self.jobs.remove(job_id).is_some()
    }

    /// The bulk job's status answer at `now`, or None when the job is unknown.
    pub(crate) fn bulk_job(&self, job_id: &str, now: Instant) -> Option<Value> {
        let job = self.jobs.get(job_id)?;
        let mut counts = PhaseCounts::default();
        let mut updated = job.created_wall;
        let mut items = Vec::with_capacity(job.items.len());
        for item in &job.items {
            let mut out = item_head(item.index, item.client_item_id.as_deref());
            match &item.admission {
                Admission::Rejected(rejection) => insert_rejection(&mut out, rejection),
                Admission::Accepted {
                    tent_id,
                    generation_id,
                    tent_name,
                } => {
                    let generation = self.find_generation(tent_id, generation_id);
                    let progress = item_progress(*tent_id, generation, job.auto_publish, now);
                    counts.count(progress.phase);
                    if let Some(at) = progress.updated {
                        updated = updated.max(at);
                    }
                    insert_progress(&mut out, *tent_id, tent_name, &progress);
                }
            }
            items.push(Value::Object(out));
        }
        Some(bulk_job_body(job_id, job, counts, items, updated))
    }

    /// The generation `generation_id` of tent `tent_id`, if both exist.
    fn find_generation(&self, tent_id: &Uuid, generation_id: &Ulid) -> Option<&Generation> {
        self.tents
            .get(tent_id)
            .and_then(|t| t.generations.iter().find(|g| g.id == *generation_id))
    }

    // ---- POST /v1/tents ----------------------------------------------------------

    pub(crate) fn create_tent(
        &mut self,
        request: CreateRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Value, ApiError> {
        if let Some(tent_id) = request.tent_id {
            let Some(tent) = self.tents.get(&tent_id) else {
                return Err(ApiError::new(404, json!({ "error": "Tent not found" })));
            };
            if !tent.generations.is_empty() {
                return Err(ApiError::new(
                    409,
                    json!({ "error": "Tent already has a generation" }),
                ));
            }
        }
        check_assets(&request.asset_ids)?;
        if !self.try_charge() {
            return Err(insufficient_credits());
        }
        let tent_id = match request.tent_id {
            Some(id) => id,
            None => self.new_uuid(),
        };
        let generation = self.new_generation(
            tent_id,
            request.auto_publish,
            request.custom_page_alias,
            now,
            wall,
        );
        let tent = self.tents.entry(tent_id).or_insert_with(|| Tent {
            created_wall: wall,
            generations: Vec::new(),
        });
        tent.generations.push(generation);
        Ok(json!({
            "id": tent_id.to_string(),
            "status": "pending",
            "created_at": rfc3339(wall),
        }))
    }

    // ---- POST /v1/tents/{id}/edit ------------------------------------------------

    pub(crate) fn edit_tent(
        &mut self,
        tent_id: Uuid,
        request: EditRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Value, ApiError> {
        let Some(tent) = self.tents.get(&tent_id) else {
            return Err(ApiError::new(404, json!({ "error": "Tent not found" })));
        };
        if tent.generations.is_empty() {
            return Err(ApiError::new(
                400,
                json!({
                    "error": "Invalid request body",
                    "details": { "issues": [ {
                        "path": "tent_id",
                        "message": "Tent has no existing generation. Use POST /v1/tents to create the first version."
                    } ] }
                }),
            ));
        }
        check_assets(&request.asset_ids)?;
        if !self.try_charge() {
            return Err(insufficient_credits());
        }
        let generation = self.new_generation(
            tent_id,
            request.auto_publish,
            request.custom_page_alias,
            now,
            wall,
        );
        let generation_id = generation.id;
        if let Some(tent) = self.tents.get_mut(&tent_id) {
            tent.generations.push(generation);
        }
        Ok(json!({
            "id": tent_id.to_string(),
            "generation_id": generation_id.to_string(),
            "status": "pending",
            "updated_at": rfc3339(wall),
        }))
    }

    // ---- GET /v1/tents/{id} ------------------------------------------------------

    /// The tent's status answer, and whether it is still in progress.
    pub(crate) fn tent_status(&self, tent_id: Uuid, now: Instant) -> Option<(Value, bool)> {
        let tent = self.tents.get(&tent_id)?;
        let id = tent_id.to_string();
        let Some(generation) = tent.generations.last() else {
            // An idle tent (assets uploaded, never generated). The pages list no status
            // for it; "idle" is not final for a lenient client and never appears otherwise.
            return Some((
                json!({
                    "id": id,
                    "status": "idle",
                    "created_at": rfc3339(tent.created_wall),
                    "updated_at": rfc3339(tent.created_wall),
                }),
                false,
            ));
        };
        let phase = generation.phase(now);
        let mut body = Map::new();
        body.insert("id".into(), json!(id));
        body.insert("status".into(), json!(phase.as_str()));
        body.insert("created_at".into(), json!(rfc3339(tent.created_wall)));
        body.insert(
            "updated_at".into(),
            json!(rfc3339(generation.updated_wall(now).max(tent.created_wall))),
        );
        match phase {
            Phase::Completed => {
                body.insert(
                    "result".into(),
                    json!({
                        "tentId": id,
                        "s3Key": format!("tents/{ORG_ID}/{id}/{}/index.html", generation.id),
                        "filePath": "index.html",
                    }),
                );
            }
            Phase::Failed => {
                body.insert("error".into(), json!(GENERATION_FAILED));
            }
            Phase::Queued | Phase::Generating => {}
        }
        if let Some((plan, pending)) = generation.publication(now) {
            body.insert(
                "publication".into(),
                publication_json(tent_id, plan, pending),
            );
        }
        Some((Value::Object(body), generation.in_progress(now)))
    }
}

fn check_assets(asset_ids: &[String]) -> Result<(), ApiError> {
    match asset_ids.iter().find(|id| !asset_exists(id)) {
        Some(missing) => Err(ApiError::new(
            404,
            json!({ "error": "Asset not found", "message": format!("Asset {missing} does not exist") }),
        )),
        None => Ok(()),
    }
}

fn insufficient_credits() -> ApiError {
    ApiError::new(429, json!({ "error": "Insufficient credits" }))
}

/// True when a credit balance can pay for one more generation; `None` is unlimited.
fn has_credit(balance: Option<u64>) -> bool {
    balance != Some(0)
}

/// The model's decision on one bulk item.
enum ItemVerdict {
    /// The item is admitted: it costs one credit and becomes a tent with a generation.
    Admit(CandidateItem),
    /// The item is rejected for this reason and costs nothing.
    Reject(Rejection),
}

/// Judges one bulk item: an item that passed the handler's validation is admitted when
/// the balance (`None` is unlimited) still holds a credit, and rejected for insufficient
/// credits otherwise; an item that failed validation keeps its rejection.
fn judge_item(validated: Result<CandidateItem, Rejection>, balance: Option<u64>) -> ItemVerdict {
    match validated {
        Ok(item) if has_credit(balance) => ItemVerdict::Admit(item),
        Ok(_) => ItemVerdict::Reject(Rejection {
            code: "INSUFFICIENT_CREDITS",
            message: "Insufficient credits".to_owned(),
        }),
        Err(rejection) => ItemVerdict::Reject(rejection),
    }
}

/// The fields that open every item of a bulk answer: its index, then its client id when
/// the request gave one.
fn item_head(index: usize, client_item_id: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("index".into(), json!(index));
    if let Some(cid) = client_item_id {
        out.insert("client_item_id".into(), json!(cid));
    }
    out
}

/// Writes an admitted item's fields into its entry of the POST /v1/tents/bulk answer.
fn insert_acceptance(out: &mut Map<String, Value>, tent_id: Uuid, item: &CandidateItem) {
    out.insert("tent_id".into(), json!(tent_id.to_string()));
    out.insert("tent_name".into(), json!(item.tent_name));
    if let Some(alias) = &item.custom_page_alias {
        out.insert("custom_page_alias".into(), json!(alias));
    }
    out.insert("status".into(), json!("accepted"));
}

/// Writes a rejected item's fields into its entry of a bulk answer; both bulk routes
/// report a rejection the same way.
fn insert_rejection(out: &mut Map<String, Value>, rejection: &Rejection) {
    out.insert("status".into(), json!("rejected"));
    out.insert("error_code".into(), json!(rejection.code));
    out.insert("message".into(), json!(rejection.message));
}

/// The POST /v1/tents/bulk answer for a job just admitted, with one entry per item.
fn admission_body(job_id: &str, job: &BulkJob, answers: Vec<Value>) -> Value {
    let rejected = job.items.len() as u64 - job.charged;
    let mut body = Map::new();
    body.insert("bulk_job_id".into(), json!(job_id));
    body.insert("status".into(), json!("accepted"));
    body.insert("template_id".into(), json!(job.template_id));
    body.insert("auto_publish".into(), json!(job.auto_publish));
    body.insert("accepted_count".into(), json!(job.charged));
    body.insert("rejected_count".into(), json!(rejected));
    body.insert("items".into(), Value::Array(answers));
    if let Some(metadata) = &job.metadata {
        body.insert("metadata".into(), metadata.clone());
    }
    body.insert("created_at".into(), json!(rfc3339(job.created_wall)));
    Value::Object(body)
}

/// What one accepted bulk item reports at a given moment.
#[derive(Debug, PartialEq)]
struct ItemProgress {
    phase: Phase,
    /// The publication's status, when the job asked for auto-publish and the
    /// publication exists.
    publication_status: Option<Value>,
    /// The published URL, when the publication has one.
    published_url: Option<Value>,
    /// The wall time of the generation's last transition; None when the generation is
    /// missing.
    updated: Option<SystemTime>,
}

/// Computes one accepted item's progress at `now` from the generation the item created,
/// even if its tent was edited since. That generation always exists; a missing one is
/// reported as failed all the same, to be lenient.
fn item_progress(
    tent_id: Uuid,
    generation: Option<&Generation>,
    auto_publish: bool,
    now: Instant,
) -> ItemProgress {
    let Some(generation) = generation else {
        return ItemProgress {
            phase: Phase::Failed,
            publication_status: None,
            published_url: None,
            updated: None,
        };
    };
    let mut progress = ItemProgress {
        phase: generation.phase(now),
        publication_status: None,
        published_url: None,
        updated: Some(generation.updated_wall(now)),
    };
    if auto_publish {
        if let Some((plan, pending)) = generation.publication(now) {
            let publication = publication_json(tent_id, plan, pending);
            progress.publication_status = publication.get("status").cloned();
            progress.published_url = publication.get("published_url").cloned();
        }
    }
    progress
}

/// Writes an accepted item's fields into its entry of the GET /v1/bulk-jobs/{id} answer.
fn insert_progress(
    out: &mut Map<String, Value>,
    tent_id: Uuid,
    tent_name: &str,
    progress: &ItemProgress,
) {
    out.insert("tent_id".into(), json!(tent_id.to_string()));
    out.insert("tent_name".into(), json!(tent_name));
    out.insert("status".into(), json!(progress.phase.as_str()));
    if let Some(status) = &progress.publication_status {
        out.insert("publication_status".into(), status.clone());
    }
    if let Some(url) = &progress.published_url {
        out.insert("published_url".into(), url.clone());
    }
    if progress.phase == Phase::Failed {
        out.insert("message".into(), json!(GENERATION_FAILED));
    }
}

/// How many of a bulk job's accepted items are in each phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PhaseCounts {
    queued: u64,
    generating: u64,
    completed: u64,
    failed: u64,
}

impl PhaseCounts {
    fn count(&mut self, phase: Phase) {
        match phase {
            Phase::Queued => self.queued += 1,
            Phase::Generating => self.generating += 1,
            Phase::Completed => self.completed += 1,
            Phase::Failed => self.failed += 1,
        }
    }

    fn accepted(self) -> u64 {
        self.queued + self.generating + self.completed + self.failed
    }

    /// The job's status: failed when nothing was accepted, accepted while everything is
    /// queued, running while anything is queued or generating, and otherwise completed,
    /// failed or completed with failures depending on how many items completed.
    fn job_status(self) -> &'static str {
        let accepted = self.accepted();
        if accepted == 0 {
            "failed"
        } else if self.queued == accepted {
            "accepted"
        } else if self.queued + self.generating > 0 {
            "running"
        } else if self.completed == accepted {
            "completed"
        } else if self.completed == 0 {
            "failed"
        } else {
            "completed_with_failures"
        }
    }
}

/// The GET /v1/bulk-jobs/{id} answer, from the job, its phase counts, its items'
/// entries and the wall time of its last transition.
fn bulk_job_body(
    job_id: &str,
    job: &BulkJob,
    counts: PhaseCounts,
    items: Vec<Value>,
    updated: SystemTime,
) -> Value {
    let mut body = Map::new();
    body.insert("bulk_job_id".into(), json!(job_id));
    body.insert("status".into(), json!(counts.job_status()));
    body.insert("template_id".into(), json!(job.template_id));
    body.insert("auto_publish".into(), json!(job.auto_publish));
    body.insert("total".into(), json!(job.items.len()));
    body.insert("queued".into(), json!(counts.queued));
    body.insert("generating".into(), json!(counts.generating));
    body.insert("completed".into(), json!(counts.completed));
    body.insert("failed".into(), json!(counts.failed));
    body.insert("items".into(), Value::Array(items));
    body.insert("credits".into(), json!({ "charged": job.charged }));
    if let Some(metadata) = &job.metadata {
        body.insert("metadata".into(), metadata.clone());
    }
    body.insert("created_at".into(), json!(rfc3339(job.created_wall)));
    body.insert("updated_at".into(), json!(rfc3339(updated)));
    Value::Object(body)
}

fn default_url(tent_id: Uuid) -> String {
    format!("{WORKSPACE_URL}/{tent_id}")
}

fn alias_url(alias: &str) -> String {
    if alias == crate::simulator::alias::ROOT_ALIAS {
        format!("{WORKSPACE_URL}/")
    } else {
        format!("{WORKSPACE_URL}/{alias}")
    }
}

/// The publication object of GET /v1/tents/{id}, shaped as the page's examples.
/// `requested_custom_page_alias` appears only when an alias was requested.
fn publication_json(tent_id: Uuid, plan: &PublicationPlan, pending: bool) -> Value {
    let mut out = Map::new();
    let requested = |out: &mut Map<String, Value>| {
        if let Some(alias) = &plan.requested_alias {
            out.insert("requested_custom_page_alias".into(), json!(alias));
        }
    };
    if pending {
        out.insert("status".into(), json!("pending"));
        requested(&mut out);
        return Value::Object(out);
    }
    match &plan.outcome {
        PublishOutcome::Published { applied_alias } => {
            out.insert("status".into(), json!("published"));
            let url = match applied_alias {
                Some(alias) => alias_url(alias),
                None => default_url(tent_id),
            };
            out.insert("published_url".into(), json!(url));
            requested(&mut out);
            out.insert("applied_custom_page_alias".into(), json!(applied_alias));
        }
        PublishOutcome::AliasUnavailable => {
            out.insert("status".into(), json!("published_with_warnings"));
            out.insert("published_url".into(), json!(default_url(tent_id)));
            requested(&mut out);
            out.insert("applied_custom_page_alias".into(), Value::Null);
            out.insert(
                "warnings".into(),
                json!([{ "code": ALIAS_UNAVAILABLE_CODE, "message": ALIAS_UNAVAILABLE_MESSAGE }]),
            );
        }
        PublishOutcome::Failed => {
            out.insert("status".into(), json!("failed"));
            requested(&mut out);
            out.insert("applied_custom_page_alias".into(), Value::Null);
            out.insert(
                "error".into(),
                json!({ "code": PUBLISH_LIMIT_CODE, "message": PUBLISH_LIMIT_MESSAGE }),
            );
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn candidate(name: &str, alias: Option<&str>) -> CandidateItem {
        CandidateItem {
            tent_name: name.to_owned(),
            custom_page_alias: alias.map(str::to_owned),
        }
    }

    /// The code and message of a verdict that must be a rejection (`why` names the case).
    fn rejected(verdict: ItemVerdict, why: &str) -> (&'static str, String) {
        match verdict {
            ItemVerdict::Reject(r) => (r.code, r.message),
            ItemVerdict::Admit(_) => panic!("{why}: admitted"),
        }
    }

    /// A model of the default configuration with `credits` (`None`: unlimited) and `seed`.
    fn model_with(credits: Option<u64>, seed: u64) -> Model {
        let config = SimConfig {
            credits,
            seed: Some(seed),
            ..SimConfig::default()
        };
        Model::new(config).unwrap()
    }

    fn invalid() -> Rejection {
        Rejection {
            code: "INVALID_ITEM",
            message: "bad item".to_owned(),
        }
    }

    /// Queued for 1 s, generating for 2 s, then publishing for 1 s when a plan is given.
    fn generation(
        base: Instant,
        succeeds: bool,
        publication: Option<PublicationPlan>,
    ) -> Generation {
        Generation {
            id: Ulid::from_parts(0, 1),
            admitted: base,
            admitted_wall: wall(),
            queue: secs(1.0),
            generation: secs(2.0),
            succeeds,
            publication,
        }
    }

    fn published_as(alias: &str) -> Option<PublicationPlan> {
        Some(PublicationPlan {
            requested_alias: Some(alias.to_owned()),
            delay: secs(1.0),
            outcome: PublishOutcome::Published {
                applied_alias: Some(alias.to_owned()),
            },
        })
    }

    #[test]
    fn a_valid_item_is_admitted_while_a_credit_remains() {
        for balance in [None, Some(1), Some(5)] {
            match judge_item(Ok(candidate("Spring 1", None)), balance) {
                ItemVerdict::Admit(item) => assert_eq!(item.tent_name, "Spring 1"),
                ItemVerdict::Reject(r) => panic!("balance {balance:?} rejected: {}", r.code),
            }
        }
    }

    #[test]
    fn a_valid_item_is_rejected_when_credits_are_exhausted() {
        let verdict = judge_item(Ok(candidate("Spring 1", None)), Some(0));
        let (code, message) = rejected(verdict, "without a credit");
        assert_eq!(code, "INSUFFICIENT_CREDITS");
        assert_eq!(message, "Insufficient credits");
    }

    #[test]
    fn an_invalid_item_keeps_its_own_rejection_whatever_the_balance() {
        for balance in [None, Some(0), Some(3)] {
            let verdict = judge_item(Err(invalid()), balance);
            let (code, message) = rejected(verdict, "an invalid item");
            assert_eq!(code, "INVALID_ITEM");
            assert_eq!(message, "bad item");
        }
    }

    #[test]
    fn charging_stops_at_zero_and_unlimited_stays_unlimited() {
        let mut model = model_with(Some(1), 1);
        assert!(model.try_charge());
        assert!(!model.try_charge());
        model.take_credit();
        assert_eq!(model.config.credits, Some(0));

        let mut model = model_with(None, 1);
        assert!(model.try_charge());
        assert_eq!(model.config.credits, None);
    }

    #[test]
    fn progress_follows_the_generation_through_time() {
        let base = Instant::now();
        let tent_id = Uuid::from_u128(7);
        let g = generation(base, true, published_as("spring"));
        let at = |s: f64| item_progress(tent_id, Some(&g), true, base + secs(s));

        let queued = at(0.5);
        assert_eq!(queued.phase, Phase::Queued);
        assert_eq!(queued.publication_status, None);
        assert_eq!(queued.updated, Some(wall()));

        let generating = at(1.5);
        assert_eq!(generating.phase, Phase::Generating);
        assert_eq!(generating.updated, Some(wall() + secs(1.0)));

        let publishing = at(3.5);
        assert_eq!(publishing.phase, Phase::Completed);
        assert_eq!(publishing.publication_status, Some(json!("pending")));
        assert_eq!(publishing.published_url, None);
        assert_eq!(publishing.updated, Some(wall() + secs(3.0)));

        let published = at(4.5);
        assert_eq!(published.phase, Phase::Completed);
        assert_eq!(published.publication_status, Some(json!("published")));
        assert_eq!(
            published.published_url,
            Some(json!(format!("{WORKSPACE_URL}/spring")))
        );
        assert_eq!(published.updated, Some(wall() + secs(4.0)));
    }

    #[test]
    fn progress_omits_the_publication_when_the_job_did_not_ask_for_it() {
        let base = Instant::now();
        let g = generation(base, true, published_as("spring"));
        let progress = item_progress(Uuid::from_u128(7), Some(&g), false, base + secs(4.5));
        assert_eq!(progress.phase, Phase::Completed);
        assert_eq!(progress.publication_status, None);
        assert_eq!(progress.published_url, None);
    }

    #[test]
    fn a_failed_or_missing_generation_reports_failed() {
        let base = Instant::now();
        let g = generation(base, false, published_as("spring"));
        let failed = item_progress(Uuid::from_u128(7), Some(&g), true, base + secs(4.5));
        assert_eq!(failed.phase, Phase::Failed);
        assert_eq!(failed.publication_status, None);
        assert_eq!(failed.updated, Some(wall() + secs(3.0)));

        let missing = item_progress(Uuid::from_u128(7), None, true, base);
        assert_eq!(missing.phase, Phase::Failed);
        assert_eq!(missing.updated, None);
        let mut out = item_head(0, None);
        insert_progress(&mut out, Uuid::from_u128(7), "Spring 1", &missing);
        assert_eq!(out["status"], json!("failed"));
        assert_eq!(out["message"], json!(GENERATION_FAILED));
    }

    #[test]
    fn item_entries_keep_the_pages_key_order() {
        let mut rejected = item_head(2, Some("row-3"));
        insert_rejection(&mut rejected, &invalid());
        let keys: Vec<&str> = rejected.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["index", "client_item_id", "status", "error_code", "message"]
        );

        let mut accepted = item_head(0, None);
        insert_acceptance(
            &mut accepted,
            Uuid::from_u128(7),
            &candidate("A", Some("a")),
        );
        let keys: Vec<&str> = accepted.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "index",
                "tent_id",
                "tent_name",
                "custom_page_alias",
                "status"
            ]
        );

        let base = Instant::now();
        let g = generation(base, true, published_as("spring"));
        let progress = item_progress(Uuid::from_u128(7), Some(&g), true, base + secs(4.5));
        let mut done = item_head(0, None);
        insert_progress(&mut done, Uuid::from_u128(7), "A", &progress);
        let keys: Vec<&str> = done.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "index",
                "tent_id",
                "tent_name",
                "status",
                "publication_status",
                "published_url"
            ]
        );
    }

    fn counts(queued: u64, generating: u64, completed: u64, failed: u64) -> PhaseCounts {
        PhaseCounts {
            queued,
            generating,
            completed,
            failed,
        }
    }

    #[test]
    fn job_status_follows_the_phase_counts() {
        let table = [
            (counts(0, 0, 0, 0), "failed"),
            (counts(3, 0, 0, 0), "accepted"),
            (counts(2, 1, 0, 0), "running"),
            (counts(1, 0, 1, 0), "running"),
            (counts(0, 1, 1, 1), "running"),
            (counts(0, 0, 3, 0), "completed"),
            (counts(0, 0, 0, 3), "failed"),
            (counts(0, 0, 2, 1), "completed_with_failures"),
        ];
        for (c, status) in table {
            assert_eq!(c.job_status(), status, "{c:?}");
        }
    }

    #[test]
    fn counting_a_phase_adds_one_to_it() {
        let mut c = PhaseCounts::default();
        for phase in [
            Phase::Queued,
            Phase::Generating,
            Phase::Completed,
            Phase::Completed,
            Phase::Failed,
        ] {
            c.count(phase);
        }
        assert_eq!(c, counts(1, 1, 2, 1));
        assert_eq!(c.accepted(), 5);
    }

    #[test]
    fn admission_applies_verdicts_in_order_and_charges_one_credit_each() {
        let mut model = model_with(Some(1), 3);
        let items = vec![
            Ok(candidate("A", Some("a"))),
            Err(invalid()),
            Ok(candidate("B", None)),
        ];
        let request = BulkRequest {
            template_id: "tpl_x".to_owned(),
            auto_publish: true,
            metadata: None,
            items: items
                .into_iter()
                .enumerate()
                .map(|(index, verdict)| BulkCandidate {
                    index,
                    client_item_id: None,
                    verdict,
                })
                .collect(),
        };
        let base = Instant::now();
        let answer = model.admit_bulk(request, base, wall());
        assert_eq!(answer["accepted_count"], json!(1));
        assert_eq!(answer["rejected_count"], json!(2));
        assert_eq!(answer["items"][0]["status"], json!("accepted"));
        assert_eq!(answer["items"][0]["custom_page_alias"], json!("a"));
        assert_eq!(answer["items"][1]["error_code"], json!("INVALID_ITEM"));
        assert_eq!(
            answer["items"][2]["error_code"],
            json!("INSUFFICIENT_CREDITS")
        );
        assert_eq!(model.config.credits, Some(0));
        assert_eq!(model.tents.len(), 1);

        let job_id = answer["bulk_job_id"].as_str().unwrap();
        let status = model.bulk_job(job_id, base).unwrap();
        assert_eq!(status["status"], json!("accepted"));
        assert_eq!(status["total"], json!(3));
        assert_eq!(status["queued"], json!(1));
        assert_eq!(status["credits"], json!({ "charged": 1 }));
        assert_eq!(status["items"][0]["tent_id"], answer["items"][0]["tent_id"]);
        assert_eq!(status["items"][2]["status"], json!("rejected"));
    }
}
