//! What a NIP-09 deletion request (kind 5) asks to delete.
//!
//! Only targets that can take effect are kept: an `e` tag whose value is an event id, and an `a`
//! tag whose value is the coordinate of a replaceable or addressable slot *of the request's own
//! author* (`<kind>:<pubkey>:<d>`, in canonical form: decimal kind without sign or leading zeros,
//! lowercase hex pubkey, and for a replaceable kind an empty `d`). Anything else in a tag is
//! ignored, as NIP-09 relays do: a malformed tag cannot make a request delete more.

use crate::nostr::{Event, EventId, Kind, PublicKey, ReplacementKey};

/// NIP-09 deletion requests.
pub(super) const DELETION: Kind = Kind(5);

/// The targets of one deletion request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct DeletionTargets {
    /// Events named by id; they are deleted only if the request's author wrote them.
    pub(super) ids: Vec<EventId>,
    /// Slots of the request's author; versions up to the request's `created_at` are deleted.
    pub(super) coordinates: Vec<ReplacementKey>,
}

/// The targets of `request`, which must be a kind-5 event (any other kind targets nothing).
pub(super) fn deletion_targets(request: &Event) -> DeletionTargets {
    let mut targets = DeletionTargets::default();
    if request.kind != DELETION {
        return targets;
    }
    for tag in &request.tags {
        match (tag.name(), tag.value()) {
            (Some("e"), Some(value)) => {
                if let Ok(id) = EventId::from_hex(value) {
                    targets.ids.push(id);
                }
            }
            (Some("a"), Some(value)) => {
                if let Some(key) = parse_own_coordinate(value, &request.pubkey) {
                    targets.coordinates.push(key);
                }
            }
            _ => {}
        }
    }
    targets
}

/// The slot named by `text` if it is a well-formed coordinate of one of `author`'s slots.
fn parse_own_coordinate(text: &str, author: &PublicKey) -> Option<ReplacementKey> {
    let mut parts = text.splitn(3, ':');
    let (kind, pubkey, identifier) = (parts.next()?, parts.next()?, parts.next()?);
    let kind = parse_canonical_kind(kind)?;
    let pubkey = PublicKey::from_hex(pubkey).ok()?;
    if pubkey != *author {
        return None;
    }
    let identifier = if kind.is_addressable() {
        Some(identifier.to_owned())
    } else if kind.is_replaceable() && identifier.is_empty() {
        None
    } else {
        return None;
    };
    Some(ReplacementKey {
        pubkey,
        kind,
        identifier,
    })
}

/// A kind written as NIP-01 writes it: decimal digits, no sign, no leading zeros.
fn parse_canonical_kind(text: &str) -> Option<Kind> {
    let canonical = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return None;
    }
    text.parse::<u16>().ok().map(Kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::{Signature, Tag};

    fn request(author: u8, tags: Vec<Tag>) -> Event {
        Event {
            id: EventId([0xdd; 32]),
            pubkey: PublicKey([author; 32]),
            created_at: 10,
            kind: DELETION,
            tags,
            content: String::new(),
            sig: Signature([0; 64]),
        }
    }

    fn slot(author: u8, kind: u16, identifier: Option<&str>) -> ReplacementKey {
        ReplacementKey {
            pubkey: PublicKey([author; 32]),
            kind: Kind(kind),
            identifier: identifier.map(str::to_owned),
        }
    }

    #[test]
    fn e_and_a_tags_name_ids_and_own_slots() {
        let me = PublicKey([1; 32]).to_hex();
        let targets = deletion_targets(&request(
            1,
            vec![
                Tag::new(["e", &EventId([7; 32]).to_hex()]),
                Tag::new(["a".to_owned(), format!("30023:{me}:my:post")]),
                Tag::new(["a".to_owned(), format!("10002:{me}:")]),
                Tag::new(["a".to_owned(), format!("0:{me}:")]),
                Tag::new(["a".to_owned(), format!("30000:{me}:")]),
            ],
        ));
        assert_eq!(targets.ids, [EventId([7; 32])]);
        assert_eq!(
            targets.coordinates,
            [
                slot(1, 30023, Some("my:post")),
                slot(1, 10002, None),
                slot(1, 0, None),
                slot(1, 30000, Some("")),
            ]
        );
    }

    #[test]
    fn malformed_foreign_and_non_slot_targets_are_ignored() {
        // Hex with letters, so that uppercasing changes it.
        let me = PublicKey([0xab; 32]).to_hex();
        let other = PublicKey([2; 32]).to_hex();
        let ignored = [
            vec!["e".to_owned(), EventId([0xcd; 32]).to_hex().to_uppercase()],
            vec!["e".to_owned(), "abcd".to_owned()],
            vec!["e".to_owned()],
            vec![],
            vec!["a".to_owned(), format!("30023:{other}:x")],
            vec!["a".to_owned(), format!("30023:{me}")],
            vec!["a".to_owned(), format!("030023:{me}:x")],
            vec!["a".to_owned(), format!("+30023:{me}:x")],
            vec!["a".to_owned(), format!("70000:{me}:x")],
            vec!["a".to_owned(), format!(":{me}:x")],
            vec!["a".to_owned(), format!("1:{me}:")],
            vec!["a".to_owned(), format!("20001:{me}:")],
            vec!["a".to_owned(), format!("10002:{me}:x")],
            vec!["a".to_owned(), format!("30023:{}:x", me.to_uppercase())],
            vec!["x".to_owned(), EventId([7; 32]).to_hex()],
        ];
        let tags = ignored.into_iter().map(Tag).collect();
        assert_eq!(
            deletion_targets(&request(0xab, tags)),
            DeletionTargets::default()
        );
    }

    #[test]
    fn an_event_of_another_kind_targets_nothing() {
        let mut event = request(1, vec![Tag::new(["e", &EventId([7; 32]).to_hex()])]);
        event.kind = Kind(1);
        assert_eq!(deletion_targets(&event), DeletionTargets::default());
    }
}
