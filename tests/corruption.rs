//! Damage to bytes the store synced is reported as `Corrupt` (or `UnsupportedVersion`), never
//! returned as data and never silently cut.

mod common;
use common::*;
use std::path::Path;
use streamlog::{Direction, Error, ExpectedVersion, Position, Store};

fn build(dir: &Path) {
    let store = Store::open_with(dir, own_segments()).unwrap();
    for i in 0..20u64 {
        let stream = if i % 2 == 0 { "a" } else { "s" };
        store
            .append(stream, ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
}

/// Offsets of the records of a segment (records start after the header).
fn record_offsets(seg: &Path) -> Vec<u64> {
    let bytes = std::fs::read(seg).unwrap();
    let header = streamlog::format::segment::SegmentHeader::decode(&bytes).unwrap();
    let mut at = header.header_bytes();
    let mut out = Vec::new();
    while (at as usize) < bytes.len() {
        let r = streamlog::format::segment::decode_record(&bytes[at as usize..]).unwrap();
        out.push(at);
        at += r.padded_bytes;
    }
    out
}

fn is_corrupt<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Corrupt { .. }))
}

#[test]
fn flipped_bit_in_a_middle_record_is_reported_by_both_read_paths() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let seg = segment_path_of(dir, "s", 0);
    let offsets = record_offsets(&seg);
    // A bit of the data of version 4 of "s" (position 8).
    flip_bit(&seg, offsets[3] + 72 + 6, 3);
    let store = Store::open_with(dir, own_segments()).unwrap();
    // Loading the stream scans its tail and finds committed records after the damage.
    match store.read_stream("s", 1, Direction::Forward).map(|_| ()) {
        Err(Error::Corrupt { path, offset, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, offsets[3]);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The global order serves everything before the damaged event, then the error.
    let all: Vec<_> = store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(all.len(), 8);
    assert!(all[..7].iter().all(Result::is_ok));
    assert!(matches!(all[7], Err(Error::Corrupt { .. })));
    // The other stream is untouched.
    assert_eq!(stream_data(&store, "a").len(), 10);
}

#[test]
fn flipped_bit_in_the_last_record_is_corrupt_not_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let seg = segment_path_of(dir, "s", 0);
    let last = *record_offsets(&seg).last().unwrap();
    let len_before = file_len(&seg);
    flip_bit(&seg, last + 72 + 8, 0);
    let store = Store::open_with(dir, own_segments()).unwrap();
    assert!(
        is_corrupt(store.stream_version("s")),
        "{:?}",
        store.stream_version("s")
    );
    assert!(is_corrupt(store.append(
        "s",
        ExpectedVersion::Any,
        [event(1)]
    )));
    // Nothing was cut: the bytes are still there for an operator to look at.
    assert_eq!(file_len(&seg), len_before);
}

#[test]
fn file_cut_below_its_committed_length_is_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let seg = segment_path_of(dir, "s", 0);
    let len = file_len(&seg);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let store = Store::open_with(dir, own_segments()).unwrap();
    assert!(is_corrupt(store.stream_version("s")));
}

#[test]
fn flipped_bit_in_a_committed_index_entry_is_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    flip_bit(&index_path_of(dir), 64 + 4 * 24 + 9, 1);
    let store = Store::open_with(dir, own_segments()).unwrap();
    let all: Vec<_> = store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .collect();
    assert_eq!(all.len(), 5);
    assert!(matches!(all[4], Err(Error::Corrupt { .. })));
}

#[test]
fn damaged_headers_and_foreign_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    // Strays are ignored.
    std::fs::write(dir.join("README"), "not ours").unwrap();
    std::fs::write(dir.join(".DS_Store"), [0u8; 10]).unwrap();
    std::fs::create_dir(dir.join("stuff")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    std::fs::write(dir.join("index").join("notes.txt"), "x").unwrap();
    std::fs::write(dir.join("CHECKPOINT.tmp"), "stale").unwrap();
    {
        let store = Store::open_with(dir, own_segments()).unwrap();
        assert_eq!(all(&store).len(), 20);
    }
    assert!(
        !dir.join("CHECKPOINT.tmp").exists(),
        "temporary files are removed at open"
    );
    // A damaged segment header.
    let seg = segment_path_of(dir, "a", 0);
    flip_bit(&seg, 30, 2);
    {
        let store = Store::open_with(dir, own_segments()).unwrap();
        assert!(is_corrupt(
            store.read_stream("a", 1, Direction::Forward).map(|_| ())
        ));
        assert_eq!(stream_data(&store, "s").len(), 10);
    }
    flip_bit(&seg, 30, 2);
    // A damaged manifest stops the open.
    flip_bit(&dir.join("MANIFEST"), 20, 5);
    assert!(is_corrupt(Store::open_with(dir, own_segments())));
    flip_bit(&dir.join("MANIFEST"), 20, 5);
    Store::open_with(dir, own_segments()).unwrap();
}

/// A format version newer than this build's.
const NEWER: u32 = streamlog::format::FORMAT_VERSION + 1;

/// Rewrite the format version of a header and fix its checksum, as a newer build would write it.
fn bump_version(path: &Path, crc_extra: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&NEWER.to_le_bytes());
    let mut crc = crc32c::crc32c(&bytes[..60]);
    if crc_extra > 0 {
        crc = crc32c::crc32c_append(crc, &bytes[64..64 + crc_extra]);
    }
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn newer_format_versions_are_refused_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    bump_version(&segment_path_of(dir, "s", 0), 1);
    let store = Store::open_with(dir, own_segments()).unwrap();
    let e = store.stream_version("s").unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedVersion {
                found: NEWER,
                supported: streamlog::format::FORMAT_VERSION,
                ..
            }
        ),
        "{e}"
    );
    drop(store);
    bump_version(&dir.join("MANIFEST"), 0);
    assert!(matches!(
        Store::open_with(dir, own_segments()),
        Err(Error::UnsupportedVersion { found: NEWER, .. })
    ));
}

#[test]
fn a_folder_of_foreign_files_is_not_taken_for_a_store() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("MANIFEST"), vec![0x42u8; 64]).unwrap();
    assert!(is_corrupt(Store::open_with(dir, own_segments())));
    let other = root.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::create_dir(other.join("index")).unwrap();
    std::fs::write(other.join("index").join("0000000000000000.idx"), [0u8; 100]).unwrap();
    assert!(
        is_corrupt(Store::open_with(&other, own_segments())),
        "store files without a MANIFEST"
    );
}

/// Found by the model property test with faults: recovery cuts an index file and extends it back
/// in two calls, and a fault between them left the file short; the next open called that
/// corruption. A short index file that still holds every committed entry is extended again; one
/// cut below a committed entry is still corruption.
#[test]
fn an_index_file_left_short_by_an_interrupted_recovery_is_extended() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    build(dir);
    let index = index_path_of(dir);
    let full = file_len(&index);
    // Committed: 20 entries of 24 bytes after the 64-byte header.
    let committed_end = 64 + 20 * 24;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(committed_end)
        .unwrap();
    {
        let store = Store::open_with(dir, own_segments()).unwrap();
        assert_eq!(all(&store).len(), 20);
        store
            .append("a", ExpectedVersion::Any, [event(20)])
            .unwrap();
    }
    assert_eq!(file_len(&index), full);
    let store = Store::open_with(dir, own_segments()).unwrap();
    assert_eq!(all(&store).len(), 21);
    drop(store);
    // Below the committed entries: corruption, and nothing is extended over it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(64 + 10 * 24)
        .unwrap();
    assert!(is_corrupt(Store::open_with(dir, own_segments()).and_then(
        |s| {
            s.read_all(Position::START, Direction::Forward)?
                .collect::<Result<Vec<_>, _>>()
        }
    )));
}

/// The journal (segment-format.md §18): a frame that fails its checksum ends the chain, as a
/// torn unacknowledged frame would; but if a whole frame with the next sequence number follows
/// it, synced bytes were damaged, and opening says so instead of dropping what follows.
#[test]
fn a_damaged_journal_frame_followed_by_a_whole_one_is_corruption() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let store = Store::open_with(&live, own_segments()).unwrap();
    for i in 0..5 {
        store.append("j", ExpectedVersion::Any, [event(i)]).unwrap();
    }
    // The store is still open: its five batches are frames only the journal made durable.
    let frame_at = |journal: &[u8], n: usize| {
        let mut at = 64;
        for _ in 0..n {
            at += u32::from_le_bytes(journal[at + 4..at + 8].try_into().unwrap()) as usize;
        }
        at
    };
    for (frame, expect_corrupt) in [(1, true), (4, false)] {
        let copy = root.path().join(format!("copy-{frame}"));
        copy_dir(&live, &copy);
        let path = copy.join("JOURNAL");
        let mut journal = std::fs::read(&path).unwrap();
        let at = frame_at(&journal, frame);
        journal[at + 60] ^= 0x01;
        std::fs::write(&path, &journal).unwrap();
        match Store::open_with(&copy, own_segments()) {
            Err(Error::Corrupt {
                path: p, reason, ..
            }) if expect_corrupt => {
                assert!(p.ends_with("JOURNAL"), "{p:?}");
                assert!(
                    reason.contains("frame 2 does not verify, but frame 3"),
                    "{reason}"
                );
            }
            Ok(reopened) if !expect_corrupt => {
                // The last frame broken looks like a torn, unacknowledged one; its batch was
                // also written in place, and recovery keeps what verifies there.
                assert_eq!(reopened.recovery_report().replayed_frames, 4);
                check_invariants(&reopened);
            }
            other => panic!("frame {frame}: {:?}", other.map(|_| "opened")),
        }
    }
    drop(store);
}

/// Packs (segment-format.md §19): the same damage to small streams whose records share a pack.
mod packed {
    use super::*;
    use streamlog::Options;

    fn options() -> Options {
        Options {
            pack_stream_bytes: 4096,
            ..Options::default()
        }
    }

    fn pack_path(dir: &Path) -> std::path::PathBuf {
        dir.join("packs").join("00000000.pack")
    }

    fn table_path(dir: &Path, stream: &str) -> std::path::PathBuf {
        table_path_of(dir, stream)
    }

    /// Streams "a" and "s", 10 events each, interleaved: all in pack 0.
    fn build(dir: &Path) {
        let store = Store::open_with(dir, options()).unwrap();
        for i in 0..20u64 {
            let stream = if i % 2 == 0 { "a" } else { "s" };
            store
                .append(stream, ExpectedVersion::Any, [event(i)])
                .unwrap();
        }
        drop(store);
        assert!(
            !segment_path_of(dir, "s", 0).exists(),
            "small streams have no segment"
        );
    }

    /// Offsets of the pack's records (the committed ones: a cleanly closed store has no other).
    fn record_offsets(pack: &Path) -> Vec<u64> {
        let bytes = std::fs::read(pack).unwrap();
        let mut at = streamlog::format::pack::PACK_RECORDS_START;
        let mut out = Vec::new();
        while let Ok(r) = streamlog::format::segment::decode_record(&bytes[at as usize..]) {
            out.push(at);
            at += r.padded_bytes;
        }
        assert_eq!(out.len(), 20);
        out
    }

    /// Where the body (type, metadata, data) of the record at `offset` starts.
    fn body_at(pack: &Path, offset: u64) -> u64 {
        let bytes = std::fs::read(pack).unwrap();
        let r = streamlog::format::segment::decode_record(&bytes[offset as usize..]).unwrap();
        assert_ne!(r.flags & streamlog::format::segment::RECORD_FLAG_VARINT, 0);
        offset + r.body_offset as u64
    }

    #[test]
    fn flipped_bit_in_a_middle_packed_record_is_reported_by_both_read_paths() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        build(dir);
        let pack = pack_path(dir);
        let offsets = record_offsets(&pack);
        // A bit of the data of version 4 of "s" (position 8): after the compact header
        // (format 6), which holds the link to the stream's previous record.
        flip_bit(&pack, body_at(&pack, offsets[7]) + 6, 3);
        let store = Store::open_with(dir, options()).unwrap();
        match store
            .read_stream("s", 1, Direction::Forward)
            .map(|s| s.collect::<Result<Vec<_>, _>>())
        {
            Err(Error::Corrupt { path, offset, .. })
            | Ok(Err(Error::Corrupt { path, offset, .. })) => {
                assert_eq!(path, pack);
                assert_eq!(offset, offsets[7]);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let all: Vec<_> = store
            .read_all(Position::START, Direction::Forward)
            .unwrap()
            .collect();
        assert_eq!(all.len(), 8);
        assert!(all[..7].iter().all(Result::is_ok));
        assert!(matches!(all[7], Err(Error::Corrupt { .. })));
        assert_eq!(stream_data(&store, "a").len(), 10);
    }

    #[test]
    fn flipped_bit_in_the_last_packed_record_is_corrupt_not_a_torn_tail() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        build(dir);
        let pack = pack_path(dir);
        let last = *record_offsets(&pack).last().unwrap();
        let len_before = file_len(&pack);
        flip_bit(&pack, body_at(&pack, last) + 8, 0);
        let store = Store::open_with(dir, options()).unwrap();
        assert!(
            is_corrupt(store.stream_version("s")),
            "{:?}",
            store.stream_version("s")
        );
        assert!(is_corrupt(store.append(
            "s",
            ExpectedVersion::Any,
            [event(1)]
        )));
        assert_eq!(stream_data(&store, "a").len(), 10);
        // A new stream still goes to the pack, after the damaged record: nothing was cut.
        store
            .append("new", ExpectedVersion::NoStream, [event(2)])
            .unwrap();
        drop(store);
        assert!(file_len(&pack) > len_before);
        let store = Store::open_with(dir, options()).unwrap();
        assert!(is_corrupt(store.stream_version("s")));
        assert_eq!(stream_data(&store, "new").len(), 1);
    }

    #[test]
    fn a_pack_cut_below_its_committed_end_is_corrupt() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        build(dir);
        let pack = pack_path(dir);
        let len = file_len(&pack);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let result = Store::open_with(dir, options()).and_then(|s| s.stream_version("s"));
        assert!(is_corrupt(result), "cut pack");
    }

    #[test]
    fn a_damaged_pack_header_or_table_entry_is_corrupt() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        build(dir);
        let pack = pack_path(dir);
        flip_bit(&pack, 30, 2);
        let result = Store::open_with(dir, options()).and_then(|s| s.stream_version("a"));
        assert!(is_corrupt(result), "pack header");
        flip_bit(&pack, 30, 2);
        // A bit of the id of the first entry of "s"'s fan-out table.
        let table = table_path(dir, "s");
        let header = streamlog::format::pack::TABLE_HEADER_BYTES as u64;
        flip_bit(&table, header + 50, 1);
        let store = Store::open_with(dir, options()).unwrap();
        assert!(is_corrupt(store.stream_version("s")));
        assert!(is_corrupt(
            store.read_stream("s", 1, Direction::Forward).map(|_| ())
        ));
        // The other stream's table is another fan-out's.
        assert_eq!(stream_data(&store, "a").len(), 10);
    }

    #[test]
    fn a_newer_pack_format_is_refused_with_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        build(dir);
        let pack = pack_path(dir);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[8..12].copy_from_slice(&5u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&pack, bytes).unwrap();
        let e = Store::open_with(dir, options())
            .and_then(|s| s.stream_version("s"))
            .unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 5, .. }),
            "{e}"
        );
    }
}
