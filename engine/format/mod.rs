//! The on-disk format of `segment-format.md`, as pure functions over byte slices.
//!
//! Nothing here does I/O, so fuzzers and tests reach every decoder without files or mappings.
//! Every fixed header is a `zerocopy` struct of explicit little-endian integers, checked at
//! compile time for its size; the document's offsets are checked against these structs in
//! `doc_tests`.

pub mod checkpoint;
pub mod crc;
pub mod index;
pub mod journal;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod projection;
pub mod removals;
pub mod segment;
pub mod subscription;

#[cfg(test)]
mod doc_tests;

/// The format version this build writes (segment-format.md §13).
pub const FORMAT_VERSION: u32 = 7;
/// The oldest format version this build reads.
pub const FORMAT_VERSION_OLDEST: u32 = 1;

/// Round `n` up to the next multiple of 8.
#[must_use]
pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Round `n` up to the next multiple of 4 (packed records of format 7).
#[must_use]
pub const fn align4(n: u64) -> u64 {
    (n + 3) & !3
}

/// The most bytes a LEB128 varint of a `u64` takes.
pub const VARINT_BYTES_MAX: usize = 10;

/// Bytes of `v` as a LEB128 varint: 7 bits per byte, low bits first.
#[must_use]
pub const fn varint_len(v: u64) -> usize {
    // 1 for 0..=127, one more per further 7 bits.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append `v` as a LEB128 varint (the shortest form).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read a LEB128 varint at `*at`, moving `*at` past it. `None` when the bytes end inside it,
/// it does not fit a `u64`, or it is not the shortest form of its value (so that a value has
/// one encoding, as the CRC-checked formats expect).
#[inline]
#[must_use]
pub fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    for i in 1..VARINT_BYTES_MAX {
        let byte = *bytes.get(*at + i)?;
        let shift = 7 * i as u32;
        // The tenth byte holds the 64th bit alone.
        if i == VARINT_BYTES_MAX - 1 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            if byte == 0 {
                return None;
            }
            *at += i + 1;
            return Some(v);
        }
    }
    None
}

/// What is wrong with a byte range that does not decode. Callers turn it into
/// `Error::Corrupt` (with the path and offset they know) or treat it as the end of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Short { needed: u64, available: u64 },
    /// The magic does not match: not this kind of file or record, or zeros.
    BadMagic,
    /// A newer format than this build reads.
    UnsupportedVersion { found: u32 },
    /// The checksum does not match.
    BadChecksum { stored: u32, computed: u32 },
    /// A field holds an impossible value.
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { needed, available } => {
                write!(f, "needs {needed} bytes, only {available} available")
            }
            DecodeError::BadMagic => write!(f, "bad magic"),
            DecodeError::UnsupportedVersion { found } => {
                write!(
                    f,
                    "format version {found}, this build reads {FORMAT_VERSION}"
                )
            }
            DecodeError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            DecodeError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

/// Check the format version of a header.
pub(crate) fn check_version(found: u32) -> Result<(), DecodeError> {
    if (FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&found) {
        Ok(())
    } else if found > FORMAT_VERSION {
        Err(DecodeError::UnsupportedVersion { found })
    } else {
        Err(DecodeError::Invalid("format version 0"))
    }
}

pub(crate) fn short(needed: usize, available: usize) -> DecodeError {
    DecodeError::Short {
        needed: needed as u64,
        available: available as u64,
    }
}

/// The checks every 64-byte slot (`CHECKPOINT`, a subscription checkpoint) shares: the magic
/// at 0, the CRC-32C of bytes 0..60 stored at 60, the format version at 8.
pub(crate) fn check_slot(bytes: &[u8], magic: &[u8; 8]) -> Result<(), DecodeError> {
    if bytes.len() < 64 {
        return Err(short(64, bytes.len()));
    }
    if &bytes[..8] != magic {
        return Err(DecodeError::BadMagic);
    }
    let stored = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
    let computed = crate::format::crc::crc32c(&bytes[..60]);
    if computed != stored {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    check_version(u32::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11],
    ]))
}

/// Of two alternating slots, the valid one with the higher sequence, and why each did not
/// decode. A slot of an unsupported version wins over everything: the file is too new.
///
/// # Errors
/// When neither slot is valid, the error of slot A.
pub(crate) fn newest_slot<T>(
    a: Result<T, DecodeError>,
    b: Result<T, DecodeError>,
    sequence: impl Fn(&T) -> u64,
) -> Result<(T, [Option<DecodeError>; 2]), DecodeError> {
    for r in [&a, &b] {
        if let Err(DecodeError::UnsupportedVersion { found }) = r {
            return Err(DecodeError::UnsupportedVersion { found: *found });
        }
    }
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((
            if sequence(&b) > sequence(&a) { b } else { a },
            [None, None],
        )),
        (Ok(a), Err(eb)) => Ok((a, [None, Some(eb)])),
        (Err(ea), Ok(b)) => Ok((b, [Some(ea), None])),
        (Err(ea), Err(_)) => Err(ea),
    }
}

#[cfg(test)]
mod varint_tests {
    use super::{get_varint, put_varint, varint_len, VARINT_BYTES_MAX};

    #[test]
    fn varints_round_trip_at_every_width_and_refuse_what_is_not_one() {
        let mut values = vec![0, 1, 127, 128, 16_383, 16_384, u64::MAX, u64::MAX - 1];
        values.extend((0..64).map(|b| 1_u64 << b));
        values.extend((1..64).map(|b| (1_u64 << b) - 1));
        for v in values {
            let mut out = vec![0xee];
            put_varint(&mut out, v);
            assert_eq!(out.len() - 1, varint_len(v), "{v}");
            assert!(varint_len(v) <= VARINT_BYTES_MAX);
            let mut at = 1;
            assert_eq!(get_varint(&out, &mut at), Some(v), "{v}");
            assert_eq!(at, out.len());
            // Cut anywhere inside: nothing.
            for cut in 1..out.len() {
                let mut at = 1;
                assert_eq!(get_varint(&out[..cut], &mut at), None, "{v} cut at {cut}");
            }
        }
        // Not the shortest form: 0 as two bytes, 1 with a zero continuation.
        assert_eq!(get_varint(&[0x80, 0x00], &mut 0), None);
        assert_eq!(get_varint(&[0x81, 0x00], &mut 0), None);
        // Beyond 64 bits: a tenth byte above 1, or an eleventh byte.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(get_varint(&over, &mut 0), None);
        let mut long = vec![0xff; 10];
        long.push(0x01);
        assert_eq!(get_varint(&long, &mut 0), None);
    }
}
