//! Many manifest files dropped at once (SPEC sections 6 and 7): taken in groups, each file
//! with the promises it has alone. Every file is archived once and gets its result; a bad
//! one is rejected without sinking the others; bytes seen twice are refused once as a
//! duplicate; names stay unique; nothing is sent twice; and the group shares its syncs.
//! The power-cut side of it is `powercut::a_power_cut_while_many_files_are_taken_…`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tented_bulkd::simulator::SimConfig;

use crate::helpers::{quick_sim, sent_client_ids, wait_until, TestApp, WAIT};

/// A small bulk manifest whose items' client ids start with `prefix` (so that its bytes
/// and its items are its own).
pub(crate) fn small_manifest(prefix: &str, items: usize) -> Value {
    let items: Vec<Value> = (0..items)
        .map(|i| json!({"client_item_id": format!("{prefix}-{i}"), "input_data": {"first_name": format!("P{i}")}}))
        .collect();
    json!({"template_id": "tpl_many", "default_tent_name_prefix": prefix, "items": items})
}

/// Writes every file into `staging/`, then renames them all into the inbox, one right
/// after the other (a drop of many files at once).
pub(crate) fn drop_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).expect("staging folder");
    for (name, bytes) in files {
        std::fs::write(staging.join(name), bytes).expect("write a staged file");
    }
    for (name, _) in files {
        std::fs::rename(staging.join(name), dir.join("inbox").join(name)).expect("rename in");
    }
}

/// `count` good small manifests, `m000.json`… (1 to 3 items each).
pub(crate) fn good_files(count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|n| {
            let name = format!("m{n:03}");
            let bytes = serde_json::to_vec(&small_manifest(&name, 1 + n % 3)).expect("json");
            (format!("{name}.json"), bytes)
        })
        .collect()
}

/// The visible files of `dir` (the daemon's hidden write probe is not one).
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

/// Every result file in the outbox, by manifest name.
fn results(outbox: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(outbox).expect("outbox").flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".result.json") {
            let bytes = std::fs::read(entry.path()).expect("read a result");
            out.insert(
                name.to_string(),
                serde_json::from_slice(&bytes).expect("json"),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_dropped_at_once_are_all_taken_and_each_bad_one_gets_its_result() {
    let mut app = TestApp::spawn(quick_sim()).await;
    let mut files = good_files(120);
    let twin = serde_json::to_vec(&small_manifest("twin", 2)).expect("json");
    let bad: [(&str, &[u8]); 3] = [
        ("not-json.json", b"{ this is not json"),
        ("no-items.json", br#"{"template_id": "tpl_x", "items": []}"#),
        (
            "x y.json",
            br#"{"template_id": "tpl_x", "items": [{"input_data": {}}]}"#,
        ),
    ];
    files.extend(
        bad.iter()
            .map(|(name, bytes)| (name.to_string(), bytes.to_vec())),
    );
    // The same bytes twice, and a good file whose name the bad `x y.json` takes first.
    files.push(("twin-a.json".into(), twin.clone()));
    files.push(("twin-b.json".into(), twin));
    let x_y = serde_json::to_vec(&small_manifest("xy", 1)).expect("json");
    files.push(("x_y.json".into(), x_y));
    drop_all(app.dir.path(), &files);

    let outbox = app.path("outbox");
    let results = wait_until("a result for every file dropped", WAIT, || async {
        let results = results(&outbox);
        (results.len() == files.len()).then_some(results)
    })
    .await;
    let status = |name: &str| results[name]["status"].as_str().unwrap_or("").to_string();
    for n in 0..120 {
        assert_eq!(status(&format!("m{n:03}")), "completed", "m{n:03}");
    }
    for name in ["not-json", "no-items"] {
        assert_eq!(status(name), "rejected", "{name}");
        let error = results[name]["error"].as_str().unwrap_or("");
        assert!(error.contains(&format!("{name}.json")), "{name}: {error}");
    }
    // `x y.json` breaks the name rule and is recorded as `x_y`; the good `x_y.json` gets
    // the next free name, whichever of them came first.
    let mut x_y: Vec<String> = ["x_y", "x_y~2"].iter().map(|n| status(n)).collect();
    x_y.sort();
    assert_eq!(x_y, ["completed", "rejected"], "x_y and x_y~2");
    // The twins: one sent, the other refused as the first one's copy.
    let (first, second) = if status("twin-a") == "completed" {
        ("twin-a", "twin-b")
    } else {
        ("twin-b", "twin-a")
    };
    assert_eq!(status(first), "completed");
    assert_eq!(status(second), "rejected");
    let error = results[second]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("identical") && error.contains(&format!("`{first}.json`")),
        "{second}: {error}"
    );

    // Every file archived once, none left behind, nothing sent twice.
    assert_eq!(count_files(&app.path("archive")), files.len());
    assert_eq!(count_files(&app.path("inbox")), 0);
    let sent = sent_client_ids(&app.calls());
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "an item was sent twice");
    let good_items: usize = (0..120).map(|n| 1 + n % 3).sum::<usize>() + 2 + 1;
    assert_eq!(sent.len(), good_items, "every good item sent once");
    app.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_dropped_at_once_share_their_syncs_and_the_marker_names_the_newest() {
    // Answers slower than the client's timeout: the few requests sent while the files are
    // taken add a sync or two each, no more.
    let sim = SimConfig {
        latency: (Duration::from_secs(10), Duration::from_secs(10)),
        ..quick_sim()
    };
    let mut app = TestApp::spawn(sim).await;
    let files = good_files(200);
    let syncs = app.ctx().store.sync_stats().syncs.clone();
    let before = syncs.get();
    drop_all(app.dir.path(), &files);
    let archive = app.path("archive");
    wait_until("every file archived", WAIT, || async {
        (count_files(&archive) == files.len()).then_some(())
    })
    .await;
    let taken = syncs.get() - before;
    // One file at a time: two store syncs each (its record, its `archived` mark).
    assert!(
        taken < files.len() as u64 / 4,
        "{} files taken with {taken} store syncs",
        files.len()
    );
    let store = &app.ctx().store;
    let newest = store
        .manifests()
        .expect("the store reads")
        .iter()
        .map(|m| m.id)
        .max()
        .expect("manifests");
    let marker = std::fs::read_to_string(app.path("state/tented-bulkd.newest-manifest"))
        .expect("the marker");
    assert_eq!(
        marker.trim().parse::<u64>().ok(),
        Some(newest),
        "the marker names the newest"
    );
    assert_eq!(count_files(&app.path("inbox")), 0);
    app.stop_daemon().await;
}
