//! Sans-IO framing of the peer-link byte stream: each frame is a 4-byte big-endian length, then
//! that many bytes of [`encode`](super::encode) output.
//!
//! The contract and the adapter's drive loop are on [`FrameDecoder`].

use bytes::{Buf, BytesMut};

use super::codec::{MAX_FRAME_BYTES, decode, encode_after};
use super::{Frame, WireError};

/// Width of the stream length prefix, in bytes.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Encodes `frame` for the stream: its length as a 4-byte big-endian integer, then
/// [`encode`](super::encode) output.
pub fn encode_length_prefixed(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = encode_after(frame, LENGTH_PREFIX_BYTES)?;
    let frame_len = out.len().saturating_sub(LENGTH_PREFIX_BYTES);
    // `encode_after` caps frames at MAX_FRAME_BYTES (16 MiB), far below u32::MAX.
    let prefix = u32::try_from(frame_len).map_err(|_| WireError::FrameTooLarge {
        max: MAX_FRAME_BYTES,
        got: frame_len,
    })?;
    if let Some(head) = out.get_mut(..LENGTH_PREFIX_BYTES) {
        head.copy_from_slice(&prefix.to_be_bytes());
    }
    Ok(out)
}

/// Cuts a byte stream into [`Frame`]s.
///
/// Contract:
/// - It yields exactly the frames that were written, in order, however the stream is cut into
///   chunks by the transport.
/// - A declared length over the decoder's maximum is an error as soon as its 4 bytes arrive; the
///   body is neither awaited nor buffered.
/// - After any error the decoder is *failed*: every later [`FrameDecoder::next_frame`] returns the
///   same error and pushed bytes are dropped. A peer that sent one bad frame is not trusted to
///   have framed the rest correctly; the adapter closes the link.
///
/// The adapter's drive loop, after every read from the socket:
///
/// ```
/// use hypergate_core::wire::{
///     Frame, FrameDecoder, Heartbeat, MAX_FRAME_BYTES, Message, encode_length_prefixed,
/// };
/// use hypergate_core::time::UnixTime;
///
/// let ping = Frame::new(7, Message::Heartbeat(Heartbeat { seq: 1, sent_at: UnixTime(5) }));
/// let stream = encode_length_prefixed(&ping)?;
///
/// let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
/// let mut received = Vec::new();
/// for read in stream.chunks(3) {
///     decoder.push(read);
///     // Drain before the next read, so at most one partial frame stays buffered.
///     while let Some(frame) = decoder.next_frame()? {
///         received.push(frame);
///     }
/// }
/// assert_eq!(received, vec![ping]);
/// assert_eq!(decoder.buffered_len(), 0);
/// # Ok::<(), hypergate_core::wire::WireError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    buffer: BytesMut,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder that accepts frames of at most `max_frame_bytes` (capped at
    /// [`MAX_FRAME_BYTES`], which [`decode`](super::decode) enforces anyway).
    #[must_use]
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_frame_bytes.min(MAX_FRAME_BYTES),
            buffer: BytesMut::new(),
            failed: None,
        }
    }

    /// Feeds bytes read from the transport. Dropped if the decoder has failed; an oversized
    /// length prefix fails the decoder here, before any of its body is kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        if let Err(error) = self.check_declared_len() {
            self.fail(error);
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that failed
    /// the decoder (now or earlier).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(frame_len) = self
            .check_declared_len()
            .map_err(|error| self.fail(error))?
        else {
            return Ok(None);
        };
        let needed = LENGTH_PREFIX_BYTES.saturating_add(frame_len);
        if self.buffer.len() < needed {
            return Ok(None);
        }
        self.buffer.advance(LENGTH_PREFIX_BYTES);
        let body = self.buffer.split_to(frame_len);
        decode(&body).map(Some).map_err(|error| self.fail(error))
    }

    /// Bytes received but not yet returned as frames.
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The error that failed the decoder, if it has failed.
    #[must_use]
    pub fn error(&self) -> Option<&WireError> {
        self.failed.as_ref()
    }

    /// The length declared by the buffered prefix (`None` until 4 bytes are buffered), or
    /// [`WireError::TooLong`] if it exceeds the maximum.
    fn check_declared_len(&self) -> Result<Option<usize>, WireError> {
        let Some(&[a, b, c, d]) = self.buffer.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([a, b, c, d]);
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        if declared > self.max_frame_bytes {
            return Err(WireError::TooLong {
                what: "frame",
                max: self.max_frame_bytes,
                got: declared,
            });
        }
        Ok(Some(declared))
    }

    /// Enters the failed state and releases the buffer.
    fn fail(&mut self, error: WireError) -> WireError {
        self.buffer = BytesMut::new();
        self.failed = Some(error.clone());
        error
    }
}
