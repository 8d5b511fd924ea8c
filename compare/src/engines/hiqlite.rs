//! hiqlite-wal (mmap-based openraft log store from Hiqlite).
//!
//! Writes go through the store's own public writer channel (`LogStore::writer`,
//! `hiqlite_wal::Action::Append`), exactly as its `RaftLogStorage::append` does, because
//! openraft's `LogFlushed` callback cannot be built outside openraft. Entries are openraft
//! `Entry` values serialized with the same bincode configuration the store uses, so its own
//! `RaftLogReader` reads them back.

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::mpsc;

use hiqlite_wal::{Action, LogStore, LogSync};
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
use tokio::runtime::Runtime;

use crate::engines::SEGMENT_BYTES;
use crate::harness::{err, Batch, Engine, Fail, Mode, R};

openraft::declare_raft_types!(
    pub TC:
        D = Vec<u8>,
        R = (),
        SnapshotData = Cursor<Vec<u8>>,
);

pub struct HiqliteEngine {
    rt: Runtime,
    store: Option<LogStore<TC>>,
    mode: Mode,
}

fn encode(index: u64, payload: &[u8]) -> R<Vec<u8>> {
    let e: Entry<TC> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(payload.to_vec()),
    };
    bincode_next::serde::encode_to_vec(&e, bincode_next::config::legacy())
        .map_err(err("bincode encode"))
}

impl HiqliteEngine {
    fn store(&mut self) -> &mut LogStore<TC> {
        self.store.as_mut().expect("open store")
    }

    /// One `Action::Append`; returns after the writer acked it and, if `wait_cb`, after the
    /// openraft-style callback fired (in `LogSync::Immediate` that is after a blocking flush).
    fn send_append(&mut self, entries: Vec<(u64, Vec<u8>)>, wait_cb: bool) -> R<()> {
        let (tx, rx) = flume::bounded(1);
        let (ack, ack_rx) = tokio::sync::oneshot::channel();
        let (cb_tx, cb_rx) = mpsc::sync_channel::<Result<(), io::Error>>(1);
        let callback = Box::new(move |res: Result<(), io::Error>| {
            let _ = cb_tx.send(res);
        });
        self.store()
            .writer
            .send(Action::Append { rx, callback, ack })
            .map_err(err("hiqlite writer channel"))?;
        for e in entries {
            tx.send(Some(e)).map_err(err("hiqlite entry channel"))?;
        }
        tx.send(None).map_err(err("hiqlite entry channel"))?;
        ack_rx
            .blocking_recv()
            .map_err(err("hiqlite append ack (writer thread gone)"))?
            .map_err(err("hiqlite append"))?;
        if wait_cb {
            cb_rx
                .recv()
                .map_err(err("hiqlite append callback"))?
                .map_err(err("hiqlite flush"))?;
        }
        Ok(())
    }
}

impl Engine for HiqliteEngine {
    fn open(dir: &Path, mode: Mode) -> R<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(err("tokio runtime"))?;
        // `Immediate`: every append is flushed (blocking msync) before its callback fires.
        // Otherwise the background ticker is the only flusher; an hour means "never" here, and
        // `sync()` below asks for a flush explicitly.
        let sync = match mode {
            Mode::DurableEach => LogSync::Immediate,
            Mode::Lazy => LogSync::IntervalMillis(3_600_000),
        };
        let path = dir.to_str().expect("utf-8 temp dir").to_owned();
        let store = rt
            .block_on(LogStore::<TC>::start(path, sync, SEGMENT_BYTES as u32))
            .map_err(err("LogStore::start"))?;
        Ok(Self {
            rt,
            store: Some(store),
            mode,
        })
    }

    fn append(&mut self, batch: &Batch) -> R<()> {
        let es = batch
            .iter()
            .map(|(i, p)| Ok((i, encode(i, p)?)))
            .collect::<R<Vec<_>>>()?;
        let durable = self.mode == Mode::DurableEach;
        self.send_append(es, durable)
    }

    fn append_durable(&mut self, batch: &Batch) -> R<()> {
        if self.mode != Mode::DurableEach {
            self.append(batch)?;
            return self.sync();
        }
        self.append(batch)
    }

    /// `Action::Sync` performs a blocking flush of the active WAL file (sealed files were
    /// flushed when sealed) but has no reply; the writer handles actions in order, so the ack
    /// of an empty append sent right after it means the flush has completed.
    fn sync(&mut self) -> R<()> {
        self.store()
            .writer
            .send(Action::Sync)
            .map_err(err("hiqlite writer channel"))?;
        self.send_append(Vec::new(), false)
    }

    fn read_range(&mut self, from: u64, to: u64, f: &mut dyn FnMut(u64, &[u8])) -> R<()> {
        let rt = &self.rt;
        let store = self.store.as_mut().expect("open store");
        let es = rt
            .block_on(store.try_get_log_entries(from..to))
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
        let rt = &self.rt;
        let store = self.store.as_mut().expect("open store");
        let st = rt
            .block_on(store.get_log_state())
            .map_err(err("get_log_state"))?;
        Ok(st.last_log_id.map(|l| l.index))
    }

    fn close(mut self) -> R<()> {
        let store = self.store.take().expect("open store");
        self.rt
            .block_on(store.stop())
            .map_err(err("LogStore::stop"))?;
        Ok(())
    }
}
