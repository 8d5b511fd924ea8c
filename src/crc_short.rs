//! CRC32C of short inputs (record headers: 8 to 20 bytes), in safe Rust: slicing by 8 over
//! tables built at compile time. Gives exactly what `crc32c::crc32c_append` gives; the
//! `crc32c` crate stays the one for bodies, where its hardware loop wins. For a few bytes its
//! fixed cost per call (feature check, alignment split, empty parallel loops: ~150
//! instructions measured with callgrind) is several times the work, and recovery checks two
//! such header pieces per record.

/// CRC32C's polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

#[inline(always)]
fn at(k: usize, v: u64, shift: u32) -> u32 {
    TABLES[k][((v >> shift) & 0xff) as usize]
}

/// CRC32C of `crc` continued over `data`: `crc32c::crc32c_append(crc, data)`, for short
/// `data`.
#[inline]
pub(crate) fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let mut crc = !crc;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b) ^ u64::from(crc);
        crc = at(7, v, 0)
            ^ at(6, v, 8)
            ^ at(5, v, 16)
            ^ at(4, v, 24)
            ^ at(3, v, 32)
            ^ at(2, v, 40)
            ^ at(1, v, 48)
            ^ at(0, v, 56);
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        let v = u64::from(u32::from_le_bytes(b) ^ crc);
        // All 32 bits of the CRC are folded into these 4 bytes: nothing of it shifts on.
        crc = at(3, v, 0) ^ at(2, v, 8) ^ at(1, v, 16) ^ at(0, v, 24);
        rest = &rest[4..];
    }
    for &byte in rest {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(byte)) & 0xff) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_crate_for_every_length_and_alignment() {
        let bytes: Vec<u8> = (0..80u32).map(|i| (i * 151 + 7) as u8).collect();
        for start in 0..8 {
            for len in 0..=64 {
                let d = &bytes[start..start + len];
                for seed in [0, 1, 0xdead_beef, u32::MAX] {
                    assert_eq!(
                        crc32c_append(seed, d),
                        crc32c::crc32c_append(seed, d),
                        "start {start} len {len} seed {seed:#x}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn same_as_the_crate(seed: u32, data in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(crc32c_append(seed, &data), crc32c::crc32c_append(seed, &data));
        }
    }
}
