//! Space back from packs across lifetimes (segment-format.md §19, "Space back"): W5's store
//! (`streams` streams of 10 events written interleaved), then the older 80% of the streams
//! deleted in two processes' lifetimes (the even ones, then the odd ones), then one
//! `compact_index()`. Prints what the packs take on disk after each step.
//! `cargo run --release --example space_back -- [streams] [folder]`; `STREAMLOG_INDEX_ENTRIES`
//! sets `index_entries_per_file` (a file is compacted once the checkpoint covers it whole);
//! `RUST_LOG=info` shows the compactions.

use std::path::Path;
use std::time::Instant;
use streamlog::{Direction, Options, Position, Store};

#[path = "../benches/common/mod.rs"]
mod common;

/// Bytes the packs take on disk (allocated blocks).
fn packs_allocated(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(root.join("packs"))
        .expect("packs folder")
        .map(|e| e.expect("entry").metadata().expect("stat").blocks() * 512)
        .sum()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut options = Options::default();
    if let Some(n) = std::env::var("STREAMLOG_INDEX_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.index_entries_per_file = n;
    }
    let mut args = std::env::args().skip(1);
    let streams: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let temp = tempfile::tempdir().expect("temporary folder");
    let root = args
        .next()
        .map_or_else(|| temp.path().join("store"), std::path::PathBuf::from);
    let dying = streams * 8 / 10;
    let mb = |b: u64| b as f64 / 1e6;

    let start = Instant::now();
    {
        let store = Store::open_with(&root, options.clone()).expect("open");
        common::write_interleaved(&store, streams);
    }
    let written = packs_allocated(&root);
    println!(
        "wrote {} events in {streams} streams in {:.1} s: packs {:.1} MB",
        streams * 10,
        start.elapsed().as_secs_f64(),
        mb(written)
    );
    for (lifetime, parity) in [(1, 0), (2, 1)] {
        let start = Instant::now();
        {
            let store = Store::open_with(&root, options.clone()).expect("open");
            for s in (parity..dying).step_by(2) {
                store.delete_stream(&format!("stream-{s}")).expect("delete");
            }
        }
        println!(
            "lifetime {lifetime}: deleted {} streams in {:.1} s; packs {:.1} MB after its close",
            dying / 2,
            start.elapsed().as_secs_f64(),
            mb(packs_allocated(&root))
        );
    }
    let store = Store::open_with(&root, options.clone()).expect("open");
    let start = Instant::now();
    let report = store.compact_index().expect("compact");
    println!(
        "compact_index() in {:.0} ms: {report:?}; packs {:.1} MB",
        start.elapsed().as_secs_f64() * 1e3,
        mb(packs_allocated(&root))
    );
    let start = Instant::now();
    let mut events = 0u64;
    for e in store
        .read_all(Position::START, Direction::Forward)
        .expect("read_all")
    {
        e.expect("event");
        events += 1;
    }
    assert_eq!(
        events,
        (streams - dying) * 10,
        "the live events, all of them"
    );
    println!(
        "read_all: {events} live events in {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}
