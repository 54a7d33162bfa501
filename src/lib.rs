//! tented-bulkd: turns manifest files into Tented generations, durably and exactly once.
//!
//! A tour, in the order a manifest travels:
//!
//! - [`inbox_watch`] notices files in the inbox and says when one has stopped changing;
//!   [`inbox`] takes it: [`validation`] checks it against the rules of SPEC section 4
//!   (the shapes are in [`manifest`]), and its items become durable in the [`store`]
//!   before the file moves to the archive.
//! - [`item_state`] is the heart: every state an item can be in and every transition.
//! - [`submission`] cuts manifests into create requests (25 items per bulk request) and
//!   sends each exactly once, recording the intent before and the answer after.
//! - [`polling`] schedules every admitted job on one due-time queue, never faster than the
//!   floor; [`reconciliation`] turns its answers into item events and ends what waits
//!   past `poll.max_wait`.
//! - [`outbox`] writes one result file per manifest (and a retry manifest) atomically.
//! - [`recovery`] settles what a crash left half-done; [`daemon`] runs it all until
//!   shutdown; [`admin`] serves `/healthz`, `/metrics`, `/status` and the operator controls.
//! - [`api`] is the only module that speaks HTTP to Tented; [`simulator`] is a faithful,
//!   stateful fake of it for the demo and the tests (the daemon never imports it).
//! - [`settings`] is the configuration; [`cli`] the thin command line; [`demo`] the
//!   embedded end-to-end run.

pub mod admin;
pub mod api;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod inbox;
pub mod inbox_watch;
pub mod item_state;
pub mod manifest;
pub mod outbox;
pub mod polling;
pub mod reconciliation;
pub mod recovery;
pub mod settings;
pub mod simulator;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod validation;
