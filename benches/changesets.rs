//! Pipelined appends and changesets (issue 7). One producer appending one event per append to
//! one stream, each durable: waiting for each acknowledgement before the next (what the seed's
//! users had to do), against a pipelined `Producer` (submitted without waiting, committed in
//! order, fail-stop). Also a multi-stream append of three streams, and reading changesets back.
//! Run with `cargo bench --bench changesets`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamlog::{Append, EventData, ExpectedVersion, Position, Store};

fn event() -> EventData {
    EventData::new("Bench", vec![0xab; 256]).metadata(vec![0xcd; 32])
}

/// Appends per measured iteration of the producer benches.
const APPENDS: u64 = 1000;

fn producer(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_1_stream");
    group.throughput(Throughput::Elements(APPENDS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    group.bench_function("waiting_each", |b| {
        b.iter(|| {
            for _ in 0..APPENDS {
                store
                    .append("waiting", ExpectedVersion::Any, [event()])
                    .unwrap();
            }
        });
    });
    group.bench_function("pipelined", |b| {
        b.iter_custom(|iters| {
            let mut producer = store.producer();
            let start = Instant::now();
            for _ in 0..iters {
                let mut last = None;
                for _ in 0..APPENDS {
                    last = Some(
                        producer
                            .submit(Append::new("pipelined", ExpectedVersion::Any, [event()]))
                            .unwrap(),
                    );
                }
                producer.flush().unwrap();
                last.unwrap().wait().unwrap();
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn multi(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_multi_3_streams");
    group.throughput(Throughput::Elements(3));
    group.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut i = 0u64;
    group.bench_function("durable", |b| {
        b.iter(|| {
            i += 1;
            store
                .append_multi((0..3).map(|k| {
                    Append::new(
                        format!("multi-{k}-{}", i % 100),
                        ExpectedVersion::Any,
                        [event()],
                    )
                    .commit_metadata(b"user=bench".to_vec())
                }))
                .unwrap()
        });
    });
    group.finish();
}

fn read_changesets(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut producer = store.producer();
    for i in 0..10_000u64 {
        let _ = producer
            .submit(
                Append::new(
                    format!("cs-{}", i % 100),
                    ExpectedVersion::Any,
                    (0..5).map(|_| event()),
                )
                .commit_metadata(b"user=bench".to_vec()),
            )
            .unwrap();
    }
    producer.flush().unwrap();
    let mut group = c.benchmark_group("read_all_changesets");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(10);
    group.bench_function("10k_changesets_of_5_events_pages_of_1000", |b| {
        b.iter(|| {
            let mut checkpoint = Position::START;
            let mut n = 0;
            loop {
                let page = store.read_all_changesets(checkpoint, 1000).unwrap();
                if page.changesets.is_empty() {
                    break;
                }
                n += page.changesets.len();
                checkpoint = page.next_checkpoint;
            }
            assert_eq!(n, 10_000);
        });
    });
    group.finish();
}

criterion_group!(benches, producer, multi, read_changesets);
criterion_main!(benches);
