//! The shell completions and man pages the package installs: the completions in the real shells (Debian's `bash`, `zsh`
//! and `fish`): the subcommands, every option of `show`, `list` and `from-csv`, and file
//! names where a file is expected. A shell that is not installed is skipped, saying so.
//! (clap_complete's bash script for a hyphenated name completed nothing after a
//! subcommand: clap-rs/clap#6421; `assets::fix_bash_case_arms` works around it.)

use std::path::Path;
use std::process::Command;

use crate::helpers::{command, succeeded};

/// Captures what zsh's completion system offers for a line: an interactive zsh in a
/// pseudo-terminal (`zpty`) with `compadd` wrapped to print each match between markers
/// (the markers are spelt in two pieces so that the echoed input never contains them).
const ZSH_CAPTURE: &str = r#"
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
zpty -w z "PROMPT='>'; RPROMPT=''"
zpty -w z "fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compprefuncs=( _cap_begin ); comppostfuncs=( _cap_end )'
zpty -w z '_cap_begin() { print -n "<<BE""GIN>>"; }; _cap_end() { print -n "<<E""ND>>"; }'
zpty -w z 'compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi; typeset -a __hits; builtin compadd -A __hits "$@"; (( $#__hits == 0 )) && return 1; local h; for h in $__hits; do print -n -r -- "<<""M>>$h"; done; }'
zpty -w z 'bindkey "^I" complete-word'
zpty -n -w z "$2"$'\t'
out=
integer n=0
while (( n++ < 400 )); do
  if zpty -r -t z chunk; then out+=$chunk; [[ $out == *'<<END>>'* ]] && break; else sleep 0.05; fi
done
[[ $out == *'<<END>>'* ]] || { print -r -- "no completion came: $out" >&2; exit 3; }
body=${out#*<<BEGIN>>}; body=${body%%<<END>>*}
for m in ${(s:<<M>>:)body}; do print -r -- $m; done
zpty -d z
"#;

fn installed(shell: &str) -> bool {
    Command::new(shell)
        .args(["-c", "exit 0"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What `shell` offers for `line` (completing its last word), run in `cwd`.
fn offered(shell: &str, completions: &Path, line: &str, cwd: &Path) -> Vec<String> {
    let mut run = match shell {
        "bash" => {
            let script = completions.join("tented-bulkd.bash");
            // The words as bash splits them; a line ending in a space completes "".
            let program = format!(
                r#"source '{}'
read -ra COMP_WORDS <<< "$LINE"
[[ "$LINE" == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="$LINE"; COMP_POINT=${{#LINE}}
_tented__bulkd tented-bulkd "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
# No match: readline then completes file names, as the registration asks (-o default).
if [[ ${{#COMPREPLY[@]}} -eq 0 ]] && complete -p tented-bulkd | grep -q -- '-o default'; then
    mapfile -t COMPREPLY < <(compgen -f -- "${{COMP_WORDS[COMP_CWORD]}}")
fi
printf '%s\n' "${{COMPREPLY[@]}}""#,
                script.display()
            );
            let mut bash = Command::new("bash");
            bash.args(["--norc", "--noprofile", "-c", &program])
                .env("LINE", line);
            bash
        }
        "fish" => {
            let script = completions.join("tented-bulkd.fish");
            let mut fish = Command::new("fish");
            fish.args(["--no-config", "-c"]).arg(format!(
                "source '{}'; complete -C '{line}'",
                script.display()
            ));
            fish
        }
        _ => {
            let capture = cwd.join(".capture.zsh");
            std::fs::write(&capture, ZSH_CAPTURE).expect("the capture script");
            let mut zsh = Command::new("zsh");
            zsh.arg("-f").arg(&capture).arg(completions).arg(line);
            zsh
        }
    };
    let output = succeeded(
        run.current_dir(cwd),
        &format!("{shell} completing `{line}`"),
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        // fish prints `candidate<TAB>description`.
        .map(|l| l.split('\t').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The package's man pages and completions, as `generate-assets` writes them.
fn generated_assets() -> tempfile::TempDir {
    let assets = tempfile::tempdir().expect("temp dir");
    let status = command(["generate-assets"])
        .arg(assets.path())
        .output()
        .expect("generate-assets runs");
    assert!(status.status.success(), "generate-assets: {status:?}");
    assets
}

#[test]
fn every_shell_completes_subcommands_their_options_and_file_names() {
    let assets = generated_assets();
    let completions = assets.path().join("completions");
    let cwd = tempfile::tempdir().expect("a working folder");
    std::fs::write(cwd.path().join("manifest-a.json"), "{}").expect("a file");

    let cases: [(&str, &[&str]); 5] = [
        (
            "tented-bulkd ",
            &["show", "list", "from-csv", "run", "status", "validate"],
        ),
        (
            "tented-bulkd show --",
            &["--json", "--items", "--config", "--instance"],
        ),
        ("tented-bulkd list --", &["--json", "--limit", "--config"]),
        (
            "tented-bulkd from-csv --",
            &[
                "--template",
                "--kind",
                "--id-column",
                "--set",
                "--out",
                "--drop",
            ],
        ),
        ("tented-bulkd validate manifest-", &["manifest-a.json"]),
    ];
    let mut ran = Vec::new();
    for shell in ["bash", "zsh", "fish"] {
        if !installed(shell) {
            println!("skipped: {shell} completions: {shell} is not installed (Debian: apt-get install {shell})");
            continue;
        }
        for (line, expected) in cases {
            let got = offered(shell, &completions, line, cwd.path());
            for want in expected {
                assert!(
                    got.iter().any(|g| g == want),
                    "{shell}: `{line}<TAB>` does not offer {want}; it offers {got:?}"
                );
            }
        }
        ran.push(shell);
    }
    println!("completions checked in: {ran:?}");
}

/// The man pages as `man` renders them: no warning from `man --warnings` (groff's), the
/// version on every page, and the main page's FILES, ENVIRONMENT, EXIT STATUS, SIGNALS
/// and SEE ALSO. Skipped, saying so, where `man` is absent.
#[test]
fn the_man_pages_render_without_warnings_and_carry_their_sections() {
    if Command::new("man").arg("--version").output().is_err() {
        println!("skipped: the man pages: man is not installed (Debian: apt-get install man-db)");
        return;
    }
    let assets = generated_assets();
    let version = env!("CARGO_PKG_VERSION");
    let mut pages = 0;
    for entry in std::fs::read_dir(assets.path().join("man")).expect("man pages") {
        let page = entry.expect("entry").path();
        let rendered = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man runs");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.trim().is_empty(),
            "man --warnings {}: {warnings}",
            page.display()
        );
        let roff = std::fs::read_to_string(&page).expect("the page");
        let title = roff.lines().find(|l| l.starts_with(".TH")).unwrap_or("");
        assert!(
            title.contains(version),
            "{}: no version in {title}",
            page.display()
        );
        assert!(
            roff.contains(".SH SEE ALSO"),
            "{}: no SEE ALSO",
            page.display()
        );
        assert!(
            roff.contains(".SH EXIT STATUS"),
            "{}: no EXIT STATUS",
            page.display()
        );
        pages += 1;
    }
    assert!(pages >= 10, "{pages} pages");
    let main = std::fs::read_to_string(assets.path().join("man/tented-bulkd.1")).expect("main");
    for section in ["FILES", "ENVIRONMENT", "EXIT STATUS", "SIGNALS", "SEE ALSO"] {
        assert!(
            main.contains(&format!(".SH {section}")),
            "tented-bulkd(1) has no {section}"
        );
    }
}
