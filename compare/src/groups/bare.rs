//! The machine's limit, `bare`: no engine, only the bytes an engine must write. Each write
//! copies its entries, each behind a 16-byte frame (index and length), into one buffer,
//! `pwrite`s it at the next offset of one file whose blocks were written with zeros at open,
//! and `fdatasync`s the file. The file is 64 MiB, reused from its start when a write would
//! pass its end, so every sync is over written blocks (the cheapest sync the disk offers).
//! Concurrent writers take their offsets with an atomic and sync on their own threads (no
//! group commit beyond what the kernel gives concurrent `fdatasync`s of one file).
//!
//! Nothing is indexed, checksummed or readable back; the last index of every group is kept
//! in memory and saved at close to `last` beside the file, so that the harness's reopen
//! check passes. Its reopen time means nothing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::work::GEngine;
use crate::harness::{Batch, Fail, R};

/// The data file's length: the default segment size of ours.
const FILE_BYTES: u64 = 64 << 20;
/// Per-entry frame: index and length, as the least any log stores.
const FRAME: usize = 16;

pub struct Bare {
    file: File,
    dir: PathBuf,
    /// Bytes written so far over the file's life; a write goes at `pos % FILE_BYTES`.
    pos: AtomicU64,
    /// Per group: its last index plus one, 0 for none.
    next: Vec<AtomicU64>,
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Fail {
    move |e| Fail::Error(format!("bare: {what}: {e}"))
}

impl Bare {
    /// Frames `parts` into one buffer and writes it at its reserved offset.
    fn put(&self, parts: &[(u64, &Batch)]) -> R<()> {
        let cap = parts
            .iter()
            .map(|(_, b)| b.buf.len() + FRAME * b.iter().count());
        let mut buf = Vec::with_capacity(cap.sum());
        for (_, b) in parts {
            for (i, p) in b.iter() {
                buf.extend_from_slice(&i.to_le_bytes());
                buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
                buf.extend_from_slice(p);
            }
        }
        let len = buf.len() as u64;
        if len > FILE_BYTES {
            return Err(Fail::Unsupported(format!("a write of {len} B")));
        }
        let at = self.pos.fetch_add(len, Ordering::Relaxed) % FILE_BYTES;
        let at = if at + len > FILE_BYTES { 0 } else { at };
        self.file.write_all_at(&buf, at).map_err(io("pwrite"))?;
        for (g, b) in parts {
            self.next[*g as usize].fetch_max(b.end(), Ordering::Relaxed);
        }
        Ok(())
    }
}

impl GEngine for Bare {
    fn open(dir: &Path, groups: u64) -> R<Self> {
        std::fs::create_dir_all(dir).map_err(io("create_dir_all"))?;
        let path = dir.join("bare.log");
        let fresh = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        if fresh {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..FILE_BYTES / zeros.len() as u64 {
                file.write_all_at(&zeros, i * zeros.len() as u64)
                    .map_err(io("zero fill"))?;
            }
            file.sync_all().map_err(io("fsync"))?;
        }
        let saved = std::fs::read(dir.join("last")).unwrap_or_default();
        let next = (0..groups as usize)
            .map(|g| {
                let v = saved
                    .get(g * 8..g * 8 + 8)
                    .and_then(|s| s.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                AtomicU64::new(v)
            })
            .collect();
        Ok(Self {
            file,
            dir: dir.to_owned(),
            pos: AtomicU64::new(0),
            next,
        })
    }

    fn write(&self, parts: &[(u64, &Batch)], durable: bool) -> R<Option<Duration>> {
        let t = Instant::now();
        self.put(parts)?;
        let written = t.elapsed();
        if durable {
            self.file.sync_data().map_err(io("fdatasync"))?;
        }
        Ok(Some(written))
    }

    fn sync_all(&self) -> R<()> {
        self.file.sync_data().map_err(io("fdatasync"))
    }

    fn last_index(&self, group: u64) -> R<Option<u64>> {
        let n = self.next[group as usize].load(Ordering::Relaxed);
        Ok(n.checked_sub(1))
    }

    fn close(self) -> R<()> {
        let saved: Vec<u8> = self
            .next
            .iter()
            .flat_map(|n| n.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        std::fs::write(self.dir.join("last"), saved).map_err(io("saving last indexes"))
    }
}
