//! Identities shared by every machine: peers and relays are named by 32-byte
//! ed25519 public keys.
//!
//! A [`PeerId`] is the public key a process proves in the peer-link handshake;
//! a [`RelayKey`] is the public key of a relay's owner log. Both print and
//! parse as 64 lowercase hex characters, the form operators see in URLs,
//! metrics labels and logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a textual key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The text is not 64 characters long.
    #[error("a key is 64 hex characters, got {0}")]
    WrongLength(usize),
    /// The text holds a character outside `[0-9a-fA-F]`.
    #[error("a key is hex, found a non-hex character")]
    NotHex,
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 key bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, 64 characters.
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, for log lines.
            #[must_use]
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = KeyParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                if text.len() != 64 {
                    return Err(KeyParseError::WrongLength(text.len()));
                }
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyParseError::NotHex)?;
                Ok(Self(bytes))
            }
        }
    };
}

key_type!(
    /// A process identity: the ed25519 public key it proves in the peer-link handshake.
    PeerId
);
key_type!(
    /// A relay: the ed25519 public key of its owner log.
    RelayKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_key_round_trips_through_hex() {
        let key = RelayKey([0xab; 32]);
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<RelayKey>(), Ok(key));
    }

    #[test]
    fn key_parse_rejects_wrong_length_and_non_hex() {
        assert_eq!("abc".parse::<PeerId>(), Err(KeyParseError::WrongLength(3)));
        let bad = "zz".repeat(32);
        assert_eq!(bad.parse::<PeerId>(), Err(KeyParseError::NotHex));
    }
}
