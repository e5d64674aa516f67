//! One gateway, whatever runs it: opening its state, the background work, client sessions
//! and worker links, and shutdown. A driver (tokio, glommio) only owns sockets and tasks.
//!
//! Contract:
//! - [`GatewayService::open`] creates the data directory, opens the mirror, restores the
//!   registry snapshot (an unreadable snapshot stops the start, naming the file: pending
//!   writes recorded in it must not be silently forgotten) into the core's partitions (one
//!   per relay partition, whatever partition count wrote the snapshot), replays the mirror
//!   inventory into them, and opens the drives. It binds nothing and starts no task.
//! - The driver then runs [`GatewayService::run_background`] once (every partition's timers
//!   and the registry persister; a thread-per-core driver runs each partition's
//!   [`GatewayService::run_timers_of`] on its own shard and [`GatewayService::run_persister`]
//!   once instead), serves HTTP with [`GatewayService::routes`] plus its own handling
//!   of the relay URLs ([`GatewayService::admit_websocket`],
//!   [`GatewayService::serve_client`], [`GatewayService::relay_page`]), and hands every
//!   worker link it accepts to [`GatewayService::serve_link`].
//! - [`GatewayService::shutdown`] ends every lease (wiping its key), tells every session and
//!   the background work to stop, and persists the registry one last time.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::{Sink, Stream};
use hypergate_core::gateway::{Gateway, GatewayConfig};
use hypergate_core::ids::PeerId;
use hypergate_core::partition::Partitioning;
use hypergate_core::registry::{Registry, RegistrySnapshot};
use hypergate_core::session::SessionConfig;
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::clients::{self, ClientConfig, FromClient, ToClient};
use super::escrow_link::EscrowLink;
use super::http::{self, Access, HttpState, IpSlot};
use super::links::{self, Pulling};
use super::metrics::GatewayMetrics;
use super::state::Shared;
use super::tokens::TokenKeys;
use crate::clock::{Clock, SystemClock};
use crate::crypto::Identity;
use crate::drive::GatewayDrives;
use crate::escrow_client::{EscrowClient, EscrowClientConfig};
use crate::mirror::{MirrorConfig, MirrorStore};
use crate::peer_link::{AcceptPolicy, Inbound, LinkConfig, PeerLink};
use crate::rt::Spawner;

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

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A file or directory of the gateway could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The registry snapshot does not restore.
    #[error(
        "{path} does not restore (move it aside to start with an empty registry; pending \
         writes recorded in it would be forgotten): {detail}"
    )]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The mirror store or the drives did not open.
    #[error("{what}: {detail}")]
    Storage {
        /// Which store.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// An escrow client's settings are unusable.
    #[error("{what}: {detail}")]
    Escrow {
        /// Which client.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// A gateway's state and behaviour, driven by a runtime (see the module docs).
pub struct GatewayService {
    shared: Arc<Shared>,
    http: Arc<HttpState>,
    shutdown: watch::Sender<bool>,
    accept: AcceptPolicy,
    link: LinkConfig,
    pulling: Arc<Pulling>,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService")
            .field("peer_id", &self.shared.peer_id().short())
            .finish_non_exhaustive()
    }
}

/// A WebSocket admitted (or about to be refused) by [`GatewayService::admit_websocket`]; it
/// holds the connection's place among its address's connections until dropped.
pub struct ClientAdmission {
    relay_name: String,
    access: Access,
    slot: Option<IpSlot>,
}

impl GatewayService {
    /// Opens the gateway's state (see the module docs), its core split by relay into
    /// `partitions` (`hypergate_core::partition`: one for the tokio driver, one per shard for
    /// glommio); `spawner` starts its tasks.
    pub async fn open(
        options: GatewayOptions,
        partitions: Partitioning,
        spawner: Spawner,
    ) -> Result<Self, StartError> {
        let io = |what: String| move |source| StartError::Io { what, source };
        std::fs::create_dir_all(&options.data_dir)
            .map_err(io(format!("creating {}", options.data_dir.display())))?;
        let mirror = MirrorStore::open(&options.data_dir.join("mirror"), MirrorConfig::default())
            .await
            .map_err(|error| StartError::Storage {
                what: "opening the mirror store",
                detail: error.to_string(),
            })?;
        let escrow_client = |config, what| {
            EscrowClient::new(config, spawner.clone()).map_err(|error| StartError::Escrow {
                what,
                detail: error.to_string(),
            })
        };
        let operator = match options.escrow_operator {
            Some(config) => Some(escrow_client(config, "escrow operator client")?),
            None => None,
        };
        let escrow = match options.escrow {
            Some(config) => Some(EscrowLink::new(
                escrow_client(config, "escrow client")?,
                operator,
            )),
            None => None,
        };
        let clock = SystemClock;
        // Relays, workers and pending writes survive a restart: resume from the last snapshot.
        let snapshot_path = options.data_dir.join("registry.snapshot");
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let registry =
                    Registry::restore_bytes(&bytes).map_err(|error| StartError::Snapshot {
                        path: snapshot_path.clone(),
                        detail: error.to_string(),
                    })?;
                tracing::info!(relays = registry.len(), "registry restored");
                registry.snapshot()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::new().snapshot(),
            Err(e) => return Err(io(format!("reading {}", snapshot_path.display()))(e)),
        };
        let mut cores =
            open_partitions(partitions, options.core, snapshot, &clock).map_err(|error| {
                StartError::Snapshot {
                    path: snapshot_path.clone(),
                    detail: error.to_string(),
                }
            })?;
        // Mirrors kept from the last run serve their relays until a worker returns.
        for record in mirror.cores() {
            // A removed writer counts only up to its final length.
            cores[partitions.of_relay(&record.relay)].handle_mirror_found_at_start(
                record.relay,
                record.core_key.0,
                record.local_length,
                record.target_length(),
                clock.now(),
            );
        }
        let drives =
            GatewayDrives::open(&options.data_dir).map_err(|error| StartError::Storage {
                what: "opening the gateway drives",
                detail: error.to_string(),
            })?;
        let shared = Shared::new(
            partitions,
            cores,
            options.identity,
            mirror,
            options.data_dir.join("replica-index"),
            escrow,
            GatewayMetrics::new(),
            drives,
            TokenKeys::new(options.token_secret),
            snapshot_path,
            spawner,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = Arc::new(HttpState {
            shared: Arc::clone(&shared),
            client: ClientConfig {
                session: options.session,
                outbound_queue: options.outbound_queue,
                frames_per_second: options.limits.frames_per_second,
                frame_burst: options.limits.frame_burst,
            },
            per_ip: Arc::default(),
            max_connections_per_ip: options.limits.connections_per_ip,
            admin_token: options.admin_token,
            shutdown: shutdown_rx,
        });
        Ok(GatewayService {
            shared,
            http,
            shutdown,
            accept: options.accept,
            link: options.link,
            pulling: Arc::default(),
        })
    }

    /// The gateway's identity (workers pin its public key).
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    /// The gateway's peer id.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id()
    }

    /// Which workers may link.
    #[must_use]
    pub fn accept_policy(&self) -> &AcceptPolicy {
        &self.accept
    }

    /// The peer link's heartbeats and bounds.
    #[must_use]
    pub fn link_config(&self) -> &LinkConfig {
        &self.link
    }

    /// Becomes `true` when the gateway shuts down.
    #[must_use]
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Every HTTP route but the relays' own URLs, which the driver adds (with its WebSocket
    /// upgrade, or [`GatewayService::relay_page_routes`] when it upgrades before routing).
    pub fn routes(&self, relay_routes: Router<Arc<HttpState>>) -> Router {
        http::routes()
            .merge(relay_routes)
            .with_state(Arc::clone(&self.http))
    }

    /// The relay URLs answered without an upgrade (NIP-11 or a short text): for a driver that
    /// takes WebSocket upgrades before routing.
    pub fn relay_page_routes() -> Router<Arc<HttpState>> {
        http::relay_page_routes()
    }

    /// The longest WebSocket message or frame a client may send.
    #[must_use]
    pub fn websocket_message_cap(&self) -> usize {
        http::websocket_message_cap(&self.http)
    }

    /// Admits a WebSocket for `relay_name` from `remote` (per-address cap, tokens, NIP-42).
    #[must_use]
    pub fn admit_websocket(
        &self,
        relay_name: String,
        remote: IpAddr,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> ClientAdmission {
        let (access, slot) = http::admit_websocket(&self.http, &relay_name, remote, uri, headers);
        ClientAdmission {
            relay_name,
            access,
            slot,
        }
    }

    /// What a plain GET of a relay's URL answers.
    #[must_use]
    pub fn relay_page(&self, relay_name: &str, headers: &HeaderMap) -> Response {
        http::relay_page(&self.http, relay_name, headers)
    }

    /// Serves an admitted client WebSocket until it ends: `incoming` is what the client sends,
    /// `outgoing` where its frames go (written from this same future).
    pub async fn serve_client<Si, St>(&self, admission: ClientAdmission, outgoing: Si, incoming: St)
    where
        Si: Sink<ToClient> + Unpin,
        St: Stream<Item = FromClient> + Unpin,
    {
        let ClientAdmission {
            relay_name,
            access,
            slot,
        } = admission;
        clients::serve(
            outgoing,
            incoming,
            Arc::clone(&self.shared),
            relay_name,
            self.http.client,
            access,
            self.http.shutdown.clone(),
        )
        .await;
        drop(slot);
    }

    /// Serves an established worker link until it ends.
    pub async fn serve_link(&self, link: PeerLink, inbound: Inbound) {
        links::serve_link(
            Arc::clone(&self.shared),
            Arc::clone(&self.pulling),
            link,
            inbound,
        )
        .await;
    }

    /// How the core's state is partitioned.
    #[must_use]
    pub fn partitioning(&self) -> Partitioning {
        self.shared.partitioning()
    }

    /// Every partition's timers and the registry persister, until shutdown; run it once (a
    /// driver that runs each partition's timer where the partition is owned runs
    /// [`GatewayService::run_timers_of`] and [`GatewayService::run_persister`] instead).
    pub async fn run_background(&self) {
        let timers =
            (0..self.shared.partitioning().count()).map(|partition| self.run_timers_of(partition));
        futures_util::future::join(futures_util::future::join_all(timers), self.run_persister())
            .await;
    }

    /// Fires `partition`'s core deadlines until shutdown; run once per partition.
    pub async fn run_timers_of(&self, partition: usize) {
        run_timer(Arc::clone(&self.shared), partition, self.shutdown_signal()).await;
    }

    /// Persists the registry after it changed, and once more at shutdown; run it once.
    pub async fn run_persister(&self) {
        run_persister(Arc::clone(&self.shared), self.shutdown_signal()).await;
    }

    /// Ends every lease (their keys are wiped) and tells everything to stop.
    pub fn shutdown(&self) {
        self.shared
            .with_every(|state, now| state.core.handle_shutdown(now));
        self.shared.vault.wipe_all();
        let _ = self.shutdown.send(true);
    }
}

/// Persists the registry after it changed (coalescing bursts), and once more at shutdown.
async fn run_persister(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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

/// Fires `partition`'s deadlines: sleeps until its `poll_timeout`, re-armed after every input.
async fn run_timer(shared: Arc<Shared>, partition: usize, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (deadline, rearm) = shared.next_deadline(partition);
        let sleep = async {
            match deadline {
                Some(at) => crate::rt::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                shared.with_partition(partition, |state, now| state.core.handle_timeout(now));
            }
            () = rearm.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One core per partition, each resuming its part of the registry `snapshot` (which any
/// earlier partition count may have written).
fn open_partitions(
    partitioning: Partitioning,
    config: GatewayConfig,
    snapshot: RegistrySnapshot,
    clock: &SystemClock,
) -> Result<Vec<Gateway>, hypergate_core::registry::RegistryError> {
    partitioning
        .split_snapshot(snapshot)
        .into_iter()
        .zip(partitioning.partitions())
        .map(|(part, partition)| {
            let registry = Registry::restore(part)?;
            Ok(Gateway::in_partition(
                config,
                registry,
                partition,
                clock.now(),
                clock.unix_now(),
            ))
        })
        .collect()
}
