//! One TCP connection per node pair, carrying the RPCs of every Raft group.
//!
//! A frame is `len: u32 LE` then `len` bytes: `tag: u8`, `call: u64 LE`, `group: u64 LE`,
//! `kind: u8`, payload. Tags: [`HELLO`] (the dialing node names itself: `call` is its node id),
//! [`REQUEST`], [`REPLY`] (payload: the postcard-encoded `Result` of the call) and
//! [`NO_GROUP`] (the group is not served here: payload is a UTF-8 reason). Requests and replies
//! flow both ways on the same connection; `call` matches a reply to its request.
//!
//! The node with the lower id dials (and re-dials while the link is down); the other accepts.
//! [`GroupNetwork`] is openraft's `RaftNetworkFactory` for one group: every group of a node
//! shares the node's [`Links`], and a request is routed on the peer by its group id through
//! [`GroupDirectory::raft`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use raft_mmap_log::openraft::KvConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

pub type NodeId = u64;
pub type GroupId = u64;

pub const HELLO: u8 = 0;
pub const REQUEST: u8 = 1;
pub const REPLY: u8 = 2;
pub const NO_GROUP: u8 = 3;

/// The RPC kinds.
pub const APPEND: u8 = 1;
pub const VOTE: u8 = 2;
pub const SNAPSHOT: u8 = 3;

const HEADER: usize = 1 + 8 + 8 + 1;
/// Frames larger than this are refused (a snapshot chunk is at most openraft's
/// `snapshot_max_chunk_size`, 3 MiB by default).
const MAX_FRAME: usize = 64 << 20;

/// Finds (or creates, on first use) the Raft of a group on this node.
pub trait GroupDirectory: Send + Sync + 'static {
    fn raft(
        &self,
        group: GroupId,
    ) -> Pin<Box<dyn Future<Output = Result<Raft<KvConfig>, String>> + Send + '_>>;
}

fn frame(tag: u8, call: u64, group: GroupId, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + HEADER + payload.len());
    f.extend_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
    f.push(tag);
    f.extend_from_slice(&call.to_le_bytes());
    f.extend_from_slice(&group.to_le_bytes());
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

struct Frame {
    tag: u8,
    call: u64,
    group: GroupId,
    kind: u8,
    payload: Vec<u8>,
}

async fn read_frame(rd: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Frame> {
    let len = rd.read_u32_le().await? as usize;
    if !(HEADER..=MAX_FRAME).contains(&len) {
        return Err(std::io::Error::other(format!("bad frame length {len}")));
    }
    let mut buf = vec![0u8; len];
    rd.read_exact(&mut buf).await?;
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    Ok(Frame {
        tag: buf[0],
        call: u64_at(1),
        group: u64_at(9),
        kind: buf[17],
        payload: buf[HEADER..].to_vec(),
    })
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, String>>>>;

/// One live connection to a peer.
struct Link {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_call: AtomicU64,
}

impl Link {
    async fn call(&self, group: GroupId, kind: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(call, tx);
        if self
            .out
            .send(frame(REQUEST, call, group, kind, payload))
            .is_err()
        {
            self.pending.lock().unwrap().remove(&call);
            return Err("connection closed".into());
        }
        rx.await
            .map_err(|_| "connection closed".to_string())
            .and_then(|r| r)
    }
}

/// A node's connections to its peers, and the tasks that serve them.
pub struct Links {
    me: NodeId,
    links: Mutex<BTreeMap<NodeId, Arc<Link>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Links {
    fn get(&self, peer: NodeId) -> Option<Arc<Link>> {
        self.links.lock().unwrap().get(&peer).cloned()
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task).abort_handle();
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Closes every connection and stops accepting: the peers see this node go down.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.links.lock().unwrap().clear();
    }

    /// Starts serving on `listener` and dialing the peers with higher ids in `peers`.
    pub fn start(
        me: NodeId,
        listener: TcpListener,
        peers: &BTreeMap<NodeId, SocketAddr>,
        groups: Arc<dyn GroupDirectory>,
    ) -> Arc<Links> {
        let links = Arc::new(Links {
            me,
            links: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&links);
        let dir = groups.clone();
        links.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (Some(links), dir) = (weak.upgrade(), dir.clone()) else {
                    return;
                };
                let inner = links.clone();
                links.spawn(async move {
                    let mut stream = stream;
                    let _ = stream.set_nodelay(true);
                    if let Ok(hello) = read_frame(&mut stream).await {
                        if hello.tag == HELLO {
                            inner.serve(hello.call, stream, dir).await;
                        }
                    }
                });
            }
        });
        for (&peer, &addr) in peers.range(me + 1..) {
            let weak = Arc::downgrade(&links);
            let dir = groups.clone();
            links.spawn(async move {
                loop {
                    if let Ok(mut stream) = TcpStream::connect(addr).await {
                        let _ = stream.set_nodelay(true);
                        let hello = frame(HELLO, me, 0, 0, &[]);
                        if stream.write_all(&hello).await.is_ok() {
                            let Some(links) = weak.upgrade() else { return };
                            links.serve(peer, stream, dir.clone()).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        links
    }

    /// Runs the connection to `peer` until it fails: replies are matched to calls, requests
    /// are dispatched to the group's Raft, each on its own task.
    async fn serve(&self, peer: NodeId, stream: TcpStream, groups: Arc<dyn GroupDirectory>) {
        let (mut rd, wr) = stream.into_split();
        let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let link = Arc::new(Link {
            out: out.clone(),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
        });
        self.links.lock().unwrap().insert(peer, link.clone());
        let writer = tokio::spawn(async move {
            let mut wr = BufWriter::with_capacity(256 << 10, wr);
            while let Some(f) = queue.recv().await {
                wr.write_all(&f).await?;
                while let Ok(f) = queue.try_recv() {
                    wr.write_all(&f).await?;
                }
                wr.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        });
        self.tasks.lock().unwrap().push(writer.abort_handle());
        while let Ok(f) = read_frame(&mut rd).await {
            match f.tag {
                REQUEST => {
                    let (groups, out) = (groups.clone(), out.clone());
                    tokio::spawn(async move {
                        let reply = match groups.raft(f.group).await {
                            Ok(raft) => dispatch(&raft, f.kind, &f.payload).await,
                            Err(why) => Err(why),
                        };
                        let reply = match reply {
                            Ok(bytes) => frame(REPLY, f.call, f.group, f.kind, &bytes),
                            Err(why) => frame(NO_GROUP, f.call, f.group, f.kind, why.as_bytes()),
                        };
                        let _ = out.send(reply);
                    });
                }
                REPLY | NO_GROUP => {
                    let waiter = link.pending.lock().unwrap().remove(&f.call);
                    if let Some(w) = waiter {
                        let _ = w.send(if f.tag == REPLY {
                            Ok(f.payload)
                        } else {
                            Err(String::from_utf8_lossy(&f.payload).into_owned())
                        });
                    }
                }
                _ => break,
            }
        }
        writer.abort();
        let mut links = self.links.lock().unwrap();
        if links.get(&peer).is_some_and(|l| Arc::ptr_eq(l, &link)) {
            links.remove(&peer);
        }
        // Dropping the waiters fails the calls still in flight.
        link.pending.lock().unwrap().clear();
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| format!("encode: {e}"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("decode: {e}"))
}

/// Runs one request on the group's Raft; the reply is the encoded `Result`.
async fn dispatch(raft: &Raft<KvConfig>, kind: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        APPEND => encode(&raft.append_entries(decode(payload)?).await),
        VOTE => encode(&raft.vote(decode(payload)?).await),
        SNAPSHOT => encode(&raft.install_snapshot(decode(payload)?).await),
        other => Err(format!("unknown RPC kind {other}")),
    }
}

/// openraft's network for one group of a node: clients share the node's connections.
#[derive(Clone)]
pub struct GroupNetwork {
    pub group: GroupId,
    pub links: Arc<Links>,
}

/// A group's view of one peer.
pub struct GroupClient {
    group: GroupId,
    target: NodeId,
    links: Arc<Links>,
}

impl RaftNetworkFactory<KvConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupClient {
        GroupClient {
            group: self.group,
            target,
            links: self.links.clone(),
        }
    }
}

fn unreachable<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
}

impl GroupClient {
    /// Sends `req` to the target's Raft of this group; the target's answer, or `Unreachable`
    /// when there is no connection, it breaks, the target does not serve the group or the
    /// call outlives `option`'s hard TTL.
    async fn call<Req, Resp, E>(
        &self,
        kind: u8,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let link = self.links.get(self.target).ok_or_else(|| {
            unreachable(format!(
                "node {} has no connection to node {}",
                self.links.me, self.target
            ))
        })?;
        let payload = encode(req).map_err(unreachable)?;
        let reply = tokio::time::timeout(option.hard_ttl(), link.call(self.group, kind, &payload))
            .await
            .map_err(|_| unreachable(format!("no reply from node {}", self.target)))?
            .map_err(unreachable)?;
        decode::<Result<Resp, RaftError<NodeId, E>>>(&reply)
            .map_err(unreachable)?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<KvConfig> for GroupClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(VOTE, &rpc, &option).await
    }
}
