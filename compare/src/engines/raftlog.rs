//! raft-log (databend's chunked WAL for Raft).

use std::io;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::{Config, RaftLog, Types};

use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Mode, R};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct T;

impl Types for T {
    /// (term, index)
    type LogId = (u64, u64);
    type LogPayload = Vec<u8>;
    type Vote = (u64, u64);
    type Callback = SyncSender<Result<(), io::Error>>;
    type UserData = String;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.1
    }
    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.len() as u64
    }
}

pub struct RaftLogEngine {
    log: RaftLog<T>,
}

impl RaftLogEngine {
    fn flush_sync(&mut self) -> R<()> {
        let (tx, rx) = sync_channel(1);
        self.log
            .flush(true, Some(tx))
            .map_err(err("raft-log flush(sync)"))?;
        rx.recv()
            .map_err(err("raft-log flush callback"))?
            .map_err(err("raft-log flush"))
    }
}

impl Engine for RaftLogEngine {
    /// raft-log requires the first entry of an empty log to have index 0.
    const FIRST_INDEX: u64 = 0;

    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        std::fs::create_dir_all(dir).map_err(err("mkdir"))?;
        let mut cfg = Config::new(dir.to_str().expect("utf-8 temp dir"));
        // Same segment size for everyone; the payload cache keeps its defaults
        // (100,000 items / 1 GiB), which is what a user gets.
        cfg.wal.chunk_max_size = Some(SEGMENT_BYTES as usize);
        let log = RaftLog::open(Arc::new(cfg)).map_err(err("RaftLog::open"))?;
        Ok(Self { log })
    }

    fn append(&mut self, batch: &Batch) -> R<()> {
        self.log
            .append(batch.iter().map(|(i, p)| ((1, i), p.to_vec())))
            .map_err(err("RaftLog::append"))?;
        // Hand the batch to the flush worker without fsync, as a Raft node does per append.
        self.log.flush(false, None).map_err(err("RaftLog::flush"))
    }

    fn append_durable(&mut self, batch: &Batch) -> R<()> {
        self.log
            .append(batch.iter().map(|(i, p)| ((1, i), p.to_vec())))
            .map_err(err("RaftLog::append"))?;
        self.flush_sync()
    }

    fn sync(&mut self) -> R<()> {
        self.flush_sync()
    }

    fn settle(&mut self) -> R<()> {
        self.log
            .wait_worker_idle()
            .map_err(err("RaftLog::wait_worker_idle"))
    }

    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        for r in self.log.read(from, to) {
            let ((_, i), p) = r.map_err(err("RaftLog::read"))?;
            f(i, &p);
        }
        Ok(())
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        Ok(self.log.log_state().last().map(|l| l.1))
    }

    fn close(self) -> R<()> {
        self.log
            .wait_worker_idle()
            .map_err(err("RaftLog::wait_worker_idle"))?;
        drop(self.log);
        Ok(())
    }
}
