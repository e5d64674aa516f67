//! The run task: connect (with backoff), introduce, register, advertise, then serve the link
//! until it ends — and again. Owns the `WorkerCore`; drains its effects after every input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hypergate_adapters::peer_link::{
    Backoff, CloseCode, Inbound, PeerLink, connect, connect_with_backoff,
};
use hypergate_core::ids::RelayKey;
use hypergate_core::wire::{
    BoundedString, BoundedVec, Capability, CoreAdvert, CoreRole, ErrorCode, ErrorMessage,
    EscrowRegistration, Frame, Heartbeat, Hello, HttpMethod, Message, MirrorAdvertise,
    MirrorProofRequest, MirrorRangeRequest, PeerRole, RegisterRelays, RelayLeaseEpoch,
    RelayMetadata, RelayRegistration,
};
use hypergate_core::worker::{WorkerCore, WorkerEvent};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

use super::effects::{self, EffectContext};
use super::forwarded::LinkSessions;
use super::mirror::{answer_proof_request, answer_range};
use super::{Shared, WorkerAgentConfig};

/// Id of frames this side sends unsolicited (below the link's own request ids).
pub(super) const UNSOLICITED_ID: u64 = 0;

fn sleeper(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

pub(crate) async fn run(config: WorkerAgentConfig, shared: Arc<Shared>) {
    let peer = config.identity.peer_id();
    let mut core = WorkerCore::new(config.worker, peer, config.seed);
    {
        let relays = shared.relays.lock().await;
        for (key, hosted) in relays.iter() {
            core.register_relay(*key, hosted.keys.current, hosted.keys.escrow_id.clone());
            let _ = core.restore_rotated_epoch(*key, hosted.keys.rotated_epoch);
        }
    }
    let mut backoff = Backoff::new(config.backoff.clone(), config.seed);
    loop {
        ensure_deposits(&config, &shared, &mut core).await;
        publish(&shared, &core).await;
        let dial = || async {
            let stream = tokio::net::TcpStream::connect(&config.gateway_addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            connect(
                stream.compat(),
                &config.identity,
                config.gateway_key,
                &config.link,
                sleeper,
            )
            .await
            .map_err(|e| e.to_string())
        };
        let established = tokio::select! {
            result = connect_with_backoff(dial, &mut backoff, &sleeper) => result,
            never = keep_deposits_while_away(&config, &shared, &mut core) => match never {},
            () = shared.stop.notified() => return,
        };
        let established = match established {
            Ok(established) => established,
            Err(gave_up) => {
                tracing::error!(%gave_up, "worker agent stops: the gateway is unreachable");
                return;
            }
        };
        // Aborted when this scope ends, also when the agent's task is aborted (shutdown): a
        // detached driver would keep the connection alive, heartbeats and all, with nobody
        // answering the gateway's requests (a test found its mirror pulls hanging on it).
        let mut driver = AbortOnDrop(tokio::spawn(established.driver.run()));
        let link = established.link;
        let inbound = established.inbound;
        tracing::info!(gateway = %link.remote().short(), "connected to the gateway");
        set_connected(&shared, true);
        let stopped = serve(&config, &shared, &mut core, &link, &inbound, &mut backoff).await;
        set_connected(&shared, false);
        drop(link);
        drop(inbound);
        if stopped {
            return; // the guard aborts the driver
        }
        let _ = (&mut driver.0).await;
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn set_connected(shared: &Shared, connected: bool) {
    if let Ok(mut status) = shared.status.lock() {
        status.connected = connected;
        if connected {
            status.connects += 1;
        }
    }
}

/// Serves one link; `true` when the agent was told to stop.
async fn serve(
    config: &WorkerAgentConfig,
    shared: &Shared,
    core: &mut WorkerCore,
    link: &PeerLink,
    inbound: &Inbound,
    backoff: &mut Backoff,
) -> bool {
    let lease_epochs = match introduce(config, shared, link).await {
        Ok(lease_epochs) => lease_epochs,
        Err(error) => {
            tracing::warn!(%error, "introduction to the gateway failed");
            return false;
        }
    };
    // The link proved itself: the next outage starts from the initial delay again.
    backoff.reset();
    let now = Instant::now();
    // Leases issued while this worker was away (no push reached it): the core rotates on
    // `handle_gateway_connected` if one is newer than the last rotation.
    for lease in lease_epochs {
        if let Err(error) = core.handle_lease_observed(lease.relay_key, lease.epoch, now) {
            tracing::debug!(relay = %lease.relay_key.short(), %error, "lease epoch of a relay not hosted here");
        }
    }
    core.handle_gateway_connected(now);
    drive(config, shared, core, link).await;
    // Dropped when this link ends, which ends every session forwarded over it.
    let mut sessions = LinkSessions::new(Arc::clone(&shared.forwarded_open));
    let mut tick = tokio::time::interval(config.advertise_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = core.poll_timeout().map(|(at, _)| at);
        let retry = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = inbound.recv() => {
                let Some(frame) = frame else { return false };
                handle_frame(config, shared, core, link, &mut sessions, frame).await;
            }
            () = shared.changed.notified() => {
                let _ = advertise(shared, link).await;
            }
            _ = tick.tick() => {
                let _ = advertise(shared, link).await;
                if ensure_deposits(config, shared, core).await {
                    // A deposit made while linked (the first one failed at start-up, or a
                    // re-deposit): register again so the gateway knows the relay's escrow.
                    reregister(config, shared, link).await;
                }
            }
            () = retry => core.handle_timeout(Instant::now()),
            () = shared.stop.notified() => {
                let _ = link.close(CloseCode::NORMAL, "worker stopping").await;
                return true;
            }
        }
        drive(config, shared, core, link).await;
    }
}

/// Sends the relays' registration again (merged by the gateway), e.g. with a new deposit.
async fn reregister(config: &WorkerAgentConfig, shared: &Shared, link: &PeerLink) {
    let registration = match registration(config, shared).await {
        Ok(registration) => registration,
        Err(error) => {
            tracing::warn!(%error, "registration could not be built");
            return;
        }
    };
    // The answer comes back through the inbound queue this loop drains: do not wait here.
    let link = link.clone();
    tokio::spawn(async move {
        if let Err(error) = link.request(Message::RegisterRelays(registration)).await {
            tracing::warn!(%error, "re-registration failed; the next deposit or link retries");
        }
    });
}

/// Hello, registration and a first advertisement; returns the lease epochs the gateway acked.
async fn introduce(
    config: &WorkerAgentConfig,
    shared: &Shared,
    link: &PeerLink,
) -> Result<Vec<RelayLeaseEpoch>, String> {
    let hello = Hello {
        peer_id: config.identity.peer_id(),
        role: PeerRole::Worker,
        agent: BoundedString::truncating(concat!("hypergate-worker/", env!("CARGO_PKG_VERSION"))),
        capabilities: BoundedVec::new(vec![Capability::Mirror, Capability::PendingWrites])
            .map_err(|e| e.to_string())?,
    };
    link.send(Frame::new(UNSOLICITED_ID, Message::Hello(hello)))
        .await
        .map_err(|e| e.to_string())?;
    let registration = registration(config, shared).await?;
    let lease_epochs = match link.request(Message::RegisterRelays(registration)).await {
        Ok(Message::RegisterAck(ack)) => {
            for rejected in ack.rejected.iter() {
                tracing::warn!(relay = %rejected.relay_key.short(), reason = %rejected.reason.as_str(), "gateway rejected a relay");
            }
            ack.lease_epochs.into_inner()
        }
        Ok(other) => return Err(format!("registration answered with {}", other.kind())),
        Err(error) => return Err(error.to_string()),
    };
    advertise(shared, link).await?;
    Ok(lease_epochs)
}

async fn registration(
    config: &WorkerAgentConfig,
    shared: &Shared,
) -> Result<RegisterRelays, String> {
    let relays = shared.relays.lock().await;
    let mut list = Vec::with_capacity(relays.len());
    for (key, hosted) in relays.iter() {
        let escrow = match (&config.escrow, &hosted.keys.escrow_id) {
            (Some(escrow), Some(id)) => Some(EscrowRegistration {
                escrow_id: BoundedString::new(id.clone()).map_err(|e| e.to_string())?,
                policy_version: BoundedString::truncating(
                    hosted.keys.policy_version.as_deref().unwrap_or_default(),
                ),
                permitted_gateways: BoundedVec::new(escrow.permitted_gateways.clone())
                    .map_err(|e| e.to_string())?,
                expires_at: hypergate_core::time::UnixTime(
                    hosted.keys.deposit_expires_at.unwrap_or(0),
                ),
            }),
            _ => None,
        };
        list.push(RelayRegistration {
            relay_key: *key,
            identifiers: BoundedVec::default(),
            metadata: RelayMetadata::default(),
            requires_auth: false,
            escrow,
        });
    }
    Ok(RegisterRelays {
        relays: BoundedVec::new(list).map_err(|e| e.to_string())?,
    })
}

/// Sends every core's length and records it for the status.
async fn advertise(shared: &Shared, link: &PeerLink) -> Result<(), String> {
    let mut cores = Vec::new();
    {
        let mut relays = shared.relays.lock().await;
        for (key, hosted) in relays.iter_mut() {
            let gateway_writer = hosted.keys.current;
            cores.push((
                hosted.logs.owner_log().public_key().to_bytes(),
                *key,
                CoreRole::Owner,
                hosted.logs.owner_log().len(),
            ));
            for writer in hosted.logs.local_writers().map_err(|e| e.to_string())? {
                let role = if writer.0 == gateway_writer {
                    CoreRole::GatewayWriter
                } else {
                    CoreRole::Writer
                };
                let length = hosted
                    .logs
                    .writer_log(&writer)
                    .await
                    .map(|log| log.len())
                    .map_err(|e| e.to_string())?;
                cores.push((writer.0, *key, role, length));
            }
        }
    }
    // Each relay's drive (its metadata and blobs logs) is mirrored too, once it exists.
    let relays: Vec<RelayKey> = shared.relays.lock().await.keys().copied().collect();
    for relay in relays {
        let drive = shared
            .drives
            .with_existing_drive(relay, async |drive| {
                [
                    (drive.key(), CoreRole::DriveMeta, drive.version()),
                    (drive.blobs_key(), CoreRole::DriveBlobs, drive.blob_length()),
                ]
            })
            .await
            .map_err(|e| e.to_string())?;
        for (core, role, length) in drive.into_iter().flatten() {
            cores.push((core, relay, role, length));
        }
    }
    if let Ok(mut status) = shared.status.lock() {
        for (core, relay, role, length) in &cores {
            let entry = status.cores.entry(*core).or_insert((*relay, *role, 0, 0));
            entry.1 = *role;
            entry.2 = *length;
        }
    }
    let adverts: Vec<CoreAdvert> = cores
        .into_iter()
        .map(|(core_key, relay_key, role, length)| CoreAdvert {
            core_key,
            relay_key,
            role,
            length,
            announce: false,
            priority: u8::from(role == CoreRole::Owner),
        })
        .collect();
    let advert = MirrorAdvertise {
        cores: BoundedVec::new(adverts).map_err(|e| e.to_string())?,
    };
    link.send(Frame::new(UNSOLICITED_ID, Message::MirrorAdvertise(advert)))
        .await
        .map_err(|e| e.to_string())
}

async fn handle_frame(
    config: &WorkerAgentConfig,
    shared: &Shared,
    core: &mut WorkerCore,
    link: &PeerLink,
    sessions: &mut LinkSessions,
    frame: Frame,
) {
    let remote = link.remote();
    let id = frame.request_id;
    let answer = match frame.message {
        Message::NostrFrame(forwarded) => {
            let served = match shared.forwarded.lock() {
                Ok(served) => served.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            if let Some(ended) = sessions.route(served.as_deref(), link, forwarded) {
                let _ = link
                    .send(Frame::new(UNSOLICITED_ID, Message::NostrFrame(ended)))
                    .await;
            }
            return;
        }
        Message::PendingWritePush(push) if remote == config.gateway_key => {
            let ack = core.handle_push(remote, &push, Instant::now());
            Message::PushAck(ack)
        }
        Message::PendingWritePush(push) => {
            // Unreachable through `connect` (it pins the gateway), kept as a second fence.
            if let Ok(mut status) = shared.status.lock() {
                status.refused_pushes += 1;
            }
            tracing::warn!(from = %remote.short(), relay = %push.relay_key.short(), "push refused: not the pinned gateway");
            error(
                ErrorCode::Unauthorized,
                "pushes are accepted from the pinned gateway only",
            )
        }
        Message::MirrorRangeRequest(request) => {
            let core_key = *request.core_key();
            answer_mirror(shared, core_key, MirrorAsk::Range(&request)).await
        }
        Message::MirrorProofRequest(request) => {
            answer_mirror(shared, request.core_key, MirrorAsk::Proofs(&request)).await
        }
        Message::HttpRequest(request) if request.method == HttpMethod::Post => {
            Message::HttpResponse(super::artifacts::answer_post(shared, &request).await)
        }
        Message::HttpRequest(request) => {
            // Answered in its own task: a large file must not hold up the link's frames.
            let hosted: Vec<RelayKey> = shared.relays.lock().await.keys().copied().collect();
            let drives = Arc::clone(&shared.drives);
            let link = link.clone();
            tokio::spawn(async move {
                let answer = drives.answer_link_request(&hosted, &request).await;
                let _ = link
                    .send(Frame::new(id, Message::HttpResponse(answer)))
                    .await;
            });
            return;
        }
        Message::Heartbeat(beat) => Message::HeartbeatAck(Heartbeat {
            seq: beat.seq,
            sent_at: effects::unix_now(),
        }),
        other => {
            tracing::debug!(kind = other.kind(), "ignored a frame from the gateway");
            return;
        }
    };
    let _ = link.send(Frame::new(id, answer)).await;
}

fn error(code: ErrorCode, message: &str) -> Message {
    Message::Error(ErrorMessage {
        code,
        message: BoundedString::truncating(message),
    })
}

/// The two ways the gateway asks for blocks.
enum MirrorAsk<'a> {
    /// From where the copy's signed tree ends (kept for peers that still send it).
    Range(&'a MirrorRangeRequest),
    /// By what the copy holds: resumes from any state.
    Proofs(&'a MirrorProofRequest),
}

impl MirrorAsk<'_> {
    /// How far the asking mirror holds every block, for the status.
    fn held(&self) -> u64 {
        match self {
            MirrorAsk::Range(request) => request.start(),
            MirrorAsk::Proofs(request) => request
                .blocks
                .first()
                .map_or(request.signed_length, |block| block.0),
        }
    }
}

async fn answer_mirror(shared: &Shared, core_key: [u8; 32], ask: MirrorAsk<'_>) -> Message {
    let mut relays = shared.relays.lock().await;
    for hosted in relays.values_mut() {
        let log = if hosted.logs.owner_log().public_key().to_bytes() == core_key {
            Some(hosted.logs.owner_log())
        } else {
            let writer = hypergate_core::relay::WriterKey(core_key);
            hosted.logs.writer_log(&writer).await.ok()
        };
        let Some(log) = log else { continue };
        let answer = match &ask {
            MirrorAsk::Range(request) => answer_range(log, request).await,
            MirrorAsk::Proofs(request) => answer_proof_request(log, request).await,
        };
        return match answer {
            Ok(response) => {
                // What the mirror holds once it applies this answer: where it asked
                // from, plus the blocks sent (so the lag reaches 0 once caught up).
                let sent_through = response.start.saturating_add(response.blocks.len() as u64);
                if let Ok(mut status) = shared.status.lock()
                    && let Some(entry) = status.cores.get_mut(&core_key)
                {
                    entry.3 = entry.3.max(ask.held()).max(sent_through);
                }
                Message::MirrorRangeResponse(response)
            }
            Err(e) => error(ErrorCode::Internal, &e.to_string()),
        };
    }
    let hosted: Vec<RelayKey> = relays.keys().copied().collect();
    drop(relays);
    // Not a relay log: one of a relay's drive logs, perhaps.
    for relay in hosted {
        let answered = shared
            .drives
            .with_existing_drive(relay, async |drive| {
                let log = if drive.key() == core_key {
                    drive.meta_log_mut()
                } else if drive.blobs_key() == core_key {
                    drive.blobs_log_mut()
                } else {
                    return None;
                };
                Some(match &ask {
                    MirrorAsk::Range(request) => answer_range(log, request).await,
                    MirrorAsk::Proofs(request) => answer_proof_request(log, request).await,
                })
            })
            .await;
        match answered {
            Ok(Some(Some(Ok(response)))) => return Message::MirrorRangeResponse(response),
            Ok(Some(Some(Err(e)))) => return error(ErrorCode::Internal, &e.to_string()),
            Err(e) => return error(ErrorCode::Internal, &e.to_string()),
            Ok(Some(None) | None) => {}
        }
    }
    error(ErrorCode::NotFound, "no such core here")
}

/// Performs every ready effect, then publishes the state.
async fn drive(
    config: &WorkerAgentConfig,
    shared: &Shared,
    core: &mut WorkerCore,
    link: &PeerLink,
) {
    let ctx = EffectContext {
        shared,
        link,
        escrow: config.escrow.as_ref(),
        worker: config.identity.peer_id(),
    };
    while let Some(effect) = core.poll_effect() {
        tracing::debug!(relay = %effect.relay.short(), step = effect.kind.name(), "resync step");
        let result = effects::perform(&effect, &ctx).await;
        shared
            .revision
            .send_modify(|revision| *revision = revision.wrapping_add(1));
        if let Err(error) = &result {
            tracing::warn!(relay = %effect.relay.short(), step = effect.kind.name(), %error, "resync step failed");
        }
        if let Err(error) = core.handle_effect_result(effect.id, result, Instant::now()) {
            tracing::warn!(%error, "resync step result not applied");
        }
        drain_events(shared, core).await;
    }
    drain_events(shared, core).await;
    publish(shared, core).await;
}

async fn drain_events(shared: &Shared, core: &mut WorkerCore) {
    while let Some(event) = core.poll_event() {
        match &event {
            WorkerEvent::RotationCompleted { record } => {
                tracing::info!(relay = %record.relay.short(), rotation = record.rotation_id, "gateway writer rotated");
                let mut relays = shared.relays.lock().await;
                if let Some(hosted) = relays.get_mut(&record.relay) {
                    hosted.keys.rotated_epoch = hosted.keys.rotated_epoch.max(record.lease_epoch);
                    if let Err(error) = hosted.keys.save() {
                        tracing::error!(%error, "could not save the rotated epoch");
                    }
                }
            }
            WorkerEvent::StepFailed {
                relay, step, error, ..
            } => {
                tracing::warn!(relay = %relay.short(), step, %error, "resync step failed");
            }
            other => tracing::debug!(event = ?other, "worker event"),
        }
    }
}

/// Copies job states, writers and rotations into the status.
async fn publish(shared: &Shared, core: &WorkerCore) {
    let relays: Vec<RelayKey> = shared.relays.lock().await.keys().copied().collect();
    let Ok(mut status) = shared.status.lock() else {
        return;
    };
    let mut pending = 0;
    for relay in relays {
        let state = core.job_state(&relay);
        if matches!(
            state,
            Some(
                hypergate_core::worker::JobState::Queued
                    | hypergate_core::worker::JobState::InProgress
            )
        ) {
            pending += 1;
        }
        status.relays.insert(
            relay,
            super::RelayStatus {
                relay_key: relay.to_hex(),
                job_state: state.map_or("unknown", |s| s.as_str()).to_owned(),
                gateway_writer: core
                    .current_writer(&relay)
                    .map(hex::encode)
                    .unwrap_or_default(),
                escrow_id: core.current_escrow_id(&relay).map(str::to_owned),
                cores: Vec::new(),
            },
        );
    }
    status.pending_jobs = pending;
    status.rotations = core.rotations().cloned().collect();
}

/// While the gateway cannot be reached, keeps re-depositing before expiry: a worker cut off from
/// the gateway is the case the escrow exists for. Never returns; dropped once a link is up (a
/// deposit cut off then is at worst stored but unrecorded, and superseded by the next one).
async fn keep_deposits_while_away(
    config: &WorkerAgentConfig,
    shared: &Shared,
    core: &mut WorkerCore,
) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(config.advertise_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the deposits were just checked.
    tick.tick().await;
    loop {
        tick.tick().await;
        ensure_deposits(config, shared, core).await;
        publish(shared, core).await;
    }
}

/// Deposits every gateway writer that has no deposit yet (or whose deposit expires within the
/// margin) and tells the core the new escrow id.
/// Deposits every gateway writer without a live deposit; whether any deposit was made (the
/// gateway must then hear the new escrow id: see the serve loop).
async fn ensure_deposits(
    config: &WorkerAgentConfig,
    shared: &Shared,
    core: &mut WorkerCore,
) -> bool {
    let Some(escrow) = &config.escrow else {
        return false;
    };
    let mut deposited = false;
    let now = effects::unix_now().0;
    let margin = u64::try_from(escrow.redeposit_margin.as_millis()).unwrap_or(u64::MAX);
    let mut relays = shared.relays.lock().await;
    for (key, hosted) in relays.iter_mut() {
        let due = hosted.keys.escrow_id.is_none()
            || hosted
                .keys
                .deposit_expires_at
                .is_some_and(|at| at <= now.saturating_add(margin));
        let busy = matches!(
            core.job_state(key),
            Some(
                hypergate_core::worker::JobState::Queued
                    | hypergate_core::worker::JobState::InProgress
            )
        );
        if !due || busy {
            continue;
        }
        let writer = hosted.keys.current;
        match effects::deposit(hosted, writer, escrow, config.identity.peer_id()).await {
            Ok(deposit) => {
                tracing::info!(relay = %key.short(), escrow_id = %deposit.escrow_id, "gateway writer deposited");
                hosted.keys.escrow_id = Some(deposit.escrow_id.clone());
                hosted.keys.deposit_expires_at = deposit.expires_at;
                hosted.keys.policy_version = deposit.policy_version;
                if let Err(error) = hosted.keys.save() {
                    tracing::error!(%error, "could not save the deposit id");
                }
                core.register_relay(*key, writer, Some(deposit.escrow_id));
                deposited = true;
            }
            Err(error) => {
                tracing::warn!(relay = %key.short(), %error, "deposit failed; retried later")
            }
        }
    }
    deposited
}
