//! Subscriptions (issue 5): end-to-end latency from an append to a live subscriber, catch-up
//! throughput from the origin of a large store, and a persistent subscriber acking every event.
//! `cargo bench --bench subscribe`; `STREAMLOG_BENCH_EVENTS` sets the size of the catch-up store
//! (default 1,000,000 events of 256 bytes in 1,000 streams). The latency group also prints
//! p50/p99 of every sample it took.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamlog::{EventData, ExpectedVersion, Filter, Position, Start, Store, Target};

mod common;
use common::event;

fn events() -> u64 {
    common::events_from_env(1_000_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A live subscriber blocked in `recv`; one durable append at a time; the time from the append's
/// call (and from its return) to the subscriber holding the event.
fn live_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sub = store.subscribe_all(Start::Head, Filter::all()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<Instant>();
    let subscriber = std::thread::spawn(move || {
        while let Some(Ok(e)) = sub.next() {
            assert!(!e.data().is_empty());
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let mut from_call = Vec::new();
    let mut from_return = Vec::new();
    let mut group = c.benchmark_group("subscribe_live_latency");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0u64;
    group.bench_function("append_to_delivery", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                let called = Instant::now();
                store
                    .append("live", ExpectedVersion::Any, [event(i)])
                    .unwrap();
                let returned = Instant::now();
                let received = rx.recv().unwrap();
                let latency = received.saturating_duration_since(called);
                total += latency;
                from_call.push(latency);
                from_return.push(received.saturating_duration_since(returned));
            }
            total
        });
    });
    group.finish();
    from_call.sort();
    from_return.sort();
    eprintln!(
        "live delivery over {} appends: from the append's call p50 {:?} p99 {:?}; from its return p50 {:?} p99 {:?} (counted as zero when the delivery came first)",
        from_call.len(),
        percentile(&from_call, 0.5),
        percentile(&from_call, 0.99),
        percentile(&from_return, 0.5),
        percentile(&from_return, 0.99),
    );
    drop(store);
    subscriber.join().unwrap();
}

/// A store of `events()` events in 1,000 streams, appended 100 events at a time round-robin.
fn large_store() -> (tempfile::TempDir, Store, u64) {
    let n = events();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut i = 0;
    while i < n {
        let count = 100.min(n - i);
        let batch: Vec<EventData> = (i..i + count).map(event).collect();
        store
            .append(
                &format!("stream-{}", (i / 100) % 1000),
                ExpectedVersion::Any,
                batch,
            )
            .unwrap();
        i += count;
    }
    (dir, store, n)
}

/// Catch-up: a subscriber from the origin reads every event (every payload byte) to the head.
fn catch_up(c: &mut Criterion) {
    let (_dir, store, n) = large_store();
    let mut group = c.benchmark_group("subscribe_catch_up");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("from_origin", |b| {
        b.iter(|| {
            let mut sub = store.subscribe_all(Start::Origin, Filter::all()).unwrap();
            let mut sum = 0u64;
            for _ in 0..n {
                let e = sub.try_recv().unwrap().unwrap();
                sum += e.data().iter().map(|b| u64::from(*b)).sum::<u64>();
            }
            sum
        });
    });
    // A persistent subscriber that acks every event and makes its acks durable at the end:
    // acks ride the group commit, so this costs no sync per event.
    let mut round = 0u64;
    group.bench_function("persistent_ack_every_event", |b| {
        b.iter(|| {
            round += 1;
            let mut sub = store
                .persistent_subscription(
                    &format!("bench-{round}"),
                    Target::All(Filter::all()),
                    Start::Origin,
                )
                .unwrap();
            for _ in 0..n {
                let e = sub.try_recv().unwrap().unwrap();
                sub.ack(e.position()).unwrap();
            }
            assert_eq!(sub.flush_acks().unwrap(), Position(n));
        });
    });
    group.finish();
}

criterion_group!(benches, live_latency, catch_up);
criterion_main!(benches);
