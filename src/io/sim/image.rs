//! The image a power cut leaves (see the model in the parent module's documentation).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{read_all, NameOp, Rng, State, PAGE};

/// Writes into `into` what a disk could hold if the power went off now, drawing what is not
/// durable with `seed`. Returns a digest of the image (names and bytes).
pub(super) fn power_cut(st: &State, into: &Path, seed: u64) -> u64 {
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let names = if per_file_names() {
        per_file_durable_names(st, &mut rng)
    } else {
        prefix_durable_names(st, &mut rng)
    };
    let live_path: HashMap<u64, &PathBuf> = st.live.iter().map(|(p, id)| (*id, p)).collect();
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    for (name, id) in names {
        let durable = st.durable.get(&id).cloned().unwrap_or_default();
        let live = match live_path.get(&id) {
            Some(p) => read_all(p),
            None => st.removed.get(&id).cloned().unwrap_or_default(),
        };
        let bytes = durable_bytes(durable, &live, &mut rng);
        if let Some(file_name) = name.file_name() {
            file_name.hash(&mut digest);
            bytes.hash(&mut digest);
            let _ = std::fs::write(into.join(file_name), &bytes);
        }
    }
    digest.finish()
}

/// Whether name operations are kept per file, independently (the default), or as a prefix
/// of all pending ones, in the order they were issued (`RML_SIM_NAMES=prefix`).
pub(crate) fn per_file_names() -> bool {
    std::env::var("RML_SIM_NAMES").map_or(true, |v| v != "prefix")
}

/// The names on disk after the cut, as a file system that commits name operations in the
/// order they were issued (a journal) leaves them: the durable names, then any prefix of the
/// pending operations.
fn prefix_durable_names(st: &State, rng: &mut Rng) -> BTreeMap<PathBuf, u64> {
    let mut name_of: HashMap<u64, PathBuf> = st
        .durable_names
        .iter()
        .map(|(p, id)| (*id, p.clone()))
        .collect();
    let keep = rng.below(st.pending.len() as u64 + 1) as usize;
    for op in &st.pending[..keep] {
        match op {
            NameOp::Create(p, id) | NameOp::Rename(p, id) => {
                name_of.insert(*id, p.clone());
            }
            NameOp::Remove(id) | NameOp::Replaced(id) => {
                name_of.remove(id);
            }
        }
    }
    name_of.into_iter().map(|(id, p)| (p, id)).collect()
}

/// The names on disk after the cut, in name order: each file (identity) keeps any name it
/// had since the last directory fsync, independently of the others: a prefix of its own
/// pending name operations. One name holds one file: a file whose drawn name another file
/// already took gets another of its names that is free, or none if no such name is left.
fn per_file_durable_names(st: &State, rng: &mut Rng) -> BTreeMap<PathBuf, u64> {
    // Per file, the names it had since the last directory fsync, oldest first (`None`: no
    // name, before its create or after its removal).
    let mut history: BTreeMap<u64, Vec<Option<PathBuf>>> = BTreeMap::new();
    for (p, id) in &st.durable_names {
        history.insert(*id, vec![Some(p.clone())]);
    }
    for op in &st.pending {
        let (id, name) = match op {
            NameOp::Create(p, id) => (*id, Some(p.clone())),
            NameOp::Rename(b, id) => (*id, Some(b.clone())),
            NameOp::Remove(id) | NameOp::Replaced(id) => (*id, None),
        };
        history.entry(id).or_insert_with(|| vec![None]).push(name);
    }
    // Files in a random order, so that no file always wins a contested name.
    let mut ids: Vec<u64> = history.keys().copied().collect();
    for i in (1..ids.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    let mut names = BTreeMap::new();
    let mut taken = HashSet::new();
    for id in ids {
        let hist = &history[&id];
        let drawn = rng.below(hist.len() as u64) as usize;
        // The drawn name if free, else the nearest earlier one that is free (or no name).
        let name = hist[..=drawn]
            .iter()
            .rev()
            .find(|n| n.as_ref().is_none_or(|p| !taken.contains(p)))
            .cloned()
            .flatten();
        if let Some(p) = name {
            taken.insert(p.clone());
            names.insert(p, id);
        }
    }
    names
}

/// A file's bytes after the cut: its durable bytes, its durable or its live size, and any
/// subset of the pages where the live bytes differ from the durable ones.
fn durable_bytes(durable: Vec<u8>, live: &[u8], rng: &mut Rng) -> Vec<u8> {
    let size = if live.len() != durable.len() && rng.below(2) == 0 {
        live.len()
    } else {
        durable.len()
    };
    let mut bytes = durable;
    bytes.resize(size, 0);
    let mut at = 0;
    while at < size {
        let end = (at + PAGE).min(size);
        let src = live.get(at..end.min(live.len())).unwrap_or(&[]);
        if src != &bytes[at..at + src.len()] && rng.below(2) == 0 {
            bytes[at..at + src.len()].copy_from_slice(src);
        }
        at = end;
    }
    bytes
}
