//! From a spreadsheet and back (SPEC section 10): a CSV with every awkward case goes
//! through the real binary's `from-csv --drop` into the real daemon against the
//! simulator, and the result CSV joins back to every row by `client_item_id`, agreeing
//! with the JSON result field by field; the result file and the manifest match the
//! schemas that `tented-bulkd schema` prints.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use tented_bulkd::simulator::SimConfig;

use crate::helpers::*;

/// The spreadsheet: a byte order mark, CRLF line ends, a header with a space and
/// non-ASCII, quoted cells holding commas, doubled quotes and a line break, empty cells,
/// booleans in several spellings, asset ids split on `;` and `,`, emoji, a row of empty
/// cells, an unknown asset (rejected at admission) and a taken alias (published with a
/// warning).
const PEOPLE_CSV: &str = "\u{feff}Row ID,Prénom,note,include_brand,asset_ids,custom_page_alias,tent_name,instructions\r\n\
r-001,Zoë,\"Hello, \"\"world\"\"\nsecond line\",yes,,zoe-page,,\r\n\
r-日本-002,李,,0,\"asset_1; asset_2,asset_3\",,Page 東京,\r\n\
,,,,,,,\r\n\
r-003,Omar,,,logo-missing,,,\r\n\
r-004,Ana,\"ümlaut, 🎉\",TRUE,,taken-alias,,\"Say \"\"hi\"\"\"\r\n\
r-005,Li,,no,,,,\r\n";

/// The result CSV's columns (SPEC section 5), in order.
const RESULT_COLUMNS: [&str; 11] = [
    "client_item_id",
    "index",
    "status",
    "tent_id",
    "tent_name",
    "generation_id",
    "published_url",
    "publication_status",
    "applied_custom_page_alias",
    "error_code",
    "message",
];

/// Runs the real binary to the end; its output.
fn run_binary(args: &[&str]) -> Output {
    command(args).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A CSV file as rows of cells (header first), read with the csv crate.
fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes)
        .records()
        .map(|record| {
            record
                .expect("a CSV record")
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// What the result CSV's cell for `column` must be, from the JSON result's item.
fn expected_cell(id: &str, item: &Value, column: &str) -> String {
    let value = match column {
        "client_item_id" => return id.to_owned(),
        "published_url" | "applied_custom_page_alias" => &item["publication"][column],
        "publication_status" => &item["publication"]["status"],
        other => &item[other],
    };
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Checks `instance` against the schema that `tented-bulkd schema WHICH` prints.
fn assert_matches_printed_schema(which: &str, instance: &Value) {
    let printed = run_binary(&["schema", which]);
    assert!(
        printed.status.success(),
        "schema {which}: {}",
        text(&printed.stderr)
    );
    let schema: Value = serde_json::from_slice(&printed.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{which} does not match its schema: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_makes_the_round_trip_and_the_result_csv_joins_back_by_client_item_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(SimConfig {
        taken_aliases: vec!["taken-alias".into()],
        ..quick_sim()
    })
    .await;
    let (config, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;

    let csv_path = dir.path().join("people.csv");
    std::fs::write(&csv_path, PEOPLE_CSV).expect("write the CSV");
    let csv_arg = csv_path.display().to_string();
    let config_arg = config.display().to_string();
    let dropped = run_binary(&[
        "from-csv",
        &csv_arg,
        "--template",
        "tpl_round_trip",
        "--id-column",
        "Row ID",
        "--set",
        "auto_publish=true",
        "--set",
        "priority=high",
        "--set",
        "default_tent_name_prefix=Acme",
        "--set",
        "start_index=10",
        "--set",
        "metadata.source=crm export",
        "--drop",
        "people",
        "--config",
        &config_arg,
    ]);
    let stderr = text(&dropped.stderr);
    assert!(dropped.status.success(), "from-csv --drop: {stderr}");
    assert!(
        dropped.stdout.is_empty(),
        "a dropped manifest is not also printed"
    );
    assert!(
        stderr.contains("skipped rows whose every cell is empty (CSV lines 5)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bulk manifest of 5 items, dropped as"),
        "{stderr}"
    );

    let json_path = dir.path().join("outbox/people.result.json");
    let json_bytes = daemon
        .wait_for_file(&json_path, WAIT)
        .await
        .expect("the JSON result");
    // The CSV is written first, so it is in place once the JSON is.
    let csv_bytes = std::fs::read(dir.path().join("outbox/people.result.csv"))
        .expect("the result CSV is in place");
    // Raw JSON here: each CSV column is checked against the JSON field of its name.
    let result: Value = serde_json::from_slice(&json_bytes).expect("the result is JSON");
    assert_eq!(result["counts"]["total"], 5, "{result}");

    // The result CSV: UTF-8 without a BOM, CRLF line ends, the exact header, one row per
    // item in manifest order, each agreeing with the JSON result field by field.
    assert!(csv_bytes.starts_with(b"client_item_id,index,status,tent_id,tent_name,generation_id,published_url,publication_status,applied_custom_page_alias,error_code,message\r\n"));
    let rows = csv_rows(&csv_bytes);
    assert_eq!(rows[0], RESULT_COLUMNS.to_vec());
    let items = result["items"].as_object().expect("items");
    assert_eq!(rows.len() - 1, items.len());
    for ((row, (id, item)), index) in rows[1..].iter().zip(items).zip(0..) {
        assert_eq!(row[1], index.to_string(), "manifest order");
        for (column, cell) in RESULT_COLUMNS.iter().zip(row) {
            assert_eq!(
                cell,
                &expected_cell(id, item, column),
                "{id}: column {column}"
            );
        }
    }

    // Joined back to the spreadsheet by client_item_id: every row that was not empty,
    // exactly once.
    let input = csv_rows(PEOPLE_CSV.trim_start_matches('\u{feff}').as_bytes());
    let by_id: HashMap<&str, &Vec<String>> =
        rows[1..].iter().map(|row| (row[0].as_str(), row)).collect();
    let given_ids: Vec<&str> = input[1..]
        .iter()
        .map(|row| row[0].as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(
        given_ids,
        ["r-001", "r-日本-002", "r-003", "r-004", "r-005"]
    );
    assert_eq!(by_id.len(), given_ids.len());
    let status = |id: &str| by_id[id][2].as_str();
    assert_eq!(status("r-001"), "completed");
    assert_eq!(
        by_id["r-001"][4], "Acme 10",
        "the default name keeps the counter from start_index"
    );
    assert_eq!(
        (by_id["r-001"][7].as_str(), by_id["r-001"][8].as_str()),
        ("published", "zoe-page")
    );
    assert_eq!(
        (status("r-日本-002"), by_id["r-日本-002"][4].as_str()),
        ("completed", "Page 東京")
    );
    assert_eq!(
        (status("r-003"), by_id["r-003"][9].as_str()),
        ("rejected", "NOT_FOUND")
    );
    assert!(
        by_id["r-003"][10].contains("logo-missing"),
        "{:?}",
        by_id["r-003"]
    );
    assert_eq!(
        (status("r-004"), by_id["r-004"][7].as_str()),
        ("completed", "published_with_warnings")
    );
    assert_ne!(
        by_id["r-004"][8], "taken-alias",
        "the applied alias is another one"
    );
    assert_eq!(status("r-005"), "completed");

    // Every awkward cell reached Tented as it was in the spreadsheet.
    let calls = sim.calls();
    let sent: HashMap<String, Value> = bulk_posts(&calls)
        .iter()
        .filter_map(|call| call.body.as_ref())
        .flat_map(|body| body["items"].as_array().cloned().unwrap_or_default())
        .map(|item| {
            (
                item["client_item_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                item,
            )
        })
        .collect();
    assert_eq!(
        sent["r-001"]["input_data"],
        json!({"Prénom": "Zoë", "note": "Hello, \"world\"\nsecond line"})
    );
    assert_eq!(sent["r-001"]["include_brand"], json!(true));
    assert_eq!(
        sent["r-日本-002"]["asset_ids"],
        json!(["asset_1", "asset_2", "asset_3"])
    );
    assert_eq!(sent["r-日本-002"]["include_brand"], json!(false));
    assert_eq!(
        sent["r-004"]["input_data"],
        json!({"Prénom": "Ana", "note": "ümlaut, 🎉"})
    );
    assert_eq!(sent["r-004"]["instructions"], json!("Say \"hi\""));
    assert_eq!(
        sent["r-005"]["input_data"],
        json!({"Prénom": "Li"}),
        "empty cells leave their keys out"
    );
    let bodies: Vec<&Value> = bulk_posts(&calls)
        .into_iter()
        .filter_map(|call| call.body.as_ref())
        .collect();
    assert!(
        bodies.iter().all(|body| body.get("priority").is_none()),
        "priority is never sent to Tented"
    );
    assert_eq!(bodies[0]["metadata"], json!({"source": "crm export"}));

    // The printed schemas accept the real result and the manifest as it was dropped.
    assert_matches_printed_schema("result", &result);
    let archived: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("archive/people.json")).expect("archived"),
    )
    .expect("JSON");
    assert_eq!(archived["priority"], "high");
    assert_matches_printed_schema("manifest", &archived);

    // A manifest rejected as a whole gets its JSON result and no CSV.
    drop_bytes(dir.path(), "broken.json", b"{\"items\": 1}");
    daemon
        .wait_for_file(&dir.path().join("outbox/broken.result.json"), WAIT)
        .await
        .expect("the rejected manifest's result");
    assert!(!dir.path().join("outbox/broken.result.csv").exists());

    daemon.sigterm().await.expect("SIGTERM exits 0");
}

/// `from-csv` with the arguments after the CSV path, on `csv` written to a fresh folder.
fn from_csv(dir: &Path, csv: &str, args: &[&str]) -> Output {
    let path = dir.join("in.csv");
    std::fs::write(&path, csv).expect("write the CSV");
    let path = path.display().to_string();
    let mut all = vec!["from-csv", path.as_str()];
    all.extend_from_slice(args);
    run_binary(&all)
}

#[test]
fn from_csv_prints_or_writes_the_manifest_and_its_errors_name_the_file_line_and_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let printed = from_csv(
        dir.path(),
        "client_item_id,city\na,Paris\n",
        &["--template", "tpl_x"],
    );
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let manifest: Value = serde_json::from_slice(&printed.stdout).expect("the manifest on stdout");
    assert_eq!(
        manifest,
        json!({"kind": "bulk", "template_id": "tpl_x", "items": [{"client_item_id": "a", "input_data": {"city": "Paris"}}]})
    );

    let out = dir.path().join("m.json");
    let out_arg = out.display().to_string();
    let written = from_csv(
        dir.path(),
        "client_item_id,city\na,Paris\n",
        &["--template", "tpl_x", "--out", &out_arg],
    );
    assert!(written.status.success() && written.stdout.is_empty());
    assert_eq!(
        std::fs::read(&out).expect("--out"),
        printed.stdout,
        "the same bytes"
    );
    let validated = run_binary(&["validate", &out_arg]);
    assert!(validated.status.success(), "{}", text(&validated.stdout));
    // A bare name is written in the current folder.
    let csv = dir.path().join("in.csv").display().to_string();
    let bare = command([
        "from-csv",
        &csv,
        "--template",
        "tpl_x",
        "--out",
        "bare.json",
    ])
    .current_dir(dir.path())
    .output()
    .expect("the binary runs");
    assert!(bare.status.success(), "{}", text(&bare.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("bare.json")).expect("bare.json"),
        printed.stdout
    );

    let bad = from_csv(
        dir.path(),
        "client_item_id,include_brand\na,yes\nb,maybe\n",
        &["--template", "tpl_x"],
    );
    assert_eq!(bad.status.code(), Some(1));
    let csv_path = dir.path().join("in.csv").display().to_string();
    assert_eq!(
        text(&bad.stderr).trim_end(),
        format!("tented-bulkd: {csv_path}: CSV line 3, column `include_brand`: `maybe` is not a boolean: write true, false, yes, no, 1 or 0")
    );
    assert!(
        bad.stdout.is_empty(),
        "nothing is printed for a CSV that does not convert"
    );

    let no_template = from_csv(dir.path(), "city\nParis\n", &[]);
    assert_eq!(
        no_template.status.code(),
        Some(2),
        "wrong usage: {}",
        text(&no_template.stderr)
    );
    assert!(text(&no_template.stderr).contains("--template"));

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[paths]\ninbx = \"/tmp\"\n").expect("write the config");
    let config_arg = config.display().to_string();
    let bad_config = from_csv(
        dir.path(),
        "city\nParis\n",
        &["--template", "t", "--drop", "x", "--config", &config_arg],
    );
    assert_eq!(
        bad_config.status.code(),
        Some(78),
        "{}",
        text(&bad_config.stderr)
    );
}
