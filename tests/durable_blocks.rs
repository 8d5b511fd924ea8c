//! A new log's small durable appends overwrite *written* blocks, and each sync writes back only
//! the pages it dirtied (issue #13, durable path).
//!
//! Two ways the durable path loses half its rate on ext4, both checked here on the file system
//! of the temporary directory (skipped with a printed reason where it cannot be checked):
//! - appends into `fallocate`d, never-written blocks make every `fdatasync` commit extent
//!   conversions: the first segment's extents must not be "unwritten" (FIEMAP);
//! - blocks written with large `pwrite`s leave large folios in the page cache, and a page
//!   dirtied through a shared map dirties its whole folio, so each small sync writes back up
//!   to a megabyte: the bytes this thread dirties per 16-entry durable batch must stay near the
//!   batch's own size (`/proc/thread-self/io` `write_bytes`, which counts dirtied pages).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use raft_mmap_log::{Config, Store};

const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const EXTENTS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS],
}

/// Bytes of `path` in unwritten extents, or `None` where FIEMAP is not supported.
fn unwritten_bytes(path: &Path) -> Option<u64> {
    let file = File::open(path).expect("open segment");
    let mut unwritten = 0u64;
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); EXTENTS],
        };
        // SAFETY: FS_IOC_FIEMAP fills at most `extent_count` extents of the struct we pass,
        // which lives until the call returns.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        if r != 0 {
            return None;
        }
        let got = &map.extents[..map.mapped_extents as usize];
        for e in got {
            if e.flags & FIEMAP_EXTENT_UNWRITTEN != 0 {
                unwritten += e.length;
            }
        }
        match got.last() {
            Some(e) if e.flags & FIEMAP_EXTENT_LAST == 0 => start = e.logical + e.length,
            _ => return Some(unwritten),
        }
    }
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".seg")
}

/// Asks `done` every 20 ms until it says yes or `secs` seconds have passed.
fn wait_until(secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline && !done() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn fs_type(dir: &Path) -> i64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_type as i64
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const BTRFS_MAGIC: i64 = 0x9123_683E;

fn usable(dir: &Path) -> bool {
    match fs_type(dir) {
        TMPFS_MAGIC => {
            println!(
                "skipped: {} is tmpfs (no blocks, no write-back)",
                dir.display()
            );
            false
        }
        BTRFS_MAGIC => {
            println!(
                "skipped: {} is btrfs (copy-on-write: writes via pwrite)",
                dir.display()
            );
            false
        }
        _ => true,
    }
}

#[test]
fn a_new_logs_first_segment_has_written_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !usable(dir.path()) {
        return;
    }
    let store = Store::open(dir.path(), Config::default()).expect("open");
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    match unwritten_bytes(&segs[0]) {
        None => println!("skipped: FIEMAP not supported here"),
        Some(n) => assert_eq!(
            n,
            0,
            "{} has {n} bytes in unwritten extents: every small fdatasync would commit extent conversions",
            segs[0].display()
        ),
    }
    drop(store);
}

/// The same for the files a log grows into, while recycling is on (the default): the
/// preparer writes a new file's blocks before the writer takes it, so syncs past the first
/// segment commit no extent conversions either. (A writer that takes the file before that is
/// done gets it partly written; here the writer waits for the preparer at 40 MiB.)
#[test]
fn new_segments_past_the_first_have_written_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !usable(dir.path()) {
        return;
    }
    let mut store = Store::open(dir.path(), Config::default()).expect("open");
    if unwritten_bytes(&segments(dir.path())[0]).is_none() {
        println!("skipped: FIEMAP not supported here");
        return;
    }
    let mut next = 0u64;
    fill(&mut store, &mut next, 150_000);
    // The preparer makes the next file once an eighth of the segment is filled; wait until
    // it has none of its blocks unwritten, or give up after 10 s: well before the kernel's
    // own write-back of the prefaulted pages (after `dirty_expire_centisecs`, 30 s by
    // default) would convert the extents anyway.
    wait_until(10, || {
        files_ending(dir.path(), ".seg.tmp")
            .first()
            .is_some_and(|p| unwritten_bytes(p) == Some(0))
    });
    fill(&mut store, &mut next, 130_000);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "two segments: {segs:?}");
    let n = unwritten_bytes(&segs[1]).expect("FIEMAP");
    assert_eq!(
        n,
        0,
        "{} has {n} bytes in unwritten extents: every small fdatasync there would commit extent conversions",
        segs[1].display()
    );
}

/// Without recycling, new segment files have their blocks only reserved; then each sync sends
/// the next mebibyte ahead of it to write-back, so that its conversion to written blocks is
/// committed once, not by every small sync there.
#[test]
fn a_sync_over_reserved_blocks_converts_the_next_mebibyte_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !usable(dir.path()) {
        return;
    }
    let config = Config {
        segment_pool: 0,
        ..Config::default()
    };
    let size = config.segment_size;
    let mut store = Store::open(dir.path(), config).expect("open");
    let seg = &segments(dir.path())[0];
    let Some(before) = unwritten_bytes(seg) else {
        println!("skipped: FIEMAP not supported here");
        return;
    };
    if before == 0 {
        println!("skipped: the file system wrote the segment's blocks at allocation");
        return;
    }
    durable_batch(&mut store, &mut 0);
    // The write-back ahead is not waited for: poll until its conversion shows (or 10 s).
    // (The open's own sync of the header may have sent the first mebibyte already.)
    let mut written = 0;
    wait_until(10, || {
        written = size - unwritten_bytes(seg).expect("FIEMAP");
        written >= 512 << 10
    });
    // The header, the checkpoint and the batch are 3 pages; a mebibyte sent ahead is 256.
    assert!(
        written >= 512 << 10,
        "after an open and one durable batch, {written} bytes of {} are written blocks: \
         nothing was sent ahead",
        seg.display()
    );
}

fn dirtied_by_this_thread() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends `n` entries of 256 B from `*next` on in batches of 64, then syncs once.
fn fill(store: &mut Store, next: &mut u64, n: u64) {
    let payload = [0xC3u8; 256];
    for _ in 0..n / 64 {
        let first = *next;
        store
            .append_batch((first..first + 64).map(|i| (i, &payload[..])))
            .expect("append");
        *next += 64;
    }
    store.sync().expect("sync");
}

/// Appends one durable batch of 16 x 256 B from `*next` on (appended, then synced).
fn durable_batch(store: &mut Store, next: &mut u64) {
    let payload = [0xA5u8; 256];
    let first = *next;
    store
        .append_batch((first..first + 16).map(|i| (i, &payload[..])))
        .expect("append");
    store.sync().expect("sync");
    *next += 16;
}

/// Appends `batches` durable batches of 16 x 256 B from `*next` on (each synced); returns the
/// bytes this thread dirtied per batch on average.
fn dirtied_per_durable_batch(store: &mut Store, next: &mut u64, batches: u64) -> u64 {
    let before = dirtied_by_this_thread().expect("io");
    for _ in 0..batches {
        durable_batch(store, next);
    }
    (dirtied_by_this_thread().expect("io") - before) / batches
}

/// A log in a new temporary directory with `config`, where this test can count the bytes its
/// thread dirties; `None` (with the reason printed) where it cannot.
fn open_counting_io(config: Config) -> Option<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir().expect("tempdir");
    if !usable(dir.path()) {
        return None;
    }
    let store = Store::open(dir.path(), config).expect("open");
    if dirtied_by_this_thread().is_none() {
        println!("skipped: no /proc/thread-self/io (task I/O accounting off)");
        return None;
    }
    Some((dir, store))
}

#[test]
fn a_small_durable_batch_writes_back_only_its_own_pages() {
    let Some((_dir, mut store)) = open_counting_io(Config::default()) else {
        return;
    };
    let per_batch = dirtied_per_durable_batch(&mut store, &mut 0, 200);
    // A batch is 16 records of 280 bytes: 2 pages, 3 where it straddles one. A large folio
    // would show up as hundreds of KiB per batch.
    assert!(
        per_batch <= 32 << 10,
        "each durable batch of 16 x 256 B dirtied {per_batch} bytes on average"
    );
}

/// The same deep into a segment, past where the kernel's read-ahead, left to the map's
/// faults, would have brought the pages in as large folios (it grows its window as faults
/// go on): a new log's first segment and the next, new file.
#[test]
fn durable_batches_deep_in_new_segments_write_back_only_their_own_pages() {
    let Some((_dir, mut store)) = open_counting_io(Config::default()) else {
        return;
    };
    let mut next = 0u64;
    // 40 MiB into the first segment (64 MiB), then durable batches there.
    fill(&mut store, &mut next, 150_000);
    let first = dirtied_per_durable_batch(&mut store, &mut next, 200);
    let first_segment = store.position().0;
    // On into the second segment, 16 MiB deep, then durable batches there.
    fill(&mut store, &mut next, 130_000);
    let second = dirtied_per_durable_batch(&mut store, &mut next, 200);
    assert_ne!(
        store.position().0,
        first_segment,
        "the batches ran in the next segment"
    );
    for (which, per_batch) in [("first", first), ("second", second)] {
        assert!(
            per_batch <= 32 << 10,
            "each durable batch of 16 x 256 B deep in the {which} segment dirtied {per_batch} bytes on average"
        );
    }
}

/// The same once segments come from the pool: purged segments recycled, and pooled files
/// the preparer wrote.
#[test]
fn durable_batches_in_recycled_segments_write_back_only_their_own_pages() {
    let cfg = Config {
        segment_size: 4 << 20,
        ..Config::default()
    };
    let Some((dir, mut store)) = open_counting_io(cfg) else {
        return;
    };
    let payload = [0x5Au8; 256];
    const PER_BATCH: u64 = 16;
    let mut next = 0u64;
    // Fill several segments, purging behind, so that later segments are recycled files.
    let mut recycled_batches = 0u64;
    let mut dirtied = 0u64;
    let mut before = dirtied_by_this_thread().expect("io");
    while recycled_batches < 1000 {
        let seq_before = store.position().0;
        store
            .append_batch((next..next + PER_BATCH).map(|i| (i, &payload[..])))
            .expect("append");
        store.sync().expect("sync");
        next += PER_BATCH;
        let now = dirtied_by_this_thread().expect("io");
        if next > 40_000 && store.position().0 == seq_before {
            // Past the first segments, and not a batch that rolled over (a rollover writes
            // a checkpoint and a header besides the batch).
            recycled_batches += 1;
            dirtied += now - before;
        }
        before = now;
        if next % 4096 == 0 {
            store.purge_to(next - 2048).expect("purge");
        }
    }
    let per_batch = dirtied / recycled_batches;
    assert!(
        per_batch <= 32 << 10,
        "each durable batch of {PER_BATCH} x 256 B in a recycled segment dirtied {per_batch} bytes on average"
    );
    assert!(
        std::fs::read_dir(dir.path()).expect("list").any(|e| e
            .expect("entry")
            .path()
            .extension()
            .is_some_and(|x| x == "pool")),
        "the pool was used"
    );
}
