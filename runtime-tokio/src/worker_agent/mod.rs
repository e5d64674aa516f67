//! The worker agent: the gateway side of `hypergate worker` (tokio).
//!
//! Contract:
//! - **Relays on disk.** Each relay lives in `<data>/relays/<relay hex>/`: its `RelayLogs` (owner
//!   log, writer logs) and its secrets in a [`RelayKeys`] file under `keys/` (mode 0600). A relay
//!   always has a dedicated *gateway writer*: a key whose secret is escrowed, added to the relay
//!   with `AddWriter`, whose log the gateway appends to under a lease.
//! - **One link, always coming back.** The agent dials the gateway, pins its identity (the link
//!   refuses any other key), reconnects with jittered backoff, and on every connect sends `Hello`,
//!   `RegisterRelays` (whole list: the gateway merges), and a `MirrorAdvertise` of every core's
//!   length; it re-advertises after local appends. Link heartbeats run in the link driver. The
//!   `RegisterAck` carries each relay's gateway lease epoch; the agent feeds it to the core
//!   before `handle_gateway_connected`, so a lease issued while it was away (no push reached
//!   it) is answered by a `worker-reconnect` rotation.
//! - **Mirroring is pulled.** The gateway asks with `MirrorProofRequest`s describing what its
//!   mirror holds (signed length, nodes per block) and the agent answers with verifiable proofs
//!   ([`mirror`]), so after any interruption — even one that left the mirror's signed tree ahead
//!   of its blocks — the mirror resumes from its own state. `MirrorRangeRequest` is still
//!   answered.
//! - **Pending writes.** A `PendingWritePush` is accepted only on the link whose authenticated
//!   remote is the pinned gateway (anything else is answered with an `Error` and ignored); it is
//!   acked, then `WorkerCore`'s effects run against real storage (`effects`): the gateway
//!   writer's blocks are fetched over the link as proofs and verified into the relay, the
//!   files the gateway wrote to its drive are copied (checked) into the relay's drive
//!   ([`drive`]), then resync-complete, then rotation (owner-log batch `RemoveWriter` +
//!   `AddWriter`, revoke the old deposit, deposit the new key). HTTP artifacts (joins, auth
//!   callbacks) the gateway stored are replayed ([`artifacts`]).
//! - **Drive reads.** The gateway's `HttpRequest{GET, /drive/<identifier>/<file>}` (its
//!   peer-first read) is answered from the relay's drive; see [`drive`].
//! - **Escrow** (optional): the gateway writer's `WriterPackage` is sealed to the escrow's key,
//!   signed with the relay key and deposited; re-deposited before it expires (checked every
//!   `advertise_interval`, connected or not).
//! - **Forwarded sessions.** Once given the relay hosts
//!   ([`WorkerAgentHandle::serve_forwarded_sessions`]), the agent serves the NIP-01 sessions the
//!   gateway forwards as `NostrFrame`s against the same hosts as the local server (`forwarded`
//!   has the contract); until then, and for relays it does not host, it answers each new
//!   session with the empty "session ended" frame.
//! - **Status.** [`WorkerAgentHandle::status`] returns a [`WorkerStatus`] (JSON-serialisable).
//! - **Sharing the logs.** The agent is the one owner of each relay's `RelayLogs`; another view
//!   in the process (`hypergate worker run`'s local server) reads and appends through the handle
//!   ([`WorkerAgentHandle::with_relay`], [`WorkerAgentHandle::append_events`]) and catches up
//!   when [`WorkerAgentHandle::log_changes`] moves.

pub mod artifacts;
pub mod drive;
mod effects;
mod forwarded;
pub mod keys;
/// The mirror wire codec lives in the adapters (the gateway answers with it too).
pub use hypergate_adapters::mirror::wire as mirror;
mod session;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{BackoffConfig, LinkConfig};
use hypergate_adapters::relay::{RelayLogs, RelayLogsError};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::Event;
use hypergate_core::relay::WriterKey;
use hypergate_core::worker::WorkerConfig;
use tokio::sync::{Mutex, Notify, watch};

use crate::escrow::EscrowClient;

pub use drive::{DriveAnswer, RelayDrives};
pub use forwarded::ForwardedSessions;
pub use keys::RelayKeys;
pub use mirror::{
    MirrorWireError, answer_proof_request, answer_range, decode_mirror_response,
    decode_mirror_response_bytes, pack_proofs, proof_request,
};
pub use status::{CoreStatus, RelayStatus, RotationEntry, WorkerStatus};

/// Why the agent failed, grouped by blame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    // Configuration / local files.
    /// A relay keys file is unreadable or malformed.
    #[error("relay keys file {path}: {detail}")]
    KeysFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The data directory could not be read.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A relay this agent does not host.
    #[error("relay {0} is not hosted here")]
    UnknownRelay(RelayKey),
    // Local storage.
    /// A relay log failed.
    #[error(transparent)]
    Relay(#[from] RelayLogsError),
    // The escrow.
    /// The escrow refused or could not be reached.
    #[error("escrow: {0}")]
    Escrow(String),
}

/// The escrow the agent deposits gateway writer keys with.
#[derive(Debug, Clone)]
pub struct EscrowSettings {
    /// The client (mTLS + signed requests).
    pub client: EscrowClient,
    /// Gateways allowed to unlock the deposits (sent in the deposit and the registration).
    pub permitted_gateways: Vec<PeerId>,
    /// Re-deposit when a deposit expires within this margin.
    pub redeposit_margin: Duration,
}

/// How the agent runs.
pub struct WorkerAgentConfig {
    /// This worker's identity (its peer id is what the gateway and escrow know it by).
    pub identity: Identity,
    /// Where relays live (`<data_dir>/relays/<hex>/`).
    pub data_dir: PathBuf,
    /// `host:port` of the gateway's peer-link listener.
    pub gateway_addr: String,
    /// The gateway's pinned identity.
    pub gateway_key: PeerId,
    /// The escrow, if gateway writes should be possible while this worker is away.
    pub escrow: Option<EscrowSettings>,
    /// Link limits and timers.
    pub link: LinkConfig,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Resync job tuning.
    pub worker: WorkerConfig,
    /// Seed for jitter and effect ids.
    pub seed: u64,
    /// How often the agent re-advertises lengths and checks deposit expiry.
    pub advertise_interval: Duration,
}

impl std::fmt::Debug for WorkerAgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAgentConfig")
            .field("peer", &self.identity.peer_id())
            .field("data_dir", &self.data_dir)
            .field("gateway_addr", &self.gateway_addr)
            .field("gateway_key", &self.gateway_key)
            .finish_non_exhaustive()
    }
}

/// One hosted relay: its logs and secrets.
pub(crate) struct HostedRelay {
    pub(crate) logs: RelayLogs,
    pub(crate) keys: RelayKeys,
    /// The worker's own writer (where local events go).
    pub(crate) local_writer: Option<WriterKey>,
}

/// State shared by the run task and the handle.
pub(crate) struct Shared {
    pub(crate) relays: Mutex<BTreeMap<RelayKey, HostedRelay>>,
    pub(crate) status: std::sync::Mutex<status::StatusState>,
    /// Something changed locally: re-advertise.
    pub(crate) changed: Notify,
    pub(crate) stop: Notify,
    /// Bumped after every resync step the agent ran against the logs (ingests, owner-log
    /// rotations): views kept beside the agent (the local server's) catch up on it.
    pub(crate) revision: watch::Sender<u64>,
    /// What forwarded sessions are served from; `None` until the handle is given hosts.
    pub(crate) forwarded: std::sync::Mutex<Option<Arc<ForwardedSessions>>>,
    /// Forwarded sessions whose tasks run, across links.
    pub(crate) forwarded_open: Arc<AtomicUsize>,
    /// Every relay's drive (gateway drive files imported at resync).
    pub(crate) drives: Arc<RelayDrives>,
}

/// The relays directory inside a data directory.
#[must_use]
pub fn relays_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("relays")
}

/// Creates a relay in `data_dir`: a fresh owner key, the worker's own writer, and a gateway
/// writer key (added with `AddWriter`; deposited when the agent starts with an escrow).
pub async fn create_relay(data_dir: &Path) -> Result<RelayKey, AgentError> {
    let owner = SigningKey::generate(&mut crypto_box::aead::OsRng);
    let relay = RelayKey(owner.verifying_key().to_bytes());
    create_relay_in(&relays_dir(data_dir).join(relay.to_hex()), owner).await?;
    Ok(relay)
}

/// Creates the relay owned by `owner` in `dir` (which may be a staging directory renamed into
/// place later: nothing inside records its own path): the owner log, the worker's own writer
/// log, a gateway writer added with `AddWriter`, and the [`RelayKeys`] file, the one place
/// that holds the relay's secrets. Returns the worker's own writer.
pub async fn create_relay_in(dir: &Path, owner: SigningKey) -> Result<WriterKey, AgentError> {
    let mut logs = RelayLogs::create(dir, owner.clone()).await?;
    let local = logs
        .add_local_writer(SigningKey::generate(&mut crypto_box::aead::OsRng))
        .await?;
    let writer = SigningKey::generate(&mut crypto_box::aead::OsRng);
    logs.add_remote_writer(WriterKey(writer.verifying_key().to_bytes()))
        .await?;
    let mut keys = RelayKeys::new(dir, owner, writer);
    keys.local_writer = Some(local.0);
    keys.save()?;
    Ok(local)
}

/// The running agent.
#[derive(Debug, Clone)]
pub struct WorkerAgentHandle {
    shared: Arc<SharedHandle>,
}

struct SharedHandle {
    shared: Arc<Shared>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAgent").finish_non_exhaustive()
    }
}

/// Starts the agent: opens every relay under `data_dir`, then runs the link on tokio.
pub async fn start(config: WorkerAgentConfig) -> Result<WorkerAgentHandle, AgentError> {
    let relays = open_relays(&config.data_dir).await?;
    let shared = Arc::new(Shared {
        relays: Mutex::new(relays),
        status: std::sync::Mutex::new(status::StatusState::new(config.identity.peer_id())),
        changed: Notify::new(),
        stop: Notify::new(),
        revision: watch::Sender::new(0),
        forwarded: std::sync::Mutex::new(None),
        forwarded_open: Arc::new(AtomicUsize::new(0)),
        drives: Arc::new(RelayDrives::new(&config.data_dir)),
    });
    let task = tokio::spawn(session::run(config, Arc::clone(&shared)));
    Ok(WorkerAgentHandle {
        shared: Arc::new(SharedHandle {
            shared,
            task: std::sync::Mutex::new(Some(task)),
        }),
    })
}

async fn open_relays(data_dir: &Path) -> Result<BTreeMap<RelayKey, HostedRelay>, AgentError> {
    let dir = relays_dir(data_dir);
    let mut relays = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(relays),
        Err(source) => return Err(AgentError::DataDir { path: dir, source }),
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // Only directories named by a relay key: a staging directory (`.creating-<pid>`) left
        // by an interrupted `hypergate worker init` is never a hosted relay.
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<RelayKey>().is_ok())
        })
        .map(|entry| entry.path())
        .filter(|path| path.join("owner").is_dir())
        .collect();
    dirs.sort();
    for path in dirs {
        let logs = RelayLogs::open(&path).await?;
        let keys = RelayKeys::load(&path)?;
        let local_writer = keys.local_writer.map(WriterKey);
        relays.insert(
            logs.relay_key(),
            HostedRelay {
                logs,
                keys,
                local_writer,
            },
        );
    }
    Ok(relays)
}

impl WorkerAgentHandle {
    /// A snapshot for `hypergate worker status`.
    #[must_use]
    pub fn status(&self) -> WorkerStatus {
        let mut status = match self.shared.shared.status.lock() {
            Ok(state) => state.snapshot(),
            Err(poisoned) => poisoned.into_inner().snapshot(),
        };
        status.forwarded_sessions = self.shared.shared.forwarded_open.load(Ordering::Relaxed);
        status
    }

    /// Appends events to the worker's own writer log of `relay` (verified by the caller's NIP-01
    /// path) and re-advertises. Returns the first block index.
    pub async fn append_events(
        &self,
        relay: RelayKey,
        events: &[Event],
    ) -> Result<u64, AgentError> {
        let mut relays = self.shared.shared.relays.lock().await;
        let hosted = relays
            .get_mut(&relay)
            .ok_or(AgentError::UnknownRelay(relay))?;
        let writer = hosted.local_writer.ok_or(AgentError::UnknownRelay(relay))?;
        let first = hosted.logs.append_events(&writer, events).await?;
        drop(relays);
        self.shared.shared.changed.notify_one();
        Ok(first)
    }

    /// Changes whenever the agent itself changed a relay's logs (gateway writes ingested, a
    /// rotation in the owner log). Appends made through [`Self::append_events`] do not count:
    /// their caller knows.
    #[must_use]
    pub fn log_changes(&self) -> watch::Receiver<u64> {
        self.shared.shared.revision.subscribe()
    }

    /// The relays hosted, in key order.
    pub async fn relays(&self) -> Vec<RelayKey> {
        self.shared
            .shared
            .relays
            .lock()
            .await
            .keys()
            .copied()
            .collect()
    }

    /// Runs `read` on the relay's logs (tests and status tools read the owner log this way).
    pub async fn with_relay<T>(
        &self,
        relay: RelayKey,
        read: impl AsyncFnOnce(&mut RelayLogs) -> T,
    ) -> Result<T, AgentError> {
        let mut relays = self.shared.shared.relays.lock().await;
        let hosted = relays
            .get_mut(&relay)
            .ok_or(AgentError::UnknownRelay(relay))?;
        Ok(read(&mut hosted.logs).await)
    }

    /// The relays' drives, for another view in the process (the local server) to read: the
    /// agent imports into them, so there must be one owner of the files.
    #[must_use]
    pub fn drives(&self) -> Arc<RelayDrives> {
        Arc::clone(&self.shared.shared.drives)
    }

    /// Serves the NIP-01 sessions the gateway forwards over the link from now on, from
    /// `sessions`' hosts (the local server's, so both surfaces share live subscribers).
    /// Sessions already open keep the hosts they started with.
    pub fn serve_forwarded_sessions(&self, sessions: ForwardedSessions) {
        let sessions = Some(Arc::new(sessions));
        match self.shared.shared.forwarded.lock() {
            Ok(mut forwarded) => *forwarded = sessions,
            Err(poisoned) => *poisoned.into_inner() = sessions,
        }
    }

    /// Stops the agent: the link is dropped, the task ends.
    pub async fn shutdown(&self) {
        self.shared.shared.stop.notify_one();
        let task = match self.shared.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}
