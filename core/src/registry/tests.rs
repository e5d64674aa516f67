use proptest::prelude::*;

use super::*;
use crate::wire::{BoundedString, BoundedVec, EscrowRegistration};

fn relay(n: u8) -> RelayKey {
    RelayKey([n; 32])
}

fn worker(n: u8) -> PeerId {
    PeerId([n; 32])
}

fn registration(relay_key: RelayKey, name: Option<&str>, aliases: &[&str]) -> RelayRegistration {
    RelayRegistration {
        relay_key,
        identifiers: BoundedVec::new(
            aliases
                .iter()
                .map(|alias| BoundedString::new((*alias).to_owned()).unwrap())
                .collect(),
        )
        .unwrap(),
        metadata: crate::wire::RelayMetadata {
            name: name.map(|name| BoundedString::new(name.to_owned()).unwrap()),
            ..Default::default()
        },
        requires_auth: false,
        escrow: None,
    }
}

fn event_mark() -> PendingMark {
    PendingMark {
        kind: PendingType::Event,
        reason: None,
        drive_identifier: None,
        drive_version: None,
        lease_version: Some(1),
    }
}

#[test]
fn reregistration_keeps_pending_flags_and_merges_metadata() {
    let mut registry = Registry::new();
    registry.handle_registration(
        worker(1),
        &registration(relay(1), Some("a"), &["x"]),
        UnixTime(1),
    );
    registry
        .mark_pending(&relay(1), event_mark(), UnixTime(2))
        .unwrap();
    registry.handle_registration(
        worker(1),
        &registration(relay(1), None, &["y"]),
        UnixTime(3),
    );

    let record = registry.relay(&relay(1)).unwrap();
    assert!(record.pending.pending);
    assert_eq!(record.pending.types, BTreeSet::from([PendingType::Event]));
    assert_eq!(
        record.metadata.name.as_deref(),
        Some("a"),
        "an omitted field is kept"
    );
    assert_eq!(
        record.identifiers,
        BTreeSet::from(["x".to_owned(), "y".to_owned()])
    );
    assert_eq!(registry.resolve("y"), Some(relay(1)));
}

#[test]
fn older_metadata_does_not_overwrite_newer() {
    let mut registry = Registry::new();
    let mut newer = registration(relay(1), Some("new"), &[]);
    newer.metadata.metadata_updated_at = Some(UnixTime(20));
    let mut older = registration(relay(1), Some("old"), &[]);
    older.metadata.metadata_updated_at = Some(UnixTime(10));
    registry.handle_registration(worker(1), &newer, UnixTime(1));
    registry.handle_registration(worker(2), &older, UnixTime(2));
    let record = registry.relay(&relay(1)).unwrap();
    assert_eq!(record.metadata.name.as_deref(), Some("new"));
    assert_eq!(
        record.workers.len(),
        2,
        "the stale worker is still recorded as serving"
    );
}

#[test]
fn relay_stays_registered_when_its_workers_detach() {
    let mut registry = Registry::new();
    registry.handle_registration(worker(1), &registration(relay(1), None, &[]), UnixTime(1));
    assert!(registry.detach_worker(&relay(1), &worker(1), UnixTime(2)));
    assert!(registry.relay(&relay(1)).is_some());
    assert_eq!(registry.workers_of(&relay(1)).count(), 0);
}

#[test]
fn removal_with_pending_writes_needs_force() {
    let mut registry = Registry::new();
    registry.handle_registration(
        worker(1),
        &registration(relay(1), None, &["alias"]),
        UnixTime(1),
    );
    registry
        .mark_pending(&relay(1), event_mark(), UnixTime(2))
        .unwrap();
    assert_eq!(
        registry.remove_relay(&relay(1), Removal::IfNoPendingWrites),
        Err(RegistryError::PendingWritesOutstanding(relay(1)))
    );
    registry.remove_relay(&relay(1), Removal::Force).unwrap();
    assert!(registry.relay(&relay(1)).is_none());
    assert_eq!(
        registry.resolve("alias"),
        None,
        "aliases leave with the relay"
    );
}

#[test]
fn alias_claimed_by_a_second_relay_stays_with_the_first() {
    let mut registry = Registry::new();
    registry.handle_registration(
        worker(1),
        &registration(relay(1), None, &["shared"]),
        UnixTime(1),
    );
    registry.handle_registration(
        worker(2),
        &registration(relay(2), None, &["shared"]),
        UnixTime(2),
    );
    assert_eq!(registry.resolve("shared"), Some(relay(1)));
    let events: Vec<_> = std::iter::from_fn(|| registry.poll_event()).collect();
    assert!(events.contains(&RegistryEvent::AliasConflict {
        alias: "shared".into(),
        owner: relay(1),
        claimant: relay(2),
    }));
}

#[test]
fn pending_updated_at_strictly_increases_even_within_one_millisecond() {
    let mut registry = Registry::new();
    registry.handle_registration(worker(1), &registration(relay(1), None, &[]), UnixTime(1));
    let first = registry
        .mark_pending(&relay(1), event_mark(), UnixTime(5))
        .unwrap()
        .updated_at;
    let second = registry
        .mark_pending(&relay(1), event_mark(), UnixTime(5))
        .unwrap()
        .updated_at;
    assert!(second > first);
    assert_eq!(
        registry.relay(&relay(1)).unwrap().pending.since,
        Some(UnixTime(5))
    );
}

#[test]
fn clear_keeps_only_the_drive_version() {
    let mut registry = Registry::new();
    registry.handle_registration(worker(1), &registration(relay(1), None, &[]), UnixTime(1));
    let mark = PendingMark {
        kind: PendingType::Drive,
        reason: Some("Drive Upload!".into()),
        drive_identifier: Some("drive-1".into()),
        drive_version: Some(7),
        lease_version: Some(2),
    };
    let pending = registry.mark_pending(&relay(1), mark, UnixTime(2)).unwrap();
    assert_eq!(pending.reason.as_deref(), Some("drive-upload-"));
    registry.clear_pending(&relay(1), UnixTime(3)).unwrap();
    let pending = &registry.relay(&relay(1)).unwrap().pending;
    assert!(!pending.pending);
    assert!(pending.types.is_empty());
    assert_eq!(pending.drive_version, Some(7));
}

/// Review finding: a write in the same millisecond as the clear looked no
/// newer than the `cleared` notice, so workers dropped its push.
#[test]
fn a_mark_after_a_clear_is_newer_than_the_clear_even_within_one_millisecond() {
    let mut registry = Registry::new();
    registry.handle_registration(worker(1), &registration(relay(1), None, &[]), UnixTime(1));
    let marked = registry
        .mark_pending(&relay(1), event_mark(), UnixTime(50))
        .unwrap()
        .updated_at
        .unwrap();
    registry.clear_pending(&relay(1), UnixTime(50)).unwrap();
    let cleared = registry
        .relay(&relay(1))
        .unwrap()
        .pending
        .updated_at
        .unwrap();
    assert!(
        cleared > marked,
        "the cleared notice is newer than the last mark"
    );
    let next = registry
        .mark_pending(&relay(1), event_mark(), UnixTime(50))
        .unwrap()
        .updated_at
        .unwrap();
    assert!(next > cleared);
}

#[test]
fn pending_flags_serialise_with_the_original_field_names() {
    let pending = PendingWrites {
        pending: true,
        types: BTreeSet::from([PendingType::Event]),
        ..PendingWrites::default()
    };
    let json = serde_json::to_value(&pending).unwrap();
    assert_eq!(json["gatewayPendingWrites"], true);
    assert!(json.get("gatewayPendingTypes").is_some());
    assert!(json.get("gatewayDriveVersion").is_some());
}

#[test]
fn escrow_info_is_replaced_by_a_newer_deposit_and_kept_when_omitted() {
    let mut registry = Registry::new();
    let mut with_escrow = registration(relay(1), None, &[]);
    with_escrow.escrow = Some(EscrowRegistration {
        escrow_id: BoundedString::new("escrow-1".to_owned()).unwrap(),
        policy_version: BoundedString::new("v1".to_owned()).unwrap(),
        permitted_gateways: BoundedVec::new(vec![worker(9)]).unwrap(),
        expires_at: UnixTime(100),
    });
    registry.handle_registration(worker(1), &with_escrow, UnixTime(1));
    registry.handle_registration(worker(1), &registration(relay(1), None, &[]), UnixTime(2));
    let record = registry.relay(&relay(1)).unwrap();
    assert!(record.escrow_enabled());
    assert!(
        record
            .escrow
            .as_ref()
            .unwrap()
            .permitted_gateways
            .contains(&worker(9))
    );
}

#[test]
fn snapshot_round_trips_and_rejects_garbage() {
    let mut registry = Registry::new();
    registry.handle_registration(
        worker(1),
        &registration(relay(1), Some("n"), &["a"]),
        UnixTime(1),
    );
    registry
        .mark_pending(&relay(1), event_mark(), UnixTime(2))
        .unwrap();
    let bytes = registry.snapshot_bytes().unwrap();
    let restored = Registry::restore_bytes(&bytes).unwrap();
    assert_eq!(restored.snapshot(), registry.snapshot());
    assert_eq!(restored.resolve("a"), Some(relay(1)));
    assert!(Registry::restore_bytes(&[0xff, 0xff, 0xff]).is_err());
    let mut wrong = registry.snapshot();
    wrong.version = 99;
    assert_eq!(
        Registry::restore(wrong).err(),
        Some(RegistryError::SnapshotVersion { got: 99 })
    );
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        worker: u8,
        relay: u8,
        name: Option<u8>,
        stamp: Option<u8>,
    },
    Mark {
        relay: u8,
        kind: u8,
    },
    Detach {
        worker: u8,
        relay: u8,
    },
    Clear {
        relay: u8,
    },
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..3, proptest::option::of(0u8..4), proptest::option::of(0u8..8))
            .prop_map(|(worker, relay, name, stamp)| Op::Register { worker, relay, name, stamp }),
        2 => (0u8..3, 0u8..3).prop_map(|(relay, kind)| Op::Mark { relay, kind }),
        1 => (0u8..4, 0u8..3).prop_map(|(worker, relay)| Op::Detach { worker, relay }),
        1 => (0u8..3).prop_map(|relay| Op::Clear { relay }),
        1 => Just(Op::SnapshotRestore),
    ]
}

proptest! {
    /// Registry merge never loses pending flags: after any interleaving of
    /// registrations, detaches and snapshot restores, every type marked since
    /// the last clear is still pending.
    #[test]
    fn registry_merge_never_loses_pending_flags(ops in proptest::collection::vec(op(), 1..60)) {
        let mut registry = Registry::new();
        let mut expected: BTreeMap<u8, BTreeSet<PendingType>> = BTreeMap::new();
        let kinds = [PendingType::Event, PendingType::Drive, PendingType::HttpArtifact];
        for (step, op) in ops.into_iter().enumerate() {
            let now = UnixTime(step as u64);
            match op {
                Op::Register { worker: w, relay: r, name, stamp } => {
                    let name = name.map(|n| format!("name-{n}"));
                    let mut reg = registration(relay(r), name.as_deref(), &[]);
                    reg.metadata.metadata_updated_at = stamp.map(|s| UnixTime(u64::from(s)));
                    registry.handle_registration(worker(w), &reg, now);
                }
                Op::Mark { relay: r, kind } => {
                    let kind = kinds[usize::from(kind) % kinds.len()];
                    let mark = PendingMark { kind, ..event_mark() };
                    if registry.mark_pending(&relay(r), mark, now).is_ok() {
                        expected.entry(r).or_default().insert(kind);
                    }
                }
                Op::Detach { worker: w, relay: r } => {
                    registry.detach_worker(&relay(r), &worker(w), now);
                }
                Op::Clear { relay: r } => {
                    if registry.clear_pending(&relay(r), now).is_ok() {
                        expected.remove(&r);
                    }
                }
                Op::SnapshotRestore => {
                    let bytes = registry.snapshot_bytes().unwrap();
                    registry = Registry::restore_bytes(&bytes).unwrap();
                }
            }
            for (r, types) in &expected {
                let record = registry.relay(&relay(*r)).expect("a relay with pending writes is never dropped");
                prop_assert!(record.pending.pending);
                prop_assert!(types.is_subset(&record.pending.types));
            }
        }
    }
}

#[test]
fn an_operator_registration_creates_the_relay_with_its_aliases_and_attaches_no_worker() {
    let mut registry = Registry::new();
    registry.handle_operator_registration(
        &registration(relay(4), Some("club"), &["npub1op:club"]),
        UnixTime(10),
    );
    let record = registry.relay(&relay(4)).unwrap();
    assert!(record.workers.is_empty());
    assert_eq!(registry.resolve("npub1op:club"), Some(relay(4)));
    let events: Vec<_> = std::iter::from_fn(|| registry.poll_event()).collect();
    assert!(events.contains(&RegistryEvent::RelayAdded { relay: relay(4) }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RegistryEvent::WorkerAttached { .. }))
    );
    // A worker registering later attaches to the same record and keeps the alias.
    registry.handle_registration(worker(1), &registration(relay(4), None, &[]), UnixTime(20));
    let record = registry.relay(&relay(4)).unwrap();
    assert_eq!(record.workers.len(), 1);
    assert!(record.identifiers.contains("npub1op:club"));
}
