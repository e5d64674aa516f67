//! The gateway's side of the escrow: turning the core's lease requests into unlock and renew
//! calls, installing what comes back, and releasing leases that ended.
//!
//! Contract:
//! - A granted lease is installed in this order: the writer key goes into the vault, the
//!   leased writer is opened (rebuilt from the mirror, the secret in memory only), and only
//!   then does the core hear of the grant, so every `Append` verdict finds its writer.
//! - A refusal (policy, unreachable escrow, a lease that does not open) reaches the core as a
//!   refused request, whose reason becomes the client's `OK false "read-only: …"`.
//! - The escrow's public key is fetched once (`GET /policy`) and kept; a failed fetch is
//!   retried on the next request.
//! - An ended lease is released at the escrow (best effort: the escrow expires it anyway).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::mirror::LeasedWriter;
use hypergate_core::escrow::Evidence;
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::{LeaseGrant, LeaseId};
use hypergate_core::time::UnixTime;

use super::replica::Leased;
use super::state::Shared;
use crate::escrow_client::EscrowClient;
use crate::escrow_client::{ClientError, RevokeBy};

/// The escrow client and what the gateway remembers about its leases.
pub(crate) struct EscrowLink {
    client: EscrowClient,
    /// Operator credentials, for revokes.
    operator: Option<EscrowClient>,
    public_key: tokio::sync::Mutex<Option<crypto_box::PublicKey>>,
    /// Deposit released by each active lease (a renewal reports the same one).
    escrow_ids: Mutex<BTreeMap<LeaseId, String>>,
}

impl EscrowLink {
    pub(crate) fn new(client: EscrowClient, operator: Option<EscrowClient>) -> EscrowLink {
        EscrowLink {
            client,
            operator,
            public_key: tokio::sync::Mutex::new(None),
            escrow_ids: Mutex::new(BTreeMap::new()),
        }
    }

    /// Asks the escrow for (or to renew) `relay`'s lease in the background.
    pub(crate) fn spawn_request(
        &self,
        shared: Arc<Shared>,
        relay: RelayKey,
        renewing: Option<LeaseId>,
        evidence: Evidence,
    ) {
        shared.spawner.clone().spawn(async move {
            let Some(escrow) = &shared.escrow else {
                return;
            };
            let outcome = match renewing {
                Some(lease) => escrow.renew(&shared, lease, &evidence).await,
                None => escrow.unlock(&shared, relay, &evidence).await,
            };
            if let Err(reason) = outcome {
                tracing::info!(relay = %relay.short(), %reason, "lease refused");
                shared.metrics.lease_refused();
                shared.with_relay(relay, |state, now| {
                    state.core.handle_lease_refused(relay, &reason, now);
                });
            }
        });
    }

    async fn public_key(&self) -> Result<crypto_box::PublicKey, ClientError> {
        let mut known = self.public_key.lock().await;
        if let Some(key) = known.as_ref() {
            return Ok(key.clone());
        }
        let policy = self.client.policy().await?;
        *known = Some(policy.public_key.clone());
        Ok(policy.public_key)
    }

    async fn unlock(
        &self,
        shared: &Arc<Shared>,
        relay: RelayKey,
        evidence: &Evidence,
    ) -> Result<(), String> {
        let escrow_key = self.public_key().await.map_err(|e| describe(&e))?;
        let lease = self
            .client
            .unlock(relay, Some(shared.peer_id()), evidence, &escrow_key)
            .await
            .inspect_err(|e| shared.metrics.escrow_refused(e))
            .map_err(|e| describe(&e))?;
        let key = lease.package.signing_key();
        if let Err(error) = shared.vault.insert(lease.lease_id, key.clone()) {
            return Err(format!("the lease could not be held: {error}"));
        }
        {
            let mut writers = shared.writers.lock().await;
            let mut mirror = shared.mirror.lock().await;
            let writer =
                LeasedWriter::open(&mut mirror, relay, key, shared.peer_id(), shared.unix_now())
                    .await
                    .map_err(|e| format!("the gateway writer could not be opened: {e}"))?;
            writers.insert(
                relay,
                Leased {
                    lease: lease.lease_id,
                    writer,
                },
            );
        }
        self.escrow_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lease.lease_id, lease.escrow_id.clone());
        let expires_at = lease.expires_at;
        let grant = |now| LeaseGrant {
            id: lease.lease_id,
            escrow_id: lease.escrow_id.clone(),
            holder: shared.peer_id(),
            expires_at: instant_at(shared, now, expires_at),
        };
        tracing::info!(lease = %lease.lease_id, relay = %relay.short(), refetched = lease.refetched, "lease granted");
        shared.metrics.lease_granted();
        shared
            .with_relay(relay, |state, now| {
                state.core.handle_lease_granted(grant(now), now)
            })
            .map_err(|e| format!("the lease was not installed: {e}"))
    }

    async fn renew(
        &self,
        shared: &Arc<Shared>,
        lease: LeaseId,
        evidence: &Evidence,
    ) -> Result<(), String> {
        let expires_at = self
            .client
            .renew(lease, Some(shared.peer_id()), evidence)
            .await
            .inspect_err(|e| shared.metrics.escrow_refused(e))
            .map_err(|e| describe(&e))?;
        let escrow_id = self
            .escrow_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&lease)
            .cloned()
            .unwrap_or_default();
        shared
            .with_relay(lease.relay, |state, now| {
                let grant = LeaseGrant {
                    id: lease,
                    escrow_id,
                    holder: shared.peer_id(),
                    expires_at: instant_at(shared, now, expires_at),
                };
                state.core.handle_lease_granted(grant, now)
            })
            .map_err(|e| format!("the renewal was not installed: {e}"))
    }

    /// Revokes every deposit of `relay` at the escrow: its answer, or why it failed.
    pub(crate) async fn revoke_relay(
        &self,
        relay: RelayKey,
        reason: &str,
    ) -> Result<serde_json::Value, String> {
        let Some(operator) = &self.operator else {
            return Err("no escrow operator credentials are configured".into());
        };
        operator
            .revoke(&RevokeBy::Relay(relay), Some("gateway-operator"), reason)
            .await
            .map_err(|e| describe(&e))
    }

    /// Tells the escrow a lease ended here (best effort).
    pub(crate) async fn release(&self, shared: &Shared, lease: LeaseId) {
        self.escrow_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease);
        if let Err(error) = self
            .client
            .release(lease, Some(shared.peer_id()), "ended-at-gateway")
            .await
        {
            tracing::debug!(lease = %lease, %error, "escrow release failed (it expires anyway)");
        }
    }
}

/// The monotonic instant of wall-clock `at`, seen from `now`.
fn instant_at(shared: &Shared, now: std::time::Instant, at: UnixTime) -> std::time::Instant {
    let left = at.0.saturating_sub(shared.unix_now().0);
    now + Duration::from_millis(left)
}

/// The reason a client reads after `read-only: `.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Refused {
            code,
            reasons: Some(reasons),
            ..
        } if !reasons.is_empty() => format!("escrow refused ({code}): {}", reasons.join(", ")),
        ClientError::Refused { code, message, .. } => match message {
            Some(message) => format!("escrow refused ({code}): {message}"),
            None => format!("escrow refused ({code})"),
        },
        ClientError::Transport(_) | ClientError::Timeout(_) => "escrow unreachable".to_owned(),
        other => other.to_string(),
    }
}
