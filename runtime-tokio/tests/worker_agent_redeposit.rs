//! Re-deposit before expiry: against a real escrow service (real mTLS, embedded store) whose
//! deposits live only a few seconds, the worker agent deposits its gateway writer again while
//! the previous deposit is still live; at the escrow each new deposit supersedes the one before
//! (which is not revoked: it simply stops being current) and holds the same writer key, and the
//! worker's keys file tracks the newest deposit and its expiry — also while the worker cannot
//! reach the gateway at all.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod worker_agent_support;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use escrow_support::{Backend, Harness, Options, gateway};
use hypergate_adapters::crypto::Identity;
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::ids::RelayKey;
use hypergate_tokio::worker_agent::{
    self, EscrowSettings, RelayKeys, WorkerAgentConfig, WorkerAgentHandle,
};
use worker_agent_support::{TestGateway, agent_config, eventually, start_worker};

/// How long the escrow keeps a deposit unlockable.
const DEPOSIT_TTL: Duration = Duration::from_secs(10);
/// The worker re-deposits when its deposit expires within this margin: about three seconds
/// after each deposit, leaving seven before the old one would expire.
const REDEPOSIT_MARGIN: Duration = Duration::from_secs(7);

/// An escrow whose deposits live [`DEPOSIT_TTL`].
async fn short_lived_deposits_escrow() -> Harness {
    let options = Options {
        policy: PolicyConfig {
            max_deposit_ttl: DEPOSIT_TTL,
            ..PolicyConfig::default()
        },
        ..Options::default()
    };
    Harness::start(Backend::Embedded, options).await.unwrap()
}

/// A worker (the identity the escrow's "worker" client is bound to) with one new relay in
/// `data`, depositing at `harness` with [`REDEPOSIT_MARGIN`], configured against `gateway`.
async fn worker_config(
    harness: &Harness,
    gateway_link: &TestGateway,
    data: &std::path::Path,
) -> (RelayKey, WorkerAgentConfig) {
    let relay = worker_agent::create_relay(data).await.unwrap();
    let escrow = EscrowSettings {
        client: harness.client("worker"),
        permitted_gateways: vec![gateway()],
        redeposit_margin: REDEPOSIT_MARGIN,
    };
    let identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x63; 32]));
    (
        relay,
        agent_config(identity, data, gateway_link, Some(escrow)),
    )
}

/// Waits for the first deposit and two renewals (the second proves the first renewal's expiry
/// was taken from the escrow's receipt and is watched in turn); returns the escrow ids seen.
async fn three_deposits(worker: &WorkerAgentHandle) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), async || {
            if let Some(id) = worker
                .status()
                .relays
                .first()
                .and_then(|relay| relay.escrow_id.clone())
                && !seen.contains(&id)
            {
                seen.push(id);
            }
            seen.len() >= 3
        })
        .await,
        "the worker did not deposit and re-deposit twice: deposits seen {seen:?}, status {:?}",
        worker.status()
    );
    seen
}

/// At the escrow (stopped, store read directly): a chain of deposits of the same writer, each
/// made while the one before was live, superseding it without revoking it; the worker's keys
/// file names the newest one and the escrow's expiry of it.
async fn assert_deposit_chain(
    harness: &mut Harness,
    relay: RelayKey,
    data: &std::path::Path,
    seen: &[String],
) {
    harness.stop().await;
    let history = harness.read_store(move |store| store.deposit_history(&relay).unwrap());
    assert!(history.len() >= 3, "{history:?}");
    assert_eq!(history[0].record.escrow_id, seen[0]);
    for pair in history.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        assert_eq!(
            old.record.superseded_by.as_deref(),
            Some(new.record.escrow_id.as_str()),
            "each deposit is superseded by the next"
        );
        assert!(
            new.record.created_at < old.record.expires_at,
            "{} was deposited at {} (escrow clock), after {} expired at {}",
            new.record.escrow_id,
            new.record.created_at.0,
            old.record.escrow_id,
            old.record.expires_at.0
        );
        assert_eq!(
            old.record.revoked_at, None,
            "superseded, not revoked: a lease may still hold the old key"
        );
        assert_eq!(old.writer_hash, new.writer_hash, "the same writer key");
    }
    let newest = &history[history.len() - 1].record;
    assert_eq!(newest.superseded_by, None);
    assert_eq!(newest.revoked_at, None);

    let keys = RelayKeys::load(&worker_agent::relays_dir(data).join(relay.to_hex())).unwrap();
    assert_eq!(keys.escrow_id.as_deref(), Some(newest.escrow_id.as_str()));
    assert_eq!(keys.deposit_expires_at, Some(newest.expires_at.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_worker_re_deposits_its_gateway_writer_before_the_deposit_expires() {
    let mut harness = short_lived_deposits_escrow().await;
    let gateway_identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x61; 32]));
    let test_gateway = TestGateway::start(gateway_identity).await;
    let data = tempfile::tempdir().unwrap();
    let (relay, config) = worker_config(&harness, &test_gateway, data.path()).await;
    let worker = start_worker(config).await;

    let seen = three_deposits(&worker).await;
    worker.shutdown().await;
    let status = worker.status();
    assert!(status.connects > 0, "the worker never reached the gateway");
    let writer = &status.relays[0].gateway_writer;
    assert!(
        status.rotations.is_empty(),
        "a re-deposit is no rotation: {:?}",
        status.rotations
    );
    let keys =
        RelayKeys::load(&worker_agent::relays_dir(data.path()).join(relay.to_hex())).unwrap();
    assert_eq!(
        &hex::encode(keys.current),
        writer,
        "a re-deposit keeps the key"
    );
    assert_deposit_chain(&mut harness, relay, data.path(), &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_reach_the_gateway_still_re_deposits_before_expiry() {
    let mut harness = short_lived_deposits_escrow().await;
    let gateway_identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x61; 32]));
    let test_gateway = TestGateway::start(gateway_identity).await;
    let data = tempfile::tempdir().unwrap();
    let (relay, mut config) = worker_config(&harness, &test_gateway, data.path()).await;
    // A port nothing listens on: bound, read, released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.gateway_addr = closed.to_string();
    let worker = start_worker(config).await;

    let seen = three_deposits(&worker).await;
    worker.shutdown().await;
    assert_eq!(worker.status().connects, 0, "the gateway was unreachable");
    assert_deposit_chain(&mut harness, relay, data.path(), &seen).await;
}
