//! A small in-memory key-value state machine for [`KvConfig`]: for tests, examples and as a
//! template. It is **not durable**: after a restart openraft re-applies the committed log
//! (which [`super::MmapLogStore`] keeps) to rebuild it, so run it without purging the log
//! (`SnapshotPolicy::Never`) or give it a durable snapshot of your own.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use ::openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use ::openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

::openraft::declare_raft_types!(
    /// The openraft type config of the key-value example: `u64` node ids, [`BasicNode`],
    /// [`KvRequest`] / [`KvResponse`], `Cursor<Vec<u8>>` snapshots, tokio.
    pub KvConfig:
        D = KvRequest,
        R = KvResponse,
);

/// A write to the key-value state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// Sets `key` to `value`.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// Key.
        key: String,
    },
}

/// The result of a [`KvRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// The value the key had before.
    pub previous: Option<String>,
}

/// What the state machine holds, and what a snapshot serializes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvData {
    /// Last applied log id.
    pub last_applied: Option<LogId<u64>>,
    /// Last membership applied.
    pub last_membership: StoredMembership<u64, BasicNode>,
    /// The keys and values.
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    state: KvData,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The in-memory key-value state machine. Clones share the same state, so an application
/// (or a test) can keep one to read the data while openraft owns another.
#[derive(Debug, Clone, Default)]
pub struct KvStateMachine {
    inner: Arc<Mutex<Inner>>,
}

type SmResult<T> = Result<T, StorageError<u64>>;

fn sm_err(verb: ErrorVerb, e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(e)).into()
}

impl KvStateMachine {
    /// An empty state machine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data is plain values: a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current state (last applied, membership, data).
    pub fn state(&self) -> KvData {
        self.lock().state.clone()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().state.data.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.lock().state.data.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds snapshots of a [`KvStateMachine`].
#[derive(Debug, Clone)]
pub struct KvSnapshotBuilder {
    sm: KvStateMachine,
}

impl RaftSnapshotBuilder<KvConfig> for KvSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<KvConfig>> {
        let mut inner = self.sm.lock();
        let bytes = serde_json::to_vec(&inner.state).map_err(|e| sm_err(ErrorVerb::Read, &e))?;
        inner.snapshots_built += 1;
        let last = inner.state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.state.last_membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.index.to_string())
                    .unwrap_or_else(|| "none".into()),
                inner.snapshots_built
            ),
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<KvConfig> for KvStateMachine {
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SmResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let inner = self.lock();
        Ok((
            inner.state.last_applied,
            inner.state.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<KvResponse>>
    where
        I: IntoIterator<Item = ::openraft::Entry<KvConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let st = &mut inner.state;
        let mut out = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => KvResponse::default(),
                EntryPayload::Normal(KvRequest::Set { key, value }) => KvResponse {
                    previous: st.data.insert(key, value),
                },
                EntryPayload::Normal(KvRequest::Delete { key }) => KvResponse {
                    previous: st.data.remove(&key),
                },
                EntryPayload::Membership(m) => {
                    st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    KvResponse::default()
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> KvSnapshotBuilder {
        KvSnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SmResult<()> {
        let bytes = snapshot.into_inner();
        let state: KvData =
            serde_json::from_slice(&bytes).map_err(|e| sm_err(ErrorVerb::Read, &e))?;
        let mut inner = self.lock();
        inner.state = KvData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            data: state.data,
        };
        inner.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<KvConfig>>> {
        let inner = self.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
