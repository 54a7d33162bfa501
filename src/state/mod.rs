//! The state machines: every state a record can be in, and the one function that moves
//! it from one to the next.

pub mod control;
pub mod error_code;
pub mod item;
pub mod job;
pub mod manifest;
