//! The writer: [`Store`] owns the directory, appends records into the active segment and
//! publishes new versions for readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::error::{Error, Result};
use crate::flusher::Flusher;
use crate::format::{RecordKind, RECORD_HEADER_SIZE};
use crate::index::Run;
use crate::lock::DirLock;
use crate::notify::Notify;
use crate::preparer::Preparer;
use crate::reader::Reader;
use crate::recovery::{self, RecoveryReport};
use crate::segment::{FileOptions, Pool, PreparedFile, Segment, WriteVia};
use crate::state::LogState;
use crate::version::Version;

mod append_frames;
mod combined;
mod config;
mod flush;
mod groups;
mod open;
mod placement;
mod receive;
#[cfg(test)]
mod recycle_tests;
mod reserve;
#[cfg(test)]
mod sim_tests;
mod usage;
mod write;

pub(crate) use combined::Before;
use config::check_first_index;
pub use config::{Allocation, Config, FlushIo, WriteMode};
pub use groups::GroupUsage;
pub(crate) use receive::{Landed, Placed, Received};

/// The log engine: one writer, any number of [`Reader`]s.
///
/// Indexes are `u64`, payloads are bytes. Appends must be consecutive (an empty log accepts any
/// index at or after its next index). Everything written becomes durable with [`Store::flush`]
/// or [`Store::sync`].
///
/// ```
/// use raft_mmap_log::{Config, Store};
/// let dir = tempfile::tempdir()?;
/// let mut store = Store::open(dir.path(), Config::default())?;
/// store.append_batch([(1, &b"one"[..]), (2, b"two"), (3, b"three")])?;
/// store.sync()?;
/// let snap = store.reader().view();
/// assert_eq!(snap.get(2), Some(&b"two"[..]));
/// drop(snap);
/// drop(store);
/// let store = Store::open(dir.path(), Config::default())?;
/// assert_eq!(store.reader().last_index(), Some(3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Store {
    // Field order is drop order: the flusher finishes queued callbacks first, the lock goes last.
    flusher: Flusher,
    preparer: Preparer,
    dir: PathBuf,
    config: Config,
    /// How files are allocated and written (resolved from the config at open).
    opts: FileOptions,
    state: LogState,
    current: Arc<ArcSwap<Version>>,
    /// The writer's copy of the last published version.
    version: Version,
    active: Arc<Segment>,
    write_pos: u64,
    /// Write-back of the active segment was started up to here.
    writeback_pos: u64,
    /// CRC of the last record written (the next segment's checkpoint names it).
    last_crc: u32,
    /// The last record was copied by a concurrent append at this offset of the active
    /// segment: `last_crc` is read from there at the next rollover.
    crc_at: Option<u64>,
    /// The open reservations of concurrent appends (`reserve.rs`), shared with the flusher.
    frontier: Arc<crate::frontier::Frontier>,
    /// The focused group's publisher of concurrent appends.
    publisher: Arc<reserve::Publisher>,
    /// Where readers of every group wait for publications ([`Reader::wait_for`]).
    notify: Arc<Notify>,
    /// The run receiving appends (always in `active`, always `version.runs.last()`).
    tail: Option<Arc<Run>>,
    tail_len: u64,
    dir_dirty: bool,
    pending_deletes: Vec<Arc<Segment>>,
    spares: Vec<PreparedFile>,
    /// Purged segment files kept for reuse (shared with the flusher and the preparer).
    #[cfg_attr(not(test), allow(dead_code))]
    pool: Arc<Pool>,
    next_seq: u64,
    /// The group `state`, `current`, `version`, `tail` and `tail_len` belong to (0 unless a
    /// shared log's group is being written, see `groups.rs`).
    focus: u64,
    /// The other groups of the log.
    groups: groups::ParkedGroups,
    /// The group of the last record written in the active segment (0 after its checkpoints).
    stream_group: u64,
    report: RecoveryReport,
    /// The flush I/O in use, and why the one configured was refused.
    flush_io: (FlushIo, Option<String>),
    _lock: DirLock,
}

impl Drop for Store {
    fn drop(&mut self) {
        for spare in self.spares.drain(..) {
            spare.discard();
        }
        // The flush thread finishes what is queued; then the active segment's synced mark is
        // brought up to everything synced (the flusher leaves it one sync behind), so that a
        // log closed after a sync has all of its records under the mark; a closed mark when
        // nothing was written after it.
        self.flusher.close();
        if self.flusher.poisoned().is_none() {
            self.active.mark_synced_on_close(self.write_pos);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("first", &self.state.first)
            .field("next", &self.state.next)
            .field("segments", &self.version.segments.len())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the log in `dir`, recovering what is on disk.
    ///
    /// Creating a new log writes its first segment's blocks once (`segment_size` bytes of
    /// zeros, synced: about 0.1 s for 64 MiB on a virtio disk), so that small durable appends
    /// overwrite written blocks from the start; with `segment_pool: 0` the blocks are only
    /// reserved.
    ///
    /// Fails with [`Error::Locked`] if another `Store` holds the directory, and with
    /// [`Error::Corrupt`] (file and offset) if it finds damage that no crash could explain.
    ///
    /// Fails with [`Error::InvalidConfig`] if `config.segment_size` is too small for the meta
    /// values the log already holds (they are copied into every segment's checkpoint).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        let (fs, in_use, refused) = crate::io::for_flush_io(config.flush_io);
        let mut store = Self::open_with_fs(dir, config, fs)?;
        store.flush_io = (in_use, refused);
        Ok(store)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The flush I/O in use ([`Config::flush_io`], or [`FlushIo::Threads`] where that was
    /// refused at open) and, if it was, why.
    pub fn flush_io(&self) -> (FlushIo, Option<&str>) {
        (self.flush_io.0, self.flush_io.1.as_deref())
    }

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// A reader handle for other threads.
    pub fn reader(&self) -> Reader {
        Reader {
            current: self.current.clone(),
            notify: self.notify.clone(),
        }
    }

    /// Where the readers of every group of this log wait ([`Reader::wait_for`]).
    pub(crate) fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// First retained index.
    pub fn first_index(&self) -> u64 {
        self.state.first
    }

    /// One past the last index.
    pub fn next_index(&self) -> u64 {
        self.state.next
    }

    /// Last index, `None` when the log has no entry.
    pub fn last_index(&self) -> Option<u64> {
        (!self.state.is_empty()).then(|| self.state.next - 1)
    }

    /// Where the next record will be written: the active segment's file and byte offset.
    /// Everything before this position is durable once a flush issued now completes (crash
    /// tests use it as the durable frontier).
    pub fn position(&self) -> (PathBuf, u64) {
        (self.active.path().to_path_buf(), self.write_pos)
    }

    /// Latest value of meta key `key`.
    pub fn meta(&self, key: u64) -> Option<&[u8]> {
        self.state.metas.get(&key).map(|v| &v[..])
    }

    /// The largest payload an entry may have: [`Config::max_payload`] of this log's
    /// configuration. Every segment keeps room for a checkpoint whose meta values use their
    /// whole budget, so the limit does not depend on the meta values held now: logs with the
    /// same `segment_size` accept the same entries.
    pub fn max_payload(&self) -> usize {
        self.config.max_payload()
    }

    /// How records are written into this log's files: [`WriteMode::Map`] or
    /// [`WriteMode::Pwrite`] (`Auto` resolved for the file system at open).
    pub fn write_mode(&self) -> WriteMode {
        match self.opts.via {
            WriteVia::Map => WriteMode::Map,
            WriteVia::Pwrite => WriteMode::Pwrite,
        }
    }

    /// Purged segment files that could not be removed, with the error: the removal is
    /// retried at every flush and at the next open. Empty when all is well.
    pub fn removal_failures(&self) -> Vec<(PathBuf, String)> {
        self.flusher.removal_failures()
    }

    fn check_writable(&self) -> Result<()> {
        match self.flusher.poisoned() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Appends one entry. See [`Store::append_batch`].
    pub fn append(&mut self, index: u64, payload: &[u8]) -> Result<()> {
        self.append_batch(std::iter::once((index, payload)))
    }

    /// Appends entries with consecutive indexes (an empty log accepts any first index up to
    /// [`MAX_INDEX`](crate::format::MAX_INDEX)). All are checked before any is written.
    ///
    /// All or nothing: on error the log, its readers and its files are as before the call
    /// (or, if undoing a half-written batch failed too, the log is poisoned with an error
    /// that says why). Readers see the batch once the call returns; it becomes durable with
    /// the next flush.
    pub fn append_batch<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
        I::IntoIter: Clone,
    {
        self.append_parts(entries.into_iter().map(|(i, p)| (i, &[][..], p)))
    }

    /// Removes every entry after `index` (keeps `..=index`).
    pub fn truncate_after(&mut self, index: u64) -> Result<()> {
        match index.checked_add(1) {
            Some(from) => self.truncate_from(from),
            None => Ok(()),
        }
    }

    /// Removes every entry with index `>= from`. Fails with [`Error::BelowFirstIndex`]
    /// if `from` is below the first index. A truncate that removes nothing writes nothing.
    pub fn truncate_from(&mut self, from: u64) -> Result<()> {
        self.check_writable()?;
        if !self.state.check_truncate(from)? {
            return Ok(());
        }
        self.write_record(RecordKind::Truncate, from, &[])?;
        self.apply_truncate(from);
        self.publish();
        Ok(())
    }

    /// The writer's side of a truncate record just written: state and runs (not published).
    fn apply_truncate(&mut self, from: u64) {
        self.state.apply_truncate(from);
        if let Some(t) = self.tail.take() {
            t.publish(self.tail_len);
        }
        // Freeze the run that holds `from - 1`; drop the ones after it. Old snapshots keep
        // their own version, so they never see a slot rewritten.
        self.version.runs.retain(|r| r.run.first() < from);
        if let Some(last) = self.version.runs.last_mut() {
            last.limit = last.len().min(from - last.run.first());
        }
        self.normalize_runs();
    }

    /// Removes every entry with index `< first`; `first` becomes the first index. Whole
    /// segments that hold only purged entries are deleted once the purge record is durable
    /// (after the next flush), never before. (The one purge of the engine: the Raft layer's
    /// `purge_upto(log_id)` names the last purged entry instead.)
    pub fn purge_to(&mut self, first: u64) -> Result<()> {
        self.purge_to_with_meta(first, &[])
    }

    /// Like [`Store::purge_to`], and sets meta values in the same record, atomically: after a
    /// crash either both the purge and the values are there or neither is. (The Raft layer
    /// stores the purged log id this way.) If the purge removes nothing, only the values are
    /// written.
    pub fn purge_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
        check_first_index(first)?;
        if !self.state.purge_changes(first) {
            for (k, v) in metas {
                self.put_meta(*k, v)?;
            }
            return Ok(());
        }
        self.write_with_metas(RecordKind::Purge, first, metas)?;
        self.state.apply_purge(first);
        self.normalize_runs();
        self.release_unneeded_segments();
        self.publish();
        Ok(())
    }

    /// Drops every entry and makes `first` both the first and the next index, setting meta
    /// values in the same record (atomically): a snapshot that replaces the whole log. Fails
    /// with [`Error::BelowFirstIndex`] if `first` is below the first index.
    pub fn reset_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
        check_first_index(first)?;
        if first < self.state.first {
            return Err(Error::BelowFirstIndex {
                from: first,
                first: self.state.first,
            });
        }
        self.write_with_metas(RecordKind::Reset, first, metas)?;
        self.state.apply_reset(first);
        if let Some(t) = self.tail.take() {
            t.publish(self.tail_len);
        }
        self.version.runs.clear();
        self.release_unneeded_segments();
        self.publish();
        Ok(())
    }

    /// Writes a purge or reset record carrying `metas`, after checking their size; on success
    /// the meta values are part of `self.state`.
    fn write_with_metas(
        &mut self,
        kind: RecordKind,
        arg: u64,
        metas: &[(u64, &[u8])],
    ) -> Result<()> {
        let mut next = self.state.clone();
        for (k, v) in metas {
            next.apply_meta(*k, Arc::from(*v));
        }
        self.check_meta_size(&next, metas.first().map(|m| m.0).unwrap_or(0))?;
        self.write_record(kind, arg, &recovery::encode_meta_items(metas))?;
        self.state = next;
        Ok(())
    }

    /// Queues for deletion (after the next flush) the segments before the first one any live
    /// entry needs, never the active one.
    fn release_unneeded_segments(&mut self) {
        let keep_from = self.oldest_needed_segment();
        let gone: Vec<_> = self.version.segments.drain(..keep_from).collect();
        self.pending_deletes.extend(gone);
    }

    /// Sets meta value `key` (small, opaque bytes for the layer above). The latest value of
    /// every key is carried in each segment's checkpoint, so it survives purges.
    pub fn put_meta(&mut self, key: u64, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        let mut next = self.state.clone();
        next.apply_meta(key, Arc::from(value));
        self.check_meta_size(&next, key)?;
        self.write_record(RecordKind::Meta, key, value)?;
        self.state = next;
        self.publish();
        Ok(())
    }

    /// Removes meta value `key`; returns whether it was set (removing a key that is not set
    /// writes nothing). One small record, durable with the next flush like any write, all or
    /// nothing; the key stays removed across purges (segments written after the removal
    /// carry no value for it in their checkpoints).
    ///
    /// The record needs a version 3 segment: in a log whose active segment an older build
    /// wrote, that segment is sealed first and a new one started (and synced). Builds older
    /// than the record refuse a log holding one (an invalid record with valid ones after it),
    /// or cut it as a torn tail when it is the last record (`docs/format.md`).
    pub fn remove_meta(&mut self, key: u64) -> Result<bool> {
        self.check_writable()?;
        if !self.state.metas.contains_key(&key) {
            return Ok(false);
        }
        self.prepare_for_groups()?;
        self.write_record(RecordKind::MetaRemove, key, &[])?;
        self.state.remove_meta(key);
        self.publish();
        Ok(true)
    }

    // ---- internals ----

    /// Publishes the writer's version: supersedes the current one first, so that a reader
    /// still holding it never pairs its metas with entries appended later.
    fn publish(&mut self) {
        self.current.load().supersede();
        self.store_version();
    }

    /// Stores the writer's version for readers (the caller superseded the previous one).
    fn store_version(&mut self) {
        self.version.first = self.state.first;
        self.version.next = self.state.next;
        self.version.metas = self.state.metas.clone();
        self.current.store(Arc::new(self.version.clone()));
        self.notify.wake();
    }

    /// Drops runs that hold no live entry, and the tail with them if it is one.
    fn normalize_runs(&mut self) {
        let first = self.state.first;
        let tail = self.tail.clone();
        let tail_len = self.tail_len;
        self.version.runs.retain(|r| {
            let len = match &tail {
                Some(t) if Arc::ptr_eq(t, &r.run) => tail_len,
                _ => r.len(),
            };
            r.run.first() + len > first && len > 0
        });
        if let Some(t) = &tail {
            if !self.version.runs.iter().any(|r| Arc::ptr_eq(&r.run, t)) {
                self.tail = None;
                self.tail_len = 0;
            }
        }
        if self.version.runs.is_empty() {
            self.tail = None;
        }
    }

    /// Meta values are copied into every checkpoint: together they may use at most their
    /// budget, a quarter of a segment (the room every segment keeps for them, see
    /// [`Config::max_payload`]).
    fn check_meta_size(&self, next: &LogState, key: u64) -> Result<()> {
        let limit = self.config.meta_limit();
        // Every group's checkpoint is in every segment: they share the budget.
        let size = self
            .checkpoints_len(next)
            .saturating_sub(RECORD_HEADER_SIZE);
        if size > limit {
            return Err(Error::MetaTooLarge {
                key,
                size,
                max: limit,
            });
        }
        Ok(())
    }

    fn ensure_spares(&mut self, n: usize) -> Result<()> {
        while self.spares.len() < n {
            let f = self.preparer.take()?;
            self.spares.push(f);
        }
        Ok(())
    }
}
