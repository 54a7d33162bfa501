//! The package's generated files (issue 10, point 4): the man pages (clap_mangen) and the
//! bash, zsh and fish completions (clap_complete), made from the same clap definitions
//! as `--help`, so they cannot drift from it. `tented-bulkd generate-assets DIR` (hidden)
//! writes them; `packaging/build-deb.sh` runs it before `cargo deb`.
//!
//! The command comes in as a parameter (`Cli::command()`), so this module does not
//! depend on the CLI.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Why the assets could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("cannot create the folder {}", .path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the man pages into {}", .path.display())]
    ManPages {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the {shell} completions into {}", .path.display())]
    Completions {
        shell: Shell,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The shells whose completions ship with the package.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `DIR/man/NAME.1` (and `NAME-SUBCOMMAND.1` for every visible subcommand) and
/// `DIR/completions/` (`NAME.bash`, `_NAME`, `NAME.fish`); returns the files written.
pub fn write_assets(command: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for folder in [&man, &completions] {
        std::fs::create_dir_all(folder).map_err(|source| AssetsError::CreateFolder {
            path: folder.clone(),
            source,
        })?;
    }
    let mut written = man_pages(command.clone(), &man)?;
    let name = command.get_name().to_owned();
    for shell in SHELLS {
        let mut command = command.clone();
        let path = clap_complete::generate_to(shell, &mut command, &name, &completions).map_err(
            |source| AssetsError::Completions {
                shell,
                path: completions.clone(),
                source,
            },
        )?;
        if shell == Shell::Bash {
            fix_bash_case_arms(&path, &name).map_err(|source| AssetsError::Completions {
                shell,
                path: path.clone(),
                source,
            })?;
        }
        written.push(path);
    }
    Ok(written)
}

/// clap_complete's bash script for a binary whose name has a `-` sets
/// `cmd="tented__bulkd__subcmd__show"` but labels its case arms
/// `tented__subcmd__bulkd__subcmd__show)`, so no subcommand's options complete
/// (clap-rs/clap#6421, open). The arms are renamed to what `cmd` is set to; a script
/// without the mismatch (a fixed clap_complete) is left as it is.
fn fix_bash_case_arms(path: &Path, name: &str) -> std::io::Result<()> {
    let right = format!("{}__subcmd__", name.replace('-', "__"));
    let wrong = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    if right == wrong {
        return Ok(());
    }
    let script = std::fs::read_to_string(path)?;
    if script.contains(&wrong) {
        std::fs::write(path, script.replace(&wrong, &right))?;
    }
    Ok(())
}

/// What the main page adds after clap's sections (roff).
const MAIN_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/tented\-bulkd/config.toml\fR
The configuration (\fB\-\-config\fR; a missing default file means the built\-in
defaults). \fI/etc/tented\-bulkd/NAME.toml\fR is an instance's (\fB\-\-instance\fR \fINAME\fR,
\fBtented\-bulkd@NAME.service\fR).
.TP
\fI/etc/tented\-bulkd/api_key\fR, \fI/etc/tented\-bulkd/NAME.key\fR
The API key, root's alone (mode 0600), handed to the service by systemd
(\fBLoadCredential=\fR).
.TP
\fI/var/lib/tented\-bulkd/inbox/\fR
Where manifests are dropped (rename them in; the group may write).
.TP
\fI/var/lib/tented\-bulkd/outbox/\fR
One \fINAME\fR.result.json (and .result.csv, .retry.json) per manifest.
.TP
\fI/var/lib/tented\-bulkd/archive/\fR
Every manifest taken, as it was dropped.
.TP
\fI/var/lib/tented\-bulkd/state/\fR
The store (mode 0700): what was sent and paid for. Never delete it while work is
unfinished; back it up with \fBtented\-bulkd backup\fR.
.TP
\fI/run/tented\-bulkd/control.sock\fR
The control socket (\fBcancel\fR, \fBpause\fR, \fBresume\fR, \fBbackup\fR), for the daemon's group.
.TP
\fI/usr/share/tented\-bulkd/\fR
Prometheus alert rules and a Grafana dashboard.
.SH ENVIRONMENT
.TP
\fBTENTED_API_KEY\fR
The API key, when no credential or key file gives one.
.TP
\fBTENTED_BULKD__\fR\fISECTION\fR\fB__\fR\fIKEY\fR
Overrides a configuration key (\fBTENTED_BULKD__API__REQUESTS_PER_SECOND=10\fR).
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd: the key is read from its \fItented_api_key\fR first.
.TP
\fBRUST_LOG\fR
The log filter (default \fBinfo\fR).
.TP
\fBNO_COLOR\fR
No colours, even on a terminal.
.TP
\fBJOURNAL_STREAM\fR, \fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd: log lines carry the journal's priority; readiness, status and
watchdog keep\-alives are sent.
.SH EXIT STATUS
.TP
\fB0\fR
Success.
.TP
\fB1\fR
The command's own failure (the daemon unreachable or unhealthy for \fBstatus\fR,
something rejected for \fBvalidate\fR, a folder that cannot be made).
.TP
\fB2\fR
Wrong usage.
.TP
\fB78\fR
An invalid configuration, or a store no start can use (damaged, behind its marker,
of a newer format): systemd does not restart it (\fBRestartPreventExitStatus=78\fR).
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop taking work, let the requests under way end (12 s at most), make the store
durable and exit 0 within 15 s.
.TP
\fBSIGHUP\fR
Read the configuration again for the API key and the request budget.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5),
\fI/usr/share/doc/tented\-bulkd/README.md\fR
"#;

/// What every subcommand's page adds (roff).
const SUBCOMMAND_SECTIONS: &str = r#".SH EXIT STATUS
0 on success, 1 on the command's own failure, 2 on wrong usage, 78 for an invalid
configuration; see \fBtented\-bulkd\fR(1).
.SH SEE ALSO
\fBtented\-bulkd\fR(1)
"#;

/// The man page of `command` and of each of its visible subcommands, into `dir`: clap's
/// sections, then FILES, ENVIRONMENT, EXIT STATUS, SIGNALS and SEE ALSO (the main page)
/// or EXIT STATUS and SEE ALSO (a subcommand's), and the version on every page.
fn man_pages(command: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let error = |source| AssetsError::ManPages {
        path: dir.to_path_buf(),
        source,
    };
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut pages = vec![write_man_page(&command, MAIN_SECTIONS, dir).map_err(error)?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap gives a subcommand no version: every page carries the package's.
        let sub = sub.clone().version(env!("CARGO_PKG_VERSION"));
        pages.push(write_man_page(&sub, SUBCOMMAND_SECTIONS, dir).map_err(error)?);
    }
    pages.sort();
    Ok(pages)
}

/// One page: clap_mangen's sections, `extra` (roff), then VERSION.
fn write_man_page(command: &clap::Command, extra: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let man = clap_mangen::Man::new(command.clone());
    let mut out: Vec<u8> = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    out.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut out)?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, out)?;
    Ok(path)
}

/// The main man page of `command`, as roff text.
pub fn man_page(command: clap::Command) -> Result<String, std::io::Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn visible_subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .collect()
    }

    #[test]
    fn the_man_page_names_every_subcommand() {
        let page = man_page(Cli::command()).expect("renders");
        assert!(page.contains(".TH tented-bulkd 1"), "{page}");
        let subcommands = visible_subcommands();
        assert!(subcommands.len() >= 8, "{subcommands:?}");
        for name in &subcommands {
            // roff escapes `-` as `\-`.
            let in_roff = name.replace('-', "\\-");
            assert!(
                page.contains(&in_roff),
                "the man page does not name `{name}`"
            );
        }
        assert!(
            !page.contains("generate\\-assets"),
            "the hidden command stays hidden"
        );
    }

    #[test]
    fn the_assets_are_a_man_page_per_command_and_three_completions() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let written = write_assets(Cli::command(), dir.path()).expect("written");
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        assert!(
            names.contains(&"man/tented-bulkd.1".to_owned()),
            "{names:?}"
        );
        for name in visible_subcommands() {
            let page = format!("man/tented-bulkd-{name}.1");
            assert!(names.contains(&page), "{page} in {names:?}");
        }
        for file in [
            "completions/tented-bulkd.bash",
            "completions/_tented-bulkd",
            "completions/tented-bulkd.fish",
        ] {
            assert!(names.contains(&file.to_owned()), "{file} in {names:?}");
            let text = std::fs::read_to_string(dir.path().join(file)).expect("reads");
            // Each completes the subcommands and an option of one.
            assert!(text.contains("from-csv"), "{file}");
            assert!(text.contains("id-column"), "{file}");
        }
    }

    /// Issue 10, point 6: every argument and option of every command says what it is
    /// for in `--help` (clap's own `--help` and `--version` aside).
    #[test]
    fn every_argument_of_every_command_has_help() {
        let mut missing = Vec::new();
        let mut checked = 0;
        let mut commands = vec![(String::new(), Cli::command())];
        while let Some((path, command)) = commands.pop() {
            let path = format!("{path} {}", command.get_name()).trim().to_owned();
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                checked += 1;
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            if command.get_about().is_none() && !command.is_hide_set() {
                missing.push(format!("{path}: (the command itself)"));
            }
            for sub in command.get_subcommands() {
                commands.push((path.clone(), sub.clone()));
            }
        }
        assert!(checked > 20, "only {checked} arguments found");
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
