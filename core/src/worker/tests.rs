use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use super::*;
use crate::time::test_start;
use crate::wire::{BoundedString, BoundedVec, PendingType};

const RELAY: RelayKey = RelayKey([7; 32]);
const OTHER: RelayKey = RelayKey([8; 32]);
const GATEWAY: PeerId = PeerId([1; 32]);
const ME: PeerId = PeerId([2; 32]);
const OLD_WRITER: [u8; 32] = [3; 32];

fn notice(
    relay: RelayKey,
    updated_at: u64,
    state: PendingState,
    types: &[PendingType],
    lease_version: Option<u64>,
) -> PendingWritePush {
    PendingWritePush {
        push_id: updated_at * 10,
        relay_key: relay,
        state,
        reason: BoundedString::truncating("replica-write"),
        types: BoundedVec::new(types.to_vec()).unwrap(),
        drive_identifier: Some(BoundedString::truncating("drive-a")),
        drive_version: Some(5),
        pending_since: UnixTime(1),
        updated_at: UnixTime(updated_at),
        lease_version,
        lease_active: false,
        cleared_at: None,
    }
}

fn pending(updated_at: u64, types: &[PendingType]) -> PendingWritePush {
    notice(RELAY, updated_at, PendingState::Pending, types, None)
}

fn cleared(updated_at: u64) -> PendingWritePush {
    notice(RELAY, updated_at, PendingState::Cleared, &[], None)
}

fn worker_with(config: WorkerConfig) -> WorkerCore {
    let mut worker = WorkerCore::new(config, ME, 7);
    worker.register_relay(RELAY, OLD_WRITER, Some("escrow-old".into()));
    worker
}

fn worker() -> WorkerCore {
    worker_with(WorkerConfig::default())
}

fn drain(worker: &mut WorkerCore) -> Vec<WorkerEvent> {
    std::iter::from_fn(|| worker.poll_event()).collect()
}

/// A plausible successful output for `kind`; writer keys are derived from `n` so they differ.
fn success(kind: &EffectKind, n: u32) -> EffectOutput {
    let mut public = [0xEE; 32];
    public[..4].copy_from_slice(&n.to_be_bytes());
    match kind {
        EffectKind::IngestGatewayEvents { .. } => EffectOutput::Ingested {
            gateway_writer_length: 10,
        },
        EffectKind::GenerateWriterKey => EffectOutput::WriterKey { public },
        EffectKind::DepositWriterKey { .. } => EffectOutput::Deposited {
            escrow_id: format!("escrow-{n}"),
        },
        _ => EffectOutput::Done,
    }
}

/// Answers every effect with success until none is left; returns the effects in order.
fn run_all(worker: &mut WorkerCore, now: Instant) -> Vec<Effect> {
    // Shared by every call, so each generated key is new.
    static KEYS: AtomicU32 = AtomicU32::new(1);
    let mut done = Vec::new();
    while let Some(effect) = worker.poll_effect() {
        let output = success(&effect.kind, KEYS.fetch_add(1, Ordering::Relaxed));
        worker
            .handle_effect_result(effect.id, Ok(output), now)
            .unwrap();
        done.push(effect);
    }
    done
}

fn names(effects: &[Effect]) -> Vec<&'static str> {
    effects.iter().map(|effect| effect.kind.name()).collect()
}

/// The rotation: the old deposit is revoked and the old writer ingested once
/// more before it is removed, so its final length covers every gateway write.
const ROTATION: [&str; 5] = [
    "generate-writer-key",
    "revoke-deposit",
    "ingest-gateway-events",
    "append-owner-ops",
    "deposit-writer-key",
];

fn resync_throughs(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| effect.resync_complete())
        .map(|message| message.resynced_through.as_millis())
        .collect()
}

#[test]
fn duplicate_or_older_push_answers_noop_and_enqueues_nothing() {
    let t0 = test_start();
    let mut worker = worker();
    let first = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    assert_eq!(first.status, AckStatus::Accepted);
    assert_eq!(
        (first.push_id, first.relay_key, first.updated_at),
        (1000, RELAY, UnixTime(100))
    );
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Queued));
    drain(&mut worker);

    let again = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Drive]), t0);
    let older = worker.handle_push(GATEWAY, &pending(99, &[PendingType::Drive]), t0);
    assert_eq!(again.status, AckStatus::Noop);
    assert_eq!(older.status, AckStatus::Noop);
    assert_eq!(
        older.updated_at,
        UnixTime(99),
        "the ack echoes the push, not the stored notice"
    );
    assert_eq!(
        worker.stored_notice(&RELAY).unwrap().push.types.as_slice(),
        &[PendingType::Event]
    );
    assert!(
        drain(&mut worker)
            .iter()
            .all(|event| matches!(event, WorkerEvent::PushIgnored { .. }))
    );
    // Exactly one job, planned from the first notice.
    let effects = run_all(&mut worker, t0);
    let mut expected = vec!["ingest-gateway-events", "send-resync-complete"];
    expected.extend(ROTATION);
    assert_eq!(names(&effects), expected);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Completed));
}

#[test]
fn newer_push_during_a_running_job_reruns_it_with_the_newer_resynced_through() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    assert_eq!(worker.job_state(&RELAY), Some(JobState::InProgress));
    // Written while the job runs: must not be lost.
    let ack = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Event]), t0);
    assert_eq!(ack.status, AckStatus::Accepted);
    assert!(
        worker.poll_effect().is_none(),
        "one effect per relay at a time"
    );
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 4,
            }),
            t0,
        )
        .unwrap();
    let effects = run_all(&mut worker, t0);
    assert_eq!(resync_throughs(&effects), vec![100, 200]);
    assert_eq!(
        effects
            .iter()
            .filter(|e| e.kind == EffectKind::GenerateWriterKey)
            .count(),
        2,
        "each resync is followed by its rotation"
    );
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Completed));
}

#[test]
fn steps_follow_the_notice_types() {
    let t0 = test_start();
    let cases: [(&[PendingType], &[&str]); 4] = [
        (&[PendingType::Event], &["ingest-gateway-events"]),
        (&[PendingType::Drive], &["fetch-drive-files"]),
        (&[PendingType::HttpArtifact], &["replay-http-artifacts"]),
        (
            // Order of the types in the push does not matter; duplicates do not repeat steps.
            &[
                PendingType::HttpArtifact,
                PendingType::Drive,
                PendingType::Event,
                PendingType::Drive,
            ],
            &[
                "ingest-gateway-events",
                "fetch-drive-files",
                "replay-http-artifacts",
            ],
        ),
    ];
    for (types, resync_steps) in cases {
        let mut worker = worker();
        let _ = worker.handle_push(GATEWAY, &pending(100, types), t0);
        let effects = run_all(&mut worker, t0);
        let mut expected = resync_steps.to_vec();
        expected.push("send-resync-complete");
        expected.extend(ROTATION);
        assert_eq!(names(&effects), expected, "types {types:?}");
        if let Some(fetch) = effects
            .iter()
            .find(|e| e.kind.name() == "fetch-drive-files")
        {
            assert_eq!(
                fetch.kind,
                EffectKind::FetchDriveFiles {
                    drive_identifier: Some("drive-a".into()),
                    drive_version: Some(5)
                }
            );
        }
    }
}

#[test]
fn without_an_event_type_resync_complete_reports_the_last_known_length() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Drive]), t0);
    let effects = run_all(&mut worker, t0);
    let complete = effects.iter().find_map(Effect::resync_complete).unwrap();
    assert_eq!(complete.gateway_writer_length, 0, "never ingested: 0");
    assert_eq!(complete.relay_key, RELAY);
}

#[test]
fn resync_complete_is_never_sent_before_every_ingest_step_succeeded() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(
        GATEWAY,
        &pending(100, &[PendingType::Event, PendingType::Drive]),
        t0,
    );
    let mut now = t0;
    // The ingest fails twice: nothing but the ingest may be handed out meanwhile.
    for _ in 0..2 {
        let effect = worker.poll_effect().unwrap();
        assert_eq!(effect.kind.name(), "ingest-gateway-events");
        worker
            .handle_effect_result(effect.id, Err("log not replicated".into()), now)
            .unwrap();
        assert!(worker.poll_effect().is_none());
        now = worker.poll_timeout().unwrap().0;
        worker.handle_timeout(now);
    }
    let ingest = worker.poll_effect().unwrap();
    assert_eq!(
        ingest.kind,
        EffectKind::IngestGatewayEvents {
            gateway_writer: OLD_WRITER
        }
    );
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 42,
            }),
            now,
        )
        .unwrap();
    // The drive fetch fails once too: still no resync-complete.
    let fetch = worker.poll_effect().unwrap();
    assert_eq!(fetch.kind.name(), "fetch-drive-files");
    worker
        .handle_effect_result(fetch.id, Err("drive offline".into()), now)
        .unwrap();
    assert!(worker.poll_effect().is_none());
    now = worker.poll_timeout().unwrap().0;
    worker.handle_timeout(now);
    let effects = run_all(&mut worker, now);
    assert_eq!(effects[0].kind.name(), "fetch-drive-files");
    assert_eq!(
        effects[1].kind,
        EffectKind::SendResyncComplete {
            resynced_through: UnixTime(100),
            gateway_writer_length: 42
        }
    );
}

#[test]
fn rotation_removes_the_old_writer_at_the_ingested_length_and_deposits_a_new_key() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 17,
            }),
            t0,
        )
        .unwrap();
    let complete = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(complete.id, Ok(EffectOutput::Done), t0)
        .unwrap();
    drain(&mut worker);

    let generate = worker.poll_effect().unwrap();
    assert_eq!(generate.kind, EffectKind::GenerateWriterKey);
    let new_key = [9; 32];
    let t1 = t0 + Duration::from_secs(1);
    worker
        .handle_effect_result(
            generate.id,
            Ok(EffectOutput::WriterKey { public: new_key }),
            t1,
        )
        .unwrap();
    // The old deposit is revoked first, so no new lease writes to the old writer…
    let revoke = worker.poll_effect().unwrap();
    assert_eq!(
        revoke.kind,
        EffectKind::RevokeDeposit {
            escrow_id: "escrow-old".into(),
            reason: RotationReason::PendingWriteResync
        }
    );
    worker
        .handle_effect_result(revoke.id, Ok(EffectOutput::Done), t1)
        .unwrap();
    // …then the old writer is read once more: a gateway write made under a
    // lease since the resync (length 17 → 19) is inside the final length.
    let reingest = worker.poll_effect().unwrap();
    assert_eq!(
        reingest.kind,
        EffectKind::IngestGatewayEvents {
            gateway_writer: OLD_WRITER
        }
    );
    worker
        .handle_effect_result(
            reingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 19,
            }),
            t1,
        )
        .unwrap();
    let append = worker.poll_effect().unwrap();
    assert_eq!(
        append.kind,
        EffectKind::AppendOwnerOps {
            ops: vec![
                OwnerOp::RemoveWriter {
                    key: OLD_WRITER,
                    final_length: 19
                },
                OwnerOp::AddWriter { key: new_key },
            ]
        }
    );
    worker
        .handle_effect_result(append.id, Ok(EffectOutput::Done), t1)
        .unwrap();
    let deposit = worker.poll_effect().unwrap();
    assert_eq!(
        deposit.kind,
        EffectKind::DepositWriterKey {
            writer_public: new_key
        }
    );
    // Not current until the deposit is made.
    assert_eq!(worker.current_writer(&RELAY), Some(OLD_WRITER));
    let t2 = t1 + Duration::from_secs(1);
    worker
        .handle_effect_result(
            deposit.id,
            Ok(EffectOutput::Deposited {
                escrow_id: "escrow-new".into(),
            }),
            t2,
        )
        .unwrap();
    assert_eq!(worker.current_writer(&RELAY), Some(new_key));
    assert_eq!(worker.current_escrow_id(&RELAY), Some("escrow-new"));
    assert!(worker.poll_effect().is_none());

    let record = worker.rotations().last().unwrap().clone();
    assert_eq!(record.reason, RotationReason::PendingWriteResync);
    assert_eq!(record.status, RotationStatus::Completed);
    assert_eq!(record.previous_escrow_id.as_deref(), Some("escrow-old"));
    assert_eq!(record.new_escrow_id.as_deref(), Some("escrow-new"));
    assert_eq!(
        (record.previous_writer, record.new_writer),
        (OLD_WRITER, Some(new_key))
    );
    assert_eq!((record.started_at, record.completed_at), (t0, Some(t2)));
    assert!(drain(&mut worker).contains(&WorkerEvent::RotationCompleted { record }));

    // The next rotation removes the new writer at what its re-ingest found
    // (`run_all` answers every ingest with length 10).
    let _ = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Drive]), t2);
    let effects = run_all(&mut worker, t2);
    let append = effects
        .iter()
        .find(|e| e.kind.name() == "append-owner-ops")
        .unwrap();
    assert!(matches!(
        &append.kind,
        EffectKind::AppendOwnerOps { ops }
            if ops[0] == OwnerOp::RemoveWriter { key: new_key, final_length: 10 }
    ));
    let revoke = effects
        .iter()
        .find(|e| e.kind.name() == "revoke-deposit")
        .unwrap();
    assert_eq!(
        revoke.kind,
        EffectKind::RevokeDeposit {
            escrow_id: "escrow-new".into(),
            reason: RotationReason::PendingWriteResync
        }
    );
}

#[test]
fn rotation_without_a_previous_deposit_skips_the_revoke() {
    let t0 = test_start();
    let mut worker = WorkerCore::new(WorkerConfig::default(), ME, 1);
    worker.register_relay(RELAY, OLD_WRITER, None);
    let _ = worker.handle_push(GATEWAY, &pending(100, &[]), t0);
    let effects = run_all(&mut worker, t0);
    assert_eq!(
        names(&effects),
        vec![
            "send-resync-complete",
            "generate-writer-key",
            "ingest-gateway-events",
            "append-owner-ops",
            "deposit-writer-key"
        ]
    );
}

#[test]
fn rotation_history_keeps_at_most_the_configured_number() {
    let t0 = test_start();
    let mut worker = worker();
    for i in 1..=55u64 {
        let _ = worker.handle_push(GATEWAY, &pending(i, &[]), t0);
        run_all(&mut worker, t0);
    }
    let ids: Vec<u64> = worker
        .rotations()
        .map(|record| record.rotation_id)
        .collect();
    assert_eq!(ids.len(), 50);
    assert_eq!((ids[0], ids[49]), (6, 55), "the oldest are dropped");
    assert!(
        worker
            .rotations()
            .all(|r| r.status == RotationStatus::Completed)
    );
}

#[test]
fn generated_key_equal_to_the_current_writer_is_refused() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[]), t0);
    let complete = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(complete.id, Ok(EffectOutput::Done), t0)
        .unwrap();
    let generate = worker.poll_effect().unwrap();
    // The original's "rotation" re-deposited the same key: never again.
    let result = worker.handle_effect_result(
        generate.id,
        Ok(EffectOutput::WriterKey { public: OLD_WRITER }),
        t0,
    );
    assert_eq!(result, Err(WorkerError::KeyNotRotated { id: generate.id }));
    assert!(
        worker.poll_effect().is_none(),
        "the step waits for its retry"
    );
    let (retry_at, _) = worker.poll_timeout().unwrap();
    worker.handle_timeout(retry_at);
    assert_eq!(
        worker.poll_effect().unwrap().kind,
        EffectKind::GenerateWriterKey
    );
    assert_eq!(worker.current_writer(&RELAY), Some(OLD_WRITER));
}

#[test]
fn output_that_does_not_answer_the_effect_counts_as_a_failed_attempt() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    let result = worker.handle_effect_result(ingest.id, Ok(EffectOutput::Done), t0);
    assert_eq!(
        result,
        Err(WorkerError::UnexpectedOutput {
            id: ingest.id,
            effect: "ingest-gateway-events",
            output: "done"
        })
    );
    assert!(drain(&mut worker).iter().any(|event| matches!(
        event,
        WorkerEvent::StepFailed {
            step: "ingest-gateway-events",
            attempt: 1,
            ..
        }
    )));
    assert!(worker.poll_effect().is_none());
}

#[test]
fn failed_step_retries_with_exponential_backoff_then_errors_after_the_budget() {
    let t0 = test_start();
    let config = WorkerConfig {
        step_retry_base: Duration::from_secs(2),
        step_retry_max: Duration::from_secs(20),
        max_step_attempts: 6,
        rotation_history: 50,
    };
    let mut worker = worker_with(config);
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    drain(&mut worker);
    let mut now = t0;
    let mut delays = Vec::new();
    for attempt in 1..=6u32 {
        let effect = worker.poll_effect().unwrap();
        assert_eq!(effect.kind.name(), "ingest-gateway-events");
        worker
            .handle_effect_result(effect.id, Err("boom".into()), now)
            .unwrap();
        let events = drain(&mut worker);
        let retry_at = events.iter().find_map(|event| match event {
            WorkerEvent::StepFailed {
                attempt: a,
                retry_at,
                ..
            } if *a == attempt => Some(*retry_at),
            _ => None,
        });
        if attempt == 6 {
            assert_eq!(retry_at, Some(None), "out of attempts: no retry");
            assert!(events.contains(&WorkerEvent::JobStateChanged {
                relay: RELAY,
                state: JobState::Error
            }));
            break;
        }
        let (deadline, reason) = worker.poll_timeout().unwrap();
        assert_eq!(retry_at, Some(Some(deadline)));
        assert_eq!(reason, "resync step retry");
        assert_eq!(worker.job_state(&RELAY), Some(JobState::InProgress));
        // Not before the deadline.
        worker.handle_timeout(deadline - Duration::from_millis(1));
        assert!(worker.poll_effect().is_none());
        delays.push(deadline - now);
        now = deadline;
        worker.handle_timeout(now);
    }
    // Nominal 2, 4, 8, 16, 20 (capped) seconds, each within ±20 % and never above the cap.
    let nominal = [2u64, 4, 8, 16, 20];
    assert_eq!(delays.len(), nominal.len());
    for (delay, nominal) in delays.iter().zip(nominal) {
        let nominal = Duration::from_secs(nominal);
        assert!(
            *delay >= nominal * 4 / 5 && *delay <= (nominal * 6 / 5).min(Duration::from_secs(20)),
            "{delay:?} vs {nominal:?}"
        );
    }
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    assert!(worker.poll_effect().is_none());
    assert!(
        worker.poll_timeout().is_none(),
        "an errored job waits for a push or reconnect"
    );
}

#[test]
fn errored_job_resumes_on_the_next_push_or_reconnect() {
    let t0 = test_start();
    let config = WorkerConfig {
        max_step_attempts: 1,
        ..WorkerConfig::default()
    };
    let mut worker = worker_with(config);
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(ingest.id, Err("x".into()), t0)
        .unwrap();
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    // A newer push restarts the job from the newer notice.
    let _ = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Drive]), t0);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Queued));
    let fetch = worker.poll_effect().unwrap();
    assert_eq!(fetch.kind.name(), "fetch-drive-files");
    worker
        .handle_effect_result(fetch.id, Ok(EffectOutput::Done), t0)
        .unwrap();
    let complete = worker.poll_effect().unwrap();
    assert_eq!(
        complete.resync_complete().unwrap().resynced_through,
        UnixTime(200)
    );
    worker
        .handle_effect_result(complete.id, Ok(EffectOutput::Done), t0)
        .unwrap();
    // The rotation fails after its key was generated: a reconnect resumes it at the failed
    // step, without generating (and adding) another key.
    let generate = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            generate.id,
            Ok(EffectOutput::WriterKey { public: [50; 32] }),
            t0,
        )
        .unwrap();
    let revoke = worker.poll_effect().unwrap();
    assert_eq!(revoke.kind.name(), "revoke-deposit");
    worker
        .handle_effect_result(revoke.id, Err("owner log busy".into()), t0)
        .unwrap();
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    assert_eq!(
        worker.rotations().last().unwrap().status,
        RotationStatus::Failed
    );
    assert_eq!(
        worker.rotations().last().unwrap().error.as_deref(),
        Some("owner log busy")
    );
    // A cleared notice does not abandon a rotation under way.
    let _ = worker.handle_push(GATEWAY, &cleared(300), t0);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    worker.handle_gateway_connected(t0);
    let effects = run_all(&mut worker, t0);
    assert_eq!(
        names(&effects),
        vec![
            "revoke-deposit",
            "ingest-gateway-events",
            "append-owner-ops",
            "deposit-writer-key"
        ]
    );
    assert_eq!(worker.current_writer(&RELAY), Some([50; 32]));
    let record = worker.rotations().last().unwrap();
    assert_eq!(
        (record.status, record.attempts),
        (RotationStatus::Completed, 2)
    );
    assert_eq!(worker.rotations().count(), 1);
}

#[test]
fn errored_job_resumes_when_the_gateway_resends_the_same_notice() {
    let t0 = test_start();
    let config = WorkerConfig {
        max_step_attempts: 1,
        ..WorkerConfig::default()
    };
    let mut worker = worker_with(config);
    let push = pending(100, &[PendingType::Event]);
    let _ = worker.handle_push(GATEWAY, &push, t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(ingest.id, Err("x".into()), t0)
        .unwrap();
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    // The gateway's resync deadline re-sends the notice: still a Noop, but the job runs again.
    let ack = worker.handle_push(GATEWAY, &push, t0);
    assert_eq!(ack.status, AckStatus::Noop);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Queued));
    let effects = run_all(&mut worker, t0);
    assert_eq!(resync_throughs(&effects), vec![100]);
    // An older push does not.
    let _ = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(ingest.id, Err("x".into()), t0)
        .unwrap();
    let _ = worker.handle_push(GATEWAY, &pending(150, &[PendingType::Event]), t0);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
}

#[test]
fn failed_rotation_is_resumed_not_restarted_by_a_newer_push() {
    let t0 = test_start();
    let config = WorkerConfig {
        max_step_attempts: 1,
        ..WorkerConfig::default()
    };
    let mut worker = worker_with(config);
    let _ = worker.handle_push(GATEWAY, &pending(100, &[]), t0);
    let complete = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(complete.id, Ok(EffectOutput::Done), t0)
        .unwrap();
    let generate = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            generate.id,
            Ok(EffectOutput::WriterKey { public: [70; 32] }),
            t0,
        )
        .unwrap();
    let revoke = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(revoke.id, Err("x".into()), t0)
        .unwrap();
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Error));
    // The key [70; 32] may already be a member: the rotation finishes with it, then the newer
    // notice gets its own job.
    let _ = worker.handle_push(GATEWAY, &pending(200, &[]), t0);
    let effects = run_all(&mut worker, t0);
    let mut expected = vec![
        "revoke-deposit",
        "ingest-gateway-events",
        "append-owner-ops",
        "deposit-writer-key",
        "send-resync-complete",
    ];
    expected.extend(ROTATION);
    assert_eq!(names(&effects), expected);
    assert_eq!(resync_throughs(&effects), vec![200]);
    assert_eq!(
        effects[3].kind,
        EffectKind::DepositWriterKey {
            writer_public: [70; 32]
        }
    );
    let statuses: Vec<(u32, RotationStatus)> =
        worker.rotations().map(|r| (r.attempts, r.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (2, RotationStatus::Completed),
            (1, RotationStatus::Completed)
        ]
    );
}

#[test]
fn stale_or_duplicate_effect_result_is_an_error_and_changes_nothing() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(ingest.id, Err("flaky".into()), t0)
        .unwrap();
    // A late success for the failed attempt must not count.
    let late = worker.handle_effect_result(
        ingest.id,
        Ok(EffectOutput::Ingested {
            gateway_writer_length: 99,
        }),
        t0,
    );
    assert_eq!(late, Err(WorkerError::StaleEffect(ingest.id)));
    let (retry_at, _) = worker.poll_timeout().unwrap();
    worker.handle_timeout(retry_at);
    let retry = worker.poll_effect().unwrap();
    assert_ne!(retry.id, ingest.id, "ids are never reused");
    worker
        .handle_effect_result(
            retry.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 3,
            }),
            retry_at,
        )
        .unwrap();
    // A duplicate of a result that was applied is stale too.
    assert_eq!(
        worker.handle_effect_result(retry.id, Ok(EffectOutput::Done), retry_at),
        Err(WorkerError::StaleEffect(retry.id))
    );
    let complete = worker.poll_effect().unwrap();
    assert_eq!(complete.resync_complete().unwrap().gateway_writer_length, 3);
    // An id this worker never handed out.
    let other = WorkerCore::new(WorkerConfig::default(), ME, 99);
    let foreign = EffectId(other.next_effect);
    assert_eq!(
        worker.handle_effect_result(foreign, Ok(EffectOutput::Done), t0),
        Err(WorkerError::StaleEffect(foreign))
    );
    assert_eq!(worker.job_state(&RELAY), Some(JobState::InProgress));
}

#[test]
fn cleared_push_drops_queued_work_but_not_a_running_job() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Queued));
    let ack = worker.handle_push(GATEWAY, &cleared(150), t0);
    assert_eq!(ack.status, AckStatus::Accepted);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Cleared));
    assert!(worker.poll_effect().is_none(), "the queued job is gone");
    assert_eq!(
        worker.stored_notice(&RELAY).unwrap().push.state,
        PendingState::Cleared
    );

    // A running job finishes its notice, and the cleared one prevents a re-run.
    let _ = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    let _ = worker.handle_push(GATEWAY, &pending(250, &[PendingType::Event]), t0);
    let _ = worker.handle_push(GATEWAY, &cleared(300), t0);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::InProgress));
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 1,
            }),
            t0,
        )
        .unwrap();
    let effects = run_all(&mut worker, t0);
    assert_eq!(resync_throughs(&effects), vec![200]);
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Completed));
}

#[test]
fn push_for_an_unknown_relay_is_ignored_without_state() {
    let t0 = test_start();
    let mut worker = worker();
    let push = notice(
        OTHER,
        100,
        PendingState::Pending,
        &[PendingType::Event],
        Some(4),
    );
    let ack = worker.handle_push(GATEWAY, &push, t0);
    assert_eq!(
        ack,
        PushAck {
            push_id: 1000,
            relay_key: OTHER,
            updated_at: UnixTime(0),
            status: AckStatus::Noop
        },
        "the ack echoes no updated_at, so the gateway does not count it"
    );
    assert_eq!(
        drain(&mut worker),
        vec![WorkerEvent::PushIgnored {
            relay: OTHER,
            reason: PushIgnoredReason::UnknownRelay
        }]
    );
    assert_eq!(worker.job_state(&OTHER), None);
    assert!(worker.stored_notice(&OTHER).is_none());
    assert!(worker.poll_effect().is_none());
    worker.handle_gateway_connected(t0);
    assert!(
        worker.poll_effect().is_none(),
        "its lease version was not recorded either"
    );
    assert_eq!(
        worker.handle_lease_observed(OTHER, 1, t0),
        Err(WorkerError::UnknownRelay(OTHER))
    );
}

#[test]
fn reconnect_after_a_newer_lease_epoch_rotates_once() {
    let t0 = test_start();
    let mut worker = worker();
    worker.handle_gateway_connected(t0);
    assert!(
        worker.poll_effect().is_none(),
        "no lease was issued: nothing to do"
    );

    worker.handle_lease_observed(RELAY, 3, t0).unwrap();
    assert!(worker.poll_effect().is_none(), "acted on at reconnect");
    worker.handle_gateway_connected(t0);
    // A second reconnect while the rotation runs must not start another.
    let ingest = worker.poll_effect().unwrap();
    worker.handle_gateway_connected(t0);
    assert_eq!(
        ingest.kind,
        EffectKind::IngestGatewayEvents {
            gateway_writer: OLD_WRITER
        }
    );
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 8,
            }),
            t0,
        )
        .unwrap();
    let effects = run_all(&mut worker, t0);
    assert_eq!(
        names(&effects),
        ROTATION.to_vec(),
        "no resync-complete: nothing was pending"
    );
    // The re-ingest after the revoke (answered with length 10) sets the final length.
    assert!(matches!(
        &effects[3].kind,
        EffectKind::AppendOwnerOps { ops }
            if ops[0] == OwnerOp::RemoveWriter { key: OLD_WRITER, final_length: 10 }
    ));
    let record = worker.rotations().last().unwrap();
    assert_eq!(
        (record.reason, record.lease_epoch),
        (RotationReason::WorkerReconnect, 3)
    );
    assert_eq!(worker.rotated_epoch(&RELAY), Some(3));

    // The same epoch, seen again (lease list, push), and more reconnects: no second rotation.
    worker.handle_lease_observed(RELAY, 3, t0).unwrap();
    worker.handle_gateway_connected(t0);
    worker.handle_gateway_connected(t0);
    assert!(worker.poll_effect().is_none());
    assert_eq!(worker.rotations().count(), 1);

    // A newer lease: one more.
    worker.handle_lease_observed(RELAY, 4, t0).unwrap();
    worker.handle_gateway_connected(t0);
    run_all(&mut worker, t0);
    assert_eq!(worker.rotations().count(), 2);
}

#[test]
fn lease_named_by_a_pending_push_is_covered_by_the_jobs_own_rotation() {
    let t0 = test_start();
    let mut worker = worker();
    let push = notice(
        RELAY,
        100,
        PendingState::Pending,
        &[PendingType::Event],
        Some(5),
    );
    let _ = worker.handle_push(GATEWAY, &push, t0);
    // Reconnect while the job is queued: the job's rotation covers epoch 5.
    worker.handle_gateway_connected(t0);
    run_all(&mut worker, t0);
    worker.handle_gateway_connected(t0);
    assert!(worker.poll_effect().is_none());
    let reasons: Vec<RotationReason> = worker.rotations().map(|r| r.reason).collect();
    assert_eq!(reasons, vec![RotationReason::PendingWriteResync]);
    assert_eq!(worker.rotated_epoch(&RELAY), Some(5));
}

#[test]
fn lease_observed_after_a_running_rotation_started_rotates_again_when_it_ends() {
    let t0 = test_start();
    let mut worker = worker();
    worker.handle_lease_observed(RELAY, 1, t0).unwrap();
    worker.handle_gateway_connected(t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 1,
            }),
            t0,
        )
        .unwrap();
    let generate = worker.poll_effect().unwrap(); // the rotation started for epoch 1
    worker.handle_lease_observed(RELAY, 2, t0).unwrap();
    worker.handle_gateway_connected(t0);
    worker
        .handle_effect_result(
            generate.id,
            Ok(EffectOutput::WriterKey { public: [60; 32] }),
            t0,
        )
        .unwrap();
    run_all(&mut worker, t0);
    let epochs: Vec<u64> = worker.rotations().map(|r| r.lease_epoch).collect();
    assert_eq!(epochs, vec![1, 2]);
}

#[test]
fn restored_rotated_epoch_prevents_rotating_again_after_a_restart() {
    let t0 = test_start();
    let mut worker = worker();
    worker.restore_rotated_epoch(RELAY, 6).unwrap();
    worker.handle_lease_observed(RELAY, 6, t0).unwrap();
    worker.handle_gateway_connected(t0);
    assert!(worker.poll_effect().is_none());
}

#[test]
fn job_states_use_the_original_vocabulary() {
    let labels: Vec<&str> = [
        JobState::Idle,
        JobState::Queued,
        JobState::InProgress,
        JobState::Completed,
        JobState::Error,
        JobState::Cleared,
    ]
    .into_iter()
    .map(JobState::as_str)
    .collect();
    assert_eq!(
        labels,
        [
            "idle",
            "queued",
            "in-progress",
            "completed",
            "error",
            "cleared"
        ]
    );
    assert_eq!(RotationReason::WorkerReconnect.as_str(), "worker-reconnect");
    assert_eq!(worker().job_state(&RELAY), Some(JobState::Idle));
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Push {
        relay: u8,
        updated_at: u64,
        cleared: bool,
        types: u8,
        lease: Option<u64>,
    },
    /// Take every ready effect.
    Poll,
    /// Answer the `pick`th outstanding effect (or replay an answered one when `stale`).
    Answer {
        pick: usize,
        ok: bool,
        stale: bool,
    },
    Advance {
        millis: u64,
    },
    Connected,
    LeaseObserved {
        relay: u8,
        epoch: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u64..30, prop::bool::weighted(0.2), 0u8..8, prop::option::of(0u64..4))
            .prop_map(|(relay, updated_at, cleared, types, lease)| {
                Op::Push { relay, updated_at, cleared, types, lease }
            }),
        3 => Just(Op::Poll),
        5 => (0usize..4, prop::bool::weighted(0.7), prop::bool::weighted(0.1))
            .prop_map(|(pick, ok, stale)| Op::Answer { pick, ok, stale }),
        2 => (0u64..400_000).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Connected),
        1 => (0u8..3, 0u64..6).prop_map(|(relay, epoch)| Op::LeaseObserved { relay, epoch }),
    ]
}

/// Relays 0 and 1 are owned; relay 2 is not.
fn relay_of(n: u8) -> RelayKey {
    RelayKey([10 + n; 32])
}

fn types_of(bits: u8) -> Vec<PendingType> {
    PendingType::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect()
}

/// Drives a worker through ops, checking the invariants after every step.
struct Harness {
    worker: WorkerCore,
    now: Instant,
    outstanding: Vec<Effect>,
    answered: Vec<EffectId>,
    keys: u32,
    /// (relay, updated_at, is_pending) of accepted notices, in order, with the index into
    /// `resyncs` at the time of acceptance.
    accepted: Vec<(RelayKey, u64, bool, usize)>,
    /// (relay, resynced_through) of every SendResyncComplete handed out.
    resyncs: Vec<(RelayKey, u64)>,
}

impl Harness {
    fn new(seed: u64, config: WorkerConfig) -> Self {
        let mut worker = WorkerCore::new(config, ME, seed);
        worker.register_relay(relay_of(0), [1; 32], Some("e0".into()));
        worker.register_relay(relay_of(1), [2; 32], None);
        Self {
            worker,
            now: test_start(),
            outstanding: Vec::new(),
            answered: Vec::new(),
            keys: 0,
            accepted: Vec::new(),
            resyncs: Vec::new(),
        }
    }

    fn poll_all(&mut self) -> Result<(), TestCaseError> {
        while let Some(effect) = self.worker.poll_effect() {
            prop_assert!(
                self.outstanding.iter().all(|o| o.relay != effect.relay),
                "two effects outstanding for one relay"
            );
            if let Some(message) = effect.resync_complete() {
                let newest = self
                    .worker
                    .stored_notice(&effect.relay)
                    .map(|n| n.push.updated_at);
                prop_assert!(
                    newest.is_some_and(|newest| message.resynced_through <= newest),
                    "resync-complete through {:?} beyond the newest notice {:?}",
                    message.resynced_through,
                    newest
                );
                self.resyncs
                    .push((effect.relay, message.resynced_through.as_millis()));
            }
            self.outstanding.push(effect);
        }
        Ok(())
    }

    fn answer(&mut self, index: usize, ok: bool) -> Result<(), TestCaseError> {
        let effect = self.outstanding.remove(index);
        let result = if ok {
            self.keys += 1;
            Ok(success(&effect.kind, self.keys))
        } else {
            Err("injected failure".to_owned())
        };
        prop_assert_eq!(
            self.worker
                .handle_effect_result(effect.id, result, self.now),
            Ok(())
        );
        self.answered.push(effect.id);
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Push {
                relay,
                updated_at,
                cleared,
                types,
                lease,
            } => {
                let state = if cleared {
                    PendingState::Cleared
                } else {
                    PendingState::Pending
                };
                let push = notice(relay_of(relay), updated_at, state, &types_of(types), lease);
                let ack = self.worker.handle_push(GATEWAY, &push, self.now);
                // An unknown relay's ack echoes no `updated_at`, so it acks nothing.
                let echoed = if relay < 2 {
                    push.updated_at
                } else {
                    UnixTime(0)
                };
                prop_assert_eq!((ack.push_id, ack.updated_at), (push.push_id, echoed));
                if ack.status == AckStatus::Accepted {
                    prop_assert!(relay < 2, "accepted a push for an unknown relay");
                    self.accepted
                        .push((relay_of(relay), updated_at, !cleared, self.resyncs.len()));
                }
            }
            Op::Poll => self.poll_all()?,
            Op::Answer { pick, ok, stale } => {
                if stale && !self.answered.is_empty() {
                    let id = self.answered[pick % self.answered.len()];
                    let result =
                        self.worker
                            .handle_effect_result(id, Ok(EffectOutput::Done), self.now);
                    prop_assert_eq!(result, Err(WorkerError::StaleEffect(id)));
                } else if !self.outstanding.is_empty() {
                    let index = pick % self.outstanding.len();
                    self.answer(index, ok)?;
                }
            }
            Op::Advance { millis } => {
                self.now += Duration::from_millis(millis);
                self.handle_timeout()?;
            }
            Op::Connected => self.worker.handle_gateway_connected(self.now),
            Op::LeaseObserved { relay, epoch } => {
                let result = self
                    .worker
                    .handle_lease_observed(relay_of(relay), epoch, self.now);
                prop_assert_eq!(result.is_ok(), relay < 2);
            }
        }
        Ok(())
    }

    /// `handle_timeout(now)` then a full drain: the next deadline must be later than `now`.
    fn handle_timeout(&mut self) -> Result<(), TestCaseError> {
        self.worker.handle_timeout(self.now);
        self.poll_all()?;
        while self.worker.poll_event().is_some() {}
        if let Some((deadline, _)) = self.worker.poll_timeout() {
            prop_assert!(
                deadline > self.now,
                "deadline {:?} not after {:?}",
                deadline,
                self.now
            );
        }
        Ok(())
    }

    /// Lets every effect succeed (after a reconnect, which resumes failed jobs) until quiet.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.worker.handle_gateway_connected(self.now);
        for _ in 0..10_000 {
            self.poll_all()?;
            if !self.outstanding.is_empty() {
                self.answer(0, true)?;
                continue;
            }
            match self.worker.poll_timeout() {
                Some((deadline, _)) => {
                    self.now = self.now.max(deadline);
                    self.handle_timeout()?;
                }
                None => return Ok(()),
            }
        }
        Err(TestCaseError::fail("the worker never settled"))
    }
}

proptest! {
    /// After `handle_timeout(t)` and a full drain, the next deadline is None or later than `t`.
    #[test]
    fn next_deadline_is_after_every_handled_timeout(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let config = WorkerConfig {
            step_retry_base: Duration::from_millis(500),
            step_retry_max: Duration::from_secs(60),
            max_step_attempts: 4,
            rotation_history: 50,
        };
        let mut harness = Harness::new(seed, config);
        for op in ops {
            harness.apply(op)?;
            harness.handle_timeout()?;
        }
    }

    /// For any interleaving of pushes, results (ok, failed, stale) and time: at most one effect
    /// per relay is outstanding, resync-complete never claims more than the newest notice, and
    /// once every effect succeeds each accepted pending notice is covered by a resync-complete
    /// (or superseded by a newer cleared notice).
    #[test]
    fn every_accepted_pending_notice_is_resynced_one_effect_per_relay_at_a_time(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let config = WorkerConfig { max_step_attempts: 3, ..WorkerConfig::default() };
        let mut harness = Harness::new(seed, config);
        for op in ops {
            harness.apply(op)?;
        }
        harness.settle()?;
        for (relay, updated_at, is_pending, resyncs_before) in harness.accepted.clone() {
            if !is_pending {
                continue;
            }
            let resynced = harness.resyncs[resyncs_before..]
                .iter()
                .any(|(r, through)| *r == relay && *through >= updated_at);
            let superseded = harness
                .accepted
                .iter()
                .any(|(r, at, pending, _)| *r == relay && !*pending && *at > updated_at);
            prop_assert!(
                resynced || superseded,
                "notice {} of {:?} was accepted but never resynced", updated_at, relay
            );
        }
        for relay in [relay_of(0), relay_of(1)] {
            let state = harness.worker.job_state(&relay);
            prop_assert!(
                !matches!(state, Some(JobState::Queued | JobState::InProgress | JobState::Error)),
                "{:?} still {:?} after settling", relay, state
            );
        }
        let ids: BTreeSet<EffectId> = harness.answered.iter().copied().collect();
        prop_assert_eq!(ids.len(), harness.answered.len(), "an effect id was reused");
    }
}

/// Review finding: rotating after a resync-complete the gateway answered
/// "still pending" would fix the old writer's final length before a gateway
/// write that landed meanwhile, cutting it off.
#[test]
fn a_still_pending_answer_defers_the_rotation_to_the_job_for_the_newer_notice() {
    let t0 = test_start();
    let mut worker = worker();
    let _ = worker.handle_push(GATEWAY, &pending(100, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 1,
            }),
            t0,
        )
        .unwrap();
    let resync = worker.poll_effect().unwrap();
    assert_eq!(resync.kind.name(), "send-resync-complete");
    worker
        .handle_effect_result(
            resync.id,
            Ok(EffectOutput::ResyncAnswered { cleared: false }),
            t0,
        )
        .unwrap();
    assert!(
        worker.poll_effect().is_none(),
        "no rotation on a still-pending answer"
    );
    assert_eq!(worker.job_state(&RELAY), Some(JobState::Completed));

    // The newer notice runs the job again; this time the gateway clears.
    let _ = worker.handle_push(GATEWAY, &pending(200, &[PendingType::Event]), t0);
    let ingest = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            ingest.id,
            Ok(EffectOutput::Ingested {
                gateway_writer_length: 2,
            }),
            t0,
        )
        .unwrap();
    let resync = worker.poll_effect().unwrap();
    worker
        .handle_effect_result(
            resync.id,
            Ok(EffectOutput::ResyncAnswered { cleared: true }),
            t0,
        )
        .unwrap();
    let effects = run_all(&mut worker, t0);
    assert_eq!(names(&effects), ROTATION);
    let remove = effects.iter().find_map(|effect| match &effect.kind {
        EffectKind::AppendOwnerOps { ops } => ops.iter().find_map(|op| match op {
            OwnerOp::RemoveWriter { final_length, .. } => Some(*final_length),
            _ => None,
        }),
        _ => None,
    });
    // The final length comes from the re-ingest after the revoke (`run_all`
    // answers 10), never from before the later write (2 would cut it off).
    assert_eq!(
        remove,
        Some(10),
        "the old writer ends after the later write"
    );
}

/// Seen in simulation traces: a reconnect rotation for lease 3, then the
/// pending notice written under lease 3 ran its own rotation again.
#[test]
fn a_resync_for_a_lease_already_rotated_does_not_rotate_again() {
    let t0 = test_start();
    let mut worker = worker();
    worker.handle_lease_observed(RELAY, 3, t0).unwrap();
    worker.handle_gateway_connected(t0);
    let effects = run_all(&mut worker, t0);
    let mut expected = vec!["ingest-gateway-events"];
    expected.extend(ROTATION);
    assert_eq!(
        names(&effects),
        expected,
        "the reconnect rotation for lease 3"
    );
    assert_eq!(worker.rotations().count(), 1);

    let push = notice(
        RELAY,
        100,
        PendingState::Pending,
        &[PendingType::Event],
        Some(3),
    );
    let _ = worker.handle_push(GATEWAY, &push, t0);
    let effects = run_all(&mut worker, t0);
    assert_eq!(
        names(&effects),
        vec!["ingest-gateway-events", "send-resync-complete"],
        "resynced, but lease 3 is already answered by a rotation"
    );
    assert_eq!(worker.rotations().count(), 1);

    // A write under a newer lease does rotate.
    let push = notice(
        RELAY,
        200,
        PendingState::Pending,
        &[PendingType::Event],
        Some(4),
    );
    let _ = worker.handle_push(GATEWAY, &push, t0);
    let effects = run_all(&mut worker, t0);
    assert!(names(&effects).contains(&"generate-writer-key"));
    assert_eq!(worker.rotations().count(), 2);
}
