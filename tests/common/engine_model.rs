//! The engine operation model of `tests/kill9.rs` and `tests/power_loss.rs`: operations on a
//! [`Store`] (appends, truncates, purges, a meta value), a model of what they leave, a reader
//! ([`observe`]) that checks every payload byte for byte, [`match_prefix`] (which state after
//! some operation a recovered log is) and a [`Driver`] of random operations.
//!
//! Every payload names its index and an "epoch" (changed at each truncate) and is otherwise a
//! pure function of both, so a recovered entry is checked byte for byte.

use std::path::Path;

use raft_mmap_log::inspect;
use raft_mmap_log::Store;

use super::Rng;

/// The meta key the operations write.
pub const META_KEY: u64 = 1;

/// Payload of entry `index` written in `epoch`: 16 bytes naming both, then 0..700 bytes that
/// depend on both.
pub fn payload(index: u64, epoch: u64) -> Vec<u8> {
    let mut r = Rng(index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ epoch.rotate_left(23));
    let len = r.below(700) as usize;
    let mut v = Vec::with_capacity(16 + len);
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    while v.len() < 16 + len {
        let w = r.next().to_le_bytes();
        let n = w.len().min(16 + len - v.len());
        v.extend_from_slice(&w[..n]);
    }
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Append { index: u64, epoch: u64 },
    Truncate { from: u64 },
    Purge { first: u64 },
    Meta { value: u64 },
}

impl Op {
    pub fn encode(&self) -> String {
        match self {
            Op::Append { index, epoch } => format!("E {index} {epoch}"),
            Op::Truncate { from } => format!("T {from}"),
            Op::Purge { first } => format!("P {first}"),
            Op::Meta { value } => format!("M {value}"),
        }
    }
    pub fn decode(s: &str) -> Option<Op> {
        let mut it = s.split(' ');
        let tag = it.next()?;
        let a: u64 = it.next()?.parse().ok()?;
        Some(match tag {
            "E" => Op::Append {
                index: a,
                epoch: it.next()?.parse().ok()?,
            },
            "T" => Op::Truncate { from: a },
            "P" => Op::Purge { first: a },
            "M" => Op::Meta { value: a },
            _ => return None,
        })
    }
}

/// The logical content of the log: the same rules as the engine's `LogState`, plus the epoch
/// of every live entry (as runs `(first index, epoch)`) and the meta value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub first: u64,
    pub next: u64,
    pub runs: Vec<(u64, u64)>,
    pub meta: Option<u64>,
}

impl Model {
    pub fn is_empty(&self) -> bool {
        self.first == self.next
    }

    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { index, epoch } => {
                assert!(
                    index == self.next || (self.is_empty() && index > self.next),
                    "model: bad append {index} at {self:?}"
                );
                if self.is_empty() {
                    self.first = index;
                }
                self.next = index + 1;
                if self.runs.last().map(|r| r.1) != Some(epoch) {
                    self.runs.push((index, epoch));
                }
            }
            Op::Truncate { from } => {
                assert!(from >= self.first);
                self.next = self.next.min(from.max(self.first));
            }
            Op::Purge { first } => {
                if first > self.first {
                    self.first = first;
                    self.next = self.next.max(first);
                }
            }
            Op::Meta { value } => self.meta = Some(value),
        }
        self.normalize();
    }

    /// Keeps only runs that cover live entries, each starting at or after `first`.
    fn normalize(&mut self) {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &(s, e)) in self.runs.iter().enumerate() {
            let end = self
                .runs
                .get(i + 1)
                .map(|r| r.0)
                .unwrap_or(u64::MAX)
                .min(self.next);
            let s = s.max(self.first);
            if s < end && out.last().map(|r| r.1) != Some(e) {
                out.push((s, e));
            }
        }
        self.runs = out;
    }

    pub fn epoch_of(&self, index: u64) -> Option<u64> {
        if index < self.first || index >= self.next {
            return None;
        }
        self.runs.iter().rev().find(|r| r.0 <= index).map(|r| r.1)
    }
}

/// Reads the whole log back, checking every payload against its own index and epoch, and
/// returns it as a model. Panics on a gap or a payload that is not exactly what was written.
pub fn observe(store: &Store) -> Model {
    let snap = store.reader().view();
    let (first, next) = (store.first_index(), store.next_index());
    assert_eq!(
        (snap.first_index(), snap.next_index()),
        (first, next),
        "snapshot and store disagree"
    );
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut expect = first;
    for e in snap.range(..) {
        assert_eq!(e.index, expect, "gap or reordering in the recovered log");
        assert!(e.payload.len() >= 16, "entry {} too short", e.index);
        let idx = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
        let epoch = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
        assert_eq!(idx, e.index, "entry {} holds the payload of {idx}", e.index);
        assert!(
            e.payload == payload(e.index, epoch).as_slice(),
            "entry {} (epoch {epoch}) has wrong bytes",
            e.index
        );
        assert_eq!(snap.get(e.index), Some(e.payload), "get != range");
        if runs.last().map(|r| r.1) != Some(epoch) {
            runs.push((e.index, epoch));
        }
        expect += 1;
    }
    assert_eq!(
        expect, next,
        "range stops at {expect}, next index is {next}"
    );
    let meta = store.meta(META_KEY).map(|v| {
        assert_eq!(v.len(), 8, "meta value length");
        u64::from_le_bytes(v.try_into().unwrap())
    });
    Model {
        first,
        next,
        runs,
        meta,
    }
}

/// Finds `k` in `acked..=ops.len()` such that `start` + `ops[..k]` equals `got`.
pub fn match_prefix(start: &Model, ops: &[Op], acked: usize, got: &Model) -> Result<usize, String> {
    let mut m = start.clone();
    for op in &ops[..acked] {
        m.apply(op);
    }
    let at_ack = m.clone();
    for k in acked..=ops.len() {
        if &m == got {
            return Ok(k);
        }
        if let Some(op) = ops.get(k) {
            m.apply(op);
        }
    }
    // Explain the first difference from the acknowledged state.
    let mut why = format!(
        "recovered state matches no state at or after the acknowledged op {acked} (of {}):\n  \
         recovered: first={} next={} meta={:?} runs={:?}\n  acked:     first={} next={} meta={:?} runs={:?}",
        ops.len(),
        got.first,
        got.next,
        got.meta,
        got.runs,
        at_ack.first,
        at_ack.next,
        at_ack.meta,
        at_ack.runs
    );
    for i in got.first..got.next {
        if got.epoch_of(i) != at_ack.epoch_of(i) {
            why += &format!(
                "\n  first entry differing from the acked state: {i} epoch {:?} vs {:?}",
                got.epoch_of(i),
                at_ack.epoch_of(i)
            );
            break;
        }
    }
    why += &format!(
        "\n  ops after ack: {:?}",
        &ops[acked..ops.len().min(acked + 40)]
    );
    Err(why)
}

/// Drives random operations against a store, keeping the model in step.
pub struct Driver {
    pub store: Store,
    pub model: Model,
    rng: Rng,
    epoch: u64,
    meta_counter: u64,
}

impl Driver {
    pub fn new(store: Store, model: Model, seed: u64) -> Self {
        Driver {
            store,
            model,
            rng: Rng(seed),
            // Unique per driver: a new process never reuses an epoch of an earlier one.
            epoch: (seed & 0xFFFF_FFFF) << 24,
            meta_counter: seed << 20,
        }
    }

    /// Performs one random operation (a batch of appends is several ops). `intent` sees the
    /// ops before any byte of them is written.
    pub fn step(&mut self, intent: &mut dyn FnMut(&[Op])) {
        let (first, next) = (self.model.first, self.model.next);
        let len = next - first;
        let r = self.rng.below(100);
        let ops: Vec<Op> = if r < 4 && len > 0 {
            let from = first + self.rng.below(len);
            self.epoch += 1;
            vec![Op::Truncate { from }]
        } else if r < 9 || len > 300 {
            let target = if self.rng.below(10) == 0 {
                next + self.rng.below(3)
            } else {
                first + 1 + self.rng.below(len.max(1))
            };
            if target <= first {
                return;
            }
            vec![Op::Purge { first: target }]
        } else if r < 12 {
            self.meta_counter += 1;
            vec![Op::Meta {
                value: self.meta_counter,
            }]
        } else {
            let start = next.max(1);
            let n = 1 + self.rng.below(8);
            (start..start + n)
                .map(|index| Op::Append {
                    index,
                    epoch: self.epoch,
                })
                .collect()
        };
        intent(&ops);
        match &ops[0] {
            Op::Append { .. } => {
                let data: Vec<(u64, Vec<u8>)> = ops
                    .iter()
                    .map(|op| match *op {
                        Op::Append { index, epoch } => (index, payload(index, epoch)),
                        _ => unreachable!(),
                    })
                    .collect();
                self.store
                    .append_batch(data.iter().map(|(i, p)| (*i, &p[..])))
                    .expect("append_batch");
            }
            Op::Truncate { from } => self.store.truncate_from(*from).expect("truncate"),
            Op::Purge { first } => self.store.purge_to(*first).expect("purge"),
            Op::Meta { value } => self
                .store
                .put_meta(META_KEY, &value.to_le_bytes())
                .expect("put_meta"),
        }
        for op in &ops {
            self.model.apply(op);
        }
    }
}

/// Read-only check: the directory holds no corruption and no torn tail.
pub fn assert_clean(dir: &Path) {
    check_clean(dir).unwrap_or_else(|why| panic!("{why}"));
}

/// [`assert_clean`] as a result.
pub fn check_clean(dir: &Path) -> Result<(), String> {
    let stat = inspect::stat(dir)
        .map_err(|e| format!("read-only stat of {} failed: {e}", dir.display()))?;
    if stat.corruption.is_some() || stat.recovery.cut.is_some() {
        return Err(format!(
            "cut or corruption after a clean close: {:?} {:?}",
            stat.corruption, stat.recovery
        ));
    }
    Ok(())
}
