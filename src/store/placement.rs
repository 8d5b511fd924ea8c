//! The segment-fit rule of the writer, applied before anything is written: how many new
//! segments a call needs.

/// Where a call's records will go, computed before anything is written: the segment-fit rule
/// of the writer ([`Store::make_room`]) with a `Group` record before the first record of a
/// group in each segment.
pub(super) struct Placement {
    pub(super) size: u64,
    pub(super) pos: u64,
    pub(super) switch: u64,
    pub(super) new_size: u64,
    pub(super) new_start: u64,
    pub(super) new_switch: u64,
    /// New segments needed so far.
    pub(super) new_segments: usize,
}

impl Placement {
    /// Places a record of `rs` bytes: in the current segment if it fits (with the `Group`
    /// record before it, if one is due), else at the start of a new one.
    pub(super) fn place(&mut self, rs: u64) {
        if self.pos + self.switch + rs > self.size {
            self.new_segments += 1;
            self.size = self.new_size;
            self.pos = self.new_start;
            self.switch = self.new_switch;
        }
        self.pos += self.switch + rs;
        self.switch = 0;
    }
}
