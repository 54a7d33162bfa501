//! Retention (SPEC section 8): finished manifests are pruned after `retention.store`; what
//! stays (the name, the bytes' hash, a summary) keeps names unique, refuses duplicates,
//! shows in `list`, and turns edits that name a pruned item into a clear rejection.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_manifest_leaves_a_summary_that_still_refuses_duplicates_and_reused_names() {
    let mut app =
        TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__RETENTION__STORE", "1s")]).await;
    let old = bulk_manifest(3);
    app.drop_manifest("old.json", &old);
    let result = app.wait_result("old", WAIT).await;
    assert_eq!(result.counts.completed, 3);
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
    assert_eq!(line.total(), 3);
    let shown = tented_bulkd::history::show(app.ctx(), "old", true)
        .expect("reads")
        .expect("found");
    assert!(shown.pruned_at.is_some() && shown.items.is_none() && shown.requests.is_empty());

    // The same bytes again: refused, naming the pruned manifest.
    app.drop_manifest("again.json", &old);
    let again = app.wait_result("again", WAIT).await;
    assert_eq!(again.status, FinalStatus::Rejected);
    let error = again.error.as_deref().expect("an error");
    assert!(error.contains("old.json"), "{error}");

    // An edit that names a pruned item by client_item_id: rejected, saying so.
    app.drop_manifest(
        "edit.json",
        &json!({"kind": "edit", "items": [{"target_client_item_id": "row-001", "prompt": "p"}]}),
    );
    let edit = app.wait_result("edit", WAIT).await;
    let item = result_item(&edit, "#0");
    assert_eq!(item.status, ItemState::Rejected, "{edit:?}");
    let message = item.message.as_deref().expect("a message");
    assert!(
        message.contains("pruned") && message.contains("tent_id"),
        "{message}"
    );

    // The name is never reused.
    app.drop_manifest("old.json", &bulk_manifest(2));
    let second = app.wait_result("old~2", WAIT).await;
    assert_eq!(second.counts.completed, 2);
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retention_off_nothing_is_pruned() {
    let mut app =
        TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__RETENTION__STORE", "off")]).await;
    app.drop_manifest("kept.json", &bulk_manifest(2));
    app.wait_result("kept", WAIT).await;
    let id = app.manifest_id("kept");
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

/// The status page's recently finished manifests are `list`'s finished ones, pruned
/// included, in its order: the manifests in flight are passed over unread and take no
/// place in the limit. `show` agrees with `list` on every line, pruned or whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recently_finished_are_lists_finished_ones_and_show_agrees_with_list() {
    let mut app =
        TestApp::spawn_with(quick_sim(), &[("TENTED_BULKD__RETENTION__STORE", "off")]).await;
    let manifest = |prefix: &str| {
        let mut m = bulk_manifest(2);
        m["default_tent_name_prefix"] = json!(prefix);
        m
    };
    let ctx = app.ctx().clone();
    for name in ["old-1", "old-2", "new-1", "new-2"] {
        app.drop_manifest(&format!("{name}.json"), &manifest(name));
        app.wait_result(name, WAIT).await;
        if name == "old-2" {
            // The result file comes before the commit that says it is written.
            wait_until("nothing in flight", WAIT, || async {
                ctx.active_ids().is_empty()
            })
            .await;
            let token = tokio_util::sync::CancellationToken::new();
            let pruned = tented_bulkd::pipeline::retention::prune_due(
                &ctx,
                Duration::from_millis(1),
                &token,
            )
            .await
            .expect("prunes");
            assert_eq!(pruned, 2);
        }
    }
    // The newest stays in flight: Tented is out of credits.
    app.sim.set_credits(Some(0));
    app.drop_manifest("waiting.json", &manifest("waiting"));
    wait_until(
        "`waiting` in credit_wait, alone in flight",
        WAIT,
        || async {
            let id = ctx.store.manifest_named("waiting").ok().flatten();
            let waits = tented_bulkd::history::status_report(&ctx)
                .manifests
                .iter()
                .any(|m| m.name == "waiting" && m.state == "credit_wait");
            waits && id.is_some_and(|id| ctx.active_ids() == [id])
        },
    )
    .await;

    let list = tented_bulkd::history::list(&ctx, 50).expect("lists");
    let states: Vec<(&str, &str)> = list
        .manifests
        .iter()
        .map(|l| (l.name.as_str(), l.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("waiting", "credit_wait"),
            ("new-2", "finished"),
            ("new-1", "finished"),
            ("old-2", "pruned"),
            ("old-1", "pruned"),
        ]
    );
    let finished = &list.manifests[1..];
    for limit in 0..=5 {
        let recent = tented_bulkd::history::recent_finished(&ctx, limit).expect("reads");
        assert_eq!(recent, finished[..limit.min(4)], "limit {limit}");
    }
    for line in &list.manifests {
        let shown = tented_bulkd::history::show(&ctx, &line.name, false)
            .expect("reads")
            .expect("found");
        assert_eq!(&shown.line, line);
    }
    app.stop_daemon().await;
}

/// sled does not give back all the space that pruning frees: once the store's files pass
/// `retention.compact_above_mib` and four times what its records hold, the pruner has the
/// daemon open the store again, which compacts it into `state/store-1`; the daemon goes
/// on with nothing lost and nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_grown_past_its_records_is_compacted_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let (_, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url())
            .set("api", "requests_per_second", 200)
            .set("retention", "store", "1s")
            .set("retention", "compact_above_mib", 1),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;
    let mut compacted_after = None;
    for m in 0..16 {
        let mut manifest = bulk_manifest(250);
        manifest["default_tent_name_prefix"] = json!(format!("Compact {m}"));
        drop_manifest(dir.path(), &format!("m{m:02}.json"), &manifest);
        let result = daemon
            .wait_result(dir.path(), &format!("m{m:02}"), Duration::from_secs(60))
            .await
            .expect("the result");
        assert_eq!(result.counts.completed, 250, "m{m:02}");
        if daemon.stderr().contains("store compacted") {
            compacted_after = Some(m);
            break;
        }
    }
    let Some(compacted_after) = compacted_after else {
        panic!("never compacted:\n{}", daemon.stderr_tail(30));
    };
    let state = dir.path().join("state");
    let current = std::fs::read_to_string(state.join("CURRENT")).expect("CURRENT");
    let current = current.trim();
    assert!(current.starts_with("store-"), "{current}");
    assert!(state.join(current).join("db").exists());
    let mut folders: Vec<String> = std::fs::read_dir(&state)
        .expect("state folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert!(
        !folders
            .iter()
            .any(|f| f == "db" || (f.starts_with("store-") && f != current)),
        "the old files are gone: {folders:?}"
    );
    // It goes on: a manifest after the compaction is taken and sent.
    let after = format!("m{:02}", compacted_after + 1);
    drop_manifest(dir.path(), &format!("{after}.json"), &bulk_manifest(30));
    let result = daemon
        .wait_result(dir.path(), &after, Duration::from_secs(60))
        .await
        .expect("a result after the compaction");
    assert_eq!(result.counts.completed, 30, "{result:?}");
    // Ten chunks of 25 for each 250-item manifest, two for the last one.
    assert_eq!(
        bulk_posts(&sim.calls()).len(),
        10 * (compacted_after + 1) + 2,
        "one create request per chunk: nothing sent twice"
    );
    daemon.sigterm().await.expect("SIGTERM exits 0");
}
