//! One recovery verdict, three renderings: for every damaged-directory case, `Store::open` (on
//! one copy) and `inspect::verify` + `inspect::stat` + `inspect::dump` (on another copy) must
//! say the same thing.
//!
//! * open fails with `Corrupt` at file:offset ⇔ verify's verdict refuses with exactly that
//!   error, and verify reports exactly that problem (path, offset, text), and stat reports it
//!   as its corruption;
//! * open succeeds cutting/dropping X ⇔ verify is sound, its verdict and stat's report cut and
//!   drop exactly X, and verify has a note at the cut and at every dropped file;
//! * the entry range open recovers is the one stat shows;
//! * dump stops in every file where the verdict says that file's records stop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{
    parse_segment_file_name, segment_file_name, RecordKind, SEGMENT_HEADER_SIZE,
};
use raft_mmap_log::inspect::{self, Decision};
use raft_mmap_log::{Config, Error, Store};

mod common;

const SEG: u64 = 4096;

fn config() -> Config {
    common::strict_config(SEG, false)
}

fn scratch() -> tempfile::TempDir {
    common::scratch("rml-verdict")
}

/// A closed log's segment files (name, bytes), oldest first, with per-file facts.
struct Original {
    files: Vec<(String, Vec<u8>)>,
    /// Where the records of each segment end.
    ends: Vec<u64>,
    /// Offset of the last record of each segment.
    last_record: Vec<u64>,
    /// The last purge record: file index and offset.
    purge: Option<(usize, u64)>,
}

fn payload(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; ((i * 37) % 150) as usize]
}

/// The log of `tests/corruption.rs`: entries, a truncate, a purge, meta values, 4 segments.
fn build_mixed(dir: &Path) {
    let mut store = Store::open(dir, config()).unwrap();
    for i in 1..=40 {
        store.append(i, &payload(i)).unwrap();
    }
    store.put_meta(9, b"term=3;vote=2").unwrap();
    store.truncate_from(35).unwrap();
    for i in 35..=60 {
        store.append(i, &payload(i + 1)).unwrap();
    }
    store.purge_to(4).unwrap();
    store.put_meta(9, b"term=4;vote=1").unwrap();
    let mut i = 61;
    while store.reader().view().segment_count() < 4 {
        store.append(i, &payload(i)).unwrap();
        i += 1;
    }
    store.sync().unwrap();
}

/// A log whose newest segment holds a purge that released (and so deleted) older segments:
/// damaging that durable purge record must be corruption, not a torn tail.
fn build_purged(dir: &Path) {
    let mut store = Store::open(dir, config()).unwrap();
    let mut i = 1;
    while store.reader().view().segment_count() < 4 {
        store.append(i, &payload(i)).unwrap();
        i += 1;
    }
    store.purge_to(i - 2).unwrap();
    store.sync().unwrap();
    drop(store);
    // Reopen so the released segments are deleted, then write nothing more.
    let store = Store::open(dir, config()).unwrap();
    drop(store);
}

fn capture(build: fn(&Path)) -> Original {
    let tmp = scratch();
    let dir = tmp.path().join("log");
    build(&dir);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            parse_segment_file_name(&name)?;
            Some((name, std::fs::read(e.path()).unwrap()))
        })
        .collect();
    files.sort();
    let index: BTreeMap<PathBuf, usize> = files
        .iter()
        .enumerate()
        .map(|(k, (n, _))| (dir.join(n), k))
        .collect();
    let mut last_record = vec![0; files.len()];
    let mut ends = vec![0; files.len()];
    let mut purge = None;
    inspect::dump::<Error>(
        &dir,
        inspect::DumpFilter::default(),
        |r| {
            let k = index[r.path];
            last_record[k] = r.offset;
            if r.kind == RecordKind::Purge {
                purge = Some((k, r.offset));
            }
            Ok(())
        },
        |e| {
            assert!(e.invalid.is_none(), "clean log: {:?}", e.invalid);
            ends[index[e.path]] = e.offset;
            Ok(())
        },
    )
    .unwrap();
    Original {
        files,
        ends,
        last_record,
        purge,
    }
}

impl Original {
    fn write_to(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    fn path(&self, dir: &Path, k: usize) -> PathBuf {
        dir.join(&self.files[k].0)
    }
    fn last(&self) -> usize {
        self.files.len() - 1
    }
    fn next_name(&self) -> String {
        let seq = parse_segment_file_name(&self.files[self.last()].0).unwrap();
        segment_file_name(seq + 1)
    }
}

use common::{patch, set_len};

/// What opening must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refuses, naming file `k`.
    Corrupt(usize),
    /// Opens with everything.
    Intact,
    /// Opens after a cut and/or dropping files.
    Repaired,
}

type Damage = fn(&Original, &Path);

fn cases() -> Vec<(&'static str, Damage, Expect)> {
    vec![
        ("untouched", |_, _| {}, Expect::Intact),
        (
            "newest segment shortened to half (valid header)",
            |o, d| set_len(&o.path(d, o.last()), SEG / 2),
            Expect::Intact,
        ),
        (
            "middle segment shortened by one byte",
            |o, d| set_len(&o.path(d, 1), SEG - 1),
            Expect::Corrupt(1),
        ),
        (
            "oldest segment shortened to 10 bytes",
            |o, d| set_len(&o.path(d, 0), 10),
            Expect::Corrupt(0),
        ),
        (
            "missing middle segment",
            |o, d| std::fs::remove_file(o.path(d, 1)).unwrap(),
            Expect::Corrupt(2),
        ),
        (
            "foreign files",
            |_, d| {
                std::fs::write(d.join("notes.txt"), b"hello").unwrap();
                std::fs::write(d.join("7.seg"), b"not ours").unwrap();
                std::fs::create_dir(d.join("subdir")).unwrap();
            },
            Expect::Intact,
        ),
        (
            "leftover prepared file",
            |_, d| std::fs::write(d.join("00000000000000000042.seg.tmp"), [0xEE; 5000]).unwrap(),
            Expect::Intact,
        ),
        (
            "zero-length file after the newest segment",
            |o, d| std::fs::write(d.join(o.next_name()), []).unwrap(),
            Expect::Repaired,
        ),
        (
            "short blank file after the newest segment",
            |o, d| std::fs::write(d.join(o.next_name()), [0u8; 40]).unwrap(),
            Expect::Repaired,
        ),
        (
            "full-size blank file after the newest segment",
            |o, d| std::fs::write(d.join(o.next_name()), vec![0u8; SEG as usize]).unwrap(),
            Expect::Repaired,
        ),
        (
            "zero-length middle segment",
            |o, d| set_len(&o.path(d, 1), 0),
            Expect::Corrupt(1),
        ),
        (
            "garbage after the last record of the newest segment",
            |o, d| patch(&o.path(d, o.last()), o.ends[o.last()] + 16, &[0x5A; 40]),
            Expect::Repaired,
        ),
        (
            // Torn only past the synced mark: the log was closed after a sync, so the mark is
            // cleared to model a crash before that sync.
            "last record of the newest segment torn, never synced",
            |o, d| {
                let at = o.last_record[o.last()] + 4;
                let end = o.ends[o.last()];
                patch(&o.path(d, o.last()), at, &vec![0u8; (end - at) as usize]);
                patch(&o.path(d, o.last()), SYNCED_MARK, &[0u8; 8]);
            },
            Expect::Repaired,
        ),
        (
            "last record of the newest segment zeroed below its synced mark",
            |o, d| {
                let at = o.last_record[o.last()] + 4;
                let end = o.ends[o.last()];
                patch(&o.path(d, o.last()), at, &vec![0u8; (end - at) as usize]);
            },
            Expect::Corrupt(MIXED_NEWEST),
        ),
        (
            "newest segment's checkpoint destroyed, never synced",
            |o, d| {
                patch(&o.path(d, o.last()), SEGMENT_HEADER_SIZE as u64, &[0xFF; 8]);
                patch(&o.path(d, o.last()), SYNCED_MARK, &[0u8; 8]);
            },
            Expect::Repaired,
        ),
        (
            "newest segment's checkpoint destroyed below its synced mark",
            |o, d| patch(&o.path(d, o.last()), SEGMENT_HEADER_SIZE as u64, &[0xFF; 8]),
            Expect::Corrupt(MIXED_NEWEST),
        ),
        (
            "garbage right after the records of a sealed segment",
            |o, d| patch(&o.path(d, 0), o.ends[0], b"junk"),
            Expect::Corrupt(0),
        ),
        (
            "record in a sealed segment damaged",
            |o, d| patch(&o.path(d, 1), o.last_record[1] + 2, &[0xA5]),
            Expect::Corrupt(1),
        ),
        (
            "sealed segment's checkpoint destroyed",
            |o, d| patch(&o.path(d, 1), SEGMENT_HEADER_SIZE as u64 + 4, &[0xFF; 8]),
            Expect::Corrupt(1),
        ),
        (
            "oldest segment's header zeroed",
            |o, d| patch(&o.path(d, 0), 0, &[0u8; SEGMENT_HEADER_SIZE]),
            Expect::Corrupt(0),
        ),
        (
            "two segment files swapped",
            |o, d| {
                let (a, b) = (o.path(d, 1), o.path(d, 2));
                let tmp = d.join("swap");
                std::fs::rename(&a, &tmp).unwrap();
                std::fs::rename(&b, &a).unwrap();
                std::fs::rename(&tmp, &b).unwrap();
            },
            Expect::Corrupt(1),
        ),
    ]
}

/// The purge case: the damaged purge record is in the newest segment, the segments it
/// released are gone.
fn purge_cases() -> Vec<(&'static str, Damage, Expect)> {
    vec![
        ("purged log untouched", |_, _| {}, Expect::Intact),
        (
            "durable purge damaged, released segments gone",
            |o, d| {
                let (k, off) = o.purge.expect("a purge record");
                patch(&o.path(d, k), off + 2, &[0x77]);
            },
            Expect::Corrupt(usize::MAX),
        ),
    ]
}

/// Runs one case on two copies; returns what is wrong.
fn check(
    orig: &Original,
    name: &str,
    damage: Damage,
    expect: Expect,
    root: &Path,
    i: usize,
) -> Result<(), String> {
    let a = root.join(format!("open{i}"));
    let b = root.join(format!("tools{i}"));
    for d in [&a, &b] {
        orig.write_to(d);
        damage(orig, d);
    }
    // The tools see the copy under `b`; map its paths to `a` to compare.
    let to_a = |p: &Path| a.join(p.strip_prefix(&b).unwrap_or(p));
    let verify = inspect::verify(&b, &|_| {}).map_err(|e| format!("verify failed: {e}"))?;
    let stat = inspect::stat(&b);
    let opened = Store::open(&a, config());
    let verdict = &verify.verdict;
    match (&opened, expect) {
        (Err(Error::Corrupt { path, .. }), Expect::Corrupt(k)) => {
            if k != usize::MAX && *path != orig.path(&a, k) {
                return Err(format!("open names {}, expected file {k}", path.display()));
            }
        }
        (Ok(s), Expect::Intact) if s.recovery_report().cut.is_none() => {}
        (Ok(s), Expect::Repaired)
            if s.recovery_report().cut.is_some()
                || !s.recovery_report().dropped_files.is_empty() => {}
        (got, _) => return Err(format!("{name}: expected {expect:?}, open gave {got:?}")),
    }
    match opened {
        Err(Error::Corrupt {
            path,
            offset,
            reason,
        }) => {
            let Decision::Refuses {
                path: vp,
                offset: vo,
                reason: vr,
            } = &verdict.decision
            else {
                return Err(format!("open refused, verdict {:?}", verdict.decision));
            };
            if (to_a(vp), *vo, vr) != (path.clone(), offset, &reason) {
                return Err(format!(
                    "open: {}:{offset}: {reason}; verdict: {}:{vo}: {vr}",
                    path.display(),
                    vp.display()
                ));
            }
            let hit = verify
                .problems()
                .any(|f| to_a(&f.path) == path && f.offset == offset && f.what == reason);
            if !hit {
                return Err(format!(
                    "verify does not report the refusal: {:?}",
                    verify.findings
                ));
            }
            // Every other problem lies in a file the refusal kept recovery from judging.
            for f in verify.problems() {
                let same = to_a(&f.path) == path && f.offset == offset;
                let unjudged = verdict
                    .files
                    .iter()
                    .any(|v| v.path == f.path && matches!(v.fate, inspect::Fate::Refused));
                if !same && !unjudged {
                    return Err(format!("extra problem {f} in a judged file"));
                }
            }
            let want = Error::Corrupt {
                path: path.clone(),
                offset,
                reason: reason.clone(),
            }
            .to_string();
            match stat {
                Ok(st) => {
                    let got = st
                        .corruption
                        .as_deref()
                        .map(|c| c.replace(b.to_str().unwrap(), a.to_str().unwrap()));
                    if got.as_deref() != Some(&want) {
                        return Err(format!("stat corruption {:?}, open {want}", st.corruption));
                    }
                }
                Err(Error::Corrupt { .. }) => {} // TruncateAtCorruption refuses too.
                Err(e) => return Err(format!("stat failed: {e}")),
            }
        }
        Err(e) => return Err(format!("open failed: {e}")),
        Ok(store) => {
            let report = store.recovery_report().clone();
            if !verify.is_sound() {
                return Err(format!("open succeeds, verify: {:?}", verify.findings));
            }
            let cut = report.cut.clone();
            let dropped = report.dropped_files.clone();
            let vcut = |c: &Option<(PathBuf, u64, String)>| {
                c.as_ref().map(|(p, o, w)| (to_a(p), *o, w.clone()))
            };
            match &verdict.decision {
                Decision::Opens if cut.is_none() && dropped.is_empty() => {}
                Decision::OpensAfterRepair {
                    cut: c, dropped: d, ..
                } if vcut(c) == cut && d.iter().map(|p| to_a(p)).collect::<Vec<_>>() == dropped => {
                }
                other => {
                    return Err(format!(
                        "open cut {cut:?} dropped {dropped:?}; verdict {other:?}"
                    ))
                }
            }
            if let Some((p, o, _)) = &cut {
                if !verify
                    .notes()
                    .any(|f| to_a(&f.path) == *p && f.offset == *o)
                {
                    return Err(format!("no note at the cut: {:?}", verify.findings));
                }
            }
            for p in &dropped {
                if !verify.notes().any(|f| to_a(&f.path) == *p) {
                    return Err(format!("no note for dropped {}", p.display()));
                }
            }
            let st = stat.map_err(|e| format!("stat failed: {e}"))?;
            if st.corruption.is_some() {
                return Err(format!("stat corruption {:?}", st.corruption));
            }
            if vcut(&st.recovery.cut) != cut
                || st
                    .recovery
                    .dropped_files
                    .iter()
                    .map(|p| to_a(p))
                    .collect::<Vec<_>>()
                    != dropped
                || st.recovery.short_segment.as_deref().map(to_a) != report.short_segment
            {
                return Err(format!("stat recovery {:?}, open {report:?}", st.recovery));
            }
            let range = (store.first_index(), store.next_index());
            if (st.first_index, st.next_index) != range {
                return Err(format!(
                    "stat entries {}..{}, open {}..{}",
                    st.first_index, st.next_index, range.0, range.1
                ));
            }
            let runs = &verdict.recovered.as_ref().ok_or("no recovered state")?.runs;
            let covered = runs.first().map_or(range.0, |r| r.first.min(range.0));
            let end = runs.last().map_or(range.0, |r| r.end);
            if runs.windows(2).any(|w| w[0].end != w[1].first)
                || (range.0 < range.1 && (covered > range.0 || end != range.1))
            {
                return Err(format!("verdict runs {runs:?} do not cover {range:?}"));
            }
        }
    }
    // dump walks the same scan: it stops where the verdict says each file stops.
    let mut ends: BTreeMap<PathBuf, (u64, Option<String>, u64)> = BTreeMap::new();
    let mut counts: BTreeMap<PathBuf, u64> = BTreeMap::new();
    inspect::dump::<Error>(
        &b,
        inspect::DumpFilter::default(),
        |r| {
            *counts.entry(r.path.to_path_buf()).or_default() += 1;
            Ok(())
        },
        |e| {
            ends.insert(e.path.to_path_buf(), (e.offset, e.invalid.clone(), 0));
            Ok(())
        },
    )
    .map_err(|e| format!("dump failed: {e}"))?;
    for f in verdict.files.iter().filter(|f| f.bad_header.is_none()) {
        let (off, invalid, _) = ends.get(&f.path).cloned().unwrap_or_default();
        let n = counts.get(&f.path).copied().unwrap_or(0);
        let stop = f.stop.as_ref().map(|(_, w)| w.clone());
        if (off, &invalid, n) != (f.records.end, &stop, f.records.records) {
            return Err(format!(
                "dump of {}: end {off} {invalid:?} {n} records; verdict {} {stop:?} {}",
                f.path.display(),
                f.records.end,
                f.records.records
            ));
        }
    }
    Ok(())
}

fn run(orig: &Original, cases: Vec<(&'static str, Damage, Expect)>) {
    let tmp = scratch();
    let mut failures = Vec::new();
    for (i, (name, damage, expect)) in cases.into_iter().enumerate() {
        if let Err(why) = check(orig, name, damage, expect, tmp.path(), i) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Offset of the synced mark in a segment header (`synced_end`, `synced_check`).
const SYNCED_MARK: u64 = 56;
/// The newest segment of [`build_mixed`]'s log.
const MIXED_NEWEST: usize = 3;

#[test]
fn open_and_tools_agree_on_every_damaged_directory() {
    let orig = capture(build_mixed);
    assert_eq!(orig.last(), MIXED_NEWEST);
    run(&orig, cases());
}

#[test]
fn open_and_tools_agree_on_a_damaged_durable_purge() {
    let orig = capture(build_purged);
    let (k, _) = orig.purge.expect("the purge record is on disk");
    assert_eq!(k, orig.last(), "the purge is in the newest segment");
    run(&orig, purge_cases());
}
