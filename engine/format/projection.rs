//! Postings files of the indexes by category and event type (segment-format.md §17).

use super::{align8, check_version, short, DecodeError, FORMAT_VERSION};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const POSTINGS_MAGIC: [u8; 8] = *b"SLPOSTS\0";
pub const POSTINGS_FIXED_HEADER_BYTES: usize = 64;
pub const POSTING_BYTES: u64 = 8;
/// Longest category or event type name.
pub const POSTINGS_NAME_BYTES_MAX: usize = 1024;
/// Positions fit in the low 40 bits of a posting.
pub const POSTING_POSITION_MAX: u64 = (1 << 40) - 1;

/// What a postings file indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKind {
    /// Streams whose id starts with the name and a `-`.
    Category,
    /// Events of this type.
    EventType,
}

impl IndexKind {
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            IndexKind::Category => 1,
            IndexKind::EventType => 2,
        }
    }

    /// The letter of the file name.
    #[must_use]
    pub fn letter(self) -> char {
        match self {
            IndexKind::Category => 'c',
            IndexKind::EventType => 't',
        }
    }
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PostingsFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub header_bytes: U32,
    pub store_id: U64,
    pub id: U64,
    pub kind: u8,
    pub reserved0: u8,
    pub name_len: U16,
    pub reserved1: [u8; 24],
    pub crc: U32,
}
const _: () = assert!(size_of::<PostingsFileHeader>() == POSTINGS_FIXED_HEADER_BYTES);

/// The decoded header of a postings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingsHeader {
    pub store_id: u64,
    pub id: u64,
    pub kind: IndexKind,
    pub name: String,
}

impl PostingsHeader {
    /// Bytes the header takes; entries start there.
    #[must_use]
    pub fn header_bytes(&self) -> u64 {
        POSTINGS_FIXED_HEADER_BYTES as u64 + align8(self.name.len() as u64)
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.name.is_empty() && self.name.len() <= POSTINGS_NAME_BYTES_MAX);
        let header_bytes = self.header_bytes();
        let mut h = PostingsFileHeader {
            magic: POSTINGS_MAGIC,
            format_version: FORMAT_VERSION.into(),
            header_bytes: (header_bytes as u32).into(),
            store_id: self.store_id.into(),
            id: self.id.into(),
            kind: self.kind.code(),
            reserved0: 0,
            name_len: (self.name.len() as u16).into(),
            reserved1: [0; 24],
            crc: 0.into(),
        };
        h.crc = crate::format::crc::crc32c_append(
            crate::format::crc::crc32c(&h.as_bytes()[..60]),
            self.name.as_bytes(),
        )
        .into();
        let mut out = Vec::with_capacity(header_bytes as usize);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.resize(header_bytes as usize, 0);
        out
    }

    /// # Errors
    /// Any `DecodeError` when the bytes do not start with a valid postings header.
    pub fn decode(bytes: &[u8]) -> Result<PostingsHeader, DecodeError> {
        let (h, rest) = PostingsFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(POSTINGS_FIXED_HEADER_BYTES, bytes.len()))?;
        if h.magic != POSTINGS_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let len = usize::from(h.name_len.get());
        if len == 0 || len > POSTINGS_NAME_BYTES_MAX || len > rest.len() {
            return Err(short(POSTINGS_FIXED_HEADER_BYTES + len, bytes.len()));
        }
        let name = &rest[..len];
        let computed =
            crate::format::crc::crc32c_append(crate::format::crc::crc32c(&bytes[..60]), name);
        if computed != h.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: h.crc.get(),
                computed,
            });
        }
        check_version(h.format_version.get())?;
        let kind = match h.kind {
            1 => IndexKind::Category,
            2 => IndexKind::EventType,
            _ => return Err(DecodeError::Invalid("postings kind")),
        };
        let header = PostingsHeader {
            store_id: h.store_id.get(),
            id: h.id.get(),
            kind,
            name: std::str::from_utf8(name)
                .map_err(|_| DecodeError::Invalid("postings name is not UTF-8"))?
                .to_string(),
        };
        if u64::from(h.header_bytes.get()) != header.header_bytes()
            || h.reserved0 != 0
            || h.reserved1 != [0; 24]
        {
            return Err(DecodeError::Invalid("postings header fields"));
        }
        Ok(header)
    }
}

fn check_bits(id: u64, position: u64) -> u64 {
    let crc = crate::format::crc::crc32c_append(
        crate::format::crc::crc32c(&id.to_le_bytes()),
        &position.to_le_bytes(),
    );
    u64::from(crc & 0x00FF_FFFF)
}

/// The 8 bytes of a posting of `position` in file `id`.
#[must_use]
pub fn encode_posting(id: u64, position: u64) -> [u8; 8] {
    assert!((1..=POSTING_POSITION_MAX).contains(&position));
    ((check_bits(id, position) << 40) | position).to_le_bytes()
}

/// The position of a posting of file `id`; `None` when it fails its check (torn, stray, zeros).
#[must_use]
pub fn decode_posting(id: u64, bytes: [u8; 8]) -> Option<u64> {
    let v = u64::from_le_bytes(bytes);
    let position = v & POSTING_POSITION_MAX;
    (position >= 1 && v >> 40 == check_bits(id, position)).then_some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_postings_round_trip_and_damage_is_caught() {
        let h = PostingsHeader {
            store_id: 3,
            id: 9,
            kind: IndexKind::Category,
            name: "order".into(),
        };
        let bytes = h.encode();
        assert_eq!(PostingsHeader::decode(&bytes), Ok(h));
        for bit in 0..(64 + 5) * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(PostingsHeader::decode(&bad).is_err(), "bit {bit}");
        }
        let p = encode_posting(9, 123_456);
        assert_eq!(decode_posting(9, p), Some(123_456));
        assert_eq!(decode_posting(10, p), None, "another file's posting");
        assert_eq!(decode_posting(9, [0; 8]), None);
        for bit in 0..64 {
            let mut bad = p;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(decode_posting(9, bad), Some(123_456), "bit {bit}");
        }
    }
}
