//! One node of a multi-group cluster: a log backend (one shared log, or anything else that
//! gives a `RaftLogStorage` per group), one `openraft::Raft` per group, created on first use,
//! and the node's [`Links`] to its peers.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, Raft,
    RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use raft_mmap_log::groups::{Group, Groups};
use raft_mmap_log::openraft::{
    KvConfig, KvResponse, KvSnapshotBuilder, KvStateMachine, MmapLogStore,
};
use tokio::net::TcpListener;

use super::net::{GroupDirectory, GroupId, GroupNetwork, Links, NodeId};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a node keeps its groups' logs.
pub trait LogBackend: Send + Sync + Sized + 'static {
    type Log: RaftLogStorage<KvConfig>;
    /// Opens (or creates) the node's logs in `dir`; `segment_bytes` is the segment (WAL file)
    /// size.
    fn open(dir: &Path, segment_bytes: u64) -> impl Future<Output = Result<Self, BoxError>> + Send;
    /// The log store of group `group` (a new group starts empty). One at a time per group.
    fn group_log(&self, group: GroupId)
        -> impl Future<Output = Result<Self::Log, BoxError>> + Send;
    /// The groups that have a log.
    fn existing_groups(&self) -> Vec<GroupId>;
    /// Deletes the log of `group`, whose Raft has been shut down (its log stores dropped).
    fn remove_group(&self, group: GroupId) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Called once every Raft of the node is shut down.
    fn close(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Retries `open` while it fails with an error that `locked` says is the directory's lock,
/// still held by a node that is shutting down (for up to 10 s).
pub async fn open_retrying<T, E: Into<BoxError>>(
    mut open: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, BoxError> {
    let t = Instant::now();
    loop {
        match open() {
            Err(e) if locked(&e) && t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            r => return r.map_err(Into::into),
        }
    }
}

/// raft-mmap-log, one shared log (`Groups`) per node: one segment stream and one flush
/// thread for every group.
pub struct SharedLog {
    pub groups: Groups,
}

pub fn log_config(segment_bytes: u64) -> raft_mmap_log::Config {
    raft_mmap_log::Config {
        segment_size: segment_bytes,
        ..Default::default()
    }
}

impl LogBackend for SharedLog {
    type Log = MmapLogStore<KvConfig, Group>;

    async fn open(dir: &Path, segment_bytes: u64) -> Result<Self, BoxError> {
        let groups = open_retrying(
            || Groups::open(dir, log_config(segment_bytes)),
            |e| matches!(e, raft_mmap_log::Error::Locked { .. }),
        )
        .await?;
        Ok(SharedLog { groups })
    }
    async fn group_log(&self, group: GroupId) -> Result<Self::Log, BoxError> {
        Ok(MmapLogStore::for_group(self.groups.group(group))?)
    }
    fn existing_groups(&self) -> Vec<GroupId> {
        self.groups.ids()
    }
    async fn remove_group(&self, group: GroupId) -> Result<(), BoxError> {
        self.groups.remove_group(group)?;
        Ok(self.groups.sync()?)
    }
    async fn close(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A group's state machine: the in-memory [`KvStateMachine`], plus (when `file` is set) its
/// latest snapshot kept in a file, written before openraft may purge the log it covers and
/// loaded back when the group restarts, so that a purged log still rebuilds the state.
pub struct GroupStateMachine {
    pub kv: KvStateMachine,
    file: Option<PathBuf>,
    /// Snapshots received from a leader and installed.
    pub installed: Arc<AtomicU64>,
}

type SnapshotFile = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

fn sm_err(verb: ErrorVerb, e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(e)).into()
}

/// Writes the snapshot to `file` (a new file renamed over the old one, both synced).
fn save_snapshot(
    file: &Path,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(&(meta, data)).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, &bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(file.parent().expect("a parent"))?.sync_all()
}

impl GroupStateMachine {
    /// A state machine for a group, restored from `file` when it holds a snapshot.
    pub async fn open(file: Option<PathBuf>) -> Result<Self, BoxError> {
        let mut kv = KvStateMachine::new();
        if let Some(path) = &file {
            if let Ok(bytes) = std::fs::read(path) {
                let (meta, data): SnapshotFile = postcard::from_bytes(&bytes)?;
                kv.install_snapshot(&meta, Box::new(Cursor::new(data)))
                    .await?;
            }
        }
        Ok(GroupStateMachine {
            kv,
            file,
            installed: Arc::default(),
        })
    }
}

/// Builds a snapshot and, for a [`GroupStateMachine`] with a file, saves it there.
pub struct GroupSnapshotBuilder {
    kv: KvSnapshotBuilder,
    file: Option<PathBuf>,
}

impl RaftSnapshotBuilder<KvConfig> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<KvConfig>, StorageError<NodeId>> {
        let s = self.kv.build_snapshot().await?;
        if let Some(file) = &self.file {
            save_snapshot(file, &s.meta, s.snapshot.get_ref())
                .map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        }
        Ok(s)
    }
}

impl RaftStateMachine<KvConfig> for GroupStateMachine {
    type SnapshotBuilder = GroupSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        self.kv.applied_state().await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<KvResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.kv.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> GroupSnapshotBuilder {
        GroupSnapshotBuilder {
            kv: self.kv.get_snapshot_builder().await,
            file: self.file.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        self.kv.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = self.file.as_ref().map(|_| snapshot.get_ref().clone());
        self.kv.install_snapshot(meta, snapshot).await?;
        if let (Some(file), Some(data)) = (&self.file, data) {
            save_snapshot(file, meta, &data).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        }
        self.installed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<KvConfig>>, StorageError<NodeId>> {
        self.kv.get_current_snapshot().await
    }
}

/// How nodes run their groups.
#[derive(Clone)]
pub struct NodeSettings {
    pub raft: Arc<openraft::Config>,
    /// Groups run with another openraft configuration than `raft`.
    pub raft_of_group: BTreeMap<GroupId, Arc<openraft::Config>>,
    pub segment_bytes: u64,
}

impl NodeSettings {
    /// openraft's configuration for `group`.
    pub fn raft_config(&self, group: GroupId) -> Arc<openraft::Config> {
        self.raft_of_group.get(&group).unwrap_or(&self.raft).clone()
    }
}

/// One group's Raft on a node, and a handle on its state machine.
#[derive(Clone)]
pub struct GroupRaft {
    pub raft: Raft<KvConfig>,
    pub kv: KvStateMachine,
    pub installed: Arc<AtomicU64>,
}

/// A running node.
pub struct Node<B: LogBackend> {
    pub id: NodeId,
    pub dir: PathBuf,
    pub backend: B,
    settings: NodeSettings,
    rafts: RwLock<BTreeMap<GroupId, GroupRaft>>,
    creating: tokio::sync::Mutex<()>,
    removed: Mutex<BTreeSet<GroupId>>,
    links: OnceLock<Arc<Links>>,
    /// Groups whose Raft was created by a peer's request rather than by this node.
    pub created_on_demand: Mutex<BTreeSet<GroupId>>,
}

impl<B: LogBackend> Node<B> {
    /// Opens the node's logs in `dir`, starts serving on `listener` and connecting to
    /// `peers`, and starts the Raft of every group that has a log. Returns the node and how
    /// long opening the logs took.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        listener: TcpListener,
        peers: &BTreeMap<NodeId, SocketAddr>,
        settings: NodeSettings,
    ) -> Result<(Arc<Self>, Duration), BoxError> {
        let t = Instant::now();
        let backend = B::open(&dir.join("log"), settings.segment_bytes).await?;
        let opened = t.elapsed();
        std::fs::create_dir_all(dir.join("snapshots"))?;
        let node = Arc::new(Node {
            id,
            dir: dir.to_path_buf(),
            backend,
            settings,
            rafts: RwLock::default(),
            creating: tokio::sync::Mutex::default(),
            removed: Mutex::default(),
            links: OnceLock::new(),
            created_on_demand: Mutex::default(),
        });
        let links = Links::start(id, listener, peers, node.clone());
        let _ = node.links.set(links);
        for group in node.backend.existing_groups() {
            node.group(group, false).await?;
        }
        Ok((node, opened))
    }

    /// The Raft of `group` if it runs here.
    pub fn get(&self, group: GroupId) -> Option<GroupRaft> {
        self.rafts.read().unwrap().get(&group).cloned()
    }

    /// The groups running here.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.rafts.read().unwrap().keys().copied().collect()
    }

    /// The Raft of `group`, started (over a new or existing log) if it does not run yet.
    pub async fn group(&self, group: GroupId, on_demand: bool) -> Result<GroupRaft, BoxError> {
        if let Some(g) = self.get(group) {
            return Ok(g);
        }
        if self.removed.lock().unwrap().contains(&group) {
            return Err(format!("group {group} was removed from node {}", self.id).into());
        }
        // A peer's request can arrive while the node starts, before its links are set.
        let links = self
            .links
            .get()
            .ok_or_else(|| format!("node {} is starting", self.id))?;
        let _creating = self.creating.lock().await;
        if let Some(g) = self.get(group) {
            return Ok(g);
        }
        let log = self.backend.group_log(group).await?;
        // Snapshots are kept in a file when openraft's policy builds them.
        let config = self.settings.raft_config(group);
        let file = (!matches!(config.snapshot_policy, openraft::SnapshotPolicy::Never))
            .then(|| self.dir.join("snapshots").join(format!("group-{group}")));
        let sm = GroupStateMachine::open(file).await?;
        let (kv, installed) = (sm.kv.clone(), sm.installed.clone());
        let network = GroupNetwork {
            group,
            links: links.clone(),
        };
        let raft = Raft::new(self.id, config, network, log, sm).await?;
        let g = GroupRaft {
            raft,
            kv,
            installed,
        };
        self.rafts.write().unwrap().insert(group, g.clone());
        if on_demand {
            self.created_on_demand.lock().unwrap().insert(group);
        }
        Ok(g)
    }

    /// Shuts the Raft of `group` down and deletes its log and snapshot; requests for it are
    /// refused from now on.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), BoxError> {
        self.removed.lock().unwrap().insert(group);
        let _creating = self.creating.lock().await;
        let g = self.rafts.write().unwrap().remove(&group);
        if let Some(g) = g {
            g.raft
                .shutdown()
                .await
                .map_err(|e| format!("shutdown: {e}"))?;
        }
        self.backend.remove_group(group).await?;
        let _ = std::fs::remove_file(self.dir.join("snapshots").join(format!("group-{group}")));
        Ok(())
    }

    /// Disconnects the node and shuts every group down.
    pub async fn stop(&self) -> Result<(), BoxError> {
        if let Some(links) = self.links.get() {
            links.stop();
        }
        let rafts = std::mem::take(&mut *self.rafts.write().unwrap());
        let mut shutdowns = tokio::task::JoinSet::new();
        for g in rafts.into_values() {
            shutdowns.spawn(async move { g.raft.shutdown().await.map_err(|e| e.to_string()) });
        }
        while let Some(r) = shutdowns.join_next().await {
            r?.map_err(|e| format!("shutdown: {e}"))?;
        }
        self.backend.close().await
    }
}

impl<B: LogBackend> GroupDirectory for Node<B> {
    fn raft(
        &self,
        group: GroupId,
    ) -> Pin<Box<dyn Future<Output = Result<Raft<KvConfig>, String>> + Send + '_>> {
        Box::pin(async move {
            self.group(group, true)
                .await
                .map(|g| g.raft)
                .map_err(|e| e.to_string())
        })
    }
}
