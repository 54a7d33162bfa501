//! Operator controls (SPEC section 8): cancel, pause and resume a manifest.

use crate::context::Context;
use crate::state::control::ControlEvent;
use crate::state::item::ItemEvent;
use crate::store::StoreError;

/// Cancels a manifest: unsent items end `canceled`; admitted jobs go on being polled.
pub async fn cancel(ctx: &Context, manifest_id: u64) -> Result<u32, StoreError> {
    let canceled;
    {
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest_id)?;
        let manifest = txn.manifest().clone();
        txn.apply_control(ControlEvent::Cancel);
        let mut n = 0;
        for item in txn.items_range(0, manifest.item_count)? {
            if item.state().is_sendable() {
                txn.apply(item.index, ItemEvent::Cancel)?;
                n += 1;
            }
        }
        canceled = n;
        txn.commit().await?;
        tracing::warn!(manifest = %manifest.name, canceled, "manifest canceled by the operator");
    }
    crate::pipeline::outbox::finish_if_done(ctx, manifest_id).await;
    Ok(canceled)
}

/// Resumes a paused manifest; the failure threshold no longer pauses it.
pub async fn resume(ctx: &Context, manifest_id: u64) -> Result<bool, StoreError> {
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(manifest_id)?;
    let resumed = txn.apply_control(ControlEvent::Resume);
    if resumed {
        tracing::info!(manifest = %txn.manifest().name, "manifest resumed by the operator");
    }
    txn.commit().await?;
    drop(writer);
    ctx.nudge(manifest_id);
    Ok(resumed)
}

/// Pauses a manifest: nothing more of it is sent until `resume`; what was admitted is
/// still polled (the poller does not look at the control). Returns whether it was
/// running (a paused or canceled manifest is left as it is).
pub async fn pause(ctx: &Context, manifest_id: u64) -> Result<bool, StoreError> {
    let writer = ctx.store.writer().await;
    let mut txn = writer.begin(manifest_id)?;
    if !txn.apply_control(ControlEvent::Pause) {
        return Ok(false);
    }
    let manifest = txn.commit().await?;
    tracing::warn!(manifest = %manifest.name, "manifest paused by the operator: nothing more of it is sent until `resume`");
    Ok(true)
}
