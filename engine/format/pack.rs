//! Packs and fan-out tables: small streams' records in shared files (segment-format.md §19,
//! format 4).
//!
//! Two fields change after their file is written: a pack's `committed_end` and a table entry's
//! `last_position`. Each sits in a 16-byte slot of its own with its own CRC, apart from the
//! bytes written once, so that writing it in place (at a flush, §19) can never damage them.

use super::{align8, short, DecodeError};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const PACK_MAGIC: [u8; 8] = *b"SLPACK\0\0";
pub const TABLE_MAGIC: [u8; 8] = *b"SLPACKT\0";
/// Packs and tables first appear in format 4: they carry it whatever else the store holds.
pub const PACK_FORMAT_VERSION: u32 = 4;
pub const PACK_HEADER_BYTES: usize = 64;
/// The `committed_end` slot follows the header.
pub const PACK_END_BYTES: usize = 16;
/// Records start here: header, end slot, and zeros up to a 128-byte boundary.
pub const PACK_RECORDS_START: u64 = 128;
pub const TABLE_HEADER_BYTES: usize = 64;
/// A table entry's fixed part; the stream id follows, padded to 8.
pub const TABLE_ENTRY_FIXED_BYTES: usize = 48;
/// Offset of the `last_position` slot within an entry.
pub const TABLE_LAST_OFFSET: usize = 32;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PackFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub pack: U32,
    pub store_id: U64,
    pub first_position: U64,
    pub created_us: U64,
    pub reserved: [u8; 20],
    pub crc: U32,
}
const _: () = assert!(size_of::<PackFileHeader>() == PACK_HEADER_BYTES);

/// The in-place slot after a pack's header (document offsets 64..80).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PackEndSlot {
    pub committed_end: U64,
    pub end_reserved: U32,
    pub end_crc: U32,
}
const _: () = assert!(size_of::<PackEndSlot>() == PACK_END_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TableFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub fanout: U32,
    pub store_id: U64,
    pub reserved: [u8; 36],
    pub crc: U32,
}
const _: () = assert!(size_of::<TableFileHeader>() == TABLE_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TableEntryRaw {
    pub stream_hash: U64,
    pub collision: U16,
    pub stream_id_len: U16,
    pub entry_bytes: U32,
    pub first_position: U64,
    pub reserved: U32,
    pub crc: U32,
    pub last_position: U64,
    pub last_reserved: U32,
    pub last_crc: U32,
}
const _: () = assert!(size_of::<TableEntryRaw>() == TABLE_ENTRY_FIXED_BYTES);

/// What a pack header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackHeader {
    pub pack: u32,
    pub store_id: u64,
    pub first_position: u64,
    pub created_us: u64,
}

fn check_version(found: u32) -> Result<(), DecodeError> {
    match found {
        PACK_FORMAT_VERSION => Ok(()),
        v if v > PACK_FORMAT_VERSION => Err(DecodeError::UnsupportedVersion { found: v }),
        _ => Err(DecodeError::Invalid("pack or table of a format before 4")),
    }
}

fn check_crc(stored: u32, computed: u32) -> Result<(), DecodeError> {
    if stored == computed {
        Ok(())
    } else {
        Err(DecodeError::BadChecksum { stored, computed })
    }
}

impl PackHeader {
    /// The first `PACK_RECORDS_START` bytes of a new pack: header, an end slot of zeros (never
    /// flushed), zeros.
    #[must_use]
    pub fn encode(&self) -> [u8; PACK_RECORDS_START as usize] {
        let mut h = PackFileHeader {
            magic: PACK_MAGIC,
            format_version: PACK_FORMAT_VERSION.into(),
            pack: self.pack.into(),
            store_id: self.store_id.into(),
            first_position: self.first_position.into(),
            created_us: self.created_us.into(),
            reserved: [0; 20],
            crc: 0.into(),
        };
        h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
        let mut out = [0u8; PACK_RECORDS_START as usize];
        out[..PACK_HEADER_BYTES].copy_from_slice(h.as_bytes());
        out
    }

    /// Decode the header at the start of a pack.
    ///
    /// # Errors
    /// `BadMagic`, `BadChecksum`, `UnsupportedVersion`, `Short`, or `Invalid` reserved bytes.
    pub fn decode(bytes: &[u8]) -> Result<PackHeader, DecodeError> {
        let (h, _) = PackFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(PACK_HEADER_BYTES, bytes.len()))?;
        if h.magic != PACK_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        check_crc(h.crc.get(), crate::format::crc::crc32c(&bytes[..60]))?;
        check_version(h.format_version.get())?;
        if h.reserved != [0; 20] {
            return Err(DecodeError::Invalid("pack header reserved bytes"));
        }
        Ok(PackHeader {
            pack: h.pack.get(),
            store_id: h.store_id.get(),
            first_position: h.first_position.get(),
            created_us: h.created_us.get(),
        })
    }
}

/// The end slot of pack `pack` claiming `committed_end`, to be written at offset
/// `PACK_HEADER_BYTES`.
#[must_use]
pub fn encode_pack_end(pack: u32, committed_end: u64) -> [u8; PACK_END_BYTES] {
    let mut s = PackEndSlot {
        committed_end: committed_end.into(),
        end_reserved: 0.into(),
        end_crc: 0.into(),
    };
    let crc = crate::format::crc::crc32c_append(
        crate::format::crc::crc32c(&s.as_bytes()[..12]),
        &pack.to_le_bytes(),
    );
    s.end_crc = crc.into();
    let mut out = [0u8; PACK_END_BYTES];
    out.copy_from_slice(s.as_bytes());
    out
}

/// The `committed_end` of pack `pack`'s end slot (the 16 bytes at `PACK_HEADER_BYTES`), or
/// `None` for zeros: no flush has written it since the pack was created.
///
/// # Errors
/// `BadChecksum` (a torn write, or a slot of another pack), `Short`, `Invalid`.
pub fn decode_pack_end(bytes: &[u8], pack: u32) -> Result<Option<u64>, DecodeError> {
    let (s, _) =
        PackEndSlot::ref_from_prefix(bytes).map_err(|_| short(PACK_END_BYTES, bytes.len()))?;
    if s.as_bytes() == [0u8; PACK_END_BYTES] {
        return Ok(None);
    }
    let crc = crate::format::crc::crc32c_append(
        crate::format::crc::crc32c(&s.as_bytes()[..12]),
        &pack.to_le_bytes(),
    );
    check_crc(s.end_crc.get(), crc)?;
    let end = s.committed_end.get();
    // Records of format 7 are 4-byte aligned (8 before).
    if s.end_reserved.get() != 0 || end < PACK_RECORDS_START || end % 4 != 0 {
        return Err(DecodeError::Invalid("pack committed_end"));
    }
    Ok(Some(end))
}

/// The header of fan-out `fanout`'s table.
#[must_use]
pub fn encode_table_header(store_id: u64, fanout: u32) -> [u8; TABLE_HEADER_BYTES] {
    let mut h = TableFileHeader {
        magic: TABLE_MAGIC,
        format_version: PACK_FORMAT_VERSION.into(),
        fanout: fanout.into(),
        store_id: store_id.into(),
        reserved: [0; 36],
        crc: 0.into(),
    };
    h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
    let mut out = [0u8; TABLE_HEADER_BYTES];
    out.copy_from_slice(h.as_bytes());
    out
}

/// `(store_id, fanout)` of a table header.
///
/// # Errors
/// `BadMagic`, `BadChecksum`, `UnsupportedVersion`, `Short`, `Invalid`.
pub fn decode_table_header(bytes: &[u8]) -> Result<(u64, u32), DecodeError> {
    let (h, _) = TableFileHeader::ref_from_prefix(bytes)
        .map_err(|_| short(TABLE_HEADER_BYTES, bytes.len()))?;
    if h.magic != TABLE_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    check_crc(h.crc.get(), crate::format::crc::crc32c(&bytes[..60]))?;
    check_version(h.format_version.get())?;
    if h.reserved != [0; 36] {
        return Err(DecodeError::Invalid("table header reserved bytes"));
    }
    Ok((h.store_id.get(), h.fanout.get()))
}

/// One packed stream's entry in its fan-out's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub stream_hash: u64,
    pub collision: u16,
    /// The position of the stream's first record: the entry counts only once it is committed.
    pub first_position: u64,
    /// Shared: a packed event read by `read_all` carries it without a copy.
    pub stream_id: std::sync::Arc<str>,
    /// The in-place slot: the last packed position a flush wrote, `None` before the first.
    pub last_position: Option<u64>,
}

/// A table entry whose stream id is borrowed: from the bytes it was decoded from, or from the
/// table that holds it (engine/packs.rs keeps every id of a table in one buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntryRef<'a> {
    pub stream_hash: u64,
    pub collision: u16,
    pub first_position: u64,
    pub stream_id: &'a str,
    pub last_position: Option<u64>,
}

impl TableEntryRef<'_> {
    /// Bytes the entry takes in the table.
    #[must_use]
    pub fn entry_bytes(&self) -> usize {
        TABLE_ENTRY_FIXED_BYTES + align8(self.stream_id.len() as u64) as usize
    }

    #[must_use]
    pub fn to_entry(&self) -> TableEntry {
        TableEntry {
            stream_hash: self.stream_hash,
            collision: self.collision,
            first_position: self.first_position,
            stream_id: std::sync::Arc::from(self.stream_id),
            last_position: self.last_position,
        }
    }
}

/// The fixed fields of an entry that does not decode, read as they are (no check): enough to ask
/// the index whether the entry was committed, and so whether it is damage or a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPeek {
    pub stream_hash: u64,
    pub collision: u16,
    pub first_position: u64,
    /// The entry's length as written, when it is a length an entry can have.
    pub entry_bytes: Option<usize>,
}

#[must_use]
pub fn peek_entry(bytes: &[u8]) -> Option<EntryPeek> {
    let (e, _) = TableEntryRaw::ref_from_prefix(bytes).ok()?;
    let len = e.entry_bytes.get() as usize;
    Some(EntryPeek {
        stream_hash: e.stream_hash.get(),
        collision: e.collision.get(),
        first_position: e.first_position.get(),
        entry_bytes: (len > TABLE_ENTRY_FIXED_BYTES && len % 8 == 0).then_some(len),
    })
}

impl TableEntry {
    /// Bytes the entry takes in the table.
    #[must_use]
    pub fn entry_bytes(&self) -> usize {
        TABLE_ENTRY_FIXED_BYTES + align8(self.stream_id.len() as u64) as usize
    }

    /// The entry as appended at the stream's creation: its slot zeros.
    ///
    /// # Panics
    /// When the stream id is longer than a `u16` can say; stream ids are validated long before
    /// (`STREAM_ID_BYTES_MAX` is 1,024).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let id = self.stream_id.as_bytes();
        let id_len = u16::try_from(id.len()).expect("stream ids are validated to 1,024 bytes");
        let entry_bytes = self.entry_bytes();
        let mut e = TableEntryRaw {
            stream_hash: self.stream_hash.into(),
            collision: self.collision.into(),
            stream_id_len: id_len.into(),
            entry_bytes: u32::try_from(entry_bytes)
                .expect("entries are small")
                .into(),
            first_position: self.first_position.into(),
            reserved: 0.into(),
            crc: 0.into(),
            last_position: 0.into(),
            last_reserved: 0.into(),
            last_crc: 0.into(),
        };
        e.crc =
            crate::format::crc::crc32c_append(crate::format::crc::crc32c(&e.as_bytes()[..28]), id)
                .into();
        let mut out = Vec::with_capacity(entry_bytes);
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(id);
        out.resize(entry_bytes, 0);
        if let Some(last) = self.last_position {
            let slot = encode_table_last(&out, last);
            out[TABLE_LAST_OFFSET..TABLE_ENTRY_FIXED_BYTES].copy_from_slice(&slot);
        }
        out
    }

    /// Decode the entry at the start of `bytes`; with it, the bytes it takes. A slot that does
    /// not verify (zeros, or torn) reads as `last_position: None`.
    ///
    /// # Errors
    /// `BadMagic` for zeros (the end of the table), `BadChecksum` for a torn entry, `Short`,
    /// `Invalid`.
    pub fn decode(bytes: &[u8]) -> Result<(TableEntry, usize), DecodeError> {
        decode_entry(bytes).map(|(e, len)| (e.to_entry(), len))
    }

    #[must_use]
    pub fn as_ref(&self) -> TableEntryRef<'_> {
        TableEntryRef {
            stream_hash: self.stream_hash,
            collision: self.collision,
            first_position: self.first_position,
            stream_id: &self.stream_id,
            last_position: self.last_position,
        }
    }
}

/// `TableEntry::decode`, the stream id borrowed from `bytes` (no allocation: a table read
/// copies every id into one buffer).
///
/// # Errors
/// As `TableEntry::decode`.
pub fn decode_entry(bytes: &[u8]) -> Result<(TableEntryRef<'_>, usize), DecodeError> {
    let (e, rest) = TableEntryRaw::ref_from_prefix(bytes)
        .map_err(|_| short(TABLE_ENTRY_FIXED_BYTES, bytes.len()))?;
    let entry_bytes = e.entry_bytes.get() as usize;
    if entry_bytes == 0 {
        return Err(DecodeError::BadMagic);
    }
    let id_len = usize::from(e.stream_id_len.get());
    if entry_bytes != TABLE_ENTRY_FIXED_BYTES + align8(id_len as u64) as usize {
        return Err(DecodeError::Invalid("table entry length"));
    }
    if bytes.len() < entry_bytes {
        return Err(short(entry_bytes, bytes.len()));
    }
    let id = &rest[..id_len];
    let computed = crate::format::crc::crc32c_append(crate::format::crc::crc32c(&bytes[..28]), id);
    check_crc(e.crc.get(), computed)?;
    if e.reserved.get() != 0
        || rest[id_len..entry_bytes - TABLE_ENTRY_FIXED_BYTES]
            .iter()
            .any(|b| *b != 0)
    {
        return Err(DecodeError::Invalid("table entry reserved bytes"));
    }
    let stream_id =
        std::str::from_utf8(id).map_err(|_| DecodeError::Invalid("stream id is not UTF-8"))?;
    // The slot is written in place at flushes: a flush a crash or an I/O error cut short
    // can leave it torn. That costs its value (recovery writes it again: segment-format.md
    // §19), never the entry.
    let slot = &bytes[TABLE_LAST_OFFSET..TABLE_ENTRY_FIXED_BYTES];
    let computed =
        crate::format::crc::crc32c_append(crate::format::crc::crc32c(&slot[..12]), &bytes[..10]);
    let last_position =
        (computed == e.last_crc.get() && e.last_reserved.get() == 0 && e.last_position.get() != 0)
            .then(|| e.last_position.get());
    Ok((
        TableEntryRef {
            stream_hash: e.stream_hash.get(),
            collision: e.collision.get(),
            first_position: e.first_position.get(),
            stream_id,
            last_position,
        },
        entry_bytes,
    ))
}

/// The 16-byte `last_position` slot of the entry whose first bytes are `entry` (at least its
/// first 10: the stream key, which the slot's CRC binds), to be written at the entry's offset +
/// `TABLE_LAST_OFFSET`.
///
/// # Panics
/// When `entry` is shorter than 10 bytes (callers pass an encoded entry).
#[must_use]
pub fn encode_table_last(entry: &[u8], last_position: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&last_position.to_le_bytes());
    let crc =
        crate::format::crc::crc32c_append(crate::format::crc::crc32c(&out[..12]), &entry[..10]);
    out[12..].copy_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> TableEntry {
        TableEntry {
            stream_hash: 0x0123_4567_89ab_cdef,
            collision: 2,
            first_position: 77,
            stream_id: "order-42".into(),
            last_position: None,
        }
    }

    #[test]
    fn pack_header_and_end_slot_round_trip_and_catch_every_flip() {
        let h = PackHeader {
            pack: 3,
            store_id: 9,
            first_position: 1_000,
            created_us: 5,
        };
        let bytes = h.encode();
        assert_eq!(PackHeader::decode(&bytes), Ok(h));
        for bit in 0..PACK_HEADER_BYTES * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(PackHeader::decode(&bad).is_err(), "bit {bit}");
        }
        assert_eq!(decode_pack_end(&bytes[64..80], 3), Ok(None));
        let end = encode_pack_end(3, 4_096);
        assert_eq!(decode_pack_end(&end, 3), Ok(Some(4_096)));
        // The slot of another pack, copied over this one, does not pass.
        assert!(decode_pack_end(&end, 4).is_err());
        for bit in 0..PACK_END_BYTES * 8 {
            let mut bad = end;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_pack_end(&bad, 3) != Ok(Some(4_096)), "bit {bit}");
        }
        assert!(PackHeader::decode(&[0u8; 64]).is_err());
    }

    #[test]
    fn table_entry_and_slot_round_trip_and_catch_every_flip() {
        let header = encode_table_header(9, 0xabc);
        assert_eq!(decode_table_header(&header), Ok((9, 0xabc)));

        let e = entry();
        let fresh = e.encode();
        assert_eq!(fresh.len(), 48 + 8);
        assert_eq!(TableEntry::decode(&fresh), Ok((e.clone(), 56)));
        let mut flushed = fresh.clone();
        let slot = encode_table_last(&flushed, 1_234);
        flushed[TABLE_LAST_OFFSET..TABLE_ENTRY_FIXED_BYTES].copy_from_slice(&slot);
        let with_last = TableEntry {
            last_position: Some(1_234),
            ..e.clone()
        };
        assert_eq!(TableEntry::decode(&flushed), Ok((with_last.clone(), 56)));
        assert_eq!(with_last.encode(), flushed);
        for bit in 0..flushed.len() * 8 {
            let mut bad = flushed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                TableEntry::decode(&bad).map(|(e, _)| e) != Ok(with_last.clone()),
                "bit {bit}"
            );
        }
        // The end of a table: zeros.
        assert_eq!(TableEntry::decode(&[0u8; 64]), Err(DecodeError::BadMagic));
        // A slot copied from another stream's entry does not pass.
        let other = TableEntry {
            collision: 3,
            ..e.clone()
        }
        .encode();
        let mut swapped = fresh;
        swapped[TABLE_LAST_OFFSET..TABLE_ENTRY_FIXED_BYTES]
            .copy_from_slice(&encode_table_last(&other, 1_234));
        assert_eq!(TableEntry::decode(&swapped), Ok((e, 56)));
    }
}
