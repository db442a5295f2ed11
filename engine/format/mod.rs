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
pub const FORMAT_VERSION: u32 = 6;
/// The oldest format version this build reads.
pub const FORMAT_VERSION_OLDEST: u32 = 1;

/// Round `n` up to the next multiple of 8.
#[must_use]
pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
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
