//! Many threads appending at once: the group-commit writer hands out dense global positions and
//! contiguous versions, and readers running meanwhile only ever see a dense prefix.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use streamlog::{Direction, ExpectedVersion, Position, Store};

#[test]
fn eight_threads_times_a_thousand_appends_give_positions_1_to_8000() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
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
