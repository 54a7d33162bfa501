//! The command line (SPEC section 2), in parts:
//!
//! - [`args`]: the clap definitions (what `--help`, the man pages and the completions
//!   show) and `--instance NAME`;
//! - [`commands`]: what each command does, each a short call into the library;
//!   [`run`] the daemon in the foreground (signals, systemd);
//! - [`client`]: how the commands reach the running daemon, the read-only TCP endpoint
//!   (reqwest) and the control socket (hyper's HTTP/1.1 client over a Unix stream).
//!
//! This module runs the parsed command and turns an error into its one line and exit code.

use std::process::ExitCode;

use anyhow::Context as _;

pub mod args;
pub mod client;
mod commands;
mod run;

pub use args::Cli;
use args::Command;

/// The exit code of an invalid configuration (sysexits.h `EX_CONFIG`): the unit's
/// `RestartPreventExitStatus=78` keeps systemd from restarting what cannot work.
pub const EX_CONFIG: u8 = 78;

/// The exit code of wrong usage, as clap reports it (SPEC section 2: 2).
const EX_USAGE: u8 = 2;

/// The exit code for an error: [`EX_CONFIG`] when the configuration is at fault
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
        EX_CONFIG
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

/// Runs the parsed command; errors are printed with their cause chain by `main`.
pub fn main_with(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut command = cli.command;
    args::apply_instance(&mut command, cli.instance.as_deref())?;
    match command {
        Command::Validate { files } => commands::validate(&files),
        Command::CheckConfig { config } => commands::check_config(config),
        Command::FromCsv(args) => commands::from_csv(args),
        Command::Schema { which } => commands::schema(which),
        Command::GenerateAssets { dir } => commands::generate_assets(&dir),
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
        Command::Run { config } => run::run(config).await,
        Command::Demo { manifest, seed } => crate::demo::run(manifest, seed).await,
        Command::Sim(args) => commands::sim(args).await,
        Command::Status {
            config,
            json,
            timeout,
        } => commands::status(config, json, timeout).await,
        Command::Cancel { name, config } => commands::control(config, &name, "cancel").await,
        Command::Resume { name, config } => commands::control(config, &name, "resume").await,
        Command::Pause { name, config } => commands::control(config, &name, "pause").await,
        Command::Backup { file, config } => commands::backup(config, &file).await,
        Command::Restore { file, config } => commands::restore(config, &file).await,
        Command::List {
            config,
            json,
            limit,
        } => commands::list(config, json, limit).await,
        Command::Show {
            name,
            config,
            json,
            items,
        } => commands::show(config, &name, json, items).await,
        Command::Validate { .. }
        | Command::CheckConfig { .. }
        | Command::FromCsv(_)
        | Command::Schema { .. }
        | Command::GenerateAssets { .. } => Ok(ExitCode::FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn configuration_errors_exit_78_and_others_1() {
        let config =
            anyhow::Error::new(crate::settings::SettingsError::NoApiKey).context("starting");
        assert_eq!(exit_code_for(&config), EX_CONFIG);
        let sim = anyhow::Error::new(InvalidConfiguration("bad knob".into()));
        assert_eq!(exit_code_for(&sim), 78);
        let other = anyhow::anyhow!("the store is locked");
        assert_eq!(exit_code_for(&other), 1);
    }
}
