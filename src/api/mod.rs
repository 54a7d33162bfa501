//! Tented's API: wire types, the HTTP client and the shared request budget.
//!
//! Invariant: this is the only module that speaks HTTP to Tented. Its types stop at the
//! submission, polling and reconciliation modules, with two exceptions: the item
//! record keeps `GenerationStatus` and `PublicationStatus`, so a change to those two enums
//! is a change of the store's format.

pub mod budget;
pub mod client;
pub mod types;

pub use budget::{Budget, CallClass};
pub use client::{BudgetPermit, CallObserver, ClientConfig, Endpoint, Outcome, TentedClient};
