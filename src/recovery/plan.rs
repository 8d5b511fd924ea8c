//! What recovery decides, as data: [`Plan`] (the segments that stay, the recovered state of
//! every group, the index runs to adopt, what to remove) and its parts.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::scan::Scan;
use super::verdict::Fate;
use super::RecoveryReport;
use crate::index::Offsets;
use crate::segment::Segment;
use crate::state::LogState;

/// A run of entries rebuilt by the merge: which kept segment, first index, and where its
/// record offsets are in that segment's scan (no copy of them: the index run adopts the
/// scan's, see [`Plan::take_run_offsets`]).
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Position in [`Plan::segments`] (and [`Plan::scans`]).
    pub segment: usize,
    /// Log index of the first offset.
    pub first: u64,
    /// Positions of its record offsets in the segment's [`Scan::offsets`], in order,
    /// increasing and not overlapping.
    pub slots: Vec<Range<usize>>,
    /// Number of entries (the sum of the lengths of `slots`).
    len: u64,
}

impl RunPlan {
    pub(super) fn new(segment: usize, first: u64, slots: Range<usize>) -> Self {
        let len = slots.len() as u64;
        RunPlan {
            segment,
            first,
            slots: vec![slots],
            len,
        }
    }

    /// One past the last index of the run.
    pub fn end(&self) -> u64 {
        self.first.saturating_add(self.len)
    }

    /// The run's record offsets, read from its segment's scan.
    pub fn offsets<'a>(&'a self, scan: &'a Scan) -> impl Iterator<Item = u32> + 'a {
        self.slots
            .iter()
            .flat_map(|r| r.clone())
            .filter_map(|i| scan.offsets.get(i))
    }

    /// Appends the entries at `slots` (after every slot the run has).
    pub(super) fn extend(&mut self, slots: Range<usize>) {
        self.len += slots.len() as u64;
        match self.slots.last_mut() {
            Some(last) if last.end == slots.start => last.end = slots.end,
            _ => self.slots.push(slots),
        }
    }

    /// Keeps the first `keep` entries.
    pub(super) fn truncate(&mut self, keep: u64) {
        let mut left = keep;
        self.slots.retain_mut(|r| {
            let n = (r.len() as u64).min(left);
            left -= n;
            r.end = r.start + n as usize;
            n > 0
        });
        self.len = self.len.min(keep);
    }
}

/// What recovery found and what it must change before the log opens.
#[derive(Debug)]
pub struct Plan {
    /// Segments that stay, oldest first; the last one is written next.
    pub segments: Vec<Arc<Segment>>,
    /// Scan of each kept segment.
    pub scans: Vec<Arc<Scan>>,
    /// Recovered state.
    pub state: LogState,
    /// Index runs.
    pub runs: Vec<RunPlan>,
    /// The other groups of a shared log, by id (never 0), each with a non-default state.
    pub groups: BTreeMap<u64, GroupPlan>,
    /// Where writing resumes in the last segment.
    pub write_pos: u64,
    /// CRC field of the last record before `write_pos` (the next segment's checkpoint names
    /// it).
    pub last_crc: u32,
    /// The group the last record before `write_pos` belongs to (0 after the checkpoints).
    pub stream_group: u64,
    /// The last segment needs a fresh checkpoint at `write_pos` (its own was lost).
    pub needs_checkpoint: bool,
    /// Files to delete: segments after a cut, never-written segment files, prepared files.
    pub remove: Vec<PathBuf>,
    /// Pooled files found in the directory (kept for reuse, never read as data).
    pub pool: Vec<PathBuf>,
    /// Leading segments (indexes into `segments`... always a prefix) that hold only purged
    /// entries.
    pub purged_prefix: usize,
    /// What happened, for people.
    pub report: RecoveryReport,
    /// What happens to each segment file of the directory, oldest first.
    pub fates: Vec<Fate>,
}

impl Plan {
    /// The record offsets of each of [`Plan::runs`], in order, for the index runs to adopt.
    /// Moved out of the scans, not copied, when the plan holds the only reference to a scan
    /// and no other run names its segment (always, for `Store::open`): the scan's offsets
    /// are then compacted in place to the run's. Otherwise they are copied. Scans whose
    /// segment holds no run lose their offsets too.
    pub fn take_run_offsets(&mut self) -> (Vec<Offsets>, BTreeMap<u64, Vec<Offsets>>) {
        let mut runs_per_segment = vec![0usize; self.scans.len()];
        let all_runs = self
            .runs
            .iter()
            .chain(self.groups.values().flat_map(|g| g.runs.iter()));
        for rp in all_runs {
            if let Some(n) = runs_per_segment.get_mut(rp.segment) {
                *n += 1;
            }
        }
        // Offsets no run needs (purged or truncated entries) go now.
        for (scan, _) in self
            .scans
            .iter_mut()
            .zip(&runs_per_segment)
            .filter(|(_, &n)| n == 0)
        {
            if let Some(scan) = Arc::get_mut(scan) {
                scan.offsets = Offsets::default();
            }
        }
        let scans = &mut self.scans;
        let mut take = |runs: &[RunPlan]| -> Vec<Offsets> {
            runs.iter()
                .map(|rp| {
                    let Some(scan) = scans.get_mut(rp.segment) else {
                        return Offsets::default();
                    };
                    if runs_per_segment[rp.segment] == 1 {
                        if let Some(scan) = Arc::get_mut(scan) {
                            let mut offsets = std::mem::take(&mut scan.offsets);
                            offsets.keep_only(&rp.slots);
                            return offsets;
                        }
                    }
                    scan.offsets.copy_of(&rp.slots)
                })
                .collect()
        };
        let main = take(&self.runs);
        let groups = self
            .groups
            .iter()
            .map(|(id, g)| (*id, take(&g.runs)))
            .collect();
        (main, groups)
    }
}

/// A group's replayed state and index runs (group 0 is the log's own: [`Plan::state`] and
/// [`Plan::runs`]).
#[derive(Debug, Clone, Default)]
pub struct GroupPlan {
    /// Recovered state.
    pub state: LogState,
    /// Index runs.
    pub runs: Vec<RunPlan>,
}

impl GroupPlan {
    /// A group whose state is the default (no entry, no first index, no meta value) does not
    /// exist: it is neither written in checkpoints nor kept.
    pub fn exists(&self) -> bool {
        self.state != LogState::default()
    }
}
