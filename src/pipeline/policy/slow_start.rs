//! The slow start (SPEC sections 7 and 8): how many of a manifest's items may be at risk
//! before the failure threshold can judge its template, as TCP's slow start does with
//! unacknowledged segments.
//!
//! - A manifest starts with one chunk (25 items) at risk. Every item that succeeds
//!   doubles the window, every item that fails or is refused undoes one doubling: the
//!   window is `25 × 2^(successes − failures)`, never under 25. A template whose
//!   generations all fail never opens it, so it costs about one chunk; a healthy one is
//!   open a few successes after its first generation completes (5 successes: 32 chunks),
//!   long before its whole first chunk is answered.
//! - Once a manifest has 25 final answers, the failure threshold judges it: no more
//!   holding.
//! - The slow start is per template: a template whose items completed within
//!   `submit.proven_for` (and whose last manifest the threshold judged was under it) lets
//!   a new manifest start with its window open ([`crate::schedule::TemplateProof`], kept in the store);
//!   any other starts with one chunk at risk. [`judge`] keeps the proof after every
//!   answer.
//! - While a manifest holds chunks back, its jobs are polled at the floor, for the first
//!   successes, not at the expected end of the whole job ([`holds_back`]).
//! - `resume` (after a threshold pause) lifts it; `failure_threshold = 1` turns it off.

use crate::context::Context;
use crate::schedule::template_key;
use crate::state::item::ItemState;
use crate::store::{ManifestRecord, StoreError, Txn};

use super::threshold::{check_failure_threshold, Answers, THRESHOLD_MIN_ANSWERS};
use super::BULK_CHUNK;

/// The most doublings the window counts (2^20 chunks: open, for any manifest).
const MAX_DOUBLINGS: u32 = 20;

/// The items a manifest may have at risk (in flight, failed or refused) after
/// these answers: one chunk, doubled by every success beyond the failures.
pub fn window(answers: Answers) -> u32 {
    let doublings = answers
        .succeeded
        .saturating_sub(answers.went_wrong)
        .min(MAX_DOUBLINGS);
    BULK_CHUNK.saturating_mul(1 << doublings)
}

/// Whether a manifest must wait for answers before sending more.
pub fn holds_for_answers(manifest: &ManifestRecord) -> bool {
    if manifest.threshold_overridden() {
        return false;
    }
    let answers = Answers::of(manifest);
    if answers.total() >= THRESHOLD_MIN_ANSWERS {
        return false;
    }
    let in_flight = manifest.count(ItemState::Sending)
        + manifest.count(ItemState::Admitted)
        + manifest.count(ItemState::AwaitingDetails);
    answers.went_wrong + in_flight >= window(answers)
}

/// Whether the manifest's template was proven before it arrived (it starts open).
pub fn proven(ctx: &Context, manifest: &ManifestRecord) -> bool {
    let key = template_key(manifest.kind, manifest.top.template_id.as_deref());
    ctx.proofs.proof(&key).proven_for_manifest(
        manifest.received_at_ms,
        ctx.clock.now_ms(),
        crate::clock::duration_ms(ctx.settings.submit.proven_for),
    )
}

/// Whether the manifest holds chunks back until its first answers: it has more to
/// send, the slow start is on (`failure_threshold < 1`), its template is not proven,
/// and its window is full.
pub fn holds_back(ctx: &Context, manifest: &ManifestRecord) -> bool {
    let more_to_send =
        manifest.count(ItemState::Pending) + manifest.count(ItemState::CreditWait) > 0;
    more_to_send
        && ctx.settings.submit.failure_threshold < 1.0
        && holds_for_answers(manifest)
        && !proven(ctx, manifest)
}

/// After answers were applied in `txn`: the failure threshold judges the manifest, and
/// its template's proof follows (items completed; the threshold's verdict once it can
/// judge), recorded in `txn` when it changed. Returns whether the template has just
/// become proven (manifests of it that hold chunks back may send them now).
pub fn judge(ctx: &Context, txn: &mut Txn<'_>, completed_before: u32) -> Result<bool, StoreError> {
    let threshold = ctx.settings.submit.failure_threshold;
    check_failure_threshold(txn, threshold);
    let manifest = txn.manifest();
    let key = template_key(manifest.kind, manifest.top.template_id.as_deref());
    let now = ctx.clock.now_ms();
    let proven_for = crate::clock::duration_ms(ctx.settings.submit.proven_for);
    let old = ctx.proofs.proof(&key);
    let mut new = old;
    if manifest.count(ItemState::Completed) > completed_before {
        new = old.completed(now, proven_for).unwrap_or(old);
    }
    let answers = Answers::of(manifest);
    if answers.total() >= THRESHOLD_MIN_ANSWERS {
        new.tripped = f64::from(answers.went_wrong) > threshold * f64::from(answers.total());
    }
    if new == old {
        return Ok(false);
    }
    txn.put_template_proof(&key, new)?;
    ctx.proofs.set_proof(&key, new);
    Ok(!old.proven(now, proven_for) && new.proven(now, proven_for))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestKind;
    use crate::state::control::ControlEvent;
    use crate::store::Received;

    fn manifest_with(counts: &[(ItemState, u32)], local: u32) -> ManifestRecord {
        let mut m = ManifestRecord::received(Received {
            id: 1,
            name: "m".into(),
            inbox_file: "m.json".into(),
            kind: ManifestKind::Bulk,
            received_at_ms: 0,
            sha256: [0; 32],
            top: crate::manifest::TopFields::default(),
            top_given: "{}".into(),
            item_count: 10_000,
            rejection: None,
        });
        for (state, n) in counts {
            m = m.with_count(*state, *n);
        }
        m.local_rejections = local;
        m
    }

    fn holds(counts: &[(ItemState, u32)]) -> bool {
        holds_for_answers(&manifest_with(counts, 0))
    }

    #[test]
    fn an_unproven_template_has_about_one_chunk_at_risk() {
        use ItemState::*;
        // Nothing sent yet: go.
        assert!(!holds(&[(Pending, 100)]));
        // One full chunk generating, no answer yet: hold.
        assert!(holds(&[(Pending, 75), (Admitted, 25)]));
        // A chunk of 23 (two rejected locally) leaves room for the next.
        assert!(!holds_for_answers(&manifest_with(
            &[(Pending, 75), (Admitted, 23), (Rejected, 2)],
            2
        ),));
        // Refused by the API, those two count against the window.
        assert!(holds_for_answers(&manifest_with(
            &[(Pending, 75), (Admitted, 23), (Rejected, 2)],
            0
        ),));
        // Failures open nothing: 10 failed and 15 generating hold, as with no answer.
        assert!(holds(&[(Pending, 75), (Admitted, 15), (Failed, 10)]));
        // Nor do successes that the failures outnumber.
        assert!(holds(&[
            (Pending, 70),
            (Admitted, 17),
            (Failed, 8),
            (Completed, 5)
        ]));
    }

    #[test]
    fn every_success_doubles_the_window_and_every_failure_undoes_a_doubling() {
        use ItemState::*;
        let answers = |succeeded, went_wrong| Answers {
            succeeded,
            went_wrong,
        };
        assert_eq!(window(answers(0, 0)), 25);
        assert_eq!(window(answers(1, 0)), 50);
        assert_eq!(window(answers(5, 0)), 800);
        assert_eq!(window(answers(5, 2)), 200);
        assert_eq!(window(answers(2, 9)), 25);
        assert_eq!(window(answers(24, 0)), 25 << 20, "capped, no overflow");
        // One success: two chunks at risk, not three.
        assert!(!holds(&[(Pending, 75), (Admitted, 24), (Completed, 1)]));
        assert!(holds(&[(Pending, 49), (Admitted, 50), (Completed, 1)]));
        // Five successes: 32 chunks.
        assert!(!holds(&[(Pending, 9_000), (Admitted, 795), (Completed, 5)]));
        assert!(holds(&[(Pending, 9_000), (Admitted, 800), (Completed, 5)]));
    }

    #[test]
    fn the_threshold_judges_after_25_answers_and_resume_lifts_the_hold() {
        use ItemState::*;
        // 25 answers in: the threshold can judge, no more holding (even when bad: the
        // threshold pauses that manifest).
        assert!(!holds(&[(Pending, 50), (Admitted, 25), (Completed, 25)]));
        assert!(!holds(&[(Pending, 50), (Admitted, 25), (Failed, 25)]));
        // Resumed by the operator: no holding.
        let mut resumed = manifest_with(&[(Pending, 75), (Admitted, 25)], 0);
        resumed.apply_control(ControlEvent::ThresholdTripped { reason: "r".into() });
        resumed.apply_control(ControlEvent::Resume);
        assert!(!holds_for_answers(&resumed));
    }
}
