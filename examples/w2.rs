//! W2 outside criterion, for profiling: 64 threads append one 256-byte event per call for a fixed
//! time, each to its own stream unless fewer streams are given (thread t writes stream t mod n).
//! `cargo run --release --example w2 -- [threads] [seconds] [streams]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamlog::{EventData, ExpectedVersion, Store};

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
    let store = Store::open(dir.path()).expect("open");
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
                let stream = format!("writer-{}", t % streams);
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(&stream, ExpectedVersion::Any, [event()])
                        .expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "{threads} writers, {streams} streams: {n} appends in {elapsed:.2} s = {:.0} events/s",
        n as f64 / elapsed
    );
}
