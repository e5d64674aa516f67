//! `hypergate gateway`: the public front door on tokio and axum.
//!
//! Contract:
//! - Workers connect to the peer-link listener ([`links`]), register their relays and mirror
//!   their logs into the gateway's blind-peer store under `<data>/mirror`.
//! - Clients connect over WebSocket ([`http`], [`clients`]): forwarded to a worker of the
//!   relay while one is reachable, served from the mirror ([`replica`]) when none is, and
//!   moved back when one returns.
//! - Writes while no worker is reachable need a lease of the relay's gateway writer key from
//!   the escrow ([`escrow_link`]); the key is held in memory only.
//! - The core [`Gateway`] decides everything; [`state`] is the one place it is driven, and a
//!   timer task fires its deadlines.
//! - The registry (relays, their workers, pending writes, lease epochs) is persisted to
//!   `<data>/registry.snapshot` after every change, and synchronously before a gateway write
//!   is acknowledged; a restart resumes from it (pending notices are pushed again).
//! - [`GatewayHandle::shutdown`] ends leases (wiping their keys), stops the listeners and
//!   waits for the tasks.

mod artifacts;
pub mod cli;
mod clients;
pub mod ctl;
mod drive;
mod escrow_link;
mod http;
mod link_queue;
mod links;
mod metrics;
mod operator;
mod replica;
mod state;
mod tokens;
mod websocket;
mod write_batch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use hypergate_adapters::clock::{Clock, SystemClock};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::drive::GatewayDrives;
use hypergate_adapters::mirror::{MirrorConfig, MirrorStore};
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig};
use hypergate_core::gateway::{Gateway, GatewayConfig};
use hypergate_core::ids::PeerId;
use hypergate_core::registry::Registry;
use hypergate_core::session::SessionConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::escrow::{EscrowClient, EscrowClientConfig};

/// How to run a gateway.
#[derive(Debug)]
pub struct GatewayOptions {
    /// Where the identity, mirror and replica indexes live.
    pub data_dir: PathBuf,
    /// The gateway's identity (workers pin its public key).
    pub identity: Identity,
    /// Where clients and operators connect (HTTP and WebSocket).
    pub http_listen: SocketAddr,
    /// Where workers connect (peer link).
    pub peer_listen: SocketAddr,
    /// Which workers may link.
    pub accept: AcceptPolicy,
    /// Peer-link heartbeats and bounds.
    pub link: LinkConfig,
    /// The core's tuning (liveness, routing, leases, pushes).
    pub core: GatewayConfig,
    /// Per-connection NIP-01 limits.
    pub session: SessionConfig,
    /// Frames queued per client before it counts as too slow and is disconnected.
    pub outbound_queue: usize,
    /// Per-address and per-connection client limits.
    pub limits: ClientLimits,
    /// The escrow to request leases from; `None`: read-only while workers are away.
    pub escrow: Option<EscrowClientConfig>,
    /// Operator credentials at the escrow, for `POST /api/relays/:relayKey/escrow/revoke`
    /// (the escrow lets only operators and owners revoke); `None`: that route answers 503.
    pub escrow_operator: Option<EscrowClientConfig>,
    /// The bearer token the `/api/` routes require; `None` leaves them open (loopback use).
    pub admin_token: Option<String>,
    /// The secret client tokens (`PUT /drive`, join, auth callbacks) are signed with.
    pub token_secret: Zeroizing<Vec<u8>>,
}

/// Limits that keep one client (or one address) from crowding out the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Open WebSocket connections per client IP address (more are closed with 1008).
    pub connections_per_ip: usize,
    /// Sustained frames per second per connection (more get `rate-limited:` answers).
    pub frames_per_second: u32,
    /// Burst of frames above the sustained rate.
    pub frame_burst: u32,
}

impl Default for ClientLimits {
    /// 256 connections per address, 200 frames/s with a burst of 400.
    fn default() -> Self {
        ClientLimits {
            connections_per_ip: 256,
            frames_per_second: 200,
            frame_burst: 400,
        }
    }
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where clients connect.
    pub http_addr: SocketAddr,
    /// Where workers connect.
    pub peer_addr: SocketAddr,
    /// The gateway's identity, to pin in workers.
    pub peer_id: PeerId,
    shared: Arc<state::Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("http_addr", &self.http_addr)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// Ends every lease (their keys are wiped), stops serving and waits for the tasks.
    pub async fn shutdown(mut self) {
        self.shared
            .with_core(|state, now| state.core.handle_shutdown(now));
        self.shared.vault.wipe_all();
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts a gateway: opens the mirror, binds both listeners and spawns the tasks.
pub async fn start(options: GatewayOptions) -> anyhow::Result<GatewayHandle> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let mirror = MirrorStore::open(&options.data_dir.join("mirror"), MirrorConfig::default())
        .await
        .context("opening the mirror store")?;
    let operator = match options.escrow_operator {
        Some(config) => Some(
            EscrowClient::new(config, crate::tokio_spawner()).context("escrow operator client")?,
        ),
        None => None,
    };
    let escrow = match options.escrow {
        Some(config) => Some(escrow_link::EscrowLink::new(
            EscrowClient::new(config, crate::tokio_spawner()).context("escrow client")?,
            operator,
        )),
        None => None,
    };
    let clock = SystemClock;
    // Relays, workers and pending writes survive a restart: resume from the last snapshot.
    let snapshot_path = options.data_dir.join("registry.snapshot");
    let core = match std::fs::read(&snapshot_path) {
        Ok(bytes) => {
            let registry = Registry::restore_bytes(&bytes).with_context(|| {
                format!(
                    "{} does not restore (move it aside to start with an empty registry; \
                     pending writes recorded in it would be forgotten)",
                    snapshot_path.display()
                )
            })?;
            tracing::info!(relays = registry.len(), "registry restored");
            Gateway::with_registry(options.core, registry, clock.now(), clock.unix_now())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Gateway::new(options.core, clock.now(), clock.unix_now())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", snapshot_path.display()));
        }
    };
    let mut core = core;
    // Mirrors kept from the last run serve their relays until a worker returns.
    for record in mirror.cores() {
        // A removed writer counts only up to its final length.
        core.handle_mirror_found_at_start(
            record.relay,
            record.core_key.0,
            record.local_length,
            record.target_length(),
            clock.now(),
        );
    }
    let peer_id = options.identity.peer_id();
    let shared = state::Shared::new(
        core,
        options.identity,
        mirror,
        options.data_dir.join("replica-index"),
        escrow,
        metrics::GatewayMetrics::new(),
        GatewayDrives::open(&options.data_dir).context("opening the gateway drives")?,
        tokens::TokenKeys::new(options.token_secret),
        snapshot_path,
        crate::tokio_spawner(),
    );

    let peer_listener = TcpListener::bind(options.peer_listen)
        .await
        .with_context(|| format!("binding the peer-link listener {}", options.peer_listen))?;
    let http_listener = TcpListener::bind(options.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", options.http_listen))?;
    let peer_addr = peer_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(links::serve(
        Arc::clone(&shared),
        peer_listener,
        Arc::new(options.accept),
        options.link,
        shutdown_rx.clone(),
    ));
    tasks.spawn(run_timer(Arc::clone(&shared), shutdown_rx.clone()));
    tasks.spawn(run_persister(Arc::clone(&shared), shutdown_rx.clone()));
    let http_state = Arc::new(http::HttpState {
        shared: Arc::clone(&shared),
        client: clients::ClientConfig {
            session: options.session,
            outbound_queue: options.outbound_queue,
            frames_per_second: options.limits.frames_per_second,
            frame_burst: options.limits.frame_burst,
        },
        per_ip: Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new())),
        max_connections_per_ip: options.limits.connections_per_ip,
        admin_token: options.admin_token,
        shutdown: shutdown_rx.clone(),
    });
    let app = http::routes()
        .merge(websocket::relay_routes())
        .with_state(http_state);
    let mut http_shutdown = shutdown_rx;
    tasks.spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        // Small NIP-01 frames must leave at once: with Nagle's algorithm every frame after the
        // first of an answer waited for the client's delayed ACK (~40 ms per REQ, measured).
        let http_listener = http_listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set on a client connection");
            }
        });
        let serving = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = http_shutdown.changed().await;
        });
        if let Err(error) = serving.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok(GatewayHandle {
        http_addr,
        peer_addr,
        peer_id,
        shared,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Persists the registry after it changed (coalescing bursts), and once more at shutdown.
async fn run_persister(shared: Arc<state::Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            () = shared.registry_changed.notified() => false,
            _ = shutdown.changed() => true,
        };
        if let Err(error) = shared.persist_registry().await {
            tracing::error!(%error, "the registry snapshot could not be written");
        }
        if stop {
            return;
        }
    }
}

/// Fires the core's deadlines: sleeps until `poll_timeout`, re-armed after every input.
async fn run_timer(shared: Arc<state::Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let deadline = shared.read_core(|state| state.core.poll_timeout());
        let sleep = async {
            match deadline {
                Some((at, _reason)) => hypergate_adapters::rt::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                shared.with_core(|state, now| state.core.handle_timeout(now));
            }
            () = shared.timer.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
