//! `MANIFEST`: the store's identity (segment-format.md §2).

use super::{check_version, short, DecodeError};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MANIFEST_MAGIC: [u8; 8] = *b"SLMANIF\0";
pub const MANIFEST_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ManifestHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub flags: U32,
    pub store_id: U64,
    pub hash_key: [u8; 16],
    pub index_entries_per_file: U64,
    pub created_us: U64,
    pub reserved1: U32,
    pub crc: U32,
}
const _: () = assert!(size_of::<ManifestHeader>() == MANIFEST_BYTES);

/// The decoded manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub store_id: u64,
    pub hash_key: [u8; 16],
    pub index_entries_per_file: u64,
    pub created_us: u64,
    /// The newest format version any file of the store may have (segment-format.md §13).
    pub format_version: u32,
    /// The store keeps the tables of its packed streams in `tables/`, 256 of them (set when a
    /// build of format 7 or later creates the store; segment-format.md §19). Clear: one table
    /// per fan-out folder, as formats 4 to 6 created them.
    pub tables_grouped: bool,
}

/// Manifest flag: tables of packed streams grouped in `tables/` (format 7).
pub const MANIFEST_FLAG_TABLES_GROUPED: u32 = 0x1;

impl Manifest {
    #[must_use]
    pub fn encode(&self) -> [u8; MANIFEST_BYTES] {
        let mut header = ManifestHeader {
            magic: MANIFEST_MAGIC,
            format_version: self.format_version.into(),
            flags: if self.tables_grouped {
                MANIFEST_FLAG_TABLES_GROUPED
            } else {
                0
            }
            .into(),
            store_id: self.store_id.into(),
            hash_key: self.hash_key,
            index_entries_per_file: self.index_entries_per_file.into(),
            created_us: self.created_us.into(),
            reserved1: 0.into(),
            crc: 0.into(),
        };
        header.crc = crate::format::crc::crc32c(&header.as_bytes()[..60]).into();
        let mut out = [0u8; MANIFEST_BYTES];
        out.copy_from_slice(header.as_bytes());
        out
    }

    /// Decode a manifest.
    ///
    /// # Errors
    /// Any `DecodeError` when the bytes are not a valid version-1 manifest.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        let (header, _) = ManifestHeader::ref_from_prefix(bytes)
            .map_err(|_| short(MANIFEST_BYTES, bytes.len()))?;
        if header.magic != MANIFEST_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let computed = crate::format::crc::crc32c(&bytes[..60]);
        if computed != header.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: header.crc.get(),
                computed,
            });
        }
        check_version(header.format_version.get())?;
        let per_file = header.index_entries_per_file.get();
        if per_file < crate::limits::INDEX_ENTRIES_PER_FILE_MIN || per_file > u64::from(u32::MAX) {
            return Err(DecodeError::Invalid("index_entries_per_file"));
        }
        let flags = header.flags.get();
        if flags & !MANIFEST_FLAG_TABLES_GROUPED != 0 {
            return Err(DecodeError::Invalid("unknown manifest flags"));
        }
        Ok(Manifest {
            tables_grouped: flags & MANIFEST_FLAG_TABLES_GROUPED != 0,
            store_id: header.store_id.get(),
            hash_key: header.hash_key,
            index_entries_per_file: per_file,
            created_us: header.created_us.get(),
            format_version: header.format_version.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_caught() {
        let m = Manifest {
            store_id: 0x1234_5678_9abc_def0,
            hash_key: [7; 16],
            index_entries_per_file: 1 << 20,
            created_us: 42,
            format_version: crate::format::FORMAT_VERSION,
            tables_grouped: true,
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        let per_fanout = Manifest {
            tables_grouped: false,
            ..m
        };
        assert_eq!(Manifest::decode(&per_fanout.encode()), Ok(per_fanout));
        // A flag this build does not know, under a valid CRC.
        let mut unknown = bytes;
        unknown[12] |= 0x2;
        let crc = crate::format::crc::crc32c(&unknown[..60]);
        unknown[60..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Manifest::decode(&unknown),
            Err(DecodeError::Invalid("unknown manifest flags"))
        );
        for bit in 0..MANIFEST_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&damaged).is_err(), "bit {bit}");
        }
        assert!(Manifest::decode(&[0u8; 64]).is_err());
        assert!(Manifest::decode(&bytes[..63]).is_err());
    }
}
