//! `hypergate up`: gateway, escrow and one worker with one relay in one process, on embedded
//! storage under one data directory — the first run, and what the README starts with.
//!
//! Contract:
//! - Idempotent: the first run creates everything under `<data>` (identities, a local PKI for
//!   the escrow's mutual TLS, the escrow's shared HMAC secret, the worker's relay); later runs
//!   reuse it, so the relay and its data survive restarts.
//! - The pieces talk as they would in production: the worker links to the gateway over the
//!   authenticated peer link and deposits its gateway writer key with the escrow over mTLS;
//!   the gateway unlocks over mTLS. Only the listeners are local (127.0.0.1 by default).
//! - Prints the relay's WebSocket URL at the gateway, then runs until SIGINT/SIGTERM.
//! - Secrets are files of mode 0600 in directories of mode 0700.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig};
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::gateway::GatewayConfig;
use hypergate_core::ids::RelayKey;
use hypergate_core::session::SessionConfig;

use crate::escrow::EscrowServer;
use crate::gateway::{self, GatewayOptions};
use crate::local_stack::{LocalPki, local_client, local_escrow_config, private_dir};
use crate::secret_file::load_or_create_secret;
use crate::worker;

/// `hypergate up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where everything lives.
    pub data_dir: PathBuf,
    /// The gateway's client listener.
    pub listen: SocketAddr,
    /// The gateway's peer-link listener.
    pub peer_listen: SocketAddr,
    /// Print one JSON line with the addresses instead of text.
    pub json: bool,
}

/// Runs gateway, escrow and worker until a shutdown signal.
pub async fn run(options: UpOptions) -> anyhow::Result<()> {
    let data = &options.data_dir;
    private_dir(data)?;
    let pki = LocalPki::load_or_mint(&data.join("pki"))?;
    let secret_path = data.join("escrow-secret");
    let secret = load_or_create_secret(&secret_path)?;

    let gateway_dir = data.join("gateway");
    private_dir(&gateway_dir)?;
    let gateway_identity = Identity::load_or_create(&gateway_dir.join("identity.json"))
        .context("the gateway identity")?;
    let gateway_peer = gateway_identity.peer_id();

    let worker_dir = data.join("worker");
    if !worker_dir.join("identity.json").exists() {
        worker::init(worker::InitOptions {
            data_dir: worker_dir.clone(),
            listen: "127.0.0.1:0".parse()?,
            json: false,
            quiet: true,
        })
        .await
        .context("creating the worker and its first relay")?;
    }
    let worker_peer = Identity::load_or_create(&worker_dir.join("identity.json"))?.peer_id();
    let relay = first_relay(&worker_dir)?;

    // The escrow, over mutual TLS on an ephemeral loopback port.
    let escrow_dir = data.join("escrow");
    private_dir(&escrow_dir)?;
    let escrow = EscrowServer::start(local_escrow_config(
        &escrow_dir,
        &pki,
        secret.clone(),
        gateway_peer,
        worker_peer,
        PolicyConfig::default(),
    )?)
    .await
    .context("starting the escrow")?;
    let escrow_url = format!(
        "https://127.0.0.1:{}/api/escrow",
        escrow.local_addr().port()
    );

    let gateway = gateway::start(GatewayOptions {
        data_dir: gateway_dir,
        identity: gateway_identity,
        http_listen: options.listen,
        peer_listen: options.peer_listen,
        accept: AcceptPolicy::AllowList([worker_peer].into_iter().collect()),
        link: LinkConfig::default(),
        core: GatewayConfig::default(),
        session: SessionConfig::default(),
        outbound_queue: 1024,
        limits: gateway::ClientLimits::default(),
        escrow: Some(local_client(&pki, &escrow_url, "gateway", secret.clone())?),
        escrow_operator: Some(local_client(&pki, &escrow_url, "operator", secret)?),
        token_secret: load_or_create_secret(&data.join("token-secret"))?,
        admin_token: None,
    })
    .await
    .context("starting the gateway")?;

    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);
    if options.json {
        announce(format_args!(
            "{}",
            serde_json::json!({
                "relayUrl": url,
                "relayKey": relay.to_hex(),
                "gateway": format!("http://{}", gateway.http_addr),
                "peerLink": gateway.peer_addr.to_string(),
                "gatewayKey": gateway.peer_id.to_hex(),
                "escrow": escrow_url,
                "dataDir": data.display().to_string(),
            })
        ));
    } else {
        announce(format_args!("hypergate is up (data in {})", data.display()));
        announce(format_args!("relay:    {url}"));
        announce(format_args!(
            "gateway:  http://{}  (GET /health, /metrics)",
            gateway.http_addr
        ));
        announce(format_args!("escrow:   {escrow_url}"));
    }

    let worker_run = worker::run(worker::RunOptions {
        data_dir: worker_dir,
        listen: "127.0.0.1:0".parse()?,
        outbound_queue: 1024,
        max_frame_bytes: SessionConfig::default().limits.max_frame_bytes,
        gateway: Some(worker::GatewayOptions {
            addr: gateway.peer_addr.to_string(),
            key: gateway.peer_id,
            escrow: Some(worker::EscrowOptions {
                url: escrow_url,
                client_id: "worker".into(),
                secret_file: secret_path,
                ca: Some(pki.ca()),
                client_cert: Some((pki.cert("worker"), pki.key("worker"))),
                redeposit_margin: Duration::from_secs(3600),
            }),
        }),
        quiet: true,
    });
    // The worker runs until the shutdown signal (it listens for it itself).
    let result = worker_run.await;
    gateway.shutdown().await;
    escrow.shutdown().await;
    result
}

fn first_relay(worker_dir: &Path) -> anyhow::Result<RelayKey> {
    let relays = worker_dir.join("relays");
    let mut keys: Vec<RelayKey> = std::fs::read_dir(&relays)
        .with_context(|| format!("reading {}", relays.display()))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    keys.sort();
    match keys.first() {
        Some(relay) => Ok(*relay),
        None => bail!("{} hosts no relay", worker_dir.display()),
    }
}

/// Prints a start-up line; a closed stdout must not stop the servers.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}
