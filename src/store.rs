//! The writer: [`Store`] owns the directory, appends records into the active segment and
//! publishes new versions for readers.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use arc_swap::ArcSwap;
use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::flusher::{Callback, FlushRequest, Flusher, SyncTarget};
use crate::format::{
    record_size, RecordKind, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, RECORD_ALIGN, RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
};
use crate::index::Run;
use crate::lock::DirLock;
use crate::preparer::Preparer;
use crate::reader::Reader;
use crate::record;
use crate::recovery::{self, checkpoint_len, encode_checkpoint, RecoveryMode, RecoveryReport};
use crate::segment::{PreparedFile, Segment};
use crate::state::LogState;
use crate::version::{RunRef, Version};

/// How a [`Store`] is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Size of each segment file in bytes (default 64 MiB). Between 4 KiB and 4 GiB, a multiple
    /// of 8. An entry must fit in one segment.
    pub segment_size: u64,
    /// What recovery does with corruption (default: refuse to open).
    pub recovery_mode: RecoveryMode,
    /// Prepare the next segment file on a background thread (default true).
    pub prepare_ahead: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_size: 64 << 20,
            recovery_mode: RecoveryMode::Strict,
            prepare_ahead: true,
        }
    }
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
            || self.segment_size % RECORD_ALIGN as u64 != 0
        {
            return Err(Error::InvalidConfig(format!(
                "segment_size {} must be a multiple of {RECORD_ALIGN} between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        Ok(())
    }
}

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
/// let snap = store.reader().snapshot();
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
    /// The run receiving appends (always in `active`, always `version.runs.last()`).
    tail: Option<Arc<Run>>,
    tail_len: u64,
    dir_dirty: bool,
    pending_deletes: Vec<Arc<Segment>>,
    spares: Vec<PreparedFile>,
    next_seq: u64,
    report: RecoveryReport,
    _lock: DirLock,
}

impl Drop for Store {
    fn drop(&mut self) {
        for spare in self.spares.drain(..) {
            spare.discard();
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
    /// Fails with [`Error::Locked`] if another `Store` holds the directory, and with
    /// [`Error::Corrupt`] (file and offset) if it finds damage that no crash could explain.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let mut plan = recovery::plan(&dir, config.recovery_mode, true)?;
        recovery::repair(&dir, &mut plan)?;

        let flusher = Flusher::start(dir.clone())?;
        let preparer = Preparer::start(dir.clone(), config.segment_size, config.prepare_ahead)?;

        let state = plan.state.clone();
        let next_seq = plan.segments.last().map(|s| s.seq() + 1).unwrap_or(1);

        // Purged leading segments can go now: recovery has just made the rest durable.
        let purged: Vec<Arc<Segment>> = plan.segments.drain(..plan.purged_prefix).collect();
        let mut removed_any = false;
        for seg in &purged {
            match std::fs::remove_file(seg.path()) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove purged segment", seg.path(), e)),
            }
        }
        if removed_any {
            crate::segment::sync_dir(&dir)?;
        }
        let shift = purged.len();
        drop(purged);

        let mut runs = Vec::with_capacity(plan.runs.len());
        for rp in &plan.runs {
            let seg = plan.segments[rp.segment - shift].clone();
            runs.push(Arc::new(Run::from_offsets(seg, rp.first, &rp.offsets)));
        }

        let active = match plan.segments.last() {
            Some(s) => s.clone(),
            None => Arc::new(Segment::install(
                PreparedFile::create(&dir, 0, config.segment_size)?,
                &dir,
                next_seq,
            )?),
        };
        let mut store = Store {
            flusher,
            preparer,
            dir: dir.clone(),
            config,
            state: state.clone(),
            current: Arc::new(ArcSwap::from_pointee(Version::default())),
            version: Version {
                first: state.first,
                next: state.next,
                runs: Vec::new(),
                segments: plan.segments.clone(),
                metas: state.metas.clone(),
            },
            active,
            write_pos: plan.write_pos,
            writeback_pos: plan.write_pos,
            last_crc: plan.scans.last().map(|s| s.last_crc).unwrap_or(0),
            tail: None,
            tail_len: 0,
            dir_dirty: false,
            pending_deletes: Vec::new(),
            spares: Vec::new(),
            next_seq,
            report: plan.report.clone(),
            _lock: lock,
        };
        let n_runs = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            let live = i + 1 == n_runs && Arc::ptr_eq(run.segment(), &store.active);
            let len = run.published();
            if live {
                store.tail = Some(run.clone());
                store.tail_len = len;
            }
            store.version.runs.push(RunRef {
                limit: if live { u64::MAX } else { len },
                run,
            });
        }
        if plan.segments.is_empty() {
            // A brand-new log: the segment made above needs its checkpoint.
            store.next_seq += 1;
            store.version.segments.push(store.active.clone());
            store.dir_dirty = true;
            store.write_checkpoint(0, 0)?;
            store.sync()?;
        } else if plan.needs_checkpoint {
            // The newest segment lost its checkpoint: chain the new one to its predecessor.
            let (prev_end, prev_crc) = match plan.scans.len().checked_sub(2) {
                Some(k) => (plan.scans[k].end, plan.scans[k].last_crc),
                None => (0, 0),
            };
            store.write_checkpoint(prev_end, prev_crc)?;
            store.sync()?;
        } else if store.active.sealed_end().is_some() {
            // A sealed segment is never appended to again.
            store.rollover()?;
            store.sync()?;
        }
        store.publish();
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

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// A reader handle for other threads.
    pub fn reader(&self) -> Reader {
        Reader {
            current: self.current.clone(),
        }
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

    /// The largest payload an entry may have with the current meta values.
    pub fn max_payload(&self) -> usize {
        let room = self.config.segment_size as usize
            - SEGMENT_HEADER_SIZE
            - record_size(checkpoint_len(&self.state))
            - RECORD_HEADER_SIZE;
        room / RECORD_ALIGN * RECORD_ALIGN
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

    /// Appends entries with consecutive indexes. All are checked before any is written: on
    /// error nothing was written. Readers may see a prefix of the batch before the call
    /// returns; it becomes durable with the next flush.
    pub fn append_batch<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
        I::IntoIter: Clone,
    {
        self.append_parts(entries.into_iter().map(|(i, p)| (i, &[][..], p)))
    }

    /// Appends entries whose body is `prefix ++ payload` (the Raft layer puts the encoded log
    /// id in front of the payload without copying the payload first).
    pub(crate) fn append_parts<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        self.check_writable()?;
        // Pass 1: rules, sizes, and how many new segments the batch needs.
        let max = self.max_payload();
        let cp = record_size(checkpoint_len(&self.state)) as u64;
        // The active segment may have another size than new ones (the config changed).
        let mut size = self.active.size();
        let mut sim = self.state.clone();
        let mut pos = self.write_pos;
        let mut new_segments = 0usize;
        let mut count = 0usize;
        for (index, prefix, payload) in entries.clone() {
            sim.check_append(index)?;
            let len = prefix.len() + payload.len();
            if len > max {
                return Err(Error::EntryTooLarge {
                    index,
                    size: len,
                    max,
                });
            }
            sim.apply_append(index);
            let rs = record_size(len) as u64;
            if pos + rs > size {
                new_segments += 1;
                size = self.config.segment_size;
                pos = SEGMENT_HEADER_SIZE as u64 + cp;
            }
            pos += rs;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        self.ensure_spares(new_segments)?;

        // Pass 2: write. Nothing below can fail except an installing rename at rollover.
        let mut layout_changed = false;
        for (index, prefix, payload) in entries {
            let rs = record_size(prefix.len() + payload.len()) as u64;
            if self.write_pos + rs > self.active.size() {
                self.rollover()?;
                layout_changed = true;
            }
            let h = record::header(
                self.active.salt(),
                RecordKind::Entry,
                index,
                &[prefix, payload],
            );
            self.last_crc = h.crc.get();
            let pos = self.write_pos as usize;
            // SAFETY: `pos..pos+rs` is at or past the published end of the active segment
            // (I1: only this thread writes and it publishes below) and inside the map
            // (checked against `size` just above).
            unsafe {
                self.active.write_at(pos, h.as_bytes());
                self.active.write_at(pos + RECORD_HEADER_SIZE, prefix);
                self.active
                    .write_at(pos + RECORD_HEADER_SIZE + prefix.len(), payload);
            }
            if self.state.is_empty() && index != self.state.next {
                // An empty log jumping ahead: older runs are all below the new first index.
                self.tail = None;
                self.version.runs.clear();
            }
            if self.state.is_empty() {
                layout_changed = true;
            }
            let tail = match &self.tail {
                Some(t) => t.clone(),
                None => {
                    let run = Arc::new(Run::new(self.active.clone(), index));
                    self.version.runs.push(RunRef {
                        run: run.clone(),
                        limit: u64::MAX,
                    });
                    self.tail = Some(run.clone());
                    self.tail_len = 0;
                    layout_changed = true;
                    run
                }
            };
            tail.set(self.tail_len as usize, pos as u32);
            self.tail_len += 1;
            self.write_pos += rs;
            self.state.apply_append(index);
        }
        if let Some(t) = &self.tail {
            t.publish(self.tail_len);
        }
        if layout_changed {
            self.publish();
        }
        self.hint_writeback();
        Ok(())
    }

    /// Every few MiB of new data, asks the flush thread to start write-back of the completed
    /// pages (not waiting for it), so that write-back overlaps appending.
    fn hint_writeback(&mut self) {
        const STEP: u64 = 4 << 20;
        const PAGE: u64 = 4096;
        let done = self.write_pos / PAGE * PAGE;
        if done >= self.writeback_pos + STEP {
            let _ = self.flusher.submit(FlushRequest {
                targets: Vec::new(),
                sync_dir: false,
                deletes: Vec::new(),
                writeback: Some((self.active.clone(), self.writeback_pos, done)),
                callback: None,
            });
            self.writeback_pos = done;
        }
    }

    /// Removes every entry after `index` (keeps `..=index`).
    pub fn truncate_after(&mut self, index: u64) -> Result<()> {
        match index.checked_add(1) {
            Some(from) => self.truncate_from(from),
            None => Ok(()),
        }
    }

    /// Removes every entry with index `>= from`. Fails with [`Error::TruncateBelowPurged`]
    /// if `from` is below the first index. A truncate that removes nothing writes nothing.
    pub fn truncate_from(&mut self, from: u64) -> Result<()> {
        self.check_writable()?;
        if !self.state.check_truncate(from)? {
            return Ok(());
        }
        self.write_record(RecordKind::Truncate, from, &[])?;
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
        self.publish();
        Ok(())
    }

    /// Removes every entry with index `<= index`. Whole segments that hold only purged entries
    /// are deleted once the purge record is durable (after the next flush), never before.
    pub fn purge_upto(&mut self, index: u64) -> Result<()> {
        self.purge_to(index.saturating_add(1))
    }

    /// Removes every entry with index `< first`; `first` becomes the first index.
    pub fn purge_to(&mut self, first: u64) -> Result<()> {
        self.purge_to_with_meta(first, &[])
    }

    /// Like [`Store::purge_to`], and sets meta values in the same record, atomically: after a
    /// crash either both the purge and the values are there or neither is. (The Raft layer
    /// stores the purged log id this way.) If the purge removes nothing, only the values are
    /// written.
    pub fn purge_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
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
    /// with [`Error::TruncateBelowPurged`] if `first` is below the first index.
    pub fn reset_to_with_meta(&mut self, first: u64, metas: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
        if first < self.state.first {
            return Err(Error::TruncateBelowPurged {
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
        let keep_from = match self.version.runs.first() {
            Some(r) => self
                .version
                .segments
                .iter()
                .position(|s| Arc::ptr_eq(s, r.run.segment()))
                .unwrap_or(0),
            None => self.version.segments.len() - 1,
        };
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

    /// Asks for everything written so far to be made durable; `callback` runs on the flush
    /// thread once it is (or with the error that prevented it). Many flushes queued while a
    /// sync runs share the next sync. Returns at once.
    pub fn flush(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.submit_flush(Some(Box::new(callback)))
    }

    fn submit_flush(&mut self, callback: Option<Callback>) -> Result<()> {
        // Sealed segments were queued at rollover, so they are synced (oldest first) before
        // this request's range of the active segment.
        self.flusher.submit(FlushRequest {
            targets: vec![SyncTarget {
                segment: self.active.clone(),
                end: self.write_pos,
                seal: false,
            }],
            sync_dir: std::mem::take(&mut self.dir_dirty),
            deletes: std::mem::take(&mut self.pending_deletes),
            writeback: None,
            callback,
        })
    }

    /// Makes everything written so far durable, blocking until it is.
    pub fn sync(&mut self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.flush(move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| Error::FlusherStopped)?
    }

    // ---- internals ----

    fn publish(&mut self) {
        self.version.first = self.state.first;
        self.version.next = self.state.next;
        self.version.metas = self.state.metas.clone();
        self.current.store(Arc::new(self.version.clone()));
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

    /// Meta values are copied into every checkpoint: together they may use at most a quarter
    /// of a segment.
    fn check_meta_size(&self, next: &LogState, key: u64) -> Result<()> {
        let limit = (self.config.segment_size / 4) as usize;
        let size = checkpoint_len(next);
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

    /// Writes a small record, rolling over first if it does not fit.
    fn write_record(&mut self, kind: RecordKind, arg: u64, body: &[u8]) -> Result<()> {
        let rs = record_size(body.len()) as u64;
        if self.write_pos + rs > self.active.size() {
            self.ensure_spares(1)?;
            self.rollover()?;
        }
        let h = record::header(self.active.salt(), kind, arg, &[body]);
        self.last_crc = h.crc.get();
        let pos = self.write_pos as usize;
        // SAFETY: unpublished space of the active segment, inside the map (checked above);
        // only the writer thread writes (I1).
        unsafe {
            self.active.write_at(pos, h.as_bytes());
            self.active.write_at(pos + RECORD_HEADER_SIZE, body);
        }
        self.write_pos += rs;
        Ok(())
    }

    /// Writes the active segment's opening checkpoint, chained to the previous segment's
    /// end and last record CRC.
    fn write_checkpoint(&mut self, prev_end: u64, prev_crc: u32) -> Result<()> {
        let body = encode_checkpoint(&self.state, prev_end, prev_crc);
        self.write_pos = SEGMENT_HEADER_SIZE as u64;
        self.write_record(RecordKind::Checkpoint, 0, &body)
    }

    /// Seals the active segment and starts the next one. The caller made sure a spare exists
    /// or accepts that taking one may fail (then nothing has changed).
    fn rollover(&mut self) -> Result<()> {
        let prepared = match self.spares.pop() {
            Some(p) => p,
            None => self.preparer.take()?,
        };
        let seg = Arc::new(Segment::install(prepared, &self.dir, self.next_seq)?);
        self.next_seq += 1;
        if let Some(t) = self.tail.take() {
            t.publish(self.tail_len);
            if let Some(last) = self.version.runs.last_mut() {
                last.limit = self.tail_len;
            }
        }
        let old = std::mem::replace(&mut self.active, seg.clone());
        let old_end = self.write_pos;
        self.version.segments.push(seg);
        self.dir_dirty = true;
        self.write_checkpoint(old_end, self.last_crc)?;
        // Start the sealed segment's write-back now, in the background: its sync overlaps
        // with appends to the new segment instead of delaying the next durable flush.
        let _ = self.flusher.submit(FlushRequest {
            targets: vec![SyncTarget {
                segment: old,
                end: old_end,
                seal: true,
            }],
            sync_dir: true,
            deletes: Vec::new(),
            writeback: None,
            callback: None,
        });
        self.writeback_pos = SEGMENT_HEADER_SIZE as u64;
        Ok(())
    }
}
