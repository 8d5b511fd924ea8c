//! `--decode`: entry bodies and meta values shown as the openraft or the raft-rs adapter of
//! the library stored them (`raft_mmap_log::openraft::inspect`,
//! `raft_mmap_log::raft_rs::inspect`).
//!
//! `auto` never guesses: it first reads the entries to be shown and picks, for each group, the
//! adapter that decodes some of them when the other adapter decodes none of those. A group
//! where both adapters recognise entries, or neither, is shown raw. Under a chosen adapter an
//! entry that does not decode is shown raw with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use clap::ValueEnum;
use raft_mmap_log::format::RecordKind;
use raft_mmap_log::inspect::{self, DumpFilter, DumpRecord, Stat};
use raft_mmap_log::{openraft, raft_rs};

use crate::Failure;

/// Application bytes shown per decoded value, unless the output shows whole bodies.
pub const MAX_DATA: usize = 64;

/// How entry bodies and meta values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecodeMode {
    /// The adapter whose encoding the log's entries have (per group); raw when unsure.
    Auto,
    /// As the openraft adapter (`raft_mmap_log::openraft`) stores them.
    Openraft,
    /// As the raft-rs adapter (`raft_mmap_log::raft_rs`) stores them.
    RaftRs,
    /// Not decoded: bytes only.
    Raw,
}

/// One of the library's Raft adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// `raft_mmap_log::openraft`.
    Openraft,
    /// `raft_mmap_log::raft_rs`.
    RaftRs,
}

impl Adapter {
    /// As `--decode` names it.
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Openraft => "openraft",
            Adapter::RaftRs => "raft-rs",
        }
    }

    fn entry(self, index: u64, body: &[u8], max: usize) -> Result<String, String> {
        let r = match self {
            Adapter::Openraft => openraft::inspect::describe_entry(index, body, max),
            Adapter::RaftRs => raft_rs::inspect::describe_entry(index, body, max),
        };
        r.map_err(|e| e.to_string())
    }

    /// `None`: the adapter does not write this key.
    pub fn meta(self, key: u64, value: &[u8]) -> Option<Result<String, String>> {
        let r = match self {
            Adapter::Openraft => openraft::inspect::describe_meta(key, value),
            Adapter::RaftRs => raft_rs::inspect::describe_meta(key, value),
        };
        r.map(|r| r.map_err(|e| e.to_string()))
    }
}

/// What `auto` found for one group.
#[derive(Debug, Default)]
struct Evidence {
    /// Entries only openraft decodes, only raft-rs decodes.
    openraft: u64,
    raft_rs: u64,
}

impl Evidence {
    fn verdict(&self) -> Result<Adapter, String> {
        match (self.openraft, self.raft_rs) {
            (0, 0) => Err("no entries decode as openraft's or raft-rs's".into()),
            (_, 0) => Ok(Adapter::Openraft),
            (0, _) => Ok(Adapter::RaftRs),
            (o, r) => Err(format!(
                "{o} entries decode only as openraft's and {r} only as raft-rs's \
                 (choose with --decode)"
            )),
        }
    }
}

/// A decoded record: the adapter and the text, or why it is shown raw.
pub type Decoded = Result<(Adapter, String), String>;

/// Decides, for each record, how it is shown.
pub struct Decoder {
    mode: DecodeMode,
    /// `auto`: each group's adapter, or why there is none.
    groups: BTreeMap<u64, Result<Adapter, String>>,
    max: usize,
}

impl Decoder {
    /// For `auto`, reads the entries `evidence` selects once to find each group's adapter.
    /// `full`: application bytes are shown whole.
    pub fn new(
        mode: DecodeMode,
        dir: &Path,
        evidence: DumpFilter,
        full: bool,
    ) -> Result<Self, Failure> {
        let mut groups = BTreeMap::new();
        if mode == DecodeMode::Auto {
            let mut seen: BTreeMap<u64, Evidence> = BTreeMap::new();
            inspect::dump::<Failure>(
                dir,
                evidence,
                |rec| {
                    if rec.kind == RecordKind::Entry {
                        let ev = seen.entry(rec.group).or_default();
                        let o = Adapter::Openraft.entry(rec.arg, rec.body, 0).is_ok();
                        let r = Adapter::RaftRs.entry(rec.arg, rec.body, 0).is_ok();
                        match (o, r) {
                            (true, false) => ev.openraft = ev.openraft.saturating_add(1),
                            (false, true) => ev.raft_rs = ev.raft_rs.saturating_add(1),
                            _ => {}
                        }
                    }
                    Ok(())
                },
                |_| Ok(()),
            )?;
            groups = seen.into_iter().map(|(g, ev)| (g, ev.verdict())).collect();
        }
        Ok(Decoder {
            mode,
            groups,
            max: if full { usize::MAX } else { MAX_DATA },
        })
    }

    /// For `dump`: `auto` judges each group by all its entries, whatever `--from` and
    /// `--to` show.
    pub fn for_dump(
        mode: DecodeMode,
        dir: &Path,
        filter: DumpFilter,
        full: bool,
    ) -> Result<Self, Failure> {
        let evidence = DumpFilter {
            group: filter.group,
            ..DumpFilter::default()
        };
        Self::new(mode, dir, evidence, full)
    }

    /// The adapter for a group's records, or why there is none (`None`: raw mode).
    pub fn adapter(&self, group: u64) -> Option<Result<Adapter, String>> {
        match self.mode {
            DecodeMode::Raw => None,
            DecodeMode::Openraft => Some(Ok(Adapter::Openraft)),
            DecodeMode::RaftRs => Some(Ok(Adapter::RaftRs)),
            DecodeMode::Auto => Some(
                self.groups
                    .get(&group)
                    .cloned()
                    .unwrap_or_else(|| Err("no entries to recognise the adapter by".into())),
            ),
        }
    }

    /// `auto`: the groups shown raw, and why.
    pub fn undecided(&self) -> impl Iterator<Item = (u64, &str)> {
        self.groups
            .iter()
            .filter_map(|(g, a)| a.as_ref().err().map(|why| (*g, why.as_str())))
    }

    /// How `rec` is shown: `None` when nothing is decoded for it (raw mode, a group `auto`
    /// found no adapter for, records other than entries and meta values, meta keys the
    /// adapter does not write).
    pub fn record(&self, rec: &DumpRecord<'_>) -> Option<Decoded> {
        let a = self.adapter(rec.group)?.ok()?;
        let why = |e: String| format!("not {}: {e}", a.name());
        match rec.kind {
            RecordKind::Entry => Some(
                a.entry(rec.arg, rec.body, self.max)
                    .map(|t| (a, t))
                    .map_err(why),
            ),
            RecordKind::Meta => Some(a.meta(rec.arg, rec.body)?.map(|t| (a, t)).map_err(why)),
            _ => None,
        }
    }
}

/// The log's own (group 0) meta values as the adapter whose encoding the last entry has
/// shows them (or the one chosen), in key order; `None` when none applies.
pub type DecodedMetas = Option<(crate::decode::Adapter, Vec<(u64, Result<String, String>)>)>;

pub fn decoded_metas(dir: &Path, st: &Stat, mode: DecodeMode) -> Result<DecodedMetas, Failure> {
    let (Some(rec), Some(last)) = (&st.verdict.recovered, st.last_index()) else {
        return Ok(None);
    };
    let last_entry = DumpFilter {
        from: Some(last),
        to: Some(last),
        group: Some(0),
    };
    let Some(Ok(a)) = Decoder::new(mode, dir, last_entry, false)?.adapter(0) else {
        return Ok(None);
    };
    let metas = rec
        .metas
        .iter()
        .filter_map(|(k, v)| Some((*k, a.meta(*k, v)?)))
        .collect();
    Ok(Some((a, metas)))
}
