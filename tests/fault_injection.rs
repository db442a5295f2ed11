//! I/O fault injection (fault-matrix rows 5 to 8 and 21): on the simulated disk, the n-th I/O
//! call of a workload fails with EIO or ENOSPC, for every n in turn. The append that meets the
//! fault fails with a clear error; a failed write or sync poisons the handle; nothing
//! acknowledged is lost; and once the fault is gone, reopening works and the store passes its
//! invariants and keeps appending.

mod common;
use common::*;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{Error, EventData, ExpectedVersion, Options, Store, SyncMode};

fn workload(store: &Store, appends: u64, acked: &mut Vec<(String, u64, Vec<u8>)>) -> Option<Error> {
    for i in 0..appends {
        let stream = format!("f-{}", i % 5);
        let data = vec![i as u8; (i as usize * 37) % 900];
        match store.append(
            &stream,
            ExpectedVersion::Any,
            [EventData::new("F", data.clone())],
        ) {
            Ok(r) => acked.push((stream, r.first_position.get(), data)),
            Err(e) => return Some(e),
        }
    }
    None
}

fn check(store: &Store, acked: &[(String, u64, Vec<u8>)], what: &str) {
    check_invariants(store);
    let all = all(store);
    for (stream, position, data) in acked {
        let (s, _, p, d) = all.get(*position as usize - 1).unwrap_or_else(|| {
            panic!(
                "{what}: acknowledged position {position} lost ({} events)",
                all.len()
            )
        });
        assert_eq!((s, p, d), (stream, position, data), "{what}");
    }
}

fn run(sync: SyncMode, kind: ErrorKind, fault_at: u64) -> bool {
    let path = Path::new("/sim/faults");
    let sim = SimBackend::new(fault_at + 1);
    let options = Options {
        sync,
        index_entries_per_file: 64,
        segment_bytes: 64 << 10,
        event_bytes_max: 4096,
        ..Options::default()
    };
    let what = format!("{sync:?} {kind:?} at call {fault_at}");
    let mut acked = Vec::new();
    // The fault may also hit the open itself (creation and recovery): a clean error, then the
    // next open works.
    sim.fail_call_after(fault_at, kind);
    let store = match Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())) {
        Ok(store) => store,
        Err(e) => {
            assert!(
                matches!(e, Error::Io { .. }),
                "{what}: open failed with {e}"
            );
            Store::open_with_backend(path, options.clone(), Arc::new(sim.clone()))
                .unwrap_or_else(|e| panic!("{what}: reopen after a failed open: {e}"))
        }
    };
    let error = workload(&store, 40, &mut acked);
    let fired = sim.faults_injected() > 0;
    sim.clear_fault();
    if let Some(e) = &error {
        assert!(
            matches!(e, Error::Poisoned { .. } | Error::Io { .. }),
            "{what}: {e}"
        );
        if matches!(e, Error::Poisoned { .. }) {
            assert!(
                matches!(
                    store.append(
                        "again",
                        ExpectedVersion::Any,
                        [EventData::new("F", Vec::new())]
                    ),
                    Err(Error::Poisoned { .. })
                ),
                "{what}: no retry after poison"
            );
        }
    }
    // Reads of what was acknowledged keep working on the faulted handle.
    check(&store, &acked, &what);
    drop(store);
    for disk in [sim.clone(), sim.reboot()] {
        let store = Store::open_with_backend(path, options.clone(), Arc::new(disk))
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        check(&store, &acked, &what);
        let mut more = acked.clone();
        assert!(
            workload(&store, 5, &mut more).is_none(),
            "{what}: appends after reopening"
        );
        check(&store, &more, &what);
    }
    fired
}

#[test]
fn every_io_call_of_a_workload_fails_once_in_turn() {
    for sync in [SyncMode::SyncFs, SyncMode::Fdatasync, SyncMode::Journal] {
        // EIO, ENOSPC, and a short write (half of it lands, then ENOSPC).
        for kind in [
            ErrorKind::Other,
            ErrorKind::StorageFull,
            ErrorKind::WriteZero,
        ] {
            let mut fault_at = 0;
            // Walk the calls until the fault no longer fires inside the workload.
            while run(sync, kind, fault_at) {
                fault_at += 1;
                assert!(fault_at < 5_000, "the workload should end");
            }
            assert!(
                fault_at > 100,
                "{sync:?}: the workload makes {fault_at} I/O calls"
            );
        }
    }
}

/// Found by the model property test with faults: an I/O error while recovery verified the
/// unsynced tail was taken for a torn record, and the tail was cut, acknowledged appends with
/// it. Now any I/O error fails the open, and the next open finds everything.
#[test]
fn a_fault_while_recovery_verifies_the_tail_fails_the_open_and_loses_nothing() {
    let path = Path::new("/sim/recovery");
    let options = Options {
        index_entries_per_file: 64,
        ..Options::default()
    };
    for fault_at in 0..80 {
        let sim = SimBackend::new(fault_at + 1);
        let store = Store::open_with_backend(path, options.clone(), Arc::new(sim.clone())).unwrap();
        let mut acked = Vec::new();
        assert!(workload(&store, 3, &mut acked).is_none());
        // The next batch fails at its index write: the checkpoint never claims the three
        // acknowledged appends, so the next open must verify them.
        sim.fail_call_after(2, ErrorKind::Other);
        assert!(workload(&store, 1, &mut acked).is_some());
        drop(store);
        sim.clear_fault();
        sim.fail_call_after(fault_at, ErrorKind::Other);
        let first = Store::open_with_backend(path, options.clone(), Arc::new(sim.clone()));
        if let Err(e) = &first {
            assert!(matches!(e, Error::Io { .. }), "fault at {fault_at}: {e}");
        }
        drop(first);
        sim.clear_fault();
        let store = Store::open_with_backend(path, options.clone(), Arc::new(sim.clone()))
            .unwrap_or_else(|e| panic!("fault at {fault_at}: reopen: {e}"));
        check(
            &store,
            &acked,
            &format!("fault at {fault_at} during recovery"),
        );
    }
}
