//! The versioned postcard codec of the gateway⇄worker peer link.
//!
//! Contract:
//! - [`encode`] turns a [`Frame`] into bytes: a 2-byte big-endian [`PROTOCOL_VERSION`] followed by
//!   the postcard encoding of the frame. It refuses frames over [`MAX_FRAME_BYTES`] instead of
//!   producing bytes the other side must reject.
//! - [`decode`] accepts exactly what [`encode`] produces and nothing else. It never panics, never
//!   allocates more than the bounds allow, and checks the version before it looks at the body.
//!   Every error it returns is the peer's fault ([`WireError::is_peer_fault`]); the link should be
//!   closed, not resynchronised.
//! - Every variable-length field is a [`BoundedString`], [`BoundedBytes`] or [`BoundedVec`] whose
//!   bound is a named constant in this module; a decoded value always satisfies its bound, and so
//!   does a value built by a checked constructor.
//! - [`FrameDecoder`] / [`encode_length_prefixed`] cut a byte stream into frames with a 4-byte
//!   big-endian length prefix, sans-IO: the link adapter pushes bytes in and drains frames out.
//!
//! Compatibility: postcard identifies enum variants and struct fields by position. New message
//! kinds and enum variants are appended, never inserted or reordered, and any change to an
//! existing shape bumps [`PROTOCOL_VERSION`]. The tests pin the tag of every message kind.
//!
//! The link under this codec (TCP + Noise handshake) lives in `hypergate-adapters`; the handshake
//! identity, not [`Hello::peer_id`], is what authenticates a peer.

mod bounded;
mod codec;
mod framing;
mod message;
mod violation;

#[cfg(test)]
mod tests;

pub use bounded::{BoundedBytes, BoundedString, BoundedVec};
pub use codec::{MAX_FRAME_BYTES, PROTOCOL_VERSION, VERSION_PREFIX_BYTES, decode, encode};
pub use framing::{FrameDecoder, LENGTH_PREFIX_BYTES, encode_length_prefixed};
pub use message::*;

/// Why bytes could not be decoded or a frame could not be built, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    // The peer sent bytes that break the protocol. The link is unusable: close it.
    /// The frame has no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame starts with a protocol version this build does not speak.
    #[error("peer speaks protocol version {got}, this build speaks {supported}")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u16,
        /// The version this build speaks, [`PROTOCOL_VERSION`].
        supported: u16,
    },
    /// The bytes are not a postcard encoding of a [`Frame`] (truncated, bad tag, bad UTF-8, …).
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
    /// A frame, string, byte string or list is longer than its bound.
    #[error("{what} of {got} exceeds the limit of {max}")]
    TooLong {
        /// What was too long: `"frame"`, `"string"`, `"bytes"` or `"list"`.
        what: &'static str,
        /// The bound (bytes, or elements for a list).
        max: usize,
        /// The length the peer declared; for a list whose length was not declared up front, the
        /// first length past the bound.
        got: usize,
    },
    /// A complete frame was followed by more bytes inside the same frame.
    #[error("{count} bytes after the end of the frame")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A [`MirrorRangeRequest`] with `end < start` or a span over
    /// [`MAX_MIRROR_BLOCKS_PER_RANGE`].
    #[error(
        "mirror range {start}..{end} is reversed or spans more than {MAX_MIRROR_BLOCKS_PER_RANGE} blocks"
    )]
    BadRange {
        /// First block requested.
        start: u64,
        /// One past the last block requested.
        end: u64,
    },

    // The caller built a value outside the protocol's limits (API misuse, or local input such as
    // a client's frame that is too big to forward). Nothing was sent.
    /// A value given to a bounded constructor is longer than the bound.
    #[error("{what} of {got} exceeds the wire limit of {max}")]
    ValueTooLong {
        /// What was too long: `"string"`, `"bytes"` or `"list"`.
        what: &'static str,
        /// The bound (bytes, or elements for a list).
        max: usize,
        /// The length given.
        got: usize,
    },
    /// [`MirrorRangeRequest::new`] was given `end < start` or a span over
    /// [`MAX_MIRROR_BLOCKS_PER_RANGE`].
    #[error(
        "mirror range {start}..{end} is reversed or spans more than {MAX_MIRROR_BLOCKS_PER_RANGE} blocks"
    )]
    InvalidRange {
        /// First block requested.
        start: u64,
        /// One past the last block requested.
        end: u64,
    },
    /// A name parsed with `FromStr` is not one of the enum's names.
    #[error("{got:?} is not a known {what}")]
    UnknownName {
        /// The enum being parsed, e.g. `"pending type"`.
        what: &'static str,
        /// The text that did not match.
        got: String,
    },

    // This side could not produce a frame. Nothing was sent.
    /// The encoded frame would exceed [`MAX_FRAME_BYTES`]; split the payload (e.g. fewer mirror
    /// blocks per response).
    #[error("frame of {got} bytes exceeds the {max}-byte frame limit")]
    FrameTooLarge {
        /// The frame limit.
        max: usize,
        /// The size the encoded frame would have had.
        got: usize,
    },
    /// postcard refused to serialise the frame.
    #[error("could not encode frame: {0}")]
    Encode(#[source] postcard::Error),
}

impl WireError {
    /// Whether the peer is to blame (it sent bytes that break the protocol), as opposed to a
    /// local misuse or limit. Peer faults close the link and count against the peer.
    #[must_use]
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            WireError::Empty
                | WireError::UnsupportedVersion { .. }
                | WireError::Malformed(_)
                | WireError::TooLong { .. }
                | WireError::TrailingBytes { .. }
                | WireError::BadRange { .. }
        )
    }
}
