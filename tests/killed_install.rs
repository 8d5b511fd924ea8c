//! A process killed while it installs a segment: the newest segment file holds the first
//! bytes of its new header over the blank one, and nothing after it (docs/format.md, "Segment
//! pool and reuse", step 7).
//!
//! The writer now puts the header in with one `pwrite`, which a kill cannot split; logs that
//! an older build left in this state must still open. The header's leading stores name the
//! file's magic, version, salt and sequence; its CRC field and everything after are still
//! zero. Such a file never held an acknowledged byte: recovery drops it as never written.
//! The same header over a file whose first record validates under the header's salt is not
//! that state: it is damage, and opening refuses it.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{segment_file_name, SEGMENT_HEADER_SIZE};
use raft_mmap_log::{Config, Error, Store};

fn config() -> Config {
    Config {
        segment_size: 16 * 1024,
        prepare_ahead: false,
        segment_pool: 2,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..200).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// A closed log with entries 1..=n over several segments; returns the newest segment's path.
fn written_log(dir: &Path, n: u64) -> PathBuf {
    let mut store = Store::open(dir, config()).unwrap();
    for i in 1..=n {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    let (newest, _) = store.position();
    drop(store);
    newest
}

fn seq_of(path: &Path) -> u64 {
    raft_mmap_log::format::parse_segment_file_name(path.file_name().unwrap().to_str().unwrap())
        .unwrap()
}

/// Makes segment `seq + 1` beside `newest` from a copy of `body_from` (the previous life's
/// bytes) whose header is the first `torn` bytes of a new header for `seq + 1` with `salt`,
/// then zeros.
fn torn_install(newest: &Path, body_from: &Path, salt: u32, torn: usize) -> PathBuf {
    let mut bytes = std::fs::read(body_from).unwrap();
    let mut header = bytes[..SEGMENT_HEADER_SIZE].to_vec();
    let next = seq_of(newest) + 1;
    header[12..16].copy_from_slice(&salt.to_le_bytes());
    header[16..24].copy_from_slice(&next.to_le_bytes());
    header[32..36].copy_from_slice(&1u32.to_le_bytes()); // recycled
    header[36..40].copy_from_slice(&[0xAA; 4]); // any CRC: it is cut off below
    for b in &mut header[torn..] {
        *b = 0;
    }
    bytes[..SEGMENT_HEADER_SIZE].copy_from_slice(&header);
    let path = newest.with_file_name(segment_file_name(next));
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn salt_of(path: &Path) -> u32 {
    let mut raw = [0u8; 4];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut raw, 12)
        .unwrap();
    u32::from_le_bytes(raw)
}

fn assert_entries(store: &Store, n: u64) {
    assert_eq!(store.next_index(), n + 1);
    let view = store.reader().view();
    for i in 1..=n {
        assert_eq!(view.get(i).unwrap(), &payload(i)[..], "entry {i}");
    }
}

#[test]
fn a_header_cut_short_by_a_kill_is_dropped_as_never_written() {
    for torn in [8, 16, 24, 32] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let newest = written_log(&dir, 200);
        // The previous life: an older segment's bytes, under a salt none of them has.
        let old = newest.with_file_name(segment_file_name(seq_of(&newest) - 1));
        let salt = salt_of(&old).wrapping_add(2) | 1;
        let cut = torn_install(&newest, &old, salt, torn);

        let store = Store::open(&dir, config())
            .unwrap_or_else(|e| panic!("a header cut after {torn} bytes: {e}"));
        assert_entries(&store, 200);
        assert!(
            store.recovery_report().dropped_files.contains(&cut),
            "{:?}",
            store.recovery_report()
        );
        assert!(!cut.exists(), "the unfinished segment is removed");
        drop(store);
        // And the log goes on writing and reopens.
        let mut store = Store::open(&dir, config()).unwrap();
        store.append(201, &payload(201)).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = Store::open(&dir, config()).unwrap();
        assert_entries(&store, 201);
    }
}

#[test]
fn a_cut_header_over_records_of_its_salt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let newest = written_log(&dir, 200);
    // The records after the header validate under the salt the header names: they were
    // written in this life, so this is not a header that a kill cut short.
    let cut = torn_install(&newest, &newest, salt_of(&newest), 32);
    match Store::open(&dir, config()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, cut),
        other => panic!("expected corruption of {}, got {other:?}", cut.display()),
    }
    assert!(cut.exists(), "a refused open removes nothing");
}

#[test]
fn a_cut_header_that_is_not_the_newest_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let newest = written_log(&dir, 200);
    let old = newest.with_file_name(segment_file_name(seq_of(&newest) - 1));
    let salt = salt_of(&old).wrapping_add(2) | 1;
    // Cut the header of the newest written file's predecessor instead: the install of a
    // segment that later ones follow was finished (it was synced before any later one).
    let bytes = std::fs::read(&old).unwrap();
    let mut damaged = bytes.clone();
    damaged[12..16].copy_from_slice(&salt.to_le_bytes());
    for b in &mut damaged[32..SEGMENT_HEADER_SIZE] {
        *b = 0;
    }
    std::fs::write(&old, &damaged).unwrap();
    match Store::open(&dir, config()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, old),
        other => panic!("expected corruption of {}, got {other:?}", old.display()),
    }
}
