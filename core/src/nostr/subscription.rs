//! Subscription ids: the client-chosen names of `REQ` subscriptions.
//!
//! NIP-01 makes a subscription id an arbitrary non-empty string of at most 64 characters, scoped
//! to one connection. A [`SubscriptionId`] can only hold such a string, so every frame built from
//! one is valid on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string cannot be a subscription id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionIdError {
    /// The string is empty.
    #[error("subscription id is empty")]
    Empty,
    /// The string has more characters than allowed.
    #[error("subscription id longer than {max} characters")]
    TooLong {
        /// The limit, in characters.
        max: usize,
    },
}

/// A non-empty subscription id of at most [`SubscriptionId::MAX_LEN`] characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// The NIP-01 maximum, in characters (Unicode scalar values).
    pub const MAX_LEN: usize = 64;

    /// Checks `id` against the NIP-01 rules.
    pub fn new(id: impl Into<String>) -> Result<SubscriptionId, SubscriptionIdError> {
        SubscriptionId::with_max_len(id.into(), SubscriptionId::MAX_LEN)
    }

    /// Checks `id` against a limit that may be stricter than NIP-01's (never looser).
    pub fn with_max_len(id: String, max_len: usize) -> Result<SubscriptionId, SubscriptionIdError> {
        let max = max_len.min(SubscriptionId::MAX_LEN);
        if id.is_empty() {
            return Err(SubscriptionIdError::Empty);
        }
        // `nth(max)` stops after max + 1 characters: a 100 KiB id costs no more than a short one.
        if id.chars().nth(max).is_some() {
            return Err(SubscriptionIdError::TooLong { max });
        }
        Ok(SubscriptionId(id))
    }

    /// The id as sent by the client.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({:?})", self.0)
    }
}

impl Serialize for SubscriptionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SubscriptionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        SubscriptionId::new(id).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_id_is_one_to_64_characters_not_bytes() {
        assert_eq!(SubscriptionId::new(""), Err(SubscriptionIdError::Empty));
        assert!(SubscriptionId::new("a").is_ok());
        assert!(SubscriptionId::new("é".repeat(64)).is_ok());
        assert_eq!(
            SubscriptionId::new("a".repeat(65)),
            Err(SubscriptionIdError::TooLong { max: 64 })
        );
    }

    #[test]
    fn a_stricter_limit_applies_but_a_looser_one_does_not() {
        assert_eq!(
            SubscriptionId::with_max_len("abc".to_owned(), 2),
            Err(SubscriptionIdError::TooLong { max: 2 })
        );
        assert_eq!(
            SubscriptionId::with_max_len("a".repeat(65), 1000),
            Err(SubscriptionIdError::TooLong { max: 64 })
        );
    }
}
