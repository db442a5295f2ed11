//! `REMOVALS`: the append-only log of stream truncations (segment-format.md §12).

use super::{check_slot, short, DecodeError, FORMAT_VERSION};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const REMOVALS_MAGIC: [u8; 8] = *b"SLREMOV\0";
pub const REMOVALS_HEADER_BYTES: u64 = 64;
pub const REMOVAL_BYTES: u64 = 48;
pub const REMOVAL_MAGIC: u16 = 0x4D52;
/// A truncation (`truncate_before`).
pub const REMOVAL_KIND_TRUNCATE: u8 = 0;
/// An invalidation: `covers_version` is the changeset, `covers_position` the position of the
/// invalidation event (segment-format.md §16).
pub const REMOVAL_KIND_INVALIDATE: u8 = 1;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RemovalsHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub reserved0: U32,
    pub store_id: U64,
    pub reserved1: [u8; 36],
    pub crc: U32,
}
const _: () = assert!(size_of::<RemovalsHeader>() == REMOVALS_HEADER_BYTES as usize);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RemovalRaw {
    pub magic: U16,
    pub collision: U16,
    pub kind: u8,
    pub reserved0: [u8; 3],
    pub stream_hash: U64,
    pub covers_version: U64,
    pub covers_position: U64,
    pub created_us: U64,
    pub reserved1: U32,
    pub crc: U32,
}
const _: () = assert!(size_of::<RemovalRaw>() == REMOVAL_BYTES as usize);

/// One truncation: every version of the stream at or below `covers_version`, and every position
/// of it at or below `covers_position`, is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    pub kind: u8,
    pub stream_hash: u64,
    pub collision: u16,
    pub covers_version: u64,
    pub covers_position: u64,
    pub created_us: u64,
}

#[must_use]
pub fn encode_header(store_id: u64) -> [u8; REMOVALS_HEADER_BYTES as usize] {
    let mut h = RemovalsHeader {
        magic: REMOVALS_MAGIC,
        format_version: FORMAT_VERSION.into(),
        reserved0: 0.into(),
        store_id: store_id.into(),
        reserved1: [0; 36],
        crc: 0.into(),
    };
    h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
    let mut out = [0u8; REMOVALS_HEADER_BYTES as usize];
    out.copy_from_slice(h.as_bytes());
    out
}

/// The store id of a `REMOVALS` header.
///
/// # Errors
/// Any `DecodeError` when the header is not valid.
pub fn decode_header(bytes: &[u8]) -> Result<u64, DecodeError> {
    check_slot(bytes, &REMOVALS_MAGIC)?;
    let (h, _) = RemovalsHeader::ref_from_prefix(bytes)
        .map_err(|_| short(REMOVALS_HEADER_BYTES as usize, bytes.len()))?;
    Ok(h.store_id.get())
}

impl Removal {
    #[must_use]
    pub fn encode(&self) -> [u8; REMOVAL_BYTES as usize] {
        let mut r = RemovalRaw {
            magic: REMOVAL_MAGIC.into(),
            collision: self.collision.into(),
            kind: self.kind,
            reserved0: [0; 3],
            stream_hash: self.stream_hash.into(),
            covers_version: self.covers_version.into(),
            covers_position: self.covers_position.into(),
            created_us: self.created_us.into(),
            reserved1: 0.into(),
            crc: 0.into(),
        };
        r.crc = crate::format::crc::crc32c(&r.as_bytes()[..44]).into();
        let mut out = [0u8; REMOVAL_BYTES as usize];
        out.copy_from_slice(r.as_bytes());
        out
    }

    /// Decode one record.
    ///
    /// # Errors
    /// `BadMagic` for zeros, `BadChecksum` for a torn record, `Short`.
    pub fn decode(bytes: &[u8]) -> Result<Removal, DecodeError> {
        let (r, _) = RemovalRaw::ref_from_prefix(bytes)
            .map_err(|_| short(REMOVAL_BYTES as usize, bytes.len()))?;
        if r.magic.get() != REMOVAL_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let computed = crate::format::crc::crc32c(&bytes[..44]);
        if computed != r.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: r.crc.get(),
                computed,
            });
        }
        if r.reserved0 != [0; 3] || r.reserved1.get() != 0 || r.kind > REMOVAL_KIND_INVALIDATE {
            return Err(DecodeError::Invalid("removal reserved bytes"));
        }
        Ok(Removal {
            kind: r.kind,
            stream_hash: r.stream_hash.get(),
            collision: r.collision.get(),
            covers_version: r.covers_version.get(),
            covers_position: r.covers_position.get(),
            created_us: r.created_us.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let r = Removal {
            kind: REMOVAL_KIND_INVALIDATE,
            stream_hash: 7,
            collision: 1,
            covers_version: 9,
            covers_position: 99,
            created_us: 5,
        };
        let bytes = r.encode();
        assert_eq!(Removal::decode(&bytes), Ok(r));
        for bit in 0..(REMOVAL_BYTES as usize * 8) {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Removal::decode(&bad).is_err(), "bit {bit}");
        }
        assert_eq!(decode_header(&encode_header(42)), Ok(42));
        assert!(Removal::decode(&[0u8; 48]).is_err());
    }
}
