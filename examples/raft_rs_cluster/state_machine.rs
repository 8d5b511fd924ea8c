//! The key-value state machine of the raft-rs cluster examples, and the put it applies.
//! Shared by `examples/raft_rs_cluster/` and `examples/raft_rs_multi/` through `#[path]`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Sender;

use raft::prelude::*;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The state machine: key -> value, and the last applied index.
#[derive(Default)]
pub struct Kv {
    pub map: BTreeMap<u64, Vec<u8>>,
    pub applied: u64,
    /// Snapshots restored from the leader.
    pub snapshots: u64,
}

/// A put: request id, key, value.
pub fn encode_put(rid: u64, key: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&rid.to_le_bytes());
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(value);
    v
}

pub fn decode_put(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    let (rid, rest) = data.split_first_chunk::<8>()?;
    let (key, value) = rest.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*rid), u64::from_le_bytes(*key), value))
}

/// The value written for `key`.
pub fn value_of(key: u64) -> Vec<u8> {
    format!("value-{key:08}").into_bytes()
}

impl Kv {
    pub fn apply(
        &mut self,
        entries: Vec<Entry>,
        pending: &mut HashMap<u64, Sender<u64>>,
    ) -> Result<(), Error> {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            if e.index != self.applied + 1 {
                return Err(format!("applied {} then got entry {}", self.applied, e.index).into());
            }
            self.applied = e.index;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let (rid, key, value) =
                decode_put(&e.data).ok_or_else(|| format!("entry {}: not a put", e.index))?;
            self.map.insert(key, value.to_vec());
            if let Some(ack) = pending.remove(&rid) {
                let _ = ack.send(rid);
            }
        }
        Ok(())
    }

    /// The snapshot data: every (key, value length u32, value).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, val) in &self.map {
            v.extend_from_slice(&k.to_le_bytes());
            v.extend_from_slice(&(val.len() as u32).to_le_bytes());
            v.extend_from_slice(val);
        }
        v
    }

    pub fn restore(&mut self, snap: &Snapshot) -> Result<(), Error> {
        self.map = Self::decode(&snap.data)?;
        self.applied = snap.get_metadata().index;
        self.snapshots += 1;
        Ok(())
    }

    pub fn decode(data: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, Error> {
        let mut map = BTreeMap::new();
        let mut rest = data;
        while !rest.is_empty() {
            let bad = || "snapshot data cut short";
            let (k, r) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let (len, r) = r.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = u32::from_le_bytes(*len) as usize;
            let val = r.get(..len).ok_or_else(bad)?;
            map.insert(u64::from_le_bytes(*k), val.to_vec());
            rest = &r[len..];
        }
        Ok(map)
    }

    /// Saves the state machine next to the log (applied index, then [`Kv::encode`]), durably,
    /// before the log is compacted past what a restart could replay.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&self.applied.to_le_bytes())?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The state machine saved by [`Kv::save`], or an empty one.
    pub fn load(path: &Path) -> Result<Kv, Error> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kv::default()),
            Err(e) => return Err(e.into()),
        };
        let (applied, data) = bytes
            .split_first_chunk::<8>()
            .ok_or("state machine file cut short")?;
        Ok(Kv {
            map: Self::decode(data)?,
            applied: u64::from_le_bytes(*applied),
            snapshots: 0,
        })
    }

    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.map.hash(&mut h);
        h.finish()
    }
}
