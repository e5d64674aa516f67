//! Persistent key pairs: the process identity (ed25519) and the escrow's
//! static box key pair (X25519).
//!
//! Contract:
//! - [`Identity::load_or_create`] and [`BoxKeyPair::load_or_create`] load the
//!   key file if it exists and create it otherwise; a created file has mode
//!   0600 from the moment it exists, an existing file is never overwritten,
//!   and a file with any group/other permission bit set is refused with an
//!   error naming the path and the `chmod 600` fix.
//! - A loaded file must be exactly the format written: JSON
//!   `{"publicKey", "secretKey"}`, 32-byte keys, hex for the identity and
//!   standard base64 for the box key pair (the original's `keypair.json`), and
//!   the public key must be the one the secret key derives. Anything else is
//!   [`IdentityError::Malformed`] or [`IdentityError::KeyMismatch`]; secrets
//!   never appear in errors or `Debug` output.
//! - The peer id is the identity's ed25519 public key
//!   ([`hypergate_core::ids::PeerId`]).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_box::aead::rand_core::CryptoRngCore;
use ed25519_dalek::SigningKey;
use hypergate_core::ids::PeerId;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::crypto::keyfile::{self, Created, KeyFileError};

/// Key files are tiny; anything larger is not one of ours.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key pair could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    // The key file's content is wrong (operator or corruption).
    /// The file is not the expected JSON, or a key has the wrong encoding or length.
    #[error("key file {path} is malformed: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key material itself).
        detail: &'static str,
    },
    /// The stored public key is not the one the stored secret key derives.
    #[error("key file {path}: publicKey does not match secretKey")]
    KeyMismatch {
        /// The file.
        path: PathBuf,
    },
    /// [`Identity::persist`] found a file holding another key there.
    #[error("key file {path} already holds a different key")]
    AnotherKeyStored {
        /// The file.
        path: PathBuf,
    },
    // The file itself: permissions, type, I/O.
    /// The file could not be read or written safely.
    #[error(transparent)]
    File(#[from] KeyFileError),
}

/// The on-disk form of both key files; fields borrow from the zeroizing read buffer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeyFileJson<'a> {
    #[serde(borrow)]
    public_key: &'a str,
    #[serde(borrow)]
    secret_key: &'a str,
}

fn parse_key_file<'a>(path: &Path, bytes: &'a [u8]) -> Result<KeyFileJson<'a>, IdentityError> {
    serde_json::from_slice(bytes).map_err(|_| IdentityError::Malformed {
        path: path.to_owned(),
        detail: "expected JSON {\"publicKey\", \"secretKey\"} with plain strings",
    })
}

fn malformed(path: &Path, detail: &'static str) -> IdentityError {
    IdentityError::Malformed {
        path: path.to_owned(),
        detail,
    }
}

/// Decodes 64 hex characters into a zeroizing 32-byte buffer.
fn decode_hex_key(
    path: &Path,
    text: &str,
    field: &'static str,
) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if text.len() != 64 {
        return Err(malformed(path, field));
    }
    hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| malformed(path, field))?;
    Ok(key)
}

/// Decodes standard base64 of exactly 32 bytes into a zeroizing buffer.
fn decode_base64_key(
    path: &Path,
    text: &str,
    field: &'static str,
) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let bytes = crate::crypto::decode_base64(text).map_err(|_| malformed(path, field))?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(malformed(path, field));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Loads the key file at `path`, or creates one from `fresh()` and loads whatever ends up there.
fn load_or_create_with<T>(
    path: &Path,
    load: impl Fn(&Path, &[u8]) -> Result<T, IdentityError>,
    fresh: impl FnOnce() -> Zeroizing<Vec<u8>>,
) -> Result<T, IdentityError> {
    if let Some(bytes) = keyfile::read_private(path, MAX_KEY_FILE_BYTES)? {
        return load(path, &bytes);
    }
    let bytes = fresh();
    match keyfile::create_private(path, &bytes)? {
        Created::Written => load(path, &bytes),
        // Another process won the race; its key is the identity now.
        Created::AlreadyExisted => {
            let existing = keyfile::read_private(path, MAX_KEY_FILE_BYTES)?.ok_or_else(|| {
                malformed(path, "key file disappeared right after it was created")
            })?;
            load(path, &existing)
        }
    }
}

/// This process's persistent ed25519 identity. The peer id is its public key.
pub struct Identity {
    signing_key: SigningKey,
}

impl Identity {
    /// Loads the identity at `path`, creating it (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        load_or_create_with(path, Self::decode, || {
            Self::generate(&mut crypto_box::aead::OsRng).encode()
        })
    }

    /// A fresh identity from `rng` (not persisted).
    #[must_use]
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            signing_key: SigningKey::generate(rng),
        }
    }

    /// Loads the identity at `path`, or `Ok(None)` if there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>, IdentityError> {
        match keyfile::read_private(path, MAX_KEY_FILE_BYTES)? {
            Some(bytes) => Self::decode(path, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes this identity to `path` (mode 0600, atomically, fsynced). A file already there
    /// must hold this same key: anything else is [`IdentityError::AnotherKeyStored`], never
    /// replaced.
    pub fn persist(&self, path: &Path) -> Result<(), IdentityError> {
        match keyfile::create_private(path, &self.encode())? {
            Created::Written => Ok(()),
            Created::AlreadyExisted => match Self::load(path)? {
                Some(existing) if existing.peer_id() == self.peer_id() => Ok(()),
                _ => Err(IdentityError::AnotherKeyStored {
                    path: path.to_owned(),
                }),
            },
        }
    }

    /// An identity from an existing signing key.
    #[must_use]
    pub fn from_signing_key(signing_key: SigningKey) -> Self {
        Self { signing_key }
    }

    /// The peer id other processes know this one by.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.signing_key.verifying_key().to_bytes())
    }

    /// The signing key, for handshakes and signatures.
    #[must_use]
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut secret_hex = Zeroizing::new([0u8; 64]);
        // Encoding 32 bytes into 64 hex characters cannot fail.
        let _ = hex::encode_to_slice(self.signing_key.as_bytes(), secret_hex.as_mut_slice());
        let mut out = Zeroizing::new(Vec::with_capacity(160));
        out.extend_from_slice(b"{\"publicKey\":\"");
        out.extend_from_slice(self.peer_id().to_hex().as_bytes());
        out.extend_from_slice(b"\",\"secretKey\":\"");
        out.extend_from_slice(secret_hex.as_slice());
        out.extend_from_slice(b"\"}\n");
        out
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Self, IdentityError> {
        let json = parse_key_file(path, bytes)?;
        let public = decode_hex_key(path, json.public_key, "publicKey is not 64 hex characters")?;
        let secret = decode_hex_key(path, json.secret_key, "secretKey is not 64 hex characters")?;
        let signing_key = SigningKey::from_bytes(&secret);
        if signing_key.verifying_key().to_bytes() != *public {
            return Err(IdentityError::KeyMismatch {
                path: path.to_owned(),
            });
        }
        Ok(Self { signing_key })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id().to_hex())
            .finish_non_exhaustive()
    }
}

/// The escrow's static X25519 key pair (the original's `keypair.json`).
///
/// Note: `crypto_box` 0.9's `SecretKey` zeroizes its scalar on drop but not its
/// byte copy; this key pair lives for the whole process, so keep one instance.
#[derive(Clone)]
pub struct BoxKeyPair {
    secret: crypto_box::SecretKey,
    public: crypto_box::PublicKey,
}

impl BoxKeyPair {
    /// Loads the key pair at `path`, creating it (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        load_or_create_with(path, Self::decode, || {
            Self::generate(&mut crypto_box::aead::OsRng).encode()
        })
    }

    /// A fresh key pair from `rng` (not persisted).
    #[must_use]
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_secret(crypto_box::SecretKey::generate(rng))
    }

    /// The key pair of a secret key.
    #[must_use]
    pub fn from_secret(secret: crypto_box::SecretKey) -> Self {
        let public = secret.public_key();
        Self { secret, public }
    }

    /// The public key, served by `GET /policy` as `publicKey` (base64).
    #[must_use]
    pub fn public_key(&self) -> &crypto_box::PublicKey {
        &self.public
    }

    /// The public key in standard base64, as the original's API shows it.
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    /// The secret key, for opening deposits and sealing leases.
    #[must_use]
    pub fn secret_key(&self) -> &crypto_box::SecretKey {
        &self.secret
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let secret = Zeroizing::new(self.secret.to_bytes());
        let mut secret_b64 = Zeroizing::new([0u8; 44]);
        // 32 bytes always encode to exactly 44 base64 characters.
        let _ = BASE64.encode_slice(secret.as_slice(), secret_b64.as_mut_slice());
        let mut out = Zeroizing::new(Vec::with_capacity(128));
        out.extend_from_slice(b"{\"publicKey\":\"");
        out.extend_from_slice(self.public_key_base64().as_bytes());
        out.extend_from_slice(b"\",\"secretKey\":\"");
        out.extend_from_slice(secret_b64.as_slice());
        out.extend_from_slice(b"\"}\n");
        out
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Self, IdentityError> {
        let json = parse_key_file(path, bytes)?;
        let public =
            decode_base64_key(path, json.public_key, "publicKey is not base64 of 32 bytes")?;
        let secret =
            decode_base64_key(path, json.secret_key, "secretKey is not base64 of 32 bytes")?;
        let pair = Self::from_secret(crypto_box::SecretKey::from_bytes(*secret));
        if pair.public.as_bytes() != &*public {
            return Err(IdentityError::KeyMismatch {
                path: path.to_owned(),
            });
        }
        Ok(pair)
    }
}

impl fmt::Debug for BoxKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxKeyPair")
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
