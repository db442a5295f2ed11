//! Random operation sequences against a simple in-memory model (issue 3, property tests):
//! appends with every kind of expected version, idempotent retries, reads both ways, and
//! reopening in the middle, on the simulated disk. After every step the store and the model agree.

mod common;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{Direction, Error, EventData, ExpectedVersion, Options, Position, Store};

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: u8,
        events: Vec<(u8, u16)>,
        with_ids: bool,
    },
    Retry,
    Reopen,
    ReadBackward {
        stream: u8,
        from: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..6, prop::collection::vec((0u8..3, 0u16..2000), 1..4), any::<bool>())
            .prop_map(|(stream, expected, events, with_ids)| Op::Append { stream, expected, events, with_ids }),
        1 => Just(Op::Retry),
        1 => Just(Op::Reopen),
        1 => (0u8..4, 0u8..12).prop_map(|(stream, from)| Op::ReadBackward { stream, from }),
    ]
}

/// One event of the model: type, data, id.
type ModelEvent = (String, Vec<u8>, Option<[u8; 16]>);

/// The model: each stream's events and the global order.
#[derive(Default)]
struct Model {
    streams: BTreeMap<String, Vec<ModelEvent>>,
    global: Vec<(String, u64)>,
}

fn options() -> Options {
    Options {
        index_entries_per_file: 64,
        segment_bytes: 64 << 10,
        event_bytes_max: 4096,
        ..Options::default()
    }
}

fn check(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    let all: Vec<_> = store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    prop_assert_eq!(all.len(), model.global.len());
    for (e, (stream, version)) in all.iter().zip(&model.global) {
        prop_assert_eq!(e.stream_id(), stream.as_str());
        prop_assert_eq!(e.version(), *version);
        let (t, d, id) = &model.streams[stream][*version as usize - 1];
        prop_assert_eq!(e.event_type(), t.as_str());
        prop_assert_eq!(e.data(), d.as_slice());
        prop_assert_eq!(e.id(), *id);
    }
    for (stream, events) in &model.streams {
        prop_assert_eq!(
            store.stream_version(stream).unwrap(),
            Some(events.len() as u64)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64), ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..40), seed in any::<u64>()) {
        let path = Path::new("/model/store");
        let sim = SimBackend::new(seed);
        let mut store = Store::open_with_backend(path, options(), Arc::new(sim.clone())).unwrap();
        let mut model = Model::default();
        let mut last: Option<(String, ExpectedVersion, Vec<EventData>, bool, streamlog::AppendResult)> = None;
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Append { stream, expected, events, with_ids } => {
                    let stream = format!("m-{stream}");
                    let current = model.streams.get(&stream).map_or(0, Vec::len) as u64;
                    let expected = match expected {
                        0 => ExpectedVersion::Any,
                        1 => ExpectedVersion::NoStream,
                        2 => ExpectedVersion::StreamExists,
                        3 => ExpectedVersion::Exact(current),
                        4 => ExpectedVersion::Exact(current + 1),
                        _ => ExpectedVersion::Exact(current.saturating_sub(1)),
                    };
                    let mut model_events = Vec::new();
                    let data: Vec<EventData> = events
                        .iter()
                        .map(|(t, len)| {
                            counter += 1;
                            let id = with_ids.then(|| {
                                let mut id = [0u8; 16];
                                id[..4].copy_from_slice(&counter.to_le_bytes());
                                id
                            });
                            model_events.push((format!("T{t}"), vec![*t; usize::from(*len)], id));
                            let e = EventData::new(format!("T{t}"), vec![*t; usize::from(*len)]);
                            match id {
                                Some(id) => e.id(id),
                                None => e,
                            }
                        })
                        .collect();
                    let ok = match expected {
                        ExpectedVersion::Any => true,
                        ExpectedVersion::NoStream => current == 0,
                        ExpectedVersion::StreamExists => current > 0,
                        ExpectedVersion::Exact(v) => v == current,
                    };
                    let r = store.append(&stream, expected, data.clone());
                    if ok {
                        let r = r.unwrap();
                        prop_assert_eq!(r.first_version, current + 1);
                        prop_assert_eq!(r.first_position.get(), model.global.len() as u64 + 1);
                        let entry = model.streams.entry(stream.clone()).or_default();
                        for e in model_events {
                            entry.push(e);
                            model.global.push((stream.clone(), entry.len() as u64));
                        }
                        last = Some((stream, ExpectedVersion::Exact(current), data, with_ids, r));
                    } else {
                        let wrong_version = matches!(r, Err(Error::WrongExpectedVersion { .. }));
                        prop_assert!(wrong_version, "expected a wrong-version error");
                        last = None;
                    }
                }
                Op::Retry => {
                    // The same append again, as after a lost reply: with ids it returns the
                    // first result and writes nothing; without ids it is a conflict.
                    if let Some((stream, expected, data, with_ids, first)) = &last {
                        match store.append(stream, *expected, data.clone()) {
                            Ok(again) => {
                                prop_assert!(*with_ids, "a retry without ids must not succeed");
                                prop_assert_eq!(&again, first);
                            }
                            Err(Error::WrongExpectedVersion { .. }) => prop_assert!(!*with_ids, "a retry with ids is idempotent"),
                            Err(e) => prop_assert!(false, "retry failed: {}", e),
                        }
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open_with_backend(path, options(), Arc::new(sim.clone())).unwrap();
                }
                Op::ReadBackward { stream, from } => {
                    let stream = format!("m-{stream}");
                    match model.streams.get(&stream) {
                        None => {
                            let not_found = matches!(store.read_stream(&stream, 1, Direction::Backward), Err(Error::StreamNotFound { .. }));
                            prop_assert!(not_found, "an unknown stream reads as StreamNotFound");
                        }
                        Some(events) => {
                            let versions: Vec<u64> = store.read_stream(&stream, u64::from(from), Direction::Backward).unwrap().map(|e| e.unwrap().version()).collect();
                            let top = u64::from(from).min(events.len() as u64);
                            prop_assert_eq!(versions, (1..=top).rev().collect::<Vec<_>>());
                        }
                    }
                }
            }
            check(&store, &model)?;
        }
    }
}
