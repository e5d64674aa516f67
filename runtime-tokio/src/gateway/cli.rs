//! `hypergate gateway`: flags and environment, start-up lines, shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig};
use hypergate_core::gateway::GatewayConfig;
use hypergate_core::ids::PeerId;
use hypergate_core::nostr::Limits;
use hypergate_core::session::SessionConfig;

use super::{GatewayOptions, start};
use crate::escrow::EscrowClientConfig;

/// Options of `hypergate gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Where the gateway keeps its identity, mirror and replica indexes (created, mode 0700).
    #[arg(long, env = "HYPERGATE_GATEWAY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where clients and operators connect (NIP-01 WebSocket, HTTP, /metrics).
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "HYPERGATE_GATEWAY_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Where workers connect (the peer link).
    #[arg(
        long,
        default_value = "127.0.0.1:8081",
        env = "HYPERGATE_GATEWAY_PEER_LISTEN"
    )]
    pub peer_listen: SocketAddr,
    /// A worker identity (hex) allowed to link; repeat for more. Without any, every worker
    /// that proves an identity may link (open registration).
    #[arg(
        long = "allow-worker",
        env = "HYPERGATE_GATEWAY_ALLOW_WORKERS",
        value_delimiter = ','
    )]
    pub allow_workers: Vec<String>,
    /// A file holding the bearer token of the /api/ routes; without it they are open (bind
    /// them to loopback then).
    #[arg(long, env = "HYPERGATE_GATEWAY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Longest client frame in bytes.
    #[arg(
        long,
        default_value_t = 131_072,
        env = "HYPERGATE_GATEWAY_MAX_FRAME_BYTES"
    )]
    pub max_frame_bytes: usize,
    /// Frames queued per client before it counts as too slow and is disconnected.
    #[arg(long, default_value_t = 1024, env = "HYPERGATE_GATEWAY_OUTBOUND_QUEUE")]
    pub outbound_queue: usize,
    /// Open WebSocket connections one client address may hold.
    #[arg(
        long,
        default_value_t = 256,
        env = "HYPERGATE_GATEWAY_CONNECTIONS_PER_IP"
    )]
    pub connections_per_ip: usize,
    /// Sustained client frames per second per connection.
    #[arg(
        long,
        default_value_t = 200,
        env = "HYPERGATE_GATEWAY_FRAMES_PER_SECOND"
    )]
    pub frames_per_second: u32,
    /// Burst of client frames above the sustained rate.
    #[arg(long, default_value_t = 400, env = "HYPERGATE_GATEWAY_FRAME_BURST")]
    pub frame_burst: u32,
    /// The escrow's base URL (`https://host:port/api/escrow`); without it the gateway never
    /// writes while workers are away.
    #[arg(long, env = "ESCROW_BASE_URL", requires_all = ["escrow_client_id", "escrow_secret_file"])]
    pub escrow_url: Option<String>,
    /// This gateway's client id on the escrow's allow-list.
    #[arg(long, env = "ESCROW_CLIENT_ID", requires = "escrow_url")]
    pub escrow_client_id: Option<String>,
    /// A file holding the escrow HMAC secret.
    #[arg(
        long,
        env = "HYPERGATE_GATEWAY_ESCROW_SECRET_FILE",
        requires = "escrow_url"
    )]
    pub escrow_secret_file: Option<PathBuf>,
    /// The CA bundle the escrow's certificate chains to (required for https).
    #[arg(long, env = "HYPERGATE_GATEWAY_ESCROW_CA", requires = "escrow_url")]
    pub escrow_ca: Option<PathBuf>,
    /// This gateway's client certificate (PEM) for the escrow's mTLS.
    #[arg(long, env = "HYPERGATE_GATEWAY_ESCROW_CLIENT_CERT", requires_all = ["escrow_client_key", "escrow_ca"])]
    pub escrow_client_cert: Option<PathBuf>,
    /// The key (PEM) of that certificate.
    #[arg(
        long,
        env = "HYPERGATE_GATEWAY_ESCROW_CLIENT_KEY",
        requires = "escrow_client_cert"
    )]
    pub escrow_client_key: Option<PathBuf>,
    /// An operator client id at the escrow, for `ctl revoke` (the escrow lets only operators
    /// and owners revoke); it uses --escrow-operator-cert/-key and the escrow's secret file.
    #[arg(
        long,
        env = "HYPERGATE_GATEWAY_ESCROW_OPERATOR_ID",
        requires = "escrow_url"
    )]
    pub escrow_operator_id: Option<String>,
    /// The operator's client certificate (PEM).
    #[arg(long, env = "HYPERGATE_GATEWAY_ESCROW_OPERATOR_CERT", requires_all = ["escrow_operator_key", "escrow_operator_id"])]
    pub escrow_operator_cert: Option<PathBuf>,
    /// The key (PEM) of that certificate.
    #[arg(
        long,
        env = "HYPERGATE_GATEWAY_ESCROW_OPERATOR_KEY",
        requires = "escrow_operator_cert"
    )]
    pub escrow_operator_key: Option<PathBuf>,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let identity_path = args.data_dir.join("identity.json");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let identity = Identity::load_or_create(&identity_path).context("the gateway identity")?;
    let accept = if args.allow_workers.is_empty() {
        AcceptPolicy::Open
    } else {
        let peers = args
            .allow_workers
            .iter()
            .map(|hex| {
                hex.parse::<PeerId>()
                    .map_err(|e| anyhow::anyhow!("--allow-worker {hex}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        AcceptPolicy::AllowList(peers)
    };
    let admin_token = match &args.admin_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
            Some(token)
        }
        None => None,
    };
    let escrow = escrow_client(
        &args,
        args.escrow_client_id.as_deref(),
        args.escrow_client_cert.as_deref(),
        args.escrow_client_key.as_deref(),
    )
    .context("the escrow client")?;
    let escrow_operator = escrow_client(
        &args,
        args.escrow_operator_id.as_deref(),
        args.escrow_operator_cert.as_deref(),
        args.escrow_operator_key.as_deref(),
    )
    .context("the escrow operator client")?;
    let session = SessionConfig {
        limits: Limits {
            max_frame_bytes: args.max_frame_bytes,
            ..Limits::default()
        },
        ..SessionConfig::default()
    };
    let has_escrow = escrow.is_some();
    let gateway = start(GatewayOptions {
        data_dir: args.data_dir.clone(),
        identity,
        http_listen: args.listen,
        peer_listen: args.peer_listen,
        accept,
        link: LinkConfig::default(),
        core: GatewayConfig::default(),
        session,
        outbound_queue: args.outbound_queue,
        limits: super::ClientLimits {
            connections_per_ip: args.connections_per_ip,
            frames_per_second: args.frames_per_second,
            frame_burst: args.frame_burst,
        },
        escrow,
        escrow_operator,
        admin_token,
        token_secret: crate::secret_file::load_or_create_secret(
            &args.data_dir.join("token-secret"),
        )?,
    })
    .await?;
    announce(format_args!(
        "gateway listening on http://{}",
        gateway.http_addr
    ));
    announce(format_args!("peer link listening on {}", gateway.peer_addr));
    announce(format_args!("gateway key: {}", gateway.peer_id.to_hex()));
    if !has_escrow {
        announce(format_args!(
            "no escrow configured: relays are read-only while their workers are away"
        ));
    }
    crate::worker::shutdown_signal().await;
    gateway.shutdown().await;
    Ok(())
}

/// The escrow client `client_id` with its certificate, sharing the escrow URL, secret and CA;
/// `None` without a URL or id.
fn escrow_client(
    args: &GatewayArgs,
    client_id: Option<&str>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<EscrowClientConfig>> {
    let (Some(url), Some(client_id), Some(secret)) =
        (&args.escrow_url, client_id, &args.escrow_secret_file)
    else {
        return Ok(None);
    };
    Ok(Some(EscrowClientConfig::from_files(
        url,
        client_id,
        secret,
        args.escrow_ca.as_deref(),
        cert.zip(key),
    )?))
}

/// Prints a start-up line; a closed stdout must not stop the server.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}
