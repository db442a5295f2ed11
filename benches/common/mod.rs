//! What the benches share: sizes from the environment and the events they write.
#![allow(dead_code)]

use streamlog::EventData;

/// `STREAMLOG_BENCH_EVENTS`, or `default`.
pub fn events_from_env(default: u64) -> u64 {
    std::env::var("STREAMLOG_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Event `i`: 256 bytes of payload that differ by event, 32 bytes of metadata.
pub fn event(i: u64) -> EventData {
    EventData::new(
        "Bench",
        (0..256).map(|b| (b + i) as u8).collect::<Vec<u8>>(),
    )
    .metadata(vec![(i % 251) as u8; 32])
}

/// `write(s)` for every stream number `s` below `streams`, from 16 threads sharing the group
/// commit (thread `t` takes `t`, `t + 16`, …).
pub fn from_16_threads(streams: u64, write: impl Fn(u64) + Sync) {
    std::thread::scope(|scope| {
        for t in 0..16 {
            let write = &write;
            scope.spawn(move || (t..streams).step_by(16).for_each(write));
        }
    });
}

/// W5's store: `streams` streams of 10 events written interleaved (round `r` appends event `r`
/// of every stream), by 16 threads.
pub fn write_interleaved(store: &streamlog::Store, streams: u64) {
    for round in 0..10 {
        from_16_threads(streams, |s| {
            store
                .append(
                    &format!("stream-{s}"),
                    streamlog::ExpectedVersion::Exact(round),
                    [event(s)],
                )
                .expect("append");
        });
    }
}

/// A small xorshift generator: random choices that a run can repeat.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
