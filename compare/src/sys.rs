//! Operating-system helpers: page-cache eviction, peak RSS, and the physical limits.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Evicted {
    pub bytes: u64,
    /// Share of the directory's pages still in the page cache after eviction (mincore).
    pub resident_after_pct: f64,
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            files_under(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// Drops the page cache of every file under `dir` (call after the store is closed).
/// Dirty pages cannot be dropped, so each file is fdatasync'ed first.
pub fn evict_dir(dir: &Path) -> io::Result<Evicted> {
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    let mut bytes = 0;
    for f in &files {
        let file = File::open(f)?;
        let len = file.metadata()?.len();
        bytes += len;
        // SAFETY: plain syscalls on a valid, owned descriptor.
        unsafe {
            if libc::fdatasync(file.as_raw_fd()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let rc = libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
        }
    }
    let (mut resident, mut total) = (0u64, 0u64);
    for f in &files {
        let (r, t) = resident_pages(f)?;
        resident += r;
        total += t;
    }
    let resident_after_pct = if total == 0 {
        0.0
    } else {
        resident as f64 * 100.0 / total as f64
    };
    Ok(Evicted {
        bytes,
        resident_after_pct,
    })
}

/// Reads every file under `dir` with plain `read()` calls of 1 MiB, one file after the
/// other; returns the bytes read. The limit for a cold recovery of the same files.
pub fn read_files(dir: &Path) -> io::Result<u64> {
    use std::io::Read;
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    files.sort();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for f in &files {
        let mut file = File::open(f)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    std::hint::black_box(&buf);
    Ok(total)
}

/// (resident pages, total pages) of a file, via mmap + mincore.
fn resident_pages(path: &Path) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok((0, 0));
    }
    let page = 4096usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: read-only shared mapping of a file we opened; only mincore looks at it, and it is
    // unmapped before returning. No Rust reference into the mapping is created.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::mincore(p, len, vec.as_mut_ptr());
        libc::munmap(p, len);
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((
        vec.iter().filter(|b| **b & 1 == 1).count() as u64,
        pages as u64,
    ))
}

static PEAK_ANON_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn status_field(s: &str, name: &str) -> Option<u64> {
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// RssAnon when the sampler started (KiB): the child's own baseline, before any engine.
static START_ANON_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Samples RssAnon every 10 ms on a background thread (the kernel keeps no anon peak).
pub fn start_anon_sampler() {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        if let Some(v) = status_field(&s, "RssAnon:") {
            START_ANON_KIB.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::spawn(|| loop {
        if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
            if let Some(v) = status_field(&s, "RssAnon:") {
                PEAK_ANON_KIB.fetch_max(v, std::sync::atomic::Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    });
}

/// Peak and current resident memory of this process, from /proc/self/status (KiB).
pub fn rss() -> Value {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status_field(&s, name);
    if let Some(v) = field("RssAnon:") {
        PEAK_ANON_KIB.fetch_max(v, std::sync::atomic::Ordering::Relaxed);
    }
    json!({
        "vm_hwm_kib": field("VmHWM:"),
        "rss_anon_kib": field("RssAnon:"),
        "rss_file_kib": field("RssFile:"),
        "peak_anon_kib": PEAK_ANON_KIB.load(std::sync::atomic::Ordering::Relaxed),
        "start_anon_kib": START_ANON_KIB.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// memcpy bandwidth: 256-byte chunks copied into a 256 MiB buffer whose pages are faulted in.
pub fn memcpy_limit(quick: bool) -> Value {
    let size = 256 << 20;
    let mut dst = vec![1u8; size]; // written, so every page is faulted in
    let src: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    let passes = if quick { 2 } else { 6 };
    let mut best = f64::MAX;
    for _ in 0..passes {
        let t = Instant::now();
        let mut s = 0usize;
        for chunk in dst.chunks_exact_mut(256) {
            chunk.copy_from_slice(&src[s..s + 256]);
            s = (s + 256) & 0xFFFF;
        }
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    json!({"gb_per_s": size as f64 / best / 1e9, "chunk": 256, "buffer_mib": 256})
}

/// The machine's limits for workloads 1 and 2: `bytes` (the payload bytes of the log) written
/// with 1 MiB `pwrite`s into a new file (the page-cache fill: page allocation, zeroing and
/// copy, no per-entry work), then one `fdatasync` (the device's sequential write). Best of
/// `passes`; each pass takes a new file.
pub fn file_write_limit(dir: &Path, bytes: u64, quick: bool) -> io::Result<Value> {
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let passes = if quick { 1 } else { 3 };
    let (mut fill, mut total) = (f64::MAX, f64::MAX);
    for pass in 0..passes {
        let path = dir.join(format!("limit-write-{pass}.dat"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let t = Instant::now();
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(chunk.len() as u64) as usize;
            file.write_all_at(&chunk[..n], off)?;
            off += n as u64;
        }
        let filled = t.elapsed().as_secs_f64();
        file.sync_data()?;
        let synced = t.elapsed().as_secs_f64();
        drop(file);
        std::fs::remove_file(&path)?;
        fill = fill.min(filled);
        total = total.min(synced);
    }
    Ok(json!({
        "bytes": bytes,
        "fill_secs": fill, "fill_mb_per_s": bytes as f64 / fill / 1e6,
        "write_sync_secs": total, "write_sync_mb_per_s": bytes as f64 / total / 1e6,
    }))
}

/// A bare 16 KiB pwrite + fdatasync loop in `dir`, on a 64 MiB file preallocated two ways:
/// `fallocate` only (unwritten extents: each first write also converts an extent) and
/// fully written + synced beforehand (the pure limit).
pub fn fdatasync_limit(dir: &Path, quick: bool) -> io::Result<Value> {
    let ops = if quick { 300 } else { 2000 };
    let budget = Duration::from_secs(if quick { 2 } else { 6 });
    let mut out = serde_json::Map::new();
    for (name, prewrite) in [("fallocated", false), ("written", true)] {
        out.insert(name.into(), fdatasync_probe(dir, prewrite, ops, budget)?);
    }
    Ok(Value::Object(out))
}

/// `ops` (or until `budget` runs out) 16 KiB pwrite + fdatasync at consecutive offsets of a
/// 64 MiB file; with `prewrite` the file's blocks are written and synced first.
pub fn fdatasync_probe(
    dir: &Path,
    prewrite: bool,
    ops: usize,
    budget: Duration,
) -> io::Result<Value> {
    let len: u64 = 64 << 20;
    let block = vec![0xA5u8; 16 << 10];
    let path = dir.join("limit-probe.dat");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if prewrite {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..(len >> 20) {
            file.write_all_at(&zeros, i << 20)?;
        }
        file.sync_all()?;
    }
    let mut lat = Vec::with_capacity(ops);
    let t = Instant::now();
    for i in 0..ops {
        let off = (i as u64 * block.len() as u64) % len;
        let t0 = Instant::now();
        file.write_all_at(&block, off)?;
        file.sync_data()?;
        lat.push(t0.elapsed());
        if t.elapsed() > budget {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let n = lat.len();
    lat.sort();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(json!({"ops_per_s": n as f64 / secs, "p50_us": lat[n / 2].as_secs_f64() * 1e6, "ops": n}))
}

/// The bare limit as a participant of the interleaved durable workload: 16 KiB pwrite +
/// fdatasync at consecutive offsets of a 64 MiB file whose blocks were written and synced first.
pub struct FsyncProbe {
    file: File,
    path: std::path::PathBuf,
    block: Vec<u8>,
    i: u64,
    lat: Vec<Duration>,
}

impl FsyncProbe {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("probe.dat");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..64u64 {
            file.write_all_at(&zeros, i << 20)?;
        }
        file.sync_all()?;
        Ok(Self {
            file,
            path,
            block: vec![0xA5; 16 << 10],
            i: 0,
            lat: Vec::new(),
        })
    }
}

impl crate::harness::Stepper for FsyncProbe {
    fn step(&mut self, k: usize) -> crate::harness::R<()> {
        for _ in 0..k {
            let off = (self.i * self.block.len() as u64) % (64 << 20);
            let t0 = Instant::now();
            self.file
                .write_all_at(&self.block, off)
                .and_then(|_| self.file.sync_data())
                .map_err(crate::harness::err("pwrite+fdatasync"))?;
            self.lat.push(t0.elapsed());
            self.i += 1;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> crate::harness::R<Value> {
        let _ = std::fs::remove_file(&self.path);
        Ok(crate::harness::summarize(&mut self.lat, 1))
    }
}
