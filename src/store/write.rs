//! The writer's record path: appends, single records and rollovers, all-or-nothing.
//!
//! Every call that writes records runs as a small transaction. [`Undo`] saves the writer's
//! positions before the first byte is written; effects that others can see (run lengths for
//! readers, seal requests for the flusher, a new version) wait in [`Pending`] until nothing
//! can fail any more. If a write, a rename or an allocation fails half-way, the call is undone:
//! the bytes it wrote into the active segment are zeroed (so that they can never be recovered
//! as records), the segment files it installed are removed, and the writer's state is restored.
//! If undoing fails too, the log is poisoned with an error that says why.

use std::sync::Arc;

use zerocopy::IntoBytes;

use super::placement::Placement;
use super::Store;
use crate::error::{Error, Result};
use crate::flusher::{FlushRequest, SyncTarget};
use crate::format::{record_size, RecordKind, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::index::Run;
use crate::record;
use crate::recovery::encode_checkpoint;
use crate::segment::Segment;
use crate::state::LogState;
use crate::version::RunRef;

/// The writer's positions when a call started.
pub(super) struct Undo {
    active: Arc<Segment>,
    write_pos: u64,
    writeback_pos: u64,
    last_crc: u32,
    crc_at: Option<u64>,
    tail: Option<Arc<Run>>,
    tail_len: u64,
    /// A copy of the runs when the log is empty (an append may then drop them all).
    runs: Option<Vec<RunRef>>,
    runs_len: usize,
    last_limit: Option<u64>,
    segments_len: usize,
    next_seq: u64,
    dir_dirty: bool,
    stream_group: u64,
    state: LogState,
}

impl Undo {
    /// Keeps a copy of every run, for a call that changes runs other than the tail (a
    /// truncate inside the call): undoing it restores them all.
    pub(super) fn keep_runs(&mut self, runs: Vec<RunRef>) {
        self.runs = Some(runs);
    }
}

/// Effects of a call that wait until it cannot fail any more.
#[derive(Default)]
pub(super) struct Pending {
    /// Runs frozen by a rollover, and the length readers may see of each.
    pub(super) publish: Vec<(Arc<Run>, u64)>,
    /// Segments sealed by the call, for the flusher to sync and mark.
    sealed: Vec<SyncTarget>,
    /// Segment files the call installed.
    installed: Vec<Arc<Segment>>,
    /// Where the call's writes end in the segment that was active when it started, once it
    /// rolled over (until then, `Store::write_pos`).
    first_end: Option<u64>,
    /// The layout changed: a new version must be published.
    pub(super) layout_changed: bool,
}

impl Store {
    /// Appends entries whose body is `prefix ++ payload` (the Raft layer puts the encoded log
    /// id in front of the payload without copying the payload first). All or nothing.
    pub(crate) fn append_parts<'a, I>(&mut self, entries: I) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])> + Clone,
    {
        self.check_writable()?;
        let Some(new_segments) = self.plan_append(&self.state, None, entries.clone())? else {
            return Ok(());
        };
        self.ensure_spares(new_segments)?;

        // Pass 2: write; undone entirely if anything fails.
        let undo = self.begin();
        let mut pending = Pending::default();
        match self.write_entries(entries, &mut pending) {
            Ok(()) => {
                self.finish(pending);
                self.hint_writeback();
                Ok(())
            }
            Err(e) => Err(self.rollback(undo, pending, e)),
        }
    }

    /// Pass 1 of an append, nothing written: every entry against the append rule (the first
    /// against `state`, each later one against the entry before it) and the size limit, and
    /// how many new segments the batch needs, after a record with a `lead`-byte body if one is
    /// written first. `None`: nothing to write (no entry, no lead record).
    pub(super) fn plan_append<'a, I>(
        &self,
        state: &LogState,
        lead: Option<usize>,
        entries: I,
    ) -> Result<Option<usize>>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])>,
    {
        let max = self.group_max_payload();
        let mut room = self.placement(state);
        let mut place = |len: usize| room.place(record_size(len) as u64);
        if let Some(len) = lead {
            place(len);
        }
        // The index the next entry must have, once the first one is checked.
        let mut next: Option<u64> = None;
        for (index, prefix, payload) in entries {
            match next {
                None => state.check_append(index)?,
                Some(n) => LogState::check_follows(n, index)?,
            }
            // Cannot overflow: a checked index is at most `MAX_INDEX`.
            next = Some(index + 1);
            let len = prefix.len().saturating_add(payload.len());
            if len > max {
                return Err(Error::EntryTooLarge {
                    index,
                    size: payload.len(),
                    max: max.saturating_sub(prefix.len()),
                    segment_size: self.config.segment_size,
                });
            }
            place(len);
        }
        if next.is_some() || lead.is_some() {
            self.check_group_room()?;
        }
        Ok((next.is_some() || lead.is_some()).then_some(room.new_segments))
    }

    /// The largest payload an entry of the focused group may have: [`Store::max_payload`],
    /// less the `Group` record a shared log's group needs at the start of a new segment.
    pub(crate) fn group_max_payload(&self) -> usize {
        self.max_payload()
            .saturating_sub(self.switch_len_in_new_segment() as usize)
    }

    /// Places records of the focused group, whose state will be `state`, after the write
    /// position without writing them: how many new segments they need.
    pub(super) fn placement(&self, state: &LogState) -> Placement {
        // A new segment's checkpoints: the larger of the meta values now and after the call.
        let cp = self
            .checkpoints_len(&self.state)
            .max(self.checkpoints_len(state)) as u64;
        Placement {
            // The active segment may have another size than new ones (the config changed).
            size: self.active.size(),
            pos: self.write_pos,
            switch: self.switch_len(),
            new_size: self.config.segment_size,
            new_start: SEGMENT_HEADER_SIZE as u64 + cp,
            new_switch: self.switch_len_in_new_segment(),
            new_segments: 0,
        }
    }

    pub(super) fn write_entries<'a, I>(&mut self, entries: I, p: &mut Pending) -> Result<()>
    where
        I: Iterator<Item = (u64, &'a [u8], &'a [u8])>,
    {
        let mut seed = self.active.seed();
        let mut size = self.active.size();
        for (index, prefix, payload) in entries {
            let rs = record_size(prefix.len() + payload.len()) as u64;
            if self.write_pos + self.switch_len() + rs > size {
                self.rollover(p)?;
                seed = self.active.seed();
                size = self.active.size();
                self.check_fits_after_rollover(rs)?;
            }
            self.switch_stream()?;
            let h = record::header_with(seed, RecordKind::Entry, index, &[prefix, payload]);
            let pos = self.write_pos as usize;
            // SAFETY: `pos..pos+rs` is at or past the published end of the active segment
            // (I1: only this thread writes, and it publishes only when the call succeeds) and
            // inside the map (checked against the segment size just above).
            unsafe { self.active.write_record(pos, &h, [prefix, payload])? };
            self.last_crc = h.crc.get();
            self.crc_at = None;
            self.index_entry(index, pos, rs, p);
        }
        Ok(())
    }

    /// Records an entry just written at `pos` (`rs` bytes) of the active segment: its slot
    /// in the tail run (a new run if there is none), the write position and the state.
    #[inline]
    pub(super) fn index_entry(&mut self, index: u64, pos: usize, rs: u64, p: &mut Pending) {
        if self.state.is_empty() || self.tail.is_none() {
            self.start_run(index, p);
        }
        if let Some(tail) = &self.tail {
            tail.set(self.tail_len as usize, pos as u32);
        }
        self.tail_len += 1;
        self.write_pos += rs;
        self.state.apply_append(index);
    }

    /// Before the first entry of an empty log, or the first one of a segment: the layout
    /// changes, and a new tail run starts if there is none.
    #[cold]
    fn start_run(&mut self, index: u64, p: &mut Pending) {
        if self.state.is_empty() {
            if index != self.state.next {
                // An empty log jumping ahead: older runs are all below the new first index.
                self.tail = None;
                self.version.runs.clear();
            }
            p.layout_changed = true;
        }
        if self.tail.is_none() {
            // In a new segment, as many slots as the previous segment's run had (not after a
            // truncate, whose new run shares the segment with the run it cut).
            let expected = match self.version.runs.last() {
                Some(r) if r.limit != u64::MAX && !Arc::ptr_eq(r.run.segment(), &self.active) => {
                    r.limit
                }
                _ => 0,
            };
            let run = Arc::new(Run::new(self.active.clone(), index));
            run.reserve(expected);
            self.version.runs.push(RunRef {
                run: run.clone(),
                limit: u64::MAX,
            });
            self.tail = Some(run);
            self.tail_len = 0;
            p.layout_changed = true;
        }
    }

    /// Every few MiB of new data, asks the flush thread to start write-back of the completed
    /// pages (not waiting for it), so that write-back overlaps appending. Once an eighth of
    /// the active segment is written, tells the preparer that its next file will be wanted
    /// (it makes none before: a log that writes little never pays for one; seven eighths of
    /// a segment leave it the time to make one ahead of a bulk load).
    pub(super) fn hint_writeback(&mut self) {
        const STEP: u64 = 4 << 20;
        const PAGE: u64 = 4096;
        if self.write_pos > self.active.size() / 8 {
            self.preparer.want_next();
        }
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

    /// Writes one small record (meta, truncate, purge, reset), rolling over first if it does
    /// not fit. All or nothing, like an append.
    pub(super) fn write_record(&mut self, kind: RecordKind, arg: u64, body: &[u8]) -> Result<()> {
        if kind != RecordKind::GroupRemove {
            self.check_group_room()?;
        }
        let undo = self.begin();
        let mut pending = Pending::default();
        match self.roll_and_write(kind, arg, body, &mut pending) {
            Ok(()) => {
                self.finish(pending);
                Ok(())
            }
            Err(e) => Err(self.rollback(undo, pending, e)),
        }
    }

    pub(super) fn roll_and_write(
        &mut self,
        kind: RecordKind,
        arg: u64,
        body: &[u8],
        p: &mut Pending,
    ) -> Result<()> {
        // Records that belong to the focused group follow a `Group` record naming it; a group
        // removal names its group itself.
        let switch = if kind == RecordKind::GroupRemove {
            0
        } else {
            self.switch_len()
        };
        if self.write_pos + switch + record_size(body.len()) as u64 > self.active.size() {
            self.ensure_spares(1)?;
            self.rollover(p)?;
        }
        if kind != RecordKind::GroupRemove {
            self.switch_stream()?;
        }
        self.write_here(kind, arg, body)
    }

    /// Starts a new segment outside any other call (at open, after a sealed newest segment).
    pub(super) fn roll_to_new_segment(&mut self) -> Result<()> {
        let undo = self.begin();
        let mut pending = Pending::default();
        match self.rollover(&mut pending) {
            Ok(()) => {
                self.finish(pending);
                Ok(())
            }
            Err(e) => Err(self.rollback(undo, pending, e)),
        }
    }

    /// After a rollover: a record of `rs` bytes (and the `Group` record before it) must fit
    /// in the new segment, after its checkpoints. The planning pass and the meta and group
    /// budgets guarantee it; this check keeps a broken promise from writing past the map.
    pub(super) fn check_fits_after_rollover(&self, rs: u64) -> Result<()> {
        let end = self.write_pos + self.switch_len() + rs;
        if end > self.active.size() {
            return Err(Error::InvalidConfig(format!(
                "a {rs}-byte record does not fit in the new segment {} after its checkpoints \
                 (it would end at {end}, segment_size {})",
                self.active.path().display(),
                self.active.size()
            )));
        }
        Ok(())
    }

    /// Writes a record at the write position of the active segment. Never rolls over: a
    /// record that does not fit is an error (so a rollover can never recurse).
    pub(super) fn write_here(&mut self, kind: RecordKind, arg: u64, body: &[u8]) -> Result<()> {
        let rs = record_size(body.len()) as u64;
        if self.write_pos + rs > self.active.size() {
            return Err(Error::InvalidConfig(format!(
                "a {}-byte record does not fit in segment {} at offset {} (segment_size {})",
                rs,
                self.active.path().display(),
                self.write_pos,
                self.active.size()
            )));
        }
        let h = record::header_with(self.active.seed(), kind, arg, &[body]);
        let pos = self.write_pos as usize;
        // SAFETY: unpublished space of the active segment, inside the map (checked above);
        // only the writer thread writes (I1).
        unsafe {
            self.active.write_at(pos, h.as_bytes())?;
            self.active.write_at(pos + RECORD_HEADER_SIZE, body)?;
        }
        self.last_crc = h.crc.get();
        self.crc_at = None;
        self.write_pos += rs;
        Ok(())
    }

    /// Writes the active segment's opening checkpoint, chained to the previous segment's
    /// end and last record CRC.
    pub(super) fn write_checkpoint(&mut self, prev_end: u64, prev_crc: u32) -> Result<()> {
        let body = encode_checkpoint(&self.main_state(), prev_end, prev_crc);
        self.write_pos = SEGMENT_HEADER_SIZE as u64;
        self.write_here(RecordKind::Checkpoint, 0, &body)?;
        self.write_group_checkpoints()
    }

    /// Seals the active segment and starts the next one. Its effects on readers and the
    /// flusher wait in `p`.
    pub(super) fn rollover(&mut self, p: &mut Pending) -> Result<()> {
        // The previous segment's rename must be durable before this one is issued: else a
        // power cut could keep this name and lose that one (a gap). Nothing of this rollover
        // is done yet if it fails.
        self.flusher
            .dir_syncs()
            .sync_if_behind(&*self.opts.fs, &self.dir)?;
        let prepared = match self.spares.pop() {
            Some(f) => f,
            None => self.preparer.take()?,
        };
        let seg = Arc::new(Segment::install(prepared, &self.dir, self.next_seq)?);
        self.flusher.dir_syncs().renamed();
        p.installed.push(seg.clone());
        self.next_seq += 1;
        if let Some(t) = self.tail.take() {
            p.publish.push((t, self.tail_len));
            if let Some(last) = self.version.runs.last_mut() {
                last.limit = self.tail_len;
            }
            self.tail_len = 0;
        }
        let old = std::mem::replace(&mut self.active, seg.clone());
        // The old segment's last record may have been copied by a concurrent append: every
        // reservation is written by now (`reserve.rs`), so its CRC can be read back.
        if let Some(at) = self.crc_at {
            // SAFETY: `at` is the offset of the last record of the old segment, whose copy
            // completed before this rollover (the reserving caller drained the frontier, or
            // copied it itself); it is never written again.
            self.last_crc = unsafe { old.read_u32(at as usize) };
        }
        let old_end = self.write_pos;
        p.first_end.get_or_insert(old_end);
        // The sealed segment's write-back starts in the background once the call succeeds:
        // its sync overlaps with appends to the new segment.
        p.sealed.push(SyncTarget {
            segment: old,
            end: old_end,
            seal: true,
        });
        self.version.segments.push(seg);
        self.dir_dirty = true;
        p.layout_changed = true;
        self.write_checkpoint(old_end, self.last_crc)?;
        self.crc_at = None;
        self.writeback_pos = SEGMENT_HEADER_SIZE as u64;
        Ok(())
    }

    /// Saves what a call may change.
    pub(super) fn begin(&self) -> Undo {
        Undo {
            active: self.active.clone(),
            write_pos: self.write_pos,
            writeback_pos: self.writeback_pos,
            last_crc: self.last_crc,
            crc_at: self.crc_at,
            tail: self.tail.clone(),
            tail_len: self.tail_len,
            runs: self.state.is_empty().then(|| self.version.runs.clone()),
            runs_len: self.version.runs.len(),
            last_limit: self.version.runs.last().map(|r| r.limit),
            segments_len: self.version.segments.len(),
            next_seq: self.next_seq,
            dir_dirty: self.dir_dirty,
            stream_group: self.stream_group,
            state: self.state.clone(),
        }
    }

    /// Makes a successful call visible: the version readers hold is superseded first, then
    /// run lengths are published, sealed segments go to the flusher, and the new version is
    /// stored.
    pub(super) fn finish(&mut self, mut p: Pending) {
        if p.layout_changed {
            self.current.load().supersede();
        }
        for (run, len) in p.publish.drain(..) {
            run.publish(len);
        }
        if let Some(t) = &self.tail {
            t.publish(self.tail_len);
        }
        self.submit_seals(&mut p);
        if p.layout_changed {
            self.store_version();
        } else {
            self.notify.wake();
        }
    }

    /// Sends the seal requests of segments a call rolled over from to the flusher.
    pub(super) fn submit_seals(&mut self, p: &mut Pending) {
        for target in p.sealed.drain(..) {
            let _ = self.flusher.submit(FlushRequest {
                targets: vec![target],
                sync_dir: true,
                deletes: Vec::new(),
                writeback: None,
                callback: None,
            });
        }
    }

    /// Undoes a call that failed with `err`, and returns the error to report: `err` itself,
    /// or [`Error::Poisoned`] if the undo failed too.
    pub(super) fn rollback(&mut self, u: Undo, p: Pending, err: Error) -> Error {
        let mut failures: Vec<String> = Vec::new();
        let end = p.first_end.unwrap_or(self.write_pos);
        if end > u.write_pos {
            // SAFETY: `u.write_pos..end` was written by this call and never published (run
            // lengths are published only by `finish`), so no reader can hold a slice over it;
            // only this thread writes the segment.
            let zeroed = unsafe {
                u.active
                    .zero_at(u.write_pos as usize, (end - u.write_pos) as usize)
            };
            if let Err(e) = zeroed {
                failures.push(format!("zeroing its bytes: {e}"));
            }
        }
        // Newest first, each removal durable before the next: a power cut never leaves a
        // newer installed name without an older one (a gap). On a failure the older ones stay
        // (the log is poisoned; recovery drops them as never written or after the cut).
        for (i, seg) in p.installed.iter().rev().enumerate() {
            if i > 0 {
                if let Err(e) = crate::io::sync_dir(&*self.opts.fs, &self.dir) {
                    failures.push(format!("{e}"));
                    break;
                }
            }
            match self.opts.fs.remove(seg.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    failures.push(format!("removing {}: {e}", seg.path().display()));
                    break;
                }
            }
        }
        let removed_files = !p.installed.is_empty();
        self.active = u.active;
        self.write_pos = u.write_pos;
        self.writeback_pos = u.writeback_pos;
        self.last_crc = u.last_crc;
        self.crc_at = u.crc_at;
        self.tail = u.tail;
        self.tail_len = u.tail_len;
        match u.runs {
            Some(runs) => self.version.runs = runs,
            None => {
                self.version.runs.truncate(u.runs_len);
                if let (Some(last), Some(limit)) = (self.version.runs.last_mut(), u.last_limit) {
                    last.limit = limit;
                }
            }
        }
        self.version.segments.truncate(u.segments_len);
        self.next_seq = u.next_seq;
        // Files were created and removed: make the removals durable with the next flush.
        self.dir_dirty = u.dir_dirty || removed_files;
        self.stream_group = u.stream_group;
        self.state = u.state;
        if failures.is_empty() {
            err
        } else {
            self.flusher.poison(format!(
                "a write failed ({err}) and undoing it failed too: {}",
                failures.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Config, WriteMode};

    /// Entries with a prefix, through both ways of writing (into the map, and `pwrite` for
    /// copy-on-write file systems), across rollovers: they read back checked, also after a
    /// reopen, as `prefix ++ payload`.
    #[test]
    fn entries_with_a_prefix_round_trip_in_both_write_modes() {
        for mode in [WriteMode::Map, WriteMode::Pwrite] {
            let dir = tempfile::tempdir().unwrap();
            let config = Config {
                segment_size: crate::format::MIN_SEGMENT_SIZE,
                write_mode: mode,
                ..Config::default()
            };
            let body = |i: u64| -> (Vec<u8>, Vec<u8>) {
                let prefix = i.to_le_bytes()[..(i % 9) as usize].to_vec();
                (prefix, vec![(i % 251) as u8; (i * 37 % 700) as usize])
            };
            let n = 600u64;
            let bodies: Vec<_> = (0..n).map(body).collect();
            let mut store = Store::open(dir.path(), config.clone()).unwrap();
            assert_eq!(store.write_mode(), mode);
            for chunk in (0..n).collect::<Vec<_>>().chunks(7) {
                store
                    .append_parts(chunk.iter().map(|&i| {
                        let (p, q) = &bodies[i as usize];
                        (i, &p[..], &q[..])
                    }))
                    .unwrap();
            }
            store.sync().unwrap();
            assert!(store.version.segments.len() > 2, "{mode:?}: no rollover");
            let check = |store: &Store| {
                let view = store.reader().view();
                for (i, (p, q)) in bodies.iter().enumerate() {
                    let got = view.get_checked(i as u64).unwrap().unwrap();
                    assert_eq!(got, [&p[..], &q[..]].concat(), "{mode:?} entry {i}");
                }
            };
            check(&store);
            drop(store);
            check(&Store::open(dir.path(), config).unwrap());
        }
    }
}
