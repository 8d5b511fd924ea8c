//! The receiver's side of replication: frames checked, then copied into the map.
//!
//! Every frame of a batch is checked ([`crate::frames::parse`]) and every rule applied on a
//! copy of the state before the first byte is written; then each frame is copied as it
//! came, with its salted CRC rewritten for this file ([`record::reseal`]: 20 header bytes,
//! the body is not read again). The write is the same all-or-nothing transaction as an
//! append (`write.rs`), and may truncate a conflicting suffix first, in the same
//! transaction (the Raft layer's conflict rule).

use zerocopy::IntoBytes;

use super::write::Pending;
use super::Store;
use crate::error::{Error, Result};
use crate::format::{record_size, RecordKind, RECORD_HEADER_SIZE};
use crate::frames::{parse, Frame};
use crate::record;

impl Store {
    /// Appends a batch of replication frames (from [`View::frames`](crate::View::frames)
    /// on another log, `docs/replication.md`): entries with consecutive indexes following the
    /// last one, as [`Store::append_batch`] takes them.
    ///
    /// Every frame is checked before anything is written: framing, kind, body checksum,
    /// consecutive indexes ([`Error::BadFrame`] names the entry and the byte offset in
    /// `bytes`), then the append rules and sizes of [`Store::append_batch`]. The bytes are
    /// copied into the map as they came; only each record's salted CRC is rewritten for this
    /// file. All or nothing, like every writer call. The engine has no log ids, so a batch
    /// that overlaps the log is refused ([`Error::NonConsecutive`]);
    /// [`RaftLog::append_frames`](crate::raft::RaftLog::append_frames) resolves conflicts.
    pub fn append_frames(&mut self, bytes: &[u8]) -> Result<()> {
        let frames = parse(bytes).collect::<Result<Vec<_>>>()?;
        self.write_frames(None, &frames)
    }

    /// Writes checked frames, after truncating every entry `>= truncate_from` first when it is
    /// given, as one all-or-nothing call.
    pub(crate) fn write_frames(
        &mut self,
        truncate_from: Option<u64>,
        frames: &[Frame<'_>],
    ) -> Result<()> {
        self.check_writable()?;
        // Pass 1: rules, sizes and new segments, on a copy of the state.
        let mut sim = self.state.clone();
        let truncate = match truncate_from {
            Some(from) if sim.check_truncate(from)? => {
                sim.apply_truncate(from);
                Some(from)
            }
            _ => None,
        };
        let max = self.group_max_payload();
        let segment_size = self.config.segment_size;
        let mut room = self.placement(&sim);
        if truncate.is_some() {
            room.place(record_size(0) as u64);
        }
        for f in frames {
            sim.check_append(f.index)?;
            if f.body.len() > max {
                return Err(Error::EntryTooLarge {
                    index: f.index,
                    size: f.body.len(),
                    max,
                    segment_size,
                });
            }
            sim.apply_append(f.index);
            room.place(f.size() as u64);
        }
        if frames.is_empty() && truncate.is_none() {
            return Ok(());
        }
        self.check_group_room()?;
        self.ensure_spares(room.new_segments)?;

        // Pass 2: write; undone entirely if anything fails.
        let mut undo = self.begin();
        if truncate.is_some() {
            undo.keep_runs(self.version.runs.clone());
        }
        let mut pending = Pending::default();
        match self.copy_frames(truncate, frames, &mut pending) {
            Ok(()) => {
                self.finish(pending);
                self.hint_writeback();
                Ok(())
            }
            Err(e) => Err(self.rollback(undo, pending, e)),
        }
    }

    fn copy_frames(
        &mut self,
        truncate: Option<u64>,
        frames: &[Frame<'_>],
        p: &mut Pending,
    ) -> Result<()> {
        if let Some(from) = truncate {
            self.roll_and_write(RecordKind::Truncate, from, &[], p)?;
            self.apply_truncate(from);
            p.layout_changed = true;
        }
        for f in frames {
            let rs = f.size() as u64;
            self.make_room(rs, p)?;
            let h = record::reseal(self.active.seed(), f.header, f.body);
            let pos = self.write_pos as usize;
            // SAFETY: `pos..pos+rs` is at or past the published end of the active segment
            // (I1: only this thread writes, and it publishes only when the call succeeds) and
            // inside the map (checked against the segment size just above).
            unsafe {
                self.active.write_at(pos, h.as_bytes())?;
                self.active.write_at(pos + RECORD_HEADER_SIZE, f.tail)?;
            }
            self.last_crc = h.crc.get();
            self.crc_at = None;
            self.index_entry(f.index, pos, rs, p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::frames::{encode, parse};
    use crate::io::sim::{scratch, Kind, SimFs};
    use crate::{Config, Store};

    fn config() -> Config {
        Config {
            segment_size: 4096,
            prepare_ahead: false,
            ..Config::default()
        }
    }

    fn entries(store: &Store) -> Vec<(u64, Vec<u8>)> {
        let view = store.reader().view();
        view.range(..)
            .map(|e| (e.index, e.payload.to_vec()))
            .collect()
    }

    /// A truncate and the frames after it are one call: when the rollover in the middle
    /// fails (the new segment's rename), the truncate is undone with the frames, and readers
    /// still see every entry.
    #[test]
    fn a_failed_write_after_the_truncate_undoes_the_truncate_too() {
        let dir = scratch("rml-frames");
        let fs = Arc::new(SimFs::new(dir.path()));
        let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
        // Entries in several segments: the truncate drops whole runs, not only the tail.
        let old: Vec<Vec<u8>> = (0..40u64).map(|i| vec![i as u8; 150]).collect();
        store
            .append_batch(old.iter().enumerate().map(|(i, p)| (i as u64, &p[..])))
            .unwrap();
        let before = entries(&store);
        assert!(store.reader().view().segment_count() > 1);
        let reader = store.reader();
        let bodies: Vec<Vec<u8>> = (5..40u64).map(|i| vec![0x80 | i as u8; 200]).collect();
        let wire = encode(bodies.iter().zip(5u64..).map(|(b, i)| (i, &b[..])));
        let frames = parse(&wire).collect::<crate::Result<Vec<_>>>().unwrap();
        fs.fail_nth(Kind::Rename, fs.calls(Kind::Rename) + 1, libc::EIO);
        let err = store.write_frames(Some(5), &frames).unwrap_err();
        assert!(matches!(err, crate::Error::Io { .. }), "{err}");
        assert_eq!(entries(&store), before);
        assert_eq!(reader.view().next_index(), 40);
        assert_eq!((store.first_index(), store.next_index()), (0, 40));
        // The writer's own layout was restored too: the next layout change publishes it.
        store.put_meta(1, b"a new version").unwrap();
        assert_eq!(entries(&store), before);
        store.append(40, b"forty").unwrap();
        let mut with_40 = before.clone();
        with_40.push((40, b"forty".to_vec()));
        assert_eq!(entries(&store), with_40);
        // The same frames succeed now, and the log reopens with their result.
        store.write_frames(Some(5), &frames).unwrap();
        let mut want: Vec<(u64, Vec<u8>)> = before[..5].to_vec();
        want.extend((5..40u64).zip(bodies));
        assert_eq!(entries(&store), want);
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path(), config()).unwrap();
        assert_eq!(entries(&store), want);
    }
}
