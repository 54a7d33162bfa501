//! The real binary, `target/.../tented-bulkd`, as the tests run it: one way to build its
//! command line and environment, write its configuration, start it with its stderr in a
//! file, wait for its log lines, signal it and kill it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wait::{try_wait_until, Failure, Progress};
use super::TestConfig;

/// Runs `command` to its end and returns what it printed, asserting that it exited 0; a
/// failure names `what` and shows what it printed on both streams.
pub fn succeeded(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: it does not run: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Writes `config` into `dir`, runs the real binary on it with `env` (its stderr in
/// `dir/daemon.log`) and waits until it is ready: the configuration's path and the daemon.
pub async fn run_until_ready(
    dir: &Path,
    config: &TestConfig,
    env: &[(&str, &str)],
) -> (PathBuf, BinaryDaemon) {
    let path = write_config(dir, config);
    let daemon = BinaryDaemon::run(&path, &dir.join("daemon.log"), env);
    daemon.wait_ready().await.expect("the daemon gets ready");
    (path, daemon)
}

/// The binary Cargo built for these tests (with the `failpoints` feature).
pub const BIN: &str = env!("CARGO_BIN_EXE_tented-bulkd");

/// What the daemon logs once its store is open and recovery is done.
pub const READY_LINE: &str = "tented-bulkd is ready";

/// How long a start-up may take (a debug binary on a loaded machine).
pub const START_WAIT: Duration = Duration::from_secs(20);

/// How many lines of stderr a failure message quotes.
const TAIL: usize = 15;

/// SPEC section 8: SIGTERM exits 0 within 15 seconds.
pub const TERM_WAIT: Duration = Duration::from_secs(15);

/// `tented-bulkd ARGS` with an environment that cannot change the test: no
/// `TENTED_*` variable (configuration overrides, the API key), no `CREDENTIALS_DIRECTORY`,
/// no `FAILPOINTS`; logs at `info`, without colours. Callers add what their test needs.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command_for(BIN, args)
}

/// Runs `tented-bulkd ARGS --config CONFIG` and returns (exit code, stdout, stderr).
pub fn cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = command(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`command`] for another program (`sh`, to start the binary as systemd would).
pub fn command_for<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("TENTED_") || key == "CREDENTIALS_DIRECTORY" || key == "FAILPOINTS" {
            command.env_remove(&key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Writes `config` as `DIR/config.toml` and returns its path.
pub fn write_config(dir: &Path, config: &TestConfig) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, config.toml()).expect("write config.toml");
    path
}

/// A process of the real binary, its stderr going to a file. Killed (SIGKILL) when dropped
/// while still running, so a failing test leaves nothing behind.
pub struct BinaryDaemon {
    /// Behind a lock so that every method takes `&self` (waits poll it from closures).
    child: Mutex<Child>,
    pid: u32,
    log: PathBuf,
    /// Names this process in failure messages ("run 2", "the daemon").
    pub label: String,
}

impl BinaryDaemon {
    /// `tented-bulkd run --config CONFIG` with `env` added to [`command`]'s, stderr to `log`.
    pub fn run(config: &Path, log: &Path, env: &[(&str, &str)]) -> BinaryDaemon {
        let args = [
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        BinaryDaemon::spawn(args, log, env)
    }

    /// As [`BinaryDaemon::run`], with the variables named in `unset` removed from
    /// [`command`]'s environment (e.g. `NO_COLOR`, to see what the daemon decides alone).
    pub fn run_unsetting(
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> BinaryDaemon {
        let args = [
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        BinaryDaemon::spawn_unsetting(args, log, env, unset, true)
    }

    /// `tented-bulkd run --config CONFIG` as systemd starts it under a watchdog: with
    /// `WATCHDOG_PID` set to its own pid (a shell sets it, then execs the binary, which
    /// keeps the pid).
    pub fn run_with_watchdog_pid(config: &Path, log: &Path, env: &[(&str, &str)]) -> BinaryDaemon {
        let script = "WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" run --config \"$1\"";
        let args = [
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new(BIN),
            config.as_os_str(),
        ];
        BinaryDaemon::start(command_for("sh", args), log, env, &[], false)
    }

    /// Any subcommand (`sim`, …) as a long-running process, stderr to `log`.
    pub fn spawn<I, S>(args: I, log: &Path, env: &[(&str, &str)]) -> BinaryDaemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        BinaryDaemon::spawn_unsetting(args, log, env, &[], false)
    }

    /// `append`: keep the file (its inode) when it exists, so that a test may stat it
    /// first (`JOURNAL_STREAM`); otherwise it starts empty.
    fn spawn_unsetting<I, S>(
        args: I,
        log: &Path,
        env: &[(&str, &str)],
        unset: &[&str],
        append: bool,
    ) -> BinaryDaemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        BinaryDaemon::start(command(args), log, env, unset, append)
    }

    fn start(
        mut command: Command,
        log: &Path,
        env: &[(&str, &str)],
        unset: &[&str],
        append: bool,
    ) -> BinaryDaemon {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .expect("create the stderr log file");
        command.stdout(Stdio::null()).stderr(stderr);
        for key in unset {
            command.env_remove(key);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("the binary starts");
        BinaryDaemon {
            pid: child.id(),
            child: Mutex::new(child),
            log: log.to_path_buf(),
            label: "the daemon".to_string(),
        }
    }

    pub fn labelled(mut self, label: impl Into<String>) -> BinaryDaemon {
        self.label = label.into();
        self
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Its exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr().lines().map(str::to_string).collect()
    }

    /// Its last `n` lines of stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines = self.stderr_lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where a wait on this process stands when its condition does not hold yet: a process
    /// that exited will not make it hold.
    fn not_yet<T>(&self) -> Progress<T> {
        match self.exited() {
            Some(status) => Progress::Stop(format!(
                "{} exited ({status}); its stderr ends:\n{}",
                self.label,
                self.stderr_tail(TAIL)
            )),
            None => Progress::NotYet(format!("its stderr ends:\n{}", self.stderr_tail(TAIL))),
        }
    }

    /// Waits for a stderr line containing `needle`; fails at once if the process exits first.
    pub async fn wait_for_line(&self, needle: &str, within: Duration) -> Result<(), Failure> {
        let what = format!("`{needle}` in the stderr of {}", self.label);
        try_wait_until(what, within, || async {
            if self.stderr().lines().any(|line| line.contains(needle)) {
                Progress::Done(())
            } else {
                self.not_yet()
            }
        })
        .await
    }

    /// Waits for a file that this process writes (a result) and returns its bytes; fails
    /// at once if the process exits first.
    pub async fn wait_for_file(&self, path: &Path, within: Duration) -> Result<Vec<u8>, Failure> {
        let what = format!("{} from {}", path.display(), self.label);
        try_wait_until(what, within, || async {
            match std::fs::read(path) {
                Ok(bytes) => Progress::Done(bytes),
                Err(_) => self.not_yet(),
            }
        })
        .await
    }

    /// Waits for `outbox/NAME.result.json` under the state root `dir` and returns it, read
    /// through the typed result document.
    pub async fn wait_result(
        &self,
        dir: &Path,
        name: &str,
        within: Duration,
    ) -> Result<tented_bulkd::pipeline::outbox::ResultDocument, Failure> {
        let path = dir.join(format!("outbox/{name}.result.json"));
        let bytes = self.wait_for_file(&path, within).await?;
        serde_json::from_slice(&bytes).map_err(|e| Failure(format!("{}: {e}", path.display())))
    }

    /// Waits for [`READY_LINE`]: the store is open, recovery done, the admin endpoint bound.
    pub async fn wait_ready(&self) -> Result<(), Failure> {
        self.wait_for_line(READY_LINE, START_WAIT).await
    }

    /// Waits for it to exit; `None` if it still runs after `within`.
    pub async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let what = format!("{} to exit", self.label);
        try_wait_until(what, within, || async { self.exited() })
            .await
            .ok()
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, name: &str) -> Result<(), Failure> {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .map_err(|e| Failure(format!("cannot run kill: {e}")))?;
        if sent.success() {
            Ok(())
        } else {
            Err(Failure(format!("kill -{name} {} failed", self.pid())))
        }
    }

    /// SIGTERM; it must exit 0 within [`TERM_WAIT`]. Returns how long it took.
    pub async fn sigterm(&self) -> Result<Duration, Failure> {
        if let Some(status) = self.exited() {
            return Err(Failure(format!(
                "{}: had already exited ({status}) before SIGTERM",
                self.label
            )));
        }
        self.signal("TERM")?;
        let started = Instant::now();
        match self.wait_exit(TERM_WAIT).await {
            Some(status) if status.success() => Ok(started.elapsed()),
            Some(status) => Err(Failure(format!(
                "{}: after SIGTERM it exited with {status}, not 0",
                self.label
            ))),
            None => Err(Failure(format!(
                "{}: did not exit within {TERM_WAIT:?} of SIGTERM",
                self.label
            ))),
        }
    }

    /// SIGKILL, as a crash or a power loss would; waits until it is gone.
    pub async fn kill9(&self) {
        // An error means it had exited already: nothing to kill.
        let _ = self.child().kill();
        if self.wait_exit(Duration::from_secs(10)).await.is_none() {
            panic!("{} survived SIGKILL for 10 s", self.label);
        }
    }
}

impl Drop for BinaryDaemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let mut child = self.child();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
