//! What several stages decide alike, in one place that imports no stage: the failure
//! threshold ([`threshold`]), the slow start and its template proof ([`slow_start`]),
//! what an item asked to be published as ([`publication`]), and how many requests to
//! keep on the wire ([`window`]). Submission, polling and reconciliation use them, so
//! that no stage has to import another one that comes before it.

pub mod publication;
pub mod slow_start;
pub mod threshold;
pub mod window;

pub use publication::{requested_alias, wants_publication};
pub use slow_start::{holds_back, holds_for_answers, judge, proven};
pub use threshold::{check_failure_threshold, Answers, THRESHOLD_MIN_ANSWERS};
pub use window::Window;

/// Items per bulk request (the API's maximum).
pub const BULK_CHUNK: u32 = 25;
