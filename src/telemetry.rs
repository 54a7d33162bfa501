//! Logging setup: `tracing` to stderr, as text or JSON (`log.format`), fit for where
//! stderr goes (SPEC section 8):
//!
//! - ANSI colours only when stderr is a terminal (and `NO_COLOR` is not set): a file or
//!   the journal gets plain text.
//! - Under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//!   inode), every line starts with its sd-daemon(3) priority (`<3>` error, `<4>` warning,
//!   `<6>` info, `<7>` debug), which journald strips and stores, so that
//!   `journalctl -p warning` finds the warnings; and no line carries a timestamp of its
//!   own (journald stamps every line).
//! - JSON is one flat object per line: the event's fields beside `timestamp`, `level`,
//!   `target` and `message`, numbers as numbers.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Where the log lines go, as far as their form is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTarget {
    /// Colours (stderr is a terminal and `NO_COLOR` is not set).
    pub ansi: bool,
    /// stderr is the journal: a priority prefix, no timestamp.
    pub journal: bool,
}

impl LogTarget {
    /// Looks at this process's stderr and environment.
    pub fn detect() -> LogTarget {
        let journal = std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|value| journal_stream_is_stderr(&value));
        LogTarget {
            ansi: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            journal,
        }
    }
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) names this process's stderr: systemd sets it
/// for the service's own stderr, and a child whose stderr was redirected inherits the
/// variable but not the stream.
fn journal_stream_is_stderr(value: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((device, inode)) = value.split_once(':') else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    // stat(2) of /proc/self/fd/2 is the stream itself (a socket, a pipe or a file).
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => meta.dev() == device && meta.ino() == inode,
        Err(_) => false,
    }
}

/// The sd-daemon(3) priority of a level.
pub fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that writes the line's journal priority (`<N>`) before it, when
/// stderr is the journal.
struct Prioritized<F> {
    inner: F,
    journal: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.journal {
            write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber once; later calls do nothing. `RUST_LOG` refines the
/// default level (`info`).
pub fn init(format: LogFormat) {
    init_with_level(format, "info");
}

/// As [`init`], with another default level (the demo keeps its daemon to warnings).
pub fn init_with_level(format: LogFormat, default_level: &str) {
    let target = LogTarget::detect();
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = || {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(target.ansi)
    };
    let journal = target.journal;
    let _ = match (format, journal) {
        (LogFormat::Text, false) => builder()
            .fmt_fields(DefaultFields::new())
            .event_format(Prioritized {
                inner: tracing_subscriber::fmt::format().with_ansi(target.ansi),
                journal,
            })
            .try_init(),
        (LogFormat::Text, true) => builder()
            .fmt_fields(DefaultFields::new())
            .event_format(Prioritized {
                // The priority says the level: no level word, and no padding before it.
                inner: tracing_subscriber::fmt::format()
                    .with_ansi(false)
                    .without_time()
                    .with_level(false),
                journal,
            })
            .try_init(),
        (LogFormat::Json, false) => builder()
            .fmt_fields(JsonFields::new())
            .event_format(Prioritized {
                inner: json_format(),
                journal,
            })
            .try_init(),
        (LogFormat::Json, true) => builder()
            .fmt_fields(JsonFields::new())
            .event_format(Prioritized {
                inner: json_format().without_time(),
                journal,
            })
            .try_init(),
    };
}

/// One flat JSON object per line.
fn json_format() -> tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json> {
    tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(journal_priority(&Level::ERROR), 3);
        assert_eq!(journal_priority(&Level::WARN), 4);
        assert_eq!(journal_priority(&Level::INFO), 6);
        assert_eq!(journal_priority(&Level::DEBUG), 7);
    }

    #[test]
    fn a_journal_stream_that_is_not_stderr_is_not_the_journal() {
        assert!(!journal_stream_is_stderr("garbage"));
        assert!(!journal_stream_is_stderr("1:x"));
        assert!(!journal_stream_is_stderr("0:0"));
    }
}
