//! Performing `WorkerCore` effects against real storage, the link and the escrow.
//!
//! Each effect runs to completion and yields the output its `EffectKind` documents, or a
//! message the core counts as a failed attempt (it retries with backoff). Keys are saved to the
//! relay's keys file before the core learns of them, so a crash never loses a generated key.

use hypergate_adapters::crypto::{PackageMetadata, WriterPackage};
use hypergate_adapters::peer_link::PeerLink;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::relay::{RelayOp, WriterKey};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    MAX_MIRROR_BLOCKS_PER_RANGE, Message, MirrorRangeRequest, ResyncStatus,
};
use hypergate_core::worker::{Effect, EffectKind, EffectOutput, OwnerOp};

use super::drive::import::import_gateway_drives;
use super::mirror::decode_mirror_response;
use super::{EscrowSettings, HostedRelay, Shared};
use crate::escrow::client::{ClientError, DepositParams, RevokeBy, deposit_body};

/// What an effect may use.
pub(crate) struct EffectContext<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) link: &'a PeerLink,
    pub(crate) escrow: Option<&'a EscrowSettings>,
    pub(crate) worker: PeerId,
}

/// A deposit the escrow accepted.
pub(crate) struct Deposit {
    pub(crate) escrow_id: String,
    pub(crate) expires_at: Option<u64>,
    pub(crate) policy_version: Option<String>,
}

pub(crate) async fn perform(
    effect: &Effect,
    ctx: &EffectContext<'_>,
) -> Result<EffectOutput, String> {
    let relay = effect.relay;
    match &effect.kind {
        EffectKind::IngestGatewayEvents { gateway_writer } => {
            let length = ingest_gateway_writer(ctx, relay, *gateway_writer).await?;
            Ok(EffectOutput::Ingested {
                gateway_writer_length: length,
            })
        }
        EffectKind::FetchDriveFiles {
            drive_identifier,
            drive_version,
        } => {
            import_gateway_drives(
                ctx.link,
                &ctx.shared.drives,
                relay,
                drive_identifier.as_deref(),
                *drive_version,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(EffectOutput::Done)
        }
        EffectKind::ReplayHttpArtifacts { drive_identifier } => {
            super::artifacts::replay(ctx.link, ctx.shared, relay, drive_identifier.as_deref())
                .await?;
            Ok(EffectOutput::Done)
        }
        EffectKind::SendResyncComplete { .. } => {
            let Some(done) = effect.resync_complete() else {
                return Err("not a resync-complete effect".into());
            };
            match ctx.link.request(Message::ResyncComplete(done)).await {
                Ok(Message::ResyncAck(ack)) => Ok(EffectOutput::ResyncAnswered {
                    cleared: ack.status == ResyncStatus::Cleared,
                }),
                Ok(other) => Err(format!("resync-complete answered with {}", other.kind())),
                Err(error) => Err(error.to_string()),
            }
        }
        EffectKind::GenerateWriterKey => {
            let key = ed25519_dalek::SigningKey::generate(&mut crypto_box::aead::OsRng);
            let mut relays = ctx.shared.relays.lock().await;
            let hosted = hosted(&mut relays, relay)?;
            let public = hosted.keys.add_writer(key);
            hosted.keys.save().map_err(|e| e.to_string())?;
            Ok(EffectOutput::WriterKey { public })
        }
        EffectKind::AppendOwnerOps { ops } => {
            let ops: Vec<RelayOp> = ops
                .iter()
                .map(|op| match *op {
                    OwnerOp::RemoveWriter { key, final_length } => RelayOp::RemoveWriter {
                        key: WriterKey(key),
                        final_length,
                    },
                    OwnerOp::AddWriter { key } => RelayOp::AddWriter {
                        key: WriterKey(key),
                    },
                })
                .collect();
            let mut relays = ctx.shared.relays.lock().await;
            let hosted = hosted(&mut relays, relay)?;
            hosted
                .logs
                .append_owner_ops(&ops)
                .await
                .map_err(|e| e.to_string())?;
            ctx.shared.changed.notify_one();
            Ok(EffectOutput::Done)
        }
        EffectKind::RevokeDeposit { escrow_id, reason } => {
            let Some(escrow) = ctx.escrow else {
                return Ok(EffectOutput::Done); // nothing was deposited
            };
            match escrow
                .client
                .revoke(
                    &RevokeBy::EscrowId(escrow_id.clone()),
                    None,
                    reason.as_str(),
                )
                .await
            {
                Ok(_) => Ok(EffectOutput::Done),
                // Gone either way.
                Err(ClientError::Refused { code, .. }) if code == "escrow-record-not-found" => {
                    Ok(EffectOutput::Done)
                }
                Err(error) => Err(error.to_string()),
            }
        }
        EffectKind::DepositWriterKey { writer_public } => {
            let mut relays = ctx.shared.relays.lock().await;
            let hosted = hosted(&mut relays, relay)?;
            let escrow_id = match ctx.escrow {
                Some(escrow) => {
                    let deposit = deposit(hosted, *writer_public, escrow, ctx.worker).await?;
                    hosted.keys.deposit_expires_at = deposit.expires_at;
                    hosted.keys.policy_version = deposit.policy_version;
                    Some(deposit.escrow_id)
                }
                None => None,
            };
            hosted.keys.current = *writer_public;
            hosted.keys.escrow_id.clone_from(&escrow_id);
            hosted.keys.retire_old_writers();
            hosted.keys.save().map_err(|e| e.to_string())?;
            Ok(EffectOutput::Deposited {
                // Without an escrow the core still needs a name for "no deposit".
                escrow_id: escrow_id.unwrap_or_else(|| "not-deposited".into()),
            })
        }
    }
}

fn hosted(
    relays: &mut std::collections::BTreeMap<RelayKey, HostedRelay>,
    relay: RelayKey,
) -> Result<&mut HostedRelay, String> {
    relays
        .get_mut(&relay)
        .ok_or_else(|| format!("relay {relay} is not hosted here"))
}

/// Fetches the gateway writer log's new blocks from the gateway as proofs and verifies them
/// into the relay. Returns the length held afterwards.
async fn ingest_gateway_writer(
    ctx: &EffectContext<'_>,
    relay: RelayKey,
    writer: [u8; 32],
) -> Result<u64, String> {
    let writer = WriterKey(writer);
    let mut total = 0u64;
    loop {
        let start = {
            let mut relays = ctx.shared.relays.lock().await;
            let hosted = hosted(&mut relays, relay)?;
            match hosted.logs.writer_log(&writer).await {
                Ok(log) => log.len(),
                Err(_) => 0, // no replica yet: the first import creates it
            }
        };
        let end = start.saturating_add(MAX_MIRROR_BLOCKS_PER_RANGE as u64);
        let request = MirrorRangeRequest::new(writer.0, start, end).map_err(|e| e.to_string())?;
        let answer = ctx
            .link
            .request(Message::MirrorRangeRequest(request))
            .await
            .map_err(|e| e.to_string())?;
        let Message::MirrorRangeResponse(response) = answer else {
            return Err(format!("range request answered with {}", answer.kind()));
        };
        let proofs = decode_mirror_response(&response).map_err(|e| e.to_string())?;
        let mut relays = ctx.shared.relays.lock().await;
        let hosted = hosted(&mut relays, relay)?;
        if proofs.is_empty() {
            let held = match hosted.logs.writer_log(&writer).await {
                Ok(log) => log.contiguous_len(),
                Err(_) => 0,
            };
            return Ok(held);
        }
        let held = hosted
            .logs
            .import_writer_proofs(&writer, &proofs)
            .await
            .map_err(|e| e.to_string())?;
        total = total.saturating_add(proofs.len() as u64);
        if total >= 10_000 && total % 10_000 < proofs.len() as u64 {
            tracing::info!(relay = %relay.short(), blocks = total, held, "ingesting gateway writes");
        }
        ctx.shared.changed.notify_one();
    }
}

/// Seals the writer's package to the escrow's key and deposits it, signed with the relay key.
pub(crate) async fn deposit(
    hosted: &mut HostedRelay,
    writer_public: [u8; 32],
    escrow: &EscrowSettings,
    worker: PeerId,
) -> Result<Deposit, String> {
    let writer = hosted
        .keys
        .writer(&writer_public)
        .ok_or_else(|| "the writer's secret is not in the keys file".to_owned())?;
    let policy = escrow.client.policy().await.map_err(|e| e.to_string())?;
    let relay = hosted.logs.relay_key();
    let now = unix_now();
    let package = WriterPackage::new(
        relay,
        writer,
        worker,
        now,
        PackageMetadata {
            identifier: relay.to_hex(),
            name: None,
        },
    );
    let body = deposit_body(
        &policy,
        &DepositParams {
            package: &package,
            relay_key: hosted.keys.owner(),
            permitted_requesters: &escrow.permitted_gateways,
            expires_at: None,
            created_at: now,
        },
    )
    .map_err(|e| e.to_string())?;
    let receipt = escrow
        .client
        .deposit(&body)
        .await
        .map_err(|e| e.to_string())?;
    let escrow_id = receipt["escrowId"]
        .as_str()
        .ok_or_else(|| format!("deposit answer has no escrowId: {receipt}"))?
        .to_owned();
    Ok(Deposit {
        escrow_id,
        expires_at: receipt["expiresAt"].as_u64(),
        policy_version: receipt["policyVersion"].as_str().map(str::to_owned),
    })
}

/// The wall clock, read at the edge (signed into deposits).
pub(crate) fn unix_now() -> UnixTime {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    UnixTime(u64::try_from(millis).unwrap_or(u64::MAX))
}
