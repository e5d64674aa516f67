//! Idle WebSocket connections: what one costs the gateway process in resident memory.
//!
//! Contract:
//! - [`hold_idle`] opens `count` WebSocket connections to `url` (spread over source addresses
//!   127.0.0.1 … 127.0.0.[`SOURCE_ADDRESSES`], so ephemeral ports are never the limit), at most
//!   [`OPEN_CONCURRENCY`] handshakes at a time, sends nothing on them, waits [`SETTLE`], and
//!   reads the target process's `VmRSS` from `/proc/<pid>/status` before the first and after
//!   the last. Growth per connection = (after − before) / connections opened. Connections are
//!   closed when the returned [`IdleReport`] is built (dropped at the end).
//! - Limits are read, not guessed: the open-files limit of this process and of the target
//!   (`/proc/<pid>/limits`) are reported; if either soft limit is below `count` plus a margin,
//!   the run stops with a clear error before opening anything.
//! - A handshake that fails is counted, not retried; the report says how many opened.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

/// Source addresses used round-robin: 127.0.0.1 to 127.0.0.N.
pub const SOURCE_ADDRESSES: u8 = 8;
/// Handshakes in flight at once.
pub const OPEN_CONCURRENCY: usize = 64;
/// Pause between the last handshake and the second RSS reading, so lazily allocated
/// per-session state (routing, peer-link streams) exists when memory is read.
pub const SETTLE: Duration = Duration::from_secs(2);
/// File descriptors kept free beyond the connections (listeners, logs, stores, peer link).
const FD_MARGIN: u64 = 256;

/// What holding `count` idle connections cost.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections whose handshake succeeded.
    pub opened: usize,
    /// The target's `VmRSS` before, in KiB.
    pub rss_before_kib: u64,
    /// The target's `VmRSS` with all connections open, in KiB.
    pub rss_after_kib: u64,
    /// (after − before) / opened, in bytes; `None` if nothing opened.
    pub bytes_per_connection: Option<f64>,
    /// The first handshake error, if any.
    pub first_error: Option<String>,
    /// This process's soft open-files limit.
    pub client_nofile: u64,
    /// The target's soft open-files limit.
    pub target_nofile: u64,
}

/// Opens `count` idle connections to `url` and measures `pid`'s RSS growth.
pub async fn hold_idle(url: &str, pid: u32, count: usize) -> anyhow::Result<IdleReport> {
    let client_nofile = soft_nofile("/proc/self/limits")?;
    let target_nofile = soft_nofile(&format!("/proc/{pid}/limits"))?;
    let needed = count as u64 + FD_MARGIN;
    if client_nofile < needed || target_nofile < needed {
        bail!(
            "{count} idle connections need about {needed} open files per process; the soft \
             limit is {client_nofile} here and {target_nofile} in process {pid} (raise it with \
             `ulimit -n` before running the benchmark)"
        );
    }
    let request = url_host_port(url)?;
    let rss_before_kib = vm_rss_kib(pid)?;
    let mut open = Vec::with_capacity(count);
    let mut first_error = None;
    let mut handshakes = JoinSet::new();
    let mut next = 0usize;
    while next < count || !handshakes.is_empty() {
        while next < count && handshakes.len() < OPEN_CONCURRENCY {
            let source = source_address(next);
            let url = url.to_owned();
            handshakes.spawn(connect_from(source, request, url));
            next += 1;
        }
        match handshakes.join_next().await {
            Some(Ok(Ok(ws))) => open.push(ws),
            Some(Ok(Err(error))) => {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Some(Err(join)) => {
                first_error.get_or_insert_with(|| join.to_string());
            }
            None => break,
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after_kib = vm_rss_kib(pid)?;
    let opened = open.len();
    let bytes_per_connection = (opened > 0)
        .then(|| (rss_after_kib as f64 - rss_before_kib as f64) * 1024.0 / opened as f64);
    drop(open);
    Ok(IdleReport {
        requested: count,
        opened,
        rss_before_kib,
        rss_after_kib,
        bytes_per_connection,
        first_error,
        client_nofile,
        target_nofile,
    })
}

/// The `n`-th connection's source address.
fn source_address(n: usize) -> IpAddr {
    let last = u8::try_from(n % usize::from(SOURCE_ADDRESSES)).unwrap_or(0) + 1;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

type IdleWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect_from(source: IpAddr, target: SocketAddr, url: String) -> anyhow::Result<IdleWs> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding {source}"))?;
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {target} from {source}"))?;
    let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .with_context(|| format!("WebSocket handshake with {url}"))?;
    Ok(ws)
}

/// `ws://host:port/…` → the socket address (loopback benchmarks name IPs, not hosts).
fn url_host_port(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("{url}: only ws:// URLs are supported here"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{url}: the host must be an IP address and a port"))
}

/// `VmRSS` of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, "VmRSS:").with_context(|| format!("{path} has no VmRSS line"))
}

/// The value of a `Name:   123 kB` line of `/proc/<pid>/status`.
#[must_use]
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// The soft `Max open files` limit in a `/proc/<pid>/limits` file.
fn soft_nofile(path: &str) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_soft_nofile(&limits).with_context(|| format!("{path} has no open-files limit"))
}

/// The soft `Max open files` limit of a `/proc/<pid>/limits` text (`unlimited` = `u64::MAX`).
#[must_use]
pub fn parse_soft_nofile(limits: &str) -> Option<u64> {
    let rest = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    let soft = rest.split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_and_limits_lines_are_read_by_name() {
        let status = "Name:\thypergate\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(12_345));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(parse_soft_nofile(limits), Some(20_000));
        assert_eq!(
            parse_soft_nofile("Max open files            unlimited  unlimited  files\n"),
            Some(u64::MAX)
        );
        assert_eq!(parse_soft_nofile("Max processes 10 10\n"), None);
    }

    #[test]
    fn this_process_rss_and_limits_are_readable() {
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
        assert!(soft_nofile("/proc/self/limits").unwrap() > 0);
    }

    #[test]
    fn sources_cycle_over_loopback_addresses_and_urls_need_an_ip() {
        assert_eq!(source_address(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_address(7), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8)));
        assert_eq!(source_address(8), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            url_host_port("ws://127.0.0.1:4000/relay/ab").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 4000))
        );
        assert!(url_host_port("wss://127.0.0.1:4000/").is_err());
        assert!(url_host_port("ws://localhost:4000/").is_err());
    }
}
