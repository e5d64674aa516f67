//! The escrow's operations, one per signed endpoint: deposit, unlock, renew,
//! release, revoke, list leases. Each locks the state (expiring what is due),
//! lets the core decide, appends the audit record, writes the store, and
//! answers (see [`crate::escrow::service`] for the rules they share).
//!
//! Unlock, step by step: the core plans; a refusal is audited and answered
//! 412. An issue or re-fetch first opens the deposit's sealed package with
//! the escrow key (reading is not releasing) and checks it, then appends the
//! `unlock-issued`/`unlock-refetched` record with the package digest, seals
//! the package to the requester's one-time session key, commits the plan,
//! records the lease in the store, keeps the key in the vault for the lease's
//! life, and answers. Anything failing after the append appends
//! `unlock-aborted` and answers an error: the sealed lease is never sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crypto_box::aead::OsRng;
use hypergate_adapters::audit::AuditEvent;
use hypergate_adapters::crypto::seal::seal_lease;
use hypergate_adapters::crypto::{SealedEnvelope, WriterPackage};
use hypergate_adapters::escrow_store::{LeaseRecord, StoredDeposit};
use hypergate_core::escrow::{
    AuditKind, DepositInput, RevokeTarget, UnlockAction, UnlockOutcome, UnlockRequest,
};
use hypergate_core::ids::PeerId;
use hypergate_core::lease::{LeaseGrant, LeaseId};
use hypergate_core::time::UnixTime;
use serde::Serialize;
use serde_json::{Value, json};

use crate::escrow::auth::{Authenticated, Role, SIGNATURE_WINDOW};
use crate::escrow::service::{EscrowService, Pending, ServiceError, State};
use crate::escrow::wire::{
    DepositRequest, ReleaseBody, RenewBody, RevokeBody, RevokeBodyTarget, UnlockBody,
};

/// `201` answer to a deposit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DepositAnswer {
    /// The new deposit's id.
    pub escrow_id: String,
    /// Its relay.
    pub relay_key: String,
    /// Its expiry after clamping (ms since the epoch).
    pub expires_at: u64,
    /// The policy's lease TTL.
    pub lease_ttl_ms: u64,
    /// The policy version it was accepted under.
    pub policy_version: String,
    /// The deposit it superseded, if any (a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// `200` answer to an unlock: the lease and the writer package sealed to the session key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockAnswer {
    /// `lease-<relay hex>-<epoch>`.
    pub lease_id: String,
    /// The lease's epoch (the write fence).
    pub epoch: u64,
    /// The deposit released.
    pub escrow_id: String,
    /// The relay.
    pub relay_key: String,
    /// The holder.
    pub requester_id: String,
    /// When the lease was issued (ms since the epoch).
    pub issued_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// SHA-256 hex of the writer key's hex (the original's digest).
    pub payload_digest: String,
    /// Whether this is the holder's existing lease fetched again.
    pub refetched: bool,
    /// The writer package sealed to the session key, from the escrow's static key.
    pub sealed_lease: SealedEnvelope,
}

/// One entry of `GET /leases`: digests, never secrets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    /// The lease.
    pub lease_id: String,
    /// The relay.
    pub relay_key: String,
    /// The deposit it releases.
    pub escrow_id: String,
    /// The holder.
    pub requester_id: String,
    /// The depositing worker.
    pub owner_peer_key: Option<String>,
    /// When issued.
    pub issued_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// The evidence it was issued on.
    pub evidence: Value,
    /// The policy's reasons at issue (empty).
    pub reasons: Vec<String>,
    /// SHA-256 hex of the writer key's hex.
    pub payload_digest: String,
}

fn hex32(digest: &str) -> Result<[u8; 32], ServiceError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digest, &mut bytes)
        .map_err(|_| ServiceError::Internal("digest is not 32 bytes of hex".into()))?;
    Ok(bytes)
}

/// The peer the request acts as: the body's, which must be the client's
/// bound peer if it has one, or the bound peer when the body names none.
fn requester_of(auth: &Authenticated, stated: Option<PeerId>) -> Result<PeerId, ServiceError> {
    match (stated, auth.peer) {
        (Some(stated), Some(bound)) if stated != bound => Err(ServiceError::Requester(
            "requester-mismatch",
            format!(
                "client {} acts as peer {}, not {}",
                auth.client_id,
                bound.short(),
                stated.short()
            ),
        )),
        (Some(peer), _) | (None, Some(peer)) => Ok(peer),
        (None, None) => Err(ServiceError::Requester(
            "requester-required",
            "requesterId is required for a client without a bound peer".into(),
        )),
    }
}

fn new_escrow_id() -> String {
    let mut bytes = [0u8; 16];
    crypto_box::aead::rand_core::RngCore::fill_bytes(&mut OsRng, &mut bytes);
    format!("escrow_{}", hex::encode(bytes))
}

impl EscrowService {
    /// `POST /escrow`: validates the deposit fully, then stores it.
    pub async fn deposit(
        self: Arc<Self>,
        auth: Authenticated,
        request: DepositRequest,
        sealed_package: Value,
    ) -> Result<DepositAnswer, ServiceError> {
        let invalid =
            |code: &'static str, message: String| ServiceError::InvalidDeposit(code, message);
        if let Some(bound) = auth.peer {
            if bound != request.owner_peer_key {
                return Err(ServiceError::Requester(
                    "owner-mismatch",
                    format!(
                        "client {} deposits as peer {}",
                        auth.client_id,
                        bound.short()
                    ),
                ));
            }
        }
        request
            .verify_owner_signature()
            .map_err(|why| invalid("invalid-owner-signature", why.to_owned()))?;
        let unix_now = crate::escrow::unix_now();
        if request.created_at.0.abs_diff(unix_now.0)
            > hypergate_core::time::duration_millis(SIGNATURE_WINDOW)
        {
            return Err(invalid(
                "stale-deposit",
                "createdAt is more than 5 minutes from the escrow's clock".into(),
            ));
        }
        let package =
            WriterPackage::open_deposit(self.keys.secret_key(), &request.encrypted_package)
                .map_err(|error| invalid("package-unreadable", error.to_string()))?;
        package
            .validate(&request.relay_key)
            .map_err(|error| invalid("invalid-package", error.to_string()))?;
        if package.owner_peer_key != request.owner_peer_key {
            return Err(invalid(
                "owner-mismatch",
                "the package's ownerPeerKey is not the deposit's".into(),
            ));
        }
        let writer_hash = package.writer_hash();
        if request
            .stated_writer_hash()
            .is_some_and(|stated| !stated.eq_ignore_ascii_case(&writer_hash))
        {
            return Err(invalid(
                "writer-hash-mismatch",
                "metadata.writerHash is not the package's writer key hash".into(),
            ));
        }
        let payload_digest = package.payload_digest();
        drop(package); // the secret is wiped here; only digests go on

        let now = Instant::now();
        let mut state = self.lock(now).await?;
        let result = self
            .store_deposit(
                &mut state,
                request,
                sealed_package,
                writer_hash,
                payload_digest,
                now,
            )
            .await;
        self.metrics.deposit(match &result {
            Ok(_) => "stored",
            Err(error) if error.status().is_client_error() => "rejected",
            Err(_) => "error",
        });
        self.settle(&mut state, now, result).await
    }

    async fn store_deposit(
        &self,
        state: &mut State,
        request: DepositRequest,
        sealed_package: Value,
        writer_hash: String,
        payload_digest: String,
        now: Instant,
    ) -> Result<DepositAnswer, ServiceError> {
        let record = state.escrow.handle_deposit(
            DepositInput {
                escrow_id: new_escrow_id(),
                relay_key: request.relay_key,
                owner: request.owner_peer_key,
                permitted_requesters: request.permitted_requesters.clone(),
                requested_expires_at: request.expires_at,
                policy_version: request.policy_version.clone(),
            },
            now,
        )?;
        let supersedes = state
            .escrow
            .deposits()
            .find(|deposit| deposit.superseded_by.as_deref() == Some(record.escrow_id.as_str()))
            .map(|deposit| deposit.escrow_id.clone());
        let mut metadata = request.metadata.clone();
        metadata.insert("writerHash".into(), Value::String(writer_hash.clone()));
        metadata.insert("createdAt".into(), json!(request.created_at.0));
        metadata.insert(
            "ownerSignature".into(),
            Value::String(hex::encode(request.owner_signature)),
        );
        if let Some(conditions) = &request.unlock_conditions {
            metadata.insert("unlockConditions".into(), conditions.clone());
        }
        let deposit = StoredDeposit {
            record: record.clone(),
            sealed_package,
            metadata: Value::Object(metadata),
            writer_hash: hex32(&writer_hash)?,
        };
        let pending = Pending {
            deposit: Some(deposit),
            payload_digest: Some(payload_digest),
            ..Pending::default()
        };
        self.apply_events(state, pending).await?;
        tracing::info!(
            escrow_id = %record.escrow_id,
            relay = %record.relay_key.short(),
            owner = %record.owner.short(),
            "deposit stored"
        );
        Ok(DepositAnswer {
            escrow_id: record.escrow_id,
            relay_key: record.relay_key.to_hex(),
            expires_at: record.expires_at.0,
            lease_ttl_ms: hypergate_core::time::duration_millis(self.policy.lease_ttl),
            policy_version: record.policy_version,
            supersedes,
        })
    }

    /// `POST /escrow/unlock`.
    pub async fn unlock(
        self: Arc<Self>,
        auth: Authenticated,
        body: UnlockBody,
    ) -> Result<UnlockAnswer, ServiceError> {
        let started = Instant::now();
        let requester = requester_of(&auth, body.requester_id)?;
        let now = Instant::now();
        let mut state = self.lock(now).await?;
        let result = self.unlock_locked(&mut state, requester, &body, now).await;
        let outcome = match &result {
            Ok(answer) if answer.refetched => "refetch",
            Ok(_) => "success",
            Err(error) if error.reasons().is_some() => "policy-rejection",
            Err(_) => "error",
        };
        self.metrics.unlock(outcome);
        if let Some(reasons) = result.as_ref().err().and_then(ServiceError::reasons) {
            for reason in reasons {
                self.metrics
                    .policy_rejections
                    .get_or_create(&crate::escrow::metrics::ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
        let result = self.settle(&mut state, now, result).await;
        self.metrics
            .unlock_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn unlock_locked(
        &self,
        state: &mut State,
        requester: PeerId,
        body: &UnlockBody,
        now: Instant,
    ) -> Result<UnlockAnswer, ServiceError> {
        let request = UnlockRequest {
            relay_key: body.relay_key,
            requester,
            evidence: body.evidence.clone(),
        };
        let plan = state.escrow.plan_unlock(&request, now)?;
        if let UnlockAction::Reject(reasons) = plan.action() {
            let reasons = reasons.clone();
            let entry = self.append_record(state, plan.audit(), None).await?;
            state.escrow.commit_unlock(plan, now)?;
            self.store_write("append_audit_index", move |store| {
                store.append_audit_index(&entry)
            })
            .await?;
            tracing::info!(relay = %body.relay_key.short(), requester = %requester.short(), reasons = ?reasons, "unlock rejected");
            return Err(ServiceError::Rejected(reasons));
        }

        // Issue or re-fetch: open the deposit first (reading is not releasing).
        let escrow_id = plan.escrow_id().to_owned();
        let stored = self
            .store_call("deposit", move |store| store.deposit(&escrow_id))
            .await?
            .ok_or_else(|| {
                ServiceError::Internal("the deposit is missing from the store".into())
            })?;
        let opened = SealedEnvelope::from_json(stored.sealed_package.to_string().as_bytes())
            .map_err(|error| error.to_string())
            .and_then(|envelope| {
                WriterPackage::open_deposit(self.keys.secret_key(), &envelope)
                    .map_err(|error| error.to_string())
            })
            .and_then(|package| {
                package
                    .validate(&body.relay_key)
                    .map(|()| package)
                    .map_err(|error| error.to_string())
            });
        let package = match opened {
            Ok(package) => package,
            Err(detail) => {
                // A deposit that no longer opens (damaged in the store, or another relay's):
                // nothing is released, and the refusal is audited before the answer.
                let mut record = plan.audit().clone();
                record.kind = AuditKind::UnlockRejected;
                record.lease_id = None;
                record.reason = Some(format!("deposit-unreadable: {detail}"));
                let entry = self.append_record(state, &record, None).await?;
                self.store_write("append_audit_index", move |store| {
                    store.append_audit_index(&entry)
                })
                .await?;
                tracing::warn!(relay = %body.relay_key.short(), escrow_id = %record.escrow_id, %detail, "unlock refused: the deposit does not open");
                return Err(ServiceError::Internal(format!("stored package: {detail}")));
            }
        };
        let payload_digest = package.payload_digest();
        let plan_record = plan.audit().clone();
        let entry = self
            .append_record(state, &plan_record, Some(&payload_digest))
            .await?;

        // Audited: from here on a failure is recorded as aborted and nothing is sent.
        let released = async {
            let session = crypto_box::PublicKey::from(body.session_public_key);
            let sealed = seal_lease(
                self.keys.secret_key(),
                &session,
                &package.to_json(),
                &mut OsRng,
            )
            .map_err(|error| ServiceError::Internal(format!("sealing the lease: {error}")))?;
            let outcome = state.escrow.commit_unlock(plan, now)?;
            // Leases the issue ended (past their expiry) are recorded first.
            self.apply_events(state, Pending::default()).await?;
            let (grant, refetched) = match outcome {
                UnlockOutcome::Issued(grant) => (grant, false),
                UnlockOutcome::Refetched(grant) => (grant, true),
                UnlockOutcome::Rejected(_) => {
                    return Err(ServiceError::Internal(
                        "a committed issue turned into a rejection".into(),
                    ));
                }
            };
            let issued_at = state
                .escrow
                .active_lease(&grant.id.relay, now)
                .map_or(now, |lease| lease.issued_at);
            let unix_issued = state.escrow.unix_time(issued_at);
            let unix_expires = state.escrow.unix_time(grant.expires_at);
            if refetched {
                self.store_write("append_audit_index", move |store| {
                    store.append_audit_index(&entry)
                })
                .await?;
            } else {
                let lease = LeaseRecord {
                    id: grant.id,
                    escrow_id: grant.escrow_id.clone(),
                    requester: grant.holder,
                    issued_at: unix_issued,
                    expires_at: unix_expires,
                    evidence: body.evidence_json.clone(),
                    reasons: Vec::new(),
                    payload_digest: hex32(&payload_digest)?,
                    released_at: None,
                    release_reason: None,
                };
                self.store_write("record_lease_issued", move |store| {
                    store.record_lease_issued(&lease, &entry)
                })
                .await?;
            }
            self.vault
                .insert(grant.id, package.signing_key())
                .map_err(|error| ServiceError::Internal(error.to_string()))?;
            Ok::<_, ServiceError>(self.answer(
                &grant,
                unix_issued,
                unix_expires,
                &payload_digest,
                refetched,
                sealed,
            ))
        }
        .await;
        match released {
            Ok(answer) => {
                tracing::info!(lease = %answer.lease_id, requester = %requester.short(), refetched = answer.refetched, "lease issued");
                Ok(answer)
            }
            Err(error) => {
                let aborted = AuditEvent::unlock_aborted(
                    &plan_record,
                    &error.code(),
                    crate::escrow::unix_now(),
                );
                if let Err(audit) = self.append(state, &aborted).await {
                    tracing::error!(error = %audit, "could not record the aborted unlock");
                }
                Err(error)
            }
        }
    }

    fn answer(
        &self,
        grant: &LeaseGrant,
        issued_at: UnixTime,
        expires_at: UnixTime,
        payload_digest: &str,
        refetched: bool,
        sealed_lease: SealedEnvelope,
    ) -> UnlockAnswer {
        UnlockAnswer {
            lease_id: grant.id.to_string(),
            epoch: grant.id.epoch,
            escrow_id: grant.escrow_id.clone(),
            relay_key: grant.id.relay.to_hex(),
            requester_id: grant.holder.to_hex(),
            issued_at: issued_at.0,
            expires_at: expires_at.0,
            payload_digest: payload_digest.to_owned(),
            refetched,
            sealed_lease,
        }
    }

    /// `POST /escrow/renew`: extends the holder's lease if the policy still allows it.
    pub async fn renew(
        self: Arc<Self>,
        auth: Authenticated,
        body: RenewBody,
    ) -> Result<(LeaseId, UnixTime), ServiceError> {
        let requester = requester_of(&auth, body.requester_id)?;
        let now = Instant::now();
        let mut state = self.lock(now).await?;
        let request = UnlockRequest {
            relay_key: body.lease_id.relay,
            requester,
            evidence: body.evidence,
        };
        let result = async {
            match state.escrow.handle_renew(body.lease_id, request, now) {
                Ok(grant) => {
                    let expires_at = state.escrow.unix_time(grant.expires_at);
                    let pending = Pending {
                        renewed: Some(expires_at),
                        ..Pending::default()
                    };
                    self.apply_events(&mut state, pending).await?;
                    Ok((grant.id, expires_at))
                }
                Err(hypergate_core::escrow::EscrowError::Rejected(reasons)) => {
                    self.apply_events(&mut state, Pending::default()).await?;
                    Err(ServiceError::Rejected(reasons))
                }
                Err(other) => Err(other.into()),
            }
        }
        .await;
        self.settle(&mut state, now, result).await
    }

    /// `POST /escrow/release`: the holder gives its lease back.
    pub async fn release(
        self: Arc<Self>,
        auth: Authenticated,
        body: ReleaseBody,
    ) -> Result<(), ServiceError> {
        let requester = requester_of(&auth, body.requester_id)?;
        let now = Instant::now();
        let mut state = self.lock(now).await?;
        let result = async {
            state
                .escrow
                .handle_release(body.lease_id, requester, body.reason.clone(), now)?;
            self.apply_events(&mut state, Pending::default()).await
        }
        .await;
        self.settle(&mut state, now, result).await
    }

    /// `POST /escrow/revoke`: `(success, escrow ids revoked now)`; success is
    /// whether the target named any deposit (already revoked ones count).
    pub async fn revoke(
        self: Arc<Self>,
        auth: Authenticated,
        body: RevokeBody,
    ) -> Result<(bool, Vec<String>), ServiceError> {
        let now = Instant::now();
        let mut state = self.lock(now).await?;
        let target = match body.target {
            RevokeBodyTarget::EscrowId(id) => RevokeTarget::EscrowId(id),
            RevokeBodyTarget::Relay(relay) => RevokeTarget::Relay(relay),
            RevokeBodyTarget::Owner(owner) => RevokeTarget::Owner(owner),
        };
        let matches = |deposit: &hypergate_core::escrow::DepositRecord| match &target {
            RevokeTarget::EscrowId(id) => deposit.escrow_id == *id,
            RevokeTarget::Relay(relay) => deposit.relay_key == *relay,
            RevokeTarget::Owner(owner) => deposit.owner == *owner,
        };
        let owners: BTreeSet<PeerId> = state
            .escrow
            .deposits()
            .filter(|deposit| matches(deposit))
            .map(|deposit| deposit.owner)
            .collect();
        if auth.role == Role::Worker {
            if let Some(bound) = auth.peer {
                let foreign = owners.iter().any(|owner| *owner != bound)
                    || matches!(&target, RevokeTarget::Owner(owner) if *owner != bound);
                if foreign {
                    return Err(ServiceError::Requester(
                        "not-deposit-owner",
                        format!("worker {} may only revoke its own deposits", auth.client_id),
                    ));
                }
            }
        }
        let success = !owners.is_empty();
        let owner_revoke = match &target {
            RevokeTarget::Owner(owner) => Some(*owner),
            _ => None,
        };
        let actor = body.actor.unwrap_or_else(|| auth.client_id.clone());
        let revoked = state
            .escrow
            .handle_revoke(target, &actor, &body.reason, now);
        let result = self
            .apply_events(
                &mut state,
                Pending {
                    owner_revoke,
                    ..Pending::default()
                },
            )
            .await
            .map(|()| (success, revoked));
        if let Ok((_, revoked)) = &result {
            tracing::info!(actor = %actor, revoked = ?revoked, "deposits revoked");
        }
        self.settle(&mut state, now, result).await
    }

    /// `GET /leases`: the active leases, after expiring what is due.
    pub async fn leases(self: Arc<Self>) -> Result<Vec<LeaseView>, ServiceError> {
        let now = Instant::now();
        let state = self.lock(now).await?;
        let unix_now = state.escrow.unix_time(now);
        let owners: BTreeMap<String, PeerId> = state
            .escrow
            .deposits()
            .map(|deposit| (deposit.escrow_id.clone(), deposit.owner))
            .collect();
        drop(state);
        let leases = self
            .store_call("active_leases", move |store| store.active_leases(unix_now))
            .await?;
        let owner_of = |escrow_id: &str| owners.get(escrow_id).map(PeerId::to_hex);
        Ok(leases
            .into_iter()
            .map(|lease| LeaseView {
                lease_id: lease.id.to_string(),
                relay_key: lease.relay().to_hex(),
                owner_peer_key: owner_of(&lease.escrow_id),
                escrow_id: lease.escrow_id,
                requester_id: lease.requester.to_hex(),
                issued_at: lease.issued_at.0,
                expires_at: lease.expires_at.0,
                evidence: lease.evidence,
                reasons: lease
                    .reasons
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect(),
                payload_digest: hex::encode(lease.payload_digest),
            })
            .collect())
    }
}
