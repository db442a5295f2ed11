//! Durable append throughput and latency (issue 4's W1, W2 and W3 shapes): 256-byte payloads,
//! 32-byte metadata, each append durable before it returns. Run with
//! `cargo bench --bench append`. The sync strategies are measured side by side (W3 with the
//! default, the journal).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamlog::{EventData, ExpectedVersion, Options, Store, SyncMode};

fn event() -> EventData {
    EventData::new("Bench", vec![0xab; 256]).metadata(vec![0xcd; 32])
}

fn modes() -> [(&'static str, SyncMode); 3] {
    [
        ("journal", SyncMode::Journal),
        ("syncfs", SyncMode::SyncFs),
        ("fdatasync", SyncMode::Fdatasync),
    ]
}

/// W1: one thread, one event per append.
fn single_writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("w1_single_writer");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, sync) in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            Options {
                sync,
                ..Options::default()
            },
        )
        .unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                store
                    .append("bench", ExpectedVersion::Any, [event()])
                    .unwrap()
            });
        });
    }
    group.finish();
}

/// W2: 64 threads, each appending one event per call to its own stream.
fn concurrent_writers(c: &mut Criterion) {
    const THREADS: u64 = 64;
    let mut group = c.benchmark_group("w2_64_writers");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(THREADS));
    for (name, sync) in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            Options {
                sync,
                ..Options::default()
            },
        )
        .unwrap();
        // Create the streams first: the workload is appending, not creating.
        for t in 0..THREADS {
            store
                .append(&format!("writer-{t}"), ExpectedVersion::Any, [event()])
                .unwrap();
        }
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let threads: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let store = store.clone();
                        std::thread::spawn(move || {
                            let stream = format!("writer-{t}");
                            for _ in 0..iters {
                                store
                                    .append(&stream, ExpectedVersion::Any, [event()])
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

/// W3: one thread, appends of 100 events, 100 streams round-robin, each durable.
fn bulk_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("w3_bulk_append");
    group.throughput(Throughput::Elements(100));
    group.measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let batch: Vec<EventData> = (0..100).map(|_| event()).collect();
    let mut i = 0u64;
    group.bench_function("journal", |b| {
        b.iter(|| {
            i += 1;
            store
                .append(
                    &format!("w3-{}", i % 100),
                    ExpectedVersion::Any,
                    batch.clone(),
                )
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, single_writer, concurrent_writers, bulk_appends);
criterion_main!(benches);
