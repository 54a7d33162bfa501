//! Answers the store could not record: a create request's answer that arrives while the
//! store cannot write (a full state disk) is kept here, in memory, and recorded as soon
//! as the store can write again: by the submitter when the same store recovers, or,
//! when the store must be opened again (sled 0.34 keeps a failed write's error for
//! good), by the next pipeline before recovery runs, which would otherwise report the
//! request's items `unknown`. Only a stop while the disk is still full loses them (each
//! is logged, and those items are then `unknown`, never resent).

use std::sync::{Arc, Mutex, MutexGuard};

use super::answer::CreateAnswer;
use super::record_answer;
use crate::context::Context;
use crate::state::item::ItemRecord;
use crate::store::ManifestRecord;

/// One answer waiting to be recorded, with what recording it needs.
struct ParkedAnswer {
    manifest: ManifestRecord,
    seq: u32,
    items: Vec<ItemRecord>,
    answer: CreateAnswer,
}

/// The answers waiting to be recorded. Cheap to clone; outlives a pipeline (the daemon
/// carries it over when it opens the store again).
#[derive(Clone, Default)]
pub struct Parked(Arc<Mutex<Vec<ParkedAnswer>>>);

impl Parked {
    fn lock(&self) -> MutexGuard<'_, Vec<ParkedAnswer>> {
        // A panic while holding the lock cannot leave the list half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many answers wait to be recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn park(
        &self,
        manifest: &ManifestRecord,
        seq: u32,
        items: &[ItemRecord],
        answer: CreateAnswer,
    ) {
        tracing::error!(
            manifest = %manifest.name,
            seq,
            "the store cannot write: the answer to this create request is kept in memory and recorded as soon as it can"
        );
        self.lock().push(ParkedAnswer {
            manifest: manifest.clone(),
            seq,
            items: items.to_vec(),
            answer,
        });
    }

    /// Records every waiting answer it can, through `ctx`'s store; those the store cannot
    /// write yet wait on. Returns how many still wait.
    pub async fn record_all(&self, ctx: &Context) -> usize {
        let waiting = std::mem::take(&mut *self.lock());
        let mut still = Vec::new();
        for parked in waiting {
            let recorded = record_answer(
                ctx,
                &parked.manifest,
                parked.seq,
                &parked.items,
                &parked.answer,
            )
            .await;
            match recorded {
                Ok(_) => {
                    tracing::info!(manifest = %parked.manifest.name, seq = parked.seq, "recorded the answer kept in memory while the store could not write");
                    ctx.nudge(parked.manifest.id);
                }
                Err(e) if ctx.store.write_failed() => {
                    tracing::warn!(manifest = %parked.manifest.name, seq = parked.seq, "the answer kept in memory cannot be recorded yet: {e}");
                    still.push(parked);
                }
                Err(e) => {
                    // Not the disk: waiting cannot help. Its items stay as the store has
                    // them; those still `Sending` are reported `unknown`, never resent.
                    tracing::error!(manifest = %parked.manifest.name, seq = parked.seq, "the answer kept in memory cannot be recorded: {e}");
                }
            }
        }
        let left = still.len();
        self.lock().extend(still);
        left
    }

    /// At a stop with answers still waiting (the disk is still full): says which requests'
    /// items the next start will report `unknown`.
    pub fn log_lost(&self) {
        for parked in self.lock().iter() {
            tracing::error!(
                manifest = %parked.manifest.name,
                seq = parked.seq,
                items = parked.items.len(),
                "stopping with an answer the store never could record: the next start reports this request's items unknown (never resent)"
            );
        }
    }
}
