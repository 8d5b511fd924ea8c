//! raft-mmap-log's Raft layer (`RaftLog`, this repository): what a Raft user calls. Each entry
//! also stores its 24-byte log id, and every call checks Raft's rules.

use std::path::Path;

use raft_mmap_log::raft::{LogId, RaftLog, RaftReader, RaftTypes};
use raft_mmap_log::Config;

use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Mode, TailReader, R};

pub struct OursRaftEngine {
    log: RaftLog<RaftTypes>,
}

impl Engine for OursRaftEngine {
    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        let cfg = Config {
            segment_size: SEGMENT_BYTES,
            ..Config::default()
        };
        let log = RaftLog::<RaftTypes>::open(dir, cfg).map_err(err("RaftLog::open"))?;
        Ok(Self { log })
    }

    fn append(&mut self, batch: &Batch) -> R<()> {
        self.log
            .append(batch.iter().map(|(i, p)| (LogId::new(1, 1, i), p)))
            .map_err(err("RaftLog::append"))
    }

    fn sync(&mut self) -> R<()> {
        self.log.sync().map_err(err("RaftLog::sync"))
    }

    /// Reads through the public reader API: a view and a zero-copy range, each log id decoded
    /// and checked against its index.
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let view = self.log.reader().view();
        for e in view.read(from..to) {
            let (id, p) = e.map_err(err("RaftView::read"))?;
            f(id.index, p);
        }
        Ok(())
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        Ok(self.log.reader().view().raw().last_index())
    }

    /// A Raft node purges only what it has committed (the default rules): commit the last
    /// purged log id, then `purge_upto` it.
    fn purge_to(&mut self, first_kept: u64) -> R<()> {
        let Some(upto) = first_kept.checked_sub(1).filter(|&i| i > 0) else {
            return Ok(());
        };
        let id = LogId::new(1, 1, upto);
        self.log.commit(id).map_err(err("RaftLog::commit"))?;
        self.log.purge_upto(id).map_err(err("RaftLog::purge_upto"))
    }

    fn tail_reader(&mut self) -> R<Box<dyn TailReader>> {
        Ok(Box::new(self.log.reader()))
    }

    fn close(self) -> R<()> {
        drop(self.log);
        Ok(())
    }
}

/// Another thread's reads through the Raft layer: a fresh view per call, log ids decoded and
/// checked.
impl TailReader for RaftReader<RaftTypes> {
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let view = self.view();
        for e in view.read(from..to) {
            let (id, p) = e.map_err(err("RaftView::read"))?;
            f(id.index, p);
        }
        Ok(())
    }
}
