//! Many threads appending at once: the group-commit writer hands out dense global positions and
//! contiguous versions, and readers running meanwhile only ever see a dense prefix. Appenders
//! that find the writer idle commit on their own threads (segment-format.md §7, "Who runs the
//! loop"): each test runs with that path on and off, and a producer's appends keep their order
//! among them.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use streamlog::{Append, Direction, ExpectedVersion, Options, Position, Store};

/// Options with appenders committing on their own threads when the writer is idle, or not.
fn options(caller_commits: bool) -> Options {
    Options {
        caller_commits,
        ..Options::default()
    }
}

#[test]
fn eight_threads_times_a_thousand_appends_give_positions_1_to_8000() {
    for caller_commits in [true, false] {
        eight_threads_times_a_thousand_appends(caller_commits);
    }
}

fn eight_threads_times_a_thousand_appends(caller_commits: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(caller_commits)).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for i in 0..1000u64 {
                    // Each thread owns one stream and shares one with every other thread.
                    let (stream, expected) = if i % 2 == 0 {
                        (format!("own-{t}"), ExpectedVersion::Exact(i / 2))
                    } else {
                        ("shared".to_string(), ExpectedVersion::Any)
                    };
                    let r = store
                        .append(&stream, expected, [event(t * 10_000 + i)])
                        .unwrap();
                    results.push((stream, r));
                }
                results
            })
        })
        .collect();
    let mut positions: Vec<u64> = Vec::new();
    for t in threads {
        for (_, r) in t.join().unwrap() {
            assert_eq!(r.first_position, r.last_position);
            positions.push(r.first_position.get());
        }
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=8000).collect::<Vec<_>>());
    assert_eq!(store.head_position(), Position(8000));
    assert_eq!(store.stream_version("shared").unwrap(), Some(4000));
    for t in 0..8 {
        assert_eq!(
            store.stream_version(&format!("own-{t}")).unwrap(),
            Some(500)
        );
    }
    check_invariants(&store);
}

#[test]
fn readers_during_appends_see_only_a_dense_durable_prefix() {
    for caller_commits in [true, false] {
        readers_during_appends(caller_commits);
    }
}

fn readers_during_appends(caller_commits: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(caller_commits)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds == 0 {
                let head = store.head_position().get();
                let seen: Vec<u64> = store
                    .read_all(Position::START, Direction::Forward)
                    .unwrap()
                    .map(|e| e.unwrap().position().get())
                    .collect();
                assert!(seen.len() as u64 >= head);
                assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
                let versions: Vec<u64> = store
                    .read_stream("w-0", 1, Direction::Forward)
                    .map(|it| it.map(|e| e.unwrap().version()).collect())
                    .unwrap_or_default();
                assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
                rounds += 1;
            }
            rounds
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    store
                        .append(
                            &format!("w-{t}"),
                            ExpectedVersion::Exact(2 * i),
                            [event(i), event(i + 1)],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() >= 1);
    check_invariants(&store);
}

/// A producer's pipelined appends (each expecting the version the one before it leaves) all
/// commit, in submission order, while four threads append on their own: those commit on their
/// own threads whenever they find the writer idle, a producer's never do. One of the producer's
/// appends committed ahead of an earlier one would fail its expected version.
#[test]
fn a_producers_appends_keep_their_order_among_appenders_committing_on_their_own_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let others: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n == 0 {
                    store
                        .append(&format!("other-{t}"), ExpectedVersion::Exact(n), [event(n)])
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut producer = store.producer_with(64);
    let mut pending = Vec::new();
    for i in 0..2_000u64 {
        pending.push(
            producer
                .submit(Append::new(
                    "produced",
                    ExpectedVersion::Exact(i),
                    [event(i)],
                ))
                .unwrap(),
        );
    }
    producer.flush().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut last = 0;
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.wait().unwrap();
        assert_eq!(r.last_version, i as u64 + 1);
        assert!(
            r.first_position.get() > last,
            "positions follow submission order"
        );
        last = r.first_position.get();
    }
    let mut total = 2_000;
    for (t, o) in others.into_iter().enumerate() {
        let n = o.join().unwrap();
        assert_eq!(
            store.stream_version(&format!("other-{t}")).unwrap(),
            Some(n)
        );
        total += n;
    }
    assert_eq!(store.head_position(), Position(total));
    check_invariants(&store);
}

/// An append that finds the writer idle never commits ahead of a request sent before it. Here a
/// thread submits a producer's append (queued for the writer thread, not waited for), then
/// appends to the same stream itself, expecting the version the producer's append leaves: the
/// second must find the first committed, every time. (A caller that only looked at the channel
/// could overtake a request the writer thread had taken out of it but not yet begun to commit.)
#[test]
fn an_append_never_overtakes_a_request_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    let mut producer = store.producer_with(4);
    for i in 0..3_000u64 {
        let pending = producer
            .submit(Append::new(
                "mixed",
                ExpectedVersion::Exact(2 * i),
                [event(2 * i)],
            ))
            .unwrap();
        let own = store
            .append(
                "mixed",
                ExpectedVersion::Exact(2 * i + 1),
                [event(2 * i + 1)],
            )
            .unwrap_or_else(|e| panic!("append {i} after the producer's: {e}"));
        assert_eq!(own.last_version, 2 * i + 2);
        let produced = pending.wait().unwrap();
        assert_eq!(produced.last_version, 2 * i + 1);
        assert!(produced.first_position < own.first_position);
    }
    assert_eq!(store.stream_version("mixed").unwrap(), Some(6_000));
    check_invariants(&store);
}
