//! Read paths outside criterion, for profiling: W4 (one stream) or W5 (all streams in global
//! order, streams of 10 events written interleaved).
//! `cargo run --release --example read_profile -- [w4|w5] [events] [passes] [folder]`: with a
//! folder that already holds a store, it only reads (to profile the reads alone).
//! `pruned`: `events / 10` streams of ten events, nine streams in ten deleted (the lifecycle
//! bench's store, index files of 16,384 entries), then each pass opens the store and reads all
//! (issue 6's first read of a fresh handle); `STREAMLOG_KEEP_ALL=1` deletes none.
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
    if which == "pruned" {
        pruned(&dir, existing, n, passes);
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
        common::write_interleaved(&store, streams);
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

/// `read_all`'s first read of a freshly opened handle over a store whose streams were mostly
/// deleted: the open and the read timed apart, per pass.
fn pruned(dir: &std::path::Path, existing: bool, n: u64, passes: u64) {
    let options = streamlog::Options {
        index_entries_per_file: 16_384,
        ..streamlog::Options::default()
    };
    let streams = n / 10;
    if !existing {
        let store = Store::open_with(dir, options.clone()).expect("open");
        common::from_16_threads(streams, |s| {
            store
                .append(
                    &format!("s-{s}"),
                    ExpectedVersion::NoStream,
                    (0..10).map(event),
                )
                .expect("append");
        });
        // `STREAMLOG_KEEP_ALL=1`: nothing deleted (the survivors alone, for `events / 10`).
        let keep_all = std::env::var("STREAMLOG_KEEP_ALL").is_ok_and(|v| v == "1");
        for s in (0..streams).filter(|s| s % 10 != 0 && !keep_all) {
            store.delete_stream(&format!("s-{s}")).expect("delete");
        }
    }
    for _ in 0..passes {
        let start = Instant::now();
        let store = Store::open_with(dir, options.clone()).expect("open");
        let opened = start.elapsed();
        let mut count = 0u64;
        for e in store
            .read_all(Position::START, Direction::Forward)
            .expect("read")
        {
            e.expect("event");
            count += 1;
        }
        println!(
            "pruned: open {:.2} ms, open and read all {:.2} ms ({count} events)",
            opened.as_secs_f64() * 1e3,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}
