//! The engine's crash model on the simulated file system (`io::sim`): a random workload, a
//! power cut after every k-th file-system effect (all of them, for each workload), recovery of
//! the image the cut leaves, checked against the model of acknowledged operations. Also: a
//! failed `msync` poisons the log and no later callback acknowledges anything.
//!
//! Half the appends go through `append_frames` (replication frames), the rest through
//! `append_batch`.
//!
//! `RML_SIM_WORKLOADS` (default 10) sets the number of workloads; each is cut at every effect.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::io::sim::{
    power_cut_after_every_effect, scratch, workloads, Acked, Explored, Kind, Rng, SimFs,
};
use crate::{Config, Error, Store};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    first: u64,
    next: u64,
    entries: BTreeMap<u64, Vec<u8>>,
    metas: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Op {
    /// Payload sizes; appended as replication frames (`append_frames`) when the flag is set.
    Append(Vec<usize>, bool),
    TruncateBack(u64),
    PurgeForward(u64),
    Meta(u64, usize),
    /// `remove_meta` of a key (set or not).
    MetaRemove(u64),
    Flush,
    /// A blocking sync: the flush thread has also retired purged files when it returns.
    Sync,
    /// A clean close (the closed synced mark, when everything written was synced) and a
    /// reopen on the same file system.
    Reopen,
}

fn payload(index: u64, gen: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(index.wrapping_mul(0x9E37_79B9) ^ gen.rotate_left(32) ^ 0x55);
    (0..len).map(|_| r.next() as u8).collect()
}

fn workload(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let n = 30 + r.below(40);
    (0..n)
        .map(|_| match r.below(10) {
            0..=4 => Op::Append(
                (0..1 + r.below(6)).map(|_| r.below(400) as usize).collect(),
                r.below(2) == 0,
            ),
            5 => Op::TruncateBack(r.below(4)),
            6 => Op::PurgeForward(r.below(6)),
            7 if r.below(4) == 0 => Op::MetaRemove(r.below(3)),
            7 => Op::Meta(r.below(3), r.below(60) as usize),
            8 if r.below(3) == 0 => Op::Reopen,
            _ => Op::Flush,
        })
        .collect()
}

/// A workload that recycles: long purges release whole segments, flushes retire them into
/// the pool, and later rollovers reuse them, so segments are written over a previous life's
/// valid-looking records (under another salt).
fn recycling_workload(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = 60 + r.below(30);
    (0..n)
        .map(|_| match r.below(12) {
            0..=5 => Op::Append(
                (0..1 + r.below(16))
                    .map(|_| r.below(900) as usize)
                    .collect(),
                r.below(2) == 0,
            ),
            6 => Op::TruncateBack(r.below(4)),
            7 => Op::PurgeForward(20 + r.below(60)),
            8 => Op::Sync,
            9 if r.below(4) == 0 => Op::MetaRemove(r.below(3)),
            9 => Op::Meta(r.below(3), r.below(60) as usize),
            10 if r.below(3) == 0 => Op::Reopen,
            _ => Op::Flush,
        })
        .collect()
}

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// Segments of four pages, so that a power cut can keep some pages of a segment and lose
/// others (with one-page segments, a segment is kept or lost whole).
fn four_page_config() -> Config {
    Config {
        segment_size: 4 * 4096,
        ..config()
    }
}

/// What a run issued: the model after every applied change (one per entry of a batch, so a
/// torn batch is a prefix), including the change in flight when the power went off (a failed
/// call ends the run), and the last state a flush callback acknowledged.
struct Run {
    states: Vec<Model>,
    acked: usize,
}

fn run(dir: &Path, fs: Arc<SimFs>, ops: &[Op], config: &Config) -> Run {
    let mut states = vec![Model::default()];
    let acked = Acked::default();
    let Ok(mut store) = Store::open_with_fs(dir, config.clone(), fs.clone()) else {
        return Run { states, acked: 0 };
    };
    let mut m = Model::default();
    // The last state whose call succeeded: what a flush acknowledges.
    let mut applied = 0usize;
    let mut gen = 0u64;
    for op in ops {
        if fs.cut_taken() {
            break;
        }
        let mut err: Option<Error> = None;
        let mut note = |r: crate::Result<()>| match r {
            Ok(()) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        };
        let ok = match op {
            Op::Append(sizes, as_frames) => {
                let batch: Vec<(u64, Vec<u8>)> = sizes
                    .iter()
                    .enumerate()
                    .map(|(j, &len)| {
                        let i = m.next + j as u64;
                        (i, payload(i, gen, len))
                    })
                    .collect();
                let entries = batch.iter().map(|(i, p)| (*i, &p[..]));
                let r = if *as_frames {
                    store.append_frames(&crate::frames::encode(entries))
                } else {
                    store.append_batch(entries)
                };
                // Applied, or in flight when the power went off (then any prefix of the batch
                // may be on disk, and the run stops here).
                for (i, p) in batch {
                    m.entries.insert(i, p);
                    m.next = i + 1;
                    states.push(m.clone());
                }
                note(r)
            }
            Op::TruncateBack(k) => {
                let from = m.next.saturating_sub(*k).max(m.first);
                let r = store.truncate_from(from);
                if from < m.next {
                    gen += 1;
                    m.entries.retain(|&i, _| i < from);
                    m.next = from;
                    states.push(m.clone());
                }
                r.is_ok()
            }
            Op::PurgeForward(k) => {
                let to = (m.first + k).min(m.next);
                let r = store.purge_to(to);
                if to > m.first {
                    m.first = to;
                    m.entries.retain(|&i, _| i >= to);
                    states.push(m.clone());
                }
                r.is_ok()
            }
            Op::Meta(key, len) => {
                let v = payload(*key + 1000, states.len() as u64, *len);
                let r = store.put_meta(*key, &v);
                m.metas.insert(*key, v);
                states.push(m.clone());
                note(r)
            }
            Op::MetaRemove(key) => {
                let r = store.remove_meta(*key);
                if m.metas.remove(key).is_some() {
                    states.push(m.clone());
                }
                note(r.map(|_| ()))
            }
            Op::Flush => store.flush(acked.on_flush(applied)).is_ok(),
            Op::Sync => {
                let ok = store.sync().is_ok();
                if ok {
                    acked.raise(applied);
                }
                ok
            }
            Op::Reopen => {
                drop(store);
                match Store::open_with_fs(dir, config.clone(), fs.clone()) {
                    Ok(s) => {
                        store = s;
                        true
                    }
                    Err(e) => {
                        if std::env::var("RML_SIM_DEBUG").is_ok() {
                            eprintln!("reopen failed after {} effects: {e}", fs.effects());
                        }
                        // The cut came during the reopen: the run ends here.
                        return Run {
                            states,
                            acked: acked.get(),
                        };
                    }
                }
            }
        };
        if ok {
            applied = states.len() - 1;
        } else {
            if std::env::var("RML_SIM_DEBUG").is_ok() {
                eprintln!("op {op:?} failed after {} effects: {err:?}", fs.effects());
            }
            break;
        }
    }
    if store.sync().is_ok() {
        acked.raise(applied);
    }
    drop(store);
    let acked = acked.get();
    Run { states, acked }
}

fn observe(store: &Store) -> Model {
    let snap = store.reader().view();
    Model {
        first: snap.first_index(),
        next: snap.next_index(),
        entries: snap
            .range(..)
            .map(|e| (e.index, e.payload.to_vec()))
            .collect(),
        metas: [0u64, 1, 2]
            .into_iter()
            .filter_map(|k| snap.meta(k).map(|v| (k, v.to_vec())))
            .collect(),
    }
}

/// Runs each workload once dry (counting its effects), then once per effect k with a power
/// cut right after effect k; recovers every image with the real file system and checks it
/// against the model. Then appends to the recovered log, syncs, reopens and checks again
/// (stale bytes, a previous life's or this one's, never come back). Returns what was explored
/// and the number of recycled segments the dry runs installed.
/// With `fail_dir_fsync`, the n-th directory fsync that would make a rename into the pool
/// durable fails (EIO; n from 1 to 3 by workload): the flusher only records that failure.
fn cut_after_every_effect(
    ops_of: fn(u64) -> Vec<Op>,
    config: &Config,
    fail_dir_fsync: bool,
) -> (Explored, u64) {
    let mut recycled = 0u64;
    let mut effects_by_workload = Vec::new();
    let ops: Vec<Vec<Op>> = (0..workloads()).map(ops_of).collect();
    let explored = power_cut_after_every_effect(
        "rml-sim",
        100_003,
        |seed, dir, fs| {
            if fail_dir_fsync {
                fs.fail_dir_fsync_after_rename_to(
                    crate::format::POOL_SUFFIX,
                    1 + seed % 3,
                    libc::EIO,
                );
            }
            run(dir, fs, &ops[seed as usize], config)
        },
        |_, _, fs, _| {
            recycled += fs.recycled_installs();
            effects_by_workload.push(fs.effects());
        },
        |seed, k, image, r| {
            let mut store = Store::open(image, config.clone()).unwrap_or_else(|e| {
                panic!("workload {seed}, cut after effect {k}: recovery failed: {e}")
            });
            let got = observe(&store);
            let ok = r.states[r.acked..].contains(&got);
            assert!(
                ok,
                "workload {seed}, cut after effect {k}: recovered first={} next={} metas={:?}, \
                 not a state at or after the acknowledged one (first={} next={}); report: {:?}",
                got.first,
                got.next,
                got.metas.keys().collect::<Vec<_>>(),
                r.states[r.acked].first,
                r.states[r.acked].next,
                store.recovery_report()
            );
            // The recovered log takes new entries, and a reopen shows exactly them after the
            // recovered ones. Each new entry has the size of the last entry the run wrote at
            // its index (new bytes): if stale records of the run survived after the recovered
            // end, the new ones end exactly where a stale one starts, which would then read
            // as the next entry unless recovery made it unreadable.
            let mut want = got;
            let from = want.next;
            let batch: Vec<(u64, Vec<u8>)> = (from..from + 12)
                .map(|i| {
                    let len = r
                        .states
                        .iter()
                        .rev()
                        .find_map(|s| s.entries.get(&i).map(|p| p.len()))
                        .unwrap_or(100 + (i % 5) as usize * 90);
                    (i, payload(i, 1 << 40, len))
                })
                .collect();
            store
                .append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
                .and_then(|()| store.sync())
                .unwrap_or_else(|e| panic!("workload {seed}, cut after effect {k}: {e}"));
            for (i, p) in batch {
                want.entries.insert(i, p);
                want.next = i + 1;
            }
            drop(store);
            let store = Store::open(image, config.clone()).unwrap_or_else(|e| {
                panic!("workload {seed}, cut after effect {k}: reopen after appending: {e}")
            });
            let again = observe(&store);
            assert!(
                again == want,
                "workload {seed}, cut after effect {k}: after appending to the recovered log and \
                 reopening: first={} next={} (want first={} next={}); report: {:?}",
                again.first,
                again.next,
                want.first,
                want.next,
                store.recovery_report()
            );
        },
    );
    eprintln!(
        "sim crash model: {explored}, {recycled} recycled segments installed, effects per \
         workload {effects_by_workload:?}"
    );
    (explored, recycled)
}

/// A bulk load: a few large batches, each spanning several segments, with no flush (only the
/// final sync of `run`). One call renames several new segments into place before the flush
/// thread fsyncs the directory for any of them.
fn bulk_load_workload(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x5851_F42D_4C95_7F2D) | 1);
    (0..3)
        .map(|_| {
            let sizes = (0..24).map(|_| 200 + r.below(300) as usize).collect();
            Op::Append(sizes, false)
        })
        .collect()
}

/// A bulk load across several rollovers without flushes, cut after every effect, with the
/// per-file name model (the default): a cut may keep any renamed segment's name and lose
/// another's, so the writer must make each segment's rename durable before it renames the
/// next one into place; else recovery finds a gap ("segment N is missing").
#[test]
fn power_cut_during_a_bulk_load_across_rollovers_leaves_contiguous_segments() {
    let (explored, _) = cut_after_every_effect(bulk_load_workload, &config(), false);
    assert!(explored.cuts > 0);
}

#[test]
fn power_cut_after_every_effect_recovers_an_acknowledged_state() {
    cut_after_every_effect(workload, &config(), false);
}

#[test]
fn power_cut_after_every_effect_with_recycled_segments() {
    let (explored, recycled) =
        cut_after_every_effect(recycling_workload, &four_page_config(), false);
    assert!(explored.cuts > 0);
    // Not vacuous: the workloads reuse pooled files.
    assert!(
        recycled >= workloads(),
        "only {recycled} recycled segments installed"
    );
}

/// The same, with a failed directory fsync after purged files were renamed into the pool:
/// those renames may still be lost, so the files must not be rewritten until a later
/// directory fsync succeeds (else a cut can leave a blanked file under its old segment name:
/// "bad magic" at open, or a log that ends early).
#[test]
fn power_cut_after_every_effect_with_recycled_segments_and_a_failed_directory_fsync() {
    let (explored, recycled) =
        cut_after_every_effect(recycling_workload, &four_page_config(), true);
    assert!(explored.cuts > 0);
    assert!(
        recycled >= workloads(),
        "only {recycled} recycled segments installed"
    );
}

#[test]
fn a_failed_msync_poisons_and_nothing_later_is_acknowledged() {
    let dir = scratch("rml-sim");
    let fs = Arc::new(SimFs::new(dir.path()));
    let mut store = Store::open_with_fs(dir.path(), config(), fs.clone()).unwrap();
    store.append(0, b"zero").unwrap();
    store.sync().unwrap();
    // The next msync fails with EIO.
    let done = fs.effects();
    assert!(done > 0);
    fs.fail_nth(Kind::Msync, count_msyncs(&fs) + 1, libc::EIO);
    store.append(1, b"one").unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..3 {
        let r = results.clone();
        let _ = store.flush(move |x| r.lock().unwrap().push(x.is_ok()));
        let _ = store.append(store.next_index(), b"more");
    }
    // The failed sync's own error, or Poisoned if an earlier flush met it first.
    let sync = store.sync();
    assert!(sync.is_err(), "sync after EIO succeeded");
    // From now on the log refuses writes, and no flush acknowledges anything.
    let later = store.append(store.next_index(), b"after");
    assert!(matches!(later, Err(Error::Poisoned(_))), "{later:?}");
    let r = results.clone();
    let _ = store.flush(move |x| r.lock().unwrap().push(x.is_ok()));
    assert!(matches!(store.sync(), Err(Error::Poisoned(_))));
    drop(store);
    let results = results.lock().unwrap().clone();
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|ok| !ok),
        "a callback acknowledged after the failed msync: {results:?}"
    );
    // The log reopens with what was durable.
    let store = Store::open(dir.path(), config()).unwrap();
    assert!(store.next_index() >= 1);
}

/// Number of msyncs so far (the fault is set relative to it).
fn count_msyncs(fs: &SimFs) -> u64 {
    fs.calls(Kind::Msync)
}

#[test]
fn a_failed_read_at_open_is_an_error_naming_the_directory() {
    let dir = scratch("rml-sim");
    drop(Store::open(dir.path(), config()).unwrap());
    for (kind, errno) in [(Kind::ReadDir, libc::EIO), (Kind::Open, libc::EIO)] {
        let fs = Arc::new(SimFs::new(dir.path()));
        fs.fail_nth(kind, 1, errno);
        match Store::open_with_fs(dir.path(), config(), fs) {
            Err(Error::Io { path, .. }) => assert!(path.starts_with(dir.path()), "{kind:?}"),
            other => panic!("{kind:?}: expected an I/O error, got {other:?}"),
        }
    }
    // Nothing was changed: the log opens.
    Store::open(dir.path(), config()).unwrap();
}
