//! `JOURNAL`: the redo log of the writes of recent batches (segment-format.md §18).
//!
//! A frame holds every write one batch made to segment, keys and index files, in the order the
//! writer made them. Replaying a frame makes those files hold, at the frame's offsets, exactly
//! the bytes they held after the batch; the writer syncs one file per batch (this one) instead
//! of every file the batch touched.

use super::{short, DecodeError, FORMAT_VERSION};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const JOURNAL_MAGIC: [u8; 8] = *b"SLJOURN\0";
pub const JOURNAL_HEADER_BYTES: u64 = 64;
pub const FRAME_MAGIC: [u8; 4] = *b"SLJF";
pub const FRAME_HEADER_BYTES: usize = 48;
pub const OP_HEADER_BYTES: usize = 32;

/// Create the file (and its folder) if missing, and cut it to 0 bytes.
pub const OP_CREATE: u8 = 1;
/// Write `len` bytes at `offset`.
pub const OP_WRITE: u8 = 2;
/// Create the file if missing, and extend it to `offset` bytes if it is shorter.
pub const OP_EXTEND: u8 = 3;

pub const TARGET_SEGMENT: u8 = 1;
pub const TARGET_KEYS: u8 = 2;
pub const TARGET_INDEX: u8 = 3;
/// A pack (format 4, segment-format.md §19): `file` is the pack number.
pub const TARGET_PACK: u8 = 4;
/// A fan-out folder's table of packed streams: `file` is the fan-out number.
pub const TARGET_TABLE: u8 = 5;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub reserved0: U32,
    pub store_id: U64,
    pub reserved: [u8; 36],
    pub crc: U32,
}
const _: () = assert!(size_of::<JournalFileHeader>() == JOURNAL_HEADER_BYTES as usize);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: [u8; 4],
    pub frame_bytes: U32,
    pub store_id: U64,
    pub sequence: U64,
    pub first_position: U64,
    pub last_position: U64,
    pub op_count: U32,
    pub crc: U32,
}
const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OpHeader {
    pub op: u8,
    pub target: u8,
    pub collision: U16,
    pub segment: U32,
    pub file: U64,
    pub offset: U64,
    pub len: U32,
    pub reserved: U32,
}
const _: () = assert!(size_of::<OpHeader>() == OP_HEADER_BYTES);

/// Which file an operation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Segment {
        hash: u64,
        collision: u16,
        segment: u32,
    },
    Keys {
        hash: u64,
        collision: u16,
    },
    Index {
        file_number: u64,
    },
    Pack {
        pack: u32,
    },
    /// A table of packed streams, by its number (its fan-out, or its group: `layout::Tables`).
    Table {
        number: u16,
    },
}

/// One decoded operation; `bytes` borrows from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Create(Target),
    Write(Target, u64, &'a [u8]),
    Extend(Target, u64),
}

/// The journal file's header for a store.
#[must_use]
pub fn encode_file_header(store_id: u64) -> [u8; JOURNAL_HEADER_BYTES as usize] {
    let mut h = JournalFileHeader {
        magic: JOURNAL_MAGIC,
        format_version: FORMAT_VERSION.into(),
        reserved0: 0.into(),
        store_id: store_id.into(),
        reserved: [0; 36],
        crc: 0.into(),
    };
    h.crc = crate::format::crc::crc32c(&h.as_bytes()[..60]).into();
    let mut out = [0u8; JOURNAL_HEADER_BYTES as usize];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Decode the journal file's header; returns its store id.
///
/// # Errors
/// Any `DecodeError` when the header is not valid.
pub fn decode_file_header(bytes: &[u8]) -> Result<u64, DecodeError> {
    // Laid out as a 64-byte slot: magic at 0, version at 8, CRC of 0..60 at 60.
    super::check_slot(bytes, &JOURNAL_MAGIC)?;
    let (h, _) = JournalFileHeader::ref_from_prefix(bytes)
        .map_err(|_| short(JOURNAL_HEADER_BYTES as usize, bytes.len()))?;
    Ok(h.store_id.get())
}

/// A frame being built: the writer adds each write as it makes it.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    bytes: Vec<u8>,
    ops: u32,
}

impl FrameBuilder {
    #[must_use]
    pub fn new() -> FrameBuilder {
        let mut bytes = Vec::with_capacity(4096);
        bytes.resize(FRAME_HEADER_BYTES, 0);
        FrameBuilder { bytes, ops: 0 }
    }

    fn op(&mut self, op: u8, target: Target, offset: u64, data: &[u8]) {
        let (t, collision, segment, file) = match target {
            Target::Segment {
                hash,
                collision,
                segment,
            } => (TARGET_SEGMENT, collision, segment, hash),
            Target::Keys { hash, collision } => (TARGET_KEYS, collision, 0, hash),
            Target::Index { file_number } => (TARGET_INDEX, 0, 0, file_number),
            Target::Pack { pack } => (TARGET_PACK, 0, 0, u64::from(pack)),
            Target::Table { number } => (TARGET_TABLE, 0, 0, u64::from(number)),
        };
        let len = u32::try_from(data.len()).expect("a batch's write is below 4 GiB");
        let h = OpHeader {
            op,
            target: t,
            collision: collision.into(),
            segment: segment.into(),
            file: file.into(),
            offset: offset.into(),
            len: len.into(),
            reserved: 0.into(),
        };
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let padded = super::align8(self.bytes.len() as u64) as usize;
        self.bytes.resize(padded, 0);
        self.ops += 1;
    }

    pub fn create(&mut self, target: Target) {
        self.op(OP_CREATE, target, 0, &[]);
    }

    pub fn write(&mut self, target: Target, offset: u64, data: &[u8]) {
        self.op(OP_WRITE, target, offset, data);
    }

    pub fn extend(&mut self, target: Target, len: u64) {
        self.op(OP_EXTEND, target, len, &[]);
    }

    /// Bytes the finished frame takes in the file (a multiple of 8).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Seal the frame: fill in its header and checksum.
    #[must_use]
    pub fn finish(
        mut self,
        store_id: u64,
        sequence: u64,
        first_position: u64,
        last_position: u64,
    ) -> Vec<u8> {
        let frame_bytes = u32::try_from(self.bytes.len()).expect("a frame is below 4 GiB");
        let mut h = FrameHeader {
            magic: FRAME_MAGIC,
            frame_bytes: frame_bytes.into(),
            store_id: store_id.into(),
            sequence: sequence.into(),
            first_position: first_position.into(),
            last_position: last_position.into(),
            op_count: self.ops.into(),
            crc: 0.into(),
        };
        let mut crc = crate::format::crc::crc32c(&h.as_bytes()[..FRAME_HEADER_BYTES - 4]);
        crc = crate::format::crc::crc32c_append(crc, &self.bytes[FRAME_HEADER_BYTES..]);
        h.crc = crc.into();
        self.bytes[..FRAME_HEADER_BYTES].copy_from_slice(h.as_bytes());
        self.bytes
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub frame_bytes: u32,
    pub sequence: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub op_count: u32,
}

/// Decode the header of the frame at the start of `bytes` without checking its body: how many
/// bytes the whole frame needs. `Err` when no frame of this store starts here.
///
/// # Errors
/// `BadMagic` (zeros, or not a frame), `Invalid` (another store's frame, or a length below the
/// header).
pub fn peek_frame(bytes: &[u8], store_id: u64) -> Result<Frame, DecodeError> {
    let (h, _) =
        FrameHeader::ref_from_prefix(bytes).map_err(|_| short(FRAME_HEADER_BYTES, bytes.len()))?;
    if h.magic != FRAME_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if h.store_id.get() != store_id {
        return Err(DecodeError::Invalid("frame of another store"));
    }
    if (h.frame_bytes.get() as usize) < FRAME_HEADER_BYTES {
        return Err(DecodeError::Invalid("frame shorter than its header"));
    }
    Ok(Frame {
        frame_bytes: h.frame_bytes.get(),
        sequence: h.sequence.get(),
        first_position: h.first_position.get(),
        last_position: h.last_position.get(),
        op_count: h.op_count.get(),
    })
}

/// Decode a whole frame (`bytes` holds at least `frame_bytes`): its header checked against its
/// checksum, and its operations.
///
/// # Errors
/// Any `DecodeError`: a torn or foreign frame, or an operation that does not decode.
pub fn decode_frame(bytes: &[u8], store_id: u64) -> Result<(Frame, Vec<Op<'_>>), DecodeError> {
    let frame = peek_frame(bytes, store_id)?;
    let len = frame.frame_bytes as usize;
    if bytes.len() < len {
        return Err(short(len, bytes.len()));
    }
    let stored = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
    let mut computed = crate::format::crc::crc32c(&bytes[..FRAME_HEADER_BYTES - 4]);
    computed = crate::format::crc::crc32c_append(computed, &bytes[FRAME_HEADER_BYTES..len]);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    // The count is checked by decoding, not trusted for an allocation (the fuzzer found a
    // frame claiming 4 billion operations).
    if frame.op_count as usize > (len - FRAME_HEADER_BYTES) / OP_HEADER_BYTES {
        return Err(DecodeError::Invalid("more operations than the frame holds"));
    }
    let mut ops = Vec::with_capacity(frame.op_count as usize);
    let mut at = FRAME_HEADER_BYTES;
    for _ in 0..frame.op_count {
        let (h, _) = OpHeader::ref_from_prefix(&bytes[at..len])
            .map_err(|_| short(OP_HEADER_BYTES, len - at))?;
        let target = match h.target {
            TARGET_SEGMENT => Target::Segment {
                hash: h.file.get(),
                collision: h.collision.get(),
                segment: h.segment.get(),
            },
            TARGET_KEYS => Target::Keys {
                hash: h.file.get(),
                collision: h.collision.get(),
            },
            TARGET_INDEX => Target::Index {
                file_number: h.file.get(),
            },
            TARGET_PACK => Target::Pack {
                pack: u32::try_from(h.file.get())
                    .map_err(|_| DecodeError::Invalid("journal pack number"))?,
            },
            TARGET_TABLE => Target::Table {
                number: u16::try_from(h.file.get())
                    .ok()
                    .filter(|f| usize::from(*f) < crate::layout::FANOUTS)
                    .ok_or(DecodeError::Invalid("journal table number"))?,
            },
            _ => return Err(DecodeError::Invalid("journal operation target")),
        };
        let data_at = at + OP_HEADER_BYTES;
        let data_len = h.len.get() as usize;
        let end = data_at
            .checked_add(data_len)
            .filter(|e| *e <= len)
            .ok_or(DecodeError::Invalid("journal operation past its frame"))?;
        let op = match (h.op, data_len) {
            (OP_CREATE, 0) => Op::Create(target),
            (OP_WRITE, _) => Op::Write(target, h.offset.get(), &bytes[data_at..end]),
            (OP_EXTEND, 0) => Op::Extend(target, h.offset.get()),
            _ => return Err(DecodeError::Invalid("journal operation kind")),
        };
        ops.push(op);
        at = super::align8(end as u64) as usize;
    }
    if at != super::align8(len as u64) as usize {
        return Err(DecodeError::Invalid("frame length and operations disagree"));
    }
    Ok((frame, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_any_flipped_bit_fails_it() {
        let seg = Target::Segment {
            hash: 7,
            collision: 1,
            segment: 2,
        };
        let idx = Target::Index { file_number: 3 };
        let pack = Target::Pack { pack: 5 };
        let table = Target::Table { number: 0xfff };
        let mut b = FrameBuilder::new();
        b.create(seg);
        b.write(seg, 0, b"header");
        b.write(seg, 64, b"a record of odd length");
        b.extend(idx, 4096);
        b.create(pack);
        b.write(pack, 128, b"packed");
        b.write(table, 64, b"entry");
        let frame = b.finish(42, 9, 100, 101);
        assert_eq!(frame.len() % 8, 0);
        let (f, ops) = decode_frame(&frame, 42).unwrap();
        assert_eq!(
            (f.sequence, f.first_position, f.last_position),
            (9, 100, 101)
        );
        assert_eq!(
            ops,
            vec![
                Op::Create(seg),
                Op::Write(seg, 0, b"header"),
                Op::Write(seg, 64, b"a record of odd length"),
                Op::Extend(idx, 4096),
                Op::Create(pack),
                Op::Write(pack, 128, b"packed"),
                Op::Write(table, 64, b"entry"),
            ]
        );
        assert!(decode_frame(&frame, 43).is_err());
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&bad, 42).is_err(), "bit {bit} passed");
        }
    }

    #[test]
    fn an_impossible_operation_count_is_an_error_not_an_allocation() {
        let mut frame = FrameBuilder::new().finish(1, 1, 1, 1);
        frame[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crate::format::crc::crc32c(&frame[..44]);
        frame[44..48].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_frame(&frame, 1),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn the_file_header_round_trips() {
        let h = encode_file_header(5);
        assert_eq!(decode_file_header(&h), Ok(5));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(decode_file_header(&bad).is_err());
    }
}
