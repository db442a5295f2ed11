//! Ties `segment-format.md` to the code: every offset and size in the document's field tables is
//! checked against the `zerocopy` structs, so the document cannot drift from the bytes.

use super::checkpoint::CheckpointSlot;
use super::index::{IndexEntryRaw, IndexFileHeader};
use super::keys::{KeyEntryRaw, KeysFileHeader};
use super::manifest::ManifestHeader;
use super::pack::{PackEndSlot, PackFileHeader, TableEntryRaw, TableFileHeader};
use super::removals::{RemovalRaw, RemovalsHeader};
use super::segment::{
    CompactHeader, ControlBlockRaw, RecordHeader, SegmentFileHeader, VarintFixed,
};
use super::subscription::{SubscriptionFileHeader, SubscriptionSlotRaw};
use std::mem::{offset_of, size_of};

const DOC: &str = include_str!("../../segment-format.md");

/// The field tables (offset, size, name) found under the heading that starts with `heading`,
/// up to the next heading of the same or a higher level.
fn tables_under(heading: &str) -> Vec<Vec<(usize, usize, String)>> {
    let mut lines = DOC.lines().skip_while(|l| !l.starts_with(heading));
    let level = heading.chars().take_while(|c| *c == '#').count();
    assert!(
        lines.next().is_some(),
        "heading {heading:?} missing from segment-format.md"
    );
    let mut tables = Vec::new();
    let mut current: Option<Vec<(usize, usize, String)>> = None;
    for line in lines {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level {
            break;
        }
        if line.starts_with("| offset") {
            current = Some(Vec::new());
            continue;
        }
        if let Some(rows) = current.as_mut() {
            if !line.starts_with('|') {
                tables.push(current.take().unwrap_or_default());
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let (Ok(offset), Ok(size)) = (cells[1].parse(), cells[2].parse()) {
                rows.push((offset, size, cells[3].trim_matches('`').to_string()));
            }
        }
    }
    if let Some(rows) = current {
        tables.push(rows);
    }
    tables
}

fn check(table: &[(usize, usize, String)], fields: &[(&str, usize, usize)], total: usize) {
    for (name, offset, size) in fields {
        let row = table
            .iter()
            .find(|(_, _, n)| n == name)
            .unwrap_or_else(|| panic!("field {name} is not documented"));
        assert_eq!(
            (row.0, row.1),
            (*offset, *size),
            "field {name}: document vs code"
        );
    }
    let documented_end = table
        .iter()
        .filter(|(_, _, n)| fields.iter().any(|(f, _, _)| f == n))
        .map(|(o, s, _)| o + s)
        .max()
        .unwrap_or(0);
    assert_eq!(
        documented_end, total,
        "documented fields must cover the whole struct"
    );
}

macro_rules! fields {
    ($t:ty: $($f:ident),*) => {{
        let probe = <$t as zerocopy::FromZeros>::new_zeroed();
        vec![$((stringify!($f), offset_of!($t, $f), std::mem::size_of_val(&probe.$f))),*]
    }};
}

#[test]
fn manifest_matches_document() {
    let t = tables_under("## 2. MANIFEST");
    let f = fields!(ManifestHeader: magic, format_version, flags, store_id, hash_key,
        index_entries_per_file, created_us, reserved1, crc);
    check(&t[0], &f, size_of::<ManifestHeader>());
}

#[test]
fn checkpoint_matches_document() {
    let t = tables_under("## 3. CHECKPOINT");
    let f = fields!(CheckpointSlot: magic, format_version, flags, store_id, sequence, head,
        journal_sequence, journal_offset, reserved, crc);
    check(&t[0], &f, size_of::<CheckpointSlot>());
}

#[test]
fn journal_matches_document() {
    use super::journal::{FrameHeader, JournalFileHeader, OpHeader};
    let t = tables_under("## 18. The journal");
    let header = fields!(JournalFileHeader: magic, format_version, reserved0, store_id, reserved,
        crc);
    check(&t[0], &header, size_of::<JournalFileHeader>());
    let frame = fields!(FrameHeader: magic, frame_bytes, store_id, sequence, first_position,
        last_position, op_count, crc);
    check(&t[1], &frame, size_of::<FrameHeader>());
    let op = fields!(OpHeader: op, target, collision, segment, file, offset, len, reserved);
    check(&t[2], &op, size_of::<OpHeader>());
}

#[test]
fn index_matches_document() {
    let t = tables_under("## 4. Index file");
    let header = fields!(IndexFileHeader: magic, format_version, entry_bytes, store_id,
        file_number, first_position, capacity, reserved, crc);
    check(&t[0], &header, size_of::<IndexFileHeader>());
    let entry = fields!(IndexEntryRaw: stream_hash, segment, offset, collision, flags, magic, crc);
    check(&t[1], &entry, size_of::<IndexEntryRaw>());
}

#[test]
fn segment_and_record_match_document() {
    let t = tables_under("## 5. Segment file");
    let header = fields!(SegmentFileHeader: magic, format_version, header_bytes, store_id,
        stream_hash, segment, collision, stream_id_len, first_version, created_us, reserved, crc);
    check(&t[0], &header, size_of::<SegmentFileHeader>());
    let r = tables_under("### Record");
    let record = fields!(RecordHeader: magic, kind, flags, record_bytes, crc, type_len, key_len,
        metadata_len, commit_metadata_len, version, position, changeset, timestamp_us, event_id);
    check(&r[0], &record, size_of::<RecordHeader>());
    let control = fields!(ControlBlockRaw: op, control_flags, reserved0, next_segment,
        covers_version, covers_position, target_changeset);
    check(&r[1], &control, size_of::<ControlBlockRaw>());
}

#[test]
fn subscription_file_matches_document() {
    let t = tables_under("### Persistent subscriptions");
    let header = fields!(SubscriptionFileHeader: magic, format_version, header_bytes, store_id, id,
        created_us, target, reserved0, name_len, stream_len, type_len, reserved1, crc);
    check(&t[0], &header, size_of::<SubscriptionFileHeader>());
    let slot = fields!(SubscriptionSlotRaw: magic, format_version, reserved0, store_id, sequence,
        acked_position, acked_version, reserved1, crc);
    check(&t[1], &slot, size_of::<SubscriptionSlotRaw>());
}

#[test]
fn removals_match_document() {
    let t = tables_under("## 12. Stream lifecycle");
    let header =
        fields!(RemovalsHeader: magic, format_version, reserved0, store_id, reserved1, crc);
    check(&t[0], &header, size_of::<RemovalsHeader>());
    let record = fields!(RemovalRaw: magic, collision, kind, reserved0, stream_hash,
        covers_version, covers_position, created_us, reserved1, crc);
    check(&t[1], &record, size_of::<RemovalRaw>());
}

#[test]
fn keys_file_matches_document() {
    let t = tables_under("## 15. Keyed events");
    let header = fields!(KeysFileHeader: magic, format_version, flags, store_id, stream_hash,
        collision, reserved0, base_position, created_us, reserved1, crc);
    check(&t[0], &header, size_of::<KeysFileHeader>());
    let entry = fields!(KeyEntryRaw: magic, key_len, offset, version, position, changeset,
        segment, crc, content_hash);
    check(&t[1], &entry, size_of::<KeyEntryRaw>());
}

#[test]
fn compact_record_matches_document() {
    let t = tables_under("### Compact packed records");
    let header = fields!(CompactHeader: magic, kind, flags, record_bytes, crc, type_len,
        commit_metadata_len, metadata_len, version, changeset, prev_delta, position, timestamp_us);
    check(&t[0], &header, size_of::<CompactHeader>());
    // The id follows the fixed header, when there is one.
    let id = t[0].iter().find(|(_, _, n)| n == "event_id").unwrap();
    assert_eq!(
        (id.0, id.1),
        (
            super::segment::COMPACT_HEADER_BYTES,
            super::segment::EVENT_ID_BYTES
        )
    );
}

#[test]
fn varint_record_matches_document() {
    let t = tables_under("### Varint packed records");
    let fixed = fields!(VarintFixed: magic, kind, flags, record_bytes, crc, timestamp_us);
    check(&t[0], &fixed, super::segment::VARINT_FIXED_BYTES);
}

#[test]
fn packs_and_tables_match_document() {
    let t = tables_under("### Pack file");
    check(
        &t[0],
        &fields!(PackFileHeader: magic, format_version, pack, store_id, first_position, created_us, reserved, crc),
        64,
    );
    let slot: Vec<(&str, usize, usize)> =
        fields!(PackEndSlot: committed_end, end_reserved, end_crc)
            .into_iter()
            .map(|(n, o, s)| (n, o + 64, s))
            .collect();
    check(&t[0], &slot, 80);
    let t = tables_under("### Table `tables/");
    check(
        &t[0],
        &fields!(TableFileHeader: magic, format_version, fanout, store_id, reserved, crc),
        64,
    );
    check(
        &t[1],
        &fields!(TableEntryRaw: stream_hash, collision, stream_id_len, entry_bytes, first_position, reserved, crc, last_position, last_reserved, last_crc),
        48,
    );
}
