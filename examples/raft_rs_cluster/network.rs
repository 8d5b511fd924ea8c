//! The in-process network of the raft-rs cluster examples: one mailbox (a channel) per running
//! node. Shared by `examples/raft_rs_cluster/` and `examples/raft_rs_multi/` through `#[path]`.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};

/// The mailboxes of the running nodes; `I` is what a node thread receives.
pub struct Network<I> {
    boxes: Arc<RwLock<HashMap<u64, Sender<I>>>>,
}

impl<I> Clone for Network<I> {
    fn clone(&self) -> Self {
        Network {
            boxes: self.boxes.clone(),
        }
    }
}

impl<I> Default for Network<I> {
    fn default() -> Self {
        Network {
            boxes: Arc::default(),
        }
    }
}

impl<I> Network<I> {
    /// Delivers `input` to node `to`; false if it is not running (the input is dropped, as a
    /// network drops a message to a node that is down: raft-rs retries).
    pub fn send(&self, to: u64, input: I) -> bool {
        let boxes = self.boxes.read().unwrap_or_else(|e| e.into_inner());
        boxes.get(&to).is_some_and(|tx| tx.send(input).is_ok())
    }

    /// Sets (a node starts) or clears (it stops) the mailbox of node `id`.
    pub fn set(&self, id: u64, tx: Option<Sender<I>>) {
        let mut boxes = self.boxes.write().unwrap_or_else(|e| e.into_inner());
        match tx {
            Some(tx) => boxes.insert(id, tx),
            None => boxes.remove(&id),
        };
    }
}
