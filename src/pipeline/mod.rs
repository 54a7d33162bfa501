//! The pipeline, in the order a manifest meets its stages:
//!
//! 1. [`intake`]: the inbox [`intake::watch`]er says when a file is ready; intake judges it
//!    ([`intake::validation`], SPEC section 4), makes its items durable in the store, and
//!    moves the file to the archive.
//! 2. [`submission`]: cuts manifests into create requests and sends each at most once,
//!    recording the intent before and the answer after.
//! 3. [`polling`]: one due-time queue for every admitted job, never under the floor.
//! 4. [`reconciliation`]: poll answers become item events; deadlines end what waits.
//! 5. [`outbox`]: one result file (and a retry manifest) per manifest, atomically.
//!
//! Beside the line: [`recovery`] settles what a crash left half-done before the stages
//! start, [`controls`] are the operator's cancel, pause and resume, and [`retention`]
//! prunes finished manifests in the background once `retention.store` has passed.
//!
//! What several stages decide alike (the failure threshold, the slow start, the
//! publication an item asked for, the request window) is in [`policy`], which imports no
//! stage: a stage uses the stages after it, never one before it.
//!
//! Nothing here imports the daemon's wiring (`daemon`) or the admin endpoint (`admin`).

pub mod controls;
pub mod intake;
pub mod outbox;
pub mod policy;
pub mod polling;
pub mod reconciliation;
pub mod recovery;
pub mod retention;
pub mod submission;
