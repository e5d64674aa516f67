//! Records inside the sealed stream: the core's frames, and the link's own close and welcome.
//!
//! Contract:
//! - A record is a kind byte, a 4-byte big-endian body length, then the body. Records are cut
//!   into sealed chunks however the sender batches them; a record may span chunks and a chunk
//!   may hold many records.
//!   - [`KIND_FRAME`]: the body is one core frame exactly as
//!     [`hypergate_core::wire::encode`] writes it (version prefix + postcard), so a frame record
//!     is the kind byte followed by [`encode_length_prefixed`] output.
//!   - [`KIND_CLOSE`]: a 2-byte big-endian [`CloseCode`], then a UTF-8 reason of at most
//!     [`MAX_CLOSE_REASON_BYTES`]. The sender stops after it.
//!   - [`KIND_WELCOME`]: empty. The gateway's first record: the worker was admitted.
//! - [`RecordDecoder`] refuses an unknown kind or an over-limit length as soon as the 5-byte
//!   header arrives, without waiting for or buffering the body; frame bodies go through the core's
//!   decoder, so every [`WireError`] is a [`RecordError`]. After any error the decoder stays
//!   failed: the link must be closed.

use std::fmt;

use bytes::{Buf, BytesMut};
use hypergate_core::wire::{Frame, WireError, decode, encode_length_prefixed};

use super::sealed::{Opener, SealError, SealedDecoder};

/// A record carrying one core frame.
pub const KIND_FRAME: u8 = 0;
/// A record closing the link with a code and a reason.
pub const KIND_CLOSE: u8 = 1;
/// The gateway's first record: the worker is admitted.
pub const KIND_WELCOME: u8 = 2;
/// Width of a record header (kind + length), in bytes.
pub const RECORD_HEADER_BYTES: usize = 5;
/// Longest close reason, in bytes; longer reasons are truncated when sent.
pub const MAX_CLOSE_REASON_BYTES: usize = 256;

/// Why a link was closed. Numbered like WebSocket close codes where one fits, so operators read
/// them the same way in both places; unknown codes from a newer peer are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// A side closed the link on purpose.
    pub const NORMAL: Self = Self(1000);
    /// The process is shutting down.
    pub const GOING_AWAY: Self = Self(1001);
    /// The peer broke the protocol (undecryptable chunk, malformed record or frame).
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// The stream ended without a close record. Never sent: only reported.
    pub const CONNECTION_LOST: Self = Self(1006);
    /// The peer's identity is not admitted (allow-list).
    pub const NOT_ALLOWED: Self = Self(1008);
    /// The closing side failed internally.
    pub const INTERNAL: Self = Self(1011);
    /// The peer was silent, or left our writes unread, past the dead-peer timeout.
    pub const TIMEOUT: Self = Self(4000);

    /// A short name for logs and metric labels (`"other"` for codes this build does not know).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::NORMAL => "normal",
            Self::GOING_AWAY => "going-away",
            Self::PROTOCOL_ERROR => "protocol-error",
            Self::CONNECTION_LOST => "connection-lost",
            Self::NOT_ALLOWED => "not-allowed",
            Self::INTERNAL => "internal",
            Self::TIMEOUT => "timeout",
            _ => "other",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({self})")
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A core frame.
    Frame(Frame),
    /// The sender closed the link.
    Close {
        /// Why, as a code.
        code: CloseCode,
        /// Why, in words.
        reason: String,
    },
    /// The gateway admitted the worker.
    Welcome,
}

/// Why records could not be decoded. Every variant is the peer's fault: close the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record kind byte is not one this build knows.
    #[error("unknown record kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A record declared a body longer than its kind allows.
    #[error("{kind} record of {got} bytes exceeds the limit of {max}")]
    TooLong {
        /// `"frame"`, `"close"` or `"welcome"`.
        kind: &'static str,
        /// The limit.
        max: usize,
        /// The declared length.
        got: usize,
    },
    /// A close record too short to hold its code.
    #[error("close record of {len} bytes has no room for its 2-byte code")]
    CloseTooShort {
        /// The body length.
        len: usize,
    },
    /// A close reason that is not UTF-8.
    #[error("close reason is not UTF-8")]
    ReasonNotUtf8,
    /// The input ended inside a record.
    #[error("input ended inside a record ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the unfinished record or chunk.
        buffered: usize,
    },
    /// A frame record's body is not a valid core frame.
    #[error("invalid frame: {0}")]
    Wire(#[from] WireError),
    /// The sealed chunk carrying the records did not open.
    #[error(transparent)]
    Sealed(#[from] SealError),
}

/// Appends a frame record for `frame`.
pub fn encode_frame_record(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let body = encode_length_prefixed(frame)?;
    out.push(KIND_FRAME);
    out.extend_from_slice(&body);
    Ok(())
}

/// Appends a frame record whose body (with its 4-byte length) is already
/// [`encode_length_prefixed`] output.
pub(crate) fn push_encoded_frame_record(length_prefixed: &[u8], out: &mut Vec<u8>) {
    out.push(KIND_FRAME);
    out.extend_from_slice(length_prefixed);
}

/// Appends a close record; `reason` is cut at a character boundary to fit
/// [`MAX_CLOSE_REASON_BYTES`].
pub fn encode_close_record(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    let reason = truncate_reason(reason);
    out.push(KIND_CLOSE);
    // 2 + at most 256 bytes: fits a u32.
    let len = u32::try_from(2 + reason.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a welcome record.
pub fn encode_welcome_record(out: &mut Vec<u8>) {
    out.push(KIND_WELCOME);
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// The longest prefix of `reason` that fits a close record, cut at a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

/// Cuts decrypted bytes into [`Record`]s, sans-IO: push, then drain until `Ok(None)`.
#[derive(Debug)]
pub struct RecordDecoder {
    max_frame_bytes: usize,
    buffer: BytesMut,
    failed: Option<RecordError>,
}

impl RecordDecoder {
    /// A decoder accepting frame records of at most `max_frame_bytes`.
    #[must_use]
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            buffer: BytesMut::new(),
            failed: None,
        }
    }

    /// Feeds decrypted bytes; dropped once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The next whole record, `Ok(None)` if more bytes are needed, or the error that failed the
    /// decoder.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some((kind, len)) = self.header().map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        if self.buffer.len() < RECORD_HEADER_BYTES + len {
            return Ok(None);
        }
        self.buffer.advance(RECORD_HEADER_BYTES);
        let body = self.buffer.split_to(len);
        parse_body(kind, &body)
            .map(Some)
            .map_err(|error| self.fail(error))
    }

    /// Bytes of an unfinished record.
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The buffered header's kind and length, checked against the limits.
    fn header(&self) -> Result<Option<(u8, usize)>, RecordError> {
        let Some(&[kind, a, b, c, d]) = self.buffer.first_chunk::<RECORD_HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        let (name, max) = match kind {
            KIND_FRAME => ("frame", self.max_frame_bytes),
            KIND_CLOSE => ("close", 2 + MAX_CLOSE_REASON_BYTES),
            KIND_WELCOME => ("welcome", 0),
            _ => return Err(RecordError::UnknownKind { kind }),
        };
        if len > max {
            return Err(RecordError::TooLong {
                kind: name,
                max,
                got: len,
            });
        }
        Ok(Some((kind, len)))
    }

    fn fail(&mut self, error: RecordError) -> RecordError {
        self.buffer = BytesMut::new();
        self.failed = Some(error.clone());
        error
    }
}

/// Parses the body of a record whose header passed [`RecordDecoder::header`].
fn parse_body(kind: u8, body: &[u8]) -> Result<Record, RecordError> {
    match kind {
        KIND_FRAME => Ok(Record::Frame(decode(body)?)),
        KIND_CLOSE => {
            let [high, low, reason @ ..] = body else {
                return Err(RecordError::CloseTooShort { len: body.len() });
            };
            let reason = std::str::from_utf8(reason).map_err(|_| RecordError::ReasonNotUtf8)?;
            Ok(Record::Close {
                code: CloseCode(u16::from_be_bytes([*high, *low])),
                reason: reason.to_owned(),
            })
        }
        KIND_WELCOME => Ok(Record::Welcome),
        _ => Err(RecordError::UnknownKind { kind }),
    }
}

/// The whole inbound path after the handshake: sealed chunks in, records out, sans-IO.
///
/// Chunks are opened lazily, one when the records buffered so far are exhausted, so the records
/// of a good chunk are returned before a bad chunk behind it fails the decoder.
#[derive(Debug)]
pub struct SealedRecordDecoder {
    sealed: SealedDecoder,
    records: RecordDecoder,
}

impl SealedRecordDecoder {
    /// A decoder opening chunks with `opener` and accepting frames of at most `max_frame_bytes`.
    #[must_use]
    pub fn new(opener: Opener, max_frame_bytes: usize) -> Self {
        Self {
            sealed: SealedDecoder::new(opener),
            records: RecordDecoder::new(max_frame_bytes),
        }
    }

    /// Feeds bytes read from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.sealed.push(bytes);
    }

    /// The next record, `Ok(None)` if more bytes are needed, or the error that failed the link.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordError> {
        loop {
            if let Some(record) = self.records.next_record()? {
                return Ok(Some(record));
            }
            match self.sealed.next_plaintext()? {
                Some(plaintext) => self.records.push(&plaintext),
                None => return Ok(None),
            }
        }
    }

    /// Bytes received but not yet returned as records (sealed or opened).
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.sealed.buffered_len() + self.records.buffered_len()
    }
}

/// Decodes a complete plaintext record stream (fuzz entry point for the record parser).
/// Input that ends inside a record is [`RecordError::Truncated`].
pub fn decode_record_stream(
    plaintext: &[u8],
    max_frame_bytes: usize,
) -> Result<Vec<Record>, RecordError> {
    let mut decoder = RecordDecoder::new(max_frame_bytes);
    decoder.push(plaintext);
    let mut records = Vec::new();
    while let Some(record) = decoder.next_record()? {
        records.push(record);
    }
    match decoder.buffered_len() {
        0 => Ok(records),
        buffered => Err(RecordError::Truncated { buffered }),
    }
}

/// Opens and decodes a complete sealed stream under `key` (fuzz entry point for the encrypted
/// frame parser). Input that ends inside a chunk or record is [`RecordError::Truncated`].
pub fn decode_sealed_stream(
    key: [u8; 32],
    bytes: &[u8],
    max_frame_bytes: usize,
) -> Result<Vec<Record>, RecordError> {
    let mut decoder = SealedRecordDecoder::new(Opener::new(key), max_frame_bytes);
    decoder.push(bytes);
    let mut records = Vec::new();
    while let Some(record) = decoder.next_record()? {
        records.push(record);
    }
    match decoder.buffered_len() {
        0 => Ok(records),
        buffered => Err(RecordError::Truncated { buffered }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_link::sealed::Sealer;
    use hypergate_core::time::UnixTime;
    use hypergate_core::wire::{Heartbeat, MAX_FRAME_BYTES, Message};

    fn heartbeat(seq: u64) -> Frame {
        Frame::new(
            seq,
            Message::Heartbeat(Heartbeat {
                seq,
                sent_at: UnixTime(seq),
            }),
        )
    }

    #[test]
    fn frames_close_and_welcome_round_trip_through_a_sealed_stream() {
        let mut plain = Vec::new();
        encode_welcome_record(&mut plain);
        encode_frame_record(&heartbeat(1), &mut plain).unwrap();
        encode_frame_record(&heartbeat(2), &mut plain).unwrap();
        encode_close_record(CloseCode::GOING_AWAY, "restarting", &mut plain);
        let mut wire = Vec::new();
        Sealer::new([3; 32]).seal_into(&plain, &mut wire).unwrap();
        let records = decode_sealed_stream([3; 32], &wire, MAX_FRAME_BYTES).unwrap();
        assert_eq!(
            records,
            vec![
                Record::Welcome,
                Record::Frame(heartbeat(1)),
                Record::Frame(heartbeat(2)),
                Record::Close {
                    code: CloseCode::GOING_AWAY,
                    reason: "restarting".into()
                },
            ]
        );
    }

    #[test]
    fn an_unknown_kind_fails_at_the_header() {
        assert_eq!(
            decode_record_stream(&[9, 0, 0, 0, 1], MAX_FRAME_BYTES),
            Err(RecordError::UnknownKind { kind: 9 })
        );
    }

    #[test]
    fn an_oversized_frame_record_fails_before_its_body_arrives() {
        let mut decoder = RecordDecoder::new(1024);
        decoder.push(&[KIND_FRAME, 0, 0, 4, 1]);
        assert_eq!(
            decoder.next_record(),
            Err(RecordError::TooLong {
                kind: "frame",
                max: 1024,
                got: 1025
            })
        );
    }

    #[test]
    fn a_frame_record_with_a_bad_tag_is_a_wire_error() {
        let mut plain = Vec::new();
        encode_frame_record(&heartbeat(1), &mut plain).unwrap();
        // Byte 7 is the first postcard byte after kind (1), length (4) and version (2): the
        // frame's request id; byte 8 is the message tag. 200 is no message kind.
        plain[8] = 200;
        assert!(matches!(
            decode_record_stream(&plain, MAX_FRAME_BYTES),
            Err(RecordError::Wire(_))
        ));
    }

    #[test]
    fn close_reasons_are_truncated_at_a_character_boundary() {
        let reason = "é".repeat(200); // 400 bytes
        let mut plain = Vec::new();
        encode_close_record(CloseCode::NORMAL, &reason, &mut plain);
        let records = decode_record_stream(&plain, MAX_FRAME_BYTES).unwrap();
        let [Record::Close { reason: got, .. }] = records.as_slice() else {
            panic!("expected one close record, got {records:?}");
        };
        assert_eq!(got.len(), MAX_CLOSE_REASON_BYTES);
        assert!(reason.starts_with(got.as_str()));
    }

    #[test]
    fn a_close_record_without_room_for_a_code_or_with_bad_utf8_is_refused() {
        assert_eq!(
            decode_record_stream(&[KIND_CLOSE, 0, 0, 0, 1, 7], MAX_FRAME_BYTES),
            Err(RecordError::CloseTooShort { len: 1 })
        );
        assert_eq!(
            decode_record_stream(&[KIND_CLOSE, 0, 0, 0, 3, 3, 232, 0xff], MAX_FRAME_BYTES),
            Err(RecordError::ReasonNotUtf8)
        );
    }

    #[test]
    fn input_ending_inside_a_record_is_truncated() {
        let mut plain = Vec::new();
        encode_frame_record(&heartbeat(1), &mut plain).unwrap();
        plain.pop();
        assert!(matches!(
            decode_record_stream(&plain, MAX_FRAME_BYTES),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn close_codes_print_their_number_and_name() {
        assert_eq!(CloseCode::NOT_ALLOWED.to_string(), "1008 (not-allowed)");
        assert_eq!(CloseCode(4321).to_string(), "4321 (other)");
    }
}
