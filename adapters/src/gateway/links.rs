//! The gateway's peer-link listener: workers connect, prove their identity, register relays,
//! send heartbeats, and have their logs mirrored.
//!
//! Contract:
//! - Only workers the [`AcceptPolicy`] admits get a link; nothing is read before the
//!   handshake completed (the peer link's guarantee).
//! - Each link gets one [`LinkQueue`], drained by one writer task: forwarded client frames in
//!   a flow per session (each session's frames stay in order), the core's frames (acks,
//!   pushes) in a control flow, served in round robin (see `link_queue.rs`).
//! - `MirrorAdvertise` registers the advertised cores in the mirror and pulls each one from
//!   where the mirror stands, with requests built from the mirror's own state (so a batch a
//!   crash cut short resumes); every block is verified before it is stored. After each batch
//!   the core hears the new length and the relay's replica host catches up.
//! - `MirrorRangeRequest` / `MirrorProofRequest` (a worker fetching the gateway writer log)
//!   are answered from the mirror; a core the mirror does not hold has no blocks here, so the
//!   answer is empty (a worker whose current gateway writer was never leased moves on).
//!   Requests the mirror cannot answer get an error frame, never a panic.
//! - Everything else goes to the core.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::log::RangeRequest;
use crate::mirror::{CoreAnnouncement, CoreKey};
use crate::peer_link::{CloseCode, Inbound, PeerLink};
use hypergate_core::ids::PeerId;
use hypergate_core::wire::{
    BoundedString, CoreAdvert, ErrorCode, ErrorMessage, Frame, MAX_MIRROR_BLOCKS_PER_RANGE,
    Message, MirrorProofRequest, MirrorRangeRequest,
};

use super::link_queue::{LinkQueue, write_frames};
use super::state::Shared;
use crate::mirror::wire::{decode_mirror_response, pack_proofs, proof_request};

/// How long one mirror pull request may wait for the worker's answer.
const PULL_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many unanswered pull requests are asked again before the pull waits for the next
/// advertisement.
const PULL_RETRIES: u32 = 3;

/// Cores being pulled now (one puller per core).
#[derive(Default)]
pub(crate) struct Pulling(Mutex<BTreeSet<[u8; 32]>>);

impl Pulling {
    fn start(&self, core: [u8; 32]) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(core)
    }

    fn finish(&self, core: &[u8; 32]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(core);
    }
}

/// Serves one established worker link until it ends.
pub(crate) async fn serve_link(
    shared: Arc<Shared>,
    pulling: Arc<Pulling>,
    link: PeerLink,
    inbound: Inbound,
) {
    let peer = link.remote();
    let own_queue = Arc::new(LinkQueue::new());
    let writer = {
        let queue = Arc::clone(&own_queue);
        let link = link.clone();
        shared
            .spawner
            .spawn_with_handle(async move { write_frames(&queue, &link).await })
    };
    tracing::info!(peer = %peer.short(), "worker linked");
    let replaced = {
        let mut links = shared.links();
        links.outbound.insert(peer, Arc::clone(&own_queue));
        links.links.insert(peer, link.clone())
    };
    // A worker that reconnects before its old connection was seen to die: the newer link
    // wins, and the old one is closed (its end must not take the new one down).
    if let Some(old) = replaced {
        shared.spawner.spawn(async move {
            let _ = old
                .close(CloseCode::GOING_AWAY, "replaced by a newer link")
                .await;
        });
    }
    // Every partition keeps the health of the peers its relays use.
    shared.with_every(|state, now| state.core.handle_link_up(peer, now));
    while let Some(frame) = inbound.recv().await {
        let id = frame.request_id;
        match frame.message {
            Message::MirrorAdvertise(advert) => {
                register_cores(&shared, peer, &advert.cores).await;
                for core in advert.cores.iter() {
                    if pulling.start(core.core_key) {
                        shared.spawner.spawn(pull(
                            Arc::clone(&shared),
                            Arc::clone(&pulling),
                            link.clone(),
                            core.clone(),
                        ));
                    }
                }
                shared.handle_peer_frame(peer, Frame::new(id, Message::MirrorAdvertise(advert)));
            }
            Message::MirrorRangeRequest(request) => {
                let answer = answer_range_request(&shared, &request).await;
                let _ = link.send(Frame::new(id, answer)).await;
            }
            Message::HttpRequest(request) => {
                // Answered in its own task: a drive read must not hold up the link's frames.
                let shared = Arc::clone(&shared);
                let link = link.clone();
                shared.spawner.clone().spawn(async move {
                    let answer = super::drive::answer_link_request(&shared, peer, &request).await;
                    let _ = link
                        .send(Frame::new(id, Message::HttpResponse(answer)))
                        .await;
                });
            }
            Message::MirrorProofRequest(request) => {
                let answer = answer_proof(&shared, &request).await;
                let _ = link.send(Frame::new(id, answer)).await;
            }
            message => shared.handle_peer_frame(peer, Frame::new(id, message)),
        }
    }
    let reason = link.closed().map(|closed| closed.to_string());
    tracing::info!(peer = %peer.short(), reason = reason.as_deref().unwrap_or("ended"), "worker link down");
    // Only if this link is still the peer's current one (a newer link may have replaced it).
    let current = {
        let mut links = shared.links();
        let current = links
            .outbound
            .get(&peer)
            .is_some_and(|queue| Arc::ptr_eq(queue, &own_queue));
        if current {
            links.outbound.remove(&peer);
            links.links.remove(&peer);
        }
        current
    };
    if current {
        shared.with_every(|state, now| state.core.handle_link_down(peer, now));
    }
    drop(own_queue);
    drop(writer); // cancels the frame writer
}

async fn register_cores(shared: &Shared, owner: PeerId, cores: &[CoreAdvert]) {
    let now = shared.unix_now();
    let mut mirror = shared.mirror.lock().await;
    for core in cores {
        let announcement = CoreAnnouncement::from_advert(core, owner);
        let key = announcement.core_key;
        if let Err(error) = mirror.register_core(announcement, now).await {
            tracing::warn!(core = %key.short(), %error, "advertised core refused");
            continue;
        }
        if let Err(error) = mirror.advertise(&key, core.length, now) {
            tracing::warn!(core = %key.short(), %error, "advertised length not recorded");
        }
    }
}

/// Pulls one core up to its advertised length, from where the mirror stands.
async fn pull(shared: Arc<Shared>, pulling: Arc<Pulling>, link: PeerLink, core: CoreAdvert) {
    let key = CoreKey(core.core_key);
    let mut unanswered = 0;
    loop {
        let request = {
            let mut mirror = shared.mirror.lock().await;
            let Ok(start) = mirror.len(&key) else { break };
            if start >= core.length {
                break;
            }
            let end = core
                .length
                .min(start.saturating_add(MAX_MIRROR_BLOCKS_PER_RANGE as u64));
            match mirror.request_range(&key, start..end).await {
                Ok(range) => proof_request(core.core_key, range),
                Err(error) => {
                    tracing::warn!(core = %key.short(), %error, "mirror request failed");
                    break;
                }
            }
        };
        let Ok(request) = request else { break };
        // Bounded: a worker that never answers must not hold this core's pull (and with it every
        // later advertisement of the core) for as long as its link lives; an unanswered request
        // is asked again from where the mirror stands, a few times.
        let answer = crate::rt::timeout(
            PULL_ANSWER_TIMEOUT,
            link.request(Message::MirrorProofRequest(request)),
        )
        .await;
        let response = match answer {
            Ok(Ok(Message::MirrorRangeResponse(response))) => response,
            Err(_elapsed) if unanswered < PULL_RETRIES => {
                unanswered += 1;
                tracing::info!(core = %key.short(), unanswered, "mirror pull unanswered; asking again");
                continue;
            }
            // The link ended, the worker refused, or it stopped answering: the next
            // advertisement resumes.
            _ => break,
        };
        let proofs = match decode_mirror_response(&response) {
            Ok(proofs) if !proofs.is_empty() => proofs,
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(core = %key.short(), %error, "worker sent a malformed mirror response");
                shared.metrics.mirror_rejected(1);
                break;
            }
        };
        let stored = {
            let mut mirror = shared.mirror.lock().await;
            mirror.store_blocks(&key, &proofs, shared.unix_now()).await
        };
        match stored {
            Ok(outcome) => {
                shared.metrics.mirror_stored(outcome.stored_blocks);
                shared.metrics.mirror_rejected(outcome.rejected_blocks);
                let length = outcome.local_length;
                shared.with_relay(core.relay_key, |state, now| {
                    state
                        .core
                        .handle_mirror_stored(core.relay_key, core.core_key, length, now);
                });
                shared.replicas.refresh(core.relay_key).await;
                if outcome.stored_blocks == 0 {
                    break; // nothing verified: do not ask again for the same blocks
                }
            }
            Err(error) => {
                tracing::warn!(core = %key.short(), %error, "mirror store failed");
                break;
            }
        }
    }
    pulling.finish(&core.core_key);
}

async fn answer_range_request(shared: &Shared, request: &MirrorRangeRequest) -> Message {
    let key = CoreKey(*request.core_key());
    let mut mirror = shared.mirror.lock().await;
    // A core the gateway never held (e.g. a gateway writer it was never leased) has no blocks
    // here: an empty answer, so the worker's resync moves on.
    let held = mirror.len(&key).unwrap_or(0);
    let start = request.start();
    let end = held.min(start.saturating_add(MAX_MIRROR_BLOCKS_PER_RANGE as u64));
    let proofs = if start < end {
        match mirror.export_blocks(&key, start, start..end).await {
            Ok(proofs) => proofs,
            Err(error) => return failure(ErrorCode::BadRequest, &error.to_string()),
        }
    } else {
        Vec::new()
    };
    match pack_proofs(*key.as_bytes(), start, proofs) {
        Ok(response) => Message::MirrorRangeResponse(response),
        Err(error) => failure(ErrorCode::Internal, &error.to_string()),
    }
}

async fn answer_proof(shared: &Shared, request: &MirrorProofRequest) -> Message {
    let key = CoreKey(request.core_key);
    let mut mirror = shared.mirror.lock().await;
    if mirror.core(&key).is_none() {
        return empty_answer(request.core_key, request.blocks.first().map_or(0, |b| b.0));
    }
    let start = request.blocks.first().map_or(0, |block| block.0);
    let range = RangeRequest {
        signed_length: request.signed_length,
        blocks: request.blocks.to_vec(),
    };
    let proofs = match mirror.answer_request(&key, &range).await {
        Ok(proofs) => proofs,
        Err(error) => return failure(ErrorCode::BadRequest, &error.to_string()),
    };
    match pack_proofs(request.core_key, start, proofs) {
        Ok(response) => Message::MirrorRangeResponse(response),
        Err(error) => failure(ErrorCode::Internal, &error.to_string()),
    }
}

fn empty_answer(core_key: [u8; 32], start: u64) -> Message {
    match pack_proofs(core_key, start, Vec::new()) {
        Ok(response) => Message::MirrorRangeResponse(response),
        Err(error) => failure(ErrorCode::Internal, &error.to_string()),
    }
}

fn failure(code: ErrorCode, message: &str) -> Message {
    Message::Error(ErrorMessage {
        code,
        message: BoundedString::truncating(message),
    })
}
