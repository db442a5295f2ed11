//! The main job: write durable events from several threads into a local folder, read one stream
//! and all streams back, use changesets, a multi-stream append, keys, an invalidation and the
//! category index, and print what segment-dump sees.
//!
//! Usage: streamlog-demo [folder]   (default: ./demo-data; it is replaced)

use std::time::Instant;
use streamlog::{Append, Direction, EventData, ExpectedVersion, Options, Position, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo-data".into());
    if std::path::Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = Store::open_with(
        &dir,
        Options {
            indexes: true,
            ..Options::default()
        },
    )?;
    let threads = 8u64;
    let orders_per_thread = 250u64;
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<(), streamlog::Error> {
                for i in 0..orders_per_thread {
                    let order = format!("order-{}", t * orders_per_thread + i);
                    store.append_with(
                        Append::new(
                            &order,
                            ExpectedVersion::NoStream,
                            [
                                EventData::new(
                                    "OrderPlaced",
                                    format!(r#"{{"total":{}}}"#, 10 + i).into_bytes(),
                                )
                                .metadata(format!(r#"{{"thread":{t}}}"#).into_bytes()),
                                EventData::new("ItemAdded", br#"{"sku":"A-1","qty":2}"#.to_vec())
                                    .key(b"A-1".to_vec()),
                            ],
                        )
                        .commit_metadata(
                            format!(r#"{{"user":"clerk-{t}","command":"place"}}"#).into_bytes(),
                        ),
                    )?;
                    store.append_with(
                        Append::new(
                            &order,
                            ExpectedVersion::LastChangeset(1),
                            [EventData::new("OrderShipped", b"{}".to_vec())],
                        )
                        .commit_metadata(br#"{"command":"ship"}"#.to_vec()),
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "writer thread panicked")??;
    }
    let elapsed = started.elapsed();
    let events = store.head_position().get();
    println!(
        "wrote {events} durable events ({} appends) from {threads} threads in {:.1} ms: {:.0} events/s",
        threads * orders_per_thread * 2,
        elapsed.as_secs_f64() * 1e3,
        events as f64 / elapsed.as_secs_f64()
    );
    println!("\nstream order-42:");
    for ev in store.read_stream("order-42", 1, Direction::Forward)? {
        let ev = ev?;
        println!(
            "  v{} pos {} {} {}",
            ev.version(),
            ev.position(),
            ev.event_type(),
            String::from_utf8_lossy(ev.data())
        );
    }
    println!("\nall streams, first 6 in global order:");
    for ev in store.read_all(Position::START, Direction::Forward)?.take(6) {
        let ev = ev?;
        println!(
            "  pos {} {}@{} {}",
            ev.position(),
            ev.stream_id(),
            ev.version(),
            ev.event_type()
        );
    }
    let total = store
        .read_all(Position::START, Direction::Forward)?
        .try_fold(0u64, |n, e| e.map(|_| n + 1))?;
    println!("  ... {total} events read back in global order");
    // Changesets, a multi-stream append, keys, an invalidation.
    println!("\nchangesets of order-42:");
    for c in store.read_changesets("order-42", 1)? {
        let c = c?;
        println!(
            "  changeset {}: {} event(s), commit metadata {}",
            c.number(),
            c.events().len(),
            String::from_utf8_lossy(c.commit_metadata())
        );
    }
    let moved = store.append_multi([
        Append::new(
            "order-42",
            ExpectedVersion::LastChangeset(2),
            [
                EventData::new("ItemAdded", br#"{"sku":"B-7","qty":1}"#.to_vec())
                    .key(b"B-7".to_vec()),
            ],
        ),
        Append::new(
            "stock-B-7",
            ExpectedVersion::Any,
            [EventData::new("Reserved", b"1".to_vec())],
        ),
    ])?;
    println!(
        "multi-stream append: order-42 changeset {} and stock-B-7 changeset {}, positions {}..={}, all or none",
        moved[0].changeset, moved[1].changeset, moved[0].first_position, moved[1].last_position
    );
    let again = store.append_with(
        Append::new(
            "order-42",
            ExpectedVersion::Any,
            [
                EventData::new("ItemAdded", br#"{"sku":"B-7","qty":1}"#.to_vec())
                    .key(b"B-7".to_vec()),
            ],
        )
        .deduplicate(),
    )?;
    println!(
        "the same item again, de-duplicated: {} dropped, version {} kept",
        again.duplicates, again.last_version
    );
    let surface: Vec<String> = store
        .surface("order-42")?
        .iter()
        .map(|e| format!("{}@v{}", String::from_utf8_lossy(e.key()), e.version()))
        .collect();
    println!(
        "surface of order-42 (newest event per key): {}",
        surface.join(", ")
    );
    store.invalidate("order-42", 3, "added by mistake")?;
    let valid: Vec<String> = store
        .read_stream("order-42", 1, Direction::Forward)?
        .skip_invalidated()?
        .map(|e| e.map(|e| e.event_type().to_string()))
        .collect::<Result<_, _>>()?;
    println!(
        "order-42 without its invalidated changeset 3: {}",
        valid.join(", ")
    );
    store.wait_indexed(store.head_position(), std::time::Duration::from_secs(10))?;
    let orders = store
        .read_category("order", Position::START)?
        .try_fold(0u64, |n, e| e.map(|_| n + 1))?;
    let status = store.index_status()?;
    println!(
        "category `order` through its index: {orders} events (indexed up to {}, lag {})",
        status.indexed, status.lag
    );
    // A persistent subscription: every OrderShipped event, acknowledged as it is handled.
    let mut shipped = store.persistent_subscription(
        "shipping-report",
        streamlog::Target::All(streamlog::Filter::all().event_type("OrderShipped")),
        streamlog::Start::Origin,
    )?;
    let mut handled = 0u64;
    while let Some(ev) = shipped.try_recv()? {
        handled += 1;
        shipped.ack(ev.position())?;
    }
    let durable = shipped.flush_acks()?;
    println!(
        "\npersistent subscription \"shipping-report\": {handled} OrderShipped events, acknowledged durably up to position {durable}"
    );
    drop(shipped);
    drop(store);
    println!("\nsegment-dump {dir} --summary:");
    let dump = streamlog::dump::dump_path(std::path::Path::new(&dir), false);
    for line in dump.text.lines().filter(|l| {
        !l.contains(": segment ")
            && !l.contains("committed record")
            && !l.contains(": keys of stream")
    }) {
        println!("  {line}");
    }
    if !dump.corruption.is_empty() {
        return Err(format!("{} corruption(s)", dump.corruption.len()).into());
    }
    Ok(())
}
