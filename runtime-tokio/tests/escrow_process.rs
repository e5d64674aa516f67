//! `hypergate escrow serve` as a real process, configured through the
//! original's `ESCROW_*` environment names, logging at TRACE: after deposits,
//! unlocks, refused requests, revokes and a SIGTERM, neither its captured
//! output nor anything it wrote to disk (store, audit log) holds a writer
//! secret — as hex, base64 or raw bytes.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crypto_box::aead::OsRng;
use escrow_support::{
    Pki, RelayFixture, SHARED_SECRET, TestDatabase, all_bytes_under, evidence_allowing, gateway,
    now, peer_of,
};
use hypergate_adapters::crypto::seal::seal_to;
use hypergate_tokio::escrow::client::{ClientError, RevokeBy, sign_deposit};
use hypergate_tokio::escrow::{EscrowClient, EscrowClientConfig};
use serde_json::json;

struct Escrow {
    child: Child,
    output: Arc<Mutex<String>>,
    port: u16,
}

/// Starts the binary and waits for its "listening" line.
fn spawn(pki: &Pki, data: &std::path::Path, database_url: Option<&str>) -> Escrow {
    let clients = format!(
        "gateway=gateway:{},worker=worker:{},operator=operator",
        gateway().to_hex(),
        peer_of("worker").to_hex()
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_hypergate"));
    command
        .args(["escrow", "serve", "--host", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "trace")
        .env("ESCROW_STORAGE_DIR", data)
        .env(
            "ESCROW_SHARED_SECRET",
            std::str::from_utf8(SHARED_SECRET).unwrap(),
        )
        .env("ESCROW_TLS_SERVER_CERT", &pki.server_cert)
        .env("ESCROW_TLS_SERVER_KEY", &pki.server_key)
        .env("ESCROW_TLS_CA", &pki.ca_path)
        .env("HYPERGATE_ESCROW_CLIENTS", clients)
        .env_remove("ESCROW_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = database_url {
        command.env("ESCROW_DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("escrow service listening") {
                let port = line
                    .split("local_addr=127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|port| port.parse::<u16>().ok());
                let _ = port_tx.send(port);
            }
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        sink.lock().unwrap().push_str(&text);
    });
    let port = match port_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(port)) => port,
        _ => {
            let _ = child.kill();
            panic!("the escrow did not start:\n{}", output.lock().unwrap());
        }
    };
    Escrow {
        child,
        output,
        port,
    }
}

impl Escrow {
    fn client(&self, pki: &Pki, client: &str) -> EscrowClient {
        let mut tls = pki.client_tls(Some(client));
        tls.server_name = Some("localhost".into());
        EscrowClient::new(
            EscrowClientConfig {
                base_url: format!("https://127.0.0.1:{}/api/escrow", self.port),
                client_id: client.into(),
                secret: zeroize::Zeroizing::new(SHARED_SECRET.to_vec()),
                tls: Some(tls),
                request_timeout: Duration::from_secs(20),
            },
            hypergate_tokio::tokio_spawner(),
        )
        .unwrap()
    }

    /// SIGTERM, then the exit status and everything it printed.
    fn terminate(mut self) -> (bool, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = self.child.wait().unwrap();
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(200));
        let output = self.output.lock().unwrap().clone();
        (exited.success(), output)
    }
}

/// Every textual and binary form a writer secret could leak in.
fn secret_forms(relay: &RelayFixture) -> Vec<(String, Vec<u8>)> {
    let secret = relay.writer.to_bytes();
    let keypair = relay.writer.to_keypair_bytes();
    let hex = hex::encode(secret);
    vec![
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_uppercase().into_bytes()),
        ("base64".into(), STANDARD.encode(secret).into_bytes()),
        (
            "base64url".into(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
        (
            "keypair base64".into(),
            STANDARD.encode(keypair).into_bytes(),
        ),
        ("raw".into(), secret.to_vec()),
        ("debug bytes".into(), format!("{secret:?}").into_bytes()),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn exercise(escrow: &Escrow, pki: &Pki) -> Vec<RelayFixture> {
    let gateway_client = escrow.client(pki, "gateway");
    let worker = escrow.client(pki, "worker");
    let policy = gateway_client.policy().await.unwrap();
    let relays = vec![RelayFixture::new(), RelayFixture::new()];
    for relay in &relays {
        worker
            .deposit(&relay.deposit(&policy, &[gateway()]))
            .await
            .unwrap();
    }
    // Released, fetched again, and listed.
    let lease = gateway_client
        .unlock(
            relays[0].key(),
            None,
            &evidence_allowing(now()),
            &policy.public_key,
        )
        .await
        .unwrap();
    assert_eq!(
        lease.package.signing_key().to_bytes(),
        relays[0].writer.to_bytes()
    );
    gateway_client
        .unlock(
            relays[0].key(),
            None,
            &evidence_allowing(now()),
            &policy.public_key,
        )
        .await
        .unwrap();
    assert_eq!(
        escrow.client(pki, "operator").leases().await.unwrap().len(),
        1
    );
    // A refused unlock and a refused deposit whose package holds the second
    // relay's secret but lies about its public key: the escrow decrypted it
    // and must not echo it anywhere.
    let refused = gateway_client
        .unlock(
            relays[1].key(),
            None,
            &Default::default(),
            &policy.public_key,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, ClientError::Refused { status: 412, .. }));
    let mut package: serde_json::Value =
        serde_json::from_slice(&relays[1].package().to_json()).unwrap();
    package["writerKey"] = json!(hex::encode([5u8; 32]));
    let sealed = seal_to(
        &policy.public_key,
        package.to_string().as_bytes(),
        &mut OsRng,
    )
    .unwrap();
    let mut body = relays[1].deposit(&policy, &[gateway()]);
    body["encryptedPackage"] = serde_json::to_value(&sealed).unwrap();
    let body = sign_deposit(body, &relays[1].relay).unwrap();
    let bad = worker.deposit(&body).await.unwrap_err();
    assert!(
        matches!(bad, ClientError::Refused { status: 400, .. }),
        "{bad:?}"
    );
    worker
        .revoke(&RevokeBy::Relay(relays[0].key()), None, "rotation")
        .await
        .unwrap();
    relays
}

fn assert_no_secret(relays: &[RelayFixture], place: &str, bytes: &[u8]) {
    for relay in relays {
        for (form, needle) in secret_forms(relay) {
            assert!(
                !contains(bytes, &needle),
                "the writer secret ({form}) appears in {place}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_secrets_never_reach_logs_or_disk_embedded() {
    let pki = Pki::mint();
    let data = tempfile::tempdir().unwrap();
    let escrow = spawn(&pki, data.path(), None);
    let relays = exercise(&escrow, &pki).await;
    let (clean_exit, output) = escrow.terminate();
    assert!(
        clean_exit,
        "the escrow did not exit cleanly on SIGTERM:\n{output}"
    );
    assert!(output.contains("escrow service stopped"), "{output}");
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "logs were captured"
    );
    assert_no_secret(&relays, "the escrow's output", output.as_bytes());
    let files = all_bytes_under(data.path());
    assert!(files.keys().any(|path| path.ends_with("escrow.redb")));
    assert!(files.keys().any(|path| path.ends_with("audit/data")));
    for (path, bytes) in &files {
        assert_no_secret(&relays, &path.display().to_string(), bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_secrets_never_reach_logs_or_the_database_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let pki = Pki::mint();
    let data = tempfile::tempdir().unwrap();
    let config = &db.settings.config;
    let url = format!(
        "postgres://{}@{}:{}/{}",
        config.get_user().unwrap(),
        match &config.get_hosts()[0] {
            postgres::config::Host::Tcp(host) => host.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        },
        config.get_ports()[0],
        config.get_dbname().unwrap()
    );
    let escrow = spawn(&pki, data.path(), Some(&url));
    let relays = exercise(&escrow, &pki).await;
    let (clean_exit, output) = escrow.terminate();
    assert!(clean_exit, "{output}");
    assert_no_secret(&relays, "the escrow's output", output.as_bytes());
    for table in [
        "escrow_deposits",
        "escrow_lease_history",
        "escrow_audit_log",
    ] {
        let rows = db.query_texts(&format!("SELECT t::text FROM {table} t"));
        assert!(!rows.is_empty(), "{table} is empty");
        assert_no_secret(&relays, table, rows.join("\n").as_bytes());
    }
    for (path, bytes) in &all_bytes_under(data.path()) {
        assert_no_secret(&relays, &path.display().to_string(), bytes);
    }
}

#[test]
fn serve_help_names_the_original_environment_variables() {
    let output = Command::new(env!("CARGO_BIN_EXE_hypergate"))
        .args(["escrow", "serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "ESCROW_HOST",
        "ESCROW_PORT",
        "ESCROW_BASE_PATH",
        "ESCROW_STORAGE_DIR",
        "ESCROW_SHARED_SECRET",
        "ESCROW_TLS_SERVER_CERT",
        "ESCROW_TLS_CA",
        "ESCROW_DATABASE_URL",
        "ESCROW_LEASE_TTL_MS",
        "HYPERGATE_ESCROW_CLIENTS",
    ] {
        assert!(
            help.contains(name),
            "--help does not mention {name}:\n{help}"
        );
    }
}

#[test]
fn serve_refuses_to_start_without_clients_or_tls_files() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hypergate"))
        .args(["escrow", "serve", "--port", "0"])
        .env("ESCROW_STORAGE_DIR", data.path())
        .env_remove("HYPERGATE_ESCROW_CLIENTS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS needs --tls-cert"), "{stderr}");
}
