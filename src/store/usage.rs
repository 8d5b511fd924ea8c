//! What an open log holds: its heap estimate ([`Store::estimated_memory`]) and its bytes on
//! disk against the compaction hint ([`Store::log_bytes`], [`Store::needs_compaction`]).

use std::mem::size_of;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::groups::Parked;
use super::Store;
use crate::state::Metas;
use crate::version::Version;

/// Heap bytes of one B-tree leaf of meta values: eleven keys and value pointers, and the
/// node's own fields.
const META_LEAF: usize = 11 * (size_of::<u64>() + size_of::<Arc<[u8]>>()) + 16;
/// Items per leaf as a B-tree fills them (between half and all of eleven).
const META_ITEMS_PER_LEAF: usize = 8;
/// Heap bytes of a reference-counted allocation besides its value (the two counts).
const ARC_COUNTS: usize = 2 * size_of::<usize>();

impl Store {
    /// An estimate of the heap bytes the open log holds: the index (4 bytes per entry, in
    /// buckets), the state and meta values of every group, the segment table and the log's
    /// own structures. Not counted: the page cache and the mapped segment files (resident as
    /// the kernel sees fit, reported by the operating system), the threads' stacks, and the
    /// memory of views and readers the caller holds (a view keeps the index and the segment
    /// files of its version alive after the log moves on).
    pub fn estimated_memory(&self) -> usize {
        let live = self.version.segments.len();
        let focused = version_bytes(&self.version)
            + metas_bytes(&self.state.metas)
            + published_bytes(&self.version, live);
        let table = &self.groups.parked;
        // The map's slots (its capacity, in use or not), each with its control byte.
        let slots = table.capacity() * (size_of::<(u64, Parked)>() + 1);
        let parked: usize = slots + table.values().map(|p| parked_bytes(p, live)).sum::<usize>();
        let segments: usize = self
            .version
            .segments
            .iter()
            .chain(&self.pending_deletes)
            .map(|s| size_of::<crate::segment::Segment>() + s.path().as_os_str().len())
            .sum();
        size_of::<Store>() + focused + parked + segments + self.dir.as_os_str().len()
    }

    /// Bytes of log on disk: the live segment files up to the write position (every live
    /// segment but the one being written counts whole). Purging entries lowers it only when
    /// a segment goes; in a shared log, every group's entries count.
    pub fn log_bytes(&self) -> u64 {
        let active = &self.active;
        let sealed: u64 = self
            .version
            .segments
            .iter()
            .filter(|s| !Arc::ptr_eq(s, active))
            .map(|s| s.size())
            .sum();
        sealed.saturating_add(self.write_pos)
    }

    /// Whether the log has grown past [`Config::compaction_threshold`](super::Config::compaction_threshold)
    /// bytes ([`Store::log_bytes`]): a hint that it is time for a snapshot and a purge
    /// (or, in a shared log, for [`Groups::oldest_groups`](crate::groups::Groups::oldest_groups)
    /// to name the groups to compact). Never true when the threshold is `None`.
    pub fn needs_compaction(&self) -> bool {
        self.config
            .compaction_threshold
            .is_some_and(|t| self.log_bytes() >= t)
    }
}

/// Heap bytes of a version's index and its tables (meta values are counted with the state,
/// which shares them).
fn version_bytes(v: &Version) -> usize {
    v.index_heap_bytes() + v.segments.capacity() * size_of::<Arc<crate::segment::Segment>>()
}

/// Heap bytes of meta values: the shared map, its leaves and the values.
fn metas_bytes(m: &Metas) -> usize {
    if m.is_empty() {
        return 0;
    }
    let values: usize = m.values().map(|v| v.len() + ARC_COUNTS).sum();
    ARC_COUNTS + size_of::<Metas>() + m.len().div_ceil(META_ITEMS_PER_LEAF) * META_LEAF + values
}

/// Heap bytes of the copy of a group's version that its readers load (at most `segments`
/// live segments; the runs are shared with the writer's copy), with the cell that holds it.
fn published_bytes(v: &Version, segments: usize) -> usize {
    size_of::<ArcSwap<Version>>()
        + size_of::<Version>()
        + v.runs.len() * size_of::<crate::version::RunRef>()
        + segments * size_of::<Arc<crate::segment::Segment>>()
}

/// Heap bytes of a group that is not being written, besides its slot in the map of groups:
/// its version, meta values, the copy of its version its readers load, and its publisher.
fn parked_bytes(p: &Parked, segments: usize) -> usize {
    version_bytes(&p.version)
        + metas_bytes(&p.state.metas)
        + published_bytes(&p.version, segments)
        + size_of::<super::reserve::Publisher>()
}
