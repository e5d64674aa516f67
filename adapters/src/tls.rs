//! rustls building blocks shared by the escrow service (its server configuration, in the
//! tokio runtime) and the runtime-neutral escrow client: the crypto provider, and reading
//! certificates, keys and CA bundles from PEM files.
//!
//! Contract:
//! - Every TLS configuration of the project uses [`provider`] (rustls with `ring`), so the
//!   server and its clients agree on cipher suites and no second provider is compiled.
//! - The readers refuse a file that cannot be read, is not PEM, or holds no section of the
//!   kind asked for, with a [`PemError`] naming the file; they never panic on its content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used (the operator's files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// A file could not be read or holds no PEM section of the needed kind.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn file_error(path: &Path, detail: impl std::fmt::Display) -> PemError {
    PemError::File {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// The ring crypto provider every TLS configuration of the escrow uses.
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no CERTIFICATE section"));
    }
    Ok(certificates)
}

/// Reads the first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| file_error(path, error))
}

/// A root store of every certificate in a PEM bundle.
pub fn read_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, error))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_pem_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = read_certificates(&missing).unwrap_err().to_string();
        assert!(error.starts_with(&missing.display().to_string()), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM at all\n").unwrap();
        let error = read_roots(&empty).unwrap_err().to_string();
        assert!(error.contains("no CERTIFICATE section"), "{error}");
        assert!(read_private_key(&empty).is_err());
    }
}
