//! [`RaftLog`]: the writer API that Raft code calls.

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::path::Path;

use super::codec::Codec;
use super::engine::LogEngine;
use super::errors::{RaftError, RaftResult, StateError};
use super::reader::RaftReader;
use super::room;
use super::state::{
    decode_state, split_entry, RaftState, SnapshotMeta, META_COMMITTED, META_PURGED, META_SNAPSHOT,
    META_USER_DATA, META_VOTE,
};
use super::types::Types;
use crate::error::{Error, Result};
use crate::groups::{Group, RaftClaim};
use crate::store::{Config, Store};

mod combined;
mod frames;
mod usage;

pub(crate) use combined::Reset;

/// Which optional Raft rules a [`RaftLog`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Refuse to purge entries that are not committed (default true). Frameworks that do not
    /// save the committed log id (openraft's `save_committed` is optional) turn this off.
    pub purge_requires_commit: bool,
    /// Refuse to truncate committed entries (default true).
    pub truncate_keeps_committed: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            purge_requires_commit: true,
            truncate_keeps_committed: true,
        }
    }
}

/// The Raft log: vote, entries, commit, truncate, purge, snapshot meta and user data, on the
/// zero-copy segment store.
///
/// Every call checks Raft's state rules first; a call that breaks one returns
/// [`RaftError::State`] and writes nothing. A new log accepts its first entry at any index (raft-rs
/// logs start at 1); after that, indexes are consecutive, and after a purge or snapshot the
/// next entry follows the purged log id. Everything becomes durable with [`RaftLog::flush`] or
/// [`RaftLog::sync`]; [`RaftLog::state`] is always what a reopen would recover after that.
///
/// ```
/// use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};
/// use raft_mmap_log::Config;
///
/// let dir = tempfile::tempdir()?;
/// let mut log = RaftLog::<RaftTypes>::open(dir.path(), Config::default())?;
/// log.save_vote(Vote::new(1, 7, true))?;
/// log.append([(LogId::new(1, 7, 0), &b"first"[..]), (LogId::new(1, 7, 1), b"second")])?;
/// log.commit(LogId::new(1, 7, 1))?;
/// log.sync()?;
///
/// // Readers work from any thread and borrow payloads from the map.
/// let snap = log.reader().view();
/// let (id, payload) = snap.get(1)?.expect("entry 1");
/// assert_eq!((id, payload), (LogId::new(1, 7, 1), &b"second"[..]));
/// drop(snap);
///
/// // Reopen: the same state comes back.
/// let state = log.state().clone();
/// drop(log);
/// let log = RaftLog::<RaftTypes>::open(dir.path(), Config::default())?;
/// assert_eq!(log.state(), &state);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `S` is the engine underneath: [`Store`] (the default, a log with a directory of its own),
/// or [`Group`](crate::groups::Group) for one Raft group of a shared log
/// ([`RaftLog::for_group`]), with the same API and rules.
pub struct RaftLog<T: Types, S: LogEngine = Store> {
    store: S,
    /// The group held for this log alone (a group of a shared log), released on drop.
    _claim: Option<RaftClaim>,
    state: RaftState<T>,
    rules: Rules,
    buf: Vec<u8>,
    /// Scratch space of [`RaftLog::append`], empty between calls (see [`recycle`]).
    spans: Vec<Span<'static>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Types, S: LogEngine + std::fmt::Debug> std::fmt::Debug for RaftLog<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("store", &self.store)
            .field("state", &self.state)
            .finish()
    }
}

/// One entry of a batch being appended: its index, where its encoded log id is in the
/// batch's buffer, and its payload.
struct Span<'a> {
    index: u64,
    id: std::ops::Range<usize>,
    payload: &'a [u8],
}

/// Empties `spans` and returns its allocation for spans of another lifetime. The standard
/// library collects a `Vec`'s own iterator back in place when the item layout is the same, so
/// the capacity is kept and nothing is allocated.
// `filter_map` to `None` is the one way to change the item's lifetime without a value.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(mut spans: Vec<Span<'_>>) -> Vec<Span<'b>> {
    spans.clear();
    spans.into_iter().filter_map(|_| None).collect()
}

fn state_err<T: Types>(e: StateError<T>) -> RaftError<T> {
    RaftError::State(e)
}

impl<T: Types> RaftLog<T> {
    /// Opens (or creates) the log in `dir` with the default [`Rules`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> RaftResult<Self, T> {
        Self::open_with_rules(dir, config, Rules::default())
    }

    /// Opens (or creates) the log in `dir` with the given rules.
    pub fn open_with_rules(
        dir: impl AsRef<Path>,
        config: Config,
        rules: Rules,
    ) -> RaftResult<Self, T> {
        Self::from_store(Store::open(dir, config)?, rules)
    }

    /// Opens with every file-system effect going through `fs` (the simulated file system of
    /// the crash models).
    #[cfg(test)]
    pub(crate) fn open_with_fs(
        dir: impl AsRef<Path>,
        config: Config,
        fs: std::sync::Arc<dyn crate::io::Fs>,
    ) -> RaftResult<Self, T> {
        Self::from_store(Store::open_with_fs(dir, config, fs)?, Rules::default())
    }

    /// The engine underneath (for tools and statistics).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl<T: Types> RaftLog<T, Group> {
    /// The typed Raft log of one group of a shared log ([`crate::groups::Groups`]): the same
    /// API and rules as a log of its own, the group's state decoded from its meta values
    /// and last entry, with the default [`Rules`].
    ///
    /// One `RaftLog` per group at a time: it keeps the group's Raft state, so a second one
    /// (or [`Groups::remove_group`](crate::groups::Groups::remove_group)) is refused with
    /// [`Error::GroupInUse`] until this one is dropped. Writes through other [`Group`]
    /// handles of the group are not seen by it: leave the group to it.
    pub fn for_group(group: Group) -> RaftResult<Self, T> {
        Self::for_group_with_rules(group, Rules::default())
    }

    /// [`RaftLog::for_group`] with explicit [`Rules`].
    pub fn for_group_with_rules(group: Group, rules: Rules) -> RaftResult<Self, T> {
        Self::from_store(group, rules)
    }

    /// The group underneath.
    pub fn group(&self) -> &Group {
        &self.store
    }
}

impl<T: Types, S: LogEngine> RaftLog<T, S> {
    fn from_store(store: S, rules: Rules) -> RaftResult<Self, T> {
        let claim = store.claim_for_raft()?;
        let snap = store.reader().view();
        let last_entry = snap
            .last_index()
            .and_then(|i| snap.get(i).map(|body| (i, body)));
        let state = decode_state::<T>(|k| snap.meta(k), last_entry)?;
        if let Some(p) = &state.purged {
            if T::log_index(p).checked_add(1) != Some(snap.first_index()) {
                return Err(RaftError::Engine(Error::Decode {
                    what: "purged log id".into(),
                    reason: format!(
                        "purged log id {p} does not match the first index {}",
                        snap.first_index()
                    ),
                }));
            }
        }
        drop(snap);
        Ok(RaftLog {
            store,
            _claim: claim,
            state,
            rules,
            buf: Vec::new(),
            spans: Vec::new(),
            _t: PhantomData,
        })
    }

    /// The engine underneath, for the adapters.
    #[cfg_attr(not(feature = "raft-rs"), allow(dead_code))]
    pub(crate) fn engine(&self) -> &S {
        &self.store
    }

    /// The largest record an entry may take: its encoded log id and its payload together.
    pub fn max_payload(&self) -> usize {
        self.store.max_payload()
    }

    /// The current state (vote, last, committed, purged, user data, snapshot meta).
    pub fn state(&self) -> &RaftState<T> {
        &self.state
    }

    /// A typed reader handle for other threads.
    pub fn reader(&self) -> RaftReader<T> {
        RaftReader::new(self.store.reader())
    }

    /// Log id of the entry at `index`, if it is in the log.
    pub fn log_id(&self, index: u64) -> RaftResult<Option<T::LogId>, T> {
        let snap = self.store.reader().view();
        match snap.get(index) {
            Some(body) => Ok(Some(split_entry::<T>(index, body)?.0)),
            None => Ok(None),
        }
    }

    /// Saves the vote. Accepts only a vote greater than or equal to the saved one: refuses a
    /// lower vote ([`StateError::VoteReversal`]) and an incomparable one, such as a vote for
    /// another node in the same term ([`StateError::VoteConflict`]). Make it durable (`sync`
    /// or `flush`) before answering the vote request.
    pub fn save_vote(&mut self, vote: T::Vote) -> RaftResult<(), T> {
        self.check_vote(&vote)?;
        self.store.put_meta(META_VOTE, &vote.to_bytes())?;
        self.state.vote = Some(vote);
        Ok(())
    }

    /// The rule of [`RaftLog::save_vote`]: `vote` is at least the saved one.
    fn check_vote(&self, vote: &T::Vote) -> RaftResult<(), T> {
        if let Some(saved) = &self.state.vote {
            match vote.partial_cmp(saved) {
                Some(Ordering::Greater | Ordering::Equal) => {}
                Some(Ordering::Less) => {
                    return Err(state_err(StateError::VoteReversal {
                        saved: saved.clone(),
                        given: vote.clone(),
                    }))
                }
                None => {
                    return Err(state_err(StateError::VoteConflict {
                        saved: saved.clone(),
                        given: vote.clone(),
                    }))
                }
            }
        }
        Ok(())
    }

    /// Appends entries, in one batch. Each log id must be greater than the last and its index
    /// must be the next one; all are checked before anything is written. The first entry of a
    /// log with no entries and nothing purged may have any index (at or after the index where
    /// entries removed by `truncate_after(None)` began); after a purge or snapshot the next
    /// index is the purged index + 1.
    pub fn append<'a, I>(&mut self, entries: I) -> RaftResult<(), T>
    where
        I: IntoIterator<Item = (T::LogId, &'a [u8])>,
    {
        // The encoded log ids go to `buf`, one span per entry to `spans`: both keep their
        // capacity from call to call, so a batch allocates nothing here once they have grown.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut spans = recycle(std::mem::take(&mut self.spans));
        let result = self.append_spans(entries, &mut buf, &mut spans);
        self.buf = buf;
        self.spans = recycle(spans);
        result
    }

    /// [`RaftLog::append`] with its scratch space: checks every entry and encodes its log id
    /// (pass 1), then hands the batch to the engine as `log id ++ payload` bodies.
    fn append_spans<'a, I>(
        &mut self,
        entries: I,
        buf: &mut Vec<u8>,
        spans: &mut Vec<Span<'a>>,
    ) -> RaftResult<(), T>
    where
        I: IntoIterator<Item = (T::LogId, &'a [u8])>,
    {
        let entries = entries.into_iter();
        let hint = entries.size_hint().0;
        spans.reserve(hint);
        buf.reserve(hint.saturating_mul(T::MAX_LOG_ID_LEN.min(64)));
        let last = encode_spans::<T, _>(
            self.state.last.clone(),
            self.store.next_index(),
            entries,
            buf,
            spans,
        )?;
        if spans.is_empty() {
            return Ok(());
        }
        self.store.append_parts(parts(buf, spans))?;
        self.state.last = last;
        Ok(())
    }

    /// Records the committed log id. It must not pass the last log id nor go backwards, and it
    /// must be a log id the log holds (the entry at its index has it) or has purged (at or
    /// below the purged log id); otherwise [`StateError::LogIdMismatch`].
    pub fn commit(&mut self, log_id: T::LogId) -> RaftResult<(), T> {
        if !self.check_commit(&log_id)? {
            return Ok(());
        }
        self.store.put_meta(META_COMMITTED, &log_id.to_bytes())?;
        self.state.committed = Some(log_id);
        Ok(())
    }

    /// The rules of [`RaftLog::commit`], nothing written: `false` if `log_id` is already the
    /// committed log id (nothing to write).
    pub(crate) fn check_commit(&self, log_id: &T::LogId) -> RaftResult<bool, T> {
        if self.state.last.as_ref().is_none_or(|l| log_id > l) {
            return Err(state_err(StateError::CommitBeyondLast {
                last: self.state.last.clone(),
                given: log_id.clone(),
            }));
        }
        if let Some(c) = &self.state.committed {
            if log_id < c {
                return Err(state_err(StateError::CommitReversal {
                    committed: c.clone(),
                    given: log_id.clone(),
                }));
            }
            if log_id == c {
                return Ok(false);
            }
        }
        let purged_below = self
            .state
            .purged
            .as_ref()
            .is_some_and(|p| T::log_index(log_id) <= T::log_index(p) && log_id <= p);
        if !purged_below {
            self.check_stored(log_id)?;
        }
        Ok(true)
    }

    /// Removes every entry after `log_id` (Raft conflict resolution); `None` removes all
    /// entries. `log_id` must be in the log (its stored log id must match; past the last entry
    /// is a [`StateError::LogIdMismatch`] too), not below the purged log id, and (with the
    /// default rules) not below the committed one.
    pub fn truncate_after(&mut self, log_id: Option<T::LogId>) -> RaftResult<(), T> {
        let Some(from) = self.plan_truncate(&log_id)? else {
            return Ok(());
        };
        self.store.truncate_from(from)?;
        self.state.last = log_id.or_else(|| self.state.purged.clone());
        Ok(())
    }

    /// The checks of [`RaftLog::truncate_after`]: the first index it removes, or `None` if it
    /// removes nothing.
    fn plan_truncate(&self, log_id: &Option<T::LogId>) -> RaftResult<Option<u64>, T> {
        if *log_id < self.state.purged {
            return Err(state_err(StateError::TruncateBelowPurged {
                purged: self.state.purged.clone(),
                given: log_id.clone(),
            }));
        }
        let last_index = self.state.last.as_ref().map(|l| T::log_index(l));
        let index = log_id.as_ref().map(|l| T::log_index(l));
        if let Some(id) = log_id {
            if index >= last_index {
                // Nothing after it, but it must name an entry the log holds (or the purged id).
                self.check_stored(id)?;
                return Ok(None);
            }
        } else if self.state.last.is_none() || self.state.last == self.state.purged {
            return Ok(None);
        }
        if self.rules.truncate_keeps_committed && *log_id < self.state.committed {
            return Err(state_err(StateError::TruncateBelowCommitted {
                committed: self.state.committed.clone(),
                given: log_id.clone(),
            }));
        }
        let from = match log_id {
            Some(id) => {
                self.check_stored(id)?;
                successor::<T>(id)?
            }
            None => self.store.first_index(),
        };
        Ok(Some(from))
    }

    /// Removes entries up to and including `log_id` (compaction). Whole segments are deleted
    /// once the purge is durable. `log_id` must be in the log and (with the default rules)
    /// committed; purging at or below the purged log id does nothing.
    pub fn purge_upto(&mut self, log_id: T::LogId) -> RaftResult<(), T> {
        if Some(&log_id) <= self.state.purged.as_ref() {
            return Ok(());
        }
        if Some(&log_id) > self.state.last.as_ref() {
            return Err(state_err(StateError::PurgeBeyondLast {
                last: self.state.last.clone(),
                given: log_id.clone(),
            }));
        }
        if self.rules.purge_requires_commit && Some(&log_id) > self.state.committed.as_ref() {
            return Err(state_err(StateError::PurgeBeyondCommitted {
                committed: self.state.committed.clone(),
                given: log_id.clone(),
            }));
        }
        self.check_stored(&log_id)?;
        let first = successor::<T>(&log_id)?;
        let id_bytes = log_id.to_bytes();
        self.store
            .purge_to_with_meta(first, &[(META_PURGED, &id_bytes)])?;
        self.state.purged = Some(log_id);
        Ok(())
    }

    /// Records a snapshot that covers the log up to `last_log_id` (the application keeps the
    /// snapshot data itself; `data` is a small opaque meta blob kept with the log) and purges
    /// what it covers. If the log holds `last_log_id`, later entries stay; otherwise (the
    /// snapshot is ahead of the log, or conflicts with it) all entries are removed and the log
    /// continues after the snapshot. The committed log id moves up to the snapshot. The meta
    /// (log id and `data`) must fit in the meta room the user data leaves
    /// ([`StateError::MetaNoRoom`]).
    pub fn install_snapshot(&mut self, last_log_id: T::LogId, data: Vec<u8>) -> RaftResult<(), T> {
        let below_purged =
            self.state.purged.as_ref().is_some_and(|p| {
                last_log_id <= *p || T::log_index(&last_log_id) <= T::log_index(p)
            });
        if below_purged {
            return Err(state_err(StateError::SnapshotReversal {
                purged: self.state.purged.clone(),
                given: last_log_id.clone(),
            }));
        }
        let index = T::log_index(&last_log_id);
        let first = successor::<T>(&last_log_id)?;
        let snap_bytes = (last_log_id.clone(), data.clone()).to_bytes();
        room::check::<T>(&self.store, META_SNAPSHOT, snap_bytes.len(), &[])?;
        let keeps_suffix = self.log_id(index)?.as_ref() == Some(&last_log_id);
        let committed = match &self.state.committed {
            Some(c) if *c > last_log_id => c.clone(),
            _ => last_log_id.clone(),
        };
        let id_bytes = last_log_id.to_bytes();
        let committed_bytes = committed.to_bytes();
        let metas: [(u64, &[u8]); 3] = [
            (META_PURGED, &id_bytes),
            (META_SNAPSHOT, &snap_bytes),
            (META_COMMITTED, &committed_bytes),
        ];
        // One record either way, so no crash can separate the purge from its log id or leave
        // the log emptied without the snapshot that replaced it.
        if keeps_suffix {
            self.store.purge_to_with_meta(first, &metas)?;
        } else {
            self.store.reset_to_with_meta(first, &metas)?;
        }
        if !keeps_suffix {
            self.state.last = Some(last_log_id.clone());
        }
        self.state.purged = Some(last_log_id.clone());
        self.state.committed = Some(committed);
        self.state.snapshot = Some(SnapshotMeta { last_log_id, data });
        Ok(())
    }

    /// Saves application data with the log state (`None` clears it). It shares the engine's
    /// meta room (a quarter of a segment) with the vote, committed, purged and snapshot meta,
    /// whose largest sizes stay reserved (see [`Types::MAX_LOG_ID_LEN`]); data that would not
    /// leave that room is refused with [`StateError::MetaNoRoom`], which says how much there
    /// is. Shrinking the data is always allowed.
    ///
    /// `None` removes the saved data's meta value (no room used; see [`Store::remove_meta`]).
    pub fn save_user_data(&mut self, data: Option<T::UserData>) -> RaftResult<(), T> {
        if data.is_none() {
            self.store.remove_meta(META_USER_DATA)?;
        } else {
            let bytes = data.to_bytes();
            room::check::<T>(&self.store, META_USER_DATA, bytes.len(), &[])?;
            self.store.put_meta(META_USER_DATA, &bytes)?;
        }
        self.state.user_data = data;
        Ok(())
    }

    /// Calls `callback` on the flush thread once everything written before this call is
    /// durable (or with the error that prevented it). Returns at once. The callback is called
    /// exactly once, after those of earlier flushes, also when this returns an error (see
    /// [`Store::flush`]).
    pub fn flush(
        &mut self,
        callback: impl FnOnce(Result<()>) + Send + 'static,
    ) -> RaftResult<(), T> {
        Ok(self.store.flush(callback)?)
    }

    /// Makes everything written so far durable, blocking until it is.
    pub fn sync(&mut self) -> RaftResult<(), T> {
        Ok(self.store.sync()?)
    }

    /// Checks that the log holds `id`: the entry at its index has it, or it is the purged id.
    fn check_stored(&self, id: &T::LogId) -> RaftResult<(), T> {
        let index = T::log_index(id);
        let (stored, purged) = match self.log_id(index)? {
            Some(stored) if stored == *id => return Ok(()),
            Some(stored) => (Some(stored), None),
            None => match &self.state.purged {
                Some(p) if p == id => return Ok(()),
                Some(p) if index <= T::log_index(p) => (None, Some(p.clone())),
                _ => (None, None),
            },
        };
        Err(state_err(StateError::LogIdMismatch {
            index,
            stored,
            purged,
            given: id.clone(),
        }))
    }
}

/// Pass 1 of an append: checks that each entry follows the one before it (the first one
/// `last`, see [`check_follows`]) and encodes its log id into `buf`, one span per entry.
/// Returns the log id of the last entry (`last` if there is none).
fn encode_spans<'a, T: Types, I>(
    mut last: Option<T::LogId>,
    engine_next: u64,
    entries: I,
    buf: &mut Vec<u8>,
    spans: &mut Vec<Span<'a>>,
) -> RaftResult<Option<T::LogId>, T>
where
    I: IntoIterator<Item = (T::LogId, &'a [u8])>,
{
    for (id, payload) in entries {
        let index = T::log_index(&id);
        check_follows::<T>(last.as_ref(), engine_next, &id)?;
        let start = buf.len();
        id.encode(buf);
        spans.push(Span {
            index,
            id: start..buf.len(),
            payload,
        });
        last = Some(id);
    }
    Ok(last)
}

/// The engine's view of encoded spans: `(index, encoded log id, payload)`.
fn parts<'s, 'a: 's>(
    buf: &'s [u8],
    spans: &'s [Span<'a>],
) -> impl Iterator<Item = (u64, &'s [u8], &'s [u8])> + Clone + 's {
    spans.iter().map(move |s| {
        (
            s.index,
            buf.get(s.id.clone()).unwrap_or_default(),
            s.payload,
        )
    })
}

/// Checks that `id` may follow `last` (the last log id; `None`: a log with no entries and
/// nothing purged, whose engine takes its first entry at `engine_next` or later): a greater
/// log id, at the next index.
fn check_follows<T: Types>(
    last: Option<&T::LogId>,
    engine_next: u64,
    id: &T::LogId,
) -> RaftResult<(), T> {
    let index = T::log_index(id);
    let expected = match last {
        Some(l) => {
            if id <= l {
                return Err(state_err(StateError::LogIdReversal {
                    last: l.clone(),
                    given: id.clone(),
                }));
            }
            successor::<T>(l)?
        }
        // A new log: any first index the engine can still take.
        None => index.max(engine_next),
    };
    if index != expected {
        return Err(RaftError::Engine(Error::NonConsecutive {
            expected,
            got: index,
        }));
    }
    Ok(())
}

/// The index after `id`'s.
fn successor<T: Types>(id: &T::LogId) -> RaftResult<u64, T> {
    T::log_index(id)
        .checked_add(1)
        .ok_or_else(|| state_err(StateError::NoSuccessor { given: id.clone() }))
}
