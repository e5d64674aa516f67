//! Memory per idle WebSocket on the glommio serving layer (a measurement, not a test).
//!
//! `cargo run --release -p hypergate-glommio --example idle_websockets -- 1000 10000` starts a
//! two-shard server in a child process (this example with `serve`), opens each number of idle
//! WebSockets to it from this process (raw sockets: a handshake, then nothing), and prints the
//! server's resident memory before and after, per connection. Server and clients are separate
//! processes so that each stays under the open-files limit and the client's memory is not
//! counted. `IDLE_READ_BUFFER=<bytes>` sets tungstenite's per-socket read buffer (default here
//! 4 KiB).

// A measurement tool: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hypergate_glommio::http::{self, Handlers, Upgrade};
use tungstenite::protocol::WebSocketConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        serve();
        return;
    }
    let counts: Vec<usize> = if args.is_empty() {
        vec![1_000, 10_000]
    } else {
        args.iter()
            .map(|arg| arg.parse().expect("connection counts"))
            .collect()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().expect("the server's address");
    println!("| idle WebSockets | server RSS before | after | per connection |");
    println!("| ---: | ---: | ---: | ---: |");
    for count in counts {
        let before = rss_kib(child.id());
        let mut open = Vec::with_capacity(count);
        for _ in 0..count {
            open.push(handshake(addr));
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_kib(child.id());
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / count as f64;
        println!(
            "| {count} | {before} KiB | {after} KiB | {:.1} KiB ({per:.0} B) |",
            per / 1024.0
        );
        drop(open);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The server: two shards; `/idle` WebSockets are read until closed.
fn serve() {
    let server = http::serve("127.0.0.1:0".parse().unwrap(), 2, |_shard| Handlers {
        http: hyper::service::service_fn(|_request: hyper::Request<_>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(response)
        }),
        websocket: |_head: &http::head::RequestHead, _remote: std::net::SocketAddr| {
            Upgrade::Accept {
                config: config(),
                serve: Box::new(|mut socket| {
                    Box::pin(async move { while let Some(Ok(_)) = socket.next().await {} })
                }),
            }
        },
    })
    .expect("glommio serves here");
    println!("{}", server.local_addr());
    // Until the measuring parent closes stdin.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    server.stop();
}

/// tungstenite's read buffer per socket: 4 KiB here (most Nostr frames fit; a larger frame
/// grows it), `IDLE_READ_BUFFER=<bytes>` to compare (tungstenite's default is 128 KiB, which
/// it allocates up front for every socket).
fn config() -> WebSocketConfig {
    let bytes =
        std::env::var("IDLE_READ_BUFFER").map_or(4096, |bytes| bytes.parse().expect("bytes"));
    WebSocketConfig::default().read_buffer_size(bytes)
}

fn handshake(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /idle HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    stream
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
