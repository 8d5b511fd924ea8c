//! CRC32C (Castagnoli) for records, tuned for what a record is: a 16- or 20-byte header piece
//! and a body of a few hundred bytes.
//!
//! On x86-64 with SSE 4.2 it runs the `crc32` instruction over 8 bytes at a time (each step
//! waits for the one before, so the loop's own instructions run alongside), in one call per
//! record; elsewhere it uses the `crc32c` crate. The `crc32c` crate is fast on long buffers,
//! but its fixed cost per call (alignment split, three loop stages) was about 40% of an
//! appended entry's instructions. Both give the same values (tested below against the crate
//! on every length and alignment).

/// CRC32C of `data`, continuing from `crc` (the value of the bytes before it; 0 to start).
/// The same value as `crc32c::crc32c_append(crc, data)`.
#[inline]
pub fn append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `sse42` only requires the CPU to have SSE 4.2, checked just above.
            return unsafe { sse42::append(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

/// Both checksums of a version 2 record whose header bytes `4..12` and `16..24` are the
/// little-endian words `head` and whose body is the concatenation of `parts`:
/// `(body_crc, crc)`. `body_crc` is CRC32C from 0 over `head[0]`, `head[1]` and the body;
/// `crc` is CRC32C from `salt` over header bytes `4..24`: `head[0]`, `body_crc`, `head[1]`.
/// One call per record, the body read once.
#[inline]
pub fn record_sums(salt: u32, head: [u64; 2], parts: &[&[u8]]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: as in `append`.
            return unsafe { sse42::record_sums(salt, head, parts) };
        }
    }
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&head[0].to_le_bytes());
    bytes[8..16].copy_from_slice(&head[1].to_le_bytes());
    let body = parts.iter().fold(crc32c::crc32c(&bytes[..16]), |crc, p| {
        crc32c::crc32c_append(crc, p)
    });
    bytes[8..12].copy_from_slice(&body.to_le_bytes());
    bytes[12..].copy_from_slice(&head[1].to_le_bytes());
    (body, crc32c::crc32c_append(salt, &bytes))
}

/// The SSE 4.2 kernels. They are `unsafe fn` only because `#[target_feature]` functions must
/// be before Rust 1.86 (this crate's minimum is 1.85): their one requirement is a CPU with
/// SSE 4.2, which every caller checks first. They read only through safe slices. The
/// `_mm_crc32_*` intrinsics are `unsafe` before Rust 1.87 and safe inside these functions
/// since, hence the `unsafe` blocks that newer compilers find unneeded.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// One `crc32` instruction.
    macro_rules! crc {
        ($f:ident, $($arg:expr),+) => {
            // SAFETY: only used inside the `sse4.2` functions below, whose callers checked
            // that the CPU has SSE 4.2 (the intrinsic's only requirement).
            unsafe { $f($($arg),+) }
        };
    }

    /// Eight bytes of a slice that has them, as a little-endian word (0 otherwise, which
    /// `chunks_exact` never gives).
    #[inline(always)]
    fn word(b: &[u8]) -> u64 {
        b.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w))
    }

    /// Continues the CRC state `c` (inverted, as the instruction keeps it) over `data`.
    ///
    /// # Safety
    /// The CPU must have SSE 4.2.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn update(mut c: u64, data: &[u8]) -> u64 {
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            c = crc!(_mm_crc32_u64, c, word(w));
        }
        let mut c = c as u32;
        let mut tail = words.remainder();
        if let Some((w, rest)) = tail.split_first_chunk::<4>() {
            c = crc!(_mm_crc32_u32, c, u32::from_le_bytes(*w));
            tail = rest;
        }
        for &b in tail {
            c = crc!(_mm_crc32_u8, c, b);
        }
        u64::from(c)
    }

    /// # Safety
    /// The CPU must have SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn append(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: this function's own requirement (SSE 4.2).
        !(unsafe { update(u64::from(!crc), data) } as u32)
    }

    /// # Safety
    /// The CPU must have SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn record_sums(salt: u32, head: [u64; 2], parts: &[&[u8]]) -> (u32, u32) {
        let mut c = crc!(_mm_crc32_u64, u64::from(u32::MAX), head[0]);
        c = crc!(_mm_crc32_u64, c, head[1]);
        for p in parts {
            // SAFETY: this function's own requirement (SSE 4.2).
            c = unsafe { update(c, p) };
        }
        let body = !(c as u32);
        let s = crc!(_mm_crc32_u64, u64::from(!salt), head[0]);
        let s = crc!(_mm_crc32_u32, s as u32, body);
        let s = crc!(_mm_crc32_u64, u64::from(s), head[1]);
        (body, !(s as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn same_as_the_crate_on_every_length_and_alignment() {
        let bytes: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
        for start in 0..9 {
            for len in 0..(bytes.len() - start) {
                let d = &bytes[start..start + len];
                for seed in [0, 1, 0xdead_beef] {
                    assert_eq!(
                        append(seed, d),
                        crc32c::crc32c_append(seed, d),
                        "{start} {len}"
                    );
                }
            }
        }
        assert_eq!(append(0, b"Hello world!"), 0x7B_98_E7_51);
    }

    proptest! {
        #[test]
        fn record_sums_are_the_crcs_of_the_header_bytes_and_the_body(
            h0: u64, h1: u64, salt: u32,
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
        ) {
            let mut all = h0.to_le_bytes().to_vec();
            all.extend_from_slice(&h1.to_le_bytes());
            for p in &parts {
                all.extend_from_slice(p);
            }
            let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            let (body, crc) = record_sums(salt, [h0, h1], &refs);
            prop_assert_eq!(body, crc32c::crc32c(&all));
            let mut header = h0.to_le_bytes().to_vec();
            header.extend_from_slice(&body.to_le_bytes());
            header.extend_from_slice(&h1.to_le_bytes());
            prop_assert_eq!(crc, crc32c::crc32c_append(salt, &header));
        }
    }
}
