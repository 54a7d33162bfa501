//! The bulk pipeline end to end: a real simulator over loopback, a real sled store in a
//! temporary folder, real inbox/outbox/archive folders.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use tented_bulkd::simulator::SimConfig;
use tented_bulkd::state::control::Control;

use crate::helpers::*;

/// A 60-item manifest mixing every case: local rejections, an admission rejection,
/// generation failures, a taken alias, an applied alias, a given tent_name, an item
/// without client_item_id.
fn mixed_manifest() -> Value {
    let mut items: Vec<Value> = (0..60)
        .map(|i| json!({"client_item_id": format!("acme-{i:03}"), "input_data": {"first_name": format!("P{i}")}}))
        .collect();
    items[1]["custom_page_alias"] = json!("acme-one");
    items[3]["custom_page_alias"] = json!("Admin"); // local: not lowercase
    items[7].as_object_mut().map(|o| o.remove("input_data")); // local: no input_data
    items[12]["asset_ids"] = json!(["nope"]); // admission: NOT_FOUND
    items[20]["custom_page_alias"] = json!("taken-alias"); // published_with_warnings
    items[25]["tent_name"] = json!("Custom Name");
    items[30]["asset_ids"] =
        json!(["asset_1", "asset_2", "asset_3", "asset_4", "asset_5", "asset_6"]); // local: > 5
    items[50]
        .as_object_mut()
        .map(|o| o.remove("client_item_id"));
    json!({
        "kind": "bulk",
        "template_id": "tpl_acme",
        "client_job_descriptor": "Acme batch",
        "default_tent_name_prefix": "Acme",
        "start_index": 5,
        "auto_publish": true,
        "metadata": {"source": "test"},
        "items": items
    })
}

async fn sim_truth(base_url: &str, tent_id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base_url}/v1/tents/{tent_id}"))
        .bearer_auth("sim-key")
        .send()
        .await
        .expect("simulator answers")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_sixty_item_manifest_is_chunked_polled_and_reconciled() {
    let app = TestApp::spawn(SimConfig {
        failure_rate: 0.25,
        taken_aliases: vec!["taken-alias".into()],
        ..quick_sim()
    })
    .await;
    let manifest = mixed_manifest();
    app.drop_manifest("m60.json", &manifest);
    let result = app.wait_result("m60", WAIT).await;

    // The manifest as a whole.
    assert_eq!(result.manifest, "m60.json");
    assert_eq!(result.kind, ManifestKind::Bulk);
    assert_eq!(result.error, None);
    assert_eq!(result.status, FinalStatus::CompletedWithFailures);
    let counts = &result.counts;
    assert_eq!(counts.total, 60);
    assert_eq!(counts.rejected, 4);
    assert_eq!(counts.timed_out, 0);
    assert_eq!(counts.canceled, 0);
    assert_eq!(counts.unknown, 0);
    assert_eq!(counts.completed + counts.failed, 56);
    assert!(counts.failed > 0 && counts.completed > 0, "{counts:?}");
    assert!(result.received_at.ends_with('Z'));
    assert!(result.finished_at.as_deref().unwrap().ends_with('Z'));

    // Three bulk jobs: 23 + 24 + 10 items sent (local rejections left out).
    let shape: Vec<(u32, u32)> = result
        .bulk_jobs
        .iter()
        .map(|j| (j.first_index, j.items))
        .collect();
    assert_eq!(shape, vec![(0, 23), (25, 24), (50, 10)]);

    // Every item, keyed by client_item_id, in manifest order.
    let items = &result.items.0;
    assert_eq!(items.len(), 60);
    assert_eq!(items[50].0, "#50");
    assert_eq!(items[0].0, "acme-000");
    let local = ["acme-003", "acme-007", "acme-030"];
    for (index, (id, item)) in items.iter().enumerate() {
        assert_eq!(item.index as usize, index, "{id}");
        if local.contains(&id.as_str()) {
            assert_eq!(item.status, ItemState::Rejected, "{id}");
            assert_eq!(item.rejected_by, Some(RejectedBy::Local));
            assert_eq!(item.error_code, Some(ErrorCode::InvalidItem));
            let message = item.message.as_deref().unwrap();
            assert!(message.contains("m60.json"), "{message}");
            assert!(message.contains(&format!("item {index}")), "{message}");
            assert_eq!(item.tent_id, None);
            continue;
        }
        if id == "acme-012" {
            assert_eq!(item.status, ItemState::Rejected);
            assert_eq!(item.rejected_by, Some(RejectedBy::Api));
            assert_eq!(item.error_code, Some(ErrorCode::NotFound));
            assert!(item.message.as_deref().unwrap().contains("nope"));
            continue;
        }
        let tent_id = item.tent_id.as_deref().expect("admitted items have a tent");
        let expected_name = if index == 25 {
            "Custom Name".to_string()
        } else {
            format!("Acme {}", 5 + index)
        };
        assert_eq!(
            item.tent_name.as_deref(),
            Some(expected_name.as_str()),
            "{id}"
        );
        assert!(item.bulk_job_id.is_some());
        // The result agrees with what the simulator knows.
        let truth = sim_truth(&app.sim.base_url(), tent_id).await;
        assert_eq!(item.status.as_str(), truth["status"], "{id}");
        match item.status {
            ItemState::Completed => {
                let publication = item.publication.as_ref().expect("published");
                assert_eq!(publication.status, truth["publication"]["status"], "{id}");
                if index == 20 {
                    assert_eq!(publication.status, "published_with_warnings");
                    assert_eq!(
                        publication.warnings[0].code.as_deref(),
                        Some("CUSTOM_PAGE_ALIAS_UNAVAILABLE")
                    );
                    assert_eq!(publication.applied_custom_page_alias, None);
                    assert_eq!(
                        publication.requested_custom_page_alias.as_deref(),
                        Some("taken-alias")
                    );
                } else {
                    assert_eq!(publication.status, "published", "{id}");
                    assert!(publication.published_url.is_some());
                }
                if index == 1 {
                    assert_eq!(
                        publication.applied_custom_page_alias.as_deref(),
                        Some("acme-one")
                    );
                }
                assert_eq!(item.error_code, None);
            }
            ItemState::Failed => {
                assert_eq!(item.error_code, Some(ErrorCode::GenerationFailed));
                assert!(item.publication.is_none());
            }
            other => panic!("{id}: unexpected status {other:?}"),
        }
    }

    // What the simulator received.
    let calls = app.calls();
    let posts = bulk_posts(&calls);
    assert_eq!(posts.len(), 3);
    // Chunks in flight together may reach Tented in any order (each on its connection).
    let mut starts: Vec<i64> = posts
        .iter()
        .map(|c| c.body.as_ref().unwrap()["start_index"].as_i64().unwrap())
        .collect();
    starts.sort_unstable();
    assert_eq!(starts, vec![5, 30, 55]);
    for post in &posts {
        let body = post.body.as_ref().unwrap();
        assert!(body["items"].as_array().unwrap().len() <= 25);
        assert_eq!(body["template_id"], "tpl_acme");
        assert_eq!(body["metadata"]["source"], "test");
    }
    // Item 4 follows a left-out neighbour: it carries its default name explicitly.
    let first = posts
        .iter()
        .find(|c| c.body.as_ref().unwrap()["start_index"] == 5)
        .unwrap();
    let first_items = first.body.as_ref().unwrap()["items"]
        .as_array()
        .unwrap()
        .clone();
    let item4 = first_items
        .iter()
        .find(|i| i["client_item_id"] == "acme-004")
        .unwrap();
    assert_eq!(item4["tent_name"], "Acme 9");
    let item2 = first_items
        .iter()
        .find(|i| i["client_item_id"] == "acme-002")
        .unwrap();
    assert_eq!(
        item2.get("tent_name"),
        None,
        "no gap before item 2: no explicit name"
    );
    let sent = sent_client_ids(&calls);
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "no item sent twice");
    for id in local {
        assert!(
            !sent.contains(&id.to_string()),
            "{id} was rejected locally but sent"
        );
    }
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);

    // The retry manifest holds exactly the items that did not complete, as given.
    let retry = app
        .read_json("outbox/m60.retry.json")
        .expect("retry manifest");
    let retry_items = retry["items"].as_array().unwrap();
    let not_completed: Vec<usize> = result
        .items
        .values()
        .enumerate()
        .filter(|(_, i)| i.status != ItemState::Completed)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(retry_items.len(), not_completed.len());
    for (given, index) in retry_items.iter().zip(&not_completed) {
        assert_eq!(given, &manifest["items"][*index]);
    }
    assert_eq!(retry["template_id"], "tpl_acme");
    assert_eq!(retry["start_index"], 5);
    let bytes = serde_json::to_vec(&retry).unwrap();
    tented_bulkd::pipeline::intake::validation::validate_manifest(&bytes)
        .expect("the retry manifest is a valid manifest");

    // The manifest moved to the archive; the inbox is empty.
    assert!(app.path("archive/m60.json").exists());
    assert_eq!(std::fs::read_dir(app.path("inbox")).unwrap().count(), 0);
    let mut app = app;
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_run_resubmits_nothing_and_completes_the_result() {
    let mut app = TestApp::spawn(SimConfig {
        latency: (Duration::from_millis(150), Duration::from_millis(150)),
        generation_time: (Duration::from_millis(800), Duration::from_millis(1200)),
        ..quick_sim()
    })
    .await;
    app.drop_manifest("restart.json", &bulk_manifest(60));
    // Stop as soon as the first chunk has been admitted.
    app.wait_calls("an answered bulk request", |calls| {
        bulk_posts(calls).iter().any(|c| c.status.is_some())
    })
    .await;
    app.stop_daemon().await;
    let before = bulk_posts(&app.calls()).len();
    assert!(
        before < 3,
        "the restart must happen mid-run ({before} requests)"
    );

    app.start_daemon().await;
    let result = app.wait_result("restart", WAIT).await;
    assert_eq!(result.counts.completed, 60);
    assert_eq!(result.status, FinalStatus::Completed);
    let calls = app.calls();
    assert_eq!(bulk_posts(&calls).len(), 3, "exactly one request per chunk");
    let sent = sent_client_ids(&calls);
    assert_eq!(sent.len(), 60);
    assert_eq!(
        sent.iter().collect::<HashSet<_>>().len(),
        60,
        "no item sent twice"
    );
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

/// Each rule of SPEC section 4 that rejects a whole manifest, and what the error says.
fn bad_manifests() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good_item = json!({"input_data": {"a": 1}});
    vec![
        ("not-json.json", b"{ this is not json".to_vec(), "JSON"),
        ("not-utf8.json", vec![0xff, 0xfe, b'{', b'}'], "UTF-8"),
        ("array.json", b"[1, 2, 3]".to_vec(), "object"),
        (
            "bad-kind.json",
            serde_json::to_vec(
                &json!({"kind": "bulkk", "template_id": "tpl_x", "items": [good_item]}),
            )
            .unwrap(),
            "kind",
        ),
        (
            "no-template.json",
            serde_json::to_vec(&json!({"items": [good_item]})).unwrap(),
            "template_id",
        ),
        (
            "no-items.json",
            serde_json::to_vec(&json!({"template_id": "tpl_x", "items": []})).unwrap(),
            "items",
        ),
        (
            "dup-ids.json",
            serde_json::to_vec(&json!({"template_id": "tpl_x", "items": [
            {"client_item_id": "a", "input_data": {}}, {"client_item_id": "a", "input_data": {}}]}))
            .unwrap(),
            "duplicate",
        ),
        (
            "typo.json",
            serde_json::to_vec(&json!({"template_id": "tpl_x", "items": [
            {"input_data": {}, "tent_nmae": "x"}]}))
            .unwrap(),
            "did you mean `tent_name`",
        ),
        (
            "bad name!.json",
            serde_json::to_vec(&json!({"template_id": "tpl_x", "items": [good_item]})).unwrap(),
            "name",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_get_a_rejected_result_and_an_archive_copy_and_the_daemon_goes_on() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let bad = bad_manifests();
    for (file, bytes, _) in &bad {
        app.drop_bytes(file, bytes);
    }
    // Over 64 MiB (sparse, so the test stays cheap): rejected without being read.
    {
        let staging = app.path("huge.partial");
        let file = std::fs::File::create(&staging).unwrap();
        file.set_len(64 * 1024 * 1024 + 1).unwrap();
        std::fs::rename(&staging, app.path("inbox/huge.json")).unwrap();
    }
    // Files the daemon must ignore.
    std::fs::write(app.path("inbox/.hidden.json"), b"{}").unwrap();
    std::fs::write(app.path("inbox/notes.txt"), b"hello").unwrap();
    for (file, _, rule) in &bad {
        let name = if *file == "bad name!.json" {
            "bad_name_".to_string()
        } else {
            file.trim_end_matches(".json").to_string()
        };
        let result = app.wait_result(&name, WAIT).await;
        assert_eq!(result.status, FinalStatus::Rejected, "{file}");
        assert!(result.items.is_empty(), "{file}");
        assert_eq!(result.counts.total, 0);
        let error = result.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(file),
            "{file}: the error names the file: {error}"
        );
        assert!(
            error.to_lowercase().contains(&rule.to_lowercase()),
            "{file}: the error names the rule `{rule}`: {error}"
        );
        assert!(
            app.path(&format!("archive/{name}.json")).exists(),
            "{file} archived"
        );
        assert!(!app.path(&format!("outbox/{name}.retry.json")).exists());
    }
    let huge = app.wait_result("huge", WAIT).await;
    assert_eq!(huge.status, FinalStatus::Rejected);
    assert!(
        huge.error.as_deref().unwrap().contains("64 MiB"),
        "{:?}",
        huge.error
    );
    // Nothing was sent for any of them, and the daemon still works.
    assert!(bulk_posts(&app.calls()).is_empty());
    app.drop_manifest("good.json", &bulk_manifest(3));
    let result = app.wait_result("good", WAIT).await;
    assert_eq!(result.status, FinalStatus::Completed);
    assert!(
        app.path("inbox/.hidden.json").exists(),
        "hidden files are left alone"
    );
    assert!(
        app.path("inbox/notes.txt").exists(),
        "other suffixes are left alone"
    );
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_bytes_are_refused_and_a_reused_name_gets_a_suffix() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let first = bulk_manifest(2);
    app.drop_manifest("daily.json", &first);
    let r1 = app.wait_result("daily", WAIT).await;
    assert_eq!(r1.status, FinalStatus::Completed);

    // The same bytes again would pay twice.
    app.drop_manifest("daily.json", &first);
    let r2 = app.wait_result("daily~2", WAIT).await;
    assert_eq!(r2.status, FinalStatus::Rejected);
    assert_eq!(r2.manifest, "daily~2.json");
    let error = r2.error.as_deref().unwrap();
    assert!(
        error.contains("identical") && error.contains("`daily.json`"),
        "{error}"
    );

    // Different bytes under the same name: accepted under the next free name.
    let mut second = bulk_manifest(2);
    second["default_tent_name_prefix"] = json!("Other");
    app.drop_manifest("daily.json", &second);
    let r3 = app.wait_result("daily~3", WAIT).await;
    assert_eq!(r3.status, FinalStatus::Completed);
    for name in ["daily", "daily~2", "daily~3"] {
        assert!(
            app.path(&format!("archive/{name}.json")).exists(),
            "{name} archived"
        );
    }
    // Only the two accepted manifests were sent.
    assert_eq!(bulk_posts(&app.calls()).len(), 2);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_file_is_taken_only_once_complete() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let bytes = serde_json::to_vec_pretty(&bulk_manifest(30)).unwrap();
    let path = app.path("inbox/slow.json");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        // Written in pieces, each well within the settle time of the previous one (the
        // sleeps are the slow writer this test is about, not waits).
        for piece in bytes.chunks(bytes.len() / 10 + 1) {
            file.write_all(piece).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    let result = app.wait_result("slow", WAIT).await;
    assert_eq!(result.status, FinalStatus::Completed, "{:?}", result.error);
    assert_eq!(result.counts.total, 30);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_pauses_the_manifest_after_one_chunk_and_cancel_finishes_it() {
    let mut app = TestApp::spawn(SimConfig {
        templates: vec!["tpl_only_this_one".into()],
        ..quick_sim()
    })
    .await;
    app.drop_manifest("broken.json", &bulk_manifest(100));
    // Wait until the manifest is paused by the failure threshold.
    let id = app
        .wait_manifest("broken", "paused", |m| {
            matches!(m.control(), Control::Paused { .. })
        })
        .await;
    // A window in which nothing may be sent: two sweeper passes, each waking the submitter.
    app.daemon().sweeper_passes(2).await;
    assert_eq!(
        bulk_posts(&app.calls()).len(),
        1,
        "a broken template costs one chunk"
    );
    let status = tented_bulkd::admin::status_report(app.ctx());
    let listed = status
        .manifests
        .iter()
        .find(|m| m.name == "broken")
        .unwrap();
    assert_eq!(listed.state, "paused");
    assert!(listed
        .reason
        .as_deref()
        .unwrap()
        .contains("failure threshold"));

    let canceled = tented_bulkd::pipeline::controls::cancel(app.ctx(), id)
        .await
        .unwrap();
    assert_eq!(canceled, 75);
    let result = app.wait_result("broken", WAIT).await;
    assert_eq!(result.status, FinalStatus::Failed);
    assert_eq!(result.counts.rejected, 25);
    assert_eq!(result.counts.canceled, 75);
    let first = result_item(&result, "row-000");
    assert_eq!(first.rejected_by, Some(RejectedBy::Api));
    assert!(first.message.as_deref().unwrap().contains("404"));
    assert_eq!(result_item(&result, "row-099").status, ItemState::Canceled);
    assert_eq!(bulk_posts(&app.calls()).len(), 1);
    let retry = app.read_json("outbox/broken.retry.json").unwrap();
    assert_eq!(retry["items"].as_array().unwrap().len(), 100);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_failures_and_details_come_from_one_tent_fetch_each() {
    let mut app = TestApp::spawn(SimConfig {
        publish_failure_rate: 1.0,
        ..quick_sim()
    })
    .await;
    let mut manifest = bulk_manifest(5);
    manifest["auto_publish"] = json!(true);
    app.drop_manifest("pubfail.json", &manifest);
    let result = app.wait_result("pubfail", WAIT).await;
    assert_eq!(result.counts.completed, 5);
    let mut fetched: HashMap<String, usize> = HashMap::new();
    for call in app
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path.starts_with("/v1/tents/"))
    {
        *fetched.entry(call.path.clone()).or_default() += 1;
    }
    for item in result.items.values() {
        let publication = item.publication.as_ref().expect("a publication");
        assert_eq!(publication.status, "failed");
        let error = publication.error.as_ref().expect("the publication's error");
        assert_eq!(error.code.as_deref(), Some("PUBLISH_LIMIT_EXCEEDED"));
        let path = format!("/v1/tents/{}", item.tent_id.as_deref().unwrap());
        assert_eq!(fetched.get(&path), Some(&1), "one detail fetch for {path}");
    }
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_edit_manifests_run_one_request_per_item_and_edits_find_earlier_items() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let create = json!({
        "kind": "create",
        "defaults": {"include_brand": true, "auto_publish": true},
        "items": [
            {"client_item_id": "spring", "name": "Spring launch", "prompt": "Create a landing page for our spring launch", "custom_page_alias": "spring-launch"},
            {"client_item_id": "partner", "name": "Partner page", "prompt": "Build a registration page with a signup form", "auto_publish": false},
            {"client_item_id": "broken", "name": "No prompt"}
        ]
    });
    app.drop_manifest("launch.json", &create);
    let created = app.wait_result("launch", WAIT).await;
    assert_eq!(created.kind, ManifestKind::Create);
    assert_eq!(created.counts.completed, 2, "{created:#?}");
    assert_eq!(created.counts.rejected, 1);
    assert!(created.bulk_jobs.is_empty());
    let spring = result_item(&created, "spring");
    assert_eq!(spring.tent_name.as_deref(), Some("Spring launch"));
    let publication = spring.publication.as_ref().expect("published");
    assert_eq!(publication.status, "published");
    assert_eq!(
        publication.applied_custom_page_alias.as_deref(),
        Some("spring-launch")
    );
    assert!(result_item(&created, "partner").publication.is_none());
    assert_eq!(
        result_item(&created, "broken").rejected_by,
        Some(RejectedBy::Local)
    );
    let calls = app.calls();
    let creates: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/v1/tents")
        .collect();
    assert_eq!(creates.len(), 2, "one request per accepted item");
    // Several requests may be on the wire at once: the spring item's is found by its
    // name, whichever left first.
    let body = creates
        .iter()
        .filter_map(|c| c.body.as_ref())
        .find(|b| b["name"] == "Spring launch")
        .expect("the spring item's request");
    assert_eq!(body["include_brand"], true, "defaults apply");
    assert_eq!(body["custom_page_alias"], "spring-launch");
    assert_eq!(
        body.get("client_item_id"),
        None,
        "only documented fields are sent"
    );

    let spring_tent = spring.tent_id.clone().unwrap();
    let partner_tent = result_item(&created, "partner").tent_id.clone().unwrap();
    let edit = json!({
        "kind": "edit",
        "items": [
            {"client_item_id": "spring-v2", "target_client_item_id": "spring", "prompt": "Make the header blue", "auto_publish": true},
            {"client_item_id": "direct", "tent_id": partner_tent, "prompt": "Tighten the copy"},
            {"client_item_id": "ghost", "target_client_item_id": "no-such-item", "prompt": "Anything"}
        ]
    });
    app.drop_manifest("edits.json", &edit);
    let edited = app.wait_result("edits", WAIT).await;
    assert_eq!(edited.counts.completed, 2, "{edited:#?}");
    let v2 = result_item(&edited, "spring-v2");
    assert_eq!(v2.tent_id.as_deref(), Some(spring_tent.as_str()));
    assert!(v2.generation_id.is_some(), "edits report their generation");
    assert_ne!(
        v2.generation_id,
        result_item(&edited, "direct").generation_id
    );
    let ghost = result_item(&edited, "ghost");
    assert_eq!(ghost.status, ItemState::Rejected);
    assert!(
        ghost.message.as_deref().unwrap().contains("unknown"),
        "{ghost:?}"
    );
    let edits: Vec<_> = app
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/edit"))
        .collect();
    let paths: HashSet<String> = edits.iter().map(|c| c.path.clone()).collect();
    let expected: HashSet<String> = [&spring_tent, &partner_tent]
        .iter()
        .map(|t| format!("/v1/tents/{t}/edit"))
        .collect();
    assert_eq!(paths, expected);
    assert_eq!(v2.publication.as_ref().unwrap().status, "published");
    assert_poll_floor(&app.calls(), TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_whose_generations_all_fail_costs_one_chunk_thanks_to_slow_start() {
    let mut app = TestApp::spawn(SimConfig {
        failure_rate: 1.0,
        ..quick_sim()
    })
    .await;
    app.drop_manifest("doomed.json", &bulk_manifest(200));
    wait_until("`doomed` paused in the status report", WAIT, || async {
        let status = tented_bulkd::admin::status_report(app.ctx());
        status
            .manifests
            .iter()
            .any(|m| m.name == "doomed" && m.state == "paused")
    })
    .await;
    // The budget would have allowed all eight chunks long before the first failure
    // came back; slow start sent one.
    assert_eq!(bulk_posts(&app.calls()).len(), 1);
    app.stop_daemon().await;
}

/// How many create requests of the calls from `from` on went out before the first poll.
fn posts_before_the_first_poll(calls: &[tented_bulkd::simulator::RecordedCall]) -> usize {
    calls
        .iter()
        .take_while(|c| c.method != "GET")
        .filter(|c| c.method == "POST" && c.path == "/v1/tents/bulk")
        .count()
}

/// The slow start is per template (SPEC 7): a manifest of a template that has not
/// proven itself risks one chunk first and opens on its first successes; once the
/// template's items completed (within `submit.proven_for`), the next manifest of it
/// starts open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_template_starts_open_and_an_unproven_one_slow() {
    // Generations outlast two floors: a poll sees no success before the third floor.
    let mut app = TestApp::spawn(SimConfig {
        generation_time: (Duration::from_millis(400), Duration::from_millis(600)),
        ..quick_sim()
    })
    .await;
    app.drop_manifest("first.json", &bulk_manifest(100));
    let first = app.wait_result("first", WAIT).await;
    assert_eq!(first.counts.completed, 100, "{:?}", first.counts);
    assert_eq!(posts_before_the_first_poll(&app.calls()), 1);
    // The template did well: the next manifest of it sends every chunk at once.
    let from = app.calls().len();
    app.drop_manifest("second.json", &bulk_manifest(101));
    let second = app.wait_result("second", WAIT).await;
    assert_eq!(second.counts.completed, 101, "{:?}", second.counts);
    assert_eq!(posts_before_the_first_poll(&app.calls()[from..]), 5);
    assert_poll_floor(&app.calls(), TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

/// With `submit.proven_for = "0s"` no template is ever proven: every manifest starts
/// slow, even of a template that did well a moment ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_proven_templates_every_manifest_starts_slow() {
    let mut app = TestApp::spawn_with(
        SimConfig {
            generation_time: (Duration::from_millis(400), Duration::from_millis(600)),
            ..quick_sim()
        },
        &[("TENTED_BULKD__SUBMIT__PROVEN_FOR", "0s")],
    )
    .await;
    app.drop_manifest("first.json", &bulk_manifest(100));
    app.wait_result("first", WAIT).await;
    let from = app.calls().len();
    app.drop_manifest("second.json", &bulk_manifest(101));
    let second = app.wait_result("second", WAIT).await;
    assert_eq!(second.counts.completed, 101, "{:?}", second.counts);
    assert_eq!(posts_before_the_first_poll(&app.calls()[from..]), 1);
    assert_eq!(bulk_posts(&app.calls()[from..]).len(), 5);
    app.stop_daemon().await;
}

/// Learned generation times never hold the slow start back (SPEC 7): while a manifest
/// holds chunks back for its first answers, its first job is polled at the floor, for
/// its first successes, not at the learned end of a whole job. Here the template's jobs
/// were learned to take about 3 s; the next manifest's items take at most 0.2 s, and its
/// second chunk leaves within its first completions plus a floor (and some slack), not
/// after the learned 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_times_never_delay_the_second_chunk_past_the_first_successes() {
    let mut app = TestApp::spawn_with(
        SimConfig {
            generation_time: (Duration::from_millis(2_800), Duration::from_millis(3_000)),
            ..quick_sim()
        },
        &[("TENTED_BULKD__SUBMIT__PROVEN_FOR", "0s")],
    )
    .await;
    app.drop_manifest("teacher.json", &bulk_manifest(25));
    app.wait_result("teacher", WAIT).await;
    app.sim
        .set_generation_time((Duration::from_millis(100), Duration::from_millis(200)));
    let from = app.calls().len();
    app.drop_manifest("learner.json", &bulk_manifest(50));
    let learned = app.wait_result("learner", WAIT).await;
    assert_eq!(learned.counts.completed, 50, "{:?}", learned.counts);
    let calls = app.calls();
    let posts = bulk_posts(&calls[from..]);
    assert_eq!(posts.len(), 2);
    let gap = posts[1].at_ms - posts[0].at_ms;
    // Its first completions: at most queue 60 ms + generation 200 ms after admission
    // (answered within 100 ms); then at most a floor until a poll sees them; then a
    // second of slack for a loaded machine. The learned 3 s would miss this.
    let bound = 100 + 60 + 200 + TEST_FLOOR.as_millis() as u64 + 1_000;
    assert!(
        gap <= bound,
        "the second chunk left {gap} ms after the first (bound {bound} ms)"
    );
    assert_poll_floor(&app.calls(), TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_costs_one_chunk_even_after_a_good_manifest() {
    let mut app = TestApp::spawn(SimConfig {
        templates: vec!["tpl_test".into()],
        ..quick_sim()
    })
    .await;
    app.drop_manifest("good.json", &bulk_manifest(30));
    app.wait_result("good", WAIT).await;
    let from = app.calls().len();
    let mut broken = bulk_manifest(200);
    broken["template_id"] = json!("tpl_gone");
    app.drop_manifest("broken.json", &broken);
    wait_until("`broken` paused by the failure threshold", WAIT, || async {
        let status = tented_bulkd::admin::status_report(app.ctx());
        status
            .manifests
            .iter()
            .any(|m| m.name == "broken" && m.state == "paused")
    })
    .await;
    app.daemon().sweeper_passes(2).await;
    assert_eq!(
        bulk_posts(&app.calls()[from..]).len(),
        1,
        "a broken template costs one chunk"
    );
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_a_chunk_is_on_the_wire_ends_its_unadmitted_items_canceled() {
    use tented_bulkd::simulator::{EndpointFaults, FaultRates};
    let mut app = TestApp::spawn(SimConfig {
        latency: (Duration::from_millis(400), Duration::from_millis(400)),
        errors: EndpointFaults {
            bulk_create: FaultRates {
                rate_503: 1.0,
                ..FaultRates::default()
            },
            ..EndpointFaults::default()
        },
        ..quick_sim()
    })
    .await;
    app.drop_manifest("wire.json", &bulk_manifest(30));
    let id = app
        .wait_manifest("wire", "items sending", |m| {
            m.count(tented_bulkd::state::item::ItemState::Sending) > 0
        })
        .await;
    // 5 items are pending, 25 on the wire: cancel catches the 5 now, the 25 when the 503 comes.
    let canceled = tented_bulkd::pipeline::controls::cancel(app.ctx(), id)
        .await
        .unwrap();
    assert_eq!(canceled, 5);
    let result = app.wait_result("wire", Duration::from_secs(10)).await;
    assert_eq!(result.counts.canceled, 30, "{:?}", result.counts);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_of_one_tent_share_its_floor() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let create = json!({"kind": "create", "items": [
        {"client_item_id": "page", "name": "Page", "prompt": "Create a landing page"}
    ]});
    app.drop_manifest("one.json", &create);
    let created = app.wait_result("one", WAIT).await;
    assert_eq!(created.counts.completed, 1);
    let edit = json!({"kind": "edit", "items": [
        {"client_item_id": "e1", "target_client_item_id": "page", "prompt": "Make the header blue"},
        {"client_item_id": "e2", "target_client_item_id": "page", "prompt": "Add a testimonial section"}
    ]});
    app.drop_manifest("twice.json", &edit);
    let edited = app.wait_result("twice", WAIT).await;
    assert_eq!(edited.counts.completed, 2, "{edited:#?}");
    let calls = app.calls();
    let tent = result_item(&created, "page").tent_id.as_deref().unwrap();
    let polls = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path == format!("/v1/tents/{tent}"))
        .count();
    assert!(polls >= 2, "the tent was polled for both edits");
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_releases_a_paused_manifest_and_the_threshold_no_longer_pauses_it() {
    let mut app = TestApp::spawn(SimConfig {
        templates: vec!["tpl_only_this_one".into()],
        ..quick_sim()
    })
    .await;
    app.drop_manifest("again.json", &bulk_manifest(80));
    let id = app
        .wait_manifest("again", "paused", |m| {
            matches!(m.control(), Control::Paused { .. })
        })
        .await;
    assert_eq!(bulk_posts(&app.calls()).len(), 1);
    // The operator decides to go on anyway: every remaining chunk is sent, once.
    assert!(tented_bulkd::pipeline::controls::resume(app.ctx(), id)
        .await
        .unwrap());
    let result = app.wait_result("again", WAIT).await;
    assert_eq!(result.counts.rejected, 80, "{:?}", result.counts);
    let calls = app.calls();
    assert_eq!(bulk_posts(&calls).len(), 4);
    let sent = sent_client_ids(&calls);
    assert_eq!(sent.iter().collect::<HashSet<_>>().len(), 80);
    assert!(
        !tented_bulkd::pipeline::controls::resume(app.ctx(), id)
            .await
            .unwrap(),
        "nothing left to resume"
    );
    app.stop_daemon().await;
}

/// SPEC 7's fair share: a 5-item manifest dropped while a big one is sending gets its
/// request within a few create slots, and a high-priority manifest gets more slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_manifest_is_not_queued_behind_a_big_one() {
    let app = TestApp::spawn_with(
        SimConfig {
            latency: (Duration::from_millis(20), Duration::from_millis(40)),
            ..quick_sim()
        },
        &[
            ("TENTED_BULKD__API__REQUESTS_PER_SECOND", "40"),
            ("TENTED_BULKD__SUBMIT__FAILURE_THRESHOLD", "1"),
        ],
    )
    .await;
    let items = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"client_item_id": format!("{prefix}-{i}"), "input_data": {}}))
            .collect()
    };
    app.drop_manifest(
        "big.json",
        &json!({"template_id": "tpl_big", "items": items("big", 10_000)}),
    );
    let calls = app
        .wait_calls("the big manifest sending", |calls| {
            bulk_posts(calls).len() >= 5
        })
        .await;
    let before = bulk_posts(&calls).len();
    app.drop_manifest(
        "small.json",
        &json!({"template_id": "tpl_small", "priority": "low", "items": items("small", 5)}),
    );
    let calls = app
        .wait_calls("the small manifest's request", |calls| {
            bulk_posts(calls).iter().any(|c| {
                c.body
                    .as_ref()
                    .is_some_and(|b| b["template_id"] == "tpl_small")
            })
        })
        .await;
    let posts = bulk_posts(&calls);
    let position = posts
        .iter()
        .position(|c| {
            c.body
                .as_ref()
                .is_some_and(|b| b["template_id"] == "tpl_small")
        })
        .expect("posted");
    // Intake takes a moment; then a low-priority manifest waits for at most the sum of
    // the weights (3 slots) plus the requests already on the wire (4).
    assert!(
        position - before <= 10,
        "the small manifest's request came {} big requests after its drop",
        position - before
    );
    let small = app.wait_result("small", WAIT).await;
    assert_eq!(small.counts.total, 5);
    // (At the tests' 200 calls a second the big one's 400 requests take 2 s at least.)
    assert!(
        bulk_posts(&app.calls()).len() < 400,
        "the small manifest finished before the big one's 400 requests were all sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_temporary_files_a_crash_left_are_gone_after_a_start() {
    let mut app = TestApp::spawn(quick_sim()).await;
    app.stop_daemon().await;
    // What a crash between a result's writes and their renames leaves, and an
    // operator's file that only looks alike.
    let leftover = app.path("outbox/.daily.result.json.Ab12Cd.tmp");
    let foreign = app.path("outbox/.daily.notes.Ab12Cd.tmp");
    std::fs::write(&leftover, "{").expect("leftover");
    std::fs::write(&foreign, "notes").expect("foreign");
    app.start_daemon().await;
    wait_until("the leftover removed", Duration::from_secs(10), || async {
        (!leftover.exists()).then_some(())
    })
    .await;
    assert!(foreign.exists(), "only the daemon's temporary files go");
    app.stop_daemon().await;
}
