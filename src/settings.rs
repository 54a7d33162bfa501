//! Typed configuration: built-in defaults, then the TOML file, then
//! `TENTED_BULKD__SECTION__KEY` environment variables, layered by the `config` crate.
//!
//! The built-in defaults are `config/default.toml` itself, compiled in, so the file in the
//! repository and the daemon's behaviour without a file can never disagree.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The default configuration, with a comment on every key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");

/// Where every command that reads the configuration looks for it by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tented-bulkd/config.toml";

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TENTED_BULKD";

/// The floor between two polls of one job or tent against a real (non-loopback) API.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The name of the systemd credential that carries the API key.
pub const CREDENTIAL_NAME: &str = "tented_api_key";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key}: cannot read the API key from {path}: {source}")]
    KeyFile {
        /// Which setting named the file (`api.key_file`, or the systemd credential).
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no API key: set it with systemd LoadCredential={CREDENTIAL_NAME}, api.key_file, TENTED_API_KEY or api.key")]
    NoApiKey,
}

/// Where the API key in use came from (SPEC section 3: first found wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/tented_api_key` (systemd `LoadCredential=`).
    Credential(PathBuf),
    /// The file named by `api.key_file`.
    KeyFile(PathBuf),
    /// The `TENTED_API_KEY` environment variable.
    Environment,
    /// `api.key` in the configuration.
    ConfigKey,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Credential(path) => {
                write!(
                    f,
                    "the systemd credential {CREDENTIAL_NAME} ({})",
                    path.display()
                )
            }
            KeySource::KeyFile(path) => write!(f, "api.key_file ({})", path.display()),
            KeySource::Environment => f.write_str("the TENTED_API_KEY environment variable"),
            KeySource::ConfigKey => f.write_str("api.key in the configuration"),
        }
    }
}

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The configuration, typed: every key parsed and checked once, when it loads (from any
/// serde source: read as written, then typed and checked).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct Settings {
    pub api: ApiSettings,
    pub poll: PollSettings,
    pub paths: PathSettings,
    pub inbox: InboxSettings,
    pub submit: SubmitSettings,
    pub retention: RetentionSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

impl TryFrom<RawSettings> for Settings {
    type Error = SettingsError;

    /// Types the keys serde leaves as text, then checks the rules serde cannot express.
    fn try_from(raw: RawSettings) -> Result<Settings, SettingsError> {
        let settings = Settings::typed(raw)?;
        settings.check()?;
        Ok(settings)
    }
}

/// The configuration as its sources hold it, before the keys that serde cannot type
/// (`api.base_url`, `admin.listen`, `admin.socket`) are parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    api: RawApiSettings,
    poll: PollSettings,
    paths: PathSettings,
    inbox: InboxSettings,
    submit: SubmitSettings,
    retention: RetentionSettings,
    admin: RawAdminSettings,
    log: LogSettings,
}

/// `[api]` as written: `base_url` still text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiSettings {
    base_url: String,
    key_file: String,
    #[serde(default)]
    key: Option<ApiKey>,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    requests_per_second: u32,
}

/// `[admin]` as written: `listen` and `socket` still text, `""` for off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminSettings {
    listen: String,
    socket: String,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Tented's address: an http or https URL.
    pub base_url: Url,
    pub key_file: String,
    /// The key written into the configuration itself: the last source tried.
    pub key: Option<ApiKey>,
    pub timeout: Duration,
    pub requests_per_second: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    pub inbox: PathBuf,
    pub outbox: PathBuf,
    pub archive: PathBuf,
    pub state: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxSettings {
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    #[serde(with = "humantime_serde")]
    pub rescan: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitSettings {
    #[serde(with = "humantime_serde")]
    pub credit_retry: Duration,
    pub failure_threshold: f64,
    /// The most create requests on the wire at once, across manifests (the window
    /// follows the admission time below it).
    pub max_in_flight: u32,
    /// A template whose items completed this recently skips the slow start.
    #[serde(with = "humantime_serde")]
    pub proven_for: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// How long finished manifests stay whole in the store; `None` ("off"): forever.
    #[serde(deserialize_with = "retention_period")]
    pub store: Option<Duration>,
    /// The store is compacted once its files pass this many MiB and four times what its
    /// records hold (0: never). See `store::compaction`.
    pub compact_above_mib: u64,
}

impl RetentionSettings {
    /// When the store is compacted (a bound no store reaches when it is 0).
    pub fn compaction(&self) -> crate::store::Compaction {
        let default = crate::store::Compaction::default();
        crate::store::Compaction {
            min_bytes: match self.compact_above_mib {
                0 => u64::MAX,
                mib => mib.saturating_mul(1024 * 1024),
            },
            ratio: default.ratio,
        }
    }
}

/// `"90d"` or `"off"` (an environment variable's `off` may arrive as `false`, which the
/// `config` crate reads as a boolean).
fn retention_period<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Flag(bool),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Text(text) => text,
        Raw::Flag(false) => return Ok(None),
        Raw::Flag(true) => {
            return Err(serde::de::Error::custom(
                "`true` is neither a duration like \"90d\" nor \"off\"",
            ))
        }
    };
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is neither a duration like \"90d\" nor \"off\": {e}"
            ))
        })
}

#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// The read-only TCP endpoint (GET and HEAD only); `None` ("") when it is off.
    pub listen: Option<SocketAddr>,
    /// The control socket (cancel, pause, resume, backup); `None` ("") when it is off.
    pub socket: Option<PathBuf>,
    /// Host names (or addresses) the read-only endpoint also answers to, besides its own
    /// address and loopback: a central Prometheus scraping it. `host` or `host:port`.
    pub allowed_hosts: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// The default path: a missing file means built-in defaults.
    Default,
    /// A path given with `--config`: it must exist.
    File(PathBuf),
    /// Built-in defaults and the environment only (the demo and tests).
    BuiltIn,
}

impl ConfigSource {
    pub fn from_arg(path: Option<PathBuf>) -> ConfigSource {
        match path {
            Some(path) => ConfigSource::File(path),
            None => ConfigSource::Default,
        }
    }
}

impl Settings {
    /// Loads defaults, the file and the environment of this process.
    pub fn load(source: &ConfigSource) -> Result<Settings, SettingsError> {
        Self::load_with_env(source, std::env::vars())
    }

    /// Loads defaults, the file and the given environment variables (tests pass their own).
    pub fn load_with_env(
        source: &ConfigSource,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_CONFIG_TOML,
            config::FileFormat::Toml,
        ));
        builder = match source {
            ConfigSource::Default => builder.add_source(
                config::File::from(Path::new(DEFAULT_CONFIG_PATH))
                    .format(config::FileFormat::Toml)
                    .required(false),
            ),
            ConfigSource::BuiltIn => builder,
            ConfigSource::File(path) => builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            ),
        };
        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("admin.allowed_hosts")
                .source(Some(env_map)),
        );
        // As written first, then typed here, so that an error names its key alike from
        // any source (the config crate would wrap serde's message in its own words).
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        Settings::try_from(raw)
    }

    /// The built-in defaults (`config/default.toml`) alone: no file, no environment. The
    /// demo starts from them and sets its own folders and addresses.
    pub fn defaults() -> Result<Settings, SettingsError> {
        Settings::load_with_env(&ConfigSource::BuiltIn, std::iter::empty())
    }

    /// Types the keys that serde leaves as text, each error naming its key.
    fn typed(raw: RawSettings) -> Result<Settings, SettingsError> {
        let RawSettings {
            api,
            poll,
            paths,
            inbox,
            submit,
            retention,
            admin,
            log,
        } = raw;
        Ok(Settings {
            api: ApiSettings {
                base_url: parse_base_url(&api.base_url)?,
                key_file: api.key_file,
                key: api.key,
                timeout: api.timeout,
                requests_per_second: api.requests_per_second,
            },
            poll,
            paths,
            inbox,
            submit,
            retention,
            admin: AdminSettings {
                listen: parse_listen(&admin.listen)?,
                socket: (!admin.socket.is_empty()).then(|| PathBuf::from(admin.socket)),
                allowed_hosts: admin.allowed_hosts,
            },
            log,
        })
    }

    /// `admin.allowed_hosts`: names or addresses, `name` or `name:port`, nothing else.
    fn check_allowed_hosts(&self) -> Result<(), SettingsError> {
        if let Some(bad) = self.admin.allowed_hosts.iter().find(|h| {
            h.is_empty()
                || h.chars()
                    .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | ','))
        }) {
            return Err(SettingsError::Invalid {
                key: "admin.allowed_hosts",
                message: format!(
                    "`{bad}` is not a host name or address (`name` or `name:port`, no spaces)"
                ),
            });
        }
        Ok(())
    }

    /// The rules that serde cannot express.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.api.requests_per_second == 0 {
            return Err(SettingsError::Invalid {
                key: "api.requests_per_second",
                message: "must be at least 1".into(),
            });
        }
        if self.api.timeout.is_zero() {
            return Err(SettingsError::Invalid {
                key: "api.timeout",
                message: "must be more than 0s".into(),
            });
        }
        if self.poll.interval.is_zero() {
            return Err(SettingsError::Invalid {
                key: "poll.interval",
                message: "must be more than 0s".into(),
            });
        }
        if self.poll.interval < MIN_POLL_INTERVAL && !self.base_url_is_loopback() {
            return Err(SettingsError::Invalid {
                key: "poll.interval",
                message: format!(
                    "{} is below the 10s floor, which is allowed only when api.base_url is a loopback address (it is `{}`)",
                    humantime::format_duration(self.poll.interval),
                    url_text(&self.api.base_url)
                ),
            });
        }
        if !(0.0..=1.0).contains(&self.submit.failure_threshold) {
            return Err(SettingsError::Invalid {
                key: "submit.failure_threshold",
                message: format!(
                    "{} is not a share between 0 and 1",
                    self.submit.failure_threshold
                ),
            });
        }
        if !(1..=64).contains(&self.submit.max_in_flight) {
            return Err(SettingsError::Invalid {
                key: "submit.max_in_flight",
                message: format!("{} is not between 1 and 64", self.submit.max_in_flight),
            });
        }
        if self.submit.credit_retry.is_zero() {
            return Err(SettingsError::Invalid {
                key: "submit.credit_retry",
                message: "must be more than 0s".into(),
            });
        }
        if self.retention.store.is_some_and(|d| d.is_zero()) {
            return Err(SettingsError::Invalid {
                key: "retention.store",
                message: "must be more than 0s (\"off\" keeps finished manifests forever)".into(),
            });
        }
        self.check_allowed_hosts()
    }

    /// True when `api.base_url` names this machine (127.0.0.0/8, ::1 or `localhost`).
    fn base_url_is_loopback(&self) -> bool {
        match self.api.base_url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }

    /// Reads the API key from its sources, first found wins: `$CREDENTIALS_DIRECTORY/tented_api_key`,
    /// the file named by `api.key_file`, `TENTED_API_KEY`, then `api.key`.
    pub fn resolve_api_key(&self) -> Result<Option<ApiKey>, SettingsError> {
        let key = self.resolve_api_key_and_source(
            std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            std::env::var("TENTED_API_KEY").ok(),
        )?;
        Ok(key.map(|(key, _)| key))
    }

    /// The key and where it came from (`check-config` shows the source), from the given
    /// credentials folder and `TENTED_API_KEY` value.
    pub fn resolve_api_key_and_source(
        &self,
        credentials_directory: Option<PathBuf>,
        env_key: Option<String>,
    ) -> Result<Option<(ApiKey, KeySource)>, SettingsError> {
        if let Some(dir) = credentials_directory {
            let path = dir.join(CREDENTIAL_NAME);
            if path.exists() {
                let key = read_key_file("$CREDENTIALS_DIRECTORY/tented_api_key", &path)?;
                return Ok(Some((key, KeySource::Credential(path))));
            }
        }
        if !self.api.key_file.is_empty() {
            let path = PathBuf::from(&self.api.key_file);
            let key = read_key_file("api.key_file", &path)?;
            return Ok(Some((key, KeySource::KeyFile(path))));
        }
        if let Some(key) = env_key.filter(|k| !k.trim().is_empty()) {
            return Ok(Some((
                ApiKey(key.trim().to_string()),
                KeySource::Environment,
            )));
        }
        Ok(self
            .api
            .key
            .clone()
            .filter(|k| !k.expose().trim().is_empty())
            .map(|key| (key, KeySource::ConfigKey)))
    }

    /// Every key with its effective value, as `check-config` prints them (`api.key`
    /// redacted). Paths and durations are written as the configuration writes them.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let duration = |d: Duration| format!("{:?}", duration_text(d));
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        let text = |t: &str| format!("{t:?}");
        let key = match &self.api.key {
            Some(key) if !key.expose().trim().is_empty() => text("[redacted]"),
            _ => text(""),
        };
        vec![
            ("api.base_url", text(url_text(&self.api.base_url))),
            ("api.key_file", text(&self.api.key_file)),
            ("api.key", key),
            ("api.timeout", duration(self.api.timeout)),
            (
                "api.requests_per_second",
                self.api.requests_per_second.to_string(),
            ),
            ("poll.interval", duration(self.poll.interval)),
            ("poll.max_wait", duration(self.poll.max_wait)),
            ("paths.inbox", path(&self.paths.inbox)),
            ("paths.outbox", path(&self.paths.outbox)),
            ("paths.archive", path(&self.paths.archive)),
            ("paths.state", path(&self.paths.state)),
            ("inbox.settle", duration(self.inbox.settle)),
            ("inbox.rescan", duration(self.inbox.rescan)),
            ("submit.credit_retry", duration(self.submit.credit_retry)),
            (
                "submit.failure_threshold",
                self.submit.failure_threshold.to_string(),
            ),
            (
                "submit.max_in_flight",
                self.submit.max_in_flight.to_string(),
            ),
            ("submit.proven_for", duration(self.submit.proven_for)),
            (
                "retention.store",
                self.retention.store.map_or_else(|| text("off"), duration),
            ),
            (
                "retention.compact_above_mib",
                self.retention.compact_above_mib.to_string(),
            ),
            (
                "admin.listen",
                text(&self.admin.listen.map(|a| a.to_string()).unwrap_or_default()),
            ),
            (
                "admin.socket",
                self.admin.socket.as_deref().map_or_else(|| text(""), path),
            ),
            (
                "admin.allowed_hosts",
                format!(
                    "[{}]",
                    self.admin
                        .allowed_hosts
                        .iter()
                        .map(|h| text(h))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            ("log.format", text(self.log.format.as_str())),
        ]
    }
}

/// `api.base_url`: an http or https URL.
fn parse_base_url(text: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(text).map_err(|e| SettingsError::Invalid {
        key: "api.base_url",
        message: format!("`{text}` is not a URL: {e}"),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(SettingsError::Invalid {
            key: "api.base_url",
            message: format!("`{text}` must be http or https"),
        });
    }
    Ok(url)
}

/// `admin.listen`: an address and port, or `""` (off).
fn parse_listen(text: &str) -> Result<Option<SocketAddr>, SettingsError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| SettingsError::Invalid {
        key: "admin.listen",
        message: format!(
            "`{text}` is not an address like 127.0.0.1:9187 (\"\" turns the endpoint off)"
        ),
    })
}

/// A URL as the configuration writes it: without the `/` that parsing adds to a bare
/// host (`https://api.tented.ai`, as SPEC section 3 writes it).
fn url_text(url: &Url) -> &str {
    let text = url.as_str();
    match (url.path(), url.query(), url.fragment()) {
        ("/", None, None) => text.strip_suffix('/').unwrap_or(text),
        _ => text,
    }
}

/// A duration as it would be written in the configuration, in its largest exact unit
/// (`90d`, `36h`, `10s`, `1500ms`): humantime's own format reads `90d` back as
/// `2months 29days 2h 52m 48s`.
pub fn duration_text(d: Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    if millis != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, word) in [(86_400, "d"), (3_600, "h"), (60, "m")] {
        if secs % unit == 0 {
            return format!("{}{word}", secs / unit);
        }
    }
    format!("{secs}s")
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

fn read_key_file(key: &'static str, path: &Path) -> Result<ApiKey, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::KeyFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SettingsError::KeyFile {
            key,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(ApiKey(trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_would_be_written() {
        let cases = [
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(36 * 3_600), "36h"),
            (Duration::from_secs(15 * 60), "15m"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::ZERO, "0ms"),
        ];
        for (duration, text) in cases {
            assert_eq!(duration_text(duration), text);
            assert_eq!(
                humantime::parse_duration(text).ok(),
                Some(duration),
                "{text} reads back"
            );
        }
    }
}
