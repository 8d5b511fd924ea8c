//! One immutable version of the log's layout: live segments, index runs and meta values.
//!
//! The writer publishes a new `Arc<Version>` through `ArcSwap` whenever the layout changes
//! (rollover, truncate, purge, meta change, a new run). Appends to the last run do not need a
//! new version: they publish through the run's own counter. A reader snapshot is one version
//! plus one load of that counter, so it is one consistent log (never a mix of before and after
//! a truncate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::index::Run;
use crate::segment::Segment;
use crate::state::Metas;

/// A run as seen by one version: at most `limit` slots of it are part of the log.
#[derive(Debug, Clone)]
pub struct RunRef {
    /// The run.
    pub run: Arc<Run>,
    /// Frozen length, or `u64::MAX` for the run the writer still appends to.
    pub limit: u64,
}

impl RunRef {
    /// Slots of this run that are in the log, given the run's published count.
    #[inline]
    pub fn len(&self) -> u64 {
        self.run.published().min(self.limit)
    }
}

/// The layout of the log at one moment.
#[derive(Debug)]
pub struct Version {
    /// First retained log index.
    pub first: u64,
    /// `next` when the version was published (the last run may have grown since).
    pub next: u64,
    /// Index runs in log-index order, contiguous, none entirely below `first`.
    pub runs: Vec<RunRef>,
    /// Live segments, oldest first; the last one is the one being written.
    pub segments: Vec<Arc<Segment>>,
    /// Meta values.
    pub metas: Arc<Metas>,
    /// Slots of the last run that belong to this version: `u64::MAX` while this is the
    /// current version, then the last run's published count at the moment a newer version
    /// replaced it. Without it, a reader that loaded this version after a newer one was
    /// published (new metas) could pair this version's metas with entries appended later.
    tail_cap: AtomicU64,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            first: 0,
            next: 0,
            runs: Vec::new(),
            segments: Vec::new(),
            metas: Arc::default(),
            tail_cap: AtomicU64::new(u64::MAX),
        }
    }
}

impl Clone for Version {
    /// A copy to be published as a new version: it is not superseded yet.
    fn clone(&self) -> Self {
        Version {
            first: self.first,
            next: self.next,
            runs: self.runs.clone(),
            segments: self.segments.clone(),
            metas: self.metas.clone(),
            tail_cap: AtomicU64::new(u64::MAX),
        }
    }
}

impl Version {
    /// A current (not superseded) version with no runs.
    pub fn new(first: u64, next: u64, segments: Vec<Arc<Segment>>, metas: Arc<Metas>) -> Self {
        Version {
            first,
            next,
            segments,
            metas,
            ..Version::default()
        }
    }

    /// Freezes this version's last run at its current published count. The writer calls it
    /// on the version it is about to replace, before it publishes anything newer (Release:
    /// a reader that sees a later count also sees the cap).
    pub fn supersede(&self) {
        let cap = self.runs.last().map(|r| r.len()).unwrap_or(0);
        self.tail_cap.store(cap, Ordering::Release);
    }

    /// Slots of the last run visible in this version, as of now: the run's published count,
    /// within its limit, within the cap set when the version was superseded. The count is
    /// loaded before the cap (see [`Version::supersede`]).
    #[inline]
    pub fn tail_len(&self) -> u64 {
        match self.runs.last() {
            Some(last) => last.len().min(self.tail_cap.load(Ordering::Acquire)),
            None => 0,
        }
    }

    /// Position of the run holding `index`, if any run starts at or before it.
    #[inline]
    pub fn run_for(&self, index: u64) -> Option<usize> {
        let p = self.runs.partition_point(|r| r.run.first() <= index);
        p.checked_sub(1)
    }

    /// Bytes of heap the index of this version uses.
    pub fn index_heap_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.runs
            .iter()
            .filter(|r| seen.insert(Arc::as_ptr(&r.run)))
            .map(|r| r.run.heap_bytes())
            .sum::<usize>()
            + self.runs.capacity() * std::mem::size_of::<RunRef>()
    }
}
