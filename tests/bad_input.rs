//! Hostile stream ids, limits at max-1, max and max+1, and a second opener.

mod common;
use common::*;
use streamlog::limits::{EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};
use streamlog::{Direction, Error, EventData, ExpectedVersion, Options, Store};

/// Every path under `dir`, relative to it.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn hostile_stream_ids_are_stored_as_data_never_as_paths() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = Store::open(&dir).unwrap();
    let long = "x".repeat(STREAM_ID_BYTES_MAX);
    let ids = [
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        ".",
        "..",
        "\\..\\windows",
        "Ω-ørdér-42",
        "ｏｒｄｅｒ",
        " ",
        long.as_str(),
    ];
    for (i, id) in ids.iter().enumerate() {
        store
            .append(id, ExpectedVersion::NoStream, [event(i as u64)])
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            stream_data(&store, id),
            vec![format!("data-{i}").into_bytes()],
            "{id}"
        );
    }
    check_invariants(&store);
    // Nothing was created outside the store, and no file name holds user text.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    for path in tree(&dir) {
        assert!(
            path.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-.".contains(c)),
            "{path}"
        );
        assert!(!path.contains("etc") && !path.contains(".."), "{path}");
    }
    let mut listed: Vec<String> = store.streams().unwrap().map(Result::unwrap).collect();
    listed.sort();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn invalid_stream_ids_are_rejected_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let too_long = "y".repeat(STREAM_ID_BYTES_MAX + 1);
    let big = "z".repeat(64 << 10);
    for id in ["", "a\0b", "\0", too_long.as_str(), big.as_str()] {
        assert!(matches!(
            store.append(id, ExpectedVersion::Any, [event(0)]),
            Err(Error::InvalidStreamId { .. })
        ));
        assert!(matches!(
            store.read_stream(id, 1, Direction::Forward),
            Err(Error::InvalidStreamId { .. })
        ));
        assert!(matches!(
            store.stream_version(id),
            Err(Error::InvalidStreamId { .. })
        ));
    }
    assert_eq!(store.head_position().get(), 0);
}

#[test]
fn event_size_limit_at_max_minus_one_max_and_max_plus_one() {
    let dir = tempfile::tempdir().unwrap();
    let max = 4096;
    let store = Store::open_with(
        dir.path(),
        Options {
            event_bytes_max: max,
            ..Options::default()
        },
    )
    .unwrap();
    let with_size = |n: usize| EventData::new("T", vec![1u8; n - 1 - 2]).metadata(b"{}".to_vec());
    store
        .append("s", ExpectedVersion::Any, [with_size(max - 1)])
        .unwrap();
    store
        .append("s", ExpectedVersion::Any, [with_size(max)])
        .unwrap();
    match store.append("s", ExpectedVersion::Any, [with_size(max + 1)]) {
        Err(Error::EventTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("{other:?}"),
    }
    // One oversized event fails the whole append, before anything is queued.
    assert!(matches!(
        store.append(
            "s",
            ExpectedVersion::Any,
            [with_size(10), with_size(max + 1)]
        ),
        Err(Error::EventTooLarge { .. })
    ));
    let sizes: Vec<usize> = store
        .read_stream("s", 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().data().len() + 3)
        .collect();
    assert_eq!(sizes, vec![max - 1, max]);
}

#[test]
fn event_type_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = "t".repeat(EVENT_TYPE_BYTES_MAX);
    store
        .append(
            "s",
            ExpectedVersion::Any,
            [EventData::new(t.clone(), b"x".to_vec())],
        )
        .unwrap();
    for bad in [String::new(), format!("{t}t"), "a\0".to_string()] {
        assert!(matches!(
            store.append(
                "s",
                ExpectedVersion::Any,
                [EventData::new(bad, b"x".to_vec())]
            ),
            Err(Error::InvalidEventType { .. })
        ));
    }
    assert_eq!(
        store
            .read_stream("s", 1, Direction::Forward)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .event_type(),
        t
    );
}

#[test]
fn appends_larger_than_a_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 64 << 10,
        event_bytes_max: 8 << 10,
        ..Options::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let events: Vec<EventData> = (0..10)
        .map(|_| EventData::new("T", vec![0u8; 8000]))
        .collect();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, events),
        Err(Error::AppendTooLarge { .. })
    ));
    let too_many: Vec<EventData> = (0..=streamlog::limits::APPEND_EVENTS_MAX)
        .map(|_| EventData::new("T", Vec::new()))
        .collect();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, too_many),
        Err(Error::AppendTooLarge { .. })
    ));
    assert!(matches!(
        Store::open_with(
            dir.path().join("x"),
            Options {
                segment_bytes: 10,
                ..Options::default()
            }
        ),
        Err(Error::InvalidOptions { .. })
    ));
    assert!(matches!(
        Store::open_with(
            dir.path().join("y"),
            Options {
                read_all_window_bytes: streamlog::limits::READ_ALL_WINDOW_BYTES_MIN - 1,
                ..Options::default()
            }
        ),
        Err(Error::InvalidOptions { .. })
    ));
}

/// A child forked by one test holds copies of every descriptor of the process until it execs,
/// the lock's among them (flock belongs to the open file description). The tests that spawn a
/// child and the test that reopens after a close take turns.
static FORK_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `LOCK` names the process holding the store, whatever an earlier holder left in it: it is
/// written over at a fixed width (never truncated first), and longer leftovers are cut.
#[test]
fn the_lock_file_names_the_holder() {
    let _turn = FORK_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id().to_string();
    for leftover in [
        "",
        "1\n",
        "4294967295\n",
        "a much longer leftover than any pid line\n",
    ] {
        std::fs::write(dir.path().join("LOCK"), leftover).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
        assert_eq!(text.trim_end(), pid, "after {leftover:?}");
        assert_eq!(text.len(), 11, "after {leftover:?}");
        drop(store);
    }
}

#[test]
fn a_second_open_in_the_same_process_is_locked() {
    let _turn = FORK_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    drop(store);
    Store::open(dir.path()).unwrap();
}

/// Run by `a_second_process_is_locked_out` in a child process; does nothing on its own.
#[test]
#[ignore = "helper run in a child process"]
fn child_tries_to_open() {
    let dir = std::env::var("STREAMLOG_CHILD_DIR").unwrap();
    match Store::open(&dir) {
        Err(Error::Locked { .. }) => std::process::exit(42),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn a_second_process_is_locked_out() {
    let _turn = FORK_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append("s", ExpectedVersion::Any, [event(1)]).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_tries_to_open", "--nocapture"])
        .env("STREAMLOG_CHILD_DIR", dir.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));
    assert_eq!(all(&store).len(), 1);
}
