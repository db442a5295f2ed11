//! Stream lifecycle (issue 6): close, snapshot, delete; their space comes back; readers skip
//! what was removed; each is crash-safe at every I/O call.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{
    Direction, Error, EventData, ExpectedVersion, Filter, Options, Position, Start, Store, SyncMode,
};

fn small_segments() -> Options {
    Options {
        segment_bytes: 64 << 10,
        event_bytes_max: 16 << 10,
        ..Options::default()
    }
}

fn big(i: u64) -> EventData {
    EventData::new("Big", vec![(i % 251) as u8; 4000])
}

fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            folder_bytes(&e.path())
        } else {
            // Blocks really used (512-byte units): holes and freed files do not count.
            std::os::unix::fs::MetadataExt::blocks(&m) * 512
        };
    }
    total
}

/// Version, what a snapshot stands for, data.
type ReadBack = (u64, Option<(u64, Position)>, Vec<u8>);

fn versions(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_stream(stream, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect()
}

fn all_positions(store: &Store) -> Vec<(String, u64)> {
    store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream_id().to_string(), e.position().get())
        })
        .collect()
}

#[test]
fn a_closed_stream_refuses_appends_and_stays_readable_and_closed() {
    let root = tempfile::tempdir().unwrap();
    {
        let store = Store::open(root.path()).unwrap();
        store
            .append("order-1", ExpectedVersion::NoStream, [event(1), event(2)])
            .unwrap();
        store
            .append("other", ExpectedVersion::Any, [event(3)])
            .unwrap();
        store.close_stream("order-1").unwrap();
        store.close_stream("order-1").unwrap();
        assert!(matches!(
            store.append("order-1", ExpectedVersion::Any, [event(4)]),
            Err(Error::StreamClosed { .. })
        ));
        assert!(matches!(
            store.close_stream("missing"),
            Err(Error::StreamNotFound { .. })
        ));
        assert_eq!(versions(&store, "order-1"), vec![1, 2]);
        // The close took a position, which readers of all streams skip.
        assert_eq!(store.head_position(), Position(4));
        assert_eq!(
            all_positions(&store),
            vec![
                ("order-1".to_string(), 1),
                ("order-1".to_string(), 2),
                ("other".to_string(), 3)
            ]
        );
        store
            .append("other", ExpectedVersion::Any, [event(5)])
            .unwrap();
    }
    let store = Store::open(root.path()).unwrap();
    assert!(matches!(
        store.append("order-1", ExpectedVersion::Any, [event(4)]),
        Err(Error::StreamClosed { .. })
    ));
    assert_eq!(versions(&store, "order-1"), vec![1, 2]);
    assert_eq!(store.stream_version("order-1").unwrap(), Some(2));
    let backward: Vec<u64> = store
        .read_stream("order-1", u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(backward, vec![2, 1]);
}

#[test]
fn delete_frees_the_space_hides_the_stream_and_never_reuses_its_id() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    // About 200 KB in 4 segments, interleaved with a stream that stays.
    for i in 0..50 {
        store
            .append("doomed", ExpectedVersion::Any, [big(i)])
            .unwrap();
        store
            .append("kept", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    let before = folder_bytes(root.path());
    store.delete_stream("doomed").unwrap();
    let after = folder_bytes(root.path());
    println!("folder {before} bytes before the delete, {after} after");
    assert!(
        before - after >= 180_000,
        "the deleted stream's space comes back: {before} -> {after}"
    );
    for e in [
        store.read_stream("doomed", 1, Direction::Forward).err(),
        store
            .append("doomed", ExpectedVersion::Any, [event(9)])
            .err(),
        store
            .append("doomed", ExpectedVersion::NoStream, [event(9)])
            .err(),
        store.stream_version("doomed").err(),
        store.delete_stream("doomed").err(),
        store.snapshot_stream("doomed", event(1)).err(),
    ] {
        assert!(matches!(e, Some(Error::StreamDeleted { .. })), "{e:?}");
    }
    let all = all_positions(&store);
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|(s, _)| s == "kept"));
    assert_eq!(versions(&store, "kept").len(), 50);
    let ids: Vec<String> = store.streams().unwrap().map(Result::unwrap).collect();
    assert_eq!(ids, vec!["kept".to_string()]);
    drop(store);
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    assert!(matches!(
        store.append("doomed", ExpectedVersion::Any, [event(9)]),
        Err(Error::StreamDeleted { .. })
    ));
    assert_eq!(all_positions(&store).len(), 50);
    store
        .append("kept", ExpectedVersion::Any, [event(99)])
        .unwrap();
}

#[test]
fn a_snapshot_replaces_the_history_keeps_the_version_and_frees_the_space() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    let mut positions = Vec::new();
    for i in 0..60 {
        positions.push(
            store
                .append("cart", ExpectedVersion::Any, [big(i)])
                .unwrap()
                .first_position
                .get(),
        );
        store
            .append("kept", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    let before = folder_bytes(root.path());
    let r = store
        .snapshot_stream(
            "cart",
            EventData::new("CartState", b"{\"items\":60}".to_vec()),
        )
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (60, 60));
    let snapshot_position = r.first_position.get();
    assert_eq!(snapshot_position, 121);
    let after = folder_bytes(root.path());
    assert!(
        before - after >= 200_000,
        "the replaced events' space comes back: {before} -> {after}"
    );
    let read = |store: &Store| -> Vec<ReadBack> {
        store
            .read_stream("cart", 1, Direction::Forward)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.version(), e.snapshot_of(), e.data().to_vec())
            })
            .collect()
    };
    let got = read(&store);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 60);
    assert_eq!(got[0].1, Some((60, Position(positions[59]))));
    assert_eq!(got[0].2, b"{\"items\":60}");
    // Appends go on after the snapshot, from its version.
    for i in 0..30 {
        store
            .append("cart", ExpectedVersion::Exact(60 + i), [big(100 + i)])
            .unwrap();
    }
    assert_eq!(versions(&store, "cart"), (60..=90).collect::<Vec<_>>());
    // read_all: no removed event, the snapshot at its own position, the later events.
    let cart: Vec<u64> = all_positions(&store)
        .into_iter()
        .filter(|(s, _)| s == "cart")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(cart[0], snapshot_position);
    assert_eq!(cart.len(), 31);
    assert!(cart.iter().all(|p| !positions.contains(p)));
    // A subscriber from the origin sees the same.
    let mut sub = store.subscribe_all(Start::Origin, Filter::all()).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        if e.stream_id() == "cart" {
            seen.push(e.position().get());
        }
    }
    assert_eq!(seen, cart);
    drop(sub);
    let expected = read(&store);
    let backward: Vec<u64> = store
        .read_stream("cart", u64::MAX, Direction::Backward)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(backward, (60..=90).rev().collect::<Vec<_>>());
    drop(store);
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    assert_eq!(read(&store), expected);
    store
        .append("cart", ExpectedVersion::Exact(90), [big(1)])
        .unwrap();
    // A second snapshot of the same stream, then a close and a delete.
    store
        .snapshot_stream("cart", EventData::new("CartState", b"2".to_vec()))
        .unwrap();
    assert_eq!(versions(&store, "cart"), vec![91]);
    store.close_stream("cart").unwrap();
    drop(store);
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    assert_eq!(versions(&store, "cart"), vec![91]);
    assert!(matches!(
        store.append("cart", ExpectedVersion::Any, [event(1)]),
        Err(Error::StreamClosed { .. })
    ));
    store.delete_stream("cart").unwrap();
    assert_eq!(versions(&store, "kept").len(), 60);
    assert_eq!(all_positions(&store).len(), 60);
}

/// What a stream looks like to a reader: versions and data.
fn stream_view(store: &Store, stream: &str) -> Result<Vec<(u64, Vec<u8>)>, String> {
    match store.read_stream(stream, 1, Direction::Forward) {
        Ok(it) => it
            .map(|e| {
                e.map(|e| (e.version(), e.data().to_vec()))
                    .map_err(|e| e.to_string())
            })
            .collect(),
        Err(e) => Err(e.to_string()),
    }
}

type View = Vec<(u64, Vec<u8>)>;

/// A store on `sim` holding 40 large events in `target` (10 small ones with `packed()`) and 40
/// small ones in `bystander`, and what both look like.
fn target_and_bystander(sim: &SimBackend, options: &Options) -> (Store, View, View) {
    let path = Path::new("/sim/store");
    let store = Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())).unwrap();
    // With `packed()` options the target is ten small events, wholly in a pack
    // (segment-format.md §19); otherwise forty big ones in files of its own.
    let small = options.pack_stream_bytes == packed().pack_stream_bytes;
    for i in 0..40 {
        if !small || i < 10 {
            let e = if small { event(i) } else { big(i) };
            store.append("target", ExpectedVersion::Any, [e]).unwrap();
        }
        store
            .append("bystander", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    let target = stream_view(&store, "target").unwrap();
    let bystander = stream_view(&store, "bystander").unwrap();
    let segments = sim
        .files()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(segments == 0, small, "{segments} segment files");
    (store, target, bystander)
}

/// Options under which `target_and_bystander`'s target lives wholly in a pack. (Only deletes
/// and closes are run on it: the simulated backend maps a file anew for every read, so the
/// walks of a packed chain make hundreds of calls, each a cut point.)
fn packed() -> Options {
    Options {
        pack_stream_bytes: 8 << 10,
        ..small_segments()
    }
}

/// Run a lifecycle operation on `target`.
fn operate(store: &Store, op: &str) -> streamlog::Result<()> {
    match op {
        "snapshot" => store
            .snapshot_stream("target", EventData::new("S", b"snap".to_vec()))
            .map(|_| ()),
        "delete" => store.delete_stream("target"),
        "truncate" => store.truncate_before("target", 30),
        _ => store.close_stream("target"),
    }
}

/// Whether `target` reads as the operation's new state.
fn in_new_state(store: &Store, op: &str, old: &View) -> bool {
    let now = stream_view(store, "target");
    match op {
        "snapshot" => now == Ok(vec![(40, b"snap".to_vec())]),
        "delete" => now.as_ref().is_err_and(|e| e.contains("deleted")),
        "truncate" => now.as_ref() == Ok(&old[29..].to_vec()),
        _ => {
            now.as_ref() == Ok(old)
                && matches!(
                    store.append("target", ExpectedVersion::Any, [event(1)]),
                    Err(Error::StreamClosed { .. })
                )
        }
    }
}

/// After an interrupted operation and a reopen: the bystander untouched, `target` wholly old
/// or wholly new (new if the operation returned Ok), and the store goes on.
fn check_old_or_new(store: &Store, op: &str, ok: bool, old: &View, bystander: &View, what: &str) {
    assert_eq!(
        &stream_view(store, "bystander").unwrap(),
        bystander,
        "{what}"
    );
    // Read before `in_new_state`, which appends to learn whether a close holds.
    let before = stream_view(store, "target");
    let new_state = in_new_state(store, op, old);
    let old_state = !new_state && before.as_ref() == Ok(old);
    assert!(new_state || old_state, "{what}: neither old nor new");
    if ok {
        assert!(
            new_state,
            "{what}: acknowledged, but the old state came back"
        );
    }
    // Every position of the other stream, and nothing of what was removed.
    let all = all_positions(store);
    assert_eq!(
        all.iter().filter(|(s, _)| s == "bystander").count(),
        40,
        "{what}"
    );
    if new_state && op != "close" {
        let target_in_all = all.iter().filter(|(s, _)| s == "target").count();
        let expected = match op {
            "snapshot" => 1,
            "truncate" => 11,
            _ => 0,
        };
        assert_eq!(target_in_all, expected, "{what}");
    }
    store
        .append("bystander", ExpectedVersion::Any, [event(99)])
        .unwrap();
}

/// Power cut at every I/O call of a snapshot, a delete and a close, in both sync modes: after
/// the reboot the stream is wholly in its old state or wholly in its new one, the other
/// streams are untouched, every acknowledged event of them is there, and the store goes on.
#[test]
fn every_lifecycle_operation_is_atomic_under_power_loss_at_every_call() {
    let path = Path::new("/sim/store");
    // The journal's run twice: the target in files of its own, then wholly in a pack (the
    // other modes never pack).
    for (sync, base) in [
        (SyncMode::SyncFs, small_segments()),
        (SyncMode::Fdatasync, small_segments()),
        (SyncMode::Journal, small_segments()),
        (SyncMode::Journal, packed()),
    ] {
        let small = base.pack_stream_bytes == packed().pack_stream_bytes;
        let options = Options { sync, ..base };
        let ops: &[&str] = if small {
            &["delete", "close"]
        } else {
            &["snapshot", "delete", "close", "truncate"]
        };
        for &op in ops {
            let mut cut = 0u64;
            loop {
                cut += 1;
                let sim = SimBackend::new(cut * 31 + 7);
                let (store, old_target, bystander) = target_and_bystander(&sim, &options);
                sim.cut_power_after(cut);
                let done = operate(&store, op).is_ok();
                drop(store);
                let disk = sim.reboot();
                let what = format!("{sync:?} {op} cut at call {cut}");
                let store = Store::open_with_backend(path, options.clone(), Arc::new(disk))
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                check_old_or_new(&store, op, done, &old_target, &bystander, &what);
                if done {
                    break;
                }
            }
            println!(
                "{sync:?} {op} (packed {}): {cut} cut points",
                options.pack_stream_bytes
            );
        }
    }
}

/// Readers that run while a stream is snapshotted and deleted over and over never see a
/// corrupt store: a stream reader reads on from the new state (or learns the stream was
/// deleted), `read_all` skips what was removed.
#[test]
fn readers_racing_with_rewrites_see_old_or_new_never_an_error() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    const ROUNDS: u64 = 30;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for k in 0..ROUNDS {
                        let stream = format!("agg-{k}");
                        match store.read_stream(&stream, 1, Direction::Forward) {
                            Ok(it) => {
                                let mut last = 0;
                                for e in it {
                                    match e {
                                        Ok(e) => {
                                            assert!(e.version() > last, "versions increase");
                                            last = e.version();
                                        }
                                        Err(Error::StreamDeleted { .. }) => break,
                                        Err(e) => panic!("reader {r}: {e}"),
                                    }
                                }
                            }
                            Err(Error::StreamNotFound { .. } | Error::StreamDeleted { .. }) => {}
                            Err(e) => panic!("reader {r}: {e}"),
                        }
                    }
                    for e in store.read_all(Position::START, Direction::Forward).unwrap() {
                        e.unwrap_or_else(|e| panic!("reader {r}: read_all: {e}"));
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for k in 0..ROUNDS {
        let stream = format!("agg-{k}");
        for i in 0..40 {
            store
                .append(&stream, ExpectedVersion::Any, [big(i)])
                .unwrap();
        }
        store
            .snapshot_stream(&stream, EventData::new("S", k.to_le_bytes().to_vec()))
            .unwrap();
        for i in 0..20 {
            store
                .append(&stream, ExpectedVersion::Any, [big(i)])
                .unwrap();
        }
        if k % 2 == 0 {
            store.delete_stream(&stream).unwrap();
        } else {
            store
                .snapshot_stream(&stream, EventData::new("S2", vec![1]))
                .unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // Only the odd streams remain, each as its second snapshot.
    let all = all_positions(&store);
    assert_eq!(all.len(), (ROUNDS / 2) as usize);
}

/// An I/O error (EIO, ENOSPC, a short write) at every call of a snapshot and a delete: the
/// operation fails with a clear error (the store is poisoned once anything was written), and
/// after reopening the stream is wholly old or wholly new.
#[test]
fn an_io_error_at_every_call_of_a_rewrite_leaves_the_stream_old_or_new() {
    let path = Path::new("/sim/store");
    for (kind, options) in [
        (std::io::ErrorKind::Other, small_segments()),
        (std::io::ErrorKind::StorageFull, small_segments()),
        (std::io::ErrorKind::WriteZero, small_segments()),
        (std::io::ErrorKind::Other, packed()),
        (std::io::ErrorKind::StorageFull, packed()),
    ] {
        let ops: &[&str] = if options.pack_stream_bytes == packed().pack_stream_bytes {
            &["delete"]
        } else {
            &["snapshot", "delete", "truncate"]
        };
        for &op in ops {
            let mut call = 0u64;
            loop {
                call += 1;
                let sim = SimBackend::new(call);
                let (store, old_target, bystander) = target_and_bystander(&sim, &options);
                sim.fail_call_after(call, kind);
                let result = operate(&store, op);
                let fired = sim.faults_injected() > 0;
                sim.clear_fault();
                drop(store);
                let what = format!(
                    "{kind:?} {op} at call {call} (packed {})",
                    options.pack_stream_bytes
                );
                if fired {
                    assert!(result.is_err(), "{what}: a failed call went unnoticed");
                }
                let store = Store::open_with_backend(path, options.clone(), Arc::new(sim))
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                check_old_or_new(&store, op, result.is_ok(), &old_target, &bystander, &what);
                if !fired {
                    break;
                }
            }
        }
    }
}

/// Subscribers and lifecycle operations: a subscriber from the origin of a snapshotted stream
/// starts at the snapshot; a stream subscriber learns that its stream was deleted instead of
/// waiting forever; an all-streams subscriber skips the removed events.
#[test]
fn subscribers_see_snapshots_and_deletes() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    for i in 0..5 {
        store
            .append("cart", ExpectedVersion::Any, [event(i)])
            .unwrap();
        store
            .append("other", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    let mut live = store.subscribe_stream("cart", Start::Origin).unwrap();
    let mut all = store.subscribe_all(Start::Origin, Filter::all()).unwrap();
    for v in 1..=5 {
        assert_eq!(live.recv().unwrap().version(), v);
    }
    store
        .snapshot_stream("cart", EventData::new("S", b"five".to_vec()))
        .unwrap();
    let mut from_origin = store.subscribe_stream("cart", Start::Origin).unwrap();
    let first = from_origin.recv().unwrap();
    assert_eq!(
        (first.version(), first.snapshot_of().map(|s| s.0)),
        (5, Some(5))
    );
    store
        .append("cart", ExpectedVersion::Exact(5), [event(6)])
        .unwrap();
    assert_eq!(live.recv().unwrap().version(), 6);
    assert_eq!(from_origin.recv().unwrap().version(), 6);
    store.delete_stream("cart").unwrap();
    assert!(matches!(live.recv(), Err(Error::StreamDeleted { .. })));
    // All streams: the five events of `other`, then nothing of `cart` but what remains
    // nowhere: its events, its snapshot and the event after it were all deleted.
    let mut seen = Vec::new();
    while let Some(e) = all.try_recv().unwrap() {
        seen.push(e.stream_id().to_string());
    }
    assert_eq!(seen, vec!["other"; 5]);
}

/// The child of `lifecycle_operations_survive_kill_9`: makes streams and snapshots, deletes,
/// closes or truncates each, printing `START <i>` before and `DONE <i>` after each acknowledged operation.
#[test]
#[ignore = "helper run in a child process by lifecycle_operations_survive_kill_9"]
fn lifecycle_child() {
    use std::io::Write;
    let dir = std::env::var("STREAMLOG_LIFE_DIR").unwrap();
    let first: u64 = std::env::var("STREAMLOG_LIFE_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    // Small events keep each stream in a pack (segment-format.md §19); big ones give it files
    // of its own.
    let small = std::env::var_os("STREAMLOG_LIFE_SMALL").is_some();
    let store = Store::open_with(&dir, small_segments()).unwrap();
    let mut out = std::io::stdout();
    for i in first.. {
        let stream = format!("life-{i}");
        for k in 0..20 {
            let e = if small { event(k) } else { big(k) };
            store.append(&stream, ExpectedVersion::Any, [e]).unwrap();
        }
        writeln!(out, "START {i}").unwrap();
        out.flush().unwrap();
        match i % 4 {
            0 => {
                store
                    .snapshot_stream(&stream, EventData::new("S", i.to_le_bytes().to_vec()))
                    .unwrap();
            }
            1 => store.delete_stream(&stream).unwrap(),
            2 => store.close_stream(&stream).unwrap(),
            _ => store.truncate_before(&stream, 10).unwrap(),
        }
        writeln!(out, "DONE {i}").unwrap();
        out.flush().unwrap();
    }
}

/// After a `lifecycle_child` died: each stream it worked on is wholly in its old state or its
/// new one, the new one when the operation was acknowledged; every event reads.
fn check_lifecycle_children(
    store: &Store,
    streams: std::ops::RangeInclusive<u64>,
    done: &[u64],
    what: &str,
) {
    for i in streams {
        let stream = format!("life-{i}");
        let acknowledged = done.contains(&i);
        let view = stream_view(store, &stream);
        let new_state = match i % 4 {
            0 => view
                .as_ref()
                .is_ok_and(|v| v.len() == 1 && v[0].1 == i.to_le_bytes().to_vec()),
            1 => view.as_ref().is_err_and(|e| e.contains("deleted")),
            3 => view
                .as_ref()
                .is_ok_and(|v| v.first().is_some_and(|e| e.0 == 10)),
            _ => {
                view.as_ref().is_ok_and(|v| v.len() >= 20)
                    && matches!(
                        store.append(&stream, ExpectedVersion::Any, [event(1)]),
                        Err(Error::StreamClosed { .. })
                    )
            }
        };
        if acknowledged {
            assert!(new_state, "{what}: acknowledged operation on {stream} lost");
        } else if !new_state {
            // The old state: the stream reads whole.
            view.unwrap_or_else(|e| panic!("{what}: {stream}: {e}"));
        }
    }
    for e in store.read_all(Position::START, Direction::Forward).unwrap() {
        e.unwrap_or_else(|e| panic!("{what}: read_all: {e}"));
    }
}

/// A process killed at each named point of a rewrite (`engine/killpoint.rs`,
/// `REWRITE_POINTS`), the n-th time, for n = 1, 2, 3 (a snapshot, a delete, then the next
/// rewrite): after reopening, every stream is wholly old or wholly new, acknowledged operations
/// hold, a deleted stream keeps no replaced segment once used, and the store goes on. Needs
/// `--features kill-points`.
#[cfg(feature = "kill-points")]
#[test]
fn kill_at_rewrite_points() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let mut next = 0u64;
    let mut done = Vec::new();
    let mut kills = 0;
    for (point, what) in streamlog::killpoint::REWRITE_POINTS {
        // A delete leaves its tombstone in the pack only for a stream wholly in one.
        let small = point == "pack-delete-synced";
        for n in 1..=3 {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["--ignored", "--exact", "lifecycle_child", "--nocapture"])
                .env("STREAMLOG_LIFE_DIR", &dir)
                .env("STREAMLOG_LIFE_FIRST", next.to_string())
                .env("STREAMLOG_KILL_AT", format!("{point}:{n}"))
                .env_remove("STREAMLOG_LIFE_SMALL")
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if small {
                command.env("STREAMLOG_LIFE_SMALL", "1");
            }
            let mut child = command.spawn().unwrap();
            let mut started = None;
            for line in BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.strip_prefix("START ") {
                    started = Some(i.parse::<u64>().unwrap());
                } else if let Some(i) = line.strip_prefix("DONE ") {
                    done.push(i.parse::<u64>().unwrap());
                }
            }
            let status = child.wait().unwrap();
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{point}:{n} ({what}) was never reached: {status}"
            );
            kills += 1;
            let store = Store::open_with(&dir, small_segments()).unwrap();
            let last = started.unwrap_or(next);
            check_lifecycle_children(&store, next..=last, &done, &format!("{point}:{n}"));
            let victim = format!("life-{last}");
            if small {
                // Killed once its tombstone was durable, before its `REMOVALS` record was
                // written: deleted, and recovery wrote the record, so that `read_all` skips
                // the stream's events, across reopens.
                assert_eq!(last % 4, 1, "{point}:{n}");
                drop(store);
                for _ in 0..2 {
                    let store = Store::open_with(&dir, small_segments()).unwrap();
                    assert!(
                        matches!(
                            store.read_stream(&victim, 1, Direction::Forward),
                            Err(Error::StreamDeleted { .. })
                        ),
                        "{point}:{n}"
                    );
                    assert!(
                        all(&store).iter().all(|e| e.0 != victim),
                        "{point}:{n}: read_all yields events of deleted {victim}"
                    );
                }
                next = (last + 4) / 4 * 4;
                continue;
            }
            // A deleted stream: once used, none of its replaced segments remains.
            if last % 4 == 1 && store.read_stream(&victim, 1, Direction::Forward).is_err() {
                let _ = store.append(&victim, ExpectedVersion::Any, [event(2)]);
                let seg1 = segment_path_of(&dir, &victim, 1);
                assert!(!seg1.exists(), "{point}:{n}: {} remains", seg1.display());
            }
            drop(store);
            // The next child starts on a fresh multiple of 4 (a snapshot first).
            next = (last + 4) / 4 * 4;
        }
    }
    println!(
        "{kills} kills inside rewrites, {} acknowledged operations",
        done.len()
    );
}

/// kill -9 of a process in the middle of snapshots, deletes and closes: every acknowledged
/// operation holds after reopening, the one in flight left its stream wholly old or wholly
/// new, and every stream reads without error.
#[test]
fn lifecycle_operations_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let mut next = 0u64;
    let mut done = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for cycle in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "lifecycle_child", "--nocapture"])
            .env("STREAMLOG_LIFE_DIR", &dir)
            .env("STREAMLOG_LIFE_FIRST", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 3 + rng % 12;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut started = None;
        let mut count = 0;
        while count < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(i) = line.strip_prefix("START ") {
                started = Some(i.parse::<u64>().unwrap());
            } else if let Some(i) = line.strip_prefix("DONE ") {
                done.push(i.parse::<u64>().unwrap());
                count += 1;
            }
        }
        child.kill().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("START ") {
                started = Some(i.parse::<u64>().unwrap());
            } else if let Some(i) = line.strip_prefix("DONE ") {
                done.push(i.parse::<u64>().unwrap());
            }
        }
        child.wait().unwrap();
        let store = Store::open_with(&dir, small_segments()).unwrap();
        let last = started.unwrap_or(next);
        check_lifecycle_children(&store, next..=last, &done, &format!("cycle {cycle}"));
        // The child may have died while appending to the stream after the last one it
        // started: the next child starts past it.
        next = last + 2;
    }
    println!("4 kills, {} acknowledged operations verified", done.len());
    assert!(!done.is_empty());
}

#[test]
fn truncate_before_hides_the_events_before_and_frees_whole_segments() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    // A stream in one segment.
    for i in 0..10 {
        store
            .append("small", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    // A stream over four segments, interleaved with another.
    let mut positions = Vec::new();
    for i in 0..60 {
        positions.push(
            store
                .append("large", ExpectedVersion::Any, [big(i)])
                .unwrap()
                .first_position
                .get(),
        );
        store
            .append("other", ExpectedVersion::Any, [event(i)])
            .unwrap();
    }
    store.truncate_before("small", 5).unwrap();
    assert_eq!(versions(&store, "small"), (5..=10).collect::<Vec<_>>());
    let before = folder_bytes(root.path());
    store.truncate_before("large", 50).unwrap();
    let after = folder_bytes(root.path());
    assert!(
        before - after >= 150_000,
        "whole segments before version 50 are freed: {before} -> {after}"
    );
    let check = |store: &Store| {
        assert_eq!(versions(store, "small"), (5..=10).collect::<Vec<_>>());
        assert_eq!(versions(store, "large"), (50..=60).collect::<Vec<_>>());
        let from_10: Vec<u64> = store
            .read_stream("large", 10, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().version())
            .collect();
        assert_eq!(from_10, (50..=60).collect::<Vec<_>>());
        let backward: Vec<u64> = store
            .read_stream("large", u64::MAX, Direction::Backward)
            .unwrap()
            .map(|e| e.unwrap().version())
            .collect();
        assert_eq!(backward, (50..=60).rev().collect::<Vec<_>>());
        let all = all_positions(store);
        let large: Vec<u64> = all
            .iter()
            .filter(|(s, _)| s == "large")
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(large, positions[49..].to_vec());
        assert_eq!(all.iter().filter(|(s, _)| s == "small").count(), 6);
        assert_eq!(all.iter().filter(|(s, _)| s == "other").count(), 60);
    };
    check(&store);
    // Truncating less than before does nothing.
    store.truncate_before("large", 20).unwrap();
    check(&store);
    drop(store);
    // After a reopen, without anything in memory, the same.
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    check(&store);
    store
        .append("large", ExpectedVersion::Exact(60), [big(61)])
        .unwrap();
    assert_eq!(versions(&store, "large"), (50..=61).collect::<Vec<_>>());
    // Past the end: every event goes, the stream stays at its version.
    store.truncate_before("small", 100).unwrap();
    assert!(versions(&store, "small").is_empty());
    assert_eq!(store.stream_version("small").unwrap(), Some(10));
    store
        .append("small", ExpectedVersion::Exact(10), [event(11)])
        .unwrap();
    assert_eq!(versions(&store, "small"), vec![11]);
    // Then a snapshot and a delete of a truncated stream.
    store
        .snapshot_stream("large", EventData::new("S", b"s".to_vec()))
        .unwrap();
    assert_eq!(versions(&store, "large"), vec![61]);
    store.delete_stream("small").unwrap();
    drop(store);
    let store = Store::open_with(root.path(), small_segments()).unwrap();
    assert_eq!(versions(&store, "large"), vec![61]);
    assert!(matches!(
        store.truncate_before("small", 1),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.truncate_before("missing", 1),
        Err(Error::StreamNotFound { .. })
    ));
}

/// The index bytes of a store folder.
fn index_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Issue 6: the index gives back the space of removed events. 50 streams of 10 interleaved
/// events over 64-entry index files; 45 deleted, one snapshotted, one truncated; compaction
/// rewrites the index files the checkpoint covers, and every read is what it was.
#[test]
fn index_compaction_gives_back_the_space_of_removed_events() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let options = Options {
        index_entries_per_file: 64,
        ..small_segments()
    };
    let store = Store::open_with(dir, options.clone()).unwrap();
    for i in 0..10 {
        for s in 0..50 {
            store
                .append(&format!("s-{s}"), ExpectedVersion::Any, [event(i)])
                .unwrap();
        }
    }
    for s in 0..45 {
        store.delete_stream(&format!("s-{s}")).unwrap();
    }
    store
        .snapshot_stream("s-45", EventData::new("Snap", b"state".to_vec()))
        .unwrap();
    store.truncate_before("s-46", 6).unwrap();
    let before = all_positions(&store);
    let streams: Vec<Vec<(u64, Vec<u8>)>> = (45..50)
        .map(|s| stream_view(&store, &format!("s-{s}")).unwrap())
        .collect();
    let bytes_before = index_bytes(dir);
    let report = store.compact_index().unwrap();
    assert!(report.files >= 6, "{report:?}");
    assert!(report.entries_removed >= 400, "{report:?}");
    let bytes_after = index_bytes(dir);
    assert_eq!(
        bytes_before - bytes_after,
        report.bytes_before - report.bytes_after
    );
    assert!(
        bytes_after * 3 < bytes_before,
        "index {bytes_before} -> {bytes_after} bytes"
    );
    let check = |store: &Store, what: &str| {
        assert_eq!(all_positions(store), before, "{what}");
        for (s, view) in (45..50).zip(&streams) {
            assert_eq!(
                &stream_view(store, &format!("s-{s}")).unwrap(),
                view,
                "{what}"
            );
        }
        assert!(matches!(
            store.read_stream("s-3", 1, Direction::Forward),
            Err(Error::StreamDeleted { .. })
        ));
    };
    check(&store, "compacted");
    // Nothing more to do.
    assert_eq!(store.compact_index().unwrap().files, 0);
    drop(store);
    let store = Store::open_with(dir, options.clone()).unwrap();
    check(&store, "reopened");
    // The store goes on: appends to the survivors (their tails are confirmed through the
    // compacted files), and a later compaction of what that leaves.
    for s in 45..50 {
        store
            .append(&format!("s-{s}"), ExpectedVersion::Any, [event(99)])
            .unwrap();
    }
    store.delete_stream("s-49").unwrap();
    drop(store);
    let store = Store::open_with(dir, options).unwrap();
    assert_eq!(stream_view(&store, "s-48").unwrap().len(), 11);
    store.compact_index().unwrap();
    assert_eq!(
        all_positions(&store)
            .iter()
            .filter(|(s, _)| s == "s-49")
            .count(),
        0
    );
    drop(store);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_segment-dump"))
        .args(["--summary", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("compacted:"), "{text}");
}

/// A power cut at every I/O call of an index compaction, in both sync modes: after the reboot
/// every read is what it was, and compaction completes.
#[test]
fn index_compaction_is_safe_under_power_loss_at_every_call() {
    let path = Path::new("/sim/store");
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        let options = Options {
            sync,
            index_entries_per_file: 64,
            ..small_segments()
        };
        let mut cut = 0u64;
        loop {
            cut += 1;
            let sim = SimBackend::new(cut * 5 + 1);
            let store =
                Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())).unwrap();
            for i in 0..4 {
                for s in 0..40 {
                    store
                        .append(&format!("s-{s}"), ExpectedVersion::Any, [event(i)])
                        .unwrap();
                }
            }
            for s in 0..36 {
                store.delete_stream(&format!("s-{s}")).unwrap();
            }
            drop(store);
            // Reopened, the checkpoint covers everything (in `fdatasync` mode it lags).
            let store =
                Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())).unwrap();
            let before = all_positions(&store);
            sim.cut_power_after(cut);
            let done = store.compact_index().is_ok();
            drop(store);
            let disk = sim.reboot();
            let what = format!("{sync:?} cut at call {cut}");
            let store = Store::open_with_backend(path, options.clone(), Arc::new(disk))
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert_eq!(all_positions(&store), before, "{what}");
            let again = store.compact_index().unwrap();
            assert_eq!(all_positions(&store), before, "{what}: compacted");
            store
                .append("s-39", ExpectedVersion::Any, [event(7)])
                .unwrap();
            if done {
                assert_eq!(again.files, 0, "{what}: done means done");
                break;
            }
        }
        println!("{sync:?}: {cut} cut points");
    }
}

/// Once snapshots and deletes have removed enough events (65,536), the index is compacted in
/// the background, and closing the store waits for it.
#[test]
fn the_index_is_compacted_in_the_background_after_enough_removals() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let options = Options {
        index_entries_per_file: 4096,
        ..small_segments()
    };
    let store = Store::open_with(dir, options.clone()).unwrap();
    let streams = 720u64;
    for s in 0..streams {
        store
            .append(
                &format!("s-{s}"),
                ExpectedVersion::Any,
                (0..100).map(|i| EventData::new("E", vec![(i % 251) as u8; 8])),
            )
            .unwrap();
    }
    let before = index_bytes(dir);
    // 660 x 100 = 66,000 removed events: past the threshold.
    for s in 0..660 {
        store.delete_stream(&format!("s-{s}")).unwrap();
    }
    let survivors: Vec<(String, u64)> = all_positions(&store);
    assert_eq!(survivors.len(), 60 * 100);
    drop(store);
    let after = index_bytes(dir);
    assert!(after * 2 < before, "index {before} -> {after} bytes");
    let store = Store::open_with(dir, options).unwrap();
    assert_eq!(all_positions(&store), survivors);
    assert_eq!(stream_view(&store, "s-700").unwrap().len(), 100);
}

/// (position, stream, version) of every event `read_all` yields.
fn all_events(store: &Store, direction: Direction) -> Vec<(u64, String, u64)> {
    let from = match direction {
        Direction::Forward => Position::START,
        Direction::Backward => Position::END,
    };
    store
        .read_all(from, direction)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.position().get(), e.stream_id().to_string(), e.version())
        })
        .collect()
}

/// `read_all` over hundreds of small interleaved streams reads a window's segments from several
/// threads at once; deleted, snapshotted and truncated streams among them, and a stream large
/// enough to be mapped, must come out exactly as each stream's own read says, in both
/// directions, whether one window holds them all or the byte budget cuts them into many.
#[test]
fn read_all_over_many_small_rewritten_streams_agrees_with_every_stream() {
    const STREAMS: u64 = 700;
    let root = tempfile::tempdir().unwrap();
    let options = Options {
        event_bytes_max: 128 << 10,
        // Files of 256 positions: the index compaction below rewrites several, and a window
        // spans compacted and dense files.
        index_entries_per_file: 256,
        ..Options::default()
    };
    let names: Vec<String> = (0..STREAMS).map(|i| format!("small-{i}")).collect();
    {
        let store = Store::open_with(root.path(), options.clone()).unwrap();
        for round in 0..3u64 {
            for (i, name) in names.iter().enumerate() {
                store
                    .append(
                        name,
                        ExpectedVersion::Exact(round),
                        [EventData::new(
                            "E",
                            vec![(round * STREAMS + i as u64) as u8; 1500],
                        )],
                    )
                    .unwrap();
                if i % 100 == 0 {
                    // Past the size `read_all` reads whole: this one is mapped.
                    store
                        .append(
                            "large",
                            ExpectedVersion::Any,
                            [EventData::new("L", vec![7; 70_000])],
                        )
                        .unwrap();
                }
            }
        }
        for (i, name) in names.iter().enumerate() {
            // Most events removed: index files qualify for compaction (half of theirs).
            match i % 7 {
                0 | 3 | 4 | 5 => store.delete_stream(name).unwrap(),
                1 => {
                    store
                        .snapshot_stream(name, EventData::new("Snap", name.clone().into_bytes()))
                        .unwrap();
                }
                2 => store.truncate_before(name, 3).unwrap(),
                _ => {}
            }
        }
    }
    // Each stream's own read, by a store handle of its own: the handle that reads all must
    // not have the streams' segments in its cache already.
    let mut expected: Vec<(u64, String, u64)> = Vec::new();
    {
        let store = Store::open_with(root.path(), options.clone()).unwrap();
        for name in names.iter().map(String::as_str).chain(["large"]) {
            match store.read_stream(name, 1, Direction::Forward) {
                Ok(events) => {
                    for e in events {
                        let e = e.unwrap();
                        expected.push((e.position().get(), name.to_string(), e.version()));
                    }
                }
                Err(Error::StreamDeleted { .. }) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 500, "{}", expected.len());
    // The default window holds all of it; the smallest budget cuts it into many windows, whose
    // number of positions adapts to it.
    let check = |stage: &str| {
        for window_bytes in [
            options.read_all_window_bytes,
            streamlog::limits::READ_ALL_WINDOW_BYTES_MIN,
        ] {
            for direction in [Direction::Forward, Direction::Backward] {
                let options = Options {
                    read_all_window_bytes: window_bytes,
                    ..options.clone()
                };
                let store = Store::open_with(root.path(), options).unwrap();
                let mut all = all_events(&store, direction);
                if direction == Direction::Backward {
                    all.reverse();
                }
                assert_eq!(
                    all, expected,
                    "{stage}: {direction:?}, window of {window_bytes} bytes"
                );
            }
        }
        // From positions within runs of removed events, and at both ends.
        let store = Store::open_with(root.path(), options.clone()).unwrap();
        let head = expected.last().unwrap().0;
        let read_from = |from: u64, direction| -> Vec<u64> {
            store
                .read_all(Position(from), direction)
                .unwrap()
                .map(|e| e.unwrap().position().get())
                .collect()
        };
        for from in (1..=head + 1).step_by(97).chain([head, head + 1]) {
            let live = expected.iter().map(|(p, ..)| *p);
            let forward: Vec<u64> = live.clone().filter(|p| *p >= from).collect();
            let backward: Vec<u64> = live.rev().filter(|p| *p <= from).collect();
            assert_eq!(
                read_from(from, Direction::Forward),
                forward,
                "{stage}: from {from}"
            );
            assert_eq!(
                read_from(from, Direction::Backward),
                backward,
                "{stage}: backward from {from}"
            );
        }
    };
    // The background compaction may have compacted some index files already (it runs once
    // half a file's events are removed).
    check("as written");
    // Compacted: its files hold only live entries, and a forward read skips the positions
    // between them as runs.
    Store::open_with(root.path(), options.clone())
        .unwrap()
        .compact_index()
        .unwrap();
    let compacted = std::fs::read_dir(root.path().join("index"))
        .unwrap()
        .filter(|f| {
            // Byte 12 of an index file's header: its entries' size, 32 once compacted.
            std::fs::read(f.as_ref().unwrap().path()).unwrap()[12] == 32
        })
        .count();
    assert!(compacted >= 3, "{compacted} compacted index files");
    check("compacted index");
    // Several iterators at once share the store's helper threads; each still reads it all.
    let store = Store::open_with(root.path(), options).unwrap();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| all_events(&store, Direction::Forward)))
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), expected, "concurrent iterators");
        }
    });
}

/// What a stream answers readers: its version and its events both ways.
fn answers(store: &Store, stream: &str) -> String {
    let version = store.stream_version(stream).map_err(|e| format!("{e:?}"));
    let read = |direction| -> Result<Vec<(u64, Vec<u8>)>, String> {
        let from = if direction == Direction::Forward {
            1
        } else {
            u64::MAX
        };
        store
            .read_stream(stream, from, direction)
            .map_err(|e| format!("{e:?}"))?
            .map(|e| {
                e.map(|e| (e.version(), e.data().to_vec()))
                    .map_err(|e| format!("{e:?}"))
            })
            .collect()
    };
    format!(
        "{version:?} {:?} {:?}",
        read(Direction::Forward),
        read(Direction::Backward)
    )
}

/// 40 events of 4,000 bytes, in appends of 10 (an append fits one segment).
fn append_40_big(store: &Store, stream: &str) {
    for first in (0..40).step_by(10) {
        store
            .append(
                stream,
                ExpectedVersion::Exact(first),
                (first..first + 10).map(big),
            )
            .unwrap();
    }
}

/// Streams that nobody holds are kept encoded once the catalog has loaded enough others
/// (`SHARED_STREAMS_SWEEP_MIN`, engine/idle.rs): asked for again, each answers as it did, in
/// every lifecycle state, packed or in files of its own, and takes its next append.
#[test]
fn idle_streams_answer_as_they_did_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let fillers = streamlog::limits::SHARED_STREAMS_SWEEP_MIN + 500;
    let names = [
        "packed",
        "files",
        "closed",
        "deleted",
        "snapshot",
        "truncated",
    ];
    {
        let store = Store::open_with(dir.path(), small_segments()).unwrap();
        store
            .append("packed", ExpectedVersion::NoStream, (0..3).map(event))
            .unwrap();
        append_40_big(&store, "files");
        store
            .append("closed", ExpectedVersion::NoStream, (0..2).map(event))
            .unwrap();
        store.close_stream("closed").unwrap();
        store
            .append("deleted", ExpectedVersion::NoStream, (0..2).map(event))
            .unwrap();
        store.delete_stream("deleted").unwrap();
        store
            .append("snapshot", ExpectedVersion::NoStream, (0..5).map(event))
            .unwrap();
        store
            .snapshot_stream("snapshot", EventData::new("Snap", b"s".to_vec()))
            .unwrap();
        store
            .append("snapshot", ExpectedVersion::Exact(5), [event(6)])
            .unwrap();
        append_40_big(&store, "truncated");
        store.truncate_before("truncated", 20).unwrap();
        let all: Vec<usize> = (0..fillers).collect();
        for chunk in all.chunks(500) {
            store
                .append_multi(chunk.iter().map(|i| {
                    streamlog::Append::new(
                        format!("filler-{i}"),
                        ExpectedVersion::NoStream,
                        [event(*i as u64)],
                    )
                }))
                .unwrap();
        }
    }
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let before: Vec<String> = names.iter().map(|s| answers(&store, s)).collect();
    let order = all_positions(&store);
    // Loading the fillers sweeps the catalog: every stream above is left to it alone.
    for i in 0..fillers {
        assert_eq!(
            store.stream_version(&format!("filler-{i}")).unwrap(),
            Some(1)
        );
    }
    let after: Vec<String> = names.iter().map(|s| answers(&store, s)).collect();
    assert_eq!(before, after);
    assert!(before[3].contains("StreamDeleted"), "{}", before[3]);
    assert_eq!(all_positions(&store), order);
    // Appends go on from the versions the encoded states kept.
    for i in (0..fillers).step_by(97) {
        let stream = format!("filler-{i}");
        assert_eq!(store.stream_version(&stream).unwrap(), Some(1));
        store
            .append(&stream, ExpectedVersion::Exact(1), [event(2)])
            .unwrap();
    }
    // The writer's first look at these streams: through their encoded states.
    assert!(matches!(
        store.append("closed", ExpectedVersion::Exact(2), [event(9)]),
        Err(Error::StreamClosed { .. })
    ));
    assert!(matches!(
        store.append("deleted", ExpectedVersion::Any, [event(9)]),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.append("snapshot", ExpectedVersion::Exact(5), [event(9)]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    store
        .append("packed", ExpectedVersion::Exact(3), [event(4)])
        .unwrap();
    store
        .append("files", ExpectedVersion::Exact(40), [big(41)])
        .unwrap();
    store
        .append("truncated", ExpectedVersion::Exact(40), [big(41)])
        .unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert_eq!(versions(&store, "packed"), vec![1, 2, 3, 4]);
    assert_eq!(versions(&store, "files"), (1..=41).collect::<Vec<_>>());
    assert_eq!(versions(&store, "truncated"), (20..=41).collect::<Vec<_>>());
    assert_eq!(versions(&store, "snapshot"), vec![5, 6]);
    assert_eq!(store.stream_version("filler-97").unwrap(), Some(2));
}
