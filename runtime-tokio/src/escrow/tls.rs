//! TLS for the escrow service: rustls (ring provider), mandatory client
//! certificates, and hot reload of the certificate, key and CA files.
//!
//! Contract:
//! - Every connection must present a client certificate chaining to the CA
//!   bundle; a client without one, or with one from another CA, is refused
//!   during the handshake, before any HTTP is read.
//! - [`ReloadingConfig`] holds the current server configuration; each new
//!   connection takes the one current at accept time, so a reload never
//!   disturbs connections already open.
//! - [`watch_files`] polls the three files' identity (inode, size, mtime)
//!   every interval; after a change it waits for the files to settle (the
//!   original debounced 300 ms), then rebuilds the configuration. A rebuild
//!   that fails (a half-written file, a key that does not match) keeps the
//!   previous configuration and is retried at the next change: a bad file
//!   never takes the service down.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::escrow::config::TlsFiles;

/// PEM reading and the crypto provider are shared with the escrow client, in adapters.
pub use hypergate_adapters::tls::{
    PemError, provider, read_certificates, read_private_key, read_roots,
};

/// How long files must stay unchanged before a reload reads them.
const SETTLE: Duration = Duration::from_millis(300);

/// Why a TLS configuration could not be built (the operator's files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or holds no PEM section of the needed kind.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the certificates or key (e.g. the key does not match).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA bundle.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// Builds the server configuration: the files' certificate and key, client
/// certificates required and verified against the CA bundle, HTTP/1.1.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certificates(&files.cert)?;
    let key = read_private_key(&files.key)?;
    let roots = Arc::new(read_roots(&files.ca)?);
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| TlsError::Verifier(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration new connections use; swapped by reloads.
#[derive(Debug, Clone)]
pub struct ReloadingConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ReloadingConfig {
    /// Loads the files once; an error here stops the service from starting.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(RwLock::new(load_server_config(files)?)),
        })
    }

    /// An acceptor with the configuration current now.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// (inode, size, mtime in ns) of each file; `None` for a file that is missing now.
type Fingerprint = Vec<Option<(u64, u64, i64)>>;

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|meta| {
                (
                    meta.ino(),
                    meta.size(),
                    meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
                )
            })
        })
        .collect()
}

/// Polls the files every `interval` and reloads `config` after they change,
/// until `shutdown` turns true.
pub async fn watch_files(
    files: TlsFiles,
    config: ReloadingConfig,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = fingerprint(&files);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = fingerprint(&files);
        if now == seen {
            continue;
        }
        // Let a writer finish (a cert and its key are rarely replaced at once).
        tokio::time::sleep(SETTLE).await;
        let settled = fingerprint(&files);
        if settled != now {
            continue; // still changing: look again next round
        }
        seen = settled;
        match load_server_config(&files) {
            Ok(fresh) => {
                config.replace(fresh);
                tracing::info!(cert = %files.cert.display(), "escrow TLS files reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "escrow TLS files changed but do not load; keeping the previous ones");
            }
        }
    }
}
