//! Hostile input against a running daemon (issue 10, point 3): a barrage of hostile files
//! dropped into the inbox at once each get exactly one result file, and the daemon keeps
//! running (a valid manifest dropped after them is sent and finished).

use std::collections::BTreeMap;

use crate::helpers::*;

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// Name -> bytes of every hostile file.
fn barrage() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut random = Bytes(0x9e37_79b9_7f4a_7c15);
    for i in 0..12 {
        let len = (random.next() % 4096) as usize;
        files.insert(format!("random-{i:02}"), random.bytes(len));
    }
    let demo = include_bytes!("../../examples/demo.json");
    for i in 0..12 {
        let mut bytes = demo.to_vec();
        for _ in 0..=(random.next() % 4) {
            let at = (random.next() as usize) % bytes.len();
            let table = b"{}[]\":,x\xff";
            bytes[at] = table[(random.next() as usize) % table.len()];
        }
        files.insert(format!("mutated-{i:02}"), bytes);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    files.insert("deep-document".into(), deep.clone().into_bytes());
    files.insert(
        "deep-item".into(),
        format!(r#"{{"template_id":"t","items":[{{"client_item_id":"a","input_data":{{"k":{deep}}}}}]}}"#)
            .into_bytes(),
    );
    let huge = "y".repeat(4 * 1024 * 1024);
    files.insert(
        "huge-key".into(),
        format!(r#"{{"template_id":"t","{huge}":1,"items":[{{}}]}}"#).into_bytes(),
    );
    let mut bad_utf8 = br#"{"template_id":"t","items":[{"client_item_id":"a","prompt":""#.to_vec();
    bad_utf8.extend_from_slice(b"\xc3\x28\xff");
    bad_utf8.extend_from_slice(br#""}]}"#);
    files.insert("bad-utf8".into(), bad_utf8);
    let keys: Vec<String> = (0..5_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
    files.insert(
        "many-keys".into(),
        format!(
            r#"{{"template_idd":"t",{},"items":[{{}}]}}"#,
            keys.join(",")
        )
        .into_bytes(),
    );
    files.insert("empty".into(), Vec::new());
    files.insert("nul".into(), vec![0; 1000]);
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrage_of_hostile_files_gets_one_result_each_and_the_daemon_goes_on() {
    let app = TestApp::spawn(quick_sim()).await;
    let files = barrage();
    for (name, bytes) in &files {
        app.drop_bytes(&format!("{name}.json"), bytes);
    }
    for name in files.keys() {
        // Read through the typed document: a result without a status does not read.
        let result = app.wait_result(name, WAIT).await;
        if result.status == FinalStatus::Rejected {
            let error = result.error.as_deref().unwrap_or_default();
            assert!(
                !error.is_empty() && error.len() < 1_000,
                "{name}: {} bytes of error",
                error.len()
            );
        }
    }
    // The daemon goes on: a valid manifest dropped after the barrage is sent and finished.
    app.drop_manifest("after.json", &bulk_manifest(3));
    let after = app.wait_result("after", WAIT).await;
    assert_eq!(after.counts.total, 3, "{after:?}");
    assert_ne!(after.status, FinalStatus::Rejected, "{after:?}");
    // Exactly one result per file: no `NAME~1` result, no result without a file, and the
    // inbox is empty.
    let mut results: Vec<String> = std::fs::read_dir(app.path("outbox"))
        .expect("the outbox reads")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| file.strip_suffix(".result.json").map(str::to_owned))
        .collect();
    results.sort();
    let mut expected: Vec<String> = files.keys().cloned().chain(["after".to_owned()]).collect();
    expected.sort();
    assert_eq!(results, expected);
    let left: Vec<_> = std::fs::read_dir(app.path("inbox"))
        .expect("the inbox reads")
        .collect();
    assert!(left.is_empty(), "the inbox still holds {left:?}");
}
