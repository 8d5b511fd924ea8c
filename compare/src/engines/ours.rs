//! raft-mmap-log (this repository).

use std::path::Path;

use raft_mmap_log::{Config, Store};

use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Mode, TailReader, R};

pub struct OursEngine {
    store: Store,
}

impl Engine for OursEngine {
    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        let cfg = Config {
            segment_size: SEGMENT_BYTES,
            ..Config::default()
        };
        let store = Store::open(dir, cfg).map_err(err("Store::open"))?;
        Ok(Self { store })
    }

    fn append(&mut self, batch: &Batch) -> R<()> {
        self.store
            .append_batch(batch.iter())
            .map_err(err("Store::append_batch"))
    }

    fn sync(&mut self) -> R<()> {
        self.store.sync().map_err(err("Store::sync"))
    }

    /// Reads through the public reader API: a snapshot and a zero-copy range.
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let snap = self.store.reader().view();
        for e in snap.range(from..to) {
            f(e.index, e.payload);
        }
        Ok(())
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        Ok(self.store.last_index())
    }

    fn purge_to(&mut self, first_kept: u64) -> R<()> {
        self.store
            .purge_to(first_kept)
            .map_err(err("Store::purge_to"))
    }

    fn tail_reader(&mut self) -> R<Box<dyn TailReader>> {
        Ok(Box::new(self.store.reader()))
    }

    fn close(self) -> R<()> {
        drop(self.store);
        Ok(())
    }
}

/// Another thread's reads: a fresh view per call (what a replication loop does), then a
/// zero-copy range.
impl TailReader for raft_mmap_log::Reader {
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let snap = self.view();
        for e in snap.range(from..to) {
            f(e.index, e.payload);
        }
        Ok(())
    }
}
