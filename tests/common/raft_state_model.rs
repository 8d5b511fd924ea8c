//! The typed model of `tests/raft_crash_model.rs`: the [`RaftState`] and every live entry (log
//! id and payload bytes) of a [`RaftLog`], the Raft operations' effect on it, and [`observe`],
//! which reads both back from a log (writer state, reader snapshot, `get` and `read` agree).

use std::collections::BTreeMap;
use std::sync::Arc;

use raft_mmap_log::raft::{LogId, RaftLog, RaftState, RaftTypes, SnapshotMeta};

use super::crash_harness::CrashModel;
use super::raft_model::leader;

pub type Log = RaftLog<RaftTypes>;
pub type State = RaftState<RaftTypes>;

pub fn id(term: u64, index: u64) -> LogId {
    LogId::new(term, leader(term), index)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub state: State,
    /// Live entries: index -> (log id, payload).
    pub entries: BTreeMap<u64, (LogId, Arc<[u8]>)>,
}

pub fn index_of(id: &Option<LogId>) -> Option<u64> {
    id.as_ref().map(|l| l.index)
}

impl Model {
    pub fn last_index(&self) -> Option<u64> {
        index_of(&self.state.last)
    }
    pub fn next_index(&self) -> u64 {
        self.state.next_index()
    }
    pub fn last_term(&self) -> u64 {
        self.state.last.map_or(0, |l| l.term)
    }
    /// The log id stored at `index` (an entry, or the purged log id).
    pub fn stored(&self, index: u64) -> Option<LogId> {
        match self.entries.get(&index) {
            Some((id, _)) => Some(*id),
            None => self.state.purged.filter(|p| p.index == index),
        }
    }

    pub fn append(&mut self, id: LogId, payload: Arc<[u8]>) {
        assert_eq!(id.index, self.next_index(), "model: non-consecutive");
        assert!(Some(id) > self.state.last, "model: log id reversal");
        self.entries.insert(id.index, (id, payload));
        self.state.last = Some(id);
    }

    pub fn truncate_after(&mut self, at: Option<LogId>) {
        match at {
            Some(id) => {
                self.entries.split_off(&(id.index + 1));
                self.state.last = Some(id);
            }
            None => {
                self.entries.clear();
                self.state.last = self.state.purged;
            }
        }
    }

    pub fn purge(&mut self, id: LogId) {
        if Some(id) <= self.state.purged {
            return;
        }
        self.entries = self.entries.split_off(&(id.index + 1));
        self.state.purged = Some(id);
    }

    pub fn install_snapshot(&mut self, id: LogId, data: Vec<u8>) {
        let keeps = self.entries.get(&id.index).map(|e| e.0) == Some(id);
        if keeps {
            self.entries = self.entries.split_off(&(id.index + 1));
        } else {
            self.entries.clear();
            self.state.last = Some(id);
        }
        self.state.purged = Some(id);
        if self.state.committed < Some(id) {
            self.state.committed = Some(id);
        }
        self.state.snapshot = Some(SnapshotMeta {
            last_log_id: id,
            data,
        });
    }

    pub fn summary(&self) -> String {
        let s = &self.state;
        format!(
            "vote={:?} last={:?} committed={:?} purged={:?} user_data={:?} snapshot={:?} entries={}",
            s.vote.map(|v| v.to_string()),
            s.last.map(|l| l.to_string()),
            s.committed.map(|l| l.to_string()),
            s.purged.map(|l| l.to_string()),
            s.user_data.as_ref().map(|u| u.len()),
            s.snapshot
                .as_ref()
                .map(|m| (m.last_log_id.to_string(), m.data.len())),
            self.entries
                .iter()
                .map(|(i, (id, p))| format!("{i}:{}/{}", id.term, p.len()))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// The state and entries a log exposes (writer state, reader snapshot, `get` and `read`
/// agree, and the engine's first/next index match the Raft state).
pub fn observe(log: &Log) -> Model {
    let state = log.state().clone();
    let snap = log.reader().view();
    assert_eq!(
        snap.state().expect("reader state"),
        state,
        "reader state != writer state"
    );
    let first = index_of(&state.purged).map_or(0, |p| p + 1);
    if !snap.is_empty() {
        assert_eq!(snap.first_index(), first, "first index vs purged log id");
    }
    assert_eq!(
        snap.next_index().max(first),
        state.next_index(),
        "next index"
    );
    let mut entries = BTreeMap::new();
    for r in snap.read(..) {
        let (id, p) = r.expect("read entry");
        let (gid, gp) = snap.get(id.index).expect("get").expect("get inside range");
        assert_eq!((gid, gp), (id, p), "get != read at {}", id.index);
        assert!(
            entries
                .insert(id.index, (id, Arc::<[u8]>::from(p)))
                .is_none(),
            "index {} read twice",
            id.index
        );
    }
    if let Some((i, (id, _))) = entries.iter().next_back() {
        assert_eq!(Some(*id), state.last, "last entry {i} vs state.last");
    } else {
        assert_eq!(state.last, state.purged, "empty log: last == purged");
    }
    Model { state, entries }
}

impl CrashModel for Model {
    type Log = Log;
    fn observe(log: &Log) -> Model {
        observe(log)
    }
    fn summary(&self) -> String {
        Model::summary(self)
    }
    fn next_index(&self) -> u64 {
        Model::next_index(self)
    }
    fn entry_len(&self, index: u64) -> Option<usize> {
        self.entries.get(&index).map(|e| e.1.len())
    }
}
