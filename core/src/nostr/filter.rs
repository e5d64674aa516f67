//! NIP-01 filters: which events a subscription (`REQ`) asks for.
//!
//! Contract: an event matches a filter when *every* condition the filter states holds —
//! its id is one of `ids`, its author one of `authors`, its kind one of `kinds`,
//! `since <= created_at <= until`, and for each `#x` entry it has a tag named `x` whose second
//! element is one of the listed values. A condition that is absent does not constrain; a list
//! that is present but empty matches nothing (it states "one of these" about an empty set).
//! `limit` bounds how many stored events the initial query returns and plays no part in
//! matching.
//!
//! Parsing is strict about the keys it understands (`ids` and `authors` are exact 64-character
//! lowercase hex, `kinds` are integers in `0..=65535`, `since`/`until`/`limit` are non-negative
//! integers, a key may not repeat) and ignores every other key: extensions such as NIP-50's
//! `search` and tag keys that are not `#` followed by one ASCII letter. Lists are sets: order and
//! duplicates carry no meaning, and limits count distinct values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Event, EventId, Kind, Limits, MachineReadablePrefix, PublicKey, Tag};

/// Why a filter was rejected. Rendered in a `CLOSED` message with the `invalid` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    // The client is at fault: the JSON is not a filter.
    /// Not an object, a known key with a value of the wrong type, bad hex, or a repeated key.
    #[error("malformed filter: {0}")]
    Malformed(String),

    // A local limit is exceeded.
    /// A list holds more distinct values than [`Limits::max_filter_values`].
    #[error("too many values in {list} ({count} > {max})")]
    TooManyValues {
        /// The key of the list: `ids`, `authors`, `kinds` or `#x`.
        list: String,
        /// Distinct values in it.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl FilterError {
    /// The message of the `["CLOSED", <subscription id>, <message>]` reply.
    #[must_use]
    pub fn to_closed_message(&self) -> String {
        MachineReadablePrefix::Invalid.message(&self.to_string())
    }
}

/// A NIP-01 filter. `Filter::default()` states no condition and matches every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event ids, exact match.
    pub ids: Option<BTreeSet<EventId>>,
    /// Authors, exact match.
    pub authors: Option<BTreeSet<PublicKey>>,
    /// Kinds.
    pub kinds: Option<BTreeSet<Kind>>,
    /// `#x` conditions keyed by the ASCII letter `x`: the event needs a tag `["x", v, …]` with
    /// `v` in the set.
    pub tags: BTreeMap<char, BTreeSet<String>>,
    /// Oldest `created_at` wanted, inclusive.
    pub since: Option<u64>,
    /// Newest `created_at` wanted, inclusive.
    pub until: Option<u64>,
    /// Most stored events the initial query should return.
    pub limit: Option<u64>,
}

impl Filter {
    /// Parses a filter object.
    pub fn parse_json(text: &str) -> Result<Filter, FilterError> {
        serde_json::from_str(text).map_err(|error| FilterError::Malformed(super::detail(&error)))
    }

    /// The filter as compact NIP-01 JSON; keys in a fixed order.
    #[must_use]
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }

    /// Whether `event` meets every condition of the filter.
    #[must_use]
    pub fn matches(&self, event: &Event) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&event.id))
            && self
                .authors
                .as_ref()
                .is_none_or(|authors| authors.contains(&event.pubkey))
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&event.kind))
            && self.since.is_none_or(|since| since <= event.created_at)
            && self.until.is_none_or(|until| event.created_at <= until)
            && self.tags.iter().all(|(&letter, values)| {
                event
                    .tags
                    .iter()
                    .any(|tag| tag_matches(tag, letter, values))
            })
    }

    /// Checks that no list holds more than [`Limits::max_filter_values`] values.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), FilterError> {
        let max = limits.max_filter_values;
        let too_many = |list: String, count: usize| {
            if count > max {
                Err(FilterError::TooManyValues { list, count, max })
            } else {
                Ok(())
            }
        };
        too_many("ids".to_owned(), self.ids.as_ref().map_or(0, BTreeSet::len))?;
        too_many(
            "authors".to_owned(),
            self.authors.as_ref().map_or(0, BTreeSet::len),
        )?;
        too_many(
            "kinds".to_owned(),
            self.kinds.as_ref().map_or(0, BTreeSet::len),
        )?;
        for (letter, values) in &self.tags {
            too_many(format!("#{letter}"), values.len())?;
        }
        Ok(())
    }
}

/// `tag` is `[<letter>, <one of values>, …]`.
fn tag_matches(tag: &Tag, letter: char, values: &BTreeSet<String>) -> bool {
    let named = tag.name().is_some_and(|name| {
        let mut chars = name.chars();
        chars.next() == Some(letter) && chars.next().is_none()
    });
    named && tag.value().is_some_and(|value| values.contains(value))
}

/// The letter of a `#x` key, if the key is `#` followed by exactly one ASCII letter.
fn tag_letter(key: &str) -> Option<char> {
    match key.as_bytes() {
        [b'#', letter] if letter.is_ascii_alphabetic() => Some(char::from(*letter)),
        _ => None,
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(ids) = &self.ids {
            map.serialize_entry("ids", ids)?;
        }
        if let Some(authors) = &self.authors {
            map.serialize_entry("authors", authors)?;
        }
        if let Some(kinds) = &self.kinds {
            map.serialize_entry("kinds", kinds)?;
        }
        for (letter, values) in &self.tags {
            map.serialize_entry(&format!("#{letter}"), values)?;
        }
        if let Some(since) = self.since {
            map.serialize_entry("since", &since)?;
        }
        if let Some(until) = self.until {
            map.serialize_entry("until", &until)?;
        }
        if let Some(limit) = self.limit {
            map.serialize_entry("limit", &limit)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FilterVisitor)
    }
}

struct FilterVisitor;

/// Stores a value, refusing a key seen before: with repeated keys, relays that keep the first
/// and relays that keep the last would answer the same REQ differently.
fn set_once<T, E: de::Error>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("duplicate key {key}")));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = Filter;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a filter object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filter, A::Error> {
        let mut filter = Filter::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "ids" => set_once(&mut filter.ids, &key, map.next_value()?)?,
                "authors" => set_once(&mut filter.authors, &key, map.next_value()?)?,
                "kinds" => set_once(&mut filter.kinds, &key, map.next_value()?)?,
                "since" => set_once(&mut filter.since, &key, map.next_value()?)?,
                "until" => set_once(&mut filter.until, &key, map.next_value()?)?,
                "limit" => set_once(&mut filter.limit, &key, map.next_value()?)?,
                _ => match tag_letter(&key) {
                    Some(letter) => {
                        let values: BTreeSet<String> = map.next_value()?;
                        if filter.tags.insert(letter, values).is_some() {
                            return Err(de::Error::custom(format_args!("duplicate key {key}")));
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(created_at: u64, kind: u16, tags: Vec<Tag>) -> Event {
        Event {
            id: EventId([1; 32]),
            pubkey: PublicKey([2; 32]),
            created_at,
            kind: Kind(kind),
            tags,
            content: String::new(),
            sig: super::super::Signature([0; 64]),
        }
    }

    fn filter(json: &str) -> Filter {
        Filter::parse_json(json).unwrap()
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(Filter::default().matches(&event(0, 1, vec![])));
        assert!(filter("{}").matches(&event(u64::MAX, 65535, vec![])));
    }

    #[test]
    fn ids_authors_and_kinds_are_exact_set_membership() {
        let ev = event(10, 1, vec![]);
        let id = "01".repeat(32);
        let other = "03".repeat(32);
        let author = "02".repeat(32);
        assert!(filter(&format!(r#"{{"ids":["{other}","{id}"]}}"#)).matches(&ev));
        assert!(!filter(&format!(r#"{{"ids":["{other}"]}}"#)).matches(&ev));
        assert!(filter(&format!(r#"{{"authors":["{author}"]}}"#)).matches(&ev));
        assert!(!filter(&format!(r#"{{"authors":["{other}"]}}"#)).matches(&ev));
        assert!(filter(r#"{"kinds":[0,1]}"#).matches(&ev));
        assert!(!filter(r#"{"kinds":[0,2]}"#).matches(&ev));
    }

    #[test]
    fn present_but_empty_list_matches_nothing() {
        let ev = event(10, 1, vec![Tag::new(["e", "x"])]);
        assert!(!filter(r#"{"ids":[]}"#).matches(&ev));
        assert!(!filter(r#"{"kinds":[]}"#).matches(&ev));
        assert!(!filter(r##"{"#e":[]}"##).matches(&ev));
    }

    #[test]
    fn since_and_until_are_inclusive_bounds() {
        let ev = event(10, 1, vec![]);
        assert!(filter(r#"{"since":10,"until":10}"#).matches(&ev));
        assert!(!filter(r#"{"since":11}"#).matches(&ev));
        assert!(!filter(r#"{"until":9}"#).matches(&ev));
        assert!(!filter(r#"{"since":11,"until":9}"#).matches(&ev));
    }

    #[test]
    fn limit_does_not_affect_matching() {
        assert!(filter(r#"{"limit":0}"#).matches(&event(1, 1, vec![])));
    }

    #[test]
    fn tag_condition_needs_named_tag_with_listed_second_element() {
        let ev = event(
            10,
            1,
            vec![
                Tag::new(["e", "aa", "wss://relay"]),
                Tag::new(["p", "bb"]),
                Tag::new(["t"]),
                Tag::new(["tt", "cc"]),
                Tag::new(["x", "relay", "cc"]),
            ],
        );
        assert!(filter(r##"{"#e":["zz","aa"]}"##).matches(&ev));
        assert!(filter(r##"{"#e":["aa"],"#p":["bb"]}"##).matches(&ev));
        assert!(!filter(r##"{"#e":["aa"],"#p":["zz"]}"##).matches(&ev));
        // Only the second element counts, and the name must be the whole first element.
        assert!(!filter(r##"{"#e":["wss://relay"]}"##).matches(&ev));
        assert!(!filter(r##"{"#t":["cc"]}"##).matches(&ev));
        assert!(!filter(r##"{"#x":["cc"]}"##).matches(&ev));
        // Letters are case-sensitive.
        assert!(!filter(r##"{"#E":["aa"]}"##).matches(&ev));
    }

    #[test]
    fn all_conditions_must_hold_together() {
        let ev = event(10, 7, vec![Tag::new(["e", "aa"])]);
        let author = "02".repeat(32);
        let all = format!(r##"{{"authors":["{author}"],"kinds":[7],"#e":["aa"],"since":5}}"##);
        assert!(filter(&all).matches(&ev));
        let one_fails = format!(r##"{{"authors":["{author}"],"kinds":[8],"#e":["aa"]}}"##);
        assert!(!filter(&one_fails).matches(&ev));
    }

    #[test]
    fn unknown_keys_and_multi_letter_tag_keys_are_ignored() {
        let parsed = filter(r##"{"search":"x","#ee":[1],"#":[],"#1":["a"],"foo":{"a":[[]]}}"##);
        assert_eq!(parsed, Filter::default());
    }

    #[test]
    fn malformed_filters_are_rejected() {
        let bad = [
            r#"[]"#.to_owned(),
            r#""x""#.to_owned(),
            r#"{"ids":["ab"]}"#.to_owned(),
            format!(r#"{{"ids":["{}"]}}"#, "AB".repeat(32)),
            r#"{"ids":null}"#.to_owned(),
            r#"{"authors":"x"}"#.to_owned(),
            r#"{"kinds":[65536]}"#.to_owned(),
            r#"{"kinds":["1"]}"#.to_owned(),
            r#"{"since":-1}"#.to_owned(),
            r#"{"until":1.5}"#.to_owned(),
            r#"{"limit":"10"}"#.to_owned(),
            r##"{"#e":[1]}"##.to_owned(),
            r##"{"#e":"aa"}"##.to_owned(),
            r#"{"kinds":[1],"kinds":[2]}"#.to_owned(),
            r##"{"#e":["a"],"#e":["b"]}"##.to_owned(),
        ];
        for text in bad {
            assert!(
                matches!(Filter::parse_json(&text), Err(FilterError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn json_round_trip_preserves_filter_with_fixed_key_order() {
        let text = format!(
            r##"{{"ids":["{}"],"authors":["{}"],"kinds":[1,7],"#e":["a","b"],"#p":["c"],"since":1,"until":2,"limit":3}}"##,
            "01".repeat(32),
            "02".repeat(32)
        );
        let parsed = filter(&text);
        assert_eq!(parsed.to_json(), text);
        assert_eq!(filter(&parsed.to_json()), parsed);
    }

    #[test]
    fn check_limits_counts_distinct_values_per_list() {
        let limits = Limits {
            max_filter_values: 2,
            ..Limits::default()
        };
        assert_eq!(
            filter(r#"{"kinds":[1,2,2,1]}"#).check_limits(&limits),
            Ok(())
        );
        assert_eq!(
            filter(r##"{"kinds":[1],"#t":["a","b","c"]}"##).check_limits(&limits),
            Err(FilterError::TooManyValues {
                list: "#t".to_owned(),
                count: 3,
                max: 2
            })
        );
        assert_eq!(
            filter(r#"{"kinds":[1,2,3]}"#)
                .check_limits(&limits)
                .unwrap_err()
                .to_closed_message(),
            "invalid: too many values in kinds (3 > 2)"
        );
    }
}
