//! The escrow API's request bodies (shared by the escrow service, its client and the fuzz
//! targets, so it lives here rather than in the tokio runtime): strict, bounded parsers that never panic
//! (the lead fuzzes [`parse_deposit_request`], [`parse_unlock_request`] and
//! [`parse_revoke_request`]), and the deposit's owner-signature digest.
//!
//! Contract:
//! - Every parser takes the raw body and returns a typed request or a
//!   [`RequestError`] naming the field at fault; nothing here does I/O or
//!   reads a clock. Bodies over [`MAX_BODY_BYTES`] are refused unread.
//! - Keys and peer ids are 64 hex characters; the session key is standard
//!   base64 of 32 bytes; the sealed package is the original's
//!   `{cipherText, nonce, publicKey}` envelope, checked field by field.
//! - **Owner signature.** A deposit carries `ownerSignature`: 128 hex
//!   characters of an ed25519 signature by the *relay key* (the owner log's
//!   key, which only the relay's owner holds) over
//!   [`deposit_signing_digest`]: SHA-256 of the [`stable_stringify`] of the
//!   deposit body without its `ownerSignature` field. [`DepositRequest::verify_owner_signature`]
//!   checks it.
//! - **Request signature.** The HMAC headers every signed request carries are
//!   [`signing`]'s; the service verifies them, the client makes them.

pub mod signing;

use std::collections::{BTreeMap, BTreeSet};

use crate::crypto::{SealError, SealedEnvelope};
use ed25519_dalek::{Signature, VerifyingKey};
use hypergate_core::escrow::Evidence;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::{EndReason, LeaseId};
use hypergate_core::time::UnixTime;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The largest request body (the original's 256 kb JSON limit).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The most gateways a deposit may permit.
pub const MAX_PERMITTED_REQUESTERS: usize = 32;
/// The largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest free-text field (actor, reason, policy version).
pub const MAX_TEXT_BYTES: usize = 256;

/// Why a request body was refused; every variant is the caller's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Not JSON.
    #[error("request body is not JSON (line {line}, column {column})")]
    MalformedJson {
        /// Where parsing stopped.
        line: usize,
        /// Where parsing stopped.
        column: usize,
    },
    /// JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A required field is absent (or `null`).
    #[error("{0} is required")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A key field is not 64 hex characters.
    #[error("{0} must be 64 hex characters")]
    BadKey(&'static str),
    /// A field is not standard base64.
    #[error("{0} is not standard base64")]
    BadBase64(&'static str),
    /// A decoded key, nonce or signature has the wrong length.
    #[error("{field} must be {expected} bytes, got {actual}")]
    WrongLength {
        /// The field.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// A field is out of its bounds (too long, too many, empty).
    #[error("{field}: {detail}")]
    OutOfBounds {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The sealed package envelope is malformed.
    #[error("encryptedPackage: {0}")]
    Envelope(String),
}

impl RequestError {
    /// The `{error}` code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::TooLarge => "body-too-large",
            RequestError::MalformedJson { .. } => "invalid-json",
            RequestError::NotAnObject => "body-not-object",
            RequestError::MissingField(_) => "missing-field",
            RequestError::WrongType { .. } => "wrong-type",
            RequestError::BadKey(_) => "invalid-key",
            RequestError::BadBase64(_) => "invalid-base64",
            RequestError::WrongLength { .. } => "wrong-length",
            RequestError::OutOfBounds { .. } => "out-of-bounds",
            RequestError::Envelope(_) => "invalid-envelope",
        }
    }

    /// The field at fault, if one is.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RequestError::MissingField(field)
            | RequestError::BadKey(field)
            | RequestError::BadBase64(field) => Some(field),
            RequestError::WrongType { field, .. }
            | RequestError::WrongLength { field, .. }
            | RequestError::OutOfBounds { field, .. } => Some(field),
            RequestError::Envelope(_) => Some("encryptedPackage"),
            _ => None,
        }
    }
}

/// A parsed `POST /escrow` body.
#[derive(Debug, Clone)]
pub struct DepositRequest {
    /// The relay (its owner log's public key).
    pub relay_key: RelayKey,
    /// The depositing worker's peer id.
    pub owner_peer_key: PeerId,
    /// The sealed writer package.
    pub encrypted_package: SealedEnvelope,
    /// The policy version the depositor agreed to.
    pub policy_version: String,
    /// The depositor's metadata object (`{identifier, name, writerHash, …}`).
    pub metadata: Map<String, Value>,
    /// The depositor's stated unlock conditions (stored, not enforced: the escrow's policy rules).
    pub unlock_conditions: Option<Value>,
    /// The expiry asked for (clamped by the policy).
    pub expires_at: Option<UnixTime>,
    /// When the depositor signed it (must be inside the signature window).
    pub created_at: UnixTime,
    /// The gateways allowed to unlock it.
    pub permitted_requesters: BTreeSet<PeerId>,
    /// The relay key's signature over [`Self::signing_digest`].
    pub owner_signature: [u8; 64],
    /// SHA-256 of the stable-stringified body without `ownerSignature`.
    pub signing_digest: [u8; 32],
}

impl DepositRequest {
    /// Whether `ownerSignature` is the relay key's signature over the body.
    pub fn verify_owner_signature(&self) -> Result<(), &'static str> {
        let key = VerifyingKey::from_bytes(self.relay_key.as_bytes())
            .map_err(|_| "relayKey is not a valid ed25519 public key")?;
        let signature = Signature::from_bytes(&self.owner_signature);
        key.verify_strict(&self.signing_digest, &signature)
            .map_err(|_| "ownerSignature is not the relay key's signature over the deposit")
    }

    /// The `metadata.writerHash` the depositor stated, if any.
    #[must_use]
    pub fn stated_writer_hash(&self) -> Option<&str> {
        self.metadata.get("writerHash").and_then(Value::as_str)
    }
}

/// A parsed `POST /escrow/unlock` body.
#[derive(Debug, Clone)]
pub struct UnlockBody {
    /// The relay whose key is asked for.
    pub relay_key: RelayKey,
    /// The gateway asking; may be omitted by a client bound to a peer id.
    pub requester_id: Option<PeerId>,
    /// The one-time X25519 key the lease is sealed to.
    pub session_public_key: [u8; 32],
    /// The gateway's evidence (lenient per field: see the core's `Evidence`).
    pub evidence: Option<Evidence>,
    /// The evidence exactly as sent, for the lease history.
    pub evidence_json: Value,
}

/// What `POST /escrow/revoke` names, in precedence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeBodyTarget {
    /// One deposit.
    EscrowId(String),
    /// Every deposit of the relay.
    Relay(RelayKey),
    /// Every deposit of a worker.
    Owner(PeerId),
}

/// A parsed `POST /escrow/revoke` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeBody {
    /// What to revoke (`escrowId` wins over `relayKey`, which wins over `ownerPeerKey`).
    pub target: RevokeBodyTarget,
    /// Who asks (default: the authenticated client id).
    pub actor: Option<String>,
    /// Why (the original's default `unspecified`).
    pub reason: String,
}

/// A parsed `POST /escrow/renew` body.
#[derive(Debug, Clone)]
pub struct RenewBody {
    /// The lease to extend.
    pub lease_id: LeaseId,
    /// The holder; may be omitted by a client bound to a peer id.
    pub requester_id: Option<PeerId>,
    /// Fresh evidence.
    pub evidence: Option<Evidence>,
}

/// A parsed `POST /escrow/release` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBody {
    /// The lease to give back.
    pub lease_id: LeaseId,
    /// The holder; may be omitted by a client bound to a peer id.
    pub requester_id: Option<PeerId>,
    /// Why: `peer-healthy`, `worker-resync`, `shutdown`, or free text (manual).
    pub reason: EndReason,
}

/// SHA-256 of the stable-stringified deposit body without `ownerSignature`.
#[must_use]
pub fn deposit_signing_digest(body: &Map<String, Value>) -> [u8; 32] {
    let mut unsigned = body.clone();
    unsigned.remove("ownerSignature");
    Sha256::digest(stable_stringify(&Value::Object(unsigned)).as_bytes()).into()
}

/// Parses a deposit body.
pub fn parse_deposit_request(body: &[u8]) -> Result<DepositRequest, RequestError> {
    let object = parse_object(body)?;
    let fields = Fields(&object);
    let encrypted_package = match fields.required("encryptedPackage")? {
        value @ Value::Object(_) => envelope(value)?,
        _ => return Err(wrong_type("encryptedPackage", "an object")),
    };
    let metadata = match fields.optional("metadata") {
        None => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(wrong_type("metadata", "an object")),
    };
    let metadata_len = Value::Object(metadata.clone()).to_string().len();
    if metadata_len > MAX_METADATA_BYTES {
        return Err(out_of_bounds(
            "metadata",
            format!("larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    if metadata
        .get("writerHash")
        .is_some_and(|hash| !hash.as_str().is_some_and(is_hex64))
    {
        return Err(RequestError::BadKey("metadata.writerHash"));
    }
    let permitted = match fields.required("permittedRequesters")? {
        Value::Array(items) => items,
        _ => return Err(wrong_type("permittedRequesters", "an array of peer ids")),
    };
    if permitted.is_empty() || permitted.len() > MAX_PERMITTED_REQUESTERS {
        return Err(out_of_bounds(
            "permittedRequesters",
            format!("must list 1..={MAX_PERMITTED_REQUESTERS} peer ids"),
        ));
    }
    let permitted_requesters = permitted
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or(RequestError::BadKey("permittedRequesters"))
                .and_then(|text| key(text, "permittedRequesters"))
                .map(PeerId)
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let signature_text = fields.string("ownerSignature")?;
    let mut owner_signature = [0u8; 64];
    if signature_text.len() != 128
        || hex::decode_to_slice(signature_text, &mut owner_signature).is_err()
    {
        return Err(RequestError::WrongLength {
            field: "ownerSignature",
            expected: 64,
            actual: signature_text.len() / 2,
        });
    }
    Ok(DepositRequest {
        relay_key: RelayKey(key(fields.string("relayKey")?, "relayKey")?),
        owner_peer_key: PeerId(key(fields.string("ownerPeerKey")?, "ownerPeerKey")?),
        encrypted_package,
        policy_version: fields.text("policyVersion")?,
        metadata,
        unlock_conditions: fields.optional("unlockConditions").cloned(),
        expires_at: fields.optional_millis("expiresAt")?,
        created_at: fields
            .optional_millis("createdAt")?
            .ok_or(RequestError::MissingField("createdAt"))?,
        permitted_requesters,
        owner_signature,
        signing_digest: deposit_signing_digest(&object),
    })
}

/// Parses an unlock body.
pub fn parse_unlock_request(body: &[u8]) -> Result<UnlockBody, RequestError> {
    let object = parse_object(body)?;
    let fields = Fields(&object);
    let evidence_json = fields.optional("evidence").cloned().unwrap_or(Value::Null);
    if !matches!(evidence_json, Value::Object(_) | Value::Null) {
        return Err(wrong_type("evidence", "an object"));
    }
    Ok(UnlockBody {
        relay_key: RelayKey(key(fields.string("relayKey")?, "relayKey")?),
        requester_id: fields.optional_peer("requesterId")?,
        session_public_key: base64_32(fields.string("sessionPublicKey")?, "sessionPublicKey")?,
        evidence: (!evidence_json.is_null()).then(|| Evidence::from_json(&evidence_json)),
        evidence_json,
    })
}

/// Parses a revoke body.
pub fn parse_revoke_request(body: &[u8]) -> Result<RevokeBody, RequestError> {
    let object = parse_object(body)?;
    let fields = Fields(&object);
    let target = if let Some(escrow_id) = fields.optional_text("escrowId")? {
        if escrow_id.is_empty() {
            return Err(out_of_bounds("escrowId", "must not be empty".into()));
        }
        RevokeBodyTarget::EscrowId(escrow_id)
    } else if let Some(relay) = fields.optional("relayKey") {
        let text = relay.as_str().ok_or(wrong_type("relayKey", "a string"))?;
        RevokeBodyTarget::Relay(RelayKey(key(text, "relayKey")?))
    } else if let Some(owner) = fields.optional_peer("ownerPeerKey")? {
        RevokeBodyTarget::Owner(owner)
    } else {
        return Err(RequestError::MissingField(
            "one of escrowId, relayKey, ownerPeerKey",
        ));
    };
    Ok(RevokeBody {
        target,
        actor: fields.optional_text("actor")?,
        reason: fields
            .optional_text("reason")?
            .unwrap_or_else(|| "unspecified".to_owned()),
    })
}

/// Parses a renew body.
pub fn parse_renew_request(body: &[u8]) -> Result<RenewBody, RequestError> {
    let object = parse_object(body)?;
    let fields = Fields(&object);
    let evidence = match fields.optional("evidence") {
        None => None,
        Some(value @ Value::Object(_)) => Some(Evidence::from_json(value)),
        Some(_) => return Err(wrong_type("evidence", "an object")),
    };
    Ok(RenewBody {
        lease_id: lease_id(fields.string("leaseId")?)?,
        requester_id: fields.optional_peer("requesterId")?,
        evidence,
    })
}

/// Parses a release body.
pub fn parse_release_request(body: &[u8]) -> Result<ReleaseBody, RequestError> {
    let object = parse_object(body)?;
    let fields = Fields(&object);
    let reason = match fields.optional_text("reason")?.as_deref() {
        None | Some("peer-healthy") => EndReason::PeerHealthy,
        Some("worker-resync") => EndReason::WorkerResync,
        Some("shutdown") => EndReason::Shutdown,
        Some(other) => EndReason::Manual {
            reason: other.to_owned(),
        },
    };
    Ok(ReleaseBody {
        lease_id: lease_id(fields.string("leaseId")?)?,
        requester_id: fields.optional_peer("requesterId")?,
        reason,
    })
}

// ---- helpers ----

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RequestError::NotAnObject),
        Err(error) => Err(RequestError::MalformedJson {
            line: error.line(),
            column: error.column(),
        }),
    }
}

fn wrong_type(field: &'static str, expected: &'static str) -> RequestError {
    RequestError::WrongType { field, expected }
}

fn out_of_bounds(field: &'static str, detail: String) -> RequestError {
    RequestError::OutOfBounds { field, detail }
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn key(text: &str, field: &'static str) -> Result<[u8; 32], RequestError> {
    let mut bytes = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut bytes).is_err() {
        return Err(RequestError::BadKey(field));
    }
    Ok(bytes)
}

fn base64_32(text: &str, field: &'static str) -> Result<[u8; 32], RequestError> {
    use base64::Engine as _;
    // 32 bytes are 44 characters; bound the work before decoding.
    if text.len() > 64 {
        return Err(RequestError::WrongLength {
            field,
            expected: 32,
            actual: base64::decoded_len_estimate(text.len()),
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| RequestError::BadBase64(field))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| RequestError::WrongLength {
        field,
        expected: 32,
        actual: bytes.len(),
    })
}

fn lease_id(text: &str) -> Result<LeaseId, RequestError> {
    LeaseId::parse_canonical(text).map_err(|_| RequestError::OutOfBounds {
        field: "leaseId",
        detail: "must be lease-<relay hex>-<epoch>".into(),
    })
}

fn envelope(value: &Value) -> Result<SealedEnvelope, RequestError> {
    SealedEnvelope::from_json(value.to_string().as_bytes()).map_err(|error| match error {
        SealError::BadBase64 { field } => RequestError::BadBase64(match field {
            "cipherText" => "encryptedPackage.cipherText",
            "nonce" => "encryptedPackage.nonce",
            _ => "encryptedPackage.publicKey",
        }),
        SealError::WrongLength {
            field,
            expected,
            actual,
        } => RequestError::WrongLength {
            field: match field {
                "nonce" => "encryptedPackage.nonce",
                _ => "encryptedPackage.publicKey",
            },
            expected,
            actual,
        },
        other => RequestError::Envelope(other.to_string()),
    })
}

/// Field access on a request object with typed errors.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, treating `null` as absent.
    fn optional(&self, field: &'static str) -> Option<&'a Value> {
        self.0.get(field).filter(|value| !value.is_null())
    }

    fn required(&self, field: &'static str) -> Result<&'a Value, RequestError> {
        self.optional(field)
            .ok_or(RequestError::MissingField(field))
    }

    fn string(&self, field: &'static str) -> Result<&'a str, RequestError> {
        self.required(field)?
            .as_str()
            .ok_or(wrong_type(field, "a string"))
    }

    /// A bounded, NUL-free string.
    fn text(&self, field: &'static str) -> Result<String, RequestError> {
        checked_text(self.string(field)?, field)
    }

    fn optional_text(&self, field: &'static str) -> Result<Option<String>, RequestError> {
        match self.optional(field) {
            None => Ok(None),
            Some(Value::String(text)) => checked_text(text, field).map(Some),
            Some(_) => Err(wrong_type(field, "a string")),
        }
    }

    fn optional_peer(&self, field: &'static str) -> Result<Option<PeerId>, RequestError> {
        match self.optional(field) {
            None => Ok(None),
            Some(Value::String(text)) => key(text, field).map(|bytes| Some(PeerId(bytes))),
            Some(_) => Err(wrong_type(field, "a string")),
        }
    }

    /// Milliseconds since the epoch: a non-negative integer (JavaScript may write `1.0e12`).
    fn optional_millis(&self, field: &'static str) -> Result<Option<UnixTime>, RequestError> {
        let Some(value) = self.optional(field) else {
            return Ok(None);
        };
        let expected = "a non-negative integer of milliseconds";
        if let Some(ms) = value.as_u64() {
            return Ok(Some(UnixTime(ms)));
        }
        let float = value.as_f64().ok_or(wrong_type(field, expected))?;
        // 2^53: the range where every f64 integer is exact.
        if !(0.0..=9_007_199_254_740_992.0).contains(&float) || float.fract() != 0.0 {
            return Err(wrong_type(field, expected));
        }
        // Exact: a whole number within 0..=2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Some(UnixTime(float as u64)))
    }
}

fn checked_text(text: &str, field: &'static str) -> Result<String, RequestError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(out_of_bounds(
            field,
            format!("longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(out_of_bounds(field, "contains control characters".into()));
    }
    Ok(text.to_owned())
}

/// JSON with object keys sorted (by their UTF-8 bytes), recursively; arrays
/// keep their order; compact. The original's `stableStringify` for the
/// bodies this API exchanges (their keys are ASCII and their numbers
/// integers, where both orders and number forms agree with JavaScript's).
#[must_use]
pub fn stable_stringify(value: &Value) -> String {
    let mut out = String::new();
    write_stable(value, &mut out);
    out
}

fn write_stable(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            // Sorted here rather than trusting the map's order: serde_json's
            // `preserve_order` feature, if any crate turns it on, keeps insertion order.
            let sorted: BTreeMap<&str, &Value> =
                map.iter().map(|(key, item)| (key.as_str(), item)).collect();
            out.push('{');
            for (index, (key, item)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.to_owned()).to_string());
                out.push(':');
                write_stable(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_stable(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests;
