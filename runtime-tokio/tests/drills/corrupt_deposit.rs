//! Drill: a deposit record is corrupted in the escrow's store.
//!
//! Injected: with the escrow on PostgreSQL and the relay's worker away, the relay's deposit
//! row is damaged in place — first its sealed ciphertext (one base64 character changed, the
//! JSON still valid), then its package replaced by the sealed package of another relay's
//! deposit (a well-formed package for the wrong relay).
//!
//! Promised: each unlock is refused, the gateway's client reads `OK false "read-only: escrow
//! refused (…)"` and never `OK true`; with the row restored, the next write is accepted. Also
//! promised: each refusal is in the escrow's audit log (`hypergate audit verify --json`; F2,
//! fixed).
//!
//! PostgreSQL is needed (the embedded store offers no way to damage one record in place):
//! without `HYPERGATE_TEST_DATABASE_URL` the drill is skipped, under CI it fails.

use std::time::Duration;

use hypergate_core::nostr::testing::signed_event;

use crate::escrow_support::{Backend, Harness, RelayFixture, peer_of};
use crate::gateway_support::{connect, escrow_config, get_json, publish, start_gateway};
use crate::support::{
    audit_entries, deposited_worker, publish_until_accepted, quick_lease_options,
};

const LIVENESS: Duration = Duration::from_secs(1);

/// The message of the first write the escrow refuses for another reason than its policy (a
/// policy refusal, `unlock-rejected:…`, may come first while the worker was seen recently).
async fn refused_by_escrow(client: &mut crate::gateway_support::Ws, seq: u64) -> String {
    let mut last = String::new();
    for attempt in 0..40u64 {
        let event = signed_event(14, 1_700_002_000 + seq * 100 + attempt, 1, Vec::new(), "x");
        let ok = publish(client, &event.to_json()).await;
        assert_eq!(
            ok[2], false,
            "a write was accepted from a corrupted deposit: {ok}"
        );
        let message = ok[3].as_str().unwrap().to_owned();
        if message.starts_with("read-only: escrow refused (")
            && !message.contains("unlock-rejected")
        {
            return message;
        }
        last = message;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the escrow never refused the corrupted deposit itself; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_deposit_is_refused_and_unlocks_resume_once_the_row_is_restored() {
    drill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_deposit_refusal_is_in_the_audit_log() {
    drill(true).await;
}

/// The drill; with `check_audit`, it also requires both refusals in the audit log.
async fn drill(check_audit: bool) {
    let options = quick_lease_options(LIVENESS);
    let Some(mut harness) = Harness::start(Backend::Postgres, options).await else {
        return; // no PostgreSQL and CI unset: skipped by the harness
    };
    let gateway_data = tempfile::tempdir().unwrap();
    let gateway = start_gateway(
        gateway_data.path(),
        Some(escrow_config(&harness, "gateway")),
    )
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let (relay, mut worker) = deposited_worker(worker_dir.path(), &gateway, &harness).await;
    let status = get_json(worker.addr, "/status").await;
    let escrow_id = status["relays"][0]["escrowId"].as_str().unwrap().to_owned();
    worker.kill();
    tokio::time::sleep(LIVENESS + Duration::from_millis(200)).await;

    // Another relay's deposit, whose sealed package is the "wrong relay" corruption.
    let other = RelayFixture::new();
    let body = other.deposit(&harness.policy().await, &[peer_of("gateway")]);
    let other_id = harness.client("worker").deposit(&body).await.unwrap()["escrowId"]
        .as_str()
        .unwrap()
        .to_owned();

    let db = harness.db.as_ref().unwrap();
    let package_of = |id: &str| {
        db.query_texts(&format!(
            "SELECT encrypted_package::text FROM escrow_deposits WHERE id = '{id}'"
        ))
        .pop()
        .unwrap()
    };
    let original = package_of(&escrow_id);
    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);
    let mut client = connect(&url).await;

    // Fault 1: one character of the ciphertext changed.
    db.execute(&format!(
        "UPDATE escrow_deposits SET encrypted_package = jsonb_set(encrypted_package, \
         '{{cipherText}}', to_jsonb(overlay(encrypted_package->>'cipherText' placing \
         CASE WHEN substr(encrypted_package->>'cipherText', 10, 1) = 'A' THEN 'B' ELSE 'A' END \
         from 10 for 1))) WHERE id = '{escrow_id}'"
    ));
    assert_ne!(package_of(&escrow_id), original);
    let bad_ciphertext = refused_by_escrow(&mut client, 1).await;
    println!("bad ciphertext: {bad_ciphertext}");

    // Fault 2: a well-formed package of another relay.
    db.execute(&format!(
        "UPDATE escrow_deposits SET encrypted_package = \
         (SELECT encrypted_package FROM escrow_deposits WHERE id = '{other_id}') \
         WHERE id = '{escrow_id}'"
    ));
    let wrong_relay = refused_by_escrow(&mut client, 2).await;
    println!("wrong relay: {wrong_relay}");

    // The row restored (from a backup, say): the next write is accepted.
    db.execute(&format!(
        "UPDATE escrow_deposits SET encrypted_package = '{original}'::jsonb WHERE id = '{escrow_id}'"
    ));
    let event = signed_event(14, 1_700_002_900, 1, Vec::new(), "after the repair");
    let (ok, attempts) = publish_until_accepted(&mut client, &event.to_json(), 40).await;
    assert_eq!(
        ok[2], true,
        "no write accepted after the row was restored: {ok}"
    );
    println!("restored: write accepted after {attempts} attempt(s)");

    // Both refusals are in the audit log.
    if !check_audit {
        return;
    }
    harness.stop().await;
    let (code, entries) = audit_entries(&harness.audit_dir());
    assert_eq!(code, Some(0), "the audit log does not verify");
    let of_relay: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| entry["relayKey"] == relay.as_str())
        .collect();
    for entry in &of_relay {
        println!("audit: {entry}");
    }
    // Policy refusals carry their reasons; a refusal of the stored record has none.
    let refusals = of_relay
        .iter()
        .filter(|entry| {
            let kind = entry["type"].as_str().unwrap_or_default();
            let policy = entry["reasons"].as_array().is_some_and(|r| !r.is_empty());
            (kind == "unlock-rejected" || kind == "unlock-aborted") && !policy
        })
        .count();
    assert!(
        refusals >= 2,
        "the corrupted-deposit refusals are not in the audit log: {of_relay:?}"
    );
}
