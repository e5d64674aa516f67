use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::relay::EventJson;

fn key(n: u8) -> WriterKey {
    WriterKey([n; 32])
}

fn add(n: u8) -> RelayOp {
    RelayOp::AddWriter { key: key(n) }
}

fn remove(n: u8, final_length: u64) -> RelayOp {
    RelayOp::RemoveWriter {
        key: key(n),
        final_length,
    }
}

/// Applies `ops` from index 0, returning each result.
fn replay(ops: &[RelayOp]) -> (Membership, Vec<Result<MembershipChange, MembershipError>>) {
    let mut membership = Membership::new();
    let results = (0..)
        .zip(ops)
        .map(|(index, op)| membership.apply(index, op))
        .collect();
    (membership, results)
}

#[test]
fn an_added_writer_counts_every_entry_of_its_log() {
    let (membership, results) = replay(&[add(1)]);
    assert_eq!(results, [Ok(MembershipChange::Added { key: key(1) })]);
    assert!(membership.is_member(&key(1)));
    assert_eq!(membership.counted_length(&key(1), 40), 40);
    assert!(membership.counts(&key(1), u64::MAX - 1));
    assert_eq!(
        membership.status(&key(1)),
        Some(WriterStatus::Member { added_at: 0 })
    );
}

#[test]
fn a_key_never_added_counts_nothing() {
    let (membership, _) = replay(&[add(1)]);
    assert!(!membership.is_member(&key(2)));
    assert_eq!(membership.counted_length(&key(2), 40), 0);
    assert!(!membership.counts(&key(2), 0));
    assert_eq!(membership.status(&key(2)), None);
}

#[test]
fn a_removed_writer_counts_only_below_its_final_length() {
    let (membership, results) = replay(&[add(1), add(2), remove(1, 5)]);
    assert_eq!(
        results[2],
        Ok(MembershipChange::Removed {
            key: key(1),
            final_length: 5
        })
    );
    assert!(!membership.is_member(&key(1)));
    assert_eq!(
        membership.counted_length(&key(1), 3),
        3,
        "log shorter than final"
    );
    assert_eq!(membership.counted_length(&key(1), 9), 5);
    assert!(membership.counts(&key(1), 4));
    assert!(!membership.counts(&key(1), 5));
    assert_eq!(
        membership.status(&key(1)),
        Some(WriterStatus::Removed {
            added_at: 0,
            removed_at: 2,
            final_length: 5
        })
    );
    assert_eq!(membership.writers().collect::<Vec<_>>(), [key(2)]);
    assert_eq!(membership.removed().collect::<Vec<_>>(), [(key(1), 5)]);
}

#[test]
fn rotation_removes_the_old_key_and_adds_a_fresh_one() {
    let (membership, results) = replay(&[add(1), add(9), remove(9, 3), add(10)]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(membership.writers().collect::<Vec<_>>(), [key(1), key(10)]);
    assert_eq!(membership.removed().collect::<Vec<_>>(), [(key(9), 3)]);
}

#[test]
fn a_removed_key_cannot_be_re_added() {
    let (membership, results) = replay(&[add(1), remove(1, 2), add(1)]);
    assert_eq!(
        results[2],
        Err(MembershipError::ReAddRemoved { key: key(1) })
    );
    assert!(!membership.is_member(&key(1)));
    assert_eq!(membership.counted_length(&key(1), 10), 2);
    assert_eq!(
        membership.applied_len(),
        3,
        "the skipped op consumed its index"
    );
}

#[test]
fn a_second_removal_does_not_move_final_length() {
    let (membership, results) = replay(&[add(1), remove(1, 2), remove(1, 50)]);
    assert_eq!(
        results[2],
        Err(MembershipError::AlreadyRemoved { key: key(1) })
    );
    assert_eq!(membership.counted_length(&key(1), 100), 2);
}

#[test]
fn removing_an_unknown_key_is_an_error() {
    let (membership, results) = replay(&[remove(4, 1)]);
    assert_eq!(
        results[0],
        Err(MembershipError::RemoveUnknown { key: key(4) })
    );
    assert_eq!(membership.status(&key(4)), None);
    assert_eq!(membership.applied_len(), 1);
}

#[test]
fn an_event_in_the_owner_log_is_not_counted() {
    let event = RelayOp::Event(EventJson::new(&b"{}"[..]).unwrap());
    let (membership, results) = replay(&[event, add(1)]);
    assert_eq!(results[0], Err(MembershipError::EventInOwnerLog));
    assert!(results[0].as_ref().unwrap_err().consumed_index());
    assert_eq!(results[1], Ok(MembershipChange::Added { key: key(1) }));
    assert_eq!(
        membership.status(&key(1)),
        Some(WriterStatus::Member { added_at: 1 })
    );
}

#[test]
fn adding_a_current_member_again_changes_nothing() {
    let (membership, results) = replay(&[add(1), add(1)]);
    assert_eq!(
        results[1],
        Ok(MembershipChange::AlreadyMember { key: key(1) })
    );
    assert_eq!(
        membership.status(&key(1)),
        Some(WriterStatus::Member { added_at: 0 })
    );
}

#[test]
fn ops_out_of_order_are_refused_without_consuming_an_index() {
    let mut membership = Membership::new();
    let error = membership.apply(1, &add(1)).unwrap_err();
    assert_eq!(
        error,
        MembershipError::OutOfOrder {
            expected: 0,
            got: 1
        }
    );
    assert!(!error.consumed_index());
    assert_eq!(membership, Membership::new());
    membership.apply(0, &add(1)).unwrap();
    assert_eq!(
        membership.apply(0, &remove(1, 0)),
        Err(MembershipError::OutOfOrder {
            expected: 1,
            got: 0
        }),
        "a replayed index is refused too"
    );
    assert!(membership.is_member(&key(1)));
}

fn owner_op() -> impl Strategy<Value = RelayOp> {
    prop_oneof![
        (0u8..4).prop_map(add),
        (0u8..4, 0u64..6).prop_map(|(n, length)| remove(n, length)),
        Just(RelayOp::Event(EventJson::new(&b"{}"[..]).unwrap())),
    ]
}

proptest! {
    #[test]
    fn a_refused_op_changes_nothing_but_the_position(ops in vec(owner_op(), 0..24)) {
        let mut membership = Membership::new();
        for (index, op) in (0..).zip(&ops) {
            let before = membership.clone();
            if membership.apply(index, op).is_err() {
                prop_assert_eq!(&membership.writers, &before.writers);
                prop_assert_eq!(membership.applied_len(), index + 1);
            }
        }
    }

    #[test]
    fn a_writer_never_counts_more_than_its_first_final_length(ops in vec(owner_op(), 0..24)) {
        let (membership, _) = replay(&ops);
        for n in 0u8..4 {
            // The first add takes effect; after it, the first removal fixes the count for good.
            let expected = match ops.iter().position(|op| *op == add(n)) {
                None => 0,
                Some(added) => ops[added + 1..]
                    .iter()
                    .find_map(|op| match op {
                        RelayOp::RemoveWriter { key: k, final_length } if *k == key(n) => {
                            Some((*final_length).min(100))
                        }
                        _ => None,
                    })
                    .unwrap_or(100),
            };
            let counted = membership.counted_length(&key(n), 100);
            prop_assert_eq!(counted, expected);
            for index in 0..8 {
                prop_assert_eq!(membership.counts(&key(n), index), index < counted);
            }
        }
    }
}
