//! One frame ⇄ bytes: a fixed 2-byte version prefix, then the postcard encoding of a [`Frame`].
//!
//! The version is a fixed-width big-endian `u16` rather than a postcard varint so that it can be
//! checked before anything about the body is assumed, and a future version may change the body
//! encoding entirely.

use super::violation;
use super::{Frame, WireError};

/// The peer-link protocol version this build speaks. Bumped on any change to an existing
/// message's shape. Version 2: `RegisterAck::lease_epochs`.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest encoded frame (version prefix + body), in bytes: 16 MiB.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Width of the version prefix, in bytes.
pub const VERSION_PREFIX_BYTES: usize = 2;

/// Encodes `frame` as version prefix + postcard body.
///
/// Fails with [`WireError::FrameTooLarge`] if the result would exceed [`MAX_FRAME_BYTES`]; the
/// size is measured first, so an oversized frame is never materialised.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    encode_after(frame, 0)
}

/// [`encode`], leaving `headroom` zero bytes in front of the version for the caller to fill (the
/// stream length prefix), so the frame is not copied a second time.
pub(super) fn encode_after(frame: &Frame, headroom: usize) -> Result<Vec<u8>, WireError> {
    let body_len = postcard::experimental::serialized_size(frame).map_err(WireError::Encode)?;
    let frame_len = VERSION_PREFIX_BYTES.saturating_add(body_len);
    if frame_len > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge {
            max: MAX_FRAME_BYTES,
            got: frame_len,
        });
    }
    let mut out = Vec::with_capacity(headroom.saturating_add(frame_len));
    out.resize(headroom, 0);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    postcard::to_extend(frame, out).map_err(WireError::Encode)
}

/// Decodes one frame produced by [`encode`].
///
/// Checks, in order: empty input ([`WireError::Empty`]), input over [`MAX_FRAME_BYTES`]
/// ([`WireError::TooLong`]), the version ([`WireError::UnsupportedVersion`], before the body is
/// looked at), the body ([`WireError::Malformed`], or [`WireError::TooLong`] /
/// [`WireError::BadRange`] for a bound violation), and leftovers ([`WireError::TrailingBytes`]).
/// Never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLong {
            what: "frame",
            max: MAX_FRAME_BYTES,
            got: bytes.len(),
        });
    }
    let [high, low, body @ ..] = bytes else {
        // One byte: not even a whole version. postcard's own word for "ran out of input".
        return Err(WireError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd,
        ));
    };
    let version = u16::from_be_bytes([*high, *low]);
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }

    // Clear any note left by a deserialisation outside `decode` (e.g. JSON) on this thread.
    let _ = violation::take();
    let parsed = postcard::take_from_bytes::<Frame>(body);
    let note = violation::take();
    match parsed {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(WireError::TrailingBytes { count: rest.len() }),
        Err(error) => Err(note.map_or(WireError::Malformed(error), WireError::from)),
    }
}
