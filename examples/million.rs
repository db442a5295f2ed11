//! A million small streams (issue 6): create them, measure the disk, reopen, read random
//! streams, and the memory of loaded streams.
//!
//! `cargo run --release --example million -- [streams] [events-per-stream] [writer-threads] [dir]`
//! (defaults: 1,000,000 streams of 10 events of 256 bytes, 64 writer threads, a temporary
//! folder). Each stream is created by one durable append of all its events.

use std::time::{Duration, Instant};
use streamlog::{Direction, EventData, ExpectedVersion, Store};

fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// The resident memory that is the process's own (heap, stacks): `VmRSS` less the pages of
/// mapped files, which are the page cache's (a packed stream's load touches its pack's pages).
fn anon_bytes() -> u64 {
    status_bytes("RssAnon:")
}

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of disk blocks really used under `dir`, and the largest number of entries in a folder.
fn disk_usage(dir: &std::path::Path) -> (u64, u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    let mut widest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries: Vec<_> = std::fs::read_dir(&d).unwrap().map(Result::unwrap).collect();
        widest = widest.max(entries.len());
        for e in entries {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                bytes += std::os::unix::fs::MetadataExt::blocks(&m) * 512;
            }
        }
    }
    (bytes, files, widest)
}

/// `STREAMLOG_PACK_BYTES` sets `pack_stream_bytes` (default: the option's default; 0: every
/// stream in files of its own, as before format 4).
fn options() -> streamlog::Options {
    streamlog::Options {
        pack_stream_bytes: std::env::var("STREAMLOG_PACK_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(streamlog::Options::default().pack_stream_bytes),
        ..streamlog::Options::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[path = "../benches/common/mod.rs"]
mod common;
use common::Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let streams: u64 = args.get(1).map_or(Ok(1_000_000), |s| s.parse())?;
    let per_stream: u64 = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let threads: u64 = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let temp = tempfile::tempdir()?;
    let dir = args
        .get(4)
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let payload = vec![0x5a_u8; 256];
    println!(
        "{streams} streams x {per_stream} events of 256 bytes, {threads} writer threads, in {}",
        dir.display()
    );

    // Create.
    let started = Instant::now();
    {
        let store = Store::open_with(&dir, options())?;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                let payload = payload.clone();
                std::thread::spawn(move || -> streamlog::Result<()> {
                    let mut s = t;
                    while s < streams {
                        let events: Vec<EventData> = (0..per_stream)
                            .map(|_| EventData::new("E", payload.clone()))
                            .collect();
                        store.append(&format!("stream-{s}"), ExpectedVersion::NoStream, events)?;
                        s += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "writer thread panicked")??;
        }
    }
    let created = started.elapsed();
    let events = streams * per_stream;
    println!(
        "create: {:.1} s, {:.0} streams/s, {:.0} durable events/s",
        created.as_secs_f64(),
        streams as f64 / created.as_secs_f64(),
        events as f64 / created.as_secs_f64()
    );
    let (bytes, files, widest) = disk_usage(&dir);
    let payload_bytes = events * 256;
    println!(
        "disk: {bytes} bytes in {files} files ({:.2}x the {payload_bytes} payload bytes, {:.0} bytes per event); widest folder {widest} entries",
        bytes as f64 / payload_bytes as f64,
        bytes as f64 / events as f64
    );

    // Reopen until the first read returns.
    let rss_before_open = rss_bytes();
    let started = Instant::now();
    let store = Store::open_with(&dir, options())?;
    let first = store
        .read_stream("stream-0", 1, Direction::Forward)?
        .next()
        .ok_or("stream-0 is empty")??;
    let reopened = started.elapsed();
    assert_eq!(first.version(), 1);
    println!(
        "reopen until the first read returned: {:.1} ms",
        reopened.as_secs_f64() * 1e3
    );

    // Random small streams read whole.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let reads = 20_000.min(streams);
    let mut latencies = Vec::with_capacity(reads as usize);
    for _ in 0..reads {
        let s = rng.below(streams);
        let t = Instant::now();
        let mut n = 0;
        for e in store.read_stream(&format!("stream-{s}"), 1, Direction::Forward)? {
            n += e?.data().len();
        }
        latencies.push(t.elapsed());
        assert_eq!(n as u64, per_stream * 256);
    }
    latencies.sort();
    println!(
        "read one random stream whole ({reads} reads): p50 {:.1} µs, p99 {:.1} µs",
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6
    );

    // Memory: the open store, then with 100,000 streams loaded (the default cache bound).
    let rss_open = rss_bytes();
    let anon_open = anon_bytes();
    let loaded = 100_000.min(streams);
    for s in 0..loaded {
        store.stream_version(&format!("stream-{s}"))?;
    }
    let rss_loaded = rss_bytes();
    let anon_loaded = anon_bytes();
    println!(
        "memory of the process's own (RssAnon, no mapped file pages): {} KiB open, {} KiB loaded: {:.0} bytes per loaded stream",
        anon_open / 1024,
        anon_loaded / 1024,
        anon_loaded.saturating_sub(anon_open) as f64 / loaded as f64
    );
    println!(
        "memory: {} KiB before the open, {} KiB open, {} KiB with {loaded} streams loaded: {:.0} bytes per loaded stream",
        rss_before_open / 1024,
        rss_open / 1024,
        rss_loaded / 1024,
        rss_loaded.saturating_sub(rss_open) as f64 / loaded as f64
    );
    Ok(())
}
