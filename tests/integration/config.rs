//! Configuration loading (SPEC section 3): built-in defaults, the TOML file, environment
//! overrides, the API key's sources and secrecy, the poll floor, and the errors that must
//! name the key at fault.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tented_bulkd::settings::{
    ApiKey, ConfigSource, LogFormat, Settings, SettingsError, DEFAULT_CONFIG_PATH,
    DEFAULT_CONFIG_TOML,
};

type Env = Vec<(String, String)>;

fn no_env() -> Env {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn builtin() -> Settings {
    Settings::load_with_env(&ConfigSource::BuiltIn, no_env()).expect("built-in defaults load")
}

/// Writes `text` as config.toml in a fresh temporary folder.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load_file(path: &Path, env: Env) -> Result<Settings, SettingsError> {
    Settings::load_with_env(&ConfigSource::File(path.to_path_buf()), env)
}

fn load_text(text: &str) -> Result<Settings, SettingsError> {
    let (_dir, path) = write_config(text);
    load_file(&path, no_env())
}

fn expect_err(result: Result<Settings, SettingsError>, what: &str) -> String {
    match result {
        Ok(settings) => panic!("{what}: expected an error, got {settings:?}"),
        Err(e) => e.to_string(),
    }
}

// ---- defaults ----------------------------------------------------------------------

#[test]
fn built_in_defaults_match_spec_section_3() {
    let s = builtin();
    assert_eq!(s.api.base_url.as_str(), "https://api.tented.ai/");
    assert_eq!(s.api.key_file, "");
    assert_eq!(s.api.timeout, Duration::from_secs(30));
    assert_eq!(s.api.requests_per_second, 5);
    assert_eq!(s.poll.interval, Duration::from_secs(10));
    assert_eq!(s.poll.max_wait, Duration::from_secs(24 * 3600));
    assert_eq!(s.paths.inbox, PathBuf::from("/var/lib/tented-bulkd/inbox"));
    assert_eq!(
        s.paths.outbox,
        PathBuf::from("/var/lib/tented-bulkd/outbox")
    );
    assert_eq!(
        s.paths.archive,
        PathBuf::from("/var/lib/tented-bulkd/archive")
    );
    assert_eq!(s.paths.state, PathBuf::from("/var/lib/tented-bulkd/state"));
    assert_eq!(s.inbox.settle, Duration::from_secs(2));
    assert_eq!(s.inbox.rescan, Duration::from_secs(30));
    assert_eq!(s.submit.credit_retry, Duration::from_secs(15 * 60));
    assert_eq!(s.submit.failure_threshold, 0.5);
    assert_eq!(s.admin.listen, Some("127.0.0.1:9187".parse().unwrap()));
    assert_eq!(
        s.admin.socket,
        Some(PathBuf::from("/run/tented-bulkd/control.sock"))
    );
    assert_eq!(s.log.format, LogFormat::Text);
    // No key anywhere by default.
    assert_eq!(s.resolve_api_key_and_source(None, None).unwrap(), None);
}

/// The fields serde expects where `toml_text` puts an unknown one: every struct of
/// `Settings` denies unknown fields, and serde's refusal lists the fields it knows
/// ("unknown field `x`, expected one of `a`, `b`" or "expected `a`").
fn fields_serde_expects(toml_text: &str) -> Vec<String> {
    let message = toml::from_str::<Settings>(toml_text)
        .expect_err("an unknown field is refused")
        .to_string();
    let (_, expected) = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("serde's message lists the expected fields: {message}"));
    let fields: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!fields.is_empty(), "no field names in: {message}");
    fields
}

/// Every key of `Settings`, as `section.key`, from its serde derive (not from a list here).
fn settings_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for section in fields_serde_expects("unknown_probe = 1\n") {
        for key in fields_serde_expects(&format!("[{section}]\nunknown_probe = 1\n")) {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn default_toml_sets_every_settings_key_and_no_other() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"));
    let text = std::fs::read_to_string(path).expect("config/default.toml exists");
    let file: toml::Table = toml::from_str(&text).expect("config/default.toml is TOML");
    let mut in_file = BTreeSet::new();
    for (section, keys) in &file {
        let keys = keys
            .as_table()
            .unwrap_or_else(|| panic!("`{section}` in default.toml is not a section"));
        for key in keys.keys() {
            in_file.insert(format!("{section}.{key}"));
        }
    }
    let in_struct = settings_keys();
    let missing: Vec<&String> = in_struct.difference(&in_file).collect();
    assert!(
        missing.is_empty(),
        "default.toml lacks keys that Settings has (every key is written there with its \
         default): {missing:?}"
    );
    let unknown: Vec<&String> = in_file.difference(&in_struct).collect();
    assert!(
        unknown.is_empty(),
        "default.toml sets keys that Settings does not have: {unknown:?}"
    );
    // Loading the repo file explicitly gives the same settings as the built-in defaults.
    let from_file = load_file(path, no_env()).expect("the repo's default.toml loads");
    assert_eq!(format!("{from_file:?}"), format!("{:?}", builtin()));
}

#[test]
fn check_config_prints_every_settings_key() {
    let printed: BTreeSet<String> = builtin()
        .effective()
        .into_iter()
        .map(|(key, _)| key.to_string())
        .collect();
    assert_eq!(
        printed,
        settings_keys(),
        "Settings::effective lists every key, once"
    );
}

#[test]
fn every_spec_key_is_written_in_default_toml() {
    for key in [
        "base_url",
        "key_file",
        "timeout",
        "requests_per_second",
        "interval",
        "max_wait",
        "inbox",
        "outbox",
        "archive",
        "state",
        "credit_retry",
        "failure_threshold",
        "listen",
        "socket",
        "format",
    ] {
        assert!(
            DEFAULT_CONFIG_TOML
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "default.toml lacks `{key}`"
        );
    }
}

// ---- layering ----------------------------------------------------------------------

#[test]
fn file_overrides_defaults_and_keeps_the_rest() {
    let (_dir, path) = write_config(
        r#"
[api]
base_url = "http://127.0.0.1:8787"
timeout = "5s"
requests_per_second = 20

[poll]
interval = "2s"
max_wait = "5m"

[paths]
inbox = "/tmp/tb/inbox"

[submit]
credit_retry = "1h"
failure_threshold = 0.25

[admin]
listen = ""

[log]
format = "json"
"#,
    );
    let s = load_file(&path, no_env()).expect("file loads");
    assert_eq!(s.api.base_url.as_str(), "http://127.0.0.1:8787/");
    assert_eq!(s.api.timeout, Duration::from_secs(5));
    assert_eq!(s.api.requests_per_second, 20);
    assert_eq!(s.poll.interval, Duration::from_secs(2));
    assert_eq!(s.poll.max_wait, Duration::from_secs(300));
    assert_eq!(s.paths.inbox, PathBuf::from("/tmp/tb/inbox"));
    // Keys the file does not set keep their defaults.
    assert_eq!(
        s.paths.outbox,
        PathBuf::from("/var/lib/tented-bulkd/outbox")
    );
    assert_eq!(s.api.key_file, "");
    assert_eq!(s.submit.credit_retry, Duration::from_secs(3600));
    assert_eq!(s.submit.failure_threshold, 0.25);
    assert_eq!(s.admin.listen, None, "\"\" turns the admin endpoint off");
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn env_overrides_the_file() {
    let (_dir, path) = write_config(
        r#"
[api]
base_url = "https://file.example.com"
requests_per_second = 3

[submit]
failure_threshold = 0.25
"#,
    );
    let s = load_file(
        &path,
        env(&[
            ("TENTED_BULKD__API__BASE_URL", "http://127.0.0.1:9999"),
            ("TENTED_BULKD__API__REQUESTS_PER_SECOND", "11"),
            ("TENTED_BULKD__API__TIMEOUT", "7s"),
            ("TENTED_BULKD__POLL__INTERVAL", "1s"),
            ("TENTED_BULKD__SUBMIT__FAILURE_THRESHOLD", "0.75"),
            ("TENTED_BULKD__LOG__FORMAT", "json"),
            ("TENTED_BULKD__PATHS__STATE", "/tmp/tb-state"),
            // Unrelated variables are ignored.
            ("PATH", "/usr/bin"),
            ("TENTED_API_KEY", "not-a-config-key"),
        ]),
    )
    .expect("env overrides load");
    assert_eq!(s.api.base_url.as_str(), "http://127.0.0.1:9999/");
    assert_eq!(s.api.requests_per_second, 11);
    assert_eq!(s.api.timeout, Duration::from_secs(7));
    assert_eq!(s.poll.interval, Duration::from_secs(1));
    assert_eq!(s.submit.failure_threshold, 0.75);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.paths.state, PathBuf::from("/tmp/tb-state"));
}

#[test]
fn env_overrides_built_in_defaults_without_a_file() {
    let s = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(&[
            ("TENTED_BULKD__API__KEY_FILE", "/run/keys/tented"),
            ("TENTED_BULKD__ADMIN__LISTEN", "127.0.0.1:0"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.api.key_file, "/run/keys/tented");
    assert_eq!(s.admin.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(s.api.base_url.as_str(), "https://api.tented.ai/");
}

// ---- the key's secrecy -------------------------------------------------------------

#[test]
fn api_key_never_appears_in_debug_or_display() {
    const SECRET: &str = "sk-live-7f3a9c1b2d";
    let (_dir, path) = write_config(&format!("[api]\nkey = \"{SECRET}\"\n"));
    let s = load_file(&path, no_env()).expect("loads");
    let debug = format!("{s:?}");
    assert!(!debug.contains(SECRET), "Debug shows the key: {debug}");
    assert!(
        !debug.contains("7f3a9c"),
        "Debug shows part of the key: {debug}"
    );
    let pretty = format!("{s:#?}");
    assert!(!pretty.contains(SECRET), "{{:#?}} shows the key");
    // The key is still there for the Authorization header.
    let (key, _) = s
        .resolve_api_key_and_source(None, None)
        .unwrap()
        .expect("api.key");
    assert_eq!(key.expose(), SECRET);
    assert!(!format!("{key}").contains(SECRET), "Display shows the key");
    assert!(!format!("{key:?}").contains(SECRET), "Debug shows the key");
    assert!(format!("{key}").contains("redacted"));

    // Through the environment too.
    let s = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(&[("TENTED_BULKD__API__KEY", SECRET)]),
    )
    .expect("loads");
    assert!(!format!("{s:?}").contains(SECRET));
    assert_eq!(
        s.resolve_api_key_and_source(None, None)
            .unwrap()
            .map(|(k, _)| k.expose().to_string()),
        Some(SECRET.to_string())
    );

    let direct = ApiKey::new(SECRET);
    assert_eq!(format!("{direct}"), "[redacted]");
    assert_eq!(format!("{direct:?}"), "[redacted]");
}

// ---- key sources, first found wins ---------------------------------------------------

#[test]
fn api_key_sources_in_documented_order() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("tented_api_key"), "cred-key\n").unwrap();
    let key_file = dir.path().join("key.txt");
    std::fs::write(&key_file, "  file-key \n").unwrap();
    let empty_creds = dir.path().join("empty-creds");
    std::fs::create_dir(&empty_creds).unwrap();

    let mut s = builtin();
    s.api.key_file = key_file.to_string_lossy().into_owned();
    s.api.key = Some(ApiKey::new("config-key"));

    let got = |s: &Settings, c: Option<&Path>, e: Option<&str>| {
        s.resolve_api_key_and_source(c.map(Path::to_path_buf), e.map(str::to_string))
            .expect("resolves")
            .map(|(k, _)| k.expose().to_string())
    };

    // 1. $CREDENTIALS_DIRECTORY/tented_api_key beats everything (and is trimmed).
    assert_eq!(
        got(&s, Some(&creds), Some("env-key")).as_deref(),
        Some("cred-key")
    );
    // A credentials directory without the credential falls through to the next source.
    assert_eq!(
        got(&s, Some(&empty_creds), Some("env-key")).as_deref(),
        Some("file-key")
    );
    // 2. api.key_file beats the environment and api.key.
    assert_eq!(got(&s, None, Some("env-key")).as_deref(), Some("file-key"));
    // 3. TENTED_API_KEY beats api.key.
    s.api.key_file = String::new();
    assert_eq!(got(&s, None, Some("env-key")).as_deref(), Some("env-key"));
    // A blank TENTED_API_KEY is no key.
    assert_eq!(got(&s, None, Some("   ")).as_deref(), Some("config-key"));
    // 4. api.key last.
    assert_eq!(got(&s, None, None).as_deref(), Some("config-key"));
    // Nothing at all.
    s.api.key = None;
    assert_eq!(got(&s, None, None), None);
    s.api.key = Some(ApiKey::new(""));
    assert_eq!(got(&s, None, None), None, "an empty api.key is no key");
}

#[test]
fn api_key_file_named_but_unreadable_or_empty_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = builtin();
    s.api.key = Some(ApiKey::new("config-key"));

    let missing = dir.path().join("no-such-key");
    s.api.key_file = missing.to_string_lossy().into_owned();
    let err = s
        .resolve_api_key_and_source(None, Some("env-key".into()))
        .expect_err("a key_file that does not exist must not be skipped silently");
    assert!(
        err.to_string().contains("no-such-key"),
        "the error names the file: {err}"
    );

    let empty = dir.path().join("empty-key");
    std::fs::write(&empty, "\n").unwrap();
    s.api.key_file = empty.to_string_lossy().into_owned();
    let err = s
        .resolve_api_key_and_source(None, None)
        .expect_err("an empty key file is an error");
    assert!(err.to_string().contains("empty-key"), "{err}");
}

// ---- the poll floor ----------------------------------------------------------------

#[test]
fn poll_interval_below_floor_is_refused_for_a_remote_api() {
    let msg = expect_err(
        Settings::load_with_env(
            &ConfigSource::BuiltIn,
            env(&[("TENTED_BULKD__POLL__INTERVAL", "1s")]),
        ),
        "1s against https://api.tented.ai",
    );
    assert!(
        msg.contains("poll.interval"),
        "message names the key: {msg}"
    );

    let msg = expect_err(load_text("[poll]\ninterval = \"9s\"\n"), "9s remote");
    assert!(msg.contains("poll.interval"), "{msg}");

    // Host names that merely look like loopback are not loopback.
    for url in [
        "http://127.0.0.1.example.com",
        "http://localhost.example.com:8787",
        "https://api.tented.ai:443",
    ] {
        let msg = expect_err(
            Settings::load_with_env(
                &ConfigSource::BuiltIn,
                env(&[
                    ("TENTED_BULKD__API__BASE_URL", url),
                    ("TENTED_BULKD__POLL__INTERVAL", "1s"),
                ]),
            ),
            url,
        );
        assert!(msg.contains("poll.interval"), "{url}: {msg}");
    }

    // The floor itself is fine anywhere.
    let s = load_text("[poll]\ninterval = \"10s\"\n").expect("10s is the floor");
    assert_eq!(s.poll.interval, Duration::from_secs(10));
}

#[test]
fn poll_interval_below_floor_is_accepted_for_loopback() {
    for url in [
        "http://127.0.0.1:8787",
        "http://localhost:1",
        "http://[::1]:8787",
        "http://127.0.0.2:8787",
    ] {
        let s = Settings::load_with_env(
            &ConfigSource::BuiltIn,
            env(&[
                ("TENTED_BULKD__API__BASE_URL", url),
                ("TENTED_BULKD__POLL__INTERVAL", "1s"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{url} with 1s must be accepted: {e}"));
        assert_eq!(s.poll.interval, Duration::from_secs(1));
    }
    let s =
        load_text("[api]\nbase_url = \"http://127.0.0.1:8787\"\n[poll]\ninterval = \"200ms\"\n")
            .expect("200ms against loopback");
    assert_eq!(s.poll.interval, Duration::from_millis(200));
}

// ---- unknown keys and invalid values ------------------------------------------------

#[test]
fn unknown_key_in_file_is_refused_naming_it() {
    let msg = expect_err(
        load_text("[api]\nbogus_setting = 1\n"),
        "unknown key in [api]",
    );
    assert!(
        msg.contains("bogus_setting"),
        "message names the key: {msg}"
    );
    assert!(msg.contains("`api`"), "message names the section: {msg}");

    let msg = expect_err(
        load_text("[poll]\nintervall = \"10s\"\n"),
        "misspelt key in [poll]",
    );
    assert!(msg.contains("intervall"), "{msg}");

    let msg = expect_err(load_text("[nosuchsection]\nx = 1\n"), "unknown section");
    assert!(msg.contains("nosuchsection"), "{msg}");
}

#[test]
fn unknown_key_via_env_is_refused_naming_it() {
    let msg = expect_err(
        Settings::load_with_env(
            &ConfigSource::BuiltIn,
            env(&[("TENTED_BULKD__API__BOGUS", "1")]),
        ),
        "TENTED_BULKD__API__BOGUS",
    );
    assert!(
        msg.to_lowercase().contains("bogus"),
        "message names the key: {msg}"
    );
    assert!(msg.contains("`api`"), "message names the section: {msg}");

    let msg = expect_err(
        Settings::load_with_env(
            &ConfigSource::BuiltIn,
            env(&[("TENTED_BULKD__NOSECTION__KEY", "1")]),
        ),
        "TENTED_BULKD__NOSECTION__KEY",
    );
    assert!(msg.to_lowercase().contains("nosection"), "{msg}");
}

#[test]
fn invalid_duration_is_refused_naming_the_key() {
    let msg = expect_err(load_text("[api]\ntimeout = \"soon\"\n"), "timeout = soon");
    assert!(msg.contains("timeout"), "message names the key: {msg}");
    assert!(
        msg.contains("api.timeout"),
        "message names the full key: {msg}"
    );

    let msg = expect_err(
        Settings::load_with_env(
            &ConfigSource::BuiltIn,
            env(&[("TENTED_BULKD__POLL__MAX_WAIT", "forever")]),
        ),
        "max_wait = forever",
    );
    assert!(msg.contains("poll.max_wait"), "{msg}");
}

#[test]
fn invalid_values_are_refused_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[submit]\nfailure_threshold = 2\n",
            "submit.failure_threshold",
        ),
        (
            "[submit]\nfailure_threshold = -0.1\n",
            "submit.failure_threshold",
        ),
        ("[submit]\ncredit_retry = \"0s\"\n", "submit.credit_retry"),
        (
            "[api]\nrequests_per_second = 0\n",
            "api.requests_per_second",
        ),
        (
            "[api]\nrequests_per_second = \"many\"\n",
            "api.requests_per_second",
        ),
        ("[api]\ntimeout = \"0s\"\n", "api.timeout"),
        ("[api]\nbase_url = \"not a url\"\n", "api.base_url"),
        (
            "[api]\nbase_url = \"ftp://api.tented.ai\"\n",
            "api.base_url",
        ),
        ("[admin]\nlisten = \"everywhere\"\n", "admin.listen"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[poll]\ninterval = \"0s\"\n", "poll.interval"),
    ];
    for (text, key) in cases {
        let msg = expect_err(load_text(text), text);
        assert!(
            msg.contains(key),
            "config {text:?}: message does not name `{key}`: {msg}"
        );
    }
}

// ---- the config file's presence ----------------------------------------------------

#[test]
fn missing_config_file_given_explicitly_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.toml");
    let msg = expect_err(load_file(&path, no_env()), "missing --config file");
    assert!(
        msg.contains("does-not-exist"),
        "the error names the missing file: {msg}"
    );
}

#[test]
fn missing_default_config_file_means_built_in_defaults() {
    if Path::new(DEFAULT_CONFIG_PATH).exists() {
        eprintln!("{DEFAULT_CONFIG_PATH} exists on this machine: skipping");
        return;
    }
    let s = Settings::load_with_env(&ConfigSource::Default, no_env())
        .expect("a missing default config file is fine");
    assert_eq!(format!("{s:?}"), format!("{:?}", builtin()));
    // from_arg(None) is that default source.
    assert!(matches!(
        ConfigSource::from_arg(None),
        ConfigSource::Default
    ));
    assert!(matches!(
        ConfigSource::from_arg(Some(PathBuf::from("/x.toml"))),
        ConfigSource::File(_)
    ));
}

#[test]
fn malformed_toml_is_an_error() {
    let msg = expect_err(load_text("[api\nbase_url = \n"), "malformed TOML");
    // Where, and in which file: enough to find the mistake.
    assert!(msg.contains("line 1"), "the message gives the line: {msg}");
    assert!(
        msg.contains("config.toml"),
        "the message names the file: {msg}"
    );
}

#[test]
fn env_values_that_look_like_numbers_stay_strings_where_strings_are_expected() {
    // try_parsing turns "12345" into an integer; string keys must still accept it.
    let s = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(&[
            ("TENTED_BULKD__API__KEY", "12345"),
            ("TENTED_BULKD__API__KEY_FILE", "42"),
            ("TENTED_BULKD__PATHS__INBOX", "7"),
        ]),
    )
    .expect("numeric-looking strings load");
    assert_eq!(s.api.key_file, "42");
    assert_eq!(s.paths.inbox, PathBuf::from("7"));
    let mut s = s;
    s.api.key_file = String::new();
    assert_eq!(
        s.resolve_api_key_and_source(None, None)
            .unwrap()
            .map(|(k, _)| k.expose().to_string()),
        Some("12345".to_string())
    );
}

#[test]
fn env_can_turn_the_admin_endpoint_off() {
    let s = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(&[("TENTED_BULKD__ADMIN__LISTEN", "")]),
    )
    .expect("an empty admin.listen from the environment loads");
    assert_eq!(s.admin.listen, None);
}

#[test]
fn retention_is_90_days_by_default_off_keeps_forever_and_nonsense_names_the_key() {
    assert_eq!(
        builtin().retention.store,
        Some(Duration::from_secs(90 * 24 * 3600))
    );
    let off = load_text("[retention]\nstore = \"off\"\n").expect("off loads");
    assert_eq!(off.retention.store, None);
    let from_env = Settings::load_with_env(
        &ConfigSource::BuiltIn,
        env(&[("TENTED_BULKD__RETENTION__STORE", "off")]),
    )
    .expect("off from the environment loads");
    assert_eq!(from_env.retention.store, None);
    let short = load_text("[retention]\nstore = \"36h\"\n").expect("a duration loads");
    assert_eq!(short.retention.store, Some(Duration::from_secs(36 * 3600)));
    for bad in ["\"forever\"", "\"0s\"", "7"] {
        let message = expect_err(load_text(&format!("[retention]\nstore = {bad}\n")), bad);
        assert!(
            message.contains("retention") || message.contains("store"),
            "{bad}: {message}"
        );
    }
}
