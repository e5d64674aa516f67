#![no_main]
//! Drives the whole-core simulation from fuzz input: the first 8 bytes seed
//! the network and the parties, every further byte picks one transition.
//! Any broken invariant panics with its replayable description.

use std::sync::OnceLock;
use std::time::Instant;

use hypergate_tests::sim::{SimConfig, run_with_steps};
use libfuzzer_sys::fuzz_target;

static START: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((seed_bytes, choices)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*seed_bytes);
    let choices = &choices[..choices.len().min(400)];
    let start = *START.get_or_init(Instant::now);
    if let Err(violation) = run_with_steps(seed, &SimConfig::default(), start, choices) {
        panic!("{violation}");
    }
});
