//! Recovery: open and scan every segment once, merge the scans in order, judge.
//!
//! * [`files`]: the directory listing; [`examine`] opens every segment file on its own and
//!   scans each once (rayon, one task per segment: each segment starts with a checkpoint, so
//!   it can be scanned alone).
//! * [`scan`]: the one record loop of the crate ([`scan::Records`]), folded into a
//!   [`scan::Scan`] per segment.
//! * [`merge`]: replays the scans oldest first through the writer's [`LogState`] rules and
//!   decides what is a torn tail (cut it) and what is corruption (refuse, naming file and
//!   offset).
//! * [`verdict`]: [`judge`] turns the merge into a [`Verdict`] (per file: records, cut,
//!   dropped, corrupt, short, sealed; the recovered state; the decision). `Store::open` acts
//!   on it through [`plan`] and [`repair`]; `inspect` renders it.
//! * [`repair`]: applies a plan's cuts before the writer starts.
//!
//! [`LogState`]: crate::state::LogState

mod codec;
pub(crate) mod files;
mod merge;
mod plan;
mod repair;
mod replay;
pub(crate) mod scan;
pub(crate) mod verdict;

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::segment::FileOptions;

pub use codec::{checkpoint_len, encode_checkpoint, encode_meta_items};
pub use files::{examine, list_dir};
pub use plan::{GroupPlan, Plan, RunPlan};
pub use repair::repair;
pub use verdict::judge;

/// What recovery does when it finds a bad record where no crash could have left one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open with [`Error::Corrupt`](crate::Error::Corrupt) naming the file and
    /// offset (default).
    #[default]
    Strict,
    /// Cut the log at the first bad record and drop everything after it: the log opens, but
    /// entries after the corruption are lost. The cut is reported in [`RecoveryReport`].
    TruncateAtCorruption,
}

/// What recovery found, for logs and tools.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Entry records found (including truncated and purged ones).
    pub entry_records: u64,
    /// Bytes of records scanned.
    pub bytes_scanned: u64,
    /// Where a torn tail was cut: file, offset, why.
    pub cut: Option<(PathBuf, u64, String)>,
    /// Whole segment files dropped after the cut, or never written.
    pub dropped_files: Vec<PathBuf>,
    /// The newest segment file was shorter than its header says (a power cut before its size
    /// was durable): its valid records were kept and the file extended again.
    pub short_segment: Option<PathBuf>,
    /// Corruption tolerated under [`RecoveryMode::TruncateAtCorruption`].
    pub tolerated_corruption: Option<String>,
    /// Time taken.
    pub elapsed: std::time::Duration,
}

/// Reads the directory and decides how the log recovers (examine, then [`judge`]). Writes
/// nothing; fails with the verdict's refusal.
///
/// `opts` say how the writer will write the segments (irrelevant when `writable` is false).
pub fn plan(dir: &Path, mode: RecoveryMode, writable: bool, opts: &FileOptions) -> Result<Plan> {
    let examined = examine(dir, writable, opts, &|_| {})?;
    let judged = judge(&examined, mode)?;
    // The plan holds the segments it keeps; the rest are unmapped here.
    drop(examined);
    judged.plan
}
