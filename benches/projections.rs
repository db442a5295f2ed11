//! Indexes as projections (issue 7): reading one category that holds 1% of a store of
//! `STREAMLOG_BENCH_EVENTS` events (default 10,000,000; 256-byte payloads, 32-byte metadata),
//! through the category index and by filtering `read_all`; and, printed once, the time the
//! indexer took to index the store and the index's bytes per event. The indexer's lag under W2's
//! load comes from `cargo run --release --example w2`. Run with
//! `cargo bench --bench projections` (building the store takes minutes and ~4 GB of disk).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamlog::{category_of, Append, Direction, ExpectedVersion, Options, Position, Store};

#[path = "common/mod.rs"]
mod common;

fn folder_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() {
                        folder_bytes(&e.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn category(c: &mut Criterion) {
    let events = common::events_from_env(10_000_000);
    let dir =
        tempfile::tempdir_in(std::env::var("STREAMLOG_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let store = Store::open_with(
        dir.path(),
        Options {
            indexes: true,
            ..Options::default()
        },
    )
    .unwrap();
    // 10,000 streams written in appends of 100 events: 100 of them (1%) in category `rare`.
    let started = Instant::now();
    let mut producer = store.producer();
    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let appends = events / 100;
    for _ in 0..appends {
        let s = rng.below(10_000);
        let stream = if s < 100 {
            format!("rare-{s}")
        } else {
            format!("common-{s}")
        };
        let _ = producer
            .submit(Append::new(
                stream,
                ExpectedVersion::Any,
                (0..100).map(common::event),
            ))
            .unwrap();
    }
    producer.flush().unwrap();
    let written = started.elapsed();
    let head = store.head_position();
    let indexing = Instant::now();
    assert!(store.wait_indexed(head, Duration::from_secs(3600)).unwrap());
    let caught_up = indexing.elapsed();
    let rare = store
        .read_category("rare", Position::START)
        .unwrap()
        .count() as u64;
    let projection_bytes = folder_bytes(&dir.path().join("projections"));
    println!(
        "store of {} events written in {:.1} s; the indexer caught up {:.1} s after the last append; \
         {rare} events in category `rare`; indexes {projection_bytes} bytes = {:.1} bytes per event",
        head.get(),
        written.as_secs_f64(),
        caught_up.as_secs_f64(),
        projection_bytes as f64 / head.get() as f64
    );
    let mut group = c.benchmark_group("read_category_1pct");
    group.throughput(Throughput::Elements(rare));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("through_the_index", |b| {
        b.iter(|| {
            let (mut n, mut sum) = (0u64, 0u64);
            for e in store.read_category("rare", Position::START).unwrap() {
                sum += u64::from(e.unwrap().data()[0]);
                n += 1;
            }
            assert_eq!(n, rare);
            criterion::black_box(sum)
        });
    });
    group.bench_function("filtering_read_all", |b| {
        b.iter(|| {
            let (mut n, mut sum) = (0u64, 0u64);
            for e in store.read_all(Position::START, Direction::Forward).unwrap() {
                let e = e.unwrap();
                if category_of(e.stream_id()) == Some("rare") {
                    sum += u64::from(e.data()[0]);
                    n += 1;
                }
            }
            assert_eq!(n, rare);
            criterion::black_box(sum)
        });
    });
    group.finish();
}

criterion_group!(benches, category);
criterion_main!(benches);
