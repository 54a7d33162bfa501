//! The integration tests, in one binary: each file under `tests/` used to be its own test
//! binary, linking the whole crate again. Test names are `MODULE::test`, so
//! `cargo test --test integration crash::` runs the crash tests only.
//!
//! - [`helpers`]: the harness (the test configuration, a daemon in this process, the real
//!   binary, `wait_until`).
//! - [`backup`]: backup while running and restore offline, with the real binary.
//! - [`client`]: the real client against the real simulator, every documented shape and error.
//! - [`completions`]: the bash, zsh and fish completions in the real shells (each skipped
//!   where it is not installed).
//! - [`config`]: configuration loading, `config/default.toml`, the key's sources and secrecy.
//! - [`control`]: the read-only TCP endpoint (405, 421) and the control socket (0660).
//! - [`crash`]: the real binary killed with fail points and SIGKILL (`CRASH_TEST_SEED=N`
//!   replays its random kills).
//! - [`disk`]: a full outbox, archive or state folder (a small tmpfs; needs root, fails if
//!   it cannot mount).
//! - [`faults`]: every fault knob of the simulator, disk trouble, a soak.
//! - [`history`]: `list`, `show` and `pause`, over the admin endpoint and the real binary.
//! - [`hostile`]: a barrage of hostile files into a running daemon.
//! - [`intake`]: many manifest files dropped at once, taken in groups with the promises of one.
//! - [`metrics`]: `/metrics` scraped over HTTP and parsed.
//! - [`monitoring`]: the alert rules under `promtool test rules` (skipped without it) and
//!   the dashboard's and rules' metric names against a real scrape.
//! - [`operations`]: the real binary as an operator meets it: exit codes, errors,
//!   `check-config`, `status`, logs under systemd, `STATUS=` and the watchdog.
//! - [`page`]: the status page (`GET /`) in headless Chromium (skipped without it).
//! - [`pipeline`]: the daemon end to end.
//! - [`powercut`]: power cuts under LazyFS (a daemon killed, then every unsynced byte
//!   dropped) at named moments and in a seeded storm (`POWERCUT_SEED=N` replays it);
//!   skipped without LazyFS unless `POWERCUT_REQUIRED=1`.
//! - [`retention`]: pruning after `retention.store`, and what stays.
//! - [`secrets`]: a whole manifest with a distinctive API key, then every output searched for it.
//! - [`soak`]: a time-scaled soak with pruning: store size and memory level off.
//! - [`signals`]: the real binary: SIGHUP, SIGTERM, `validate`, `status`/`cancel`/`resume`.
//! - [`simulator`]: the simulator in raw HTTP against the API pages.
//! - [`systemd_unit`]: the systemd units as `systemd-analyze security` and `verify` judge
//!   them.
//! - [`spreadsheet`]: `from-csv --drop` into the real daemon and the result CSV back (the
//!   round trip), `from-csv`'s outputs and errors, the printed schemas.

mod helpers;

mod backup;
mod client;
mod completions;
mod config;
mod control;
mod crash;
mod disk;
mod faults;
mod history;
mod hostile;
mod intake;
mod metrics;
mod monitoring;
mod operations;
mod page;
mod pipeline;
mod powercut;
mod retention;
mod secrets;
mod signals;
mod simulator;
mod soak;
mod spreadsheet;
mod systemd_unit;
