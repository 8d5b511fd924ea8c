//! The receiver's side of replication without the copy: a batch of frames is read (from a
//! socket, say) straight into the active segment's map, checked there, and committed in
//! place.
//!
//! 1. **Land.** Room for the whole batch is taken at the writer's position in the active
//!    segment (after a rollover when it does not fit), past the published end, so no reader
//!    can see it (I1), and the caller's `fill` reads the batch into it.
//! 2. **Check.** The frames are parsed in place ([`crate::frames::parse`]: framing, kind, body
//!    checksum, consecutive indexes), then the append rules and sizes are applied on a copy of
//!    the state, as [`Store::append_frames`] does.
//! 3. **Commit.** Each record's salted CRC is rewritten for this file (24 header bytes; the
//!    body is not read again), the entries are indexed, and the batch is published as one
//!    append.
//!
//! A batch that fails `fill` (a dropped connection), a check or a rule is **abandoned**: its
//! bytes are zeroed and the call is undone (a rollover too), so nothing of it is visible or
//! durable and the room is reused. A crash before the commit leaves bytes after the log's
//! end whose record CRCs are the sender's, under another salt: recovery ends the log before
//! them, as at any torn tail.
//!
//! Where the map cannot take the batch (records written with `pwrite`, an active segment in
//! the first format version, a batch larger than a segment, a group of a shared log whose
//! records need a group record first), it is read into a buffer and appended with the copy
//! path instead ([`Received::Buffered`]).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use zerocopy::IntoBytes;

use super::write::{Pending, Undo};
use super::Store;
use crate::error::{Error, Result};
use crate::format::{RecordHeader, SEGMENT_HEADER_SIZE};
use crate::frames::{parse, Frame};
use crate::record;
use crate::segment::{Segment, WriteVia};

/// A received batch: in the map, or in a buffer where the map could not take it. (One per
/// call, moved once: the size of the undo record inline costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    /// In the active segment's map, not yet checked or published.
    Landed(Landed),
    /// Read into a buffer: to be appended with the copy path.
    Buffered(Vec<u8>),
}

/// A batch read into the map at `pos..pos + len` of `segment`, with the call's undo record.
pub(crate) struct Landed {
    undo: Undo,
    pending: Pending,
    segment: Arc<Segment>,
    pos: usize,
    len: usize,
}

impl Landed {
    /// The received bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the room is this call's, past the published end (no reader sees it), and
        // nothing writes it until `commit_landed` or `abandon`, which take the `Landed` by
        // value (so this borrow has ended).
        unsafe { self.segment.bytes(self.pos, self.len) }
    }
}

/// One checked frame of a landed batch: where it lies in the batch, and its header (copied,
/// so that no borrow of the batch is held while the headers are rewritten).
pub(crate) struct Placed {
    pub(crate) index: u64,
    /// Offset in the batch.
    pub(crate) at: usize,
    pub(crate) size: usize,
    pub(crate) body_len: usize,
    pub(crate) header: RecordHeader,
}

impl From<&Frame<'_>> for Placed {
    fn from(f: &Frame<'_>) -> Self {
        Placed {
            index: f.index,
            at: f.offset,
            size: f.size(),
            body_len: f.body.len(),
            header: *f.header,
        }
    }
}

/// Parses and checks the frames of a landed batch (framing, kinds, body checksums, indexes).
pub(crate) fn check_frames(bytes: &[u8]) -> Result<Vec<Placed>> {
    parse(bytes).map(|f| f.map(|f| Placed::from(&f))).collect()
}

impl Store {
    /// Receives a batch of replication frames of `len` bytes (what the sender's
    /// [`View::frames`](crate::View::frames) gave, `docs/replication.md`) straight into the
    /// log: `fill` must fill the whole buffer it gets (for example with `read_exact` on a
    /// socket), which is the room the batch takes in the active segment's map. The frames
    /// are then checked there, as [`Store::append_frames`] checks them, and committed without
    /// being copied again. All or nothing: if `fill` fails ([`Error::Receive`]) or panics, or
    /// a check fails, the room is zeroed and the log is as before.
    ///
    /// The buffer's contents before `fill` writes are unspecified (zeros, or bytes this log
    /// wrote and purged). Where the map cannot take the batch (see `docs/replication.md`),
    /// the buffer is a heap buffer and the batch is copied into the log as by
    /// [`Store::append_frames`].
    ///
    /// ```
    /// # fn main() -> raft_mmap_log::Result<()> {
    /// use std::io::Read;
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut leader = raft_mmap_log::Store::open(dir.path().join("a"), Default::default())?;
    /// leader.append_batch([(0, &b"zero"[..]), (1, b"one")])?;
    /// let batch = leader.reader().view().frames(0..2)?.to_vec();
    ///
    /// let mut follower = raft_mmap_log::Store::open(dir.path().join("b"), Default::default())?;
    /// let mut wire: &[u8] = &batch; // a socket, in a real follower
    /// follower.receive_frames(batch.len(), |buf| wire.read_exact(buf))?;
    /// assert_eq!(follower.reader().view().get(1), Some(&b"one"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn receive_frames(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        match self.receive(len, fill)? {
            Received::Buffered(buf) => self.append_frames(&buf),
            Received::Landed(landed) => match check_frames(landed.bytes()) {
                Ok(placed) => self.commit_landed(landed, &placed),
                Err(e) => Err(self.abandon(landed, e)),
            },
        }
    }

    /// Step 1: takes room for `len` bytes and has `fill` read the batch into it.
    pub(crate) fn receive(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> Result<Received> {
        self.check_writable()?;
        let receive_err = |e: std::io::Error| Error::Receive {
            len,
            source: Arc::new(e),
        };
        let room_in_new = self
            .config
            .segment_size
            .saturating_sub(SEGMENT_HEADER_SIZE as u64)
            .saturating_sub(self.checkpoints_len(&self.state) as u64);
        if len == 0
            || self.opts.via != WriteVia::Map
            || !self.active.seed().has_body_crc()
            || self.switch_len() > 0
            || len as u64 > room_in_new
        {
            let mut buf = vec![0u8; len];
            fill(&mut buf).map_err(receive_err)?;
            return Ok(Received::Buffered(buf));
        }
        let undo = self.begin();
        let mut pending = Pending::default();
        if self.write_pos + len as u64 > self.active.size() {
            let rolled = self
                .ensure_spares(1)
                .and_then(|()| self.rollover(&mut pending));
            if let Err(e) = rolled {
                return Err(self.rollback(undo, pending, e));
            }
            if self.write_pos + len as u64 > self.active.size() {
                let e = Error::InvalidConfig(format!(
                    "a received batch of {len} bytes does not fit a new segment"
                ));
                return Err(self.rollback(undo, pending, e));
            }
        }
        let segment = self.active.clone();
        let pos = self.write_pos as usize;
        // SAFETY: `pos..pos + len` is inside the map (checked just above) and past the
        // published end: only this thread writes there, no reader holds a slice over it (I1),
        // and the slice is gone when `fill` returns.
        let buf = unsafe { segment.bytes_mut(pos, len) };
        let filled = catch_unwind(AssertUnwindSafe(|| fill(buf)));
        let landed = Landed {
            undo,
            pending,
            segment,
            pos,
            len,
        };
        match filled {
            Ok(Ok(())) => Ok(Received::Landed(landed)),
            Ok(Err(e)) => Err(self.abandon(landed, receive_err(e))),
            Err(panic) => {
                let _ = self.abandon(landed, receive_err(std::io::Error::other("fill panicked")));
                resume_unwind(panic)
            }
        }
    }

    /// Step 3: applies the rules to the checked frames `placed` of `landed` and commits
    /// them in place, or abandons the batch.
    pub(crate) fn commit_landed(&mut self, mut landed: Landed, placed: &[Placed]) -> Result<()> {
        let mut sim = self.state.clone();
        let max = self.group_max_payload();
        let segment_size = self.config.segment_size;
        for f in placed {
            if let Err(e) = sim.check_append(f.index) {
                return Err(self.abandon(landed, e));
            }
            if f.body_len > max {
                let e = Error::EntryTooLarge {
                    index: f.index,
                    size: f.body_len,
                    max,
                    segment_size,
                };
                return Err(self.abandon(landed, e));
            }
            sim.apply_append(f.index);
        }
        if let Err(e) = self.check_group_room() {
            return Err(self.abandon(landed, e));
        }
        let seed = landed.segment.seed();
        for f in placed {
            let at = landed.pos + f.at;
            debug_assert_eq!(at as u64, self.write_pos);
            let h = record::reseal(seed, &f.header, &[]);
            // SAFETY: `at..at + 24` lies in this call's room (past the published end, only
            // this thread writes it); no slice over the batch is held (`placed` is a copy).
            if let Err(e) = unsafe { landed.segment.write_at(at, h.as_bytes()) } {
                return Err(self.abandon(landed, e));
            }
            self.last_crc = h.crc.get();
            self.crc_at = None;
            self.index_entry(f.index, at, f.size as u64, &mut landed.pending);
        }
        self.finish(landed.pending);
        self.hint_writeback();
        Ok(())
    }

    /// Gives a landed batch back without an error of its own (a batch with nothing new, or one
    /// the caller copies instead): as [`Store::abandon`]; fails only if undoing it failed
    /// (the log is then poisoned).
    pub(crate) fn release(&mut self, landed: Landed) -> Result<()> {
        match self.abandon(landed, Error::InvalidConfig(String::new())) {
            e @ Error::Poisoned(_) => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives a landed batch up: zeroes its room and undoes the call (a rollover too).
    pub(crate) fn abandon(&mut self, landed: Landed, err: Error) -> Error {
        // SAFETY: the room is this call's, unpublished; nothing borrows it any more.
        let _ = unsafe { landed.segment.zero_at(landed.pos, landed.len) };
        // Entries indexed so far (a failed header write) are undone with the call; a segment
        // the call rolled over to is removed.
        self.rollback(landed.undo, landed.pending, err)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::path::Path;
    use std::sync::Arc;

    use crate::io::sim::{scratch, SimFs};
    use crate::io::Fs;
    use crate::{Config, Store};

    fn config() -> Config {
        Config {
            segment_size: 64 * 1024,
            ..Config::default()
        }
    }

    /// A power cut while a batch lies in the map, received but not checked: each image (what
    /// reached the disk of the synced and unsynced pages, drawn independently) recovers
    /// exactly the entries synced before it, whatever of the batch's pages it holds.
    #[test]
    fn a_power_cut_with_a_batch_in_the_map_recovers_the_synced_entries() {
        let leader_dir = scratch("rml-receive");
        let mut leader = Store::open(leader_dir.path(), config()).unwrap();
        let payload = |i: u64| vec![(i % 251) as u8; 40 + (i % 300) as usize];
        let data: Vec<(u64, Vec<u8>)> = (0..300).map(|i| (i, payload(i))).collect();
        leader
            .append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
            .unwrap();
        let frames = |r: std::ops::Range<u64>| leader.reader().view().frames(r).unwrap().to_vec();
        let (first, second) = (frames(0..150), frames(150..300));
        for seed in 0..6u64 {
            let dir = scratch("rml-receive");
            let images: Vec<tempfile::TempDir> = (0..4).map(|_| scratch("rml-receive")).collect();
            let into: Vec<&Path> = images.iter().map(|d| d.path()).collect();
            let fs = Arc::new(SimFs::new(dir.path()));
            let mut f = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
            let mut wire = &first[..];
            f.receive_frames(first.len(), |b| wire.read_exact(b))
                .unwrap();
            f.sync().unwrap();
            let got = f.receive_frames(second.len(), |room| {
                room.copy_from_slice(&second);
                // One more effect, and the power goes off right after it.
                fs.cut_after(fs.effects() + 1, &into, seed);
                fs.sync_dir(dir.path())?;
                Err(std::io::ErrorKind::Interrupted.into())
            });
            assert!(got.is_err());
            assert!(fs.cut_taken());
            drop(f);
            for image in &into {
                let s = Store::open(image, config()).unwrap();
                let view = s.reader().view();
                assert_eq!(view.next_index(), 150, "seed {seed}");
                for i in 0..150 {
                    assert_eq!(view.get_checked(i).unwrap(), Some(&payload(i)[..]));
                }
            }
        }
    }
}
