//! The escrow API end to end: a real server on loopback over real mTLS, on
//! both store backends — deposit and unlock, re-fetch, renewal and release,
//! rotation, revokes, expiry with no request, and restarts.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;

use std::time::Duration;

use escrow_support::{
    Backend, Harness, Options, RelayFixture, eventually, evidence_allowing, gateway, now, peer_of,
};
use hypergate_adapters::audit::AuditLog;
use hypergate_tokio::escrow::client::{ClientError, RevokeBy};

fn refused_with(error: &ClientError) -> (u16, String, Vec<String>) {
    match error {
        ClientError::Refused {
            status,
            code,
            reasons,
            ..
        } => (*status, code.clone(), reasons.clone().unwrap_or_default()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn deposit_then_unlock_releases_the_writer_key_sealed_to_the_session_key(backend: Backend) {
    let Some(harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let escrow = harness.policy().await;
    let health = harness.client("gateway").health().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["policy"]["leaseTtlMs"], 600_000);

    let relay = RelayFixture::new();
    let worker = harness.client("worker");
    let receipt = worker
        .deposit(&relay.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    let escrow_id = receipt["escrowId"].as_str().unwrap().to_owned();
    assert!(escrow_id.starts_with("escrow_"), "{receipt}");
    assert_eq!(receipt["relayKey"], relay.key().to_hex());
    assert_eq!(receipt["policyVersion"], escrow.policy.version);

    let gateway_client = harness.client("gateway");
    let lease = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    assert_eq!(lease.escrow_id, escrow_id);
    assert_eq!(lease.lease_id.epoch, 1);
    assert!(!lease.refetched);
    assert_eq!(
        lease.expires_at.0 - lease.issued_at.0,
        600_000,
        "the lease lasts the policy's TTL"
    );
    // The released key is the writer's secret key, usable for signing.
    assert_eq!(
        lease.package.signing_key().to_bytes(),
        relay.writer.to_bytes()
    );
    assert_eq!(lease.payload_digest, lease.package.payload_digest());

    // The leases list shows digests, never the key.
    let leases = harness.client("operator").leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["leaseId"], lease.lease_id.to_string());
    assert_eq!(leases[0]["payloadDigest"], lease.payload_digest);
    assert_eq!(leases[0]["ownerPeerKey"], relay.owner.to_hex());
    assert_eq!(leases[0]["requesterId"], gateway().to_hex());
    let listing = serde_json::to_string(&leases).unwrap();
    assert!(!listing.contains(&relay.writer_secret_hex()));

    // The same gateway asking again gets the same lease back (a restarted gateway).
    let again = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    assert!(again.refetched);
    assert_eq!(again.lease_id, lease.lease_id);
    assert_eq!(again.expires_at, lease.expires_at);

    // Renewal re-checks the policy on fresh evidence, extends, and release
    // ends the lease; the deposit's one release is then spent.
    let worker_back = hypergate_core::escrow::Evidence {
        healthy_peer_count: Some(1),
        ..evidence_allowing(now())
    };
    let refused = gateway_client
        .renew(lease.lease_id, None, &worker_back)
        .await
        .unwrap_err();
    assert_eq!(refused_with(&refused).2, ["peers-still-healthy"]);
    let renewed = gateway_client
        .renew(lease.lease_id, None, &evidence_allowing(now()))
        .await
        .unwrap();
    assert!(renewed >= lease.expires_at);
    gateway_client
        .release(lease.lease_id, None, "peer-healthy")
        .await
        .unwrap();
    assert!(
        harness
            .client("operator")
            .leases()
            .await
            .unwrap()
            .is_empty()
    );
    let spent = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    let (status, code, reasons) = refused_with(&spent);
    assert_eq!(status, 412);
    assert_eq!(code, "unlock-rejected:unlock-budget-exhausted");
    assert_eq!(reasons, ["unlock-budget-exhausted"]);

    // Every step is in the audit log, in order, and the log verifies.
    let report = AuditLog::verify(&harness.audit_dir()).await.unwrap();
    let kinds: Vec<&str> = report
        .entries
        .iter()
        .map(|entry| entry.event.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "deposit",
            "unlock-issued",
            "unlock-refetched",
            "unlock-rejected",
            "lease-renewed",
            "lease-released",
            "unlock-rejected"
        ]
    );
    assert_eq!(
        report.entries[1].event.payload_digest.as_deref(),
        Some(lease.payload_digest.as_str())
    );
}
both_backends!(deposit_then_unlock_releases_the_writer_key_sealed_to_the_session_key);

async fn a_second_deposit_for_the_same_relay_supersedes_the_first_and_keeps_history(
    backend: Backend,
) {
    let Some(mut harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let escrow = harness.policy().await;
    let first = RelayFixture::new();
    let second = first.rotated();
    let worker = harness.client("worker");
    let old = worker
        .deposit(&first.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    let new = worker
        .deposit(&second.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    assert_eq!(new["supersedes"], old["escrowId"]);

    let lease = harness
        .client("gateway")
        .unlock(
            first.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    assert_eq!(lease.escrow_id, new["escrowId"].as_str().unwrap());
    assert_eq!(
        lease.package.signing_key().to_bytes(),
        second.writer.to_bytes(),
        "the newest deposit's key is released"
    );

    // History: both deposits are kept, the old one marked superseded.
    harness.stop().await;
    let relay_key = first.key();
    let history: Vec<(String, String)> = harness.read_store(move |store| {
        store
            .deposit_history(&relay_key)
            .unwrap()
            .into_iter()
            .map(|deposit| {
                (
                    deposit.record.escrow_id,
                    deposit.record.superseded_by.unwrap_or_default(),
                )
            })
            .collect()
    });
    assert_eq!(
        history,
        [
            (
                old["escrowId"].as_str().unwrap().to_owned(),
                new["escrowId"].as_str().unwrap().to_owned()
            ),
            (new["escrowId"].as_str().unwrap().to_owned(), String::new()),
        ]
    );
}
both_backends!(a_second_deposit_for_the_same_relay_supersedes_the_first_and_keeps_history);

async fn revoke_then_unlock_is_refused_by_relay_by_escrow_id_and_by_owner(backend: Backend) {
    let Some(harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let escrow = harness.policy().await;
    let worker = harness.client("worker");
    let operator = harness.client("operator");
    let gateway_client = harness.client("gateway");
    let relays: Vec<RelayFixture> = (0..4).map(|_| RelayFixture::new()).collect();
    let mut ids = Vec::new();
    for relay in &relays {
        let receipt = worker
            .deposit(&relay.deposit(&escrow, &[gateway()]))
            .await
            .unwrap();
        ids.push(receipt["escrowId"].as_str().unwrap().to_owned());
    }
    // An active lease on relay 0 is ended by its revoke.
    let lease = gateway_client
        .unlock(
            relays[0].key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();

    let by_relay = operator
        .revoke(
            &RevokeBy::Relay(relays[0].key()),
            Some("ops"),
            "compromised",
        )
        .await
        .unwrap();
    assert_eq!(by_relay["success"], true);
    assert_eq!(by_relay["revoked"], serde_json::json!([ids[0]]));
    assert!(
        operator.leases().await.unwrap().is_empty(),
        "the lease ended"
    );
    let by_id = worker
        .revoke(&RevokeBy::EscrowId(ids[1].clone()), None, "rotation")
        .await
        .unwrap();
    assert_eq!(by_id["revoked"], serde_json::json!([ids[1]]));
    // Revoking an unknown deposit is not an error: success false (the original's answer).
    let unknown = operator
        .revoke(&RevokeBy::EscrowId("escrow_nope".into()), None, "x")
        .await
        .unwrap();
    assert_eq!(unknown["success"], false);

    for relay in &relays[..2] {
        let refused = gateway_client
            .unlock(
                relay.key(),
                None,
                &evidence_allowing(now()),
                &escrow.public_key,
            )
            .await
            .unwrap_err();
        let (status, _, reasons) = refused_with(&refused);
        assert_eq!(status, 412);
        assert!(
            reasons.contains(&"record-revoked".to_owned()),
            "{reasons:?}"
        );
    }
    // By owner: every remaining deposit of the worker at once.
    let by_owner = operator
        .revoke(&RevokeBy::Owner(peer_of("worker")), None, "retired")
        .await
        .unwrap();
    let mut revoked: Vec<String> = serde_json::from_value(by_owner["revoked"].clone()).unwrap();
    revoked.sort();
    let mut expected = ids[2..].to_vec();
    expected.sort();
    assert_eq!(revoked, expected);
    for relay in &relays[2..] {
        let refused = gateway_client
            .unlock(
                relay.key(),
                None,
                &evidence_allowing(now()),
                &escrow.public_key,
            )
            .await
            .unwrap_err();
        assert!(
            refused_with(&refused)
                .2
                .contains(&"record-revoked".to_owned())
        );
    }
    // The revoke is audited with the lease it ended.
    let report = AuditLog::verify(&harness.audit_dir()).await.unwrap();
    let revoked_entry = report
        .entries
        .iter()
        .find(|entry| entry.event.kind.as_str() == "deposit-revoked")
        .unwrap();
    assert_eq!(revoked_entry.event.lease_id, Some(lease.lease_id));
    assert_eq!(revoked_entry.event.actor, "ops");
}
both_backends!(revoke_then_unlock_is_refused_by_relay_by_escrow_id_and_by_owner);

async fn a_lease_expires_at_its_ttl_with_no_further_request(backend: Backend) {
    let options = Options {
        policy: hypergate_core::escrow::PolicyConfig {
            lease_ttl: Duration::from_millis(800),
            ..Default::default()
        },
        ..Options::default()
    };
    let Some(harness) = Harness::start(backend, options).await else {
        return;
    };
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    harness
        .client("worker")
        .deposit(&relay.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    let lease = harness
        .client("gateway")
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    // No request from here on: only the sweep can end the lease. The audit
    // log is read from disk (it may be read beside a live escrow).
    let audit_dir = harness.audit_dir();
    let expired = eventually(Duration::from_secs(20), async || {
        AuditLog::verify(&audit_dir).await.is_ok_and(|report| {
            report.entries.iter().any(|entry| {
                entry.event.kind.as_str() == "lease-expired"
                    && entry.event.lease_id == Some(lease.lease_id)
            })
        })
    })
    .await;
    assert!(expired, "the sweep recorded the expiry");
    // The key is wiped and the gauge follows, still without any API request.
    let service = harness.server.as_ref().unwrap().service().clone();
    let gateway_client = harness.client("gateway");
    let settled = eventually(Duration::from_secs(20), async || {
        let metrics = gateway_client
            .send_raw(hyper::Method::GET, "/metrics", &[], bytes::Bytes::new())
            .await
            .unwrap();
        let text = String::from_utf8(metrics.body.to_vec()).unwrap();
        service.held_leases().is_empty() && text.contains("escrow_active_leases 0")
    })
    .await;
    assert!(settled, "the key was wiped and the gauge shows no lease");
}
both_backends!(a_lease_expires_at_its_ttl_with_no_further_request);

async fn an_escrow_restart_keeps_deposits_and_lease_history(backend: Backend) {
    let Some(mut harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let escrow = harness.policy().await;
    let kept = RelayFixture::new();
    let released = RelayFixture::new();
    let worker = harness.client("worker");
    for relay in [&kept, &released] {
        worker
            .deposit(&relay.deposit(&escrow, &[gateway()]))
            .await
            .unwrap();
    }
    let gateway_client = harness.client("gateway");
    let live = gateway_client
        .unlock(
            kept.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    let ended = gateway_client
        .unlock(
            released.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    gateway_client
        .release(ended.lease_id, None, "worker-resync")
        .await
        .unwrap();
    let audit_before = AuditLog::verify(&harness.audit_dir()).await.unwrap().length;

    harness.restart().await;
    let escrow_after = harness.policy().await;
    assert_eq!(
        escrow_after.public_key, escrow.public_key,
        "keypair.json keeps the escrow key"
    );
    // The live lease survived: listed, and re-fetchable with the same id.
    let leases = harness.client("operator").leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["leaseId"], live.lease_id.to_string());
    let gateway_client = harness.client("gateway");
    let refetched = gateway_client
        .unlock(
            kept.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    assert!(refetched.refetched);
    assert_eq!(refetched.lease_id, live.lease_id);
    assert_eq!(
        refetched.package.signing_key().to_bytes(),
        kept.writer.to_bytes()
    );
    // The released relay's deposit is still there and its budget still spent.
    let spent = gateway_client
        .unlock(
            released.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused_with(&spent).1,
        "unlock-rejected:unlock-budget-exhausted"
    );
    // The audit log continued the same chain.
    let report = AuditLog::verify(&harness.audit_dir()).await.unwrap();
    assert!(report.length > audit_before);
}
both_backends!(an_escrow_restart_keeps_deposits_and_lease_history);

async fn a_deposit_expiry_is_clamped_to_the_policy_maximum(backend: Backend) {
    let options = Options {
        policy: hypergate_core::escrow::PolicyConfig {
            max_deposit_ttl: Duration::from_secs(3600),
            ..Default::default()
        },
        ..Options::default()
    };
    let Some(harness) = Harness::start(backend, options).await else {
        return;
    };
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    let before = now();
    let body = hypergate_tokio::escrow::client::deposit_body(
        &escrow,
        &hypergate_tokio::escrow::client::DepositParams {
            package: &relay.package(),
            relay_key: &relay.relay,
            permitted_requesters: &[gateway()],
            expires_at: Some(hypergate_core::time::UnixTime(
                before.0 + 10 * 24 * 3600 * 1000,
            )),
            created_at: before,
        },
    )
    .unwrap();
    let receipt = harness.client("worker").deposit(&body).await.unwrap();
    let expires_at = receipt["expiresAt"].as_u64().unwrap();
    assert!(expires_at >= before.0 + 3_600_000, "{receipt}");
    assert!(expires_at <= now().0 + 3_600_000, "{receipt}");
}
both_backends!(a_deposit_expiry_is_clamped_to_the_policy_maximum);
