//! A gateway, an escrow and a worker on one machine, with real security: the local PKI that
//! gives the escrow mutual TLS, the escrow's configuration for the three local clients, and the
//! escrow client settings. Used by `hypergate up` and by the gateway benchmark's topology.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hypergate_core::escrow::PolicyConfig;
use hypergate_core::ids::PeerId;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use zeroize::Zeroizing;

use crate::escrow::EscrowClientConfig;
use crate::escrow::auth::{ClientEntry, DEFAULT_REPLAY_CAPACITY, Role};
use crate::escrow::client::ClientTls;
use crate::escrow::config::{EscrowConfig, StoreChoice, TlsFiles};
use crate::secret_file::write_private;

/// Creates `dir` (mode 0700) if needed.
pub(crate) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// An escrow on the embedded store under `dir`, over mTLS with `pki` on an ephemeral loopback
/// port, knowing the local gateway, worker and operator as clients (shared HMAC `secret`).
pub(crate) fn local_escrow_config(
    dir: &Path,
    pki: &LocalPki,
    secret: Zeroizing<Vec<u8>>,
    gateway: PeerId,
    worker: PeerId,
    policy: PolicyConfig,
) -> anyhow::Result<EscrowConfig> {
    let client = |id: &str, role, peer| ClientEntry {
        id: id.into(),
        role,
        peer,
        secret: None,
    };
    Ok(EscrowConfig {
        listen: "127.0.0.1:0".parse()?,
        base_path: "/api/escrow".into(),
        keypair_path: dir.join("keypair.json"),
        audit_dir: dir.join("audit"),
        store: StoreChoice::Embedded {
            dir: dir.join("store"),
        },
        tls: Some(pki.server_files()),
        tls_reload_interval: Duration::from_secs(30),
        policy,
        clients: vec![
            client("gateway", Role::Gateway, Some(gateway)),
            client("worker", Role::Worker, Some(worker)),
            client("operator", Role::Operator, None),
        ],
        shared_secret: Some(secret),
        metrics_path: Some("/metrics".into()),
        sweep_interval: Duration::from_secs(30),
        replay_capacity: DEFAULT_REPLAY_CAPACITY,
    })
}

/// The escrow client settings of local client `id` (its certificate from `pki`).
pub(crate) fn local_client(
    pki: &LocalPki,
    escrow_url: &str,
    id: &str,
    secret: Zeroizing<Vec<u8>>,
) -> anyhow::Result<EscrowClientConfig> {
    let mut tls = ClientTls::from_pem_files(&pki.ca(), Some((&pki.cert(id), &pki.key(id))))?;
    tls.server_name = Some("localhost".into());
    Ok(EscrowClientConfig {
        base_url: escrow_url.to_owned(),
        client_id: id.into(),
        secret,
        tls: Some(tls),
        request_timeout: Duration::from_secs(5),
    })
}

/// A local certificate authority: a CA, the escrow's server certificate (for `localhost` and
/// `127.0.0.1`), and a client certificate each for the gateway, the worker and the gateway's
/// operator calls, as PEM files (mode 0600) in one directory.
pub(crate) struct LocalPki {
    dir: PathBuf,
}

impl LocalPki {
    /// The PKI in `dir`, minted first if `dir` holds none (a half-minted one is redone).
    pub(crate) fn load_or_mint(dir: &Path) -> anyhow::Result<LocalPki> {
        let pki = LocalPki {
            dir: dir.to_path_buf(),
        };
        if pki.ca().exists() {
            return Ok(pki);
        }
        private_dir(dir)?;
        // A run cut short while minting left some files but no CA: start over.
        for name in ["escrow", "gateway", "worker", "operator"] {
            for path in [pki.cert(name), pki.key(name)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                }
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hypergate local CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let issue = |name: &str, sans: Vec<String>, usage| -> anyhow::Result<()> {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            write_private(&pki.key(name), key.serialize_pem().as_bytes())?;
            write_private(&pki.cert(name), cert.pem().as_bytes())
        };
        issue(
            "escrow",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        issue("gateway", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        issue("worker", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        issue("operator", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        // The CA last: its presence means the PKI is complete.
        write_private(&pki.ca(), ca.pem().as_bytes())?;
        Ok(pki)
    }

    /// The CA certificate.
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `name`'s certificate.
    pub(crate) fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `name`'s private key.
    pub(crate) fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// The escrow's TLS files.
    pub(crate) fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert("escrow"),
            key: self.key("escrow"),
            ca: self.ca(),
        }
    }
}
