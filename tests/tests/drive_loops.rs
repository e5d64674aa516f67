//! The core's documented drive loops, run with a real clock.
//!
//! Each top-level machine documents its drive loop in its module docs as a
//! function that takes `now` from the adapter: the core never reads a clock,
//! so its doc-tests cannot produce an `Instant`. This file is that adapter: it
//! reads the clock and runs each documented loop with its assertions. Keep the
//! copies in step with the module docs.

#![allow(clippy::unwrap_used)] // Example code, as documented.

/// `core/src/gateway.rs`'s drive-loop example, run with a real clock.
mod gateway {
    use hypergate_core::gateway::{Gateway, GatewayConfig, GatewayEvent};
    use hypergate_core::ids::PeerId;
    use hypergate_core::time::UnixTime;
    use std::time::{Duration, Instant};

    // The adapter reads its clock and passes `start` in; the core never reads one.
    fn drive(start: Instant) {
        let mut gateway =
            Gateway::new(GatewayConfig::default(), start, UnixTime(1_700_000_000_000));
        let worker = PeerId([1; 32]);
        gateway.handle_link_up(worker, start);

        // The drive loop: after each input, drain everything, then arm one timer.
        let mut now = start;
        for _ in 0..3 {
            while let Some(transmit) = gateway.poll_transmit() {
                let _ = (transmit.peer, transmit.frame); // write to the peer link
            }
            while let Some(event) = gateway.poll_event() {
                if let GatewayEvent::Health(change) = event {
                    let _ = change; // export metrics, log
                }
            }
            let Some((deadline, _reason)) = gateway.poll_timeout() else {
                break;
            };
            now = deadline; // a real adapter sleeps until `deadline`
            gateway.handle_timeout(now);
        }
        assert!(
            now >= start + Duration::from_secs(5),
            "the worker sent no heartbeat"
        );
    }

    #[test]
    fn the_documented_drive_loop_holds() {
        drive(Instant::now());
    }
}

/// `core/src/session/mod.rs`'s drive-loop example, run with a real clock.
mod session {
    use hypergate_core::nostr::SignatureVerifier;
    use hypergate_core::session::{Effect, PublishOutcome, Session, SessionConfig};
    use std::time::Instant;

    // The adapter reads its clock and passes `now` in; the core never reads one.
    fn drive(now: Instant) {
        let mut session = Session::new(SessionConfig::default(), SignatureVerifier::new());
        session.handle_client_text(r#"["REQ","feed",{"kinds":[1]}]"#, now);
        while let Some(effect) = session.poll_effect() {
            match effect {
                Effect::Query { query, .. } => {
                    // Look the filters up in the relay's index; here the relay is empty.
                    session.handle_query_result(query, Vec::new()).unwrap();
                }
                Effect::Publish { event } => {
                    session
                        .handle_publish_result(event.id, PublishOutcome::Accepted)
                        .unwrap();
                }
                Effect::Subscribe { .. } | Effect::Unsubscribe { .. } => {
                    // Register with, or leave, the relay's live feed.
                }
            }
        }
        let mut sent = Vec::new();
        while let Some(frame) = session.poll_transmit() {
            sent.push(frame.to_json());
        }
        assert_eq!(sent, vec![r#"["EOSE","feed"]"#.to_owned()]);
    }

    #[test]
    fn the_documented_drive_loop_holds() {
        drive(Instant::now());
    }
}

/// `core/src/escrow/mod.rs`'s drive-loop example, run with a real clock.
mod escrow {
    use hypergate_core::escrow::{
        DepositInput, Escrow, EscrowEvent, Evidence, PolicyConfig, UnlockOutcome, UnlockRequest,
    };
    use hypergate_core::ids::{PeerId, RelayKey};
    use hypergate_core::lease::LeaseConfig;
    use hypergate_core::time::UnixTime;
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    // The adapter reads its clock and passes `start` in; the core never reads one.
    fn drive(start: Instant) -> Result<(), Box<dyn std::error::Error>> {
        let unix = UnixTime(1_700_000_000_000);
        let policy = PolicyConfig::default();
        let mut escrow = Escrow::new(policy.clone(), LeaseConfig::default(), start, unix);
        let (relay, worker, gateway) = (RelayKey([1; 32]), PeerId([2; 32]), PeerId([3; 32]));

        // POST /escrow, after the adapter checked the sealed package.
        escrow.handle_deposit(
            DepositInput {
                escrow_id: "escrow_1".into(),
                relay_key: relay,
                owner: worker,
                permitted_requesters: BTreeSet::from([gateway]),
                requested_expires_at: None,
                policy_version: policy.version.clone(),
            },
            start,
        )?;
        let mut audit_log = Vec::new();
        while let Some(event) = escrow.poll_event() {
            if let EscrowEvent::Audit(record) = event {
                audit_log.push(serde_json::to_string(&record)?); // append before answering
            }
        }

        // POST /escrow/unlock: plan, append the audit record, then commit.
        let now = start + Duration::from_secs(60);
        let evidence = Evidence {
            escrow_enabled: Some(true),
            healthy_peer_count: Some(0),
            last_healthy_at: Some(UnixTime(unix.0 - 10_000)),
            mirror_lag_blocks: Some(0),
            mirror_lag_ms: Some(0),
            mirror_last_synced_at: Some(UnixTime(unix.0 + 59_000)),
        };
        let request = UnlockRequest {
            relay_key: relay,
            requester: gateway,
            evidence: Some(evidence),
        };
        let plan = escrow.plan_unlock(&request, now)?;
        audit_log.push(serde_json::to_string(plan.audit())?); // if this fails: refuse, do not commit
        let UnlockOutcome::Issued(grant) = escrow.commit_unlock(plan, now)? else {
            unreachable!()
        };
        assert_eq!(grant.expires_at, now + policy.lease_ttl);

        // Sleep until the one deadline, then feed it back.
        while let Some((deadline, _reason)) = escrow.poll_timeout() {
            escrow.handle_timeout(deadline);
            while let Some(event) = escrow.poll_event() {
                if let EscrowEvent::Audit(record) = event {
                    audit_log.push(serde_json::to_string(&record)?);
                }
            }
        }
        assert!(
            audit_log
                .last()
                .unwrap()
                .contains("\"type\":\"lease-expired\"")
        );
        Ok(())
    }

    #[test]
    fn the_documented_drive_loop_holds() {
        drive(Instant::now()).unwrap();
    }
}

/// `core/src/worker.rs`'s drive-loop example, run with a real clock.
mod worker {
    use hypergate_core::ids::{PeerId, RelayKey};
    use hypergate_core::time::UnixTime;
    use hypergate_core::wire::{
        AckStatus, BoundedString, BoundedVec, PendingState, PendingType, PendingWritePush,
    };
    use hypergate_core::worker::{EffectKind, EffectOutput, WorkerConfig, WorkerCore};
    use std::time::Instant;

    // The adapter reads its clock and passes `now` in; the core never reads one.
    fn drive(now: Instant) {
        let relay = RelayKey([7; 32]);
        let gateway = PeerId([1; 32]);
        let mut worker = WorkerCore::new(WorkerConfig::default(), PeerId([2; 32]), 42);
        worker.register_relay(relay, [3; 32], Some("escrow-1".into()));

        let push = PendingWritePush {
            push_id: 1,
            relay_key: relay,
            state: PendingState::Pending,
            reason: BoundedString::truncating("replica-write"),
            types: BoundedVec::new(vec![PendingType::Event]).unwrap(),
            drive_identifier: None,
            drive_version: None,
            pending_since: UnixTime(1_000),
            updated_at: UnixTime(1_000),
            lease_version: Some(1),
            lease_active: false,
            cleared_at: None,
        };
        let ack = worker.handle_push(gateway, &push, now);
        assert_eq!(ack.status, AckStatus::Accepted); // send the ack back to the gateway

        // The drive loop: perform each effect, report its result, drain events, arm the timer.
        while let Some(effect) = worker.poll_effect() {
            let output = match &effect.kind {
                EffectKind::IngestGatewayEvents { .. } => EffectOutput::Ingested {
                    gateway_writer_length: 12,
                },
                EffectKind::GenerateWriterKey => EffectOutput::WriterKey { public: [4; 32] },
                EffectKind::DepositWriterKey { .. } => EffectOutput::Deposited {
                    escrow_id: "escrow-2".into(),
                },
                _ => EffectOutput::Done, // resync-complete sent, owner ops appended, deposit revoked
            };
            worker
                .handle_effect_result(effect.id, Ok(output), now)
                .unwrap();
            while let Some(event) = worker.poll_event() {
                let _ = event; // log, export metrics, persist rotation records
            }
        }
        assert_eq!(worker.current_writer(&relay), Some([4; 32]));
        assert_eq!(worker.current_escrow_id(&relay), Some("escrow-2"));
        assert!(worker.poll_timeout().is_none());
    }

    #[test]
    fn the_documented_drive_loop_holds() {
        drive(Instant::now());
    }
}

/// `core/src/push.rs`'s drive-loop example, run with a real clock.
mod push {
    use hypergate_core::ids::RelayKey;
    use hypergate_core::push::{PendingNotice, PushConfig, PushScheduler};
    use hypergate_core::time::UnixTime;
    use std::time::{Duration, Instant};

    // The adapter reads its clock and passes `start` in; the core never reads one.
    fn drive(start: Instant) {
        let mut pushes = PushScheduler::new(PushConfig::default(), 7);
        let relay = RelayKey([1; 32]);
        let notice = PendingNotice::new(relay, "replica-write", UnixTime(1_700_000_000_000));
        let _ = pushes.notify_pending(notice, true, start);

        let mut now = start;
        let mut sent = 0;
        for _ in 0..3 {
            while let Some(push) = pushes.poll_push() {
                let _ = (push.relay, push.message); // send to every reachable worker
                sent += 1;
            }
            while let Some(event) = pushes.poll_event() {
                let _ = event; // metrics, logs
            }
            let Some((deadline, _reason)) = pushes.poll_timeout() else {
                break;
            };
            now = deadline; // a real adapter sleeps until `deadline`
            pushes.handle_timeout(now);
        }
        assert_eq!(sent, 3, "the first push and two unacknowledged retries");
        assert!(
            now >= start + Duration::from_secs(24),
            "first retry after 30 s ± 20 %"
        );
    }

    #[test]
    fn the_documented_drive_loop_holds() {
        drive(Instant::now());
    }
}
