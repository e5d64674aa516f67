//! Shared fixtures of the escrow service tests: a PKI minted at test time
//! (rcgen; no key is ever committed), a real escrow server on loopback with
//! real mTLS, on the embedded store or on a fresh PostgreSQL database, and
//! relays with real keys and signed deposits.
//!
//! PostgreSQL: `HYPERGATE_TEST_DATABASE_URL` names a superuser; each test
//! creates its own database and drops it. Without the variable the
//! PostgreSQL variants print a skip notice, except under CI (`CI` set),
//! where they fail.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crypto_box::aead::OsRng;
use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::{PackageMetadata, WriterPackage};
use hypergate_adapters::escrow_store::{
    EmbeddedEscrowStore, EscrowStore, PostgresEscrowStore, PostgresSettings,
};
use hypergate_core::escrow::{Evidence, PolicyConfig};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;
use hypergate_tokio::escrow::auth::{ClientEntry, DEFAULT_REPLAY_CAPACITY, Role};
use hypergate_tokio::escrow::client::{ClientTls, DepositParams, EscrowPolicy, deposit_body};
use hypergate_tokio::escrow::config::{EscrowConfig, StoreChoice, TlsFiles};
use hypergate_tokio::escrow::{EscrowClient, EscrowClientConfig, EscrowServer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use zeroize::Zeroizing;

pub(crate) const SHARED_SECRET: &[u8] = b"escrow test shared secret 0123456789";
pub(crate) const CLIENTS: [&str; 4] = ["gateway", "gateway-2", "worker", "operator"];

/// A fixed identity per test client.
pub(crate) fn peer_of(client: &str) -> PeerId {
    let seed = match client {
        "gateway" => 0x61,
        "gateway-2" => 0x62,
        "worker" => 0x63,
        _ => 0x64,
    };
    PeerId(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

pub(crate) fn gateway() -> PeerId {
    peer_of("gateway")
}

pub(crate) fn now() -> UnixTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    UnixTime(u64::try_from(ms).unwrap())
}

// ---- PKI ----

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A CA, a server certificate, one client certificate per test client, and
/// a rogue CA with a client certificate of its own. Files live in `dir`.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub(crate) ca_path: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

impl Pki {
    pub(crate) fn mint() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hypergate test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_path = dir.path().join("ca.pem");
        write(&ca_path, &ca.pem());
        let pki = Self {
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server-key.pem"),
            ca_path,
            ca,
            dir,
        };
        pki.issue_server("escrow server 1");
        for client in CLIENTS {
            pki.issue_client(client);
        }
        // A client certificate from a CA the escrow does not trust.
        let mut rogue = CertificateParams::new(Vec::<String>::new()).unwrap();
        rogue.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let rogue = CertifiedIssuer::self_signed(rogue, KeyPair::generate().unwrap()).unwrap();
        pki.issue_client_with("rogue", &rogue);
        pki
    }

    /// Writes a new server certificate and key (same CA); returns the certificate.
    pub(crate) fn issue_server(&self, name: &str) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Key first, then certificate: the watcher reloads after both settle.
        write(&self.server_key, &key.serialize_pem());
        write(&self.server_cert, &cert.pem());
        cert.der().clone()
    }

    fn issue_client(&self, name: &str) {
        self.issue_client_with(name, &self.ca);
    }

    fn issue_client_with(&self, name: &str, issuer: &CertifiedIssuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        write(&self.dir.path().join(format!("{name}.pem")), &cert.pem());
        write(
            &self.dir.path().join(format!("{name}-key.pem")),
            &key.serialize_pem(),
        );
    }

    pub(crate) fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            ca: self.ca_path.clone(),
        }
    }

    /// TLS for `client` (its certificate); `None`: no client certificate at all.
    pub(crate) fn client_tls(&self, client: Option<&str>) -> ClientTls {
        let paths = client.map(|name| {
            (
                self.dir.path().join(format!("{name}.pem")),
                self.dir.path().join(format!("{name}-key.pem")),
            )
        });
        let mut tls = ClientTls::from_pem_files(
            &self.ca_path,
            paths.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap();
        tls.server_name = Some("localhost".into());
        tls
    }
}

// ---- PostgreSQL ----

const URL_VAR: &str = "HYPERGATE_TEST_DATABASE_URL";

/// A database of its own for one test, dropped at the end. All blocking
/// PostgreSQL calls run on plain threads (the client must not run inside tokio).
pub(crate) struct TestDatabase {
    admin: postgres::Config,
    name: String,
    pub(crate) settings: PostgresSettings,
}

fn on_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(work).join().unwrap()
}

impl TestDatabase {
    /// `None` (with a notice) when no PostgreSQL is configured outside CI.
    pub(crate) fn create() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = match std::env::var(URL_VAR) {
            Ok(url) => url,
            Err(_) if std::env::var_os("CI").is_some() => panic!(
                "{URL_VAR} is not set but CI is: the PostgreSQL escrow service tests must run in CI"
            ),
            Err(_) => {
                eprintln!("skipped: {URL_VAR} is not set (a PostgreSQL superuser URL)");
                return None;
            }
        };
        let admin = PostgresSettings::from_url(&url).unwrap();
        let name = format!(
            "hg_escrow_svc_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (config, db) = (admin.config.clone(), name.clone());
        on_thread(move || {
            let mut client = config.connect(postgres::NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .unwrap();
        });
        let mut settings = admin.clone();
        settings.config.dbname(&name);
        Some(Self {
            admin: admin.config,
            name,
            settings,
        })
    }

    /// A database of its own on the server of superuser URL `url` (not the environment's):
    /// for a test that runs, stops and restarts its own PostgreSQL.
    pub(crate) fn create_at(url: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = PostgresSettings::from_url(url).unwrap();
        let name = format!(
            "hg_escrow_own_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (config, db) = (admin.config.clone(), name.clone());
        on_thread(move || {
            let mut client = config.connect(postgres::NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .unwrap();
        });
        let mut settings = admin.clone();
        settings.config.dbname(&name);
        Self {
            admin: admin.config,
            name,
            settings,
        }
    }

    /// Runs `sql` (statements without results) in the test database.
    pub(crate) fn execute(&self, sql: &str) {
        let (config, sql) = (self.settings.config.clone(), sql.to_owned());
        on_thread(move || {
            let mut client = config.connect(postgres::NoTls).unwrap();
            client.batch_execute(&sql).unwrap();
        });
    }

    /// Runs `sql` in the test database and returns the first column of each row as text.
    pub(crate) fn query_texts(&self, sql: &str) -> Vec<String> {
        let (config, sql) = (self.settings.config.clone(), sql.to_owned());
        on_thread(move || {
            let mut client = config.connect(postgres::NoTls).unwrap();
            client
                .query(&sql, &[])
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect()
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (config, name) = (self.admin.clone(), self.name.clone());
        on_thread(move || {
            if let Ok(mut client) = config.connect(postgres::NoTls) {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(error) = client.batch_execute(&drop) {
                    eprintln!("could not drop test database {name}: {error}");
                }
            }
        });
    }
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    Postgres,
}

/// Generates `embedded` and `postgres` variants of an async test body
/// `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(escrow_support::Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(escrow_support::Backend::Postgres).await;
            }
        }
    };
}

// ---- the escrow under test ----

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) policy: PolicyConfig,
    pub(crate) sweep_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// A running escrow with its PKI, data directory and database.
pub(crate) struct Harness {
    pub(crate) pki: Pki,
    pub(crate) data: tempfile::TempDir,
    pub(crate) db: Option<TestDatabase>,
    pub(crate) options: Options,
    pub(crate) server: Option<EscrowServer>,
    pub(crate) addr: SocketAddr,
}

impl Harness {
    /// Starts an escrow; `None` when the backend is unavailable (skipped).
    pub(crate) async fn start(backend: Backend, options: Options) -> Option<Self> {
        let db = match backend {
            Backend::Embedded => None,
            Backend::Postgres => Some(TestDatabase::create()?),
        };
        let mut harness = Self {
            pki: Pki::mint(),
            data: tempfile::tempdir().unwrap(),
            db,
            options,
            server: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        harness.boot().await;
        Some(harness)
    }

    /// Starts an escrow on `db` (a database the test made on a server of its own).
    pub(crate) async fn start_on(db: TestDatabase, options: Options) -> Self {
        let mut harness = Self {
            pki: Pki::mint(),
            data: tempfile::tempdir().unwrap(),
            db: Some(db),
            options,
            server: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        harness.boot().await;
        harness
    }

    pub(crate) fn audit_dir(&self) -> PathBuf {
        self.data.path().join("audit")
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.data.path().join("store")
    }

    pub(crate) fn config(&self) -> EscrowConfig {
        let store = match &self.db {
            None => StoreChoice::Embedded {
                dir: self.store_dir(),
            },
            Some(db) => StoreChoice::Postgres {
                settings: Box::new(db.settings.clone()),
                migrate: true,
            },
        };
        let clients = CLIENTS
            .iter()
            .map(|id| ClientEntry {
                id: (*id).to_owned(),
                role: match *id {
                    "worker" => Role::Worker,
                    "operator" => Role::Operator,
                    _ => Role::Gateway,
                },
                peer: (*id != "operator").then(|| peer_of(id)),
                secret: None,
            })
            .collect();
        EscrowConfig {
            // The port of the first start is kept, so clients reach a restarted escrow.
            listen: self.addr,
            base_path: "/api/escrow".into(),
            keypair_path: self.data.path().join("keypair.json"),
            audit_dir: self.audit_dir(),
            store,
            tls: Some(self.pki.server_files()),
            tls_reload_interval: Duration::from_millis(50),
            policy: self.options.policy.clone(),
            clients,
            shared_secret: Some(Zeroizing::new(SHARED_SECRET.to_vec())),
            metrics_path: Some("/metrics".into()),
            sweep_interval: self.options.sweep_interval,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }

    async fn boot(&mut self) {
        let server = EscrowServer::start(self.config()).await.unwrap();
        self.addr = server.local_addr();
        self.server = Some(server);
    }

    /// Stops the escrow (clean shutdown) and starts it again on the same state.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Opens the store directly (stop the escrow first: the embedded file
    /// has one owner) and runs `read` on it, on a plain thread.
    pub(crate) fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn EscrowStore) -> T + Send + 'static,
    ) -> T {
        assert!(
            self.server.is_none(),
            "stop the escrow before reading its store"
        );
        let dir = self.store_dir();
        let settings = self.db.as_ref().map(|db| db.settings.clone());
        on_thread(move || match settings {
            None => read(&EmbeddedEscrowStore::open(&dir).unwrap()),
            Some(settings) => read(&PostgresEscrowStore::connect(&settings).unwrap()),
        })
    }

    pub(crate) fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}/api/escrow", self.addr.port())
    }

    /// A client authenticated as `client` with its certificate.
    pub(crate) fn client(&self, client: &str) -> EscrowClient {
        self.client_with(client, self.pki.client_tls(Some(client)))
    }

    /// A client whose paths are relative to the server root, not the base path.
    pub(crate) fn root_client(&self, client: &str) -> EscrowClient {
        self.client_at(
            &format!("https://127.0.0.1:{}", self.addr.port()),
            client,
            self.pki.client_tls(Some(client)),
        )
    }

    pub(crate) fn client_with(&self, client: &str, tls: ClientTls) -> EscrowClient {
        self.client_at(&self.base_url(), client, tls)
    }

    fn client_at(&self, base_url: &str, client: &str, tls: ClientTls) -> EscrowClient {
        EscrowClient::new(
            EscrowClientConfig {
                base_url: base_url.to_owned(),
                client_id: client.to_owned(),
                secret: Zeroizing::new(SHARED_SECRET.to_vec()),
                tls: Some(tls),
                request_timeout: Duration::from_secs(20),
            },
            hypergate_tokio::tokio_spawner(),
        )
        .unwrap()
    }

    pub(crate) async fn policy(&self) -> EscrowPolicy {
        self.client("gateway").policy().await.unwrap()
    }
}

// ---- relays ----

/// A relay with its owner key, a gateway writer key and the worker that owns it.
pub(crate) struct RelayFixture {
    pub(crate) relay: SigningKey,
    pub(crate) writer: SigningKey,
    pub(crate) owner: PeerId,
}

impl RelayFixture {
    pub(crate) fn new() -> Self {
        Self {
            relay: SigningKey::generate(&mut OsRng),
            writer: SigningKey::generate(&mut OsRng),
            owner: peer_of("worker"),
        }
    }

    /// The same relay with a new gateway writer key (a rotation).
    pub(crate) fn rotated(&self) -> Self {
        Self {
            relay: self.relay.clone(),
            writer: SigningKey::generate(&mut OsRng),
            owner: self.owner,
        }
    }

    pub(crate) fn key(&self) -> RelayKey {
        RelayKey(self.relay.verifying_key().to_bytes())
    }

    pub(crate) fn package(&self) -> WriterPackage {
        WriterPackage::new(
            self.key(),
            &self.writer,
            self.owner,
            now(),
            PackageMetadata {
                identifier: "npub1test:relay".into(),
                name: Some("Test relay".into()),
            },
        )
    }

    /// A signed deposit body permitting `permitted`.
    pub(crate) fn deposit(&self, escrow: &EscrowPolicy, permitted: &[PeerId]) -> Value {
        deposit_body(
            escrow,
            &DepositParams {
                package: &self.package(),
                relay_key: &self.relay,
                permitted_requesters: permitted,
                expires_at: None,
                created_at: now(),
            },
        )
        .unwrap()
    }

    pub(crate) fn writer_secret_hex(&self) -> String {
        hex::encode(self.writer.to_bytes())
    }
}

/// Evidence that passes every check at `at`: no worker healthy for two
/// minutes, the mirror in sync a second ago.
pub(crate) fn evidence_allowing(at: UnixTime) -> Evidence {
    Evidence {
        escrow_enabled: Some(true),
        healthy_peer_count: Some(0),
        last_healthy_at: Some(UnixTime(at.0 - 120_000)),
        mirror_lag_blocks: Some(0),
        mirror_lag_ms: Some(0),
        mirror_last_synced_at: Some(UnixTime(at.0 - 1_000)),
    }
}

/// Polls `check` every 50 ms until it is true or `limit` passes (no timing is asserted).
pub(crate) async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every file under `dir` (for grepping stored bytes).
pub(crate) fn all_bytes_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.insert(path, bytes);
        }
    }
    files
}
