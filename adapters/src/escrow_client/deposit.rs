//! Deposits from the worker's side: the body `POST /escrow` takes, with the writer package
//! sealed to the escrow's key and the relay key's `ownerSignature` over it.
//!
//! Contract: the signature covers [`deposit_signing_digest`] of the body without its
//! `ownerSignature` (the digest the escrow checks); the package is sealed with a fresh
//! ephemeral key from the OS RNG.

use crypto_box::aead::OsRng;
use ed25519_dalek::{Signer, SigningKey};
use hypergate_core::ids::PeerId;
use hypergate_core::time::{UnixTime, duration_millis};
use serde_json::{Value, json};

use super::{ClientError, EscrowPolicy};
use crate::crypto::WriterPackage;
use crate::escrow_wire::deposit_signing_digest;

/// The pieces of a deposit a worker provides.
#[derive(Debug)]
pub struct DepositParams<'a> {
    /// The package to seal (it carries the writer secret).
    pub package: &'a WriterPackage,
    /// The relay's owner key: signs the deposit.
    pub relay_key: &'a SigningKey,
    /// The gateways allowed to unlock it.
    pub permitted_requesters: &'a [PeerId],
    /// The expiry asked for (the escrow clamps it).
    pub expires_at: Option<UnixTime>,
    /// Now, by the worker's clock (signed; must be within 5 minutes of the escrow's).
    pub created_at: UnixTime,
}

/// Builds a signed deposit body for the escrow whose key is `escrow_public`.
pub fn deposit_body(
    escrow: &EscrowPolicy,
    params: &DepositParams<'_>,
) -> Result<Value, ClientError> {
    let package = params.package;
    let sealed = package.seal_to(&escrow.public_key, &mut OsRng)?;
    let body = json!({
        "relayKey": package.relay_key.to_hex(),
        "ownerPeerKey": package.owner_peer_key.to_hex(),
        "encryptedPackage": sealed,
        "policyVersion": escrow.policy.version,
        "metadata": {
            "identifier": package.metadata.identifier,
            "name": package.metadata.name,
            "writerHash": package.writer_hash(),
        },
        "unlockConditions": {
            "peerLivenessTimeoutMs": duration_millis(escrow.policy.peer_liveness_timeout),
            "mirrorFreshnessMaxLagMs": duration_millis(escrow.policy.mirror_freshness_max_lag),
        },
        "permittedRequesters": params.permitted_requesters.iter().map(PeerId::to_hex).collect::<Vec<_>>(),
        "expiresAt": params.expires_at.map(|at| at.0),
        "createdAt": params.created_at.0,
    });
    sign_deposit(body, params.relay_key)
}

/// Adds `ownerSignature` to a deposit body (the relay key signs the SHA-256
/// of the stable-stringified body without that field).
pub fn sign_deposit(body: Value, relay_key: &SigningKey) -> Result<Value, ClientError> {
    let Value::Object(mut map) = body else {
        return Err(ClientError::Config(
            "a deposit body is a JSON object".into(),
        ));
    };
    map.remove("ownerSignature");
    let digest = deposit_signing_digest(&map);
    let signature = relay_key.sign(&digest);
    map.insert(
        "ownerSignature".into(),
        Value::String(hex::encode(signature.to_bytes())),
    );
    Ok(Value::Object(map))
}
