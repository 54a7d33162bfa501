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

/// The man page of `command` and of each of its visible subcommands, into `dir`.
fn man_pages(command: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let error = |source| AssetsError::ManPages {
        path: dir.to_path_buf(),
        source,
    };
    clap_mangen::generate_to(command.clone(), dir).map_err(error)?;
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(error)? {
        let path = entry.map_err(error)?.path();
        if path.extension().is_some_and(|e| e == "1") {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
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
