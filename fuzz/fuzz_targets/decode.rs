//! Arbitrary bytes into every decoder of the format: none may panic, hang or allocate without
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamlog::format::checkpoint::Checkpoint;
use streamlog::format::index::{IndexEntry, IndexHeader};
use streamlog::format::journal::{decode_file_header, decode_frame};
use streamlog::format::keys::{decode_entries, KeysHeader};
use streamlog::format::manifest::Manifest;
use streamlog::format::projection::{decode_posting, PostingsHeader};
use streamlog::format::removals::Removal;
use streamlog::format::segment::{
    decode_plain_event, decode_record, peek_record_header, SegmentHeader, RECORD_FLAG_COMPACT,
    RECORD_FLAG_PACKED, RECORD_FLAG_VARINT, RECORD_KIND_EVENT,
};
use streamlog::format::subscription::{SubscriptionCheckpoint, SubscriptionHeader};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::decode(data);
    let _ = Checkpoint::decode_file(data);
    let _ = SubscriptionHeader::decode(data);
    let _ = SubscriptionCheckpoint::decode_file(data);
    let _ = IndexHeader::decode(data);
    let position = data
        .get(..8)
        .map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap_or([1; 8])));
    let _ = IndexEntry::decode(data.get(8..).unwrap_or_default(), position);
    if let Ok(h) = SegmentHeader::decode(data) {
        // Walk the records after the header as the read path does.
        let mut at = h.header_bytes() as usize;
        while at < data.len() {
            match decode_record(&data[at..]) {
                Ok(r) => at += r.padded_bytes as usize,
                Err(_) => break,
            }
        }
    }
    let _ = KeysHeader::decode(data);
    let _ = decode_entries(data);
    let _ = PostingsHeader::decode(data);
    let _ = Removal::decode(data);
    for chunk in data.chunks_exact(8) {
        let _ = decode_posting(position, chunk.try_into().unwrap_or([0; 8]));
    }
    let _ = decode_file_header(data);
    let _ = decode_frame(data, 7);
    // The same bytes as a frame whose header and checksum are right, so that the operations
    // behind the checksum are decoded too.
    if data.len() >= 48 && data.len() % 8 == 0 && data.len() < u32::MAX as usize {
        let mut frame = data.to_vec();
        frame[..4].copy_from_slice(b"SLJF");
        frame[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        frame[8..16].copy_from_slice(&7u64.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..44]), &frame[48..]);
        frame[44..48].copy_from_slice(&crc.to_le_bytes());
        let _ = decode_frame(&frame, 7);
    }
    let _ = peek_record_header(data);
    // The same bytes as a record whose magic, length and checksum are right, so that the checks
    // behind the checksum run too, for every header (the flags byte picks one).
    if data.len() >= 12 && data.len() < u32::MAX as usize {
        let mut record = data.to_vec();
        record[..2].copy_from_slice(&0x4C53u16.to_le_bytes());
        record[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&record[..8]), &record[12..]);
        record[8..12].copy_from_slice(&crc.to_le_bytes());
        if let Ok(r) = decode_record(&record) {
            assert!(r.body_offset <= record.len());
            assert!(r.version > 0 && r.position > 0 && r.changeset > 0);
            if r.flags & (RECORD_FLAG_COMPACT | RECORD_FLAG_VARINT) != 0 {
                // A compact or varint link cannot point at or past its own record.
                assert!(r.prev_position.is_some_and(|p| p < r.position));
            }
            let peek = peek_record_header(&record).expect("a decoded record peeks");
            assert_eq!(peek.record_bytes as usize, record.len());
            assert_eq!(peek.position, Some(r.position));
        }
        plain_agrees(&record);
        // And as a plain event of a segment: the read path's fast decoder must take exactly
        // what the general one takes, and read it the same.
        record[2] = RECORD_KIND_EVENT;
        for flags in [
            record[3] & 0x07,
            record[3] & 0x07 | RECORD_FLAG_PACKED | RECORD_FLAG_VARINT,
        ] {
            record[3] = flags;
            let crc = crc32c::crc32c_append(crc32c::crc32c(&record[..8]), &record[12..]);
            record[8..12].copy_from_slice(&crc.to_le_bytes());
            plain_agrees(&record);
        }
    }
    let mut at = 0;
    while at < data.len() {
        match decode_record(&data[at..]) {
            Ok(r) => at += r.padded_bytes as usize,
            Err(_) => at += 8,
        }
    }
});

/// `decode_plain_event` accepts exactly the plain event records `decode_record` accepts, and
/// reads them the same.
fn plain_agrees(bytes: &[u8]) {
    match (decode_plain_event(bytes), decode_record(bytes)) {
        (Some(p), Ok(r)) => {
            assert!(r.kind == RECORD_KIND_EVENT && r.flags & RECORD_FLAG_COMPACT == 0);
            assert_eq!(
                (
                    p.version,
                    p.position,
                    p.changeset,
                    p.event_id,
                    p.padded_bytes
                ),
                (
                    r.version,
                    r.position,
                    r.changeset,
                    r.event_id,
                    r.padded_bytes
                )
            );
            assert_eq!(p.body_offset, r.body_offset);
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
        }
        (Some(p), Err(e)) => panic!("plain decoder took {p:?}, the general one refused: {e}"),
        (None, Ok(r)) => assert!(
            r.kind != RECORD_KIND_EVENT
                || (r.flags & RECORD_FLAG_PACKED != 0 && r.flags & RECORD_FLAG_VARINT == 0)
        ),
        (None, Err(_)) => {}
    }
}
