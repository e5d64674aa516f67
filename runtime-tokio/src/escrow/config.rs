//! Configuration of `hypergate escrow serve`: flags, then environment, then
//! defaults.
//!
//! Every setting is read from its flag first, then from `HYPERGATE_ESCROW_*`,
//! then from the original's `ESCROW_*` name where it had one (the table in
//! `docs/operations.md` lists them all). Secrets are never flags (they would
//! show in `ps`): the shared HMAC secret comes from the environment or a
//! file, per-client secrets from the clients file, which must not be
//! readable by group or others.
//!
//! Resolution is a pure function of the flags and an environment lookup
//! ([`resolve`]), so it is tested without touching the process environment.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypergate_adapters::escrow_store::PostgresSettings;
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::ids::PeerId;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::escrow::auth::{ClientEntry, DEFAULT_REPLAY_CAPACITY, Role, valid_client_id};

mod args;
pub use args::ServeArgs;

/// Why the configuration is unusable (always the operator's to fix).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a value of the wrong form.
    #[error("{source_name}: {detail}")]
    Invalid {
        /// The flag or variable it came from.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A file named by the configuration could not be read safely.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Where the escrow keeps deposits and lease history.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// One redb file in this directory.
    Embedded {
        /// The directory.
        dir: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// Connection settings.
        settings: Box<PostgresSettings>,
        /// Apply pending migrations at start.
        migrate: bool,
    },
}

/// The TLS files (all PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// CA bundle client certificates must chain to.
    pub ca: PathBuf,
}

/// Everything the escrow service needs to start.
pub struct EscrowConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The API's base path (`/api/escrow`), no trailing slash.
    pub base_path: String,
    /// The escrow's X25519 key file.
    pub keypair_path: PathBuf,
    /// The audit log directory.
    pub audit_dir: PathBuf,
    /// The store backend.
    pub store: StoreChoice,
    /// TLS files; `None` serves plain HTTP (explicitly asked for).
    pub tls: Option<TlsFiles>,
    /// How often TLS files are checked for changes.
    pub tls_reload_interval: Duration,
    /// The unlock policy.
    pub policy: PolicyConfig,
    /// The allow-list.
    pub clients: Vec<ClientEntry>,
    /// The shared HMAC secret, for clients without their own.
    pub shared_secret: Option<Zeroizing<Vec<u8>>>,
    /// The root metrics path; `None`: metrics disabled.
    pub metrics_path: Option<String>,
    /// The expiry sweep's longest sleep.
    pub sweep_interval: Duration,
    /// Capacity of the nonce replay cache.
    pub replay_capacity: usize,
}

impl std::fmt::Debug for EscrowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowConfig")
            .field("listen", &self.listen)
            .field("base_path", &self.base_path)
            .field("keypair_path", &self.keypair_path)
            .field("audit_dir", &self.audit_dir)
            .field("store", &self.store)
            .field("tls", &self.tls)
            .field("policy", &self.policy)
            .field("clients", &self.clients)
            .field("shared_secret", &self.shared_secret.is_some())
            .field("metrics_path", &self.metrics_path)
            .finish_non_exhaustive()
    }
}

/// Reads settings: flag, then each variable in order.
struct Lookup<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
}

impl Lookup<'_> {
    fn get(&self, flag: Option<&str>, flag_name: &str, vars: &[&str]) -> Option<(String, String)> {
        if let Some(value) = flag {
            return Some((value.to_owned(), format!("--{flag_name}")));
        }
        vars.iter().find_map(|var| {
            (self.env)(var)
                .filter(|value| !value.is_empty())
                .map(|value| (value, (*var).to_owned()))
        })
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        flag: Option<&str>,
        flag_name: &str,
        vars: &[&str],
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(flag, flag_name, vars) {
            None => Ok(default),
            Some((text, source_name)) => {
                text.parse().map_err(|error: T::Err| ConfigError::Invalid {
                    source_name,
                    detail: format!("{text:?}: {error}"),
                })
            }
        }
    }

    fn millis(
        &self,
        flag: Option<&str>,
        flag_name: &str,
        vars: &[&str],
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parsed(flag, flag_name, vars, default_ms)
            .map(Duration::from_millis)
    }

    fn flag_or_bool(&self, flag: bool, vars: &[&str]) -> Result<bool, ConfigError> {
        if flag {
            return Ok(true);
        }
        match self.get(None, "", vars) {
            None => Ok(false),
            Some((text, source_name)) => parse_bool(&text, &source_name),
        }
    }
}

fn parse_bool(text: &str, source_name: &str) -> Result<bool, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            source_name: source_name.to_owned(),
            detail: format!("{text:?} is not true or false"),
        }),
    }
}

/// Resolves the configuration from flags and an environment lookup.
pub fn resolve(
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EscrowConfig, ConfigError> {
    let l = Lookup { env };
    let host: IpAddr = l.parsed(
        args.host.as_deref(),
        "host",
        &["HYPERGATE_ESCROW_HOST", "ESCROW_HOST"],
        IpAddr::from([0, 0, 0, 0]),
    )?;
    let port: u16 = l.parsed(
        args.port.as_deref(),
        "port",
        &["HYPERGATE_ESCROW_PORT", "ESCROW_PORT"],
        4795,
    )?;
    let base_path = l
        .get(
            args.base_path.as_deref(),
            "base-path",
            &["HYPERGATE_ESCROW_BASE_PATH", "ESCROW_BASE_PATH"],
        )
        .map_or_else(
            || Ok("/api/escrow".to_owned()),
            |(text, source)| normalise_path(&text, &source),
        )?;
    let storage_dir = args.storage_dir.clone().unwrap_or_else(|| {
        l.get(
            None,
            "",
            &["HYPERGATE_ESCROW_STORAGE_DIR", "ESCROW_STORAGE_DIR"],
        )
        .map_or_else(
            || PathBuf::from("escrow-data"),
            |(text, _)| PathBuf::from(text),
        )
    });
    let path_setting = |flag: &Option<PathBuf>, var: &str, default: PathBuf| {
        flag.clone().unwrap_or_else(|| {
            l.get(None, "", &[var])
                .map_or(default, |(text, _)| PathBuf::from(text))
        })
    };
    let keypair_path = path_setting(
        &args.key_path,
        "HYPERGATE_ESCROW_KEY_PATH",
        storage_dir.join("keypair.json"),
    );
    let audit_dir = path_setting(
        &args.audit_dir,
        "HYPERGATE_ESCROW_AUDIT_DIR",
        storage_dir.join("audit"),
    );

    let tls_disabled = args.no_tls
        || match l.get(
            None,
            "",
            &["HYPERGATE_ESCROW_TLS_ENABLED", "ESCROW_TLS_ENABLED"],
        ) {
            Some((text, source)) => !parse_bool(&text, &source)?,
            None => false,
        };
    let tls_path = |flag: &Option<PathBuf>, name: &str, vars: &[&str]| {
        flag.clone()
            .or_else(|| l.get(None, "", vars).map(|(text, _)| PathBuf::from(text)))
            .ok_or_else(|| {
                ConfigError::Missing(format!(
                    "TLS needs --{name} (or {}); pass --no-tls to serve plain HTTP in development",
                    vars.join(", ")
                ))
            })
    };
    let tls = if tls_disabled {
        None
    } else {
        Some(TlsFiles {
            cert: tls_path(
                &args.tls_cert,
                "tls-cert",
                &["HYPERGATE_ESCROW_TLS_CERT", "ESCROW_TLS_SERVER_CERT"],
            )?,
            key: tls_path(
                &args.tls_key,
                "tls-key",
                &["HYPERGATE_ESCROW_TLS_KEY", "ESCROW_TLS_SERVER_KEY"],
            )?,
            ca: tls_path(
                &args.tls_ca,
                "tls-ca",
                &["HYPERGATE_ESCROW_TLS_CA", "ESCROW_TLS_CA"],
            )?,
        })
    };
    let tls_reload_interval = l.millis(
        args.tls_reload_ms.as_deref(),
        "tls-reload-ms",
        &["HYPERGATE_ESCROW_TLS_RELOAD_MS"],
        Duration::from_secs(1),
    )?;

    let store = resolve_store(args, &l, &storage_dir)?;
    let policy = resolve_policy(args, &l)?;
    let shared_secret = resolve_shared_secret(args, &l)?;
    let mut clients = Vec::new();
    let client_specs: Vec<String> = if args.clients.is_empty() {
        l.get(None, "", &["HYPERGATE_ESCROW_CLIENTS"])
            .map(|(text, _)| {
                text.split(',')
                    .map(str::trim)
                    .filter(|spec| !spec.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        args.clients.clone()
    };
    for spec in &client_specs {
        clients.push(parse_client_spec(spec)?);
    }
    let clients_file = args.clients_file.clone().or_else(|| {
        l.get(None, "", &["HYPERGATE_ESCROW_CLIENTS_FILE"])
            .map(|(text, _)| PathBuf::from(text))
    });
    if let Some(path) = clients_file {
        clients.extend(read_clients_file(&path)?);
    }
    if clients.is_empty() {
        return Err(ConfigError::Missing(
            "no client is allowed: pass --client ID=ROLE[:PEER] (or HYPERGATE_ESCROW_CLIENTS) \
             or --clients-file"
                .into(),
        ));
    }

    let metrics_disabled = l.flag_or_bool(
        args.metrics_disabled,
        &[
            "HYPERGATE_ESCROW_METRICS_DISABLED",
            "ESCROW_METRICS_DISABLED",
        ],
    )?;
    let metrics_path = if metrics_disabled {
        None
    } else {
        Some(
            l.get(
                args.metrics_path.as_deref(),
                "metrics-path",
                &["HYPERGATE_ESCROW_METRICS_PATH", "ESCROW_METRICS_PATH"],
            )
            .map_or_else(
                || Ok("/metrics".to_owned()),
                |(text, source)| normalise_path(&text, &source),
            )?,
        )
    };
    let sweep_interval = l.millis(
        args.sweep_interval_ms.as_deref(),
        "sweep-interval-ms",
        &["HYPERGATE_ESCROW_SWEEP_INTERVAL_MS"],
        Duration::from_secs(30),
    )?;
    Ok(EscrowConfig {
        listen: SocketAddr::new(host, port),
        base_path,
        keypair_path,
        audit_dir,
        store,
        tls,
        tls_reload_interval: tls_reload_interval.max(Duration::from_millis(50)),
        policy,
        clients,
        shared_secret,
        metrics_path,
        sweep_interval: sweep_interval.max(Duration::from_millis(100)),
        replay_capacity: DEFAULT_REPLAY_CAPACITY,
    })
}

fn normalise_path(text: &str, source: &str) -> Result<String, ConfigError> {
    let trimmed = text.trim_end_matches('/');
    if !text.starts_with('/')
        || trimmed.contains("//")
        || trimmed.contains(['?', '#', '{', '}', '*', ':'])
    {
        return Err(ConfigError::Invalid {
            source_name: source.to_owned(),
            detail: format!("{text:?} must be an absolute URL path like /api/escrow"),
        });
    }
    Ok(trimmed.to_owned())
}

fn resolve_store(
    args: &ServeArgs,
    l: &Lookup<'_>,
    storage_dir: &Path,
) -> Result<StoreChoice, ConfigError> {
    let url = l.get(
        args.database_url.as_deref(),
        "database-url",
        &["HYPERGATE_ESCROW_DATABASE_URL", "ESCROW_DATABASE_URL"],
    );
    let enabled = match l.get(
        None,
        "",
        &["HYPERGATE_ESCROW_DB_ENABLED", "ESCROW_DB_ENABLED"],
    ) {
        Some((text, source)) => parse_bool(&text, &source)?,
        None => true,
    };
    let Some((url, source)) = url.filter(|_| enabled) else {
        return Ok(StoreChoice::Embedded {
            dir: storage_dir.join("store"),
        });
    };
    let mut settings = PostgresSettings::from_url(&url).map_err(|_| ConfigError::Invalid {
        source_name: source,
        // The URL may hold a password: never echo it.
        detail: "not a valid PostgreSQL URL".into(),
    })?;
    settings.pool_size = l.parsed(
        args.db_pool_size.as_deref(),
        "db-pool-size",
        &["HYPERGATE_ESCROW_DB_POOL_SIZE", "ESCROW_DB_POOL_SIZE"],
        5,
    )?;
    settings.idle_timeout = l.millis(
        args.db_idle_timeout_ms.as_deref(),
        "db-idle-timeout-ms",
        &[
            "HYPERGATE_ESCROW_DB_IDLE_TIMEOUT_MS",
            "ESCROW_DB_IDLE_TIMEOUT_MS",
        ],
        Duration::from_secs(10),
    )?;
    // Migrations run at start unless turned off: the schema a build needs is the one it brings.
    let migrate = !args.no_migrate
        && match l.get(None, "", &["HYPERGATE_ESCROW_MIGRATE"]) {
            None => true,
            Some((text, source_name)) => parse_bool(&text, &source_name)?,
        };
    Ok(StoreChoice::Postgres {
        settings: Box::new(settings),
        migrate,
    })
}

fn resolve_policy(args: &ServeArgs, l: &Lookup<'_>) -> Result<PolicyConfig, ConfigError> {
    let defaults = PolicyConfig::default();
    let ms = |flag: &Option<String>, name: &str, suffix: &str, default: Duration| {
        l.millis(
            flag.as_deref(),
            name,
            &[
                &format!("HYPERGATE_ESCROW_{suffix}"),
                &format!("ESCROW_{suffix}"),
            ],
            default,
        )
    };
    let require_flag = match l.get(
        args.require_flag.as_deref(),
        "require-flag",
        &["HYPERGATE_ESCROW_REQUIRE_FLAG", "ESCROW_REQUIRE_FLAG"],
    ) {
        Some((text, source)) => parse_bool(&text, &source)?,
        None => defaults.require_registration_flag,
    };
    let policy = PolicyConfig {
        version: l
            .get(
                args.policy_version.as_deref(),
                "policy-version",
                &["HYPERGATE_ESCROW_POLICY_VERSION", "ESCROW_POLICY_VERSION"],
            )
            .map_or(defaults.version.clone(), |(text, _)| text),
        lease_ttl: ms(
            &args.lease_ttl_ms,
            "lease-ttl-ms",
            "LEASE_TTL_MS",
            defaults.lease_ttl,
        )?,
        max_deposit_ttl: ms(
            &args.deposit_ttl_ms,
            "deposit-ttl-ms",
            "DEPOSIT_TTL_MS",
            defaults.max_deposit_ttl,
        )?,
        peer_liveness_timeout: ms(
            &args.peer_liveness_timeout_ms,
            "peer-liveness-timeout-ms",
            "PEER_LIVENESS_TIMEOUT_MS",
            defaults.peer_liveness_timeout,
        )?,
        mirror_freshness_max_lag: ms(
            &args.mirror_max_lag_ms,
            "mirror-max-lag-ms",
            "MIRROR_MAX_LAG_MS",
            defaults.mirror_freshness_max_lag,
        )?,
        mirror_freshness_window: ms(
            &args.mirror_window_ms,
            "mirror-window-ms",
            "MIRROR_WINDOW_MS",
            defaults.mirror_freshness_window,
        )?,
        require_registration_flag: require_flag,
        max_unlocks_per_lease: l.parsed(
            args.max_unlocks_per_lease.as_deref(),
            "max-unlocks-per-lease",
            &[
                "HYPERGATE_ESCROW_MAX_UNLOCKS_PER_LEASE",
                "ESCROW_MAX_UNLOCKS_PER_LEASE",
            ],
            defaults.max_unlocks_per_lease,
        )?,
    };
    if policy.lease_ttl.is_zero() || policy.max_deposit_ttl.is_zero() {
        return Err(ConfigError::Missing(
            "the lease and deposit TTLs must be positive".into(),
        ));
    }
    if policy.version.is_empty() || policy.version.len() > 128 {
        return Err(ConfigError::Missing(
            "the policy version must be 1..=128 bytes".into(),
        ));
    }
    Ok(policy)
}

fn resolve_shared_secret(
    args: &ServeArgs,
    l: &Lookup<'_>,
) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
    let file = args.shared_secret_file.clone().or_else(|| {
        l.get(None, "", &["HYPERGATE_ESCROW_SHARED_SECRET_FILE"])
            .map(|(text, _)| PathBuf::from(text))
    });
    if let Some(path) = file {
        let bytes = read_private_file(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        return Ok(Some(Zeroizing::new(text.trim_end().as_bytes().to_vec())));
    }
    Ok(l.get(
        None,
        "",
        &[
            "HYPERGATE_ESCROW_SHARED_SECRET",
            "ESCROW_SHARED_SECRET",
            "GATEWAY_REGISTRATION_SECRET",
        ],
    )
    .map(|(text, _)| Zeroizing::new(text.into_bytes())))
}

/// Parses `ID=ROLE` or `ID=ROLE:PEER_HEX`.
pub fn parse_client_spec(spec: &str) -> Result<ClientEntry, ConfigError> {
    let invalid = |detail: String| ConfigError::Invalid {
        source_name: "--client".into(),
        detail,
    };
    let (id, rest) = spec
        .split_once('=')
        .ok_or_else(|| invalid(format!("{spec:?} is not ID=ROLE[:PEER_HEX]")))?;
    let (role, peer) = match rest.split_once(':') {
        Some((role, peer)) => (role, Some(peer)),
        None => (rest, None),
    };
    if !valid_client_id(id) {
        return Err(invalid(format!(
            "client id {id:?} must be 1..=64 characters of [A-Za-z0-9._-]"
        )));
    }
    Ok(ClientEntry {
        id: id.to_owned(),
        role: role.parse::<Role>().map_err(invalid)?,
        peer: peer
            .map(|hex| hex.parse::<PeerId>())
            .transpose()
            .map_err(|error| invalid(format!("client {id:?} peer: {error}")))?,
        secret: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    clients: Vec<ClientFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFileEntry {
    id: String,
    role: String,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

/// Reads a file that must not be accessible by group or others.
fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let file_error = |detail: String| ConfigError::File {
        path: path.to_owned(),
        detail,
    };
    let metadata = std::fs::metadata(path).map_err(|error| file_error(error.to_string()))?;
    if metadata.mode() & 0o077 != 0 {
        return Err(file_error(format!(
            "holds secrets but is accessible by group or others (mode {:o}); run chmod 600",
            metadata.mode() & 0o777
        )));
    }
    if metadata.len() > 1024 * 1024 {
        return Err(file_error("larger than 1 MiB".into()));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|error| file_error(error.to_string()))
}

fn read_clients_file(path: &Path) -> Result<Vec<ClientEntry>, ConfigError> {
    let bytes = read_private_file(path)?;
    let file: ClientsFile = serde_json::from_slice(&bytes).map_err(|error| ConfigError::File {
        path: path.to_owned(),
        detail: format!("not a clients file: line {}", error.line()),
    })?;
    file.clients
        .into_iter()
        .map(|entry| {
            let spec = match &entry.peer {
                Some(peer) => format!("{}={}:{peer}", entry.id, entry.role),
                None => format!("{}={}", entry.id, entry.role),
            };
            let mut client = parse_client_spec(&spec)?;
            client.secret = entry
                .secret
                .map(|secret| Zeroizing::new(secret.into_bytes()));
            Ok(client)
        })
        .collect()
}

#[cfg(test)]
mod tests;
