//! Entry data handed to raft-rs without a copy: a `Bytes` whose owner holds the log's view,
//! and so keeps the mapped segment the data lives in (see `docs/raft-rs.md`).
//!
//! Sound for the reasons every zero-copy read of this crate is: bytes a view can see are never
//! rewritten while mapped (invariants I1 and I6 of `docs/format.md`), and a view keeps its
//! segments mapped until it is dropped (I2), here with the last clone of the `Bytes`.

use bytes::Bytes;

use crate::View;

/// The owner: the view and which entry's body ends with the data.
struct MappedData {
    view: View,
    index: u64,
    len: usize,
}

impl AsRef<[u8]> for MappedData {
    fn as_ref(&self) -> &[u8] {
        // The data is the tail of the entry's record body (see `codec`).
        self.view
            .get(self.index)
            .and_then(|body| body.get(body.len().checked_sub(self.len)?..))
            .unwrap_or(&[])
    }
}

/// `data` (the tail of entry `index`'s body in `view`) as `Bytes` that borrow the map; a copy
/// if the view does not give back the same bytes (it always does: a view never changes).
pub(crate) fn share(view: &View, index: u64, data: &[u8]) -> Bytes {
    let b = Bytes::from_owner(MappedData {
        view: view.clone(),
        index,
        len: data.len(),
    });
    if b.as_ptr() == data.as_ptr() && b.len() == data.len() {
        b
    } else {
        Bytes::copy_from_slice(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Store};

    #[test]
    fn shared_data_is_the_mapped_bytes_and_outlives_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(
            dir.path(),
            Config {
                segment_size: 64 << 10,
                ..Config::default()
            },
        )
        .unwrap();
        store.append_batch([(1, &b"head:the data"[..])]).unwrap();
        let view = store.reader().view();
        let body = view.get(1).unwrap();
        let data = &body[5..];
        let b = share(&view, 1, data);
        assert_eq!(b.as_ptr(), data.as_ptr(), "no copy");
        drop(view);
        drop(store);
        assert_eq!(&b[..], b"the data");
    }
}
