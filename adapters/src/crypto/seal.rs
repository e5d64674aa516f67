//! The original's sealed envelope: a tweetnacl `nacl.box` (X25519 +
//! XSalsa20-Poly1305) with the sender's public key and the nonce carried
//! beside the ciphertext, as JSON `{cipherText, nonce, publicKey}` in
//! standard base64. This is *not* libsodium's `crypto_box_seal`.
//!
//! Two directions use it:
//! - **Deposit** ([`seal_to`] / [`open_with`]): a worker seals its writer
//!   package to the escrow's static key from a fresh ephemeral key pair; the
//!   envelope's `publicKey` is that ephemeral key.
//! - **Lease** ([`seal_lease`] / [`open_lease`]): the escrow seals the
//!   released package from its *static* key to the gateway's one-time
//!   session key; the envelope's `publicKey` is the escrow's static key, and
//!   the gateway refuses an envelope from any other sender.
//!
//! Decoding is strict and never panics: unknown fields, non-canonical
//! base64, wrong key or nonce lengths, oversized ciphertexts and failed
//! authentication are distinct [`SealError`]s. Opened plaintext comes back in
//! a zeroizing buffer.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_box::aead::rand_core::CryptoRngCore;
use crypto_box::aead::{AeadCore, AeadInPlace};
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

/// Poly1305 tag length: the shortest valid ciphertext.
pub const TAG_BYTES: usize = 16;
/// XSalsa20 nonce length.
pub const NONCE_BYTES: usize = 24;
/// X25519 public key length.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// The largest plaintext sealed or opened: writer packages are a few hundred
/// bytes, and the original's request bodies were capped at 256 kB.
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024;
/// The largest envelope JSON [`SealedEnvelope::from_json`] parses.
pub const MAX_ENVELOPE_JSON_BYTES: usize = (MAX_PLAINTEXT_BYTES + TAG_BYTES) * 4 / 3 + 1024;

/// Why an envelope could not be sealed, decoded or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    // The envelope is malformed (the sender's fault).
    /// Not the JSON object `{cipherText, nonce, publicKey}` of strings.
    #[error("envelope is not {{cipherText, nonce, publicKey}} JSON (line {line}, column {column})")]
    MalformedJson {
        /// Where parsing stopped.
        line: usize,
        /// Where parsing stopped.
        column: usize,
    },
    /// A field is not canonical standard base64.
    #[error("envelope field {field} is not standard base64")]
    BadBase64 {
        /// The JSON field.
        field: &'static str,
    },
    /// A key or nonce has the wrong length.
    #[error("envelope field {field} is {actual} bytes, expected {expected}")]
    WrongLength {
        /// The JSON field.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The decoded length.
        actual: usize,
    },
    /// The ciphertext is shorter than its authentication tag.
    #[error("envelope cipherText is {actual} bytes, shorter than the {TAG_BYTES}-byte tag")]
    CipherTextTooShort {
        /// The decoded length.
        actual: usize,
    },
    /// The envelope or its plaintext exceeds the size limit.
    #[error("envelope is {actual} bytes, more than the {max} allowed")]
    TooLarge {
        /// The size found.
        actual: usize,
        /// The limit.
        max: usize,
    },
    // The envelope is well-formed but not for us, or forged.
    /// The box did not authenticate: wrong recipient key, wrong sender key, or tampering.
    #[error("envelope failed authentication (wrong key or tampered)")]
    AuthenticationFailed,
    /// A lease envelope was sealed by a key other than the escrow's.
    #[error("lease envelope was sealed by an unexpected key, not the escrow's")]
    UnexpectedSender,
    // Local failures.
    /// The cipher refused to encrypt.
    #[error("encryption failed")]
    EncryptionFailed,
}

/// A sealed box with the sender's public key and nonce beside it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EnvelopeJson")]
pub struct SealedEnvelope {
    cipher_text: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
    public_key: [u8; PUBLIC_KEY_BYTES],
}

/// The wire form: three base64 strings, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvelopeJson {
    cipher_text: String,
    nonce: String,
    public_key: String,
}

impl TryFrom<EnvelopeJson> for SealedEnvelope {
    type Error = SealError;

    fn try_from(json: EnvelopeJson) -> Result<Self, SealError> {
        let max_text = (MAX_PLAINTEXT_BYTES + TAG_BYTES).div_ceil(3) * 4;
        if json.cipher_text.len() > max_text {
            return Err(SealError::TooLarge {
                actual: json.cipher_text.len(),
                max: max_text,
            });
        }
        let cipher_text = BASE64
            .decode(&json.cipher_text)
            .map_err(|_| SealError::BadBase64 {
                field: "cipherText",
            })?;
        if cipher_text.len() < TAG_BYTES {
            return Err(SealError::CipherTextTooShort {
                actual: cipher_text.len(),
            });
        }
        Ok(Self {
            cipher_text,
            nonce: decode_fixed(&json.nonce, "nonce")?,
            public_key: decode_fixed(&json.public_key, "publicKey")?,
        })
    }
}

fn decode_fixed<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], SealError> {
    // Bound the work before decoding: a fixed-size field is a few dozen characters.
    if text.len() > N.div_ceil(3) * 4 + 4 {
        return Err(SealError::WrongLength {
            field,
            expected: N,
            actual: base64::decoded_len_estimate(text.len()),
        });
    }
    let bytes = BASE64
        .decode(text)
        .map_err(|_| SealError::BadBase64 { field })?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| SealError::WrongLength {
        field,
        expected: N,
        actual: bytes.len(),
    })
}

impl SealedEnvelope {
    /// Parses the envelope JSON, strictly. The decoder the fuzz target drives.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() > MAX_ENVELOPE_JSON_BYTES {
            return Err(SealError::TooLarge {
                actual: bytes.len(),
                max: MAX_ENVELOPE_JSON_BYTES,
            });
        }
        let json: EnvelopeJson =
            serde_json::from_slice(bytes).map_err(|error| SealError::MalformedJson {
                line: error.line(),
                column: error.column(),
            })?;
        Self::try_from(json)
    }

    /// The envelope as JSON `{cipherText, nonce, publicKey}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"cipherText\":\"{}\",\"nonce\":\"{}\",\"publicKey\":\"{}\"}}",
            BASE64.encode(&self.cipher_text),
            BASE64.encode(self.nonce),
            BASE64.encode(self.public_key)
        )
    }

    /// The sender's public key (ephemeral for deposits, the escrow's for leases).
    #[must_use]
    pub fn sender_public_key(&self) -> PublicKey {
        PublicKey::from(self.public_key)
    }

    /// The nonce.
    #[must_use]
    pub fn nonce(&self) -> &[u8; NONCE_BYTES] {
        &self.nonce
    }

    /// The ciphertext, tag first (NaCl's layout).
    #[must_use]
    pub fn cipher_text(&self) -> &[u8] {
        &self.cipher_text
    }
}

impl Serialize for SealedEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut state = serializer.serialize_struct("SealedEnvelope", 3)?;
        state.serialize_field("cipherText", &BASE64.encode(&self.cipher_text))?;
        state.serialize_field("nonce", &BASE64.encode(self.nonce))?;
        state.serialize_field("publicKey", &BASE64.encode(self.public_key))?;
        state.end()
    }
}

impl fmt::Debug for SealedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedEnvelope")
            .field("cipher_text_len", &self.cipher_text.len())
            .field("sender", &hex::encode(&self.public_key[..4]))
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` to `recipient` from a fresh ephemeral key pair (the deposit direction).
pub fn seal_to(
    recipient: &PublicKey,
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<SealedEnvelope, SealError> {
    let ephemeral = SecretKey::generate(rng);
    seal_with(&ephemeral, recipient, plaintext, rng)
}

/// Opens an envelope addressed to `recipient_secret`, from whichever sender it names.
pub fn open_with(
    recipient_secret: &SecretKey,
    envelope: &SealedEnvelope,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let salsa = SalsaBox::new(&envelope.sender_public_key(), recipient_secret);
    if envelope.cipher_text.len() > MAX_PLAINTEXT_BYTES + TAG_BYTES {
        return Err(SealError::TooLarge {
            actual: envelope.cipher_text.len(),
            max: MAX_PLAINTEXT_BYTES + TAG_BYTES,
        });
    }
    // Decrypt in place inside a zeroizing buffer that never reallocates.
    let mut buffer = Zeroizing::new(Vec::with_capacity(envelope.cipher_text.len()));
    buffer.extend_from_slice(&envelope.cipher_text);
    salsa
        .decrypt_in_place(Nonce::from_slice(&envelope.nonce), b"", &mut *buffer)
        .map_err(|_| SealError::AuthenticationFailed)?;
    Ok(buffer)
}

/// Seals a lease `plaintext` from the escrow's static secret to the
/// requester's one-time session key; the envelope names the escrow's public key.
pub fn seal_lease(
    escrow_secret: &SecretKey,
    session_public: &PublicKey,
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<SealedEnvelope, SealError> {
    seal_with(escrow_secret, session_public, plaintext, rng)
}

/// Opens a lease envelope with the session secret, refusing one not sealed
/// by `escrow_public` (the key the escrow publishes in `GET /policy`).
pub fn open_lease(
    session_secret: &SecretKey,
    escrow_public: &PublicKey,
    envelope: &SealedEnvelope,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if envelope.public_key != *escrow_public.as_bytes() {
        return Err(SealError::UnexpectedSender);
    }
    open_with(session_secret, envelope)
}

fn seal_with(
    sender_secret: &SecretKey,
    recipient: &PublicKey,
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<SealedEnvelope, SealError> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(SealError::TooLarge {
            actual: plaintext.len(),
            max: MAX_PLAINTEXT_BYTES,
        });
    }
    let salsa = SalsaBox::new(recipient, sender_secret);
    let nonce = SalsaBox::generate_nonce(rng);
    // Room for the tag up front: a reallocation would leave plaintext in freed memory.
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_BYTES));
    buffer.extend_from_slice(plaintext);
    salsa
        .encrypt_in_place(&nonce, b"", &mut *buffer)
        .map_err(|_| SealError::EncryptionFailed)?;
    let mut nonce_bytes = [0u8; NONCE_BYTES];
    nonce_bytes.copy_from_slice(nonce.as_slice());
    Ok(SealedEnvelope {
        cipher_text: std::mem::take(&mut *buffer),
        nonce: nonce_bytes,
        public_key: sender_secret.public_key().to_bytes(),
    })
}

#[cfg(test)]
mod tests;
