//! Property tests that throw arbitrary bytes at the decoder and at whole segment files.
//!
//! * `decode_arbitrary_bytes`: `record::decode` on any bytes and salt never panics, and a
//!   record it accepts lies inside the input.
//! * `open_random_segment_file`: random bytes, or a valid header followed by random bytes, as
//!   `00000000000000000001.seg`: `Store::open` returns `Ok` or a clear `Err`, never panics.
//! * `open_mutated_segments`: a valid two-segment log with random mutations (bit flips, random
//!   ranges, bogus length fields, truncation, extension): never a panic, and when it opens,
//!   every entry it returns is byte-for-byte one that was written.
//!
//! A counting global allocator fails the test if any single allocation exceeds 64 MiB (a bogus
//! length field must never turn into a huge allocation). `PROPTEST_CASES` sets the number of
//! cases (CI: 256).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use proptest::prelude::*;
use raft_mmap_log::format::{
    SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_CRC_RANGE, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
};
use raft_mmap_log::record::{decode, Decoded};
use raft_mmap_log::{Config, Store};
use zerocopy::IntoBytes;

mod common;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
const ALLOC_LIMIT: usize = 64 << 20;

// SAFETY: forwards every call to `System` unchanged; only records the largest size asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn check_allocations() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= ALLOC_LIMIT,
        "an allocation of {largest} bytes happened"
    );
}

const SEG: u64 = 4096;
const NAME: &str = "00000000000000000001.seg";

fn config() -> Config {
    common::strict_config(SEG, false)
}

fn scratch() -> tempfile::TempDir {
    common::scratch("rml-fuzz")
}

fn header(salt: u32, seq: u64, size: u64) -> Vec<u8> {
    let mut h = SegmentHeader {
        magic: SEGMENT_MAGIC,
        version: FORMAT_VERSION.into(),
        salt: salt.into(),
        seq: seq.into(),
        segment_size: size.into(),
        flags: 0.into(),
        header_crc: 0.into(),
        sealed_magic: 0.into(),
        sealed_end: 0.into(),
        synced_end: 0.into(),
        synced_check: 0.into(),
    };
    h.header_crc = crc32c::crc32c(&h.as_bytes()[SEGMENT_HEADER_CRC_RANGE]).into();
    h.as_bytes().to_vec()
}

/// Opens a directory holding `files`; returns the entries if it opens. Panics propagate.
fn open_files(files: &[(String, Vec<u8>)]) -> Option<BTreeMap<u64, Vec<u8>>> {
    let tmp = scratch();
    let dir = tmp.path().join("log");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let out = match Store::open(&dir, config()) {
        Ok(store) => {
            let snap = store.reader().view();
            let mut got = BTreeMap::new();
            let mut expect = snap.first_index();
            for e in snap.range(..) {
                assert_eq!(e.index, expect, "gap in an opened log");
                got.insert(e.index, e.payload.to_vec());
                expect += 1;
            }
            assert_eq!(expect, snap.next_index());
            Some(got)
        }
        Err(e) => {
            // A clear error: it formats, and names something.
            assert!(!e.to_string().is_empty());
            None
        }
    };
    check_allocations();
    out
}

fn payload(i: u64) -> Vec<u8> {
    (0..(i * 13 % 200) as usize)
        .map(|j| (i as usize ^ j) as u8)
        .collect()
}

/// Segment files (name, bytes) and every payload ever written, by index.
type ValidLog = (Vec<(String, Vec<u8>)>, BTreeMap<u64, Vec<u8>>);

/// A valid log of two 4 KiB segments (closed cleanly) and its entries.
fn valid() -> &'static ValidLog {
    static V: OnceLock<ValidLog> = OnceLock::new();
    V.get_or_init(|| {
        let tmp = scratch();
        let dir = tmp.path().join("log");
        let mut s = Store::open(&dir, config()).unwrap();
        let mut entries = BTreeMap::new();
        let mut i = 1;
        while s.reader().view().segment_count() < 2 || i < 30 {
            s.append(i, &payload(i)).unwrap();
            entries.insert(i, payload(i));
            i += 1;
        }
        s.put_meta(3, b"vote").unwrap();
        // Entries truncated here come back when damage in the newest segment rolls the log
        // back to before the truncate: `entries` keeps every payload ever written.
        s.truncate_from(i - 2).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                name.ends_with(".seg")
                    .then(|| (name, std::fs::read(e.path()).unwrap()))
            })
            .collect();
        files.sort();
        (files, entries)
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        file: usize,
        at: usize,
        bit: u8,
    },
    Overwrite {
        file: usize,
        at: usize,
        bytes: Vec<u8>,
    },
    /// Writes a large little-endian u32 where a record's `len` field could be.
    BogusLength {
        file: usize,
        at: usize,
        value: u32,
    },
    Truncate {
        file: usize,
        len: usize,
    },
    Extend {
        file: usize,
        extra: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let f = 0usize..2;
    prop_oneof![
        (f.clone(), 0usize..4096, 0u8..8).prop_map(|(file, at, bit)| Mutation::Flip {
            file,
            at,
            bit
        }),
        (
            f.clone(),
            0usize..4096,
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(file, at, bytes)| Mutation::Overwrite { file, at, bytes }),
        (
            f.clone(),
            0usize..512,
            prop_oneof![
                Just(u32::MAX),
                Just(u32::MAX / 2),
                Just(4096u32),
                any::<u32>()
            ]
        )
            .prop_map(|(file, at, value)| Mutation::BogusLength {
                file,
                at: 64 + at * 8 + 8,
                value
            }),
        (f.clone(), 0usize..4096).prop_map(|(file, len)| Mutation::Truncate { file, len }),
        (f, proptest::collection::vec(any::<u8>(), 1..100))
            .prop_map(|(file, extra)| Mutation::Extend { file, extra }),
    ]
}

fn apply(files: &mut [(String, Vec<u8>)], m: &Mutation) {
    match m {
        Mutation::Flip { file, at, bit } => {
            let b = &mut files[*file].1;
            if *at < b.len() {
                b[*at] ^= 1 << bit;
            }
        }
        Mutation::Overwrite { file, at, bytes } => {
            let b = &mut files[*file].1;
            for (i, x) in bytes.iter().enumerate() {
                if let Some(d) = b.get_mut(at + i) {
                    *d = *x;
                }
            }
        }
        Mutation::BogusLength { file, at, value } => {
            let b = &mut files[*file].1;
            if at + 4 <= b.len() {
                b[*at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        Mutation::Truncate { file, len } => files[*file].1.truncate(*len),
        Mutation::Extend { file, extra } => files[*file].1.extend_from_slice(extra),
    }
}

proptest! {
    // PROPTEST_CASES is honoured by the default config; no regression files in the tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), salt: u32) {
        match decode(salt, &bytes) {
            Decoded::Record(r) => {
                prop_assert!(r.size >= 24 && r.size <= bytes.len());
                prop_assert!(r.body.len() + 24 <= bytes.len());
            }
            Decoded::End | Decoded::Invalid(_) => {}
        }
        check_allocations();
    }

    #[test]
    fn decode_bogus_lengths(len: u32, kind in 0u8..8, salt: u32, tail in 0usize..100) {
        // A header whose length field points anywhere, CRC left as garbage.
        let mut bytes = vec![0u8; 24 + tail];
        bytes[4] = kind;
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        bytes[0..4].copy_from_slice(&salt.to_le_bytes());
        let _ = decode(salt, &bytes);
        check_allocations();
    }

    #[test]
    fn open_random_segment_file(
        body in proptest::collection::vec(any::<u8>(), 0..9000),
        with_header: bool,
        salt: u32,
        size_choice in 0usize..5,
    ) {
        let mut bytes = body;
        if with_header {
            // A valid header; the declared size is the file's or the configured one (other
            // values are covered in faults.rs).
            let len = (bytes.len().max(SEGMENT_HEADER_SIZE)) as u64;
            let size = match size_choice {
                0 => SEG,
                _ => len.max(SEG),
            };
            bytes.resize(size as usize, 0);
            bytes[..SEGMENT_HEADER_SIZE].copy_from_slice(&header(salt, 1, size));
        }
        let _ = open_files(&[(NAME.to_string(), bytes)]);
    }

    #[test]
    fn open_mutated_segments(muts in proptest::collection::vec(mutation(), 1..6)) {
        let (files, entries) = valid();
        let mut files = files.clone();
        for m in &muts {
            apply(&mut files, m);
        }
        if let Some(got) = open_files(&files) {
            for (i, p) in &got {
                prop_assert_eq!(Some(p), entries.get(i), "entry {} returned with wrong bytes", i);
            }
        }
    }
}
