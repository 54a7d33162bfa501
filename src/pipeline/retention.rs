//! Retention (SPEC section 8): finished manifests leave the store `retention.store` after
//! they finished, in the background, a slice at a time, so that pruning never blocks the
//! pipeline (see `store::prune` for the steps and what stays).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::store::{Compaction, StoreError};

/// Items (or jobs) removed per store transaction.
pub const PRUNE_SLICE: usize = 500;

/// The longest and shortest time between two looks for manifests to prune.
const PASS_EVERY_MAX: Duration = Duration::from_secs(600);
const PASS_EVERY_MIN: Duration = Duration::from_millis(100);

/// How often the pruner looks: a tenth of the retention, within bounds (so a short
/// retention in a test prunes promptly and a long one costs a scan every ten minutes).
pub fn pass_period(retention: Duration) -> Duration {
    (retention / 10).clamp(PASS_EVERY_MIN, PASS_EVERY_MAX)
}

/// The pruner task: every [`pass_period`], prunes every manifest whose retention has
/// passed. Does nothing when retention is off.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let Some(retention) = ctx.settings.retention.store else {
        return;
    };
    let period = pass_period(retention);
    // The store was compacted at open if it was due: it is looked at again only once its
    // files have doubled since (a fresh store's own overhead never sets off another).
    let mut checked_at_bytes = ctx.store.files_bytes();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = prune_due(&ctx, retention, &shutdown).await {
            tracing::error!("retention: pruning failed (it is tried again later): {e}");
        }
        let compaction = ctx.settings.retention.compaction();
        if compaction_due(&ctx, compaction, &mut checked_at_bytes).await {
            tracing::warn!(
                files_bytes = ctx.store.size_on_disk(),
                "the store's files have grown past what pruning left in them: opening the store again to compact it"
            );
            ctx.health.reopen();
            return;
        }
    }
}

/// Whether the store is due for compaction (see `store::compaction`), which opening it
/// again does. Its records are read only once its files are past the size bound and have
/// doubled since the last look.
pub async fn compaction_due(
    ctx: &Context,
    compaction: Compaction,
    checked_at_bytes: &mut u64,
) -> bool {
    let files = ctx.store.files_bytes();
    if files <= compaction.min_bytes || files < checked_at_bytes.saturating_mul(2) {
        return false;
    }
    *checked_at_bytes = files;
    let store = ctx.store.clone();
    match tokio::task::spawn_blocking(move || store.compaction_due(compaction)).await {
        Ok(Ok(due)) => due,
        Ok(Err(e)) => {
            tracing::warn!("retention: cannot tell whether the store needs compacting: {e}");
            false
        }
        Err(e) => {
            tracing::warn!("retention: cannot tell whether the store needs compacting: {e}");
            false
        }
    }
}

/// Prunes every finished manifest whose result is written and whose `finished_at` is
/// `retention` or more ago. Returns how many were pruned whole.
pub async fn prune_due(
    ctx: &Context,
    retention: Duration,
    shutdown: &CancellationToken,
) -> Result<usize, StoreError> {
    let now = ctx.clock.now_ms();
    let retention_ms = crate::clock::duration_ms(retention);
    let due: Vec<(u64, String)> = ctx
        .store
        .manifests()?
        .into_iter()
        .filter(|m| {
            m.result_written
                && m.finished_at_ms
                    .is_some_and(|at| at.saturating_add(retention_ms) <= now)
        })
        .map(|m| (m.id, m.name))
        .collect();
    let mut done = 0;
    for (id, name) in due {
        if shutdown.is_cancelled() {
            break;
        }
        if prune_one(ctx, id, shutdown).await? {
            done += 1;
            tracing::info!(manifest = %name, "pruned: retention.store has passed since it finished; its summary stays");
        }
    }
    Ok(done)
}

/// Prunes one manifest, a slice per transaction, yielding between them. Returns whether
/// it was pruned whole (false when shutdown stopped it halfway: the next start goes on).
async fn prune_one(
    ctx: &Context,
    id: u64,
    shutdown: &CancellationToken,
) -> Result<bool, StoreError> {
    if !ctx.store.begin_prune(id, ctx.clock.now_ms()).await? {
        return Ok(false);
    }
    loop {
        if shutdown.is_cancelled() {
            return Ok(false);
        }
        let pruned = ctx
            .store
            .prune_slice(id, PRUNE_SLICE, ctx.clock.now_ms(), ctx.poll_floor_ms())
            .await?;
        if pruned.is_empty() {
            break;
        }
        // The writer's lock is fair: whoever waited for it goes first.
        tokio::task::yield_now().await;
    }
    ctx.store.finish_prune(id).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_period_is_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(
            pass_period(Duration::from_secs(90 * 24 * 3600)),
            PASS_EVERY_MAX
        );
        assert_eq!(pass_period(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(pass_period(Duration::from_millis(300)), PASS_EVERY_MIN);
    }
}
