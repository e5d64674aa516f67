//! What the drills share beyond the gateway and escrow toolkits: the escrow and the gateway as
//! processes (so they can be SIGKILLed and their memory read), metric and mirror probes, and a
//! publish that retries while a lease is being fetched.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypergate_core::escrow::PolicyConfig;
use hypergate_tokio::gateway::GatewayHandle;
use serde_json::Value;

use crate::escrow_support::{Harness, Options, Pki, SHARED_SECRET, peer_of};
use crate::gateway_support::{
    BIN, GatewayAddress, PATIENCE, WorkerProcess, Ws, eventually, get_json, http_get, init_worker,
    publish, run_worker,
};

/// The sum of the samples of metric `name` on `addr`'s `/metrics` whose labels include every
/// `key="value"` of `labels`.
pub(crate) async fn metric(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let text = http_get(addr, "/metrics").await;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            let matches = metric == name && labels.iter().all(|label| series.contains(label));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The mirror's view of `relay`'s cores: `(type, localLength, lagBlocks)` each.
pub(crate) async fn mirrored_cores(addr: SocketAddr, relay: &str) -> Vec<(String, u64, u64)> {
    let replicas = get_json(addr, "/api/blind-peer/replicas").await;
    let Some(relays) = replicas["replicas"].as_array() else {
        return Vec::new();
    };
    relays
        .iter()
        .filter(|entry| entry["relayKey"] == relay)
        .flat_map(|entry| entry["cores"].as_array().cloned().unwrap_or_default())
        .map(|core| {
            (
                core["type"].as_str().unwrap_or_default().to_owned(),
                core["localLength"].as_u64().unwrap_or(0),
                core["lagBlocks"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Whether the gateway mirrors `relay`'s owner log with no lag (what replica mode needs).
pub(crate) async fn owner_mirrored(addr: SocketAddr, relay: &str) -> bool {
    mirrored_cores(addr, relay)
        .await
        .iter()
        .any(|(kind, _, lag)| kind == "owner" && *lag == 0)
}

/// Publishes `event_json` until it is accepted, at most `attempts` times 250 ms apart (the
/// first writes after a worker leaves wait for the escrow's liveness timeout and the lease).
/// The last `OK` frame and the number of attempts made.
pub(crate) async fn publish_until_accepted(
    ws: &mut Ws,
    event_json: &str,
    attempts: u32,
) -> (Value, u32) {
    let mut made = 0;
    loop {
        made += 1;
        let ok = publish(ws, event_json).await;
        if ok[2] == true || made >= attempts {
            return (ok, made);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Collects a child's output lines and hands the ones `wanted` picks to a channel.
fn follow(
    output: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining: a closed pipe would make the child's next write fail.
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if wanted(&line) {
                let _ = tx.send(line.clone());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    rx
}

/// `hypergate escrow serve` as a process on a fixed port, on the embedded store in `data`,
/// with the escrow harness's PKI and client bindings (`gateway`, `worker`, `operator`).
/// SIGKILLed when dropped.
pub(crate) struct EscrowProcess {
    child: Child,
    /// Everything it printed on stderr.
    pub(crate) log: Arc<Mutex<String>>,
}

impl EscrowProcess {
    /// Starts it and waits for its "listening" line; what it printed if it never listened.
    pub(crate) fn spawn(
        pki: &Pki,
        data: &Path,
        port: u16,
        liveness: Duration,
    ) -> Result<Self, String> {
        let clients = format!(
            "gateway=gateway:{},worker=worker:{},operator=operator",
            peer_of("gateway").to_hex(),
            peer_of("worker").to_hex()
        );
        let mut child = Command::new(BIN)
            .args(["escrow", "serve", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .env("RUST_LOG", "info")
            .env("ESCROW_STORAGE_DIR", data)
            .env(
                "ESCROW_SHARED_SECRET",
                std::str::from_utf8(SHARED_SECRET).unwrap(),
            )
            .env("ESCROW_TLS_SERVER_CERT", &pki.server_cert)
            .env("ESCROW_TLS_SERVER_KEY", &pki.server_key)
            .env("ESCROW_TLS_CA", &pki.ca_path)
            .env("HYPERGATE_ESCROW_CLIENTS", clients)
            .env(
                "ESCROW_PEER_LIVENESS_TIMEOUT_MS",
                liveness.as_millis().to_string(),
            )
            .env_remove("ESCROW_DATABASE_URL")
            .env_remove("HYPERGATE_ESCROW_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let listening = follow(child.stderr.take().unwrap(), Arc::clone(&log), |line| {
            line.contains("escrow service listening")
        });
        if listening.recv_timeout(PATIENCE).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100)); // the reader's last lines
            return Err(log.lock().unwrap().clone());
        }
        Ok(EscrowProcess { child, log })
    }

    /// The last `lines` lines it printed.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL (if it still runs), and wait until it is gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EscrowProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hypergate gateway` as a process on ephemeral ports, without an escrow; SIGKILLed when
/// dropped.
pub(crate) struct GatewayProcess {
    child: Child,
    /// Where clients connect.
    pub(crate) http: SocketAddr,
    /// Where workers connect, and the key they pin.
    pub(crate) peer: GatewayAddress,
}

impl GatewayProcess {
    /// Starts it on `data` and waits for its start-up lines.
    pub(crate) fn spawn(data: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["gateway", "--data-dir"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = follow(
            child.stdout.take().unwrap(),
            Arc::new(Mutex::new(String::new())),
            |_| true,
        );
        let (mut http, mut peer_addr) = (None, None);
        let peer_id = loop {
            let line = lines
                .recv_timeout(PATIENCE)
                .expect("the gateway never printed its start-up lines");
            if let Some(addr) = line.strip_prefix("gateway listening on http://") {
                http = Some(addr.trim().parse().unwrap());
            } else if let Some(addr) = line.strip_prefix("peer link listening on ") {
                peer_addr = Some(addr.trim().parse().unwrap());
            } else if let Some(key) = line.strip_prefix("gateway key: ") {
                break key.trim().parse::<hypergate_core::ids::PeerId>().unwrap();
            }
        };
        GatewayProcess {
            child,
            http: http.expect("no client address line"),
            peer: GatewayAddress {
                peer_addr: peer_addr.expect("no peer-link address line"),
                peer_id,
            },
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hypergate audit verify <dir> --json`: the exit code and the entries it printed.
pub(crate) fn audit_entries(dir: &Path) -> (Option<i32>, Vec<Value>) {
    let output = Command::new(BIN)
        .args(["audit", "verify", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let entries = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !output.status.success() {
        eprintln!(
            "audit verify {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    (output.status.code(), entries)
}

/// How many times longer the long variants run: `HYPERGATE_DRILL_SCALE` (default 1, the CI size).
/// `HYPERGATE_DRILL_SCALE=20 cargo test -p hypergate-tokio --test drills -- --nocapture` runs
/// twenty times the kill rounds and flood passes.
pub(crate) fn drill_scale() -> u64 {
    match std::env::var("HYPERGATE_DRILL_SCALE") {
        Err(_) => 1,
        Ok(text) => text
            .parse::<u64>()
            .ok()
            .filter(|scale| *scale >= 1)
            .unwrap_or_else(|| {
                panic!("HYPERGATE_DRILL_SCALE={text:?}: expected a whole number ≥ 1")
            }),
    }
}

/// Escrow options whose worker-liveness timeout is `liveness`: short, so that a lease can be
/// granted soon after a drill sends the relay's worker away.
pub(crate) fn quick_lease_options(liveness: Duration) -> Options {
    Options {
        policy: PolicyConfig {
            peer_liveness_timeout: liveness,
            ..PolicyConfig::default()
        },
        ..Options::default()
    }
}

/// A worker relay initialised in `dir` and run against `gateway`, once it has deposited its
/// gateway writer with the escrow and the gateway mirrors its owner log: the relay key and
/// the worker process.
pub(crate) async fn deposited_worker(
    dir: &Path,
    gateway: &GatewayHandle,
    harness: &Harness,
) -> (String, WorkerProcess) {
    let relay = init_worker(dir)["relayKey"].as_str().unwrap().to_owned();
    let worker = run_worker(dir, gateway, Some(harness));
    let ready = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        status["relays"][0]["escrowId"].is_string()
            && owner_mirrored(gateway.http_addr, &relay).await
    })
    .await;
    assert!(ready, "the worker never deposited and got mirrored");
    (relay, worker)
}
