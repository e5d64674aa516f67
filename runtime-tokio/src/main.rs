//! The `hypergate` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// hypergate: the always-on public gateway for Hypertuna-style Nostr relays.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line (fields at the top level:
    /// `timestamp`, `level`, `target`, `message`, `relay`, `lease`, …). Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "HYPERGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs go to stderr (stdout carries the commands' output), at `warn` unless RUST_LOG says
/// otherwise.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a gateway, an escrow and one worker with one relay in this process, on embedded
    /// storage under --data-dir; print the relay's WebSocket URL and run until interrupted.
    Up {
        /// Where everything lives (created on the first run, reused after).
        #[arg(long, default_value = "hypergate-data", env = "HYPERGATE_DATA_DIR")]
        data_dir: PathBuf,
        /// The gateway's client listener.
        #[arg(long, default_value = "127.0.0.1:8080", env = "HYPERGATE_LISTEN")]
        listen: SocketAddr,
        /// The gateway's peer-link listener.
        #[arg(long, default_value = "127.0.0.1:8081", env = "HYPERGATE_PEER_LISTEN")]
        peer_listen: SocketAddr,
        /// Print one JSON line with the URLs.
        #[arg(long)]
        json: bool,
    },
    /// The public gateway: NIP-01 WebSocket and HTTP for clients, the peer link for workers.
    Gateway(Box<hypergate_tokio::gateway::cli::GatewayArgs>),
    /// Operator commands against a running gateway (leases, replicas, relays, revoke, …).
    Ctl(hypergate_tokio::gateway::ctl::CtlArgs),
    /// Drive the gateway core in real time through worker churn: peer-first
    /// routing, replica fallback when every worker is gone, and return.
    Demo {
        /// Workers serving the demo relay.
        #[arg(long, default_value_t = 3, env = "HYPERGATE_DEMO_WORKERS")]
        workers: u8,
        /// Heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 200, env = "HYPERGATE_DEMO_HEARTBEAT_MS")]
        heartbeat_ms: u64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load generator and benchmarks (NIP-01 EVENT and REQ; the gateway side by side).
    Bench(hypergate_tokio::bench::BenchArgs),
    /// The escrow audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The escrow service: holds relays' sealed gateway writer keys and
    /// releases them to gateways as leases under the automated policy.
    Escrow {
        #[command(subcommand)]
        command: EscrowCommand,
    },
    /// A worker: hosts relays on disk and serves them to Nostr clients.
    Worker {
        #[command(subcommand)]
        command: WorkerCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// Create the data directory: the worker identity and a first relay (owner key, owner log,
    /// the worker's writer log). Prints the relay key, the peer id and the WebSocket URL.
    Init {
        /// The data directory (created with mode 0700).
        #[arg(long, env = "HYPERGATE_WORKER_DATA_DIR")]
        data_dir: PathBuf,
        /// The address `run` will listen on (for the printed URL).
        #[arg(
            long,
            default_value = "127.0.0.1:8480",
            env = "HYPERGATE_WORKER_LISTEN"
        )]
        listen: SocketAddr,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve every relay of the data directory over NIP-01 WebSocket and NIP-11 at
    /// /relay/{relayKey} (and / when there is one relay).
    Run {
        /// The data directory made by `hypergate worker init`.
        #[arg(long, env = "HYPERGATE_WORKER_DATA_DIR")]
        data_dir: PathBuf,
        /// Where to listen.
        #[arg(
            long,
            default_value = "127.0.0.1:8480",
            env = "HYPERGATE_WORKER_LISTEN"
        )]
        listen: SocketAddr,
        /// Frames queued per connection; a client that lets them pile up is disconnected.
        #[arg(long, default_value_t = 1024, env = "HYPERGATE_WORKER_OUTBOUND_QUEUE")]
        outbound_queue: usize,
        /// Longest client frame in bytes (longer ones get a NOTICE; over twice this, the
        /// connection is closed).
        #[arg(
            long,
            default_value_t = 131_072,
            env = "HYPERGATE_WORKER_MAX_FRAME_BYTES"
        )]
        max_frame_bytes: usize,
        // Boxed: the gateway and escrow options are many and most runs need none.
        #[command(flatten)]
        gateway: Box<GatewayArgs>,
    },
    /// Print a running worker's status (GET /status): relays, cores and mirror lag, pending
    /// jobs, rotations. Exit 1 if the worker is unreachable.
    Status {
        /// The worker's base URL (its listen address).
        #[arg(
            long,
            default_value = "http://127.0.0.1:8480",
            env = "HYPERGATE_WORKER_URL"
        )]
        url: String,
        /// Print the JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The gateway link and escrow of `hypergate worker run`.
#[derive(Debug, Args)]
struct GatewayArgs {
    /// `host:port` of the gateway's peer-link listener; with it the worker agent runs too
    /// (registration, mirroring, pending-write resync, rotation).
    #[arg(long, env = "HYPERGATE_WORKER_GATEWAY", requires = "gateway_key")]
    gateway: Option<String>,
    /// The gateway's public key (hex), pinned: the link refuses any other.
    #[arg(long, env = "HYPERGATE_WORKER_GATEWAY_KEY", requires = "gateway")]
    gateway_key: Option<String>,
    /// The escrow service's base URL (`https://host:port/api/escrow`); with it the gateway
    /// writer keys are deposited.
    #[arg(
        long,
        env = "HYPERGATE_WORKER_ESCROW_URL",
        requires_all = ["gateway", "escrow_client_id", "escrow_secret_file"]
    )]
    escrow_url: Option<String>,
    /// This worker's client id on the escrow's allow-list.
    #[arg(
        long,
        env = "HYPERGATE_WORKER_ESCROW_CLIENT_ID",
        requires = "escrow_url"
    )]
    escrow_client_id: Option<String>,
    /// A file holding the escrow HMAC secret.
    #[arg(
        long,
        env = "HYPERGATE_WORKER_ESCROW_SECRET_FILE",
        requires = "escrow_url"
    )]
    escrow_secret_file: Option<PathBuf>,
    /// The CA bundle (PEM) the escrow's certificate chains to (required for https).
    #[arg(long, env = "HYPERGATE_WORKER_ESCROW_CA", requires = "escrow_url")]
    escrow_ca: Option<PathBuf>,
    /// This worker's client certificate (PEM) for the escrow's mTLS.
    #[arg(
        long,
        env = "HYPERGATE_WORKER_ESCROW_CLIENT_CERT",
        requires_all = ["escrow_client_key", "escrow_ca"]
    )]
    escrow_client_cert: Option<PathBuf>,
    /// The key (PEM) of that certificate.
    #[arg(
        long,
        env = "HYPERGATE_WORKER_ESCROW_CLIENT_KEY",
        requires = "escrow_client_cert"
    )]
    escrow_client_key: Option<PathBuf>,
    /// Re-deposit a gateway writer key this many seconds before its deposit expires.
    #[arg(
        long,
        default_value_t = 3600,
        env = "HYPERGATE_WORKER_ESCROW_REDEPOSIT_MARGIN_SECS"
    )]
    escrow_redeposit_margin_secs: u64,
}

impl GatewayArgs {
    fn into_options(self) -> anyhow::Result<Option<hypergate_tokio::worker::GatewayOptions>> {
        let (Some(addr), Some(key)) = (self.gateway, self.gateway_key) else {
            return Ok(None);
        };
        let key = key
            .parse()
            .map_err(|e| anyhow::anyhow!("--gateway-key: {e}"))?;
        let escrow = match (
            self.escrow_url,
            self.escrow_client_id,
            self.escrow_secret_file,
        ) {
            (Some(url), Some(client_id), Some(secret_file)) => {
                Some(hypergate_tokio::worker::EscrowOptions {
                    url,
                    client_id,
                    secret_file,
                    ca: self.escrow_ca,
                    client_cert: self.escrow_client_cert.zip(self.escrow_client_key),
                    redeposit_margin: Duration::from_secs(self.escrow_redeposit_margin_secs),
                })
            }
            _ => None,
        };
        Ok(Some(hypergate_tokio::worker::GatewayOptions {
            addr,
            key,
            escrow,
        }))
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every entry of an audit log against its key, signed tree and digest
    /// chain, and print the entries. Exit 0: intact; 1: does not verify;
    /// 2: verifies but unsigned bytes follow it (entries lost or cut short).
    Verify {
        /// The audit log directory (the escrow's `<storage>/audit`).
        dir: PathBuf,
        /// Expected public key of the log (hex); without it the key on disk is trusted.
        #[arg(long, env = "HYPERGATE_AUDIT_KEY")]
        key: Option<String>,
        /// Print each entry's stored JSON, one per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EscrowCommand {
    /// Serve the escrow API over mutual TLS (see docs/operations.md, "Escrow service").
    Serve(Box<hypergate_tokio::escrow::ServeArgs>),
    /// Apply the escrow schema's pending migrations to PostgreSQL (idempotent;
    /// safe to run concurrently).
    Migrate {
        /// PostgreSQL URL, e.g. postgres://gateway@127.0.0.1:5432/gateway_escrow
        #[arg(long, env = "ESCROW_DATABASE_URL")]
        database_url: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The glommio gateway runs its own executors; it must not start inside a tokio runtime.
    if let Command::Gateway(args) = &cli.command
        && args.runtime == hypergate_tokio::gateway::cli::Runtime::Glommio
    {
        return match hypergate_tokio::gateway::cli::run_glommio(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("hypergate: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hypergate: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Audit {
                command: AuditCommand::Verify { dir, key, json },
            } => hypergate_tokio::admin::audit_verify(&dir, key.as_deref(), json).await,
            Command::Escrow {
                command: EscrowCommand::Migrate { database_url, json },
            } => hypergate_tokio::admin::escrow_migrate(database_url, json).await,
            Command::Worker {
                command:
                    WorkerCommand::Init {
                        data_dir,
                        listen,
                        json,
                    },
            } => hypergate_tokio::worker::init(hypergate_tokio::worker::InitOptions {
                data_dir,
                listen,
                json,
                quiet: false,
            })
            .await
            .map(|()| ExitCode::SUCCESS),
            Command::Worker {
                command:
                    WorkerCommand::Run {
                        data_dir,
                        listen,
                        outbound_queue,
                        max_frame_bytes,
                        gateway,
                    },
            } => match (*gateway).into_options() {
                Ok(gateway) => hypergate_tokio::worker::run(hypergate_tokio::worker::RunOptions {
                    data_dir,
                    listen,
                    outbound_queue,
                    max_frame_bytes,
                    gateway,
                    quiet: false,
                })
                .await
                .map(|()| ExitCode::SUCCESS),
                Err(error) => Err(error),
            },
            Command::Worker {
                command: WorkerCommand::Status { url, json },
            } => hypergate_tokio::worker::status(hypergate_tokio::worker::StatusOptions {
                url,
                json,
            })
            .await
            .map(|()| ExitCode::SUCCESS),
            Command::Demo {
                workers,
                heartbeat_ms,
                json,
            } => hypergate_tokio::demo::run(hypergate_tokio::demo::DemoOptions {
                workers,
                heartbeat: Duration::from_millis(heartbeat_ms.max(20)),
                json,
            })
            .await
            .map(|()| ExitCode::SUCCESS),
            Command::Up {
                data_dir,
                listen,
                peer_listen,
                json,
            } => hypergate_tokio::up::run(hypergate_tokio::up::UpOptions {
                data_dir,
                listen,
                peer_listen,
                json,
            })
            .await
            .map(|()| ExitCode::SUCCESS),
            Command::Bench(args) => hypergate_tokio::bench::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Ctl(args) => hypergate_tokio::gateway::ctl::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Gateway(args) => hypergate_tokio::gateway::cli::run(*args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Escrow {
                command: EscrowCommand::Serve(args),
            } => {
                let env = |name: &str| std::env::var(name).ok();
                let config = hypergate_tokio::escrow::config::resolve(&args, &env)?;
                hypergate_tokio::escrow::serve(config).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hypergate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
