//! raft-engine 0.4.2 as the log of a node with many regions, the way TiKV uses it: one
//! `Engine` per node, every region's entries and hard state in one `LogBatch` per Ready round
//! (the hard state, the configuration and the snapshot meta as key/messages), one
//! `Engine::write(batch, sync = true)` per round; entries read back with `fetch_entries_to`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Ready, Storage, StorageError};
use raft_engine::{Command, Config, Engine, LogBatch, ReadableSize};

use super::backend::{Error, NodeLog};
use crate::engines::raftengine::M;
use crate::engines::SEGMENT_BYTES;

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";

/// Terms of a region's most recent entries kept in memory (TiKV keeps an entry cache in front
/// of raft-engine too): raft-rs asks for terms of recent entries all the time.
const TERMS_KEPT: usize = 4096;

/// One region's `raft::Storage` over the node's engine.
pub struct EngineStore {
    engine: Arc<Engine>,
    region: u64,
    hard_state: HardState,
    conf: ConfState,
    /// The last snapshot's index and term (the log's dummy entry), 0/0 if none.
    snapshot: SnapshotMetadata,
    /// Terms of entries `terms_from..`, the most recent written.
    terms_from: u64,
    terms: VecDeque<u64>,
}

impl EngineStore {
    fn first(&self) -> u64 {
        self.engine
            .first_index(self.region)
            .unwrap_or(self.snapshot.index + 1)
    }

    fn last(&self) -> u64 {
        self.engine
            .last_index(self.region)
            .unwrap_or(self.snapshot.index)
    }

    /// Remembers the terms of entries just written (replacing any from their first index).
    fn note_terms(&mut self, entries: &[Entry]) {
        let Some(head) = entries.first() else { return };
        let end = self.terms_from + self.terms.len() as u64;
        if head.index < self.terms_from || head.index > end {
            self.terms.clear();
            self.terms_from = head.index;
        }
        self.terms.truncate((head.index - self.terms_from) as usize);
        self.terms.extend(entries.iter().map(|e| e.term));
        while self.terms.len() > TERMS_KEPT {
            self.terms.pop_front();
            self.terms_from += 1;
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl Storage for EngineStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().map(|m| m as usize);
        let mut out = Vec::with_capacity((high - low) as usize);
        self.engine
            .fetch_entries_to::<M>(self.region, low, high, max, &mut out)
            .map_err(store_err)?;
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(t) = idx
            .checked_sub(self.terms_from)
            .and_then(|i| self.terms.get(i as usize))
        {
            return Ok(*t);
        }
        let e = self
            .engine
            .get_entry::<M>(self.region, idx)
            .map_err(store_err)?;
        e.map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// Not served: the benchmark runs without compaction, so no peer ever needs one.
    fn snapshot(&self, _: u64, _: u64) -> raft::Result<Snapshot> {
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// The node's engine and the batch of the current Ready round.
pub struct EngineLog {
    engine: Arc<Engine>,
    batch: LogBatch,
}

impl NodeLog for EngineLog {
    type Store = EngineStore;

    fn open(dir: &Path) -> Result<Self, Error> {
        let cfg = Config {
            dir: dir.to_str().ok_or("directory is not UTF-8")?.to_owned(),
            target_file_size: ReadableSize(SEGMENT_BYTES),
            // Entries are small and distinct; LZ4 on them would only cost CPU.
            batch_compression_threshold: ReadableSize(0),
            ..Config::default()
        };
        Ok(EngineLog {
            engine: Arc::new(Engine::open(cfg)?),
            batch: LogBatch::default(),
        })
    }

    fn regions(&self) -> Result<Vec<u64>, Error> {
        let mut ids = self.engine.raft_groups();
        ids.sort_unstable();
        Ok(ids)
    }

    fn storage(&mut self, region: u64, voters: &[u64]) -> Result<Self::Store, Error> {
        let get = |key: &[u8]| self.engine.get(region, key);
        let hard_state = match get(HARD_STATE) {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        let snapshot = match get(SNAPSHOT_META) {
            Some(b) => SnapshotMetadata::parse_from_bytes(&b)?,
            None => SnapshotMetadata::default(),
        };
        let conf = match get(CONF_STATE) {
            Some(b) => ConfState::parse_from_bytes(&b)?,
            None => {
                let cs = ConfState {
                    voters: voters.to_vec(),
                    ..Default::default()
                };
                self.batch.put_message(region, CONF_STATE.to_vec(), &cs)?;
                cs
            }
        };
        Ok(EngineStore {
            engine: self.engine.clone(),
            region,
            hard_state,
            conf,
            snapshot,
            terms_from: 0,
            terms: VecDeque::new(),
        })
    }

    fn write_ready(
        &mut self,
        region: u64,
        store: &mut EngineStore,
        rd: &Ready,
    ) -> Result<bool, Error> {
        let mut wrote = false;
        if !rd.snapshot().is_empty() {
            // The region's entries go at once; the snapshot's state with the round's batch.
            let mut clean = LogBatch::default();
            clean.add_command(region, Command::Clean);
            self.engine.write(&mut clean, false)?;
            let meta = rd.snapshot().get_metadata();
            store.snapshot = meta.clone();
            store.conf = meta.get_conf_state().clone();
            store.hard_state.commit = store.hard_state.commit.max(meta.index);
            store.hard_state.term = store.hard_state.term.max(meta.term);
            store.terms.clear();
            self.batch
                .put_message(region, SNAPSHOT_META.to_vec(), meta)?;
            self.batch
                .put_message(region, CONF_STATE.to_vec(), &store.conf)?;
            self.batch
                .put_message(region, HARD_STATE.to_vec(), &store.hard_state)?;
            wrote = true;
        }
        if !rd.entries().is_empty() {
            self.batch.add_entries::<M>(region, rd.entries())?;
            store.note_terms(rd.entries());
            wrote = true;
        }
        if let Some(hs) = rd.hs() {
            store.hard_state = hs.clone();
            self.batch.put_message(region, HARD_STATE.to_vec(), hs)?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// One `Engine::write(batch, true)` for every region written this round.
    fn sync(&mut self) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.batch);
        self.engine.write(&mut batch, true)?;
        Ok(())
    }

    fn set_commit(
        &mut self,
        region: u64,
        store: &mut EngineStore,
        index: u64,
    ) -> Result<(), Error> {
        store.hard_state.commit = index;
        self.batch
            .put_message(region, HARD_STATE.to_vec(), &store.hard_state)?;
        Ok(())
    }

    fn compact(&mut self, region: u64, _: &mut EngineStore, index: u64) -> Result<(), Error> {
        self.engine.compact_to(region, index);
        Ok(())
    }

    fn remove(&mut self, region: u64) -> Result<(), Error> {
        let mut clean = LogBatch::default();
        clean.add_command(region, Command::Clean);
        self.engine.write(&mut clean, true)?;
        Ok(())
    }
}
