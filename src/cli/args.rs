//! The command line's clap definitions: what `--help`, the man pages and the shell
//! completions show (SPEC section 2), and `--instance NAME`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

use super::InvalidConfiguration;
use crate::manifest::ManifestKind;

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
const CONFIG_DIR: &str = "/etc/tented-bulkd";

/// The configuration file of instance `name` (`tented-bulkd@NAME.service`), in `dir`.
/// A name is what systemd allows in an instance and a file name can hold: letters,
/// digits, `-`, `_` and `.`, not beginning with `.`.
fn instance_config(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
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
pub(super) fn apply_instance(command: &mut Command, instance: Option<&str>) -> anyhow::Result<()> {
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
        /// Which schema: `manifest` (what the inbox takes), `result` (what the outbox gives),
        /// or `list`, `show`, `status` (what they print with `--json`).
        #[arg(value_enum)]
        which: SchemaName,
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
    #[arg(long, value_enum, default_value_t = KindName::Bulk)]
    pub kind: KindName,
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

/// `schema WHICH`: the documents whose JSON Schema the program prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemaName {
    Manifest,
    Result,
    List,
    Show,
    Status,
}

/// `from-csv --kind`: the kinds of manifest a spreadsheet can become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindName {
    Bulk,
    Create,
    Edit,
}

impl From<KindName> for ManifestKind {
    fn from(kind: KindName) -> ManifestKind {
        match kind {
            KindName::Bulk => ManifestKind::Bulk,
            KindName::Create => ManifestKind::Create,
            KindName::Edit => ManifestKind::Edit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
