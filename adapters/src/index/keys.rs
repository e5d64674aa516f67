//! Byte keys of the secondary indexes.
//!
//! Every secondary key ends in the same 40-byte *suffix* `rev(created_at) ‖ id`, where
//! `rev(t) = u64::MAX - t` in big-endian. Keys sort bytewise, so within one prefix ascending key
//! order is `created_at` descending, then id ascending: NIP-01's order, read by a forward scan.
//! Since/until become key bounds: `created_at ∈ [since, until]` is the inclusive key range
//! `prefix ‖ rev(until) ‖ 00…00 ..= prefix ‖ rev(since) ‖ ff…ff`.
//!
//! Prefixes:
//! - time index: empty;
//! - author index: the 32-byte pubkey;
//! - kind index: the kind as big-endian `u16`;
//! - tag index: `letter ‖ len ‖ value` for values up to [`MAX_INLINE_TAG_VALUE`] bytes, and
//!   `letter ‖ 0xff ‖ sha256(value)` for longer ones. The length byte keeps `"ab"` from being a
//!   prefix of `"abc"`; hashing keeps keys small. Either way the query re-checks the whole filter
//!   on the stored event, so a key only has to *include* every match, never decide one.

use std::collections::BTreeSet;

use hypergate_core::nostr::{Event, EventId, Kind, PublicKey};
use sha2::{Digest, Sha256};

/// Bytes of the suffix shared by every secondary key: `rev(created_at) ‖ id`.
pub(crate) const SUFFIX_LEN: usize = 8 + EventId::LEN;

/// The suffix as a value: comparing two of them compares their events in NIP-01 order.
pub(crate) type Suffix = [u8; SUFFIX_LEN];

/// Longest tag value stored verbatim in a key; longer values are hashed.
pub(crate) const MAX_INLINE_TAG_VALUE: usize = 64;

/// Length byte that marks a hashed tag value (never a verbatim length, which is at most 64).
const HASHED_TAG_VALUE: u8 = 0xff;

/// The suffix of `event`'s keys.
pub(crate) fn suffix(created_at: u64, id: &EventId) -> Suffix {
    let mut out = [0u8; SUFFIX_LEN];
    let (time, rest) = out.split_at_mut(8);
    time.copy_from_slice(&(u64::MAX - created_at).to_be_bytes());
    rest.copy_from_slice(id.as_bytes());
    out
}

/// The suffix of a secondary key, or `None` if the key is too short to have one.
pub(crate) fn key_suffix(key: &[u8]) -> Option<Suffix> {
    let start = key.len().checked_sub(SUFFIX_LEN)?;
    key.get(start..)?.try_into().ok()
}

/// The event id at the end of a suffix.
pub(crate) fn suffix_id(suffix: &Suffix) -> EventId {
    let mut id = [0u8; EventId::LEN];
    id.copy_from_slice(&suffix[8..]);
    EventId(id)
}

/// The prefix of `author`'s range in the author index.
pub(crate) fn author_prefix(author: &PublicKey) -> Vec<u8> {
    author.as_bytes().to_vec()
}

/// The prefix of `kind`'s range in the kind index.
pub(crate) fn kind_prefix(kind: Kind) -> Vec<u8> {
    kind.as_u16().to_be_bytes().to_vec()
}

/// The prefix of the `#letter = value` range in the tag index.
pub(crate) fn tag_prefix(letter: u8, value: &str) -> Vec<u8> {
    let value = value.as_bytes();
    let mut prefix = Vec::with_capacity(2 + MAX_INLINE_TAG_VALUE);
    prefix.push(letter);
    match u8::try_from(value.len()) {
        Ok(len) if value.len() <= MAX_INLINE_TAG_VALUE => {
            prefix.push(len);
            prefix.extend_from_slice(value);
        }
        _ => {
            prefix.push(HASHED_TAG_VALUE);
            prefix.extend_from_slice(&Sha256::digest(value));
        }
    }
    prefix
}

/// Inclusive key bounds of `prefix`'s entries with `since <= created_at <= until`.
pub(crate) fn range_bounds(prefix: &[u8], since: u64, until: u64) -> (Vec<u8>, Vec<u8>) {
    let mut low = Vec::with_capacity(prefix.len() + SUFFIX_LEN);
    low.extend_from_slice(prefix);
    low.extend_from_slice(&(u64::MAX - until).to_be_bytes());
    low.extend_from_slice(&[0u8; EventId::LEN]);
    let mut high = Vec::with_capacity(prefix.len() + SUFFIX_LEN);
    high.extend_from_slice(prefix);
    high.extend_from_slice(&(u64::MAX - since).to_be_bytes());
    high.extend_from_slice(&[0xffu8; EventId::LEN]);
    (low, high)
}

/// The secondary indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Secondary {
    /// `by_time`: every event.
    Time,
    /// `by_author`.
    Author,
    /// `by_kind`.
    Kind,
    /// `by_tag`: single-letter tags with a value.
    Tag,
}

/// Every secondary key of one event.
pub(crate) struct EventKeys {
    pub(crate) time: Vec<u8>,
    pub(crate) author: Vec<u8>,
    pub(crate) kind: Vec<u8>,
    /// One key per distinct `(letter, value)` of the event's single-letter tags.
    pub(crate) tags: BTreeSet<Vec<u8>>,
}

impl EventKeys {
    /// The keys `event` is filed under.
    ///
    /// Only tags that a filter can select are indexed: a name of exactly one ASCII letter (the
    /// only `#x` keys filters parse) and a value (the second element, the one `#x` compares).
    pub(crate) fn of(event: &Event) -> EventKeys {
        let suffix = suffix(event.created_at, &event.id);
        let with_suffix = |mut prefix: Vec<u8>| {
            prefix.extend_from_slice(&suffix);
            prefix
        };
        let tags = event
            .tags
            .iter()
            .filter_map(|tag| {
                let letter = single_ascii_letter(tag.name()?)?;
                Some(with_suffix(tag_prefix(letter, tag.value()?)))
            })
            .collect();
        EventKeys {
            time: suffix.to_vec(),
            author: with_suffix(author_prefix(&event.pubkey)),
            kind: with_suffix(kind_prefix(event.kind)),
            tags,
        }
    }
}

impl EventKeys {
    /// Each key with the index it belongs to.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Secondary, &[u8])> {
        [
            (Secondary::Time, self.time.as_slice()),
            (Secondary::Author, self.author.as_slice()),
            (Secondary::Kind, self.kind.as_slice()),
        ]
        .into_iter()
        .chain(self.tags.iter().map(|key| (Secondary::Tag, key.as_slice())))
    }
}

/// The letter of a tag name that is exactly one ASCII letter.
fn single_ascii_letter(name: &str) -> Option<u8> {
    match name.as_bytes() {
        [letter] if letter.is_ascii_alphabetic() => Some(*letter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypergate_core::nostr::{Signature, Tag};

    fn event(created_at: u64, id: u8, tags: Vec<Tag>) -> Event {
        Event {
            id: EventId([id; 32]),
            pubkey: PublicKey([9; 32]),
            created_at,
            kind: Kind(1),
            tags,
            content: String::new(),
            sig: Signature([0; 64]),
        }
    }

    #[test]
    fn suffix_order_is_newest_first_then_lowest_id() {
        let older = suffix(10, &EventId([0; 32]));
        let newer_high_id = suffix(11, &EventId([2; 32]));
        let newer_low_id = suffix(11, &EventId([1; 32]));
        let mut sorted = [older, newer_high_id, newer_low_id];
        sorted.sort();
        assert_eq!(sorted, [newer_low_id, newer_high_id, older]);
    }

    #[test]
    fn range_bounds_include_exactly_since_to_until() {
        let prefix = kind_prefix(Kind(1));
        let (low, high) = range_bounds(&prefix, 10, 20);
        for (created_at, inside) in [(9, false), (10, true), (15, true), (20, true), (21, false)] {
            for id in [[0u8; 32], [0xff; 32]] {
                let mut key = prefix.clone();
                key.extend_from_slice(&suffix(created_at, &EventId(id)));
                let within = low.as_slice() <= key.as_slice() && key.as_slice() <= high.as_slice();
                assert_eq!(within, inside, "created_at {created_at}");
            }
        }
        let (low, high) = range_bounds(&prefix, 0, u64::MAX);
        let mut key = prefix.clone();
        key.extend_from_slice(&suffix(u64::MAX, &EventId([0; 32])));
        assert!(low <= key && key <= high);
    }

    #[test]
    fn tag_value_that_extends_another_is_not_in_its_range() {
        let short = tag_prefix(b'e', "ab");
        let long = tag_prefix(b'e', "abc");
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn long_tag_values_are_hashed_to_fixed_length_keys() {
        let value = "x".repeat(MAX_INLINE_TAG_VALUE + 1);
        let prefix = tag_prefix(b't', &value);
        assert_eq!(prefix.len(), 2 + 32);
        assert_eq!(prefix, tag_prefix(b't', &value));
        assert_ne!(
            prefix,
            tag_prefix(b't', &"y".repeat(MAX_INLINE_TAG_VALUE + 1))
        );
        assert_eq!(
            tag_prefix(b't', &"x".repeat(MAX_INLINE_TAG_VALUE)).len(),
            2 + MAX_INLINE_TAG_VALUE
        );
    }

    #[test]
    fn only_single_letter_tags_with_a_value_are_indexed_once() {
        let keys = EventKeys::of(&event(
            5,
            1,
            vec![
                Tag::new(["e", "aa"]),
                Tag::new(["e", "aa", "wss://relay"]),
                Tag::new(["p"]),
                Tag::new(["tt", "bb"]),
                Tag::new(["1", "cc"]),
                Tag::new(["T", "dd"]),
                Tag::default(),
            ],
        ));
        let prefixes: Vec<Vec<u8>> = keys
            .tags
            .iter()
            .map(|key| key[..key.len() - SUFFIX_LEN].to_vec())
            .collect();
        assert_eq!(
            prefixes,
            vec![tag_prefix(b'T', "dd"), tag_prefix(b'e', "aa")]
        );
    }

    #[test]
    fn key_suffix_reads_back_the_id() {
        let keys = EventKeys::of(&event(7, 3, vec![]));
        let suffix = key_suffix(&keys.author).unwrap();
        assert_eq!(suffix_id(&suffix), EventId([3; 32]));
        assert_eq!(key_suffix(&[1, 2, 3]), None);
    }
}
