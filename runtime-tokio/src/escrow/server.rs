//! Starting and stopping the escrow service: open the key, store and audit
//! log, rebuild the core, bind, accept (TLS first when configured), serve
//! HTTP/1.1 per connection, run the expiry sweep and the TLS file watcher,
//! and shut down cleanly.
//!
//! Each accepted connection gets its own task: a TLS handshake (bounded to
//! 10 s) with the configuration current at that moment, then hyper's HTTP/1.1
//! server (request headers bounded to 30 s). A slow or hostile client holds
//! only its own task. Shutdown stops accepting, asks open connections to
//! finish their current request, waits up to 10 s, wipes the vault and drops
//! the store on a plain thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use hypergate_adapters::audit::{AuditError, AuditLog};
use hypergate_adapters::crypto::{BoxKeyPair, IdentityError};
use hypergate_adapters::escrow_store::{
    EmbeddedEscrowStore, EscrowStore, EscrowStoreError, PostgresEscrowStore,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::escrow::auth::Authenticator;
use crate::escrow::config::{EscrowConfig, StoreChoice};
use crate::escrow::handlers::{App, router};
use crate::escrow::metrics::EscrowMetrics;
use crate::escrow::service::{EscrowService, ServiceError};
use crate::escrow::sweep::run_expiry_sweep;
use crate::escrow::tls::{ReloadingConfig, TlsError, watch_files};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the service could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The escrow key file.
    #[error("escrow key {path}: {source}")]
    Keys {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: IdentityError,
    },
    /// The store could not be opened or migrated.
    #[error("escrow store: {0}")]
    Store(#[from] EscrowStoreError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The allow-list or secrets are unusable.
    #[error("clients: {0}")]
    Clients(String),
    /// Rebuilding the state failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Binding the listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// A start-up task panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// A running escrow service.
#[derive(Debug)]
pub struct EscrowServer {
    local_addr: SocketAddr,
    service: Arc<EscrowService>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

async fn open_store(choice: &StoreChoice) -> Result<Arc<dyn EscrowStore>, StartError> {
    let choice = choice.clone();
    tokio::task::spawn_blocking(move || -> Result<Arc<dyn EscrowStore>, EscrowStoreError> {
        match choice {
            StoreChoice::Embedded { dir } => Ok(Arc::new(EmbeddedEscrowStore::open(&dir)?)),
            StoreChoice::Postgres { settings, migrate } => {
                let store = PostgresEscrowStore::connect(&settings)?;
                if migrate {
                    let report = store.migrate()?;
                    for name in &report.applied {
                        tracing::info!(migration = %name, "applied escrow schema migration");
                    }
                }
                Ok(Arc::new(store))
            }
        }
    })
    .await
    .map_err(|error| StartError::Task(error.to_string()))?
    .map_err(StartError::Store)
}

impl EscrowServer {
    /// Opens everything, binds and starts serving.
    pub async fn start(config: EscrowConfig) -> Result<Self, StartError> {
        let keypair_path = config.keypair_path.clone();
        let keys = tokio::task::spawn_blocking(move || BoxKeyPair::load_or_create(&keypair_path))
            .await
            .map_err(|error| StartError::Task(error.to_string()))?
            .map_err(|source| StartError::Keys {
                path: config.keypair_path.clone(),
                source,
            })?;
        let auth = Arc::new(
            Authenticator::new(
                config.clients.clone(),
                config.shared_secret.clone(),
                config.replay_capacity,
            )
            .map_err(StartError::Clients)?,
        );
        let tls = config.tls.as_ref().map(ReloadingConfig::load).transpose()?;
        let store = open_store(&config.store).await?;
        let audit = AuditLog::open(&config.audit_dir).await?;
        let metrics = EscrowMetrics::new();
        if let Some(repair) = audit.repaired() {
            metrics.audit_repairs.inc();
            tracing::warn!(
                audit_dir = %config.audit_dir.display(),
                damaged_copy = %repair.damaged_dir.display(),
                entries = repair.entries,
                signed_entries = ?repair.signed_entries,
                dropped_bytes = repair.dropped_bytes,
                cause = %repair.cause,
                "audit log rebuilt after a crash inside an append; the damaged copy is kept"
            );
        }
        let service =
            EscrowService::start(store, audit, keys, config.policy.clone(), metrics.clone())
                .await?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let app = App {
            service: service.clone(),
            auth,
            metrics,
        };
        let routes = router(app, &config.base_path, config.metrics_path.as_deref());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            listener,
            tls.clone(),
            routes,
            shutdown_rx.clone(),
        ));
        tasks.spawn(run_expiry_sweep(
            service.clone(),
            config.sweep_interval,
            shutdown_rx.clone(),
        ));
        if let (Some(files), Some(tls)) = (config.tls.clone(), tls) {
            tasks.spawn(watch_files(
                files,
                tls,
                config.tls_reload_interval,
                shutdown_rx,
            ));
        }
        tracing::info!(
            %local_addr,
            base_path = %config.base_path,
            tls = config.tls.is_some(),
            public_key = %service.keys.public_key_base64(),
            "escrow service listening"
        );
        Ok(Self {
            local_addr,
            service,
            shutdown,
            tasks,
        })
    }

    /// The bound address (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service state.
    #[must_use]
    pub fn service(&self) -> &Arc<EscrowService> {
        &self.service
    }

    /// Stops accepting, lets open requests finish (bounded), wipes the vault.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("escrow connections did not finish in time; closing them");
            self.tasks.abort_all();
        }
        let wiped = self.service.wipe_vault();
        tracing::info!(wiped, "escrow service stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ReloadingConfig>,
    routes: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = tls.as_ref().map(ReloadingConfig::acceptor);
                connections.spawn(serve_connection(stream, peer, acceptor, routes.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    routes: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => serve_http(TokioIo::new(stream), routes, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(TokioIo::new(tls), routes, shutdown).await,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                }
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<I>(io: I, routes: axum::Router, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(routes);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "escrow connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// `hypergate escrow serve`: runs until SIGINT or SIGTERM, then shuts down.
pub async fn serve(config: EscrowConfig) -> Result<(), StartError> {
    let server = EscrowServer::start(config).await?;
    // Secrets are wiped the moment a shutdown signal arrives, even if
    // draining connections takes a while.
    let _wipe = server
        .service()
        .vault
        .install_signal_wipe()
        .map_err(|error| StartError::Task(error.to_string()))?;
    wait_for_signal().await;
    tracing::info!("shutdown signal: stopping the escrow service");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
