//! Whether the daemon can write where it must (SPEC section 8, disk full): a small probe
//! file written (and removed) in the state, outbox and archive folders, every
//! `min(poll.interval, 30s)`. While a probe fails, `/healthz` answers 503 naming the
//! folder and the error, `/status` and `STATUS=` say so, and an error is logged (at the
//! change and every minute). The pipeline itself never exits for it: a manifest that
//! cannot be made durable stays in the inbox, a result that cannot be written stays
//! pending, and both are tried again; once space is back the probe clears by itself.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The probe's name in each folder (hidden; never a manifest or a result).
pub const PROBE_FILE: &str = ".tented-bulkd-write-probe";

/// How much the probe writes: a little more than a page, so that a folder with no room
/// for a result file fails it.
const PROBE_BYTES: usize = 16 * 1024;

/// The longest time between two probes.
pub const PROBE_EVERY_MAX: Duration = Duration::from_secs(30);

/// How often a failing folder is logged again.
const LOG_AGAIN_EVERY: Duration = Duration::from_secs(60);

/// Writes and removes the probe file in `dir`.
pub fn probe_folder(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.flush()
    })();
    // Removed whatever happened (a half-written probe must not keep the space).
    let removed = std::fs::remove_file(&path);
    result?;
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[derive(Debug)]
struct Problem {
    message: String,
    logged_at: tokio::time::Instant,
}

/// The folders that cannot be written now, by configuration key.
#[derive(Debug, Default)]
pub struct StorageHealth {
    problems: Mutex<BTreeMap<&'static str, Problem>>,
}

impl StorageHealth {
    /// Records a probe's outcome for the folder named by `key`, logging changes.
    pub fn record(&self, key: &'static str, dir: &Path, outcome: std::io::Result<()>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        match outcome {
            Ok(()) => {
                if problems.remove(key).is_some() {
                    tracing::info!(folder = key, path = %dir.display(), "the folder can be written again");
                }
            }
            Err(e) => {
                let message = format!("cannot write to {key} ({}): {e}", dir.display());
                let due = problems
                    .get(key)
                    .is_none_or(|p| now.duration_since(p.logged_at) >= LOG_AGAIN_EVERY);
                if due {
                    tracing::error!(folder = key, path = %dir.display(), "{message}; what needs it waits and is tried again");
                }
                let logged_at = if due {
                    now
                } else {
                    problems.get(key).map_or(now, |p| p.logged_at)
                };
                problems.insert(key, Problem { message, logged_at });
            }
        }
    }

    /// What cannot be written now, one message per folder.
    pub fn problems(&self) -> Vec<String> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.values().map(|p| p.message.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_leaves_nothing_behind_and_a_missing_folder_fails_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        probe_folder(dir.path()).expect("writable");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        assert!(probe_folder(&dir.path().join("gone")).is_err());
    }

    #[tokio::test]
    async fn problems_come_and_go_with_the_probes() {
        let health = StorageHealth::default();
        let dir = Path::new("/x");
        health.record(
            "paths.outbox",
            dir,
            Err(std::io::Error::from_raw_os_error(28)),
        );
        let problems = health.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("cannot write to paths.outbox (/x): No space left on device"),
            "{problems:?}"
        );
        health.record("paths.outbox", dir, Ok(()));
        assert!(health.problems().is_empty());
    }
}
