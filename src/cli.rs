//! The command line (SPEC section 2). Thin: each command parses, then calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::admin::{ControlAnswer, StatusReport};
use crate::manifest::ManifestKind;
use crate::pipeline::intake::{self, FileContent, Verdict};
use crate::settings::{ConfigSource, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "tented-bulkd",
    version,
    about = "Turns manifest files into Tented generations, durably, never sending a request twice"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The workspace instance NAME of `tented-bulkd@NAME.service`: the same as
    /// `--config /etc/tented-bulkd/NAME.toml`.
    #[arg(long, global = true, value_name = "NAME")]
    pub instance: Option<String>,
}

/// The folder of the configuration files (`config.toml`, and `NAME.toml` per instance).
pub const CONFIG_DIR: &str = "/etc/tented-bulkd";

/// The configuration file of instance `name` (`tented-bulkd@NAME.service`), in `dir`.
/// A name is what systemd allows in an instance and a file name can hold: letters,
/// digits, `-`, `_` and `.`, not beginning with `.`.
pub fn instance_config(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        bail!(InvalidConfiguration(format!(
            "--instance {name:?}: an instance name may hold only letters, digits, `-`, `_` and `.`, and may not begin with `.`"
        )));
    }
    Ok(dir.join(format!("{name}.toml")))
}

impl Command {
    /// The command's `--config`, for the commands that read the configuration.
    fn config_mut(&mut self) -> Option<&mut Option<PathBuf>> {
        match self {
            Command::Run { config }
            | Command::CheckConfig { config }
            | Command::Status { config, .. }
            | Command::Cancel { config, .. }
            | Command::Resume { config, .. }
            | Command::Pause { config, .. }
            | Command::Backup { config, .. }
            | Command::Restore { config, .. }
            | Command::List { config, .. }
            | Command::Show { config, .. } => Some(config),
            Command::FromCsv(args) => Some(&mut args.config),
            Command::Demo { .. }
            | Command::Sim(_)
            | Command::Validate { .. }
            | Command::Schema { .. }
            | Command::GenerateAssets { .. } => None,
        }
    }
}

/// Puts `--instance NAME`'s configuration file where the command reads `--config`.
fn apply_instance(command: &mut Command, instance: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = instance else {
        return Ok(());
    };
    let path = instance_config(Path::new(CONFIG_DIR), name)?;
    match command.config_mut() {
        Some(slot @ None) => {
            *slot = Some(path);
            Ok(())
        }
        Some(Some(given)) => bail!(InvalidConfiguration(format!(
            "--instance {name} means --config {}, and --config {} was given too: give one",
            path.display(),
            given.display()
        ))),
        None => bail!(InvalidConfiguration(
            "--instance applies to the commands that read the configuration; this one reads none"
                .to_string()
        )),
    }
}

// Parsed once per process: the size of the `sim` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon, in the foreground, logging to stderr.
    Run {
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Starts the simulator and the daemon on a temporary folder, drops the example
    /// manifest, waits for its result and prints a summary.
    Demo {
        /// The manifest to drop (default: the embedded examples/demo.json).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The simulator's random seed (the same seed replays the same outcomes).
        #[arg(long, default_value_t = crate::demo::DEMO_SEED)]
        seed: u64,
    },
    /// The Tented API simulator, standalone.
    Sim(crate::simulator::SimArgs),
    /// The daemon's own validation, offline: a per-item report; exit 1 where anything
    /// would be rejected.
    Validate {
        /// The manifest files to check (NAME.json), as the daemon would judge them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Loads the configuration exactly as `run` would and prints the effective settings
    /// (the API key redacted, with the source it came from); exit 78 if it is invalid.
    CheckConfig {
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// What the running daemon is doing, from its admin endpoint; exit 1 when it is
    /// unhealthy or cannot be reached.
    Status {
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Prints the daemon's /status as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How long to wait for the daemon's answer.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Cancels a manifest: chunks not yet sent are never sent.
    Cancel {
        /// The manifest's NAME, as `list` shows it (its file name without `.json`, with `~N` when the name was used before).
        name: String,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Resumes a paused manifest (by the operator, the failure threshold or a restore).
    Resume {
        /// The manifest's NAME, as `list` shows it (its file name without `.json`, with `~N` when the name was used before).
        name: String,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Pauses a manifest: nothing more of it is sent until `resume`; what was admitted is
    /// still polled.
    Pause {
        /// The manifest's NAME, as `list` shows it (its file name without `.json`, with `~N` when the name was used before).
        name: String,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Asks the running daemon for a consistent snapshot of its store and writes it to
    /// FILE, atomically.
    Backup {
        /// Where to write the snapshot (written atomically; an existing file is replaced).
        file: PathBuf,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Offline: fills an empty `paths.state` from a backup; its unfinished manifests
    /// start paused.
    Restore {
        /// A snapshot written by `backup`.
        file: PathBuf,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The manifests in the store, newest first: name, kind, state, counts, times.
    List {
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// How many manifests to show.
        #[arg(long, default_value_t = crate::history::DEFAULT_LIST_LIMIT)]
        limit: usize,
    },
    /// One manifest: state and reason, counts, its requests, the result's path.
    Show {
        /// The manifest's NAME, as `list` shows it (its file name without `.json`, with `~N` when the name was used before).
        name: String,
        /// Configuration file (default /etc/tented-bulkd/config.toml; missing means defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON for scripts instead of tables.
        #[arg(long)]
        json: bool,
        /// Adds every item's status, tent id and error.
        #[arg(long)]
        items: bool,
    },
    /// Builds a manifest from a spreadsheet export (CSV: RFC 4180, UTF-8 with or without a
    /// BOM, a header row), validated as `validate` would; prints it, writes it to --out,
    /// or drops it into the daemon's inbox.
    FromCsv(FromCsvArgs),
    /// Prints the JSON Schema of a manifest, a result file, or what `list`, `show` and
    /// `status` print with `--json`.
    Schema {
        /// Which schema: `manifest` (what the inbox takes) or `result` (what the outbox gives).
        #[arg(value_parser = ["manifest", "result", "list", "show", "status"])]
        which: String,
    },
    /// Writes the man pages and the shell completions (bash, zsh, fish) into DIR, for
    /// packaging.
    #[command(hide = true)]
    GenerateAssets {
        /// The folder to write `man/` and `completions/` into.
        dir: PathBuf,
    },
}

/// `from-csv`'s arguments.
#[derive(clap::Args, Debug)]
pub struct FromCsvArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// The template of a bulk manifest (its `template_id`).
    #[arg(long, value_name = "ID")]
    pub template: Option<String>,
    /// The kind of manifest to build.
    #[arg(long, default_value = "bulk", value_parser = ["bulk", "create", "edit"])]
    pub kind: String,
    /// The column that becomes each item's client_item_id (required and unique per row).
    #[arg(long, value_name = "COLUMN")]
    pub id_column: Option<String>,
    /// Sets a top-level field, typed as the field needs (auto_publish=true,
    /// default_tent_name_prefix=Acme, priority=high, metadata.source=crm); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Writes the manifest to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE", conflicts_with = "drop")]
    pub out: Option<PathBuf>,
    /// Drops the manifest into the daemon's inbox (paths.inbox) as NAME.json, atomically.
    #[arg(long, value_name = "NAME")]
    pub drop: Option<String>,
    /// The daemon's configuration, for --drop (default /etc/tented-bulkd/config.toml).
    #[arg(long, requires = "drop")]
    pub config: Option<PathBuf>,
}

/// The exit code of an invalid configuration (sysexits.h `EX_CONFIG`): the unit's
/// `RestartPreventExitStatus=78` keeps systemd from restarting what cannot work.
pub const EXIT_CONFIG: u8 = 78;

/// The exit code for an error: [`EXIT_CONFIG`] when the configuration is at fault
/// (anywhere in the cause chain), else 1.
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| {
        cause.is::<crate::settings::SettingsError>()
            || cause.is::<InvalidConfiguration>()
            || cause.is::<crate::admin::SocketError>()
            || cause
                .downcast_ref::<crate::daemon::DaemonError>()
                .is_some_and(|e| match e {
                    crate::daemon::DaemonError::Socket(_) => true,
                    crate::daemon::DaemonError::Store(store) => store.needs_an_operator(),
                    _ => false,
                })
            || cause
                .downcast_ref::<crate::store::StoreError>()
                .is_some_and(crate::store::StoreError::needs_an_operator)
    }) {
        EXIT_CONFIG
    } else {
        1
    }
}

/// An invalid configuration whose error is not a [`crate::settings::SettingsError`] (the
/// simulator's own configuration): exits 78 too.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfiguration(pub String);

/// An error and its causes on one line, each text once: a cause whose text the line
/// already holds (a message that embeds its source) is not repeated.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        out.push_str(": ");
        out.push_str(&text);
    }
    out
}

/// `check-config`: the configuration as `run` would load it, every key with its value,
/// and where the API key comes from (never the key itself).
fn check_config(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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

/// Runs the parsed command; errors are printed with their cause chain by `main`.
pub fn main_with(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut command = cli.command;
    apply_instance(&mut command, cli.instance.as_deref())?;
    match command {
        Command::Validate { files } => validate(&files),
        Command::CheckConfig { config } => check_config(config),
        Command::FromCsv(args) => from_csv(args),
        Command::Schema { which } => schema(&which),
        Command::GenerateAssets { dir } => generate_assets(&dir),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async_main(command))
        }
    }
}

async fn async_main(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => run(config).await,
        Command::Demo { manifest, seed } => crate::demo::run(manifest, seed).await,
        Command::Sim(args) => sim(args).await,
        Command::Status {
            config,
            json,
            timeout,
        } => status(config, json, timeout).await,
        Command::Cancel { name, config } => control(config, &name, "cancel").await,
        Command::Resume { name, config } => control(config, &name, "resume").await,
        Command::Pause { name, config } => control(config, &name, "pause").await,
        Command::Backup { file, config } => backup(config, &file).await,
        Command::Restore { file, config } => restore(config, &file).await,
        Command::List {
            config,
            json,
            limit,
        } => list(config, json, limit).await,
        Command::Show {
            name,
            config,
            json,
            items,
        } => show(config, &name, json, items).await,
        Command::Validate { .. }
        | Command::CheckConfig { .. }
        | Command::FromCsv(_)
        | Command::Schema { .. }
        | Command::GenerateAssets { .. } => Ok(ExitCode::FAILURE),
    }
}

/// `generate-assets DIR`: the man pages and completions, from this very command line.
fn generate_assets(dir: &Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    for path in crate::assets::write_assets(Cli::command(), dir)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// systemd integration: readiness, watchdog, stopping.
struct Systemd;

impl crate::daemon::Lifecycle for Systemd {
    fn ready(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    fn alive(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
    fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    fn wants_status(&self) -> bool {
        std::env::var_os("NOTIFY_SOCKET").is_some()
    }
    fn status(&self, line: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
    }
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
    fn watchdog_period(&self) -> Option<std::time::Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| std::time::Duration::from_micros(usec / 2))
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = ConfigSource::from_arg(config);
    let settings = Settings::load(&source)?;
    crate::telemetry::init(settings.log.format);
    let key = settings
        .resolve_api_key()?
        .ok_or(crate::settings::SettingsError::NoApiKey)?;
    let shutdown = CancellationToken::new();
    // Installed before the daemon can say it is ready, so that a SIGTERM right after
    // readiness is a clean stop, never the default action (death by the signal).
    let installed = install_signals().context("cannot install the signal handlers")?;
    let (current, current_rx) = tokio::sync::watch::channel(None);
    let signals = tokio::spawn(handle_signals(
        current_rx,
        source,
        shutdown.clone(),
        installed,
    ));
    let result =
        crate::daemon::run_reopening(settings, key, shutdown.clone(), Arc::new(Systemd), |ctx| {
            let _ = current.send(ctx);
        })
        .await;
    shutdown.cancel();
    let _ = signals.await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, SIGINT and SIGHUP streams.
type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn install_signals() -> std::io::Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    ))
}

async fn handle_signals(
    current: tokio::sync::watch::Receiver<Option<Arc<crate::context::Context>>>,
    source: ConfigSource,
    shutdown: CancellationToken,
    (mut term, mut int, mut hup): Signals,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = term.recv() => { tracing::info!("SIGTERM"); shutdown.cancel(); return; }
            _ = int.recv() => { tracing::info!("SIGINT"); shutdown.cancel(); return; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the API key and the request budget");
                let ctx = current.borrow().clone();
                match Settings::load(&source) {
                    Ok(settings) => match ctx {
                        Some(ctx) => crate::daemon::reload(&ctx, &settings),
                        None => tracing::warn!("SIGHUP before the daemon was ready: nothing to reload"),
                    },
                    Err(e) => tracing::error!("SIGHUP: the configuration does not load, nothing changed: {e}"),
                }
            }
        }
    }
}

async fn sim(args: crate::simulator::SimArgs) -> anyhow::Result<ExitCode> {
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
    let Some(addr) = settings.admin_addr() else {
        bail!("the admin endpoint is turned off (admin.listen = \"\")");
    };
    Ok(format!("http://{addr}"))
}

/// The control socket's path from the configuration (`cancel`, `pause`, `resume`, `backup`).
fn control_socket(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let settings = Settings::load(&ConfigSource::from_arg(config))?;
    let Some(socket) = settings.admin_socket() else {
        bail!("the control socket is turned off (admin.socket = \"\")");
    };
    Ok(socket)
}

/// Why the control socket could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SocketUnreachable {
    #[error("the daemon on {} did not answer within {} s (it may be overloaded or stuck)", .socket.display(), .timeout.as_secs())]
    Timeout {
        socket: PathBuf,
        timeout: std::time::Duration,
    },
    #[error("cannot reach the daemon on {} (is it running? are you in its group?)", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {} broke off the exchange", .socket.display())]
    Http {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
}

/// The operator controls' one way to the daemon: an HTTP/1.1 `method path` over the
/// control socket, answered (status and headers) within `timeout`; the body streams after.
pub async fn ask_socket(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    timeout: std::time::Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, SocketUnreachable> {
    let http = |source| SocketUnreachable::Http {
        socket: socket.to_path_buf(),
        source,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| SocketUnreachable::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(http)?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .body(axum::body::Body::empty())
            .map_err(|e| SocketUnreachable::Connect {
                socket: socket.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        sender.send_request(request).await.map_err(http)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(SocketUnreachable::Timeout {
                socket: socket.to_path_buf(),
                timeout,
            })
        })
}

/// The next data chunk of an answer's body; `None` at its end.
pub async fn next_chunk(
    body: &mut hyper::body::Incoming,
) -> Result<Option<hyper::body::Bytes>, hyper::Error> {
    use hyper::body::Body;
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A whole (small) answer's body.
pub async fn read_body(body: &mut hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body).await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// How long a command waits for the daemon's answer (a backup waits longer).
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
enum DaemonUnreachable {
    #[error("the daemon at {base} did not answer within {} s (it may be overloaded or stuck)", .timeout.as_secs())]
    Timeout {
        base: String,
        timeout: std::time::Duration,
    },
    #[error("cannot reach the daemon at {base} (is it running?)")]
    Connect {
        base: String,
        #[source]
        source: reqwest::Error,
    },
}

/// How the reading commands (`status`, `list`, `show`) reach the running daemon: a GET
/// to its read-only TCP endpoint.
async fn ask_daemon(
    base: &str,
    method: reqwest::Method,
    path: &str,
    timeout: std::time::Duration,
) -> Result<reqwest::Response, DaemonUnreachable> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|source| DaemonUnreachable::Connect {
            base: base.to_string(),
            source,
        })?;
    client
        .request(method, format!("{base}{path}"))
        .send()
        .await
        .map_err(|source| {
            if source.is_timeout() {
                DaemonUnreachable::Timeout {
                    base: base.to_string(),
                    timeout,
                }
            } else {
                DaemonUnreachable::Connect {
                    base: base.to_string(),
                    source,
                }
            }
        })
}

/// GETs a JSON document from the daemon; a 404's error text becomes the error.
async fn get_json<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<T> {
    let response = ask_daemon(base, reqwest::Method::GET, path, timeout).await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<crate::admin::HistoryError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        bail!("the daemon answered {status}: {message}");
    }
    response
        .json()
        .await
        .with_context(|| format!("the daemon's answer to {path} is not what this version reads"))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn status(
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
async fn list(config: Option<PathBuf>, json: bool, limit: usize) -> anyhow::Result<ExitCode> {
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
async fn show(
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

/// A NAME as one path segment (names are letters, digits, `.`, `-`, `_` and `~`, but a
/// mistyped one must not change the path).
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn control(config: Option<PathBuf>, name: &str, action: &str) -> anyhow::Result<ExitCode> {
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
async fn backup(config: Option<PathBuf>, file: &Path) -> anyhow::Result<ExitCode> {
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
async fn restore(config: Option<PathBuf>, file: &Path) -> anyhow::Result<ExitCode> {
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

/// EX_CONFIG: an invalid configuration.
const EX_CONFIG: u8 = 78;

/// Wrong usage, as clap reports it.
const EX_USAGE: u8 = 2;

/// `schema manifest|result|list|show|status`: the JSON Schema, generated from the types.
fn schema(which: &str) -> anyhow::Result<ExitCode> {
    let schema = match which {
        "manifest" => crate::schema::manifest_schema(),
        "result" => crate::schema::result_schema(),
        other => match crate::schema::output_schema(other) {
            Some(schema) => schema,
            None => bail!("no schema named {other}"),
        },
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

/// `from-csv`: a spreadsheet's rows become a manifest, validated, then printed, written
/// or dropped into the inbox.
fn from_csv(args: FromCsvArgs) -> anyhow::Result<ExitCode> {
    use crate::spreadsheet::{CsvOptions, SpreadsheetError};
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    let kind = ManifestKind::from_name(&args.kind).context("clap checked the kind")?;
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
        let settings = match Settings::load(&ConfigSource::from_arg(args.config)) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("tented-bulkd: {:#}", anyhow::Error::new(e));
                return Ok(ExitCode::from(EX_CONFIG));
            }
        };
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
fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
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
        FileContent::Bytes(bytes) if bytes.len() as u64 > LARGE_MANIFEST_BYTES => {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!(
                "validating {shown} ({:.1} MiB)",
                bytes.len() as f64 / 1048576.0
            ));
            spinner.enable_steady_tick(std::time::Duration::from_millis(100));
            Some(spinner)
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
                item.index, item.client_item_id
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

    #[test]
    fn an_error_report_names_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(20);
        let io_text = io.to_string();
        let embedded = crate::settings::SettingsError::KeyFile {
            key: "api.key_file",
            path: "/x/key".into(),
            source: io,
        };
        let report = error_report(&anyhow::Error::new(embedded));
        assert_eq!(report.matches(&io_text).count(), 1, "{report}");
        assert!(
            report.starts_with("api.key_file: cannot read the API key from /x/key"),
            "{report}"
        );
        // A cause the message does not hold is added after it.
        let chained =
            anyhow::Error::new(std::io::Error::other("disk on fire")).context("cannot write");
        assert_eq!(error_report(&chained), "cannot write: disk on fire");
    }

    #[test]
    fn every_command_that_takes_a_name_explains_it_alike() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        let helps: Vec<(String, String)> = ["show", "pause", "cancel", "resume"]
            .iter()
            .map(|sub| {
                let help = command
                    .find_subcommand(sub)
                    .and_then(|s| s.get_arguments().find(|a| a.get_id() == "name"))
                    .and_then(|a| a.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                (sub.to_string(), help)
            })
            .collect();
        assert!(!helps[0].1.is_empty());
        for (sub, help) in &helps {
            assert_eq!(help, &helps[0].1, "{sub}'s NAME help differs");
        }
    }

    #[test]
    fn configuration_errors_exit_78_and_others_1() {
        let config =
            anyhow::Error::new(crate::settings::SettingsError::NoApiKey).context("starting");
        assert_eq!(exit_code_for(&config), EXIT_CONFIG);
        let sim = anyhow::Error::new(InvalidConfiguration("bad knob".into()));
        assert_eq!(exit_code_for(&sim), 78);
        let other = anyhow::anyhow!("the store is locked");
        assert_eq!(exit_code_for(&other), 1);
    }

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
