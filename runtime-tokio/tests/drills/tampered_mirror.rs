//! Drill: a worker sends the gateway's mirror tampered blocks, or pauses its stream.
//!
//! Injected: a worker speaking the real peer link (Noise XX, postcard frames) registers a
//! relay and advertises a writer core it holds in a real `HyperLog`; it answers the gateway's
//! `MirrorProofRequest`s with the log's real proofs, except that while tampering it flips the
//! first byte of every block it sends; stalled, it answers seconds late; dropping, never.
//!
//! Promised: tampered blocks are rejected and counted
//! (`gateway_blind_peer_rejected_blocks_total`), the mirrored core does not advance past the
//! last verified block (`/api/blind-peer/replicas`), and once the worker answers honestly the
//! mirror resumes from that block (its next request starts there) and catches up. A paused
//! stream — a worker that answers late, or drops a request and answers the next ones — holds
//! the mirror back only while the pause lasts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How the fake worker answers proof requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Answers {
    /// The log's real proofs.
    #[default]
    Honest,
    /// The real proofs with the first byte of every block flipped.
    Tampered,
    /// Honest, but only after this pause (a stalled worker).
    Late(Duration),
    /// Never (a worker that lost the request).
    Dropped,
}

/// What the fake worker does, and what it was asked for.
#[derive(Default)]
struct Behaviour {
    answers: Answers,
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
            let answers = {
                let mut behaviour = behaviour.lock().unwrap();
                behaviour.requested_from.push(first);
                behaviour.answers
            };
            let pause = match answers {
                Answers::Dropped => continue,
                Answers::Late(pause) => pause,
                Answers::Honest | Answers::Tampered => Duration::ZERO,
            };
            let mut answer = answer_proof_request(&mut *log.lock().await, &request)
                .await
                .unwrap();
            if answers == Answers::Tampered {
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
            let answering = answering.clone();
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let _ = answering.send(reply).await;
            });
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

/// A gateway mirroring the writer core of a fake worker's relay: four honest blocks mirrored.
struct Mirrored {
    gateway: GatewayHandle,
    relay: RelayKey,
    relay_hex: String,
    log: Arc<tokio::sync::Mutex<HyperLog>>,
    behaviour: Arc<Mutex<Behaviour>>,
    link: PeerLink,
    // Last: fields drop in order, and the gateway writes to its directory until it is dropped.
    _log_dir: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Mirrored {
    async fn start() -> Mirrored {
        let data = tempfile::tempdir().unwrap();
        let gateway = start_gateway(data.path(), None).await;
        let relay = RelayKey([0x5a; 32]);
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
        let mirrored = Mirrored {
            _data: data,
            _log_dir: log_dir,
            relay_hex: relay.to_hex(),
            gateway,
            relay,
            log,
            behaviour,
            link,
        };
        advertise(&mirrored.link, relay, &mirrored.log).await;
        let honest = eventually(PATIENCE, async || mirrored.length().await == 4).await;
        assert!(honest, "the honest blocks were never mirrored");
        mirrored
    }

    async fn length(&self) -> u64 {
        writer_length(&self.gateway, &self.relay_hex).await
    }

    /// Appends four blocks, sets how they will be answered, and advertises the new length;
    /// how many proof requests had been made before.
    async fn offer_four_more(&self, answers: Answers) -> usize {
        let mut log = self.log.lock().await;
        let first = log.len();
        for i in first..first + 4 {
            log.append(format!("block {i}").as_bytes()).await.unwrap();
        }
        drop(log);
        self.answer(answers)
    }

    /// Sets how requests are answered; how many had been made before.
    fn answer(&self, answers: Answers) -> usize {
        let mut behaviour = self.behaviour.lock().unwrap();
        behaviour.answers = answers;
        behaviour.requested_from.len()
    }

    fn requests_since(&self, count: usize) -> Vec<u64> {
        self.behaviour.lock().unwrap().requested_from[count..].to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_mirror_blocks_are_rejected_and_the_mirror_resumes_from_the_last_verified_one() {
    let mirror = Mirrored::start().await;
    let gateway = &mirror.gateway;
    let (verified, rejected) = counters(gateway).await;
    println!("honest phase: verified {verified}, rejected {rejected}");

    // Tampered: four more blocks, every one flipped on the way.
    let asked_before = mirror.offer_four_more(Answers::Tampered).await;
    advertise(&mirror.link, mirror.relay, &mirror.log).await;
    let counted = eventually(PATIENCE, async || counters(gateway).await.1 > rejected).await;
    assert!(counted, "tampered blocks were not counted as rejected");
    let (_, rejected_after) = counters(gateway).await;
    assert_eq!(
        mirror.length().await,
        4,
        "the mirror advanced past the last verified block on tampered blocks"
    );
    let asked = mirror.requests_since(asked_before);
    assert_eq!(
        asked.first(),
        Some(&4),
        "the mirror did not ask from block 4: {asked:?}"
    );
    println!("tampered phase: rejected {rejected} -> {rejected_after}, requests from {asked:?}");

    // Honest again: the mirror resumes from block 4 and catches up.
    let asked_before = mirror.answer(Answers::Honest);
    let resumed = Instant::now();
    advertise(&mirror.link, mirror.relay, &mirror.log).await;
    let caught_up = eventually(PATIENCE, async || mirror.length().await == 8).await;
    assert!(caught_up, "the mirror never caught up after honest answers");
    let asked = mirror.requests_since(asked_before);
    assert_eq!(
        asked.first(),
        Some(&4),
        "the mirror did not resume from block 4: {asked:?}"
    );
    let (verified_end, rejected_end) = counters(gateway).await;
    println!(
        "recovered in {:?}: verified {verified} -> {verified_end}, rejected {rejected_end}, \
         requests from {asked:?}",
        resumed.elapsed()
    );
    assert_eq!(rejected_end, rejected_after, "honest blocks were rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_holds_the_mirror_back_only_until_its_answers_come() {
    let mirror = Mirrored::start().await;
    let stall = Duration::from_secs(2);
    mirror.offer_four_more(Answers::Late(stall)).await;
    let offered = Instant::now();
    advertise(&mirror.link, mirror.relay, &mirror.log).await;
    tokio::time::sleep(stall / 2).await;
    let during = mirror.length().await;
    let caught_up = eventually(PATIENCE, async || mirror.length().await == 8).await;
    assert!(
        caught_up,
        "the mirror never caught up with a stalled worker"
    );
    println!(
        "stalled {stall:?}: length {during} halfway through the stall, 8 after {:?}",
        offered.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_drops_a_proof_request_does_not_stall_its_mirror_for_good() {
    let mirror = Mirrored::start().await;
    let asked_before = mirror.offer_four_more(Answers::Dropped).await;
    advertise(&mirror.link, mirror.relay, &mirror.log).await;
    let asked = eventually(PATIENCE, async || {
        !mirror.requests_since(asked_before).is_empty()
    })
    .await;
    assert!(asked, "the gateway never asked for the new blocks");
    // The worker answers again and advertises anew: the mirror must catch up.
    let asked_before = mirror.answer(Answers::Honest);
    advertise(&mirror.link, mirror.relay, &mirror.log).await;
    let caught_up = eventually(PATIENCE, async || mirror.length().await == 8).await;
    println!(
        "after a dropped request: length {}, requests since {:?}",
        mirror.length().await,
        mirror.requests_since(asked_before)
    );
    assert!(
        caught_up,
        "the mirror is stuck behind a request the worker dropped"
    );
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
