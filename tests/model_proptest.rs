//! Random operation sequences against a simple in-memory model (issue 3, property tests), on
//! the simulated disk: appends with every kind of expected version, idempotent retries, reads
//! both ways, reopening in the middle; and, in the second property, injected I/O faults (EIO,
//! ENOSPC, short writes) and power cuts at random I/O calls. The harness is `tests/model/`,
//! shared with the `api_model` fuzz target.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64 each).

mod model;
use model::{decode, Harness};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(bytes in prop::collection::vec(any::<u8>(), 1..200), seed in any::<u64>()) {
        let ops = decode(&bytes, false);
        if let Err(e) = Harness::run(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn store_matches_the_model_through_faults_and_power_cuts(bytes in prop::collection::vec(any::<u8>(), 1..200), seed in any::<u64>()) {
        let ops = decode(&bytes, true);
        if let Err(e) = Harness::run(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
