//! Power cut simulated on copies of a live directory, checked against the engine operation
//! model (`tests/common/engine_model.rs`).
//!
//! * **`power_loss_simulation`**: SIGKILL (`tests/kill9.rs`) keeps the page cache, so it
//!   cannot lose unsynced writes. This test records the durable frontier (`Store::position()`
//!   right after `sync()`), keeps writing without flushing, copies the directory and, on the
//!   copy, drops what a power cut could drop: each 4 KiB page after the frontier is kept,
//!   zeroed or filled with garbage, sealed marks written after the frontier may be lost,
//!   segment files created after the frontier may be missing. The copy must recover to the
//!   state after some operation at or after the frontier. `RML_POWERLOSS_ROUNDS` (default 60)
//!   sets the number of simulated cuts, `RML_POWERLOSS_SEED` replays. What it cannot simulate
//!   is listed in `docs/reliability.md`.
//! * **`power_loss_truncate_then_reappend_at_segment_end`**,
//!   **`power_loss_blank_middle_segment`**: deterministic power cuts that the random one
//!   reaches rarely (regressions).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raft_mmap_log::Store;

mod common;

use common::child::{env_usize, seed_from_env};
use common::engine_model::{assert_clean, match_prefix, observe, payload, Driver, Model, Op};
use common::{kill9_config as config, Rng};

const PAGE: usize = 4096;

fn seg_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().ok()?;
            raft_mmap_log::format::parse_segment_file_name(&name).map(|s| (s, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn headers(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let mut f = std::fs::File::open(e.path()).ok()?;
            let mut h = vec![0u8; 64];
            let n = f.read(&mut h).ok()?;
            h.truncate(n);
            Some((e.file_name().into_string().ok()?, h))
        })
        .collect();
    v.sort();
    v
}

/// Copies the log files (not the lock) of `from` into the new directory `to`, once the
/// flusher has settled (no header changed for a few milliseconds).
fn copy_settled(from: &Path, to: &Path) {
    let mut last = headers(from);
    loop {
        std::thread::sleep(Duration::from_millis(3));
        let now = headers(from);
        if now == last {
            break;
        }
        last = now;
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "LOCK" {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name)).unwrap();
    }
}

fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 48
        && u64::from_le_bytes(bytes[40..48].try_into().unwrap())
            == raft_mmap_log::format::SEALED_MAGIC
}

/// Damages `dir` (a copy) the way a power cut could, given the durable frontier
/// `(frontier_seq, frontier_offset)`. Returns a short description.
fn power_cut(dir: &Path, frontier_seq: u64, frontier_offset: u64, rng: &mut Rng) -> String {
    let segs = seg_files(dir);
    let post: Vec<&(u64, PathBuf)> = segs.iter().filter(|(s, _)| *s >= frontier_seq).collect();
    assert!(
        post.first().map(|p| p.0) == Some(frontier_seq),
        "frontier segment {frontier_seq} missing from the copy"
    );
    let images: Vec<Vec<u8>> = post
        .iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect();
    // The flusher seals (syncs fully, then marks) oldest first: the sealed segments are a
    // prefix. A crash may have happened before any of those marks reached the disk.
    let sealed = images.iter().take_while(|b| is_sealed(b)).count();
    let keep_sealed = rng.below(sealed as u64 + 1) as usize;
    // Segment `post[keep_sealed]` exists durably (created by the rollover whose sealing synced
    // the directory, or it is the frontier segment). Later files may be missing.
    let keep_files = keep_sealed + 1 + rng.below((post.len() - keep_sealed) as u64) as usize;
    let (p_keep, p_zero) = match rng.below(4) {
        0 => (90, 5),
        1 => (50, 40),
        2 => (10, 80),
        _ => (40, 30),
    };
    let (mut kept, mut zeroed, mut garbage) = (0, 0, 0);
    for (i, ((seq, path), mut img)) in post.iter().copied().zip(images).enumerate() {
        if i < keep_sealed {
            continue;
        }
        if i >= keep_files {
            std::fs::remove_file(path).unwrap();
            continue;
        }
        // The sealed mark of this segment was written after the frontier: it may be lost.
        // Its sealed mark (if any) was written after the frontier: lost here.
        img[40..56].fill(0);
        let start = if *seq == frontier_seq {
            frontier_offset as usize
        } else {
            64
        };
        let mut page_start = start;
        while page_start < img.len() {
            let page_end = ((page_start / PAGE) + 1) * PAGE;
            let page_end = page_end.min(img.len());
            let roll = rng.below(100);
            if roll < p_keep {
                kept += 1;
            } else if roll < p_keep + p_zero {
                img[page_start..page_end].fill(0);
                zeroed += 1;
            } else {
                for b in &mut img[page_start..page_end] {
                    *b = rng.next() as u8;
                }
                garbage += 1;
            }
            page_start = page_end;
        }
        std::fs::write(path, &img).unwrap();
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".seg.tmp") && rng.below(2) == 0 {
            std::fs::remove_file(p).unwrap();
        }
    }
    format!(
        "{} post-frontier segments ({} sealed, {keep_sealed} kept sealed, {} files kept); pages kept {kept} zeroed {zeroed} garbage {garbage}",
        post.len(),
        sealed,
        keep_files
    )
}

#[test]
fn power_loss_simulation() {
    let rounds = env_usize("RML_POWERLOSS_ROUNDS", 60);
    let seed = seed_from_env("RML_POWERLOSS_SEED");
    eprintln!("power loss: {rounds} rounds, seed {seed} (RML_POWERLOSS_SEED to replay)");
    let mut rng = Rng(seed ^ 0x5555);
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Store::open(&live, config()).unwrap();
    let mut d = Driver::new(store, Model::default(), seed);
    let started = Instant::now();
    let (mut lost_ops, mut window_ops, mut cuts) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        for _ in 0..rng.below(40) {
            d.step(&mut |_| {});
        }
        d.store.sync().unwrap();
        let (fpath, foffset) = d.store.position();
        let fseq = raft_mmap_log::format::parse_segment_file_name(
            fpath.file_name().unwrap().to_str().unwrap(),
        )
        .unwrap();
        let at_frontier = d.model.clone();
        let mut ops: Vec<Op> = Vec::new();
        // No flush in the window: the flusher only seals segments at rollover, never deletes.
        for _ in 0..1 + rng.below(60) {
            d.step(&mut |o| ops.extend_from_slice(o));
        }
        let copy = tmp.path().join(format!("copy{round}"));
        copy_settled(&live, &copy);
        let what = power_cut(&copy, fseq, foffset, &mut rng);
        let store = Store::open(&copy, config()).unwrap_or_else(|e| {
            panic!(
                "round {round} (seed {seed}): open after simulated power cut failed: {e}\n  {what}"
            )
        });
        if store.recovery_report().cut.is_some() {
            cuts += 1;
        }
        let got = observe(&store);
        let k = match_prefix(&at_frontier, &ops, 0, &got)
            .unwrap_or_else(|why| panic!("round {round} (seed {seed}): {what}\n{why}"));
        lost_ops += ops.len() - k;
        window_ops += ops.len();
        drop(store);
        assert_clean(&copy);
        std::fs::remove_dir_all(&copy).unwrap();
    }
    eprintln!(
        "power loss: {rounds} simulated cuts in {:.1?}: {window_ops} unsynced ops, {lost_ops} lost, {cuts} torn tails cut",
        started.elapsed()
    );
}

/// A power cut after a truncate and re-append at the end of a segment that is not sealed yet,
/// while the next segment (whose checkpoint has the same `first`/`next`) did reach the disk.
///
/// Segment A: ..., 9, 10 (synced: the frontier) | truncate_from(9), 9', 10' (unsynced).
/// Rollover to segment B: checkpoint {next: 11}, then entry 11'. Power cut: A's pages after the
/// frontier are lost, B's pages are on disk. Replaying A gives next = 11 and B's checkpoint
/// says next = 11 too; before checkpoints named their predecessor's end and last CRC, B was
/// accepted and the log became 9, 10 (old) followed by 11' (written after 9', 10'), a log that
/// never existed. Regression test: recovery must refuse to bridge the lost tail.
#[test]
fn power_loss_truncate_then_reappend_at_segment_end() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let mut store = Store::open(&live, config()).unwrap();
    for i in 1..=10 {
        store.append(i, &payload(i, 1)).unwrap();
    }
    store.sync().unwrap();
    let (fpath, foffset) = store.position();
    store.truncate_from(9).unwrap();
    store.append(9, &payload(9, 2)).unwrap();
    store.append(10, &payload(10, 2)).unwrap();
    // An entry that cannot fit in what is left of segment A: it goes to segment B.
    let big = vec![0xAB; store.max_payload()];
    store.append(11, &big).unwrap();
    let (bpath, _) = store.position();
    assert_ne!(fpath, bpath, "entry 11 should have started a new segment");
    store.sync().unwrap();
    drop(store);

    let copy = tmp.path().join("copy");
    copy_settled(&live, &copy);
    // Power cut: A's bytes after the frontier and its sealed mark never reached the disk.
    let a = copy.join(fpath.file_name().unwrap());
    let mut img = std::fs::read(&a).unwrap();
    img[40..56].fill(0);
    img[foffset as usize..].fill(0);
    std::fs::write(&a, &img).unwrap();

    let store = Store::open(&copy, config()).unwrap();
    let snap = store.reader().view();
    let e10 = snap.get(10).map(|p| p.to_vec());
    let has11 = snap.get(11).is_some();
    assert!(
        !(has11 && e10.as_deref() == Some(&payload(10, 1)[..])),
        "recovered log holds the truncated entry 10 (epoch 1) followed by entry 11, which was \
         written after the truncate: first={} next={}",
        store.first_index(),
        store.next_index()
    );
}

/// A power cut after two rollovers, where the middle segment's pages (header included) never
/// reached the disk but the newest segment's did: mmap write-back has no order, and the
/// directory entries of both files are durable (renames are journaled in order).
#[test]
fn power_loss_blank_middle_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let mut store = Store::open(&live, config()).unwrap();
    // Meta values at their budget (a quarter of a segment, as a checkpoint body: a 32-byte
    // head, a 12-byte item head and the value): what is left of the first segment is then
    // smaller than the largest entry, and every later checkpoint is at the budget.
    let budget = (config().segment_size / 4) as usize - 32 - 12;
    store.put_meta(7, &vec![0x5A; budget]).unwrap();
    for i in 1..=5 {
        store.append(i, &payload(i, 1)).unwrap();
    }
    store.sync().unwrap();
    let (fpath, foffset) = store.position();
    let big = vec![0xCD; store.max_payload()];
    store.append(6, &big).unwrap(); // segment B
    store.append(7, &big).unwrap(); // segment C
    let (cpath, _) = store.position();
    store.sync().unwrap();
    drop(store);
    let fseq = raft_mmap_log::format::parse_segment_file_name(
        fpath.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    let cseq = raft_mmap_log::format::parse_segment_file_name(
        cpath.file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    assert_eq!(cseq, fseq + 2);

    let copy = tmp.path().join("copy");
    copy_settled(&live, &copy);
    let a = copy.join(fpath.file_name().unwrap());
    let mut img = std::fs::read(&a).unwrap();
    img[40..56].fill(0);
    img[foffset as usize..].fill(0);
    std::fs::write(&a, &img).unwrap();
    let b = copy.join(raft_mmap_log::format::segment_file_name(fseq + 1));
    let len = std::fs::metadata(&b).unwrap().len() as usize;
    std::fs::write(&b, vec![0u8; len]).unwrap();

    let store = Store::open(&copy, config())
        .unwrap_or_else(|e| panic!("a recoverable power cut is refused: {e}"));
    let got = observe(&store);
    assert_eq!((got.first, got.next), (1, 6), "state at the frontier");
}
