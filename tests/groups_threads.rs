//! The shared log ([`Groups`]) under threads, under SIGKILL, and its segment collection.
//!
//! * **`writers_and_readers`**: 8 writer threads, each appending to its own two groups (by
//!   `Group::append_batch` and by [`WriteBatch`]es over both, with purges now and then), four
//!   of them also appending to one shared group through cloned `Group` handles (each takes
//!   the next index and retries on `NonConsecutive`; one of them purges it); every writer
//!   syncs after its batches and notes what is acknowledged. Two reader threads read views of
//!   random groups all along and check every payload (derived from group and index) and that
//!   a view never goes back. At the end the segment files are few (purged ones went), and the
//!   log is reopened: everything acknowledged is there, each group starting where its writer
//!   last purged it. `RML_GROUPS_THREADS_MS` sets how long the writers run (default 1500
//!   ms).
//! * **`kill9_rounds`**: a child process (this binary again, `child_entry`) runs 8 writer
//!   threads that write synced batches to their groups (appends, write batches, purges) and
//!   print "acked group index" lines once `sync` returns (its main thread also calls
//!   `rewrite_lagging(8)` every few milliseconds, unless `RML_GROUPS_KILL9_REWRITE=0`); the
//!   parent SIGKILLs it at a random
//!   moment, reopens, and checks that every acknowledged entry is there with its payload, that
//!   every group is a contiguous run of correct entries, and that no purge went further than
//!   one that was issued. `RML_GROUPS_KILL9_ROUNDS` (default 20) sets the number of kills,
//!   `RML_GROUPS_KILL9_SEED` replays.
//! * **`rewrite_lagging_frees_the_oldest_segment`**: many groups purge while one lags with 3
//!   entries in the oldest segment; `oldest_groups` names it first, a view of it (and a slice
//!   of its payload) is held across `rewrite_lagging(32)` and a sync, after which the oldest
//!   segment file is gone from the directory (deleted or renamed into the pool) while the
//!   held slice keeps its bytes, also after much more writing (a pooled file is not reused
//!   while a view maps it), and the group reads the same, also after a reopen.
//! * **`rewrite_lagging_cut_midway_keeps_every_entry`**: a kill in the middle of
//!   `rewrite_lagging`, simulated exactly (the call's bytes put a prefix at a time into a copy
//!   taken before it), must not lose the moved group's entries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_mmap_log::groups::{Group, Groups, WriteBatch};
use raft_mmap_log::{Config, Error};

mod common;

use common::child::{emit, env_usize, seed_from_env, spawn_and_kill};
use common::Rng;

/// Payload of entry `index` of group `group`: 0..300 bytes, starting with both (when long
/// enough), the rest derived from them.
fn payload(group: u64, index: u64) -> Vec<u8> {
    let len = (group.wrapping_mul(7) ^ index.wrapping_mul(13)) % 300;
    let mut v = Vec::with_capacity(len as usize + 16);
    v.extend_from_slice(&group.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&common::derive(group, index, len as usize));
    v.truncate(len as usize);
    v
}

fn check_payload(group: u64, index: u64, got: &[u8], what: &str) {
    if got != &payload(group, index)[..] {
        let owner = if got.len() >= 16 {
            format!(
                " (looks like group {} index {})",
                u64::from_le_bytes(got[..8].try_into().unwrap()),
                u64::from_le_bytes(got[8..16].try_into().unwrap())
            )
        } else {
            String::new()
        };
        panic!(
            "{what}: group {group} index {index}: wrong payload ({} bytes){owner}",
            got.len()
        );
    }
}

fn seg_names(dir: &Path) -> Vec<String> {
    common::seg_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// Appends `n` entries to `g` from its next index (or `start` if it is empty).
fn append_n(g: &Group, start: u64, n: u64) -> std::ops::Range<u64> {
    let from = if g.last_index().is_some() {
        g.next_index()
    } else {
        start.max(g.next_index())
    };
    let data: Vec<(u64, Vec<u8>)> = (from..from + n).map(|i| (i, payload(g.id(), i))).collect();
    g.append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
    from..from + n
}

// ---------------------------------------------------------------------------------------------
// Threads

const WRITERS: u64 = 8;
const SHARED: u64 = 5;

fn own_groups(t: u64) -> [u64; 2] {
    [1000 + 2 * t, 1001 + 2 * t]
}

#[test]
fn writers_and_readers() {
    let tmp = common::scratch("groups-threads");
    let dir = tmp.path().join("log");
    let config = Config {
        segment_size: 64 << 10,
        ..Config::default()
    };
    let run_for = Duration::from_millis(env_usize("RML_GROUPS_THREADS_MS", 1500) as u64);
    let log = Groups::open(&dir, config.clone()).unwrap();
    let shared = log.group(SHARED);
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged (synced) next index per group, and the first index each writer purged to.
    let acked: Arc<Mutex<BTreeMap<u64, (u64, u64)>>> = Arc::default();
    let shared_retries = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ids: Vec<u64> = (0..WRITERS).flat_map(own_groups).collect();
                ids.push(SHARED);
                let readers: Vec<_> = ids.iter().map(|id| log.group(*id).reader()).collect();
                let mut last_next = vec![0u64; ids.len()];
                let mut rng = Rng(r + 1);
                let (mut views, mut entries) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.below(ids.len() as u64) as usize;
                    let id = ids[k];
                    let view = readers[k].view();
                    assert!(
                        view.next_index() >= last_next[k],
                        "reader {r}: group {id} went back from {} to {}",
                        last_next[k],
                        view.next_index()
                    );
                    last_next[k] = view.next_index();
                    let mut n = 0;
                    for e in view.range(..) {
                        check_payload(id, e.index, e.payload, &format!("reader {r}"));
                        n += 1;
                    }
                    assert_eq!(n, view.len(), "reader {r}: group {id} range(..) length");
                    if let Some(last) = view.last_index() {
                        check_payload(id, last, view.get(last).unwrap(), "reader get");
                    }
                    views += 1;
                    entries += n;
                }
                (views, entries)
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let log = log.clone();
            let shared = shared.clone();
            let acked = acked.clone();
            let retries = shared_retries.clone();
            std::thread::spawn(move || {
                let [a, b] = own_groups(t);
                let (ga, gb) = (log.group(a), log.group(b));
                let mut rng = Rng(100 + t);
                let started = Instant::now();
                let mut batches = 0u64;
                while started.elapsed() < run_for {
                    match rng.below(3) {
                        0 => {
                            append_n(&ga, 1, 1 + rng.below(8));
                            append_n(&gb, 1, 1 + rng.below(8));
                        }
                        1 => {
                            // Both groups in one write batch.
                            let mut data = Vec::new();
                            for g in [&ga, &gb] {
                                let from = g.next_index().max(1);
                                let n = 1 + rng.below(8);
                                let v: Vec<(u64, Vec<u8>)> =
                                    (from..from + n).map(|i| (i, payload(g.id(), i))).collect();
                                data.push((g.id(), v));
                            }
                            let mut batch = WriteBatch::new();
                            for (id, v) in &data {
                                batch.add_entries(*id, v.iter().map(|(i, p)| (*i, &p[..])));
                            }
                            log.write(&batch).unwrap();
                        }
                        _ => {
                            if rng.chance(1, 4) {
                                // Keep the last ~40 entries.
                                let g = if rng.chance(1, 2) { &ga } else { &gb };
                                let to = g.next_index().saturating_sub(40);
                                g.purge_to(to).unwrap();
                            }
                        }
                    }
                    if batches % 16 == 15 {
                        // Now and then both groups keep only their last ~40 entries, so that
                        // old segments can go however long this runs.
                        for g in [&ga, &gb] {
                            g.purge_to(g.next_index().saturating_sub(40)).unwrap();
                        }
                    }
                    if t < 4 {
                        // The shared group: take the next index, retry when another thread
                        // took it first.
                        let n = 1 + rng.below(4);
                        loop {
                            let from = shared.next_index().max(1);
                            let v: Vec<(u64, Vec<u8>)> =
                                (from..from + n).map(|i| (i, payload(SHARED, i))).collect();
                            match shared.append_batch(v.iter().map(|(i, p)| (*i, &p[..]))) {
                                Ok(()) => break,
                                Err(Error::NonConsecutive { .. }) => {
                                    retries.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("writer {t}: shared append: {e}"),
                            }
                        }
                        if t == 0 && batches % 8 == 7 {
                            // Only writer 0 purges the shared group: the last ~100 stay.
                            let to = shared.next_index().saturating_sub(100);
                            shared.purge_to(to).unwrap();
                        }
                    }
                    // What is written now is acknowledged once this sync returns.
                    let snap: Vec<(u64, u64, u64)> = [&ga, &gb, &shared]
                        .iter()
                        .map(|g| (g.id(), g.first_index(), g.next_index()))
                        .collect();
                    // Even writers sync on their own thread when the flush thread is idle.
                    if t % 2 == 0 {
                        log.sync_here().unwrap();
                    } else {
                        log.sync().unwrap();
                    }
                    let mut acked = acked.lock().unwrap();
                    for (id, first, next) in snap {
                        let e = acked.entry(id).or_insert((0, 0));
                        e.0 = e.0.max(next);
                        e.1 = e.1.max(first);
                    }
                    batches += 1;
                }
                batches
            })
        })
        .collect();

    let batches: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let (views, entries) = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let acked = acked.lock().unwrap().clone();
    let segs = seg_names(&dir).len();
    // Every group keeps only its last entries (~100): a few segments, not hundreds.
    assert!(segs <= 64, "{segs} segment files at the end");
    drop((shared, log));

    let log = Groups::open(&dir, config).unwrap();
    let mut ids: Vec<u64> = (0..WRITERS).flat_map(own_groups).collect();
    ids.push(SHARED);
    ids.sort_unstable();
    assert_eq!(log.ids(), ids);
    let mut total = 0;
    for (id, (next, purged_to)) in &acked {
        let g = log.group(*id);
        let view = g.reader().view();
        assert!(
            view.next_index() >= *next,
            "group {id}: next {} after reopen, {next} acknowledged",
            view.next_index()
        );
        // Every writer's purges are its own and synced with the rest: the first index is
        // the last one it purged to (1 for a group never purged).
        assert_eq!(view.first_index(), (*purged_to).max(1), "group {id} first");
        for i in view.first_index()..view.next_index() {
            check_payload(*id, i, view.get(i).unwrap(), "after reopen");
            total += 1;
        }
    }
    eprintln!(
        "writers_and_readers: {batches} synced batches, {} shared-group retries, {views} views \
         read ({entries} entries), {segs} segment files at the end, {total} entries after reopen",
        shared_retries.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL

const CHILD_ENV: &str = "RML_GROUPS_KILL9_CHILD";
/// `0`: the child does not call `rewrite_lagging` (it does by default).
const REWRITE_ENV: &str = "RML_GROUPS_KILL9_REWRITE";

fn kill9_config() -> Config {
    Config {
        segment_size: 16 << 10,
        ..Config::default()
    }
}

/// Entry point of the child process; a no-op in a normal test run.
///
/// Protocol (stdout): `RML OPEN`; `RML P <group> <first>` before a purge is issued; `RML A
/// <group> <last index>` once a sync that covers that entry returned; `RML M <n>` when
/// `rewrite_lagging` moved `n` groups.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed = seed_from_env(common::child::SEED_ENV);
    let log = match Groups::open(&dir, kill9_config()) {
        Ok(l) => l,
        Err(e) => {
            emit(&format!("RML FAIL open: {e}\n"));
            std::process::exit(3);
        }
    };
    emit("RML OPEN\n");
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let [a, b] = own_groups(t);
                let (ga, gb) = (log.group(a), log.group(b));
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9E37_79B9));
                loop {
                    let mut acks = Vec::new();
                    if rng.chance(1, 2) {
                        for g in [&ga, &gb] {
                            if rng.chance(2, 3) {
                                let r = append_n(g, 1, 1 + rng.below(6));
                                acks.push((g.id(), r.end - 1));
                            }
                        }
                    } else {
                        let mut data = Vec::new();
                        for g in [&ga, &gb] {
                            let from = g.next_index().max(1);
                            let n = 1 + rng.below(6);
                            let v: Vec<(u64, Vec<u8>)> =
                                (from..from + n).map(|i| (i, payload(g.id(), i))).collect();
                            acks.push((g.id(), from + n - 1));
                            data.push((g.id(), v));
                        }
                        let mut batch = WriteBatch::new();
                        for (id, v) in &data {
                            batch.add_entries(*id, v.iter().map(|(i, p)| (*i, &p[..])));
                        }
                        log.write(&batch).unwrap();
                    }
                    if rng.chance(1, 8) {
                        let g = if rng.chance(1, 2) { &ga } else { &gb };
                        let to = g.next_index().saturating_sub(30);
                        if to > g.first_index() {
                            emit(&format!("RML P {} {to}\n", g.id()));
                            g.purge_to(to).unwrap();
                        }
                    }
                    let synced = if rng.chance(1, 2) {
                        log.sync_here()
                    } else {
                        log.sync()
                    };
                    if let Err(e) = synced {
                        emit(&format!("RML FAIL sync: {e}\n"));
                        std::process::exit(5);
                    }
                    let mut s = String::new();
                    for (id, last) in acks {
                        s += &format!("RML A {id} {last}\n");
                    }
                    emit(&s);
                }
            })
        })
        .collect();
    // Meanwhile this thread moves lagging groups forward, if asked to (a kill may land in a
    // rewrite: each group's move must be all or nothing, see
    // `rewrite_lagging_cut_midway_keeps_every_entry`).
    let rewrite = std::env::var(REWRITE_ENV).map_or(true, |v| v != "0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(3));
        if !rewrite {
            continue;
        }
        match log.rewrite_lagging(8) {
            Ok(moved) if !moved.is_empty() => emit(&format!("RML M {}\n", moved.len())),
            Ok(_) => {}
            Err(e) => {
                emit(&format!("RML FAIL rewrite_lagging: {e}\n"));
                std::process::exit(6);
            }
        }
    }
    emit("RML FAIL child was not killed in time\n");
    drop(threads);
    std::process::exit(4);
}

#[test]
fn kill9_rounds() {
    let rounds = env_usize("RML_GROUPS_KILL9_ROUNDS", 20);
    let seed = seed_from_env("RML_GROUPS_KILL9_SEED");
    eprintln!("groups kill9: {rounds} rounds, seed {seed} (RML_GROUPS_KILL9_SEED to replay)");
    let mut rng = Rng(seed);
    let tmp = common::scratch("groups-kill9");
    let dir = tmp.path().join("log");
    let started = Instant::now();
    // What the log held when last opened by the parent: group -> (first, next).
    let mut known: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let (mut total_acks, mut beyond, mut moved) = (0usize, 0u64, 0u64);
    for round in 0..rounds {
        let delay = Duration::from_millis(20 + rng.below(300));
        let (out, err) = spawn_and_kill(
            "child_entry",
            CHILD_ENV,
            &dir,
            seed.wrapping_add(round as u64 + 1),
            delay,
        );
        // Acknowledged last index and issued purges per group.
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut purges: BTreeMap<u64, u64> = BTreeMap::new();
        let mut opened = false;
        for line in out.split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let Some(at) = line.find("RML ") else {
                continue;
            };
            let words: Vec<&str> = line[at + 4..].split_whitespace().collect();
            match words.as_slice() {
                ["OPEN"] => opened = true,
                ["A", g, i] => {
                    let (g, i) = (g.parse().unwrap(), i.parse().unwrap());
                    let e = acked.entry(g).or_insert(0);
                    *e = (*e).max(i);
                    total_acks += 1;
                }
                ["P", g, to] => {
                    let (g, to) = (g.parse().unwrap(), to.parse().unwrap());
                    let e = purges.entry(g).or_insert(0);
                    *e = (*e).max(to);
                }
                ["M", n] => moved += n.parse::<u64>().unwrap(),
                ["FAIL", ..] => panic!("round {round}: child reported: {line}\nstderr:\n{err}"),
                _ => {}
            }
        }
        let ctx = format!(
            "round {round} (seed {seed}, killed after {delay:?}, opened: {opened}, {} groups \
             acked)",
            acked.len()
        );
        let log = match Groups::open(&dir, kill9_config()) {
            Ok(l) => l,
            Err(e) => common::fail_keeping_dir(tmp, &dir, &format!("{ctx}: reopen failed: {e}")),
        };
        let mut now = BTreeMap::new();
        for t in 0..WRITERS {
            for id in own_groups(t) {
                let view = log.group(id).reader().view();
                let (first, next) = (view.first_index(), view.next_index());
                let (k_first, k_next) = known.get(&id).copied().unwrap_or((0, 0));
                // Contiguous, every entry right.
                for i in first..next {
                    match view.get(i) {
                        Some(p) => check_payload(id, i, p, &ctx),
                        None => panic!("{ctx}: group {id}: entry {i} of {first}..{next} missing"),
                    }
                }
                assert_eq!(
                    view.range(..).count() as u64,
                    next - first,
                    "{ctx}: group {id}"
                );
                // Nothing lost: what the last open saw and what was acked since.
                let need = acked.get(&id).map_or(k_next, |a| k_next.max(a + 1));
                assert!(
                    next >= need,
                    "{ctx}: group {id}: next index {next}, but {need} was acknowledged / \
                     recovered before"
                );
                // No purge beyond what was issued (or known before).
                let max_first = purges.get(&id).copied().unwrap_or(0).max(k_first).max(1);
                assert!(
                    first <= max_first,
                    "{ctx}: group {id}: first index {first}, no purge past {max_first} issued"
                );
                assert!(first >= k_first, "{ctx}: group {id}: first went back");
                beyond += next - need;
                now.insert(id, (first, next));
            }
        }
        known = now;
        drop(log);
    }
    eprintln!(
        "groups kill9: {rounds} kills in {:.1?}: {total_acks} acks, {beyond} unacknowledged \
         entries survived, {moved} group moves by rewrite_lagging",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Segment collection

#[test]
fn rewrite_lagging_frees_the_oldest_segment() {
    let tmp = common::scratch("groups-gc");
    let dir = tmp.path().join("log");
    let config = Config {
        segment_size: 16 << 10,
        prepare_ahead: true,
        ..Config::default()
    };
    let log = Groups::open(&dir, config.clone()).unwrap();
    const LAG: u64 = 3;
    let busy: Vec<Group> = (10..40).map(|id| log.group(id)).collect();
    // The lagging group's 3 entries go first, in the oldest segment.
    let lag = log.group(LAG);
    append_n(&lag, 1, 3);
    let oldest = seg_names(&dir)[0].clone();
    // The busy groups write many segments, then purge all but their last 2 entries.
    for round in 0..20 {
        for g in &busy {
            append_n(g, 1, 1 + (round % 3));
        }
    }
    log.sync().unwrap();
    assert!(
        seg_names(&dir).len() > 4,
        "not enough segments: {:?}",
        seg_names(&dir)
    );
    for g in &busy {
        g.purge_to(g.next_index() - 2).unwrap();
    }
    log.sync().unwrap();
    // Only the lagging group holds the oldest segment now.
    assert_eq!(
        seg_names(&dir)[0],
        oldest,
        "the lagging group keeps the oldest segment"
    );
    let usage = log.oldest_groups(3);
    assert_eq!(usage[0].id, LAG, "oldest_groups: {usage:?}");
    assert_eq!(usage[0].entries_in_oldest, 3);
    assert_eq!((usage[0].first_index, usage[0].next_index), (1, 4));
    assert!(usage[1].oldest_segment > usage[0].oldest_segment);
    assert_eq!(
        format!("{:020}.seg", usage[0].oldest_segment),
        oldest,
        "oldest_groups names the oldest file"
    );

    // A view of the lagging group, and a slice of its payload, held across the rewrite.
    let held = lag.reader().view();
    let slice: &[u8] = held.get(2).unwrap();
    let copy = slice.to_vec();
    check_payload(LAG, 2, slice, "held slice");
    let moved = log.rewrite_lagging(32).unwrap();
    assert_eq!(moved, vec![LAG], "moved groups");
    log.sync().unwrap();
    let after = seg_names(&dir);
    assert!(
        !after.contains(&oldest),
        "segment {oldest} is still there after rewrite_lagging and a sync: {after:?}"
    );
    assert_eq!(slice, &copy[..], "the held slice changed");
    let u = log.oldest_groups(usize::MAX);
    let lag_usage = u.iter().find(|u| u.id == LAG).unwrap();
    assert!(lag_usage.oldest_segment > usage[0].oldest_segment);
    assert_eq!((lag_usage.first_index, lag_usage.next_index), (1, 4));
    let fresh = lag.reader().view();
    for i in 1..4 {
        check_payload(LAG, i, fresh.get(i).unwrap(), "after the rewrite");
        assert_eq!(
            held.get(i),
            fresh.get(i),
            "held and fresh views differ at {i}"
        );
    }

    // Much more writing (and purging): new segments are made, pooled files reused, but never
    // the one the held view maps.
    for round in 0..60 {
        for g in &busy {
            append_n(g, 1, 1 + (round % 4));
        }
        if round % 10 == 9 {
            for g in &busy {
                g.purge_to(g.next_index() - 2).unwrap();
            }
            log.sync().unwrap();
        }
    }
    assert_eq!(
        slice,
        &copy[..],
        "the held slice changed after more writing"
    );
    for i in 1..4 {
        check_payload(LAG, i, held.get(i).unwrap(), "held view after more writing");
    }
    drop(held);
    // The lagging group now moves along with the rest.
    for g in &busy {
        g.purge_to(g.next_index()).unwrap();
    }
    log.rewrite_lagging(32).unwrap();
    log.sync().unwrap();
    assert!(
        seg_names(&dir).len() <= 3,
        "segments left: {:?}",
        seg_names(&dir)
    );
    drop((busy, lag, log));
    let log = Groups::open(&dir, config).unwrap();
    let view = log.group(LAG).reader().view();
    assert_eq!((view.first_index(), view.next_index()), (1, 4));
    for i in 1..4 {
        check_payload(LAG, i, view.get(i).unwrap(), "after reopen");
    }
}

/// `rewrite_lagging` moves a group's entries by writing a reset record and the entries again:
/// a process killed in the middle of that must not lose entries that were durable before it.
/// The kill is simulated exactly: the bytes the call wrote are put, a prefix at a time, into
/// a copy of the log taken before it (a SIGKILL keeps what was copied into the page cache,
/// in order); every such copy must open with the group's entries all there.
#[test]
fn rewrite_lagging_cut_midway_keeps_every_entry() {
    let tmp = common::scratch("groups-gc-cut");
    let dir = tmp.path().join("log");
    let config = Config {
        segment_size: 64 << 10,
        prepare_ahead: false,
        segment_pool: 0,
        ..Config::default()
    };
    let log = Groups::open(&dir, config.clone()).unwrap();
    const LAG: u64 = 3;
    let (lag, busy) = (log.group(LAG), log.group(10));
    append_n(&lag, 1, 20);
    while seg_names(&dir).len() < 2 {
        append_n(&busy, 1, 10);
    }
    append_n(&busy, 1, 10);
    busy.purge_to(busy.next_index() - 1).unwrap();
    log.sync().unwrap();
    assert_eq!(log.oldest_groups(1)[0].id, LAG);

    let before = tmp.path().join("before");
    std::fs::create_dir_all(&before).unwrap();
    common::copy_segments(&dir, &before);
    assert_eq!(log.rewrite_lagging(32).unwrap(), vec![LAG]);
    log.sync().unwrap();
    let after = tmp.path().join("after");
    std::fs::create_dir_all(&after).unwrap();
    common::copy_segments(&dir, &after);
    drop((lag, busy, log));

    // The call wrote into the newest segment only (it had room): find the range it wrote.
    let name = seg_names(&before).last().unwrap().clone();
    assert_eq!(
        seg_names(&after).last(),
        Some(&name),
        "the rewrite rolled over"
    );
    let old = std::fs::read(before.join(&name)).unwrap();
    let new = std::fs::read(after.join(&name)).unwrap();
    // Bytes past the segment header (the header's marks are the flusher's).
    let diff: Vec<usize> = (64..old.len()).filter(|&i| old[i] != new[i]).collect();
    let (a, b) = (diff[0], diff[diff.len() - 1] + 1);
    eprintln!("rewrite wrote bytes {a}..{b} of {name}");

    let crash = tmp.path().join("crash");
    let mut cuts = 0;
    for cut in (a..=b).step_by(8) {
        let _ = std::fs::remove_dir_all(&crash);
        std::fs::create_dir_all(&crash).unwrap();
        for n in seg_names(&before) {
            std::fs::copy(before.join(&n), crash.join(&n)).unwrap();
        }
        let mut img = old.clone();
        img[a..cut].copy_from_slice(&new[a..cut]);
        std::fs::write(crash.join(&name), &img).unwrap();
        let log = Groups::open(&crash, config.clone())
            .unwrap_or_else(|e| panic!("cut at {cut} ({a}..{b} written): open: {e}"));
        let view = log.group(LAG).reader().view();
        assert_eq!(
            (view.first_index(), view.next_index()),
            (1, 21),
            "cut at {cut} ({a}..{b} written): group {LAG} lost entries"
        );
        for i in 1..=20 {
            check_payload(LAG, i, view.get(i).unwrap(), &format!("cut at {cut}"));
        }
        cuts += 1;
    }
    eprintln!("{cuts} cuts recovered every entry");
}

/// A kill anywhere in a write batch over many groups that rolls over (new segments starting
/// with one group checkpoint per group, new groups among them), simulated exactly as above:
/// for every cut, the copy opens and holds, in the batch's order, some groups' parts whole,
/// then at most one group's part cut short, then the rest untouched, every payload right.
#[test]
fn write_batch_cut_anywhere_recovers_a_prefix() {
    let tmp = common::scratch("groups-batch-cut");
    let dir = tmp.path().join("log");
    let config = Config {
        segment_size: 16 << 10,
        prepare_ahead: false,
        segment_pool: 0,
        ..Config::default()
    };
    let log = Groups::open(&dir, config.clone()).unwrap();
    for id in 1..=8 {
        append_n(&log.group(id), 1, 5);
    }
    log.sync().unwrap();
    let state = |log: &Groups, id: u64| {
        let v = log.group(id).reader().view();
        (v.first_index(), v.next_index())
    };
    let order: Vec<u64> = (1..=14).rev().collect(); // new groups (9..=14) first
    let before_states: Vec<(u64, u64)> = order.iter().map(|id| state(&log, *id)).collect();
    let before = tmp.path().join("before");
    std::fs::create_dir_all(&before).unwrap();
    common::copy_segments(&dir, &before);

    let mut data = Vec::new();
    for id in &order {
        let from = log.group(*id).next_index().max(1);
        let v: Vec<(u64, Vec<u8>)> = (from..from + 8).map(|i| (i, payload(*id, i))).collect();
        data.push((*id, v));
    }
    let mut batch = WriteBatch::new();
    for (id, v) in &data {
        batch.add_entries(*id, v.iter().map(|(i, p)| (*i, &p[..])));
    }
    log.write(&batch).unwrap();
    log.sync().unwrap();
    let after_states: Vec<(u64, u64)> = order.iter().map(|id| state(&log, *id)).collect();
    let after = tmp.path().join("after");
    std::fs::create_dir_all(&after).unwrap();
    common::copy_segments(&dir, &after);
    drop(log);

    let old_names = seg_names(&before);
    let active = old_names.last().unwrap().clone();
    let new_names: Vec<String> = seg_names(&after)
        .into_iter()
        .filter(|n| !old_names.contains(n))
        .collect();
    assert!(!new_names.is_empty(), "the batch did not roll over");
    let read = |d: &Path, n: &str| std::fs::read(d.join(n)).unwrap();
    let (old_active, new_active) = (read(&before, &active), read(&after, &active));
    let diff: Vec<usize> = (64..old_active.len())
        .filter(|&i| old_active[i] != new_active[i])
        .collect();
    // The write stream: the rest of the active segment, then each new segment from its
    // header on, in order. A cut is a position in it.
    let mut stream: Vec<(String, usize, usize)> = Vec::new();
    if let (Some(a), Some(b)) = (diff.first(), diff.last()) {
        stream.push((active.clone(), *a, b + 1));
    }
    for n in &new_names {
        let img = read(&after, n);
        let end = img
            .iter()
            .rposition(|b| *b != 0)
            .map_or(64, |p| p + 1)
            .max(64);
        stream.push((n.clone(), 64, end));
    }
    let total: usize = stream.iter().map(|(_, a, b)| b - a).sum();
    let step = (total / 8 / 600).max(1) * 8;
    eprintln!("batch wrote {stream:?}: {total} bytes, a cut every {step}");

    let crash = tmp.path().join("crash");
    let mut cuts = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for (k, (name, a, b)) in stream.iter().enumerate() {
        let mut points: Vec<usize> = (*a..=*b).step_by(step).collect();
        points.push(*b);
        if k > 0 {
            // Closely through the checkpoints at the start of a new segment.
            points.extend((*a..(*a + 1200).min(*b)).step_by(8));
        }
        for cut in points {
            let _ = std::fs::remove_dir_all(&crash);
            std::fs::create_dir_all(&crash).unwrap();
            for n in &old_names {
                std::fs::copy(before.join(n), crash.join(n)).unwrap();
            }
            // Every earlier part of the stream whole, this one up to the cut.
            for (j, (n, a2, b2)) in stream.iter().enumerate().take(k + 1) {
                let end = if j == k { cut } else { *b2 };
                let src = read(&after, n);
                let mut img = if j == 0 && *n == active {
                    old_active.clone()
                } else {
                    let mut img = vec![0u8; src.len()];
                    img[..40].copy_from_slice(&src[..40]); // no seal, no synced mark
                    img
                };
                img[*a2..end].copy_from_slice(&src[*a2..end]);
                std::fs::write(crash.join(n), &img).unwrap();
            }
            let ctx = format!("cut at {name}:{cut}");
            let log =
                Groups::open(&crash, config.clone()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
            // complete* partial? untouched*, in the batch's order.
            let mut phase = 0; // 0: complete so far, 1: past the cut
            let mut shape = String::new();
            for (j, id) in order.iter().enumerate() {
                let (f0, n0) = before_states[j];
                let (f1, n1) = after_states[j];
                let view = log.group(*id).reader().view();
                let (f, n) = (view.first_index(), view.next_index());
                for i in f..n {
                    check_payload(*id, i, view.get(i).unwrap(), &ctx);
                }
                let status = if (f, n) == (f1, n1) {
                    'C'
                } else if (f, n) == (f0, n0) {
                    'U'
                } else if n > n0 && n < n1 && f == f1 {
                    'P'
                } else {
                    panic!(
                        "{ctx}: group {id} recovered {f}..{n}, before {f0}..{n0}, after {f1}..{n1}"
                    )
                };
                shape.push(status);
                match (phase, status) {
                    (0, 'C') => {}
                    (0, _) => phase = 1,
                    (1, 'U') => {}
                    _ => panic!("{ctx}: groups recovered out of order: {shape} (C: whole, P: cut, U: untouched)"),
                }
            }
            kinds.insert(shape);
            cuts += 1;
        }
    }
    eprintln!("{cuts} cuts, {} distinct outcomes", kinds.len());
}
