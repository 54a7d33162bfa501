//! The simulator, spoken to in raw HTTP (reqwest + serde_json::Value), one point of the
//! API pages at a time. Every test starts its own simulator on 127.0.0.1:0 with
//! generation times of tens of milliseconds.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tented_bulkd::simulator::{serve, EndpointFaults, FaultRates, SimConfig, Simulator};

use crate::helpers::{wait_until, BinaryDaemon, Progress, START_WAIT};

const KEY: &str = "sim-key";
const WORKSPACE: &str = "https://sim-workspace.tented-pages.com";
const INTENT_MESSAGE: &str = "Please enter a prompt that describes the web content you'd like to create (e.g., landing page, form, registration page).";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fast, deterministic lifecycle: queued 20 ms, generating 30 ms, publishing 20 ms,
/// no failures.
fn fast() -> SimConfig {
    SimConfig {
        queue_time: (ms(20), ms(20)),
        generation_time: (ms(30), ms(30)),
        publish_time: (ms(20), ms(20)),
        failure_rate: 0.0,
        publish_failure_rate: 0.0,
        seed: Some(7),
        ..SimConfig::default()
    }
}

/// Generations that stay queued for the whole test.
fn frozen() -> SimConfig {
    SimConfig {
        queue_time: (Duration::from_secs(60), Duration::from_secs(60)),
        ..fast()
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    base: String,
}

impl Harness {
    async fn start(config: SimConfig) -> Harness {
        let sim = Simulator::start(config, "127.0.0.1:0").await.unwrap();
        let base = sim.base_url();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Harness { sim, http, base }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(KEY),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(KEY)
                .json(&body),
        )
        .await
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Polls GET `path` until `done` holds (at most 3 s).
    async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Reply {
        wait_until(format!("GET {path}"), Duration::from_secs(3), || async {
            let reply = self.get(path).await;
            if done(&reply.body) {
                Progress::Done(reply)
            } else {
                Progress::NotYet(reply.body.to_string())
            }
        })
        .await
    }

    async fn wait_tent_final(&self, tent_id: &str) -> Reply {
        self.wait_for(&format!("/v1/tents/{tent_id}"), |b| {
            let generation_done = matches!(b["status"].as_str(), Some("completed" | "failed"));
            let publication_done = b["publication"]["status"] != json!("pending");
            generation_done && publication_done
        })
        .await
    }

    async fn wait_job_final(&self, job_id: &str) -> Reply {
        self.wait_for(&format!("/v1/bulk-jobs/{job_id}"), |b| {
            let final_status = matches!(
                b["status"].as_str(),
                Some("completed" | "completed_with_failures" | "failed")
            );
            let no_pending = b["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|i| i["publication_status"] != json!("pending"))
            });
            final_status && no_pending
        })
        .await
    }

    async fn bulk(&self, body: Value) -> Reply {
        self.post("/v1/tents/bulk", body).await
    }
}

fn item(n: u64) -> Value {
    json!({ "client_item_id": format!("row-{n}"), "input_data": { "n": n } })
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    keys.sort();
    keys
}

fn assert_timestamp(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    assert_eq!(s.len(), 24, "{s}");
    assert!(s.ends_with('Z') && &s[19..20] == ".", "{s}");
    humantime::parse_rfc3339(s).unwrap();
}

fn assert_uuid_v4(v: &Value) {
    let id = uuid::Uuid::parse_str(v.as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(id.to_string(), v.as_str().unwrap());
}

fn assert_ulid(v: &Value) {
    let s = v.as_str().unwrap();
    assert_eq!(s.len(), 26);
    ulid::Ulid::from_string(s).unwrap();
}

/// The page's request example.
fn acme_request() -> Value {
    json!({
        "template_id": "tpl_01JABC123XYZ",
        "client_job_descriptor": "Acme onboarding batch",
        "default_tent_name_prefix": "Acme onboarding",
        "start_index": 1,
        "auto_publish": true,
        "metadata": { "source": "crm-import", "batch_label": "acme-q2-onboarding" },
        "items": [
            { "client_item_id": "acme-row-001", "tent_name": "Acme Onboarding Page 1",
              "custom_page_alias": "acme-onboarding-jane",
              "input_data": { "first_name": "Jane", "company_name": "Acme" },
              "instructions": "Make the tone more executive.", "include_brand": true },
            { "client_item_id": "acme-row-002", "custom_page_alias": "acme-onboarding-michael",
              "input_data": { "first_name": "Michael" }, "include_brand": true },
            { "client_item_id": "acme-row-003", "custom_page_alias": "acme-onboarding-sarah",
              "input_data": { "first_name": "Sarah" }, "include_brand": true }
        ]
    })
}

// ---- authentication --------------------------------------------------------------

#[tokio::test]
async fn every_v1_route_requires_the_bearer_token() {
    let h = Harness::start(fast()).await;
    let tent = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
    let routes = [
        ("POST", "/v1/tents/bulk".to_owned()),
        ("GET", "/v1/bulk-jobs/01JQZB4H8A7T5B3R2W1X9Y6Z0K".to_owned()),
        ("POST", "/v1/tents".to_owned()),
        ("POST", format!("/v1/tents/{tent}/edit")),
        ("GET", format!("/v1/tents/{tent}")),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", h.base);
        let builder = |token: Option<&str>| {
            let b = match *method {
                "GET" => h.http.get(&url),
                _ => h.http.post(&url).json(&acme_request()),
            };
            match token {
                Some(t) => b.bearer_auth(t),
                None => b,
            }
        };
        for token in [None, Some("wrong-key")] {
            let reply = h.send(builder(token)).await;
            assert_eq!(reply.status, 401, "{method} {path}");
            assert_eq!(reply.body, json!({ "error": "Unauthorized" }));
        }
        let basic = h
            .send(builder(None).header("authorization", format!("Basic {KEY}")))
            .await;
        assert_eq!(basic.status, 401);
    }
    // Nothing was admitted by the unauthorized bulk request.
    let calls = h.sim.calls();
    assert_eq!(calls.len(), routes.len() * 3);
    assert!(calls.iter().all(|c| !c.authorized && c.status == Some(401)));

    h.sim.set_api_key("rotated");
    assert_eq!(h.bulk(acme_request()).await.status, 401);
    let reply = h
        .send(
            h.http
                .post(format!("{}/v1/tents/bulk", h.base))
                .bearer_auth("rotated")
                .json(&acme_request()),
        )
        .await;
    assert_eq!(reply.status, 202);
    assert!(h.sim.calls().last().unwrap().authorized);
}

// ---- POST /v1/tents/bulk: request validation -------------------------------------

#[tokio::test]
async fn bulk_rejects_invalid_requests_with_400() {
    let h = Harness::start(fast()).await;
    for raw in ["", "   ", "{not json", "[1,2]", "\"text\""] {
        let reply = h.post_raw("/v1/tents/bulk", raw).await;
        assert_eq!(reply.status, 400, "body {raw:?}");
        assert_eq!(reply.body["error"], "Invalid request");
        assert!(reply.body["message"].is_string());
    }
    let too_many: Vec<Value> = (0..26).map(item).collect();
    let cases = [
        json!({ "items": [item(0)] }),
        json!({ "template_id": "", "items": [item(0)] }),
        json!({ "template_id": 12, "items": [item(0)] }),
        json!({ "template_id": "tpl_a" }),
        json!({ "template_id": "tpl_a", "items": {} }),
        json!({ "template_id": "tpl_a", "items": [] }),
        json!({ "template_id": "tpl_a", "items": too_many }),
        json!({ "template_id": "tpl_a", "items": [item(0)], "start_index": "one" }),
        json!({ "template_id": "tpl_a", "items": [item(0)], "start_index": 1.5 }),
        json!({ "template_id": "tpl_a", "items": [item(0)], "auto_publish": "yes" }),
        json!({ "template_id": "tpl_a", "items": [item(0)], "metadata": [1] }),
        json!({ "template_id": "tpl_a", "items": [item(0)], "default_tent_name_prefix": 3 }),
    ];
    for body in cases {
        let reply = h.bulk(body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.body["error"], "Invalid request");
    }
    let max: Vec<Value> = (0..25).map(item).collect();
    let reply = h
        .bulk(json!({ "template_id": "tpl_a", "items": max }))
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.body["accepted_count"], 25);
}

#[tokio::test]
async fn bulk_unknown_template_is_404() {
    let h = Harness::start(fast()).await;
    let reply = h
        .bulk(json!({ "template_id": "nope_1", "items": [item(0)] }))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, json!({ "error": "Template not found" }));

    let listed = Harness::start(SimConfig {
        templates: vec!["tpl_only".into(), "custom-template".into()],
        ..fast()
    })
    .await;
    for (template, status) in [
        ("tpl_only", 202),
        ("custom-template", 202),
        ("tpl_other", 404),
    ] {
        let reply = listed
            .bulk(json!({ "template_id": template, "items": [item(0)] }))
            .await;
        assert_eq!(reply.status, status, "{template}");
    }
}

// ---- POST /v1/tents/bulk: admission answer ---------------------------------------

#[tokio::test]
async fn bulk_answer_has_the_pages_shape() {
    let h = Harness::start(frozen()).await;
    let reply = h.bulk(acme_request()).await;
    assert_eq!(reply.status, 202);
    let b = &reply.body;
    assert_eq!(
        keys(b),
        sorted(&[
            "bulk_job_id",
            "status",
            "template_id",
            "auto_publish",
            "accepted_count",
            "rejected_count",
            "items",
            "metadata",
            "created_at"
        ])
    );
    assert_ulid(&b["bulk_job_id"]);
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["template_id"], "tpl_01JABC123XYZ");
    assert_eq!(b["auto_publish"], true);
    assert_eq!(b["accepted_count"], 3);
    assert_eq!(b["rejected_count"], 0);
    assert_eq!(
        b["metadata"],
        json!({ "source": "crm-import", "batch_label": "acme-q2-onboarding" })
    );
    assert_timestamp(&b["created_at"]);
    let names = [
        "Acme Onboarding Page 1",
        "Acme onboarding 2",
        "Acme onboarding 3",
    ];
    let aliases = [
        "acme-onboarding-jane",
        "acme-onboarding-michael",
        "acme-onboarding-sarah",
    ];
    for (i, it) in b["items"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            keys(it),
            sorted(&[
                "index",
                "client_item_id",
                "tent_id",
                "tent_name",
                "custom_page_alias",
                "status"
            ])
        );
        assert_eq!(it["index"], i);
        assert_eq!(it["client_item_id"], format!("acme-row-00{}", i + 1));
        assert_uuid_v4(&it["tent_id"]);
        assert_eq!(it["tent_name"], names[i]);
        assert_eq!(it["custom_page_alias"], aliases[i]);
        assert_eq!(it["status"], "accepted");
    }

    // Without metadata, alias or client_item_id, those keys are absent.
    let reply = h
        .bulk(json!({ "template_id": "tpl_a", "items": [ { "input_data": {} } ] }))
        .await;
    assert_eq!(reply.status, 202);
    assert!(reply.body.get("metadata").is_none());
    assert_eq!(reply.body["auto_publish"], false);
    assert_eq!(
        keys(&reply.body["items"][0]),
        sorted(&["index", "tent_id", "tent_name", "status"])
    );
    assert_eq!(reply.body["items"][0]["tent_name"], "Bulk tent 1");
}

#[tokio::test]
async fn bulk_naming_follows_prefix_descriptor_and_start_index() {
    let h = Harness::start(frozen()).await;
    let names = |b: &Value| -> Vec<Value> {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["tent_name"].clone())
            .collect()
    };
    let two = json!([ { "input_data": {} }, { "input_data": {}, "tent_name": "Mine" }, { "input_data": {} } ]);
    let r = h
        .bulk(
            json!({ "template_id": "tpl_a", "items": two, "default_tent_name_prefix": "P",
                          "client_job_descriptor": "D", "start_index": 10 }),
        )
        .await;
    assert_eq!(
        names(&r.body),
        [json!("P 10"), json!("Mine"), json!("P 12")]
    );
    let r = h
        .bulk(json!({ "template_id": "tpl_a", "items": two, "client_job_descriptor": "D" }))
        .await;
    assert_eq!(names(&r.body), [json!("D 1"), json!("Mine"), json!("D 3")]);
    let r = h
        .bulk(json!({ "template_id": "tpl_a", "items": two, "start_index": 0 }))
        .await;
    assert_eq!(
        names(&r.body),
        [json!("Bulk tent 0"), json!("Mine"), json!("Bulk tent 2")]
    );
    // Rejected positions still count.
    let r = h
        .bulk(json!({ "template_id": "tpl_a", "items": [ {}, { "input_data": {} } ] }))
        .await;
    assert_eq!(r.body["items"][0]["status"], "rejected");
    assert_eq!(r.body["items"][1]["tent_name"], "Bulk tent 2");
}

#[tokio::test]
async fn bulk_items_are_rejected_one_by_one() {
    let h = Harness::start(SimConfig {
        credits: Some(3),
        ..frozen()
    })
    .await;
    let six_assets = json!(["asset_1", "asset_2", "asset_3", "asset_4", "asset_5", "asset_6"]);
    let body = json!({
        "template_id": "tpl_a",
        "auto_publish": false,
        "items": [
            { "client_item_id": "no-input" },
            { "client_item_id": "bad-input", "input_data": "text" },
            { "client_item_id": "alias-no-publish", "input_data": {}, "custom_page_alias": "fine" },
            { "client_item_id": "six-assets", "input_data": {}, "asset_ids": six_assets },
            { "client_item_id": "unknown-asset", "input_data": {}, "asset_ids": ["asset_1", "01JPAEWP9PY5SCX1V6X03XK9M2"] },
            { "client_item_id": "ok-1", "input_data": {}, "asset_ids": ["asset_1"] },
            { "input_data": {} },
            { "client_item_id": "ok-3", "input_data": {} },
            { "client_item_id": "no-credit", "input_data": {} },
            "not an object"
        ]
    });
    let reply = h.bulk(body).await;
    assert_eq!(reply.status, 202);
    let b = &reply.body;
    assert_eq!(b["accepted_count"], 3);
    assert_eq!(b["rejected_count"], 7);
    let expect = [
        (Some("no-input"), "INVALID_ITEM"),
        (Some("bad-input"), "INVALID_ITEM"),
        (Some("alias-no-publish"), "INVALID_ITEM"),
        (Some("six-assets"), "INVALID_ITEM"),
        (Some("unknown-asset"), "NOT_FOUND"),
        (Some("ok-1"), ""),
        (None, ""),
        (Some("ok-3"), ""),
        (Some("no-credit"), "INSUFFICIENT_CREDITS"),
        (None, "INVALID_ITEM"),
    ];
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), expect.len());
    for (i, (it, (cid, code))) in items.iter().zip(expect).enumerate() {
        assert_eq!(it["index"], i);
        match cid {
            Some(cid) => assert_eq!(it["client_item_id"], cid),
            None => assert!(it.get("client_item_id").is_none()),
        }
        if code.is_empty() {
            assert_eq!(it["status"], "accepted", "{it}");
            assert_uuid_v4(&it["tent_id"]);
        } else {
            assert_eq!(it["status"], "rejected", "{it}");
            assert_eq!(it["error_code"], code, "{it}");
            assert!(it["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(it.get("tent_id").is_none());
            assert!(it.get("tent_name").is_none());
        }
    }
    assert_eq!(h.sim.credits(), Some(0));

    // Everything rejected: still 202, accepted_count 0, and the job reads as failed.
    let reply = h
        .bulk(json!({ "template_id": "tpl_a", "items": [ { "input_data": {} } ] }))
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.body["accepted_count"], 0);
    assert_eq!(reply.body["items"][0]["error_code"], "INSUFFICIENT_CREDITS");
    let job = h
        .get(&format!(
            "/v1/bulk-jobs/{}",
            reply.body["bulk_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job.body["status"], "failed");
    assert_eq!(job.body["credits"], json!({ "charged": 0 }));
}

#[tokio::test]
async fn alias_rules_each_apply() {
    let h = Harness::start(frozen()).await;
    let uuid_alias = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
    let long_ok = "a".repeat(100);
    let too_long = "a".repeat(101);
    let cases: Vec<(&str, bool)> = vec![
        ("spring-launch", true),
        ("a.b_c-9", true),
        ("9lives", true),
        ("/", true),
        (&long_ok, true),
        (&too_long, false),
        ("Spring", false),
        ("spring launch", false),
        ("a/b", false),
        ("-lead", false),
        ("_lead", false),
        (".lead", false),
        ("", false),
        (uuid_alias, false),
        ("api", false),
        ("admin", false),
        ("submit", false),
        ("assets", false),
        ("api-docs", true),
    ];
    let items: Vec<Value> = cases
        .iter()
        .map(|(alias, _)| json!({ "input_data": {}, "custom_page_alias": alias }))
        .collect();
    let reply = h
        .bulk(json!({ "template_id": "tpl_a", "auto_publish": true, "items": items }))
        .await;
    assert_eq!(reply.status, 202);
    for ((alias, valid), it) in cases.iter().zip(reply.body["items"].as_array().unwrap()) {
        if *valid {
            assert_eq!(it["status"], "accepted", "{alias:?}");
        } else {
            assert_eq!(it["status"], "rejected", "{alias:?}");
            assert_eq!(it["error_code"], "INVALID_ITEM");
            assert_eq!(it["message"], "Invalid custom_page_alias");
        }
    }
    // The same rules on create and edit.
    let create = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a landing page",
                                   "auto_publish": true, "custom_page_alias": "admin" }),
        )
        .await;
    assert_eq!(create.status, 400);
    assert_eq!(create.body["message"], "Invalid custom_page_alias");
}

// ---- GET /v1/bulk-jobs/{id} ------------------------------------------------------

#[tokio::test]
async fn bulk_job_status_errors() {
    let h = Harness::start(fast()).await;
    for path in [
        "/v1/bulk-jobs/bad-id!",
        "/v1/bulk-jobs/with%20space",
        "/v1/bulk-jobs/",
        "/v1/bulk-jobs",
    ] {
        let reply = h.get(path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.body["error"], "Invalid request");
    }
    let reply = h.get("/v1/bulk-jobs/01JQZB4H8A7T5B3R2W1X9Y6Z0K").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, json!({ "error": "Bulk job not found" }));
}

#[tokio::test]
async fn bulk_job_moves_from_accepted_to_completed() {
    let h = Harness::start(SimConfig {
        queue_time: (ms(100), ms(100)),
        generation_time: (ms(150), ms(150)),
        publish_time: (ms(150), ms(150)),
        ..fast()
    })
    .await;
    let mut request = acme_request();
    request["items"][1] = json!({ "custom_page_alias": "Bad Alias", "input_data": {} });
    let admitted = h.bulk(request).await.body;
    let id = admitted["bulk_job_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/bulk-jobs/{id}");

    let b = h.get(&path).await.body;
    assert_eq!(
        keys(&b),
        sorted(&[
            "bulk_job_id",
            "status",
            "template_id",
            "auto_publish",
            "total",
            "queued",
            "generating",
            "completed",
            "failed",
            "items",
            "credits",
            "metadata",
            "created_at",
            "updated_at"
        ])
    );
    assert_eq!(b["bulk_job_id"], id.as_str());
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["template_id"], "tpl_01JABC123XYZ");
    assert_eq!(b["auto_publish"], true);
    assert_eq!(
        (
            b["total"].clone(),
            b["queued"].clone(),
            b["generating"].clone()
        ),
        (json!(3), json!(2), json!(0))
    );
    assert_eq!(b["credits"], json!({ "charged": 2 }));
    assert_eq!(b["created_at"], admitted["created_at"]);
    assert_timestamp(&b["updated_at"]);
    let items = b["items"].as_array().unwrap();
    assert_eq!(
        keys(&items[0]),
        sorted(&["index", "client_item_id", "tent_id", "tent_name", "status"])
    );
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["tent_id"], admitted["items"][0]["tent_id"]);
    assert_eq!(
        keys(&items[1]),
        sorted(&["index", "status", "error_code", "message"])
    );
    assert_eq!(items[1]["status"], "rejected");
    assert_eq!(items[1]["error_code"], "INVALID_ITEM");

    let b = h.wait_for(&path, |b| b["status"] == "running").await.body;
    assert_eq!(b["generating"], 2);
    assert_eq!(b["items"][0]["status"], "generating");

    // Generation done, publications pending: the job reads completed (status reflects
    // generation) while each item shows publication_status pending.
    let b = h.wait_for(&path, |b| b["status"] == "completed").await.body;
    assert_eq!(b["completed"], 2);
    assert_eq!(b["items"][0]["publication_status"], "pending");
    assert!(b["items"][0].get("published_url").is_none());

    let b = h.wait_job_final(&id).await.body;
    assert_eq!(b["status"], "completed");
    assert_eq!(
        (
            b["queued"].clone(),
            b["generating"].clone(),
            b["failed"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    let first = &b["items"][0];
    assert_eq!(first["publication_status"], "published");
    assert_eq!(
        first["published_url"],
        format!("{WORKSPACE}/acme-onboarding-jane")
    );
    assert_eq!(
        b["items"][2]["published_url"],
        format!("{WORKSPACE}/acme-onboarding-sarah")
    );
    let created = humantime::parse_rfc3339(b["created_at"].as_str().unwrap()).unwrap();
    let updated = humantime::parse_rfc3339(b["updated_at"].as_str().unwrap()).unwrap();
    assert!(
        updated >= created + ms(400),
        "updated_at follows the last transition"
    );
}

#[tokio::test]
async fn bulk_job_failures() {
    // Every generation fails: the job fails and failed items carry a message.
    let h = Harness::start(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .await;
    let id = h
        .bulk(json!({ "template_id": "tpl_a", "auto_publish": true, "items": [item(0), item(1)] }))
        .await
        .body["bulk_job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = h.wait_job_final(&id).await.body;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["failed"], 2);
    for it in b["items"].as_array().unwrap() {
        assert_eq!(it["status"], "failed");
        assert_eq!(it["message"], "Upstream generation failed.");
        assert!(
            it.get("publication_status").is_none(),
            "a failed generation has no publication"
        );
    }
    let tent = h
        .get(&format!(
            "/v1/tents/{}",
            b["items"][0]["tent_id"].as_str().unwrap()
        ))
        .await;
    assert!(tent.body.get("publication").is_none());

    // Half of the generations fail (seeded): completed_with_failures.
    let h = Harness::start(SimConfig {
        failure_rate: 0.5,
        seed: Some(42),
        ..fast()
    })
    .await;
    let items: Vec<Value> = (0..20).map(item).collect();
    let id = h
        .bulk(json!({ "template_id": "tpl_a", "items": items }))
        .await
        .body["bulk_job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = h.wait_job_final(&id).await.body;
    assert_eq!(b["status"], "completed_with_failures");
    let (completed, failed) = (
        b["completed"].as_u64().unwrap(),
        b["failed"].as_u64().unwrap(),
    );
    assert!(completed > 0 && failed > 0 && completed + failed == 20);
    for it in b["items"].as_array().unwrap() {
        assert!(
            it.get("publication_status").is_none(),
            "no auto_publish, no publication"
        );
    }
}

#[tokio::test]
async fn bulk_publication_outcomes() {
    let h = Harness::start(SimConfig {
        taken_aliases: vec!["taken".into()],
        ..fast()
    })
    .await;
    let body = json!({
        "template_id": "tpl_a",
        "auto_publish": true,
        "items": [
            { "input_data": {}, "custom_page_alias": "mine" },
            { "input_data": {}, "custom_page_alias": "taken" },
            { "input_data": {}, "custom_page_alias": "mine" },
            { "input_data": {}, "custom_page_alias": "/" },
            { "input_data": {} }
        ]
    });
    let admitted = h.bulk(body).await.body;
    let b = h
        .wait_job_final(admitted["bulk_job_id"].as_str().unwrap())
        .await
        .body;
    let tent = |i: usize| admitted["items"][i]["tent_id"].as_str().unwrap().to_owned();
    let expect = [
        ("published", format!("{WORKSPACE}/mine")),
        (
            "published_with_warnings",
            format!("{WORKSPACE}/{}", tent(1)),
        ),
        (
            "published_with_warnings",
            format!("{WORKSPACE}/{}", tent(2)),
        ),
        ("published", format!("{WORKSPACE}/")),
        ("published", format!("{WORKSPACE}/{}", tent(4))),
    ];
    for (i, (status, url)) in expect.iter().enumerate() {
        assert_eq!(b["items"][i]["publication_status"], *status, "item {i}");
        assert_eq!(b["items"][i]["published_url"], *url, "item {i}");
    }
    // Publish failures: no published_url.
    let h = Harness::start(SimConfig {
        publish_failure_rate: 1.0,
        ..fast()
    })
    .await;
    let admitted = h
        .bulk(json!({ "template_id": "tpl_a", "auto_publish": true,
                      "items": [ { "input_data": {}, "custom_page_alias": "x" } ] }))
        .await
        .body;
    let b = h
        .wait_job_final(admitted["bulk_job_id"].as_str().unwrap())
        .await
        .body;
    assert_eq!(b["status"], "completed");
    assert_eq!(b["items"][0]["publication_status"], "failed");
    assert!(b["items"][0].get("published_url").is_none());
}

// ---- GET /v1/tents/{id} ----------------------------------------------------------

#[tokio::test]
async fn tent_status_errors() {
    let h = Harness::start(fast()).await;
    for id in ["not-a-uuid", "12345", "f11ef3cf-8664-4fe5-a261"] {
        let reply = h.get(&format!("/v1/tents/{id}")).await;
        assert_eq!(reply.status, 400, "{id}");
    }
    assert_eq!(h.get("/v1/tents/").await.status, 400);
    let reply = h
        .get("/v1/tents/f11ef3cf-8664-4fe5-a261-c5b4d647b7d1")
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, json!({ "error": "Tent not found" }));
}

#[tokio::test]
async fn tent_status_lifecycle_and_retry_after() {
    let h = Harness::start(SimConfig {
        queue_time: (ms(100), ms(100)),
        generation_time: (ms(150), ms(150)),
        publish_time: (ms(150), ms(150)),
        ..fast()
    })
    .await;
    let created = h
        .post(
            "/v1/tents",
            json!({ "name": "Launch", "prompt": "Create a launch page",
                                   "auto_publish": true, "custom_page_alias": "launch-page" }),
        )
        .await;
    assert_eq!(created.status, 202);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tents/{id}");

    let queued = h.get(&path).await;
    assert_eq!(queued.status, 200);
    assert_eq!(queued.headers["retry-after"], "10");
    assert_eq!(
        keys(&queued.body),
        sorted(&["id", "status", "created_at", "updated_at"])
    );
    assert_eq!(queued.body["id"], id.as_str());
    assert_eq!(queued.body["status"], "queued");
    assert_timestamp(&queued.body["created_at"]);
    assert_eq!(queued.body["created_at"], created.body["created_at"]);

    let generating = h.wait_for(&path, |b| b["status"] == "generating").await;
    assert_eq!(generating.headers["retry-after"], "10");
    assert!(generating.body.get("result").is_none());

    let pending = h.wait_for(&path, |b| b["status"] == "completed").await;
    assert_eq!(
        pending.headers["retry-after"], "10",
        "publication pending counts as in progress"
    );
    assert_eq!(
        pending.body["publication"],
        json!({ "status": "pending", "requested_custom_page_alias": "launch-page" })
    );

    let done = h.wait_tent_final(&id).await;
    assert!(done.headers.get("retry-after").is_none());
    assert_eq!(
        keys(&done.body),
        sorted(&[
            "id",
            "status",
            "created_at",
            "updated_at",
            "result",
            "publication"
        ])
    );
    let result = &done.body["result"];
    assert_eq!(keys(result), sorted(&["tentId", "s3Key", "filePath"]));
    assert_eq!(result["tentId"], id.as_str());
    assert_eq!(result["filePath"], "index.html");
    let s3 = result["s3Key"].as_str().unwrap();
    assert!(
        s3.starts_with(&format!("tents/sim-org/{id}/"))
            && s3.contains(&id)
            && s3.ends_with("/index.html")
    );
    assert_eq!(
        done.body["publication"],
        json!({
            "status": "published",
            "published_url": format!("{WORKSPACE}/launch-page"),
            "requested_custom_page_alias": "launch-page",
            "applied_custom_page_alias": "launch-page"
        })
    );
    let created_at = humantime::parse_rfc3339(done.body["created_at"].as_str().unwrap()).unwrap();
    let updated_at = humantime::parse_rfc3339(done.body["updated_at"].as_str().unwrap()).unwrap();
    assert!(updated_at >= created_at + ms(400));
}

#[tokio::test]
async fn tent_status_failed_shape() {
    let h = Harness::start(SimConfig {
        failure_rate: 1.0,
        ..fast()
    })
    .await;
    let id = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a web page", "auto_publish": true }),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = h.wait_tent_final(&id).await;
    assert!(done.headers.get("retry-after").is_none());
    assert_eq!(
        keys(&done.body),
        sorted(&["id", "status", "created_at", "updated_at", "error"])
    );
    assert_eq!(done.body["status"], "failed");
    assert_eq!(done.body["error"], "Upstream generation failed.");
}

#[tokio::test]
async fn tent_publication_shapes() {
    let h = Harness::start(SimConfig {
        taken_aliases: vec!["launch-page".into()],
        ..fast()
    })
    .await;
    let create = |alias: Option<&str>| {
        let mut body = json!({ "name": "n", "prompt": "a landing page", "auto_publish": true });
        if let Some(a) = alias {
            body["custom_page_alias"] = json!(a);
        }
        body
    };
    let mut ids = Vec::new();
    for alias in [Some("launch-page"), Some("/"), None] {
        let reply = h.post("/v1/tents", create(alias)).await;
        assert_eq!(reply.status, 202);
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let taken = h.wait_tent_final(&ids[0]).await.body;
    assert_eq!(
        taken["publication"],
        json!({
            "status": "published_with_warnings",
            "published_url": format!("{WORKSPACE}/{}", ids[0]),
            "requested_custom_page_alias": "launch-page",
            "applied_custom_page_alias": null,
            "warnings": [ {
                "code": "CUSTOM_PAGE_ALIAS_UNAVAILABLE",
                "message": "Requested alias is already in use. Published using default tent URL."
            } ]
        })
    );
    let root = h.wait_tent_final(&ids[1]).await.body;
    assert_eq!(
        root["publication"],
        json!({
            "status": "published",
            "published_url": format!("{WORKSPACE}/"),
            "requested_custom_page_alias": "/",
            "applied_custom_page_alias": "/"
        })
    );
    let plain = h.wait_tent_final(&ids[2]).await.body;
    assert_eq!(
        plain["publication"],
        json!({
            "status": "published",
            "published_url": format!("{WORKSPACE}/{}", ids[2]),
            "applied_custom_page_alias": null
        })
    );
    // Without auto_publish there is no publication object.
    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(h
        .wait_tent_final(&id)
        .await
        .body
        .get("publication")
        .is_none());

    let h = Harness::start(SimConfig {
        publish_failure_rate: 1.0,
        ..fast()
    })
    .await;
    let id = h.post("/v1/tents", create(None)).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = h.wait_tent_final(&id).await.body;
    assert_eq!(failed["status"], "completed");
    assert_eq!(
        failed["publication"],
        json!({
            "status": "failed",
            "applied_custom_page_alias": null,
            "error": {
                "code": "PUBLISH_LIMIT_EXCEEDED",
                "message": "Free users can only have 1 published tent. Upgrade to publish more."
            }
        })
    );
}

#[tokio::test]
async fn retry_after_knob() {
    let h = Harness::start(SimConfig {
        retry_after_secs: Some(3),
        ..frozen()
    })
    .await;
    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        h.get(&format!("/v1/tents/{id}")).await.headers["retry-after"],
        "3"
    );

    let h = Harness::start(SimConfig {
        retry_after_secs: None,
        ..frozen()
    })
    .await;
    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = h.get(&format!("/v1/tents/{id}")).await;
    assert_eq!(reply.body["status"], "queued");
    assert!(reply.headers.get("retry-after").is_none());
}

// ---- POST /v1/tents --------------------------------------------------------------

#[tokio::test]
async fn create_validation() {
    let idle = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
    let h = Harness::start(SimConfig {
        idle_tents: vec![idle.into()],
        ..frozen()
    })
    .await;
    for raw in ["", "{oops", "[]"] {
        let reply = h.post_raw("/v1/tents", raw).await;
        assert_eq!(reply.status, 400, "{raw:?}");
        assert_eq!(reply.body["error"], "Invalid request");
    }
    let cases = [
        json!({ "prompt": "a landing page" }),
        json!({ "name": "", "prompt": "a landing page" }),
        json!({ "name": "n" }),
        json!({ "name": "n", "prompt": 5 }),
        json!({ "name": "n", "prompt": "a landing page", "asset_ids": ["asset_1"] }),
        json!({ "name": "n", "prompt": "a landing page", "custom_page_alias": "ok" }),
        json!({ "name": "n", "prompt": "a landing page", "custom_page_alias": "ok", "auto_publish": false }),
        json!({ "name": "n", "prompt": "a landing page", "auto_publish": true, "custom_page_alias": "Not OK" }),
        json!({ "name": "n", "prompt": "a landing page", "tent_id": "nope" }),
        json!({ "name": "n", "prompt": "a landing page", "auto_publish": "true" }),
    ];
    for body in cases {
        let reply = h.post("/v1/tents", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.body["error"], "Invalid request", "{body}");
        assert!(reply.body["message"].is_string());
    }
    let reply = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "Write me a poem about cats" }),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        json!({ "error": "Invalid request", "message": INTENT_MESSAGE, "code": "INVALID_PROMPT_INTENT" })
    );
    for prompt in [
        "A PAGE",
        "sign-up FORM",
        "my Website",
        "registration",
        "Landing",
        "web thing",
        "signup",
        "site",
    ] {
        let reply = h
            .post("/v1/tents", json!({ "name": "n", "prompt": prompt }))
            .await;
        assert_eq!(reply.status, 202, "{prompt}");
    }
    // 404 unknown tent, 404 unknown asset, then the idle tent works once, then 409.
    let unknown = "53e8237e-0c87-495d-8d10-946db64dbf8d";
    let reply = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a page", "tent_id": unknown }),
        )
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["error"], "Tent not found");
    let reply = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a page", "tent_id": idle,
                                   "asset_ids": ["01JPAEWP9PY5SCX1V6X03XK9M2"] }),
        )
        .await;
    assert_eq!(reply.status, 404);
    let reply = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a page", "tent_id": idle,
                                   "asset_ids": ["asset_logo", "asset_brief"] }),
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(keys(&reply.body), sorted(&["id", "status", "created_at"]));
    assert_eq!(reply.body["id"], idle);
    assert_eq!(reply.body["status"], "pending");
    assert_timestamp(&reply.body["created_at"]);
    let reply = h
        .post(
            "/v1/tents",
            json!({ "name": "n", "prompt": "a page", "tent_id": idle }),
        )
        .await;
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.body,
        json!({ "error": "Tent already has a generation" })
    );
    assert_eq!(
        h.get(&format!("/v1/tents/{idle}")).await.body["status"],
        "queued"
    );
}

#[tokio::test]
async fn create_charges_credits_and_answers_429_when_out() {
    let h = Harness::start(SimConfig {
        credits: Some(1),
        ..frozen()
    })
    .await;
    let body = json!({ "name": "n", "prompt": "a page" });
    let reply = h.post("/v1/tents", body.clone()).await;
    assert_eq!(reply.status, 202);
    assert_uuid_v4(&reply.body["id"]);
    let reply = h.post("/v1/tents", body.clone()).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, json!({ "error": "Insufficient credits" }));
    h.sim.set_credits(Some(1));
    assert_eq!(h.post("/v1/tents", body.clone()).await.status, 202);
    assert_eq!(h.sim.credits(), Some(0));
    h.sim.set_credits(None);
    assert_eq!(h.post("/v1/tents", body).await.status, 202);
}

// ---- POST /v1/tents/{id}/edit ----------------------------------------------------

#[tokio::test]
async fn edit_errors() {
    let idle = "f11ef3cf-8664-4fe5-a261-c5b4d647b7d1";
    let h = Harness::start(SimConfig {
        idle_tents: vec![idle.into()],
        credits: Some(1),
        ..frozen()
    })
    .await;
    let prompt = json!({ "prompt": "Make the header blue" });
    let unknown = h
        .post(
            "/v1/tents/53e8237e-0c87-495d-8d10-946db64dbf8d/edit",
            prompt.clone(),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body, json!({ "error": "Tent not found" }));
    assert_eq!(
        h.post("/v1/tents/not-a-uuid/edit", prompt.clone())
            .await
            .status,
        404
    );

    let reply = h
        .post(&format!("/v1/tents/{idle}/edit"), prompt.clone())
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        json!({
            "error": "Invalid request body",
            "details": { "issues": [ {
                "path": "tent_id",
                "message": "Tent has no existing generation. Use POST /v1/tents to create the first version."
            } ] }
        })
    );

    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let edit = format!("/v1/tents/{id}/edit");
    assert_eq!(h.post_raw(&edit, "{bad").await.status, 400);
    assert_eq!(h.post_raw(&edit, "").await.status, 400);
    let cases = [
        json!({}),
        json!({ "prompt": "" }),
        json!({ "prompt": "x", "custom_page_alias": "ok" }),
        json!({ "prompt": "x", "auto_publish": true, "custom_page_alias": "assets" }),
        json!({ "prompt": "x", "asset_ids": "asset_1" }),
        json!({ "prompt": "x", "asset_ids": ["asset_1", "asset_2", "asset_3", "asset_4", "asset_5", "asset_6"] }),
        json!({ "prompt": "x", "include_brand": "yes" }),
    ];
    for body in cases {
        let reply = h.post(&edit, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.body["error"], "Invalid request body");
        assert!(reply.body["details"]["issues"][0]["message"].is_string());
    }
    let reply = h
        .post(
            &edit,
            json!({ "prompt": "x", "asset_ids": ["01JPAEWP9PY5SCX1V6X03XK9M2"] }),
        )
        .await;
    assert_eq!(reply.status, 404);
    // The create used the only credit.
    let reply = h
        .post(&edit, json!({ "prompt": "x", "asset_ids": ["asset_1"] }))
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, json!({ "error": "Insufficient credits" }));
}

#[tokio::test]
async fn edit_restarts_the_lifecycle_with_a_new_generation() {
    let h = Harness::start(SimConfig {
        credits: Some(2),
        queue_time: (ms(100), ms(100)),
        ..fast()
    })
    .await;
    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = h.wait_tent_final(&id).await.body;
    assert_eq!(first["status"], "completed");
    assert!(first.get("publication").is_none());

    let reply = h
        .post(&format!("/v1/tents/{id}/edit"),
              json!({ "prompt": "Make the header blue", "auto_publish": true, "custom_page_alias": "blue" }))
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        keys(&reply.body),
        sorted(&["id", "generation_id", "status", "updated_at"])
    );
    assert_eq!(reply.body["id"], id.as_str());
    assert_eq!(reply.body["status"], "pending");
    assert_ulid(&reply.body["generation_id"]);
    assert_timestamp(&reply.body["updated_at"]);
    let generation_id = reply.body["generation_id"].as_str().unwrap().to_owned();
    assert_eq!(h.sim.credits(), Some(0));

    let again = h.get(&format!("/v1/tents/{id}")).await;
    assert_eq!(again.body["status"], "queued");
    assert!(again.body.get("result").is_none());
    assert_eq!(again.body["created_at"], first["created_at"]);
    assert_eq!(again.headers["retry-after"], "10");

    let done = h.wait_tent_final(&id).await.body;
    assert_eq!(done["status"], "completed");
    assert!(done["result"]["s3Key"]
        .as_str()
        .unwrap()
        .contains(&generation_id));
    assert_ne!(done["result"]["s3Key"], first["result"]["s3Key"]);
    assert_eq!(done["publication"]["status"], "published");
    assert_eq!(
        done["publication"]["published_url"],
        format!("{WORKSPACE}/blue")
    );

    // A bulk tent can be edited too; an edit re-requesting its own alias keeps it.
    h.sim.set_credits(None);
    let again = h
        .post(
            &format!("/v1/tents/{id}/edit"),
            json!({ "prompt": "again", "auto_publish": true, "custom_page_alias": "blue" }),
        )
        .await;
    assert_eq!(again.status, 202);
    assert_ne!(again.body["generation_id"], generation_id.as_str());
    let done = h.wait_tent_final(&id).await.body;
    assert_eq!(done["publication"]["status"], "published");
}

// ---- credits ---------------------------------------------------------------------

#[tokio::test]
async fn credits_are_charged_per_admitted_generation() {
    let h = Harness::start(SimConfig {
        credits: Some(10),
        ..frozen()
    })
    .await;
    h.bulk(json!({ "template_id": "tpl_a", "items": [item(0), item(1), {}] }))
        .await;
    assert_eq!(h.sim.credits(), Some(8));
    let id = h
        .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.sim.credits(), Some(7));
    assert_eq!(
        h.post(&format!("/v1/tents/{id}/edit"), json!({ "prompt": "x" }))
            .await
            .status,
        202
    );
    assert_eq!(h.sim.credits(), Some(6));
    // Control route.
    let reply = h
        .http
        .post(format!("{}/_sim/credits", h.base))
        .json(&json!({ "credits": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let b = h
        .bulk(json!({ "template_id": "tpl_a", "items": [item(0), item(1), item(2)] }))
        .await
        .body;
    assert_eq!(b["accepted_count"], 2);
    assert_eq!(b["items"][2]["error_code"], "INSUFFICIENT_CREDITS");
    let reply = h
        .http
        .post(format!("{}/_sim/credits", h.base))
        .json(&json!({ "credits": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(h.sim.credits(), None);
    let reply = h
        .http
        .post(format!("{}/_sim/credits", h.base))
        .json(&json!({ "credits": -1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
}

// ---- faults ----------------------------------------------------------------------

fn only(rates: FaultRates) -> EndpointFaults {
    EndpointFaults::all(rates)
}

#[tokio::test]
async fn injected_http_errors_admit_nothing() {
    let h = Harness::start(SimConfig {
        credits: Some(5),
        ..frozen()
    })
    .await;
    let cases = [
        (
            FaultRates {
                rate_429: 1.0,
                retry_after_429: Some(2),
                ..Default::default()
            },
            429,
            "429",
            Some("2"),
        ),
        (
            FaultRates {
                rate_429: 1.0,
                ..Default::default()
            },
            429,
            "429",
            None,
        ),
        (
            FaultRates {
                rate_500: 1.0,
                ..Default::default()
            },
            500,
            "500",
            None,
        ),
        (
            FaultRates {
                rate_503: 1.0,
                ..Default::default()
            },
            503,
            "503",
            None,
        ),
    ];
    for (rates, status, label, retry_after) in cases {
        h.sim.set_faults(only(rates));
        let reply = h
            .bulk(json!({ "template_id": "tpl_a", "items": [item(0)] }))
            .await;
        assert_eq!(reply.status, status);
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after
        );
        let reply = h
            .post("/v1/tents", json!({ "name": "n", "prompt": "a page" }))
            .await;
        assert_eq!(reply.status, status);
        let call = h.sim.calls().pop().unwrap();
        assert_eq!(call.fault.as_deref(), Some(label));
        assert_eq!(call.status, Some(status));
    }
    assert_eq!(h.sim.credits(), Some(5));

    // Per endpoint: faults on bulk_status leave the other endpoints alone.
    h.sim.set_faults(EndpointFaults {
        bulk_status: FaultRates {
            rate_503: 1.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let b = h
        .bulk(json!({ "template_id": "tpl_a", "items": [item(0)] }))
        .await;
    assert_eq!(b.status, 202);
    let job = h
        .get(&format!(
            "/v1/bulk-jobs/{}",
            b.body["bulk_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job.status, 503);
    let tent = h
        .get(&format!(
            "/v1/tents/{}",
            b.body["items"][0]["tent_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(tent.status, 200);
}

#[tokio::test]
async fn dropped_connections_are_real_and_admission_depends_on_when() {
    let h = Harness::start(SimConfig {
        credits: Some(5),
        ..frozen()
    })
    .await;
    let body = json!({ "template_id": "tpl_a", "items": [item(0), item(1)] });

    // drop_before closes the connection before anything is admitted, drop_after once
    // both items are; either way no answer comes, and the client does not retry.
    let cases = [
        (
            FaultRates {
                drop_before_rate: 1.0,
                ..Default::default()
            },
            "drop_before",
            5,
            "drop_before admits nothing",
        ),
        (
            FaultRates {
                drop_after_rate: 1.0,
                ..Default::default()
            },
            "drop_after",
            3,
            "drop_after admitted both items",
        ),
    ];
    for (n, (rates, label, credits, admitted)) in cases.into_iter().enumerate() {
        h.sim.set_faults(EndpointFaults {
            bulk_create: rates,
            ..Default::default()
        });
        let err = h
            .http
            .post(format!("{}/v1/tents/bulk", h.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect_err("the connection must be closed without an answer");
        assert!(err.status().is_none() && !err.is_timeout(), "{err:?}");
        assert_eq!(h.sim.credits(), Some(credits), "{admitted}");
        let calls = h.sim.calls();
        assert_eq!(calls.len(), n + 1, "the client did not retry");
        let call = calls.last().unwrap();
        assert_eq!(call.fault.as_deref(), Some(label));
        assert_eq!(call.status, None);
    }

    // The simulator keeps serving new connections.
    h.sim.set_faults(EndpointFaults::default());
    assert_eq!(h.bulk(body).await.status, 202);
}

#[tokio::test]
async fn hanging_requests_time_out_after_being_processed() {
    let h = Harness::start(SimConfig {
        credits: Some(5),
        ..frozen()
    })
    .await;
    h.sim.set_faults(EndpointFaults {
        create: FaultRates {
            hang_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let err = h
        .http
        .post(format!("{}/v1/tents", h.base))
        .bearer_auth(KEY)
        .json(&json!({ "name": "n", "prompt": "a page" }))
        .timeout(ms(200))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(h.sim.credits(), Some(4));
    let call = h.sim.calls().pop().unwrap();
    assert_eq!(call.fault.as_deref(), Some("hang"));
    assert_eq!(call.status, None);
    // Shutdown does not wait for the hung request.
    let started = Instant::now();
    h.sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn latency_knob_delays_answers() {
    let h = Harness::start(SimConfig {
        latency: (ms(120), ms(120)),
        ..frozen()
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        h.get("/v1/tents/f11ef3cf-8664-4fe5-a261-c5b4d647b7d1")
            .await
            .status,
        404
    );
    assert!(started.elapsed() >= ms(120));
    // Control routes are not delayed.
    let started = Instant::now();
    h.http
        .get(format!("{}/_sim/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < ms(120));
}

// ---- call log and control routes -------------------------------------------------

#[tokio::test]
async fn call_log_and_control_routes() {
    let h = Harness::start(frozen()).await;
    let health = h
        .http
        .get(format!("{}/_sim/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    h.bulk(json!({ "template_id": "tpl_a", "items": [item(0)] }))
        .await;
    h.get("/v1/bulk-jobs/01JQZB4H8A7T5B3R2W1X9Y6Z0K").await;
    h.send(h.http.get(format!(
        "{}/v1/tents/f11ef3cf-8664-4fe5-a261-c5b4d647b7d1",
        h.base
    )))
    .await;
    assert_eq!(h.get("/v1/unknown").await.status, 404);

    let calls = h.sim.calls();
    assert_eq!(calls.len(), 4, "/_sim routes are not recorded");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.seq, i as u64);
    }
    assert!(calls.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("POST", "/v1/tents/bulk")
    );
    assert_eq!(calls[0].body.as_ref().unwrap()["template_id"], "tpl_a");
    assert_eq!(calls[0].status, Some(202));
    assert!(calls[0].authorized && calls[0].fault.is_none());
    assert_eq!(calls[1].status, Some(404));
    assert!(calls[1].body.is_none());
    assert_eq!((calls[2].authorized, calls[2].status), (false, Some(401)));
    assert_eq!(calls[3].path, "/v1/unknown");

    let served: Value = h
        .http
        .get(format!("{}/_sim/calls", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(&calls).unwrap());

    let reply = h
        .http
        .post(format!("{}/_sim/api-key", h.base))
        .json(&json!({ "api_key": "new" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        h.get("/v1/bulk-jobs/01JQZB4H8A7T5B3R2W1X9Y6Z0K")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_completes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, fast(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let reply = http
        .get(format!("http://{addr}/_sim/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(http
        .get(format!("http://{addr}/_sim/healthz"))
        .send()
        .await
        .is_err());

    let h = Harness::start(fast()).await;
    let addr = h.sim.addr();
    h.sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let bad_idle = SimConfig {
        idle_tents: vec!["nope".into()],
        ..fast()
    };
    assert!(Simulator::start(bad_idle, "127.0.0.1:0").await.is_err());
    let bad_range = SimConfig {
        queue_time: (ms(5), ms(1)),
        ..fast()
    };
    assert!(Simulator::start(bad_range, "127.0.0.1:0").await.is_err());
}

// ---- the real binary with a config file ------------------------------------------

#[tokio::test]
async fn sim_command_reads_its_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        "[sim]\napi_key = \"file-key\"\n\n[sim.faults.all]\nrate_503 = 1.0\n",
    )
    .expect("write sim.toml");
    let port = crate::helpers::free_port();
    let listen = format!("127.0.0.1:{port}");
    let config_arg = config.display().to_string();
    let sim = BinaryDaemon::spawn(
        ["sim", "--listen", &listen, "--config", &config_arg],
        &dir.path().join("sim.log"),
        &[],
    )
    .labelled("the simulator");
    let base = format!("http://{listen}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");

    let healthz = wait_until("the simulator's /_sim/healthz", START_WAIT, || async {
        match http.get(format!("{base}/_sim/healthz")).send().await {
            Ok(reply) => Progress::Done(reply),
            Err(e) => match sim.exited() {
                Some(status) => {
                    Progress::Stop(format!("the simulator exited ({status}): {}", sim.stderr()))
                }
                None => Progress::NotYet(e.to_string()),
            },
        }
    })
    .await;
    assert_eq!(healthz.status(), 200);

    let reply = http
        .get(format!(
            "{base}/v1/tents/f11ef3cf-8664-4fe5-a261-c5b4d647b7d1"
        ))
        .bearer_auth("file-key")
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(reply.status(), 503, "[sim.faults.all] rate_503 = 1.0");
    let calls: Value = http
        .get(format!("{base}/_sim/calls"))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("the call log is JSON");
    assert_eq!(calls[0]["fault"], "503");
    assert_eq!(calls[0]["authorized"], true, "the file's api_key");

    sim.kill9().await;
}
