//! Keys files: the newest event of each key of one stream (segment-format.md §15).

use super::{align8, check_version, short, DecodeError, FORMAT_VERSION};
use crate::limits::KEY_BYTES_MAX;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KEYS_MAGIC: [u8; 8] = *b"SLKEYS\0\0";
pub const KEYS_HEADER_BYTES: usize = 64;
pub const KEY_ENTRY_MAGIC: u16 = 0x594B;
pub const KEY_ENTRY_BYTES: usize = 56;
/// Header flag: the entries cannot be trusted; rebuild them from the stream.
pub const KEYS_FLAG_STALE: u32 = 0x01;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct KeysFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub flags: U32,
    pub store_id: U64,
    pub stream_hash: U64,
    pub collision: U16,
    pub reserved0: [u8; 6],
    pub base_position: U64,
    pub created_us: U64,
    pub reserved1: U32,
    pub crc: U32,
}
const _: () = assert!(size_of::<KeysFileHeader>() == KEYS_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct KeyEntryRaw {
    pub magic: U16,
    pub key_len: U16,
    pub offset: U32,
    pub version: U64,
    pub position: U64,
    pub changeset: U64,
    pub segment: U32,
    pub crc: U32,
    pub content_hash: [u8; 16],
}
const _: () = assert!(size_of::<KeyEntryRaw>() == KEY_ENTRY_BYTES);

/// The decoded header of a keys file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysHeader {
    pub store_id: u64,
    pub stream_hash: u64,
    pub collision: u16,
    pub stale: bool,
    pub base_position: u64,
    pub created_us: u64,
}

impl KeysHeader {
    #[must_use]
    pub fn encode(&self) -> [u8; KEYS_HEADER_BYTES] {
        let mut h = KeysFileHeader {
            magic: KEYS_MAGIC,
            format_version: FORMAT_VERSION.into(),
            flags: if self.stale { KEYS_FLAG_STALE } else { 0 }.into(),
            store_id: self.store_id.into(),
            stream_hash: self.stream_hash.into(),
            collision: self.collision.into(),
            reserved0: [0; 6],
            base_position: self.base_position.into(),
            created_us: self.created_us.into(),
            reserved1: 0.into(),
            crc: 0.into(),
        };
        h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
        let mut out = [0u8; KEYS_HEADER_BYTES];
        out.copy_from_slice(h.as_bytes());
        out
    }

    /// # Errors
    /// Any `DecodeError` when the bytes do not start with a valid keys file header.
    pub fn decode(bytes: &[u8]) -> Result<KeysHeader, DecodeError> {
        let (h, _) = KeysFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(KEYS_HEADER_BYTES, bytes.len()))?;
        if h.magic != KEYS_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let computed = crate::format::crc::crc32c(&bytes[..60]);
        if computed != h.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: h.crc.get(),
                computed,
            });
        }
        check_version(h.format_version.get())?;
        if h.flags.get() & !KEYS_FLAG_STALE != 0 || h.reserved0 != [0; 6] || h.reserved1.get() != 0
        {
            return Err(DecodeError::Invalid("keys header reserved bits"));
        }
        Ok(KeysHeader {
            store_id: h.store_id.get(),
            stream_hash: h.stream_hash.get(),
            collision: h.collision.get(),
            stale: h.flags.get() & KEYS_FLAG_STALE != 0,
            base_position: h.base_position.get(),
            created_us: h.created_us.get(),
        })
    }
}

/// One keyed event: where its record is, and the hash of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: Vec<u8>,
    pub version: u64,
    pub position: u64,
    pub changeset: u64,
    pub segment: u32,
    pub offset: u32,
    pub content_hash: [u8; 16],
}

impl KeyEntry {
    /// Append the entry (padded to 8 bytes) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(!self.key.is_empty() && self.key.len() <= KEY_BYTES_MAX);
        let mut raw = KeyEntryRaw {
            magic: KEY_ENTRY_MAGIC.into(),
            key_len: (self.key.len() as u16).into(),
            offset: self.offset.into(),
            version: self.version.into(),
            position: self.position.into(),
            changeset: self.changeset.into(),
            segment: self.segment.into(),
            crc: 0.into(),
            content_hash: self.content_hash,
        };
        raw.crc = entry_crc(raw.as_bytes(), &self.key).into();
        let start = out.len();
        out.extend_from_slice(raw.as_bytes());
        out.extend_from_slice(&self.key);
        out.resize(start + Self::padded_bytes(self.key.len()), 0);
    }

    /// Bytes an entry with a key of `key_len` bytes takes, padding included.
    #[must_use]
    pub fn padded_bytes(key_len: usize) -> usize {
        KEY_ENTRY_BYTES + align8(key_len as u64) as usize
    }

    /// Decode the entry at the start of `bytes`, with the bytes it takes.
    ///
    /// # Errors
    /// `BadMagic` for zeros, `Short`, `BadChecksum` for a torn entry, `Invalid`.
    pub fn decode(bytes: &[u8]) -> Result<(KeyEntry, usize), DecodeError> {
        let (raw, rest) =
            KeyEntryRaw::ref_from_prefix(bytes).map_err(|_| short(KEY_ENTRY_BYTES, bytes.len()))?;
        if raw.magic.get() != KEY_ENTRY_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let key_len = usize::from(raw.key_len.get());
        if key_len == 0 || key_len > KEY_BYTES_MAX {
            return Err(DecodeError::Invalid("key_len"));
        }
        let key = rest
            .get(..key_len)
            .ok_or_else(|| short(KEY_ENTRY_BYTES + key_len, bytes.len()))?;
        let computed = entry_crc(raw.as_bytes(), key);
        if computed != raw.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: raw.crc.get(),
                computed,
            });
        }
        if raw.version.get() == 0 || raw.position.get() == 0 || raw.changeset.get() == 0 {
            return Err(DecodeError::Invalid("version, position or changeset 0"));
        }
        Ok((
            KeyEntry {
                key: key.to_vec(),
                version: raw.version.get(),
                position: raw.position.get(),
                changeset: raw.changeset.get(),
                segment: raw.segment.get(),
                offset: raw.offset.get(),
                content_hash: raw.content_hash,
            },
            Self::padded_bytes(key_len).min(bytes.len()),
        ))
    }
}

fn entry_crc(raw: &[u8], key: &[u8]) -> u32 {
    let crc = crate::format::crc::crc32c(&raw[..36]);
    let crc = crate::format::crc::crc32c_append(crc, &raw[40..KEY_ENTRY_BYTES]);
    crate::format::crc::crc32c_append(crc, key)
}

/// The entries at the start of `bytes` (after the header), up to the first that does not
/// decode, with the offset (from the file's start) where that prefix ends.
#[must_use]
pub fn decode_entries(bytes: &[u8]) -> (Vec<KeyEntry>, u64) {
    let mut at = KEYS_HEADER_BYTES.min(bytes.len());
    let mut out = Vec::new();
    while at < bytes.len() {
        match KeyEntry::decode(&bytes[at..]) {
            Ok((e, n)) => {
                out.push(e);
                at += n;
            }
            Err(_) => break,
        }
    }
    (out, at as u64)
}

/// The content hash of an event: SipHash-1-3, 128 bits, keyed with the store's hash key, over
/// the type, metadata and data, each preceded by its length (segment-format.md §15).
#[must_use]
pub fn content_hash(
    hash_key: &[u8; 16],
    event_type: &[u8],
    metadata: &[u8],
    data: &[u8],
) -> [u8; 16] {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    let mut h = SipHasher13::new_with_key(hash_key);
    for part in [event_type, metadata, data] {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    h.finish128().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_entries_round_trip_and_every_flip_is_caught() {
        let h = KeysHeader {
            store_id: 1,
            stream_hash: 2,
            collision: 3,
            stale: false,
            base_position: 44,
            created_us: 5,
        };
        assert_eq!(KeysHeader::decode(&h.encode()), Ok(h));
        let e = KeyEntry {
            key: b"sku-17".to_vec(),
            version: 9,
            position: 120,
            changeset: 4,
            segment: 2,
            offset: 4096,
            content_hash: [7; 16],
        };
        let mut bytes = h.encode().to_vec();
        e.encode(&mut bytes);
        e.encode(&mut bytes);
        let (entries, end) = decode_entries(&bytes);
        assert_eq!(entries, vec![e.clone(), e]);
        assert_eq!(end, bytes.len() as u64);
        for bit in 0..(KEY_ENTRY_BYTES + 6) * 8 {
            let mut damaged = bytes.clone();
            damaged[KEYS_HEADER_BYTES + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_entries(&damaged).0.len(), 0, "bit {bit}");
        }
        // A torn tail ends the prefix.
        let (entries, end) = decode_entries(&bytes[..bytes.len() - 3]);
        assert_eq!((entries.len(), end), (1, (KEYS_HEADER_BYTES + 64) as u64));
    }

    #[test]
    fn content_hash_binds_the_field_boundaries() {
        let k = [1; 16];
        assert_ne!(
            content_hash(&k, b"T", b"ab", b"c"),
            content_hash(&k, b"T", b"a", b"bc")
        );
        assert_eq!(
            content_hash(&k, b"T", b"a", b"bc"),
            content_hash(&k, b"T", b"a", b"bc")
        );
        assert_ne!(
            content_hash(&k, b"T", b"a", b"bc"),
            content_hash(&[2; 16], b"T", b"a", b"bc")
        );
    }
}
