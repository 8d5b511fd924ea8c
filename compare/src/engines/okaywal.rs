//! okaywal (a generic WAL with checkpoints, from khonsulabs).
//!
//! okaywal has no notion of a log index: the user keeps the chunk positions. Here each Raft
//! entry is one chunk; the harness keeps `index -> LogPosition` in memory (what a user of
//! okaywal would have to do) and rebuilds it on recovery from the manager's `recover` calls.

use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use okaywal::{
    Configuration, Entry, LogManager, LogPosition, ReadChunkResult, SegmentReader, WriteAheadLog,
};

use crate::harness::{err, Batch, Engine, Fail, Gen, Mode, R};

#[derive(Debug, Default)]
struct Positions(Arc<Mutex<Vec<LogPosition>>>);

impl LogManager for Positions {
    /// Rebuilds `index -> position`, reading every chunk and checking its CRC (what
    /// `Entry::read_all_chunks` does, without keeping the bytes).
    ///
    /// Not `EntryChunk::skip_remaining_bytes()`: in okaywal 0.3.1 it skips the 4-byte CRC and
    /// then the chunk's `Drop` skips 4 more bytes, so every later entry of the segment is lost
    /// from recovery (okaywal's own open() loop calls it on chunks the manager left unread).
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        let mut found = Vec::new();
        let mut buf = Vec::new();
        loop {
            match entry.read_chunk()? {
                ReadChunkResult::Chunk(mut c) => {
                    found.push(c.log_position());
                    buf.clear();
                    c.read_to_end(&mut buf)?;
                    if !c.check_crc()? {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk crc"));
                    }
                }
                ReadChunkResult::EndOfEntry => break,
                // An entry cut by a crash is not part of the log.
                ReadChunkResult::AbortedEntry => return Ok(()),
            }
        }
        self.0.lock().unwrap().extend(found);
        Ok(())
    }

    /// Never reached: checkpointing is disabled (see `open`).
    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: okaywal::EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Receives each chunk's bytes to write.
type Put<'a> = dyn FnMut(&[u8]) -> R<()> + 'a;

pub struct OkayWalEngine {
    wal: WriteAheadLog,
    positions: Arc<Mutex<Vec<LogPosition>>>,
}

impl OkayWalEngine {
    fn write_entry(&mut self, batches: &mut dyn FnMut(&mut Put<'_>) -> R<()>) -> R<()> {
        let mut w = self.wal.begin_entry().map_err(err("begin_entry"))?;
        let mut new = Vec::new();
        batches(&mut |p: &[u8]| {
            let rec = w.write_chunk(p).map_err(err("write_chunk"))?;
            new.push(rec.position);
            Ok(())
        })?;
        w.commit().map_err(err("EntryWriter::commit"))?;
        self.positions.lock().unwrap().extend(new);
        Ok(())
    }
}

impl Engine for OkayWalEngine {
    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        let positions = Arc::new(Mutex::new(Vec::new()));
        // okaywal checkpoints a file once it passes `checkpoint_after_bytes` (default 768 KiB)
        // and its data is then gone from the WAL: a Raft log must keep its entries readable, so
        // checkpointing is disabled.
        let wal = Configuration::default_for(dir)
            .checkpoint_after_bytes(u64::MAX)
            .open(Positions(positions.clone()))
            .map_err(err("okaywal open/recover"))?;
        Ok(Self { wal, positions })
    }

    fn append(&mut self, _batch: &Batch) -> R<()> {
        Err(Fail::Unsupported(
            "okaywal has no un-synced append: an entry is readable and recoverable only after \
             EntryWriter::commit(), and every commit fsyncs"
                .into(),
        ))
    }

    /// One okaywal entry per batch (one chunk per Raft entry), committed = fsynced.
    fn append_durable(&mut self, batch: &Batch) -> R<()> {
        self.write_entry(&mut |put| {
            for (_, p) in batch.iter() {
                put(p)?;
            }
            Ok(())
        })
    }

    fn sync(&mut self) -> R<()> {
        Err(Fail::Unsupported(
            "okaywal has no separate sync; commit() is the sync".into(),
        ))
    }

    /// Workload 2 as okaywal can express it: ONE entry holding all N chunks, one commit.
    fn bulk_then_sync(&mut self, gen: &Gen, first: u64, n: u64, per_batch: usize) -> R<()> {
        self.write_entry(&mut |put| {
            gen.each_batch(first, n, per_batch, |b| {
                for (_, p) in b.iter() {
                    put(p)?;
                }
                Ok(())
            })
        })
    }

    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let pos = self.positions.lock().unwrap();
        let mut buf = Vec::new();
        for i in from..to {
            let p = *pos
                .get((i - 1) as usize)
                .ok_or_else(|| Fail::Error(format!("no position for index {i}")))?;
            let mut r = self.wal.read_at(p).map_err(err("read_at"))?;
            buf.clear();
            r.read_to_end(&mut buf).map_err(err("ChunkReader::read"))?;
            if !r.crc_is_valid().map_err(err("crc"))? {
                return Err(Fail::Error(format!("crc mismatch at index {i}")));
            }
            f(i, &buf);
        }
        Ok(())
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        let n = self.positions.lock().unwrap().len() as u64;
        Ok((n > 0).then_some(n))
    }

    fn close(self) -> R<()> {
        self.wal.shutdown().map_err(err("okaywal shutdown"))
    }
}
