//! Memory per loaded, idle stream, counted by the allocator: the live heap bytes a store holds
//! once every stream's state is loaded, less what it held open, per stream. (Resident-set
//! deltas cannot tell: they count mapped file pages, and heap freed by earlier work is reused
//! without growing.)
//!
//! `cargo run --release --example memory -- [streams] [events per stream] [folder]`: streams of
//! one append of that many 256-byte events (defaults 100,000 and 10), then reopened; small
//! streams go to packs by default (`STREAMLOG_PACK_BYTES=0` for files of their own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use streamlog::{EventData, ExpectedVersion, Store};

/// The system allocator, counting the bytes it has live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged, so the
// allocator's contract is `System`'s; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, forwarded as it came (`GlobalAlloc::alloc`'s contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes
        // through `alloc` or `realloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let streams: usize = args.get(1).map_or(Ok(100_000), |s| s.parse())?;
    let per_stream: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let temp = tempfile::tempdir()?;
    let dir = args
        .get(3)
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let mut options = streamlog::Options::default();
    if let Some(b) = std::env::var("STREAMLOG_PACK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.pack_stream_bytes = b;
    }
    let before_writes = LIVE.load(Ordering::Relaxed);
    {
        let store = Store::open_with(&dir, options.clone())?;
        let threads = 8;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let store = store.clone();
                scope.spawn(move || {
                    for s in (t..streams).step_by(threads) {
                        let events = (0..per_stream).map(|_| {
                            EventData::new("Bench", vec![0x5a; 256]).metadata(vec![1; 32])
                        });
                        store
                            .append(&format!("m-{s}"), ExpectedVersion::NoStream, events)
                            .expect("append");
                    }
                });
            }
        });
        // The handle that wrote them: its writer keeps the states of the streams it wrote
        // (up to `streams_cached_max`), shared, not encoded.
        let written = LIVE.load(Ordering::Relaxed);
        println!(
            "after writing them: {:.0} bytes of live heap per written stream, the writing handle open",
            written.saturating_sub(before_writes) as f64 / streams as f64
        );
    }
    let store = Store::open_with(&dir, options)?;
    let open = LIVE.load(Ordering::Relaxed);
    for s in 0..streams {
        store.stream_version(&format!("m-{s}"))?;
    }
    let loaded = LIVE.load(Ordering::Relaxed);
    println!(
        "{streams} streams of {per_stream} events: live heap {} KiB open, {} KiB with every stream loaded: {:.0} bytes per loaded, idle stream",
        open / 1024,
        loaded / 1024,
        loaded.saturating_sub(open) as f64 / streams as f64
    );
    Ok(())
}
