//! Read-only inspection of a log directory: [`stat`], [`verify`] and [`dump`].
//!
//! These are the building blocks of the `raft-mmap-log` command-line tool, and tests use them
//! too. None of them writes to the log: segment files are opened and mapped read-only
//! (recovery's plan without its repair), no segment file is created, removed or repaired
//! (the only file they may create is an empty `LOCK`, see below).
//!
//! # Locking
//!
//! A [`Store`](crate::Store) holds a POSIX write lock (`fcntl(F_SETLK)`, `F_WRLCK`) on
//! `DIR/LOCK` while it is open. The inspection functions take a **read** lock (`F_RDLCK`) on
//! the same file for as long as they read ([`ReadLock`]), non-blocking:
//!
//! * if a `Store` has the directory open, in this process or another, they fail at once with
//!   [`Error::Locked`] ("locked by another process"). Reading a live log
//!   would break the rule the zero-copy code relies on: a `&[u8]` over mapped bytes is only
//!   built over bytes nobody writes (the live writer appends, zeroes a torn tail at open and
//!   writes sealed marks), files may vanish mid-scan when a purge completes, and the unsynced
//!   tail would be reported as damage. A running node reports its state through its own API
//!   ([`Store::recovery_report`](crate::Store::recovery_report), [`Snapshot`](crate::Snapshot)).
//! * while a tool holds the read lock, a `Store` cannot open the directory (it gets `Locked`),
//!   so the bytes cannot change under the tool; any number of tools can read at once (within
//!   one process they share one descriptor, counted in the process's lock registry, see
//!   `src/lock.rs`).
//! * a missing `LOCK` file (a directory copied without it, or one whose `Store` is creating it
//!   right now) is created, empty, and locked: otherwise a `Store` opening the directory at the
//!   same moment would not see the tool. Only when it cannot be created because the file system
//!   is read-only (`EROFS`, where no `Store` can write either) is the directory read without a
//!   lock. Segment files are still never created, changed or removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use zerocopy::FromBytes;

use crate::error::{Error, Result};
use crate::format::{CheckpointHead, RecordHeader, RecordKind, SEGMENT_HEADER_SIZE};
use crate::raft::state::split_entry;
use crate::raft::{
    Codec, LogId, RaftTypes, Vote, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA,
    META_VOTE,
};
use crate::record::{decode, trusted_body, Decoded};
use crate::recovery::{self, Item, Plan, RecoveryMode, RecoveryReport};
use crate::segment::{FileOptions, Segment};

pub use crate::lock::ReadLock;

/// The whole mapped segment as a slice.
fn seg_bytes(seg: &Segment) -> &[u8] {
    // SAFETY: the segment is mapped read-only by this module and the caller holds a
    // `ReadLock`, so no `Store` (the only writer of these files) can have the directory open
    // while the slice lives (see the module docs). The map lives as long as `seg`.
    unsafe { seg.all_bytes() }
}

/// A meta value as found: absent, decoded, or present but not decodable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaValue<V> {
    /// The key is not set.
    Absent,
    /// The value decoded.
    Value(V),
    /// The value is there but does not decode: its length and why.
    Raw {
        /// Length in bytes.
        len: usize,
        /// Decode error.
        error: String,
    },
}

impl<V> MetaValue<V> {
    fn from_meta(bytes: Option<&[u8]>) -> Self
    where
        V: Codec,
    {
        match bytes {
            None => MetaValue::Absent,
            Some(b) => match V::from_bytes(b) {
                Ok(v) => MetaValue::Value(v),
                Err(e) => MetaValue::Raw {
                    len: b.len(),
                    error: e.to_string(),
                },
            },
        }
    }

    /// The decoded value, if any.
    pub fn value(&self) -> Option<&V> {
        match self {
            MetaValue::Value(v) => Some(v),
            _ => None,
        }
    }
}

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

/// The Raft state as stored in the meta values, decoded with [`crate::raft::RaftTypes`].
#[derive(Debug, Clone)]
pub struct RaftMetas {
    /// Saved vote.
    pub vote: MetaValue<Vote>,
    /// Committed log id.
    pub committed: MetaValue<LogId>,
    /// Purged log id.
    pub purged: MetaValue<LogId>,
    /// User data (stored as `Option<Vec<u8>>`).
    pub user_data: MetaValue<Option<Vec<u8>>>,
    /// Snapshot meta: last log id and an opaque blob.
    pub snapshot: MetaValue<(LogId, Vec<u8>)>,
    /// Other meta keys: key and value length.
    pub other: Vec<(u64, usize)>,
}

impl RaftMetas {
    fn from_metas(metas: &BTreeMap<u64, Arc<[u8]>>) -> Self {
        let get = |k: u64| metas.get(&k).map(|v| &v[..]);
        RaftMetas {
            vote: MetaValue::from_meta(get(META_VOTE)),
            committed: MetaValue::from_meta(get(META_COMMITTED)),
            purged: MetaValue::from_meta(get(META_PURGED)),
            user_data: MetaValue::from_meta(get(META_USER_DATA)),
            snapshot: MetaValue::from_meta(get(META_SNAPSHOT)),
            other: metas
                .iter()
                .filter(|(k, _)| !(META_VOTE..=META_SNAPSHOT).contains(*k))
                .map(|(k, v)| (*k, v.len()))
                .collect(),
        }
    }

    fn any_raft_key(metas: &BTreeMap<u64, Arc<[u8]>>) -> bool {
        metas
            .keys()
            .any(|k| (META_VOTE..=META_SNAPSHOT).contains(k))
    }
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
    /// Log id of the last entry (decoded from its body).
    pub last_log_id: MetaValue<LogId>,
    /// Raft meta values.
    pub raft: RaftMetas,
    /// What opening the log would do (cut a torn tail, drop files).
    pub recovery: RecoveryReport,
    /// Corruption found: stat then shows the log as `TruncateAtCorruption` recovery would.
    pub corruption: Option<String>,
    /// Leftover `*.seg.tmp` files.
    pub prepared_files: Vec<PathBuf>,
}

impl Stat {
    /// Number of entries.
    pub fn entries(&self) -> u64 {
        self.next_index - self.first_index
    }

    /// Last index, if any entry.
    pub fn last_index(&self) -> Option<u64> {
        (self.next_index > self.first_index).then(|| self.next_index - 1)
    }
}

fn segment_infos(plan: &Plan) -> Vec<SegmentInfo> {
    plan.segments
        .iter()
        .zip(&plan.scans)
        .map(|(seg, scan)| SegmentInfo {
            path: seg.path().to_path_buf(),
            seq: seg.seq(),
            size: seg.size(),
            records_end: scan.end,
            entry_records: scan.entries,
            sealed_end: seg.sealed_end(),
            torn: scan.torn.clone(),
        })
        .collect()
}

/// Body of the last live entry of a plan.
fn last_entry_body(plan: &Plan) -> Option<(u64, &[u8])> {
    let run = plan.runs.last()?;
    let off = *run.offsets.last()? as usize;
    let seg = plan.segments.get(run.segment)?;
    let body = trusted_body(seg_bytes(seg).get(off..)?)?;
    Some((run.first + run.offsets.len() as u64 - 1, body))
}

/// The log id at the front of entry `index`'s body, checked as the Raft layer checks it.
fn decode_log_id(index: u64, body: &[u8]) -> MetaValue<LogId> {
    match split_entry::<RaftTypes>(index, body) {
        Ok((id, _)) => MetaValue::Value(id),
        Err(e) => MetaValue::Raw {
            len: body.len(),
            error: e.to_string(),
        },
    }
}

/// Reads the state of the log in `dir` as opening it would recover it. Writes nothing.
///
/// If the log is corrupt, the state shown is what [`RecoveryMode::TruncateAtCorruption`] would
/// keep, and [`Stat::corruption`] says what is wrong.
pub fn stat(dir: &Path) -> Result<Stat> {
    let _lock = ReadLock::acquire(dir)?;
    let (plan, corruption) =
        match recovery::plan(dir, RecoveryMode::Strict, false, &FileOptions::read_only()) {
            Ok(p) => (p, None),
            Err(e @ Error::Corrupt { .. }) => {
                let p = recovery::plan(
                    dir,
                    RecoveryMode::TruncateAtCorruption,
                    false,
                    &FileOptions::read_only(),
                )?;
                (p, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
    let (_, prepared_files) = recovery::list_dir(dir)?;
    let segments = segment_infos(&plan);
    let last_log_id = match last_entry_body(&plan) {
        Some((index, body)) => decode_log_id(index, body),
        None => MetaValue::Absent,
    };
    Ok(Stat {
        dir: dir.to_path_buf(),
        file_bytes: segments.iter().map(|s| s.size).sum(),
        record_bytes: segments.iter().map(|s| s.records_end).sum(),
        segments,
        first_index: plan.state.first,
        next_index: plan.state.next,
        last_log_id,
        raft: RaftMetas::from_metas(&plan.state.metas),
        recovery: plan.report.clone(),
        corruption,
        prepared_files,
    })
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The log is damaged or breaks an invariant: opening it fails or would lose data.
    Problem,
    /// Something a crash normally leaves (a torn tail, a leftover file): recovery handles it.
    Note,
}

/// One thing [`verify`] found, located at a file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Problem or note.
    pub severity: Severity,
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.offset, self.what)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Problems and notes, in file order.
    pub findings: Vec<Finding>,
    /// Segment files checked.
    pub segments: usize,
    /// Valid records whose checksum was checked.
    pub records: u64,
    /// Entry records among them.
    pub entry_records: u64,
    /// Live entries whose Raft log id was checked.
    pub raft_entries_checked: u64,
    /// Bytes of valid records.
    pub record_bytes: u64,
    /// Whether the log looked like a Raft log (Raft checks ran).
    pub raft_checked: bool,
}

impl VerifyReport {
    /// No problem (notes allowed).
    pub fn is_sound(&self) -> bool {
        self.problems().next().is_none()
    }

    /// The problems.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }

    /// The notes.
    pub fn notes(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Note)
    }

    fn add(&mut self, severity: Severity, path: &Path, offset: u64, what: impl Into<String>) {
        let f = Finding {
            severity,
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        };
        if !self
            .findings
            .iter()
            .any(|g| g.path == f.path && g.offset == f.offset && g.severity == f.severity)
        {
            self.findings.push(f);
        }
    }
}

/// Checks every record's checksum and the log's invariants. Writes nothing.
///
/// `progress` is called (from any thread) with the file size of each segment once it is
/// scanned. The report's problems are what makes recovery refuse the log or lose acknowledged
/// data; a torn tail in the newest segment (what a crash leaves) is a note.
pub fn verify(dir: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
    let _lock = ReadLock::acquire(dir)?;
    let mut rep = VerifyReport::default();
    // Recovery's verdict comes first: a file that opening the log drops (never written, or
    // after a cut) holds nothing acknowledged, so what is found in it is a note, not a
    // problem. `verify` never calls a log broken that opens correctly.
    let planned = match recovery::plan(dir, RecoveryMode::Strict, false, &FileOptions::read_only())
    {
        Ok(plan) => Ok(plan),
        Err(Error::Corrupt {
            path,
            offset,
            reason,
        }) => Err((path, offset, reason)),
        Err(e) => return Err(e),
    };
    let dropped: Vec<PathBuf> = match &planned {
        Ok(plan) => plan.report.dropped_files.clone(),
        Err(_) => Vec::new(),
    };
    let severity = |path: &Path, s: Severity| {
        if dropped.iter().any(|d| d == path) {
            Severity::Note
        } else {
            s
        }
    };
    let (listed, prepared) = recovery::list_dir(dir)?;
    for p in &prepared {
        rep.add(
            Severity::Note,
            p,
            0,
            "leftover prepared segment file (never holds log data; removed at open)",
        );
    }
    for w in listed.windows(2) {
        if w[0].0 + 1 != w[1].0 {
            rep.add(
                severity(&w[1].1, Severity::Problem),
                &w[1].1,
                0,
                format!(
                    "segment {} is missing (found {} then {})",
                    w[0].0 + 1,
                    w[0].0,
                    w[1].0
                ),
            );
        }
    }

    // Open every file on its own, so that one bad header does not hide the rest.
    let mut segs: Vec<Segment> = Vec::with_capacity(listed.len());
    for (i, (seq, path)) in listed.iter().enumerate() {
        match Segment::open(
            path,
            *seq,
            false,
            &FileOptions::read_only(),
            recovery::may_be_short(&listed, i),
        ) {
            Ok(s) => {
                if s.is_short() {
                    rep.add(
                        Severity::Note,
                        path,
                        s.mapped_len(),
                        "newest segment is shorter than its header says (a power cut before its size was durable); opening the log keeps its valid records and extends it",
                    );
                }
                segs.push(s)
            }
            Err(Error::Corrupt { offset, reason, .. }) => {
                if recovery::never_written(&listed, i) {
                    rep.add(
                        Severity::Note,
                        path,
                        0,
                        "segment file was never written (crash while creating it); recovery removes it and any later file",
                    );
                } else {
                    rep.add(severity(path, Severity::Problem), path, offset, reason);
                }
            }
            Err(e) => return Err(e),
        }
    }
    rep.segments = segs.len();

    let scans: Vec<recovery::Scan> = segs
        .par_iter()
        .map(|s| {
            let scan = recovery::scan_segment(s);
            progress(s.size());
            scan
        })
        .collect();
    let newest_seq = listed.last().map(|l| l.0);
    for (seg, scan) in segs.iter().zip(&scans) {
        // The scan groups consecutive entries into one item; every other item is one record.
        let others = scan
            .items
            .iter()
            .filter(|i| !matches!(i, Item::Entries { .. }))
            .count() as u64;
        rep.records += scan.entries + others;
        rep.entry_records += scan.entries;
        rep.record_bytes += scan.end.saturating_sub(SEGMENT_HEADER_SIZE as u64);
        let newest = Some(seg.seq()) == newest_seq;
        let sealed = seg.sealed_end();
        match (&scan.torn, sealed) {
            (Some((off, why)), Some(_)) => rep.add(
                severity(seg.path(), Severity::Problem),
                seg.path(),
                *off,
                format!("{why} (in a sealed segment: it was complete and synced, so this is corruption)"),
            ),
            (Some((off, why)), None) if newest => rep.add(
                Severity::Note,
                seg.path(),
                *off,
                format!("torn tail: {why} (what a crash leaves in the newest segment; opening the log cuts it here)"),
            ),
            (Some((off, why)), None) => rep.add(
                Severity::Note,
                seg.path(),
                *off,
                format!("torn tail in an unsealed older segment: {why} (a crash during rollover; opening the log cuts it here and drops later segments)"),
            ),
            (None, Some(end)) if end != scan.end => rep.add(
                severity(seg.path(), Severity::Problem),
                seg.path(),
                scan.end,
                format!("records end at {} but the segment was sealed at {end}", scan.end),
            ),
            _ => {}
        }
        if scan.items.is_empty() && scan.torn.is_none() && !newest {
            rep.add(
                severity(seg.path(), Severity::Problem),
                seg.path(),
                SEGMENT_HEADER_SIZE as u64,
                "older segment holds no records",
            );
        }
    }

    // The merge: the same replay recovery does (state rules, checkpoints, missing segments).
    match planned {
        Ok(plan) => {
            for d in &plan.report.dropped_files {
                // Files dropped after a cut (a blank newest file has its own note).
                if !rep.findings.iter().any(|f| &f.path == d) {
                    rep.add(
                        Severity::Note,
                        d,
                        0,
                        "opening the log drops this segment file (it follows a cut)",
                    );
                }
            }
            check_raft(&plan, &mut rep);
        }
        Err((path, offset, reason)) => rep.add(Severity::Problem, &path, offset, reason),
    }
    rep.findings
        .sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
    Ok(rep)
}

/// Raft-level invariants, checked on the state recovery would open.
fn check_raft(plan: &Plan, rep: &mut VerifyReport) {
    let metas = &plan.state.metas;
    let first_body = plan.runs.first().and_then(|r| {
        let seg = plan.segments.get(r.segment)?;
        let off = *r.offsets.first()? as usize;
        Some((r.first, trusted_body(seg_bytes(seg).get(off..)?)?))
    });
    let entries_are_ids =
        first_body.is_some_and(|(i, b)| matches!(decode_log_id(i, b), MetaValue::Value(_)));
    if !RaftMetas::any_raft_key(metas) && !entries_are_ids {
        return;
    }
    rep.raft_checked = true;

    // Where each meta key was last set, to point problems at a record.
    let mut meta_at: BTreeMap<u64, (PathBuf, u64)> = BTreeMap::new();
    for (seg, scan) in plan.segments.iter().zip(&plan.scans) {
        for item in &scan.items {
            match item {
                Item::Checkpoint { offset, metas, .. } => {
                    for k in metas.keys() {
                        meta_at.insert(*k, (seg.path().to_path_buf(), *offset));
                    }
                }
                Item::Purge { offset, metas, .. } => {
                    for (k, _) in metas {
                        meta_at.insert(*k, (seg.path().to_path_buf(), *offset));
                    }
                }
                Item::Meta { offset, key, .. } => {
                    meta_at.insert(*key, (seg.path().to_path_buf(), *offset));
                }
                _ => {}
            }
        }
    }
    let fallback = plan
        .segments
        .last()
        .map(|s| (s.path().to_path_buf(), SEGMENT_HEADER_SIZE as u64))
        .unwrap_or_default();
    let at = |k: u64| meta_at.get(&k).cloned().unwrap_or_else(|| fallback.clone());

    let raft = RaftMetas::from_metas(metas);
    let names = [
        (META_VOTE, "vote", raft_err(&raft.vote)),
        (
            META_COMMITTED,
            "committed log id",
            raft_err(&raft.committed),
        ),
        (META_PURGED, "purged log id", raft_err(&raft.purged)),
        (META_USER_DATA, "user data", raft_err(&raft.user_data)),
        (META_SNAPSHOT, "snapshot meta", raft_err(&raft.snapshot)),
    ];
    for (k, name, err) in names {
        if let Some(e) = err {
            let (p, o) = at(k);
            rep.add(
                Severity::Problem,
                &p,
                o,
                format!("{name} does not decode: {e}"),
            );
        }
    }

    // Every live entry: its log id decodes, names its index, and log ids increase.
    let mut prev: Option<LogId> = None;
    for run in &plan.runs {
        let Some(seg) = plan.segments.get(run.segment) else {
            continue;
        };
        let bytes = seg_bytes(seg);
        for (i, &off) in run.offsets.iter().enumerate() {
            let index = run.first + i as u64;
            let body = bytes
                .get(off as usize..)
                .and_then(trusted_body)
                .unwrap_or(&[]);
            rep.raft_entries_checked += 1;
            match decode_log_id(index, body) {
                MetaValue::Value(id) => {
                    if let Some(p) = prev {
                        if id <= p {
                            rep.add(
                                Severity::Problem,
                                seg.path(),
                                off as u64,
                                format!("log id {id} of entry {index} is not greater than the previous one {p}"),
                            );
                        }
                    }
                    prev = Some(id);
                }
                MetaValue::Raw { error, .. } => {
                    rep.add(
                        Severity::Problem,
                        seg.path(),
                        off as u64,
                        format!("entry {index}: log id does not decode: {error}"),
                    );
                }
                MetaValue::Absent => {}
            }
        }
    }
    let last = prev.or_else(|| raft.purged.value().copied());
    if let Some(p) = raft.purged.value() {
        if p.index + 1 != plan.state.first {
            let (path, o) = at(META_PURGED);
            rep.add(
                Severity::Problem,
                &path,
                o,
                format!(
                    "purged log id {p} does not match the first index {}",
                    plan.state.first
                ),
            );
        }
    }
    if let Some(c) = raft.committed.value() {
        if last.is_none_or(|l| *c > l) {
            let (path, o) = at(META_COMMITTED);
            let l = last.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
            rep.add(
                Severity::Problem,
                &path,
                o,
                format!("committed log id {c} is beyond the last log id {l}"),
            );
        }
    }
    if let (Some((s, _)), Some(p)) = (raft.snapshot.value(), raft.purged.value()) {
        if s > p {
            let (path, o) = at(META_SNAPSHOT);
            rep.add(
                Severity::Problem,
                &path,
                o,
                format!("snapshot last log id {s} is beyond the purged log id {p}"),
            );
        }
    }
}

fn raft_err<V>(v: &MetaValue<V>) -> Option<String> {
    match v {
        MetaValue::Raw { len, error } => Some(format!("{error} ({len} bytes)")),
        _ => None,
    }
}

/// One record, as [`dump`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct DumpRecord<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Byte offset of the record header.
    pub offset: u64,
    /// Kind.
    pub kind: RecordKind,
    /// Kind-specific argument (entry index, truncate `from`, purge `first`, meta key).
    pub arg: u64,
    /// Body length.
    pub len: u32,
    /// Stored CRC (valid: the record decoded).
    pub crc: u32,
    /// The body.
    pub body: &'a [u8],
}

impl DumpRecord<'_> {
    /// The entry's log id, if this is an entry whose body starts with one naming its index.
    pub fn log_id(&self) -> Option<LogId> {
        match self.kind {
            RecordKind::Entry => decode_log_id(self.arg, self.body).value().copied(),
            _ => None,
        }
    }

    /// For a checkpoint: `(first, next, meta count)`.
    pub fn checkpoint(&self) -> Option<(u64, u64, u32)> {
        if self.kind != RecordKind::Checkpoint {
            return None;
        }
        let (h, _) = CheckpointHead::read_from_prefix(self.body).ok()?;
        Some((h.first.get(), h.next.get(), h.meta_count.get()))
    }
}

/// Where a segment's records stop, as [`dump`] reports it.
#[derive(Debug, Clone)]
pub struct DumpEnd<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Offset just past the last valid record.
    pub offset: u64,
    /// `None`: clean end (zeros). Otherwise why the bytes there are not a record.
    pub invalid: Option<String>,
    /// Whether the segment carries the sealed mark.
    pub sealed: bool,
}

/// Which records [`dump`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpFilter {
    /// Only entries with index `>= from`.
    pub from: Option<u64>,
    /// Only entries with index `<= to`.
    pub to: Option<u64>,
}

impl DumpFilter {
    fn is_set(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    fn keeps(&self, rec: &DumpRecord<'_>) -> bool {
        if !self.is_set() {
            return true;
        }
        rec.kind == RecordKind::Entry
            && self.from.is_none_or(|f| rec.arg >= f)
            && self.to.is_none_or(|t| rec.arg <= t)
    }
}

/// Walks every segment file in order and reports each valid record (`on_record`) and where
/// each segment's records stop (`on_end`), without interpreting truncates or purges: a dump
/// shows what is on disk. With an index range set, only entry records in it are reported.
/// A segment whose header is bad is reported through `on_end` with offset 0. Writes nothing.
///
/// The callbacks may fail (a closed pipe): the error is returned as is.
pub fn dump<E: From<Error>>(
    dir: &Path,
    filter: DumpFilter,
    mut on_record: impl FnMut(&DumpRecord<'_>) -> std::result::Result<(), E>,
    mut on_end: impl FnMut(&DumpEnd<'_>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let _lock = ReadLock::acquire(dir)?;
    let (listed, _) = recovery::list_dir(dir)?;
    for (seq, path) in &listed {
        let seg = match Segment::open(path, *seq, false, &FileOptions::read_only(), true) {
            Ok(s) => s,
            Err(e @ Error::Corrupt { .. }) => {
                on_end(&DumpEnd {
                    path,
                    offset: 0,
                    invalid: Some(e.to_string()),
                    sealed: false,
                })?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = seg_bytes(&seg);
        let mut pos = SEGMENT_HEADER_SIZE;
        let invalid = loop {
            let rest = bytes.get(pos..).unwrap_or(&[]);
            match decode(seg.salt(), rest) {
                Decoded::Record(r) => {
                    let crc = RecordHeader::ref_from_prefix(rest)
                        .map(|(h, _)| h.crc.get())
                        .unwrap_or(0);
                    let rec = DumpRecord {
                        path,
                        offset: pos as u64,
                        kind: r.kind,
                        arg: r.arg,
                        len: r.body.len() as u32,
                        crc,
                        body: r.body,
                    };
                    if filter.keeps(&rec) {
                        on_record(&rec)?;
                    }
                    pos += r.size;
                }
                Decoded::End => {
                    let nonzero = rest.iter().any(|&b| b != 0);
                    break nonzero.then(|| "non-zero bytes after the last record".to_string());
                }
                Decoded::Invalid(why) => break Some(why.to_string()),
            }
        };
        on_end(&DumpEnd {
            path,
            offset: pos as u64,
            invalid,
            sealed: seg.sealed_end().is_some(),
        })?;
    }
    Ok(())
}

/// Segment files of `dir` with their sizes, oldest first (for progress bars).
pub fn segment_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let (listed, _) = recovery::list_dir(dir)?;
    Ok(listed
        .into_iter()
        .map(|(_, p)| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect())
}
