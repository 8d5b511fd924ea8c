//! `docs/format.md` against `src/format.rs`: the byte tables of the on-disk structs, the
//! constants, the record kinds and the Raft meta keys.
//!
//! The markdown tables are parsed (a heading naming the table, then a `| ... |` table with a
//! header row) and compared with `offset_of!` / `size_of` of the structs in
//! `raft_mmap_log::format` and with the constants themselves. A field that moves, changes
//! size, is renamed, added or removed, or a doc row that is wrong, fails here.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use raft_mmap_log::format::{
    CheckpointHead, MetaItemHead, RecordHeader, RecordKind, SegmentHeader, FORMAT_VERSION,
    GROUPS_FORMAT_VERSION, LOCK_FILE, MAX_INDEX, MAX_SEGMENT_SIZE, MIN_FORMAT_VERSION,
    MIN_SEGMENT_SIZE, POOL_SUFFIX, PREPARED_SUFFIX, RECORD_ALIGN, RECORD_HEADER_SIZE, SEALED_MAGIC,
    SEGMENT_FLAG_RECYCLED, SEGMENT_HEADER_CRC_RANGE, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
    SEGMENT_SUFFIX,
};
use raft_mmap_log::raft::{META_COMMITTED, META_PURGED, META_SNAPSHOT, META_USER_DATA, META_VOTE};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/format.md");
    std::fs::read_to_string(path).unwrap()
}

/// A parsed markdown table: the heading above it, and its rows keyed by column name (lower
/// case). Cells are trimmed and lose their backticks.
#[derive(Debug)]
struct Table {
    heading: String,
    rows: Vec<BTreeMap<String, String>>,
}

impl Table {
    fn col<'a>(&self, row: &'a BTreeMap<String, String>, name: &str) -> &'a str {
        row.get(name)
            .unwrap_or_else(|| panic!("table under {:?} has no column {name:?}", self.heading))
    }
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner
        .split('|')
        .map(|c| c.trim().replace('`', ""))
        .collect()
}

/// The first table after the (only) heading whose text starts with `heading` (after the `#`s),
/// before the next heading.
fn table(doc: &str, heading: &str) -> Table {
    let lines: Vec<&str> = doc.lines().collect();
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            lines[i].starts_with('#')
                && lines[i].trim_start_matches('#').trim().starts_with(heading)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one heading starting with {heading:?}"
    );
    let at = found[0];
    let mut rest = lines[at + 1..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .skip_while(|l| !l.trim_start().starts_with('|'));
    let header = cells(
        rest.next()
            .unwrap_or_else(|| panic!("no table under {heading:?}")),
    );
    let sep = cells(rest.next().expect("separator row"));
    assert!(
        sep.iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| "-:".contains(ch))),
        "second row of the table under {heading:?} is not a separator: {sep:?}"
    );
    let header: Vec<String> = header.iter().map(|h| h.to_lowercase()).collect();
    let rows = rest
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let c = cells(l);
            assert_eq!(c.len(), header.len(), "row {l:?} under {heading:?}");
            header.iter().cloned().zip(c).collect()
        })
        .collect();
    Table {
        heading: lines[at].to_string(),
        rows,
    }
}

/// `N` in the first "N bytes" of a heading.
fn heading_bytes(heading: &str) -> usize {
    let words: Vec<&str> = heading
        .split(|c: char| c.is_whitespace() || c == '(')
        .collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches([',', ')']) == "bytes")
        .unwrap_or_else(|| panic!("heading {heading:?} does not say how many bytes"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("heading {heading:?}: bad byte count"))
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `(name, offset, size)` of the listed fields of a struct, from the compiler.
macro_rules! layout {
    ($t:ty; $($f:ident),+ $(,)?) => {
        vec![$((stringify!($f), offset_of!($t, $f), field_size::<$t, _>(|s| &s.$f))),+]
    };
}

/// Checks the table under `heading` against a struct of `size` bytes whose fields are
/// `fields`: same names, offsets and sizes, in order. The fields must tile the struct (so the
/// list is complete). Rows after the struct's fields whose size is not a number (`len`) are
/// the variable part that follows it: they must start at `size`.
fn check_struct(doc: &str, heading: &str, size: usize, fields: Vec<(&str, usize, usize)>) {
    let mut at = 0;
    for (name, off, sz) in &fields {
        assert_eq!(*off, at, "{heading}: field {name} leaves a gap or overlaps");
        at += sz;
    }
    assert_eq!(
        at, size,
        "{heading}: the listed fields do not cover the struct"
    );

    let t = table(doc, heading);
    assert_eq!(
        heading_bytes(&t.heading),
        size,
        "{}: size in the heading",
        t.heading
    );
    let mut doc_fields = Vec::new();
    let mut trailer = Vec::new();
    for row in &t.rows {
        let name = t.col(row, "field").to_string();
        let off: usize = t
            .col(row, "offset")
            .parse()
            .unwrap_or_else(|_| panic!("{heading}: row {name}: offset is not a number"));
        match t.col(row, "size").parse::<usize>() {
            Ok(sz) => {
                assert!(
                    trailer.is_empty(),
                    "{heading}: fixed row {name} after the body"
                );
                doc_fields.push((name, off, sz));
            }
            Err(_) => trailer.push((name, off)),
        }
    }
    let code: Vec<(String, usize, usize)> = fields
        .iter()
        .map(|(n, o, s)| (n.to_string(), *o, *s))
        .collect();
    assert_eq!(
        doc_fields, code,
        "{heading}: doc rows (field, offset, size) vs src/format.rs"
    );
    for (name, off) in trailer {
        assert_eq!(
            off, size,
            "{heading}: {name} must start right after the header"
        );
    }
}

#[test]
fn struct_tables_match_the_code() {
    let doc = doc();
    check_struct(
        &doc,
        "SegmentHeader",
        size_of::<SegmentHeader>(),
        layout!(SegmentHeader; magic, version, salt, seq, segment_size, flags, header_crc,
            sealed_magic, sealed_end, synced_end, synced_check),
    );
    assert_eq!(size_of::<SegmentHeader>(), SEGMENT_HEADER_SIZE);
    check_struct(
        &doc,
        "Record: RecordHeader",
        size_of::<RecordHeader>(),
        layout!(RecordHeader; crc, kind, reserved, len, body_crc, arg),
    );
    assert_eq!(size_of::<RecordHeader>(), RECORD_HEADER_SIZE);
    check_struct(
        &doc,
        "CheckpointHead",
        size_of::<CheckpointHead>(),
        layout!(CheckpointHead; first, next, prev_end, meta_count, prev_crc),
    );
    check_struct(
        &doc,
        "MetaItemHead",
        size_of::<MetaItemHead>(),
        layout!(MetaItemHead; key, len),
    );
}

/// An integer as the doc writes it: decimal or `0x` hex, `_` separators allowed.
fn int(s: &str) -> Option<u128> {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[test]
fn constants_table_matches_the_code() {
    let t = table(&doc(), "Constants");
    let numbers: BTreeMap<&str, u128> = [
        ("FORMAT_VERSION", u128::from(FORMAT_VERSION)),
        ("MIN_FORMAT_VERSION", u128::from(MIN_FORMAT_VERSION)),
        ("GROUPS_FORMAT_VERSION", u128::from(GROUPS_FORMAT_VERSION)),
        ("SEGMENT_HEADER_SIZE", SEGMENT_HEADER_SIZE as u128),
        ("RECORD_HEADER_SIZE", RECORD_HEADER_SIZE as u128),
        ("RECORD_ALIGN", RECORD_ALIGN as u128),
        ("SEALED_MAGIC", u128::from(SEALED_MAGIC)),
        ("MIN_SEGMENT_SIZE", u128::from(MIN_SEGMENT_SIZE)),
        ("MAX_SEGMENT_SIZE", u128::from(MAX_SEGMENT_SIZE)),
        ("MAX_INDEX", u128::from(MAX_INDEX)),
        ("SEGMENT_FLAG_RECYCLED", u128::from(SEGMENT_FLAG_RECYCLED)),
    ]
    .into();
    let crc_range = format!(
        "{}..{}",
        SEGMENT_HEADER_CRC_RANGE.start, SEGMENT_HEADER_CRC_RANGE.end
    );
    let texts: BTreeMap<&str, &str> = [
        (
            "SEGMENT_MAGIC",
            std::str::from_utf8(&SEGMENT_MAGIC).unwrap(),
        ),
        ("SEGMENT_HEADER_CRC_RANGE", crc_range.as_str()),
        ("SEGMENT_SUFFIX", SEGMENT_SUFFIX),
        ("PREPARED_SUFFIX", PREPARED_SUFFIX),
        ("POOL_SUFFIX", POOL_SUFFIX),
        ("LOCK_FILE", LOCK_FILE),
    ]
    .into();
    let mut seen = Vec::new();
    for row in &t.rows {
        let name = t.col(row, "constant");
        let value = t.col(row, "value");
        if let Some(want) = numbers.get(name) {
            assert_eq!(
                int(value),
                Some(*want),
                "docs/format.md: {name} = {value:?}"
            );
        } else if let Some(want) = texts.get(name) {
            assert_eq!(value, *want, "docs/format.md: {name}");
        } else {
            panic!("docs/format.md lists an unknown constant {name:?}");
        }
        seen.push(name.to_string());
    }
    seen.sort();
    let mut all: Vec<String> = numbers
        .keys()
        .chain(texts.keys())
        .map(|k| k.to_string())
        .collect();
    all.sort();
    assert_eq!(seen, all, "every constant listed once");
    // The sealed mark's bytes as the meaning column spells them.
    let sealed = t
        .rows
        .iter()
        .find(|r| r["constant"] == "SEALED_MAGIC")
        .unwrap();
    let bytes = String::from_utf8(SEALED_MAGIC.to_le_bytes().to_vec()).unwrap();
    assert!(
        sealed["meaning"].contains(&bytes),
        "{:?} vs {bytes}",
        sealed["meaning"]
    );
}

#[test]
fn record_kinds_table_matches_the_code() {
    let t = table(&doc(), "Record kinds");
    let mut doc_kinds: Vec<(u8, String)> = t
        .rows
        .iter()
        .map(|r| {
            let v = t.col(r, "value");
            (
                v.parse().unwrap_or_else(|_| panic!("kind value {v:?}")),
                t.col(r, "kind").to_string(),
            )
        })
        .collect();
    doc_kinds.sort();
    let code: Vec<(u8, String)> = (0..=u8::MAX)
        .filter_map(|v| RecordKind::from_u8(v).map(|k| (v, format!("{k:?}"))))
        .collect();
    assert_eq!(doc_kinds, code, "docs/format.md record kinds vs RecordKind");
    for (v, _) in &code {
        assert_eq!(RecordKind::from_u8(*v).map(|k| k as u8), Some(*v));
    }
}

#[test]
fn raft_meta_keys_table_matches_the_code() {
    let t = table(&doc(), "Entry bodies of the Raft layer");
    let doc_keys: Vec<(u64, String)> = t
        .rows
        .iter()
        .map(|r| {
            (
                int(t.col(r, "key")).unwrap() as u64,
                t.col(r, "constant").to_string(),
            )
        })
        .collect();
    let code: Vec<(u64, String)> = [
        (META_VOTE, "META_VOTE"),
        (META_COMMITTED, "META_COMMITTED"),
        (META_PURGED, "META_PURGED"),
        (META_USER_DATA, "META_USER_DATA"),
        (META_SNAPSHOT, "META_SNAPSHOT"),
    ]
    .iter()
    .map(|(k, n)| (*k, n.to_string()))
    .collect();
    assert_eq!(
        doc_keys, code,
        "docs/format.md Raft meta keys vs raft::META_*"
    );
}

/// The parser itself: a wrong row is caught (so a passing test means the rows were read).
#[test]
fn a_wrong_row_is_caught() {
    let good = doc();
    let bad = good.replacen(
        "| 16     | 8    | `seq`          |",
        "| 16     | 4    | `seq`          |",
        1,
    );
    assert_ne!(
        good, bad,
        "the SegmentHeader `seq` row is not where this test expects it"
    );
    let r = std::panic::catch_unwind(|| {
        check_struct(
            &bad,
            "SegmentHeader",
            size_of::<SegmentHeader>(),
            layout!(SegmentHeader; magic, version, salt, seq, segment_size, flags,
                header_crc, sealed_magic, sealed_end, synced_end, synced_check),
        )
    });
    assert!(r.is_err(), "a wrong size in a row went unnoticed");
}
