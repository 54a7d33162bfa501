//! History and the pause control (SPEC sections 2 and 8): `list`, `show`, `pause`, over
//! the real admin endpoint and through the real binary.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// A simulator whose generations take long enough for an operator to act between the
/// first chunk's admission and its completion.
fn unhurried_sim() -> SimConfig {
    SimConfig {
        generation_time: (Duration::from_millis(700), Duration::from_millis(900)),
        ..quick_sim()
    }
}

/// A daemon (the admin endpoint on the address returned, the control socket at the path
/// returned) running the manifest `held` of 50 items, its first chunk admitted and its
/// generations unhurried.
pub(crate) async fn held_after_its_first_chunk() -> (TestApp, String, PathBuf) {
    let admin = free_address();
    let app =
        TestApp::spawn_with(unhurried_sim(), &[("TENTED_BULKD__ADMIN__LISTEN", &admin)]).await;
    let socket = app.dir.path().join("control.sock");
    app.drop_manifest("held.json", &bulk_manifest(50));
    app.wait_calls("the first chunk admitted", |calls| {
        bulk_posts(calls).iter().any(|c| c.status == Some(202))
    })
    .await;
    (app, admin, socket)
}

async fn get(admin: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("the admin endpoint answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_manifest_sends_nothing_more_but_its_admitted_items_are_polled_to_the_end() {
    // Slow start holds the second chunk until the first one's items have answers, so the
    // pause lands between the two.
    let (mut app, admin, socket) = held_after_its_first_chunk().await;
    let (status, answer) = socket_post(&socket, "/manifests/held/pause").await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["message"].as_str().unwrap_or("").contains("paused"),
        "{answer}"
    );
    let (status, again) = socket_post(&socket, "/manifests/held/pause").await;
    assert_eq!(status, 409, "a second pause changes nothing: {again}");

    // What was admitted is still polled to the end...
    app.wait_manifest("held", "its first chunk completed", |m| {
        m.count(tented_bulkd::state::item::ItemState::Completed) == 25
    })
    .await;
    // ...and nothing more is sent, though the answers would have released the chunk and
    // two sweeper passes wake the submitter.
    app.daemon().sweeper_passes(2).await;
    assert_eq!(
        bulk_posts(&app.calls()).len(),
        1,
        "nothing more is sent while paused"
    );
    let (status, shown) = get(&admin, "/manifests/held").await;
    assert_eq!(status, 200);
    assert_eq!(shown["state"], "paused", "{shown}");
    assert_eq!(shown["reason"], "paused by the operator", "{shown}");
    assert_eq!(
        shown["requests"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    assert_eq!(shown["requests"][0]["state"], "done", "{shown}");

    let (status, answer) = socket_post(&socket, "/manifests/held/resume").await;
    assert_eq!(status, 200, "{answer}");
    let result = app.wait_result("held", WAIT).await;
    assert_eq!(result.counts.completed, 50);
    assert_eq!(bulk_posts(&app.calls()).len(), 2);
    let (status, answer) = socket_post(&socket, "/manifests/held/pause").await;
    assert_eq!(
        status, 409,
        "a finished manifest cannot be paused: {answer}"
    );
    let (status, answer) = socket_post(&socket, "/manifests/nope/pause").await;
    assert_eq!(status, 404, "{answer}");
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_print_tables_and_json_from_the_running_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    std::fs::write(dir.path().join("api_key"), "sim-key").expect("write the key file");
    let admin = free_address();
    let (config, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url())
            .set(
                "api",
                "key_file",
                dir.path().join("api_key").display().to_string(),
            )
            .set("admin", "listen", admin.as_str()),
        &[],
    )
    .await;
    let (code, stdout, _) = cli(&config, &["list"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim(), "no manifests in the store");

    drop_manifest(dir.path(), "first.json", &bulk_manifest(3));
    daemon
        .wait_for_file(&dir.path().join("outbox/first.result.json"), START_WAIT)
        .await
        .expect("the first result");
    let mut second = bulk_manifest(2);
    second["items"][1]["input_data"] = serde_json::json!(7);
    drop_manifest(dir.path(), "second.json", &second);
    daemon
        .wait_for_file(&dir.path().join("outbox/second.result.json"), START_WAIT)
        .await
        .expect("the second result");

    // The table: a header row, then the newest first.
    let (code, stdout, stderr) = cli(&config, &["list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["NAME", "KIND", "STATE", "STATUS", "ITEMS", "COUNTS", "RECEIVED", "FINISHED"]),
        "{stdout}"
    );
    assert!(lines[1].trim_start().starts_with("second"), "{stdout}");
    assert!(lines[1].contains("1 completed, 1 rejected"), "{stdout}");
    assert!(
        lines[2].trim_start().starts_with("first") && lines[2].contains("3 completed"),
        "{stdout}"
    );

    // JSON, with the limit.
    let (code, stdout, _) = cli(&config, &["list", "--json", "--limit", "1"]);
    assert_eq!(code, Some(0));
    let list: Value = serde_json::from_str(&stdout).expect("list --json is JSON");
    assert_eq!(
        list["manifests"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["manifests"][0]["name"], "second");
    assert_eq!(list["manifests"][0]["state"], "finished");
    assert_eq!(list["more"], true);

    // One manifest: its fields, its requests with their bulk_job_id, the result's path.
    let (code, stdout, stderr) = cli(&config, &["show", "first"]);
    assert_eq!(code, Some(0), "{stderr}");
    let result: ResultDocument = serde_json::from_slice(
        &std::fs::read(dir.path().join("outbox/first.result.json")).expect("result"),
    )
    .expect("a result document");
    let bulk_job_id = &result.bulk_jobs[0].bulk_job_id;
    assert!(stdout.contains(bulk_job_id), "{stdout}");
    assert!(stdout.contains("first.result.json"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some("FIELD")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("CLIENT_ITEM_ID"),
        "items only with --items: {stdout}"
    );
    let (code, stdout, _) = cli(&config, &["show", "second", "--items", "--json"]);
    assert_eq!(code, Some(0));
    let shown: Value = serde_json::from_str(&stdout).expect("show --json is JSON");
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(2), "{shown}");
    assert_eq!(shown["items"][1]["status"], "rejected");
    assert_eq!(shown["items"][1]["error_code"], "INVALID_ITEM");
    assert!(shown["items"][0]["tent_id"].is_string(), "{shown}");
    let (code, stdout, _) = cli(&config, &["show", "second", "--items"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("CLIENT_ITEM_ID") && stdout.contains("INVALID_ITEM"),
        "{stdout}"
    );

    // Unknown names and finished manifests: exit 1 with a message.
    let (code, _, stderr) = cli(&config, &["show", "nope"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no manifest named `nope`"), "{stderr}");
    let (code, stdout, stderr) = cli(&config, &["pause", "first"]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.is_empty(),
        "a refusal is an error, on stderr: {stdout}"
    );
    assert!(
        stderr.starts_with("tented-bulkd: ") && stderr.contains("already finished"),
        "{stderr}"
    );
    daemon.sigterm().await.expect("SIGTERM exits 0");
}

/// The JSON Schema `tented-bulkd schema WHICH` prints.
fn printed_schema(which: &str) -> Value {
    let output = succeeded(&mut command(["schema", which]), &format!("schema {which}"));
    serde_json::from_slice(&output.stdout).expect("a schema")
}

fn assert_valid(which: &str, value: &Value) {
    let schema = printed_schema(which);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{which}: {errors:?}\n{value:#}");
}

/// One vocabulary (issue 18): `show --json`, `list --json` and `status --json` (the same
/// JSON as `/manifests/NAME`, `/manifests` and `/status`) use the result file's names and
/// words, and each matches the schema `schema show|list|status` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_list_and_status_speak_the_result_files_words_and_match_their_schemas() {
    let admin = free_address();
    let app = TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__ADMIN__LISTEN", &admin)]).await;
    app.drop_manifest("words.json", &bulk_manifest(30));
    app.wait_result("words", WAIT).await;
    // The words themselves are compared here: the result file as raw JSON.
    let result = app
        .read_json("outbox/words.result.json")
        .expect("the result file");

    let (status, shown) = get(&admin, "/manifests/words?items=true").await;
    assert_eq!(status, 200, "{shown}");
    assert_valid("show", &shown);
    assert_eq!(shown["manifest"], result["manifest"], "{shown}");
    assert_eq!(shown["status"], result["status"], "{shown}");
    assert_eq!(shown["received_at"], result["received_at"], "{shown}");
    assert_eq!(shown["finished_at"], result["finished_at"], "{shown}");
    for (status, n) in result["counts"].as_object().expect("counts") {
        assert_eq!(&shown["counts"][status], n, "counts.{status}: {shown}");
    }
    let jobs = result["bulk_jobs"].as_array().expect("bulk_jobs");
    let requests = shown["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), jobs.len(), "{shown}");
    for (request, job) in requests.iter().zip(jobs) {
        assert_eq!(request["bulk_job_id"], job["bulk_job_id"], "{request}");
        assert_eq!(request["status"], job["status"], "{request}");
        assert_eq!(request["first_index"], job["first_index"], "{request}");
        assert!(request.get("remote_id").is_none(), "{request}");
    }

    let (status, listed) = get(&admin, "/manifests").await;
    assert_eq!(status, 200);
    assert_valid("list", &listed);
    let line = &listed["manifests"][0];
    assert_eq!(line["manifest"], "words.json", "{line}");
    assert_eq!(line["counts"]["total"], 30, "{line}");
    assert_eq!(
        line["counts"]["unknown"], 0,
        "every status, zeros included: {line}"
    );

    let (status, report) = get(&admin, "/status").await;
    assert_eq!(status, 200);
    assert_valid("status", &report);
}
