//! raft-mmap-log's shared log: one [`Groups`] for all groups (group number `n` is id `n + 1`).

use std::path::Path;
use std::time::{Duration, Instant};

use raft_mmap_log::groups::{Group, Groups, WriteBatch};
use raft_mmap_log::{Allocation, Config, WriteMode};

use super::work::GEngine;
use crate::harness::{err, Batch, R};

/// The default engine, `ours`.
pub const DEFAULT: u8 = 0;
/// Diagnostic `ours-zerofill`: new segment files get their blocks written with zeros
/// instead of `fallocate`d, so that a sync never has unwritten extents to convert.
pub const ZERO_FILL: u8 = 1;
/// Diagnostic `ours-pwrite`: records written with `pwrite` instead of copied into the map,
/// so that a sync never has to write-protect mapped pages (and the next write never faults).
pub const PWRITE: u8 = 2;

/// The configuration measured: the brief's `segment_size: 64 << 20` over the defaults (which
/// is the default segment size too, so `DEFAULT` is `Config::default()`).
pub fn config(variant: u8) -> Config {
    Config {
        segment_size: 64 << 20,
        allocation: if variant == ZERO_FILL {
            Allocation::ZeroFill
        } else {
            Allocation::Auto
        },
        write_mode: if variant == PWRITE {
            WriteMode::Pwrite
        } else {
            WriteMode::Auto
        },
        ..Config::default()
    }
}

pub struct OursGroups<const VARIANT: u8> {
    log: Groups,
    handles: Vec<Group>,
}

impl<const VARIANT: u8> GEngine for OursGroups<VARIANT> {
    fn open(dir: &Path, groups: u64) -> R<Self> {
        let log = Groups::open(dir, config(VARIANT)).map_err(err("Groups::open"))?;
        let handles = (0..groups).map(|g| log.group(g + 1)).collect();
        Ok(Self { log, handles })
    }

    /// One `WriteBatch` for all parts, one `Groups::write`, then one `Groups::sync_here` (the
    /// ready loop is one thread: its sync runs on it when the flush thread is idle).
    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>> {
        let t = Instant::now();
        let mut wb = WriteBatch::new();
        for (g, b) in parts {
            wb.add_entries(g + 1, b.iter());
        }
        self.log.write(&wb).map_err(err("Groups::write"))?;
        let written = t.elapsed();
        if durable {
            self.log.sync_here().map_err(err("Groups::sync_here"))?;
        }
        Ok(Some(written))
    }

    /// `Group::append_batch` + `Group::sync` (threads' syncs share one fsync when they meet).
    fn append_sync(&self, group: u64, batch: &Batch) -> R<Option<Duration>> {
        let t = Instant::now();
        let h = &self.handles[group as usize];
        h.append_batch(batch.iter())
            .map_err(err("Group::append_batch"))?;
        let written = t.elapsed();
        h.sync().map_err(err("Group::sync"))?;
        Ok(Some(written))
    }

    fn sync_all(&self) -> R<()> {
        self.log.sync().map_err(err("Groups::sync"))
    }

    fn last_index(&self, group: u64) -> R<Option<u64>> {
        Ok(self.handles[group as usize].last_index())
    }

    fn close(self) -> R<()> {
        drop(self.handles);
        drop(self.log);
        Ok(())
    }
}

/// Diagnostic `ours-sharded`: [`SHARDS`] separate `Groups` logs (one directory each), group
/// `n` in log `n % SHARDS`; with T = 8 independent writers, thread t alone writes log t. Tells
/// whether a loss at 8 threads comes from sharing one log (one lock, one flush thread, one
/// file) or from the write path itself.
pub const SHARDS: u64 = 8;

pub struct OursSharded {
    logs: Vec<OursGroups<{ DEFAULT }>>,
}

impl OursSharded {
    fn shard(&self, group: u64) -> (&OursGroups<{ DEFAULT }>, u64) {
        (&self.logs[(group % SHARDS) as usize], group / SHARDS)
    }
}

impl GEngine for OursSharded {
    fn open(dir: &Path, groups: u64) -> R<Self> {
        let logs = (0..SHARDS)
            .map(|s| OursGroups::open(&dir.join(format!("shard{s}")), groups.div_ceil(SHARDS)))
            .collect::<R<Vec<_>>>()?;
        Ok(Self { logs })
    }

    /// Each shard's part written with its own `Groups::write`, then each touched shard
    /// synced.
    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>> {
        let t = Instant::now();
        let mut touched = [false; SHARDS as usize];
        for (s, log) in self.logs.iter().enumerate() {
            let mine: Vec<(u64, &Batch)> = parts
                .iter()
                .filter(|(g, _)| g % SHARDS == s as u64)
                .map(|(g, b)| (g / SHARDS, *b))
                .collect();
            if !mine.is_empty() {
                let _ = log.write(&mine, false)?;
                touched[s] = true;
            }
        }
        let written = t.elapsed();
        if durable {
            for (s, log) in self.logs.iter().enumerate() {
                if touched[s] {
                    log.sync_all()?;
                }
            }
        }
        Ok(Some(written))
    }

    fn append_sync(&self, group: u64, batch: &Batch) -> R<Option<Duration>> {
        let (log, g) = self.shard(group);
        log.append_sync(g, batch)
    }

    fn sync_all(&self) -> R<()> {
        self.logs.iter().try_for_each(|l| l.sync_all())
    }

    fn last_index(&self, group: u64) -> R<Option<u64>> {
        let (log, g) = self.shard(group);
        log.last_index(g)
    }

    fn close(self) -> R<()> {
        self.logs.into_iter().try_for_each(GEngine::close)
    }
}
