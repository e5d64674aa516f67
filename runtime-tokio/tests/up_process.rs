//! `hypergate up` as a real process — the README's first command: it prints a relay URL at the
//! gateway that a real Nostr client (nostr-tools over `ws`, installed with npm) publishes to and
//! reads back from (live and stored), through the gateway's forwarding to the worker, and a
//! second start on the same data directory serves the same relay with its events.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nostr_tools_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nostr_tools_support::NostrTools;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hypergate");

/// A running `hypergate up`; SIGKILLed when dropped.
struct Up {
    child: Child,
    report: Value,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(data: &Path) -> Up {
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let report = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("hypergate up never printed its URLs");
        if let Ok(report) = serde_json::from_str::<Value>(&line)
            && report.get("relayUrl").is_some()
        {
            break report;
        }
    };
    Up { child, report }
}

#[test]
fn hypergate_up_serves_a_relay_that_nostr_tools_publishes_to_and_reads_from() {
    let Some(tools) = NostrTools::install() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("hypergate-data");
    let first = up(&data_dir);
    let url = first.report["relayUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    // The worker links and registers right after start; the client retries nothing, so wait
    // until the gateway knows the relay.
    let gateway = first.report["gateway"].as_str().unwrap().to_owned();
    let health_url = format!("{gateway}/health");
    let mut linked = false;
    for _ in 0..200 {
        let body = http_get(&health_url);
        if body.contains("\"peersConnected\":1") && body.contains("\"relays\":1") {
            linked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(linked, "the worker never linked to the gateway");
    let report = tools.client(&url);
    assert_eq!(report["ok"], true);
    assert!(report["refusal"].as_str().unwrap().contains("invalid:"));
    drop(first);

    // A second start reuses everything: the same relay URL path, the event still there.
    let second = up(&data_dir);
    assert_eq!(second.report["relayKey"], first_key(&url));
    let report = run_client_after_link(&tools, &second);
    assert_eq!(report["ok"], true);
}

fn first_key(url: &str) -> Value {
    Value::String(url.rsplit('/').next().unwrap().to_owned())
}

fn run_client_after_link(tools: &NostrTools, up: &Up) -> Value {
    let gateway = up.report["gateway"].as_str().unwrap();
    for _ in 0..200 {
        if http_get(&format!("{gateway}/health")).contains("\"peersConnected\":1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tools.client(up.report["relayUrl"].as_str().unwrap())
}

/// A blocking `GET` of an `http://host:port/path` URL: the body ("" when unreachable).
fn http_get(url: &str) -> String {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else {
        return String::new();
    };
    let _ = write!(stream, "GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
