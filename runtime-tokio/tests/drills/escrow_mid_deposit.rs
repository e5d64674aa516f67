//! Drill: the escrow is SIGKILLed while it stores deposits.
//!
//! Injected: `hypergate escrow serve` (embedded store) is restarted and SIGKILLed 0, 1, 2, … ms
//! after a worker sends a deposit, so the kill lands before, inside and after the deposit's
//! validation, audit append and store write.
//!
//! Promised: the escrow starts again every time (a kill inside the audit append is rebuilt at
//! start); a deposit that was answered is held after the restart (an unlock from it releases
//! that writer key); one that was not answered is either held whole or absent, and the worker's
//! retry is accepted; the audit log verifies at the end.

use std::time::{Duration, Instant};

use crate::escrow_support::{
    Backend, Harness, Options, RelayFixture, evidence_allowing, gateway, now,
};
use crate::support::{EscrowProcess, audit_entries, drill_scale};

/// Rounds of "restart, deposit, kill after a delay" (times `HYPERGATE_DRILL_SCALE`, the delays
/// cycling), and the delay's step.
const KILL_ROUNDS: u64 = 24;
const KILL_STEP_MS: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_killed_during_deposits_restarts_and_holds_every_answered_deposit() {
    let mut harness = Harness::start(Backend::Embedded, Options::default())
        .await
        .unwrap();
    // The escrow under test is a process on the harness's port, so it can be SIGKILLed.
    let port = harness.addr.port();
    harness.stop().await;
    let data = tempfile::tempdir().unwrap();
    let spawn = || {
        EscrowProcess::spawn(&harness.pki, data.path(), port, Duration::from_secs(1))
            .unwrap_or_else(|output| panic!("the escrow did not start again:\n{output}"))
    };
    let worker = harness.client("worker");
    let mut escrow = spawn();
    let policy = worker.policy().await.unwrap();

    let mut answered = Vec::new();
    let mut unanswered = Vec::new();
    let mut outcomes = Vec::new();
    for round in 0..KILL_ROUNDS * drill_scale() {
        let delay_ms = (round % KILL_ROUNDS) * KILL_STEP_MS;
        let relay = RelayFixture::new();
        let body = relay.deposit(&policy, &[gateway()]);
        let sending = {
            let worker = harness.client("worker");
            tokio::spawn(async move { worker.deposit(&body).await })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        escrow.kill();
        let outcome = sending.await.unwrap();
        outcomes.push(format!(
            "{delay_ms}ms:{}",
            if outcome.is_ok() { "stored" } else { "lost" }
        ));
        if outcome.is_ok() {
            answered.push(relay);
        } else {
            unanswered.push(relay);
        }
        escrow = spawn();
    }
    println!("kill after delay -> deposit: {}", outcomes.join(" "));
    assert!(
        !answered.is_empty() && !unanswered.is_empty(),
        "the kills never landed both before and after a deposit's answer: {outcomes:?}"
    );

    // Every answered deposit is held: an unlock releases its writer key.
    let gateway_client = harness.client("gateway");
    for relay in &answered {
        let lease = gateway_client
            .unlock(
                relay.key(),
                None,
                &evidence_allowing(now()),
                &policy.public_key,
            )
            .await
            .unwrap_or_else(|error| panic!("an answered deposit is gone: {error}"));
        assert_eq!(
            lease.package.signing_key().to_bytes(),
            relay.writer.to_bytes()
        );
    }
    // An unanswered one is retried by its worker, and the retry is accepted.
    let retried = Instant::now();
    for relay in &unanswered {
        worker
            .deposit(&relay.deposit(&policy, &[gateway()]))
            .await
            .unwrap_or_else(|error| panic!("a retried deposit was refused: {error}"));
        let lease = gateway_client
            .unlock(
                relay.key(),
                None,
                &evidence_allowing(now()),
                &policy.public_key,
            )
            .await
            .unwrap();
        assert_eq!(
            lease.package.signing_key().to_bytes(),
            relay.writer.to_bytes()
        );
    }
    println!(
        "{} answered deposits held; {} unanswered ones re-deposited and unlocked in {:?}",
        answered.len(),
        unanswered.len(),
        retried.elapsed()
    );

    escrow.kill();
    let repaired = std::fs::read_dir(data.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("audit.damaged-")
        })
        .count();
    println!("audit logs rebuilt after a kill inside an append: {repaired}");
    let (code, entries) = audit_entries(&data.path().join("audit"));
    assert_eq!(
        code,
        Some(0),
        "the audit log does not verify after the kills"
    );
    let deposits = entries.iter().filter(|e| e["type"] == "deposit").count();
    assert!(
        deposits >= answered.len() + unanswered.len(),
        "{deposits} deposit entries for {} deposits stored",
        answered.len() + unanswered.len()
    );
}
