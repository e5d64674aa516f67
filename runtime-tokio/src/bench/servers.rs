//! The comparison servers of the side-by-side benchmark, each a child process on loopback:
//! the reference relay (nostr-rs-relay, built by `scripts/bench-reference-relay`) and the
//! loopback ceiling ([`super::echo`], this binary's `bench echo`).
//!
//! Contract:
//! - [`ReferenceRelay::start`] runs the given nostr-rs-relay binary with a config written into
//!   a fresh temp directory: loopback only, a free port, SQLite in that directory, and every
//!   rate limit it has lifted (events per second, subscriptions per minute; it has no
//!   per-connection message limit by default), so it is measured on work, not on policy.
//!   It returns once the port accepts a WebSocket handshake.
//! - [`EchoServer::start`] runs `<binary> bench echo --listen 127.0.0.1:0` and returns once it
//!   printed its address.
//! - Both are SIGKILLed when dropped; the relay's directory is removed with it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::topology::{ChildProcess, poll};

/// Longest wait for a server to accept connections (a guard, not a measurement).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running nostr-rs-relay.
pub struct ReferenceRelay {
    _child: ChildProcess,
    _dir: tempfile::TempDir,
    url: String,
}

impl ReferenceRelay {
    /// Starts `binary` (nostr-rs-relay) on a free loopback port.
    pub async fn start(binary: &Path) -> anyhow::Result<ReferenceRelay> {
        let dir = tempfile::Builder::new()
            .prefix("hypergate-bench-reference-")
            .tempdir()
            .context("creating the reference relay's directory")?;
        let port = free_port()?;
        let config = dir.path().join("config.toml");
        std::fs::write(&config, reference_config(port))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut command = Command::new(binary);
        command
            .current_dir(dir.path())
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(dir.path())
            .env("RUST_LOG", "warn");
        let child = ChildProcess::spawn("reference-relay", command, dir.path())?;
        let url = format!("ws://127.0.0.1:{port}/");
        let ready = poll(START_LIMIT, async || {
            tokio_tungstenite::connect_async(url.as_str()).await.is_ok()
        })
        .await;
        if !ready {
            bail!(
                "nostr-rs-relay ({}) did not accept a WebSocket on {url} within {} s",
                binary.display(),
                START_LIMIT.as_secs()
            );
        }
        Ok(ReferenceRelay {
            _child: child,
            _dir: dir,
            url,
        })
    }

    /// Its WebSocket URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// nostr-rs-relay's config for the benchmark: loopback, `port`, limits lifted.
#[must_use]
pub fn reference_config(port: u16) -> String {
    format!(
        r#"[info]
relay_url = "ws://127.0.0.1:{port}/"
name = "hypergate bench reference"

[network]
address = "127.0.0.1"
port = {port}

[options]
reject_future_seconds = 1800

[limits]
messages_per_sec = 0
subscriptions_per_min = 0
"#
    )
}

/// A port that was free a moment ago (bound on 127.0.0.1:0 and released).
fn free_port() -> anyhow::Result<u16> {
    let probe = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("binding a probe socket for a free port")?;
    Ok(probe.local_addr()?.port())
}

/// A running `bench echo` child.
pub struct EchoServer {
    _child: ChildProcess,
    _dir: tempfile::TempDir,
    url: String,
}

impl EchoServer {
    /// Starts `<binary> bench echo` on a free loopback port.
    pub async fn start(binary: &Path) -> anyhow::Result<EchoServer> {
        let dir = tempfile::Builder::new()
            .prefix("hypergate-bench-echo-")
            .tempdir()
            .context("creating the echo server's directory")?;
        let mut command = Command::new(binary);
        command.args(["bench", "echo", "--listen", "127.0.0.1:0"]);
        let mut child = ChildProcess::spawn("echo", command, dir.path())?;
        let addr = child.line_after("echo listening on ").await?;
        Ok(EchoServer {
            _child: child,
            _dir: dir,
            url: format!("ws://{addr}/"),
        })
    }

    /// Its WebSocket URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_config_binds_loopback_and_lifts_rate_limits() {
        let config = reference_config(45_123);
        assert!(config.contains("address = \"127.0.0.1\""));
        assert!(config.contains("port = 45123"));
        assert!(config.contains("messages_per_sec = 0"));
        assert!(config.contains("subscriptions_per_min = 0"));
    }
}
