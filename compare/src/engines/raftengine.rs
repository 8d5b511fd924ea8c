//! raft-engine (TiKV's log store), entries as raft-proto `eraftpb::Entry` messages.

use std::path::Path;
use std::sync::Arc;

use raft_engine::{Config, Engine as RaftEngine, LogBatch, MessageExt, ReadableSize};
use raft_proto::eraftpb::Entry;

use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Fail, Mode, TailReader, R};

const REGION: u64 = 1;

#[derive(Clone)]
pub struct M;

impl MessageExt for M {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

pub struct RaftEngineEngine {
    engine: Arc<RaftEngine>,
    last_batch: Vec<Entry>,
    /// Payload bytes written since `purge_expired_files` last ran.
    since_expire: u64,
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

impl RaftEngineEngine {
    fn write(&mut self, batch: &Batch, sync: bool) -> R<()> {
        let es = entries(batch);
        let mut lb = LogBatch::default();
        lb.add_entries::<M>(REGION, &es)
            .map_err(err("LogBatch::add_entries"))?;
        self.engine
            .write(&mut lb, sync)
            .map_err(err("Engine::write"))?;
        self.last_batch = es;
        self.since_expire += batch.buf.len() as u64;
        Ok(())
    }
}

impl Engine for RaftEngineEngine {
    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        let cfg = Config {
            dir: dir.to_str().expect("utf-8 temp dir").to_owned(),
            target_file_size: ReadableSize(SEGMENT_BYTES),
            // Payloads are incompressible; LZ4 on them would only cost CPU.
            batch_compression_threshold: ReadableSize(0),
            ..Config::default()
        };
        let engine = RaftEngine::open(cfg).map_err(err("Engine::open"))?;
        Ok(Self {
            engine: Arc::new(engine),
            last_batch: Vec::new(),
            since_expire: 0,
        })
    }

    fn append(&mut self, batch: &Batch) -> R<()> {
        self.write(batch, false)
    }

    fn append_durable(&mut self, batch: &Batch) -> R<()> {
        self.write(batch, true)
    }

    /// `Engine::sync()` writes an empty batch, which `Engine::write` returns from early without
    /// any fsync (0.4.2). A durable sync must carry data: re-write the last batch's entries
    /// (same indexes, same bytes: an idempotent overwrite) with `sync = true`.
    fn sync(&mut self) -> R<()> {
        if self.last_batch.is_empty() {
            return Err(Fail::Error("nothing written yet to sync".into()));
        }
        let mut lb = LogBatch::default();
        lb.add_entries::<M>(REGION, &self.last_batch)
            .map_err(err("LogBatch::add_entries"))?;
        self.engine
            .write(&mut lb, true)
            .map_err(err("Engine::write(sync)"))?;
        Ok(())
    }

    /// Workload 2: the final batch itself is written with `sync = true`.
    fn bulk_then_sync(
        &mut self,
        gen: &crate::harness::Gen,
        first: u64,
        n: u64,
        per_batch: usize,
    ) -> R<()> {
        gen.each_batch(first, n, per_batch, |b| self.write(b, b.end() == first + n))
    }

    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        fetch(&self.engine, from, to, f)
    }

    fn tail_reader(&mut self) -> R<Box<dyn TailReader>> {
        Ok(Box::new(Fetcher(Arc::clone(&self.engine))))
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        Ok(self.engine.last_index(REGION))
    }

    /// `compact_to` writes a Compact command; files are released (to its recycle pool, on by
    /// default) only by `purge_expired_files`, which TiKV calls from a timer. Here it runs once
    /// per segment's worth of payload written, so that the reuse rate does not depend on the
    /// machine's speed.
    fn purge_to(&mut self, first_kept: u64) -> R<()> {
        self.engine.compact_to(REGION, first_kept);
        if self.since_expire >= SEGMENT_BYTES {
            self.since_expire = 0;
            self.engine
                .purge_expired_files()
                .map_err(err("Engine::purge_expired_files"))?;
        }
        Ok(())
    }

    fn close(self) -> R<()> {
        drop(self.engine);
        Ok(())
    }
}

/// `fetch_entries_to` (a read of its files, decoded into owned entries), then `f` on each.
fn fetch(engine: &RaftEngine, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
    let mut v = Vec::with_capacity((to - from) as usize);
    engine
        .fetch_entries_to::<M>(REGION, from, to, None, &mut v)
        .map_err(err("Engine::fetch_entries_to"))?;
    for e in &v {
        f(e.index, &e.data);
    }
    Ok(())
}

/// Another thread's reads: the engine is shared (`Engine` is `Sync`).
struct Fetcher(Arc<RaftEngine>);

impl TailReader for Fetcher {
    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        fetch(&self.0, from, to, f)
    }
}
