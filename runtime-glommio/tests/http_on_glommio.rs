//! HTTP and WebSocket serving on glommio shards: two pinned executors listen on one address
//! with `SO_REUSEPORT`, both take connections, each answers HTTP through hyper (keep-alive
//! included) and WebSockets through its own handler; refusals and malformed requests get a
//! status and a JSON `{error}`, never a panic; `stop` ends every shard. The clients are plain
//! blocking sockets and tungstenite's blocking client on their own threads.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hypergate_glommio::http::{self, Handlers, ShardedServer, Upgrade};
use tungstenite::Message;
use tungstenite::protocol::WebSocketConfig;

const SHARDS: usize = 2;

/// `/health` names the shard; `/echo` WebSockets echo `"<shard>:<text>"`; nothing else exists.
fn start() -> ShardedServer {
    start_at("127.0.0.1:0".parse().unwrap())
}

/// [`start`] on `addr`.
fn start_at(addr: SocketAddr) -> ShardedServer {
    http::serve(addr, SHARDS, |shard| Handlers {
        http: hyper::service::service_fn(move |request: hyper::Request<_>| async move {
            let (status, body) = if request.uri().path() == "/health" {
                (
                    StatusCode::OK,
                    format!(r#"{{"status":"ok","shard":{shard}}}"#),
                )
            } else {
                (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.to_owned())
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }),
        websocket: move |head: &http::head::RequestHead, _remote: std::net::SocketAddr| {
            if head.path != "/echo" {
                return Upgrade::Refuse {
                    status: StatusCode::NOT_FOUND,
                    reason: format!("no relay at {}", head.path),
                };
            }
            Upgrade::Accept {
                config: WebSocketConfig::default(),
                serve: Box::new(move |mut socket| {
                    Box::pin(async move {
                        while let Some(Ok(message)) = socket.next().await {
                            if let Message::Text(text) = message {
                                let reply = Message::text(format!("{shard}:{text}"));
                                if socket.send(reply).await.is_err() {
                                    break;
                                }
                            }
                        }
                    })
                }),
            }
        },
    })
    .expect("glommio serves here")
}

/// Sends `request` raw and returns the whole answer (the server closes or the read times out).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn both_shards_take_websockets_on_one_reuseport_address_and_echo() {
    let server = start();
    assert_eq!(server.shards(), SHARDS);
    let url = format!("ws://{}/echo", server.local_addr());
    let mut shards_seen = BTreeSet::new();
    for n in 0..40 {
        let (mut socket, response) = tungstenite::connect(url.as_str()).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        socket.send(Message::text(format!("hello {n}"))).unwrap();
        let reply = socket.read().unwrap().into_text().unwrap();
        let (shard, text) = reply.split_once(':').unwrap();
        assert_eq!(text, format!("hello {n}"));
        shards_seen.insert(shard.to_owned());
        socket.close(None).unwrap();
    }
    // 40 connections from distinct source ports: the kernel's hash spreads them over both.
    assert_eq!(
        shards_seen.len(),
        SHARDS,
        "shards that served: {shards_seen:?}"
    );
    server.stop();
}

/// A port whose last listener (not `SO_REUSEPORT`, as tokio's and std's are not) is closed
/// while its connections still linger half-closed binds at once, as it would for tokio: what
/// a gateway restarted with `--runtime glommio` right after a tokio one needs.
#[test]
fn a_port_a_closed_listener_left_lingering_connections_on_binds_at_once() {
    let previous = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = previous.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (accepted, _) = previous.accept().unwrap();
    // The server's side closes first: it lingers in FIN-WAIT-2 while the client keeps its end.
    drop(accepted);
    drop(previous);
    let server = start_at(addr);
    assert_eq!(server.local_addr(), addr);
    let answer = raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(client);
    server.stop();
}

#[test]
fn http_requests_are_served_by_hyper_with_keep_alive() {
    let server = start();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for path in ["/health", "/missing", "/health"] {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if path == "/health" {
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            assert_eq!(body["status"], "ok");
        } else {
            assert!(status.starts_with("HTTP/1.1 404"), "{status}");
            assert_eq!(body["error"], "not found");
        }
    }
    server.stop();
}

#[test]
fn bad_upgrades_and_malformed_requests_get_a_status_and_a_json_error() {
    let server = start();
    let addr = server.local_addr();
    let upgrade = |path: &str, version: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let unknown = raw(addr, upgrade("/nowhere", "13").as_bytes());
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(
        unknown.ends_with(r#"{"error":"no relay at /nowhere"}"#),
        "{unknown}"
    );
    let old = raw(addr, upgrade("/echo", "8").as_bytes());
    assert!(old.starts_with("HTTP/1.1 400"), "{old}");
    assert!(
        old.contains(r#""error":"unsupported WebSocket version"#),
        "{old}"
    );

    let mut huge = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 20_000));
    let too_large = raw(addr, &huge);
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    assert!(too_large.contains(r#""error""#), "{too_large}");

    let garbage = raw(addr, b"\x16\x03\x01\x00\xa5 definitely not http\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");

    // Still serving after all that.
    let (mut socket, _) = tungstenite::connect(format!("ws://{addr}/echo").as_str()).unwrap();
    socket.send(Message::text("still here")).unwrap();
    assert!(
        socket
            .read()
            .unwrap()
            .into_text()
            .unwrap()
            .ends_with(":still here")
    );
    server.stop();
}

#[test]
fn stop_ends_every_shard_with_connections_still_open() {
    let server = start();
    let url = format!("ws://{}/echo", server.local_addr());
    let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap();
    socket.send(Message::text("open")).unwrap();
    socket.read().unwrap();
    let started = Instant::now();
    // Joins both executors: a shard that kept running would hang here.
    server.stop();
    println!("stopped in {:?}", started.elapsed());
    // The open socket was dropped with its shard.
    assert!(socket.read().is_err(), "a socket outlived its shard");
}
