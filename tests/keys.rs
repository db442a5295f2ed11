//! Keyed events, de-duplication and the surface (segment-format.md §15): the surface read
//! through the keys index always equals what scanning the stream gives, through snapshots,
//! truncations, deletes, a damaged index and power cuts at every I/O call.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{Append, Direction, Error, EventData, ExpectedVersion, Options, Store, SyncMode};

fn keyed(key: &str, data: &str) -> EventData {
    EventData::new("Set", data.as_bytes().to_vec()).key(key.as_bytes().to_vec())
}

/// The surface as (key, version, data), in version order.
fn surface(store: &Store, stream: &str) -> Vec<(String, u64, String)> {
    store
        .surface(stream)
        .unwrap()
        .iter()
        .map(|e| {
            (
                String::from_utf8(e.key().to_vec()).unwrap(),
                e.version(),
                String::from_utf8(e.data().to_vec()).unwrap(),
            )
        })
        .collect()
}

/// The surface computed by reading the whole stream: what the index must always agree with.
fn surface_by_scan(store: &Store, stream: &str) -> Vec<(String, u64, String)> {
    let mut newest = BTreeMap::new();
    for e in store.read_stream(stream, 1, Direction::Forward).unwrap() {
        let e = e.unwrap();
        if !e.key().is_empty() {
            newest.insert(
                String::from_utf8(e.key().to_vec()).unwrap(),
                (e.version(), String::from_utf8(e.data().to_vec()).unwrap()),
            );
        }
    }
    let mut out: Vec<_> = newest.into_iter().map(|(k, (v, d))| (k, v, d)).collect();
    out.sort_by_key(|e| e.1);
    out
}

fn keys_file(dir: &Path, stream: &str) -> std::path::PathBuf {
    segment_path_of(dir, stream, 0).with_file_name(
        segment_path_of(dir, stream, 0)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .0
            .to_string()
            + ".keys",
    )
}

#[test]
fn the_surface_is_the_newest_event_of_each_key_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    // 300 events over 12 keys and some unkeyed ones, spanning several segments.
    for i in 0..300u64 {
        let e = if i % 5 == 4 {
            EventData::new("Note", vec![b'x'; 700])
        } else {
            keyed(
                &format!("k{}", (i * 7) % 12),
                &format!("{i}:{}", "y".repeat(600)),
            )
        };
        store.append("cart", ExpectedVersion::Any, [e]).unwrap();
    }
    store
        .append("plain", ExpectedVersion::Any, [event(1)])
        .unwrap();
    assert!(segment_path_of(dir.path(), "cart", 2).exists());
    let want = surface_by_scan(&store, "cart");
    assert_eq!(want.len(), 12);
    assert_eq!(surface(&store, "cart"), want);
    assert!(store.surface("plain").unwrap().is_empty());
    assert!(keys_file(dir.path(), "cart").exists());
    assert!(!keys_file(dir.path(), "plain").exists(), "no keys, no file");
    assert!(matches!(
        store.surface("missing"),
        Err(Error::StreamNotFound { .. })
    ));
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert_eq!(surface(&store, "cart"), want);
    store
        .append("cart", ExpectedVersion::Any, [keyed("k3", "after reopen")])
        .unwrap();
    assert_eq!(surface(&store, "cart"), surface_by_scan(&store, "cart"));
    assert_eq!(surface(&store, "cart").last().unwrap().2, "after reopen");
}

#[test]
fn deduplication_drops_events_equal_to_the_newest_of_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = store
        .append_with(Append::new("s", ExpectedVersion::Any, [keyed("a", "1")]).deduplicate())
        .unwrap();
    assert_eq!(first.duplicates, 0);
    let head = store.head_position();
    // The same content again: nothing written, the existing event's version returned.
    let again = store
        .append_with(Append::new("s", ExpectedVersion::Any, [keyed("a", "1")]).deduplicate())
        .unwrap();
    assert_eq!(
        (
            again.first_version,
            again.changeset,
            again.first_position,
            again.duplicates
        ),
        (
            first.first_version,
            first.changeset,
            first.first_position,
            1
        )
    );
    assert_eq!(store.head_position(), head);
    // Metadata is content too; without the flag nothing is dropped; another stream is another
    // surface.
    let meta = store
        .append_with(
            Append::new(
                "s",
                ExpectedVersion::Any,
                [keyed("a", "1").metadata(b"m".to_vec())],
            )
            .deduplicate(),
        )
        .unwrap();
    assert_eq!(meta.duplicates, 0);
    let plain = store
        .append(
            "s",
            ExpectedVersion::Any,
            [keyed("a", "1").metadata(b"m".to_vec())],
        )
        .unwrap();
    assert_eq!(plain.first_version, meta.first_version + 1);
    let other = store
        .append_with(Append::new("t", ExpectedVersion::Any, [keyed("a", "1")]).deduplicate())
        .unwrap();
    assert_eq!(other.duplicates, 0);
    // Within one append: a repeat of an earlier event of the append is dropped, a change back
    // is kept; versions stay contiguous.
    let mixed = store
        .append_with(
            Append::new(
                "s",
                ExpectedVersion::Any,
                [
                    keyed("a", "1").metadata(b"m".to_vec()), // equal to the newest: dropped
                    keyed("b", "x"),
                    keyed("b", "x"), // equal to the one before: dropped
                    keyed("b", "y"),
                    keyed("b", "x"), // differs from the newest ("y"): kept
                    EventData::new("Unkeyed", b"u".to_vec()),
                ],
            )
            .deduplicate(),
        )
        .unwrap();
    assert_eq!(mixed.duplicates, 2);
    assert_eq!(mixed.last_version - mixed.first_version, 3);
    let data: Vec<Vec<u8>> = store
        .read_stream("s", mixed.first_version, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().data().to_vec())
        .collect();
    assert_eq!(
        data,
        vec![b"x".to_vec(), b"y".to_vec(), b"x".to_vec(), b"u".to_vec()]
    );
    assert_eq!(surface(&store, "s"), surface_by_scan(&store, "s"));
    // A retry (the same event ids, after a lost reply) of an append that dropped some events
    // returns the first result, and writes nothing.
    let v = store.stream_version("s").unwrap().unwrap();
    let retried = vec![
        keyed("b", "x").id([1; 16]), // equal to the newest of b: dropped
        keyed("c", "new").id([2; 16]),
    ];
    let first = store
        .append_with(Append::new("s", ExpectedVersion::Exact(v), retried.clone()).deduplicate())
        .unwrap();
    assert_eq!((first.duplicates, first.first_version), (1, v + 1));
    let head = store.head_position();
    let again = store
        .append_with(Append::new("s", ExpectedVersion::Exact(v), retried).deduplicate())
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.head_position(), head);
    // Expected versions are still checked first.
    assert!(matches!(
        store.append_with(
            Append::new("s", ExpectedVersion::Exact(1), [keyed("b", "x")]).deduplicate()
        ),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // In a multi-stream append, a part of duplicates only writes nothing, the others commit.
    let r = store
        .append_multi([
            Append::new("s", ExpectedVersion::Any, [keyed("b", "x")]).deduplicate(),
            Append::new("t", ExpectedVersion::Any, [keyed("c", "1")]).deduplicate(),
        ])
        .unwrap();
    assert_eq!((r[0].duplicates, r[1].duplicates), (1, 0));
    assert_eq!(r[1].first_position.get(), store.head_position().get());
    drop(store);
    // After reopening, the index still knows the newest content of each key.
    let store = Store::open(dir.path()).unwrap();
    let head = store.head_position();
    let r = store
        .append_with(Append::new("s", ExpectedVersion::Any, [keyed("b", "x")]).deduplicate())
        .unwrap();
    assert_eq!(r.duplicates, 1);
    assert_eq!(store.head_position(), head);
}

#[test]
fn snapshots_truncations_and_deletes_keep_the_surface_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    for i in 0..40u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [keyed(&format!("k{}", i % 4), &i.to_string())],
            )
            .unwrap();
    }
    // A truncation: events before it leave the surface.
    store.truncate_before("s", 39).unwrap();
    assert_eq!(
        surface(&store, "s"),
        vec![
            ("k2".into(), 39, "38".into()),
            ("k3".into(), 40, "39".into())
        ]
    );
    // Dedup no longer sees the removed events.
    let r = store
        .append_with(Append::new("s", ExpectedVersion::Any, [keyed("k0", "36")]).deduplicate())
        .unwrap();
    assert_eq!(r.duplicates, 0);
    // An unkeyed snapshot: no keyed event remains, the file goes.
    store
        .snapshot_stream("s", EventData::new("Snap", b"state".to_vec()))
        .unwrap();
    assert!(store.surface("s").unwrap().is_empty());
    assert!(!keys_file(dir.path(), "s").exists());
    store
        .append("s", ExpectedVersion::Any, [keyed("k9", "after")])
        .unwrap();
    assert_eq!(surface(&store, "s"), surface_by_scan(&store, "s"));
    // A keyed snapshot is part of the surface.
    let snap = store
        .snapshot_stream("s", keyed("whole", "snapshot"))
        .unwrap();
    assert_eq!(
        surface(&store, "s"),
        vec![("whole".into(), snap.last_version, "snapshot".into())]
    );
    drop(store);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert_eq!(surface(&store, "s"), surface_by_scan(&store, "s"));
    store.delete_stream("s").unwrap();
    assert!(matches!(
        store.surface("s"),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(!keys_file(dir.path(), "s").exists());
}

#[test]
fn a_damaged_keys_file_is_rebuilt_and_the_surface_stays_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..20u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [keyed(&format!("k{}", i % 3), &i.to_string())],
            )
            .unwrap();
    }
    let want = surface_by_scan(&store, "s");
    drop(store);
    // A flipped bit in the header: the file cannot be trusted.
    flip_bit(&keys_file(dir.path(), "s"), 20, 3);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(surface(&store, "s"), want, "read by scanning the stream");
    // The next keyed append rebuilds it.
    store
        .append("s", ExpectedVersion::Any, [keyed("k1", "new")])
        .unwrap();
    let want = surface_by_scan(&store, "s");
    assert_eq!(surface(&store, "s"), want);
    drop(store);
    // A damaged entry in the middle: the prefix before it is all the file claims, and the
    // record check catches any disagreement; the surface is still right.
    let path = keys_file(dir.path(), "s");
    flip_bit(&path, 64 + 56 + 8 + 5, 0);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(surface(&store, "s"), want);
}

/// A power cut at every I/O call of a workload of keyed appends (with de-duplication), in both
/// sync modes: after the reboot, the surface read through the index equals the one computed by
/// scanning the stream, and de-duplicating the last acknowledged content writes nothing.
#[test]
fn the_surface_survives_power_loss_at_every_call() {
    let path = Path::new("/sim/store");
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        let options = Options {
            sync,
            ..small_segments()
        };
        let mut cut = 0u64;
        loop {
            cut += 1;
            let sim = SimBackend::new(cut * 13 + 1);
            let store =
                Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())).unwrap();
            store
                .append("warm", ExpectedVersion::Any, [keyed("w", "0")])
                .unwrap();
            sim.cut_power_after(cut);
            let mut acknowledged = None;
            let mut finished = true;
            for i in 0..12u64 {
                let stream = format!("s{}", i % 2);
                let e = keyed(&format!("k{}", i % 3), &format!("{}", i / 2));
                match store
                    .append_with(Append::new(&stream, ExpectedVersion::Any, [e]).deduplicate())
                {
                    Ok(_) => acknowledged = Some((stream, i)),
                    Err(_) => {
                        finished = false;
                        break;
                    }
                }
            }
            drop(store);
            let disk = sim.reboot();
            let what = format!("{sync:?} cut at call {cut}");
            let store = Store::open_with_backend(path, options.clone(), Arc::new(disk))
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            for stream in ["warm", "s0", "s1"] {
                match store.surface(stream) {
                    Ok(_) => assert_eq!(
                        surface(&store, stream),
                        surface_by_scan(&store, stream),
                        "{what}: {stream}"
                    ),
                    Err(Error::StreamNotFound { .. }) => {}
                    Err(e) => panic!("{what}: {stream}: {e}"),
                }
            }
            if let Some((stream, i)) = acknowledged {
                let head = store.head_position();
                let e = keyed(&format!("k{}", i % 3), &format!("{}", i / 2));
                let r = store
                    .append_with(Append::new(&stream, ExpectedVersion::Any, [e]).deduplicate())
                    .unwrap();
                assert_eq!((r.duplicates, store.head_position()), (1, head), "{what}");
            }
            // The store goes on, and the index with it.
            store
                .append("s0", ExpectedVersion::Any, [keyed("k0", "later")])
                .unwrap();
            assert_eq!(
                surface(&store, "s0"),
                surface_by_scan(&store, "s0"),
                "{what}"
            );
            if finished {
                break;
            }
        }
        println!("{sync:?}: {cut} cut points");
    }
}
