//! The writer package: what a worker seals for the escrow, and what the
//! escrow releases to a gateway under a lease.
//!
//! JSON (camelCase, the original's names plus `writerSecret`):
//! `{relayKey, writerKey, writerSecret, ownerPeerKey, createdAt, metadata:
//! {identifier, name}}`; keys are 64 lowercase hex characters, `createdAt` is
//! milliseconds since the epoch, `name` may be `null`.
//!
//! Contract:
//! - The package carries the gateway writer's **secret** ed25519 key (the
//!   original escrowed the public key, so the gateway could never sign).
//!   [`WriterPackage::validate`] checks that `writerKey` is the public key of
//!   `writerSecret` and that the package is for the expected relay; the escrow
//!   runs it at deposit time and the gateway after opening a lease.
//! - Parsing is strict (unknown fields, bad hex, over-long metadata are
//!   errors) and never panics; the secret is decoded straight into a
//!   zeroizing buffer and serialised into one.
//! - What may be shown — in logs, metrics, APIs, audit entries — are digests:
//!   [`WriterPackage::writer_hash`] and [`WriterPackage::payload_digest`], both
//!   computed exactly as the original did. `Debug` never prints the secret.

use std::fmt;

use crypto_box::aead::rand_core::CryptoRngCore;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::seal::{self, SealError, SealedEnvelope};
use crate::crypto::sha256_hex;

/// The longest `metadata.identifier` or `metadata.name`, in bytes.
pub const MAX_METADATA_FIELD_BYTES: usize = 1024;
/// The longest package JSON parsed.
pub const MAX_PACKAGE_JSON_BYTES: usize = 8 * 1024;

/// Why a package could not be parsed, opened or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    // The package is malformed (the depositor's fault).
    /// Not the package JSON object.
    #[error("writer package is not valid package JSON (line {line}, column {column})")]
    MalformedJson {
        /// Where parsing stopped.
        line: usize,
        /// Where parsing stopped.
        column: usize,
    },
    /// A key field is not 64 hex characters.
    #[error("writer package field {field} is not 64 hex characters")]
    BadKey {
        /// The JSON field.
        field: &'static str,
    },
    /// A metadata field or the whole package is too long.
    #[error("writer package field {field} exceeds {max} bytes")]
    TooLong {
        /// The JSON field, or `package`.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    // The package is well-formed but wrong.
    /// `writerKey` is not the public key of `writerSecret`.
    #[error("writer package writerKey does not match writerSecret")]
    KeyMismatch,
    /// The package is for another relay.
    #[error("writer package is for relay {found}, expected {expected}")]
    RelayMismatch {
        /// The relay asked about.
        expected: RelayKey,
        /// The relay in the package.
        found: RelayKey,
    },
    /// The envelope around it failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The package's `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageMetadata {
    /// The relay's public identifier (e.g. `npub…:name`).
    pub identifier: String,
    /// The relay's display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A relay's gateway writer key pair with its context.
#[derive(Clone)]
pub struct WriterPackage {
    /// The relay the writer belongs to.
    pub relay_key: RelayKey,
    /// The depositing worker.
    pub owner_peer_key: PeerId,
    /// When the worker built it, by its clock.
    pub created_at: UnixTime,
    /// Relay identifier and name.
    pub metadata: PackageMetadata,
    writer_key: [u8; 32],
    writer_secret: Zeroizing<[u8; 32]>,
}

/// The wire form; key fields borrow from the (zeroizing) input buffer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PackageJson<'a> {
    #[serde(borrow)]
    relay_key: &'a str,
    #[serde(borrow)]
    writer_key: &'a str,
    #[serde(borrow)]
    writer_secret: &'a str,
    #[serde(borrow)]
    owner_peer_key: &'a str,
    created_at: u64,
    metadata: PackageMetadata,
}

fn decode_key(text: &str, field: &'static str) -> Result<Zeroizing<[u8; 32]>, PackageError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if text.len() != 64 {
        return Err(PackageError::BadKey { field });
    }
    hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| PackageError::BadKey { field })?;
    Ok(key)
}

impl WriterPackage {
    /// The package for `writer`, the relay's gateway writer key.
    #[must_use]
    pub fn new(
        relay_key: RelayKey,
        writer: &SigningKey,
        owner_peer_key: PeerId,
        created_at: UnixTime,
        metadata: PackageMetadata,
    ) -> Self {
        Self {
            relay_key,
            owner_peer_key,
            created_at,
            metadata,
            writer_key: writer.verifying_key().to_bytes(),
            writer_secret: Zeroizing::new(writer.to_bytes()),
        }
    }

    /// Parses package JSON strictly. Does not validate; see [`Self::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() > MAX_PACKAGE_JSON_BYTES {
            return Err(PackageError::TooLong {
                field: "package",
                max: MAX_PACKAGE_JSON_BYTES,
            });
        }
        let json: PackageJson<'_> =
            serde_json::from_slice(bytes).map_err(|error| PackageError::MalformedJson {
                line: error.line(),
                column: error.column(),
            })?;
        let identifier_len = json.metadata.identifier.len();
        let name_len = json.metadata.name.as_ref().map_or(0, String::len);
        if identifier_len > MAX_METADATA_FIELD_BYTES {
            return Err(PackageError::TooLong {
                field: "metadata.identifier",
                max: MAX_METADATA_FIELD_BYTES,
            });
        }
        if name_len > MAX_METADATA_FIELD_BYTES {
            return Err(PackageError::TooLong {
                field: "metadata.name",
                max: MAX_METADATA_FIELD_BYTES,
            });
        }
        Ok(Self {
            relay_key: RelayKey(*decode_key(json.relay_key, "relayKey")?),
            owner_peer_key: PeerId(*decode_key(json.owner_peer_key, "ownerPeerKey")?),
            created_at: UnixTime(json.created_at),
            metadata: json.metadata,
            writer_key: *decode_key(json.writer_key, "writerKey")?,
            writer_secret: decode_key(json.writer_secret, "writerSecret")?,
        })
    }

    /// The package JSON, in a zeroizing buffer (it holds the secret).
    #[must_use]
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        // Metadata first, so the output buffer can be sized exactly and never
        // reallocates after the secret is in it. Strings always serialise.
        let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
        let mut secret_hex = Zeroizing::new([0u8; 64]);
        // 32 bytes always fit 64 hex characters.
        let _ = hex::encode_to_slice(self.writer_secret.as_slice(), secret_hex.as_mut_slice());
        let mut out = Zeroizing::new(Vec::with_capacity(400 + metadata.len()));
        out.extend_from_slice(b"{\"relayKey\":\"");
        out.extend_from_slice(self.relay_key.to_hex().as_bytes());
        out.extend_from_slice(b"\",\"writerKey\":\"");
        out.extend_from_slice(hex::encode(self.writer_key).as_bytes());
        out.extend_from_slice(b"\",\"writerSecret\":\"");
        out.extend_from_slice(secret_hex.as_slice());
        out.extend_from_slice(b"\",\"ownerPeerKey\":\"");
        out.extend_from_slice(self.owner_peer_key.to_hex().as_bytes());
        out.extend_from_slice(b"\",\"createdAt\":");
        out.extend_from_slice(self.created_at.0.to_string().as_bytes());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
        out.extend_from_slice(b"}");
        out
    }

    /// Seals the package to the escrow's static key (the deposit's `encryptedPackage`).
    pub fn seal_to(
        &self,
        escrow_public: &crypto_box::PublicKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SealedEnvelope, PackageError> {
        Ok(seal::seal_to(escrow_public, &self.to_json(), rng)?)
    }

    /// Opens and parses a deposit envelope with the escrow's static secret. Does not validate.
    pub fn open_deposit(
        escrow_secret: &crypto_box::SecretKey,
        envelope: &SealedEnvelope,
    ) -> Result<Self, PackageError> {
        Self::from_json(&seal::open_with(escrow_secret, envelope)?)
    }

    /// Opens and parses a lease envelope with the gateway's session secret,
    /// refusing one not sealed by `escrow_public`. Does not validate.
    pub fn open_lease(
        session_secret: &crypto_box::SecretKey,
        escrow_public: &crypto_box::PublicKey,
        envelope: &SealedEnvelope,
    ) -> Result<Self, PackageError> {
        Self::from_json(&seal::open_lease(session_secret, escrow_public, envelope)?)
    }

    /// Checks that `writerKey` derives from `writerSecret` and the package is
    /// for `expected_relay`.
    pub fn validate(&self, expected_relay: &RelayKey) -> Result<(), PackageError> {
        if self.signing_key().verifying_key().to_bytes() != self.writer_key {
            return Err(PackageError::KeyMismatch);
        }
        if self.relay_key != *expected_relay {
            return Err(PackageError::RelayMismatch {
                expected: *expected_relay,
                found: self.relay_key,
            });
        }
        Ok(())
    }

    /// The writer's public key as stated in the package.
    #[must_use]
    pub fn writer_key(&self) -> &[u8; 32] {
        &self.writer_key
    }

    /// The writer's public key as 64 hex characters.
    #[must_use]
    pub fn writer_key_hex(&self) -> String {
        hex::encode(self.writer_key)
    }

    /// The writer's public key, if it is a valid curve point.
    pub fn writer_verifying_key(&self) -> Result<VerifyingKey, PackageError> {
        VerifyingKey::from_bytes(&self.writer_key)
            .map_err(|_| PackageError::BadKey { field: "writerKey" })
    }

    /// The writer's signing key (zeroized on drop), for the lease vault.
    #[must_use]
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.writer_secret)
    }

    /// The original's `writerHash`: SHA-256 hex of the writer public key bytes.
    #[must_use]
    pub fn writer_hash(&self) -> String {
        sha256_hex(&self.writer_key)
    }

    /// The original's `payloadDigest`: SHA-256 hex of the writer key's hex
    /// string as UTF-8.
    #[must_use]
    pub fn payload_digest(&self) -> String {
        sha256_hex(self.writer_key_hex().as_bytes())
    }
}

impl fmt::Debug for WriterPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterPackage")
            .field("relay_key", &self.relay_key)
            .field("writer_hash", &self.writer_hash())
            .field("owner_peer_key", &self.owner_peer_key)
            .field("created_at", &self.created_at)
            .field("metadata", &self.metadata)
            .field("writer_secret", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests;
