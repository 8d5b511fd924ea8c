//! Golden files of a shared log (`groups::Groups`): a log written once with group records
//! (format version 3: `Group`, `GroupCheckpoint`, `GroupRemove`, `Rewrite`), committed under
//! `tests/data/v3/groups`, must keep opening with exactly the same groups, entries and meta
//! values, and keep the same record listing (see `tests/data/README.md`).
//!
//! The case is written by the ignored test below, once, and never overwritten:
//!
//! ```sh
//! RML_GOLDEN_WRITE=1 cargo test --release --all-features --test golden_groups -- --ignored
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{RecordKind, SEGMENT_MAGIC};
use raft_mmap_log::groups::{Groups, WriteBatch};
use raft_mmap_log::inspect::{self, DumpFilter, Severity};
use raft_mmap_log::{Config, Error};

/// The format version of the case (the first with group records).
const VERSION: u32 = 3;
const CASE: &str = "groups";
/// Group ids of the case: 0 (the log's own), a small one, a large one, and one removed.
const G0: u64 = 0;
const G5: u64 = 5;
const GBIG: u64 = 1 << 40;
const GONE: u64 = 9;

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    }
}

/// Payload of entry `index` of `group`, written in generation `gen`.
fn payload(group: u64, index: u64, gen: u64) -> Vec<u8> {
    let len = ((group % 97) * 13 + index * 29 + gen * 7) % 400;
    (0..len)
        .map(|k| (group.rotate_left(3) ^ (index * 7) ^ (k * 31) ^ (gen * 101)) as u8)
        .collect()
}

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("v{VERSION}"))
        .join(CASE)
}

/// The expected log: per group, (first, next, generation of each index from first), metas.
struct Want {
    id: u64,
    first: u64,
    next: u64,
    gen: fn(u64) -> u64,
    metas: &'static [(u64, &'static [u8])],
}

fn wants() -> [Want; 3] {
    [
        // Entries 0..30; 20..30 overwritten by a write batch (generation 1).
        Want {
            id: G0,
            first: 0,
            next: 30,
            gen: |i| u64::from(i >= 20),
            metas: &[(1, b"zero")],
        },
        // Entries 1..41 purged to 25 with a meta value in the same record.
        Want {
            id: G5,
            first: 25,
            next: 41,
            gen: |_| 0,
            metas: &[(7, b"purged to 25"), (8, b"five")],
        },
        // Three entries from 100, rewritten forward by `rewrite_lagging`.
        Want {
            id: GBIG,
            first: 100,
            next: 103,
            gen: |_| 2,
            metas: &[],
        },
    ]
}

fn write_case(dir: &Path) {
    let log = Groups::open(dir, config()).unwrap();
    let bodies = |g: u64, range: std::ops::Range<u64>, gen: u64| -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, payload(g, i, gen))).collect()
    };
    let add = |g: u64, list: &[(u64, Vec<u8>)]| {
        log.group(g)
            .append_batch(list.iter().map(|(i, p)| (*i, &p[..])))
            .unwrap()
    };
    let big = bodies(GBIG, 100..103, 2);
    add(GBIG, &big);
    let gone = bodies(GONE, 0..10, 0);
    add(GONE, &gone);
    for round in 0..4u64 {
        add(G0, &bodies(G0, round * 5..round * 5 + 5, 0));
        add(G5, &bodies(G5, 1 + round * 10..11 + round * 10, 0));
    }
    // Group 0: 20..30 through a write batch with group 5's meta value.
    let later = bodies(G0, 20..30, 1);
    let mut batch = WriteBatch::new();
    batch.add_entries(G0, later.iter().map(|(i, p)| (*i, &p[..])));
    batch.put_meta(G5, 8, b"five");
    log.write(&batch).unwrap();
    log.group(G0).put_meta(1, b"zero").unwrap();
    log.group(G5)
        .purge_to_with_meta(25, &[(7, b"purged to 25")])
        .unwrap();
    log.remove_group(GONE).unwrap();
    assert_eq!(log.rewrite_lagging(3).unwrap(), vec![GBIG]);
    log.sync().unwrap();
}

/// Every record as `inspect::dump` reports it, with its group, and each segment's end.
fn listing(dir: &Path) -> String {
    let out = std::cell::RefCell::new(String::new());
    let file = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    inspect::dump::<Error>(
        dir,
        DumpFilter::default(),
        |r| {
            let line = format!(
                "{} {} {:?} group={} arg={} len={}",
                file(r.path),
                r.offset,
                r.kind,
                r.group,
                r.arg,
                r.len
            );
            writeln!(out.borrow_mut(), "{line}").unwrap();
            Ok(())
        },
        |e| {
            let line = format!(
                "{} {} end sealed={} invalid={:?}",
                file(e.path),
                e.offset,
                e.sealed,
                e.invalid
            );
            writeln!(out.borrow_mut(), "{line}").unwrap();
            Ok(())
        },
    )
    .unwrap();
    out.into_inner()
}

fn seg_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_groups_case_opens_with_every_group_entry_and_meta() {
    let src = case_dir();
    let tmp = tempfile::tempdir().unwrap();
    for f in seg_names(&src) {
        std::fs::copy(src.join(&f), tmp.path().join(&f)).unwrap();
    }
    let dir = tmp.path();
    // Read-only first: headers, verify, the saved listing.
    for f in seg_names(dir) {
        let bytes = std::fs::read(dir.join(&f)).unwrap();
        assert_eq!(bytes[0..8], SEGMENT_MAGIC, "{f}");
        assert_eq!(bytes[8..12], VERSION.to_le_bytes(), "{f}: version");
    }
    let report = inspect::verify(dir, &|_| {}).unwrap();
    assert!(report.is_sound(), "{:?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.severity == Severity::Note && f.what.starts_with("shared log: 2 groups")),
        "{:?}",
        report.findings
    );
    let saved = std::fs::read_to_string(src.with_extension("records")).unwrap();
    let listed = listing(dir);
    assert_eq!(listed, saved, "record listing");
    for kind in ["Group ", "GroupCheckpoint", "GroupRemove", "Rewrite"] {
        assert!(listed.contains(kind), "the case holds no {kind} record");
    }
    let _ = RecordKind::Rewrite;

    // Then open it and read every group.
    let log = Groups::open(dir, config()).unwrap();
    let report = log.recovery_report();
    assert!(report.cut.is_none() && report.dropped_files.is_empty());
    assert_eq!(log.ids(), vec![G0, G5, GBIG]);
    for w in wants() {
        let g = log.group(w.id);
        let view = g.reader().view();
        assert_eq!(
            (view.first_index(), view.next_index()),
            (w.first, w.next),
            "group {}",
            w.id
        );
        for i in w.first..w.next {
            let got = view.get_checked(i).unwrap();
            assert_eq!(
                got,
                Some(&payload(w.id, i, (w.gen)(i))[..]),
                "group {} entry {i}",
                w.id
            );
        }
        for (k, v) in w.metas {
            assert_eq!(view.meta(*k), Some(*v), "group {} meta {k}", w.id);
        }
    }
    assert_eq!(log.group(GONE).next_index(), 0, "the removed group");
}

/// Writes the case once. Never overwrites.
#[test]
#[ignore = "writes tests/data; run with RML_GOLDEN_WRITE=1"]
fn write_golden_groups_case() {
    if std::env::var_os("RML_GOLDEN_WRITE").is_none_or(|v| v != "1") {
        eprintln!("RML_GOLDEN_WRITE=1 is not set: nothing written");
        return;
    }
    let out = case_dir();
    assert!(
        !out.exists(),
        "{} exists: golden files are never rewritten",
        out.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    write_case(tmp.path());
    std::fs::create_dir_all(&out).unwrap();
    for f in seg_names(tmp.path()) {
        std::fs::copy(tmp.path().join(&f), out.join(&f)).unwrap();
    }
    std::fs::write(out.with_extension("records"), listing(tmp.path())).unwrap();
}
