//! The typed Raft layer.

mod errors;
pub use errors::StateError;
