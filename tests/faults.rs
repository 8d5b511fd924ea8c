//! Resource and environment faults: each must give a clear error and leave the log usable, or
//! untouched so that it opens with all its data once the fault is removed.
//!
//! * `disk_full_*`: a small tmpfs (`mount -t tmpfs -o size=...`, needs root and mount rights;
//!   skipped with a printed reason otherwise), filled until allocating the next segment fails
//!   with ENOSPC; then the tmpfs is grown (`remount,size=...`) and the same store continues.
//! * `file_size_limit_*`: the same fault without root: a child process with `RLIMIT_FSIZE`
//!   (SIGXFSZ ignored, so the kernel answers EFBIG).
//! * `read_only_directory`: a read-only remount of a tmpfs (root), or `chmod 0500` when not
//!   root (root bypasses permission bits, so chmod proves nothing there).
//! * `shortened_segment_*`, `missing_segment_*`, `foreign_file_*`: files changed behind the
//!   log's back while it is closed: `Error::Corrupt` at open (no SIGBUS), nothing modified,
//!   and the log opens with all its data once the file is restored.
//! * `reopen_with_larger_segment_size`: reopening a log with a larger `segment_size` than its
//!   files have (run in a child process, since the failure is a crash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use raft_mmap_log::{Config, Error, Store};

mod common;

use common::seg_files;

const SEG: u64 = 16 * 1024;

fn config() -> Config {
    common::strict_config(SEG, true)
}

fn payload(i: u64) -> Vec<u8> {
    (0..900).map(|j| (i as usize * 7 + j) as u8).collect()
}

/// `Store::open`. Other tests in this binary spawn child processes, which hold a copy of every
/// open descriptor (our LOCK file's included) between `fork` and `exec`; the directory lock is
/// a POSIX record lock, which they do not inherit, so no retry on `Locked` is needed.
fn open(dir: &Path, cfg: Config) -> raft_mmap_log::Result<Store> {
    Store::open(dir, cfg)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = parent.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path,
            _parent: parent,
        })
    }

    fn remount(&self, opts: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg.tmp")
        })
        .count()
}

fn assert_entries(store: &Store, first: u64, next: u64) {
    let snap = store.reader().view();
    assert_eq!((snap.first_index(), snap.next_index()), (first, next));
    for i in first..next {
        assert_eq!(snap.get(i), Some(&payload(i)[..]), "entry {i}");
    }
}

/// An I/O error about a file in `dir`. (Its errno is checked by `space_errors_keep_errno`:
/// today it is lost, see docs/reliability.md.)
fn is_space_error(e: &Error, dir: &Path) -> bool {
    matches!(e, Error::Io { path, .. } if path.starts_with(dir))
}

fn has_errno(e: &Error, codes: &[i32]) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error().is_some_and(|c| codes.contains(&c)))
}

/// Appends (syncing after each entry) until an append or sync fails. Returns the next index
/// and the error.
fn fill(store: &mut Store, mut i: u64) -> (u64, Error) {
    loop {
        if let Err(e) = store.append(i, &payload(i)) {
            return (i, e);
        }
        i += 1;
        if let Err(e) = store.sync() {
            panic!("sync failed ({e}): space faults must surface when a segment is allocated");
        }
    }
}

#[test]
fn disk_full_when_allocating_a_segment() {
    let fs = match Tmpfs::mount("128k") {
        Ok(m) => m,
        Err(why) => return skip("disk_full_when_allocating_a_segment", &why),
    };
    let dir = fs.path.join("log");
    let mut store = open(&dir, config()).unwrap();
    let (next, err) = fill(&mut store, 1);
    assert!(is_space_error(&err, &dir), "expected ENOSPC, got {err}");
    assert!(next > 20, "filled only {next} entries");
    // The failed append wrote nothing; the log reads and accepts small writes that fit.
    assert_entries(&store, 1, next);
    // Retrying while the disk is still full fails the same way, and must not leak files.
    for _ in 0..5 {
        let e = store.append(next, &payload(next)).unwrap_err();
        assert!(is_space_error(&e, &dir), "{e}");
    }
    let leftovers = tmp_files(&dir);
    // Grow the filesystem: the same store continues.
    fs.remount("size=4m");
    for i in next..next + 60 {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    let store = open(&dir, config()).unwrap();
    assert_entries(&store, 1, next + 60);
    eprintln!(
        "disk full: first failure after {} entries: {err}; {leftovers} *.seg.tmp file(s) left \
         in the directory after 6 failed attempts",
        next - 1
    );
    assert!(
        leftovers <= 1,
        "{leftovers} partially allocated *.seg.tmp files left behind by failed attempts"
    );
}

/// fs2 0.4's `allocate` calls `posix_fallocate`, which returns its error code instead of
/// setting `errno`, and then reads `errno`: the error says "Success (os error 0)" and the
/// caller cannot tell ENOSPC from EOPNOTSUPP.
#[test]
fn space_errors_keep_errno() {
    let fs = match Tmpfs::mount("128k") {
        Ok(m) => m,
        Err(why) => return skip("space_errors_keep_errno", &why),
    };
    let dir = fs.path.join("log");
    let mut store = open(&dir, config()).unwrap();
    let (_, err) = fill(&mut store, 1);
    assert!(
        has_errno(&err, &[libc::ENOSPC]),
        "expected ENOSPC, got: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// RLIMIT_FSIZE in a child process: works without root.

const CHILD_ENV: &str = "RML_FAULTS_CHILD";

fn run_child(test: &str, mode: &str, dir: &Path) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env("RML_FAULTS_DIR", dir)
        .output()
        .unwrap()
}

/// Child side of `file_size_limit_when_allocating_a_segment`.
fn fsize_child(dir: &Path) {
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ makes the kernel return
    // EFBIG instead of killing us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 3 * SEG,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    // With a file size limit, every segment fits but a larger one does not: the limit hits
    // when a segment is allocated larger than allowed.
    let cfg = Config {
        segment_size: 4 * SEG,
        ..config()
    };
    let err = match open(dir, cfg.clone()) {
        Ok(_) => panic!("open with segments larger than RLIMIT_FSIZE succeeded"),
        Err(e) => e,
    };
    assert!(is_space_error(&err, dir), "expected EFBIG, got {err}");
    println!("RML open refused: {err}");
    // The directory is still usable with segments that fit.
    let mut store = open(dir, config()).unwrap();
    let (next, err) = (1..40).fold((1, None), |(n, e), i| {
        if e.is_some() {
            return (n, e);
        }
        match store.append(i, &payload(i)) {
            Ok(()) => (i + 1, None),
            Err(e) => (n, Some(e)),
        }
    });
    assert!(err.is_none(), "{err:?}");
    store.sync().unwrap();
    println!("RML ok {next}");
}

#[test]
fn file_size_limit_when_allocating_a_segment() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        if mode == "fsize" {
            fsize_child(Path::new(&std::env::var("RML_FAULTS_DIR").unwrap()));
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let out = run_child("file_size_limit_when_allocating_a_segment", "fsize", &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let next: u64 = stdout
        .lines()
        .find_map(|l| {
            l.find("RML ok ")
                .map(|p| l[p + 7..].trim().parse().unwrap())
        })
        .expect("child did not finish");
    let store = open(&dir, config()).unwrap();
    assert_entries(&store, 1, next);
}

// ---------------------------------------------------------------------------------------------
// Read-only directory.

fn make_log(dir: &Path, n: u64) {
    let mut store = open(dir, config()).unwrap();
    for i in 1..=n {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
}

fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A read-only tool on a directory without `LOCK`: on a read-only file system (`EROFS`) it
/// reads without a lock (no `Store` can write there); on a writable one it creates `LOCK`.
#[test]
fn tool_reads_read_only_fs_without_lock_file() {
    let n = 20;
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => return skip("tool_reads_read_only_fs_without_lock_file", &why),
    };
    let dir = fs.path.join("log");
    make_log(&dir, n);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    fs.remount("ro");
    let st = raft_mmap_log::inspect::stat(&dir).unwrap();
    assert_eq!((st.first_index, st.next_index), (1, n + 1));
    assert!(!dir.join("LOCK").exists());
    fs.remount("rw");
    raft_mmap_log::inspect::stat(&dir).unwrap();
    assert!(dir.join("LOCK").exists(), "the tool did not create LOCK");
}

#[test]
fn read_only_directory() {
    let n = 50;
    if let Ok(fs) = Tmpfs::mount("4m") {
        let dir = fs.path.join("log");
        make_log(&dir, n);
        let before = snapshot_files(&dir);
        fs.remount("ro");
        let err = open(&dir, config()).unwrap_err();
        match &err {
            Error::Io { source, path, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::EROFS), "{err}");
                assert!(path.starts_with(&dir), "{err}");
            }
            other => panic!("expected an I/O error, got {other}"),
        }
        // Read-only verification still works on a read-only filesystem.
        let stat = raft_mmap_log::inspect::stat(&dir).unwrap();
        assert!(stat.corruption.is_none() && stat.recovery.cut.is_none());
        assert_eq!(stat.next_index, n + 1);
        fs.remount("rw");
        assert_eq!(snapshot_files(&dir), before, "a refused open changed files");
        let store = open(&dir, config()).unwrap();
        assert_entries(&store, 1, n + 1);
        eprintln!("read-only (tmpfs remount): {err}");
    } else if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        make_log(&dir, n);
        // The LOCK file exists already; a read-only directory still refuses new files, and
        // the lock file itself is made read-only too.
        std::fs::set_permissions(dir.join("LOCK"), std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        let res = open(&dir, config());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.join("LOCK"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = res.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let store = open(&dir, config()).unwrap();
        assert_entries(&store, 1, n + 1);
    } else {
        skip(
            "read_only_directory",
            "running as root (permission bits are bypassed) and tmpfs cannot be mounted",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files changed behind the log's back (while it is closed).

/// Builds a log of several segments, applies `fault`, expects `Corrupt` naming `blame(segs)`,
/// checks nothing changed, undoes the fault and expects the whole log.
fn behind_our_back(
    fault: impl FnOnce(&Path, &[PathBuf]),
    undo: impl FnOnce(&Path, &[PathBuf], &BTreeMap<String, Vec<u8>>),
    blame: impl FnOnce(&[PathBuf]) -> PathBuf,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let n = 60;
    make_log(&dir, n);
    let segs = seg_files(&dir);
    assert!(segs.len() >= 3);
    let original = snapshot_files(&dir);
    fault(&dir, &segs);
    let damaged = snapshot_files(&dir);
    match open(&dir, config()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, blame(&segs)),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("opened a damaged log"),
    }
    assert_eq!(
        snapshot_files(&dir),
        damaged,
        "a refused open changed files"
    );
    undo(&dir, &segs, &original);
    let store = open(&dir, config()).unwrap();
    assert_entries(&store, 1, n + 1);
}

fn restore(dir: &Path, original: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in original {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn shortened_segment_is_corrupt_at_open() {
    for which in [0usize, 1, 2] {
        behind_our_back(
            |_, segs| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&segs[which.min(segs.len() - 1)])
                    .unwrap();
                f.set_len(SEG / 2 + 100).unwrap();
            },
            |d, _, o| restore(d, o),
            |segs| segs[which.min(segs.len() - 1)].clone(),
        );
    }
}

#[test]
fn missing_segment_is_corrupt_at_open() {
    behind_our_back(
        |_, segs| std::fs::remove_file(&segs[1]).unwrap(),
        |d, _, o| restore(d, o),
        |segs| segs[2].clone(),
    );
}

fn next_segment_path(segs: &[PathBuf]) -> PathBuf {
    let last = segs.last().unwrap();
    let name = last.file_name().unwrap().to_str().unwrap();
    let seq: u64 = name[..20].parse().unwrap();
    last.with_file_name(raft_mmap_log::format::segment_file_name(seq + 1))
}

fn foreign_next_segment(content: &'static [u8]) {
    behind_our_back(
        |_, segs| std::fs::write(next_segment_path(segs), content).unwrap(),
        |_, segs, _| std::fs::remove_file(next_segment_path(segs)).unwrap(),
        next_segment_path,
    );
}

#[test]
fn foreign_file_with_a_segment_name_is_corrupt_at_open() {
    foreign_next_segment(
        b"#!/bin/sh\n# a script that happens to carry a segment's name, 64 bytes or more\necho hi\n",
    );
}

/// A foreign file shorter than a segment header, named as the next segment, is taken for a
/// never-written segment: recovery does not refuse it, it deletes it.
#[test]
fn short_foreign_file_with_a_segment_name_is_corrupt_at_open() {
    foreign_next_segment(b"#!/bin/sh\necho not a segment\n");
}

// ---------------------------------------------------------------------------------------------
// Reopening with a different segment size.

fn larger_size_child(dir: &Path) {
    let small = Config {
        segment_size: 4096,
        ..config()
    };
    let mut store = open(dir, small).unwrap();
    for i in 1..=3 {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    // Same log, larger configured segments: appends must stay inside the 4 KiB files already
    // mapped (or roll over), never write past their end.
    let mut store = open(dir, config()).unwrap();
    for i in 4..=40 {
        store.append(i, &payload(i)).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    let store = open(dir, config()).unwrap();
    assert_entries(&store, 1, 41);
    println!("RML ok");
}

#[test]
fn reopen_with_larger_segment_size() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        if mode == "larger" {
            larger_size_child(Path::new(&std::env::var("RML_FAULTS_DIR").unwrap()));
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let out = run_child("reopen_with_larger_segment_size", "larger", &dir);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("RML ok"),
        "child died: status {:?} (signal {:?})\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
}
