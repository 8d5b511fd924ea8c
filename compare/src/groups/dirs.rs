//! Separate directories: one `raft_mmap_log::Store` per group (`g<n>` under the cell's
//! directory), 4 MiB segments, no segment pool. Each store has its own flush thread and
//! preparer, so a round of K groups is K fsyncs of K files, in parallel.

use std::path::Path;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raft_mmap_log::{Config, Store};

use super::work::{GEngine, DIRS_MAX_GROUPS};
use crate::harness::{err, Batch, Fail, R};

pub fn config() -> Config {
    Config {
        segment_size: 4 << 20,
        segment_pool: 0,
        ..Config::default()
    }
}

pub struct Dirs {
    stores: Vec<Mutex<Store>>,
}

impl Dirs {
    fn store(&self, group: u64) -> MutexGuard<'_, Store> {
        self.stores[group as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl GEngine for Dirs {
    fn open(dir: &Path, groups: u64) -> R<Self> {
        if groups > DIRS_MAX_GROUPS {
            return Err(Fail::Unsupported(format!(
                "separate directories are only run for G <= {DIRS_MAX_GROUPS}"
            )));
        }
        let mut stores = Vec::with_capacity(groups as usize);
        for g in 0..groups {
            let s = Store::open(dir.join(format!("g{g}")), config()).map_err(err("Store::open"))?;
            stores.push(Mutex::new(s));
        }
        Ok(Self { stores })
    }

    /// K `append_batch`es, then (durable) K `flush` callbacks waited for.
    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>> {
        let t = Instant::now();
        for (g, b) in parts {
            self.store(*g)
                .append_batch(b.iter())
                .map_err(err("Store::append_batch"))?;
        }
        let written = t.elapsed();
        if durable {
            let (tx, rx) = mpsc::channel();
            for (g, _) in parts {
                let tx = tx.clone();
                self.store(*g)
                    .flush(move |r| {
                        let _ = tx.send(r);
                    })
                    .map_err(err("Store::flush"))?;
            }
            drop(tx);
            for _ in parts {
                rx.recv()
                    .map_err(|_| Fail::Error("a flush callback was dropped".into()))?
                    .map_err(err("flush callback"))?;
            }
        }
        Ok(Some(written))
    }

    fn append_sync(&self, group: u64, batch: &Batch) -> R<Option<Duration>> {
        let t = Instant::now();
        let mut s = self.store(group);
        s.append_batch(batch.iter())
            .map_err(err("Store::append_batch"))?;
        let written = t.elapsed();
        s.sync().map_err(err("Store::sync"))?;
        Ok(Some(written))
    }

    fn sync_all(&self) -> R<()> {
        for m in &self.stores {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync()
                .map_err(err("Store::sync"))?;
        }
        Ok(())
    }

    fn last_index(&self, group: u64) -> R<Option<u64>> {
        Ok(self.store(group).last_index())
    }

    fn close(self) -> R<()> {
        drop(self.stores);
        Ok(())
    }
}
