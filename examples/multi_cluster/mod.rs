//! Many Raft groups per node over one connection per node pair: shared by
//! `examples/multi_cluster.rs`, `tests/openraft_multi.rs` and `compare openraft-cluster`
//! (through `#[path]`).

pub mod cluster;
pub mod net;
pub mod node;
pub mod scenario;
