//! Indexes as projections (segment-format.md §17): reads by category and event type through the
//! indexes equal filtering the global order, whatever the indexer's lag; subscriptions catch up
//! through them; the indexer restarts from its durable checkpoint after kill -9 and power cuts
//! without losing or repeating a posting; the indexes can be rebuilt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use streamlog::storage::sim::SimBackend;
use streamlog::storage::{Backend, OpenMode};
use streamlog::{
    category_of, Direction, EventData, ExpectedVersion, Filter, Options, Position, Start, Store,
    SyncMode,
};

const WAIT: Duration = Duration::from_secs(30);

fn options(indexes: bool) -> Options {
    Options {
        indexes,
        index_entries_per_file: 256,
        ..Options::default()
    }
}

/// Appends `n` events over streams of categories `order`, `cart`, `user` (and ids without a
/// category), types `A`, `B`, `C`.
fn fill(store: &Store, first: u64, n: u64) {
    for i in first..first + n {
        let stream = match i % 7 {
            0..=2 => format!("order-{}", i % 13),
            3..=4 => format!("cart-{}", i % 5),
            5 => format!("user-{}-x", i % 3),
            _ => "nocategory".to_string(),
        };
        let t = ["A", "B", "C"][(i % 3) as usize];
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                [EventData::new(t, i.to_le_bytes().to_vec())],
            )
            .unwrap();
    }
}

fn positions(it: impl Iterator<Item = streamlog::Result<streamlog::RecordedEvent>>) -> Vec<u64> {
    it.map(|e| e.unwrap().position().get()).collect()
}

/// Positions of the events of a category or type, by filtering `read_all`.
fn by_scan(store: &Store, category: Option<&str>, event_type: Option<&str>, from: u64) -> Vec<u64> {
    store
        .read_all(Position(from), Direction::Forward)
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| category.is_none_or(|c| category_of(e.stream_id()) == Some(c)))
        .filter(|e| event_type.is_none_or(|t| e.event_type() == t))
        .map(|e| e.position().get())
        .collect()
}

fn check_reads(store: &Store, what: &str) {
    let head = store.head_position().get();
    for from in [0, 1, 2, head / 3, head / 2 + 1, head, head + 1] {
        for c in ["order", "cart", "user", "nocategory", "missing"] {
            assert_eq!(
                positions(store.read_category(c, Position(from)).unwrap()),
                by_scan(store, Some(c), None, from),
                "{what}: category {c} from {from}"
            );
        }
        for t in ["A", "B", "C", "D"] {
            assert_eq!(
                positions(store.read_event_type(t, Position(from)).unwrap()),
                by_scan(store, None, Some(t), from),
                "{what}: type {t} from {from}"
            );
        }
    }
}

#[test]
fn reads_through_the_indexes_equal_filtering_the_global_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    fill(&store, 0, 700);
    // Whatever the indexer's lag now, the reads are complete.
    check_reads(&store, "while indexing");
    assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
    let status = store.index_status().unwrap();
    assert_eq!(
        (status.indexed, status.lag, status.error),
        (store.head_position(), 0, None)
    );
    check_reads(&store, "indexed");
    assert!(dir.path().join("projections").join("CHECKPOINT").exists());
    drop(store);
    // Reopened with the indexer off: what was indexed serves, the rest is scanned.
    let store = Store::open_with(dir.path(), options(false)).unwrap();
    fill(&store, 700, 100);
    assert_eq!(store.index_status().unwrap().lag, 100);
    check_reads(&store, "indexer off");
    drop(store);
    // On again: it catches up from its checkpoint.
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
    check_reads(&store, "caught up");
    assert!(matches!(
        store.read_category("or-der", Position::START),
        Err(streamlog::Error::InvalidStreamId { .. })
    ));
    assert!(matches!(
        store.read_event_type("", Position::START),
        Err(streamlog::Error::InvalidEventType { .. })
    ));
}

#[test]
fn the_indexes_rebuild_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    fill(&store, 0, 300);
    assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
    let before = postings_of(dir.path());
    store.rebuild_indexes().unwrap();
    fill(&store, 300, 10);
    assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
    check_reads(&store, "rebuilt");
    let after = postings_of(dir.path());
    // The same postings, and the new events' after them.
    for (name, positions) in &before {
        assert_eq!(&after[name][..positions.len()], &positions[..], "{name}");
    }
    let off = Store::open_with(tempfile::tempdir().unwrap().path(), options(false)).unwrap();
    assert!(off.rebuild_indexes().is_err());
}

#[test]
fn subscriptions_by_category_and_type_catch_up_through_the_indexes_then_go_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options(true)).unwrap();
    fill(&store, 0, 400);
    assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
    let mut by_category = store
        .subscribe_all(Start::Origin, Filter::all().category("order"))
        .unwrap();
    let mut by_type = store
        .subscribe_all(Start::At(100), Filter::all().event_type("B"))
        .unwrap();
    fill(&store, 400, 50);
    let head = store.head_position().get();
    let want_c = by_scan(&store, Some("order"), None, 0);
    let want_t = by_scan(&store, None, Some("B"), 100);
    let got_c: Vec<u64> = (0..want_c.len())
        .map(|_| {
            by_category
                .recv_timeout(WAIT)
                .unwrap()
                .unwrap()
                .position()
                .get()
        })
        .collect();
    let got_t: Vec<u64> = (0..want_t.len())
        .map(|_| {
            by_type
                .recv_timeout(WAIT)
                .unwrap()
                .unwrap()
                .position()
                .get()
        })
        .collect();
    assert_eq!(got_c, want_c);
    assert_eq!(got_t, want_t);
    assert!(*got_c.last().unwrap() <= head);
    assert!(by_category.try_recv().unwrap().is_none());
}

/// Every postings file of a store folder, by `<kind><name>`, as positions, checked: a valid
/// header, entries that pass their check and strictly increase.
fn postings_of(root: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out = std::collections::BTreeMap::new();
    // Nothing indexed yet: no folder.
    let Ok(entries) = std::fs::read_dir(root.join("projections")) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pos") {
            let bytes = std::fs::read(&path).unwrap();
            let (name, list) = parse_postings(&bytes, &path);
            if !list.is_empty() {
                out.insert(name, list);
            }
        }
    }
    out
}

fn parse_postings(bytes: &[u8], path: &Path) -> (String, Vec<u64>) {
    let header_bytes = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let kind = bytes[32];
    let name_len = u16::from_le_bytes(bytes[34..36].try_into().unwrap()) as usize;
    let name = String::from_utf8(bytes[64..64 + name_len].to_vec()).unwrap();
    assert_eq!((bytes.len() - header_bytes) % 8, 0, "{}", path.display());
    let list: Vec<u64> = bytes[header_bytes..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) & ((1 << 40) - 1))
        .collect();
    assert!(
        list.windows(2).all(|w| w[0] < w[1]),
        "{}: postings repeat or go back: {list:?}",
        path.display()
    );
    (format!("{kind}{name}"), list)
}

/// The postings the store must hold up to `indexed`: every matching position, no other.
fn expected_postings(store: &Store, indexed: u64) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for e in store.read_all(Position::START, Direction::Forward).unwrap() {
        let e = e.unwrap();
        let p = e.position().get();
        if p > indexed {
            break;
        }
        if let Some(c) = category_of(e.stream_id()) {
            out.entry(format!("1{c}")).or_default().push(p);
        }
        out.entry(format!("2{}", e.event_type()))
            .or_default()
            .push(p);
    }
    out
}

/// The child of `the_indexer_survives_kill_9`: appends forever; the indexer follows.
#[test]
#[ignore = "helper run in a child process by the_indexer_survives_kill_9"]
fn indexer_child() {
    use std::io::Write;
    let dir = std::env::var("STREAMLOG_IDX_DIR").unwrap();
    let store = Store::open_with(&dir, options(true)).unwrap();
    let mut out = std::io::stdout();
    let first = store.head_position().get();
    for round in 0.. {
        fill(&store, first + round * 20, 20);
        writeln!(out, "APPENDED {}", store.index_status().unwrap().indexed).unwrap();
        out.flush().unwrap();
    }
}

/// kill -9 of a process whose indexer is following appends: after reopening, the postings up
/// to the indexer's checkpoint are exactly the matching positions (none lost, none repeated),
/// and the indexer goes on from there.
#[test]
fn the_indexer_survives_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let mut checked = 0;
    let mut indexed_at_kill = 0;
    for cycle in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "indexer_child", "--nocapture"])
            .env("STREAMLOG_IDX_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..(30 + cycle * 40) {
            if lines.next().is_none() {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open_with(&dir, options(false)).unwrap();
        let indexed = store.index_status().unwrap().indexed.get();
        indexed_at_kill = indexed_at_kill.max(indexed);
        let got = postings_after_recovery(&dir, &store);
        let want = expected_postings(&store, indexed);
        for (name, list) in &want {
            assert_eq!(
                got.get(name),
                Some(list),
                "cycle {cycle}: {name} up to {indexed}"
            );
        }
        check_reads(&store, &format!("cycle {cycle}"));
        drop(store);
        let store = Store::open_with(&dir, options(true)).unwrap();
        assert!(store.wait_indexed(store.head_position(), WAIT).unwrap());
        let head = store.head_position().get();
        drop(store);
        let store = Store::open_with(&dir, options(false)).unwrap();
        assert_eq!(
            postings_after_recovery(&dir, &store),
            expected_postings(&store, head)
        );
        checked += head;
    }
    assert!(checked > 0);
    assert!(
        indexed_at_kill > 0,
        "the indexer had indexed something when killed"
    );
}

/// The postings files once a store has loaded its indexes (which cuts what the indexer's
/// checkpoint does not cover).
fn postings_after_recovery(
    dir: &Path,
    store: &Store,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    let _ = store.read_category("order", Position::START).unwrap();
    postings_of(dir)
}

/// A power cut at every I/O call of a workload whose indexer runs alongside, in both sync
/// modes: after the reboot, the postings up to the indexer's checkpoint are exactly the
/// matching positions, reads are complete, and the indexer catches up.
#[test]
fn the_indexer_survives_power_loss_at_every_call() {
    let path = Path::new("/sim/store");
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        let opts = Options {
            sync,
            ..options(true)
        };
        let mut cut = 0u64;
        let mut total = u64::MAX;
        while cut < total {
            cut += 1;
            let sim = SimBackend::new(cut * 11 + 3);
            let store =
                Store::open_with_backend(path, opts.clone(), Arc::new(sim.clone())).unwrap();
            let start = sim.calls();
            sim.cut_power_after(cut);
            let mut done = true;
            for i in 0..40u64 {
                let stream = format!("{}-{}", ["order", "cart"][(i % 2) as usize], i % 3);
                if store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        [EventData::new("T", vec![1])],
                    )
                    .is_err()
                {
                    done = false;
                    break;
                }
            }
            if done {
                done = store
                    .wait_indexed(store.head_position(), WAIT)
                    .unwrap_or(false);
            }
            drop(store);
            if done && sim.faults_injected() == 0 {
                // The whole workload fit before the cut: every later cut point is past it.
                total = sim.calls() - start;
            }
            let disk = sim.reboot();
            let what = format!("{sync:?} cut at call {cut}");
            let store = Store::open_with_backend(
                path,
                Options {
                    indexes: false,
                    ..opts.clone()
                },
                Arc::new(disk.clone()),
            )
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let indexed = store.index_status().unwrap().indexed.get();
            let got = sim_postings(&disk, path);
            let want = expected_postings(&store, indexed);
            assert_eq!(got, want, "{what}: postings up to {indexed}");
            check_reads(&store, &what);
            drop(store);
            let store =
                Store::open_with_backend(path, opts.clone(), Arc::new(disk.clone())).unwrap();
            assert!(
                store.wait_indexed(store.head_position(), WAIT).unwrap(),
                "{what}"
            );
            let head = store.head_position().get();
            drop(store);
            assert_eq!(sim_postings(&disk, path), {
                let s = Store::open_with_backend(
                    path,
                    Options {
                        indexes: false,
                        ..opts.clone()
                    },
                    Arc::new(disk.clone()),
                )
                .unwrap();
                expected_postings(&s, head)
            });
        }
        println!("{sync:?}: {cut} cut points");
    }
}

/// The postings files on the simulated disk, parsed and checked.
fn sim_postings(disk: &SimBackend, root: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out = std::collections::BTreeMap::new();
    let dir: PathBuf = root.join("projections");
    let Ok(names) = disk.read_dir(&dir) else {
        return out;
    };
    for (name, _) in names {
        if !name.ends_with(".pos") {
            continue;
        }
        let p = dir.join(&name);
        let f = disk.open(&p, OpenMode::Read).unwrap();
        let mut bytes = vec![0u8; f.len().unwrap() as usize];
        let n = streamlog::storage::read_full(&*f, &mut bytes, 0).unwrap();
        bytes.truncate(n);
        let (name, list) = parse_postings(&bytes, &p);
        if !list.is_empty() {
            out.insert(name, list);
        }
    }
    out
}
