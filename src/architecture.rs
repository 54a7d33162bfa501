//! Architecture checks: these tests read the crate's own source files and fail when a
//! boundary of the design breaks (see the tour in `lib.rs` and ARCHITECTURE.md).
//!
//! - No import cycle among the files of `src/` (test modules left out).
//! - Only [`crate::api`] (and the CLI's client of the daemon, `src/cli/client.rs`) uses
//!   `reqwest`; only [`crate::store`] uses `sled`.
//! - The daemon never imports the simulator, and the simulator imports nothing of the
//!   daemon; the pipeline never imports the wiring around it (daemon, admin, cli, demo).
//! - A pipeline stage never imports an earlier one ([`PIPELINE_STAGES`]), and
//!   `pipeline::policy` imports no stage.
//! - No function outside tests is longer than [`MAX_FUNCTION_LINES`] lines, except the
//!   ones listed in [`KNOWN_LONG_FUNCTIONS`].
//!
//! The scanners read Rust as text, with no parser: comments and string and character
//! literals are blanked out first, so a mention there never counts, and a module that is
//! `#[cfg(test)]` followed by `mod name` is left out of the import graph and of the
//! function lengths. The boundary checks read whole files, test modules included: a
//! boundary holds for the tests compiled into the library too. The last tests run the scanners on small snippets, and check that the
//! real tree gives them enough to read, so that no check can pass by parsing nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// The folder holding the crate's source files.
const SRC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The longest a function outside tests may be, from its signature line to the line of
/// its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// The functions (as `file:function`) known to be longer than [`MAX_FUNCTION_LINES`].
/// The length test fails when one of them is no longer long, so that the list shrinks as
/// they are shortened instead of hiding new offenders.
const KNOWN_LONG_FUNCTIONS: &[&str] = &[];

// ---------------------------------------------------------------------------------------
// The checks on the real tree.
// ---------------------------------------------------------------------------------------

#[test]
fn no_import_cycle_among_source_files() {
    let graph = Graph::build(&load_tree());
    let cycles = graph.cycles();
    let report: Vec<String> = cycles
        .iter()
        .map(|cycle| graph.describe_cycle(cycle))
        .collect();
    assert!(
        cycles.is_empty(),
        "{} import cycle(s) among the files of src/:\n{}",
        cycles.len(),
        report.join("\n")
    );
}

#[test]
fn only_api_speaks_http_to_tented() {
    // The CLI's client of the daemon's own admin endpoint speaks HTTP too, but never to
    // Tented: it is the one other file allowed.
    let allowed = |path: &str| path.starts_with("src/api/") || path == "src/cli/client.rs";
    let offences = crate_root_uses(&load_tree(), "reqwest", allowed);
    assert_no_offence(
        "`reqwest` is used outside src/api/ (only the api module speaks HTTP to Tented)",
        &offences,
    );
}

#[test]
fn only_store_touches_sled() {
    let in_store = |path: &str| path == "src/store.rs" || path.starts_with("src/store/");
    let offences = crate_root_uses(&load_tree(), "sled", in_store);
    assert_no_offence(
        "`sled` is used outside src/store/ (only the store touches the database)",
        &offences,
    );
}

#[test]
fn the_daemon_never_imports_the_simulator() {
    let allowed = [
        "src/cli/mod.rs",
        "src/cli/args.rs",
        "src/cli/commands.rs",
        "src/demo.rs",
        "src/lib.rs",
    ];
    let mut offences = Vec::new();
    for file in load_tree() {
        if file.path.starts_with("src/simulator/") || allowed.contains(&file.path.as_str()) {
            continue;
        }
        offences.extend(simulator_mentions(&file));
        offences.extend(file.references_into(&["simulator"]));
    }
    offences.sort();
    offences.dedup();
    assert_no_offence("a file of the daemon refers to the simulator", &offences);
}

#[test]
fn the_pipeline_never_imports_the_wiring() {
    let wiring = ["daemon", "admin", "cli", "demo"];
    let offences: Vec<Finding> = load_tree()
        .iter()
        .filter(|file| file.path.starts_with("src/pipeline/"))
        .flat_map(|file| file.references_into(&wiring))
        .collect();
    assert_no_offence(
        "a pipeline stage refers to the wiring (daemon, admin, cli or demo)",
        &offences,
    );
}

/// The pipeline's stages in the order a manifest meets them (ARCHITECTURE.md). A stage
/// hands its work on, so it may use the stages after it, never one before it; what
/// several of them decide alike is in `pipeline::policy`, which imports none of them.
const PIPELINE_STAGES: &[&str] = &[
    "intake",
    "submission",
    "polling",
    "reconciliation",
    "outbox",
];

/// Where a module path (`pipeline::polling::run`, without `crate`) falls in
/// [`PIPELINE_STAGES`], if it is in a stage.
fn stage_position(path: &[String]) -> Option<usize> {
    match path {
        [pipeline, stage, ..] if pipeline == "pipeline" => {
            PIPELINE_STAGES.iter().position(|s| s == stage)
        }
        _ => None,
    }
}

/// The lines of the stages' files (tests included) that refer to an earlier stage, or
/// that make `pipeline::policy` refer to any stage.
fn backward_stage_references(files: &[SourceFile]) -> Vec<Finding> {
    let mut offences = Vec::new();
    for file in files {
        let Some(module) = &file.module else {
            continue;
        };
        let segments: Vec<String> = module.split("::").map(str::to_owned).collect();
        let is_policy = segments.get(1).is_some_and(|s| s == "policy") && segments[0] == "pipeline";
        let from = stage_position(&segments);
        if from.is_none() && !is_policy {
            continue;
        }
        for reference in file.crate_references(&file.code) {
            let to = stage_position(&reference.path);
            let backward = match (from, to) {
                (Some(from), Some(to)) => to < from,
                (None, Some(_)) => is_policy,
                (_, None) => false,
            };
            if backward {
                offences.push(file.finding(reference.line));
            }
        }
    }
    offences
}

#[test]
fn no_pipeline_stage_imports_an_earlier_one() {
    let offences = backward_stage_references(&load_tree());
    assert_no_offence(
        "a pipeline stage refers to an earlier stage (intake → submission → polling → \
         reconciliation → outbox), or pipeline::policy refers to a stage",
        &offences,
    );
}

#[test]
fn the_simulator_does_not_import_the_daemon() {
    let mut offences = Vec::new();
    for file in load_tree()
        .iter()
        .filter(|file| file.path.starts_with("src/simulator/"))
    {
        for reference in file.crate_references(&file.code) {
            if reference.path.first().map(String::as_str) != Some("simulator") {
                offences.push(file.finding(reference.line));
            }
        }
    }
    assert_no_offence(
        "the simulator refers to a crate module outside crate::simulator",
        &offences,
    );
}

#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let functions: Vec<Function> = load_tree().iter().flat_map(SourceFile::functions).collect();
    let long: Vec<&Function> = functions
        .iter()
        .filter(|f| f.length > MAX_FUNCTION_LINES)
        .collect();
    let mut problems: Vec<String> = long
        .iter()
        .filter(|f| !KNOWN_LONG_FUNCTIONS.contains(&f.key().as_str()))
        .map(|f| format!("{f}: longer than {MAX_FUNCTION_LINES} lines"))
        .collect();
    for known in KNOWN_LONG_FUNCTIONS {
        if !long.iter().any(|f| f.key() == *known) {
            problems.push(stale_allowance(known, &functions));
        }
    }
    assert!(
        problems.is_empty(),
        "function length (limit {MAX_FUNCTION_LINES} lines):\n  {}",
        problems.join("\n  ")
    );
}

/// Explains why an entry of [`KNOWN_LONG_FUNCTIONS`] must go: its function is short now,
/// or is gone.
fn stale_allowance(known: &str, functions: &[Function]) -> String {
    let now: Vec<String> = functions
        .iter()
        .filter(|f| f.key() == known)
        .map(ToString::to_string)
        .collect();
    if now.is_empty() {
        format!("{known} is in KNOWN_LONG_FUNCTIONS but no such function exists: remove it from the list")
    } else {
        format!(
            "{known} is no longer longer than {MAX_FUNCTION_LINES} lines ({}): remove it from KNOWN_LONG_FUNCTIONS",
            now.join(", ")
        )
    }
}

/// Fails with `what` and one line per offence (file, line and the line itself).
fn assert_no_offence(what: &str, offences: &[Finding]) {
    let lines: Vec<String> = offences.iter().map(ToString::to_string).collect();
    assert!(offences.is_empty(), "{what}:\n  {}", lines.join("\n  "));
}

/// Every use of the external crate `name` as a path's root (`name::...`, `use name`) in a
/// file for which `allowed` is false.
fn crate_root_uses(
    files: &[SourceFile],
    name: &str,
    allowed: impl Fn(&str) -> bool,
) -> Vec<Finding> {
    let mut offences = Vec::new();
    for file in files.iter().filter(|file| !allowed(&file.path)) {
        for position in word_positions(&file.code, name) {
            let before = file.code[..position].trim_end();
            let after = &file.code[position + name.len()..];
            if after.starts_with("::")
                || before.ends_with("use")
                || before.ends_with("extern crate")
            {
                offences.push(file.finding(line_of(&file.code, position)));
            }
        }
    }
    offences
}

/// Every `simulator::` and `crate::simulator` written in the file's code.
fn simulator_mentions(file: &SourceFile) -> Vec<Finding> {
    word_positions(&file.code, "simulator")
        .into_iter()
        .filter(|&at| {
            file.code[at..].starts_with("simulator::") || file.code[..at].ends_with("crate::")
        })
        .map(|at| file.finding(line_of(&file.code, at)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Source files.
// ---------------------------------------------------------------------------------------

/// One `.rs` file of `src/`, read as text.
struct SourceFile {
    /// The path from the crate's root, such as `src/api/client.rs`.
    path: String,
    /// The module the file is (`api::client`, `crate` for lib.rs), or `None` for main.rs,
    /// which is the root of the binary, a crate of its own.
    module: Option<String>,
    /// The file as written, one entry a line, for the failure messages.
    lines: Vec<String>,
    /// The file with its comments and its string and character literals blanked out; it
    /// keeps the file's lines, so that a line number in it is a line number in the file.
    code: String,
    /// `code` with its test modules blanked out too.
    non_test_code: String,
    /// The submodules declared test-only here (`#[cfg(test)]` then `mod name;`).
    test_only_children: Vec<String>,
}

impl SourceFile {
    /// Reads a file given its path from the crate's root and its text.
    fn new(path: &str, text: &str) -> Self {
        let code = mask_comments_and_literals(text);
        let (non_test_code, test_only_children) = blank_test_modules(&code);
        SourceFile {
            path: path.to_owned(),
            module: module_of(path),
            lines: text.split('\n').map(str::to_owned).collect(),
            code,
            non_test_code,
            test_only_children,
        }
    }

    /// Where the file's line `line` (counted from 1) is, and what it says.
    fn finding(&self, line: usize) -> Finding {
        let text = self.lines.get(line - 1).map_or("", |l| l.trim());
        Finding {
            path: self.path.clone(),
            line,
            text: text.to_owned(),
        }
    }

    /// Every path this file's `code` names through `crate::`, `super::` or `self::`, made
    /// absolute (main.rs has none: its `crate` is the binary).
    fn crate_references(&self, code: &str) -> Vec<Reference> {
        match &self.module {
            Some(module) => crate_references(module, code),
            None => Vec::new(),
        }
    }

    /// The lines of the file (tests included) that refer to one of the top-level `modules`.
    fn references_into(&self, modules: &[&str]) -> Vec<Finding> {
        self.crate_references(&self.code)
            .into_iter()
            .filter(|r| {
                r.path
                    .first()
                    .is_some_and(|first| modules.contains(&first.as_str()))
            })
            .map(|r| self.finding(r.line))
            .collect()
    }

    /// True when the file, tests left out, holds only attributes and `mod` declarations,
    /// as `src/pipeline/mod.rs` does: naming it in a path is no import of it.
    fn merely_declares_submodules(&self) -> bool {
        self.non_test_code.lines().all(|line| {
            let line = line.trim();
            line.is_empty()
                || line.starts_with('#')
                || (module_declaration(line).is_some() && line.ends_with(';'))
        })
    }

    /// The functions of the file outside its test modules, each with its length.
    fn functions(&self) -> Vec<Function> {
        let lines: Vec<&str> = self.non_test_code.split('\n').collect();
        let mut found = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let Some((name, after_name)) = function_signature(line) else {
                continue;
            };
            if let Some(end) = body_end(&lines, index, after_name) {
                let (path, length) = (self.path.clone(), end - index + 1);
                found.push(Function {
                    path,
                    line: index + 1,
                    name,
                    length,
                });
            }
        }
        found
    }
}

/// A line of a file that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    path: String,
    line: usize,
    text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.text)
    }
}

/// A function found by the length scanner.
struct Function {
    path: String,
    line: usize,
    name: String,
    length: usize,
}

impl Function {
    /// The function as [`KNOWN_LONG_FUNCTIONS`] names it: `file:function`.
    fn key(&self) -> String {
        format!("{}:{}", self.path, self.name)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: fn {} is {} lines",
            self.path, self.line, self.name, self.length
        )
    }
}

/// Reads every `.rs` file under `src/`, leaving out the files of test-only modules (this
/// one among them).
fn load_tree() -> Vec<SourceFile> {
    let root = Path::new(SRC_DIR);
    let mut paths = Vec::new();
    collect_rust_files(root, &mut paths);
    paths.sort();
    let files = paths.iter().map(|path| {
        let text = fs::read_to_string(path).expect("a source file of the crate is readable");
        let relative = path.strip_prefix(root).expect("the walk stays under src/");
        SourceFile::new(
            &format!("src/{}", relative.to_string_lossy().replace('\\', "/")),
            &text,
        )
    });
    without_test_only_files(files.collect())
}

/// Adds the `.rs` files under `dir`, at any depth, to `out`.
fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("the source folder is readable") {
        let path = entry.expect("a source folder entry is readable").path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Drops the files of modules that some file declares as `#[cfg(test)] mod name;`.
fn without_test_only_files(files: Vec<SourceFile>) -> Vec<SourceFile> {
    let mut test_only = Vec::new();
    for file in &files {
        let Some(parent) = &file.module else { continue };
        for child in &file.test_only_children {
            test_only.push(if parent == "crate" {
                child.clone()
            } else {
                format!("{parent}::{child}")
            });
        }
    }
    files
        .into_iter()
        .filter(|file| {
            let module = file.module.as_deref().unwrap_or("");
            !test_only
                .iter()
                .any(|t| module == t || module.starts_with(&format!("{t}::")))
        })
        .collect()
}

/// The module a file is: `src/pipeline/intake/mod.rs` is `pipeline::intake`,
/// `src/api/client.rs` is `api::client`, `src/lib.rs` is `crate`, `src/main.rs` none.
fn module_of(path: &str) -> Option<String> {
    let inner = path
        .strip_prefix("src/")
        .unwrap_or(path)
        .trim_end_matches(".rs");
    let mut parts: Vec<&str> = inner.split('/').collect();
    if parts.len() > 1 && parts.last() == Some(&"mod") {
        parts.pop();
    }
    match parts.as_slice() {
        ["main"] => None,
        ["lib"] => Some("crate".to_owned()),
        _ => Some(parts.join("::")),
    }
}

// ---------------------------------------------------------------------------------------
// Text scanning: literals and comments, words, blocks.
// ---------------------------------------------------------------------------------------

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The text with every comment and every string or character literal replaced by spaces
/// (newlines kept), so that only code is left, on the same lines.
fn mask_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match literal_or_comment_end(&chars, i) {
            Some(end) => {
                out.extend(
                    chars[i..end]
                        .iter()
                        .map(|&c| if c == '\n' { '\n' } else { ' ' }),
                );
                i = end;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// If a comment or a literal starts at `i`, the index just past its end.
fn literal_or_comment_end(chars: &[char], i: usize) -> Option<usize> {
    let next = chars.get(i + 1).copied();
    match chars[i] {
        '/' if next == Some('/') => Some(
            chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p),
        ),
        '/' if next == Some('*') => Some(block_comment_end(chars, i)),
        '"' => Some(string_end(chars, i + 1)),
        'r' => raw_string_end(chars, i),
        '\'' => char_literal_end(chars, i),
        _ => None,
    }
}

/// The end of the (possibly nested) block comment opening at `start`.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => (depth, i) = (depth + 1, i + 2),
            ('*', '/') if depth == 1 => return i + 2,
            ('*', '/') => (depth, i) = (depth - 1, i + 2),
            _ => i += 1,
        }
    }
    chars.len()
}

/// The end of a string whose content starts at `from` (just past the opening quote).
fn string_end(chars: &[char], from: usize) -> usize {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The end of the raw string (`r"..."`, `r#"..."#`, `br"..."`) starting at the `r` at
/// `i`, if one starts there; an identifier ending in `r` starts none.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let before = i.checked_sub(1).map(|b| chars[b]);
    let byte_prefix = before == Some('b') && (i < 2 || !is_ident_char(chars[i - 2]));
    if before.is_some_and(is_ident_char) && !byte_prefix {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    if chars.get(i + 1 + hashes) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let content = i + 2 + hashes;
    let found = (content..chars.len()).find(|&at| chars[at..].starts_with(&closing));
    Some(found.map_or(chars.len(), |at| at + closing.len()))
}

/// The end of the character literal starting at the quote at `i`, or `None` when the
/// quote starts a lifetime (`'a`, `'static`).
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        let close = (i + 3..chars.len()).find(|&at| chars[at] == '\'')?;
        return Some(close + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// The byte offsets where `word` stands as a whole word (not inside an identifier).
fn word_positions(text: &str, word: &str) -> Vec<usize> {
    text.match_indices(word)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
        })
        .collect()
}

/// The identifier starting at byte `at`, if one does.
fn identifier_at(text: &str, at: usize) -> Option<&str> {
    let rest = text.get(at..)?;
    let length = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
    let word = &rest[..length];
    word.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        .then_some(word)
}

/// The line (counted from 1) of the byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// The line on which the item whose header starts at byte `column` of line `start` ends:
/// the line of the `}` closing its first `{` outside parentheses and brackets, or `None`
/// when a `;` ends it first (a declaration without a body).
fn body_end(lines: &[&str], start: usize, column: usize) -> Option<usize> {
    let (mut parens, mut braces) = (0i32, 0i32);
    for (index, line) in lines.iter().enumerate().skip(start) {
        let text = if index == start {
            line.get(column..).unwrap_or("")
        } else {
            line
        };
        for c in text.chars() {
            match c {
                '(' | '[' => parens += 1,
                ')' | ']' => parens -= 1,
                ';' if braces == 0 && parens == 0 => return None,
                '{' if braces > 0 || parens == 0 => braces += 1,
                '}' if braces > 0 => {
                    braces -= 1;
                    if braces == 0 {
                        return Some(index);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// The name of the function whose signature starts on this line, and the byte offset
/// just past the name (`fn(u32)`, a function pointer type, is no signature).
fn function_signature(line: &str) -> Option<(String, usize)> {
    word_positions(line, "fn").into_iter().find_map(|at| {
        let rest = &line[at + 2..];
        let name_at = at + 2 + (rest.len() - rest.trim_start().len());
        if name_at == at + 2 {
            return None;
        }
        identifier_at(line, name_at).map(|name| (name.to_owned(), name_at + name.len()))
    })
}

/// The name declared by a `mod name` line (after any `pub`, `pub(crate)`...), if it is one.
fn module_declaration(line: &str) -> Option<&str> {
    let line = line.trim();
    let line = match line.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => &rest[rest.find(')')? + 1..],
        Some(rest) if rest.starts_with(' ') => rest,
        _ => line,
    };
    let rest = line.trim_start().strip_prefix("mod ")?;
    identifier_at(rest, rest.len() - rest.trim_start().len())
}

/// `code` with its test modules (`#[cfg(test)]` on its own line, then `mod name`)
/// replaced by empty lines, and the names of those declared out of line (`mod name;`).
fn blank_test_modules(code: &str) -> (String, Vec<String>) {
    let mut lines: Vec<String> = code.split('\n').map(str::to_owned).collect();
    let mut out_of_line = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some((last, declared)) = test_module_at(&lines, index) else {
            index += 1;
            continue;
        };
        out_of_line.extend(declared);
        lines[index..=last].iter_mut().for_each(String::clear);
        index = last + 1;
    }
    (lines.join("\n"), out_of_line)
}

/// If a test module starts at line `index`, its last line, and its name when it is
/// declared out of line (its body in a file of its own).
fn test_module_at(lines: &[String], index: usize) -> Option<(usize, Option<String>)> {
    if lines[index].trim() != "#[cfg(test)]" {
        return None;
    }
    let declaration = (index + 1..lines.len()).find(|&i| !lines[i].trim().is_empty())?;
    let name = module_declaration(&lines[declaration])?;
    let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
    match body_end(&borrowed, declaration, 0) {
        Some(last) => Some((last, None)),
        None => Some((declaration, Some(name.to_owned()))),
    }
}

// ---------------------------------------------------------------------------------------
// Paths through `crate::`, `super::` and `self::`.
// ---------------------------------------------------------------------------------------

/// A path named in a file, made absolute: its segments after the crate's root.
struct Reference {
    line: usize,
    path: Vec<String>,
}

/// Every path the code of `module` names from `crate`, `super` or `self`: the paths of its
/// `use` statements (groups expanded) and the ones written inline in code.
fn crate_references(module: &str, code: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    let statements = use_statements(code);
    for &(start, end) in &statements {
        for segments in expand_use_tree(&code[start + "use".len()..end]) {
            if let Some(path) = absolute_path(module, &segments) {
                found.push(Reference {
                    line: line_of(code, start),
                    path,
                });
            }
        }
    }
    for (at, segments) in inline_paths(code) {
        if statements
            .iter()
            .any(|&(start, end)| start <= at && at < end)
        {
            continue;
        }
        if let Some(path) = absolute_path(module, &segments) {
            found.push(Reference {
                line: line_of(code, at),
                path,
            });
        }
    }
    found
}

/// The byte ranges of the `use` statements: from the keyword to the semicolon.
fn use_statements(code: &str) -> Vec<(usize, usize)> {
    word_positions(code, "use")
        .into_iter()
        .filter(|&at| code[at + 3..].starts_with(char::is_whitespace))
        .filter_map(|at| code[at..].find(';').map(|length| (at, at + length)))
        .collect()
}

/// The paths written inline from `crate::`, `super::` or `self::`, with their offsets
/// (a macro's `$crate::` is no path of this crate's files).
fn inline_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    for keyword in ["crate", "super", "self"] {
        for at in word_positions(code, keyword) {
            if code[..at].ends_with('$') {
                continue;
            }
            let segments = path_segments_at(code, at);
            if segments.len() > 1 {
                found.push((at, segments));
            }
        }
    }
    found
}

/// The segments of the path starting at byte `at`: `a::b::c` until something other than
/// `::` and an identifier follows.
fn path_segments_at(code: &str, at: usize) -> Vec<String> {
    let mut segments = Vec::new();
    let mut position = at;
    while let Some(word) = identifier_at(code, position) {
        segments.push(word.to_owned());
        position += word.len();
        if !code[position..].starts_with("::") {
            break;
        }
        position += 2;
    }
    segments
}

/// A token of a `use` tree.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Colons,
    Open,
    Close,
    Comma,
    Star,
}

/// The paths a `use` tree names: `crate::{a, b::{c, self}}` is `crate::a`, `crate::b::c`
/// and `crate::b`; an alias (`as x`) and a glob (`*`) end a path.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    let tokens = use_tokens(tree);
    let mut position = 0;
    parse_use_tree(&tokens, &mut position, Vec::new())
}

fn use_tokens(tree: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut position = 0;
    while let Some(c) = tree[position..].chars().next() {
        if let Some(word) = identifier_at(tree, position) {
            tokens.push(Token::Word(word.to_owned()));
            position += word.len();
            continue;
        }
        let token = match c {
            ':' if tree[position..].starts_with("::") => Some(Token::Colons),
            '{' => Some(Token::Open),
            '}' => Some(Token::Close),
            ',' => Some(Token::Comma),
            '*' => Some(Token::Star),
            _ => None,
        };
        position += if token == Some(Token::Colons) {
            2
        } else {
            c.len_utf8()
        };
        tokens.extend(token);
    }
    tokens
}

/// Parses one tree of a `use` after `prefix`; an empty tree (after a trailing comma)
/// names no path.
fn parse_use_tree(tokens: &[Token], position: &mut usize, prefix: Vec<String>) -> Vec<Vec<String>> {
    let mut path = prefix;
    let mut named = false;
    while let Some(token) = tokens.get(*position) {
        *position += 1;
        match token {
            Token::Open => return parse_use_group(tokens, position, &path),
            Token::Comma | Token::Close => {
                *position -= 1;
                break;
            }
            // A glob names the module before it; an alias ends the path it renames.
            Token::Star => {
                named = true;
                break;
            }
            Token::Word(word) if word == "as" => {
                *position += 1;
                break;
            }
            // `self` inside a group names the group's prefix itself.
            Token::Word(word) => {
                if word != "self" || path.is_empty() {
                    path.push(word.clone());
                }
                named = true;
            }
            Token::Colons => {}
        }
    }
    if named {
        vec![path]
    } else {
        Vec::new()
    }
}

/// Parses the trees of a `{...}` group, its opening brace already read.
fn parse_use_group(tokens: &[Token], position: &mut usize, prefix: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    loop {
        paths.extend(parse_use_tree(tokens, position, prefix.to_vec()));
        let token = tokens.get(*position);
        *position += 1;
        if token != Some(&Token::Comma) {
            return paths;
        }
    }
}

/// The segments of the module `module` (none for the crate's root).
fn module_segments(module: &str) -> Vec<String> {
    if module == "crate" {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    }
}

/// The path written in `module` as `segments`, made absolute from the crate's root, if it
/// starts with `crate`, `super` or `self`.
fn absolute_path(module: &str, segments: &[String]) -> Option<Vec<String>> {
    let (first, mut rest) = segments.split_first()?;
    let mut base = module_segments(module);
    match first.as_str() {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            base.pop()?;
        }
        _ => return None,
    }
    while rest.first().is_some_and(|segment| segment == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

// ---------------------------------------------------------------------------------------
// The import graph among the files.
// ---------------------------------------------------------------------------------------

/// The modules of the crate's files and which imports which, each edge with the first
/// line that makes it.
struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<(String, String), Finding>,
}

impl Graph {
    /// Builds the graph from the files' code outside tests. A path counts as an import
    /// of the longest prefix of it that is a module file; naming itself does not, and
    /// neither does naming an ancestor that merely declares submodules.
    fn build(files: &[SourceFile]) -> Self {
        let by_module: BTreeMap<&str, &SourceFile> = files
            .iter()
            .filter_map(|file| file.module.as_deref().map(|module| (module, file)))
            .collect();
        let modules: BTreeSet<String> = by_module.keys().map(|m| (*m).to_owned()).collect();
        let mut edges = BTreeMap::new();
        for (&module, file) in &by_module {
            for reference in file.crate_references(&file.non_test_code) {
                let target = longest_module_prefix(&modules, &reference.path);
                let declaration_only = by_module
                    .get(target.as_str())
                    .is_some_and(|f| f.merely_declares_submodules());
                if target == module || (is_ancestor(&target, module) && declaration_only) {
                    continue;
                }
                edges
                    .entry((module.to_owned(), target))
                    .or_insert_with(|| file.finding(reference.line));
            }
        }
        Graph { modules, edges }
    }

    /// Each module with the modules it imports.
    fn adjacency(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut adjacency: BTreeMap<&str, BTreeSet<&str>> = self
            .modules
            .iter()
            .map(|m| (m.as_str(), BTreeSet::new()))
            .collect();
        for (from, to) in self.edges.keys() {
            adjacency
                .entry(from.as_str())
                .or_default()
                .insert(to.as_str());
        }
        adjacency
    }

    /// One cycle for each group of modules that import one another.
    fn cycles(&self) -> Vec<Cycle> {
        let adjacency = self.adjacency();
        strongly_connected_components(&adjacency)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| Cycle {
                path: shortest_cycle(&adjacency, &component),
                group: component.iter().map(|m| (*m).to_owned()).collect(),
            })
            .collect()
    }

    /// The cycle's path, then the line making each import inside its group (breaking any
    /// of the cycle's edges breaks that cycle; the group may hold others).
    fn describe_cycle(&self, cycle: &Cycle) -> String {
        let mut text = format!("  {}", cycle.path.join(" -> "));
        if cycle.group.len() + 1 > cycle.path.len() {
            text.push_str(&format!(
                " (in a group of {}: {})",
                cycle.group.len(),
                cycle.group.join(", ")
            ));
        }
        for ((from, to), finding) in &self.edges {
            if cycle.group.contains(from) && cycle.group.contains(to) {
                text.push_str(&format!("\n    {from} -> {to}: {finding}"));
            }
        }
        text
    }
}

/// A cycle of imports: its path (the first module repeated at the end) and the whole group
/// of modules that import one another around it.
#[derive(Debug)]
struct Cycle {
    path: Vec<String>,
    group: Vec<String>,
}

/// The longest prefix of `path` that is one of the `modules` (`crate` when none is).
fn longest_module_prefix(modules: &BTreeSet<String>, path: &[String]) -> String {
    (1..=path.len())
        .rev()
        .map(|length| path[..length].join("::"))
        .find(|candidate| modules.contains(candidate))
        .unwrap_or_else(|| "crate".to_owned())
}

/// True when `ancestor` encloses `module` (the crate's root encloses every other module).
fn is_ancestor(ancestor: &str, module: &str) -> bool {
    (ancestor == "crate" && module != "crate") || module.starts_with(&format!("{ancestor}::"))
}

/// Tarjan's algorithm: the groups of nodes that can all reach one another.
fn strongly_connected_components<'a>(
    adjacency: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Vec<BTreeSet<&'a str>> {
    let mut tarjan = Tarjan {
        adjacency,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in adjacency.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    tarjan.components
}

/// The state of one run of Tarjan's algorithm.
struct Tarjan<'g, 'a> {
    adjacency: &'g BTreeMap<&'a str, BTreeSet<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    components: Vec<BTreeSet<&'a str>>,
}

impl<'a> Tarjan<'_, 'a> {
    fn visit(&mut self, node: &'a str) {
        let number = self.index.len();
        self.index.insert(node, number);
        self.low.insert(node, number);
        self.stack.push(node);
        self.on_stack.insert(node);
        let successors = self.adjacency.get(node).cloned().unwrap_or_default();
        for next in successors {
            if !self.index.contains_key(next) {
                self.visit(next);
                self.lower(node, self.low[next]);
            } else if self.on_stack.contains(next) {
                self.lower(node, self.index[next]);
            }
        }
        if self.low[node] == self.index[node] {
            self.pop_component(node);
        }
    }

    fn lower(&mut self, node: &'a str, value: usize) {
        let low = self
            .low
            .get_mut(node)
            .expect("a visited node has a low link");
        *low = (*low).min(value);
    }

    /// Pops the nodes down to `root` off the stack as one component.
    fn pop_component(&mut self, root: &'a str) {
        let mut component = BTreeSet::new();
        while let Some(member) = self.stack.pop() {
            self.on_stack.remove(member);
            component.insert(member);
            if member == root {
                break;
            }
        }
        self.components.push(component);
    }
}

/// The shortest cycle among the modules of `component`.
fn shortest_cycle(
    adjacency: &BTreeMap<&str, BTreeSet<&str>>,
    component: &BTreeSet<&str>,
) -> Vec<String> {
    component
        .iter()
        .filter_map(|&start| cycle_through(adjacency, component, start))
        .min_by_key(Vec::len)
        .expect("modules that import one another lie on a cycle")
}

/// The shortest cycle from `start` back to it inside `component`, found breadth-first.
fn cycle_through(
    adjacency: &BTreeMap<&str, BTreeSet<&str>>,
    component: &BTreeSet<&str>,
    start: &str,
) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in adjacency.get(node).into_iter().flatten() {
            if next == start {
                return Some(path_back(&previous, start, node));
            }
            if component.contains(next) && !previous.contains_key(next) {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The path `start -> ... -> last -> start`, read backwards from `last` through the
/// breadth-first search's `previous` links.
fn path_back(previous: &BTreeMap<&str, &str>, start: &str, last: &str) -> Vec<String> {
    let mut path = vec![start.to_owned()];
    let mut back = last;
    while back != start {
        path.push(back.to_owned());
        back = previous[back];
    }
    path.push(start.to_owned());
    path.reverse();
    path
}

// ---------------------------------------------------------------------------------------
// The scanners, on snippets and on the real tree.
// ---------------------------------------------------------------------------------------

/// Reads snippets given as (path, text) pairs.
fn snippets(files: &[(&str, &str)]) -> Vec<SourceFile> {
    without_test_only_files(
        files
            .iter()
            .map(|(path, text)| SourceFile::new(path, text))
            .collect(),
    )
}

fn edge_names(graph: &Graph) -> Vec<String> {
    graph
        .edges
        .keys()
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect()
}

#[test]
fn scanners_find_a_cycle_through_a_group_and_super() {
    let files = snippets(&[
        ("src/lib.rs", "pub mod p;\npub mod q;\n"),
        ("src/p/mod.rs", "pub mod x;\npub mod y;\n"),
        ("src/p/x.rs", "use super::y::Y;\npub struct X;\n"),
        ("src/p/y.rs", "use crate::{q, p::x::X};\npub struct Y;\n"),
        ("src/q.rs", "pub fn f() {\n    crate::p::x::g();\n}\n"),
    ]);
    let graph = Graph::build(&files);
    assert_eq!(
        edge_names(&graph),
        ["p::x -> p::y", "p::y -> p::x", "p::y -> q", "q -> p::x"]
    );
    let cycles = graph.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].path, ["p::x", "p::y", "p::x"]);
    assert_eq!(cycles[0].group, ["p::x", "p::y", "q"]);
    let described = graph.describe_cycle(&cycles[0]);
    assert!(
        described.contains("src/p/x.rs:1: use super::y::Y;"),
        "{described}"
    );
}

#[test]
fn scanners_accept_a_tree_without_cycle() {
    let test_module = "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n";
    let b = format!("// crate::a::A is only mentioned\nconst S: &str = \"crate::a\";\nuse crate::c::C;\n{test_module}");
    let files = snippets(&[
        (
            "src/lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod p;\n",
        ),
        ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
        ("src/b.rs", &b),
        ("src/c.rs", "pub struct C;\n"),
        ("src/p/mod.rs", "pub mod x;\n"),
        ("src/p/x.rs", "use super::*;\nuse crate::p::x::helper;\n"),
    ]);
    let graph = Graph::build(&files);
    assert_eq!(edge_names(&graph), ["a -> b", "b -> c"]);
    assert!(graph.cycles().is_empty());
}

#[test]
fn scanners_measure_a_long_function_and_skip_a_test_module() {
    let body = "    let s = \"{\"; let c = '}'; /* { */\n".repeat(85);
    let test_module =
        format!("#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n");
    let text = format!(
        "trait T {{\n    fn declared(&self);\n}}\npub fn long() {{\n{body}}}\n{test_module}"
    );
    let functions = SourceFile::new("src/f.rs", &text).functions();
    let found: Vec<String> = functions.iter().map(ToString::to_string).collect();
    assert_eq!(found, ["src/f.rs:4: fn long is 87 lines"]);
}

#[test]
fn scanners_read_use_trees_and_literals() {
    let paths = expand_use_tree(" crate::a::{self, b::{C, D as E}, f::*,\n}");
    assert_eq!(
        paths,
        [
            vec!["crate", "a"],
            vec!["crate", "a", "b", "C"],
            vec!["crate", "a", "b", "D"],
            vec!["crate", "a", "f"]
        ]
    );
    let masked = mask_comments_and_literals("let x = r#\"a \" b\"#; 'a'; f::<'a>(b'{'); // c\nend");
    assert_eq!(masked.lines().nth(1), Some("end"));
    assert!(
        !masked.contains(['{', '"', 'c']) && masked.contains("<'a>"),
        "{masked}"
    );
}

#[test]
fn the_stage_order_check_reads_backward_and_forward_references() {
    let later = SourceFile::new(
        "src/pipeline/reconciliation.rs",
        "use crate::pipeline::submission::judge;\nfn f() { crate::pipeline::outbox::finish_if_done(); }\n",
    );
    let policy = SourceFile::new(
        "src/pipeline/policy/slow_start.rs",
        "fn g() { crate::pipeline::polling::run(); }\n",
    );
    let beside = SourceFile::new(
        "src/pipeline/recovery.rs",
        "use crate::pipeline::intake::archive;\n",
    );
    let found = backward_stage_references(&[later, policy, beside]);
    let lines: Vec<(&str, usize)> = found.iter().map(|f| (f.path.as_str(), f.line)).collect();
    assert_eq!(
        lines,
        [
            ("src/pipeline/reconciliation.rs", 1),
            ("src/pipeline/policy/slow_start.rs", 1)
        ]
    );
}

#[test]
fn scanners_read_the_real_tree() {
    let files = load_tree();
    assert!(
        files.iter().all(|file| file.path != "src/architecture.rs"),
        "this test-only file is left out"
    );
    let graph = Graph::build(&files);
    let functions: Vec<Function> = files.iter().flat_map(SourceFile::functions).collect();
    let (modules, edges) = (graph.modules.len(), graph.edges.len());
    println!(
        "{} files, {modules} modules, {edges} import edges, {} functions",
        files.len(),
        functions.len()
    );
    let mut longest: Vec<&Function> = functions.iter().collect();
    longest.sort_by_key(|f| std::cmp::Reverse(f.length));
    longest.iter().take(12).for_each(|f| println!("  {f}"));
    assert!(
        graph.modules.len() > 20,
        "only {} modules found",
        graph.modules.len()
    );
    assert!(
        graph.edges.len() > 30,
        "only {} import edges found",
        graph.edges.len()
    );
    assert!(
        functions.len() > 200,
        "only {} functions found",
        functions.len()
    );
    let known_edges = [
        ("pipeline::controls", "pipeline::outbox", "finish_if_done"),
        // A stage handing its work on: the forward import the stage order allows.
        (
            "pipeline::polling",
            "pipeline::reconciliation",
            "record_bulk_poll",
        ),
    ];
    for (from, to, what) in known_edges {
        let edge = (from.to_owned(), to.to_owned());
        assert!(
            graph.edges.contains_key(&edge),
            "{from} imports {to} ({what})"
        );
    }
}
