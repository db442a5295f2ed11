//! A crash in the middle of a batch leaves parts of an unacknowledged append on disk. Each test
//! builds such a state byte for byte (from a store that went one append further), reopens, and
//! checks that the partial append is gone, the earlier events are intact, and appending works.
//! Every test runs twice: with every stream in segment files of its own, and with the small
//! streams in a shared pack (segment-format.md §19), where the unacknowledged records are a
//! pack's tail past its committed end.

mod common;
use common::*;
use std::path::Path;
use std::path::PathBuf;
use streamlog::{ExpectedVersion, Options, Store};

/// Where the small streams' records go.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Segments,
    Packs,
}

const LAYOUTS: [Layout; 2] = [Layout::Segments, Layout::Packs];

impl Layout {
    fn options(self) -> Options {
        match self {
            Layout::Segments => own_segments(),
            Layout::Packs => Options {
                pack_stream_bytes: 4096,
                ..Options::default()
            },
        }
    }

    /// The file that holds the records of stream `s`.
    fn records_file(self, dir: &Path) -> PathBuf {
        match self {
            Layout::Segments => segment_path_of(dir, "s", 0),
            Layout::Packs => dir.join("packs").join("00000000.pack"),
        }
    }
}

/// Build `before` (10 events in streams a and s, closed cleanly) and return, from a store that
/// went on to append 2 more events to `s` in one append: the bytes of those records and their
/// index entries, and where they go.
struct NextAppend {
    layout: Layout,
    segment_offset: u64,
    records: Vec<u8>,
    index_offset: u64,
    entries: Vec<u8>,
}

fn build(before: &Path, layout: Layout) -> NextAppend {
    let after = before.with_extension("after");
    {
        let store = Store::open_with(before, layout.options()).unwrap();
        for i in 0..10u64 {
            let stream = if i % 2 == 0 { "a" } else { "s" };
            store
                .append(stream, ExpectedVersion::Any, [event(i)])
                .unwrap();
        }
    }
    copy_dir(before, &after);
    std::fs::remove_file(after.join("LOCK")).unwrap();
    let segment_offset = file_len(&layout.records_file(before));
    {
        let store = Store::open_with(&after, layout.options()).unwrap();
        store
            .append("s", ExpectedVersion::Exact(5), [event(100), event(101)])
            .unwrap();
    }
    let records = tail_after(&layout.records_file(&after), segment_offset);
    assert!(
        !records.is_empty(),
        "{layout:?}: the append's records are past {segment_offset}"
    );
    let index_offset = 64 + 10 * 24;
    let idx = std::fs::read(index_path_of(&after)).unwrap();
    let entries = idx[index_offset as usize..index_offset as usize + 48].to_vec();
    NextAppend {
        layout,
        segment_offset,
        records,
        index_offset,
        entries,
    }
}

fn check_recovered(dir: &Path, layout: Layout) -> Store {
    let store = Store::open_with(dir, layout.options()).unwrap();
    assert_eq!(store.head_position().get(), 10);
    assert_eq!(store.stream_version("s").unwrap(), Some(5));
    let data = stream_data(&store, "s");
    assert_eq!(
        data,
        [1u64, 3, 5, 7, 9]
            .iter()
            .map(|i| format!("data-{i}").into_bytes())
            .collect::<Vec<_>>()
    );
    check_invariants(&store);
    // The store goes on: new appends take the next positions and versions.
    let r = store
        .append("s", ExpectedVersion::Exact(5), [event(200)])
        .unwrap();
    assert_eq!((r.last_version, r.last_position.get()), (6, 11));
    check_invariants(&store);
    store
}

fn reopen_after_all(dir: &Path, layout: Layout) {
    let store = Store::open_with(dir, layout.options()).unwrap();
    assert_eq!(store.head_position().get(), 11);
    assert_eq!(stream_data(&store, "s").last().unwrap(), b"data-200");
    check_invariants(&store);
}

#[test]
fn index_entries_durable_record_torn_is_cut() {
    for layout in LAYOUTS {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        let next = build(&dir, layout);
        write_at(&index_path_of(&dir), next.index_offset, &next.entries);
        let half = &next.records[..next.records.len() / 2];
        write_at(&next.layout.records_file(&dir), next.segment_offset, half);
        let store = check_recovered(&dir, next.layout);
        assert!(
            store.recovery_report().cut_positions >= 1,
            "{:?}",
            store.recovery_report()
        );
        drop(store);
        reopen_after_all(&dir, next.layout);
    }
}

#[test]
fn records_durable_index_entries_lost_are_hidden_then_cut() {
    for layout in LAYOUTS {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        let next = build(&dir, layout);
        write_at(
            &next.layout.records_file(&dir),
            next.segment_offset,
            &next.records,
        );
        drop(check_recovered(&dir, next.layout));
        reopen_after_all(&dir, next.layout);
    }
}

#[test]
fn append_without_its_end_entry_is_cut() {
    for layout in LAYOUTS {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        let next = build(&dir, layout);
        write_at(&index_path_of(&dir), next.index_offset, &next.entries[..24]);
        write_at(
            &next.layout.records_file(&dir),
            next.segment_offset,
            &next.records,
        );
        drop(check_recovered(&dir, next.layout));
        reopen_after_all(&dir, next.layout);
    }
}

#[test]
fn garbage_or_zeros_after_the_last_record_are_cut() {
    for layout in LAYOUTS {
        for fill in [0u8, 0x5a] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("store");
            let next = build(&dir, layout);
            let junk: Vec<u8> = (0..777u32)
                .map(|i| {
                    if fill == 0 {
                        0
                    } else {
                        (i * 31 % 251) as u8 ^ fill
                    }
                })
                .collect();
            write_at(&next.layout.records_file(&dir), next.segment_offset, &junk);
            drop(check_recovered(&dir, next.layout));
            reopen_after_all(&dir, next.layout);
        }
    }
}

#[test]
fn every_cut_length_of_the_unacknowledged_append_recovers() {
    for layout in LAYOUTS {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        let next = build(&base, layout);
        // Where the last record's bytes end: a cut in its padding alone leaves every record
        // whole, and recovery rightly keeps them.
        let mut whole = 0usize;
        while let Ok(r) = streamlog::format::segment::decode_record(&next.records[whole..]) {
            let last_end = whole + r.padded_bytes as usize;
            if last_end >= next.records.len() {
                whole += r.body_offset
                    + r.event_type.len()
                    + r.key.len()
                    + r.commit_metadata.len()
                    + r.metadata.len()
                    + r.data.len();
                break;
            }
            whole = last_end;
        }
        assert!(whole > next.records.len() - 8, "{layout:?}: {whole}");
        // The base store, with the append's index entries durable and its records cut at `len`.
        let cut = |len: usize| {
            let dir = root.path().join(format!("cut-{len}"));
            copy_dir(&base, &dir);
            std::fs::remove_file(dir.join("LOCK")).ok();
            write_at(&index_path_of(&dir), next.index_offset, &next.entries);
            write_at(
                &next.layout.records_file(&dir),
                next.segment_offset,
                &next.records[..len],
            );
            dir
        };
        for len in (0..whole).step_by(13).chain([whole - 1]) {
            drop(check_recovered(&cut(len), next.layout));
        }
        if whole < next.records.len() {
            // Only padding missing: the append is whole, and kept; the next one follows it.
            let dir = cut(whole);
            let store = Store::open_with(&dir, layout.options()).unwrap();
            assert_eq!(store.head_position().get(), 12, "{layout:?}");
            // The last record, short of its padding, reads back before anything follows it.
            assert_eq!(stream_data(&store, "s").len(), 7);
            check_invariants(&store);
            drop(store);
            let store = Store::open_with(&dir, layout.options()).unwrap();
            assert_eq!(stream_data(&store, "s").len(), 7);
            let r = store
                .append("s", ExpectedVersion::Exact(7), [event(200)])
                .unwrap();
            assert_eq!(r.last_position.get(), 13);
            check_invariants(&store);
            drop(store);
            let store = Store::open_with(&dir, layout.options()).unwrap();
            assert_eq!(
                stream_data(&store, "s")[5..],
                [
                    b"data-100".to_vec(),
                    b"data-101".to_vec(),
                    b"data-200".to_vec()
                ]
            );
            check_invariants(&store);
        }
    }
}
