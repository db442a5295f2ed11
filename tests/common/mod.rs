//! Helpers shared by the integration tests.
#![allow(dead_code)]

use streamlog::{Direction, EventData, Position, Store};

pub fn event(i: u64) -> EventData {
    EventData::new(format!("Type{}", i % 3), format!("data-{i}").into_bytes()).metadata(format!("{{\"i\":{i}}}").into_bytes())
}

/// Every event of the store in global order, as (stream, version, position, data).
pub fn all(store: &Store) -> Vec<(String, u64, u64, Vec<u8>)> {
    store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream_id().to_string(), e.version(), e.position().get(), e.data().to_vec())
        })
        .collect()
}

/// The data of every event of a stream, forward.
pub fn stream_data(store: &Store, stream: &str) -> Vec<Vec<u8>> {
    store
        .read_stream(stream, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().data().to_vec())
        .collect()
}

/// Check what must hold of any store: positions dense from 1, versions contiguous per stream,
/// every stream's own read agreeing with the global order.
pub fn check_invariants(store: &Store) {
    let events = all(store);
    let mut versions = std::collections::HashMap::<String, u64>::new();
    for (i, (stream, version, position, _)) in events.iter().enumerate() {
        assert_eq!(*position, i as u64 + 1, "positions are dense from 1");
        let v = versions.entry(stream.clone()).or_insert(0);
        assert_eq!(*version, *v + 1, "versions are contiguous in {stream}");
        *v = *version;
    }
    assert_eq!(store.head_position().get(), events.len() as u64);
    for (stream, version) in &versions {
        assert_eq!(store.stream_version(stream).unwrap(), Some(*version));
        let from_stream: Vec<u64> = store
            .read_stream(stream, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().position().get())
            .collect();
        let from_all: Vec<u64> = events.iter().filter(|e| &e.0 == stream).map(|e| e.2).collect();
        assert_eq!(from_stream, from_all, "stream {stream} agrees with the global order");
    }
}
