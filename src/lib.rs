//! tented-bulkd: turns manifest files into Tented generations, durably, never sending a
//! create request twice.
//!
//! A tour, in the order a manifest travels (the [`pipeline`] folder holds the stages):
//!
//! - [`pipeline::intake`] notices files in the inbox, judges each against the rules of
//!   SPEC section 4 (the shapes are in [`manifest`]), and makes its items durable in the
//!   [`store`] before the file moves to the archive.
//! - [`state`] is the heart: every state an item, a job and a manifest's control can be
//!   in, and the one transition function of each.
//! - [`pipeline::submission`] cuts manifests into create requests (25 items per bulk
//!   request) and sends each at most once, recording the intent before and the answer
//!   after; [`pipeline::polling`] polls every admitted job on one due-time queue
//!   ([`schedule`]), never faster than the floor; [`pipeline::reconciliation`] turns its
//!   answers into item events; [`pipeline::outbox`] writes one result file per manifest.
//! - [`pipeline::recovery`] settles what a crash left half-done; [`daemon`] wires the
//!   stages' tasks around the shared [`context`] and runs them until shutdown; [`admin`]
//!   serves `/healthz`, `/metrics`, `/status` and the operator controls.
//! - [`api`] is the only module that speaks HTTP to Tented; [`simulator`] is a faithful,
//!   stateful fake of it for the demo and the tests (the daemon never imports it).
//! - [`spreadsheet`] turns a CSV export into a manifest (`from-csv`); [`schema`] prints
//!   the JSON Schemas of manifests and results, generated from the types that parse and
//!   write them.
//! - [`settings`] is the configuration; [`cli`] the thin command line; [`demo`] the
//!   embedded end-to-end run; [`assets`] the man pages and completions of the package.

pub mod admin;
pub mod api;
#[cfg(test)]
mod architecture;
pub mod assets;
pub mod cli;
pub mod clock;
pub mod context;
pub(crate) mod crash;
pub mod daemon;
pub mod demo;
pub mod health;
pub mod history;
pub mod manifest;
pub mod metrics;
pub mod page;
pub mod pipeline;
pub mod rates;
pub mod schedule;
pub mod schema;
pub mod settings;
pub mod simulator;
pub mod spreadsheet;
pub mod state;
pub mod store;
pub mod tables;
pub mod telemetry;
