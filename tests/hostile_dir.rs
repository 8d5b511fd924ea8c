//! A log directory with hostile entries under the log's own names: symlinks (to a file
//! outside the directory), FIFOs, directories and wrong-sized regular files named as a segment
//! (`*.seg`), a prepared file (`*.seg.tmp`) or a pooled file (`*.pool`, `*.fresh.pool`).
//!
//! Opening, appending, purging enough to recycle, reopening and the read-only tools must
//! never panic, never hang (each case runs under a timeout), never change a byte outside the
//! directory, and every error names the path it is about.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use raft_mmap_log::inspect::{self, DumpFilter};
use raft_mmap_log::{Config, Error, Store};

const SEGMENT_SIZE: u64 = 4096;

fn config() -> Config {
    Config {
        segment_size: SEGMENT_SIZE,
        prepare_ahead: false,
        segment_pool: 2,
        ..Config::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} ").repeat(20).into_bytes()
}

fn append(store: &mut Store, range: std::ops::Range<u64>) -> raft_mmap_log::Result<()> {
    let batch: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store.append_batch(batch.iter().map(|(i, p)| (*i, &p[..])))
}

/// What is planted.
#[derive(Debug, Clone, Copy)]
enum Plant {
    /// A symlink to a file outside the directory, one segment long (so a size check passes).
    Symlink,
    /// A FIFO (opening it for reading would wait for a writer).
    Fifo,
    /// An empty directory.
    Dir,
    /// A regular file of the wrong size, full of non-zero bytes.
    WrongSize,
}

/// The victim outside the log directory: a segment's size of a known pattern.
fn victim_bytes() -> Vec<u8> {
    (0..SEGMENT_SIZE).map(|i| (i % 251) as u8 | 1).collect()
}

fn plant(what: Plant, at: &Path, victim: &Path) {
    match what {
        Plant::Symlink => std::os::unix::fs::symlink(victim, at).unwrap(),
        Plant::Fifo => {
            let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path for the call.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        }
        Plant::Dir => std::fs::create_dir(at).unwrap(),
        Plant::WrongSize => std::fs::write(at, vec![0xCD; 1000]).unwrap(),
    }
}

/// An error, if any, must name the planted entry.
fn check_names(r: &raft_mmap_log::Result<impl Sized>, name: &str, what: &str) {
    if let Err(e) = r {
        assert!(
            e.to_string().contains(name),
            "{what}: the error does not name {name}: {e}"
        );
    }
}

/// Runs `f` on another thread; fails if it takes longer than a minute (a hang).
fn within_a_minute(what: String, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung"),
    }
}

/// One case: a log with a few segments, `what` planted under `name`, then open, append,
/// purge (enough to recycle pooled files), reopen and the tools.
fn case(name: &'static str, what: Plant) {
    let label = format!("{what:?} as {name}");
    within_a_minute(label.clone(), move || run_case(name, what, &label));
}

fn run_case(name: &str, what: Plant, label: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, victim_bytes()).unwrap();

    let mut store = Store::open(&dir, config()).unwrap();
    append(&mut store, 0..30).unwrap();
    store.sync().unwrap();
    drop(store);
    let planted: PathBuf = dir.join(name);
    plant(what, &planted, &victim);

    let opened = Store::open(&dir, config());
    check_names(&opened, name, label);
    if let Ok(mut store) = opened {
        // Purges fill the pool; later segments recycle what it holds.
        let r = (|| {
            append(&mut store, 30..120)?;
            store.sync()?;
            store.purge_to(110)?;
            store.sync()?;
            append(&mut store, 120..260)?;
            store.sync()?;
            store.purge_to(250)?;
            store.sync()?;
            append(&mut store, 260..300)?;
            store.sync()
        })();
        check_names(&r, name, label);
        drop(store);
        let reopened = Store::open(&dir, config());
        check_names(&reopened, name, label);
        if r.is_ok() {
            let store = reopened.unwrap();
            let view = store.reader().view();
            for i in 250..300 {
                assert_eq!(view.get(i), Some(&payload(i)[..]), "{label}: entry {i}");
            }
        }
    }
    check_names(&inspect::stat(&dir), name, label);
    check_names(&inspect::verify(&dir, &|_| {}), name, label);
    let dumped = inspect::dump::<Error>(&dir, DumpFilter::default(), |_| Ok(()), |_| Ok(()));
    check_names(&dumped, name, label);

    assert!(
        std::fs::read(&victim).unwrap() == victim_bytes(),
        "{label}: a file outside the log directory was changed"
    );
    // A planted symlink, FIFO or directory is never replaced by a file of the log, nor a
    // directory's content touched; if it is still there, it is what was planted.
    if let Ok(m) = std::fs::symlink_metadata(&planted) {
        let t = m.file_type();
        match what {
            Plant::Symlink => assert!(t.is_symlink() || t.is_file(), "{label}: {t:?}"),
            Plant::Fifo => assert!(t.is_fifo() || t.is_file(), "{label}: {t:?}"),
            Plant::Dir => assert!(t.is_dir() || t.is_file(), "{label}: {t:?}"),
            Plant::WrongSize => {}
        }
        if t.is_dir() {
            assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0, "{label}");
        }
    }
}

const SEG: &str = "00000000000000001000.seg";
const TMP: &str = "00000000000000000007.seg.tmp";
const POOL: &str = "00000000000000000007.pool";
const FRESH: &str = "00000000000000000007.fresh.pool";

#[test]
fn symlinks_are_never_followed() {
    for name in [POOL, FRESH, TMP, SEG] {
        case(name, Plant::Symlink);
    }
}

#[test]
fn fifos_never_block() {
    for name in [POOL, FRESH, TMP, SEG] {
        case(name, Plant::Fifo);
    }
}

#[test]
fn directories_are_left_alone() {
    for name in [POOL, FRESH, TMP, SEG] {
        case(name, Plant::Dir);
    }
}

#[test]
fn wrong_sized_files_do_no_harm() {
    for name in [POOL, FRESH, TMP, SEG] {
        case(name, Plant::WrongSize);
    }
}

/// A symlink under a segment's name is refused at open, naming it; its target is untouched.
#[test]
fn a_symlinked_segment_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, victim_bytes()).unwrap();
    let mut store = Store::open(&dir, config()).unwrap();
    append(&mut store, 0..30).unwrap();
    store.sync().unwrap();
    drop(store);
    plant(Plant::Symlink, &dir.join(SEG), &victim);
    let err = Store::open(&dir, config()).unwrap_err();
    assert!(err.to_string().contains(SEG), "{err}");
    let err = inspect::stat(&dir).unwrap_err();
    assert!(err.to_string().contains(SEG), "{err}");
    assert!(std::fs::read(&victim).unwrap() == victim_bytes());
}

/// A symlinked pooled file is not reused: the log makes new files, the target keeps its bytes.
#[test]
fn a_symlinked_pool_file_is_not_recycled() {
    for name in [POOL, FRESH] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, victim_bytes()).unwrap();
        std::fs::create_dir(&dir).unwrap();
        plant(Plant::Symlink, &dir.join(name), &victim);
        let mut store = Store::open(&dir, config()).unwrap();
        append(&mut store, 0..100).unwrap();
        store.sync().unwrap();
        drop(store);
        assert!(
            std::fs::read(&victim).unwrap() == victim_bytes(),
            "{name}: the target of a pooled symlink was overwritten"
        );
        assert!(std::fs::symlink_metadata(dir.join(name))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
