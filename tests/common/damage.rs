//! What a crash could do to a copy of a log directory after the durable frontier ([`damage`]),
//! used by the crash-model harness (`tests/common/crash_harness.rs`).

use std::path::{Path, PathBuf};

use super::{is_sealed, seg_files, Rng, PAGE, SEG_HEADER};

#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    ZeroSuffix,
    Garbage,
    DropPages,
}

/// Damages the copy in `dir` after the durable frontier `durable` (active segment and offset
/// when the last completed flush/sync was issued). Returns a description.
///
/// `workarounds` re-enables the old workarounds for engine recovery bugs fixed since (see
/// `CRASH_MODEL_WORKAROUNDS` in `tests/raft_crash_model.rs`); they draw nothing from `rng`.
pub fn damage(dir: &Path, durable: &(PathBuf, u64), rng: &mut Rng, workarounds: bool) -> String {
    let files = seg_files(dir);
    let mut data: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read copy"))
        .collect();
    let durable_name = durable.0.file_name().expect("durable name");
    let mut d = files
        .iter()
        .position(|p| p.file_name() == Some(durable_name))
        .unwrap_or_else(|| panic!("durable segment {} missing", durable.0.display()));
    let mut off = durable.1;
    // Segments sealed since the frontier: the flusher may just as well not have got to them
    // yet (it runs behind the writer). Honour a random prefix of those seal marks and erase
    // the rest, as if the crash came first.
    let sealed_since = (d..files.len())
        .take_while(|&k| is_sealed(&data[k]))
        .count();
    let honour = if rng.chance(1, 2) {
        sealed_since
    } else {
        rng.below(sealed_since as u64 + 1) as usize
    };
    for mark in data.iter_mut().skip(d + honour).take(sealed_since - honour) {
        mark[40..56].fill(0);
    }
    // A sealed segment is fully durable; its successor was never flushed on its own.
    for _ in 0..honour {
        if d + 1 < files.len() {
            d += 1;
            off = 0;
        } else {
            off = data[d].len() as u64;
        }
    }
    // Unsynced region: (file, from) for files d.. ; `from == 0` means the whole file.
    let region: Vec<(usize, u64)> = (d..files.len())
        .map(|k| (k, if k == d { off } else { 0 }))
        .collect();
    let total: u64 = region
        .iter()
        .map(|&(k, from)| data[k].len() as u64 - from)
        .sum();
    let orig = if workarounds {
        data.clone()
    } else {
        Vec::new()
    };
    let mode = match rng.below(4) {
        0 => Damage::None,
        1 => Damage::ZeroSuffix,
        2 => Damage::Garbage,
        _ => Damage::DropPages,
    };
    let mut desc = format!(
        "{mode:?} durable=({}, {}) sealed_since={sealed_since} honoured={honour} unsynced_from=({d},{off}) files={}",
        durable_name.to_string_lossy(),
        durable.1,
        files.len()
    );
    let mut removed_from = files.len();
    if total > 0 {
        match mode {
            Damage::None => {}
            Damage::ZeroSuffix => {
                let mut cut = rng.below(total);
                let mut first_hit = true;
                for &(k, from) in &region {
                    let len = data[k].len() as u64 - from;
                    if first_hit && cut >= len {
                        cut -= len;
                        continue;
                    }
                    let mut at = if first_hit { from + cut } else { 0 };
                    // Never a partial header: it sits in the first sector, written whole or
                    // not at all.
                    if from == 0 && at < SEG_HEADER {
                        at = 0;
                    }
                    first_hit = false;
                    desc += &format!(" zero({k}@{at}..)");
                    data[k][at as usize..].fill(0);
                }
            }
            Damage::Garbage => {
                for _ in 0..1 + rng.below(6) {
                    let (k, from) = region[rng.below(region.len() as u64) as usize];
                    let from = from.max(SEG_HEADER);
                    let size = data[k].len() as u64;
                    if from >= size {
                        continue;
                    }
                    // Bias towards the start of the unsynced range, where records are.
                    let span = (size - from).min(if rng.chance(1, 2) { 512 } else { u64::MAX });
                    let at = from + rng.below(span);
                    let n = (1 + rng.below(128)).min(size - at);
                    desc += &format!(" garbage({k}@{at}+{n})");
                    for b in &mut data[k][at as usize..(at + n) as usize] {
                        *b = rng.next() as u8;
                    }
                }
            }
            Damage::DropPages => {
                for &(k, from) in &region {
                    let size = data[k].len() as u64;
                    let mut page = from / PAGE * PAGE;
                    while page < size {
                        if rng.chance(1, 2) {
                            let a = page.max(from);
                            let b = (page + PAGE).min(size);
                            desc += &format!(" drop({k}@{a}..{b})");
                            data[k][a as usize..b as usize].fill(0);
                        }
                        page += PAGE;
                    }
                }
            }
        }
        // Files created after the frontier may be lost from the directory (a suffix of them).
        let whole: Vec<usize> = region
            .iter()
            .filter(|&&(_, from)| from == 0)
            .map(|&(k, _)| k)
            .collect();
        if !whole.is_empty() && rng.chance(1, 3) {
            let n = 1 + rng.below(whole.len() as u64) as usize;
            removed_from = files.len() - n;
            desc += &format!(" remove({removed_from}..)");
        }
        // A file whose size never became durable comes back zero-length or short. The engine
        // syncs a new file's size before naming it, so only a suffix of the files created
        // after the frontier is modelled this way (what a file system that drops unsynced
        // metadata, or a log written before that fix, leaves): the first file of the suffix
        // keeps any prefix, the later ones keep no header.
        let kept: Vec<usize> = whole.into_iter().filter(|&k| k < removed_from).collect();
        if !kept.is_empty() && !workarounds && rng.chance(1, 3) {
            let n = 1 + rng.below(kept.len() as u64) as usize;
            for (j, &k) in kept[kept.len() - n..].iter().enumerate() {
                let size = data[k].len() as u64;
                // Sizes a file really had: 0 when created, whole pages while allocated.
                let len = match rng.below(3) {
                    0 => 0,
                    1 => rng.below(SEG_HEADER),
                    _ => PAGE * (1 + rng.below((size / PAGE).saturating_sub(1).max(1))),
                }
                .min(size);
                data[k].truncate(len as usize);
                if j > 0 || len < SEG_HEADER {
                    let h = data[k].len().min(SEG_HEADER as usize);
                    data[k][..h].fill(0);
                }
                desc += &format!(" short({k}:{len})");
            }
        }
    }
    if workarounds {
        // Workarounds for known engine recovery bugs (fixed since).
        let zero_tail = |k: usize| match data[k].iter().zip(&orig[k]).position(|(a, b)| a != b) {
            Some(c) => data[k][c..].iter().all(|&b| b == 0),
            None => false,
        };
        if let Some(k) = (d..removed_from.min(files.len()).saturating_sub(1))
            .find(|&k| !is_sealed(&data[k]) && zero_tail(k))
        {
            removed_from = k + 1;
            desc += &format!(" [workaround: remove({removed_from}..)]");
        }
        let last = removed_from.min(files.len()) - 1;
        for k in d..last {
            if data[k][..SEG_HEADER as usize].iter().all(|&b| b == 0) {
                data[k][..SEG_HEADER as usize].copy_from_slice(&orig[k][..SEG_HEADER as usize]);
                data[k][40..56].fill(0);
                desc += &format!(" [workaround: header {k} kept]");
            }
        }
    }
    for (k, p) in files.iter().enumerate() {
        if k >= removed_from {
            std::fs::remove_file(p).expect("remove");
        } else if k >= d {
            std::fs::write(p, &data[k]).expect("write damaged copy");
        }
    }
    desc
}
