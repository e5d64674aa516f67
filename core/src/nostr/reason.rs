//! The machine-readable prefixes NIP-01 puts in front of `OK` and `CLOSED` messages.
//!
//! A rejection reads `"<prefix>: <human detail>"`, e.g. `"invalid: bad signature"`. Clients
//! branch on the prefix (retry after `rate-limited`, authenticate after `auth-required`), so
//! every rejection this crate produces is built with [`MachineReadablePrefix::message`] and never
//! by hand.

use std::fmt;

/// A NIP-01 (and NIP-42 `auth-required`) machine-readable prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MachineReadablePrefix {
    /// The relay already has this event.
    Duplicate,
    /// The event lacks the proof of work the relay asks for (NIP-13).
    Pow,
    /// The author or client is blocked.
    Blocked,
    /// The client sends too fast.
    RateLimited,
    /// The message breaks NIP-01 (bad id, bad signature, malformed filter, limits).
    Invalid,
    /// The client is not allowed to do this, whoever it is.
    Restricted,
    /// The relay drops events from this author without storing them.
    Mute,
    /// The relay failed internally; the client did nothing wrong.
    Error,
    /// The client must authenticate first (NIP-42).
    AuthRequired,
}

impl MachineReadablePrefix {
    /// Every prefix, for tests and for parsing.
    pub const ALL: [MachineReadablePrefix; 9] = [
        Self::Duplicate,
        Self::Pow,
        Self::Blocked,
        Self::RateLimited,
        Self::Invalid,
        Self::Restricted,
        Self::Mute,
        Self::Error,
        Self::AuthRequired,
    ];

    /// The prefix as it appears on the wire, without the colon.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Pow => "pow",
            Self::Blocked => "blocked",
            Self::RateLimited => "rate-limited",
            Self::Invalid => "invalid",
            Self::Restricted => "restricted",
            Self::Mute => "mute",
            Self::Error => "error",
            Self::AuthRequired => "auth-required",
        }
    }

    /// `"<prefix>: <detail>"`, the text of an `OK` or `CLOSED` message.
    #[must_use]
    pub fn message(self, detail: &str) -> String {
        format!("{}: {detail}", self.as_str())
    }

    /// The prefix a received `OK`/`CLOSED` message starts with, if it is a known one.
    #[must_use]
    pub fn of(message: &str) -> Option<MachineReadablePrefix> {
        let (prefix, _detail) = message.split_once(':')?;
        Self::ALL.into_iter().find(|known| known.as_str() == prefix)
    }
}

impl fmt::Display for MachineReadablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_puts_prefix_colon_space_before_detail() {
        assert_eq!(
            MachineReadablePrefix::Invalid.message("bad signature"),
            "invalid: bad signature"
        );
        assert_eq!(
            MachineReadablePrefix::RateLimited.message("slow down"),
            "rate-limited: slow down"
        );
        assert_eq!(
            MachineReadablePrefix::AuthRequired.message("log in"),
            "auth-required: log in"
        );
    }

    #[test]
    fn of_recovers_every_prefix_from_its_message() {
        for prefix in MachineReadablePrefix::ALL {
            assert_eq!(
                MachineReadablePrefix::of(&prefix.message("x")),
                Some(prefix)
            );
        }
        assert_eq!(MachineReadablePrefix::of("stored"), None);
        assert_eq!(MachineReadablePrefix::of("unknown: x"), None);
        assert_eq!(MachineReadablePrefix::of(""), None);
    }
}
