//! Index files: a header and one fixed-size entry per global position (segment-format.md §4).

use super::{check_version, short, DecodeError, FORMAT_VERSION};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const INDEX_MAGIC: [u8; 8] = *b"SLINDEX\0";
pub const INDEX_HEADER_BYTES: u64 = 64;
pub const INDEX_ENTRY_BYTES: u64 = 24;
/// A compacted index file's entries: the position, then the entry (segment-format.md §4).
pub const INDEX_SPARSE_ENTRY_BYTES: u64 = 32;
pub const INDEX_ENTRY_MAGIC: u8 = 0xA7;
/// First event of its append.
pub const FLAG_BEGIN: u8 = 0x01;
/// Last event of its append.
pub const FLAG_END: u8 = 0x02;
/// A stream control record (close, delete), not an event: readers of all streams skip it.
pub const FLAG_CONTROL: u8 = 0x04;
/// On an `END` entry: the atomic unit goes on at the next position (a multi-stream append,
/// segment-format.md §14). Format 2.
pub const FLAG_LINKED: u8 = 0x08;
/// The record is in a pack: `segment` is the pack number (format 4, segment-format.md §19).
pub const FLAG_PACKED: u8 = 0x10;
const FLAGS_KNOWN: u8 = FLAG_BEGIN | FLAG_END | FLAG_CONTROL | FLAG_LINKED | FLAG_PACKED;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndexFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub entry_bytes: U32,
    pub store_id: U64,
    pub file_number: U64,
    pub first_position: U64,
    pub capacity: U64,
    pub reserved: [u8; 12],
    pub crc: U32,
}
const _: () = assert!(size_of::<IndexFileHeader>() as u64 == INDEX_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndexEntryRaw {
    pub stream_hash: U64,
    pub segment: U32,
    pub offset: U32,
    pub collision: U16,
    pub flags: u8,
    pub magic: u8,
    pub crc: U32,
}
const _: () = assert!(size_of::<IndexEntryRaw>() as u64 == INDEX_ENTRY_BYTES);

/// The decoded header of index file `file_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub store_id: u64,
    pub file_number: u64,
    pub first_position: u64,
    pub capacity: u64,
    /// A compacted file: only live entries, each with its position (`entry_bytes` 32).
    pub sparse: bool,
}

impl IndexHeader {
    #[must_use]
    pub fn encode(&self) -> [u8; INDEX_HEADER_BYTES as usize] {
        let mut h = IndexFileHeader {
            magic: INDEX_MAGIC,
            format_version: FORMAT_VERSION.into(),
            entry_bytes: (if self.sparse {
                INDEX_SPARSE_ENTRY_BYTES
            } else {
                INDEX_ENTRY_BYTES
            } as u32)
                .into(),
            store_id: self.store_id.into(),
            file_number: self.file_number.into(),
            first_position: self.first_position.into(),
            capacity: self.capacity.into(),
            reserved: [0; 12],
            crc: 0.into(),
        };
        h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
        let mut out = [0u8; INDEX_HEADER_BYTES as usize];
        out.copy_from_slice(h.as_bytes());
        out
    }

    /// # Errors
    /// Any `DecodeError` when the bytes are not a valid index header.
    pub fn decode(bytes: &[u8]) -> Result<IndexHeader, DecodeError> {
        let (h, _) = IndexFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(INDEX_HEADER_BYTES as usize, bytes.len()))?;
        if h.magic != INDEX_MAGIC {
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
        let sparse = match u64::from(h.entry_bytes.get()) {
            INDEX_ENTRY_BYTES => false,
            INDEX_SPARSE_ENTRY_BYTES => true,
            _ => return Err(DecodeError::Invalid("entry_bytes")),
        };
        let header = IndexHeader {
            store_id: h.store_id.get(),
            file_number: h.file_number.get(),
            first_position: h.first_position.get(),
            capacity: h.capacity.get(),
            sparse,
        };
        let expected_first = header
            .file_number
            .checked_mul(header.capacity)
            .and_then(|p| p.checked_add(1));
        if header.capacity == 0 || expected_first != Some(header.first_position) {
            return Err(DecodeError::Invalid("first_position or capacity"));
        }
        Ok(header)
    }
}

/// Where one global position's event lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub stream_hash: u64,
    pub collision: u16,
    pub segment: u32,
    pub offset: u32,
    pub flags: u8,
}

impl IndexEntry {
    fn crc(bytes20: &[u8], position: u64) -> u32 {
        crate::format::crc::crc32c_append(
            crate::format::crc::crc32c(bytes20),
            &position.to_le_bytes(),
        )
    }

    #[must_use]
    pub fn encode(&self, position: u64) -> [u8; INDEX_ENTRY_BYTES as usize] {
        let mut e = IndexEntryRaw {
            stream_hash: self.stream_hash.into(),
            segment: self.segment.into(),
            offset: self.offset.into(),
            collision: self.collision.into(),
            flags: self.flags,
            magic: INDEX_ENTRY_MAGIC,
            crc: 0.into(),
        };
        e.crc = Self::crc(&e.as_bytes()[..20], position).into();
        let mut out = [0u8; INDEX_ENTRY_BYTES as usize];
        out.copy_from_slice(e.as_bytes());
        out
    }

    /// Decode the entry stored for `position`.
    ///
    /// # Errors
    /// `BadMagic` for an unwritten (zero) entry, `BadChecksum` for a torn or misplaced one.
    pub fn decode(bytes: &[u8], position: u64) -> Result<IndexEntry, DecodeError> {
        let (e, _) = IndexEntryRaw::ref_from_prefix(bytes)
            .map_err(|_| short(INDEX_ENTRY_BYTES as usize, bytes.len()))?;
        if e.magic != INDEX_ENTRY_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let computed = Self::crc(&bytes[..20], position);
        if computed != e.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: e.crc.get(),
                computed,
            });
        }
        if e.flags & !FLAGS_KNOWN != 0 || (e.flags & FLAG_LINKED != 0 && e.flags & FLAG_END == 0) {
            return Err(DecodeError::Invalid("index entry flags"));
        }
        Ok(IndexEntry {
            stream_hash: e.stream_hash.get(),
            collision: e.collision.get(),
            segment: e.segment.get(),
            offset: e.offset.get(),
            flags: e.flags,
        })
    }
}

/// The 32 bytes of a compacted file's entry for `position`.
#[must_use]
pub fn encode_sparse(position: u64, entry: &IndexEntry) -> [u8; INDEX_SPARSE_ENTRY_BYTES as usize] {
    let mut out = [0u8; INDEX_SPARSE_ENTRY_BYTES as usize];
    out[..8].copy_from_slice(&position.to_le_bytes());
    out[8..].copy_from_slice(&entry.encode(position));
    out
}

/// The entry of `position` in a compacted file's entries (`bytes` after the header, sorted by
/// position): `None` when compaction removed it. A binary search.
///
/// # Errors
/// The entry's `DecodeError` when it is damaged; `Invalid` when the entries are not sorted.
pub fn sparse_lookup(bytes: &[u8], position: u64) -> Result<Option<IndexEntry>, DecodeError> {
    let n = bytes.len() / INDEX_SPARSE_ENTRY_BYTES as usize;
    let at = |i: usize| {
        let start = i * INDEX_SPARSE_ENTRY_BYTES as usize;
        let mut p = [0u8; 8];
        p.copy_from_slice(&bytes[start..start + 8]);
        (u64::from_le_bytes(p), start)
    };
    let (mut low, mut high) = (0usize, n);
    while low < high {
        let mid = low + (high - low) / 2;
        let (p, start) = at(mid);
        match p.cmp(&position) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => {
                // The CRC binds the position: a damaged position field fails here.
                return IndexEntry::decode(
                    &bytes[start + 8..start + INDEX_SPARSE_ENTRY_BYTES as usize],
                    position,
                )
                .map(Some);
            }
        }
    }
    Ok(None)
}

/// The live entries of a compacted file's body (`bytes`, after the header) whose positions lie
/// in `from..=to`, in position order: one binary search, then a walk, so that a reader of a
/// range skips the removed positions between them without looking each up. A position field
/// that damage unsorted can end the walk early or skip entries; the CRC of every entry
/// returned still binds its position.
pub fn sparse_range(
    bytes: &[u8],
    from: u64,
    to: u64,
) -> impl Iterator<Item = (u64, Result<IndexEntry, DecodeError>)> + '_ {
    let chunks = bytes.chunks_exact(INDEX_SPARSE_ENTRY_BYTES as usize);
    let position_of = |chunk: &[u8]| {
        let mut p = [0u8; 8];
        p.copy_from_slice(&chunk[..8]);
        u64::from_le_bytes(p)
    };
    let n = chunks.len();
    let (mut low, mut high) = (0usize, n);
    while low < high {
        let mid = low + (high - low) / 2;
        let start = mid * INDEX_SPARSE_ENTRY_BYTES as usize;
        if position_of(&bytes[start..start + 8]) < from {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    chunks
        .skip(low)
        .map(move |chunk| (position_of(chunk), chunk))
        .take_while(move |(p, _)| *p <= to)
        .map(|(p, chunk)| (p, IndexEntry::decode(&chunk[8..], p)))
}

/// Which index file holds `position`, and the byte offset of its entry there.
#[must_use]
pub fn locate(position: u64, entries_per_file: u64) -> (u64, u64) {
    debug_assert!(position >= 1);
    let zero_based = position - 1;
    let file = zero_based / entries_per_file;
    let slot = zero_based % entries_per_file;
    (file, INDEX_HEADER_BYTES + slot * INDEX_ENTRY_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_a_compacted_file_yields_its_live_entries_in_it() {
        let entry = |p: u64| IndexEntry {
            stream_hash: p * 7,
            segment: 1,
            offset: p as u32 * 8,
            collision: 0,
            flags: 0,
        };
        let live = [3u64, 4, 9, 20, 21, 40];
        let body: Vec<u8> = live
            .iter()
            .flat_map(|p| encode_sparse(*p, &entry(*p)))
            .collect();
        for from in 0..45 {
            for to in from..45 {
                let got: Vec<u64> = sparse_range(&body, from, to)
                    .map(|(p, e)| {
                        assert_eq!(e, Ok(entry(p)));
                        p
                    })
                    .collect();
                let want: Vec<u64> = live
                    .iter()
                    .copied()
                    .filter(|p| (from..=to).contains(p))
                    .collect();
                assert_eq!(got, want, "{from}..={to}");
            }
        }
        // A position field changed: its entry's CRC no longer binds it.
        let mut bad = body.clone();
        bad[2 * 32] = 10;
        let got: Vec<_> = sparse_range(&bad, 10, 10).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].1.is_err());
    }

    #[test]
    fn entry_round_trip_and_position_is_bound_into_the_crc() {
        let e = IndexEntry {
            stream_hash: 0xdead_beef,
            collision: 3,
            segment: 7,
            offset: 4096,
            flags: FLAG_BEGIN | FLAG_END,
        };
        let bytes = e.encode(99);
        assert_eq!(IndexEntry::decode(&bytes, 99), Ok(e));
        assert!(matches!(
            IndexEntry::decode(&bytes, 100),
            Err(DecodeError::BadChecksum { .. })
        ));
        assert_eq!(
            IndexEntry::decode(&[0u8; 24], 1),
            Err(DecodeError::BadMagic)
        );
        for bit in 0..(INDEX_ENTRY_BYTES as usize * 8) {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(IndexEntry::decode(&damaged, 99).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn sparse_files_find_their_entries_and_miss_the_removed_ones() {
        let e = IndexEntry {
            stream_hash: 5,
            collision: 0,
            segment: 1,
            offset: 64,
            flags: FLAG_BEGIN | FLAG_END,
        };
        let mut bytes = Vec::new();
        for p in [3u64, 7, 8, 20] {
            bytes.extend_from_slice(&encode_sparse(p, &e));
        }
        for p in [3u64, 7, 8, 20] {
            assert_eq!(sparse_lookup(&bytes, p), Ok(Some(e)), "{p}");
        }
        for p in [1u64, 4, 9, 21] {
            assert_eq!(sparse_lookup(&bytes, p), Ok(None), "{p}");
        }
        // A flipped bit in a position field: the entry found under it fails its CRC, or the
        // entry is not found.
        let mut bad = bytes.clone();
        bad[32] ^= 0x02; // position 7 becomes 5
        assert!(
            sparse_lookup(&bad, 7).unwrap_or(None).is_none() || sparse_lookup(&bad, 7).is_err()
        );
        assert!(sparse_lookup(&bad, 5).is_err());
        let h = IndexHeader {
            store_id: 1,
            file_number: 0,
            first_position: 1,
            capacity: 64,
            sparse: true,
        };
        assert_eq!(IndexHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn linked_is_only_valid_on_an_end_entry() {
        let e = IndexEntry {
            stream_hash: 1,
            collision: 0,
            segment: 0,
            offset: 64,
            flags: FLAG_BEGIN | FLAG_END | FLAG_LINKED,
        };
        assert_eq!(IndexEntry::decode(&e.encode(5), 5), Ok(e));
        let bad = IndexEntry {
            flags: FLAG_BEGIN | FLAG_LINKED,
            ..e
        };
        assert_eq!(
            IndexEntry::decode(&bad.encode(5), 5),
            Err(DecodeError::Invalid("index entry flags"))
        );
    }

    #[test]
    fn locate_maps_positions_to_files_and_slots() {
        assert_eq!(locate(1, 64), (0, 64));
        assert_eq!(locate(64, 64), (0, 64 + 63 * 24));
        assert_eq!(locate(65, 64), (1, 64));
    }

    #[test]
    fn header_round_trip() {
        let h = IndexHeader {
            store_id: 5,
            file_number: 2,
            first_position: 129,
            capacity: 64,
            sparse: false,
        };
        assert_eq!(IndexHeader::decode(&h.encode()), Ok(h));
        let bad = IndexHeader {
            first_position: 128,
            ..h
        };
        assert!(IndexHeader::decode(&bad.encode()).is_err());
    }
}
