//! The ops a relay's logs carry, and their byte form (one op per log entry).
//!
//! Contract:
//! - [`RelayOp::encode`] writes a 2-byte big-endian [`FORMAT_VERSION`] followed by the postcard
//!   encoding of the op — the same shape as the peer link's frames ([`crate::wire::encode`]), so
//!   the version is checked before anything about the body is assumed and a later version may
//!   change the body entirely. Variants are identified by position: append, never reorder.
//! - [`RelayOp::decode`] accepts exactly what `encode` produces and nothing else: it checks the
//!   version first, rejects an event payload over [`MAX_EVENT_JSON_BYTES`] or not UTF-8, and
//!   rejects trailing bytes. It never panics and never copies more than one bounded payload.
//!   Every error it returns means the log's writer wrote something that is not an op: the entry
//!   is skipped, it is never repaired.
//! - An [`EventJson`] is always within the payload bound and valid UTF-8, so any op that exists
//!   encodes, and encodes to bytes that decode back to it. Whether the payload is a valid,
//!   correctly signed NIP-01 event is *not* checked here: adapters parse ([`EventJson::parse`])
//!   and verify every event before it reaches a [`RelayView`](super::RelayView).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::KeyParseError;
use crate::nostr::{Event, EventError};

/// The version of the op format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Largest event payload (the event's NIP-01 JSON) an op may carry, in bytes: 512 KiB. Twice the
/// peer link's [`MAX_NOSTR_FRAME_BYTES`](crate::wire::MAX_NOSTR_FRAME_BYTES), so that any event a
/// client can send through the gateway fits with room to spare, while one log entry stays small
/// enough to hold in memory without thought.
pub const MAX_EVENT_JSON_BYTES: usize = 512 * 1024;

/// Largest encoded op: version (2) + variant tag (1) + payload length as a varint (3) + payload.
pub const MAX_ENCODED_OP_BYTES: usize = 2 + 1 + 3 + MAX_EVENT_JSON_BYTES;

/// Why bytes are not an op, or an op could not be built, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayOpError {
    // The log's writer wrote an entry that is not an op (returned by `decode`). Skip the entry.
    /// The entry has no bytes at all.
    #[error("empty relay op")]
    Empty,
    /// The entry starts with a format version this build does not read.
    #[error("relay op format version {got}, this build reads {supported}")]
    UnsupportedVersion {
        /// The version in the entry.
        got: u16,
        /// The version this build reads, [`FORMAT_VERSION`].
        supported: u16,
    },
    /// The body is not a postcard encoding of an op (truncated, unknown variant, …).
    #[error("malformed relay op: {0}")]
    Malformed(#[source] postcard::Error),
    /// A complete op was followed by more bytes in the same entry.
    #[error("{count} bytes after the end of the relay op")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The entry's event payload is larger than [`MAX_EVENT_JSON_BYTES`].
    #[error("event payload of {len} bytes exceeds the limit of {max}")]
    EventTooLarge {
        /// Bytes of payload.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The entry's event payload is not UTF-8.
    #[error("event payload is not UTF-8 (valid up to byte {valid_up_to})")]
    EventNotUtf8 {
        /// Length of the longest valid UTF-8 prefix.
        valid_up_to: usize,
    },

    // The caller tried to build a payload outside the format's limits. Nothing was written.
    /// [`EventJson::new`] was given more than [`MAX_EVENT_JSON_BYTES`].
    #[error("event payload of {len} bytes exceeds the relay op limit of {max}")]
    PayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`EventJson::new`] was given bytes that are not UTF-8.
    #[error("event payload is not UTF-8 (valid up to byte {valid_up_to})")]
    PayloadNotUtf8 {
        /// Length of the longest valid UTF-8 prefix.
        valid_up_to: usize,
    },
}

impl RelayOpError {
    /// Whether the bytes of a log entry are to blame (returned by [`RelayOp::decode`]), as
    /// opposed to a caller building a payload that does not fit.
    #[must_use]
    pub fn is_log_fault(&self) -> bool {
        !matches!(
            self,
            RelayOpError::PayloadTooLarge { .. } | RelayOpError::PayloadNotUtf8 { .. }
        )
    }
}

/// A writer log's key: a 32-byte ed25519 public key. Membership ops name writers by it.
///
/// Prints and parses as 64 hex characters (the form operators see). Serialises as that hex
/// string in human-readable formats (JSON) and as 32 raw bytes in binary ones (postcard).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterKey(pub [u8; 32]);

impl WriterKey {
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
}

impl From<[u8; 32]> for WriterKey {
    fn from(bytes: [u8; 32]) -> Self {
        WriterKey(bytes)
    }
}

impl fmt::Display for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex characters identify a key in logs without flooding them.
        write!(f, "WriterKey({})", hex::encode(&self.0[..4]))
    }
}

impl FromStr for WriterKey {
    type Err = KeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 64 {
            return Err(KeyParseError::WrongLength(text.len()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyParseError::NotHex)?;
        Ok(WriterKey(bytes))
    }
}

impl Serialize for WriterKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for WriterKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;

        impl Visitor<'_> for HexVisitor {
            type Value = WriterKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex characters")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<WriterKey, E> {
                text.parse().map_err(E::custom)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(HexVisitor)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(WriterKey)
        }
    }
}

/// An event's NIP-01 JSON as a log carries it: at most [`MAX_EVENT_JSON_BYTES`] of UTF-8.
///
/// Shared without copying (`Bytes`). The bound and the encoding are checked on construction; the
/// JSON itself is checked only by [`EventJson::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventJson(Bytes);

impl EventJson {
    /// Wraps `json` if it is at most [`MAX_EVENT_JSON_BYTES`] of UTF-8, else
    /// [`RelayOpError::PayloadTooLarge`] / [`RelayOpError::PayloadNotUtf8`].
    pub fn new(json: impl Into<Bytes>) -> Result<EventJson, RelayOpError> {
        let json = json.into();
        check_payload(&json).map_err(|error| match error {
            RelayOpError::EventTooLarge { len, max } => RelayOpError::PayloadTooLarge { len, max },
            RelayOpError::EventNotUtf8 { valid_up_to } => {
                RelayOpError::PayloadNotUtf8 { valid_up_to }
            }
            other => other,
        })?;
        Ok(EventJson(json))
    }

    /// The compact NIP-01 JSON of `event`, if it fits.
    pub fn from_event(event: &Event) -> Result<EventJson, RelayOpError> {
        EventJson::new(event.to_json())
    }

    /// Parses the payload as an event. Checks shape only: the caller verifies the id and the
    /// signature ([`Event::verify`]) before trusting it.
    pub fn parse(&self) -> Result<Event, EventError> {
        let text = std::str::from_utf8(&self.0)
            // Unreachable by construction; an error rather than a panic all the same.
            .map_err(|_| EventError::Malformed("event payload is not UTF-8".to_owned()))?;
        Event::parse_json(text)
    }

    /// The payload bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The payload bytes, without copying.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload is empty (never a valid event, but a valid op).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The bound and encoding of a payload, reported as a decode error (the log's fault).
fn check_payload(json: &[u8]) -> Result<(), RelayOpError> {
    if json.len() > MAX_EVENT_JSON_BYTES {
        return Err(RelayOpError::EventTooLarge {
            len: json.len(),
            max: MAX_EVENT_JSON_BYTES,
        });
    }
    std::str::from_utf8(json).map_err(|error| RelayOpError::EventNotUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    Ok(())
}

/// One entry of a relay log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RelayOp {
    /// A Nostr event (writer logs).
    Event(EventJson),
    /// `key`'s log becomes a writer of the relay (owner log).
    AddWriter {
        /// The new writer.
        key: WriterKey,
    },
    /// `key`'s log stops being a writer; its first `final_length` entries still count (owner log).
    RemoveWriter {
        /// The writer removed.
        key: WriterKey,
        /// How many of its entries count from now on.
        final_length: u64,
    },
}

/// The encoded shape of [`RelayOp`]: the event payload is borrowed, so decoding copies it once,
/// after its bound is checked. Field and variant order is the format.
#[derive(Serialize, Deserialize)]
enum Repr<'a> {
    Event(#[serde(borrow)] Payload<'a>),
    AddWriter { key: WriterKey },
    RemoveWriter { key: WriterKey, final_length: u64 },
}

/// A byte string (varint length + raw bytes in postcard), borrowed from the input.
struct Payload<'a>(&'a [u8]);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(deserializer).map(Payload)
    }
}

impl RelayOp {
    /// An [`RelayOp::Event`] carrying `event`'s compact JSON, if it fits.
    pub fn event(event: &Event) -> Result<RelayOp, RelayOpError> {
        EventJson::from_event(event).map(RelayOp::Event)
    }

    /// The op as one log entry: version prefix + postcard body. At most [`MAX_ENCODED_OP_BYTES`].
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let repr = match self {
            RelayOp::Event(json) => Repr::Event(Payload(&json.0)),
            RelayOp::AddWriter { key } => Repr::AddWriter { key: *key },
            RelayOp::RemoveWriter { key, final_length } => Repr::RemoveWriter {
                key: *key,
                final_length: *final_length,
            },
        };
        let mut out = Vec::with_capacity(MAX_ENCODED_OP_BYTES.min(64 + self.payload_len()));
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        serialize_into(&repr, out)
    }

    /// Decodes one log entry produced by [`RelayOp::encode`].
    ///
    /// Checks, in order: empty input, the version (before the body is looked at), the body, the
    /// payload bound and encoding, and leftovers. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<RelayOp, RelayOpError> {
        let [high, low, body @ ..] = bytes else {
            return Err(if bytes.is_empty() {
                RelayOpError::Empty
            } else {
                // One byte: not even a whole version. postcard's word for "ran out of input".
                RelayOpError::Malformed(postcard::Error::DeserializeUnexpectedEnd)
            });
        };
        let version = u16::from_be_bytes([*high, *low]);
        if version != FORMAT_VERSION {
            return Err(RelayOpError::UnsupportedVersion {
                got: version,
                supported: FORMAT_VERSION,
            });
        }
        let (repr, rest) =
            postcard::take_from_bytes::<Repr<'_>>(body).map_err(RelayOpError::Malformed)?;
        if !rest.is_empty() {
            return Err(RelayOpError::TrailingBytes { count: rest.len() });
        }
        Ok(match repr {
            Repr::Event(Payload(json)) => {
                check_payload(json)?;
                RelayOp::Event(EventJson(Bytes::copy_from_slice(json)))
            }
            Repr::AddWriter { key } => RelayOp::AddWriter { key },
            Repr::RemoveWriter { key, final_length } => RelayOp::RemoveWriter { key, final_length },
        })
    }

    fn payload_len(&self) -> usize {
        match self {
            RelayOp::Event(json) => json.len(),
            RelayOp::AddWriter { .. } | RelayOp::RemoveWriter { .. } => 0,
        }
    }
}

/// postcard into a `Vec`.
///
/// Cannot fail: extending a `Vec` never runs out of room, and [`Repr`] holds only a byte string,
/// fixed-size arrays and integers, none of which postcard refuses to serialise.
#[allow(clippy::expect_used)]
fn serialize_into(repr: &Repr<'_>, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(repr, out).expect("a relay op always serialises")
}

#[cfg(test)]
mod tests;
