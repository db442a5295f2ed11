//! Catch-up and live subscriptions, and persistent subscriptions with acks (issue 5).

mod common;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use streamlog::{
    Direction, Error, EventData, ExpectedVersion, Filter, Options, Position, Start, Store, Target,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir).unwrap()
}

fn fill(store: &Store, streams: &[&str], count: u64) {
    for i in 0..count {
        let stream = streams[(i % streams.len() as u64) as usize];
        store
            .append(stream, ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Eight writers append while subscribers start at random moments from random points; each
/// sees exactly the positions from its start to the end, in order, with no gap or duplicate,
/// across the switch from catch-up to live.
#[test]
fn catch_up_to_live_under_eight_writers_has_no_gap_or_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    fill(&store, &["pre-a", "pre-b", "pre-c"], 500);
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 150;
    // Appends of 1..=3 events: the final head is known only at the end.
    let appended = Arc::new(AtomicU64::new(0));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let appended = Arc::clone(&appended);
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for i in 0..APPENDS {
                    let n = 1 + rng.below(3);
                    let events: Vec<EventData> = (0..n).map(|k| event(i * 10 + k)).collect();
                    store
                        .append(&format!("w{w}-{}", i % 5), ExpectedVersion::Any, events)
                        .unwrap();
                    appended.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Subscribers start while the writers run, from the origin, the head, or a random
    // position at or below the head.
    let mut subscribers = Vec::new();
    let mut rng = Rng(seed);
    for s in 0..12u64 {
        // Wait for progress by the writers, not for time: each subscriber starts after the
        // writers have added a few more events.
        let target = s * 80;
        while appended.load(Ordering::Relaxed) < target
            && store.head_position().get() < 500 + WRITERS * APPENDS
        {
            std::thread::yield_now();
        }
        let head_before = store.head_position().get();
        let start = match s % 3 {
            0 => Start::Origin,
            1 => Start::Head,
            _ => Start::At(1 + rng.below(head_before)),
        };
        let sub = store.subscribe_all(start, Filter::all()).unwrap();
        let head_after = store.head_position().get();
        let (low, high) = match start {
            Start::Origin => (1, 1),
            Start::Head => (head_before + 1, head_after + 1),
            Start::At(p) => (p, p),
        };
        subscribers.push((sub, low, high));
    }
    for w in writers {
        w.join().unwrap();
    }
    let end = store.head_position().get();
    let reference = all(&store);
    assert_eq!(reference.len() as u64, end);
    let checkers: Vec<_> = subscribers
        .into_iter()
        .map(|(mut sub, low, high)| {
            let reference = reference.clone();
            std::thread::spawn(move || {
                let first = sub.recv().unwrap();
                let start = first.position().get();
                assert!(
                    (low..=high).contains(&start),
                    "first position {start} in {low}..={high}"
                );
                let mut expect = start;
                let mut event = first;
                loop {
                    assert_eq!(event.position().get(), expect, "no gap, no duplicate");
                    let r = &reference[(expect - 1) as usize];
                    assert_eq!((event.stream_id(), event.version()), (r.0.as_str(), r.1));
                    assert_eq!(event.data(), &r.3[..]);
                    if expect == end {
                        break;
                    }
                    expect += 1;
                    event = sub.recv().unwrap();
                }
                // Nothing after the end.
                assert!(sub.try_recv().unwrap().is_none());
            })
        })
        .collect();
    for c in checkers {
        c.join().unwrap();
    }
}

#[test]
fn a_stream_subscription_sees_its_stream_only_from_before_it_exists() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    let mut sub = store.subscribe_stream("order-1", Start::Origin).unwrap();
    assert!(sub.try_recv().unwrap().is_none());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..60u64 {
                store
                    .append("other", ExpectedVersion::Any, [event(i)])
                    .unwrap();
                let n = 1 + i % 3;
                let events: Vec<EventData> = (0..n).map(|k| event(i * 10 + k)).collect();
                store
                    .append("order-1", ExpectedVersion::Any, events)
                    .unwrap();
            }
        })
    };
    let total: u64 = (0..60u64).map(|i| 1 + i % 3).sum();
    let mut versions = Vec::new();
    while versions.len() < total as usize {
        let e = sub.recv().unwrap();
        assert_eq!(e.stream_id(), "order-1");
        versions.push(e.version());
    }
    writer.join().unwrap();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    assert!(sub.try_recv().unwrap().is_none());
    let expected = stream_data(&store, "order-1");
    // From a version, and from the head.
    let from: Vec<Vec<u8>> = store
        .subscribe_stream("order-1", Start::At(100))
        .unwrap()
        .take((total - 99) as usize)
        .map(|e| e.unwrap().data().to_vec())
        .collect();
    assert_eq!(from, expected[99..]);
    let mut head = store.subscribe_stream("order-1", Start::Head).unwrap();
    assert!(head.try_recv().unwrap().is_none());
    store
        .append("order-1", ExpectedVersion::Exact(total), [event(999)])
        .unwrap();
    assert_eq!(head.recv().unwrap().version(), total + 1);
}

#[test]
fn filters_by_stream_prefix_and_event_type_while_catching_up_and_live() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    let write = |stream: &str, ty: &str, i: u64| {
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [EventData::new(ty, i.to_le_bytes().to_vec())],
            )
            .unwrap()
            .first_position
            .get()
    };
    let mut orders = Vec::new();
    let mut placed = Vec::new();
    let mut both = Vec::new();
    for i in 0..200u64 {
        let stream = ["order-1", "order-2", "customer-1", "orderly"][(i % 4) as usize];
        let ty = ["Placed", "Shipped", "Placed"][(i % 3) as usize];
        let p = write(stream, ty, i);
        if stream.starts_with("order-") {
            orders.push(p);
        }
        if ty == "Placed" {
            placed.push(p);
        }
        if stream.starts_with("order-") && ty == "Placed" {
            both.push(p);
        }
    }
    let drain = |filter: Filter| {
        let mut sub = store.subscribe_all(Start::Origin, filter).unwrap();
        let mut got = Vec::new();
        while let Some(e) = sub.try_recv().unwrap() {
            got.push(e.position().get());
        }
        (sub, got)
    };
    let (_, got) = drain(Filter::all().stream_prefix("order-"));
    assert_eq!(got, orders);
    let (_, got) = drain(Filter::all().event_type("Placed"));
    assert_eq!(got, placed);
    let (mut live, got) = drain(Filter::all().stream_prefix("order-").event_type("Placed"));
    assert_eq!(got, both);
    // Live: a non-matching event is skipped, the matching one after it delivered.
    write("customer-9", "Placed", 1);
    write("order-9", "Shipped", 2);
    let p = write("order-9", "Placed", 3);
    assert_eq!(live.recv().unwrap().position().get(), p);
    assert!(live.try_recv().unwrap().is_none());
    assert!(matches!(
        store.subscribe_all(Start::Origin, Filter::all().event_type("bad\0type")),
        Err(Error::InvalidEventType { .. })
    ));
}

#[test]
fn recv_timeout_returns_none_and_closing_the_store_ends_a_waiting_subscriber() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    let mut sub = store.subscribe_all(Start::Origin, Filter::all()).unwrap();
    assert!(sub
        .recv_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
    let waiting =
        std::thread::spawn(move || sub.map(|e| e.unwrap().position().get()).collect::<Vec<_>>());
    fill(&store, &["a", "b"], 3);
    // The last handle goes: the writer stops, the subscriber gets every event, then the end.
    drop(store);
    assert_eq!(waiting.join().unwrap(), vec![1, 2, 3]);
}

#[test]
fn a_slow_subscriber_reads_from_disk_and_never_holds_the_writer() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    let mut sub = store.subscribe_all(Start::Origin, Filter::all()).unwrap();
    // The subscriber does not read while 5,000 events are committed: the writer is not
    // slowed or blocked by it (the appends return), and the subscriber then catches up.
    fill(&store, &["x", "y", "z"], 5_000);
    let mut n = 0;
    while let Some(e) = sub.try_recv().unwrap() {
        n += 1;
        assert_eq!(e.position().get(), n);
    }
    assert_eq!(n, 5_000);
}

fn positions(sub: &mut streamlog::PersistentSubscription, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| sub.recv().unwrap().position().get())
        .collect()
}

#[test]
fn a_persistent_subscription_resumes_after_the_acked_checkpoint_after_reopen() {
    let root = tempfile::tempdir().unwrap();
    {
        let store = open(root.path());
        fill(&store, &["a", "b", "c"], 30);
        let mut sub = store
            .persistent_subscription("proj", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        assert_eq!(positions(&mut sub, 10), (1..=10).collect::<Vec<_>>());
        sub.ack(Position(7)).unwrap();
        assert_eq!(sub.flush_acks().unwrap(), Position(7));
        assert_eq!(sub.durable(), Position(7));
    }
    {
        let store = open(root.path());
        let mut sub = store
            .persistent_subscription("proj", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        // At least once: 8, 9, 10 again; nothing before them.
        assert_eq!(positions(&mut sub, 3), vec![8, 9, 10]);
        // An ack not flushed is still written by the writer before a clean close.
        sub.ack(Position(9)).unwrap();
    }
    let store = open(root.path());
    let info = store.persistent_subscriptions().unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].acked_position, Position(9));
    let mut sub = store
        .persistent_subscription("proj", Target::All(Filter::all()), Start::Head)
        .unwrap();
    assert_eq!(positions(&mut sub, 21), (10..=30).collect::<Vec<_>>());
    // Live after catching up.
    fill(&store, &["d"], 1);
    assert_eq!(sub.recv().unwrap().position().get(), 31);
}

#[test]
fn a_persistent_stream_subscription_with_filters_and_start_points() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    fill(&store, &["order-1", "cart-1"], 40);
    // Created at the head: only what comes next.
    let mut at_head = store
        .persistent_subscription("next", Target::All(Filter::all()), Start::Head)
        .unwrap();
    assert!(at_head.try_recv().unwrap().is_none());
    // One stream, from version 5.
    let mut one = store
        .persistent_subscription("one", Target::Stream("order-1".into()), Start::At(5))
        .unwrap();
    let versions: Vec<u64> = (0..16).map(|_| one.recv().unwrap().version()).collect();
    assert_eq!(versions, (5..=20).collect::<Vec<_>>());
    let tenth = store
        .read_stream("order-1", 10, Direction::Forward)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .position();
    one.ack(tenth).unwrap();
    one.flush_acks().unwrap();
    drop(one);
    let mut one = store
        .persistent_subscription("one", Target::Stream("order-1".into()), Start::Origin)
        .unwrap();
    assert_eq!(one.recv().unwrap().version(), 11);
    fill(&store, &["cart-1", "order-1"], 2);
    assert_eq!(at_head.recv().unwrap().position().get(), 41);
    assert_eq!(at_head.recv().unwrap().position().get(), 42);
    // A start beyond the head is refused (a checkpoint never runs ahead of the store).
    assert!(matches!(
        store.persistent_subscription("far", Target::All(Filter::all()), Start::At(1_000)),
        Err(Error::InvalidStart { .. })
    ));
}

#[test]
fn one_subscriber_per_name_and_names_can_be_listed_and_deleted() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    fill(&store, &["a"], 5);
    let target = Target::All(Filter::all().stream_prefix("a"));
    let first = store
        .persistent_subscription("p", target.clone(), Start::Origin)
        .unwrap();
    assert!(matches!(
        store.persistent_subscription("p", target.clone(), Start::Origin),
        Err(Error::SubscriptionInUse { .. })
    ));
    assert!(matches!(
        store.persistent_subscription("p", Target::All(Filter::all()), Start::Origin),
        Err(Error::SubscriptionTargetMismatch { .. })
    ));
    assert!(matches!(
        store.delete_persistent_subscription("p"),
        Err(Error::SubscriptionInUse { .. })
    ));
    for bad in ["", "x\0y"] {
        assert!(matches!(
            store.persistent_subscription(bad, target.clone(), Start::Origin),
            Err(Error::InvalidSubscriptionName { .. })
        ));
    }
    let long = "n".repeat(256);
    assert!(matches!(
        store.persistent_subscription(&long, target.clone(), Start::Origin),
        Err(Error::InvalidSubscriptionName { .. })
    ));
    let _other = store
        .persistent_subscription(
            "../../etc/passwd",
            Target::Stream("a".into()),
            Start::Origin,
        )
        .unwrap();
    drop(first);
    let again = store
        .persistent_subscription("p", target.clone(), Start::Origin)
        .unwrap();
    drop(again);
    let names: Vec<String> = store
        .persistent_subscriptions()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["../../etc/passwd".to_string(), "p".to_string()]);
    store.delete_persistent_subscription("p").unwrap();
    assert!(matches!(
        store.delete_persistent_subscription("p"),
        Err(Error::SubscriptionNotFound { .. })
    ));
    let files = std::fs::read_dir(root.path().join("subscriptions"))
        .unwrap()
        .count();
    assert_eq!(files, 1, "the deleted subscription's file is gone");
    drop(_other);
    drop(store);
    let store = open(root.path());
    assert_eq!(store.persistent_subscriptions().unwrap().len(), 1);
}

#[test]
fn back_pressure_bounds_the_unacknowledged_events_in_flight() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    fill(&store, &["a", "b"], 20);
    let mut sub = store
        .persistent_subscription("bp", Target::All(Filter::all()), Start::Origin)
        .unwrap()
        .with_in_flight_max(5);
    assert_eq!(positions(&mut sub, 5), vec![1, 2, 3, 4, 5]);
    assert_eq!(sub.in_flight(), 5);
    // The bound holds although events are committed.
    assert!(sub.try_recv().unwrap().is_none());
    assert!(sub
        .recv_timeout(Duration::from_millis(10))
        .unwrap()
        .is_none());
    assert!(matches!(
        sub.ack(Position(6)),
        Err(Error::AckBeyondDelivered {
            position: 6,
            delivered: 5
        })
    ));
    sub.ack(Position(3)).unwrap();
    assert_eq!(sub.in_flight(), 2);
    assert_eq!(positions(&mut sub, 3), vec![6, 7, 8]);
    assert!(sub.try_recv().unwrap().is_none());
    // A blocked subscriber is released by an ack from another thread.
    let acker = sub.acker();
    let releaser = std::thread::spawn(move || acker.ack(Position(8)).unwrap());
    assert_eq!(sub.recv().unwrap().position().get(), 9);
    releaser.join().unwrap();
    assert_eq!(sub.in_flight(), 1);
}

/// Acking every event does not cost a checkpoint write (and sync) per event: acks made while
/// the writer is busy collapse into its next batch.
#[test]
fn acks_of_every_event_collapse_into_few_checkpoint_writes() {
    let root = tempfile::tempdir().unwrap();
    let store = open(root.path());
    const N: u64 = 5_000;
    fill(&store, &["a", "b", "c", "d"], N);
    let mut sub = store
        .persistent_subscription("every", Target::All(Filter::all()), Start::Origin)
        .unwrap();
    for _ in 0..N {
        let e = sub.recv().unwrap();
        sub.ack(e.position()).unwrap();
    }
    assert_eq!(sub.flush_acks().unwrap(), Position(N));
    let file = std::fs::read_dir(root.path().join("subscriptions"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(file).unwrap();
    let c = streamlog::format::subscription::SubscriptionCheckpoint::decode_file(&bytes).unwrap();
    assert_eq!(c.acked_position, N);
    println!("{N} acks, {} checkpoint writes", c.sequence - 1);
    assert!(
        c.sequence - 1 < N / 2,
        "{} checkpoint writes for {N} acks",
        c.sequence - 1
    );
}

#[test]
fn subscriptions_see_the_poison_and_a_persistent_one_survives_reopen() {
    use streamlog::storage::sim::SimBackend;
    let sim = SimBackend::new(7);
    let dir = std::path::PathBuf::from("/store");
    let store = Store::open_with_backend(&dir, Options::default(), Arc::new(sim.clone())).unwrap();
    fill(&store, &["a"], 3);
    let mut sub = store
        .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
        .unwrap();
    assert_eq!(positions(&mut sub, 3), vec![1, 2, 3]);
    sub.ack(Position(2)).unwrap();
    sub.flush_acks().unwrap();
    let mut live = store.subscribe_all(Start::Head, Filter::all()).unwrap();
    // The next I/O call (the append's segment write) fails: the store is poisoned.
    sim.fail_call_after(1, std::io::ErrorKind::Other);
    assert!(store.append("a", ExpectedVersion::Any, [event(9)]).is_err());
    // The live subscriber is told the store commits nothing more, instead of waiting forever.
    assert!(matches!(live.recv(), Err(Error::Poisoned { .. })));
    sub.ack(Position(3)).err();
    drop(sub);
    drop(live);
    drop(store);
    let disk = sim.reboot();
    let store = Store::open_with_backend(&dir, Options::default(), Arc::new(disk)).unwrap();
    let mut sub = store
        .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
        .unwrap();
    // The durable ack survived the power cut: delivery resumes right after it.
    assert_eq!(sub.recv().unwrap().position().get(), 3);
}

/// The child of `persistent_subscriber_survives_kill_9`: appends in one thread while a
/// persistent subscriber acks every event and flushes its acks now and then, printing
/// `GOT <position>` for each delivered event and `DURABLE <position>` after each flush.
#[test]
#[ignore = "helper run in a child process by persistent_subscriber_survives_kill_9"]
fn subscriber_child() {
    use std::io::Write;
    let dir = std::env::var("STREAMLOG_SUB_DIR").unwrap();
    let seed: u64 = std::env::var("STREAMLOG_SUB_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&dir).unwrap();
    // The appender adds exactly this many one-event appends.
    let last = store.head_position().get() + 2_000;
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || fill(&store, &["live-a", "live-b", "live-c"], 2_000))
    };
    let mut sub = store
        .persistent_subscription("crash", Target::All(Filter::all()), Start::Origin)
        .unwrap();
    let mut rng = Rng(seed);
    let mut out = std::io::stdout();
    loop {
        let e = sub.recv().unwrap();
        writeln!(out, "GOT {}", e.position().get()).unwrap();
        out.flush().unwrap();
        sub.ack(e.position()).unwrap();
        if rng.below(16) == 0 {
            let durable = sub.flush_acks().unwrap();
            writeln!(out, "DURABLE {}", durable.get()).unwrap();
            out.flush().unwrap();
        }
        if e.position().get() == last {
            // Everything delivered: wait for the kill.
            let durable = sub.flush_acks().unwrap();
            writeln!(out, "DURABLE {}", durable.get()).unwrap();
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
            appender.join().unwrap();
            let _ = sub.recv();
            unreachable!("nothing is appended after the last event");
        }
    }
}

/// Fault-matrix row 1 for subscriptions: a subscriber process is killed with SIGKILL at a
/// random moment while it consumes, acks and flushes. After each kill, the subscription resumes
/// no later than just after the last event it delivered (nothing after the checkpoint is
/// skipped) and no earlier than just after its last durable ack (acknowledged checkpoints are
/// never lost), then delivers every later position exactly once, in order.
#[test]
fn persistent_subscriber_survives_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    {
        let store = Store::open(&dir).unwrap();
        fill(&store, &["a", "b", "c", "d"], 2_000);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let mut delivered_max = 0u64;
    let mut durable_max = 0u64;
    for cycle in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "subscriber_child", "--nocapture"])
            .env("STREAMLOG_SUB_DIR", &dir)
            .env("STREAMLOG_SUB_SEED", (seed ^ (cycle + 1)).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after = 1 + rng.below(2_500);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let mut record = |line: &str| {
            if let Some(p) = line.strip_prefix("GOT ") {
                delivered_max = delivered_max.max(p.parse().unwrap());
                return true;
            }
            if let Some(p) = line.strip_prefix("DURABLE ") {
                durable_max = durable_max.max(p.parse().unwrap());
            }
            false
        };
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            if line == "DONE" {
                // Everything delivered before the kill came: it lands while the child waits.
                break;
            }
            if record(&line) {
                seen += 1;
            }
        }
        child.kill().unwrap();
        for line in lines.map_while(Result::ok) {
            record(&line);
        }
        child.wait().unwrap();
        let store = Store::open(&dir).unwrap();
        let head = store.head_position().get();
        // The checker does not ack: no in-flight bound.
        let mut sub = store
            .persistent_subscription("crash", Target::All(Filter::all()), Start::Origin)
            .unwrap()
            .with_in_flight_max(usize::MAX);
        let info = store.persistent_subscriptions().unwrap();
        let acked = info[0].acked_position.get();
        assert!(
            (durable_max..=delivered_max).contains(&acked),
            "cycle {cycle}: checkpoint {acked} within durable {durable_max} ..= delivered {delivered_max}"
        );
        let mut expect = acked + 1;
        while let Some(e) = sub.try_recv().unwrap() {
            assert_eq!(
                e.position().get(),
                expect,
                "cycle {cycle}: no gap, no repeat"
            );
            expect += 1;
        }
        assert_eq!(
            expect,
            head + 1,
            "cycle {cycle}: every event up to the head"
        );
    }
    println!(
        "6 kill -9 cycles; last checkpoint at or after {durable_max}, {delivered_max} delivered"
    );
}

/// A damaged subscription file: a torn checkpoint slot falls back to the other one; a damaged
/// header, or both slots, is `Corrupt`, never a silent restart from the origin.
#[test]
fn a_damaged_subscription_file_is_corrupt_and_a_torn_slot_falls_back() {
    let root = tempfile::tempdir().unwrap();
    {
        let store = open(root.path());
        fill(&store, &["a"], 10);
        let mut sub = store
            .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        assert_eq!(positions(&mut sub, 6), (1..=6).collect::<Vec<_>>());
        sub.ack(Position(4)).unwrap();
        sub.flush_acks().unwrap();
        sub.ack(Position(6)).unwrap();
        sub.flush_acks().unwrap();
    }
    let file = root.path().join("subscriptions/0000000000000001.sub");
    let pristine = std::fs::read(&file).unwrap();
    let newest =
        streamlog::format::subscription::SubscriptionCheckpoint::decode_file(&pristine).unwrap();
    assert_eq!(newest.acked_position, 6);
    // Tear the newest slot: the older checkpoint (4) is used, so 5 and 6 come again.
    let mut torn = pristine.clone();
    torn[newest.slot_offset() as usize + 40] ^= 0xff;
    std::fs::write(&file, &torn).unwrap();
    {
        let store = open(root.path());
        let mut sub = store
            .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        assert_eq!(sub.recv().unwrap().position().get(), 5);
    }
    // Damage the header: corrupt, with the file named.
    let mut bad = pristine.clone();
    bad[64] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let store = open(root.path());
    match store.persistent_subscriptions() {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, file),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    drop(store);
    // Both slots damaged.
    let mut bad = pristine;
    for at in [4096 + 40, 4608 + 40] {
        bad[at] ^= 0xff;
    }
    std::fs::write(&file, &bad).unwrap();
    let store = open(root.path());
    assert!(matches!(
        store.persistent_subscription("p", Target::All(Filter::all()), Start::Origin),
        Err(Error::Corrupt { .. })
    ));
}

/// In both sync modes, a flushed ack survives a power cut (the checkpoint slot is synced by the
/// batch's sync), and a failed checkpoint write poisons the store, fails `flush_acks`, and the
/// reopened store resumes from the last durable checkpoint.
#[test]
fn flushed_acks_survive_power_loss_and_a_failed_ack_write_poisons() {
    use streamlog::storage::sim::SimBackend;
    use streamlog::SyncMode;
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        let options = || Options {
            sync,
            ..Options::default()
        };
        let sim = SimBackend::new(11);
        let dir = std::path::PathBuf::from("/store");
        let store = Store::open_with_backend(&dir, options(), Arc::new(sim.clone())).unwrap();
        fill(&store, &["a", "b"], 10);
        let mut sub = store
            .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        assert_eq!(positions(&mut sub, 8), (1..=8).collect::<Vec<_>>());
        sub.ack(Position(5)).unwrap();
        assert_eq!(sub.flush_acks().unwrap(), Position(5));
        // Cut the power with nothing else written since: the ack must be on the disk.
        let disk = sim.reboot();
        drop(sub);
        drop(store);
        let store = Store::open_with_backend(&dir, options(), Arc::new(disk.clone())).unwrap();
        let mut sub = store
            .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
            .unwrap();
        assert_eq!(sub.recv().unwrap().position().get(), 6, "{sync:?}");
        // The next I/O call, the checkpoint slot's open or write, fails.
        disk.fail_call_after(1, std::io::ErrorKind::Other);
        sub.ack(Position(6)).unwrap();
        assert!(
            matches!(sub.flush_acks(), Err(Error::Poisoned { .. })),
            "{sync:?}"
        );
        assert!(matches!(
            store.append("a", ExpectedVersion::Any, [event(1)]),
            Err(Error::Poisoned { .. })
        ));
        drop(sub);
        drop(store);
        let store = Store::open_with_backend(&dir, options(), Arc::new(disk.reboot())).unwrap();
        let acked = store.persistent_subscriptions().unwrap()[0].acked_position;
        assert!(
            acked == Position(5) || acked == Position(6),
            "{sync:?}: {acked:?}"
        );
    }
}

/// EIO, ENOSPC or a short write at every I/O call of a workload that appends, consumes, acks
/// and flushes: every failure surfaces (as `Poisoned` or `Io`), and after reopening the
/// checkpoint is no lower than the last flushed ack and no higher than the last delivered
/// event, and delivery resumes right after it.
#[test]
fn an_io_error_at_every_call_keeps_the_acked_checkpoint() {
    use streamlog::storage::sim::SimBackend;
    let dir = std::path::PathBuf::from("/store");
    for kind in [
        std::io::ErrorKind::Other,
        std::io::ErrorKind::StorageFull,
        std::io::ErrorKind::WriteZero,
    ] {
        let mut call = 0u64;
        loop {
            call += 1;
            let sim = SimBackend::new(call);
            let store =
                Store::open_with_backend(&dir, Options::default(), Arc::new(sim.clone())).unwrap();
            fill(&store, &["a", "b"], 10);
            let mut sub = store
                .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
                .unwrap();
            sim.fail_call_after(call, kind);
            let (mut delivered, mut flushed) = (0u64, 0u64);
            let mut failed = false;
            for round in 0..2u64 {
                if fill_checked(&store, round).is_err() {
                    failed = true;
                    break;
                }
                loop {
                    match sub.try_recv() {
                        Ok(Some(e)) => {
                            delivered = e.position().get();
                            if sub.ack(e.position()).is_err() {
                                failed = true;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                match sub.flush_acks() {
                    Ok(p) => flushed = p.get(),
                    Err(_) => failed = true,
                }
                if failed {
                    break;
                }
            }
            let fired = sim.faults_injected() > 0;
            sim.clear_fault();
            let what = format!("{kind:?} at call {call}");
            drop(sub);
            drop(store);
            let store = Store::open_with_backend(&dir, Options::default(), Arc::new(sim))
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let acked = store.persistent_subscriptions().unwrap()[0]
                .acked_position
                .get();
            assert!(
                (flushed..=delivered.max(flushed)).contains(&acked),
                "{what}: checkpoint {acked}, flushed {flushed}, delivered {delivered}"
            );
            let mut sub = store
                .persistent_subscription("p", Target::All(Filter::all()), Start::Origin)
                .unwrap()
                .with_in_flight_max(usize::MAX);
            if let Some(e) = sub.try_recv().unwrap() {
                assert_eq!(e.position().get(), acked + 1, "{what}");
            }
            assert_eq!(
                fired, failed,
                "{what}: every fault surfaces, and only a fault"
            );
            if !fired {
                println!("{kind:?}: {call} calls");
                break;
            }
        }
    }
}

/// One round of appends; an error instead of a panic.
fn fill_checked(store: &Store, round: u64) -> streamlog::Result<()> {
    for i in 0..3 {
        store.append("c", ExpectedVersion::Any, [event(round * 10 + i)])?;
    }
    Ok(())
}
