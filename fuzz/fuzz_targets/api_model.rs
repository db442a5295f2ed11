//! Arbitrary sequences of API operations (appends with every kind of expected version,
//! idempotent retries, reads both ways, closes and deletes of streams, reopening), with I/O
//! faults and power cuts injected at chosen calls, run against the in-memory model of
//! `tests/model/` (fault-matrix row 22). Any disagreement, panic or hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    let Some((seed, ops)) = data.split_first() else {
        return;
    };
    let ops = model::decode(ops, true);
    if let Err(e) = model::Harness::run(u64::from(*seed), &ops) {
        panic!("store and model disagree: {e}");
    }
});
