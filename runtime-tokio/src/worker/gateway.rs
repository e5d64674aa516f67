//! The gateway half of `hypergate worker run`: its options, starting the
//! [worker agent](crate::worker_agent) on the data directory, and keeping the local server's
//! view of each relay caught up with what the agent changes.
//!
//! Contract: the pinned gateway is the one gateway allowed to unlock escrow deposits; the
//! escrow HMAC secret is read from a file (never a flag), trimmed, and must not be empty;
//! [`follow_agent`] catches a relay's host up after every change the agent made to its logs,
//! and ends when the agent is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{BackoffConfig, LinkConfig};
use hypergate_adapters::relay::RelayHost;
use hypergate_core::ids::PeerId;
use hypergate_core::worker::WorkerConfig;
use rand_core::{OsRng, TryRngCore};
use tokio::sync::{Mutex, watch};
use zeroize::Zeroizing;

use super::WorkerStore;
use crate::escrow::client::ClientTls;
use crate::escrow::{EscrowClient, EscrowClientConfig};
use crate::worker_agent::{self, EscrowSettings, WorkerAgentConfig, WorkerAgentHandle};

/// How often the agent re-advertises lengths and checks deposit expiry (appends wake it sooner).
const ADVERTISE_INTERVAL: Duration = Duration::from_secs(10);

/// The gateway link of `hypergate worker run`.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `host:port` of the gateway's peer-link listener.
    pub addr: String,
    /// The gateway's pinned identity.
    pub key: PeerId,
    /// The escrow to deposit gateway writer keys with; `None`: no gateway writes while away.
    pub escrow: Option<EscrowOptions>,
}

/// How the worker reaches the escrow service.
#[derive(Debug, Clone)]
pub struct EscrowOptions {
    /// `https://host:port/api/escrow` (`http://` for a development escrow).
    pub url: String,
    /// The client id on the escrow's allow-list.
    pub client_id: String,
    /// A file holding the HMAC secret (surrounding whitespace is ignored).
    pub secret_file: PathBuf,
    /// The CA bundle the escrow's certificate chains to (required for `https://`).
    pub ca: Option<PathBuf>,
    /// This worker's client certificate and key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Re-deposit this long before a deposit expires.
    pub redeposit_margin: Duration,
}

/// Starts the worker agent on the data directory's relays.
pub(super) async fn start_agent(
    data_dir: &Path,
    identity: Identity,
    gateway: &GatewayOptions,
) -> anyhow::Result<WorkerAgentHandle> {
    let escrow = match &gateway.escrow {
        Some(escrow) => Some(escrow_settings(escrow, gateway.key)?),
        None => None,
    };
    let mut seed = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut seed)
        .context("reading operating-system randomness")?;
    let config = WorkerAgentConfig {
        identity,
        data_dir: data_dir.to_path_buf(),
        gateway_addr: gateway.addr.clone(),
        gateway_key: gateway.key,
        escrow,
        link: LinkConfig::default(),
        backoff: BackoffConfig::default(),
        worker: WorkerConfig::default(),
        seed: u64::from_le_bytes(seed),
        advertise_interval: ADVERTISE_INTERVAL,
    };
    worker_agent::start(config)
        .await
        .context("starting the worker agent")
}

/// The escrow client and deposit settings; the pinned gateway is the one allowed to unlock.
fn escrow_settings(options: &EscrowOptions, gateway: PeerId) -> anyhow::Result<EscrowSettings> {
    let secret = std::fs::read_to_string(&options.secret_file)
        .with_context(|| format!("reading {}", options.secret_file.display()))?;
    let secret = Zeroizing::new(secret.trim().as_bytes().to_vec());
    if secret.is_empty() {
        bail!("{} is empty", options.secret_file.display());
    }
    let tls = match &options.ca {
        Some(ca) => Some(
            ClientTls::from_pem_files(
                ca,
                options
                    .client_cert
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
            )
            .context("reading the escrow TLS files")?,
        ),
        None => None,
    };
    let client = EscrowClient::new(
        EscrowClientConfig {
            base_url: options.url.clone(),
            client_id: options.client_id.clone(),
            secret,
            tls,
            request_timeout: Duration::from_secs(5),
        },
        crate::tokio_spawner(),
    )
    .context("configuring the escrow client")?;
    Ok(EscrowSettings {
        client,
        permitted_gateways: vec![gateway],
        redeposit_margin: options.redeposit_margin,
    })
}

/// Catches `host`'s view up every time the agent changed the logs, until the agent is gone.
pub(super) async fn follow_agent(
    mut changes: watch::Receiver<u64>,
    host: Arc<Mutex<RelayHost<WorkerStore>>>,
) {
    while changes.changed().await.is_ok() {
        let mut host = host.lock().await;
        if let Err(error) = host.refresh().await {
            tracing::warn!(relay = %host.relay_key(), %error, "catching the local view up failed");
        }
    }
}
