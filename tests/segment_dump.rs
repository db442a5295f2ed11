//! The segment-dump binary: shows a store's files and records, exits 0 on a healthy store, 1 on
//! corruption, and tells an unacknowledged tail from corruption.

mod common;
use common::*;
use std::process::Command;
use streamlog::{Append, EventData, ExpectedVersion, Store};

fn dump(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_segment-dump"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn build(dir: &std::path::Path) {
    let store = Store::open_with(dir, own_segments()).unwrap();
    store
        .append(
            "order-42",
            ExpectedVersion::NoStream,
            [
                EventData::new("OrderPlaced", br#"{"total":12}"#.to_vec()),
                EventData::new("Bin", vec![0u8, 159, 146, 150]),
            ],
        )
        .unwrap();
    store
        .append("other", ExpectedVersion::Any, [event(1)])
        .unwrap();
}

#[test]
fn healthy_store_text_and_json() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"order-42\""), "{text}");
    assert!(
        text.contains("OrderPlaced") && text.contains(r#""{\"total\":12}""#),
        "printable data as text: {text}"
    );
    assert!(text.contains("0x009f9296"), "binary data as hex: {text}");
    assert!(text.contains("checkpoint head 3"), "{text}");
    let (code, json) = dump(&["--json", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let segments: Vec<_> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "segment")
        .collect();
    assert_eq!(segments.len(), 2);
    assert!(v["corruption"].as_array().unwrap().is_empty());
    // One file on its own.
    let seg = segment_path_of(dir, "order-42", 0);
    let (code, text) = dump(&[seg.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("segment 0 of stream \"order-42\""), "{text}");
}

#[test]
fn corruption_exits_1_and_an_unacknowledged_tail_does_not() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let seg = segment_path_of(dir, "order-42", 0);
    let len = file_len(&seg);
    // Garbage after the last record: an unacknowledged tail, reported as a note.
    write_at(&seg, len, &[0x77; 100]);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("unacknowledged torn tail"), "{text}");
    // A flipped bit in a committed record.
    flip_bit(&seg, 200, 4);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("CORRUPT"), "{text}");
    // Not a streamlog file at all.
    let stray = dir.join("stray.bin");
    std::fs::write(&stray, b"hello").unwrap();
    assert_eq!(dump(&[stray.to_str().unwrap()]).0, 1);
    assert_eq!(dump(&[dir.join("missing").to_str().unwrap()]).0, 2);
}

/// Found by the kill test at `segment-created`: a segment file created by a batch that never
/// completed (empty, or with a torn header) was reported as corruption although the engine
/// rightly treats it as an interrupted creation.
#[test]
fn an_interrupted_segment_creation_is_a_note_not_corruption() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    // A new stream's first segment, created and then the process died: empty.
    let fresh = segment_path_of(dir, "never-acknowledged", 0);
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    std::fs::write(&fresh, b"").unwrap();
    // A segment roll of an existing stream, its header torn.
    let rolled = segment_path_of(dir, "order-42", 1);
    std::fs::write(&rolled, [0u8; 40]).unwrap();
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.matches("left by an interrupted creation").count(),
        2,
        "{text}"
    );
    // The engine agrees: both are ignored, and the streams take appends.
    let store = Store::open_with(dir, own_segments()).unwrap();
    assert_eq!(stream_data(&store, "order-42").len(), 2);
    store
        .append("never-acknowledged", ExpectedVersion::NoStream, [event(2)])
        .unwrap();
    store
        .append("order-42", ExpectedVersion::Exact(2), [event(3)])
        .unwrap();
    drop(store);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("interrupted creation"), "{text}");
}

#[test]
fn persistent_subscriptions_are_shown_and_a_damaged_one_is_corruption() {
    use streamlog::{Filter, Position, Start, Target};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    {
        let store = Store::open_with(dir, own_segments()).unwrap();
        let mut sub = store
            .persistent_subscription(
                "order-view",
                Target::All(Filter::all().stream_prefix("order-")),
                Start::Origin,
            )
            .unwrap();
        sub.recv().unwrap();
        sub.ack(Position(1)).unwrap();
        sub.flush_acks().unwrap();
    }
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("persistent subscription \"order-view\"")
            && text.contains("prefix \"order-\"")
            && text.contains("acknowledged up to position 1"),
        "{text}"
    );
    assert!(text.contains("1 persistent subscriptions"), "{text}");
    let file = dir.join("subscriptions/0000000000000001.sub");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[66] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CORRUPT") && text.contains("subscription header"),
        "{text}"
    );
}

#[test]
fn snapshots_tombstones_and_closes_are_shown_and_are_not_corruption() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    {
        let store = Store::open_with(dir, own_segments()).unwrap();
        store
            .snapshot_stream("order-42", EventData::new("OrderState", b"{}".to_vec()))
            .unwrap();
        store
            .append("order-42", ExpectedVersion::Exact(2), [event(7)])
            .unwrap();
        store.close_stream("order-42").unwrap();
        store.truncate_before("order-42", 3).unwrap();
        store.delete_stream("other").unwrap();
    }
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("snapshot: covers version 2 and position 2"),
        "{text}"
    );
    assert!(
        text.contains("tombstone: covers version 1 and position 3"),
        "{text}"
    );
    assert!(text.contains("close: covers version 0"), "{text}");
    assert!(
        text.contains("\"$delete\"") && text.contains("\"$close\""),
        "{text}"
    );
    assert!(
        text.contains("REMOVALS: 1 truncations and invalidations"),
        "{text}"
    );
    assert!(
        text.contains("versions up to 2") && !text.contains("\"$truncate\""),
        "{text}"
    );
}

#[test]
fn changesets_keys_and_multi_stream_appends_are_shown() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let store = Store::open_with(dir, own_segments()).unwrap();
    store
        .append_multi([
            Append::new(
                "cart-1",
                ExpectedVersion::NoStream,
                [EventData::new("ItemAdded", b"{}".to_vec()).key(b"sku-77".to_vec())],
            )
            .commit_metadata(b"user=ann cmd=checkout".to_vec()),
            Append::new("stock-77", ExpectedVersion::Any, [event(1)]),
        ])
        .unwrap();
    drop(store);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("changeset 1 commit metadata 21B \"user=ann cmd=checkout\""),
        "{text}"
    );
    assert!(text.contains("key \"sku-77\""), "{text}");
    assert!(text.contains("(BEGIN|END|LINKED)"), "{text}");
    let (_, json) = dump(&["--json", dir.to_str().unwrap()]);
    assert!(json.contains("user=ann cmd=checkout"), "{json}");
}

#[test]
fn keys_files_and_indexes_are_shown() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let store = Store::open_with(
        dir,
        streamlog::Options {
            indexes: true,
            ..streamlog::Options::default()
        },
    )
    .unwrap();
    for i in 0..6u64 {
        store
            .append(
                &format!("order-{}", i % 2),
                ExpectedVersion::Any,
                [EventData::new("Placed", vec![1]).key(format!("sku-{i}").into_bytes())],
            )
            .unwrap();
    }
    assert!(store
        .wait_indexed(store.head_position(), std::time::Duration::from_secs(30))
        .unwrap());
    drop(store);
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("3 entries, base record at position 0"),
        "{text}"
    );
    assert!(text.contains("key \"sku-4\" v3"), "{text}");
    assert!(text.contains("indexes reach position 6"), "{text}");
    assert!(
        text.contains("category \"order\": 6 postings, positions 1..=6"),
        "{text}"
    );
    assert!(text.contains("event type \"Placed\": 6 postings"), "{text}");
}

/// Under the journal, batches not yet flushed are frames in `JOURNAL`: the dump of a store that
/// is still open shows them as frames to replay, and one of a store closed cleanly shows none.
#[test]
fn journal_frames_are_shown_until_a_flush() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let store = Store::open_with(dir, own_segments()).unwrap();
    for i in 0..3 {
        store.append("j", ExpectedVersion::Any, [event(i)]).unwrap();
    }
    let (code, text) = dump(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("3 frames to replay at the next open, positions 1..=3"),
        "{text}"
    );
    assert!(text.contains("frame 2 at "), "{text}");
    // Each frame writes its record and its index entry (24 bytes).
    assert!(text.contains("write 24 bytes at "), "{text}");
    drop(store);
    let (code, text) = dump(&["--summary", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("JOURNAL: no frame to replay"), "{text}");
}

/// Packs (segment-format.md §19): small streams' records in a shared pack, their ids in fan-out
/// tables; a torn tail past the committed records is a note, damage to a committed record or
/// table entry is corruption.
#[test]
fn packs_and_tables_are_shown_and_damage_in_them_is_corruption() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    {
        let store = Store::open_with(
            dir,
            streamlog::Options {
                pack_stream_bytes: 4096,
                ..streamlog::Options::default()
            },
        )
        .unwrap();
        store
            .append(
                "order-42",
                ExpectedVersion::NoStream,
                [
                    EventData::new("OrderPlaced", br#"{"total":12}"#.to_vec()),
                    EventData::new("Bin", vec![0u8, 159, 146, 150]),
                ],
            )
            .unwrap();
        store
            .append("other", ExpectedVersion::Any, [event(1)])
            .unwrap();
    }
    let d = dir.to_str().unwrap();
    let (code, text) = dump(&[d]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("pack 0, first position 1"), "{text}");
    assert!(text.contains("3 committed records"), "{text}");
    assert!(
        text.contains(r#""{\"total\":12}""#) && text.contains("0x009f9296"),
        "packed records are shown: {text}"
    );
    assert!(
        text.contains("v2 pos 2 (stream's previous: pos 1)"),
        "{text}"
    );
    assert!(
        text.contains("stream \"order-42\"") && text.contains("first position 1, last 2"),
        "table entries: {text}"
    );
    let (_, json) = dump(&["--json", d]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let kinds = |kind: &str| {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind)
            .count()
    };
    assert_eq!((kinds("pack"), kinds("table"), kinds("segment")), (1, 2, 0));
    // Each packed record with its stream, which the pack does not hold: its table does.
    let pack = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "pack")
        .unwrap();
    let streams: Vec<&str> = pack["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["order-42", "order-42", "other"]);
    // An unacknowledged batch's torn bytes past the last committed record: a note.
    let pack = dir.join("packs").join("00000000.pack");
    let len = file_len(&pack);
    write_at(&pack, len, &[0x77; 100]);
    let (code, text) = dump(&[d]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("unacknowledged torn tail of 100 bytes"),
        "{text}"
    );
    // A bit of a committed record.
    flip_bit(&pack, 128 + 24, 2);
    let (code, text) = dump(&[d]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CORRUPT") && text.contains("record of position 1"),
        "{text}"
    );
    flip_bit(&pack, 128 + 24, 2);
    assert_eq!(dump(&[d]).0, 0);
    // A bit of a committed table entry (in the padding of its id).
    let table = table_path_of(dir, "other");
    flip_bit(&table, 64 + 48 + 6, 0);
    let (code, text) = dump(&[d]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("table entry of a committed stream"), "{text}");
}
