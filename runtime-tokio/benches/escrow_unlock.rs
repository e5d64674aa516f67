//! Unlock round trips over mTLS on loopback, embedded store vs PostgreSQL
//! (not a test: it prints figures and asserts nothing about time).
//!
//! Each unlock is a full release: HMAC check, the core's plan, an audit
//! append (durable), opening the deposit, sealing to a fresh session key,
//! the store's lease transaction, and the client opening the sealed lease.
//! Every relay is deposited beforehand (one release per deposit, the default
//! budget), so every measured request issues a new lease.
//!
//! Run: `cargo bench -p hypergate-tokio --bench escrow_unlock`; PostgreSQL
//! is measured when `HYPERGATE_TEST_DATABASE_URL` names a superuser (see
//! `scripts/throwaway-postgres.sh`). `ESCROW_BENCH_UNLOCKS` sets the number
//! of unlocks per run (default 400).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/escrow_support/mod.rs"]
mod escrow_support;

use std::time::{Duration, Instant};

use escrow_support::{Backend, Harness, Options, RelayFixture, evidence_allowing, gateway, now};
use hypergate_core::ids::RelayKey;

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn figures(count: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies[index.min(latencies.len() - 1)]
    };
    Figures {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

async fn deposit_relays(harness: &Harness, count: usize) -> Vec<RelayKey> {
    let escrow = harness.policy().await;
    let worker = harness.client("worker");
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let relay = RelayFixture::new();
        worker
            .deposit(&relay.deposit(&escrow, &[gateway()]))
            .await
            .unwrap();
        keys.push(relay.key());
    }
    keys
}

/// `tasks` clients, each unlocking its share of `relays` one after another.
async fn unlock_all(harness: &Harness, relays: Vec<RelayKey>, tasks: usize) -> Figures {
    let escrow = harness.policy().await;
    let count = relays.len();
    let mut shares: Vec<Vec<RelayKey>> = vec![Vec::new(); tasks];
    for (index, relay) in relays.into_iter().enumerate() {
        shares[index % tasks].push(relay);
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for share in shares {
        let client = harness.client("gateway");
        let public_key = escrow.public_key.clone();
        // The connection (and its TLS handshake) is set up before timing starts.
        client.health().await.unwrap();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share.len());
            for relay in share {
                let sent = Instant::now();
                let lease = client
                    .unlock(relay, None, &evidence_allowing(now()), &public_key)
                    .await
                    .unwrap();
                latencies.push(sent.elapsed());
                assert!(!lease.refetched);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    figures(count, started.elapsed(), latencies)
}

async fn run(backend: Backend, unlocks: usize) {
    let Some(mut harness) = Harness::start(backend, Options::default()).await else {
        println!("{backend:?}: skipped (HYPERGATE_TEST_DATABASE_URL is not set)");
        return;
    };
    // Warm-up: a few unlocks, not counted.
    let warm = deposit_relays(&harness, 20).await;
    unlock_all(&harness, warm, 1).await;
    for tasks in [1, 4] {
        let relays = deposit_relays(&harness, unlocks).await;
        let f = unlock_all(&harness, relays, tasks).await;
        println!(
            "{:<9} {:>2} client(s)  {:>5} unlocks  {:>7.0} unlocks/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            format!("{backend:?}"),
            tasks,
            unlocks,
            f.rate,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
        );
    }
    harness.stop().await;
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let unlocks = if benching {
        std::env::var("ESCROW_BENCH_UNLOCKS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(400)
    } else {
        8
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(Backend::Embedded, unlocks).await;
        run(Backend::Postgres, unlocks).await;
    });
}
