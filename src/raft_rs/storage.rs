//! [`MmapRaftStorage`]: the struct, opening, and the read side (raft-rs's `Storage`).

use std::fmt;
use std::path::Path;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError, NO_LIMIT};

use super::error::{engine_err, RaftRsResult};
use super::types::{EntryId, RaftRsTypes};
use super::{codec, shared};
use crate::groups::Group;
use crate::raft::{LogEngine, RaftLog, RaftReader, RaftView};
use crate::{Config, Error, Store};

/// Builds the data of a snapshot whose meta the storage chose (the committed index, its term
/// and the current `ConfState`) for the peer `to`; see [`MmapRaftStorage::set_snapshot_data`].
pub type SnapshotData = Box<dyn Fn(&SnapshotMetadata, u64) -> raft::Result<Vec<u8>> + Send + Sync>;

/// Entry data of at least this many bytes is, by default, handed to raft-rs as `Bytes` that
/// share the mapped segment instead of a copy (see [`MmapRaftStorage::share_data_from`]).
pub const DEFAULT_SHARE_MIN: usize = 1024;

/// raft-rs's `Storage` on a [`RaftLog`]: entries in memory-mapped segment files, the hard
/// state and configuration in the log's meta values.
///
/// Give it to `RawNode::new`; in the Ready loop write through `raw_node.mut_store()` (the
/// writer calls: [`append`](Self::append), [`set_hard_state`](Self::set_hard_state),
/// [`apply_snapshot`](Self::apply_snapshot), [`compact`](Self::compact),
/// [`set_conf_state`](Self::set_conf_state), [`persist_ready`](Self::persist_ready), then
/// [`sync`](Self::sync)). It behaves like raft-rs's `MemStorage`, except:
///
/// * Writes are checked before anything is written: where `MemStorage` panics (an append
///   below the first index or after a gap, a compaction past the last index) this returns
///   an error; the Raft layer's rules (vote, commit, truncate, purge) apply too.
/// * Entries are durable once [`sync`](Self::sync) (or a [`flush`](Self::flush) callback)
///   says so, and a reopen of the directory gives back the same state.
/// * [`snapshot`](Storage::snapshot) describes the state at the committed index, as
///   `MemStorage` does, with data from [`set_snapshot_data`](Self::set_snapshot_data)
///   (empty by default); a `request_index` past the committed index is
///   `SnapshotTemporarilyUnavailable` rather than a snapshot that claims an index it does not
///   cover.
/// * An index past the last one is `StorageError::Unavailable`, never a panic.
/// * Entry data of [`DEFAULT_SHARE_MIN`] bytes or more is handed out sharing the mapped
///   segment, not copied ([`share_data_from`](Self::share_data_from)).
///
/// The log's dummy entry (raft-rs's entry at the snapshot index, whose term `term` must
/// answer) is not stored: its term is the purged log id's, or 0 for a log that never purged.
///
/// `S` is the engine: [`Store`] (the default, a directory per Raft group) or [`Group`], one
/// region of a shared log with many ([`MmapRaftStorage::for_group`]). A Ready loop over many
/// regions writes each one's Ready with [`write_ready`](Self::write_ready), makes them all
/// durable with one [`Groups::sync`](crate::groups::Groups::sync), then advances each.
pub struct MmapRaftStorage<S: LogEngine = Store> {
    pub(super) log: RaftLog<RaftRsTypes, S>,
    pub(super) reader: RaftReader<RaftRsTypes>,
    /// The effective configuration (see [`MmapRaftStorage::conf_state`]).
    pub(super) conf: ConfState,
    pub(super) snapshot_data: Option<SnapshotData>,
    /// Entry data at least this long is shared with the map, not copied (`None`: never).
    pub(super) share_min: Option<usize>,
    /// Scratch for encoding entry bodies on append.
    pub(super) buf: Vec<u8>,
}

impl<S: LogEngine> fmt::Debug for MmapRaftStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmapRaftStorage")
            .field("state", self.log.state())
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

impl MmapRaftStorage {
    /// Opens (or creates) the log in `dir`, with the Raft layer's default rules (no purge of
    /// uncommitted entries, no truncation of committed ones).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> RaftRsResult<Self> {
        Self::from_log(RaftLog::open(dir, config)?)
    }
}

impl MmapRaftStorage<Group> {
    /// The storage of one region (Raft group) of a shared log, with the Raft layer's default
    /// rules: a new group's log is empty (created on its first write), an existing one comes
    /// back as it was left. One storage per group at a time: a second one is refused with
    /// [`Error::GroupInUse`] (see [`RaftLog::for_group`]).
    pub fn for_group(group: Group) -> RaftRsResult<Self> {
        Self::from_log(RaftLog::for_group(group)?)
    }

    /// The group underneath.
    pub fn group(&self) -> &Group {
        self.log.group()
    }
}

impl<S: LogEngine> MmapRaftStorage<S> {
    /// Wraps a log opened by the caller.
    pub fn from_log(log: RaftLog<RaftRsTypes, S>) -> RaftRsResult<Self> {
        let conf = effective_conf(&log)?;
        Ok(MmapRaftStorage {
            reader: log.reader(),
            log,
            conf,
            snapshot_data: None,
            share_min: Some(DEFAULT_SHARE_MIN),
            buf: Vec::new(),
        })
    }

    /// Makes [`snapshot`](Storage::snapshot) fill the snapshot's data with `f(meta, to)`:
    /// `meta` is the snapshot's meta (the committed index and term, the current `ConfState`)
    /// and `to` the peer it is for. `f` may answer
    /// `raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)` if the application
    /// has not applied that far yet; raft-rs asks again later.
    pub fn set_snapshot_data(&mut self, f: SnapshotData) {
        self.snapshot_data = Some(f);
    }

    /// Entry data of at least `min` bytes is handed to raft-rs as `Bytes` that share the
    /// mapped segment (no copy; one small allocation for the owner), shorter data is copied;
    /// `None` copies all. Default [`DEFAULT_SHARE_MIN`].
    ///
    /// A shared `Bytes` keeps the log's view, and so its segment files, mapped until its last
    /// clone is dropped: a segment purged meanwhile is deleted from the directory but its
    /// disk space is freed only then. raft-rs drops entries once sent, persisted or applied;
    /// an application that keeps them long should copy them (or pass `None`).
    pub fn share_data_from(&mut self, min: Option<usize>) {
        self.share_min = min;
    }

    /// The log underneath (state, statistics, readers).
    pub fn log(&self) -> &RaftLog<RaftRsTypes, S> {
        &self.log
    }

    /// A lock-free reader of the log for other threads (raw entry bodies, see
    /// `docs/raft-rs.md`).
    pub fn reader(&self) -> RaftReader<RaftRsTypes> {
        self.reader.clone()
    }

    /// The hard state: term and vote from the saved vote, commit from the committed log id.
    pub fn hard_state(&self) -> HardState {
        let st = self.log.state();
        let mut hs = HardState::default();
        if let Some(v) = &st.vote {
            hs.term = v.term;
            hs.vote = v.vote;
        }
        if let Some(c) = &st.committed {
            hs.commit = c.index;
        }
        hs
    }

    /// The configuration: the one last set with [`set_conf_state`](Self::set_conf_state),
    /// unless a snapshot installed since brought another; the default (empty) if neither.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// The log id before the first entry: the snapshot's (purged) log id, `0/0` if none.
    pub(super) fn dummy(&self) -> EntryId {
        self.log.state().purged.unwrap_or_default()
    }

    /// raft-rs's first index: after the purged index; the first entry's index if nothing was
    /// purged; 1 for a new log.
    pub(super) fn first(&self) -> u64 {
        let st = self.log.state();
        match (&st.purged, &st.last) {
            (Some(p), _) => p.index.saturating_add(1),
            (None, Some(_)) => self.log.engine().first_index(),
            (None, None) => 1,
        }
    }

    /// raft-rs's last index: the last entry's, the purged index if no entry is left, else 0.
    pub(super) fn last(&self) -> u64 {
        self.log.state().last.map_or(0, |l| l.index)
    }

    /// The log id at `index`: the dummy's at the snapshot index, else the stored entry's.
    pub(super) fn id_at(
        &self,
        view: &RaftView<RaftRsTypes>,
        index: u64,
    ) -> crate::Result<Option<EntryId>> {
        let dummy = self.dummy();
        if index == dummy.index {
            return Ok(Some(dummy));
        }
        view.log_id(index)
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        let view = self.reader.view();
        let limit = match max_size {
            None | Some(NO_LIMIT) => None,
            Some(m) => Some(m),
        };
        let count = usize::try_from(high - low).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(count.min(1024));
        let mut size = 0u64;
        let raw = view.raw();
        let share_min = self.share_min;
        for item in view.read(low..high) {
            let (id, body) = item.map_err(engine_err)?;
            let e = codec::to_entry_with(id, body, |data| match share_min {
                Some(min) if data.len() >= min => shared::share(raw, id.index, data),
                _ => Bytes::copy_from_slice(data),
            })
            .map_err(engine_err)?;
            if let Some(limit) = limit {
                // As raft-rs's `limit_size`: the first entry always, then while the total
                // protobuf size stays within the limit.
                size = size.saturating_add(u64::from(e.compute_size()));
                if !out.is_empty() && size > limit {
                    return Ok(out);
                }
            }
            out.push(e);
        }
        if out.len() != count {
            // The log is ours alone and [low, high) was checked against it: a hole is a bug.
            return Err(engine_err(Error::Decode {
                what: format!("entries {low}..{high}"),
                reason: format!("only {} found", out.len()),
            }));
        }
        Ok(out)
    }
}

/// The configuration a reopened log starts with (see [`MmapRaftStorage::conf_state`]).
fn effective_conf<S: LogEngine>(log: &RaftLog<RaftRsTypes, S>) -> crate::Result<ConfState> {
    let st = log.state();
    let stored = match &st.user_data {
        Some(c) => Some((
            c.snapshot_index,
            codec::decode_pb::<ConfState>("raft-rs conf state", &c.conf_state)?,
        )),
        None => None,
    };
    Ok(match (&st.snapshot, stored) {
        (Some(s), Some((at, cs))) if at >= s.last_log_id.index => cs,
        (Some(s), _) => codec::decode_pb::<SnapshotMetadata>("raft-rs snapshot meta", &s.data)?
            .take_conf_state(),
        (None, Some((_, cs))) => cs,
        (None, None) => ConfState::default(),
    })
}

impl<S: LogEngine> Storage for MmapRaftStorage<S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last().saturating_add(1) || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.read_entries(low, high, max_size.into())
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let dummy = self.dummy();
        if idx == dummy.index {
            return Ok(dummy.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        match self.reader.view().log_id(idx).map_err(engine_err)? {
            Some(id) => Ok(id.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let commit = self.log.state().committed.unwrap_or_default();
        if request_index > commit.index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut meta = SnapshotMetadata {
            index: commit.index,
            term: commit.term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(self.conf.clone());
        let data = match &self.snapshot_data {
            Some(f) => f(&meta, to)?,
            None => Vec::new(),
        };
        let mut snap = Snapshot::default();
        snap.set_metadata(meta);
        snap.data = data.into();
        Ok(snap)
    }
}
