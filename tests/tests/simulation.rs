//! The whole core (gateway, escrow, workers, clients) under churn on a
//! seeded lossy network.
//!
//! `SIM_SEED=<n>` replays one seed; `SIM_SEEDS=<n>` sets how many seeds the
//! sweep runs (default 200, which CI runs).

use std::time::Instant;

use hypergate_tests::sim::{Faults, SimConfig, run};

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200u64);
    (0..count).collect()
}

#[test]
fn simulation_invariants_hold_for_every_seed() {
    let start = Instant::now();
    let config = SimConfig::default();
    let mut totals = std::collections::BTreeMap::new();
    for seed in seeds() {
        match run(seed, &config, start) {
            Ok(report) => {
                for (label, count) in report.counts {
                    *totals.entry(label).or_insert(0u64) += count;
                }
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    eprintln!("simulation totals: {totals:?}");
    if std::env::var("SIM_SEED").is_err() {
        // The runs must exercise what the invariants guard.
        for label in [
            "write-accepted",
            "lease-active",
            "lease-refused",
            "fallback-started",
            "worker-new-identity",
            "gateway-restart",
            "escrow-down",
        ] {
            assert!(
                totals.get(label).copied().unwrap_or(0) > 0,
                "no run saw {label}"
            );
        }
    }
}

#[test]
fn simulation_invariants_hold_with_fifty_workers() {
    let config = SimConfig {
        workers: 50,
        clients: 30,
        steps: 400,
        ..SimConfig::default()
    };
    let start = Instant::now();
    for seed in 0..10 {
        if let Err(violation) = run(seed, &config, start) {
            panic!("{violation}");
        }
    }
}

#[test]
fn same_seed_twice_gives_the_same_trace() {
    let config = SimConfig::default();
    let start = Instant::now();
    for seed in [3, 77] {
        let first = run(seed, &config, start).unwrap();
        let second = run(seed, &config, start).unwrap();
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(first.counts, second.counts);
    }
}

/// The simulation must catch a gateway that keeps using expired leases (the
/// original's defect), switched on through the core's fault-injection feature.
#[test]
fn a_gateway_that_ignores_lease_expiry_is_caught() {
    let config = SimConfig {
        faults: Faults {
            gateway_ignores_lease_expiry: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let start = Instant::now();
    let caught = (0..200).find_map(|seed| run(seed, &config, start).err());
    let violation = caught.expect("some seed exposes the broken lease expiry");
    assert!(
        violation.message.contains("invariant 1") || violation.message.contains("invariant 3"),
        "{violation}"
    );
}

/// The simulation must catch workers that acknowledge a resync without
/// ingesting the gateway's writes (the original worker's defect).
#[test]
fn workers_that_skip_ingest_are_caught() {
    let config = SimConfig {
        faults: Faults {
            workers_skip_ingest: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let start = Instant::now();
    let caught = (0..200).find_map(|seed| run(seed, &config, start).err());
    let violation = caught.expect("some seed exposes the skipped ingest");
    assert!(violation.message.contains("invariant 2"), "{violation}");
}
