//! The view's contract over generated event sets: order independence, exact change streams, and
//! agreement with a non-incremental reference model of the module docs' rules.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::tests::event;
use super::*;
use crate::nostr::Tag;

// --- the reference model ---------------------------------------------------------------------

/// The visible ids of `events` by the module docs' rules, computed from the whole set at once.
fn reference_visible(events: &[Event]) -> Vec<EventId> {
    let set: BTreeMap<EventId, &Event> = events
        .iter()
        .filter(|event| !event.kind.is_ephemeral())
        .map(|event| (event.id, event))
        .collect();
    set.values()
        .filter(|x| {
            let superseded = set.values().any(|y| y.supersedes(x));
            let deleted = x.kind.as_u16() != 5 && set.values().any(|d| requests_deletion(d, x));
            !superseded && !deleted
        })
        .map(|x| x.id)
        .collect()
}

/// Whether `d` is a deletion request by `x`'s author naming `x` by id, or naming `x`'s slot with
/// a `created_at` at or after `x`'s.
fn requests_deletion(d: &Event, x: &Event) -> bool {
    d.kind.as_u16() == 5
        && d.pubkey == x.pubkey
        && d.tags.iter().any(|tag| match tag.name() {
            Some("e") => tag.value() == Some(x.id.to_hex().as_str()),
            Some("a") => {
                x.replacement_key().is_some()
                    && tag.value() == Some(coordinate_text(x).as_str())
                    && x.created_at <= d.created_at
            }
            _ => false,
        })
}

/// NIP-01's `a`-tag text of `x`'s slot: `kind:pubkey:d`, with an empty `d` unless addressable.
fn coordinate_text(x: &Event) -> String {
    let identifier = if x.kind.is_addressable() {
        x.d_tag().unwrap_or("")
    } else {
        ""
    };
    format!("{}:{}:{identifier}", x.kind.as_u16(), x.pubkey.to_hex())
}

// --- generated event sets --------------------------------------------------------------------

/// Regular, replaceable (0, 10002), addressable (30023, 30001) and ephemeral kinds; kind-5
/// requests are built separately so that they can name generated events.
const KINDS: [u16; 7] = [1, 7, 0, 10002, 30023, 30001, 20001];

/// Authors (the byte their key repeats). Hex with letters, so that an uppercased coordinate is
/// malformed rather than equal.
const AUTHORS: [u8; 3] = [0xa1, 0xb2, 0xc3];

#[derive(Debug, Clone)]
struct EventSpec {
    author: u8,
    kind: u16,
    created_at: u64,
    d: Option<&'static str>,
    content: &'static str,
}

#[derive(Debug, Clone)]
struct DeletionSpec {
    /// `None`: the author of the first target (so that most requests can take effect).
    author: Option<u8>,
    created_at: u64,
    by_id: Vec<Index>,
    by_coordinate: Vec<(Index, bool)>,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        select(AUTHORS.to_vec()),
        select(KINDS.to_vec()),
        0u64..4,
        select(vec![None, Some(""), Some("a"), Some("b")]),
        select(vec!["x", "y"]),
    )
        .prop_map(|(author, kind, created_at, d, content)| EventSpec {
            author,
            kind,
            created_at,
            d,
            content,
        })
}

fn deletion_spec() -> impl Strategy<Value = DeletionSpec> {
    (
        prop_oneof![3 => Just(None), 1 => select(AUTHORS.to_vec()).prop_map(Some)],
        0u64..4,
        vec(any::<Index>(), 0..3),
        vec((any::<Index>(), any::<bool>()), 0..3),
    )
        .prop_map(|(author, created_at, by_id, by_coordinate)| DeletionSpec {
            author,
            created_at,
            by_id,
            by_coordinate,
        })
}

fn build_event(spec: &EventSpec) -> Event {
    let tags = spec.d.map(|d| vec![Tag::new(["d", d])]).unwrap_or_default();
    event(spec.author, spec.kind, spec.created_at, tags, spec.content)
}

/// A kind-5 request naming events of `pool` by id and by coordinate (`true`: a malformed,
/// uppercase coordinate that must be ignored). Coordinates are picked among the slot events of
/// the pool when there are any, so that several requests often name the same slot.
fn build_deletion(spec: &DeletionSpec, pool: &[Event]) -> Event {
    let pick = |index: &Index| &pool[index.index(pool.len())];
    let versioned: Vec<&Event> = pool
        .iter()
        .filter(|event| event.replacement_key().is_some())
        .collect();
    let pick_slot = |index: &Index| {
        if versioned.is_empty() {
            pick(index)
        } else {
            versioned[index.index(versioned.len())]
        }
    };
    let first_target = spec
        .by_id
        .first()
        .map(pick)
        .or(spec
            .by_coordinate
            .first()
            .map(|(index, _)| pick_slot(index)))
        .map(|target| target.pubkey.0[0]);
    let author = spec.author.or(first_target).unwrap_or(AUTHORS[0]);
    let mut tags: Vec<Tag> = spec
        .by_id
        .iter()
        .map(|index| Tag::new(["e".to_owned(), pick(index).id.to_hex()]))
        .collect();
    for (index, malformed) in &spec.by_coordinate {
        let text = coordinate_text(pick_slot(index));
        let text = if *malformed {
            text.to_uppercase()
        } else {
            text
        };
        tags.push(Tag::new(["a".to_owned(), text]));
    }
    event(author, 5, spec.created_at, tags, "")
}

/// Base events, requests naming them, requests naming those (deletions of deletions), and
/// duplicates of any of them, in generation order.
fn event_set() -> impl Strategy<Value = Vec<Event>> {
    (
        vec(event_spec(), 1..16),
        vec(deletion_spec(), 0..5),
        vec(deletion_spec(), 0..3),
        vec(any::<Index>(), 0..4),
    )
        .prop_map(|(base, first, second, duplicates)| {
            let mut events: Vec<Event> = base.iter().map(build_event).collect();
            let requests: Vec<Event> = first
                .iter()
                .map(|spec| build_deletion(spec, &events))
                .collect();
            events.extend(requests);
            let requests: Vec<Event> = second
                .iter()
                .map(|spec| build_deletion(spec, &events))
                .collect();
            events.extend(requests);
            let copies: Vec<Event> = duplicates
                .iter()
                .map(|index| events[index.index(events.len())].clone())
                .collect();
            events.extend(copies);
            events
        })
}

/// A generated set and a permutation of it.
fn set_and_permutation() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    event_set().prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle()))
}

fn view_of(events: &[Event]) -> RelayView {
    let mut view = RelayView::new();
    for event in events {
        let _ = view.insert(event.clone());
    }
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn visible_set_is_the_same_for_every_insertion_order(
        (events, permuted) in set_and_permutation(),
    ) {
        let in_order = view_of(&events);
        let shuffled = view_of(&permuted);
        let reversed: Vec<Event> = events.iter().rev().cloned().collect();
        let reversed = view_of(&reversed);
        prop_assert_eq!(shuffled.visible_ids(), in_order.visible_ids());
        prop_assert_eq!(shuffled.digest(), in_order.digest());
        prop_assert_eq!(reversed.digest(), in_order.digest());
    }

    #[test]
    fn replaying_the_emitted_changes_reproduces_the_view_exactly(events in event_set()) {
        let mut view = RelayView::new();
        let mut index: BTreeMap<EventId, Event> = BTreeMap::new();
        for event in events {
            let id = event.id;
            let inserted = view.insert(event);
            for change in inserted.changes.iter().cloned() {
                match change {
                    ViewChange::Added(added) => {
                        let added_id = added.id;
                        prop_assert!(index.insert(added_id, added).is_none(), "added twice");
                    }
                    ViewChange::Removed(removed) => {
                        prop_assert!(index.remove(&removed).is_some(), "removed but absent");
                    }
                }
            }
            prop_assert!(index.values().eq(view.iter()));
            let visible = view.get(&id).is_some();
            match inserted.outcome {
                InsertOutcome::Stored => prop_assert!(visible),
                InsertOutcome::Duplicate => {
                    prop_assert!(visible && inserted.changes.is_empty());
                }
                InsertOutcome::Ephemeral | InsertOutcome::Superseded => {
                    prop_assert!(!visible && inserted.changes.is_empty());
                }
                InsertOutcome::Deleted => prop_assert!(!visible),
            }
        }
    }

    #[test]
    fn incremental_view_agrees_with_the_reference_model(
        (events, permuted) in set_and_permutation(),
    ) {
        let expected = reference_visible(&events);
        prop_assert_eq!(view_of(&permuted).visible_ids(), expected);
    }
}

/// What one generated set exercises, so that a weakened generator fails loudly instead of
/// letting the properties above pass on trivial sets.
#[derive(Debug, Default)]
struct Coverage {
    superseded: usize,
    deleted: usize,
    ephemeral: usize,
    duplicate: usize,
    removed_by_deletion: usize,
    removed_by_coordinate: usize,
    deleted_best_hides_older: usize,
    /// Sets where one slot is named by requests with different `created_at`s.
    slot_deleted_at_several_times: usize,
}

fn measure(events: &[Event], coverage: &mut Coverage) {
    let mut times: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for event in events.iter().filter(|event| event.kind.as_u16() == 5) {
        for tag in event.tags.iter().filter(|tag| tag.name() == Some("a")) {
            let slot = tag.value().unwrap_or_default().to_owned();
            times.entry(slot).or_default().insert(event.created_at);
        }
    }
    if times.values().any(|times| times.len() > 1) {
        coverage.slot_deleted_at_several_times += 1;
    }
    let mut view = RelayView::new();
    for event in events {
        let inserted = view.insert(event.clone());
        match inserted.outcome {
            InsertOutcome::Superseded => coverage.superseded += 1,
            InsertOutcome::Deleted => coverage.deleted += 1,
            InsertOutcome::Ephemeral => coverage.ephemeral += 1,
            InsertOutcome::Duplicate => coverage.duplicate += 1,
            InsertOutcome::Stored => {}
        }
        let removed = inserted
            .changes
            .iter()
            .any(|change| matches!(change, ViewChange::Removed(_)));
        if removed && event.kind.as_u16() == 5 {
            coverage.removed_by_deletion += 1;
            if event.tags.iter().any(|tag| tag.name() == Some("a")) {
                coverage.removed_by_coordinate += 1;
            }
        }
        if removed && inserted.outcome == InsertOutcome::Deleted {
            coverage.deleted_best_hides_older += 1;
        }
    }
}

#[test]
fn generated_sets_exercise_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = event_set();
    let mut coverage = Coverage::default();
    for _ in 0..512 {
        let events = strategy.new_tree(&mut runner).unwrap().current();
        // Generation order inserts requests after their targets; reversed, before.
        measure(&events, &mut coverage);
        let reversed: Vec<Event> = events.into_iter().rev().collect();
        measure(&reversed, &mut coverage);
    }
    let counts = [
        coverage.superseded,
        coverage.deleted,
        coverage.ephemeral,
        coverage.duplicate,
        coverage.removed_by_deletion,
        coverage.removed_by_coordinate,
        coverage.deleted_best_hides_older,
        coverage.slot_deleted_at_several_times,
    ];
    assert!(counts.iter().all(|&count| count >= 5), "{coverage:?}");
}

#[test]
fn reference_model_hides_an_older_version_when_the_newest_is_deleted() {
    // The reference model is the spec; pin its reading of the trap case too.
    let older = event(1, 0, 1, vec![], "older");
    let newest = event(1, 0, 2, vec![], "newest");
    let request = event(
        1,
        5,
        3,
        vec![Tag::new(["e".to_owned(), newest.id.to_hex()])],
        "",
    );
    assert_eq!(
        reference_visible(&[older, newest, request.clone()]),
        [request.id]
    );
}
