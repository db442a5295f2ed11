//! A real store on the simulated disk, closed cleanly or cut off by a power cut with batches
//! only in the journal, damaged by the fuzzer (bytes flipped, files cut), then opened and read
//! in full (small streams too, two of them deleted in their pack): every outcome must be a value
//! or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{Direction, EventData, ExpectedVersion, Options, Position, Store};

fn options() -> Options {
    Options {
        index_entries_per_file: 64,
        segment_bytes: 64 << 10,
        event_bytes_max: 4096,
        ..Options::default()
    }
}

/// The store after 90 appends: closed cleanly, or (`crashed`) cut off by a power cut right
/// after the last acknowledgement, so that its batches are frames in the journal and only part of
/// their writes in place survived: the damage then lands on what recovery replays too.
fn build(crashed: bool) -> SimBackend {
    let sim = SimBackend::new(7);
    let store =
        Store::open_with_backend(Path::new("/f/store"), options(), Arc::new(sim.clone())).unwrap();
    for i in 0..90u64 {
        let events: Vec<EventData> = (0..1 + i % 3)
            .map(|k| EventData::new("T", vec![(i + k) as u8; (i * 13 % 300) as usize]))
            .collect();
        store
            .append(&format!("s-{}", i % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
    // Small streams stay in the pack; two are deleted there (their tombstones in the pack,
    // their records' `REMOVALS` records).
    for i in 0..8u64 {
        store
            .append(
                &format!("p-{}", i % 4),
                ExpectedVersion::Any,
                [EventData::new("P", vec![i as u8; 40])],
            )
            .unwrap();
    }
    store.delete_stream("p-0").unwrap();
    store.delete_stream("p-1").unwrap();
    if crashed {
        sim.cut_power_after(0);
        drop(store);
        return sim.reboot();
    }
    drop(store);
    sim
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, data)) = data.split_first() else {
        return;
    };
    let sim = build(mode % 2 == 1);
    let files = sim.files();
    // Each 4 input bytes: which file, where, and what to do.
    for op in data.chunks_exact(4).take(16) {
        let file = &files[op[0] as usize % files.len()];
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]));
        sim.damage(file, offset, op[3]);
    }
    let Ok(store) = Store::open_with_backend(Path::new("/f/store"), options(), Arc::new(sim))
    else {
        return;
    };
    if let Ok(all) = store.read_all(Position::START, Direction::Forward) {
        for e in all.take(1000) {
            if e.is_err() {
                break;
            }
        }
    }
    for s in (0..4).flat_map(|s| [format!("s-{s}"), format!("p-{s}")]) {
        if let Ok(events) = store.read_stream(&s, 1, Direction::Forward) {
            for e in events.take(1000) {
                if e.is_err() {
                    break;
                }
            }
        }
        let _ = store.append(
            &s,
            ExpectedVersion::Any,
            [EventData::new("T", b"x".to_vec())],
        );
    }
});
