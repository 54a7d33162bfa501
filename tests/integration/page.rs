//! The status page (`GET /`, SPEC section 8) in a real browser: the real binary against the
//! simulator, manifests dropped (one with a hostile name), the page opened in headless
//! Chromium (Debian's `chromium`, `--dump-dom` and `--screenshot`). Skipped, saying why,
//! where Chromium is absent (`CHROMIUM=PATH` names another binary); `PAGE_SCREENSHOT=FILE`
//! keeps the screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::{
    bulk_manifest, drop_bytes, drop_manifest, free_address, header_text, quick_sim,
    run_until_ready, start_simulator, succeeded, try_wait_until, TestConfig,
};
use serde_json::{json, Value};

/// A file name with markup in it. Intake refuses the name (NAME may hold only letters,
/// digits, `.`, `-` and `_`) and names the manifest after it with the rest replaced, so
/// the markup reaches the page through the rejection's message, which quotes the file.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// The name intake gives it.
const HOSTILE_NAME: &str = "_img_src_x_onerror_alert_1__";

fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (Debian: apt-get install chromium)",
            path.display()
        ))
    }
}

/// Chromium, headless, as this machine allows it (no sandbox as root, no background
/// networking on a closed network), with a fresh profile.
fn headless(browser: &Path, profile: &Path) -> Command {
    let mut command = Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The page's DOM after it loaded, as Chromium serialises it.
fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    let mut dump = headless(browser, profile);
    dump.arg("--dump-dom").arg(url);
    let output = succeeded(&mut dump, &format!("chromium --dump-dom {url}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn get(admin: &str, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("the admin endpoint answers")
}

/// A count of a manifest's progress bar as the page's legend writes it (`waiting 4`).
fn legend(word: &str, n: u64) -> String {
    format!("<span>{word} {n}</span>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_shows_what_status_says_and_runs_nothing() {
    let browser = match chromium() {
        Ok(path) => path,
        Err(reason) => {
            println!("skipped: the status page's browser test: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_simulator(quick_sim()).await;
    let admin = free_address();
    let (_, daemon) = run_until_ready(
        dir.path(),
        &TestConfig::new(dir.path(), &sim.base_url()).set("admin", "listen", admin.as_str()),
        &[("TENTED_API_KEY", "sim-key")],
    )
    .await;

    // Two manifests that finish, one of them with a hostile name.
    drop_manifest(dir.path(), "fine.json", &bulk_manifest(5));
    let mut hostile = bulk_manifest(3);
    hostile["default_tent_name_prefix"] = json!("Hostile");
    drop_bytes(
        dir.path(),
        &format!("{HOSTILE}.json"),
        &serde_json::to_vec(&hostile).expect("json"),
    );
    for name in ["fine", HOSTILE_NAME] {
        daemon
            .wait_result(dir.path(), name, Duration::from_secs(30))
            .await
            .expect("a result");
    }
    // One that stays in flight: Tented is out of credits.
    sim.set_credits(Some(0));
    let mut waiting = bulk_manifest(4);
    waiting["priority"] = json!("high");
    drop_manifest(dir.path(), "waiting.json", &waiting);
    let status: Value = try_wait_until(
        "`waiting` in credit_wait in /status",
        Duration::from_secs(20),
        || async {
            let status: Value = get(&admin, "/status").await.json().await.ok()?;
            let waits = status["manifests"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == "waiting" && m["state"] == "credit_wait");
            waits.then_some(status)
        },
    )
    .await
    .expect("the manifest waits for credits");

    // The page's headers: HTML, a policy that runs no script.
    let response = get(&admin, "/").await;
    assert_eq!(response.status(), 200);
    let policy = header_text(&response, "content-security-policy");
    assert!(
        policy.contains("script-src 'none'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    // A foreign Host gets nothing, as for the other routes.
    let (code, _) = crate::control::raw(&admin, "GET", "/", "evil.example");
    assert_eq!(code, 421);

    let profile = tempfile::tempdir().expect("profile");
    let dom = dump_dom(&browser, profile.path(), &format!("http://{admin}/"));
    // The in-flight manifest with its state, reason, priority and counts as /status says.
    let entry = status["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "waiting"))
        .expect("in /status");
    assert!(dom.contains(">waiting</a>"), "{dom}");
    assert!(dom.contains("credit_wait"), "the state: {dom}");
    assert!(dom.contains("out of credits"), "the reason: {dom}");
    assert!(dom.contains("<td>high</td>"), "the priority: {dom}");
    let counts = entry["counts"].as_object().expect("counts");
    let waiting_items: u64 = ["pending", "credit_wait"]
        .iter()
        .filter_map(|s| counts.get(*s).and_then(Value::as_u64))
        .sum();
    assert_eq!(waiting_items, 4, "{counts:?}");
    assert!(dom.contains(&legend("waiting", waiting_items)), "{dom}");
    // The finished ones, the hostile file name as text: no element came of it.
    assert!(dom.contains(">fine</a>"), "{dom}");
    assert!(dom.contains(&format!(">{HOSTILE_NAME}</a>")), "{dom}");
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;.json"),
        "the hostile file name is shown as text: {dom}"
    );
    assert!(
        !dom.contains("<img"),
        "the hostile name became an element: {dom}"
    );
    assert!(!dom.contains("<script"), "{dom}");
    assert!(
        dom.contains("Healthy: Tented accepts the key"),
        "health at the top: {dom}"
    );
    assert!(dom.contains("calls per second over the last hour"), "{dom}");

    // The pages of finished manifests, reached by the page's own links.
    let link = format!("/ui/manifests/{HOSTILE_NAME}");
    assert!(
        dom.contains(&link),
        "the link to the hostile manifest: {dom}"
    );
    let rejected = dump_dom(&browser, profile.path(), &format!("http://{admin}{link}"));
    assert!(
        rejected.contains(&format!("{HOSTILE_NAME}</h1>")),
        "{rejected}"
    );
    assert!(
        rejected.contains("&lt;img src=x onerror=alert(1)&gt;.json"),
        "{rejected}"
    );
    assert!(!rejected.contains("<img"), "{rejected}");
    let fine = dump_dom(
        &browser,
        profile.path(),
        &format!("http://{admin}/ui/manifests/fine"),
    );
    for index in 0..5 {
        assert!(fine.contains(&format!("row-{index:03}")), "{fine}");
    }
    assert!(
        fine.contains("Items (5)") && fine.contains("completed"),
        "{fine}"
    );

    // A screenshot, for the eye (PAGE_SCREENSHOT=FILE keeps it).
    let shot = std::env::var_os("PAGE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("status.png"));
    let mut screenshot = headless(&browser, profile.path());
    screenshot
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{admin}/"));
    succeeded(&mut screenshot, "chromium --screenshot");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    daemon.sigterm().await.expect("stops");
}
