//! The flags of `hypergate escrow serve`. Each is optional: [`super::resolve`]
//! falls back to the environment variables named in its help, then to the
//! default. Values stay text here so an error can name where a bad value
//! came from.

use std::path::PathBuf;

/// `hypergate escrow serve` flags; each falls back to its environment variables.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [env: HYPERGATE_ESCROW_HOST, ESCROW_HOST; default 0.0.0.0]
    #[arg(long)]
    pub host: Option<String>,
    /// Port [env: HYPERGATE_ESCROW_PORT, ESCROW_PORT; default 4795; 0 picks a free port]
    #[arg(long)]
    pub port: Option<String>,
    /// Base path of the API [env: HYPERGATE_ESCROW_BASE_PATH, ESCROW_BASE_PATH; default /api/escrow]
    #[arg(long)]
    pub base_path: Option<String>,
    /// Directory for keypair.json, audit/ and the embedded store [env: HYPERGATE_ESCROW_STORAGE_DIR, ESCROW_STORAGE_DIR; default escrow-data]
    #[arg(long)]
    pub storage_dir: Option<PathBuf>,
    /// The escrow's X25519 key file [env: HYPERGATE_ESCROW_KEY_PATH; default STORAGE_DIR/keypair.json]
    #[arg(long)]
    pub key_path: Option<PathBuf>,
    /// The audit log directory [env: HYPERGATE_ESCROW_AUDIT_DIR; default STORAGE_DIR/audit]
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// An allowed client, `ID=ROLE` or `ID=ROLE:PEER_HEX`; ROLE is worker, gateway or operator (repeatable) [env: HYPERGATE_ESCROW_CLIENTS, comma-separated]
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// JSON file of allowed clients with their own secrets: {"clients":[{"id","role","peer"?,"secret"?}]}, mode 0600 [env: HYPERGATE_ESCROW_CLIENTS_FILE]
    #[arg(long)]
    pub clients_file: Option<PathBuf>,
    /// File holding the shared HMAC secret [env: HYPERGATE_ESCROW_SHARED_SECRET_FILE; or the secret itself in HYPERGATE_ESCROW_SHARED_SECRET, ESCROW_SHARED_SECRET, GATEWAY_REGISTRATION_SECRET]
    #[arg(long)]
    pub shared_secret_file: Option<PathBuf>,
    /// Serve plain HTTP without TLS (development only) [env: HYPERGATE_ESCROW_TLS_ENABLED=false, ESCROW_TLS_ENABLED=false]
    #[arg(long)]
    pub no_tls: bool,
    /// Server certificate chain, PEM [env: HYPERGATE_ESCROW_TLS_CERT, ESCROW_TLS_SERVER_CERT]
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Server private key, PEM [env: HYPERGATE_ESCROW_TLS_KEY, ESCROW_TLS_SERVER_KEY]
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA bundle that client certificates must chain to, PEM [env: HYPERGATE_ESCROW_TLS_CA, ESCROW_TLS_CA]
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// How often certificate files are checked for changes, ms [env: HYPERGATE_ESCROW_TLS_RELOAD_MS; default 1000]
    #[arg(long)]
    pub tls_reload_ms: Option<String>,
    /// PostgreSQL URL; without it the embedded store is used [env: HYPERGATE_ESCROW_DATABASE_URL, ESCROW_DATABASE_URL]
    #[arg(long)]
    pub database_url: Option<String>,
    /// Pool size [env: HYPERGATE_ESCROW_DB_POOL_SIZE, ESCROW_DB_POOL_SIZE; default 5]
    #[arg(long)]
    pub db_pool_size: Option<String>,
    /// Idle connection timeout, ms [env: HYPERGATE_ESCROW_DB_IDLE_TIMEOUT_MS, ESCROW_DB_IDLE_TIMEOUT_MS; default 10000]
    #[arg(long)]
    pub db_idle_timeout_ms: Option<String>,
    /// Do not apply pending PostgreSQL migrations before serving (they are applied by
    /// default; `hypergate escrow migrate` applies them alone) [env: HYPERGATE_ESCROW_MIGRATE=false]
    #[arg(long)]
    pub no_migrate: bool,
    /// Do not serve metrics [env: HYPERGATE_ESCROW_METRICS_DISABLED, ESCROW_METRICS_DISABLED]
    #[arg(long)]
    pub metrics_disabled: bool,
    /// Path of the metrics endpoint at the root (it is also served under the base path) [env: HYPERGATE_ESCROW_METRICS_PATH, ESCROW_METRICS_PATH; default /metrics]
    #[arg(long)]
    pub metrics_path: Option<String>,
    /// Policy version deposits must name [env: HYPERGATE_ESCROW_POLICY_VERSION, ESCROW_POLICY_VERSION]
    #[arg(long)]
    pub policy_version: Option<String>,
    /// Lease TTL, ms [env: HYPERGATE_ESCROW_LEASE_TTL_MS, ESCROW_LEASE_TTL_MS; default 600000]
    #[arg(long)]
    pub lease_ttl_ms: Option<String>,
    /// Longest deposit lifetime, ms [env: HYPERGATE_ESCROW_DEPOSIT_TTL_MS, ESCROW_DEPOSIT_TTL_MS; default 86400000]
    #[arg(long)]
    pub deposit_ttl_ms: Option<String>,
    /// Worker silence needed before an unlock, ms [env: HYPERGATE_ESCROW_PEER_LIVENESS_TIMEOUT_MS, ESCROW_PEER_LIVENESS_TIMEOUT_MS; default 45000]
    #[arg(long)]
    pub peer_liveness_timeout_ms: Option<String>,
    /// Largest mirror lag accepted, ms [env: HYPERGATE_ESCROW_MIRROR_MAX_LAG_MS, ESCROW_MIRROR_MAX_LAG_MS; default 15000]
    #[arg(long)]
    pub mirror_max_lag_ms: Option<String>,
    /// Longest time since the mirror was in sync, ms [env: HYPERGATE_ESCROW_MIRROR_WINDOW_MS, ESCROW_MIRROR_WINDOW_MS; default 60000]
    #[arg(long)]
    pub mirror_window_ms: Option<String>,
    /// Require the registration's escrow flag, true/false [env: HYPERGATE_ESCROW_REQUIRE_FLAG, ESCROW_REQUIRE_FLAG; default true]
    #[arg(long)]
    pub require_flag: Option<String>,
    /// Key releases per deposit [env: HYPERGATE_ESCROW_MAX_UNLOCKS_PER_LEASE, ESCROW_MAX_UNLOCKS_PER_LEASE; default 1]
    #[arg(long)]
    pub max_unlocks_per_lease: Option<String>,
    /// Longest sleep of the expiry sweep between lease deadlines, ms [env: HYPERGATE_ESCROW_SWEEP_INTERVAL_MS; default 30000]
    #[arg(long)]
    pub sweep_interval_ms: Option<String>,
}
