use super::*;
use crate::nostr::{Kind, Signature, Tag};

/// An event with a correct id and no signature (the view checks none).
pub(super) fn event(
    author: u8,
    kind: u16,
    created_at: u64,
    tags: Vec<Tag>,
    content: &str,
) -> Event {
    let mut event = Event {
        id: EventId([0; 32]),
        pubkey: PublicKey([author; 32]),
        created_at,
        kind: Kind(kind),
        tags,
        content: content.to_owned(),
        sig: Signature([0; 64]),
    };
    event.id = event.compute_id();
    event
}

fn note(author: u8, created_at: u64, content: &str) -> Event {
    event(author, 1, created_at, vec![], content)
}

fn d(identifier: &str) -> Vec<Tag> {
    vec![Tag::new(["d", identifier])]
}

fn delete_ids(author: u8, created_at: u64, targets: &[&Event]) -> Event {
    let tags = targets
        .iter()
        .map(|target| Tag::new(["e".to_owned(), target.id.to_hex()]))
        .collect();
    event(author, 5, created_at, tags, "")
}

fn delete_slot(author: u8, created_at: u64, coordinate: String) -> Event {
    event(
        author,
        5,
        created_at,
        vec![Tag::new(["a".to_owned(), coordinate])],
        "",
    )
}

fn coordinate(target: &Event) -> String {
    format!(
        "{}:{}:{}",
        target.kind,
        target.pubkey,
        target.d_tag().unwrap_or("")
    )
}

/// Inserts `events` in order into a fresh view.
fn view_of(events: &[&Event]) -> RelayView {
    let mut view = RelayView::new();
    for event in events {
        let _ = view.insert((*event).clone());
    }
    view
}

fn ids(events: &[&Event]) -> Vec<EventId> {
    let mut ids: Vec<EventId> = events.iter().map(|event| event.id).collect();
    ids.sort();
    ids
}

#[test]
fn a_regular_event_is_stored_and_reported_as_added() {
    let mut view = RelayView::new();
    let a = note(1, 10, "a");
    let inserted = view.insert(a.clone());
    assert_eq!(inserted.outcome, InsertOutcome::Stored);
    assert_eq!(inserted.changes, [ViewChange::Added(a.clone())]);
    assert_eq!(view.get(&a.id), Some(&a));
    assert_eq!(view.len(), 1);
}

#[test]
fn ephemeral_events_are_never_stored() {
    let mut view = RelayView::new();
    let inserted = view.insert(event(1, 20001, 10, vec![], "typing"));
    assert_eq!(inserted.outcome, InsertOutcome::Ephemeral);
    assert!(inserted.changes.is_empty());
    assert!(view.is_empty());
}

#[test]
fn inserting_a_visible_event_again_changes_nothing() {
    let a = note(1, 10, "a");
    let mut view = view_of(&[&a]);
    let again = view.insert(a.clone());
    assert_eq!(again, Insertion::unchanged(InsertOutcome::Duplicate));
    assert_eq!(view.len(), 1);
}

#[test]
fn a_newer_replaceable_version_replaces_the_older_in_either_order() {
    let old = event(1, 0, 10, vec![], "old profile");
    let new = event(1, 0, 11, vec![], "new profile");
    let mut view = view_of(&[&old]);
    let inserted = view.insert(new.clone());
    assert_eq!(inserted.outcome, InsertOutcome::Stored);
    assert_eq!(
        inserted.changes,
        [ViewChange::Removed(old.id), ViewChange::Added(new.clone())]
    );
    assert_eq!(view.visible_ids(), [new.id]);

    let mut reversed = view_of(&[&new]);
    assert_eq!(
        reversed.insert(old),
        Insertion::unchanged(InsertOutcome::Superseded)
    );
    assert_eq!(reversed.digest(), view.digest());
}

#[test]
fn on_equal_created_at_the_lowest_id_wins_the_slot() {
    let a = event(1, 10002, 10, vec![], "a");
    let b = event(1, 10002, 10, vec![], "b");
    let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };
    assert_eq!(view_of(&[&low, &high]).visible_ids(), [low.id]);
    assert_eq!(view_of(&[&high, &low]).visible_ids(), [low.id]);
}

#[test]
fn addressable_versions_compete_only_within_their_d_tag() {
    let a1 = event(1, 30023, 10, d("a"), "a1");
    let a2 = event(1, 30023, 12, d("a"), "a2");
    let b1 = event(1, 30023, 11, d("b"), "b1");
    let other_author = event(2, 30023, 13, d("a"), "theirs");
    let view = view_of(&[&a2, &b1, &a1, &other_author]);
    assert_eq!(view.visible_ids(), ids(&[&a2, &b1, &other_author]));
}

#[test]
fn a_deletion_by_id_removes_only_its_authors_events_and_stays_visible() {
    let mine = note(1, 10, "mine");
    let theirs = note(2, 10, "theirs");
    let request = delete_ids(1, 20, &[&mine, &theirs]);
    let mut view = view_of(&[&mine, &theirs]);
    let inserted = view.insert(request.clone());
    assert_eq!(inserted.outcome, InsertOutcome::Stored);
    assert_eq!(
        inserted.changes,
        [
            ViewChange::Removed(mine.id),
            ViewChange::Added(request.clone())
        ]
    );
    assert_eq!(view.visible_ids(), ids(&[&theirs, &request]));
}

#[test]
fn a_deletion_that_arrives_before_its_target_still_applies() {
    let target = note(1, 10, "target");
    let request = delete_ids(1, 5, &[&target]);
    let mut view = view_of(&[&request]);
    assert_eq!(
        view.insert(target.clone()),
        Insertion::unchanged(InsertOutcome::Deleted)
    );
    assert_eq!(view.visible_ids(), [request.id]);
    assert_eq!(view.digest(), view_of(&[&target, &request]).digest());
}

#[test]
fn deleting_the_newest_version_does_not_bring_back_an_older_one() {
    let older = event(1, 10002, 10, vec![], "older");
    let newest = event(1, 10002, 20, vec![], "newest");
    let request = delete_ids(1, 30, &[&newest]);
    let orders: [[&Event; 3]; 6] = [
        [&older, &newest, &request],
        [&older, &request, &newest],
        [&newest, &older, &request],
        [&newest, &request, &older],
        [&request, &older, &newest],
        [&request, &newest, &older],
    ];
    for order in orders {
        assert_eq!(view_of(&order).visible_ids(), [request.id], "{order:?}");
    }
}

#[test]
fn a_deleted_best_version_hides_the_older_version_it_replaces() {
    let older = event(1, 0, 10, vec![], "older");
    let newest = event(1, 0, 20, vec![], "newest");
    let request = delete_ids(1, 30, &[&newest]);
    let mut view = view_of(&[&older, &request]);
    let inserted = view.insert(newest);
    assert_eq!(inserted.outcome, InsertOutcome::Deleted);
    assert_eq!(inserted.changes, [ViewChange::Removed(older.id)]);
}

#[test]
fn a_coordinate_deletion_removes_versions_up_to_its_created_at() {
    let v1 = event(1, 30023, 10, d("post"), "v1");
    let v2 = event(1, 30023, 20, d("post"), "v2");
    let v3 = event(1, 30023, 30, d("post"), "v3");
    let request = delete_slot(1, 20, coordinate(&v2));
    let mut view = view_of(&[&v1, &v2]);
    let inserted = view.insert(request.clone());
    assert_eq!(
        inserted.changes,
        [
            ViewChange::Removed(v2.id),
            ViewChange::Added(request.clone())
        ]
    );
    assert_eq!(view.visible_ids(), [request.id]);
    // A newer version after the deletion is visible again; an older one stays hidden.
    let _ = view.insert(v3.clone());
    assert_eq!(view.visible_ids(), ids(&[&v3, &request]));
    assert_eq!(view_of(&[&request, &v3, &v2, &v1]).digest(), view.digest());
}

#[test]
fn a_coordinate_deletion_covers_replaceable_slots_with_an_empty_d() {
    let profile = event(1, 0, 10, vec![], "profile");
    let request = delete_slot(1, 10, coordinate(&profile));
    assert_eq!(coordinate(&profile), format!("0:{}:", profile.pubkey));
    assert_eq!(view_of(&[&profile, &request]).visible_ids(), [request.id]);
}

#[test]
fn a_later_coordinate_deletion_extends_an_earlier_one_whatever_the_order() {
    let v = event(1, 30023, 15, d("x"), "v");
    let early = delete_slot(1, 10, coordinate(&v));
    let late = delete_slot(1, 20, coordinate(&v));
    for order in [
        [&late, &early, &v],
        [&early, &late, &v],
        [&early, &v, &late],
    ] {
        assert_eq!(
            view_of(&order).visible_ids(),
            ids(&[&early, &late]),
            "{order:?}"
        );
    }
    assert_eq!(
        view_of(&[&v, &early]).visible_ids(),
        ids(&[&v, &early]),
        "the early one alone does not reach v"
    );
}

#[test]
fn a_deletion_by_another_author_has_no_effect() {
    let target = event(1, 30023, 10, d("x"), "target");
    let by_id = delete_ids(2, 20, &[&target]);
    // The coordinate names author 1, but the request is signed by author 2.
    let by_coordinate = delete_slot(2, 20, coordinate(&target));
    let view = view_of(&[&by_id, &by_coordinate, &target]);
    assert_eq!(view.visible_ids(), ids(&[&target, &by_id, &by_coordinate]));
}

#[test]
fn a_deletion_of_a_deletion_has_no_effect() {
    let note = note(1, 10, "note");
    let first = delete_ids(1, 20, &[&note]);
    let undo = delete_ids(1, 30, &[&first]);
    for order in [[&note, &first, &undo], [&undo, &first, &note]] {
        assert_eq!(view_of(&order).visible_ids(), ids(&[&first, &undo]));
    }
}

#[test]
fn malformed_deletion_tags_delete_nothing() {
    let target = note(1, 10, "target");
    let upper = target.id.to_hex().to_uppercase();
    let request = event(
        1,
        5,
        20,
        vec![
            Tag::new(["e", upper.as_str()]),
            Tag::new(["e"]),
            Tag::new(["a", "not-a-coordinate"]),
        ],
        "",
    );
    assert_eq!(
        view_of(&[&request, &target]).visible_ids(),
        ids(&[&target, &request])
    );
}

#[test]
fn digest_and_iteration_follow_id_order() {
    let events = [note(1, 1, "a"), note(2, 2, "b"), note(3, 3, "c")];
    let view = view_of(&[&events[2], &events[0], &events[1]]);
    let sorted = ids(&[&events[0], &events[1], &events[2]]);
    assert_eq!(view.visible_ids(), sorted);
    assert_eq!(
        view.iter().map(|event| event.id).collect::<Vec<_>>(),
        sorted
    );
    let mut hasher = Sha256::new();
    for id in &sorted {
        hasher.update(id.0);
    }
    let expected: [u8; 32] = hasher.finalize().into();
    assert_eq!(view.digest(), expected);
    assert_ne!(view.digest(), RelayView::new().digest());
}
