//! Drill: a worker sends the gateway's mirror tampered blocks.
//!
//! Injected: a worker speaking the real peer link (Noise XX, postcard frames) registers a
//! relay and advertises a writer core it holds in a real `HyperLog`; it answers the gateway's
//! `MirrorProofRequest`s with the log's real proofs, except that while tampering it flips the
//! first byte of every block it sends.
//!
//! Promised: tampered blocks are rejected and counted
//! (`gateway_blind_peer_rejected_blocks_total`), the mirrored core does not advance past the
//! last verified block (`/api/blind-peer/replicas`), and once the worker answers honestly the
//! mirror resumes from that block (its next request starts there) and catches up.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ed25519_dalek::SigningKey;
use hypergate_adapters::log::HyperLog;
use hypergate_adapters::peer_link::{LinkConfig, PeerLink, connect as link_connect};
use hypergate_core::ids::RelayKey;
use hypergate_core::wire::{
    BoundedString, BoundedVec, CoreAdvert, CoreRole, Frame, Message, MirrorAdvertise, MirrorBlock,
    RegisterRelays, RelayRegistration,
};
use hypergate_tokio::gateway::GatewayHandle;
use hypergate_tokio::worker_agent::mirror::answer_proof_request;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

use crate::gateway_support::{PATIENCE, eventually, identity, start_gateway};
use crate::support::{metric, mirrored_cores};

/// The request id of frames that answer nothing (what the worker agent uses).
const UNSOLICITED: u64 = 0;

/// What the fake worker does with the blocks it sends, and what it was asked for.
#[derive(Default)]
struct Behaviour {
    tamper: bool,
    /// The first block index of every proof request, in order.
    requested_from: Vec<u64>,
}

/// Links to `gateway` as the worker of seed `seed`, registers `relay`, and answers proof
/// requests for `log` as `behaviour` says.
async fn link_worker(
    gateway: &GatewayHandle,
    seed: u8,
    relay: RelayKey,
    log: Arc<tokio::sync::Mutex<HyperLog>>,
    behaviour: Arc<Mutex<Behaviour>>,
) -> PeerLink {
    let stream = tokio::net::TcpStream::connect(gateway.peer_addr)
        .await
        .unwrap();
    let established = link_connect(
        stream.compat(),
        &identity(seed),
        gateway.peer_id,
        &LinkConfig::default(),
        tokio::time::sleep,
    )
    .await
    .unwrap();
    tokio::spawn(established.driver.run());
    let link = established.link;
    let inbound = established.inbound;
    let answering = link.clone();
    tokio::spawn(async move {
        while let Some(frame) = inbound.recv().await {
            let Message::MirrorProofRequest(request) = frame.message else {
                continue; // this worker serves nothing else
            };
            let first = request.blocks.first().map_or(0, |block| block.0);
            let tamper = {
                let mut behaviour = behaviour.lock().unwrap();
                behaviour.requested_from.push(first);
                behaviour.tamper
            };
            let mut answer = answer_proof_request(&mut *log.lock().await, &request)
                .await
                .unwrap();
            if tamper {
                let flipped: Vec<MirrorBlock> = answer
                    .blocks
                    .iter()
                    .map(|block| {
                        let mut bytes = block.to_vec();
                        bytes[0] ^= 0x01;
                        MirrorBlock::new(bytes).unwrap()
                    })
                    .collect();
                answer.blocks = BoundedVec::new(flipped).unwrap();
            }
            let reply = Frame::new(frame.request_id, Message::MirrorRangeResponse(answer));
            if answering.send(reply).await.is_err() {
                return;
            }
        }
    });
    let registration = RelayRegistration {
        relay_key: relay,
        identifiers: BoundedVec::new(vec![BoundedString::new("npub1drill:mirror").unwrap()])
            .unwrap(),
        metadata: Default::default(),
        requires_auth: false,
        escrow: None,
    };
    let ack = link
        .request(Message::RegisterRelays(RegisterRelays {
            relays: BoundedVec::new(vec![registration]).unwrap(),
        }))
        .await
        .unwrap();
    assert!(matches!(ack, Message::RegisterAck(_)), "{ack:?}");
    link
}

/// Offers the gateway `log` as `relay`'s writer core at its current length.
async fn advertise(link: &PeerLink, relay: RelayKey, log: &tokio::sync::Mutex<HyperLog>) {
    let log = log.lock().await;
    let advert = CoreAdvert {
        core_key: log.public_key().to_bytes(),
        relay_key: relay,
        role: CoreRole::Writer,
        length: log.len(),
        announce: false,
        priority: 0,
    };
    let message = Message::MirrorAdvertise(MirrorAdvertise {
        cores: BoundedVec::new(vec![advert]).unwrap(),
    });
    link.send(Frame::new(UNSOLICITED, message)).await.unwrap();
}

/// The mirrored length of `relay`'s writer core (0 before it is known).
async fn writer_length(gateway: &GatewayHandle, relay: &str) -> u64 {
    mirrored_cores(gateway.http_addr, relay)
        .await
        .iter()
        .find(|(kind, _, _)| kind == "writer")
        .map_or(0, |(_, length, _)| *length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_mirror_blocks_are_rejected_and_the_mirror_resumes_from_the_last_verified_one() {
    let data = tempfile::tempdir().unwrap();
    let gateway = start_gateway(data.path(), None).await;
    let relay = RelayKey([0x5a; 32]);
    let relay_hex = relay.to_hex();
    let log_dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x77; 32]);
    let mut writer = HyperLog::create(&log_dir.path().join("writer"), Some(key))
        .await
        .unwrap();
    for i in 0..4 {
        writer
            .append(format!("block {i}").as_bytes())
            .await
            .unwrap();
    }
    let log = Arc::new(tokio::sync::Mutex::new(writer));
    let behaviour = Arc::new(Mutex::new(Behaviour::default()));
    let link = link_worker(
        &gateway,
        0x74,
        relay,
        Arc::clone(&log),
        Arc::clone(&behaviour),
    )
    .await;

    // Honest: the first four blocks are mirrored.
    advertise(&link, relay, &log).await;
    let mirrored = eventually(PATIENCE, async || {
        writer_length(&gateway, &relay_hex).await == 4
    })
    .await;
    assert!(mirrored, "the honest blocks were never mirrored");
    let (verified, rejected) = counters(&gateway).await;
    println!("honest phase: verified {verified}, rejected {rejected}");

    // Tampered: four more blocks, every one flipped on the way.
    for i in 4..8 {
        log.lock()
            .await
            .append(format!("block {i}").as_bytes())
            .await
            .unwrap();
    }
    behaviour.lock().unwrap().tamper = true;
    let asked_before = behaviour.lock().unwrap().requested_from.len();
    advertise(&link, relay, &log).await;
    let counted = eventually(PATIENCE, async || counters(&gateway).await.1 > rejected).await;
    assert!(counted, "tampered blocks were not counted as rejected");
    let (_, rejected_after) = counters(&gateway).await;
    assert_eq!(
        writer_length(&gateway, &relay_hex).await,
        4,
        "the mirror advanced past the last verified block on tampered blocks"
    );
    let asked = behaviour.lock().unwrap().requested_from[asked_before..].to_vec();
    assert_eq!(
        asked.first(),
        Some(&4),
        "the mirror did not ask from block 4: {asked:?}"
    );
    println!("tampered phase: rejected {rejected} -> {rejected_after}, requests from {asked:?}");

    // Honest again: the mirror resumes from block 4 and catches up.
    behaviour.lock().unwrap().tamper = false;
    let asked_before = behaviour.lock().unwrap().requested_from.len();
    let resumed = Instant::now();
    advertise(&link, relay, &log).await;
    let caught_up = eventually(PATIENCE, async || {
        writer_length(&gateway, &relay_hex).await == 8
    })
    .await;
    assert!(caught_up, "the mirror never caught up after honest answers");
    let asked = behaviour.lock().unwrap().requested_from[asked_before..].to_vec();
    assert_eq!(
        asked.first(),
        Some(&4),
        "the mirror did not resume from block 4: {asked:?}"
    );
    let (verified_end, rejected_end) = counters(&gateway).await;
    println!(
        "recovered in {:?}: verified {verified} -> {verified_end}, rejected {rejected_end}, \
         requests from {asked:?}",
        resumed.elapsed()
    );
    assert_eq!(rejected_end, rejected_after, "honest blocks were rejected");
}

/// `(verified, rejected)` block counters of the gateway's mirror.
async fn counters(gateway: &GatewayHandle) -> (f64, f64) {
    (
        metric(
            gateway.http_addr,
            "gateway_blind_peer_verified_blocks_total",
            &[],
        )
        .await,
        metric(
            gateway.http_addr,
            "gateway_blind_peer_rejected_blocks_total",
            &[],
        )
        .await,
    )
}
