//! Corruption tests: damaged segment files must give `Error::Corrupt` naming the file (and an
//! offset at or before the damage), or open with a torn tail cut in the newest segment, and
//! never return a payload that differs from what was written.
//!
//! * `every_bit_flip_is_refused_or_cut`: a small log (four 4 KiB segments, synced, closed
//!   cleanly); for every byte of every segment file, one bit is flipped in a fresh copy and the
//!   copy is opened. `RML_FLIP_STRIDE` (default 1: every byte) samples fewer bytes.
//! * `recovery_table`: one case = one closure that damages the files in one way + the expected
//!   outcome (truncated file, missing segment, foreign files, leftover `*.seg.tmp`, empty
//!   newest file, garbage after the last record, ...).
//!
//! The copies live on `/dev/shm` when it exists (the cases fsync a lot; tmpfs makes that free).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft_mmap_log::format::{parse_segment_file_name, segment_file_name, SEGMENT_HEADER_SIZE};
use raft_mmap_log::inspect;
use raft_mmap_log::{Config, Error, Store};

mod common;

const SEG: u64 = 4096;
const META_KEY: u64 = 9;

fn config() -> Config {
    common::strict_config(SEG, false)
}

fn scratch() -> tempfile::TempDir {
    common::scratch("rml-corrupt")
}

fn payload(i: u64, epoch: u64) -> Vec<u8> {
    let len = ((i * 37 + epoch * 11) % 150) as usize;
    (0..len)
        .map(|j| (i as usize * 131 + j * 7 + epoch as usize) as u8)
        .collect()
}

/// The original log: its files and its content.
struct Original {
    /// Segment file names and bytes, oldest first.
    files: Vec<(String, Vec<u8>)>,
    /// Where the records of each segment end.
    ends: Vec<u64>,
    /// Offset of the last record of each segment.
    last_record: Vec<u64>,
    first: u64,
    next: u64,
    entries: BTreeMap<u64, Vec<u8>>,
    meta: Option<Vec<u8>>,
}

fn build() -> Original {
    let tmp = scratch();
    let dir = tmp.path().join("log");
    let mut store = Store::open(&dir, config()).unwrap();
    let mut entries = BTreeMap::new();
    let mut add = |store: &mut Store, i: u64, epoch: u64| {
        let p = payload(i, epoch);
        store.append(i, &p).unwrap();
        entries.insert(i, p);
    };
    for i in 1..=40 {
        add(&mut store, i, 1);
    }
    store.put_meta(META_KEY, b"term=3;vote=2").unwrap();
    store.truncate_from(35).unwrap();
    for i in 35..=60 {
        add(&mut store, i, 2);
    }
    store.purge_to(4).unwrap();
    store.put_meta(META_KEY, b"term=4;vote=1").unwrap();
    let mut i = 61;
    while store.reader().view().segment_count() < 4 {
        add(&mut store, i, 3);
        i += 1;
    }
    store.sync().unwrap();
    let (first, next) = (store.first_index(), store.next_index());
    let meta = store.meta(META_KEY).map(|m| m.to_vec());
    drop(store);
    entries.retain(|&k, _| k >= first && k < next);
    let stat = inspect::stat(&dir).unwrap();
    assert!(stat.recovery.cut.is_none());
    let ends = stat.segments.iter().map(|s| s.records_end).collect();
    // Offset of the last record of each segment, from the public dump.
    let mut last_by_file: BTreeMap<PathBuf, u64> = BTreeMap::new();
    inspect::dump::<Error>(
        &dir,
        inspect::DumpFilter::default(),
        |r| {
            last_by_file.insert(r.path.to_path_buf(), r.offset);
            Ok(())
        },
        |_| Ok(()),
    )
    .unwrap();
    let last_record = stat
        .segments
        .iter()
        .map(|s| *last_by_file.get(&s.path).expect("empty segment"))
        .collect();
    drop(stat);
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
    assert!(
        files.len() >= 3,
        "want several segments, got {}",
        files.len()
    );
    Original {
        files,
        ends,
        last_record,
        first,
        next,
        entries,
        meta,
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
}

/// What an open of a damaged copy gave.
#[derive(Debug, PartialEq, Eq, Clone, Copy, PartialOrd, Ord)]
enum Outcome {
    /// `Error::Corrupt` naming the damaged file.
    Corrupt,
    /// Opened, a cut reported in the newest segment, entries a correct prefix.
    Cut,
    /// Opened with the whole original log and no cut (the damage hit bytes nobody reads).
    Intact,
}

/// Opens `dir` and checks the result against `orig`; `damaged` is the file that was damaged
/// and `at` the offset of the damage (if one byte). Returns the outcome or what is wrong.
fn judge(orig: &Original, dir: &Path, damaged: usize, at: Option<u64>) -> Result<Outcome, String> {
    let damaged_path = orig.path(dir, damaged);
    let store = match Store::open(dir, config()) {
        Err(Error::Corrupt {
            path,
            offset,
            reason,
        }) => {
            if path != damaged_path {
                return Err(format!(
                    "Corrupt names {} (offset {offset}: {reason}), damage is in {}",
                    path.display(),
                    damaged_path.display()
                ));
            }
            if let Some(at) = at {
                // A damaged header is reported at the field that failed (the header CRC at
                // 32, ...): any offset inside the header names it.
                let header = SEGMENT_HEADER_SIZE as u64;
                // The sealed end (48..56) is not covered by the header CRC: a changed value is
                // found where the records end, and reported there.
                let sealed_end = (48..56).contains(&at) && reason.contains("sealed");
                if offset > at && !(at < header && offset < header) && !sealed_end {
                    return Err(format!(
                        "Corrupt offset {offset} is after the damaged byte {at} ({reason})"
                    ));
                }
            }
            return Ok(Outcome::Corrupt);
        }
        Err(e) => return Err(format!("unexpected error: {e}")),
        Ok(s) => s,
    };
    let snap = store.reader().view();
    if store.first_index() != orig.first {
        return Err(format!(
            "first index {} instead of {}",
            store.first_index(),
            orig.first
        ));
    }
    let next = store.next_index();
    if next > orig.next {
        return Err(format!(
            "next index {next} beyond the original {}",
            orig.next
        ));
    }
    let mut expect = orig.first;
    for e in snap.range(..) {
        if e.index != expect {
            return Err(format!("gap: {} after {}", e.index, expect));
        }
        if orig.entries.get(&e.index).map(|v| &v[..]) != Some(e.payload) {
            return Err(format!("entry {} returned with wrong bytes", e.index));
        }
        expect += 1;
    }
    if expect != next {
        return Err(format!("range ends at {expect}, next index is {next}"));
    }
    let whole = next == orig.next && store.meta(META_KEY) == orig.meta.as_deref();
    let newest = orig.path(dir, orig.files.len() - 1);
    match &store.recovery_report().cut {
        None if whole => Ok(Outcome::Intact),
        None => Err(format!(
            "lost entries or meta without reporting a cut (next {next} of {})",
            orig.next
        )),
        Some((p, off, why)) => {
            if *p != newest {
                return Err(format!(
                    "opened with a cut in {} at {off} ({why}), not in the newest segment",
                    p.display()
                ));
            }
            Ok(Outcome::Cut)
        }
    }
}

#[test]
fn every_bit_flip_is_refused_or_cut() {
    let stride: usize = std::env::var("RML_FLIP_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let orig = build();
    let tmp = scratch();
    let started = std::time::Instant::now();
    let mut counts: BTreeMap<(usize, Outcome), usize> = BTreeMap::new();
    // Offsets whose flip went unnoticed: (file, first offset, last offset) ranges.
    let mut unnoticed: Vec<(usize, u64, u64)> = Vec::new();
    let mut failures = Vec::new();
    let mut cases = 0usize;
    for k in 0..orig.files.len() {
        let len = orig.files[k].1.len();
        for at in (0..len).step_by(stride) {
            cases += 1;
            let dir = tmp.path().join(format!("c{cases}"));
            orig.write_to(&dir);
            let p = orig.path(&dir, k);
            let mut bytes = orig.files[k].1.clone();
            bytes[at] ^= 1 << (at % 8);
            std::fs::write(&p, &bytes).unwrap();
            match judge(&orig, &dir, k, Some(at as u64)) {
                Ok(o) => {
                    *counts.entry((k, o)).or_default() += 1;
                    if o == Outcome::Intact {
                        match unnoticed.last_mut() {
                            Some(r) if r.0 == k && r.2 + stride as u64 == at as u64 => {
                                r.2 = at as u64
                            }
                            _ => unnoticed.push((k, at as u64, at as u64)),
                        }
                    }
                    if o != Outcome::Corrupt && cases % 64 == 0 {
                        // A repaired log reopens cleanly.
                        let stat = inspect::stat(&dir)
                            .unwrap_or_else(|e| panic!("after repair of flip {k}:{at}: {e}"));
                        assert!(stat.corruption.is_none(), "corrupt after repair");
                        assert!(stat.recovery.cut.is_none(), "cut again after repair");
                    }
                }
                Err(why) => failures.push(format!("{}:{at}: {why}", orig.files[k].0)),
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!(
        "bit flips: {cases} cases in {:.1?} over {} files (record ends {:?})",
        started.elapsed(),
        orig.files.len(),
        orig.ends
    );
    for ((k, o), n) in &counts {
        eprintln!("  file {k}: {o:?} x{n}");
    }
    let shown: Vec<String> = unnoticed
        .iter()
        .map(|(k, a, b)| format!("{k}:{a}..={b}"))
        .collect();
    eprintln!("  flips with no effect (file:offsets): {}", shown.join(" "));
    assert!(
        failures.is_empty(),
        "{} of {cases} flips were mishandled, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // Flips with no effect are harmless by construction (`judge` compared every returned
    // payload with the original): they hit bytes the format does not check, listed in
    // docs/reliability.md (header 40..48 and 56..64, record padding, a sealed segment's
    // unused tail).
}

// ---------------------------------------------------------------------------------------------
// Table-driven recovery cases.

enum Expect {
    /// `Error::Corrupt` naming segment `k` (index in the original list).
    Corrupt(usize),
    /// Opens with the whole log, no cut.
    Intact,
    /// Opens with a cut reported in the newest segment and a correct prefix.
    Cut,
}

type Damage = fn(&Original, &Path);
type After = fn(&Original, &Path);

fn last(o: &Original) -> usize {
    o.files.len() - 1
}

use common::{patch, set_len};

fn no_after(_: &Original, _: &Path) {}

/// Offset of the synced mark in a segment header (`synced_end`, `synced_check`).
const SYNCED_MARK: u64 = 56;
/// The newest of the original log's segments.
const NEWEST: usize = 3;

#[test]
fn recovery_table() {
    let orig = build();
    assert_eq!(last(&orig), NEWEST);
    let cases: Vec<(&str, Damage, Expect, After)> = vec![
        ("untouched", |_, _| {}, Expect::Intact, no_after),
        (
            // What a power cut leaves when a segment's size never became durable: the valid
            // prefix is kept (this log's newest records all lie in the first half).
            "newest segment shortened to half",
            |o, d| set_len(&o.path(d, last(o)), SEG / 2),
            Expect::Intact,
            no_after,
        ),
        (
            "middle segment shortened by one byte",
            |o, d| set_len(&o.path(d, 1), SEG - 1),
            Expect::Corrupt(1),
            no_after,
        ),
        (
            "oldest segment shortened to 10 bytes",
            |o, d| set_len(&o.path(d, 0), 10),
            Expect::Corrupt(0),
            no_after,
        ),
        (
            "missing middle segment",
            |o, d| std::fs::remove_file(o.path(d, 1)).unwrap(),
            Expect::Corrupt(2),
            no_after,
        ),
        (
            "foreign files in the directory are ignored and kept",
            |_, d| {
                std::fs::write(d.join("notes.txt"), b"hello").unwrap();
                std::fs::write(d.join("7.seg"), b"not ours").unwrap();
                std::fs::write(d.join("00000000000000000001.seg.bak"), [1u8; 100]).unwrap();
                std::fs::create_dir(d.join("subdir")).unwrap();
            },
            Expect::Intact,
            |_, d| {
                for f in [
                    "notes.txt",
                    "7.seg",
                    "00000000000000000001.seg.bak",
                    "subdir",
                ] {
                    assert!(d.join(f).exists(), "{f} was removed");
                }
            },
        ),
        (
            "leftover prepared file is removed",
            |_, d| std::fs::write(d.join("00000000000000000042.seg.tmp"), [0u8; 4096]).unwrap(),
            Expect::Intact,
            |_, d| assert!(!d.join("00000000000000000042.seg.tmp").exists()),
        ),
        (
            "garbage prepared file is removed",
            |_, d| std::fs::write(d.join("00000000000000000043.seg.tmp"), [0xEE; 5000]).unwrap(),
            Expect::Intact,
            |_, d| assert!(!d.join("00000000000000000043.seg.tmp").exists()),
        ),
        (
            "zero-length file after the newest segment is dropped",
            |o, d| {
                let seq = parse_segment_file_name(&o.files[last(o)].0).unwrap();
                std::fs::write(d.join(segment_file_name(seq + 1)), []).unwrap();
            },
            Expect::Intact,
            |o, d| {
                let seq = parse_segment_file_name(&o.files[last(o)].0).unwrap();
                let p = d.join(segment_file_name(seq + 1));
                // Either removed, or reused as the next segment with a real header.
                assert!(!p.exists() || std::fs::metadata(&p).unwrap().len() == SEG);
            },
        ),
        (
            "all-zero file after the newest segment is dropped",
            |o, d| {
                let seq = parse_segment_file_name(&o.files[last(o)].0).unwrap();
                std::fs::write(d.join(segment_file_name(seq + 1)), vec![0u8; SEG as usize])
                    .unwrap();
            },
            Expect::Intact,
            no_after,
        ),
        (
            "zero-length middle segment",
            |o, d| set_len(&o.path(d, 1), 0),
            Expect::Corrupt(1),
            no_after,
        ),
        (
            "garbage after the last record of the newest segment",
            |o, d| {
                let end = o.ends[last(o)];
                patch(&o.path(d, last(o)), end + 16, &[0x5A; 40]);
            },
            Expect::Cut,
            no_after,
        ),
        (
            "garbage right at the end of the newest segment's records",
            |o, d| {
                let end = o.ends[last(o)];
                patch(&o.path(d, last(o)), end, &[0x01; 24]);
            },
            Expect::Cut,
            no_after,
        ),
        (
            "garbage after the records of a sealed segment",
            |o, d| patch(&o.path(d, 1), o.ends[1] + 8, b"junk"),
            Expect::Corrupt(1),
            no_after,
        ),
        (
            // A torn write is only possible past the synced mark: the log was closed after a
            // sync, so the mark is cleared to model a crash before that sync.
            "last record of the newest segment torn (tail zeroed), never synced",
            |o, d| {
                // Header fields after the CRC and the body are zero, as a torn write leaves them.
                let at = o.last_record[last(o)] + 4;
                let end = o.ends[last(o)];
                patch(&o.path(d, last(o)), at, &vec![0u8; (end - at) as usize]);
                patch(&o.path(d, last(o)), SYNCED_MARK, &[0u8; 8]);
            },
            Expect::Cut,
            no_after,
        ),
        (
            "last record of the newest segment zeroed below its synced mark",
            |o, d| {
                let at = o.last_record[last(o)] + 4;
                let end = o.ends[last(o)];
                patch(&o.path(d, last(o)), at, &vec![0u8; (end - at) as usize]);
            },
            Expect::Corrupt(NEWEST),
            no_after,
        ),
        (
            "newest segment's checkpoint destroyed, never synced",
            |o, d| {
                patch(&o.path(d, last(o)), SEGMENT_HEADER_SIZE as u64, &[0xFF; 8]);
                patch(&o.path(d, last(o)), SYNCED_MARK, &[0u8; 8]);
            },
            Expect::Cut,
            no_after,
        ),
        (
            "newest segment's checkpoint destroyed below its synced mark",
            |o, d| patch(&o.path(d, last(o)), SEGMENT_HEADER_SIZE as u64, &[0xFF; 8]),
            Expect::Corrupt(NEWEST),
            no_after,
        ),
        (
            "sealed segment's checkpoint destroyed",
            |o, d| patch(&o.path(d, 1), SEGMENT_HEADER_SIZE as u64 + 4, &[0xFF; 8]),
            Expect::Corrupt(1),
            no_after,
        ),
        (
            "oldest segment's header zeroed",
            |o, d| patch(&o.path(d, 0), 0, &[0u8; SEGMENT_HEADER_SIZE]),
            Expect::Corrupt(0),
            no_after,
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
            no_after,
        ),
        (
            "a segment of another log copied in as the next segment",
            |o, d| {
                // Same seq as our newest + 1, built by another store with other content.
                let other = scratch();
                let od = other.path().join("other");
                let mut s = Store::open(&od, config()).unwrap();
                let seq = parse_segment_file_name(&o.files[last(o)].0).unwrap();
                let mut i = 1000u64;
                while s.position().0.file_name().unwrap().to_str().unwrap()
                    != segment_file_name(seq + 1)
                {
                    s.append(i, &[7u8; 200]).unwrap();
                    i += 1;
                }
                s.sync().unwrap();
                drop(s);
                std::fs::copy(
                    od.join(segment_file_name(seq + 1)),
                    d.join(segment_file_name(seq + 1)),
                )
                .unwrap();
            },
            // Our newest segment is not sealed (closed cleanly, never rolled over): a
            // following segment whose checkpoint does not match it reads as a torn write.
            Expect::Cut,
            no_after,
        ),
    ];
    let tmp = scratch();
    let mut failures = Vec::new();
    for (i, (name, damage, expect, after)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("t{i}"));
        orig.write_to(&dir);
        damage(&orig, &dir);
        let damaged = match expect {
            Expect::Corrupt(k) => *k,
            _ => last(&orig),
        };
        let got = judge(&orig, &dir, damaged, None);
        let ok = matches!(
            (expect, &got),
            (Expect::Corrupt(_), Ok(Outcome::Corrupt))
                | (Expect::Intact, Ok(Outcome::Intact))
                | (Expect::Cut, Ok(Outcome::Cut))
        );
        if !ok {
            failures.push(format!("{name}: got {got:?}"));
            continue;
        }
        after(&orig, &dir);
        if !matches!(expect, Expect::Corrupt(_)) {
            // Once repaired, the log reopens with no cut.
            let stat = inspect::stat(&dir).unwrap();
            if stat.corruption.is_some() || stat.recovery.cut.is_some() {
                failures.push(format!("{name}: cut again after repair"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The oldest segment file disappears (deleted by hand, lost by the filesystem) while it holds
/// live entries. The next segment's checkpoint says the log starts before its own first entry,
/// so the loss is detectable; the log opens instead, with a first index whose entries are
/// missing (`get(first)` is `None`).
#[test]
fn oldest_segment_missing_is_detected() {
    let orig = build();
    let tmp = scratch();
    let dir = tmp.path().join("log");
    orig.write_to(&dir);
    std::fs::remove_file(orig.path(&dir, 0)).unwrap();
    let got = judge(&orig, &dir, 1, None);
    assert_eq!(got, Ok(Outcome::Corrupt));
}
