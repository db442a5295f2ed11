//! Appends and reads on a real folder: expected versions, atomic multi-event appends, forward
//! and backward reads from the middle, reopen, idempotent retries.

mod common;
use common::*;
use streamlog::{Direction, Error, EventData, ExpectedVersion, Position, Store};

#[test]
fn the_issue_example_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data")).unwrap();
    let r = store
        .append(
            "order-42",
            ExpectedVersion::NoStream,
            [
                EventData::new("OrderPlaced", br#"{"total":12}"#.to_vec()).metadata(b"{}".to_vec()),
                EventData::new("ItemAdded", b"...".to_vec()),
            ],
        )
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (1, 2));
    assert_eq!(
        (r.first_position, r.last_position),
        (Position(1), Position(2))
    );
    let events: Vec<_> = store
        .read_stream("order-42", 1, Direction::Forward)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type(), "OrderPlaced");
    assert_eq!(events[0].data(), br#"{"total":12}"#);
    assert_eq!(events[0].metadata(), b"{}");
    assert_eq!(events[1].event_type(), "ItemAdded");
    assert!(events[0].is_append_begin() && !events[0].is_append_end());
    assert!(!events[1].is_append_begin() && events[1].is_append_end());
    assert_eq!(events[0].changeset(), 1);
    let all = all(&store);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].0, "order-42");
}

#[test]
fn every_expected_version_case() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let s = "s";
    // Absent stream.
    assert!(matches!(
        store.append(s, ExpectedVersion::StreamExists, [event(0)]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    assert!(matches!(
        store.append(s, ExpectedVersion::Exact(1), [event(0)]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    assert_eq!(
        store
            .append(s, ExpectedVersion::Exact(0), [event(0)])
            .unwrap()
            .last_version,
        1
    );
    // Existing stream at version 1.
    assert!(matches!(
        store.append(s, ExpectedVersion::NoStream, [event(1)]),
        Err(Error::WrongExpectedVersion {
            actual: Some(1),
            ..
        })
    ));
    assert!(matches!(
        store.append(s, ExpectedVersion::Exact(0), [event(1)]),
        Err(Error::WrongExpectedVersion {
            actual: Some(1),
            ..
        })
    ));
    assert!(matches!(
        store.append(s, ExpectedVersion::Exact(2), [event(1)]),
        Err(Error::WrongExpectedVersion {
            actual: Some(1),
            ..
        })
    ));
    assert_eq!(
        store
            .append(s, ExpectedVersion::StreamExists, [event(1)])
            .unwrap()
            .last_version,
        2
    );
    assert_eq!(
        store
            .append(s, ExpectedVersion::Exact(2), [event(2)])
            .unwrap()
            .last_version,
        3
    );
    assert_eq!(
        store
            .append(s, ExpectedVersion::Any, [event(3)])
            .unwrap()
            .last_version,
        4
    );
    assert_eq!(
        store
            .append("t", ExpectedVersion::Any, [event(4)])
            .unwrap()
            .last_version,
        1
    );
    assert_eq!(
        store
            .append("u", ExpectedVersion::NoStream, [event(5)])
            .unwrap()
            .last_version,
        1
    );
    // Rejected appends take no position.
    check_invariants(&store);
    assert_eq!(store.head_position(), Position(6));
    let e = store
        .append(s, ExpectedVersion::Exact(9), [event(9)])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("expected version 9, stream is at version 4"),
        "{e}"
    );
}

#[test]
fn empty_append_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, Vec::new()),
        Err(Error::EmptyAppend)
    ));
    assert_eq!(store.stream_version("s").unwrap(), None);
}

#[test]
fn reads_forward_and_backward_from_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..50u64 {
        store.append("a", ExpectedVersion::Any, [event(i)]).unwrap();
        store
            .append("b", ExpectedVersion::Any, [event(100 + i), event(200 + i)])
            .unwrap();
    }
    let versions = |from, dir| -> Vec<u64> {
        store
            .read_stream("a", from, dir)
            .unwrap()
            .map(|e| e.unwrap().version())
            .collect()
    };
    assert_eq!(
        versions(45, Direction::Forward),
        vec![45, 46, 47, 48, 49, 50]
    );
    assert_eq!(versions(4, Direction::Backward), vec![4, 3, 2, 1]);
    assert_eq!(versions(u64::MAX, Direction::Backward).len(), 50);
    assert_eq!(versions(51, Direction::Forward), Vec::<u64>::new());
    let positions = |from: u64, dir| -> Vec<u64> {
        store
            .read_all(Position(from), dir)
            .unwrap()
            .map(|e| e.unwrap().position().get())
            .collect()
    };
    assert_eq!(positions(148, Direction::Forward), vec![148, 149, 150]);
    assert_eq!(positions(3, Direction::Backward), vec![3, 2, 1]);
    assert_eq!(positions(u64::MAX, Direction::Backward).len(), 150);
    assert!(matches!(
        store.read_stream("nope", 1, Direction::Forward),
        Err(Error::StreamNotFound { .. })
    ));
    check_invariants(&store);
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..100u64 {
            store
                .append(&format!("s-{}", i % 7), ExpectedVersion::Any, [event(i)])
                .unwrap();
        }
        all(&store)
    };
    let store = Store::open(dir.path()).unwrap();
    assert!(store.recovery_report().clean);
    assert_eq!(all(&store), before);
    store
        .append("s-0", ExpectedVersion::Exact(15), [event(1000)])
        .unwrap();
    check_invariants(&store);
    let mut ids: Vec<String> = store.streams().unwrap().map(Result::unwrap).collect();
    ids.sort();
    assert_eq!(ids, (0..7).map(|i| format!("s-{i}")).collect::<Vec<_>>());
}

#[test]
fn idempotent_retry_returns_the_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let batch = |n: u8| vec![event(1).id([n; 16]), event(2).id([n + 1; 16])];
    let first = store
        .append("s", ExpectedVersion::NoStream, batch(1))
        .unwrap();
    store
        .append("other", ExpectedVersion::Any, [event(3)])
        .unwrap();
    let retry = store
        .append("s", ExpectedVersion::NoStream, batch(1))
        .unwrap();
    assert_eq!(retry, first);
    let second = store
        .append("s", ExpectedVersion::Exact(2), batch(5))
        .unwrap();
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(2), batch(5))
            .unwrap(),
        second
    );
    // Other ids, or events without ids, are a conflict.
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(2), batch(7)),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(2), [event(1), event(2)]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.stream_version("s").unwrap(), Some(4));
    assert_eq!(store.head_position(), Position(5));
}

#[test]
fn many_segments_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let options = streamlog::Options {
        segment_bytes: 64 << 10,
        event_bytes_max: 16 << 10,
        index_entries_per_file: 64,
        ..Default::default()
    };
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let big = vec![7u8; 10_000];
    for i in 0..40u64 {
        store
            .append(
                "big",
                ExpectedVersion::Exact(i),
                [EventData::new("Big", big.clone())],
            )
            .unwrap();
        store
            .append("small", ExpectedVersion::Any, [event(i), event(i + 1)])
            .unwrap();
    }
    check_invariants(&store);
    let back: Vec<u64> = store
        .read_stream("big", u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(back, (1..=40).rev().collect::<Vec<_>>());
    drop(store);
    let store = Store::open_with(dir.path(), options).unwrap();
    check_invariants(&store);
    assert_eq!(store.stream_version("big").unwrap(), Some(40));
    store
        .append(
            "big",
            ExpectedVersion::Exact(40),
            [EventData::new("Big", big)],
        )
        .unwrap();
    check_invariants(&store);
}
