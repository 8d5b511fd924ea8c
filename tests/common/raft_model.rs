//! The `RaftLog` operation model of `tests/kill9_raft.rs`: Raft-legal operations (votes,
//! appends, commits, conflicting truncates followed by appends in a higher term, purges, user
//! data) with their intent-line encoding, a model of the Raft state and the log ids of the live
//! entries, a reader ([`raft_observe`]) that checks every payload against its log id, and a
//! [`RaftDriver`] of random operations.

use std::collections::BTreeMap;

use raft_mmap_log::raft::{LogId, RaftLog, RaftTypes, Vote};

use super::Rng;

/// The leader of a term (one leader per term keeps log ids Raft-like).
pub fn leader(term: u64) -> u64 {
    term % 3 + 1
}

/// Payload of the entry with log id `id`: a log id names one entry in Raft, so the bytes are a
/// function of it (24 bytes naming it, then 0..700 bytes derived from it).
pub fn raft_payload(id: &LogId) -> Vec<u8> {
    let mut r = Rng(id.index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ id.term.rotate_left(17));
    let len = r.below(700) as usize;
    let mut v = Vec::with_capacity(24 + len);
    for x in [id.term, id.node_id, id.index] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    while v.len() < 24 + len {
        let w = r.next().to_le_bytes();
        let n = w.len().min(24 + len - v.len());
        v.extend_from_slice(&w[..n]);
    }
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ROp {
    Vote(Vote),
    Append(LogId),
    Commit(LogId),
    Truncate(Option<LogId>),
    Purge(LogId),
    User(Option<u64>),
}

pub fn enc_id(id: &Option<LogId>) -> String {
    match id {
        Some(l) => format!("{}.{}.{}", l.term, l.node_id, l.index),
        None => "-".into(),
    }
}

pub fn dec_id(s: &str) -> Option<Option<LogId>> {
    if s == "-" {
        return Some(None);
    }
    let mut it = s.split('.').map(|x| x.parse::<u64>());
    let id = LogId::new(it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    Some(Some(id))
}

pub fn enc_vote(v: &Option<Vote>) -> String {
    match v {
        Some(v) => format!("{}.{}.{}", v.term, v.node_id, u8::from(v.committed)),
        None => "-".into(),
    }
}

pub fn dec_vote(s: &str) -> Option<Option<Vote>> {
    Some(dec_id(s)?.map(|l| Vote::new(l.term, l.node_id, l.index == 1)))
}

impl ROp {
    pub fn encode(&self) -> String {
        match self {
            ROp::Vote(v) => format!("V {}", enc_vote(&Some(*v))),
            ROp::Append(id) => format!("E {}", enc_id(&Some(*id))),
            ROp::Commit(id) => format!("C {}", enc_id(&Some(*id))),
            ROp::Truncate(id) => format!("T {}", enc_id(id)),
            ROp::Purge(id) => format!("P {}", enc_id(&Some(*id))),
            ROp::User(u) => format!("U {}", u.map_or("-".into(), |u| u.to_string())),
        }
    }
    pub fn decode(s: &str) -> Option<ROp> {
        let (tag, arg) = s.split_once(' ')?;
        Some(match tag {
            "V" => ROp::Vote(dec_vote(arg)??),
            "E" => ROp::Append(dec_id(arg)??),
            "C" => ROp::Commit(dec_id(arg)??),
            "T" => ROp::Truncate(dec_id(arg)?),
            "P" => ROp::Purge(dec_id(arg)??),
            "U" if arg == "-" => ROp::User(None),
            "U" => ROp::User(Some(arg.parse().ok()?)),
            _ => return None,
        })
    }
}

/// The Raft state and the log ids of the live entries (payloads are checked on reading).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RModel {
    pub vote: Option<Vote>,
    pub last: Option<LogId>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub user: Option<u64>,
    pub entries: BTreeMap<u64, LogId>,
}

impl RModel {
    pub fn apply(&mut self, op: &ROp) {
        match *op {
            ROp::Vote(v) => self.vote = Some(v),
            ROp::Append(id) => {
                assert_eq!(id.index, self.last.map_or(0, |l| l.index + 1), "model: gap");
                self.entries.insert(id.index, id);
                self.last = Some(id);
            }
            ROp::Commit(id) => self.committed = Some(id),
            ROp::Truncate(at) => {
                match at {
                    Some(id) => drop(self.entries.split_off(&(id.index + 1))),
                    None => self.entries.clear(),
                }
                self.last = at.or(self.purged);
            }
            ROp::Purge(id) => {
                if Some(id) > self.purged {
                    self.entries = self.entries.split_off(&(id.index + 1));
                    self.purged = Some(id);
                }
            }
            ROp::User(u) => self.user = u,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "vote={} last={} committed={} purged={} user={:?} entries={}..{}",
            enc_vote(&self.vote),
            enc_id(&self.last),
            enc_id(&self.committed),
            enc_id(&self.purged),
            self.user,
            self.entries
                .keys()
                .next()
                .map_or("-".into(), |i| i.to_string()),
            self.entries
                .keys()
                .next_back()
                .map_or("-".into(), |i| i.to_string()),
        )
    }
}

/// Reads the whole Raft log back, checking every payload against its log id.
pub fn raft_observe(log: &RaftLog<RaftTypes>) -> RModel {
    let st = log.state().clone();
    let snap = log.reader().view();
    assert_eq!(
        snap.state().expect("reader state"),
        st,
        "reader != writer state"
    );
    let mut entries = BTreeMap::new();
    for e in snap.read(..) {
        let (id, p) = e.expect("read entry");
        assert!(
            p == raft_payload(&id).as_slice(),
            "entry {id} has wrong bytes ({} bytes)",
            p.len()
        );
        entries.insert(id.index, id);
    }
    let user = st.user_data.as_ref().map(|u| {
        assert_eq!(u.len(), 8, "user data length");
        u64::from_le_bytes(u[..].try_into().unwrap())
    });
    let m = RModel {
        vote: st.vote,
        last: st.last,
        committed: st.committed,
        purged: st.purged,
        user,
        entries,
    };
    assert_eq!(
        m.entries.values().next_back().copied().or(m.purged),
        m.last,
        "last log id vs entries"
    );
    m
}

/// Chooses and performs Raft-legal operations on a `RaftLog`.
pub struct RaftDriver {
    pub log: RaftLog<RaftTypes>,
    pub rng: Rng,
    /// Current term (votes, entries).
    pub term: u64,
    pub user_counter: u64,
}

impl RaftDriver {
    fn stored(&self, index: u64) -> Option<LogId> {
        let st = self.log.state();
        match self.log.log_id(index).expect("log_id") {
            Some(id) => Some(id),
            None => st.purged.filter(|p| p.index == index),
        }
    }

    /// One step: picks ops, announces them with `intent`, performs them. Returns whether the
    /// step must be synced before it is acknowledged (a vote).
    pub fn step(&mut self, intent: &mut dyn FnMut(&[ROp])) -> bool {
        let st = self.log.state().clone();
        let last = st.last.map(|l| l.index);
        let first = st.purged.map_or(0, |p| p.index + 1);
        let len = last.map_or(0, |l| l + 1).saturating_sub(first);
        let r = self.rng.below(100);
        let mut ops = Vec::new();
        if r < 5 {
            let v = match st.vote {
                Some(v) if !v.committed && r % 2 == 0 => Vote::new(v.term, v.node_id, true),
                _ => Vote::new(self.term + 1, 1 + self.rng.below(3), self.rng.below(2) == 0),
            };
            self.term = self.term.max(v.term);
            ops.push(ROp::Vote(v));
        } else if r < 10 && last.is_some() {
            // Conflict: truncate at or above committed and purged, then a new term appends.
            let mut cands: Vec<Option<LogId>> = Vec::new();
            if st.committed.is_none() && st.purged.is_none() {
                cands.push(None);
            }
            let lo = st.committed.max(st.purged).map_or(0, |c| c.index);
            let hi = last.unwrap();
            let i = lo + self.rng.below(hi - lo + 1);
            cands.push(Some(self.stored(i).expect("stored log id")));
            let at = cands[self.rng.below(cands.len() as u64) as usize];
            ops.push(ROp::Truncate(at));
            self.term += 1;
            let start = at.or(st.purged).map_or(0, |l| l.index + 1);
            for index in start..start + 1 + self.rng.below(4) {
                ops.push(ROp::Append(LogId::new(self.term, leader(self.term), index)));
            }
        } else if r < 22 && len > 0 {
            let lo = st.committed.map_or(first, |c| c.index.max(first));
            let i = lo + self.rng.below(last.unwrap() + 1 - lo);
            ops.push(ROp::Commit(self.stored(i).expect("stored")));
        } else if (r < 28 || len > 200) && st.committed.is_some_and(|c| c.index >= first) {
            let c = st.committed.unwrap().index;
            let i = first + self.rng.below(c + 1 - first);
            ops.push(ROp::Purge(self.stored(i).expect("stored")));
        } else if r < 30 {
            self.user_counter += 1;
            ops.push(ROp::User(
                (self.rng.below(5) != 0).then_some(self.user_counter),
            ));
        } else {
            let start = last.map_or(0, |l| l + 1);
            for index in start..start + 1 + self.rng.below(8) {
                ops.push(ROp::Append(LogId::new(self.term, leader(self.term), index)));
            }
        }
        intent(&ops);
        let mut appends: Vec<(LogId, Vec<u8>)> = Vec::new();
        let mut is_vote = false;
        for op in &ops {
            match *op {
                ROp::Append(id) => appends.push((id, raft_payload(&id))),
                ROp::Vote(v) => {
                    self.log.save_vote(v).expect("save_vote");
                    is_vote = true;
                }
                ROp::Commit(id) => self.log.commit(id).expect("commit"),
                ROp::Truncate(at) => self.log.truncate_after(at).expect("truncate_after"),
                ROp::Purge(id) => self.log.purge_upto(id).expect("purge_upto"),
                ROp::User(u) => self
                    .log
                    .save_user_data(u.map(|u| u.to_le_bytes().to_vec()))
                    .expect("save_user_data"),
            }
        }
        if !appends.is_empty() {
            self.log
                .append(appends.iter().map(|(i, p)| (*i, &p[..])))
                .expect("append");
        }
        is_vote
    }
}
