//! raft-mmap-log through its openraft adapter (`MmapLogStore`), with the same type config as
//! the hiqlite-wal engine (`Vec<u8>` application data), so `read_range` is openraft's
//! `try_get_log_entries` on both.

use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raft_mmap_log::openraft::MmapLogStore;
use raft_mmap_log::Config;
use tokio::runtime::Runtime;

use crate::engines::hiqlite::TC;
use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Fail, Mode, R};

pub struct OursOpenraft {
    rt: Runtime,
    store: MmapLogStore<TC>,
}

impl Engine for OursOpenraft {
    fn open(dir: &Path, _mode: Mode) -> R<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err("tokio runtime"))?;
        let cfg = Config {
            segment_size: SEGMENT_BYTES,
            ..Config::default()
        };
        let store = MmapLogStore::<TC>::open(dir, cfg).map_err(err("MmapLogStore::open"))?;
        Ok(Self { rt, store })
    }

    /// openraft's own append path (`RaftLogStorage::append` + waiting for its callback): the
    /// only way in, so every batch is durable before the next.
    fn append(&mut self, batch: &Batch) -> R<()> {
        let entries = batch.iter().map(|(i, p)| Entry::<TC> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(p.to_vec()),
        });
        self.rt
            .block_on(self.store.blocking_append(entries))
            .map_err(err("MmapLogStore append"))
    }

    fn sync(&mut self) -> R<()> {
        self.store
            .with_log(|l| l.sync())
            .map_err(err("MmapLogStore lock"))?
            .map_err(err("RaftLog::sync"))
    }

    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let es = self
            .rt
            .block_on(self.store.try_get_log_entries(from..to))
            .map_err(err("try_get_log_entries"))?;
        for e in &es {
            match &e.payload {
                EntryPayload::Normal(p) => f(e.log_id.index, p),
                other => {
                    return Err(Fail::Error(format!(
                        "unexpected payload {other:?} at {}",
                        e.log_id.index
                    )))
                }
            }
        }
        Ok(())
    }

    fn last_index(&mut self) -> R<Option<u64>> {
        let st = self
            .rt
            .block_on(self.store.get_log_state())
            .map_err(err("get_log_state"))?;
        Ok(st.last_log_id.map(|l| l.index))
    }

    fn close(self) -> R<()> {
        Ok(())
    }
}
