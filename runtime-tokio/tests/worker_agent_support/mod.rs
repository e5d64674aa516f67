//! A minimal in-test gateway for the worker agent tests: real TCP, the real peer link
//! (`accept`), the core `Gateway` for registration and health, a real `MirrorStore` that pulls
//! advertised cores with `MirrorProofRequest`s, and gateway writer logs it appends to under a
//! leased key (answering the worker's range and proof requests for them).

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::log::HyperLog;
use hypergate_adapters::mirror::{CoreAnnouncement, CoreKey, MirrorConfig, MirrorStore};
use hypergate_adapters::peer_link::{AcceptPolicy, BackoffConfig, LinkConfig, PeerLink, accept};
use hypergate_core::gateway::{Gateway, GatewayConfig};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedString, CoreAdvert, Frame, MAX_MIRROR_BLOCKS_PER_RANGE, Message, NostrFrame, ResyncAck,
    ResyncComplete, ResyncStatus,
};
use hypergate_core::worker::WorkerConfig;
use hypergate_tokio::worker_agent::{
    self, EscrowSettings, WorkerAgentConfig, WorkerAgentHandle, answer_proof_request, answer_range,
    decode_mirror_response, proof_request,
};
use tokio::sync::{Mutex, mpsc};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

pub(crate) fn sleeper(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

pub(crate) fn unix_now() -> UnixTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    UnixTime(u64::try_from(ms).unwrap())
}

pub(crate) fn link_config() -> LinkConfig {
    LinkConfig::default()
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_dead_after(Duration::from_secs(5))
}

pub(crate) struct GatewayState {
    pub(crate) core: Gateway,
    pub(crate) mirror: MirrorStore,
    pub(crate) links: BTreeMap<PeerId, PeerLink>,
    /// Gateway writer logs, by key.
    pub(crate) writers: BTreeMap<[u8; 32], HyperLog>,
    pub(crate) resyncs: Vec<ResyncComplete>,
    pub(crate) pulling: BTreeSet<[u8; 32]>,
    /// When set, a core is pulled only while the mirror holds fewer blocks than this (0: no
    /// pulls): lets a test stop the mirror after one response, mid-backlog.
    pub(crate) hold_at: Option<u64>,
    /// Forwarded NIP-01 sessions opened with [`TestGateway::forward_session`]: where the
    /// worker's `NostrFrame`s for each go.
    pub(crate) forwarded: BTreeMap<(RelayKey, u64), mpsc::UnboundedSender<String>>,
}

pub(crate) struct TestGateway {
    pub(crate) peer: PeerId,
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<Mutex<GatewayState>>,
    pub(crate) dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestGateway {
    pub(crate) async fn start(identity: Identity) -> Self {
        // `RUST_LOG=…` shows the agent's logs when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mirror = MirrorStore::open(&dir.path().join("mirror"), MirrorConfig::default())
            .await
            .unwrap();
        let state = Arc::new(Mutex::new(GatewayState {
            core: Gateway::new(GatewayConfig::default(), Instant::now(), unix_now()),
            mirror,
            links: BTreeMap::new(),
            writers: BTreeMap::new(),
            resyncs: Vec::new(),
            pulling: BTreeSet::new(),
            hold_at: None,
            forwarded: BTreeMap::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = identity.peer_id();
        let identity = Arc::new(identity);
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let identity = Arc::clone(&identity);
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let Ok(established) = accept(
                        stream.compat(),
                        &identity,
                        &AcceptPolicy::Open,
                        &link_config(),
                        sleeper,
                    )
                    .await
                    else {
                        return;
                    };
                    tokio::spawn(established.driver.run());
                    serve_link(state, established.link, established.inbound).await;
                });
            }
        });
        Self {
            peer,
            addr,
            state,
            dir,
            task,
        }
    }

    /// A client session forwarded to `worker` for `relay` under id `session`, as the gateway
    /// would: frames go out one-way with request id 0, the worker's frames for it are
    /// collected. Needs the link to be up.
    pub(crate) async fn forward_session(
        &self,
        worker: PeerId,
        relay: RelayKey,
        session: u64,
    ) -> ForwardedClient {
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let mut state = self.state.lock().await;
        state.forwarded.insert((relay, session), frames_tx);
        let link = state.links.get(&worker).cloned().unwrap();
        ForwardedClient {
            link,
            relay,
            session,
            frames,
        }
    }

    /// The link to `worker`, once it is up.
    pub(crate) async fn link(&self, worker: PeerId) -> Option<PeerLink> {
        self.state.lock().await.links.get(&worker).cloned()
    }
}

async fn serve_link(
    state: Arc<Mutex<GatewayState>>,
    link: PeerLink,
    inbound: hypergate_adapters::peer_link::Inbound,
) {
    let peer = link.remote();
    {
        let mut gateway = state.lock().await;
        gateway.links.insert(peer, link.clone());
        gateway.core.handle_link_up(peer, Instant::now());
    }
    while let Some(frame) = inbound.recv().await {
        let id = frame.request_id;
        match frame.message {
            Message::MirrorAdvertise(advert) => {
                let mut gateway = state.lock().await;
                for core in advert.cores.iter() {
                    register(&mut gateway, core, peer).await;
                }
                gateway.core.handle_frame(
                    peer,
                    Frame::new(id, Message::MirrorAdvertise(advert.clone())),
                    Instant::now(),
                );
                drop(gateway);
                for core in advert.cores.iter() {
                    tokio::spawn(pull(Arc::clone(&state), link.clone(), core.clone()));
                }
            }
            Message::MirrorRangeRequest(request) => {
                let mut gateway = state.lock().await;
                let answer = match gateway.writers.get_mut(request.core_key()) {
                    Some(log) => {
                        Message::MirrorRangeResponse(answer_range(log, &request).await.unwrap())
                    }
                    None => panic!("the worker asked for a core the gateway does not write"),
                };
                let _ = link.send(Frame::new(id, answer)).await;
            }
            Message::MirrorProofRequest(request) => {
                let mut gateway = state.lock().await;
                let answer = match gateway.writers.get_mut(&request.core_key) {
                    Some(log) => Message::MirrorRangeResponse(
                        answer_proof_request(log, &request).await.unwrap(),
                    ),
                    None => panic!("the worker asked for a core the gateway does not write"),
                };
                let _ = link.send(Frame::new(id, answer)).await;
            }
            Message::NostrFrame(forwarded) => {
                let gateway = state.lock().await;
                if let Some(client) = gateway
                    .forwarded
                    .get(&(forwarded.relay_key, forwarded.session))
                {
                    let _ = client.send(forwarded.frame.into_inner());
                }
            }
            Message::ResyncComplete(done) => {
                let mut gateway = state.lock().await;
                gateway.resyncs.push(done.clone());
                let ack = ResyncAck {
                    relay_key: done.relay_key,
                    resynced_through: done.resynced_through,
                    status: ResyncStatus::Cleared,
                };
                let _ = link.send(Frame::new(id, Message::ResyncAck(ack))).await;
            }
            message => {
                let mut gateway = state.lock().await;
                gateway
                    .core
                    .handle_frame(peer, Frame::new(id, message), Instant::now());
                let mut transmits = Vec::new();
                while let Some(transmit) = gateway.core.poll_transmit() {
                    transmits.push(transmit);
                }
                while gateway.core.poll_event().is_some() {}
                for transmit in transmits {
                    if let Some(link) = gateway.links.get(&transmit.peer) {
                        let _ = link.send(transmit.frame).await;
                    }
                }
            }
        }
    }
    let mut gateway = state.lock().await;
    // Only if this was still the peer's link: a worker that reconnected before this one was seen
    // to end already has a newer link here, which must stay up.
    if gateway
        .links
        .get(&peer)
        .is_none_or(|current| current.closed().is_some())
    {
        gateway.links.remove(&peer);
        gateway.core.handle_link_down(peer, Instant::now());
    }
}

async fn register(gateway: &mut GatewayState, core: &CoreAdvert, owner: PeerId) {
    let announcement = CoreAnnouncement::from_advert(core, owner);
    let key = announcement.core_key;
    let _ = gateway
        .mirror
        .register_core(announcement, unix_now())
        .await
        .unwrap();
    gateway
        .mirror
        .advertise(&key, core.length, unix_now())
        .unwrap();
}

/// Pulls one core up to the advertised length, from where the mirror stands.
async fn pull(state: Arc<Mutex<GatewayState>>, link: PeerLink, core: CoreAdvert) {
    let key = CoreKey(core.core_key);
    {
        let mut gateway = state.lock().await;
        if !gateway.pulling.insert(core.core_key) {
            tracing::debug!(core = %hex::encode(&core.core_key[..4]), "test gateway: already pulling");
            return;
        }
    }
    loop {
        let (start, hold_at) = {
            let gateway = state.lock().await;
            (gateway.mirror.len(&key).unwrap(), gateway.hold_at)
        };
        if start >= core.length || hold_at.is_some_and(|hold| start >= hold) {
            break;
        }
        // What the mirror holds (signed length, nodes per block), so the answer verifies even
        // if an earlier batch was cut short.
        let request = {
            let mut gateway = state.lock().await;
            let end = core.length.min(start + MAX_MIRROR_BLOCKS_PER_RANGE as u64);
            let range = gateway
                .mirror
                .request_range(&key, start..end)
                .await
                .unwrap();
            proof_request(core.core_key, range).unwrap()
        };
        let answer = link.request(Message::MirrorProofRequest(request)).await;
        tracing::debug!(core = %hex::encode(&core.core_key[..4]), start, answer = ?answer.as_ref().err(), "test gateway: pull answered");
        let Ok(Message::MirrorRangeResponse(response)) = answer else {
            break; // the link ended: the next advertisement resumes
        };
        let proofs = decode_mirror_response(&response).unwrap();
        if proofs.is_empty() {
            break;
        }
        let mut gateway = state.lock().await;
        let outcome = gateway
            .mirror
            .store_blocks(&key, &proofs, unix_now())
            .await
            .unwrap();
        let length = outcome.local_length;
        gateway
            .core
            .handle_mirror_stored(core.relay_key, core.core_key, length, Instant::now());
    }
    tracing::debug!(core = %hex::encode(&core.core_key[..4]), "test gateway: pull ends");
    state.lock().await.pulling.remove(&core.core_key);
}

/// A worker agent's configuration against `gateway`.
pub(crate) fn agent_config(
    identity: Identity,
    data_dir: &std::path::Path,
    gateway: &TestGateway,
    escrow: Option<EscrowSettings>,
) -> WorkerAgentConfig {
    WorkerAgentConfig {
        identity,
        data_dir: data_dir.to_path_buf(),
        gateway_addr: gateway.addr.to_string(),
        gateway_key: gateway.peer,
        escrow,
        link: link_config(),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            ..BackoffConfig::default()
        },
        worker: WorkerConfig {
            step_retry_base: Duration::from_millis(100),
            step_retry_max: Duration::from_secs(1),
            ..WorkerConfig::default()
        },
        seed: 7,
        advertise_interval: Duration::from_millis(300),
    }
}

pub(crate) fn identity(seed: u8) -> Identity {
    Identity::from_signing_key(SigningKey::from_bytes(&[seed; 32]))
}

pub(crate) async fn start_worker(config: WorkerAgentConfig) -> WorkerAgentHandle {
    worker_agent::start(config).await.unwrap()
}

/// Polls `check` every 50 ms until it is true or `limit` passes (no timing is asserted).
pub(crate) async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn relay_of(status: &worker_agent::WorkerStatus) -> RelayKey {
    status.relays[0].relay_key.parse().unwrap()
}

/// One client session the test gateway forwards to a worker.
pub(crate) struct ForwardedClient {
    pub(crate) link: PeerLink,
    pub(crate) relay: RelayKey,
    pub(crate) session: u64,
    frames: mpsc::UnboundedReceiver<String>,
}

impl ForwardedClient {
    /// Forwards one client frame (an empty `text` ends the session).
    pub(crate) async fn send(&self, text: &str) {
        let frame = NostrFrame {
            relay_key: self.relay,
            session: self.session,
            frame: BoundedString::new(text).unwrap(),
        };
        self.link
            .send(Frame::new(0, Message::NostrFrame(frame)))
            .await
            .unwrap();
    }

    /// Tells the worker the client went away.
    pub(crate) async fn end(&self) {
        self.send("").await;
    }

    /// The worker's next frame for this session (`""`: the worker ended it); `None` if
    /// nothing came within `patience`.
    pub(crate) async fn next(&mut self, patience: Duration) -> Option<String> {
        tokio::time::timeout(patience, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// A frame that has already arrived, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<String> {
        self.frames.try_recv().ok()
    }
}
