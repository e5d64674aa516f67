//! The benchmark topology: escrow (in this process, mTLS, embedded store), the gateway and
//! one worker as child processes of this binary, all on loopback under one temp directory.
//!
//! Contract:
//! - [`Topology::start`] leaves a relay served by a worker that is linked to the gateway and
//!   has deposited its gateway writer key; the escrow's liveness timeout is
//!   [`TopologyOptions::liveness_timeout`], so a lease is granted soon after the worker dies.
//! - The worker is a separate process so that [`Topology::kill_worker`] is a real SIGKILL.
//!   The gateway is a process too (`hypergate gateway` plus
//!   [`TopologyOptions::gateway_args`]), so another gateway build or runtime can be measured
//!   the same way; its client limits are lifted so the load generator is never rate-limited.
//! - Children are killed when the topology is dropped; the directory is removed unless kept.
//!   Their stderr goes to `<dir>/<name>.log`; a failed start quotes the log's tail.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hypergate_adapters::crypto::Identity;
use hypergate_core::escrow::PolicyConfig;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::escrow::EscrowServer;
use crate::local_stack::{LocalPki, local_escrow_config};
use crate::secret_file::load_or_create_secret;

/// Upper bound on waiting for a child to come up or for state to settle (a guard, not a
/// measurement).
const PATIENCE: Duration = Duration::from_secs(60);

/// How to build the topology.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// The `hypergate` binary to run the worker (and, by default, the gateway) with.
    pub binary: PathBuf,
    /// Another binary for the gateway (another runtime's build); it is started as
    /// `<binary> gateway <the tokio gateway's flags> <gateway_args>`. `None`: [`Self::binary`].
    pub gateway_binary: Option<PathBuf>,
    /// Extra arguments for `hypergate gateway` (e.g. another runtime).
    pub gateway_args: Vec<String>,
    /// The escrow's peer liveness timeout.
    pub liveness_timeout: Duration,
    /// Keep the directory (and the children's logs) after the run.
    pub keep_dir: bool,
}

/// A running topology.
pub struct Topology {
    dir: tempfile::TempDir,
    escrow: Option<EscrowServer>,
    gateway: ChildProcess,
    worker: Option<ChildProcess>,
    /// The gateway's client listener.
    pub gateway_addr: SocketAddr,
    /// The worker's local listener (stale after the kill).
    pub worker_addr: SocketAddr,
    /// The relay's key in hex.
    pub relay: String,
}

impl Topology {
    /// Mints the PKI, starts the escrow, the gateway and the worker, and waits until the
    /// worker has deposited its gateway writer key.
    pub async fn start(options: &TopologyOptions) -> anyhow::Result<Topology> {
        let dir = tempfile::Builder::new()
            .prefix("hypergate-bench-")
            .tempdir()
            .context("creating the temp directory")?;
        let root = dir.path();
        let pki = LocalPki::load_or_mint(&root.join("pki"))?;
        let secret_path = root.join("escrow-secret");
        let secret = load_or_create_secret(&secret_path)?;

        let worker_dir = root.join("worker");
        let init = Command::new(&options.binary)
            .args(["worker", "init", "--json", "--data-dir"])
            .arg(&worker_dir)
            .output()
            .context("running `hypergate worker init`")?;
        if !init.status.success() {
            bail!(
                "`hypergate worker init` failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let report: Value = serde_json::from_slice(&init.stdout)
            .context("`hypergate worker init --json` printed no JSON")?;
        let relay = report["relayKey"]
            .as_str()
            .context("`hypergate worker init` named no relayKey")?
            .to_owned();
        let worker_peer = Identity::load_or_create(&worker_dir.join("identity.json"))?.peer_id();
        let gateway_dir = root.join("gateway");
        std::fs::create_dir_all(&gateway_dir)?;
        let gateway_peer = Identity::load_or_create(&gateway_dir.join("identity.json"))?.peer_id();

        let escrow_dir = root.join("escrow");
        std::fs::create_dir_all(&escrow_dir)?;
        let escrow = EscrowServer::start(local_escrow_config(
            &escrow_dir,
            &pki,
            secret,
            gateway_peer,
            worker_peer,
            PolicyConfig {
                peer_liveness_timeout: options.liveness_timeout,
                ..PolicyConfig::default()
            },
        )?)
        .await
        .context("starting the escrow")?;
        let escrow_url = format!(
            "https://127.0.0.1:{}/api/escrow",
            escrow.local_addr().port()
        );

        let mut gateway = Command::new(options.gateway_binary.as_ref().unwrap_or(&options.binary));
        gateway
            .arg("gateway")
            .arg("--data-dir")
            .arg(&gateway_dir)
            .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
            .args(["--allow-worker", &worker_peer.to_hex()])
            // Lift the per-client limits: the load generator is one address with many frames.
            .args(["--connections-per-ip", "100000"])
            .args([
                "--frames-per-second",
                "10000000",
                "--frame-burst",
                "10000000",
            ])
            .args(["--escrow-url", &escrow_url, "--escrow-client-id", "gateway"])
            .arg("--escrow-secret-file")
            .arg(&secret_path)
            .arg("--escrow-ca")
            .arg(pki.ca())
            .arg("--escrow-client-cert")
            .arg(pki.cert("gateway"))
            .arg("--escrow-client-key")
            .arg(pki.key("gateway"))
            .args(&options.gateway_args);
        let mut gateway = ChildProcess::spawn("gateway", gateway, root)?;
        let gateway_addr: SocketAddr = gateway
            .line_after("gateway listening on http://")
            .await?
            .parse()
            .context("the gateway's listen address")?;
        let peer_addr = gateway.line_after("peer link listening on ").await?;
        let gateway_key = gateway.line_after("gateway key: ").await?;

        let mut worker = Command::new(&options.binary);
        worker
            .env("HYPERGATE_WORKER_GATEWAY", peer_addr)
            .env("HYPERGATE_WORKER_GATEWAY_KEY", gateway_key)
            .env("HYPERGATE_WORKER_ESCROW_URL", &escrow_url)
            .env("HYPERGATE_WORKER_ESCROW_CLIENT_ID", "worker")
            .env("HYPERGATE_WORKER_ESCROW_SECRET_FILE", &secret_path)
            .env("HYPERGATE_WORKER_ESCROW_CA", pki.ca())
            .env("HYPERGATE_WORKER_ESCROW_CLIENT_CERT", pki.cert("worker"))
            .env("HYPERGATE_WORKER_ESCROW_CLIENT_KEY", pki.key("worker"))
            .args(["worker", "run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&worker_dir);
        let mut worker = ChildProcess::spawn("worker", worker, root)?;
        let worker_addr: SocketAddr = worker
            .line_after(" listening on ")
            .await?
            .parse()
            .context("the worker's listen address")?;

        let topology = Topology {
            dir,
            escrow: Some(escrow),
            gateway,
            worker: Some(worker),
            gateway_addr,
            worker_addr,
            relay,
        };
        let deposited = poll(PATIENCE, async || {
            let status = http_get_json(worker_addr, "/status").await;
            status["relays"][0]["escrowId"].is_string()
        })
        .await;
        if !deposited {
            bail!(
                "the worker never deposited its gateway writer key{}",
                topology.worker_log_tail()
            );
        }
        if options.keep_dir {
            eprintln!("bench: keeping {}", topology.dir.path().display());
        }
        Ok(topology.keep(options.keep_dir))
    }

    fn keep(mut self, keep: bool) -> Topology {
        self.dir.disable_cleanup(keep);
        self
    }

    /// `ws://…/relay/<key>` at the worker itself.
    #[must_use]
    pub fn worker_url(&self) -> String {
        format!("ws://{}/relay/{}", self.worker_addr, self.relay)
    }

    /// `ws://…/relay/<key>` at the gateway.
    #[must_use]
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/relay/{}", self.gateway_addr, self.relay)
    }

    /// Waits until the gateway's mirror holds at least `blocks` blocks of the worker's writer
    /// log and no core of the relay lags; `false` if that did not happen within `limit`.
    pub async fn wait_mirrored(&self, blocks: u64, limit: Duration) -> bool {
        let relay = self.relay.as_str();
        poll(limit, async || {
            let replicas = http_get_json(self.gateway_addr, "/api/blind-peer/replicas").await;
            let Some(entry) = replicas["replicas"]
                .as_array()
                .and_then(|all| all.iter().find(|entry| entry["relayKey"] == relay))
            else {
                return false;
            };
            let Some(cores) = entry["cores"].as_array() else {
                return false;
            };
            let writer_len = cores
                .iter()
                .filter(|core| core["type"] == "writer")
                .filter_map(|core| core["localLength"].as_u64())
                .max()
                .unwrap_or(0);
            writer_len >= blocks && cores.iter().all(|core| core["lagBlocks"] == 0)
        })
        .await
    }

    /// The gateway process's id (for `/proc/<pid>/status`).
    #[must_use]
    pub fn gateway_pid(&self) -> u32 {
        self.gateway.pid()
    }

    /// The gateway's `/metrics` text (OpenMetrics); empty on any failure.
    pub async fn gateway_metrics(&self) -> String {
        http_get_text(self.gateway_addr, "/metrics")
            .await
            .unwrap_or_default()
    }

    /// SIGKILLs the worker and waits for it to be gone.
    pub fn kill_worker(&mut self) {
        self.worker = None;
    }

    fn worker_log_tail(&self) -> String {
        log_tail(&self.dir.path().join("worker.log"))
    }

    /// The tail of the gateway's log, for error messages.
    #[must_use]
    pub fn gateway_log_tail(&self) -> String {
        log_tail(&self.dir.path().join("gateway.log"))
    }

    /// Stops everything (children killed, escrow shut down).
    pub async fn shutdown(mut self) {
        self.worker = None;
        self.gateway.stop();
        if let Some(escrow) = self.escrow.take() {
            escrow.shutdown().await;
        }
    }
}

/// A child of this binary; SIGKILLed and reaped when dropped.
pub(crate) struct ChildProcess {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl ChildProcess {
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (lines_tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            // Keep draining: a closed pipe would make the child's next println fail.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Ok(ChildProcess {
            name,
            child,
            lines,
            log,
        })
    }

    /// The rest of the first stdout line containing `marker`, after it.
    pub(crate) async fn line_after(&mut self, marker: &str) -> anyhow::Result<String> {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv()).await;
            match line {
                Ok(Some(line)) => {
                    if let Some((_, rest)) = line.split_once(marker) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Ok(None) => bail!(
                    "the {} exited before printing {marker:?}{}",
                    self.name,
                    log_tail(&self.log)
                ),
                Err(_) => bail!(
                    "the {} did not print {marker:?} in time{}",
                    self.name,
                    log_tail(&self.log)
                ),
            }
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file, as `": …"` for an error message (empty if unreadable).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!(" ({}):\n{tail}", path.display())
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub(crate) async fn poll(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET http://addr/path` as JSON; `Value::Null` on any failure (callers poll).
async fn http_get_json(addr: SocketAddr, path: &str) -> Value {
    http_get_text(addr, path)
        .await
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// `GET http://addr/path`, the body as text; `None` on any failure or after 10 s.
async fn http_get_text(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}
