//! How a client reaches and authenticates to the escrow: the base URL, the client id and
//! HMAC secret, and the TLS material (the escrow's CA, this client's certificate and key).
//!
//! Contract: secrets (the HMAC secret, the private key) never appear in `Debug` output; a
//! file that cannot be read or is empty is a [`ClientError::Config`] naming it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::ClientError;
use crate::tls::{PemError, read_certificates, read_private_key, read_roots};

/// Client-side TLS: the CA that signs the escrow's certificate, and this
/// client's certificate and key (mandatory for a real escrow).
#[derive(Clone)]
pub struct ClientTls {
    /// Roots the server's certificate must chain to.
    pub roots: rustls::RootCertStore,
    /// This client's certificate chain and key; `None` sends no certificate
    /// (the escrow will refuse the handshake).
    pub identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// The name to verify the server certificate for; defaults to the URL's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads PEM files: the CA bundle, and optionally this client's certificate and key.
    pub fn from_pem_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let config = |error: PemError| ClientError::Config(error.to_string());
        let identity = match identity {
            Some((cert, key)) => Some((
                read_certificates(cert).map_err(config)?,
                Arc::new(read_private_key(key).map_err(config)?),
            )),
            None => None,
        };
        Ok(Self {
            roots: read_roots(ca).map_err(config)?,
            identity,
            server_name: None,
        })
    }
}

/// How to reach and authenticate to the escrow.
#[derive(Clone)]
pub struct EscrowClientConfig {
    /// `https://host:port/api/escrow` (or `http://` for a development escrow).
    pub base_url: String,
    /// The client id on the escrow's allow-list.
    pub client_id: String,
    /// The HMAC secret (the client's own or the shared one).
    pub secret: Zeroizing<Vec<u8>>,
    /// TLS settings; required for `https://`.
    pub tls: Option<ClientTls>,
    /// Bound on each call (the original's unused 5 s `requestTimeoutMs`).
    pub request_timeout: Duration,
}

impl fmt::Debug for EscrowClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowClientConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl EscrowClientConfig {
    /// The settings of a client whose HMAC secret and TLS material are files: the secret is
    /// trimmed and must not be empty; `ca` is required for `https://`; `identity` is this
    /// client's certificate and key (PEM).
    pub fn from_files(
        base_url: &str,
        client_id: &str,
        secret_file: &Path,
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let secret = std::fs::read_to_string(secret_file)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", secret_file.display())))?;
        let secret = Zeroizing::new(secret.trim().as_bytes().to_vec());
        if secret.is_empty() {
            return Err(ClientError::Config(format!(
                "{} is empty",
                secret_file.display()
            )));
        }
        let tls = match ca {
            Some(ca) => Some(ClientTls::from_pem_files(ca, identity)?),
            None => None,
        };
        Ok(Self {
            base_url: base_url.to_owned(),
            client_id: client_id.to_owned(),
            secret,
            tls,
            request_timeout: Duration::from_secs(5),
        })
    }
}
