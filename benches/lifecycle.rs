//! Stream lifecycle at scale (issue 6): create a small stream, read a random one, snapshot one,
//! delete one, in a store of `STREAMLOG_BENCH_STREAMS` streams of 10 events of 256 bytes
//! (default 20,000); and `read_all` over a store where 90% of the streams were deleted, against
//! a store holding only the survivors. `cargo bench --bench lifecycle`. The million-stream
//! figures come from `cargo run --release --example million`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use streamlog::{Direction, EventData, ExpectedVersion, Position, Store};

fn streams() -> u64 {
    std::env::var("STREAMLOG_BENCH_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn events() -> Vec<EventData> {
    (0..10)
        .map(|i| EventData::new("E", vec![i as u8; 256]))
        .collect()
}

/// `n` streams of 10 events, created from 16 threads.
fn fill(store: &Store, prefix: &str, n: u64) {
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let mut s = t;
                while s < n {
                    store
                        .append(
                            &format!("{prefix}-{s}"),
                            ExpectedVersion::NoStream,
                            events(),
                        )
                        .unwrap();
                    s += 16;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

mod common;
use common::Rng;

fn at_scale(c: &mut Criterion) {
    let n = streams();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    fill(&store, "s", n);
    let mut group = c.benchmark_group("lifecycle");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let next = AtomicU64::new(0);
    group.bench_function("create_stream_of_10", |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            store
                .append(&format!("new-{i}"), ExpectedVersion::NoStream, events())
                .unwrap()
        });
    });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    group.bench_function("read_random_stream", |b| {
        b.iter(|| {
            let s = rng.below(n);
            let mut bytes = 0;
            for e in store
                .read_stream(&format!("s-{s}"), 1, Direction::Forward)
                .unwrap()
            {
                bytes += e.unwrap().data().len();
            }
            bytes
        });
    });
    // A fresh stream of 10 events for each operation, made outside the measurement.
    let victim = AtomicU64::new(0);
    let fresh = || {
        let stream = format!("victim-{}", victim.fetch_add(1, Ordering::Relaxed));
        store
            .append(&stream, ExpectedVersion::NoStream, events())
            .unwrap();
        stream
    };
    group.bench_function("snapshot_stream", |b| {
        b.iter_batched(
            fresh,
            |stream| {
                store
                    .snapshot_stream(&stream, EventData::new("State", vec![1u8; 256]))
                    .unwrap()
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("delete_stream", |b| {
        b.iter_batched(
            fresh,
            |stream| store.delete_stream(&stream).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// `read_all` where 90% of the streams were deleted, against a store of the survivors only.
fn read_all_after_deletes(c: &mut Criterion) {
    let n = streams();
    let survivors = n / 10;
    let pruned_dir = tempfile::tempdir().unwrap();
    // Index files of 16,384 entries, so that compaction (which rewrites only files the
    // checkpoint covers whole) has whole files to work on at this scale.
    let small_files = streamlog::Options {
        index_entries_per_file: 16_384,
        ..streamlog::Options::default()
    };
    let pruned = Store::open_with(pruned_dir.path(), small_files.clone()).unwrap();
    fill(&pruned, "s", n);
    let started = Instant::now();
    for s in 0..n {
        if s % 10 != 0 {
            pruned.delete_stream(&format!("s-{s}")).unwrap();
        }
    }
    eprintln!(
        "deleted {} streams in {:.1} s",
        n - survivors,
        started.elapsed().as_secs_f64()
    );
    let pruned_path = pruned_dir.path().to_path_buf();
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = Store::open(alone_dir.path()).unwrap();
    fill(&alone, "s", survivors);
    let mut group = c.benchmark_group("read_all_after_deleting_90_percent");
    group.sample_size(10);
    group.throughput(Throughput::Elements(survivors * 10));
    // The first read_all of a freshly opened handle: no rewritten stream is known yet.
    drop(pruned);
    group.bench_function("pruned_store_first_read_after_reopen", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Store::open(&pruned_path).unwrap();
                let started = Instant::now();
                let mut count = 0u64;
                for e in store.read_all(Position::START, Direction::Forward).unwrap() {
                    count += u64::from(e.unwrap().data()[0] < 255);
                }
                total += started.elapsed();
                assert_eq!(count, survivors * 10);
            }
            total
        });
    });
    let pruned = Store::open_with(&pruned_path, small_files.clone()).unwrap();
    let read_whole = |store: &Store| {
        let mut count = 0u64;
        for e in store.read_all(Position::START, Direction::Forward).unwrap() {
            count += u64::from(e.unwrap().data()[0] < 255);
        }
        assert_eq!(count, survivors * 10);
    };
    for (name, store) in [("pruned_store", &pruned), ("survivors_only", &alone)] {
        group.bench_function(name, |b| b.iter(|| read_whole(store)));
    }
    // Then the index of the pruned store is compacted (segment-format.md §4).
    let started = Instant::now();
    let report = pruned.compact_index().unwrap();
    eprintln!(
        "compacted {} index files in {:.1} ms: {} entries of removed events dropped, index {} -> {} bytes",
        report.files,
        started.elapsed().as_secs_f64() * 1e3,
        report.entries_removed,
        report.bytes_before,
        report.bytes_after
    );
    drop(pruned);
    group.bench_function("compacted_store_first_read_after_reopen", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Store::open_with(&pruned_path, small_files.clone()).unwrap();
                let started = Instant::now();
                read_whole(&store);
                total += started.elapsed();
            }
            total
        });
    });
    let pruned = Store::open_with(&pruned_path, small_files).unwrap();
    group.bench_function("compacted_store", |b| b.iter(|| read_whole(&pruned)));
    group.finish();
}

criterion_group!(benches, at_scale, read_all_after_deletes);
criterion_main!(benches);
