//! What each command does once its arguments are parsed: a short call into the library,
//! then what it prints and its exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::args::{Cli, FromCsvArgs, SchemaName};
use super::client::{ask_socket, get_json, next_chunk, path_segment, read_body};
use super::{InvalidConfiguration, EX_USAGE};
use crate::admin::{ControlAnswer, StatusReport};
use crate::manifest::ManifestKind;
use crate::pipeline::intake::{self, FileContent, Verdict};
use crate::settings::{ConfigSource, Settings};

/// `check-config`: the configuration as `run` would load it, every key with its value,
/// and where the API key comes from (never the key itself).
pub(super) fn check_config(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = ConfigSource::from_arg(config);
    let settings = Settings::load(&source)?;
    let key = settings.resolve_api_key_and_source(
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        std::env::var("TENTED_API_KEY").ok(),
    )?;
    let file = match &source {
        ConfigSource::File(path) => format!("{} (given with --config)", path.display()),
        ConfigSource::Default if Path::new(crate::settings::DEFAULT_CONFIG_PATH).exists() => {
            crate::settings::DEFAULT_CONFIG_PATH.to_string()
        }
        ConfigSource::Default => format!(
            "none ({} does not exist: built-in defaults)",
            crate::settings::DEFAULT_CONFIG_PATH
        ),
        ConfigSource::BuiltIn => "none (built-in defaults)".to_string(),
    };
    println!("# configuration file: {file}");
    println!("# then TENTED_BULKD__SECTION__KEY environment variables");
    let mut section = "";
    for (key, value) in settings.effective() {
        let (this_section, name) = key.split_once('.').unwrap_or(("", key));
        if this_section != section {
            println!("\n[{this_section}]");
            section = this_section;
        }
        println!("{name} = {value}");
    }
    println!();
    let Some((_, key_source)) = key else {
        return Err(crate::settings::SettingsError::NoApiKey.into());
    };
    println!("# API key: [redacted], from {key_source}");
    Ok(ExitCode::SUCCESS)
}

/// `generate-assets DIR`: the man pages and completions, from this very command line.
pub(super) fn generate_assets(dir: &Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    for path in crate::assets::write_assets(Cli::command(), dir)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn sim(args: crate::simulator::SimArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(crate::settings::LogFormat::Text);
    let (listen, config) = args
        .into_config()
        .map_err(|e| InvalidConfiguration(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("Tented simulator listening on http://{addr} (bearer token: the configured api_key, default sim-key)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::simulator::serve(listener, config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

fn admin_base(config: Option<PathBuf>) -> anyhow::Result<String> {
    let settings = Settings::load(&ConfigSource::from_arg(config))?;
    let Some(addr) = settings.admin.listen else {
        bail!("the admin endpoint is turned off (admin.listen = \"\")");
    };
    Ok(format!("http://{addr}"))
}

/// The control socket's path from the configuration (`cancel`, `pause`, `resume`, `backup`).
fn control_socket(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let settings = Settings::load(&ConfigSource::from_arg(config))?;
    let Some(socket) = settings.admin.socket else {
        bail!("the control socket is turned off (admin.socket = \"\")");
    };
    Ok(socket)
}

/// How long a command waits for the daemon's answer (a backup waits longer).
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) async fn status(
    config: Option<PathBuf>,
    json: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let base = admin_base(config)?;
    let report: StatusReport = get_json(&base, "/status", timeout).await?;
    if json {
        print_json(&report)?;
    } else {
        println!("{}", crate::tables::status_text(&report));
    }
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        let why = if report.auth_paused {
            "Tented refuses the API key (401)".to_string()
        } else {
            report.storage_problems.join("; ")
        };
        eprintln!("tented-bulkd: the daemon answers but is unhealthy: {why}");
        ExitCode::FAILURE
    })
}

/// `list [--json] [--limit N]`.
pub(super) async fn list(
    config: Option<PathBuf>,
    json: bool,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let base = admin_base(config)?;
    let list: crate::history::ManifestList =
        get_json(&base, &format!("/manifests?limit={limit}"), ADMIN_TIMEOUT).await?;
    if json {
        print_json(&list)?;
    } else {
        println!("{}", crate::tables::list_table(&list, limit));
    }
    Ok(ExitCode::SUCCESS)
}

/// `show NAME [--json] [--items]`.
pub(super) async fn show(
    config: Option<PathBuf>,
    name: &str,
    json: bool,
    items: bool,
) -> anyhow::Result<ExitCode> {
    let base = admin_base(config)?;
    let path = format!("/manifests/{}?items={items}", path_segment(name));
    let detail: crate::history::ManifestDetail = get_json(&base, &path, ADMIN_TIMEOUT).await?;
    if json {
        print_json(&detail)?;
    } else {
        println!("{}", crate::tables::show_text(&detail));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn control(
    config: Option<PathBuf>,
    name: &str,
    action: &str,
) -> anyhow::Result<ExitCode> {
    let socket = control_socket(config)?;
    let path = format!("/manifests/{}/{action}", path_segment(name));
    let mut response = ask_socket(&socket, hyper::Method::POST, &path, ADMIN_TIMEOUT).await?;
    let ok = response.status().is_success();
    let body = read_body(response.body_mut())
        .await
        .context("the daemon's answer stopped arriving")?;
    let answer: ControlAnswer = serde_json::from_slice(&body)
        .context("the daemon's answer is not what this version reads")?;
    if ok {
        println!("{}: {}", answer.manifest, answer.message);
        Ok(ExitCode::SUCCESS)
    } else {
        // A refusal is an error: on stderr, as every error of this program.
        eprintln!("tented-bulkd: {}: {}", answer.manifest, answer.message);
        Ok(ExitCode::FAILURE)
    }
}

/// How long `backup` waits for the daemon's snapshot to arrive whole.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `backup FILE`: the daemon's snapshot, streamed into FILE atomically (a temporary file
/// beside it, fsync, rename, fsync of the folder), kept only if its checksum holds.
pub(super) async fn backup(config: Option<PathBuf>, file: &Path) -> anyhow::Result<ExitCode> {
    let socket = control_socket(config)?;
    let mut response = ask_socket(&socket, hyper::Method::POST, "/backup", BACKUP_TIMEOUT).await?;
    if !response.status().is_success() {
        let status = response.status();
        let text = read_body(response.body_mut()).await.unwrap_or_default();
        bail!(
            "the daemon answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    let taken_at = response
        .headers()
        .get("x-tented-backup-created-at")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("an unknown time")
        .to_string();
    // The backup holds customers' input data: 0600 whatever the umask, and whatever mode
    // an older backup of that name had.
    let mut out = {
        use atomic_write_file::unix::OpenOptionsExt as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        atomic_write_file::AtomicWriteFile::options()
            .mode(0o600)
            .preserve_mode(false)
            .open(file)
            .with_context(|| format!("cannot write {}", file.display()))?
    };
    let mut check = crate::store::backup::StreamCheck::default();
    while let Some(chunk) = next_chunk(response.body_mut())
        .await
        .context("the backup stopped arriving")?
    {
        check.feed(&chunk);
        std::io::Write::write_all(&mut out, &chunk)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let (whole, bytes) = check.finish();
    if !whole {
        // Dropping `out` without commit leaves FILE as it was.
        bail!(
            "the backup arrived damaged or cut short ({bytes} bytes); {} is unchanged",
            file.display()
        );
    }
    out.commit()
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "backup of {taken_at} written to {} ({bytes} bytes)",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `restore FILE`: offline, into an empty `paths.state`.
pub(super) async fn restore(config: Option<PathBuf>, file: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&ConfigSource::from_arg(config))?;
    let state = &settings.paths.state;
    let (header, paused) = crate::store::Store::restore(state, file)
        .await
        .with_context(|| format!("cannot restore {}", file.display()))?;
    println!(
        "restored {} records from the backup of {} into {}",
        header.records,
        crate::clock::rfc3339(header.created_at_ms),
        state.display()
    );
    if paused > 0 {
        println!(
            "{paused} unfinished manifest(s) start paused: requests sent after the backup may be sent again; check them in Tented, then `resume NAME` or `cancel NAME`"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `schema manifest|result|list|show|status`: the JSON Schema, generated from the types.
pub(super) fn schema(which: SchemaName) -> anyhow::Result<ExitCode> {
    let schema = match which {
        SchemaName::Manifest => crate::schema::manifest_schema(),
        SchemaName::Result => crate::schema::result_schema(),
        SchemaName::List => crate::schema::list_schema(),
        SchemaName::Show => crate::schema::show_schema(),
        SchemaName::Status => crate::schema::status_schema(),
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

/// `from-csv`: a spreadsheet's rows become a manifest, validated, then printed, written
/// or dropped into the inbox.
pub(super) fn from_csv(args: FromCsvArgs) -> anyhow::Result<ExitCode> {
    use crate::spreadsheet::{CsvOptions, SpreadsheetError};
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    let kind = ManifestKind::from(args.kind);
    let mut options = CsvOptions::new(kind, args.template.as_deref());
    options.id_column = args.id_column;
    options.set = args.set;
    if let Some(name) = &args.drop {
        options.file_name = format!("{name}.json");
    }
    let shown = args.file.display();
    let csv = std::fs::read(&args.file).with_context(|| format!("cannot read {shown}"))?;
    let spinner = large_file_spinner(csv.len(), &format!("converting {shown}"));
    let converted = crate::spreadsheet::manifest_from_csv(&csv, &options);
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let converted = match converted {
        Ok(converted) => converted,
        Err(
            e @ (SpreadsheetError::TemplateMissing | SpreadsheetError::TemplateNotAllowed { .. }),
        ) => {
            let mut command = Cli::command();
            command.build();
            let usage = match command.find_subcommand_mut("from-csv") {
                Some(from_csv) => from_csv.error(ErrorKind::ArgumentConflict, e.to_string()),
                None => command.error(ErrorKind::ArgumentConflict, e.to_string()),
            };
            let _ = usage.print();
            return Ok(ExitCode::from(EX_USAGE));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{shown}"))),
    };
    if !converted.skipped.is_empty() {
        let lines: Vec<String> = converted.skipped.iter().map(u64::to_string).collect();
        eprintln!(
            "{shown}: skipped rows whose every cell is empty (CSV lines {})",
            lines.join(", ")
        );
    }
    let summary = format!(
        "{shown}: {} manifest of {} items",
        kind,
        converted.lines.len()
    );
    if let Some(name) = &args.drop {
        let settings = Settings::load(&ConfigSource::from_arg(args.config))?;
        let path =
            crate::spreadsheet::drop_into_inbox(&settings.paths.inbox, name, &converted.bytes)?;
        eprintln!("{summary}, dropped as {}", path.display());
    } else if let Some(out) = &args.out {
        crate::pipeline::outbox::write_atomically(out, &converted.bytes)?;
        eprintln!("{summary}, written to {}", out.display());
    } else {
        use std::io::Write as _;
        std::io::stdout()
            .write_all(&converted.bytes)
            .context("cannot write to standard output")?;
        eprintln!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A spinner (shown on a terminal only) while a file of `size` bytes is worked on, if it
/// is large enough to take a moment.
fn large_file_spinner(size: usize, message: &str) -> Option<indicatif::ProgressBar> {
    if size as u64 <= LARGE_MANIFEST_BYTES {
        return None;
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("{message} ({:.1} MiB)", size as f64 / 1048576.0));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(spinner)
}

/// Files above this size get a progress spinner while they are validated.
const LARGE_MANIFEST_BYTES: u64 = 1024 * 1024;

/// `validate FILE...`: exactly the daemon's rules, offline.
pub(super) fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    for path in files {
        let (ok, lines) = validation_report(path);
        for line in lines {
            println!("{line}");
        }
        all_ok &= ok;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Judges one file as the daemon's intake does (with [`intake::judge_file`]; without the
/// store, so no duplicate-bytes or edit-target lookups) and returns whether nothing of
/// it would be rejected, with its report's lines.
fn validation_report(path: &Path) -> (bool, Vec<String>) {
    let shown = path.display();
    let Some(file_name) = path.file_name() else {
        // `..` or `/`: no file name, so no `NAME.json` (checked before any read, as
        // always, so a folder gets this answer and not a read error).
        let rejection = intake::validation::ManifestRejection::NameWithoutJsonSuffix;
        return (false, vec![format!("{shown}: REJECTED: {rejection}")]);
    };
    let file_name = file_name.to_string_lossy();
    let content = match intake::read_manifest_file(path) {
        Ok(content) => content,
        Err(e) => {
            // Nothing to judge (intake would try again later); a name that breaks the
            // rule is still the answer, as it always was here.
            let message = match intake::judge::judge_file_name(&file_name) {
                (_, Some(rejection)) => rejection.to_string(),
                (_, None) => format!("cannot read: {e}"),
            };
            return (false, vec![format!("{shown}: REJECTED: {message}")]);
        }
    };
    // Large files take a moment: a spinner on a terminal (hidden otherwise).
    let spinner = match &content {
        FileContent::Bytes(bytes) => {
            large_file_spinner(bytes.len(), &format!("validating {shown}"))
        }
        _ => None,
    };
    let verdict = intake::judge_file(&file_name, &content, None);
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let manifest = match verdict {
        Verdict::Rejected { reason, .. } => {
            return (false, vec![format!("{shown}: REJECTED: {reason}")])
        }
        Verdict::Accepted { manifest, .. } => manifest,
    };
    let rejected = manifest.rejected_count();
    let mut lines = vec![format!(
        "{shown}: {} manifest, {} items: {} accepted, {} rejected",
        manifest.kind.as_str(),
        manifest.items.len(),
        manifest.items.len() - rejected,
        rejected
    )];
    for item in &manifest.items {
        if let Some(message) = &item.rejection {
            lines.push(format!(
                "  item {} `{}`: rejected: {message}",
                item.index,
                item.key()
            ));
        }
    }
    if manifest.kind == ManifestKind::Edit {
        lines.push("  note: target_client_item_id lookups need the daemon's store and are checked at intake".to_string());
    }
    (rejected == 0, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes `bytes` as `dir/file_name` and returns the report on it.
    fn report_on(dir: &Path, file_name: &str, bytes: &[u8]) -> (PathBuf, bool, Vec<String>) {
        let path = dir.join(file_name);
        std::fs::write(&path, bytes).expect("write the manifest");
        let (ok, lines) = validation_report(&path);
        (path, ok, lines)
    }

    #[test]
    fn an_accepted_manifest_reports_its_counts_and_each_rejected_item() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let manifest = json!({"template_id": "t", "items": [
            {"client_item_id": "a", "input_data": {}},
            {"client_item_id": "b", "input_data": 1}]});
        let (path, ok, lines) = report_on(dir.path(), "m.json", manifest.to_string().as_bytes());
        assert!(!ok);
        assert_eq!(
            lines,
            vec![
                format!("{}: bulk manifest, 2 items: 1 accepted, 1 rejected", path.display()),
                "  item 1 `b`: rejected: item 1 (client_item_id `b`): input_data must be an object, found a number".to_string(),
            ]
        );
        let edit =
            json!({"kind": "edit", "items": [{"prompt": "p", "target_client_item_id": "a"}]});
        let (path, ok, lines) = report_on(dir.path(), "e.json", edit.to_string().as_bytes());
        assert!(ok);
        assert_eq!(
            lines,
            vec![
                format!("{}: edit manifest, 1 items: 1 accepted, 0 rejected", path.display()),
                "  note: target_client_item_id lookups need the daemon's store and are checked at intake".to_string(),
            ]
        );
    }

    #[test]
    fn a_rejected_file_reports_the_rule_it_breaks() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (path, ok, lines) = report_on(dir.path(), "broken.json", b"[1]");
        assert!(!ok);
        assert_eq!(
            lines,
            vec![format!(
                "{}: REJECTED: the manifest must be a JSON object, found an array",
                path.display()
            )]
        );
        let good = json!({"template_id": "t", "items": [{"input_data": {}}]});
        let (path, ok, lines) = report_on(dir.path(), "bad name.json", good.to_string().as_bytes());
        assert!(!ok);
        assert_eq!(
            lines,
            vec![format!("{}: REJECTED: the manifest name contains ' '; NAME may contain only ASCII letters, digits, `.`, `-` and `_`", path.display())]
        );
        let huge = dir.path().join("huge.json");
        let file = std::fs::File::create(&huge).expect("create");
        file.set_len(crate::manifest::MAX_MANIFEST_BYTES + 1)
            .expect("sparse file");
        assert_eq!(
            validation_report(&huge),
            (
                false,
                vec![format!(
                    "{}: REJECTED: the file is over 64 MiB",
                    huge.display()
                )]
            )
        );
        assert_eq!(
            validation_report(&dir.path().join("gone!.json")),
            (false, vec![format!("{}: REJECTED: the manifest name contains '!'; NAME may contain only ASCII letters, digits, `.`, `-` and `_`", dir.path().join("gone!.json").display())])
        );
        // As intake judges it: the size first, even before a name that breaks the rule.
        let huge_bad = dir.path().join("huge bad.json");
        std::fs::rename(&huge, &huge_bad).expect("rename");
        assert_eq!(
            validation_report(&huge_bad),
            (
                false,
                vec![format!(
                    "{}: REJECTED: the file is over 64 MiB",
                    huge_bad.display()
                )]
            )
        );
        let missing = dir.path().join("missing.json");
        let (ok, lines) = validation_report(&missing);
        assert!(!ok);
        assert!(
            lines.len() == 1
                && lines[0].starts_with(&format!("{}: REJECTED: cannot read: ", missing.display())),
            "{lines:?}"
        );
        assert_eq!(
            validation_report(Path::new("..")),
            (
                false,
                vec!["..: REJECTED: the file name does not end in `.json`".to_string()]
            )
        );
    }
}
