//! W3 outside criterion, for profiling: one thread, appends of 100 events (256-byte payloads,
//! 32-byte metadata) to 100 streams round-robin, each durable before the next.
//! `cargo run --release --example w3 -- [appends]` (default 5,000); `STREAMLOG_SYNC=syncfs` or
//! `fdatasync` for the other sync modes; `STREAMLOG_JOURNAL_MB` sets `journal_bytes`.

use std::time::Instant;
use streamlog::{EventData, ExpectedVersion, Options, Store, SyncMode};

#[path = "../benches/common/mod.rs"]
mod common;
use common::event;

fn main() {
    let appends: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let sync = match std::env::var("STREAMLOG_SYNC").as_deref() {
        Ok("syncfs") => SyncMode::SyncFs,
        Ok("fdatasync") => SyncMode::Fdatasync,
        _ => SyncMode::Journal,
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = Store::open_with(
        dir.path(),
        Options {
            sync,
            // STREAMLOG_CALLER_COMMITS=0: every append through the writer thread.
            caller_commits: std::env::var("STREAMLOG_CALLER_COMMITS").map_or(true, |v| v != "0"),
            journal_bytes: std::env::var("STREAMLOG_JOURNAL_MB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Options::default().journal_bytes, |mb| mb << 20),
            ..Options::default()
        },
    )
    .expect("open");
    let batch: Vec<EventData> = (0..100).map(event).collect();
    let mut latencies = Vec::with_capacity(appends as usize);
    let start = Instant::now();
    for i in 0..appends {
        let t = Instant::now();
        store
            .append(
                &format!("w3-{}", i % 100),
                ExpectedVersion::Any,
                batch.clone(),
            )
            .expect("append");
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "w3 ({sync:?}): {appends} appends of 100 events in {secs:.2} s = {:.0} events/s; per append p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        (appends * 100) as f64 / secs,
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}
