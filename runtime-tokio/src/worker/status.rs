//! `hypergate worker status`: fetches `GET /status` from a running worker and prints it.
//!
//! Contract: `--json` prints the worker's JSON as it came (one line); otherwise a table of the
//! relays, their cores with mirror lag, pending jobs and rotations. A worker that cannot be
//! reached, or answers anything but `200` with a JSON object, is an error (the binary exits 1).
//! Only `http://host:port[/]` URLs: the status is served on the worker's local listen port.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long `status` waits for the worker.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// `hypergate worker status`.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// The worker's base URL, `http://127.0.0.1:8480`.
    pub url: String,
    /// Print the JSON instead of a table.
    pub json: bool,
}

/// Fetches and prints the status.
pub async fn status(options: StatusOptions) -> anyhow::Result<()> {
    let status = tokio::time::timeout(STATUS_TIMEOUT, fetch(&options.url))
        .await
        .with_context(|| format!("the worker at {} did not answer in time", options.url))??;
    if options.json {
        println!("{status}");
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

/// `GET <url>/status` as JSON.
pub async fn fetch(url: &str) -> anyhow::Result<Value> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http://host:port URLs are supported");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("{url}: give the worker's base URL, http://host:port");
    }
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("the worker at {url} is unreachable"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("the worker at {url} is unreachable"))?;
    let connection = tokio::spawn(connection);
    let request = Request::get("/status")
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .context("building the status request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("asking {url} for its status"))?;
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the status from {url}"))?
        .to_bytes();
    connection.abort();
    if !code.is_success() {
        bail!("{url}/status answered {code}");
    }
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{url}/status did not answer JSON"))?;
    if !value.is_object() {
        bail!("{url}/status did not answer a JSON object");
    }
    Ok(value)
}

/// The status as a table for a terminal.
fn table(status: &Value) -> String {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "worker            {}", text(&status["worker"]));
    let _ = writeln!(
        out,
        "gateway           {} (connects: {})",
        if status["gatewayConnected"] == Value::Bool(true) {
            "connected"
        } else {
            "not connected"
        },
        text(&status["connects"])
    );
    let _ = writeln!(out, "pending jobs      {}", text(&status["pendingJobs"]));
    let _ = writeln!(out, "refused pushes    {}", text(&status["refusedPushes"]));
    let _ = writeln!(
        out,
        "forwarded         {} sessions",
        text(&status["forwardedSessions"])
    );
    let empty = Vec::new();
    for relay in status["relays"].as_array().unwrap_or(&empty) {
        let _ = writeln!(out, "\nrelay {}", text(&relay["relayKey"]));
        let _ = writeln!(out, "  job state       {}", text(&relay["jobState"]));
        let _ = writeln!(out, "  gateway writer  {}", text(&relay["gatewayWriter"]));
        let _ = writeln!(out, "  escrow deposit  {}", text(&relay["escrowId"]));
        let cores = relay["cores"].as_array().unwrap_or(&empty);
        if !cores.is_empty() {
            let _ = writeln!(
                out,
                "  {:<16} {:<14} {:>8} {:>9} {:>6}",
                "core", "role", "length", "mirrored", "lag"
            );
        }
        for core in cores {
            let key = text(&core["coreKey"]);
            let _ = writeln!(
                out,
                "  {:<16} {:<14} {:>8} {:>9} {:>6}",
                key.get(..16).unwrap_or(&key),
                text(&core["role"]),
                text(&core["length"]),
                text(&core["mirrored"]),
                text(&core["lagBlocks"])
            );
        }
    }
    let rotations = status["rotations"].as_array().unwrap_or(&empty);
    if !rotations.is_empty() {
        let _ = writeln!(out, "\nrotations");
    }
    for rotation in rotations {
        let _ = writeln!(
            out,
            "  #{} relay {} {} {} {}",
            text(&rotation["rotationId"]),
            text(&rotation["relayKey"]).get(..16).unwrap_or("-"),
            text(&rotation["reason"]),
            text(&rotation["status"]),
            text(&rotation["error"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn table_lists_each_core_with_its_lag() {
        let status = serde_json::json!({
            "worker": "aa", "gatewayConnected": true, "connects": 1, "pendingJobs": 0,
            "refusedPushes": 0, "forwardedSessions": 2, "rotations": [],
            "relays": [{"relayKey": "bb", "jobState": "idle", "gatewayWriter": "cc",
                "escrowId": null, "cores": [{"coreKey": "0123456789abcdef0123", "role": "owner",
                "length": 3, "mirrored": 1, "lagBlocks": 2}]}]
        });
        let table = table(&status);
        assert!(table.contains("connected (connects: 1)"));
        assert!(table.contains("relay bb"));
        assert!(table.contains("forwarded         2 sessions"));
        let row = table
            .lines()
            .find(|l| l.contains("0123456789abcdef"))
            .unwrap();
        assert!(!row.contains("0123456789abcdef0123"));
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["0123456789abcdef", "owner", "3", "1", "2"]
        );
    }

    #[tokio::test]
    async fn a_url_that_is_not_a_base_http_url_is_refused_before_connecting() {
        for url in [
            "https://127.0.0.1:1",
            "http://127.0.0.1:1/status",
            "http://",
        ] {
            assert!(fetch(url).await.is_err(), "{url}");
        }
    }
}
