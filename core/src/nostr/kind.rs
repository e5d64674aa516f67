//! Event kinds and the storage class NIP-01 gives each range.
//!
//! Every kind falls in exactly one class: [`Kind::is_replaceable`] (0, 3, 10000..=19999: the
//! newest event per author and kind wins), [`Kind::is_ephemeral`] (20000..=29999: delivered,
//! never stored), [`Kind::is_addressable`] (30000..=39999: the newest per author, kind and `d`
//! tag wins) or [`Kind::is_regular`] (everything else: every event is kept). NIP-01 names the
//! regular ranges explicitly (1, 2, 4..=44, 1000..=9999) and leaves the rest unassigned; relays
//! treat unassigned kinds as regular, and so do we, so that a kind invented tomorrow is stored
//! rather than silently dropped.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An event kind: an integer in `0..=65535` (NIP-01).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kind(pub u16);

impl Kind {
    /// Kind 0: user metadata (replaceable).
    pub const METADATA: Kind = Kind(0);
    /// Kind 1: a short text note (regular).
    pub const TEXT_NOTE: Kind = Kind(1);
    /// Kind 3: the follow list (replaceable).
    pub const CONTACTS: Kind = Kind(3);

    /// The numeric kind.
    #[must_use]
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// Only the newest event per `(pubkey, kind)` is kept.
    #[must_use]
    pub fn is_replaceable(self) -> bool {
        matches!(self.0, 0 | 3 | 10000..=19999)
    }

    /// Delivered to live subscriptions and never stored.
    #[must_use]
    pub fn is_ephemeral(self) -> bool {
        matches!(self.0, 20000..=29999)
    }

    /// Only the newest event per `(pubkey, kind, d-tag value)` is kept.
    #[must_use]
    pub fn is_addressable(self) -> bool {
        matches!(self.0, 30000..=39999)
    }

    /// Every event is kept: neither replaceable, ephemeral nor addressable.
    #[must_use]
    pub fn is_regular(self) -> bool {
        !(self.is_replaceable() || self.is_ephemeral() || self.is_addressable())
    }
}

impl From<u16> for Kind {
    fn from(kind: u16) -> Self {
        Kind(kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(kind: u16) -> [bool; 4] {
        let kind = Kind(kind);
        [
            kind.is_regular(),
            kind.is_replaceable(),
            kind.is_ephemeral(),
            kind.is_addressable(),
        ]
    }

    const REGULAR: [bool; 4] = [true, false, false, false];
    const REPLACEABLE: [bool; 4] = [false, true, false, false];
    const EPHEMERAL: [bool; 4] = [false, false, true, false];
    const ADDRESSABLE: [bool; 4] = [false, false, false, true];

    #[test]
    fn kind_classes_follow_nip01_range_boundaries() {
        let cases = [
            (0, REPLACEABLE),
            (1, REGULAR),
            (2, REGULAR),
            (3, REPLACEABLE),
            (4, REGULAR),
            (9999, REGULAR),
            (10000, REPLACEABLE),
            (19999, REPLACEABLE),
            (20000, EPHEMERAL),
            (29999, EPHEMERAL),
            (30000, ADDRESSABLE),
            (39999, ADDRESSABLE),
            (40000, REGULAR),
            (u16::MAX, REGULAR),
        ];
        for (kind, expected) in cases {
            assert_eq!(classes(kind), expected, "kind {kind}");
        }
    }

    #[test]
    fn every_kind_is_in_exactly_one_class() {
        for kind in 0..=u16::MAX {
            let count = classes(kind).iter().filter(|&&class| class).count();
            assert_eq!(count, 1, "kind {kind}");
        }
    }

    #[test]
    fn kind_outside_u16_is_rejected_by_serde() {
        assert_eq!(serde_json::from_str::<Kind>("65535").unwrap(), Kind(65535));
        assert!(serde_json::from_str::<Kind>("65536").is_err());
        assert!(serde_json::from_str::<Kind>("-1").is_err());
        assert!(serde_json::from_str::<Kind>("1.0").is_err());
    }
}
