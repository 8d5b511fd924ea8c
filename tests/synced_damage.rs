//! Damage to records that a flush made durable is corruption, not a torn tail, also in the
//! newest (unsealed) segment and in a recycled one: the segment header's synced mark says how
//! far its records were durable (docs/format.md, "SegmentHeader" and "Recovery").
//!
//! Each test damages bytes behind the log's back, as a disk or another program could, and
//! checks that opening refuses with the damaged file and offset (strict mode), that `verify`
//! reports a problem, and that `TruncateAtCorruption` opens with the corruption reported.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{SegmentHeader, SEGMENT_FLAG_RECYCLED};
use raft_mmap_log::{inspect, Config, Error, RecoveryMode, Store};
use zerocopy::FromBytes;

fn config(segment_size: u64, pool: usize) -> Config {
    Config {
        segment_size,
        prepare_ahead: false,
        segment_pool: pool,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = 100 + (i * 7 % 90) as usize;
    let mut p: Vec<u8> = (0..len).map(|j| (i as usize * 17 + j) as u8 | 1).collect();
    // Unique, so that the tests find an entry in a file by its bytes.
    p[..8].copy_from_slice(&(i | 1 << 63).to_le_bytes());
    p
}

fn append(store: &mut Store, range: std::ops::Range<u64>) {
    let data: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store
        .append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
        .unwrap();
}

/// Flips the low bit of the byte at `at` of `path`.
fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 1;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

fn header(path: &Path) -> SegmentHeader {
    let mut raw = [0u8; 64];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut raw, 0)
        .unwrap();
    SegmentHeader::read_from_bytes(&raw[..]).unwrap()
}

/// The byte offset, in the active segment, of the body of entry `i`.
fn body_offset(store: &Store, i: u64) -> (PathBuf, u64) {
    let view = store.reader().view();
    let entry = view.get(i).unwrap();
    let (path, _) = store.position();
    // The entry's body lies in the active segment's map: find it in the file by content.
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(entry.len())
        .position(|w| w == entry)
        .expect("entry body in the active segment");
    (path, at as u64 + entry.len() as u64 / 2)
}

/// Opening refuses with `Corrupt` naming `path` at or before `at`; verify agrees; the lenient
/// mode opens and says what it tolerated.
fn assert_refused(dir: &Path, cfg: &Config, path: &Path, at: u64) {
    match Store::open(dir, cfg.clone()) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path, "the error names the damaged file");
            assert!(offset <= at, "offset {offset} is after the damage at {at}");
            assert!(
                at - offset < 4096,
                "offset {offset} is far from the damage at {at}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(s) => panic!(
            "damaged synced data opened: next {} (report {:?})",
            s.next_index(),
            s.recovery_report()
        ),
    }
    let report = inspect::verify(dir, &|_| {}).unwrap();
    assert!(!report.is_sound(), "verify calls damaged synced data sound");
    let lenient = Config {
        recovery_mode: RecoveryMode::TruncateAtCorruption,
        ..cfg.clone()
    };
    let store = Store::open(dir, lenient.clone()).unwrap();
    assert!(
        store.recovery_report().tolerated_corruption.is_some(),
        "{:?}",
        store.recovery_report()
    );
    drop(store);
    // The cut is repaired: the next strict open accepts what was kept.
    Store::open(dir, cfg.clone()).unwrap();
}

#[test]
fn a_flipped_byte_in_a_cleanly_closed_logs_only_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8 << 20, 2);
    let mut store = Store::open(dir.path(), cfg.clone()).unwrap();
    append(&mut store, 0..20_000);
    store.sync().unwrap();
    let (path, at) = body_offset(&store, 10_000);
    drop(store);
    flip(&path, at);
    assert_refused(dir.path(), &cfg, &path, at);
}

/// Runs `child` (a test of this file) in a child process on `dir` and returns what it prints:
/// the child writes, then exits without closing the log, as a process that dies does.
fn run_child(child: &str, dir: &Path) -> (PathBuf, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "child {child} failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.split_once("RML ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child printed no result: {text}"));
    let (path, at) = line.rsplit_once(' ').unwrap();
    (PathBuf::from(path), at.parse().unwrap())
}

const CHILD_DIR: &str = "RML_SYNCED_DAMAGE_DIR";

/// The child's log directory, when this process is a child.
fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_DIR).map(PathBuf::from)
}

/// Prints the file and offset of entry `i`'s body, then dies without closing the log.
fn report_and_die(store: &Store, i: u64) -> ! {
    let (path, at) = body_offset(store, i);
    println!("RML {} {at}", path.display());
    std::process::exit(0)
}

#[test]
fn child_two_syncs_then_death() {
    let Some(dir) = child_dir() else { return };
    let mut store = Store::open(dir, config(8 << 20, 2)).unwrap();
    append(&mut store, 0..10_000);
    store.sync().unwrap();
    append(&mut store, 10_000..20_000);
    store.sync().unwrap();
    report_and_die(&store, 5_000);
}

#[test]
fn a_flipped_byte_below_the_last_flush_but_one_is_refused_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (path, at) = run_child("child_two_syncs_then_death", dir.path());
    flip(&path, at);
    assert_refused(dir.path(), &config(8 << 20, 2), &path, at);
}

#[test]
fn child_sync_then_unsynced_appends_then_death() {
    let Some(dir) = child_dir() else { return };
    let mut store = Store::open(dir, config(8 << 20, 2)).unwrap();
    append(&mut store, 0..10_000);
    store.sync().unwrap();
    append(&mut store, 10_000..10_100);
    report_and_die(&store, 10_050);
}

#[test]
fn damage_past_the_synced_data_is_still_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, at) = run_child("child_sync_then_unsynced_appends_then_death", dir.path());
    flip(&path, at);
    let store = Store::open(dir.path(), config(8 << 20, 2)).unwrap();
    assert_eq!(
        store.next_index(),
        10_050,
        "cut at the damaged unsynced entry"
    );
    let cut = store
        .recovery_report()
        .cut
        .clone()
        .expect("a cut is reported");
    assert_eq!(cut.0, path);
}

/// Rolls a small log over until its active segment is a recycled file.
fn log_in_a_recycled_segment(dir: &Path, cfg: &Config, keep: u64) -> (Store, u64) {
    let mut store = Store::open(dir, cfg.clone()).unwrap();
    let mut next = 0;
    for _ in 0..200 {
        append(&mut store, next..next + 20);
        next += 20;
        store.purge_to(next.saturating_sub(keep)).unwrap();
        store.sync().unwrap();
        let (path, _) = store.position();
        if header(&path).flags.get() & SEGMENT_FLAG_RECYCLED != 0 {
            return (store, next);
        }
    }
    panic!("no recycled segment became active");
}

#[test]
fn damage_to_a_flushed_entry_in_a_recycled_newest_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16 << 10, 2);
    let (mut store, next) = log_in_a_recycled_segment(dir.path(), &cfg, 10);
    // Entries that stay in the recycled active segment, then flushed.
    let (path, _) = store.position();
    append(&mut store, next..next + 5);
    store.sync().unwrap();
    assert_eq!(store.position().0, path, "still in the recycled segment");
    let (path, at) = body_offset(&store, next + 2);
    drop(store);
    flip(&path, at);
    assert_refused(dir.path(), &cfg, &path, at);
}

#[test]
fn child_purge_in_a_recycled_segment_then_death() {
    let Some(dir) = child_dir() else { return };
    let cfg = config(16 << 10, 2);
    let (mut store, next) = log_in_a_recycled_segment(&dir, &cfg, 60);
    let segments = store.reader().view().segment_count();
    assert!(segments >= 2, "an older segment holds live entries");
    // The purge record is the newest segment's last record, and its segment goes to the pool.
    let (path, at) = store.position();
    store.purge_to(next).unwrap();
    store.sync().unwrap();
    assert!(store.reader().view().segment_count() < segments);
    println!("RML {} {}", path.display(), at + 8);
    std::process::exit(0)
}

/// The last record of a recycled newest segment, a purge whose released segment is gone, is
/// damaged: the error names it (not a healthy segment elsewhere), since without it entries are
/// missing.
#[test]
fn a_damaged_last_record_of_a_recycled_newest_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, at) = run_child("child_purge_in_a_recycled_segment_then_death", dir.path());
    flip(&path, at);
    match Store::open(dir.path(), config(16 << 10, 2)) {
        Err(Error::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!(p, path, "the error names the damaged file");
            assert_eq!(
                offset,
                at - 8,
                "the error names the damaged record: {reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(s) => panic!("opened: first {} next {}", s.first_index(), s.next_index()),
    }
}
