//! Segment files: a header naming the stream, then records (segment-format.md §5).

use super::{
    align4, align8, check_version, get_varint, put_varint, short, varint_len, DecodeError,
    FORMAT_VERSION, VARINT_BYTES_MAX,
};
use crate::limits::{
    COMMIT_METADATA_BYTES_MAX, EVENT_BYTES_MAX_CEILING, EVENT_TYPE_BYTES_MAX, KEY_BYTES_MAX,
    STREAM_ID_BYTES_MAX,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const SEGMENT_MAGIC: [u8; 8] = *b"SLSEGMT\0";
pub const SEGMENT_FIXED_HEADER_BYTES: usize = 64;
pub const RECORD_MAGIC: u16 = 0x4C53;
pub const RECORD_HEADER_BYTES: usize = 72;
pub const RECORD_KIND_EVENT: u8 = 1;
/// A stream control record: its body starts with a `ControlBlockRaw` (segment-format.md §12).
pub const RECORD_KIND_CONTROL: u8 = 2;
pub const CONTROL_BLOCK_BYTES: usize = 32;
/// The stream is closed: no more appends.
pub const CONTROL_OP_CLOSE: u8 = 1;
/// The stream is deleted; this record, first in a rewritten segment 0, is its tombstone.
pub const CONTROL_OP_DELETE: u8 = 2;
/// The stream's events up to `covers_version` are replaced by this record, an event.
pub const CONTROL_OP_SNAPSHOT: u8 = 3;
/// The stream's events up to `covers_version` are removed (`truncate_before`); this record
/// opens a rewritten segment 0 that holds no event.
pub const CONTROL_OP_TRUNCATE: u8 = 4;
/// An invalidation event: the changeset `target_changeset` is invalid (segment-format.md §16).
pub const CONTROL_OP_INVALIDATE: u8 = 5;
/// Control flag: the stream is closed (a snapshot of a closed stream keeps it closed).
pub const CONTROL_FLAG_CLOSED: u8 = 0x01;
pub const RECORD_FLAG_BEGIN: u8 = 0x01;
pub const RECORD_FLAG_END: u8 = 0x02;
pub const RECORD_FLAG_HAS_ID: u8 = 0x04;
/// A record in a pack (format 4, segment-format.md §19): `prev_position` follows the header
/// (and the control block of a control record).
pub const RECORD_FLAG_PACKED: u8 = 0x08;
/// Bytes of a packed record's `prev_position`.
pub const PREV_POSITION_BYTES: usize = 8;
/// A packed record with the compact header (format 6, segment-format.md §19 "Compact packed
/// records"); always with `RECORD_FLAG_PACKED`.
pub const RECORD_FLAG_COMPACT: u8 = 0x10;
/// A packed record with the varint header (format 7, segment-format.md §19 "Varint packed
/// records"); always with `RECORD_FLAG_PACKED`, never with `RECORD_FLAG_COMPACT`.
pub const RECORD_FLAG_VARINT: u8 = 0x20;
const RECORD_FLAGS_KNOWN: u8 = RECORD_FLAG_BEGIN
    | RECORD_FLAG_END
    | RECORD_FLAG_HAS_ID
    | RECORD_FLAG_PACKED
    | RECORD_FLAG_COMPACT
    | RECORD_FLAG_VARINT;
/// The bytes both record headers share (magic, kind, flags, `record_bytes`, `crc`): enough to
/// step from record to record.
pub const RECORD_PREFIX_BYTES: usize = 12;
/// The compact header of a packed record (format 6).
pub const COMPACT_HEADER_BYTES: usize = 48;
/// Bytes of an event id, which a compact record carries only when it has one.
pub const EVENT_ID_BYTES: usize = 16;
/// The widest version, changeset and `prev_delta` a compact record holds.
pub const COMPACT_FIELD_MAX: u64 = u32::MAX as u64;
/// The most commit metadata a compact record holds.
pub const COMPACT_COMMIT_METADATA_MAX: usize = u16::MAX as usize;
/// The fixed part of the varint header (format 7): the shared prefix, then `timestamp_us`.
pub const VARINT_FIXED_BYTES: usize = 20;
/// The varints after it: position, version, changeset, `prev_delta`, `type_len`,
/// `commit_metadata_len`, `metadata_len`.
pub const VARINT_FIELDS: usize = 7;
/// The fewest bytes a varint header takes (every varint one byte).
pub const VARINT_HEADER_BYTES_MIN: usize = VARINT_FIXED_BYTES + VARINT_FIELDS;
/// The most bytes a varint header takes: four numbers of up to 64 bits, three lengths within
/// their limits.
pub const VARINT_HEADER_BYTES_MAX: usize = VARINT_FIXED_BYTES
    + 4 * VARINT_BYTES_MAX
    + varint_len(EVENT_TYPE_BYTES_MAX as u64)
    + varint_len(COMMIT_METADATA_BYTES_MAX as u64)
    + varint_len(EVENT_BYTES_MAX_CEILING as u64);
const _: () = assert!(VARINT_HEADER_BYTES_MAX <= RECORD_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub header_bytes: U32,
    pub store_id: U64,
    pub stream_hash: U64,
    pub segment: U32,
    pub collision: U16,
    pub stream_id_len: U16,
    pub first_version: U64,
    pub created_us: U64,
    pub reserved: U32,
    pub crc: U32,
}
const _: () = assert!(size_of::<SegmentFileHeader>() == SEGMENT_FIXED_HEADER_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    pub magic: U16,
    pub kind: u8,
    pub flags: u8,
    pub record_bytes: U32,
    pub crc: U32,
    pub type_len: U16,
    pub key_len: U16,
    pub metadata_len: U32,
    pub commit_metadata_len: U32,
    pub version: U64,
    pub position: U64,
    pub changeset: U64,
    pub timestamp_us: U64,
    pub event_id: [u8; 16],
}
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_BYTES);

/// The header of a compact packed record (format 6, segment-format.md §19); `event_id` (when
/// `HAS_ID`), the control block (kind 2) and the body follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CompactHeader {
    pub magic: U16,
    pub kind: u8,
    pub flags: u8,
    pub record_bytes: U32,
    pub crc: U32,
    pub type_len: U16,
    pub commit_metadata_len: U16,
    pub metadata_len: U32,
    pub version: U32,
    pub changeset: U32,
    pub prev_delta: U32,
    pub position: U64,
    pub timestamp_us: U64,
}
const _: () = assert!(size_of::<CompactHeader>() == COMPACT_HEADER_BYTES);

/// The fields every header starts with.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RecordPrefix {
    magic: U16,
    kind: u8,
    flags: u8,
    record_bytes: U32,
    crc: U32,
}
const _: () = assert!(size_of::<RecordPrefix>() == RECORD_PREFIX_BYTES);

/// The fixed part of a varint header (format 7, segment-format.md §19): the prefix, then the
/// time; the varints follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VarintFixed {
    pub magic: U16,
    pub kind: u8,
    pub flags: u8,
    pub record_bytes: U32,
    pub crc: U32,
    pub timestamp_us: U64,
}
const _: () = assert!(size_of::<VarintFixed>() == VARINT_FIXED_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlBlockRaw {
    pub op: u8,
    pub control_flags: u8,
    pub reserved0: U16,
    pub next_segment: U32,
    pub covers_version: U64,
    pub covers_position: U64,
    pub target_changeset: U64,
}
const _: () = assert!(size_of::<ControlBlockRaw>() == CONTROL_BLOCK_BYTES);

/// What a control record says (segment-format.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub op: u8,
    pub flags: u8,
    /// In a record that opens a rewritten segment 0: the number of the stream's next segment
    /// (segments `1 .. next_segment` are gone). 0 elsewhere.
    pub next_segment: u32,
    /// Every version at or below this one was removed (0: none).
    pub covers_version: u64,
    /// Every position of this stream at or below this one was removed (0: none).
    pub covers_position: u64,
    /// `CONTROL_OP_INVALIDATE`: the changeset it invalidates; 0 otherwise.
    pub target_changeset: u64,
}

impl Control {
    /// The block of a close record (segment-format.md §12).
    #[must_use]
    pub const fn close() -> Control {
        Control {
            op: CONTROL_OP_CLOSE,
            flags: CONTROL_FLAG_CLOSED,
            next_segment: 0,
            covers_version: 0,
            covers_position: 0,
            target_changeset: 0,
        }
    }

    fn encode(&self) -> [u8; CONTROL_BLOCK_BYTES] {
        let raw = ControlBlockRaw {
            op: self.op,
            control_flags: self.flags,
            reserved0: 0.into(),
            next_segment: self.next_segment.into(),
            covers_version: self.covers_version.into(),
            covers_position: self.covers_position.into(),
            target_changeset: self.target_changeset.into(),
        };
        let mut out = [0u8; CONTROL_BLOCK_BYTES];
        out.copy_from_slice(raw.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Control, DecodeError> {
        let (raw, _) = ControlBlockRaw::ref_from_prefix(bytes)
            .map_err(|_| short(CONTROL_BLOCK_BYTES, bytes.len()))?;
        if !(CONTROL_OP_CLOSE..=CONTROL_OP_INVALIDATE).contains(&raw.op) {
            return Err(DecodeError::Invalid("unknown control op"));
        }
        if raw.control_flags & !CONTROL_FLAG_CLOSED != 0 || raw.reserved0.get() != 0 {
            return Err(DecodeError::Invalid("control block reserved bits"));
        }
        if (raw.op == CONTROL_OP_INVALIDATE) != (raw.target_changeset.get() != 0) {
            return Err(DecodeError::Invalid("target_changeset"));
        }
        Ok(Control {
            op: raw.op,
            flags: raw.control_flags,
            next_segment: raw.next_segment.get(),
            covers_version: raw.covers_version.get(),
            covers_position: raw.covers_position.get(),
            target_changeset: raw.target_changeset.get(),
        })
    }

    /// True for a snapshot: the record is an event of the stream.
    #[must_use]
    pub fn is_snapshot(&self) -> bool {
        self.op == CONTROL_OP_SNAPSHOT
    }

    /// True for the control records that are events of their stream: snapshots and
    /// invalidations (they take a version, readers yield them).
    #[must_use]
    pub fn is_event(&self) -> bool {
        matches!(self.op, CONTROL_OP_SNAPSHOT | CONTROL_OP_INVALIDATE)
    }

    /// True for the records that open a rewritten segment 0 (segment-format.md §12).
    #[must_use]
    pub fn is_base(&self) -> bool {
        matches!(
            self.op,
            CONTROL_OP_DELETE | CONTROL_OP_SNAPSHOT | CONTROL_OP_TRUNCATE
        )
    }
}

/// The decoded header of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub store_id: u64,
    pub stream_hash: u64,
    pub collision: u16,
    pub segment: u32,
    pub first_version: u64,
    pub created_us: u64,
    pub stream_id: String,
}

/// Bytes a segment header takes for a stream id of `stream_id_len` bytes; records start there.
#[must_use]
pub fn segment_header_bytes(stream_id_len: usize) -> u64 {
    SEGMENT_FIXED_HEADER_BYTES as u64 + align8(stream_id_len as u64)
}

impl SegmentHeader {
    /// Bytes the header takes on disk, records start there.
    #[must_use]
    pub fn header_bytes(&self) -> u64 {
        segment_header_bytes(self.stream_id.len())
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.stream_id.len() <= STREAM_ID_BYTES_MAX,
            "stream id validated before"
        );
        let header_bytes = self.header_bytes();
        let mut h = SegmentFileHeader {
            magic: SEGMENT_MAGIC,
            format_version: FORMAT_VERSION.into(),
            header_bytes: (header_bytes as u32).into(),
            store_id: self.store_id.into(),
            stream_hash: self.stream_hash.into(),
            segment: self.segment.into(),
            collision: self.collision.into(),
            stream_id_len: (self.stream_id.len() as u16).into(),
            first_version: self.first_version.into(),
            created_us: self.created_us.into(),
            reserved: 0.into(),
            crc: 0.into(),
        };
        let crc = crate::format::crc::crc32c_append(
            crate::format::crc::crc32c(&h.as_bytes()[..60]),
            self.stream_id.as_bytes(),
        );
        h.crc = crc.into();
        let mut out = Vec::with_capacity(header_bytes as usize);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(self.stream_id.as_bytes());
        out.resize(header_bytes as usize, 0);
        out
    }

    /// # Errors
    /// Any `DecodeError` when the bytes do not start with a valid segment header.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
        let (h, rest) = SegmentFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(SEGMENT_FIXED_HEADER_BYTES, bytes.len()))?;
        if h.magic != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let id_len = usize::from(h.stream_id_len.get());
        if id_len > STREAM_ID_BYTES_MAX || id_len > rest.len() {
            // A length beyond the file is either a torn header or a lie; the CRC cannot be
            // checked without the bytes, so report the length.
            return Err(short(SEGMENT_FIXED_HEADER_BYTES + id_len, bytes.len()));
        }
        let id = &rest[..id_len];
        let computed =
            crate::format::crc::crc32c_append(crate::format::crc::crc32c(&bytes[..60]), id);
        if computed != h.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: h.crc.get(),
                computed,
            });
        }
        check_version(h.format_version.get())?;
        let stream_id = std::str::from_utf8(id)
            .map_err(|_| DecodeError::Invalid("stream id is not UTF-8"))?
            .to_owned();
        let header = SegmentHeader {
            store_id: h.store_id.get(),
            stream_hash: h.stream_hash.get(),
            collision: h.collision.get(),
            segment: h.segment.get(),
            first_version: h.first_version.get(),
            created_us: h.created_us.get(),
            stream_id,
        };
        if u64::from(h.header_bytes.get()) != header.header_bytes() {
            return Err(DecodeError::Invalid("header_bytes"));
        }
        if header.first_version == 0 {
            return Err(DecodeError::Invalid("first_version 0"));
        }
        Ok(header)
    }
}

/// What the writer puts into one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    pub flags: u8,
    pub version: u64,
    pub position: u64,
    pub changeset: u64,
    pub timestamp_us: u64,
    pub event_id: Option<[u8; 16]>,
    pub event_type: &'a [u8],
    /// The event's key (format 2); empty for none.
    pub key: &'a [u8],
    /// The append's commit metadata, on its `BEGIN` record only (format 2).
    pub commit_metadata: &'a [u8],
    pub metadata: &'a [u8],
    pub data: &'a [u8],
    /// A control record's block; `None` for an event record.
    pub control: Option<Control>,
    /// A packed record's link to its stream's previous packed record (0 for its first);
    /// `None` for a record in a segment.
    pub prev_position: Option<u64>,
}

/// Bytes a record takes on disk, padding included, for `body_bytes` of type, key, commit
/// metadata, metadata and data.
#[must_use]
pub fn record_bytes_padded(body_bytes: usize) -> u64 {
    align8((RECORD_HEADER_BYTES + body_bytes) as u64)
}

/// Bytes the packed record of `fields` takes on disk in the varint header of format 7, padding
/// included: the writer reserves them in the pack before it encodes.
#[must_use]
pub fn packed_record_bytes(fields: &RecordFields<'_>) -> u64 {
    let prev = fields.prev_position.unwrap_or(0);
    let prev_delta = if prev == 0 { 0 } else { fields.position - prev };
    let varints = varint_len(fields.position)
        + varint_len(fields.version)
        + varint_len(fields.changeset)
        + varint_len(prev_delta)
        + varint_len(fields.event_type.len() as u64)
        + varint_len(fields.commit_metadata.len() as u64)
        + varint_len(fields.metadata.len() as u64);
    let body = fields.event_type.len()
        + fields.commit_metadata.len()
        + fields.metadata.len()
        + fields.data.len();
    let extras = id_and_block_bytes(fields.event_id.is_some(), fields.control.is_some());
    align4((VARINT_FIXED_BYTES + varints + extras + body) as u64)
}

/// The bytes a narrow header (compact or varint) puts between itself and the body: the event
/// id when there is one, the control block of a control record.
const fn id_and_block_bytes(has_id: bool, control: bool) -> usize {
    let id = if has_id { EVENT_ID_BYTES } else { 0 };
    let block = if control { CONTROL_BLOCK_BYTES } else { 0 };
    id + block
}

/// The most bytes a packed record of format 7 takes for `body_bytes` of type, commit metadata,
/// metadata and data, whatever its numbers: a bound for decisions made before they are known.
#[must_use]
pub const fn packed_record_bytes_max(body_bytes: usize, has_id: bool, control: bool) -> u64 {
    align4((VARINT_HEADER_BYTES_MAX + id_and_block_bytes(has_id, control) + body_bytes) as u64)
}

/// Whether a record's numbers fit the compact header of format 6 (segment-format.md §19,
/// "Compact packed records"), which this build reads but no longer writes.
fn compact_fits(version: u64, changeset: u64, prev_delta: u64, commit_metadata_len: usize) -> bool {
    version <= COMPACT_FIELD_MAX
        && changeset <= COMPACT_FIELD_MAX
        && prev_delta <= COMPACT_FIELD_MAX
        && commit_metadata_len <= COMPACT_COMMIT_METADATA_MAX
}

/// Which header a record takes. The writer of format 7 puts `Varint` in packs and `Full` in
/// segments; the others are what formats 4 to 6 wrote in packs (tests write them still, to
/// check that they are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// The 72-byte header of §5 (and, packed, the 8-byte link after it: formats 4 and 5).
    Full,
    /// The 48-byte compact header (format 6).
    Compact,
    /// The varint header (format 7).
    Varint,
}

/// Append the encoding of one record to `out`: a packed record (`prev_position` given) takes
/// the varint header of format 7 and is padded to 4 bytes, a record of a segment the §5 header
/// and is padded to 8.
///
/// # Panics
/// When a field breaks a limit checked before (the event size, the type, the key, the flags), or
/// a packed record has a key (the writer never packs keyed events).
pub fn encode_record(fields: &RecordFields<'_>, out: &mut Vec<u8>) {
    let header = if fields.prev_position.is_some() {
        Header::Varint
    } else {
        Header::Full
    };
    encode_record_as(fields, header, out);
}

/// `encode_record`, choosing the header: `Compact` and `Varint` only with a `prev_position`.
fn encode_record_as(fields: &RecordFields<'_>, form: Header, out: &mut Vec<u8>) {
    assert!(!fields.event_type.is_empty() && fields.event_type.len() <= EVENT_TYPE_BYTES_MAX);
    assert!(fields.version >= 1 && fields.position >= 1 && fields.changeset >= 1);
    assert_eq!(fields.flags & !RECORD_FLAGS_KNOWN, 0);
    assert!(fields.key.len() <= KEY_BYTES_MAX);
    assert!(fields.commit_metadata.len() <= COMMIT_METADATA_BYTES_MAX);
    assert!(fields.commit_metadata.is_empty() || fields.flags & RECORD_FLAG_BEGIN != 0);
    assert!(form == Header::Full || fields.prev_position.is_some());
    let kind = if fields.control.is_some() {
        RECORD_KIND_CONTROL
    } else {
        RECORD_KIND_EVENT
    };
    let control_bytes = if fields.control.is_some() {
        CONTROL_BLOCK_BYTES
    } else {
        0
    };
    let body_bytes = fields.event_type.len()
        + fields.key.len()
        + fields.commit_metadata.len()
        + fields.metadata.len()
        + fields.data.len();
    let mut flags = fields.flags
        & !(RECORD_FLAG_HAS_ID | RECORD_FLAG_PACKED | RECORD_FLAG_COMPACT | RECORD_FLAG_VARINT);
    if fields.event_id.is_some() {
        flags |= RECORD_FLAG_HAS_ID;
    }
    if fields.prev_position.is_some() {
        flags |= RECORD_FLAG_PACKED;
    }
    let start = out.len();
    let prev = fields.prev_position.unwrap_or(0);
    assert!(
        fields.prev_position.is_none() || prev < fields.position,
        "a chain links to an earlier position"
    );
    let prev_delta = if prev == 0 { 0 } else { fields.position - prev };
    if form == Header::Varint {
        assert!(fields.key.is_empty(), "the writer never packs keyed events");
        flags |= RECORD_FLAG_VARINT;
        let fixed = VarintFixed {
            magic: RECORD_MAGIC.into(),
            kind,
            flags,
            // Both set once the record is whole.
            record_bytes: 0.into(),
            crc: 0.into(),
            timestamp_us: fields.timestamp_us.into(),
        };
        out.extend_from_slice(fixed.as_bytes());
        for v in [
            fields.position,
            fields.version,
            fields.changeset,
            prev_delta,
            fields.event_type.len() as u64,
            fields.commit_metadata.len() as u64,
            fields.metadata.len() as u64,
        ] {
            put_varint(out, v);
        }
        if let Some(id) = &fields.event_id {
            out.extend_from_slice(id);
        }
        if let Some(c) = &fields.control {
            out.extend_from_slice(&c.encode());
        }
        let record_bytes = out.len() - start + body_bytes;
        out[start + 4..start + 8].copy_from_slice(
            &u32::try_from(record_bytes)
                .expect("event size checked before")
                .to_le_bytes(),
        );
    } else if form == Header::Compact {
        assert!(
            fields.key.is_empty()
                && compact_fits(
                    fields.version,
                    fields.changeset,
                    prev_delta,
                    fields.commit_metadata.len()
                ),
            "tests write only records that fit the compact header"
        );
        flags |= RECORD_FLAG_COMPACT;
        let id_bytes = if fields.event_id.is_some() {
            EVENT_ID_BYTES
        } else {
            0
        };
        let record_bytes = COMPACT_HEADER_BYTES + id_bytes + control_bytes + body_bytes;
        let header = CompactHeader {
            magic: RECORD_MAGIC.into(),
            kind,
            flags,
            record_bytes: u32::try_from(record_bytes)
                .expect("event size checked before")
                .into(),
            crc: 0.into(),
            type_len: (fields.event_type.len() as u16).into(),
            commit_metadata_len: (fields.commit_metadata.len() as u16).into(),
            metadata_len: (fields.metadata.len() as u32).into(),
            version: (fields.version as u32).into(),
            changeset: (fields.changeset as u32).into(),
            prev_delta: (prev_delta as u32).into(),
            position: fields.position.into(),
            timestamp_us: fields.timestamp_us.into(),
        };
        out.extend_from_slice(header.as_bytes());
        if let Some(id) = &fields.event_id {
            out.extend_from_slice(id);
        }
        if let Some(c) = &fields.control {
            out.extend_from_slice(&c.encode());
        }
    } else {
        let packed_bytes = if fields.prev_position.is_some() {
            PREV_POSITION_BYTES
        } else {
            0
        };
        let record_bytes = RECORD_HEADER_BYTES + control_bytes + packed_bytes + body_bytes;
        let header = RecordHeader {
            magic: RECORD_MAGIC.into(),
            kind,
            flags,
            record_bytes: u32::try_from(record_bytes)
                .expect("event size checked before")
                .into(),
            crc: 0.into(),
            type_len: (fields.event_type.len() as u16).into(),
            key_len: (fields.key.len() as u16).into(),
            metadata_len: (fields.metadata.len() as u32).into(),
            commit_metadata_len: (fields.commit_metadata.len() as u32).into(),
            version: fields.version.into(),
            position: fields.position.into(),
            changeset: fields.changeset.into(),
            timestamp_us: fields.timestamp_us.into(),
            event_id: fields.event_id.unwrap_or([0; 16]),
        };
        out.extend_from_slice(header.as_bytes());
        if let Some(c) = &fields.control {
            out.extend_from_slice(&c.encode());
        }
        if let Some(prev) = fields.prev_position {
            out.extend_from_slice(&prev.to_le_bytes());
        }
    }
    out.extend_from_slice(fields.event_type);
    out.extend_from_slice(fields.key);
    out.extend_from_slice(fields.commit_metadata);
    out.extend_from_slice(fields.metadata);
    out.extend_from_slice(fields.data);
    let record_bytes = out.len() - start;
    debug_assert_eq!(
        u32::from_le_bytes(out[start + 4..start + 8].try_into().expect("4 bytes")) as usize,
        record_bytes
    );
    let crc = record_crc(&out[start..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let padded = if form == Header::Varint {
        align4(record_bytes as u64)
    } else {
        align8(record_bytes as u64)
    };
    out.resize(start + padded as usize, 0);
}

fn record_crc(record: &[u8]) -> u32 {
    crate::format::crc::crc32c_append(crate::format::crc::crc32c(&record[..8]), &record[12..])
}

/// One decoded record, borrowing its variable parts from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub kind: u8,
    pub flags: u8,
    pub version: u64,
    pub position: u64,
    pub changeset: u64,
    pub timestamp_us: u64,
    pub event_id: Option<[u8; 16]>,
    pub event_type: &'a [u8],
    pub key: &'a [u8],
    pub commit_metadata: &'a [u8],
    pub metadata: &'a [u8],
    pub data: &'a [u8],
    /// Bytes to the next record (padding included).
    pub padded_bytes: u64,
    /// A control record's block; `None` for an event.
    pub control: Option<Control>,
    /// A packed record's `prev_position` (segment-format.md §19); `None` in a segment.
    pub prev_position: Option<u64>,
    /// Offset of the event type from the record's start (after the header and any control
    /// block).
    pub body_offset: usize,
}

impl RecordView<'_> {
    /// True when the record is an event of its stream (an event, or a snapshot).
    #[must_use]
    pub fn is_event(&self) -> bool {
        self.control.is_none_or(|c| c.is_event())
    }
}

/// What a record's header claims, read without checking the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPeek {
    pub kind: u8,
    pub flags: u8,
    pub record_bytes: u32,
    /// `None` when the bytes end before the header's `position`.
    pub position: Option<u64>,
}

/// Read only what the header at the start of `bytes` claims, without checking the CRC: its
/// length, to map enough of a file, and its position, to classify damage. `None` when fewer
/// than `RECORD_PREFIX_BYTES` remain or the magic is not a record's.
#[must_use]
pub fn peek_record_header(bytes: &[u8]) -> Option<RecordPeek> {
    let (p, _) = RecordPrefix::ref_from_prefix(bytes).ok()?;
    if p.magic.get() != RECORD_MAGIC {
        return None;
    }
    let position = if p.flags & RECORD_FLAG_VARINT != 0 {
        let mut at = VARINT_FIXED_BYTES;
        get_varint(bytes, &mut at)
    } else if p.flags & RECORD_FLAG_COMPACT != 0 {
        CompactHeader::ref_from_prefix(bytes)
            .ok()
            .map(|(h, _)| h.position.get())
    } else {
        RecordHeader::ref_from_prefix(bytes)
            .ok()
            .map(|(h, _)| h.position.get())
    };
    Some(RecordPeek {
        kind: p.kind,
        flags: p.flags,
        record_bytes: p.record_bytes.get(),
        position,
    })
}

/// The fixed fields of either header, widened.
struct Fixed {
    header_bytes: usize,
    type_len: usize,
    key_len: usize,
    metadata_len: usize,
    commit_len: usize,
    version: u64,
    position: u64,
    changeset: u64,
    timestamp_us: u64,
    /// The §5 header's always-present id, or `None` for a compact header (which carries one
    /// after it only when `HAS_ID`).
    event_id: Option<[u8; 16]>,
    /// A compact header's link, already resolved to a position.
    prev_position: Option<u64>,
}

/// The varint header's fields (format 7) from a record's bytes (`record_bytes` long, already
/// checked against its CRC).
#[inline]
fn varint_fields(record: &[u8]) -> Result<Fixed, DecodeError> {
    let (h, _) = VarintFixed::ref_from_prefix(record)
        .map_err(|_| short(VARINT_HEADER_BYTES_MIN, record.len()))?;
    let mut at = VARINT_FIXED_BYTES;
    let mut next = || get_varint(record, &mut at).ok_or(DecodeError::Invalid("varint header"));
    let position = next()?;
    let version = next()?;
    let changeset = next()?;
    let delta = next()?;
    let mut len = || {
        next().and_then(|v| {
            usize::try_from(v)
                .ok()
                .filter(|&n| n <= record.len())
                .ok_or(DecodeError::Invalid("field lengths exceed record_bytes"))
        })
    };
    let type_len = len()?;
    let commit_len = len()?;
    let metadata_len = len()?;
    if delta != 0 && delta >= position {
        return Err(DecodeError::Invalid("prev_delta beyond position"));
    }
    Ok(Fixed {
        header_bytes: at,
        type_len,
        key_len: 0,
        metadata_len,
        commit_len,
        version,
        position,
        changeset,
        timestamp_us: h.timestamp_us.get(),
        event_id: None,
        prev_position: Some(if delta == 0 { 0 } else { position - delta }),
    })
}

#[inline]
fn fixed_fields(bytes: &[u8], compact: bool) -> Result<Fixed, DecodeError> {
    if compact {
        let (h, _) = CompactHeader::ref_from_prefix(bytes)
            .map_err(|_| short(COMPACT_HEADER_BYTES, bytes.len()))?;
        let position = h.position.get();
        let delta = u64::from(h.prev_delta.get());
        if delta != 0 && delta >= position {
            return Err(DecodeError::Invalid("prev_delta beyond position"));
        }
        Ok(Fixed {
            header_bytes: COMPACT_HEADER_BYTES,
            type_len: usize::from(h.type_len.get()),
            key_len: 0,
            metadata_len: h.metadata_len.get() as usize,
            commit_len: usize::from(h.commit_metadata_len.get()),
            version: u64::from(h.version.get()),
            position,
            changeset: u64::from(h.changeset.get()),
            timestamp_us: h.timestamp_us.get(),
            event_id: None,
            prev_position: Some(if delta == 0 { 0 } else { position - delta }),
        })
    } else {
        let (h, _) = RecordHeader::ref_from_prefix(bytes)
            .map_err(|_| short(RECORD_HEADER_BYTES, bytes.len()))?;
        Ok(Fixed {
            header_bytes: RECORD_HEADER_BYTES,
            type_len: usize::from(h.type_len.get()),
            key_len: usize::from(h.key_len.get()),
            metadata_len: h.metadata_len.get() as usize,
            commit_len: h.commit_metadata_len.get() as usize,
            version: h.version.get(),
            position: h.position.get(),
            changeset: h.changeset.get(),
            timestamp_us: h.timestamp_us.get(),
            event_id: Some(h.event_id),
            prev_position: None,
        })
    }
}

/// A plain event record: an event of a stream's own segment (the §5 header) or of a pack (the
/// varint header, format 7), the records readers meet most, decoded by `decode_plain_event`
/// without building a `RecordView`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainEvent {
    pub flags: u8,
    pub version: u64,
    pub position: u64,
    pub changeset: u64,
    pub timestamp_us: u64,
    pub event_id: Option<[u8; 16]>,
    /// Where the event type starts, from the record's start (after the header and any id).
    pub body_offset: usize,
    pub type_len: usize,
    pub key_len: usize,
    pub commit_len: usize,
    pub metadata_len: usize,
    /// The data: the rest of the record after the other parts.
    pub data_len: usize,
    /// Bytes to the next record (padding included).
    pub padded_bytes: u64,
}

/// Decode a plain event record (`PlainEvent`) at the start of `bytes`, with every check
/// `decode_record` makes of such a record; `None` for any other record (a control record, a
/// format-4 to -6 packed record) and for one that fails a check, which the caller then hands
/// to `decode_record` to learn what is wrong with it. W4 (one stream read forward) spent a
/// third of its engine time building and moving the general `RecordView` (`perf`, session 17).
#[inline]
#[must_use]
pub fn decode_plain_event(bytes: &[u8]) -> Option<PlainEvent> {
    let (p, _) = RecordPrefix::ref_from_prefix(bytes).ok()?;
    let record_bytes = p.record_bytes.get() as usize;
    let flags = p.flags;
    let varint = flags & RECORD_FLAG_VARINT != 0;
    let plain = RECORD_FLAG_BEGIN | RECORD_FLAG_END | RECORD_FLAG_HAS_ID;
    let (allowed, header_min) = if varint {
        (
            plain | RECORD_FLAG_PACKED | RECORD_FLAG_VARINT,
            VARINT_HEADER_BYTES_MIN,
        )
    } else {
        (plain, RECORD_HEADER_BYTES)
    };
    if p.magic.get() != RECORD_MAGIC
        || p.kind != RECORD_KIND_EVENT
        || flags & !allowed != 0
        || (varint && flags & RECORD_FLAG_PACKED == 0)
        || record_bytes < header_min
        || record_bytes > bytes.len()
    {
        return None;
    }
    let record = &bytes[..record_bytes];
    if record_crc(record) != p.crc.get() {
        return None;
    }
    let has_id = flags & RECORD_FLAG_HAS_ID != 0;
    let (fields, event_id, body_offset, padded_bytes) = if varint {
        let f = varint_fields(record).ok()?;
        // The varint header carries an id only when there is one, after it.
        let (id, body_offset) = if has_id {
            let id: [u8; EVENT_ID_BYTES] = record
                .get(f.header_bytes..f.header_bytes + EVENT_ID_BYTES)?
                .try_into()
                .ok()?;
            (Some(id), f.header_bytes + EVENT_ID_BYTES)
        } else {
            (None, f.header_bytes)
        };
        (f, id, body_offset, align4(record_bytes as u64))
    } else {
        let f = fixed_fields(record, false).ok()?;
        let id = if has_id { f.event_id } else { None };
        (f, id, RECORD_HEADER_BYTES, align8(record_bytes as u64))
    };
    let body = record_bytes.checked_sub(body_offset)?;
    // Each length is at most the record's size, itself a `u32`: the sum cannot overflow.
    let parts = fields.type_len + fields.key_len + fields.commit_len + fields.metadata_len;
    if fields.type_len == 0
        || fields.key_len > KEY_BYTES_MAX
        || fields.commit_len > COMMIT_METADATA_BYTES_MAX
        || (fields.commit_len != 0 && flags & RECORD_FLAG_BEGIN == 0)
        || parts > body
        || fields.version == 0
        || fields.position == 0
        || fields.changeset == 0
    {
        return None;
    }
    Some(PlainEvent {
        flags,
        version: fields.version,
        position: fields.position,
        changeset: fields.changeset,
        timestamp_us: fields.timestamp_us,
        event_id,
        body_offset,
        type_len: fields.type_len,
        key_len: fields.key_len,
        commit_len: fields.commit_len,
        metadata_len: fields.metadata_len,
        data_len: body - parts,
        padded_bytes,
    })
}

/// Decode the record at the start of `bytes`, in either header (segment-format.md §5, §19).
///
/// # Errors
/// `BadMagic` for zeros or anything that is not a record, `Short` for a record cut by the end of
/// the bytes, `BadChecksum` for a torn or damaged one, `Invalid` for impossible fields.
pub fn decode_record(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    let (p, _) = RecordPrefix::ref_from_prefix(bytes)
        .map_err(|_| short(RECORD_PREFIX_BYTES, bytes.len()))?;
    if p.magic.get() != RECORD_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let compact = p.flags & RECORD_FLAG_COMPACT != 0;
    let varint = p.flags & RECORD_FLAG_VARINT != 0;
    let header_min = if varint {
        VARINT_HEADER_BYTES_MIN
    } else if compact {
        COMPACT_HEADER_BYTES
    } else {
        RECORD_HEADER_BYTES
    };
    let record_bytes = p.record_bytes.get() as usize;
    if record_bytes < header_min {
        return Err(DecodeError::Invalid("record_bytes below the header size"));
    }
    if record_bytes > bytes.len() {
        return Err(short(record_bytes, bytes.len()));
    }
    let record = &bytes[..record_bytes];
    let computed = record_crc(record);
    if computed != p.crc.get() {
        return Err(DecodeError::BadChecksum {
            stored: p.crc.get(),
            computed,
        });
    }
    if p.kind != RECORD_KIND_EVENT && p.kind != RECORD_KIND_CONTROL {
        return Err(DecodeError::Invalid("unknown record kind"));
    }
    if p.flags & !RECORD_FLAGS_KNOWN != 0 {
        return Err(DecodeError::Invalid("unknown record flags"));
    }
    if (compact || varint) && p.flags & RECORD_FLAG_PACKED == 0 {
        return Err(DecodeError::Invalid("a compact record outside a pack"));
    }
    if compact && varint {
        return Err(DecodeError::Invalid("two packed headers at once"));
    }
    let f = if varint {
        varint_fields(record)?
    } else {
        fixed_fields(record, compact)?
    };
    if f.key_len > KEY_BYTES_MAX {
        return Err(DecodeError::Invalid("key_len"));
    }
    if f.commit_len > COMMIT_METADATA_BYTES_MAX
        || (f.commit_len != 0 && p.flags & RECORD_FLAG_BEGIN == 0)
    {
        return Err(DecodeError::Invalid("commit_metadata_len"));
    }
    if f.type_len == 0 {
        return Err(DecodeError::Invalid("empty event type"));
    }
    let has_id = p.flags & RECORD_FLAG_HAS_ID != 0;
    let mut body = &record[f.header_bytes..];
    let mut body_offset = f.header_bytes;
    let mut event_id = f.event_id;
    // The compact and varint headers carry an id only when there is one, after them.
    let narrow = compact || varint;
    if narrow && has_id {
        let Some((id, rest)) = body.split_first_chunk::<EVENT_ID_BYTES>() else {
            return Err(DecodeError::Invalid("field lengths exceed record_bytes"));
        };
        event_id = Some(*id);
        body = rest;
        body_offset += EVENT_ID_BYTES;
    }
    let mut control = None;
    if p.kind == RECORD_KIND_CONTROL {
        control = Some(Control::decode(body)?);
        body = &body[CONTROL_BLOCK_BYTES..];
        body_offset += CONTROL_BLOCK_BYTES;
    }
    let mut prev_position = f.prev_position;
    if !narrow && p.flags & RECORD_FLAG_PACKED != 0 {
        let Some((prev, rest)) = body.split_first_chunk::<PREV_POSITION_BYTES>() else {
            return Err(DecodeError::Invalid("packed record without prev_position"));
        };
        prev_position = Some(u64::from_le_bytes(*prev));
        body = rest;
        body_offset += PREV_POSITION_BYTES;
    }
    if f.type_len + f.key_len + f.commit_len + f.metadata_len > body.len() {
        return Err(DecodeError::Invalid("field lengths exceed record_bytes"));
    }
    let (event_type, rest) = body.split_at(f.type_len);
    let (key, rest) = rest.split_at(f.key_len);
    let (commit_metadata, rest) = rest.split_at(f.commit_len);
    let (metadata, data) = rest.split_at(f.metadata_len);
    if f.version == 0 || f.position == 0 || f.changeset == 0 {
        return Err(DecodeError::Invalid("version, position or changeset 0"));
    }
    Ok(RecordView {
        kind: p.kind,
        flags: p.flags,
        version: f.version,
        position: f.position,
        changeset: f.changeset,
        timestamp_us: f.timestamp_us,
        event_id: if has_id { event_id } else { None },
        event_type,
        key,
        commit_metadata,
        metadata,
        data,
        padded_bytes: if varint {
            align4(record_bytes as u64)
        } else {
            align8(record_bytes as u64)
        },
        control,
        prev_position,
        body_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut Vec<u8>) {
        encode_record(
            &RecordFields {
                flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
                version: 3,
                position: 17,
                changeset: 2,
                timestamp_us: 1_700_000_000_000_000,
                event_id: Some([9; 16]),
                event_type: b"OrderPlaced",
                key: b"",
                commit_metadata: b"",
                metadata: b"{}",
                data: b"{\"total\":12}",
                control: None,
                prev_position: None,
            },
            out,
        );
    }

    /// `decode_plain_event` accepts exactly the plain event records `decode_record` accepts,
    /// and reads them the same.
    fn plain_agrees(bytes: &[u8]) {
        let plain = decode_plain_event(bytes);
        match (plain, decode_record(bytes)) {
            (Some(p), Ok(r)) => {
                assert_eq!(r.kind, RECORD_KIND_EVENT);
                assert_eq!(r.flags & RECORD_FLAG_COMPACT, 0);
                assert_eq!(r.body_offset, p.body_offset);
                assert_eq!(
                    (p.flags, p.version, p.position, p.changeset, p.timestamp_us),
                    (r.flags, r.version, r.position, r.changeset, r.timestamp_us)
                );
                assert_eq!(p.event_id, r.event_id);
                assert_eq!(
                    (
                        p.type_len,
                        p.key_len,
                        p.commit_len,
                        p.metadata_len,
                        p.data_len
                    ),
                    (
                        r.event_type.len(),
                        r.key.len(),
                        r.commit_metadata.len(),
                        r.metadata.len(),
                        r.data.len()
                    )
                );
                assert_eq!(p.padded_bytes, r.padded_bytes);
            }
            (Some(p), Err(e)) => panic!("plain decoder took {p:?}, the general one refused: {e}"),
            (None, Ok(r)) => assert!(
                r.kind != RECORD_KIND_EVENT
                    || (r.flags & RECORD_FLAG_PACKED != 0 && r.flags & RECORD_FLAG_VARINT == 0),
                "plain decoder refused a plain event {r:?}"
            ),
            (None, Err(_)) => {}
        }
    }

    #[test]
    fn the_plain_event_decoder_agrees_with_the_general_one() {
        /// Flags, key, commit metadata, metadata.
        type Shape = (u8, &'static [u8], &'static [u8], &'static [u8]);
        let shapes: [Shape; 4] = [
            (RECORD_FLAG_BEGIN | RECORD_FLAG_END, b"", b"", b"{}"),
            (
                RECORD_FLAG_BEGIN | RECORD_FLAG_HAS_ID,
                b"k-1",
                b"commit",
                b"",
            ),
            (RECORD_FLAG_END, b"", b"", b"meta"),
            (0, b"key", b"", b""),
        ];
        // Packed (varint header) and not; a packed record has no key.
        let cases = shapes
            .iter()
            .flat_map(|s| [(*s, None), (*s, Some(5u64))])
            .filter(|((_, key, ..), prev)| prev.is_none() || key.is_empty());
        for ((flags, key, commit, metadata), prev_position) in cases {
            for data_len in [0usize, 1, 7, 300] {
                let data = vec![0xA5; data_len];
                let mut bytes = Vec::new();
                encode_record(
                    &RecordFields {
                        flags,
                        version: 3,
                        position: 17,
                        changeset: 2,
                        timestamp_us: 1_700_000_000_000_000,
                        event_id: Some([9; 16]),
                        event_type: b"OrderPlaced",
                        key,
                        commit_metadata: commit,
                        metadata,
                        data: &data,
                        control: None,
                        prev_position,
                    },
                    &mut bytes,
                );
                assert!(decode_plain_event(&bytes).is_some());
                plain_agrees(&bytes);
                plain_agrees(&bytes[..bytes.len() - 1]);
                // Every byte of the header changed, the checksum then made right again, so
                // that the checks behind it run; and every byte changed as it is.
                for at in 0..RECORD_HEADER_BYTES.min(bytes.len()) {
                    for value in [0u8, 1, 2, 0x7F, 0xFF] {
                        let mut damaged = bytes.clone();
                        damaged[at] = value;
                        plain_agrees(&damaged);
                        if (8..12).contains(&at) {
                            continue;
                        }
                        let len = (u32::from_le_bytes(damaged[4..8].try_into().unwrap()) as usize)
                            .min(damaged.len())
                            .max(12);
                        let crc = record_crc(&damaged[..len]);
                        damaged[8..12].copy_from_slice(&crc.to_le_bytes());
                        plain_agrees(&damaged);
                    }
                }
            }
        }
    }

    #[test]
    fn record_round_trip_padding_and_every_bit_flip_is_caught() {
        let mut bytes = Vec::new();
        sample(&mut bytes);
        assert_eq!(bytes.len() % 8, 0);
        let r = decode_record(&bytes).unwrap();
        assert_eq!(r.event_type, b"OrderPlaced");
        assert_eq!(r.metadata, b"{}");
        assert_eq!(r.data, b"{\"total\":12}");
        assert_eq!((r.version, r.position, r.changeset), (3, 17, 2));
        assert_eq!(r.event_id, Some([9; 16]));
        assert_eq!(r.padded_bytes, bytes.len() as u64);
        let unpadded = RECORD_HEADER_BYTES + 11 + 2 + 12;
        for bit in 0..unpadded * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn keys_and_commit_metadata_round_trip_on_the_begin_record_only() {
        let fields = |flags, commit: &'static [u8]| RecordFields {
            flags,
            version: 1,
            position: 1,
            changeset: 1,
            timestamp_us: 0,
            event_id: None,
            event_type: b"T",
            key: b"sku-1",
            commit_metadata: commit,
            metadata: b"m",
            data: b"data",
            control: None,
            prev_position: None,
        };
        let mut bytes = Vec::new();
        encode_record(&fields(RECORD_FLAG_BEGIN, b"user=ann"), &mut bytes);
        let r = decode_record(&bytes).unwrap();
        assert_eq!(
            (r.event_type, r.key, r.commit_metadata, r.metadata, r.data),
            (
                &b"T"[..],
                &b"sku-1"[..],
                &b"user=ann"[..],
                &b"m"[..],
                &b"data"[..]
            )
        );
        // Commit metadata on a record that does not begin its append is refused, even with a
        // valid CRC.
        let mut bytes = Vec::new();
        encode_record(&fields(RECORD_FLAG_BEGIN, b"x"), &mut bytes);
        bytes[3] = RECORD_FLAG_END;
        let crc = record_crc(&bytes[..RECORD_HEADER_BYTES + 1 + 5 + 1 + 1 + 4]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_record(&bytes),
            Err(DecodeError::Invalid("commit_metadata_len"))
        );
    }

    #[test]
    fn a_packed_record_carries_its_chain_link_inside_the_crc_in_every_header() {
        let mut cases = Vec::new();
        for form in [Header::Varint, Header::Compact] {
            cases.extend([
                (form, None, None),
                (form, Some(Control::close()), None),
                (form, None, Some([5; 16])),
                (form, Some(Control::close()), Some([6; 16])),
            ]);
        }
        cases.push((Header::Full, None, None));
        cases.push((Header::Full, Some(Control::close()), Some([7; 16])));
        for (form, control, id) in cases {
            let fields = RecordFields {
                flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
                version: 4,
                position: 90,
                changeset: 4,
                timestamp_us: 1,
                event_id: id,
                event_type: b"T",
                key: b"",
                commit_metadata: b"c",
                metadata: b"m",
                data: b"payload",
                control,
                prev_position: Some(77),
            };
            let mut bytes = Vec::new();
            encode_record_as(&fields, form, &mut bytes);
            let r = decode_record(&bytes).unwrap();
            assert_eq!(r.prev_position, Some(77));
            assert_ne!(r.flags & RECORD_FLAG_PACKED, 0);
            assert_eq!(r.flags & RECORD_FLAG_COMPACT != 0, form == Header::Compact);
            assert_eq!(r.flags & RECORD_FLAG_VARINT != 0, form == Header::Varint);
            assert_eq!(
                (r.event_type, r.commit_metadata, r.metadata, r.data),
                (&b"T"[..], &b"c"[..], &b"m"[..], &b"payload"[..])
            );
            assert_eq!(
                (r.version, r.position, r.changeset, r.timestamp_us),
                (4, 90, 4, 1)
            );
            assert_eq!((r.event_id, r.control), (id, control));
            let control_bytes = if control.is_some() {
                CONTROL_BLOCK_BYTES
            } else {
                0
            };
            let id_bytes = if id.is_some() { EVENT_ID_BYTES } else { 0 };
            if form == Header::Varint {
                // Every varint one byte: 90, 4, 4, 13 and the three lengths.
                assert_eq!(
                    r.body_offset,
                    VARINT_HEADER_BYTES_MIN + id_bytes + control_bytes
                );
                assert_eq!(bytes.len() as u64, packed_record_bytes(&fields));
                assert!(
                    packed_record_bytes(&fields)
                        <= packed_record_bytes_max(1 + 1 + 1 + 7, id.is_some(), control.is_some())
                );
                assert_eq!(bytes.len() % 4, 0);
                assert_eq!(r.padded_bytes, bytes.len() as u64);
            } else if form == Header::Compact {
                assert_eq!(
                    r.body_offset,
                    COMPACT_HEADER_BYTES + id_bytes + control_bytes
                );
                assert_eq!(r.padded_bytes, bytes.len() as u64);
            } else {
                assert_eq!(
                    r.body_offset,
                    RECORD_HEADER_BYTES + control_bytes + PREV_POSITION_BYTES
                );
            }
            let peek = peek_record_header(&bytes).unwrap();
            assert_eq!(peek.position, Some(90));
            assert_eq!(peek.record_bytes as usize, r.body_offset + 10);
            let unpadded = r.body_offset + 1 + 1 + 1 + 7;
            for bit in 0..unpadded * 8 {
                let mut damaged = bytes.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_record(&damaged).map(|d| (d.prev_position, d.position, d.version))
                        != Ok((Some(77), 90, 4)),
                    "{form:?}, bit {bit}"
                );
            }
            for len in 0..unpadded {
                assert!(decode_record(&bytes[..len]).is_err(), "len {len}");
            }
            // The first packed record of a stream links to 0; a record in a segment has none.
            let mut first = Vec::new();
            encode_record_as(
                &RecordFields {
                    prev_position: Some(0),
                    ..fields
                },
                form,
                &mut first,
            );
            assert_eq!(decode_record(&first).unwrap().prev_position, Some(0));
            let mut plain = Vec::new();
            encode_record(
                &RecordFields {
                    prev_position: None,
                    ..fields
                },
                &mut plain,
            );
            assert_eq!(decode_record(&plain).unwrap().prev_position, None);
            if form == Header::Full {
                assert_eq!(plain.len() + PREV_POSITION_BYTES, bytes.len());
            }
        }
    }

    #[test]
    fn a_compact_header_is_smaller_and_refuses_what_it_cannot_say() {
        let fields = RecordFields {
            flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
            version: 1,
            position: 5,
            changeset: 1,
            timestamp_us: 1,
            event_id: None,
            event_type: b"Bench",
            key: b"",
            commit_metadata: b"",
            metadata: &[1; 32],
            data: &[2; 256],
            control: None,
            prev_position: Some(0),
        };
        let (mut long, mut compact, mut varint) = (Vec::new(), Vec::new(), Vec::new());
        encode_record_as(&fields, Header::Full, &mut long);
        encode_record_as(&fields, Header::Compact, &mut compact);
        encode_record(&fields, &mut varint);
        // W5's event: 376 bytes in formats 4 and 5, 344 in format 6, 320 in format 7 (small
        // numbers: one byte each).
        assert_eq!((long.len(), compact.len(), varint.len()), (376, 344, 320));
        assert!(compact_fits(
            u32::MAX.into(),
            u32::MAX.into(),
            u32::MAX.into(),
            65_535
        ));
        assert!(!compact_fits(u64::from(u32::MAX) + 1, 1, 1, 0));
        assert!(!compact_fits(1, u64::from(u32::MAX) + 1, 1, 0));
        assert!(!compact_fits(1, 1, u64::from(u32::MAX) + 1, 0));
        assert!(!compact_fits(1, 1, 1, 65_536));
        // COMPACT without PACKED, and a link at or past the record's own position, are refused
        // even under a valid CRC.
        let refit = |bytes: &mut Vec<u8>| {
            let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            let crc = record_crc(&bytes[..len]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        };
        let mut unpacked = compact.clone();
        unpacked[3] &= !RECORD_FLAG_PACKED;
        refit(&mut unpacked);
        assert_eq!(
            decode_record(&unpacked),
            Err(DecodeError::Invalid("a compact record outside a pack"))
        );
        for delta in [5u32, 6] {
            let mut ahead = compact.clone();
            ahead[28..32].copy_from_slice(&delta.to_le_bytes());
            refit(&mut ahead);
            assert_eq!(
                decode_record(&ahead),
                Err(DecodeError::Invalid("prev_delta beyond position"))
            );
        }
    }

    #[test]
    fn a_varint_header_holds_any_number_and_refuses_what_no_writer_writes() {
        let base = RecordFields {
            flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
            version: 1,
            position: 5,
            changeset: 1,
            timestamp_us: 1_764_000_000_000_000,
            event_id: None,
            event_type: b"E",
            key: b"",
            commit_metadata: b"",
            metadata: b"",
            data: &[2; 256],
            control: None,
            prev_position: Some(0),
        };
        // The million example's event: 312 bytes in format 6, 284 with one-byte numbers.
        let mut small = Vec::new();
        encode_record(&base, &mut small);
        assert_eq!(small.len(), 284);
        // With a position of ten million (a 4-byte varint), as in the million store: 288.
        let mut million = Vec::new();
        encode_record(
            &RecordFields {
                position: 10_000_000,
                ..base
            },
            &mut million,
        );
        assert_eq!(million.len(), 288);
        // A tombstone (`$delete`, its control block): 68 bytes at a one-byte position, 72 at
        // a position of 2^21 (segment-format.md §19's table).
        for (position, bytes) in [(1, 68), (1 << 21, 72)] {
            let mut tombstone = Vec::new();
            encode_record(
                &RecordFields {
                    position,
                    event_type: b"$delete",
                    data: b"",
                    control: Some(Control {
                        op: CONTROL_OP_DELETE,
                        flags: 0,
                        next_segment: 0,
                        covers_version: 1,
                        covers_position: 1,
                        target_changeset: 0,
                    }),
                    ..base
                },
                &mut tombstone,
            );
            assert_eq!(tombstone.len(), bytes, "position {position}");
        }
        // Numbers the compact header could not hold, and the widest of all.
        for (version, position, changeset, prev) in [
            (u64::from(u32::MAX) + 1, 1 << 40, 1 << 33, 1),
            (u64::MAX, u64::MAX, u64::MAX, u64::MAX - 1),
            (300, 1 << 21, 128, 0),
        ] {
            let fields = RecordFields {
                version,
                position,
                changeset,
                prev_position: Some(prev),
                commit_metadata: &[9; COMMIT_METADATA_BYTES_MAX],
                ..base
            };
            let mut bytes = Vec::new();
            encode_record(&fields, &mut bytes);
            assert_eq!(bytes.len() as u64, packed_record_bytes(&fields));
            assert!(
                bytes.len() as u64
                    <= packed_record_bytes_max(1 + COMMIT_METADATA_BYTES_MAX + 256, false, false)
            );
            let r = decode_record(&bytes).unwrap();
            assert_eq!(
                (r.version, r.position, r.changeset, r.prev_position),
                (version, position, changeset, Some(prev))
            );
            assert_eq!(r.commit_metadata.len(), COMMIT_METADATA_BYTES_MAX);
            assert_eq!(peek_record_header(&bytes).unwrap().position, Some(position));
        }
        // Under a valid CRC: VARINT without PACKED or with COMPACT, a link at or past the
        // record's position, a number not in its shortest form, lengths past the record.
        let refit = |bytes: &mut Vec<u8>| {
            let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            let crc = record_crc(&bytes[..len]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        };
        let damaged = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = small.clone();
            edit(&mut bytes);
            refit(&mut bytes);
            decode_record(&bytes).map(|r| r.position)
        };
        assert_eq!(
            damaged(&|b| b[3] &= !RECORD_FLAG_PACKED),
            Err(DecodeError::Invalid("a compact record outside a pack"))
        );
        assert_eq!(
            damaged(&|b| b[3] |= RECORD_FLAG_COMPACT),
            Err(DecodeError::Invalid("two packed headers at once"))
        );
        // The varints start at 20: position 5, version 1, changeset 1, prev_delta 0.
        for delta in [5u8, 6] {
            assert_eq!(
                damaged(&|b| b[23] = delta),
                Err(DecodeError::Invalid("prev_delta beyond position"))
            );
        }
        // Version 1 as two bytes (0x81 0x00) shifts the rest by one: refused as a varint.
        assert_eq!(
            damaged(&|b| {
                b[21] = 0x81;
                b.insert(22, 0x00);
                let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) + 1;
                b[4..8].copy_from_slice(&len.to_le_bytes());
            }),
            Err(DecodeError::Invalid("varint header"))
        );
        // A record of 128 bytes (101 of body) that says 1 byte of type and 127 of metadata.
        assert_eq!(
            damaged(&|b| {
                b[26] = 127;
                b[4..8].copy_from_slice(&128_u32.to_le_bytes());
            }),
            Err(DecodeError::Invalid("field lengths exceed record_bytes"))
        );
        assert_eq!(
            damaged(&|b| b[20] = 5),
            Ok(5),
            "the same bytes, refitted, decode"
        );
        assert!(damaged(&|b| b[20] = 0).is_err(), "position 0");
    }

    #[test]
    fn zeros_and_truncations_never_decode() {
        assert_eq!(decode_record(&[0u8; 256]), Err(DecodeError::BadMagic));
        let mut bytes = Vec::new();
        sample(&mut bytes);
        for len in 0..RECORD_HEADER_BYTES + 25 {
            assert!(decode_record(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            store_id: 1,
            stream_hash: 2,
            collision: 0,
            segment: 4,
            first_version: 5,
            created_us: 6,
            stream_id: "../../etc/passwd".into(),
        };
        let bytes = h.encode();
        assert_eq!(bytes.len() as u64, h.header_bytes());
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for bit in 0..(64 + 16) * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
    }
}
