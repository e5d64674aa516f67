//! Push → ack → resync → resync-complete → rotation, end to end: a real escrow service over
//! real mTLS (embedded store), the in-test gateway unlocking the deposit the worker made and
//! appending under the leased key, and the worker rotating its gateway writer afterwards — also
//! when the lease was issued while the worker was away and no push reached it (the registration
//! ack carries the lease epoch).

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;
mod worker_agent_support;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use escrow_support::{Backend, Harness, Options, evidence_allowing, gateway, now};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::log::HyperLog;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::relay::{RelayOp, WriterKey};
use hypergate_core::wire::{
    AckStatus, BoundedString, BoundedVec, Message, PendingState, PendingType, PendingWritePush,
};
use hypergate_tokio::worker_agent::{self, EscrowSettings};
use worker_agent_support::{TestGateway, agent_config, eventually, start_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_acked_resynced_and_answered_by_a_rotation_that_revokes_the_old_deposit() {
    let harness = Harness::start(Backend::Embedded, Options::default())
        .await
        .unwrap();
    let escrow_policy = harness.policy().await;
    // The identities the escrow's test clients are bound to.
    let gateway_identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x61; 32]));
    let worker_identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x63; 32]));
    let worker_peer = worker_identity.peer_id();
    let test_gateway = TestGateway::start(gateway_identity).await;

    let data = tempfile::tempdir().unwrap();
    let relay = worker_agent::create_relay(data.path()).await.unwrap();
    let escrow = EscrowSettings {
        client: harness.client("worker"),
        permitted_gateways: vec![gateway()],
        redeposit_margin: Duration::from_secs(60),
    };
    let worker = start_worker(agent_config(
        worker_identity,
        data.path(),
        &test_gateway,
        Some(escrow),
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            let status = worker.status();
            status.gateway_connected && status.relays.first().is_some_and(|r| r.escrow_id.is_some())
        })
        .await,
        "the worker did not deposit its gateway writer and connect: {:?}",
        worker.status()
    );
    let first = worker.status();
    let old_writer = first.relays[0].gateway_writer.clone();
    let old_deposit = first.relays[0].escrow_id.clone().unwrap();

    // The gateway unlocks the deposit and writes three events under the leased key.
    let gateway_escrow = harness.client("gateway");
    let lease = gateway_escrow
        .unlock(
            relay,
            None,
            &evidence_allowing(now()),
            &escrow_policy.public_key,
        )
        .await
        .unwrap();
    assert_eq!(lease.escrow_id, old_deposit);
    assert_eq!(hex::encode(lease.package.writer_key()), old_writer);
    let mut writer_log = HyperLog::create(
        &test_gateway.dir.path().join("gateway-writer"),
        Some(lease.package.signing_key()),
    )
    .await
    .unwrap();
    for i in 0..3 {
        let event = signed_event(
            5,
            1_700_000_100 + i,
            1,
            Vec::new(),
            "written by the gateway",
        );
        writer_log
            .append(&RelayOp::event(&event).unwrap().encode())
            .await
            .unwrap();
    }
    let writer_key = writer_log.public_key().to_bytes();
    test_gateway
        .state
        .lock()
        .await
        .writers
        .insert(writer_key, writer_log);

    let link = test_gateway.link(worker_peer).await.unwrap();
    let push = PendingWritePush {
        push_id: 1,
        relay_key: relay,
        state: PendingState::Pending,
        reason: BoundedString::truncating("replica-write"),
        types: BoundedVec::new(vec![PendingType::Event]).unwrap(),
        drive_identifier: None,
        drive_version: None,
        pending_since: now(),
        updated_at: now(),
        lease_version: Some(lease.lease_id.epoch),
        lease_active: true,
        cleared_at: None,
    };
    let answer = link.request(Message::PendingWritePush(push)).await.unwrap();
    let Message::PushAck(ack) = answer else {
        panic!("push answered with {}", answer.kind());
    };
    assert_eq!(ack.status, AckStatus::Accepted);

    assert!(
        eventually(Duration::from_secs(60), async || {
            worker
                .status()
                .rotations
                .iter()
                .any(|r| r.status == "completed")
        })
        .await,
        "no rotation completed: {:?}",
        worker.status()
    );
    let status = worker.status();
    let rotation = &status.rotations[0];
    assert_eq!(rotation.reason, "pending-write-resync");
    assert_eq!(rotation.previous_writer, old_writer);
    assert_eq!(
        rotation.previous_escrow_id.as_deref(),
        Some(old_deposit.as_str())
    );
    let new_writer = rotation.new_writer.clone().unwrap();
    assert_ne!(new_writer, old_writer);
    assert_eq!(status.relays[0].gateway_writer, new_writer);
    let new_deposit = status.relays[0].escrow_id.clone().unwrap();
    assert_ne!(new_deposit, old_deposit);

    // The gateway heard resync-complete covering its three writes.
    let resyncs = test_gateway.state.lock().await.resyncs.clone();
    assert_eq!(resyncs.len(), 1);
    assert_eq!(resyncs[0].gateway_writer_length, 3);

    // The worker holds the gateway's three blocks, verified, and its owner log ends with the
    // rotation: RemoveWriter{old, 3} then AddWriter{new}.
    let (imported, ops) = worker
        .with_relay(relay, async |logs| {
            let imported = logs
                .writer_log(&WriterKey(writer_key))
                .await
                .unwrap()
                .contiguous_len();
            let owner = logs.owner_log();
            let mut ops = Vec::new();
            for index in 0..owner.len() {
                ops.push(RelayOp::decode(&owner.get(index).await.unwrap().unwrap()).unwrap());
            }
            (imported, ops)
        })
        .await
        .unwrap();
    assert_eq!(imported, 3);
    let tail = &ops[ops.len() - 2..];
    assert_eq!(
        tail[0],
        RelayOp::RemoveWriter {
            key: WriterKey(writer_key),
            final_length: 3
        }
    );
    assert_eq!(
        hex::encode(match &tail[1] {
            RelayOp::AddWriter { key } => key.0,
            other => panic!("expected AddWriter, found {other:?}"),
        }),
        new_writer
    );

    // At the escrow: a new unlock releases the new key from the new deposit (the old deposit
    // is revoked, so it can release nothing).
    let renewed = gateway_escrow
        .unlock(
            relay,
            None,
            &evidence_allowing(now()),
            &escrow_policy.public_key,
        )
        .await
        .unwrap();
    assert_eq!(renewed.escrow_id, new_deposit);
    assert_eq!(hex::encode(renewed.package.writer_key()), new_writer);
    let revoke_again = harness
        .client("worker")
        .revoke(
            &hypergate_tokio::escrow::client::RevokeBy::EscrowId(old_deposit.clone()),
            None,
            "check",
        )
        .await;
    // Revoking it again revokes nothing: the rotation already did.
    let revoke_again = revoke_again.unwrap();
    assert_eq!(
        revoke_again["revoked"].as_array().map(Vec::len),
        Some(0),
        "the old deposit was still active: {revoke_again}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_issued_while_the_worker_was_away_is_answered_by_a_rotation_on_reconnect() {
    use hypergate_core::gateway::{WriteId, WriteVerdict};
    use hypergate_core::lease::LeaseGrant;
    use hypergate_core::router::SessionKind;
    use std::time::Instant;

    let harness = Harness::start(Backend::Embedded, Options::default())
        .await
        .unwrap();
    let escrow_policy = harness.policy().await;
    let gateway_identity = Identity::from_signing_key(SigningKey::from_bytes(&[0x61; 32]));
    let worker_identity = || Identity::from_signing_key(SigningKey::from_bytes(&[0x63; 32]));
    let worker_peer = worker_identity().peer_id();
    let gateway_peer = gateway_identity.peer_id();
    let test_gateway = TestGateway::start(gateway_identity).await;

    let data = tempfile::tempdir().unwrap();
    let relay = worker_agent::create_relay(data.path()).await.unwrap();
    let config = |identity: Identity| {
        let escrow = EscrowSettings {
            client: harness.client("worker"),
            permitted_gateways: vec![gateway()],
            redeposit_margin: Duration::from_secs(60),
        };
        agent_config(identity, data.path(), &test_gateway, Some(escrow))
    };
    let worker = start_worker(config(worker_identity())).await;
    // Registered with escrow, and mirrored: the gateway can serve (and lease) the relay alone.
    assert!(
        eventually(Duration::from_secs(30), async || {
            let state = test_gateway.state.lock().await;
            let escrow = state
                .core
                .registry()
                .relay(&relay)
                .is_some_and(|record| record.escrow_enabled());
            escrow
                && state
                    .mirror
                    .cores_of_relay(&relay)
                    .any(|core| core.local_length > 0)
        })
        .await,
        "the relay was not registered with escrow and mirrored: {:?}",
        worker.status()
    );
    let old_writer = worker.status().relays[0].gateway_writer.clone();
    worker.shutdown().await;
    assert!(
        eventually(Duration::from_secs(30), async || test_gateway
            .link(worker_peer)
            .await
            .is_none())
        .await,
        "the gateway never saw the worker go"
    );

    // While the worker is away: a client write, a real lease from the escrow, two gateway
    // writes under the leased key. The pending push is never delivered (nobody to push to, and
    // the writes are not marked pending here), so only the registration ack can tell the worker.
    let gateway_escrow = harness.client("gateway");
    let lease = gateway_escrow
        .unlock(
            relay,
            None,
            &evidence_allowing(now()),
            &escrow_policy.public_key,
        )
        .await
        .unwrap();
    assert_eq!(hex::encode(lease.package.writer_key()), old_writer);
    {
        let mut state = test_gateway.state.lock().await;
        let t = Instant::now();
        let session = state
            .core
            .open_session(&relay.to_hex(), SessionKind::Client, t)
            .unwrap();
        let verdict = state
            .core
            .handle_client_write(session, WriteId(1), t)
            .unwrap();
        assert_eq!(verdict, WriteVerdict::Wait, "the write waits for a lease");
        state
            .core
            .handle_lease_granted(
                LeaseGrant {
                    id: lease.lease_id,
                    escrow_id: lease.escrow_id.clone(),
                    holder: gateway_peer,
                    expires_at: t + Duration::from_secs(600),
                },
                t,
            )
            .unwrap();
        assert_eq!(
            state.core.leases().current_epoch(&relay),
            lease.lease_id.epoch
        );
        while state.core.poll_transmit().is_some() {}
        while state.core.poll_event().is_some() {}
    }
    let mut writer_log = HyperLog::create(
        &test_gateway.dir.path().join("gateway-writer"),
        Some(lease.package.signing_key()),
    )
    .await
    .unwrap();
    for i in 0..2 {
        let event = signed_event(5, 1_700_000_200 + i, 1, Vec::new(), "written while away");
        writer_log
            .append(&RelayOp::event(&event).unwrap().encode())
            .await
            .unwrap();
    }
    let writer_key = writer_log.public_key().to_bytes();
    test_gateway
        .state
        .lock()
        .await
        .writers
        .insert(writer_key, writer_log);

    // The worker comes back: the ack carries the epoch, and it rotates.
    let worker = start_worker(config(worker_identity())).await;
    assert!(
        eventually(Duration::from_secs(60), async || {
            worker
                .status()
                .rotations
                .iter()
                .any(|r| r.status == "completed")
        })
        .await,
        "no rotation completed after the reconnect: {:?}",
        worker.status()
    );
    let status = worker.status();
    let rotation = &status.rotations[0];
    assert_eq!(rotation.reason, "worker-reconnect");
    assert_eq!(rotation.previous_writer, old_writer);
    let new_writer = rotation.new_writer.clone().unwrap();
    assert_ne!(new_writer, old_writer);
    assert_eq!(status.relays[0].gateway_writer, new_writer);
    assert!(
        test_gateway.state.lock().await.resyncs.is_empty(),
        "no push, so no resync-complete"
    );

    // The owner log ends with the rotation, removing the old writer at what the gateway wrote.
    let ops = worker
        .with_relay(relay, async |logs| {
            let owner = logs.owner_log();
            let mut ops = Vec::new();
            for index in 0..owner.len() {
                ops.push(RelayOp::decode(&owner.get(index).await.unwrap().unwrap()).unwrap());
            }
            ops
        })
        .await
        .unwrap();
    let tail = &ops[ops.len() - 2..];
    assert_eq!(
        tail[0],
        RelayOp::RemoveWriter {
            key: WriterKey(writer_key),
            final_length: 2
        }
    );
    assert_eq!(
        hex::encode(match &tail[1] {
            RelayOp::AddWriter { key } => key.0,
            other => panic!("expected AddWriter, found {other:?}"),
        }),
        new_writer
    );
    worker.shutdown().await;
}
