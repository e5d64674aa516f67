//! Key material: identities, sealed envelopes, writer packages and the lease
//! vault.
//!
//! The contract shared by every module here: secret bytes live in zeroizing
//! buffers (or in key types that zeroize on drop), are never written to logs,
//! `Debug` output or error messages (digests are what may be shown), and bad
//! input — a malformed key file, envelope or package — is an error, never a
//! panic.
//!
//! - [`identity`]: the persistent ed25519 identity and the escrow's X25519
//!   box key pair, in 0600 key files.
//! - [`seal`]: the original's tweetnacl box envelope `{cipherText, nonce,
//!   publicKey}`, both directions (deposit and lease).
//! - [`package`]: the writer package a worker seals for the escrow, carrying
//!   the gateway writer's *secret* key.
//! - [`vault`]: the gateway's in-memory store of leased writer keys, wiped on
//!   lease end and on shutdown signals.

pub mod identity;
mod keyfile;
pub mod package;
pub mod seal;
pub mod vault;

pub use identity::{BoxKeyPair, Identity, IdentityError};
pub use keyfile::KeyFileError;
pub use package::{PackageError, PackageMetadata, WriterPackage};
pub use seal::{SealError, SealedEnvelope};
pub use vault::{LeaseVault, SignalWipeGuard, VaultError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Decodes standard (padded, canonical) base64 into a zeroizing buffer sized
/// up front, so no reallocation leaves a copy behind.
pub(crate) fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(text.len())));
    BASE64.decode_vec(text, &mut out)?;
    Ok(out)
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
