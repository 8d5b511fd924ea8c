//! The running multi-region cluster: nodes started and stopped, regions created, puts routed
//! to each region's leader with a window in flight, and the checks that every region agrees
//! and holds every acknowledged key. Generic over the nodes' [`NodeLog`].

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::backend::{Error, NodeLog};
use super::node::{start_node, Input, Net, Node, NodeConfig, NodeEnd, RegionStatus};
use super::state_machine::{encode_put, value_of};

/// A proposal not acknowledged after this long is sent again (to the leader of the moment).
const RESEND: Duration = Duration::from_millis(1000);
/// How long a phase may wait for leaders or for the nodes to agree.
const PATIENCE: Duration = Duration::from_secs(60);
/// How often the client looks up the regions' leaders again.
const LEADERS_EVERY: Duration = Duration::from_millis(20);

/// The region a key belongs to, of regions `1..=regions` (a fixed hash of the key).
pub fn region_of(key: u64, regions: u64) -> u64 {
    let mut x = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    1 + (x ^ (x >> 31)) % regions.max(1)
}

/// What a run of puts did.
#[derive(Debug, Default)]
pub struct PutStats {
    /// The keys acknowledged (applied on the node they were proposed to).
    pub acked: Vec<u64>,
    /// Each acknowledged put's latency, first send to acknowledgement, in microseconds.
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
    /// Puts sent again after [`RESEND`] without an acknowledgement.
    pub resent: u64,
}

impl PutStats {
    pub fn per_second(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or(0)
    }
}

/// The running cluster; node `i` runs in `base/node-i`.
pub struct Cluster<L: NodeLog> {
    base: PathBuf,
    config: NodeConfig,
    net: Net,
    nodes: BTreeMap<u64, Node>,
    /// Region -> the node believed to lead it.
    leaders: HashMap<u64, u64>,
    _log: PhantomData<fn() -> L>,
}

impl<L: NodeLog> Cluster<L> {
    /// Starts nodes `1..=n` (with the regions their logs hold, none at first).
    pub fn start(base: &Path, n: u64, compact_keep: Option<u64>) -> Self {
        let mut c = Cluster {
            base: base.to_path_buf(),
            config: NodeConfig {
                peers: (1..=n).collect(),
                compact_keep,
            },
            net: Net::default(),
            nodes: BTreeMap::new(),
            leaders: HashMap::new(),
            _log: PhantomData,
        };
        for id in 1..=n {
            c.start_node(id);
        }
        c
    }

    pub fn peers(&self) -> Vec<u64> {
        self.config.peers.clone()
    }

    pub fn start_node(&mut self, id: u64) {
        let dir = self.base.join(format!("node-{id}"));
        let node = start_node::<L>(id, dir, self.config.clone(), &self.net);
        self.nodes.insert(id, node);
    }

    /// The node that first campaigns in `region`: the regions' leaders spread over the nodes.
    pub fn home_of(&self, region: u64) -> u64 {
        let peers = &self.config.peers;
        peers[((region.max(1) - 1) % peers.len() as u64) as usize]
    }

    /// Sends `input` to node `to` (dropped if it is down).
    pub fn send(&self, to: u64, input: Input) {
        self.net.send(to, input);
    }

    /// Creates `regions`: each one's home node creates it and campaigns; the other nodes
    /// create their peer of it when its first message reaches them. Waits for the leaders.
    pub fn create_regions(&mut self, regions: &[u64]) -> Result<(), Error> {
        for &r in regions {
            self.send(self.home_of(r), Input::Campaign(r));
        }
        self.wait_leaders(regions)
    }

    /// A running node's status of a region.
    pub fn region_status(&self, node: u64, region: u64) -> Option<RegionStatus> {
        self.nodes.get(&node)?.status.region(region)
    }

    /// Looks up every region's leader: the running node that leads it in the highest term.
    fn refresh_leaders(&mut self) {
        let mut best: HashMap<u64, (u64, u64)> = HashMap::new();
        for (&id, n) in &self.nodes {
            let regions = n.status.regions.lock().unwrap_or_else(|e| e.into_inner());
            for (&r, s) in regions.iter().filter(|(_, s)| s.leader) {
                let e = best.entry(r).or_insert((s.term, id));
                if s.term > e.0 {
                    *e = (s.term, id);
                }
            }
        }
        self.leaders = best.into_iter().map(|(r, (_, id))| (r, id)).collect();
    }

    /// The node believed to lead `region` (its home node if none is known).
    fn leader_of(&self, region: u64) -> u64 {
        self.leaders
            .get(&region)
            .copied()
            .unwrap_or_else(|| self.home_of(region))
    }

    /// Waits until every region of `regions` has a leader.
    pub fn wait_leaders(&mut self, regions: &[u64]) -> Result<(), Error> {
        self.wait("leaders", |c| {
            c.refresh_leaders();
            regions.iter().all(|r| c.leaders.contains_key(r))
        })
    }

    /// Polls `done` until it holds, failing if a node stops by itself or after [`PATIENCE`].
    fn wait(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), Error> {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            if let Some(e) = self.failed() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Puts `keys` (value [`value_of`]), key `k` to region `route(k)` through its leader, at
    /// most `window` in flight; with `until`, no new key is sent after it. Returns once every
    /// put sent is acknowledged.
    pub fn put(
        &mut self,
        keys: Range<u64>,
        window: usize,
        until: Option<Instant>,
        route: &dyn Fn(u64) -> u64,
    ) -> Result<PutStats, Error> {
        let (ack_tx, ack_rx) = mpsc::channel();
        // rid (= key) -> (first send, last send)
        let mut outstanding: HashMap<u64, (Instant, Instant)> = HashMap::new();
        let mut stats = PutStats::default();
        let mut next = keys.start;
        let started = Instant::now();
        let mut deadline = started + PATIENCE;
        let mut looked_up = Instant::now();
        self.refresh_leaders();
        loop {
            let open = next < keys.end && until.is_none_or(|u| Instant::now() < u);
            if !open && outstanding.is_empty() {
                break;
            }
            while open && outstanding.len() < window && next < keys.end {
                let region = route(next);
                let (rid, data, ack) = (
                    next,
                    encode_put(next, next, &value_of(next)),
                    ack_tx.clone(),
                );
                let propose = Input::Propose {
                    region,
                    rid,
                    data,
                    ack,
                };
                self.send(self.leader_of(region), propose);
                let now = Instant::now();
                outstanding.insert(next, (now, now));
                next += 1;
            }
            let mut on_ack = |rid: u64, stats: &mut PutStats| {
                if let Some((first, _)) = outstanding.remove(&rid) {
                    stats.acked.push(rid);
                    stats.latencies_us.push(first.elapsed().as_micros() as u64);
                }
            };
            match ack_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(rid) => {
                    on_ack(rid, &mut stats);
                    while let Ok(rid) = ack_rx.try_recv() {
                        on_ack(rid, &mut stats);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            }
            let now = Instant::now();
            if now - looked_up > LEADERS_EVERY {
                self.refresh_leaders();
                looked_up = now;
            }
            let late: Vec<u64> = outstanding
                .iter()
                .filter(|(_, (_, last))| now - *last > RESEND)
                .map(|(&rid, _)| rid)
                .collect();
            if late.is_empty() {
                continue;
            }
            if now > deadline {
                return Err(format!("{} puts not acknowledged", outstanding.len()).into());
            }
            if let Some(e) = self.failed() {
                return Err(e);
            }
            for rid in late {
                let region = route(rid);
                let (data, ack) = (encode_put(rid, rid, &value_of(rid)), ack_tx.clone());
                self.send(
                    self.leader_of(region),
                    Input::Propose {
                        region,
                        rid,
                        data,
                        ack,
                    },
                );
                if let Some(t) = outstanding.get_mut(&rid) {
                    t.1 = now;
                }
                stats.resent += 1;
            }
            deadline = deadline.max(now + RESEND);
        }
        stats.elapsed = started.elapsed();
        Ok(stats)
    }

    /// Waits until node `id` has opened its log and every region in it.
    pub fn wait_open(&mut self, id: u64) -> Result<Duration, Error> {
        let mut micros = 0;
        self.wait("a node to open its log", |c| {
            micros = c
                .nodes
                .get(&id)
                .map_or(0, |n| n.status.open_micros.load(Ordering::Relaxed));
            micros > 0
        })?;
        Ok(Duration::from_micros(micros))
    }

    /// The regions node `id` found in its log at open, with their last index.
    pub fn recovered(&self, id: u64) -> BTreeMap<u64, u64> {
        self.nodes.get(&id).map_or_else(BTreeMap::new, |n| {
            n.status
                .recovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Every region's commit index on its leader now.
    fn leaders_commit(&mut self, regions: &[u64]) -> BTreeMap<u64, u64> {
        self.refresh_leaders();
        regions
            .iter()
            .map(|&r| {
                let commit = self
                    .region_status(self.leader_of(r), r)
                    .map_or(0, |s| s.commit);
                (r, commit)
            })
            .collect()
    }

    /// Waits until each of `nodes` has applied, in every region of `regions`, what the
    /// region's leader had committed when this was called.
    pub fn wait_applied(&mut self, nodes: &[u64], regions: &[u64]) -> Result<(), Error> {
        self.wait_leaders(regions)?;
        let target = self.leaders_commit(regions);
        self.wait("the nodes to apply what the leaders committed", |c| {
            nodes.iter().all(|&n| {
                target
                    .iter()
                    .all(|(&r, &commit)| c.region_status(n, r).is_some_and(|s| s.applied >= commit))
            })
        })
    }

    /// Stops node `id` and returns its end state.
    pub fn stop_node(&mut self, id: u64) -> Result<NodeEnd, Error> {
        let node = self.nodes.remove(&id).ok_or("no such node")?;
        self.net.send(id, Input::Stop);
        self.net.set(id, None);
        node.thread
            .join()
            .map_err(|_| format!("node {id} panicked"))?
    }

    /// Stops every node; their end states.
    pub fn stop_all(&mut self) -> Result<BTreeMap<u64, NodeEnd>, Error> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.into_iter()
            .map(|id| Ok((id, self.stop_node(id)?)))
            .collect()
    }

    /// The number of Ready rounds that wrote (and synced) on node `id` so far.
    pub fn syncs(&self, id: u64) -> u64 {
        self.nodes
            .get(&id)
            .map_or(0, |n| n.status.syncs.load(Ordering::Relaxed))
    }

    /// Time node `id`'s rounds spent writing and syncing so far.
    pub fn write_and_sync_time(&self, id: u64) -> (Duration, Duration) {
        let us = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Relaxed));
        self.nodes
            .get(&id)
            .map_or((Duration::ZERO, Duration::ZERO), |n| {
                (us(&n.status.write_micros), us(&n.status.sync_micros))
            })
    }

    /// Regions node `id` created because a message named a region it did not have.
    pub fn created_on_contact(&self, id: u64) -> u64 {
        self.nodes
            .get(&id)
            .map_or(0, |n| n.status.created_on_contact.load(Ordering::Relaxed))
    }

    /// A node whose thread ended by itself, with why.
    fn failed(&mut self) -> Option<Error> {
        let id = *self.nodes.iter().find(|(_, n)| n.thread.is_finished())?.0;
        let node = self.nodes.remove(&id)?;
        let why = match node.thread.join() {
            Ok(Ok(_)) => "without an error".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_string(),
        };
        Some(format!("node {id} stopped: {why}").into())
    }
}

/// What is wrong with the nodes' end states: entries a node persisted twice, a region missing
/// on a node, a region whose state machines differ, an acknowledged key missing or wrong (key
/// `k` lives in region `route(k)`). Empty if nothing.
pub fn problems(
    ends: &BTreeMap<u64, NodeEnd>,
    regions: &[u64],
    acked: &[u64],
    route: &dyn Fn(u64) -> u64,
) -> Vec<String> {
    let mut out = Vec::new();
    for (n, e) in ends {
        if e.persisted_again > 0 {
            out.push(format!(
                "node {n}: {} entries persisted again",
                e.persisted_again
            ));
        }
    }
    for &r in regions {
        let maps: Vec<(u64, &BTreeMap<u64, Vec<u8>>)> = ends
            .iter()
            .filter_map(|(&n, e)| e.regions.get(&r).map(|(_, m)| (n, m)))
            .collect();
        if maps.len() != ends.len() {
            out.push(format!(
                "region {r} is on {} of {} nodes",
                maps.len(),
                ends.len()
            ));
        }
        for w in maps.windows(2) {
            if w[0].1 != w[1].1 {
                out.push(format!(
                    "region {r}: nodes {} and {} differ",
                    w[0].0, w[1].0
                ));
            }
        }
    }
    for &k in acked {
        let r = route(k);
        for (n, e) in ends {
            let got = e.regions.get(&r).and_then(|(_, m)| m.get(&k));
            if got != Some(&value_of(k)) {
                out.push(format!(
                    "node {n}: acknowledged key {k} of region {r} is {got:?}"
                ));
            }
        }
    }
    out.truncate(20);
    out
}
