//! API faults and disk trouble, against the simulator's knobs: nothing lost, nothing sent
//! twice, never faster than the floor.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use tented_bulkd::simulator::{EndpointFaults, FaultRates, SimConfig, Simulator};
use tented_bulkd::state::job::JobState;

use crate::helpers::*;

fn assert_sent_once(calls: &[tented_bulkd::simulator::RecordedCall]) {
    let sent = sent_client_ids(calls);
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "an item was sent twice: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_without_sending_anything_twice() {
    let faults = FaultRates {
        rate_429: 0.15,
        rate_500: 0.15,
        rate_503: 0.15,
        retry_after_429: Some(1),
        ..FaultRates::default()
    };
    let mut app = TestApp::spawn(SimConfig {
        errors: EndpointFaults {
            bulk_create: faults.clone(),
            bulk_status: faults.clone(),
            tent_status: faults,
            ..EndpointFaults::default()
        },
        seed: Some(9),
        ..quick_sim()
    })
    .await;
    let mut manifest = bulk_manifest(75);
    manifest["auto_publish"] = json!(true);
    app.drop_manifest("flaky.json", &manifest);
    let result = app.wait_result("flaky", WAIT).await;
    assert_eq!(result.counts.completed, 75, "{:?}", result.counts);
    let calls = app.calls();
    let statuses: Vec<Option<u16>> = calls.iter().map(|c| c.status).collect();
    assert!(
        statuses.contains(&Some(429))
            && statuses.contains(&Some(500))
            && statuses.contains(&Some(503))
    );
    // Every chunk was admitted exactly once, whatever was refused before.
    let admitted: Vec<_> = bulk_posts(&calls)
        .into_iter()
        .filter(|c| c.status == Some(202))
        .collect();
    assert_eq!(admitted.len(), 3);
    let mut admitted_ids = Vec::new();
    for call in admitted {
        for item in call.body.as_ref().unwrap()["items"].as_array().unwrap() {
            admitted_ids.push(item["client_item_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(admitted_ids.iter().collect::<HashSet<_>>().len(), 75);
    // Refused polls are retried, but never faster than the floor.
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);
    // A 429 with Retry-After: 1 is honoured: the next request of that manifest comes later.
    let posts = bulk_posts(&calls);
    for pair in posts.windows(2) {
        if pair[0].status == Some(429) {
            assert!(pair[1].at_ms - pair[0].at_ms >= 1000, "Retry-After ignored");
        }
    }
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_never_resent_and_its_items_end_unknown() {
    let mut app = TestApp::spawn_with(
        SimConfig {
            errors: EndpointFaults {
                bulk_create: FaultRates {
                    hang_rate: 1.0,
                    ..FaultRates::default()
                },
                ..EndpointFaults::default()
            },
            ..quick_sim()
        },
        &[("TENTED_BULKD__API__TIMEOUT", "1s")],
    )
    .await;
    app.drop_manifest("lost.json", &bulk_manifest(30));
    let result = app.wait_result("lost", WAIT).await;
    assert_eq!(result.counts.unknown, 30);
    assert_eq!(result.status, FinalStatus::Failed);
    let item = result_item(&result, "row-000");
    assert_eq!(item.status, ItemState::Unknown);
    let message = item.message.as_deref().unwrap();
    assert!(
        message.contains("not resent") && message.contains("timeout"),
        "{message}"
    );
    // Two chunks, each sent once, though neither got an answer; both were admitted.
    let calls = app.calls();
    assert_eq!(bulk_posts(&calls).len(), 2);
    assert_sent_once(&calls);
    let retry = app.read_json("outbox/lost.retry.json").unwrap();
    assert_eq!(retry["items"].as_array().unwrap().len(), 30);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_after_sending_is_uncertain_but_polls_are_retried() {
    let mut app = TestApp::spawn(SimConfig {
        errors: EndpointFaults {
            bulk_create: FaultRates {
                drop_after_rate: 1.0,
                ..FaultRates::default()
            },
            ..EndpointFaults::default()
        },
        ..quick_sim()
    })
    .await;
    app.drop_manifest("dropped.json", &bulk_manifest(10));
    let result = app.wait_result("dropped", WAIT).await;
    assert_eq!(result.counts.unknown, 10, "{result:#?}");
    assert_eq!(bulk_posts(&app.calls()).len(), 1, "never resent");

    // Dropped polls, on the other hand, are simply tried again.
    app.sim.set_faults(EndpointFaults {
        bulk_status: FaultRates {
            drop_before_rate: 0.3,
            drop_after_rate: 0.3,
            ..FaultRates::default()
        },
        ..EndpointFaults::default()
    });
    app.drop_manifest("polls.json", &bulk_manifest(11));
    let result = app.wait_result("polls", WAIT).await;
    assert_eq!(result.counts.completed, 11, "{result:#?}");
    assert_poll_floor(&app.calls(), TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_could_not_connect_is_sent_once_the_api_is_back() {
    init_logs();
    // A port where nothing listens yet.
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let base_url = format!("http://127.0.0.1:{port}");
    let daemon = TestDaemon::start(test_settings(dir.path(), &base_url, &[])).await;
    drop_manifest(dir.path(), "later.json", &bulk_manifest(5));
    // The daemon tried to send the chunk, and could not connect (twice: once retried):
    // each try is a request recorded and then known not admitted (none reached a server:
    // the simulator below sees one request in all).
    let store = &daemon.ctx.store;
    wait_until("two bulk requests that could not connect", WAIT, || async {
        let refused = store
            .manifest_named("later")
            .expect("the store reads")
            .map(|id| {
                let jobs = store.jobs(id).expect("the store reads");
                jobs.iter()
                    .filter(|j| j.state() == JobState::NotAdmitted)
                    .count()
            })
            .unwrap_or(0);
        if refused >= 2 {
            Progress::Done(())
        } else {
            Progress::NotYet(format!("{refused} requests known not admitted"))
        }
    })
    .await;
    assert!(
        !dir.path().join("outbox/later.result.json").exists(),
        "a request that could not connect fails nothing"
    );
    let sim = Simulator::start(quick_sim(), &format!("127.0.0.1:{port}"))
        .await
        .expect("the simulator starts on the port");
    let result = wait_result_file(&dir.path().join("outbox/later.result.json"), WAIT).await;
    assert_eq!(result.counts.completed, 5, "{result:?}");
    assert_eq!(bulk_posts(&sim.calls()).len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pauses_every_call_turns_health_red_and_fails_nothing() {
    let admin = free_address();
    let mut app = TestApp::spawn_with(
        SimConfig {
            generation_time: (Duration::from_millis(600), Duration::from_millis(800)),
            ..quick_sim()
        },
        &[("TENTED_BULKD__ADMIN__LISTEN", admin.as_str())],
    )
    .await;
    let health = || async {
        reqwest::get(format!("http://{admin}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 200);
    app.drop_manifest("auth.json", &bulk_manifest(30));
    // Let the first chunk in, then rotate the key at Tented's end.
    app.wait_calls("the first bulk request", |calls| {
        !bulk_posts(calls).is_empty()
    })
    .await;
    app.sim.set_api_key("rotated");
    wait_until("/healthz answering 503", WAIT, || async {
        health().await == 503
    })
    .await;
    let status: Value = reqwest::get(format!("http://{admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["auth_paused"], true);
    assert!(
        !status.to_string().contains("sim-key"),
        "the key never appears in /status"
    );
    // While paused, calls go out only as rare probes (one per floor): a rate, measured over
    // a window in which nothing marks an event (the sleep is the measurement).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let unauthorized: Vec<_> = app
        .calls()
        .into_iter()
        .filter(|c| c.status == Some(401))
        .collect();
    assert!(
        unauthorized.len() <= 8,
        "{} calls while paused",
        unauthorized.len()
    );
    assert!(
        !app.result_path("auth").exists(),
        "nothing is failed because of a 401"
    );
    // The key works again: everything resumes and completes.
    app.sim.set_api_key("sim-key");
    let result = app.wait_result("auth", WAIT).await;
    assert_eq!(result.counts.completed, 30, "{:?}", result.counts);
    assert_eq!(health().await, 200);
    let calls = app.calls();
    assert_sent_once(
        &calls
            .iter()
            .filter(|c| c.status != Some(401))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tented_bulkd_api_calls_total{endpoint=\"bulk_status\",code=\"401\"}"),
        "{metrics}"
    );
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_running_out_pause_the_manifest_until_they_are_back() {
    let mut app = TestApp::spawn_with(
        SimConfig {
            credits: Some(30),
            ..quick_sim()
        },
        // One request on the wire at a time: which of two concurrent chunks reaches the
        // last credits first is a race, and this test pins which items are refused.
        &[
            ("TENTED_BULKD__SUBMIT__CREDIT_RETRY", "700ms"),
            ("TENTED_BULKD__SUBMIT__MAX_IN_FLIGHT", "1"),
        ],
    )
    .await;
    app.drop_manifest("credits.json", &bulk_manifest(60));
    // The second chunk runs out after 5 items: the manifest waits for credits.
    wait_until("the manifest waiting for credits", WAIT, || async {
        let status = tented_bulkd::admin::status_report(app.ctx());
        status.manifests.iter().any(|m| m.state == "credit_wait")
    })
    .await;
    // While credits are out, only the refused items are tried (every credit_retry); the
    // third chunk waits.
    let calls = app
        .wait_calls("the refused items tried again", |calls| {
            bulk_posts(calls).len() >= 3
        })
        .await;
    let during: Vec<_> = bulk_posts(&calls);
    for call in &during[2..] {
        for item in call.body.as_ref().unwrap()["items"].as_array().unwrap() {
            let id = item["client_item_id"].as_str().unwrap();
            assert!(
                ("row-030".."row-050").contains(&id),
                "{id} sent while credits were out"
            );
        }
    }
    assert!(!app.result_path("credits").exists());
    app.sim.set_credits(Some(1000));
    let result = app.wait_result("credits", WAIT).await;
    assert_eq!(result.counts.completed, 60, "{:?}", result.counts);
    // Items refused for credits were sent again, with the names one large batch gives them.
    for (id, item) in &result.items.0 {
        assert_eq!(
            item.tent_name.as_deref(),
            Some(format!("Test {}", item.index + 1).as_str()),
            "{id}"
        );
    }
    // Apart from those, nothing was sent twice.
    let calls = app.calls();
    let mut times_sent: HashMap<String, usize> = HashMap::new();
    for id in sent_client_ids(&calls) {
        *times_sent.entry(id).or_default() += 1;
    }
    assert_eq!(times_sent.len(), 60, "every item was sent");
    for (id, times) in &times_sent {
        if !("row-030".."row-050").contains(&id.as_str()) {
            assert_eq!(*times, 1, "{id} was sent {times} times");
        }
    }
    let accepted_posts = bulk_posts(&calls);
    let last = accepted_posts.last().unwrap();
    assert_eq!(last.status, Some(202));
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_that_cannot_be_written_keeps_the_result_pending_until_it_can() {
    let mut app = TestApp::spawn(quick_sim()).await;
    // The outbox is replaced by a plain file: every write into it fails.
    std::fs::remove_dir_all(app.path("outbox")).unwrap();
    std::fs::write(app.path("outbox"), b"not a folder").unwrap();
    app.drop_manifest("blocked.json", &bulk_manifest(3));
    let id = app
        .wait_manifest("blocked", "every item final", |m| {
            m.finished_at_ms.is_some()
        })
        .await;
    let pending = || {
        !app.ctx()
            .store
            .manifest(id)
            .expect("the store reads")
            .expect("the record")
            .result_written
    };
    assert!(pending());
    // The sweeper tries again, and fails again: the result stays pending.
    app.daemon().sweeper_passes(2).await;
    assert!(pending(), "a result recorded as written into a plain file");
    assert!(!app.result_path("blocked").exists());
    // The folder comes back: the sweeper writes the result.
    std::fs::remove_file(app.path("outbox")).unwrap();
    std::fs::create_dir(app.path("outbox")).unwrap();
    let result = app.wait_result("blocked", WAIT).await;
    assert_eq!(result.counts.completed, 3);
    assert_eq!(bulk_posts(&app.calls()).len(), 1);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_twenty_manifests_with_every_fault_at_a_modest_rate() {
    let faults = FaultRates {
        rate_429: 0.03,
        rate_500: 0.03,
        rate_503: 0.03,
        retry_after_429: Some(1),
        drop_before_rate: 0.02,
        drop_after_rate: 0.02,
        ..FaultRates::default()
    };
    let mut app = TestApp::spawn(SimConfig {
        errors: EndpointFaults::all(faults),
        failure_rate: 0.05,
        publish_failure_rate: 0.05,
        latency: (Duration::ZERO, Duration::from_millis(20)),
        seed: Some(2026),
        ..quick_sim()
    })
    .await;
    for m in 0..20 {
        let mut manifest = bulk_manifest(100);
        for item in manifest["items"].as_array_mut().unwrap() {
            let id = format!("m{m:02}-{}", item["client_item_id"].as_str().unwrap());
            item["client_item_id"] = json!(id);
        }
        manifest["default_tent_name_prefix"] = json!(format!("Soak {m}"));
        manifest["auto_publish"] = json!(m % 2 == 0);
        app.drop_manifest(&format!("soak-{m:02}.json"), &manifest);
    }
    let mut totals = (0u64, 0u64);
    for m in 0..20 {
        let result = app
            .wait_result(&format!("soak-{m:02}"), Duration::from_secs(120))
            .await;
        let counts = &result.counts;
        assert_eq!(counts.total, 100);
        let sum = counts.completed
            + counts.failed
            + counts.rejected
            + counts.timed_out
            + counts.canceled
            + counts.unknown;
        assert_eq!(sum, 100, "{counts:?}");
        assert_eq!(counts.timed_out, 0);
        // Every unknown item comes from a request whose connection dropped after sending.
        for (id, item) in &result.items.0 {
            if item.status == ItemState::Unknown {
                assert!(
                    item.message.as_deref().unwrap().contains("not resent"),
                    "{id}"
                );
            }
        }
        totals.0 += u64::from(counts.completed);
        totals.1 += u64::from(counts.unknown);
    }
    let calls = app.calls();
    assert_sent_once(
        &calls
            .iter()
            .filter(|c| matches!(c.status, Some(202)) || c.fault.as_deref() == Some("drop_after"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_poll_floor(&calls, TEST_FLOOR, Duration::ZERO);
    assert!(totals.0 > 1500, "most items complete: {totals:?}");
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_that_answers_404_for_over_ten_minutes_fails_its_unfinished_items() {
    let mut app = TestApp::spawn(SimConfig {
        generation_time: (Duration::from_secs(30), Duration::from_secs(40)),
        // Every call stays on the wire this long: the clock skip below lands in that time.
        latency: (Duration::from_millis(150), Duration::from_millis(150)),
        ..quick_sim()
    })
    .await;
    app.drop_manifest("vanished.json", &bulk_manifest(5));
    let store = &app.ctx().store;
    let bulk_job_id = wait_until("the bulk job admitted", WAIT, || async {
        store
            .manifest_named("vanished")
            .expect("the store reads")
            .and_then(|id| store.jobs(id).expect("the store reads").into_iter().next())
            .and_then(|job| job.admission().map(|a| a.remote_id.to_owned()))
    })
    .await;
    assert!(app.sim.forget_bulk_job(&bulk_job_id));
    let path = format!("/v1/bulk-jobs/{bulk_job_id}");
    let answered_404 = |calls: &[tented_bulkd::simulator::RecordedCall]| {
        calls
            .iter()
            .filter(|c| c.path == path && c.status == Some(404))
            .count()
    };
    // A few 404s within the limit change nothing.
    app.wait_calls(
        "three polls answered 404 after the job vanished, and a fourth on the wire",
        |calls| {
            answered_404(calls) >= 3 && calls.iter().any(|c| c.path == path && c.status.is_none())
        },
    )
    .await;
    assert!(!app.result_path("vanished").exists());
    // Ten minutes later (the daemon's clock skips them), the items fail with that reason.
    // The skip lands while a poll is on the wire, not while the daemon turns an answer
    // into the next due time: a due time computed before the jump and scheduled after it
    // would be due at once, and the floor below (in real time) would not hold.
    app.ctx().clock.skip(Duration::from_secs(601));
    let result = app.wait_result("vanished", WAIT).await;
    assert_eq!(result.counts.failed, 5, "{result:#?}");
    let message = result_item(&result, "row-000").message.as_deref().unwrap();
    assert!(
        message.contains("404") && message.contains("10 minutes"),
        "{message}"
    );
    assert_poll_floor(&app.calls(), TEST_FLOOR, Duration::ZERO);
    app.stop_daemon().await;
}
