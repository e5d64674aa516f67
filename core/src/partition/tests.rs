use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::gateway::{Gateway, GatewayConfig, Transmit};
use crate::health::PeerHealth;
use crate::ids::PeerId;
use crate::registry::Registry;
use crate::router::SessionKind;
use crate::time::{UnixTime, test_start};
use crate::wire::{
    AckStatus, CoreAdvert, CoreRole, Heartbeat, MirrorAdvertise, NostrFrame, PushAck,
    RegisterRelays, RelayRegistration,
};

const WORKER: PeerId = PeerId([1; 32]);

/// A relay key whose leading bytes put it in partition `wanted` of `count`.
fn relay_in(wanted: usize, count: usize, salt: u8) -> RelayKey {
    let mut key = [salt; 32];
    key[..8].copy_from_slice(&(wanted as u64).to_le_bytes());
    let relay = RelayKey(key);
    assert_eq!(Partitioning::new(count).unwrap().of_relay(&relay), wanted);
    relay
}

fn registration(relays: &[RelayKey]) -> RegisterRelays {
    RegisterRelays {
        relays: BoundedVec::new(
            relays
                .iter()
                .map(|relay_key| RelayRegistration {
                    relay_key: *relay_key,
                    identifiers: BoundedVec::default(),
                    metadata: Default::default(),
                    requires_auth: false,
                    escrow: None,
                })
                .collect(),
        )
        .unwrap(),
    }
}

fn partitions(count: usize) -> Vec<Gateway> {
    Partitioning::new(count)
        .unwrap()
        .partitions()
        .map(|partition| {
            Gateway::in_partition(
                GatewayConfig::default(),
                Registry::new(),
                partition,
                test_start(),
                UnixTime(1_000),
            )
        })
        .collect()
}

fn transmits(gateway: &mut Gateway) -> Vec<Transmit> {
    std::iter::from_fn(|| gateway.poll_transmit()).collect()
}

fn snapshot_of(relays: &[RelayKey]) -> RegistrySnapshot {
    let mut registry = Registry::new();
    let register = registration(relays);
    for relay in register.relays.iter() {
        registry.handle_registration(WORKER, relay, UnixTime(5));
    }
    registry.snapshot()
}

#[test]
fn partition_counts_outside_one_to_a_u16_are_refused() {
    assert_eq!(Partitioning::new(0), Err(PartitionError::Count(0)));
    assert_eq!(
        Partitioning::new(70_000),
        Err(PartitionError::Count(70_000))
    );
    assert_eq!(Partitioning::new(1), Ok(Partitioning::single()));
}

#[test]
fn a_registration_across_partitions_is_answered_once_with_every_relay() {
    let t0 = test_start();
    let mut gateways = partitions(2);
    let (even, odd) = (relay_in(0, 2, 3), relay_in(1, 2, 4));
    let register = registration(&[odd, even]);
    let acks: Vec<RegisterAck> = gateways
        .iter_mut()
        .map(|gateway| gateway.handle_registration(WORKER, &register, t0))
        .collect();
    assert_eq!(acks[0].accepted.to_vec(), vec![even]);
    assert_eq!(acks[1].accepted.to_vec(), vec![odd]);
    let merged = merge_register_acks(acks);
    assert_eq!(merged.accepted.to_vec(), vec![even, odd]);
    assert!(gateways[0].registry().relay(&even).is_some());
    assert!(gateways[0].registry().relay(&odd).is_none());
    assert!(gateways[1].registry().relay(&odd).is_some());
    assert!(gateways[1].registry().relay(&even).is_none());
    // A registering worker is alive in every partition, relays there or not.
    let mut empty = partitions(2);
    empty[1].handle_link_up(WORKER, t0);
    let _ = empty[1].handle_registration(WORKER, &registration(&[even]), t0);
    assert_eq!(empty[1].health().health_of(&WORKER), PeerHealth::Healthy);
    assert!(empty[1].registry().is_empty());
}

#[test]
fn every_partition_hears_a_heartbeat_and_only_partition_zero_answers() {
    let t0 = test_start();
    let mut gateways = partitions(3);
    let beat = Frame::new(
        9,
        Message::Heartbeat(Heartbeat {
            seq: 4,
            sent_at: UnixTime(1),
        }),
    );
    assert_eq!(Partitioning::new(3).unwrap().route(&beat), Route::Every);
    for gateway in &mut gateways {
        gateway.handle_link_up(WORKER, t0);
        let _ = transmits(gateway);
        gateway.handle_frame(WORKER, beat.clone(), t0 + Duration::from_millis(1));
    }
    let answers: Vec<usize> = gateways
        .iter_mut()
        .map(|gateway| transmits(gateway).len())
        .collect();
    assert_eq!(answers, vec![1, 0, 0]);
    for gateway in &gateways {
        assert_eq!(gateway.health().health_of(&WORKER), PeerHealth::Healthy);
    }
}

#[test]
fn a_mirror_advert_counts_in_the_partition_of_each_advertised_relay() {
    let t0 = test_start();
    let mut gateways = partitions(2);
    let (even, odd) = (relay_in(0, 2, 5), relay_in(1, 2, 6));
    let register = registration(&[even, odd]);
    for gateway in &mut gateways {
        let _ = gateway.handle_registration(WORKER, &register, t0);
    }
    let advert = |relay_key: RelayKey, core_key: u8| CoreAdvert {
        relay_key,
        core_key: [core_key; 32],
        role: CoreRole::Writer,
        length: 12,
        announce: false,
        priority: 0,
    };
    let frame = Frame::new(
        0,
        Message::MirrorAdvertise(MirrorAdvertise {
            cores: BoundedVec::new(vec![advert(even, 1), advert(odd, 2)]).unwrap(),
        }),
    );
    for gateway in &mut gateways {
        gateway.handle_frame(WORKER, frame.clone(), t0);
    }
    let lag = |gateway: &Gateway, relay| {
        gateway
            .health()
            .mirror_freshness(&relay, t0)
            .map(|fresh| fresh.lag_blocks)
    };
    assert_eq!(lag(&gateways[0], even), Some(12));
    assert_eq!(lag(&gateways[0], odd), None);
    assert_eq!(lag(&gateways[1], odd), Some(12));
    assert_eq!(lag(&gateways[1], even), None);
}

#[test]
fn a_workers_answer_reaches_the_partition_whose_session_it_names() {
    let t0 = test_start();
    let partitioning = Partitioning::new(2).unwrap();
    let mut gateways = partitions(2);
    let relays = [relay_in(0, 2, 7), relay_in(1, 2, 8)];
    for (index, gateway) in gateways.iter_mut().enumerate() {
        let _ = gateway.handle_registration(WORKER, &registration(&relays), t0);
        for _ in 0..3 {
            let session = gateway
                .open_session(&relays[index].to_hex(), SessionKind::Client, t0)
                .unwrap();
            assert_eq!(partitioning.of_session(session), index);
            let answer = Frame::new(
                0,
                Message::NostrFrame(NostrFrame {
                    relay_key: relays[index],
                    session: session.0,
                    frame: Default::default(),
                }),
            );
            assert_eq!(partitioning.route(&answer), Route::One(index));
        }
    }
    let ack = Frame::new(
        0,
        Message::PushAck(PushAck {
            push_id: 1,
            relay_key: relays[1],
            updated_at: UnixTime(1),
            status: AckStatus::Accepted,
        }),
    );
    assert_eq!(partitioning.route(&ack), Route::One(1));
}

fn relay_keys() -> impl Strategy<Value = Vec<RelayKey>> {
    prop::collection::btree_set(any::<[u8; 32]>(), 0..40)
        .prop_map(|keys| keys.into_iter().map(RelayKey).collect())
}

proptest! {
    #[test]
    fn every_relay_belongs_to_exactly_one_partition(key in any::<[u8; 32]>(), count in 1usize..64) {
        let partitioning = Partitioning::new(count).unwrap();
        let relay = RelayKey(key);
        let owners: Vec<Partition> =
            partitioning.partitions().filter(|partition| partition.owns(&relay)).collect();
        prop_assert_eq!(owners.len(), 1);
        prop_assert_eq!(owners[0].index(), partitioning.of_relay(&relay));
    }

    #[test]
    fn session_ids_of_different_partitions_never_collide(
        count in 1usize..16,
        opened in 1u64..200,
    ) {
        let partitioning = Partitioning::new(count).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for partition in partitioning.partitions() {
            let (first, stride) = partition.session_ids();
            for k in 0..opened {
                let id = SessionId(first + k * stride);
                prop_assert!(seen.insert(id), "{:?} handed out twice", id);
                prop_assert_eq!(partitioning.of_session(id), partition.index());
            }
        }
    }

    #[test]
    fn a_snapshot_restarts_under_any_partition_count_with_every_relay_once(
        relays in relay_keys(),
        before in 1usize..9,
        after in 1usize..9,
    ) {
        let whole = snapshot_of(&relays);
        let first = Partitioning::new(before).unwrap();
        let parts = first.split_snapshot(whole.clone());
        prop_assert_eq!(parts.len(), before);
        for (index, part) in parts.iter().enumerate() {
            prop_assert!(part.relays.iter().all(|record| first.of_relay(&record.relay_key) == index));
        }
        let merged = merge_snapshots(parts);
        prop_assert_eq!(&merged, &whole);
        let second = Partitioning::new(after).unwrap();
        let again = merge_snapshots(second.split_snapshot(merged));
        prop_assert_eq!(again, whole);
    }
}
