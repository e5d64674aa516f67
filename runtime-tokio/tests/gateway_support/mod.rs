//! The pieces of the gateway end-to-end tests: a real gateway (`gateway::start`) on loopback
//! with a real escrow (mTLS, see `escrow_support`), `hypergate worker run` as a real process
//! linked to it, and a small NIP-01 WebSocket client.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig};
use hypergate_core::gateway::GatewayConfig;
use hypergate_core::session::SessionConfig;
use hypergate_tokio::escrow::EscrowClientConfig;
use hypergate_tokio::gateway::{GatewayHandle, GatewayOptions, GatewayRuntime};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

use crate::escrow_support::{Harness, SHARED_SECRET};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hypergate");

/// Upper bound on waiting for any one thing; a guard against hangs, not a measured duration.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The escrow test harness binds client `gateway` to this identity and `worker` to 0x63.
pub(crate) const GATEWAY_SEED: u8 = 0x61;
pub(crate) const WORKER_SEED: u8 = 0x63;

pub(crate) fn identity(seed: u8) -> Identity {
    Identity::from_signing_key(SigningKey::from_bytes(&[seed; 32]))
}

/// The escrow client settings of harness client `client`.
pub(crate) fn escrow_config(harness: &Harness, client: &str) -> EscrowClientConfig {
    let mut tls = hypergate_tokio::escrow::client::ClientTls::from_pem_files(
        &harness.pki.dir.path().join("ca.pem"),
        Some((
            &harness.pki.dir.path().join(format!("{client}.pem")),
            &harness.pki.dir.path().join(format!("{client}-key.pem")),
        )),
    )
    .unwrap();
    tls.server_name = Some("localhost".into());
    EscrowClientConfig {
        base_url: harness.base_url(),
        client_id: client.to_owned(),
        secret: Zeroizing::new(SHARED_SECRET.to_vec()),
        tls: Some(tls),
        request_timeout: Duration::from_secs(10),
    }
}

/// A gateway on loopback with short liveness timers, leasing from `escrow` when given.
pub(crate) async fn start_gateway(
    data: &Path,
    escrow: Option<EscrowClientConfig>,
) -> GatewayHandle {
    start_gateway_on(GatewayRuntime::Tokio, data, escrow).await
}

/// The glommio gateway the shared scenarios run on: two shards, so that sessions and links
/// land on different executors.
pub(crate) const GLOMMIO: GatewayRuntime = GatewayRuntime::Glommio { shards: 2 };

/// Held by a test while its glommio gateway runs: io_uring's locked memory is limited per
/// process (`ulimit -l`), and one two-shard gateway at a time fits the usual 8 MiB.
pub(crate) static GLOMMIO_SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`start_gateway`] on `runtime`.
pub(crate) async fn start_gateway_on(
    runtime: GatewayRuntime,
    data: &Path,
    escrow: Option<EscrowClientConfig>,
) -> GatewayHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // The workers' heartbeat is the link default (5 s), so the health default fits; a worker
    // killed outright is seen at once by its link closing.
    let mut core = GatewayConfig::default();
    core.router.replica_retry = Duration::from_millis(200);
    hypergate_tokio::gateway::start_on(
        runtime,
        GatewayOptions {
            data_dir: data.to_path_buf(),
            identity: identity(GATEWAY_SEED),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            peer_listen: "127.0.0.1:0".parse().unwrap(),
            accept: AcceptPolicy::Open,
            link: LinkConfig::default(),
            core,
            session: SessionConfig::default(),
            outbound_queue: 1024,
            limits: hypergate_tokio::gateway::ClientLimits::default(),
            escrow,
            escrow_operator: None,
            admin_token: None,
            token_secret: zeroize::Zeroizing::new(b"test token secret".to_vec()),
        },
    )
    .await
    .unwrap()
}

/// A `hypergate worker run` process; killed (SIGKILL) when dropped.
pub(crate) struct WorkerProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    /// SIGKILL, and wait until it is gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

/// Writes an identity file (mode 0600) for the key of `seed`.
pub(crate) fn write_identity(path: &Path, seed: u8) {
    let me = identity(seed);
    let secret = hex::encode(me.signing_key().as_bytes());
    let text = format!(
        "{{\"publicKey\":\"{}\",\"secretKey\":\"{secret}\"}}\n",
        me.peer_id().to_hex()
    );
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `hypergate worker init` in `dir` with the identity the escrow expects; the init report.
pub(crate) fn init_worker(dir: &Path) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    write_identity(&dir.join("identity.json"), WORKER_SEED);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = Command::new(BIN)
        .args(["worker", "init", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Where a worker finds its gateway.
pub(crate) struct GatewayAddress {
    pub(crate) peer_addr: SocketAddr,
    pub(crate) peer_id: hypergate_core::ids::PeerId,
}

/// `hypergate worker run` linked to `gateway`, depositing with `harness` when given.
pub(crate) fn run_worker(
    dir: &Path,
    gateway: &GatewayHandle,
    harness: Option<&Harness>,
) -> WorkerProcess {
    let address = GatewayAddress {
        peer_addr: gateway.peer_addr,
        peer_id: gateway.peer_id,
    };
    run_worker_at(dir, &address, harness)
}

/// `hypergate worker run` linked to the gateway at `gateway`.
pub(crate) fn run_worker_at(
    dir: &Path,
    gateway: &GatewayAddress,
    harness: Option<&Harness>,
) -> WorkerProcess {
    let mut command = Command::new(BIN);
    command
        .env("HYPERGATE_WORKER_GATEWAY", gateway.peer_addr.to_string())
        .env("HYPERGATE_WORKER_GATEWAY_KEY", gateway.peer_id.to_hex());
    if let Some(harness) = harness {
        let secret = dir.join("escrow-secret");
        std::fs::write(&secret, SHARED_SECRET).unwrap();
        let pki = harness.pki.dir.path();
        command
            .env("HYPERGATE_WORKER_ESCROW_URL", harness.base_url())
            .env("HYPERGATE_WORKER_ESCROW_CLIENT_ID", "worker")
            .env("HYPERGATE_WORKER_ESCROW_SECRET_FILE", &secret)
            .env("HYPERGATE_WORKER_ESCROW_CA", pki.join("ca.pem"))
            .env(
                "HYPERGATE_WORKER_ESCROW_CLIENT_CERT",
                pki.join("worker.pem"),
            )
            .env(
                "HYPERGATE_WORKER_ESCROW_CLIENT_KEY",
                pki.join("worker-key.pem"),
            );
    }
    let mut child = command
        .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining: a closed pipe would make the worker's next println fail.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let addr = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the worker never said it was listening");
        if let Some((_, addr)) = line.split_once(" listening on ") {
            break addr.trim().parse().unwrap();
        }
    };
    WorkerProcess { child, addr }
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

pub(crate) async fn send(ws: &mut Ws, frame: &str) {
    ws.send(Message::text(frame.to_owned())).await.unwrap();
}

/// The next text frame, parsed; `None` if none comes within `wait`.
pub(crate) async fn next_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(wait, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(text.as_str()).unwrap());
        }
    }
}

/// The next text frame, parsed.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    next_within(ws, PATIENCE)
        .await
        .expect("no frame within the patience bound")
}

/// Sends a REQ and collects its stored answer: the events' contents in order, up to `EOSE`.
pub(crate) async fn query(ws: &mut Ws, subscription: &str, filter: &str) -> Vec<Value> {
    send(ws, &format!(r#"["REQ","{subscription}",{filter}]"#)).await;
    let mut events = Vec::new();
    loop {
        let frame = next(ws).await;
        match frame[0].as_str() {
            Some("EVENT") if frame[1] == subscription => events.push(frame[2].clone()),
            Some("EOSE") if frame[1] == subscription => return events,
            Some("CLOSED") if frame[1] == subscription => panic!("REQ closed: {frame}"),
            _ => {}
        }
    }
}

/// Publishes `event_json` and returns the `OK` frame (NOTICEs before it are skipped).
pub(crate) async fn publish(ws: &mut Ws, event_json: &str) -> Value {
    send(ws, &format!(r#"["EVENT",{event_json}]"#)).await;
    loop {
        let frame = next(ws).await;
        if frame[0] == "OK" {
            return frame;
        }
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

/// `GET http://addr/path` as JSON.
pub(crate) async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let body = http_get(addr, path).await;
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// `GET http://addr/path`: the body as text (HTTP/1.0, no keep-alive).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> String {
    let answer = http_request(addr, "GET", path, b"").await;
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// An HTTP answer: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub(crate) struct HttpAnswer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// `METHOD http://addr/path` with `body` (HTTP/1.0, no keep-alive): the whole answer.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("no end of the response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("no status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    }
}
