//! Audit entries: what one block of the audit log holds.
//!
//! A block is the UTF-8 JSON of an [`AuditEvent`] plus `prevDigest`, the
//! SHA-256 hex of the previous block's bytes (`null` for block 0):
//! `{type, escrowId, leaseId?, relayKey, actor, reasons, evidence?, reason?,
//! supersedes?, payloadDigest?, timestamp, prevDigest}`. For the core's
//! record kinds the fields are exactly the core's [`AuditRecord`] JSON (the
//! original's event names, §2.8); the adapter adds two kinds of its own,
//! `unlock-aborted` and `rotation`. Nothing here can hold key material: the
//! only key-derived field is `payloadDigest`, which must be a SHA-256 hex
//! digest.

use std::fmt;

use hypergate_core::escrow::{AuditKind, AuditRecord, Evidence, RejectReason};
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use serde::de::IntoDeserializer as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `type` of an audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AuditEventKind {
    /// One of the escrow core's record kinds (`deposit`, `unlock-issued`, …).
    Escrow(AuditKind),
    /// An unlock plan whose `unlock-issued` record was appended but which was
    /// never committed (the commit was stale, or the answer could not be
    /// sealed): the key was not released after all.
    UnlockAborted,
    /// A relay's gateway writer key was rotated: a new deposit superseded the
    /// old one after a resync.
    Rotation,
}

impl AuditEventKind {
    /// The `type` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEventKind::Escrow(kind) => kind.as_str(),
            AuditEventKind::UnlockAborted => "unlock-aborted",
            AuditEventKind::Rotation => "rotation",
        }
    }
}

impl fmt::Display for AuditEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuditEventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditEventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "unlock-aborted" => Ok(AuditEventKind::UnlockAborted),
            "rotation" => Ok(AuditEventKind::Rotation),
            // Every other name is the core's to define.
            other => {
                let kind: Result<AuditKind, serde::de::value::Error> =
                    AuditKind::deserialize(other.into_deserializer());
                kind.map(AuditEventKind::Escrow)
                    .map_err(|_| serde::de::Error::custom(format!("unknown audit type {other:?}")))
            }
        }
    }
}

/// One audit event, before it is chained into the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: AuditEventKind,
    /// The deposit concerned (for a rotation: the new deposit).
    pub escrow_id: String,
    /// The lease concerned, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lease_id_text"
    )]
    pub lease_id: Option<LeaseId>,
    /// The relay.
    #[serde(with = "key_hex")]
    pub relay_key: RelayKey,
    /// Who caused it.
    pub actor: String,
    /// Why an unlock was refused (empty otherwise).
    #[serde(default)]
    pub reasons: Vec<RejectReason>,
    /// The evidence an unlock decision was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Free text: a revoke's reason, a lease's end reason, why an unlock was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The escrow id of the deposit this one superseded (deposits, rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The released package's `payloadDigest` (SHA-256 hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// When, by the escrow's clock.
    #[serde(rename = "timestamp")]
    pub at: UnixTime,
}

impl From<&AuditRecord> for AuditEvent {
    fn from(record: &AuditRecord) -> Self {
        // Destructured so that a field added to the core's record fails to
        // compile here instead of silently missing from the log.
        let AuditRecord {
            kind,
            escrow_id,
            lease_id,
            relay_key,
            actor,
            reasons,
            evidence,
            reason,
            supersedes,
            at,
        } = record;
        Self {
            kind: AuditEventKind::Escrow(*kind),
            escrow_id: escrow_id.clone(),
            lease_id: *lease_id,
            relay_key: *relay_key,
            actor: actor.clone(),
            reasons: reasons.clone(),
            evidence: evidence.clone(),
            reason: reason.clone(),
            supersedes: supersedes.clone(),
            payload_digest: None,
            at: *at,
        }
    }
}

impl AuditEvent {
    /// The `unlock-aborted` entry for an unlock plan whose record
    /// (`plan_record`, already appended) was not committed.
    #[must_use]
    pub fn unlock_aborted(plan_record: &AuditRecord, why: &str, at: UnixTime) -> Self {
        Self {
            kind: AuditEventKind::UnlockAborted,
            reason: Some(why.to_owned()),
            supersedes: None,
            at,
            ..Self::from(plan_record)
        }
    }

    /// The `rotation` entry: `new_escrow_id` replaced `old_escrow_id` as the
    /// relay's gateway writer deposit.
    #[must_use]
    pub fn rotation(
        relay_key: RelayKey,
        new_escrow_id: &str,
        old_escrow_id: &str,
        actor: &str,
        at: UnixTime,
    ) -> Self {
        Self {
            kind: AuditEventKind::Rotation,
            escrow_id: new_escrow_id.to_owned(),
            lease_id: None,
            relay_key,
            actor: actor.to_owned(),
            reasons: Vec::new(),
            evidence: None,
            reason: None,
            supersedes: Some(old_escrow_id.to_owned()),
            payload_digest: None,
            at,
        }
    }

    /// The same event carrying a package's `payloadDigest`.
    #[must_use]
    pub fn with_payload_digest(mut self, digest: &str) -> Self {
        self.payload_digest = Some(digest.to_owned());
        self
    }
}

/// Whether `text` looks like a SHA-256 hex digest (64 lowercase hex characters).
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A block as stored: the event and the link to the previous block.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditBlock {
    #[serde(flatten)]
    pub(crate) event: AuditEvent,
    pub(crate) prev_digest: Option<String>,
}

/// Keys as 64 hex characters, as everywhere operators see them.
mod key_hex {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        key: &RelayKey,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&key.to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<RelayKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Lease ids as the core prints them: `lease-<relay hex>-<epoch>`.
mod lease_id_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        id: &Option<LeaseId>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.collect_str(id),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<LeaseId>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse::<LeaseId>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: AuditKind) -> AuditRecord {
        AuditRecord {
            kind,
            escrow_id: "escrow_1".into(),
            lease_id: Some(LeaseId {
                relay: RelayKey([3; 32]),
                epoch: 7,
            }),
            relay_key: RelayKey([3; 32]),
            actor: "ab".repeat(32),
            reasons: vec![RejectReason::PeersStillHealthy],
            evidence: Some(Evidence {
                escrow_enabled: Some(true),
                healthy_peer_count: Some(1),
                ..Evidence::default()
            }),
            reason: Some("why".into()),
            supersedes: Some("escrow_0".into()),
            at: UnixTime(1_700_000_000_123),
        }
    }

    #[test]
    fn core_records_serialise_exactly_as_the_core_does() {
        for kind in [
            AuditKind::Deposit,
            AuditKind::UnlockIssued,
            AuditKind::UnlockRefetched,
            AuditKind::UnlockRejected,
            AuditKind::DepositRevoked,
            AuditKind::LeaseReleased,
            AuditKind::LeaseExpired,
            AuditKind::LeaseRenewed,
        ] {
            let record = record(kind);
            let ours = serde_json::to_value(AuditEvent::from(&record)).unwrap();
            let core = serde_json::to_value(&record).unwrap();
            assert_eq!(ours, core, "{kind:?}");
            let back: AuditEvent = serde_json::from_value(ours).unwrap();
            assert_eq!(back, AuditEvent::from(&record));
        }
    }

    #[test]
    fn adapter_kinds_round_trip_with_their_own_type_names() {
        let aborted =
            AuditEvent::unlock_aborted(&record(AuditKind::UnlockIssued), "stale-plan", UnixTime(5))
                .with_payload_digest(&"0f".repeat(32));
        let json = serde_json::to_value(&aborted).unwrap();
        assert_eq!(json["type"], "unlock-aborted");
        assert_eq!(json["reason"], "stale-plan");
        assert_eq!(json["leaseId"], format!("lease-{}-7", "03".repeat(32)));
        assert_eq!(json["payloadDigest"], "0f".repeat(32));
        assert_eq!(serde_json::from_value::<AuditEvent>(json).unwrap(), aborted);

        let rotation =
            AuditEvent::rotation(RelayKey([4; 32]), "escrow_2", "escrow_1", "w", UnixTime(6));
        let json = serde_json::to_value(&rotation).unwrap();
        assert_eq!(json["type"], "rotation");
        assert_eq!(json["supersedes"], "escrow_1");
        assert_eq!(
            serde_json::from_value::<AuditEvent>(json).unwrap(),
            rotation
        );
    }

    #[test]
    fn unknown_types_and_malformed_lease_ids_are_rejected() {
        let mut json = serde_json::to_value(AuditEvent::from(&record(AuditKind::Deposit))).unwrap();
        json["type"] = "made-up".into();
        assert!(serde_json::from_value::<AuditEvent>(json.clone()).is_err());
        json["type"] = "deposit".into();
        json["leaseId"] = "lease-xyz-1".into();
        assert!(serde_json::from_value::<AuditEvent>(json).is_err());
    }

    #[test]
    fn sha256_hex_check_accepts_only_lowercase_64_hex() {
        assert!(is_sha256_hex(&"a1".repeat(32)));
        assert!(!is_sha256_hex(&"A1".repeat(32)));
        assert!(!is_sha256_hex(&"a1".repeat(31)));
        assert!(!is_sha256_hex(&"g1".repeat(32)));
    }
}
