//! A projection built on a persistent subscription: order totals per customer, kept up to date
//! from the store's events and resumed after a restart from the acknowledged checkpoint.
//!
//! `cargo run --release --example projection -- ./projection-data`
//!
//! The projection keeps its state in memory and acknowledges an event once the state includes
//! it. After a restart it must rebuild the state it had: here it saves its totals together with
//! the position they cover (a small file written atomically), and skips delivered events at or
//! below that position, the usual way to turn at-least-once delivery into exactly-once effects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use streamlog::{EventData, ExpectedVersion, Filter, Position, Start, Store, Target};

/// The projection's own state: totals per customer and the last position they include.
#[derive(Default, Debug)]
struct Totals {
    covers: u64,
    by_customer: BTreeMap<String, u64>,
}

impl Totals {
    fn load(path: &Path) -> Totals {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Totals::default();
        };
        let mut lines = text.lines();
        let covers = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let by_customer = lines
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(c, t)| Some((c.to_string(), t.parse().ok()?)))
            .collect();
        Totals {
            covers,
            by_customer,
        }
    }

    /// Write the state durably, then rename it over the old one: a crash leaves either.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", self.covers)?;
        for (c, t) in &self.by_customer {
            writeln!(f, "{c} {t}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

fn place(store: &Store, order: u64, customer: &str, total: u64) -> streamlog::Result<()> {
    let data = format!("{customer} {total}").into_bytes();
    store.append(
        &format!("order-{order}"),
        ExpectedVersion::NoStream,
        [EventData::new("OrderPlaced", data)],
    )?;
    // Events the projection does not want: another type, another category.
    store.append(
        &format!("order-{order}"),
        ExpectedVersion::Exact(1),
        [EventData::new("OrderShipped", b"{}".to_vec())],
    )?;
    store.append(
        &format!("customer-{customer}"),
        ExpectedVersion::Any,
        [EventData::new("Visited", b"{}".to_vec())],
    )?;
    Ok(())
}

/// Run the projection until it has caught up with the head; returns how many events it applied.
fn run_projection(store: &Store, state_path: &Path) -> streamlog::Result<u64> {
    let mut totals = Totals::load(state_path);
    let target = Target::All(
        Filter::all()
            .stream_prefix("order-")
            .event_type("OrderPlaced"),
    );
    let mut sub = store.persistent_subscription("order-totals", target, Start::Origin)?;
    let mut applied = 0;
    // A real projection would block in `recv` forever; this one stops when caught up.
    while let Some(ev) = sub.try_recv()? {
        if ev.position().get() > totals.covers {
            let text = String::from_utf8_lossy(ev.data()).into_owned();
            if let Some((customer, total)) = text.split_once(' ') {
                *totals.by_customer.entry(customer.to_string()).or_insert(0) +=
                    total.parse::<u64>().unwrap_or(0);
            }
            totals.covers = ev.position().get();
            applied += 1;
            if applied % 100 == 0 {
                // Save the state first, then acknowledge: the checkpoint never passes the state.
                totals
                    .save(state_path)
                    .map_err(|e| streamlog::Error::InvalidOptions {
                        reason: format!("saving the projection: {e}"),
                    })?;
                sub.ack(ev.position())?;
            }
        }
    }
    totals
        .save(state_path)
        .map_err(|e| streamlog::Error::InvalidOptions {
            reason: format!("saving the projection: {e}"),
        })?;
    sub.ack(Position(totals.covers.max(sub.acked().get())))?;
    sub.flush_acks()?;
    println!(
        "projection applied {applied} events; covers position {}; {} customers; customer-7 spent {}",
        totals.covers,
        totals.by_customer.len(),
        totals.by_customer.get("7").copied().unwrap_or(0)
    );
    Ok(applied)
}

fn main() -> streamlog::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "./projection-data".into()),
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| streamlog::Error::InvalidOptions {
            reason: format!("clearing {}: {e}", dir.display()),
        })?;
    }
    let state = dir.with_extension("totals");
    let _ = std::fs::remove_file(&state);
    {
        let store = Store::open(&dir)?;
        for order in 0..1_000 {
            place(&store, order, &(order % 50).to_string(), 10 + order % 7)?;
        }
        run_projection(&store, &state)?;
        // More orders while the projection is down.
        for order in 1_000..1_500 {
            place(&store, order, &(order % 50).to_string(), 10 + order % 7)?;
        }
    }
    // A restart: the projection resumes after its checkpoint and applies only the new orders.
    let store = Store::open(&dir)?;
    let applied = run_projection(&store, &state)?;
    assert_eq!(applied, 500, "only the orders placed while it was down");
    for info in store.persistent_subscriptions()? {
        println!(
            "subscription {:?}: acknowledged up to position {}",
            info.name, info.acked_position
        );
    }
    Ok(())
}
