//! Tests of one segment file: header round trip, refused files, unmapped pages.

use super::*;

#[test]
fn install_then_open_round_trips_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = PreparedFile::create(dir.path(), 1, 8192, &test_opts()).unwrap();
    let seg = Segment::install(p, dir.path(), 3).unwrap();
    assert_eq!(seg.size(), 8192);
    let salt = seg.seed().salt;
    seg.sync_range(0, 8192).unwrap();
    drop(seg);
    let path = dir.path().join(segment_file_name(3));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    let seg = Segment::open(&path, 3, true, &test_opts(), false).unwrap();
    assert_eq!(seg.seed().salt, salt);
    assert_eq!(seg.sealed_end(), None);
    seg.mark_sealed(128).unwrap();
    drop(seg);
    let seg = Segment::open(&path, 3, true, &test_opts(), false).unwrap();
    assert_eq!(seg.sealed_end(), Some(128));
    assert!(seg.is_sealed_marked());
}

#[test]
fn bytes_read_the_same_after_start_writeback_unmaps_their_pages() {
    let dir = tempfile::tempdir().unwrap();
    let p = PreparedFile::create(dir.path(), 1, 1 << 20, &test_opts()).unwrap();
    let seg = Segment::install(p, dir.path(), 3).unwrap();
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + 3) as u8).collect();
    // SAFETY: a new segment nobody else reads; bytes past its header.
    unsafe { seg.write_at(SEGMENT_HEADER_SIZE, &data).unwrap() };
    // SAFETY: written above, never written again while the slice lives.
    let before = unsafe { seg.bytes(SEGMENT_HEADER_SIZE, data.len()) };
    assert_eq!(before, &data[..]);
    // Unmaps the whole pages of the written range (a partial first and last page stay).
    seg.start_writeback(
        SEGMENT_HEADER_SIZE as u64,
        (SEGMENT_HEADER_SIZE + data.len()) as u64,
    );
    // The slice taken before, and a new one, read the same bytes through new faults.
    assert_eq!(before, &data[..]);
    // SAFETY: as above.
    assert_eq!(
        unsafe { seg.bytes(SEGMENT_HEADER_SIZE, data.len()) },
        &data[..]
    );
    // A write into an unmapped page (the flusher's sealed mark in the header page) lands.
    seg.start_writeback(0, 8192);
    seg.mark_sealed(SEGMENT_HEADER_SIZE as u64 + data.len() as u64)
        .unwrap();
    seg.sync_range(0, 1 << 20).unwrap();
    drop(seg);
    let path = dir.path().join(segment_file_name(3));
    let file = std::fs::read(&path).unwrap();
    assert_eq!(
        &file[SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + data.len()],
        &data[..]
    );
    let seg = Segment::open(&path, 3, false, &test_opts(), false).unwrap();
    assert_eq!(
        seg.sealed_end(),
        Some(SEGMENT_HEADER_SIZE as u64 + data.len() as u64)
    );
}

#[test]
fn open_rejects_wrong_seq_bad_magic_and_short_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = PreparedFile::create(dir.path(), 1, 8192, &test_opts()).unwrap();
    drop(Segment::install(p, dir.path(), 5).unwrap());
    let path = dir.path().join(segment_file_name(5));
    assert!(matches!(
        Segment::open(&path, 6, true, &test_opts(), false),
        Err(Error::Corrupt { .. })
    ));

    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4096).unwrap();
    let err = Segment::open(&path, 5, true, &test_opts(), false).unwrap_err();
    assert!(err.to_string().contains("shortened"), "{err}");

    std::fs::write(&path, [7u8; 100]).unwrap();
    let err = Segment::open(&path, 5, true, &test_opts(), false).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn install_writes_the_header_in_one_write_that_a_kill_cannot_split() {
    use crate::io::sim::{Kind, SimFs};
    for via in [WriteVia::Map, WriteVia::Pwrite] {
        let dir = tempfile::tempdir().unwrap();
        let fs = std::sync::Arc::new(SimFs::new(dir.path()));
        let opts = FileOptions {
            via,
            zero_fill: false,
            fs: fs.clone(),
        };
        let p = PreparedFile::create(dir.path(), 1, 8192, &opts).unwrap();
        let writes = fs.calls(Kind::Write);
        let seg = Segment::install(p, dir.path(), 3).unwrap();
        // A copy into the map is several stores; one `pwrite` of the 64 bytes is not split
        // by a kill (tests/killed_install.rs has the state a split copy left).
        assert_eq!(fs.calls(Kind::Write), writes + 1, "{via:?}");
        let raw = std::fs::read(dir.path().join(segment_file_name(3))).unwrap();
        let header = parse_header(Path::new("x"), &raw).unwrap();
        assert_eq!(header.seq.get(), 3);
        assert_eq!(header.salt.get(), seg.seed().salt);
    }
}
