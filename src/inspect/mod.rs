//! Read-only inspection of a log directory: [`stat`], [`verify`] and [`dump`].
//!
//! All three render recovery's one [`Verdict`] (what `Store::open` would do, decided by the
//! same code, from one scan of every file): [`stat`] shows the state the log opens with,
//! [`verify`] lists what is wrong or was cut, [`dump`] walks the records with recovery's own
//! record iterator. [`verdict`] gives the verdict itself. The Raft view of a log (meta values
//! and log ids) is in [`crate::raft::inspect`].
//!
//! These are the building blocks of the `raft-mmap-log` command-line tool, and tests use them
//! too. None of them writes to the log: segment files are opened and mapped read-only
//! (recovery's plan without its repair), no segment file is created, removed or repaired
//! (the only file they may create is an empty `LOCK`, see below).
//!
//! # Locking
//!
//! A [`Store`](crate::Store) holds a POSIX write lock (`fcntl(F_SETLK)`, `F_WRLCK`) on byte 0
//! of `DIR/LOCK` while it is open. The inspection functions take a **read** lock (`F_RDLCK`)
//! on the same byte for as long as they read ([`ReadLock`]), non-blocking. Like every process
//! that maps segment files, they also read-lock byte 1 while their maps live (see
//! `src/lock.rs`). Files are opened without following symlinks or blocking on FIFOs; anything
//! but a regular file under a segment name is refused, naming it.
//!
//! * if a `Store` has the directory open, in this process or another, they fail at once with
//!   [`Error::Locked`] ("locked by another process"). Reading a live log
//!   would break the rule the zero-copy code relies on: a `&[u8]` over mapped bytes is only
//!   built over bytes nobody writes (the live writer appends, zeroes a torn tail at open and
//!   writes sealed marks), files may vanish mid-scan when a purge completes, and the unsynced
//!   tail would be reported as damage. A running node reports its state through its own API
//!   ([`Store::recovery_report`](crate::Store::recovery_report), [`View`](crate::View)).
//! * while a tool holds the read lock, a `Store` cannot open the directory (it gets `Locked`),
//!   so the bytes cannot change under the tool; any number of tools can read at once (within
//!   one process they share one descriptor, counted in the process's lock registry, see
//!   `src/lock.rs`).
//! * a missing `LOCK` file (a directory copied without it, or one whose `Store` is creating it
//!   right now) is created, empty, and locked: otherwise a `Store` opening the directory at the
//!   same moment would not see the tool. Only when it cannot be created because the file system
//!   is read-only (`EROFS`, where no `Store` can write either) is the directory read without a
//!   lock. Segment files are still never created, changed or removed.

mod dump;
pub(crate) mod stat;
pub(crate) mod verify;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::trusted_body;
use crate::recovery::verdict::Judged;
use crate::recovery::{self, Plan, RecoveryMode};
use crate::segment::{FileOptions, Segment};

pub use crate::lock::ReadLock;
pub use crate::recovery::verdict::{
    Decision, DropReason, EntryRun, Fate, FileVerdict, GroupSummary, RecordCounts, Recovered,
    Verdict,
};
pub use dump::{dump, DumpEnd, DumpFilter, DumpRecord};
pub use stat::{stat, SegmentInfo, Stat};
pub use verify::{verify, Finding, Severity, VerifyReport};

/// The whole mapped segment as a slice.
fn seg_bytes(seg: &Segment) -> &[u8] {
    // SAFETY: the segment is mapped read-only by this module and the caller holds a
    // `ReadLock`, so no `Store` (the only writer of these files) can have the directory open
    // while the slice lives (see the module docs). The map lives as long as `seg`.
    unsafe { crate::recovery::scan::segment_bytes(seg) }
}

/// A directory examined under its read lock: every segment file opened read-only and scanned
/// once, judged as `Store::open` judges it.
pub(crate) struct Inspection {
    /// The verdict in [`RecoveryMode::Strict`] (what `Store::open` does by default).
    pub strict: Judged,
    /// When the strict verdict refuses: what [`RecoveryMode::TruncateAtCorruption`] keeps,
    /// judged from the same scans.
    pub salvage: Option<Judged>,
    // Last: the lock outlives the maps in the plans.
    _lock: ReadLock,
}

impl Inspection {
    /// Locks `dir` for reading, examines and judges it; `progress` gets each scanned
    /// segment's size. With `salvage`, a refused log is judged again (no new scan) in
    /// [`RecoveryMode::TruncateAtCorruption`].
    pub fn open(dir: &Path, progress: &(dyn Fn(u64) + Sync), salvage: bool) -> Result<Self> {
        let lock = ReadLock::acquire(dir)?;
        let examined = recovery::examine(dir, false, &FileOptions::read_only(), progress)?;
        let strict = recovery::judge(&examined, RecoveryMode::Strict)?;
        let salvage = match (&strict.plan, salvage) {
            (Err(_), true) => Some(recovery::judge(
                &examined,
                RecoveryMode::TruncateAtCorruption,
            )?),
            _ => None,
        };
        Ok(Inspection {
            strict,
            salvage,
            _lock: lock,
        })
    }

    /// The judgement whose state is shown: the strict one, or the salvage when it refuses.
    pub fn shown(&self) -> &Judged {
        match &self.salvage {
            Some(s) => s,
            None => &self.strict,
        }
    }

    /// The live entries of a plan of this inspection: index, file, offset, body.
    pub fn live_entries(plan: &Plan) -> impl Iterator<Item = LiveEntry<'_>> + '_ {
        Self::live_entries_of(plan, &plan.runs)
    }

    /// The live entries of `runs` (the main log's or a group's) of a plan of this inspection.
    pub fn live_entries_of<'a>(
        plan: &'a Plan,
        runs: &'a [crate::recovery::RunPlan],
    ) -> impl Iterator<Item = LiveEntry<'a>> + 'a {
        runs.iter().flat_map(move |run| {
            let seg = plan.segments.get(run.segment);
            let offsets = plan.scans.get(run.segment).map(|scan| run.offsets(scan));
            offsets
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(move |(i, off)| {
                    let seg = seg?;
                    let body = seg_bytes(seg)
                        .get(off as usize..)
                        .and_then(trusted_body)
                        .unwrap_or(&[]);
                    Some(LiveEntry {
                        index: run.first.checked_add(i as u64)?,
                        path: seg.path(),
                        offset: u64::from(off),
                        body,
                    })
                })
        })
    }
}

/// One live entry of an [`Inspection`]'s plan; the body borrows the read-only map, which the
/// inspection's read lock keeps unwritten.
pub(crate) struct LiveEntry<'a> {
    /// Log index.
    pub index: u64,
    /// The segment file.
    pub path: &'a Path,
    /// Offset of the record header.
    pub offset: u64,
    /// The entry's payload.
    pub body: &'a [u8],
}

/// What opening the log in `dir` would do, in [`RecoveryMode::Strict`]: the verdict
/// [`stat`] and [`verify`] render. Writes nothing.
pub fn verdict(dir: &Path) -> Result<Verdict> {
    Ok(Inspection::open(dir, &|_| {}, false)?.strict.verdict)
}

/// Segment files of `dir` with their sizes, oldest first (for progress bars).
pub fn segment_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let (listed, _, _) = recovery::list_dir(&crate::io::RealFs, dir)?;
    Ok(listed
        .into_iter()
        .map(|(_, p)| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect())
}

/// The error a refused judgement gives, for callers that need a `Result`.
fn refusal(j: &Judged) -> Option<Error> {
    j.plan.as_ref().err().cloned()
}
