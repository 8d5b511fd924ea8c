//! A shared log (`groups::Groups`) seen from outside: the read-only tools name its groups,
//! a `Store` opens it as group 0 and leaves the other groups intact, and a log written by an
//! older format version opens as a shared log (its active segment is sealed first, so that
//! group records only ever go into version 3 segments).

use std::path::{Path, PathBuf};

use raft_mmap_log::format::{RecordKind, FORMAT_VERSION};
use raft_mmap_log::groups::{Groups, WriteBatch};
use raft_mmap_log::inspect::{self, DumpFilter, Severity};
use raft_mmap_log::{Config, Error, Store};

fn config() -> Config {
    Config {
        segment_size: 4096,
        prepare_ahead: false,
        ..Config::default()
    }
}

fn payload(group: u64, index: u64) -> Vec<u8> {
    let len = ((group * 31 + index * 7) % 200) as usize;
    (0..len as u64)
        .map(|k| (group * 13 + index * 7 + k) as u8)
        .collect()
}

/// Writes groups 1, 2 and 3 (and group 0) across several segments; group 2 removed.
fn write_groups(dir: &Path) {
    let log = Groups::open(dir, config()).unwrap();
    for round in 0..12u64 {
        let mut batch = WriteBatch::new();
        let bodies: Vec<(u64, u64, Vec<u8>)> = (0..4u64)
            .flat_map(|g| (0..3u64).map(move |k| (g, round * 3 + k)))
            .map(|(g, i)| (g, i, payload(g, i)))
            .collect();
        for (g, i, p) in &bodies {
            batch.add_entries(*g, [(*i, &p[..])]);
        }
        log.write(&batch).unwrap();
    }
    log.group(3).put_meta(9, b"three").unwrap();
    log.remove_group(2).unwrap();
    log.sync().unwrap();
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn stat_verify_and_dump_name_the_groups() {
    let dir = tempfile::tempdir().unwrap();
    write_groups(dir.path());
    assert!(seg_files(dir.path()).len() > 2, "no rollover");

    let st = inspect::stat(dir.path()).unwrap();
    assert_eq!((st.first_index, st.next_index), (0, 36), "group 0");
    let ids: Vec<u64> = st.groups.iter().map(|g| g.id).collect();
    assert_eq!(ids, vec![1, 3], "group 2 was removed");
    let g3 = &st.groups[1];
    assert_eq!((g3.first, g3.next, g3.metas), (0, 36, 1));
    assert!(g3.pinned_bytes >= 4096 && g3.oldest_segment.is_some());

    let rep = inspect::verify(dir.path(), &|_| {}).unwrap();
    assert!(rep.is_sound(), "{:?}", rep.findings);
    assert!(
        rep.findings.iter().any(|f| f.severity == Severity::Note
            && f.what.contains("shared log: 2 groups besides group 0")),
        "{:?}",
        rep.findings
    );

    // Every entry of group 3, and nothing of another group, with the group filter.
    let mut seen = Vec::new();
    inspect::dump::<Error>(
        dir.path(),
        DumpFilter {
            group: Some(3),
            ..DumpFilter::default()
        },
        |r| {
            assert_eq!(r.group, 3);
            if r.kind == RecordKind::Entry {
                assert_eq!(r.body, &payload(3, r.arg)[..], "entry {}", r.arg);
                seen.push(r.arg);
            }
            Ok(())
        },
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(seen, (0..36).collect::<Vec<_>>());
}

#[test]
fn a_store_opens_a_shared_log_as_group_0_and_keeps_the_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    write_groups(dir.path());
    {
        let mut store = Store::open(dir.path(), config()).unwrap();
        assert_eq!((store.first_index(), store.next_index()), (0, 36));
        let view = store.reader().view();
        for i in 0..36 {
            assert_eq!(view.get_checked(i).unwrap().unwrap(), &payload(0, i)[..]);
        }
        drop(view);
        // Enough to roll over several times: every new segment carries the groups' state.
        for i in 36..120u64 {
            store.append(i, &payload(0, i)).unwrap();
        }
        store.purge_to(100).unwrap();
        store.sync().unwrap();
    }
    let log = Groups::open(dir.path(), config()).unwrap();
    assert_eq!(log.ids(), vec![0, 1, 3]);
    let g3 = log.group(3);
    assert_eq!(g3.meta(9).as_deref(), Some(&b"three"[..]));
    let view = g3.reader().view();
    for i in 0..36 {
        assert_eq!(view.get_checked(i).unwrap().unwrap(), &payload(3, i)[..]);
    }
    assert_eq!(log.group(0).first_index(), 100);
}

/// The committed golden files of format version 2 (`tests/data/v2/raft`): opened as a
/// shared log, the old active segment is sealed and a version 3 one starts before any group
/// record is written; group 0 keeps the old log.
#[test]
fn a_version_2_log_opens_as_a_shared_log() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2/raft");
    let dir = tempfile::tempdir().unwrap();
    for p in seg_files(&src) {
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let before = Store::open(dir.path(), config()).unwrap();
    let (first, next) = (before.first_index(), before.next_index());
    let entries: Vec<Vec<u8>> = {
        let view = before.reader().view();
        (first..next)
            .map(|i| view.get(i).unwrap().to_vec())
            .collect()
    };
    drop(before);
    let old_newest = seg_files(dir.path()).pop().unwrap();
    let version = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        u32::from_le_bytes(bytes[8..12].try_into().unwrap())
    };
    assert_eq!(version(&old_newest), 2);

    let log = Groups::open(dir.path(), config()).unwrap();
    let newest = seg_files(dir.path()).pop().unwrap();
    assert_ne!(
        newest, old_newest,
        "the version 2 active segment was not sealed"
    );
    assert_eq!(version(&newest), FORMAT_VERSION);
    let g = log.group(42);
    g.append_batch((0..30u64).map(|i| (i, &b"group forty-two"[..])))
        .unwrap();
    log.sync().unwrap();
    drop((g, log));

    let log = Groups::open(dir.path(), config()).unwrap();
    assert_eq!(log.group(42).next_index(), 30);
    let g0 = log.group(0);
    assert_eq!((g0.first_index(), g0.next_index()), (first, next));
    let view = g0.reader().view();
    for (k, want) in entries.iter().enumerate() {
        assert_eq!(view.get(first + k as u64), Some(&want[..]));
    }
    drop((view, g0, log));
    // Group records sit only in version 3 segments.
    inspect::dump::<Error>(
        dir.path(),
        DumpFilter::default(),
        |r| {
            if matches!(r.kind, RecordKind::Group | RecordKind::GroupCheckpoint) {
                assert_eq!(version(r.path), FORMAT_VERSION, "{}", r.path.display());
            }
            Ok(())
        },
        |_| Ok(()),
    )
    .unwrap();
}
