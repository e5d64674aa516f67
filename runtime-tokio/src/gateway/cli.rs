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

/// Which runtime serves the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// The multi-threaded tokio runtime (works everywhere).
    Tokio,
    /// One pinned io_uring executor per shard (Linux; needs locked memory, see the
    /// operations runbook).
    Glommio,
}

/// Options of `hypergate gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The runtime that serves: `tokio`, or `glommio` (thread-per-core on io_uring).
    #[arg(
        long,
        value_enum,
        default_value = "tokio",
        env = "HYPERGATE_GATEWAY_RUNTIME"
    )]
    pub runtime: Runtime,
    /// glommio shards (pinned executors, one listener each); default: one per CPU.
    #[arg(long, env = "HYPERGATE_GATEWAY_SHARDS")]
    pub shards: Option<usize>,
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

/// Runs the gateway on tokio until SIGINT or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.shards.is_none(),
        "--shards applies to --runtime glommio only (tokio schedules over every CPU by itself)"
    );
    let options = options(&args)?;
    let has_escrow = options.escrow.is_some();
    let gateway = start(options).await?;
    announce_started(
        gateway.http_addr,
        gateway.peer_addr,
        gateway.peer_id,
        has_escrow,
    );
    crate::worker::shutdown_signal().await;
    gateway.shutdown().await;
    Ok(())
}

/// Runs the gateway on glommio shards until SIGINT or SIGTERM; call it outside any tokio
/// runtime (the glommio gateway has none).
pub fn run_glommio(args: &GatewayArgs) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered before the shards start, so an early signal is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("listening for SIGINT/SIGTERM")?;
    let options = options(args)?;
    let has_escrow = options.escrow.is_some();
    let shards = args
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let gateway = hypergate_glommio::gateway::start(options, shards).context(
        "starting the glommio gateway (the tokio gateway, `--runtime tokio`, needs no locked \
         memory or io_uring)",
    )?;
    announce(format_args!("glommio shards: {}", gateway.shards()));
    announce_started(
        gateway.http_addr,
        gateway.peer_addr,
        gateway.peer_id,
        has_escrow,
    );
    let _ = signals.forever().next();
    gateway.shutdown();
    Ok(())
}

/// The gateway's options from the command line and the data directory.
fn options(args: &GatewayArgs) -> anyhow::Result<GatewayOptions> {
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
        args,
        args.escrow_client_id.as_deref(),
        args.escrow_client_cert.as_deref(),
        args.escrow_client_key.as_deref(),
    )
    .context("the escrow client")?;
    let escrow_operator = escrow_client(
        args,
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
    Ok(GatewayOptions {
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
}

/// The start-up lines operators and scripts read.
fn announce_started(http_addr: SocketAddr, peer_addr: SocketAddr, peer_id: PeerId, escrow: bool) {
    announce(format_args!("gateway listening on http://{http_addr}"));
    announce(format_args!("peer link listening on {peer_addr}"));
    announce(format_args!("gateway key: {}", peer_id.to_hex()));
    if !escrow {
        announce(format_args!(
            "no escrow configured: relays are read-only while their workers are away"
        ));
    }
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
