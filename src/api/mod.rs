//! Tented's API: wire types, the HTTP client and the shared request budget.
//!
//! Invariant: this is the only module that speaks HTTP to Tented. Its types stop at the
//! submission, polling and reconciliation modules; the store never sees them.

pub mod budget;
pub mod client;
pub mod types;

pub use budget::{Budget, CallClass};
pub use client::{BudgetPermit, CallObserver, ClientConfig, Endpoint, Outcome, TentedClient};
