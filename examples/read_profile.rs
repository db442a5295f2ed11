//! Read paths outside criterion, for profiling: W4 (one stream) or W5 (all streams in global
//! order, streams of 10 events written interleaved).
//! `cargo run --release --example read_profile -- [w4|w5] [events] [passes] [folder]`: with a
//! folder that already holds a store, it only reads (to profile the reads alone).
//! `STREAMLOG_READ_ALL_WINDOW_MB` sets the option `read_all_window_bytes` (in MiB);
//! `STREAMLOG_PACK_BYTES` sets `pack_stream_bytes` (0: no packs, as before format 4).

use std::time::Instant;
use streamlog::{Direction, EventData, ExpectedVersion, Position, Store};

#[path = "../benches/common/mod.rs"]
mod common;
use common::event;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "w4".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let passes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let temp = tempfile::tempdir().expect("temporary folder");
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let existing = dir.join("MANIFEST").exists();
    if which == "reopen" {
        // W6 on an existing store: open, then the first event of one stream.
        for i in 0..passes {
            let start = Instant::now();
            let store = Store::open(&dir).expect("open");
            let opened = start.elapsed();
            let first = store
                .read_stream(
                    &format!("stream-{}", i * 7919 % (n / 10).max(1)),
                    1,
                    Direction::Forward,
                )
                .expect("read")
                .next();
            println!(
                "reopen: open {:?}, first read after {:?} ({})",
                opened,
                start.elapsed(),
                first.is_some()
            );
        }
        return;
    }
    let mut options = streamlog::Options::default();
    if let Some(mb) = std::env::var("STREAMLOG_READ_ALL_WINDOW_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options.read_all_window_bytes = mb << 20;
    }
    // `STREAMLOG_PACK_BYTES` sets `pack_stream_bytes` (0: no packs, as before format 4).
    if let Some(b) = std::env::var("STREAMLOG_PACK_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        options.pack_stream_bytes = b;
    }
    let store = Store::open_with(&dir, options).expect("open");
    if existing {
    } else if which == "w4" {
        for chunk in 0..n.div_ceil(1000) {
            let batch: Vec<EventData> = (chunk * 1000..((chunk + 1) * 1000).min(n))
                .map(event)
                .collect();
            store
                .append("w4", ExpectedVersion::Any, batch)
                .expect("append");
        }
    } else {
        let streams = n / 10;
        for round in 0..10 {
            std::thread::scope(|scope| {
                for t in 0..16 {
                    let store = &store;
                    scope.spawn(move || {
                        for s in (t..streams).step_by(16) {
                            store
                                .append(
                                    &format!("stream-{s}"),
                                    ExpectedVersion::Exact(round),
                                    [event(s)],
                                )
                                .expect("append");
                        }
                    });
                }
            });
        }
    }
    for _ in 0..passes {
        let start = Instant::now();
        let mut sum = 0u64;
        let mut count = 0u64;
        let iter: Box<dyn Iterator<Item = streamlog::Result<streamlog::RecordedEvent>>> =
            if which == "w4" {
                Box::new(
                    store
                        .read_stream("w4", 1, Direction::Forward)
                        .expect("read"),
                )
            } else {
                Box::new(
                    store
                        .read_all(Position::START, Direction::Forward)
                        .expect("read"),
                )
            };
        for e in iter {
            let e = e.expect("event");
            sum = sum.wrapping_add(e.data().iter().map(|b| u64::from(*b)).sum::<u64>());
            count += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{which}: {count} events in {:.3} s = {:.0} events/s (checksum {sum})",
            secs,
            count as f64 / secs
        );
    }
}
