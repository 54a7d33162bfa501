//! Retention (SPEC section 8): finished manifests are pruned after `retention.store`; what
//! stays (the name, the bytes' hash, a summary) keeps names unique, refuses duplicates,
//! shows in `list`, and turns edits that name a pruned item into a clear rejection.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_manifest_leaves_a_summary_that_still_refuses_duplicates_and_reused_names() {
    let mut app =
        TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__RETENTION__STORE", "1s")]).await;
    let old = bulk_manifest(3);
    app.drop_manifest("old.json", &old);
    let result = app.wait_result("old", WAIT).await;
    assert_eq!(result["counts"]["completed"], 3);
    let store = app.ctx().store.clone();
    let id = store.manifest_named("old").expect("reads").expect("named");
    wait_until("the manifest pruned", WAIT, || async {
        store.summary(id).expect("reads").is_some() && store.manifest(id).expect("reads").is_none()
    })
    .await;
    assert!(store.items(id).expect("reads").is_empty());
    assert!(store.jobs(id).expect("reads").is_empty());
    assert!(store
        .items_with_client_id("row-000")
        .expect("reads")
        .is_empty());
    assert!(
        app.result_path("old").exists(),
        "result files are the operator's: untouched"
    );

    // `list` and `show` still know it, as pruned.
    let list = tented_bulkd::history::list(app.ctx(), 10).expect("lists");
    let line = &list.manifests[0];
    assert_eq!((line.name.as_str(), line.state.as_str()), ("old", "pruned"));
    assert_eq!(line.status.as_deref(), Some("completed"));
    assert_eq!(line.counts.get("completed"), Some(&3));
    assert_eq!(line.total, 3);
    let shown = tented_bulkd::history::show(app.ctx(), "old", true)
        .expect("reads")
        .expect("found");
    assert!(shown.pruned_at.is_some() && shown.items.is_none() && shown.requests.is_empty());

    // The same bytes again: refused, naming the pruned manifest.
    app.drop_manifest("again.json", &old);
    let again = app.wait_result("again", WAIT).await;
    assert_eq!(again["status"], "rejected");
    let error = again["error"].as_str().expect("an error");
    assert!(error.contains("old.json"), "{error}");

    // An edit that names a pruned item by client_item_id: rejected, saying so.
    app.drop_manifest(
        "edit.json",
        &json!({"kind": "edit", "items": [{"target_client_item_id": "row-001", "prompt": "p"}]}),
    );
    let edit = app.wait_result("edit", WAIT).await;
    let item = &edit["items"]["#0"];
    assert_eq!(item["status"], "rejected", "{edit}");
    let message = item["message"].as_str().expect("a message");
    assert!(
        message.contains("pruned") && message.contains("tent_id"),
        "{message}"
    );

    // The name is never reused.
    app.drop_manifest("old.json", &bulk_manifest(2));
    let second = app.wait_result("old~2", WAIT).await;
    assert_eq!(second["counts"]["completed"], 2);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retention_off_nothing_is_pruned() {
    let mut app =
        TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__RETENTION__STORE", "off")]).await;
    app.drop_manifest("kept.json", &bulk_manifest(2));
    app.wait_result("kept", WAIT).await;
    let id = app
        .ctx()
        .store
        .manifest_named("kept")
        .expect("reads")
        .expect("named");
    // Several sweeper passes: far longer than a short retention would have needed.
    app.daemon().sweeper_passes(3).await;
    assert!(app.ctx().store.summary(id).expect("reads").is_none());
    assert_eq!(app.ctx().store.items(id).expect("reads").len(), 2);
    let pruned = tented_bulkd::pipeline::retention::prune_due(
        app.ctx(),
        std::time::Duration::from_millis(1),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("prunes");
    assert_eq!(pruned, 1, "called directly, the pruner would prune it");
    assert!(app.ctx().store.summary(id).expect("reads").is_some());
    app.stop_daemon().await;
}
