//! What a node's Ready loop needs from the log that holds all its regions: the one interface
//! the multi-region harness (`node.rs`) is written against, so that the loop is the same code
//! whatever stores the regions (a shared `Groups` log, a directory per region, raft-engine,
//! memory).

use std::path::Path;

use raft::eraftpb::SnapshotMetadata;
use raft::Ready;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Builds a snapshot's data for its meta and the peer it is for (the state machine at the
/// meta's index), or `SnapshotTemporarilyUnavailable` while the state machine is elsewhere.
pub type SnapshotSource =
    Box<dyn Fn(&SnapshotMetadata, u64) -> raft::Result<Vec<u8>> + Send + Sync>;

/// The log of one node: every region (Raft group) the node has a peer of.
///
/// A Ready round calls [`write_ready`](NodeLog::write_ready) for every region with a Ready,
/// then [`sync`](NodeLog::sync) once, then advances each region.
pub trait NodeLog: Sized + Send + 'static {
    /// One region's `raft::Storage`, owned by its `RawNode`.
    type Store: raft::Storage + Send + 'static;

    /// Opens (or creates) the node's log in `dir`, recovering every region it holds.
    fn open(dir: &Path) -> Result<Self, Error>;

    /// The regions the log holds, in increasing order.
    fn regions(&self) -> Result<Vec<u64>, Error>;

    /// The storage of `region`: as the log left it, or a new one whose configuration is
    /// `voters` (the storage of a region the node hears of for the first time).
    fn storage(&mut self, region: u64, voters: &[u64]) -> Result<Self::Store, Error>;

    /// Makes the storage's snapshots carry `source`'s data; backends that cannot serve
    /// snapshots ignore it (runs with compaction need one that can).
    fn serve_snapshots(&mut self, _store: &mut Self::Store, _source: SnapshotSource) {}

    /// Writes what `rd` asks to persist (snapshot, entries, hard state) without making it
    /// durable; returns whether anything was written.
    fn write_ready(
        &mut self,
        region: u64,
        store: &mut Self::Store,
        rd: &Ready,
    ) -> Result<bool, Error>;

    /// Makes everything written since the last call durable, for every region at once.
    fn sync(&mut self) -> Result<(), Error>;

    /// Makes `region`'s writes durable (before its state machine is saved beside the log).
    fn sync_region(&mut self, _region: u64, _store: &mut Self::Store) -> Result<(), Error> {
        self.sync()
    }

    /// Saves a `LightReady`'s commit index (durable with a later sync).
    fn set_commit(&mut self, region: u64, store: &mut Self::Store, index: u64)
        -> Result<(), Error>;

    /// Drops the region's entries before `index` (durable with a later sync).
    fn compact(&mut self, region: u64, store: &mut Self::Store, index: u64) -> Result<(), Error>;

    /// Removes a destroyed region (its `RawNode`, and so its storage, already dropped) and
    /// frees its space.
    fn remove(&mut self, region: u64) -> Result<(), Error>;
}
