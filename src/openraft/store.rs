//! [`MmapLogStore`] (openraft's `RaftLogStorage`) and [`MmapLogReader`] (`RaftLogReader`).

// openraft's traits fix the error type (`StorageError`, ~190 bytes); the helpers return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ::openraft::async_runtime::AsyncOneshotSendExt;
use ::openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use ::openraft::Entry;
use ::openraft::{
    AnyError, AsyncRuntime, ErrorSubject, ErrorVerb, OptionalSend, RaftTypeConfig, StorageError,
    StorageIOError,
};

use super::entry_codec::{decode_entry, encode_entry};
use super::types::{
    log_id_from_stored, log_id_to_stored, vote_from_stored, vote_to_stored, OpenraftTypes,
};
use crate::groups::Group;
use crate::raft::{
    LogEngine, LogId, RaftLog, RaftReader, RaftResult, RaftState, RaftView, Reset, Rules,
};
use crate::{Config, Store};

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

/// The [`Rules`] an openraft log is opened with.
///
/// * `purge_requires_commit: false`: openraft purges what its snapshot covers and saves the
///   committed log id only lazily, so a purge may arrive before the matching commit is saved.
/// * `truncate_keeps_committed: true`: Raft never truncates a committed entry; refusing it is
///   a cheap last line of defence against a bug that would lose committed data.
pub const OPENRAFT_RULES: Rules = Rules {
    purge_requires_commit: false,
    truncate_keeps_committed: true,
};

fn storage_err<C: RaftTypeConfig>(
    subject: ErrorSubject<C::NodeId>,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError<C::NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// openraft's log storage on a [`RaftLog`]: entries in memory-mapped segment files, vote and
/// committed log id in the log's meta values.
///
/// * Cloning is cheap: clones share one writer (`Arc<Mutex<RaftLog>>`) and one reader.
/// * [`RaftLogStorage::append`] copies the encoded entries into the map and returns; the
///   `LogFlushed` callback fires from the log's flush thread once they are durable (many
///   appends share one `fdatasync`).
/// * `save_vote`, `truncate` and `purge` are durable when they return; `save_committed` is
///   lazy (durable with the next flush), as openraft allows.
/// * Readers ([`MmapLogReader`], from `get_log_reader`) never take the writer's lock: they
///   decode entries straight from the mapped pages.
///
/// Each entry is one record: its log id is the record's [`LogId`] `(term, node id, index)`,
/// its body a codec id, the entry kind and the application data (or membership) in postcard
/// (layout in `docs/openraft.md`); bodies in the serde_json of earlier versions are still
/// read. A body that does not decode (unknown codec id included) is a `StorageError` naming
/// its index; an entry is never skipped. Application data that postcard cannot read back
/// fails the `append`, which then writes nothing.
///
/// `S` is the engine: [`Store`] (the default, a directory per Raft group) or [`Group`], one
/// group of a shared log with many ([`MmapLogStore::for_group`]).
///
/// Requires openraft's own `Entry<C>` as the entry type, openraft's default leader-id mode
/// (the `single-term-leader` feature off) and node ids convertible to and from `u64`.
pub struct MmapLogStore<C: RaftTypeConfig, S: LogEngine = Store> {
    log: Arc<Mutex<RaftLog<OpenraftTypes, S>>>,
    reader: MmapLogReader<C>,
}

impl<C: RaftTypeConfig, S: LogEngine> Clone for MmapLogStore<C, S> {
    fn clone(&self) -> Self {
        MmapLogStore {
            log: self.log.clone(),
            reader: self.reader.clone(),
        }
    }
}

impl<C: RaftTypeConfig, S: LogEngine> Debug for MmapLogStore<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapLogStore").finish_non_exhaustive()
    }
}

impl<C> MmapLogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    /// Opens (or creates) the log in `dir` with [`OPENRAFT_RULES`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> RaftResult<Self, OpenraftTypes> {
        Ok(Self::from_log(RaftLog::open_with_rules(
            dir,
            config,
            OPENRAFT_RULES,
        )?))
    }
}

impl<C> MmapLogStore<C, Group>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    /// The log store of one Raft group of a shared log ([`crate::groups::Groups`]), with
    /// [`OPENRAFT_RULES`]: a new group starts empty (created on its first write), an existing
    /// one comes back as it was left. Every group's appends share the log's flush thread, so
    /// one `fdatasync` makes many groups' entries durable. One store per group at a time (its
    /// clones share one writer): a second one is refused with
    /// [`Error::GroupInUse`](crate::Error::GroupInUse) until the first and its clones are
    /// dropped.
    pub fn for_group(group: Group) -> RaftResult<Self, OpenraftTypes> {
        Ok(Self::from_log(RaftLog::for_group_with_rules(
            group,
            OPENRAFT_RULES,
        )?))
    }
}

impl<C, S: LogEngine> MmapLogStore<C, S>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    /// Wraps a log opened by the caller (use [`OPENRAFT_RULES`] or stricter-compatible rules).
    pub fn from_log(log: RaftLog<OpenraftTypes, S>) -> Self {
        let reader = MmapLogReader {
            reader: log.reader(),
            _c: PhantomData,
        };
        MmapLogStore {
            log: Arc::new(Mutex::new(log)),
            reader,
        }
    }

    /// A lock-free reader (the same one `get_log_reader` hands to openraft).
    pub fn reader(&self) -> MmapLogReader<C> {
        self.reader.clone()
    }

    /// The log's state (vote, last, committed, purged, ...) in stored form.
    pub fn state(&self) -> crate::Result<RaftState<OpenraftTypes>> {
        Ok(self.lock_raw()?.state().clone())
    }

    /// Runs `f` with the log locked (statistics, tools). Keep it short: appends wait for it.
    pub fn with_log<R>(
        &self,
        f: impl FnOnce(&mut RaftLog<OpenraftTypes, S>) -> R,
    ) -> crate::Result<R> {
        Ok(f(&mut *self.lock_raw()?))
    }

    fn lock_raw(&self) -> crate::Result<MutexGuard<'_, RaftLog<OpenraftTypes, S>>> {
        self.log.lock().map_err(|_| {
            crate::Error::Poisoned("a thread panicked holding the store's lock".into())
        })
    }

    fn lock(
        &self,
        subject: ErrorSubject<C::NodeId>,
    ) -> SResult<MutexGuard<'_, RaftLog<OpenraftTypes, S>>, C> {
        self.log.lock().map_err(|_| {
            storage_err::<C>(
                subject,
                ErrorVerb::Write,
                &io::Error::other("the log's lock is poisoned: a writer panicked"),
            )
        })
    }

    /// Asks the flush thread for a flush of everything written so far; the returned receiver
    /// completes when it is durable. The lock is released before the caller awaits.
    fn request_flush(
        log: &mut RaftLog<OpenraftTypes, S>,
    ) -> RaftResult<
        <C::AsyncRuntime as AsyncRuntime>::OneshotReceiver<crate::Result<()>>,
        OpenraftTypes,
    > {
        let (tx, rx) = C::AsyncRuntime::oneshot();
        log.flush(move |r| {
            let _ = tx.send(r);
        })?;
        Ok(rx)
    }

    async fn wait_flushed(
        rx: <C::AsyncRuntime as AsyncRuntime>::OneshotReceiver<crate::Result<()>>,
        subject: ErrorSubject<C::NodeId>,
    ) -> SResult<(), C> {
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(storage_err::<C>(subject, ErrorVerb::Write, &e)),
            Err(e) => Err(storage_err::<C>(subject, ErrorVerb::Write, &e)),
        }
    }
}

/// openraft's log reader on a [`RaftReader`]: `Clone + Send + Sync`, never blocks the writer,
/// decodes each entry directly from the mapped segment file (no payload cache, no copy of the
/// stored bytes before decoding).
pub struct MmapLogReader<C: RaftTypeConfig> {
    reader: RaftReader<OpenraftTypes>,
    _c: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for MmapLogReader<C> {
    fn clone(&self) -> Self {
        MmapLogReader {
            reader: self.reader.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for MmapLogReader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapLogReader").finish_non_exhaustive()
    }
}

impl<C> MmapLogReader<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    /// Decodes the entries in `range` (clamped to the live log) from one consistent snapshot
    /// of the log.
    pub fn read<RB: RangeBounds<u64>>(&self, range: RB) -> SResult<Vec<Entry<C>>, C> {
        let snap = self.reader.view();
        decode_range::<C, _>(&snap, range)
    }

    /// The untyped-payload reader underneath (zero-copy access to the stored entry bodies).
    pub fn raw(&self) -> &RaftReader<OpenraftTypes> {
        &self.reader
    }
}

fn decode_range<C, RB>(snap: &RaftView<OpenraftTypes>, range: RB) -> SResult<Vec<Entry<C>>, C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
    RB: RangeBounds<u64>,
{
    let iter = snap.read(range);
    let mut out = Vec::with_capacity(iter.size_hint().0);
    for item in iter {
        let (id, body) =
            item.map_err(|e| storage_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let entry = decode_entry::<C>(&id, body).map_err(|e| {
            StorageError::from(StorageIOError::read_log_at_index(
                id.index,
                AnyError::new(&e),
            ))
        })?;
        out.push(entry);
    }
    Ok(out)
}

impl<C> RaftLogReader<C> for MmapLogReader<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<C::Entry>, C> {
        self.read(range)
    }
}

impl<C, S: LogEngine + 'static> RaftLogReader<C> for MmapLogStore<C, S>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<C::Entry>, C> {
        self.reader.read(range)
    }
}

impl<C, S: LogEngine + 'static> RaftLogStorage<C> for MmapLogStore<C, S>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    C::NodeId: Into<u64> + From<u64>,
{
    type LogReader = MmapLogReader<C>;

    async fn get_log_state(&mut self) -> SResult<LogState<C>, C> {
        let log = self.lock(ErrorSubject::Logs)?;
        let st = log.state();
        Ok(LogState {
            last_purged_log_id: st.purged.as_ref().map(log_id_from_stored),
            last_log_id: st.last.as_ref().map(log_id_from_stored),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &::openraft::Vote<C::NodeId>) -> SResult<(), C> {
        let rx = {
            let mut log = self.lock(ErrorSubject::Vote)?;
            log.save_vote(vote_to_stored(vote))
                .and_then(|()| Self::request_flush(&mut log))
                .map_err(|e| storage_err::<C>(ErrorSubject::Vote, ErrorVerb::Write, &e))?
        };
        Self::wait_flushed(rx, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> SResult<Option<::openraft::Vote<C::NodeId>>, C> {
        let log = self.lock(ErrorSubject::Vote)?;
        Ok(log.state().vote.as_ref().map(vote_from_stored))
    }

    async fn save_committed(
        &mut self,
        committed: Option<::openraft::LogId<C::NodeId>>,
    ) -> SResult<(), C> {
        let Some(committed) = committed else {
            return Ok(());
        };
        let id = log_id_to_stored(&committed);
        let mut log = self.lock(ErrorSubject::Store)?;
        // A purge past the last entry records the purge point as committed (everything Raft
        // purges is committed); an older committed id saved afterwards adds nothing.
        if Some(&id) <= log.state().committed.as_ref() {
            return Ok(());
        }
        log.commit(id)
            .map_err(|e| storage_err::<C>(ErrorSubject::Log(committed), ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> SResult<Option<::openraft::LogId<C::NodeId>>, C> {
        let log = self.lock(ErrorSubject::Store)?;
        Ok(log.state().committed.as_ref().map(log_id_from_stored))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> SResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encode outside the lock: one buffer, one span per entry (the log id goes into the
        // record, the rest of the entry into its body).
        let mut buf = Vec::new();
        let mut spans: Vec<(LogId, usize, usize)> = Vec::new();
        for entry in entries {
            let start = buf.len();
            encode_entry(&entry, &mut buf).map_err(|e| {
                storage_err::<C>(
                    ErrorSubject::Log(entry.log_id.clone()),
                    ErrorVerb::Write,
                    &e,
                )
            })?;
            spans.push((log_id_to_stored(&entry.log_id), start, buf.len()));
        }

        let mut log = self.lock(ErrorSubject::Logs)?;
        let write = |log: &mut RaftLog<OpenraftTypes, S>| -> RaftResult<(), OpenraftTypes> {
            // Entries at or below the purge point are already covered by the snapshot (Raft
            // only purges committed entries): skip them, provided they do not contradict it.
            let mut spans = &spans[..];
            if let Some(purged) = log.state().purged {
                while let Some(((id, _, _), rest)) = spans.split_first() {
                    if id.index > purged.index {
                        break;
                    }
                    if *id > purged {
                        return Err(crate::Error::Decode {
                            what: format!("append of {id}"),
                            reason: format!(
                                "the entry is at or below the purged log id {purged} but from a later leader"
                            ),
                        }
                        .into());
                    }
                    spans = rest;
                }
            }
            let entries = spans.iter().map(|(id, a, b)| (*id, &buf[*a..*b]));
            match spans.first() {
                Some((first, _, _)) if log.state().last.is_none() && first.index > 0 => {
                    // An empty log (nothing appended, nothing purged) asked to start at index
                    // k > 0: record entries up to k - 1 as purged, i.e. the log begins after
                    // them, as after a snapshot. Raft itself always starts at 0 or after a
                    // purge; openraft's storage test suite starts anywhere. The snapshot and
                    // the entries are one call: if the entries are refused, nothing moved.
                    let reset = Reset {
                        snapshot: LogId::new(first.term, first.node_id, first.index - 1),
                        data: Vec::new(),
                        vote: None,
                        user_data: None,
                    };
                    log.reset_and_append(reset, entries)?;
                }
                _ => log.append(entries)?,
            }
            log.flush(move |r| callback.log_io_completed(r.map_err(io::Error::other)))
        };
        write(&mut log).map_err(|e| storage_err::<C>(ErrorSubject::Logs, ErrorVerb::Write, &e))
    }

    async fn truncate(&mut self, log_id: ::openraft::LogId<C::NodeId>) -> SResult<(), C> {
        let subject = || ErrorSubject::Log(log_id.clone());
        let rx = {
            let mut log = self.lock(subject())?;
            let st = log.state();
            let index = log_id.index;
            if st.last.as_ref().is_none_or(|l| index > l.index) {
                return Ok(()); // Nothing at or after `index`.
            }
            let purged = st.purged;
            if purged.as_ref().is_some_and(|p| index <= p.index) {
                return Err(storage_err::<C>(
                    subject(),
                    ErrorVerb::Delete,
                    &io::Error::other(format!(
                        "truncate from index {index} would remove purged entries (purged up to {:?})",
                        purged
                    )),
                ));
            }
            let res = (|| {
                let keep = match index.checked_sub(1) {
                    None => None,
                    Some(prev) if purged.as_ref().is_some_and(|p| p.index == prev) => purged,
                    Some(prev) => Some(log.log_id(prev)?.ok_or_else(|| crate::Error::Decode {
                        what: format!("log id of entry {prev}"),
                        reason: "missing below the last entry".into(),
                    })?),
                };
                log.truncate_after(keep)?;
                Self::request_flush(&mut log)
            })();
            res.map_err(|e| storage_err::<C>(subject(), ErrorVerb::Delete, &e))?
        };
        Self::wait_flushed(rx, subject()).await
    }

    async fn purge(&mut self, log_id: ::openraft::LogId<C::NodeId>) -> SResult<(), C> {
        let subject = || ErrorSubject::Log(log_id.clone());
        let rx = {
            let mut log = self.lock(subject())?;
            let id = log_id_to_stored(&log_id);
            if log
                .state()
                .purged
                .as_ref()
                .is_some_and(|p| p.index >= id.index)
            {
                return Ok(());
            }
            let res = (|| {
                if log.log_id(id.index)? == Some(id) {
                    log.purge_upto(id)?;
                } else {
                    // The purge point is past the last entry (or conflicts with the stored
                    // entry, which Raft truncates first): the log continues after it.
                    log.install_snapshot(id, Vec::new())?;
                }
                Self::request_flush(&mut log)
            })();
            res.map_err(|e| storage_err::<C>(subject(), ErrorVerb::Delete, &e))?
        };
        Self::wait_flushed(rx, subject()).await
    }
}
