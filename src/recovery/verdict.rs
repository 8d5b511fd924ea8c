//! The verdict: what recovery found in every file of a log directory and what opening the log
//! does, as owned data (paths, offsets, strings, counts). [`judge`] is the one place that
//! decides; `Store::open` acts on it, and `inspect` renders it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::files::Directory;
use super::merge::merge;
use super::plan::Plan;
use super::scan::Item;
use super::{RecoveryMode, RecoveryReport};
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_SIZE;

/// Why opening the log drops a whole segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its header never reached the disk (a crash while it was created).
    NeverWritten,
    /// It follows a file that was never written.
    AfterNeverWritten,
    /// It follows the point where recovery ends the log (a cut, or a segment that lost its
    /// checkpoint): nothing in it was acknowledged.
    AfterCut,
}

/// What opening the log does with one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Kept whole.
    Kept,
    /// Kept up to `offset`; the bytes from there on are a torn write (or, under
    /// [`RecoveryMode::TruncateAtCorruption`], tolerated corruption) and are zeroed.
    Cut {
        /// Where the kept records end.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Removed.
    Dropped(DropReason),
    /// The log refuses to open because of damage in this file.
    Corrupt {
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log refuses to open because of damage elsewhere; this file was not judged.
    Refused,
}

/// The valid records of one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCounts {
    /// Valid records.
    pub records: u64,
    /// Entry records among them (including truncated and purged ones).
    pub entry_records: u64,
    /// Bytes of valid records (after the segment header).
    pub bytes: u64,
    /// Offset just past the last valid record.
    pub end: u64,
    /// Offset of the last valid record.
    pub last_offset: Option<u64>,
}

/// What recovery found in one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVerdict {
    /// The file.
    pub path: PathBuf,
    /// Sequence number (from its name).
    pub seq: u64,
    /// Segment size from its header, or the file's length if the header is bad.
    pub size: u64,
    /// Why the file did not open as a segment (offset and reason); `None` if it opened.
    pub bad_header: Option<(u64, String)>,
    /// Its valid records (all zero if it did not open).
    pub records: RecordCounts,
    /// Where the valid records stop before a clean end, and why.
    pub stop: Option<(u64, String)>,
    /// `Some(end)` if the segment carries the sealed mark.
    pub sealed_end: Option<u64>,
    /// `Some(bytes present)` if the file is shorter than its header says (a power cut before
    /// its size was durable); its valid records are kept and the file extended.
    pub short: Option<u64>,
    /// Kept, but it holds only purged entries: opening the log deletes it.
    pub purged: bool,
    /// What opening the log does with it.
    pub fate: Fate,
}

/// What opening the log does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Opens with every record it finds (leftover prepared files aside).
    Opens,
    /// Opens after cutting a torn tail and/or dropping files (see [`RecoveryReport`]).
    OpensAfterRepair {
        /// Where the log is cut: file, offset, why.
        cut: Option<(PathBuf, u64, String)>,
        /// Whole files removed.
        dropped: Vec<PathBuf>,
        /// Corruption cut under [`RecoveryMode::TruncateAtCorruption`].
        tolerated_corruption: Option<String>,
    },
    /// Refuses with [`Error::Corrupt`] naming this file and offset.
    Refuses {
        /// The file.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A run of live entries: the file that holds them and their index range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRun {
    /// The segment file.
    pub path: PathBuf,
    /// First index.
    pub first: u64,
    /// One past the last index.
    pub end: u64,
}

/// The state the log opens with.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// First retained index.
    pub first: u64,
    /// One past the last index.
    pub next: u64,
    /// Meta values.
    pub metas: BTreeMap<u64, Vec<u8>>,
    /// For each meta key, the record that last set it (file, offset).
    pub meta_sources: BTreeMap<u64, (PathBuf, u64)>,
    /// Where the live entries are, oldest first.
    pub runs: Vec<EntryRun>,
    /// The other groups of a shared log (`groups::Groups`), by id; empty for a single log.
    pub groups: Vec<GroupSummary>,
    /// What recovery does, as `Store::recovery_report` gives it.
    pub report: RecoveryReport,
}

/// One group of a shared log, as recovery finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Group id.
    pub id: u64,
    /// First retained index.
    pub first: u64,
    /// One past the last index.
    pub next: u64,
    /// Number of meta values.
    pub metas: usize,
    /// The oldest segment file holding one of its live entries (`None`: no entry).
    pub oldest_segment: Option<PathBuf>,
    /// Bytes of the segment files from that one to the newest: what this group keeps on
    /// disk while it does not purge.
    pub pinned_bytes: u64,
}

/// What recovery decides for a log directory, in one [`RecoveryMode`].
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The mode judged in.
    pub mode: RecoveryMode,
    /// Every segment file, oldest first.
    pub files: Vec<FileVerdict>,
    /// Leftover prepared files (removed at open).
    pub prepared_files: Vec<PathBuf>,
    /// Pooled files: purged segments kept for reuse, never read as data. Open keeps up to
    /// `Config::segment_pool` of them for reuse and removes the rest.
    pub pool_files: Vec<PathBuf>,
    /// The state the log opens with (`None` when it refuses).
    pub recovered: Option<Recovered>,
    /// What opening does.
    pub decision: Decision,
}

impl Verdict {
    /// The error `Store::open` gives, if it refuses.
    pub fn refusal(&self) -> Option<Error> {
        match &self.decision {
            Decision::Refuses {
                path,
                offset,
                reason,
            } => Some(Error::corrupt(path, *offset, reason.clone())),
            _ => None,
        }
    }
}

/// A verdict and, when the log opens, the plan that carries it out.
#[derive(Debug)]
pub struct Judged {
    /// The verdict.
    pub verdict: Verdict,
    /// The plan, or the error opening gives.
    pub plan: std::result::Result<Plan, Error>,
}

/// Judges the examined directory in `mode`: the one function that decides. Fails only on
/// errors other than corruption (I/O).
pub fn judge(dir: &Directory, mode: RecoveryMode) -> Result<Judged> {
    let plan = match merge(dir, mode) {
        Ok(p) => Ok(p),
        Err(e @ Error::Corrupt { .. }) => Err(e),
        Err(e) => return Err(e),
    };
    let files = dir
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fate = match &plan {
                Ok(p) => p.fates.get(i).cloned().unwrap_or(Fate::Refused),
                Err(Error::Corrupt {
                    path,
                    offset,
                    reason,
                }) if *path == f.path => Fate::Corrupt {
                    offset: *offset,
                    reason: reason.clone(),
                },
                Err(_) => Fate::Refused,
            };
            let purged = plan.as_ref().is_ok_and(|p| {
                i < p.purged_prefix && p.segments.get(i).is_some_and(|s| s.path() == f.path)
            });
            match &f.opened {
                Ok((seg, scan)) => FileVerdict {
                    path: f.path.clone(),
                    seq: f.seq,
                    size: seg.size(),
                    bad_header: None,
                    records: RecordCounts {
                        records: scan.records,
                        entry_records: scan.entries,
                        bytes: scan.end.saturating_sub(SEGMENT_HEADER_SIZE as u64),
                        end: scan.end,
                        last_offset: scan.last_offset,
                    },
                    stop: scan.torn.clone(),
                    sealed_end: seg.sealed_end(),
                    short: seg.is_short().then(|| seg.mapped_len()),
                    purged,
                    fate,
                },
                Err(e) => FileVerdict {
                    path: f.path.clone(),
                    seq: f.seq,
                    size: std::fs::metadata(&f.path).map_or(0, |m| m.len()),
                    bad_header: Some(match e {
                        Error::Corrupt { offset, reason, .. } => (*offset, reason.clone()),
                        other => (0, other.to_string()),
                    }),
                    records: RecordCounts::default(),
                    stop: None,
                    sealed_end: None,
                    short: None,
                    purged: false,
                    fate,
                },
            }
        })
        .collect();
    let (decision, recovered) = match &plan {
        Err(e) => {
            let (path, offset, reason) = match e {
                Error::Corrupt {
                    path,
                    offset,
                    reason,
                } => (path.clone(), *offset, reason.clone()),
                other => (PathBuf::new(), 0, other.to_string()),
            };
            let d = Decision::Refuses {
                path,
                offset,
                reason,
            };
            (d, None)
        }
        Ok(p) => {
            let r = &p.report;
            let d = if r.cut.is_none()
                && r.dropped_files.is_empty()
                && r.tolerated_corruption.is_none()
            {
                Decision::Opens
            } else {
                Decision::OpensAfterRepair {
                    cut: r.cut.clone(),
                    dropped: r.dropped_files.clone(),
                    tolerated_corruption: r.tolerated_corruption.clone(),
                }
            };
            (d, Some(recovered(p)))
        }
    };
    Ok(Judged {
        verdict: Verdict {
            mode,
            files,
            prepared_files: dir.prepared.clone(),
            pool_files: dir.pool.clone(),
            recovered,
            decision,
        },
        plan,
    })
}

/// The state a plan opens with, as owned data.
fn recovered(plan: &Plan) -> Recovered {
    let mut meta_sources = BTreeMap::new();
    for (seg, scan) in plan.segments.iter().zip(&plan.scans) {
        // Only the log's own meta values (group 0): a shared log's groups have their own.
        let mut group = 0u64;
        for item in &scan.items {
            let at = |offset: &u64| (seg.path().to_path_buf(), *offset);
            if let Item::Group { id, .. } = item {
                group = *id;
            }
            if group != 0 {
                continue;
            }
            match item {
                Item::Checkpoint { offset, metas, .. } => {
                    for k in metas.keys() {
                        meta_sources.insert(*k, at(offset));
                    }
                }
                Item::Purge { offset, metas, .. } => {
                    for (k, _) in metas {
                        meta_sources.insert(*k, at(offset));
                    }
                }
                Item::Meta { offset, key, .. } => {
                    meta_sources.insert(*key, at(offset));
                }
                Item::MetaRemove { key, .. } => {
                    meta_sources.remove(key);
                }
                Item::Entries { .. }
                | Item::Truncate { .. }
                | Item::Group { .. }
                | Item::GroupCheckpoint { .. }
                | Item::GroupRemove { .. }
                | Item::Rewrite { .. } => {}
            }
        }
    }
    let report = plan.report.clone();
    let groups = plan
        .groups
        .iter()
        .map(|(id, g)| {
            let oldest = g.runs.first().map(|r| r.segment);
            GroupSummary {
                id: *id,
                first: g.state.first,
                next: g.state.next,
                metas: g.state.metas.len(),
                oldest_segment: oldest
                    .and_then(|k| plan.segments.get(k))
                    .map(|s| s.path().to_path_buf()),
                pinned_bytes: oldest
                    .map_or(0, |k| plan.segments.iter().skip(k).map(|s| s.size()).sum()),
            }
        })
        .collect();
    Recovered {
        groups,
        first: plan.state.first,
        next: plan.state.next,
        metas: plan
            .state
            .metas
            .iter()
            .map(|(k, v)| (*k, v.to_vec()))
            .collect(),
        meta_sources,
        runs: plan
            .runs
            .iter()
            .filter_map(|r| {
                Some(EntryRun {
                    path: plan.segments.get(r.segment)?.path().to_path_buf(),
                    first: r.first,
                    end: r.end(),
                })
            })
            .collect(),
        report,
    }
}
