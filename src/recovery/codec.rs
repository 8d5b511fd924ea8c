//! Bodies of checkpoint and purge records: encoding and checked decoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use zerocopy::FromBytes;

use crate::format::{CheckpointHead, MetaItemHead, MAX_INDEX};
use crate::state::LogState;

/// Encodes meta items (`MetaItemHead` + bytes each) after a `u32` count: the body of a purge
/// record.
pub fn encode_meta_items(items: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    if items.is_empty() {
        return out;
    }
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (k, v) in items {
        push_meta_item(&mut out, *k, v);
    }
    out
}

fn push_meta_item(out: &mut Vec<u8>, key: u64, value: &[u8]) {
    use zerocopy::IntoBytes;
    let item = MetaItemHead {
        key: key.into(),
        len: (value.len() as u32).into(),
    };
    out.extend_from_slice(item.as_bytes());
    out.extend_from_slice(value);
}

/// Decodes `count` meta items from the front of `bytes`, returning them and the rest.
/// Meta key/value pairs.
pub type MetaItems = Vec<(u64, Arc<[u8]>)>;

fn take_meta_items(mut bytes: &[u8], count: u32) -> Option<(MetaItems, &[u8])> {
    let mut items = Vec::new();
    for _ in 0..count {
        let (item, r) = MetaItemHead::read_from_prefix(bytes).ok()?;
        let len = item.len.get() as usize;
        items.push((item.key.get(), Arc::from(r.get(..len)?)));
        bytes = &r[len..];
    }
    Some((items, bytes))
}

/// Decodes the body written by [`encode_meta_items`]; an empty body is no items.
pub fn decode_meta_items(body: &[u8]) -> Option<MetaItems> {
    if body.is_empty() {
        return Some(Vec::new());
    }
    let (count, rest) = body.split_first_chunk::<4>()?;
    let (items, rest) = take_meta_items(rest, u32::from_le_bytes(*count))?;
    rest.is_empty().then_some(items)
}

/// Encodes a checkpoint body: `state`, chained to a previous segment whose records end at
/// `prev_end` with a last record of CRC `prev_crc`.
pub fn encode_checkpoint(state: &LogState, prev_end: u64, prev_crc: u32) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let head = CheckpointHead {
        first: state.first.into(),
        next: state.next.into(),
        prev_end: prev_end.into(),
        meta_count: (state.metas.len() as u32).into(),
        prev_crc: prev_crc.into(),
    };
    let mut out = head.as_bytes().to_vec();
    for (k, v) in state.metas.iter() {
        push_meta_item(&mut out, *k, v);
    }
    out
}

/// Size of the checkpoint body for `state`.
pub fn checkpoint_len(state: &LogState) -> usize {
    std::mem::size_of::<CheckpointHead>()
        + state
            .metas
            .values()
            .map(|v| std::mem::size_of::<MetaItemHead>() + v.len())
            .sum::<usize>()
}

/// A decoded checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// First retained index.
    pub first: u64,
    /// One past the last index.
    pub next: u64,
    /// Where the previous segment's records end.
    pub prev_end: u64,
    /// CRC of the previous segment's last record.
    pub prev_crc: u32,
    /// Meta values.
    pub metas: BTreeMap<u64, Arc<[u8]>>,
}

/// Decodes a checkpoint body; `None` if it is malformed.
pub fn decode_checkpoint(body: &[u8]) -> Option<Checkpoint> {
    let (head, rest) = CheckpointHead::read_from_prefix(body).ok()?;
    let (items, rest) = take_meta_items(rest, head.meta_count.get())?;
    if !rest.is_empty() || head.first.get() > head.next.get() || head.next.get() > MAX_INDEX + 1 {
        return None;
    }
    Some(Checkpoint {
        first: head.first.get(),
        next: head.next.get(),
        prev_end: head.prev_end.get(),
        prev_crc: head.prev_crc.get(),
        metas: items.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip() {
        let mut s = LogState {
            first: 3,
            next: 9,
            ..Default::default()
        };
        s.apply_meta(1, Arc::from(&b"vote"[..]));
        s.apply_meta(7, Arc::from(&b""[..]));
        let body = encode_checkpoint(&s, 4096, 0xabcd);
        assert_eq!(body.len(), checkpoint_len(&s));
        let cp = decode_checkpoint(&body).unwrap();
        assert_eq!(
            (cp.first, cp.next, cp.prev_end, cp.prev_crc),
            (3, 9, 4096, 0xabcd)
        );
        assert_eq!(cp.metas, *s.metas);
        assert!(decode_checkpoint(&body[..body.len() - 1]).is_none());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_checkpoint(&longer).is_none());
    }

    #[test]
    fn meta_items_round_trip() {
        assert_eq!(decode_meta_items(&[]), Some(vec![]));
        let body = encode_meta_items(&[(3, b"abc"), (4, b"")]);
        let got = decode_meta_items(&body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, &got[0].1[..]), (3, &b"abc"[..]));
        assert_eq!((got[1].0, &got[1].1[..]), (4, &b""[..]));
        assert!(decode_meta_items(&body[..body.len() - 1]).is_none());
        assert!(decode_meta_items(&[1, 0]).is_none());
    }
}
