//! Recovery at start-up: everything the last run left half-done is finished or settled.
//!
//! - A request recorded as `Sending` got no recorded answer: it may or may not have been
//!   admitted, so its items become `unknown` (never resent).
//! - A manifest recorded but still in the inbox is moved to the archive.
//! - Finished manifests whose result file was not written get it, after the temporary
//!   files a crash left in the outbox are removed.
//! - Unsent chunks and admitted jobs are picked up by the submitter and the poller, which
//!   read the store.

use crate::context::Context;
use crate::state::item::{ItemEvent, ItemState, ANSWER_LOST_MESSAGE};
use crate::state::job::{JobEvent, JobState};
use crate::store::StoreError;

pub async fn recover(ctx: &Context) -> Result<(), StoreError> {
    let manifests = ctx.store.manifests()?;
    let mut lost_items = 0u32;
    for manifest in &manifests {
        if manifest.result_written {
            continue;
        }
        ctx.activate(manifest);
        ctx.nudge(manifest.id);
        if !manifest.archived {
            let path = ctx.settings.paths.inbox.join(&manifest.inbox_file);
            let same_file = crate::pipeline::intake::sha256_file(&path)
                .map(|hash| hash == manifest.sha256)
                .unwrap_or(false);
            let from = if same_file {
                path
            } else {
                // The file is gone (or is another file now): only the record is updated.
                ctx.settings.paths.inbox.join(".tented-bulkd-missing")
            };
            if let Err(e) = crate::pipeline::intake::archive(ctx, manifest, &from).await {
                tracing::error!(manifest = %manifest.name, "recovery cannot archive the manifest: {e}");
            }
        }
        if manifest.count(ItemState::Sending) == 0 {
            continue;
        }
        let writer = ctx.store.writer().await;
        let mut txn = writer.begin(manifest.id)?;
        for seq in 0..manifest.next_job_seq {
            let Some(mut job) = txn.job(seq)? else {
                continue;
            };
            if job.state() != JobState::Sending {
                continue;
            }
            for index in job.item_indices.clone() {
                if txn.item(index)?.state() == ItemState::Sending {
                    txn.apply(
                        index,
                        ItemEvent::AnswerLost {
                            message: format!(
                                "{ANSWER_LOST_MESSAGE} (the daemon stopped while the request was under way)"
                            ),
                        },
                    )?;
                    lost_items += 1;
                }
            }
            job.apply(JobEvent::AnswerLost)?;
            txn.put_job(job);
        }
        txn.commit().await?;
        tracing::error!(manifest = %manifest.name, "a create request was under way when the daemon stopped: its items end as unknown and are not resent");
    }
    match crate::pipeline::outbox::remove_leftover_temporaries(&ctx.settings.paths.outbox) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(
            removed,
            "recovery: removed the temporary files a crash left in the outbox"
        ),
        Err(e) => tracing::warn!("recovery: cannot look for temporary files in the outbox: {e}"),
    }
    for id in ctx.active_ids() {
        crate::pipeline::outbox::finish_if_done(ctx, id).await;
    }
    if lost_items > 0 {
        tracing::warn!(
            lost_items,
            "recovery: items whose request's answer was lost"
        );
    }
    Ok(())
}
