//! The fixed-size byte strings of NIP-01: [`EventId`], [`PublicKey`] and [`Signature`].
//!
//! On the wire each is *lowercase* hex of an exact length (64, 64 and 128 characters). Parsing is
//! strict: uppercase hex, a `0x` prefix or a wrong length is rejected, because NIP-01 hashes the
//! lowercase form and a relay that silently normalised would store an event under an id its author
//! never signed.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a hex field could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// The text does not have the exact length of the field.
    #[error("expected {expected} lowercase hex characters, got {got}")]
    WrongLength {
        /// Characters the field needs.
        expected: usize,
        /// Bytes the text has.
        got: usize,
    },
    /// The text holds a character outside `[0-9a-f]`.
    #[error("expected lowercase hex, found another character")]
    NotLowercaseHex,
}

/// Decodes exactly `N` bytes from `2 * N` lowercase hex characters.
fn decode_lower_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return Err(HexError::WrongLength {
            expected: 2 * N,
            got: digits.len(),
        });
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let mut value = 0u8;
        for &digit in pair {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                _ => return Err(HexError::NotLowercaseHex),
            };
            value = (value << 4) | nibble;
        }
        *byte = value;
    }
    Ok(bytes)
}

macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the value in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex, the NIP-01 wire form.
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses the NIP-01 wire form: exactly the right number of lowercase hex characters.
            pub fn from_hex(text: &str) -> Result<Self, HexError> {
                decode_lower_hex::<$len>(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Eight hex characters identify a value in logs without flooding them.
                write!(f, "{}({})", stringify!($name), hex::encode(&self.0[..4]))
            }
        }

        impl FromStr for $name {
            type Err = HexError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::from_hex(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct HexVisitor;

                impl Visitor<'_> for HexVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} lowercase hex characters", 2 * $len)
                    }

                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::from_hex(text).map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(HexVisitor)
            }
        }
    };
}

hex_bytes!(
    /// An event id: the SHA-256 of the event's NIP-01 canonical serialisation.
    EventId,
    32
);
hex_bytes!(
    /// An author: a BIP-340 x-only secp256k1 public key. Parsing checks only the length; whether
    /// the bytes are a point on the curve is checked when a signature is verified.
    PublicKey,
    32
);
hex_bytes!(
    /// A BIP-340 Schnorr signature over an [`EventId`].
    Signature,
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_round_trips_through_lowercase_hex() {
        let id = EventId([0x0f; 32]);
        let text = id.to_hex();
        assert_eq!(text, "0f".repeat(32));
        assert_eq!(EventId::from_hex(&text), Ok(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<EventId>(&format!("\"{text}\"")).unwrap(),
            id
        );
    }

    #[test]
    fn hex_rejects_uppercase_wrong_length_and_non_hex() {
        assert_eq!(
            EventId::from_hex(&"AB".repeat(32)),
            Err(HexError::NotLowercaseHex)
        );
        assert_eq!(
            PublicKey::from_hex(&"ab".repeat(31)),
            Err(HexError::WrongLength {
                expected: 64,
                got: 62
            })
        );
        assert_eq!(
            Signature::from_hex(&"ab".repeat(32)),
            Err(HexError::WrongLength {
                expected: 128,
                got: 64
            })
        );
        assert_eq!(
            EventId::from_hex(&format!("{}zz", "ab".repeat(31))),
            Err(HexError::NotLowercaseHex)
        );
        // A multi-byte character must not be split into "hex digits".
        assert!(EventId::from_hex(&format!("{}é", "a".repeat(62))).is_err());
    }

    #[test]
    fn signature_serialises_as_128_hex_characters() {
        let sig = Signature([0xa5; 64]);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json.len(), 130);
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(serde_json::from_str::<Signature>("12").is_err());
    }
}
