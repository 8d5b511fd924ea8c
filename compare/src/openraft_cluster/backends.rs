//! The log backends of `compare openraft-cluster` besides raft-mmap-log's shared log
//! (`SharedLog`, in the example's harness): raft-mmap-log with a directory per group,
//! hiqlite-wal's openraft `LogStore` per group, and an in-memory log (the ceiling).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use hiqlite_wal::{LogStore, LogSync, ShutdownHandle};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, Vote};
use raft_mmap_log::openraft::{KvConfig, MmapLogStore};

use super::multi_cluster::net::{GroupId, NodeId};
use super::multi_cluster::node::{log_config, open_retrying, BoxError, LogBackend};

fn group_dirs(dir: &Path) -> Vec<GroupId> {
    let mut ids: Vec<GroupId> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("group-")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// raft-mmap-log, one `MmapLogStore::open` directory (and flush thread) per group.
pub struct DirPerGroup {
    dir: PathBuf,
    segment_bytes: u64,
}

impl LogBackend for DirPerGroup {
    type Log = MmapLogStore<KvConfig>;

    async fn open(dir: &Path, segment_bytes: u64) -> Result<Self, BoxError> {
        std::fs::create_dir_all(dir)?;
        Ok(DirPerGroup {
            dir: dir.to_path_buf(),
            segment_bytes,
        })
    }
    async fn group_log(&self, group: GroupId) -> Result<Self::Log, BoxError> {
        let dir = self.dir.join(format!("group-{group}"));
        let config = log_config(self.segment_bytes);
        let store = open_retrying(
            || MmapLogStore::open(&dir, config.clone()),
            |e| {
                matches!(
                    e,
                    raft_mmap_log::raft::RaftError::Engine(raft_mmap_log::Error::Locked { .. })
                )
            },
        )
        .await?;
        Ok(store)
    }
    fn existing_groups(&self) -> Vec<GroupId> {
        group_dirs(&self.dir)
    }
    async fn remove_group(&self, group: GroupId) -> Result<(), BoxError> {
        Ok(std::fs::remove_dir_all(
            self.dir.join(format!("group-{group}")),
        )?)
    }
    async fn close(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// hiqlite-wal's openraft `LogStore`, one per group, every append flushed before openraft is
/// told it is durable (`LogSync::Immediate`).
pub struct HiqlitePerGroup {
    dir: PathBuf,
    segment_bytes: u64,
    running: Mutex<BTreeMap<GroupId, ShutdownHandle>>,
}

impl LogBackend for HiqlitePerGroup {
    type Log = LogStore<KvConfig>;

    async fn open(dir: &Path, segment_bytes: u64) -> Result<Self, BoxError> {
        std::fs::create_dir_all(dir)?;
        Ok(HiqlitePerGroup {
            dir: dir.to_path_buf(),
            segment_bytes,
            running: Mutex::default(),
        })
    }
    async fn group_log(&self, group: GroupId) -> Result<Self::Log, BoxError> {
        let path = self.dir.join(format!("group-{group}"));
        let path = path.to_str().ok_or("non-UTF-8 directory")?.to_owned();
        let store =
            LogStore::<KvConfig>::start(path, LogSync::Immediate, self.segment_bytes as u32)
                .await?;
        self.running
            .lock()
            .unwrap()
            .insert(group, store.shutdown_handle());
        Ok(store)
    }
    fn existing_groups(&self) -> Vec<GroupId> {
        group_dirs(&self.dir)
    }
    async fn remove_group(&self, group: GroupId) -> Result<(), BoxError> {
        let running = self.running.lock().unwrap().remove(&group);
        if let Some(h) = running {
            h.shutdown().await?;
        }
        Ok(std::fs::remove_dir_all(
            self.dir.join(format!("group-{group}")),
        )?)
    }
    async fn close(&self) -> Result<(), BoxError> {
        let handles: Vec<ShutdownHandle> = std::mem::take(&mut *self.running.lock().unwrap())
            .into_values()
            .collect();
        for h in handles {
            h.shutdown().await?;
        }
        Ok(())
    }
}

/// An in-memory log: appends are "durable" at once. The ceiling: what the cluster does
/// when the log costs nothing. Its logs outlive a node's restart (kept per directory for the
/// life of the process), as if the node's memory survived.
pub struct InMemory {
    logs: Arc<Mutex<BTreeMap<GroupId, MemLog>>>,
}

type MemLogs = Arc<Mutex<BTreeMap<GroupId, MemLog>>>;

fn memory_of(dir: &Path) -> MemLogs {
    static NODES: OnceLock<Mutex<HashMap<PathBuf, MemLogs>>> = OnceLock::new();
    let nodes = NODES.get_or_init(Mutex::default);
    nodes
        .lock()
        .unwrap()
        .entry(dir.to_path_buf())
        .or_default()
        .clone()
}

impl LogBackend for InMemory {
    type Log = MemLog;

    async fn open(dir: &Path, _segment_bytes: u64) -> Result<Self, BoxError> {
        Ok(InMemory {
            logs: memory_of(dir),
        })
    }
    async fn group_log(&self, group: GroupId) -> Result<Self::Log, BoxError> {
        Ok(self.logs.lock().unwrap().entry(group).or_default().clone())
    }
    fn existing_groups(&self) -> Vec<GroupId> {
        self.logs.lock().unwrap().keys().copied().collect()
    }
    async fn remove_group(&self, group: GroupId) -> Result<(), BoxError> {
        self.logs.lock().unwrap().remove(&group);
        Ok(())
    }
    async fn close(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct MemState {
    entries: BTreeMap<u64, Entry<KvConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

/// One group's in-memory log (clones share it).
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    state: Arc<Mutex<MemState>>,
}

type SResult<T> = Result<T, StorageError<NodeId>>;

impl RaftLogReader<KvConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<KvConfig>>> {
        let st = self.state.lock().unwrap();
        Ok(st.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<KvConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> SResult<LogState<KvConfig>> {
        let st = self.state.lock().unwrap();
        let last = st.entries.values().next_back().map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: st.purged,
            last_log_id: last.or(st.purged),
        })
    }
    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        self.state.lock().unwrap().vote = Some(*vote);
        Ok(())
    }
    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        Ok(self.state.lock().unwrap().vote)
    }
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        self.state.lock().unwrap().committed = committed;
        Ok(())
    }
    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        Ok(self.state.lock().unwrap().committed)
    }
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<KvConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut st = self.state.lock().unwrap();
            for e in entries {
                st.entries.insert(e.get_log_id().index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let mut st = self.state.lock().unwrap();
        st.entries.split_off(&log_id.index);
        Ok(())
    }
    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let mut st = self.state.lock().unwrap();
        st.entries = st.entries.split_off(&(log_id.index + 1));
        st.purged = Some(log_id);
        Ok(())
    }
}
