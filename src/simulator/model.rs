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
        match self.config.credits.as_mut() {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
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

    pub(crate) fn admit_bulk(
        &mut self,
        request: BulkRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Value {
        let job_id = self.new_ulid(wall).to_string();
        let mut items = Vec::with_capacity(request.items.len());
        let mut answers = Vec::with_capacity(request.items.len());
        let mut charged = 0u64;
        for candidate in request.items {
            let verdict = match candidate.verdict {
                Ok(item) if self.try_charge() => Ok(item),
                Ok(_) => Err(Rejection {
                    code: "INSUFFICIENT_CREDITS",
                    message: "Insufficient credits".to_owned(),
                }),
                Err(rejection) => Err(rejection),
            };
            let mut answer = Map::new();
            answer.insert("index".into(), json!(candidate.index));
            if let Some(cid) = &candidate.client_item_id {
                answer.insert("client_item_id".into(), json!(cid));
            }
            let admission = match verdict {
                Ok(item) => {
                    charged += 1;
                    let tent_id = self.new_uuid();
                    let generation = self.new_generation(
                        tent_id,
                        request.auto_publish,
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
                    answer.insert("tent_id".into(), json!(tent_id.to_string()));
                    answer.insert("tent_name".into(), json!(item.tent_name));
                    if let Some(alias) = &item.custom_page_alias {
                        answer.insert("custom_page_alias".into(), json!(alias));
                    }
                    answer.insert("status".into(), json!("accepted"));
                    Admission::Accepted {
                        tent_id,
                        generation_id,
                        tent_name: item.tent_name,
                    }
                }
                Err(rejection) => {
                    answer.insert("status".into(), json!("rejected"));
                    answer.insert("error_code".into(), json!(rejection.code));
                    answer.insert("message".into(), json!(rejection.message));
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
        let accepted = charged;
        let rejected = items.len() as u64 - accepted;
        let mut body = Map::new();
        body.insert("bulk_job_id".into(), json!(job_id));
        body.insert("status".into(), json!("accepted"));
        body.insert("template_id".into(), json!(request.template_id));
        body.insert("auto_publish".into(), json!(request.auto_publish));
        body.insert("accepted_count".into(), json!(accepted));
        body.insert("rejected_count".into(), json!(rejected));
        body.insert("items".into(), Value::Array(answers));
        if let Some(metadata) = &request.metadata {
            body.insert("metadata".into(), metadata.clone());
        }
        body.insert("created_at".into(), json!(rfc3339(wall)));
        self.jobs.insert(
            job_id,
            BulkJob {
                template_id: request.template_id,
                auto_publish: request.auto_publish,
                metadata: request.metadata,
                created_wall: wall,
                charged,
                items,
            },
        );
        Value::Object(body)
    }

    // ---- GET /v1/bulk-jobs/{id} --------------------------------------------------

    /// Forgets a bulk job, as if Tented had lost it: it answers 404 from now on.
    pub(crate) fn forget_bulk_job(&mut self, job_id: &str) -> bool {
        self.jobs.remove(job_id).is_some()
    }

    pub(crate) fn bulk_job(&self, job_id: &str, now: Instant) -> Option<Value> {
        let job = self.jobs.get(job_id)?;
        let (mut queued, mut generating, mut completed, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let mut updated = job.created_wall;
        let mut items = Vec::with_capacity(job.items.len());
        for item in &job.items {
            let mut out = Map::new();
            out.insert("index".into(), json!(item.index));
            if let Some(cid) = &item.client_item_id {
                out.insert("client_item_id".into(), json!(cid));
            }
            match &item.admission {
                Admission::Rejected(rejection) => {
                    out.insert("status".into(), json!("rejected"));
                    out.insert("error_code".into(), json!(rejection.code));
                    out.insert("message".into(), json!(rejection.message));
                }
                Admission::Accepted {
                    tent_id,
                    generation_id,
                    tent_name,
                } => {
                    out.insert("tent_id".into(), json!(tent_id.to_string()));
                    out.insert("tent_name".into(), json!(tent_name));
                    let generation = self
                        .tents
                        .get(tent_id)
                        .and_then(|t| t.generations.iter().find(|g| g.id == *generation_id));
                    // The item reports the generation it created, even if the tent was
                    // edited since. The generation always exists; be lenient anyway.
                    let Some(generation) = generation else {
                        out.insert("status".into(), json!("failed"));
                        out.insert("message".into(), json!(GENERATION_FAILED));
                        failed += 1;
                        items.push(Value::Object(out));
                        continue;
                    };
                    let phase = generation.phase(now);
                    match phase {
                        Phase::Queued => queued += 1,
                        Phase::Generating => generating += 1,
                        Phase::Completed => completed += 1,
                        Phase::Failed => failed += 1,
                    }
                    out.insert("status".into(), json!(phase.as_str()));
                    if job.auto_publish {
                        if let Some((plan, pending)) = generation.publication(now) {
                            let publication = publication_json(*tent_id, plan, pending);
                            if let Some(status) = publication.get("status") {
                                out.insert("publication_status".into(), status.clone());
                            }
                            if let Some(url) = publication.get("published_url") {
                                out.insert("published_url".into(), url.clone());
                            }
                        }
                    }
                    if phase == Phase::Failed {
                        out.insert("message".into(), json!(GENERATION_FAILED));
                    }
                    updated = updated.max(generation.updated_wall(now));
                }
            }
            items.push(Value::Object(out));
        }
        let accepted = queued + generating + completed + failed;
        let status = if accepted == 0 {
            "failed"
        } else if queued == accepted {
            "accepted"
        } else if queued + generating > 0 {
            "running"
        } else if completed == accepted {
            "completed"
        } else if completed == 0 {
            "failed"
        } else {
            "completed_with_failures"
        };
        let mut body = Map::new();
        body.insert("bulk_job_id".into(), json!(job_id));
        body.insert("status".into(), json!(status));
        body.insert("template_id".into(), json!(job.template_id));
        body.insert("auto_publish".into(), json!(job.auto_publish));
        body.insert("total".into(), json!(job.items.len()));
        body.insert("queued".into(), json!(queued));
        body.insert("generating".into(), json!(generating));
        body.insert("completed".into(), json!(completed));
        body.insert("failed".into(), json!(failed));
        body.insert("items".into(), Value::Array(items));
        body.insert("credits".into(), json!({ "charged": job.charged }));
        if let Some(metadata) = &job.metadata {
            body.insert("metadata".into(), metadata.clone());
        }
        body.insert("created_at".into(), json!(rfc3339(job.created_wall)));
        body.insert("updated_at".into(), json!(rfc3339(updated)));
        Some(Value::Object(body))
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
