//! `hypergate worker`: a worker that hosts relays on disk, serves them to local Nostr clients
//! and, given a gateway, runs the [worker agent](crate::worker_agent) beside them.
//!
//! Contract:
//! - `init` creates the data directory (layout in [`data_dir`]) with the worker identity and a
//!   first relay whose owner log records the worker's writer with `AddWriter`, and prints the
//!   relay key, the worker's peer id and the relay's local WebSocket URL (`--json`: one JSON
//!   object).
//! - `run` serves every relay of the data directory over NIP-01 (see `server`): events are
//!   verified (id and signature) by the core session, appended to the worker's writer log
//!   (durable before `OK true`) and delivered live; `REQ` is answered from the relay index,
//!   which is rebuilt from the logs at start. SIGINT / SIGTERM close every connection and stop
//!   the server (and the agent).
//! - `run --gateway ADDR --gateway-key HEX` also starts the worker agent in the same process.
//!   The agent owns every relay's logs; the server reads and appends through its handle (see
//!   [`store`]), so events published locally are advertised to the gateway's mirror, and a
//!   task per relay catches the server's view up whenever the agent changed the logs (gateway
//!   writes ingested at resync, rotations). The agent also serves the NIP-01 sessions the
//!   gateway forwards over the link, on the same relay hosts as the local server (see
//!   [`crate::worker_agent::ForwardedSessions`]).
//! - `run` serves `GET /drive/<identifier>/<file>` from the relays' drives, where the files the
//!   gateway stored while the worker was away land at resync (see
//!   [`crate::worker_agent::drive`]).
//! - `run` serves `GET /status`: the [`WorkerStatus`] as JSON (the agent's, or without a
//!   gateway one that lists the relays and `gatewayConnected: false`). `status` fetches it and
//!   prints it as a table or (`--json`) as it came; unreachable: exit 1.

mod connection;
pub mod data_dir;
mod gateway;
mod server;
pub(crate) use hypergate_adapters::gateway::accepts_nostr_json;
pub(crate) mod session_pump;
pub mod status;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::index::QueryLimits;
use hypergate_adapters::relay::{HostConfig, IndexedRelay, RelayHost, RelayLogs};
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Limits;
use hypergate_core::session::{RelayInformation, SessionConfig};
use tokio::sync::{Mutex, watch};

pub use connection::ConnectionConfig;
pub use data_dir::DataDir;
pub use gateway::{EscrowOptions, GatewayOptions};
pub use session_pump::SharedHost;
pub use status::{StatusOptions, status};
pub use store::WorkerStore;

use crate::worker_agent::{self, ForwardedSessions, WorkerAgentHandle, WorkerStatus};

/// Live events queued per subscription in the relay's feed before it is dropped as too slow.
const LIVE_QUEUE: usize = 1024;

/// `hypergate worker init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The address `run` will listen on, for the printed URL.
    pub listen: SocketAddr,
    /// Print one JSON object.
    pub json: bool,
    /// Print nothing (a caller that reports on its own, like `hypergate up`).
    pub quiet: bool,
}

/// `hypergate worker run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Frames queued per connection before the client counts as too slow.
    pub outbound_queue: usize,
    /// Longest client frame, in bytes.
    pub max_frame_bytes: usize,
    /// The gateway to link to; `None` serves local clients only.
    pub gateway: Option<GatewayOptions>,
    /// Print no start-up lines (a caller that reports on its own, like `hypergate up`).
    pub quiet: bool,
}

/// The local WebSocket URL of `relay` on a worker listening at `listen`.
pub fn relay_url(listen: SocketAddr, relay: &RelayKey) -> String {
    format!("ws://{listen}/relay/{relay}")
}

/// Creates the data directory and its first relay, and prints what was made.
pub async fn init(options: InitOptions) -> anyhow::Result<()> {
    let dir = DataDir::new(&options.data_dir);
    let made = dir.init().await?;
    let url = relay_url(options.listen, &made.relay);
    if options.quiet {
        return Ok(());
    }
    if options.json {
        let report = serde_json::json!({
            "relayKey": made.relay.to_hex(),
            "peerId": made.identity.peer_id().to_hex(),
            "writerKey": made.writer.to_hex(),
            "url": url,
            "dataDir": options.data_dir.display().to_string(),
        });
        println!("{report}");
    } else {
        println!("relay key:  {}", made.relay);
        println!("peer id:    {}", made.identity.peer_id());
        println!("writer key: {}", made.writer);
        println!("url:        {url}");
        println!(
            "serve it with: hypergate worker run --data-dir {} --listen {}",
            options.data_dir.display(),
            options.listen
        );
    }
    Ok(())
}

/// Serves every relay of the data directory (and runs the agent when a gateway is given) until
/// SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let dir = DataDir::new(&options.data_dir);
    if !dir.identity_path().exists() {
        bail!(
            "{} has no worker identity: run `hypergate worker init --data-dir {}` first",
            options.data_dir.display(),
            options.data_dir.display()
        );
    }
    let identity = Identity::load_or_create(&dir.identity_path())?;
    let relays = dir.relays()?;
    if relays.is_empty() {
        bail!("{} hosts no relay", options.data_dir.display());
    }
    let agent = match &options.gateway {
        Some(gateway) => Some(
            gateway::start_agent(
                &options.data_dir,
                Identity::from_signing_key(identity.signing_key().clone()),
                gateway,
            )
            .await?,
        ),
        None => None,
    };
    let session = SessionConfig {
        limits: Limits {
            max_frame_bytes: options.max_frame_bytes,
            ..Limits::default()
        },
        ..SessionConfig::default()
    };
    let host_config = HostConfig::default();
    let mut served = BTreeMap::new();
    let mut refreshers = tokio::task::JoinSet::new();
    for relay in relays {
        let host = open_relay(&dir, relay, host_config.clone(), agent.as_ref())
            .await
            .with_context(|| format!("opening relay {relay}"))?;
        let information = information(
            &relay,
            &session,
            &host_config.query_limits,
            host.is_writable(),
        );
        let host = Arc::new(Mutex::new(host));
        if let Some(agent) = &agent {
            refreshers.spawn(gateway::follow_agent(
                agent.log_changes(),
                Arc::clone(&host),
            ));
        }
        served.insert(relay, server::ServedRelay { host, information });
    }
    let connection = ConnectionConfig {
        session,
        outbound_queue: options.outbound_queue,
    };
    if let Some(agent) = &agent {
        let hosts = served
            .iter()
            .map(|(relay, served)| (*relay, Arc::clone(&served.host)))
            .collect();
        agent.serve_forwarded_sessions(ForwardedSessions::new(hosts, connection));
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    if !options.quiet {
        announce(format_args!(
            "hypergate worker {} listening on {address}",
            identity.peer_id()
        ));
        for relay in served.keys() {
            announce(format_args!("relay {relay}: {}", relay_url(address, relay)));
        }
    }
    if let Some(gateway) = options.gateway.as_ref().filter(|_| !options.quiet) {
        announce(format_args!(
            "gateway {} ({})",
            gateway.addr,
            gateway.key.short()
        ));
    }
    let status = match &agent {
        Some(agent) => server::StatusSource::Agent(agent.clone()),
        None => server::StatusSource::Standalone(standalone_status(&dir, &identity, &served)),
    };
    let drives = match &agent {
        Some(agent) => agent.drives(),
        None => Arc::new(worker_agent::RelayDrives::new(&options.data_dir)),
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    let state = Arc::new(server::ServerState {
        relays: served,
        connection,
        shutdown,
        status,
        drives,
    });
    // Frames are small and many (an EVENT per stored event, then EOSE): without TCP_NODELAY,
    // Nagle's algorithm and delayed ACKs hold each answer back by ~40 ms.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, server::router(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = shutdown_tx.send(true);
        })
        .await
        .context("serving");
    refreshers.abort_all();
    if let Some(agent) = agent {
        agent.shutdown().await;
    }
    served
}

/// `/status` without an agent: the relays, and no gateway.
fn standalone_status(
    dir: &DataDir,
    identity: &Identity,
    served: &BTreeMap<RelayKey, server::ServedRelay>,
) -> WorkerStatus {
    let relays = served
        .keys()
        .map(|relay| {
            let keys = worker_agent::RelayKeys::load(&dir.relay_dir(relay)).ok();
            worker_agent::RelayStatus {
                relay_key: relay.to_hex(),
                job_state: "idle".to_owned(),
                gateway_writer: keys
                    .as_ref()
                    .map(|keys| hex::encode(keys.current))
                    .unwrap_or_default(),
                escrow_id: keys.and_then(|keys| keys.escrow_id),
                cores: Vec::new(),
            }
        })
        .collect();
    WorkerStatus {
        worker: identity.peer_id().to_hex(),
        gateway_connected: false,
        connects: 0,
        relays,
        pending_jobs: 0,
        rotations: Vec::new(),
        refused_pushes: 0,
        forwarded_sessions: 0,
    }
}

/// Opens one relay's logs (its own, or the agent's through its handle), rebuilds its index and
/// makes its host (writable when the worker's writer log holds its secret key).
async fn open_relay(
    dir: &DataDir,
    relay: RelayKey,
    config: HostConfig,
    agent: Option<&WorkerAgentHandle>,
) -> anyhow::Result<RelayHost<WorkerStore>> {
    let writer = dir.local_writer(&relay)?;
    let relay_dir = dir.relay_dir(&relay);
    let (store, writable) = match agent {
        Some(handle) => {
            let writable = handle
                .with_relay(relay, async |logs| {
                    logs.writer_log(&writer).await.map(|log| log.is_writable())
                })
                .await??;
            let store = WorkerStore::Agent {
                handle: handle.clone(),
                relay,
            };
            (store, writable)
        }
        None => {
            let mut logs = RelayLogs::open(&relay_dir).await?;
            if logs.relay_key() != relay {
                bail!(
                    "{} holds the owner log of relay {}",
                    relay_dir.display(),
                    logs.relay_key()
                );
            }
            let writable = logs.writer_log(&writer).await?.is_writable();
            (WorkerStore::Own(Box::new(logs)), writable)
        }
    };
    if !writable {
        tracing::warn!(%relay, %writer, "the worker's writer log has no secret key: serving read-only");
    }
    let indexed = IndexedRelay::create(relay, &relay_dir.join("index.redb"), LIVE_QUEUE)?;
    let host = RelayHost::open(indexed, store, writable.then_some(writer), config).await?;
    Ok(host)
}

fn information(
    relay: &RelayKey,
    session: &SessionConfig,
    limits: &QueryLimits,
    writable: bool,
) -> String {
    RelayInformation::new(
        format!("hypergate relay {}", relay.short()),
        format!("Nostr relay {relay}, served by a hypergate worker"),
        session,
        limits.default_limit,
        limits.max_limit,
        writable,
    )
    .to_json()
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

/// Prints a start-up line for scripts and operators. A server must keep serving
/// when whoever started it closed its stdout, so a failed write is ignored.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}
