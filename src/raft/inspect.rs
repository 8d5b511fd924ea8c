//! The Raft view of a log directory: the engine's [`inspect`](crate::inspect) verdict, with
//! the meta values decoded as Raft state ([`RaftMetas`]) and every live entry's log id
//! checked ([`verify`]). The engine's inspector knows no Raft; this module renders its
//! verdict with [`RaftTypes`].

use std::collections::BTreeMap;
use std::path::Path;

use super::state::split_entry;
use super::{
    Codec, LogId, RaftTypes, Vote, META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA,
    META_VOTE,
};
use crate::error::Result;
use crate::format::{RecordKind, SEGMENT_HEADER_SIZE};
use crate::inspect::stat::stat_of;
use crate::inspect::verify::verify_of;
use crate::inspect::{DumpRecord, Inspection, Severity, Stat, VerifyReport};

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

/// The Raft state as stored in the meta values, decoded with [`RaftTypes`].
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
    /// Decodes the meta values of a verdict's recovered state.
    pub fn from_metas(metas: &BTreeMap<u64, Vec<u8>>) -> Self {
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

    fn any_raft_key(metas: &BTreeMap<u64, Vec<u8>>) -> bool {
        metas
            .keys()
            .any(|k| (META_VOTE..=META_SNAPSHOT).contains(k))
    }
}

/// The log id at the front of entry `index`'s body, checked as the Raft layer checks it.
pub fn decode_log_id(index: u64, body: &[u8]) -> MetaValue<LogId> {
    match split_entry::<RaftTypes>(index, body) {
        Ok((id, _)) => MetaValue::Value(id),
        Err(e) => MetaValue::Raw {
            len: body.len(),
            error: e.to_string(),
        },
    }
}

/// A dumped record's log id, if it is an entry whose body starts with one naming its index.
pub fn entry_log_id(rec: &DumpRecord<'_>) -> Option<LogId> {
    match rec.kind {
        RecordKind::Entry => decode_log_id(rec.arg, rec.body).value().copied(),
        _ => None,
    }
}

/// What [`stat`] found: the engine's [`Stat`] and the Raft state.
#[derive(Debug, Clone)]
pub struct RaftStat {
    /// The engine's view.
    pub stat: Stat,
    /// Log id of the last entry (decoded from its body).
    pub last_log_id: MetaValue<LogId>,
    /// Raft meta values.
    pub raft: RaftMetas,
}

/// [`inspect::stat`](crate::inspect::stat) with the Raft state decoded. Writes nothing.
pub fn stat(dir: &Path) -> Result<RaftStat> {
    let insp = Inspection::open(dir, &|_| {}, true)?;
    let stat = stat_of(dir, &insp)?;
    let last_log_id = match insp.shown().plan.as_ref().ok().and_then(|p| {
        Inspection::live_entries(p)
            .last()
            .map(|e| decode_log_id(e.index, e.body))
    }) {
        Some(id) => id,
        None => MetaValue::Absent,
    };
    let empty = BTreeMap::new();
    let metas = stat.verdict.recovered.as_ref().map_or(&empty, |r| &r.metas);
    Ok(RaftStat {
        raft: RaftMetas::from_metas(metas),
        last_log_id,
        stat,
    })
}

/// What [`verify`] found: the engine's report (Raft problems added to its findings) and
/// what the Raft checks covered.
#[derive(Debug, Clone)]
pub struct RaftVerifyReport {
    /// The engine's report, with the Raft problems among its findings.
    pub report: VerifyReport,
    /// Whether the log looked like a Raft log (Raft checks ran).
    pub raft_checked: bool,
    /// Live entries whose Raft log id was checked.
    pub raft_entries_checked: u64,
}

impl std::ops::Deref for RaftVerifyReport {
    type Target = VerifyReport;
    fn deref(&self) -> &VerifyReport {
        &self.report
    }
}

/// [`inspect::verify`](crate::inspect::verify), then the Raft invariants on the state the log
/// opens with (when it opens): meta values decode, every live entry's log id decodes and
/// names its index, log ids increase, purged/committed/snapshot agree with the entries.
pub fn verify(dir: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<RaftVerifyReport> {
    let insp = Inspection::open(dir, progress, false)?;
    let mut out = RaftVerifyReport {
        report: verify_of(&insp),
        raft_checked: false,
        raft_entries_checked: 0,
    };
    check_raft(&insp, &mut out);
    out.report.sort();
    Ok(out)
}

/// Raft-level invariants, checked on the state recovery would open: the main log's, then each
/// group's of a shared log.
fn check_raft(insp: &Inspection, out: &mut RaftVerifyReport) {
    let (Ok(plan), Some(rec)) = (&insp.strict.plan, &insp.strict.verdict.recovered) else {
        return;
    };
    let main = Subject {
        group: None,
        metas: rec.metas.clone(),
        sources: &rec.meta_sources,
        first: rec.first,
        runs: &plan.runs,
    };
    check_subject(plan, &main, out);
    for (&id, g) in &plan.groups {
        let group = Subject {
            group: Some(id),
            metas: (g.state.metas.iter())
                .map(|(&k, v)| (k, v.to_vec()))
                .collect(),
            sources: &BTreeMap::new(),
            first: g.state.first,
            runs: &g.runs,
        };
        check_subject(plan, &group, out);
    }
}

/// One log to check: the main log (group 0) or a group of a shared log.
struct Subject<'a> {
    /// `None` for the main log.
    group: Option<u64>,
    metas: BTreeMap<u64, Vec<u8>>,
    /// Where each meta key was last set (known for the main log only).
    sources: &'a BTreeMap<u64, (std::path::PathBuf, u64)>,
    first: u64,
    runs: &'a [crate::recovery::RunPlan],
}

fn check_subject(plan: &crate::recovery::Plan, sub: &Subject<'_>, out: &mut RaftVerifyReport) {
    let metas = &sub.metas;
    let entries_are_ids = Inspection::live_entries_of(plan, sub.runs)
        .next()
        .is_some_and(|e| matches!(decode_log_id(e.index, e.body), MetaValue::Value(_)));
    if !RaftMetas::any_raft_key(metas) && !entries_are_ids {
        return;
    }
    out.raft_checked = true;
    let rep = &mut out.report;
    let who = match sub.group {
        Some(g) => format!("group {g}: "),
        None => String::new(),
    };

    // Where each meta key was last set, to point problems at a record.
    let fallback = plan
        .segments
        .last()
        .map(|s| (s.path().to_path_buf(), SEGMENT_HEADER_SIZE as u64))
        .unwrap_or_default();
    let at = |k: u64| {
        sub.sources
            .get(&k)
            .cloned()
            .unwrap_or_else(|| fallback.clone())
    };

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
                format!("{who}{name} does not decode: {e}"),
            );
        }
    }

    // Every live entry: its log id decodes, names its index, and log ids increase.
    let mut prev: Option<LogId> = None;
    for e in Inspection::live_entries_of(plan, sub.runs) {
        out.raft_entries_checked += 1;
        let index = e.index;
        match decode_log_id(index, e.body) {
            MetaValue::Value(id) => {
                if let Some(p) = prev {
                    if id <= p {
                        rep.add(
                            Severity::Problem,
                            e.path,
                            e.offset,
                            format!("{who}log id {id} of entry {index} is not greater than the previous one {p}"),
                        );
                    }
                }
                prev = Some(id);
            }
            MetaValue::Raw { error, .. } => {
                rep.add(
                    Severity::Problem,
                    e.path,
                    e.offset,
                    format!("{who}entry {index}: log id does not decode: {error}"),
                );
            }
            MetaValue::Absent => {}
        }
    }
    let last = prev.or_else(|| raft.purged.value().copied());
    if let Some(p) = raft.purged.value() {
        if p.index.checked_add(1) != Some(sub.first) {
            let (path, o) = at(META_PURGED);
            rep.add(
                Severity::Problem,
                &path,
                o,
                format!(
                    "{who}purged log id {p} does not match the first index {}",
                    sub.first
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
                format!("{who}committed log id {c} is beyond the last log id {l}"),
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
                format!("{who}snapshot last log id {s} is beyond the purged log id {p}"),
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

/// Application bytes as text for the adapters' entry descriptions: a quoted, escaped string
/// when they are UTF-8, else `0x` and hex; at most `max` bytes shown, then `...` and the
/// length.
#[cfg(any(feature = "openraft", feature = "raft-rs"))]
pub(crate) fn render_bytes(b: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let shown = &b[..b.len().min(max)];
    let text = match std::str::from_utf8(shown) {
        Ok(s) => Some(s),
        // The cut may split a character: show the text before it.
        Err(e) if e.error_len().is_none() && shown.len() < b.len() => {
            std::str::from_utf8(&shown[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let mut s = match text {
        Some(t) => format!("{t:?}"),
        None => {
            let mut h = String::with_capacity(2 + shown.len() * 2);
            h.push_str("0x");
            for c in shown {
                let _ = write!(h, "{c:02x}");
            }
            h
        }
    };
    if shown.len() < b.len() {
        let _ = write!(s, "... ({} bytes)", b.len());
    }
    s
}
