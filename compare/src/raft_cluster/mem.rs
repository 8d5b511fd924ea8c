//! The ceiling: raft-rs's own `MemStorage`, no disk. A restarted node starts empty and takes
//! everything from the leaders again.

use std::path::Path;

use raft::eraftpb::ConfState;
use raft::storage::MemStorage;
use raft::Ready;

use super::backend::{Error, NodeLog};

pub struct MemLog;

impl NodeLog for MemLog {
    type Store = MemStorage;

    fn open(_: &Path) -> Result<Self, Error> {
        Ok(MemLog)
    }

    fn regions(&self) -> Result<Vec<u64>, Error> {
        Ok(Vec::new())
    }

    fn storage(&mut self, _: u64, voters: &[u64]) -> Result<MemStorage, Error> {
        let cs = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        Ok(MemStorage::new_with_conf_state(cs))
    }

    fn write_ready(&mut self, _: u64, store: &mut MemStorage, rd: &Ready) -> Result<bool, Error> {
        let mut core = store.wl();
        if !rd.snapshot().is_empty() {
            core.apply_snapshot(rd.snapshot().clone())?;
        }
        core.append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            core.set_hardstate(hs.clone());
        }
        Ok(false)
    }

    fn sync(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn set_commit(&mut self, _: u64, store: &mut MemStorage, index: u64) -> Result<(), Error> {
        store.wl().mut_hard_state().commit = index;
        Ok(())
    }

    fn compact(&mut self, _: u64, store: &mut MemStorage, index: u64) -> Result<(), Error> {
        Ok(store.wl().compact(index)?)
    }

    fn remove(&mut self, _: u64) -> Result<(), Error> {
        Ok(())
    }
}
