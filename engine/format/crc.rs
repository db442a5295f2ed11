//! CRC-32C (Castagnoli) of records: the same value as the `crc32c` crate's, faster at the
//! lengths records have.
//!
//! The crate runs three chains of `crc32` instructions at once only over 768 bytes or more;
//! below that, one chain runs at one 8-byte word per instruction latency (3 cycles). A record
//! of W5 (332 bytes after its CRC) spent about 60 ns there, a fifth of `read_all`'s time per
//! event (`perf`, session 11). Here a buffer of 64 bytes to about 6 KiB is cut into three
//! lanes of equal length whose chains run together; the first two lanes' CRCs are then moved
//! past the lanes after them by one carry-less multiply each (what zero bytes do to a CRC is
//! linear), and the three are added (XOR). Shorter buffers run one chain here too: the crate's
//! setup for long buffers cost more than the CRC of a 20-byte index entry.
//!
//! The arithmetic, in the bit-reflected form the `crc32` instruction uses: a CRC state `c` of
//! 32 bits stands for a polynomial `C` (bit `i` is the coefficient of `x^(31-i)`), and
//! `crc32_u64(0, v)` computes `V * x^32 mod P` for a 64-bit `v` (bit `i`: `x^(63-i)`). The
//! carry-less product of two 32-bit values read that way stands for `x * A * B`, so
//! `crc32_u64(0, clmul(c, k))` is `C * K * x^33 mod P`: with `K = x^(64n-33) mod P` that is
//! `C * x^(64n) mod P`, the state after `n` zero words. `SHIFT[n]` holds those `K`.

/// The polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;
/// Longest lane, in 8-byte words: buffers up to three lanes (6 KiB) take the three-lane path;
/// longer ones the crate's, which runs three lanes of its own there.
const LANE_WORDS_MAX: usize = 256;
/// Shortest buffer that takes the three-lane path: below it, the two multiplies cost more
/// than the chains save.
const THREE_LANES_MIN_BYTES: usize = 64;

/// `x^(64n-33) mod P` for `n` words, `n` in `1..=2 * LANE_WORDS_MAX` (index 0 unused).
static SHIFT: [u32; 2 * LANE_WORDS_MAX + 1] = shift_table();

/// `v * x mod P`, bit-reflected.
const fn times_x(v: u32) -> u32 {
    if v & 1 == 0 {
        v >> 1
    } else {
        (v >> 1) ^ POLY
    }
}

const fn shift_table() -> [u32; 2 * LANE_WORDS_MAX + 1] {
    let mut table = [0u32; 2 * LANE_WORDS_MAX + 1];
    // x^0 is bit 31; x^31 = x^(64 - 33), the entry of one word.
    let mut v: u32 = 1 << 31;
    let mut i = 0;
    while i < 31 {
        v = times_x(v);
        i += 1;
    }
    let mut n = 1;
    while n <= 2 * LANE_WORDS_MAX {
        table[n] = v;
        let mut j = 0;
        while j < 64 {
            v = times_x(v);
            j += 1;
        }
        n += 1;
    }
    table
}

/// The CRC-32C of `data`.
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// The CRC-32C of the bytes whose CRC is `crc` followed by `data` (as `crc32c::crc32c_append`).
#[must_use]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() <= 3 * 8 * LANE_WORDS_MAX
            && std::is_x86_feature_detected!("sse4.2")
            && std::is_x86_feature_detected!("pclmulqdq")
        {
            // SAFETY: the functions only need the two instruction sets just detected on this
            // CPU; they read `data` through safe slices only.
            #[allow(unsafe_code)]
            return unsafe {
                if data.len() < THREE_LANES_MIN_BYTES {
                    x86::one_chain(crc, data)
                } else {
                    x86::three_lanes(crc, data)
                }
            };
        }
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SHIFT;
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u64, _mm_crc32_u8, _mm_cvtsi128_si64, _mm_cvtsi64_si128,
    };

    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes);
        u64::from_le_bytes(w)
    }

    /// The state `c` after `n` zero words: `crc32(0, clmul(c, SHIFT[n]))` (module comment).
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn shift(c: u64, n: usize) -> u64 {
        let k = SHIFT.get(n).copied().unwrap_or(0);
        #[allow(clippy::cast_possible_wrap)]
        let product = _mm_clmulepi64_si128(
            _mm_cvtsi64_si128(c as i64),
            _mm_cvtsi64_si128(i64::from(k)),
            0x00,
        );
        #[allow(clippy::cast_sign_loss)]
        _mm_crc32_u64(0, _mm_cvtsi128_si64(product) as u64)
    }

    /// `crc32c_append` in one chain: for short buffers (index entries, record prefixes), where
    /// the crate's setup for long ones cost more than the CRC itself (`perf`, session 11).
    #[target_feature(enable = "sse4.2")]
    pub(super) fn one_chain(crc: u32, data: &[u8]) -> u32 {
        finish(u64::from(!crc), data)
    }

    /// The words, then the bytes, of `tail` added to `state`; the CRC.
    #[target_feature(enable = "sse4.2")]
    fn finish(mut state: u64, tail: &[u8]) -> u32 {
        let mut words = tail.chunks_exact(8);
        for w in words.by_ref() {
            state = _mm_crc32_u64(state, word(w));
        }
        #[allow(clippy::cast_possible_truncation)]
        let mut state = state as u32;
        for byte in words.remainder() {
            state = _mm_crc32_u8(state, *byte);
        }
        !state
    }

    /// `crc32c_append` over three lanes (module comment); `data` holds at least three words
    /// and at most `2 * LANE_WORDS_MAX` words per lane pair, as `SHIFT` requires.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn three_lanes(crc: u32, data: &[u8]) -> u32 {
        let lane = data.len() / 24;
        debug_assert!(lane >= 1 && 2 * lane < SHIFT.len());
        let (a, rest) = data.split_at(lane * 8);
        let (b, rest) = rest.split_at(lane * 8);
        let (c, tail) = rest.split_at(lane * 8);
        let mut c0 = u64::from(!crc);
        let mut c1 = 0u64;
        let mut c2 = 0u64;
        for ((wa, wb), wc) in a
            .chunks_exact(8)
            .zip(b.chunks_exact(8))
            .zip(c.chunks_exact(8))
        {
            c0 = _mm_crc32_u64(c0, word(wa));
            c1 = _mm_crc32_u64(c1, word(wb));
            c2 = _mm_crc32_u64(c2, word(wc));
        }
        finish(shift(c0, 2 * lane) ^ shift(c1, lane) ^ c2, tail)
    }
}

#[cfg(test)]
mod tests {
    use super::{crc32c, crc32c_append, LANE_WORDS_MAX};

    /// Bytes that are not a pattern a wrong shift could agree on by chance.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn every_length_and_alignment_agrees_with_the_crate() {
        let data = bytes(3 * 8 * LANE_WORDS_MAX + 64, 7);
        for start in 0..8 {
            for len in 0..data.len() - start {
                let slice = &data[start..start + len];
                assert_eq!(
                    crc32c(slice),
                    crc32c::crc32c(slice),
                    "start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn appending_agrees_with_the_crate() {
        for (i, len) in [
            0usize, 1, 63, 64, 71, 332, 344, 1000, 4096, 6144, 6145, 9000,
        ]
        .into_iter()
        .enumerate()
        {
            let data = bytes(len, i as u64 + 1);
            for seed in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678] {
                assert_eq!(
                    crc32c_append(seed, &data),
                    crc32c::crc32c_append(seed, &data),
                    "len {len} seed {seed:x}"
                );
            }
            let (x, y) = data.split_at(len / 3);
            assert_eq!(crc32c_append(crc32c(x), y), crc32c::crc32c(&data));
        }
    }
}
