//! Changesets (an append read back as a unit, with commit metadata), multi-stream appends
//! (all or none, also across power cuts and kill -9) and pipelined producers (fail-stop:
//! committed appends are a prefix of what was submitted). segment-format.md §14.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{
    Append, AppendResult, Direction, Error, EventData, ExpectedVersion, Options, Position, Store,
    SyncMode,
};

fn events(tag: &str, n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::new("E", format!("{tag}/{i}").into_bytes()))
        .collect()
}

/// Data of a changeset's events.
fn data_of(c: &streamlog::Changeset) -> Vec<String> {
    c.events()
        .iter()
        .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
        .collect()
}

#[test]
fn changesets_carry_numbers_commit_metadata_and_keys_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    // 60 appends of 1..=3 events of 2 KB: the stream spans several 64 KiB segments, so finding
    // a changeset searches segments.
    let mut expect = Vec::new();
    for i in 0..60u64 {
        let n = 1 + (i % 3) as usize;
        let evs: Vec<EventData> = (0..n)
            .map(|k| {
                EventData::new("E", vec![i as u8; 2000])
                    .metadata(format!("m{i}.{k}").into_bytes())
                    .key(format!("line-{}", k).into_bytes())
            })
            .collect();
        let r = store
            .append_with(
                Append::new("order-1", ExpectedVersion::LastChangeset(i), evs)
                    .commit_metadata(format!("cmd-{i}").into_bytes()),
            )
            .unwrap();
        assert_eq!(r.changeset, i + 1);
        expect.push((r.first_version, n));
    }
    assert!(segment_path_of(dir.path(), "order-1", 2).exists());
    let check = |store: &Store| {
        for from in [1u64, 2, 17, 31, 59, 60] {
            let got: Vec<_> = store
                .read_changesets("order-1", from)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got.len() as u64, 61 - from, "from {from}");
            for (c, number) in got.iter().zip(from..) {
                let (first_version, n) = expect[number as usize - 1];
                assert_eq!(c.number(), number);
                assert!(c.is_whole() && !c.is_snapshot());
                assert_eq!(c.stream_id(), "order-1");
                assert_eq!(c.first_version(), first_version);
                assert_eq!(c.events().len(), n);
                assert_eq!(
                    c.commit_metadata(),
                    format!("cmd-{}", number - 1).as_bytes()
                );
                for (k, e) in c.events().iter().enumerate() {
                    assert_eq!(e.changeset(), number);
                    assert_eq!(e.key(), format!("line-{k}").as_bytes());
                    assert_eq!(e.metadata(), format!("m{}.{k}", number - 1).as_bytes());
                    assert_eq!(e.data(), vec![(number - 1) as u8; 2000]);
                    // Stored once: on the first event only.
                    assert_eq!(e.commit_metadata().is_empty(), k > 0);
                }
            }
        }
        assert_eq!(store.read_changesets("order-1", 61).unwrap().count(), 0);
    };
    check(&store);
    drop(store);
    // Reopened, the stream's changeset count comes from its last record.
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    check(&store);
    let v = store.stream_version("order-1").unwrap().unwrap();
    match store.append(
        "order-1",
        ExpectedVersion::LastChangeset(59),
        events("x", 1),
    ) {
        Err(Error::WrongExpectedVersion {
            actual,
            actual_changeset,
            ..
        }) => assert_eq!((actual, actual_changeset), (Some(v), 60)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.append("new", ExpectedVersion::LastChangeset(1), events("x", 1)),
        Err(Error::WrongExpectedVersion {
            actual: None,
            actual_changeset: 0,
            ..
        })
    ));
    let r = store
        .append("new", ExpectedVersion::LastChangeset(0), events("x", 1))
        .unwrap();
    assert_eq!(r.changeset, 1);
    assert!(matches!(
        store.read_changesets("missing", 1),
        Err(Error::StreamNotFound { .. })
    ));
}

#[test]
fn bad_appends_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let too_big_key = EventData::new("E", vec![1]).key(vec![7; 1025]);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, [too_big_key]),
        Err(Error::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.append_with(
            Append::new("s", ExpectedVersion::Any, events("a", 1)).commit_metadata(vec![0; 65537])
        ),
        Err(Error::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.append_multi([
            Append::new("a", ExpectedVersion::Any, events("a", 1)),
            Append::new("a", ExpectedVersion::Any, events("b", 1)),
        ]),
        Err(Error::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.append_multi(Vec::<Append>::new()),
        Err(Error::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.append_multi([
            Append::new("a", ExpectedVersion::Any, events("a", 1)),
            Append::new("", ExpectedVersion::Any, events("b", 1)),
        ]),
        Err(Error::InvalidStreamId { .. })
    ));
    assert_eq!(store.head_position(), Position::START);
}

#[test]
fn read_all_changesets_pages_through_every_append_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let mut appended = Vec::new();
    for i in 0..40u64 {
        let stream = format!("s-{}", i % 5);
        let n = 1 + (i % 4) as usize;
        let r = store
            .append_with(
                Append::new(&stream, ExpectedVersion::Any, events(&format!("a{i}"), n))
                    .commit_metadata(format!("c{i}").into_bytes()),
            )
            .unwrap();
        appended.push((stream, r.changeset, format!("c{i}"), n));
    }
    // A multi-stream append is one changeset per stream, in order.
    let multi = store
        .append_multi([
            Append::new("s-1", ExpectedVersion::Any, events("m1", 2))
                .commit_metadata(b"mc".to_vec()),
            Append::new("s-2", ExpectedVersion::Any, events("m2", 1))
                .commit_metadata(b"mc".to_vec()),
        ])
        .unwrap();
    appended.push(("s-1".into(), multi[0].changeset, "mc".into(), 2));
    appended.push(("s-2".into(), multi[1].changeset, "mc".into(), 1));
    // A close at the end takes a position that no changeset shows.
    store.close_stream("s-0").unwrap();
    let mut got = Vec::new();
    let mut checkpoint = Position::START;
    loop {
        let page = store.read_all_changesets(checkpoint, 3).unwrap();
        assert!(page.changesets.len() <= 3);
        assert!(page.next_checkpoint >= checkpoint);
        if page.changesets.is_empty() {
            assert_eq!(page.next_checkpoint, store.head_position());
            break;
        }
        for c in &page.changesets {
            assert!(c.is_whole());
            got.push((
                c.stream_id().to_string(),
                c.number(),
                String::from_utf8(c.commit_metadata().to_vec()).unwrap(),
                c.events().len(),
            ));
            assert_eq!(
                c.last_position().get() - c.first_position().get() + 1,
                c.events().len() as u64
            );
        }
        checkpoint = page.next_checkpoint;
    }
    assert_eq!(got, appended);
    // A page after the head is empty and stays at the head.
    let page = store
        .read_all_changesets(store.head_position(), 10)
        .unwrap();
    assert!(page.changesets.is_empty());
    assert_eq!(page.next_checkpoint, store.head_position());
}

#[test]
fn changesets_after_snapshot_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    for i in 0..10 {
        store
            .append("t", ExpectedVersion::Any, events(&format!("t{i}"), 3))
            .unwrap();
        store
            .append("s", ExpectedVersion::Any, events(&format!("s{i}"), 2))
            .unwrap();
    }
    // Truncating inside changeset 4 (versions 10..=12) leaves it partial.
    store.truncate_before("t", 11).unwrap();
    let t: Vec<_> = store
        .read_changesets("t", 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(t.len(), 7);
    assert_eq!((t[0].number(), t[0].is_whole()), (4, false));
    assert_eq!(data_of(&t[0]), vec!["t3/1", "t3/2"]);
    assert!(t[1..].iter().all(streamlog::Changeset::is_whole));
    // A snapshot stands alone, with the number of the last changeset it replaced; appends go on
    // from the next number.
    store
        .snapshot_stream("s", EventData::new("Snap", b"state".to_vec()))
        .unwrap();
    let r = store
        .append("s", ExpectedVersion::LastChangeset(10), events("after", 2))
        .unwrap();
    assert_eq!(r.changeset, 11);
    let s: Vec<_> = store
        .read_changesets("s", 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(s.len(), 2);
    assert!(s[0].is_snapshot() && s[0].number() == 10 && s[0].events().len() == 1);
    assert_eq!(data_of(&s[1]), vec!["after/0", "after/1"]);
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let r = store
        .append("s", ExpectedVersion::LastChangeset(11), events("again", 1))
        .unwrap();
    assert_eq!(r.changeset, 12);
}

#[test]
fn a_multi_stream_append_commits_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append("a", ExpectedVersion::NoStream, events("a", 2))
        .unwrap();
    store
        .append("c", ExpectedVersion::NoStream, events("c", 1))
        .unwrap();
    store.close_stream("c").unwrap();
    let head = store.head_position();
    // The second part's check fails: nothing of the first is written.
    match store.append_multi([
        Append::new("a", ExpectedVersion::Exact(2), events("a2", 1)),
        Append::new("b", ExpectedVersion::Exact(5), events("b", 1)),
    ]) {
        Err(Error::WrongExpectedVersion { stream, .. }) => assert_eq!(stream, "b"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.append_multi([
            Append::new("a", ExpectedVersion::Exact(2), events("a2", 1)),
            Append::new("c", ExpectedVersion::Any, events("c2", 1)),
        ]),
        Err(Error::StreamClosed { .. })
    ));
    assert_eq!(store.head_position(), head);
    assert_eq!(store.stream_version("a").unwrap(), Some(2));
    assert_eq!(store.stream_version("b").unwrap(), None);
    // All checks pass: every part commits, at consecutive positions.
    let with_ids = |tag: u8, n: usize| -> Vec<EventData> {
        (0..n)
            .map(|i| EventData::new("E", vec![tag, i as u8]).id([tag ^ i as u8; 16]))
            .collect()
    };
    let parts = vec![
        Append::new("a", ExpectedVersion::Exact(2), with_ids(1, 2)),
        Append::new("b", ExpectedVersion::NoStream, with_ids(2, 3)),
        Append::new("d", ExpectedVersion::LastChangeset(0), with_ids(3, 1)),
    ];
    let r = store.append_multi(parts.clone()).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].first_position.get(), head.get() + 1);
    assert_eq!(r[1].first_position.get(), r[0].last_position.get() + 1);
    assert_eq!(r[2].first_position.get(), r[1].last_position.get() + 1);
    assert_eq!((r[0].first_version, r[0].changeset), (3, 2));
    assert_eq!((r[1].first_version, r[1].changeset), (1, 1));
    // Read back in global order: the parts' events at their positions, nothing else after.
    let tail: Vec<(String, u64)> = all(&store)
        .into_iter()
        .filter(|e| e.2 > head.get())
        .map(|e| (e.0, e.2))
        .collect();
    let mut want = Vec::new();
    for (stream, r) in ["a", "b", "d"].iter().zip(&r) {
        for p in r.first_position.get()..=r.last_position.get() {
            want.push(((*stream).to_string(), p));
        }
    }
    assert_eq!(tail, want);
    // The same multi-stream append again (a lost reply): the original results, nothing new.
    assert_eq!(store.append_multi(parts.clone()).unwrap(), r);
    assert_eq!(store.head_position(), r[2].last_position);
    // One part stored before, the other new: not a retry.
    assert!(matches!(
        store.append_multi([
            parts[0].clone(),
            Append::new("e", ExpectedVersion::NoStream, with_ids(4, 1)),
        ]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.stream_version("e").unwrap(), None);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.stream_version("b").unwrap(), Some(3));
    assert_eq!(store.head_position(), r[2].last_position);
}

/// The parts of the multi-stream append of the power-cut walk: a stream with history, a new
/// stream, and a stream whose part rolls into a new segment.
fn multi_parts() -> Vec<Append> {
    vec![
        Append::new("old", ExpectedVersion::Exact(10), events("old-new", 2))
            .commit_metadata(b"who".to_vec()),
        Append::new("fresh", ExpectedVersion::NoStream, events("fresh", 3)),
        Append::new(
            "roll",
            ExpectedVersion::Exact(30),
            vec![EventData::new("Big", vec![9; 6000]); 2],
        ),
    ]
}

/// What each stream of the walk holds: (stream, data of each event).
fn multi_view(store: &Store) -> Vec<(String, Vec<Vec<u8>>)> {
    ["old", "fresh", "roll", "bystander"]
        .iter()
        .map(|s| {
            let data = match store.read_stream(s, 1, Direction::Forward) {
                Ok(it) => it.map(|e| e.unwrap().data().to_vec()).collect(),
                Err(Error::StreamNotFound { .. }) => Vec::new(),
                Err(e) => panic!("{s}: {e}"),
            };
            ((*s).to_string(), data)
        })
        .collect()
}

fn multi_store(sim: &SimBackend, options: &Options) -> Store {
    let store = Store::open_with_backend(
        Path::new("/sim/store"),
        options.clone(),
        Arc::new(sim.clone()),
    )
    .unwrap();
    for i in 0..30u64 {
        if i < 10 {
            store
                .append("old", ExpectedVersion::Any, [event(i)])
                .unwrap();
        }
        store
            .append(
                "roll",
                ExpectedVersion::Any,
                [EventData::new("Big", vec![1; 2000])],
            )
            .unwrap();
        store
            .append("bystander", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    store
}

/// A power cut at every I/O call of a multi-stream append, in both sync modes: after the
/// reboot every part is there or none is, an acknowledged one is there whole, the other
/// streams are untouched, and the store goes on.
#[test]
fn a_multi_stream_append_is_atomic_under_power_loss_at_every_call() {
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        let options = Options {
            sync,
            ..small_segments()
        };
        let mut cut = 0u64;
        let (mut saw_old, mut saw_new) = (false, false);
        loop {
            cut += 1;
            let sim = SimBackend::new(cut * 17 + 3);
            let store = multi_store(&sim, &options);
            let before = multi_view(&store);
            let new_state = {
                let mut v = before.clone();
                for (part, view) in multi_parts().iter().zip(v.iter_mut()) {
                    assert_eq!(part.stream(), view.0);
                }
                v[0].1
                    .extend((0..2).map(|i| format!("old-new/{i}").into_bytes()));
                v[1].1
                    .extend((0..3).map(|i| format!("fresh/{i}").into_bytes()));
                v[2].1.extend([vec![9u8; 6000], vec![9u8; 6000]]);
                v
            };
            sim.cut_power_after(cut);
            let done = store.append_multi(multi_parts()).is_ok();
            drop(store);
            let disk = sim.reboot();
            let what = format!("{sync:?} cut at call {cut}");
            let store =
                Store::open_with_backend(Path::new("/sim/store"), options.clone(), Arc::new(disk))
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let after = multi_view(&store);
            if after == new_state {
                saw_new = true;
            } else {
                assert_eq!(after, before, "{what}: neither all nor none");
                assert!(!done, "{what}: acknowledged, then lost");
                saw_old = true;
            }
            check_invariants(&store);
            // The store goes on, and the parts' streams take appends at their versions.
            let v = store.stream_version("roll").unwrap().unwrap();
            store
                .append("roll", ExpectedVersion::Exact(v), [event(1)])
                .unwrap();
            if done {
                break;
            }
        }
        assert!(saw_old && saw_new, "{sync:?}: the walk saw both outcomes");
        println!("{sync:?}: {cut} cut points");
    }
}

/// The child of `multi_stream_appends_survive_kill_9`: multi-stream appends of three streams
/// each, printing `DONE <i>` after each acknowledged one.
#[test]
#[ignore = "helper run in a child process by multi_stream_appends_survive_kill_9"]
fn multi_child() {
    use std::io::Write;
    let dir = std::env::var("STREAMLOG_MULTI_DIR").unwrap();
    let first: u64 = std::env::var("STREAMLOG_MULTI_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open_with(&dir, small_segments()).unwrap();
    let mut out = std::io::stdout();
    for i in first.. {
        let parts = (0..3).map(|k| {
            Append::new(
                format!("m-{k}-{}", i % 7),
                ExpectedVersion::Any,
                (0..1 + k).map(|j| EventData::new("E", format!("{i}/{k}/{j}").into_bytes())),
            )
        });
        store.append_multi(parts).unwrap();
        writeln!(out, "DONE {i}").unwrap();
        out.flush().unwrap();
    }
}

/// kill -9 of a process making multi-stream appends: after reopening, each one is there whole
/// (all three parts, all their events) or not at all, and every acknowledged one is there.
#[test]
fn multi_stream_appends_survive_kill_9() {
    use std::collections::HashMap;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let mut next = 0u64;
    let mut acknowledged = Vec::new();
    for cycle in 0..4u64 {
        acknowledged.extend(acknowledged_before_kill(
            "multi_child",
            &[
                ("STREAMLOG_MULTI_DIR", dir.display().to_string()),
                ("STREAMLOG_MULTI_FIRST", next.to_string()),
            ],
            50 + cycle * 37,
            "DONE ",
        ));
        let store = Store::open_with(&dir, small_segments()).unwrap();
        check_invariants(&store);
        // How many events of each multi-stream append are stored, by append number.
        let mut parts: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for (_, _, _, data) in all(&store) {
            let text = String::from_utf8(data).unwrap();
            let mut f = text.split('/').map(|x| x.parse::<u64>().unwrap());
            let (i, k, j) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            parts.entry(i).or_default().push((k, j));
        }
        let whole: Vec<(u64, u64)> = (0..3).flat_map(|k| (0..=k).map(move |j| (k, j))).collect();
        for (i, got) in &parts {
            assert_eq!(
                got, &whole,
                "cycle {cycle}: multi-stream append {i} is partial"
            );
        }
        for i in &acknowledged {
            assert!(
                parts.contains_key(i),
                "cycle {cycle}: acknowledged {i} lost"
            );
        }
        next = parts.keys().max().map_or(next, |m| m + 1).max(next);
    }
    println!(
        "4 kills, {} acknowledged multi-stream appends verified",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
}

#[test]
fn a_producer_commits_in_submission_order_and_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut producer = store.producer_with(16);
    // 200 appends, each expecting the version the previous one leaves: only submission order
    // makes them all pass.
    let pending: Vec<_> = (0..200u64)
        .map(|i| {
            producer
                .submit(Append::new(
                    "p",
                    ExpectedVersion::Exact(i),
                    [EventData::new("E", i.to_le_bytes().to_vec())],
                ))
                .unwrap()
        })
        .collect();
    let results: Vec<AppendResult> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.first_version, i as u64 + 1);
    }
    producer.flush().unwrap();
    // Another writer moves the stream on: the producer's next append fails its check, and
    // everything it submitted after fails too, although those checks alone would pass.
    store
        .append("p", ExpectedVersion::Exact(200), [event(0)])
        .unwrap();
    let failing = producer
        .submit(Append::new("p", ExpectedVersion::Exact(200), [event(1)]))
        .unwrap();
    let later: Vec<_> = (0..10)
        .map(|i| producer.submit(Append::new("q", ExpectedVersion::Any, [event(i)])))
        .collect();
    assert!(matches!(
        failing.wait(),
        Err(Error::WrongExpectedVersion { .. })
    ));
    for p in later {
        // Submitted before the failure was known, or refused at once after it.
        match p {
            Ok(p) => assert!(matches!(p.wait(), Err(Error::ProducerFailed { .. }))),
            Err(e) => assert!(matches!(e, Error::ProducerFailed { .. })),
        }
    }
    assert!(matches!(
        producer.flush(),
        Err(Error::ProducerFailed { .. })
    ));
    assert!(matches!(
        producer.submit(Append::new("q", ExpectedVersion::Any, [event(0)])),
        Err(Error::ProducerFailed { .. })
    ));
    assert!(producer.failure().is_some());
    assert_eq!(store.stream_version("q").unwrap(), None);
    // An invalid append stops a producer too; other producers and appends go on.
    let mut second = store.producer();
    assert!(matches!(
        second.submit(Append::new("q", ExpectedVersion::Any, [])),
        Err(Error::EmptyAppend)
    ));
    assert!(matches!(
        second.submit(Append::new("q", ExpectedVersion::Any, [event(0)])),
        Err(Error::ProducerFailed { .. })
    ));
    let mut third = store.producer();
    third
        .submit(Append::new("q", ExpectedVersion::NoStream, [event(0)]))
        .unwrap()
        .wait()
        .unwrap();
    third.flush().unwrap();
}

/// An I/O error at every call while a producer has appends in flight: after reopening, the
/// producer's stream holds exactly a prefix of what it submitted, and it holds every append
/// that was acknowledged.
#[test]
fn a_producers_committed_appends_are_a_prefix_through_io_errors() {
    let path = Path::new("/sim/store");
    let mut call = 0u64;
    loop {
        call += 1;
        let sim = SimBackend::new(call);
        let store =
            Store::open_with_backend(path, small_segments(), Arc::new(sim.clone())).unwrap();
        store
            .append("warm", ExpectedVersion::Any, [event(0)])
            .unwrap();
        sim.fail_call_after(call, std::io::ErrorKind::Other);
        let mut producer = store.producer_with(8);
        let mut pending = Vec::new();
        for i in 0..40u64 {
            match producer.submit(Append::new(
                "p",
                ExpectedVersion::Any,
                [EventData::new("E", i.to_le_bytes().to_vec())],
            )) {
                Ok(p) => pending.push((i, p)),
                Err(_) => break,
            }
        }
        let acknowledged: Vec<u64> = pending
            .into_iter()
            .filter_map(|(i, p)| p.wait().ok().map(|_| i))
            .collect();
        let fired = sim.faults_injected() > 0;
        sim.clear_fault();
        drop(producer);
        drop(store);
        let store = Store::open_with_backend(path, small_segments(), Arc::new(sim)).unwrap();
        let stored: Vec<u64> = match store.read_stream("p", 1, Direction::Forward) {
            Ok(it) => it
                .map(|e| u64::from_le_bytes(e.unwrap().data().try_into().unwrap()))
                .collect(),
            Err(Error::StreamNotFound { .. }) => Vec::new(),
            Err(e) => panic!("call {call}: {e}"),
        };
        assert_eq!(
            stored,
            (0..stored.len() as u64).collect::<Vec<_>>(),
            "call {call}: not a prefix"
        );
        assert!(
            acknowledged.iter().all(|i| *i < stored.len() as u64),
            "call {call}: acknowledged {acknowledged:?}, stored {stored:?}"
        );
        // Acknowledged appends are a prefix too.
        assert_eq!(
            acknowledged,
            (0..acknowledged.len() as u64).collect::<Vec<_>>()
        );
        if !fired {
            assert_eq!(stored.len(), 40);
            break;
        }
    }
    println!("{call} fault points");
}
