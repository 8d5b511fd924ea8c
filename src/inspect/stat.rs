//! [`stat`]: the state the log opens with, rendered from the verdict.

use std::path::{Path, PathBuf};

use super::{refusal, Fate, Inspection, Verdict};
use crate::error::Result;
use crate::recovery::RecoveryReport;

/// One segment file as found on disk.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its path.
    pub path: PathBuf,
    /// Sequence number.
    pub seq: u64,
    /// File size.
    pub size: u64,
    /// Offset just past the last valid record.
    pub records_end: u64,
    /// Entry records in it (including truncated and purged ones).
    pub entry_records: u64,
    /// `Some(end)` if the segment carries the sealed mark.
    pub sealed_end: Option<u64>,
    /// First bad spot after the valid records, and why.
    pub torn: Option<(u64, String)>,
}

/// What [`stat`] found.
#[derive(Debug, Clone)]
pub struct Stat {
    /// The directory.
    pub dir: PathBuf,
    /// Segment files that recovery keeps, oldest first (purged ones awaiting deletion included).
    pub segments: Vec<SegmentInfo>,
    /// Bytes of the kept segment files.
    pub file_bytes: u64,
    /// Bytes of valid records in them.
    pub record_bytes: u64,
    /// First retained index.
    pub first_index: u64,
    /// One past the last index.
    pub next_index: u64,
    /// What opening the log would do (cut a torn tail, drop files).
    pub recovery: RecoveryReport,
    /// Corruption found: stat then shows the log as `TruncateAtCorruption` recovery would.
    pub corruption: Option<String>,
    /// Leftover `*.seg.tmp` files.
    pub prepared_files: Vec<PathBuf>,
    /// Pooled files (`*.pool`): purged segments kept for reuse, never read as data.
    pub pool_files: Vec<PathBuf>,
    /// Bytes of the pooled files (disk the pool holds, bounded by `Config::segment_pool`
    /// files).
    pub pool_bytes: u64,
    /// The other groups of a shared log (`groups::Groups`), by id; empty for a single log.
    /// Group 0 is the log shown by the fields above.
    pub groups: Vec<super::GroupSummary>,
    /// The verdict shown: the strict one, or (when [`Stat::corruption`] is set) the
    /// `TruncateAtCorruption` one.
    pub verdict: Verdict,
}

impl Stat {
    /// Number of entries.
    pub fn entries(&self) -> u64 {
        self.next_index.saturating_sub(self.first_index)
    }

    /// Last index, if any entry.
    pub fn last_index(&self) -> Option<u64> {
        (self.next_index > self.first_index).then(|| self.next_index - 1)
    }

    /// Bytes of log, as an open log counts them ([`Store::log_bytes`](crate::Store::log_bytes)):
    /// every kept segment file whole but the newest, which counts up to its records' end.
    pub fn log_bytes(&self) -> u64 {
        let Some((newest, older)) = self.segments.split_last() else {
            return 0;
        };
        older
            .iter()
            .fold(newest.records_end, |sum, s| sum.saturating_add(s.size))
    }

    /// The compaction hint for `threshold` bytes, as an open log would give it
    /// ([`Store::needs_compaction`](crate::Store::needs_compaction)).
    pub fn needs_compaction(&self, threshold: Option<u64>) -> bool {
        threshold.is_some_and(|t| self.log_bytes() >= t)
    }
}

/// Reads the state of the log in `dir` as opening it would recover it. Writes nothing.
///
/// If the log is corrupt, the state shown is what
/// [`RecoveryMode::TruncateAtCorruption`](crate::RecoveryMode::TruncateAtCorruption) would
/// keep, and [`Stat::corruption`] says what is wrong; if even that refuses, its error is
/// returned.
pub fn stat(dir: &Path) -> Result<Stat> {
    stat_of(dir, &Inspection::open(dir, &|_| {}, true)?)
}

/// Renders an inspection as a [`Stat`].
pub(crate) fn stat_of(dir: &Path, insp: &Inspection) -> Result<Stat> {
    let corruption = refusal(&insp.strict).map(|e| e.to_string());
    let shown = insp.shown();
    let v = &shown.verdict;
    let Some(rec) = &v.recovered else {
        return Err(refusal(shown).unwrap_or_else(|| {
            crate::error::Error::corrupt(dir, 0, "recovery refused without naming a file")
        }));
    };
    let segments: Vec<SegmentInfo> = v
        .files
        .iter()
        .filter(|f| matches!(f.fate, Fate::Kept | Fate::Cut { .. }))
        .map(|f| SegmentInfo {
            path: f.path.clone(),
            seq: f.seq,
            size: f.size,
            records_end: f.records.end,
            entry_records: f.records.entry_records,
            sealed_end: f.sealed_end,
            torn: f.stop.clone(),
        })
        .collect();
    Ok(Stat {
        dir: dir.to_path_buf(),
        file_bytes: segments.iter().map(|s| s.size).sum(),
        record_bytes: segments.iter().map(|s| s.records_end).sum(),
        segments,
        first_index: rec.first,
        next_index: rec.next,
        recovery: rec.report.clone(),
        corruption,
        prepared_files: v.prepared_files.clone(),
        pool_files: v.pool_files.clone(),
        pool_bytes: v
            .pool_files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum(),
        groups: rec.groups.clone(),
        verdict: v.clone(),
    })
}
