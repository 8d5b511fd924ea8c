//! raft-engine 0.4.2: one `Engine`, one region per group (group number `n` is region `n + 1`),
//! entries as raft-proto `eraftpb::Entry` messages, configured as in `engines/raftengine.rs`.

use std::path::Path;
use std::time::Duration;

use raft_engine::{Config, Engine as RaftEngine, LogBatch, ReadableSize};
use raft_proto::eraftpb::Entry;

use super::work::GEngine;
use crate::engines::raftengine::M;
use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, R};

pub struct RaftEngineGroups {
    engine: RaftEngine,
}

fn entries(batch: &Batch) -> Vec<Entry> {
    batch
        .iter()
        .map(|(i, p)| Entry {
            term: 1,
            index: i,
            data: bytes::Bytes::copy_from_slice(p),
            ..Default::default()
        })
        .collect()
}

impl GEngine for RaftEngineGroups {
    fn open(dir: &Path, _groups: u64) -> R<Self> {
        let cfg = Config {
            dir: dir
                .to_str()
                .ok_or_else(|| crate::harness::Fail::Error("temp dir is not UTF-8".into()))?
                .to_owned(),
            target_file_size: ReadableSize(SEGMENT_BYTES),
            // Payloads are incompressible; LZ4 on them would only cost CPU.
            batch_compression_threshold: ReadableSize(0),
            ..Config::default()
        };
        let engine = RaftEngine::open(cfg).map_err(err("Engine::open"))?;
        Ok(Self { engine })
    }

    /// One `LogBatch`, `add_entries` per region, one `Engine::write(sync)`. raft-engine's
    /// write queue makes concurrent writers share one fsync (its group commit).
    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>> {
        let mut lb = LogBatch::default();
        for (g, b) in parts {
            lb.add_entries::<M>(g + 1, &entries(b))
                .map_err(err("LogBatch::add_entries"))?;
        }
        self.engine
            .write(&mut lb, durable)
            .map_err(err("Engine::write"))?;
        Ok(None)
    }

    /// The prefill's last write was not synced: write it again (the last group's entries,
    /// same indexes, same bytes) with `sync = true`; an empty batch would skip the fsync.
    fn sync_all(&self) -> R<()> {
        let region = self
            .engine
            .raft_groups()
            .into_iter()
            .max()
            .ok_or_else(|| crate::harness::Fail::Error("no region written".into()))?;
        let last = self
            .engine
            .last_index(region)
            .ok_or_else(|| crate::harness::Fail::Error("region without entries".into()))?;
        let mut v = Vec::new();
        self.engine
            .fetch_entries_to::<M>(region, last, last + 1, None, &mut v)
            .map_err(err("Engine::fetch_entries_to"))?;
        let mut lb = LogBatch::default();
        lb.add_entries::<M>(region, &v)
            .map_err(err("LogBatch::add_entries"))?;
        self.engine
            .write(&mut lb, true)
            .map_err(err("Engine::write(sync)"))?;
        Ok(())
    }

    fn last_index(&self, group: u64) -> R<Option<u64>> {
        Ok(self.engine.last_index(group + 1))
    }

    fn close(self) -> R<()> {
        drop(self.engine);
        Ok(())
    }
}
