//! LazyFS, for the power-cut tests: a FUSE file system with its own page cache that writes
//! to the folder below only on `fsync`/`fdatasync`. Writing `lazyfs::clear-cache` into its
//! fifo drops every byte not yet synced, as a power cut would; with `fifo_path_completed`
//! set it answers `finished::clear-cache` on a second fifo once done.
//!
//! [`LazyFs::mount`] mounts one folder (each mount has its own configuration and fifos),
//! [`LazyFs::cut`] cuts the power, and dropping the guard unmounts it and ends the
//! process, so that a failing test leaves no mount behind.
//!
//! The binary: `LAZYFS_BIN`, else where `shared/tools/lazyfs-build.sh` builds it. When
//! LazyFS cannot be used (no binary, not root, no `/dev/fuse`, no `fusermount3`, a mount
//! that fails), [`LazyFs::mount`] answers [`Skip`] with the reason: [`skip_or_panic`]
//! prints it, or panics with it when `POWERCUT_REQUIRED=1` (CI).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `shared/tools/lazyfs-build.sh` puts the binary by default.
pub const DEFAULT_BIN: &str = "/tmp/lazyfs-build/src/lazyfs/build/lazyfs";

/// How long a mount may take to appear, and a clear-cache to complete.
const MOUNT_WAIT: Duration = Duration::from_secs(15);
const CUT_WAIT: Duration = Duration::from_secs(30);

/// O_NONBLOCK on Linux (x86-64 and aarch64 alike).
const O_NONBLOCK: i32 = 0o4000;

/// Why LazyFS cannot be used here.
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether CI asked for the power-cut tests to run for sure (`POWERCUT_REQUIRED=1`).
pub fn required() -> bool {
    std::env::var("POWERCUT_REQUIRED").is_ok_and(|v| v == "1")
}

/// A test that cannot use LazyFS: prints `skipped: REASON`, or panics with it when
/// `POWERCUT_REQUIRED=1`.
pub fn skip_or_panic(test: &str, skip: &Skip) {
    if required() {
        panic!("{test}: LazyFS is required (POWERCUT_REQUIRED=1) but cannot be used: {skip}");
    }
    println!("{test}: skipped: {skip}");
}

/// The LazyFS binary, and whether this machine can mount with it: root, `/dev/fuse`,
/// `fusermount3`.
pub fn usable() -> Result<PathBuf, Skip> {
    let bin = std::env::var_os("LAZYFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
    let executable = std::fs::metadata(&bin)
        .map(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
        .unwrap_or(false);
    if !executable {
        return Err(Skip(format!(
            "no LazyFS binary at {} (build it with shared/tools/lazyfs-build.sh, or set LAZYFS_BIN)",
            bin.display()
        )));
    }
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(Skip(format!("LazyFS needs root; running as uid {uid}"))),
        None => {
            return Err(Skip(
                "cannot tell the effective uid (/proc/self/status)".into(),
            ))
        }
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Skip("no /dev/fuse on this machine".into()));
    }
    let fusermount = Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !fusermount.is_ok_and(|s| s.success()) {
        return Err(Skip(
            "fusermount3 is missing (apt-get install fuse3)".into(),
        ));
    }
    Ok(bin)
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `mount` is a mount point of a LazyFS file system (from /proc/self/mountinfo).
fn is_mounted(mount: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = mount.display().to_string();
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fs_type = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next());
        fields.get(4) == Some(&target.as_str()) && fs_type.is_some_and(|t| t.contains("lazyfs"))
    })
}

/// One LazyFS mount: `mount` shows `root`, with LazyFS's cache in between.
pub struct LazyFs {
    child: Option<Child>,
    mount: PathBuf,
    /// Its configuration, fifos and output live here (outside the mount).
    home: tempfile::TempDir,
    fifo: PathBuf,
    /// The completion fifo, held open (read and write, so that LazyFS's own open of its
    /// write end never blocks), read without blocking.
    completed: File,
    cuts: usize,
}

impl LazyFs {
    /// Mounts `root` (a folder that exists) at `mount` (an empty folder that exists) and
    /// waits until the mount is there.
    pub fn mount(root: &Path, mount: &Path) -> Result<LazyFs, Skip> {
        let bin = usable()?;
        let root = root
            .canonicalize()
            .map_err(|e| Skip(format!("{}: {e}", root.display())))?;
        let mount = mount
            .canonicalize()
            .map_err(|e| Skip(format!("{}: {e}", mount.display())))?;
        // LazyFS takes the word after `--config-path` for an option, and falls back to
        // `config/default.toml`, when it contains "-o" in any case (`strcasestr`): the
        // folder's name must not (a `lazyfs-` prefix followed by a random `o` did).
        let mut base = std::env::temp_dir();
        if base.display().to_string().to_lowercase().contains("-o") {
            base = PathBuf::from("/tmp");
        }
        let home = tempfile::Builder::new()
            .prefix("lazyfs_")
            .tempdir_in(base)
            .map_err(|e| Skip(format!("temp dir: {e}")))?;
        let fifo = home.path().join("faults.fifo");
        let completed_path = home.path().join("completed.fifo");
        // LazyFS creates the fifos unless they exist; this side needs the completion fifo
        // open before LazyFS opens it, so it makes both.
        for path in [&fifo, &completed_path] {
            let made = Command::new("mkfifo").arg(path).status();
            if !made.is_ok_and(|s| s.success()) {
                return Err(Skip(format!("mkfifo {} failed", path.display())));
            }
        }
        let completed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&completed_path)
            .map_err(|e| Skip(format!("{}: {e}", completed_path.display())))?;
        let config = home.path().join("lazyfs.toml");
        if config.display().to_string().to_lowercase().contains("-o") {
            return Err(Skip(format!(
                "LazyFS would not read its configuration at {}: the path contains \"-o\"",
                config.display()
            )));
        }
        let text = format!(
            "[faults]\n\
             fifo_path=\"{}\"\n\
             fifo_path_completed=\"{}\"\n\
             [cache]\n\
             apply_eviction=false\n\
             [cache.simple]\n\
             custom_size=\"512mb\"\n\
             blocks_per_page=1\n\
             [filesystem]\n\
             log_all_operations=false\n\
             logfile=\"\"\n",
            fifo.display(),
            completed_path.display()
        );
        std::fs::write(&config, text).map_err(|e| Skip(format!("{}: {e}", config.display())))?;
        let output = File::create(home.path().join("lazyfs.out"))
            .map_err(|e| Skip(format!("lazyfs.out: {e}")))?;
        let output_err = output
            .try_clone()
            .map_err(|e| Skip(format!("lazyfs.out: {e}")))?;
        let child = Command::new(&bin)
            .arg(&mount)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f")
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err)
            .spawn()
            .map_err(|e| Skip(format!("cannot start {}: {e}", bin.display())))?;
        let mut lazy = LazyFs {
            child: Some(child),
            mount: mount.clone(),
            home,
            fifo,
            completed,
            cuts: 0,
        };
        let started = Instant::now();
        loop {
            if is_mounted(&mount) {
                return Ok(lazy);
            }
            if let Some(status) = lazy
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(Skip(format!(
                    "LazyFS exited ({status}) before mounting {}: {}",
                    mount.display(),
                    lazy.output_tail()
                )));
            }
            if started.elapsed() > MOUNT_WAIT {
                // Dropping `lazy` kills the process.
                return Err(Skip(format!(
                    "LazyFS did not mount {} within {MOUNT_WAIT:?}: {}",
                    mount.display(),
                    lazy.output_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// How many cuts so far.
    pub fn cuts(&self) -> usize {
        self.cuts
    }

    /// The last lines LazyFS printed, for failure messages.
    pub fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.home.path().join("lazyfs.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// A power cut: every byte not yet synced to the folder below is dropped. Returns once
    /// LazyFS says the clear-cache is finished. Call it with no process writing (the
    /// daemon killed first), as after a real power cut nothing runs.
    pub async fn cut(&mut self) -> Result<(), String> {
        // Anything left over in the completion fifo is stale.
        self.drain();
        let started = Instant::now();
        self.command("lazyfs::clear-cache").await?;
        let mut seen = String::new();
        loop {
            let mut buffer = [0u8; 256];
            match self.completed.read(&mut buffer) {
                Ok(n) if n > 0 => {
                    seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    if seen.contains("finished::clear-cache") {
                        self.cuts += 1;
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("reading LazyFS's completion fifo: {e}")),
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "LazyFS exited ({status}) during a clear-cache: {}",
                    self.output_tail()
                ));
            }
            if started.elapsed() > CUT_WAIT {
                return Err(format!(
                    "LazyFS did not finish a clear-cache within {CUT_WAIT:?} (read {seen:?}): {}",
                    self.output_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes LazyFS's whole cache to the folder below, without fsync and without
    /// dropping anything (`lazyfs::cache-checkpoint`): after it a cut loses nothing. Waits
    /// for LazyFS to print that the checkpoint is done.
    pub async fn checkpoint(&mut self) -> Result<(), String> {
        const DONE: &str = "checkpoint is done";
        let out = self.home.path().join("lazyfs.out");
        let count = || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .matches(DONE)
                .count()
        };
        let before = count();
        self.command("lazyfs::cache-checkpoint").await?;
        let started = Instant::now();
        while count() == before {
            if started.elapsed() > CUT_WAIT {
                return Err(format!(
                    "LazyFS did not finish a cache-checkpoint within {CUT_WAIT:?}: {}",
                    self.output_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Writes one command into LazyFS's fifo.
    async fn command(&self, command: &str) -> Result<(), String> {
        let started = Instant::now();
        // The fifo has a reader once LazyFS's fault thread has started; opening its write
        // end without blocking fails (ENXIO) until then.
        let mut fifo = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(&self.fifo)
            {
                Ok(file) => break file,
                Err(_) if started.elapsed() < CUT_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot open LazyFS's fifo {}: {e}; LazyFS says: {}",
                        self.fifo.display(),
                        self.output_tail()
                    ))
                }
            }
        };
        // One write, so that LazyFS reads the command whole (it reads up to 100 bytes).
        fifo.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("cannot write to LazyFS's fifo: {e}"))
    }

    fn drain(&mut self) {
        let mut buffer = [0u8; 256];
        while matches!(self.completed.read(&mut buffer), Ok(n) if n > 0) {}
    }

    fn unmount_now(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let unmounted = |lazy: bool| {
            let mut command = Command::new("fusermount3");
            command
                .arg(if lazy { "-uz" } else { "-u" })
                .arg(&self.mount);
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !unmounted(false) && !unmounted(true) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount_now();
    }
}

/// Writes `bytes` to `path` as a careful writer does: a temporary file beside it, fsync,
/// rename, fsync of the folder. What the tests put on a LazyFS mount themselves (the
/// configuration, manifests) must survive a cut: the daemon is under test, not them.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(folder)?;
    sync_folder_chain(folder)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let staging = folder.join(format!(".staging-{name}"));
    let mut file = File::create(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&staging, path)?;
    File::open(folder)?.sync_all()
}

/// fsyncs a folder and its parent (after creating it).
fn sync_folder_chain(folder: &Path) -> std::io::Result<()> {
    File::open(folder)?.sync_all()?;
    if let Some(parent) = folder.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
