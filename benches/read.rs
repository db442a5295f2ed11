//! Read workloads of issue 4 (W4, W5, W6): 256-byte payloads, 32-byte metadata.
//! `cargo bench --bench read`; `STREAMLOG_BENCH_EVENTS` sets the number of events (default
//! 1,000,000; W5 and W6 spread them over one stream per 10 events).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamlog::{Direction, EventData, ExpectedVersion, Position, Store};

mod common;
use common::event;

fn events() -> u64 {
    common::events_from_env(1_000_000)
}

/// Every payload byte is read.
fn touch(data: &[u8]) -> u64 {
    data.iter().map(|b| u64::from(*b)).sum()
}

/// W4: one stream of `events()` events, read forward.
fn one_stream(c: &mut Criterion) {
    let n = events();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for chunk in 0..n.div_ceil(1000) {
        let batch: Vec<EventData> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(event)
            .collect();
        store.append("w4", ExpectedVersion::Any, batch).unwrap();
    }
    let mut group = c.benchmark_group("w4_read_one_stream");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("forward", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in store.read_stream("w4", 1, Direction::Forward).unwrap() {
                sum = sum.wrapping_add(touch(e.unwrap().data()));
            }
            sum
        });
    });
    group.finish();
}

/// A store of `events()` events in streams of 10, written interleaved (round r appends event r
/// of every stream), by 16 threads sharing the group commit.
fn many_streams(dir: &std::path::Path) -> u64 {
    let n = events();
    let streams = n / 10;
    let store = Store::open(dir).unwrap();
    common::write_interleaved(&store, streams);
    streams
}

/// W5: read all streams in global order; W6: reopen until the first read returns.
fn all_streams(c: &mut Criterion) {
    let n = events();
    let dir = tempfile::tempdir().unwrap();
    let streams = many_streams(dir.path());
    {
        let store = Store::open(dir.path()).unwrap();
        let mut group = c.benchmark_group("w5_read_all");
        group.sample_size(10);
        group.throughput(Throughput::Elements(n));
        group.bench_function("forward", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for e in store.read_all(Position::START, Direction::Forward).unwrap() {
                    sum = sum.wrapping_add(touch(e.unwrap().data()));
                }
                sum
            });
        });
        group.finish();
    }
    let mut group = c.benchmark_group("w6_reopen");
    group.sample_size(20);
    group.bench_function(format!("{n}_events_{streams}_streams"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let start = Instant::now();
                let store = Store::open(dir.path()).unwrap();
                let first = store
                    .read_stream(&format!("stream-{}", i % streams), 1, Direction::Forward)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                assert_eq!(first.version(), 1);
                total += start.elapsed();
                drop(first);
                drop(store);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, one_stream, all_streams);
criterion_main!(benches);
