//! W2 outside criterion, for profiling: 64 threads append one 256-byte event per call for a fixed
//! time, each to its own stream unless another number of streams is given (thread t writes
//! streams t, t + threads, t + 2 threads, ... mod n in turn: with more streams than threads,
//! every append goes to a stream its thread wrote longest ago).
//! `cargo run --release --example w2 -- [threads] [seconds] [streams]`. With the indexer on (the
//! default; `STREAMLOG_INDEXES=0` turns it off) it also samples the indexer's lag every 10 ms
//! and reports its median and maximum, and how long the indexer takes to catch up at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamlog::{EventData, ExpectedVersion, Options, Store, SyncMode};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let streams: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(threads)
        .max(1);
    let dir = tempfile::tempdir().expect("temporary folder");
    let indexes = std::env::var("STREAMLOG_INDEXES").map_or(true, |v| v != "0");
    // STREAMLOG_CALLER_COMMITS=0: every append through the writer thread.
    let caller_commits = std::env::var("STREAMLOG_CALLER_COMMITS").map_or(true, |v| v != "0");
    // STREAMLOG_SYNC=syncfs|fdatasync|journal (the default) picks the sync mode.
    let sync = match std::env::var("STREAMLOG_SYNC").as_deref() {
        Ok("syncfs") => SyncMode::SyncFs,
        Ok("fdatasync") => SyncMode::Fdatasync,
        _ => SyncMode::Journal,
    };
    let store = Store::open_with(
        dir.path(),
        Options {
            indexes,
            sync,
            caller_commits,
            ..Options::default()
        },
    )
    .expect("open");
    let event = || EventData::new("Bench", vec![0xab; 256]).metadata(vec![0xcd; 32]);
    for t in 0..streams {
        store
            .append(&format!("writer-{t}"), ExpectedVersion::Any, [event()])
            .expect("create stream");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, count) = (store.clone(), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let mut s = t;
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("writer-{}", s % streams);
                    s += threads;
                    store
                        .append(&stream, ExpectedVersion::Any, [event()])
                        .expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut lags = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(10));
        if indexes {
            lags.push(store.index_status().expect("status").lag);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "{threads} writers, {streams} streams, indexer {}: {n} appends in {elapsed:.2} s = {:.0} events/s",
        if indexes { "on" } else { "off" },
        n as f64 / elapsed
    );
    if indexes {
        let caught = Instant::now();
        store
            .wait_indexed(store.head_position(), Duration::from_secs(60))
            .expect("wait");
        lags.sort_unstable();
        println!(
            "indexer lag over {} samples: median {} positions, max {}; caught up {:.1} ms after the writers stopped",
            lags.len(),
            lags[lags.len() / 2],
            lags[lags.len() - 1],
            caught.elapsed().as_secs_f64() * 1000.0
        );
    }
}
