//! The sealed byte stream: chunks encrypted and authenticated with ChaCha20-Poly1305 under one
//! direction's key from the handshake.
//!
//! Contract:
//! - On the wire a chunk is a 2-byte big-endian length `L`, then `L` bytes: the ciphertext
//!   followed by its 16-byte Poly1305 tag. `L` is at least [`MIN_CHUNK_BYTES`] (a chunk carries
//!   at least one byte) and at most [`MAX_CHUNK_BYTES`], the Noise message limit.
//! - The `n`-th chunk of a direction is sealed under nonce `n` (4 zero bytes, then `n` as a
//!   little-endian `u64`: Noise's ChaChaPoly nonce). Each direction has its own key, so no
//!   (key, nonce) pair is ever used twice; a [`Sealer`] refuses once the nonce space is spent.
//! - [`SealedDecoder`] opens chunks in order. A chunk that does not authenticate (a flipped bit,
//!   a reordered, replayed, dropped or truncated chunk) is [`SealError::Unauthentic`]; after any
//!   error the decoder is failed and stays failed: the link must be closed.
//! - Buffering is bounded: a declared length is checked as soon as its 2 bytes arrive, and the
//!   caller drains plaintext before it reads again, so at most one chunk plus one read is held.

use bytes::{Buf, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::Zeroize;

/// Width of a chunk's length prefix, in bytes.
pub const CHUNK_LEN_BYTES: usize = 2;
/// Width of the Poly1305 tag at the end of every chunk, in bytes.
pub const TAG_BYTES: usize = 16;
/// Largest sealed chunk (ciphertext + tag), in bytes: the Noise message limit.
pub const MAX_CHUNK_BYTES: usize = u16::MAX as usize;
/// Smallest sealed chunk: one byte of ciphertext and the tag.
pub const MIN_CHUNK_BYTES: usize = TAG_BYTES + 1;
/// Most plaintext one chunk carries, in bytes.
pub const MAX_CHUNK_PLAINTEXT: usize = MAX_CHUNK_BYTES - TAG_BYTES;

/// Why a chunk could not be sealed or opened, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    // The peer sent bytes that are not a chunk sealed for this link: close it.
    /// A chunk declared fewer bytes than a tag and one byte of ciphertext.
    #[error("sealed chunk of {len} bytes is shorter than the minimum of {MIN_CHUNK_BYTES}")]
    ChunkTooShort {
        /// The declared length.
        len: usize,
    },
    /// A chunk failed authentication: it was altered, reordered, replayed or not sealed with
    /// this link's key.
    #[error("sealed chunk {index} failed authentication")]
    Unauthentic {
        /// Position of the chunk in its direction (its nonce).
        index: u64,
    },

    // This side cannot seal any more.
    /// This direction has sealed 2^64 − 1 chunks; the link must be re-established.
    #[error("nonce space of the link key is exhausted")]
    NonceExhausted,
    /// The cipher refused to seal a chunk.
    #[error("the cipher refused to seal a chunk")]
    CipherRefused,
}

/// The Noise ChaChaPoly nonce for chunk `index`.
fn nonce(index: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    let (_, counter) = bytes.split_at_mut(4);
    counter.copy_from_slice(&index.to_le_bytes());
    Nonce::from(bytes)
}

/// Seals one direction of the stream. The key is wiped when the sealer is dropped.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    next_nonce: u64,
}

impl Sealer {
    /// A sealer whose first chunk uses nonce 0. `key` is wiped from the argument.
    #[must_use]
    pub fn new(mut key: [u8; 32]) -> Self {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        key.zeroize();
        Self {
            cipher,
            next_nonce: 0,
        }
    }

    /// Appends `plaintext` to `out` as one or more sealed chunks (none for empty plaintext).
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        for piece in plaintext.chunks(MAX_CHUNK_PLAINTEXT) {
            // Nonce u64::MAX is reserved by Noise; refusing before it keeps every nonce unique.
            if self.next_nonce == u64::MAX {
                return Err(SealError::NonceExhausted);
            }
            let sealed_len = piece.len() + TAG_BYTES;
            // `piece` holds at most MAX_CHUNK_PLAINTEXT bytes, so the length always fits a u16.
            let prefix = u16::try_from(sealed_len).unwrap_or(u16::MAX);
            out.extend_from_slice(&prefix.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(piece);
            let body = out.get_mut(start..).unwrap_or_default();
            let tag = self
                .cipher
                .encrypt_in_place_detached(&nonce(self.next_nonce), &[], body)
                // ChaCha20 refuses only messages over 256 GiB; chunks are under 64 KiB.
                .map_err(|_| SealError::CipherRefused)?;
            out.extend_from_slice(&tag);
            self.next_nonce += 1;
        }
        Ok(())
    }

    /// How many chunks this sealer has produced.
    #[must_use]
    pub fn chunks_sealed(&self) -> u64 {
        self.next_nonce
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("chunks_sealed", &self.next_nonce)
            .finish_non_exhaustive()
    }
}

/// Opens one direction of the stream. The key is wiped when the opener is dropped.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    next_nonce: u64,
}

impl Opener {
    /// An opener expecting nonce 0 first. `key` is wiped from the argument.
    #[must_use]
    pub fn new(mut key: [u8; 32]) -> Self {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        key.zeroize();
        Self {
            cipher,
            next_nonce: 0,
        }
    }

    /// Opens one chunk (ciphertext + tag) in place; returns the plaintext length.
    fn open_in_place(&mut self, chunk: &mut [u8]) -> Result<usize, SealError> {
        let index = self.next_nonce;
        let Some(plain_len) = chunk.len().checked_sub(TAG_BYTES).filter(|len| *len > 0) else {
            return Err(SealError::ChunkTooShort { len: chunk.len() });
        };
        if index == u64::MAX {
            return Err(SealError::Unauthentic { index });
        }
        let (body, tag) = chunk.split_at_mut(plain_len);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce(index), &[], body, &tag)
            .map_err(|_| SealError::Unauthentic { index })?;
        self.next_nonce += 1;
        Ok(plain_len)
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("chunks_opened", &self.next_nonce)
            .finish_non_exhaustive()
    }
}

/// Cuts the sealed byte stream into chunks and opens them, sans-IO.
///
/// Push what the transport delivered, then drain [`SealedDecoder::next_plaintext`] until it
/// returns `Ok(None)` before reading again.
#[derive(Debug)]
pub struct SealedDecoder {
    opener: Opener,
    buffer: BytesMut,
    failed: Option<SealError>,
}

impl SealedDecoder {
    /// A decoder opening chunks with `opener`.
    #[must_use]
    pub fn new(opener: Opener) -> Self {
        Self {
            opener,
            buffer: BytesMut::new(),
            failed: None,
        }
    }

    /// Feeds bytes read from the transport; dropped once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The plaintext of the next whole chunk, `Ok(None)` if more bytes are needed, or the error
    /// that failed the decoder (now or earlier).
    pub fn next_plaintext(&mut self) -> Result<Option<BytesMut>, SealError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(&[high, low]) = self.buffer.first_chunk::<CHUNK_LEN_BYTES>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len < MIN_CHUNK_BYTES {
            return Err(self.fail(SealError::ChunkTooShort { len }));
        }
        if self.buffer.len() < CHUNK_LEN_BYTES + len {
            return Ok(None);
        }
        self.buffer.advance(CHUNK_LEN_BYTES);
        let mut chunk = self.buffer.split_to(len);
        match self.opener.open_in_place(&mut chunk) {
            Ok(plain_len) => {
                chunk.truncate(plain_len);
                Ok(Some(chunk))
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Bytes received but not yet opened (a partial chunk).
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    fn fail(&mut self, error: SealError) -> SealError {
        self.buffer = BytesMut::new();
        self.failed = Some(error.clone());
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn open_all(bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut decoder = SealedDecoder::new(Opener::new(KEY));
        decoder.push(bytes);
        let mut plain = Vec::new();
        while let Some(piece) = decoder.next_plaintext()? {
            plain.extend_from_slice(&piece);
        }
        Ok(plain)
    }

    #[test]
    fn sealed_stream_opens_to_the_same_plaintext_however_it_is_cut() {
        let plaintext: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(KEY);
        let mut wire = Vec::new();
        sealer.seal_into(&plaintext[..10], &mut wire).unwrap();
        sealer.seal_into(&plaintext[10..], &mut wire).unwrap();
        assert_eq!(
            sealer.chunks_sealed(),
            5,
            "10 bytes, then 199,990 in 4 chunks"
        );

        let mut decoder = SealedDecoder::new(Opener::new(KEY));
        let mut opened = Vec::new();
        for read in wire.chunks(997) {
            decoder.push(read);
            while let Some(piece) = decoder.next_plaintext().unwrap() {
                opened.extend_from_slice(&piece);
            }
        }
        assert_eq!(opened, plaintext);
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_chunk_fails_authentication() {
        let mut wire = Vec::new();
        Sealer::new(KEY)
            .seal_into(b"hello link", &mut wire)
            .unwrap();
        for position in CHUNK_LEN_BYTES..wire.len() {
            let mut altered = wire.clone();
            altered[position] ^= 0x01;
            assert_eq!(open_all(&altered), Err(SealError::Unauthentic { index: 0 }));
        }
    }

    #[test]
    fn reordered_or_replayed_chunks_fail_authentication() {
        let mut sealer = Sealer::new(KEY);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        sealer.seal_into(b"first", &mut first).unwrap();
        sealer.seal_into(b"second", &mut second).unwrap();
        let reordered = [second.clone(), first.clone()].concat();
        assert_eq!(
            open_all(&reordered),
            Err(SealError::Unauthentic { index: 0 })
        );
        let replayed = [first.clone(), first].concat();
        assert_eq!(
            open_all(&replayed),
            Err(SealError::Unauthentic { index: 1 })
        );
    }

    #[test]
    fn a_chunk_sealed_under_another_key_is_refused() {
        let mut wire = Vec::new();
        Sealer::new([8; 32])
            .seal_into(b"not for you", &mut wire)
            .unwrap();
        assert_eq!(open_all(&wire), Err(SealError::Unauthentic { index: 0 }));
    }

    #[test]
    fn a_declared_length_below_the_tag_fails_before_any_body_arrives() {
        let mut decoder = SealedDecoder::new(Opener::new(KEY));
        decoder.push(&[0, 16]);
        assert_eq!(
            decoder.next_plaintext(),
            Err(SealError::ChunkTooShort { len: 16 })
        );
        // Failed for good: later bytes are ignored and the error repeats.
        decoder.push(&[1, 2, 3]);
        assert_eq!(decoder.buffered_len(), 0);
        assert!(decoder.next_plaintext().is_err());
    }

    #[test]
    fn a_partial_chunk_waits_for_more_bytes() {
        let mut wire = Vec::new();
        Sealer::new(KEY).seal_into(b"partial", &mut wire).unwrap();
        let mut decoder = SealedDecoder::new(Opener::new(KEY));
        decoder.push(&wire[..wire.len() - 1]);
        assert_eq!(decoder.next_plaintext(), Ok(None));
        decoder.push(&wire[wire.len() - 1..]);
        assert_eq!(
            decoder.next_plaintext().unwrap().as_deref(),
            Some(&b"partial"[..])
        );
    }
}
