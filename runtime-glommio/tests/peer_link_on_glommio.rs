//! The runtime-neutral peer link runs inside a glommio executor, over glommio TCP, timed by
//! glommio's timer (`GlommioTimer`), with `spawn_local` tasks: the pinned gateway key is
//! checked (a wrong one refused), 1,000 concurrent requests on one link are answered,
//! heartbeats keep an idle link alive past its dead-peer timeout (and a silent peer is declared
//! dead), and garbage before the handshake ends the connection with an error, never a panic.
//! The same scenarios run on tokio and smol in `adapters/tests/peer_link*.rs`.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Shutdown;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::spawn_local;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{
    AcceptPolicy, CloseCode, ClosedBy, HandshakeError, Inbound, LINK_HEARTBEAT_ID, LinkConfig,
    LinkError, PeerLink, Sleeper,
};
use hypergate_core::ids::PeerId;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, Frame, HttpMethod, HttpRequest, HttpResponse, Message,
};
use hypergate_glommio::executor;
use hypergate_glommio::peer_link::{ConnectError, GlommioLink, accept_tcp, connect_tcp};
use hypergate_glommio::timers::GlommioTimer;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// One executor at a time in this binary, however many test threads run: each executor locks
/// its io_uring buffers, and the locked-memory limit (8 MiB here) is per process.
static ONE_EXECUTOR: Mutex<()> = Mutex::new(());

fn on_glommio<G, F, T>(work: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    // A test that failed while holding the lock leaves it poisoned; the next may still run.
    let _one = ONE_EXECUTOR.lock().unwrap_or_else(PoisonError::into_inner);
    executor::start("peer-link-test", 1, work).unwrap()
}

fn identity(seed: u8) -> Identity {
    Identity::from_signing_key(SigningKey::from_bytes(&[seed; 32]))
}

fn gateway_identity() -> Identity {
    identity(1)
}

fn worker_identity() -> Identity {
    identity(2)
}

fn test_config() -> LinkConfig {
    LinkConfig::default()
        .with_handshake_timeout(Duration::from_secs(10))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_dead_after(Duration::from_secs(10))
        .with_close_timeout(Duration::from_millis(300))
}

/// A worker pinning `pinned` connects to a gateway (open policy) over loopback glommio TCP.
async fn establish(
    config: &LinkConfig,
    pinned: PeerId,
) -> (
    Result<GlommioLink, ConnectError>,
    Result<GlommioLink, HandshakeError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = gateway_identity();
    let worker = worker_identity();
    future::zip(connect_tcp(addr, &worker, pinned, config), async {
        let stream = listener.accept().await.unwrap();
        accept_tcp(stream, &gateway, &AcceptPolicy::Open, config).await
    })
    .await
}

async fn establish_pair(config: &LinkConfig) -> (GlommioLink, GlommioLink) {
    let (worker, gateway) = establish(config, gateway_identity().peer_id()).await;
    (worker.unwrap(), gateway.unwrap())
}

fn http_get(path: &str) -> Message {
    Message::HttpRequest(HttpRequest {
        method: HttpMethod::Get,
        path: BoundedString::new(path).unwrap(),
        headers: BoundedVec::empty(),
        body: BoundedBytes::copy_from_slice(&[]).unwrap(),
    })
}

fn echoed_path(answer: &Message) -> String {
    let Message::HttpResponse(response) = answer else {
        panic!("expected an HTTP response, got {}", answer.kind());
    };
    String::from_utf8(response.body.as_bytes().to_vec()).unwrap()
}

/// The gateway's user: answers each GET with its path, in batches answered in reverse order (so
/// answers cross), and counts the worker's link heartbeats. Returns the count when the link ends.
async fn serve_echo(link: PeerLink, inbound: Inbound) -> usize {
    let mut heartbeats = 0;
    let mut batch = Vec::new();
    while let Some(first) = inbound.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            match frame.message {
                Message::HttpRequest(request) => {
                    let answer = Message::HttpResponse(HttpResponse {
                        status: 200,
                        headers: BoundedVec::empty(),
                        body: BoundedBytes::copy_from_slice(request.path.as_bytes()).unwrap(),
                    });
                    batch.push(Frame::new(frame.request_id, answer));
                }
                Message::Heartbeat(_) if frame.request_id == LINK_HEARTBEAT_ID => heartbeats += 1,
                _ => {}
            }
            next = if batch.len() < 16 {
                inbound.try_recv()
            } else {
                None
            };
        }
        for answer in batch.drain(..).rev() {
            if link.send(answer).await.is_err() {
                return heartbeats;
            }
        }
    }
    heartbeats
}

#[test]
fn a_glommio_link_authenticates_both_sides_carries_requests_and_closes_with_a_reason() {
    on_glommio(|| async {
        let (worker, gateway) = establish_pair(&test_config()).await;
        assert_eq!(worker.link.remote(), gateway_identity().peer_id());
        assert_eq!(gateway.link.remote(), worker_identity().peer_id());
        let worker_driver = spawn_local(worker.driver.run());
        let gateway_driver = spawn_local(gateway.driver.run());
        let _server = spawn_local(serve_echo(gateway.link.clone(), gateway.inbound));

        let answer = worker.link.request(http_get("/drive/a/b")).await.unwrap();
        assert_eq!(echoed_path(&answer), "/drive/a/b");

        worker.link.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(worker_driver.await.unwrap().by, ClosedBy::Local);
        let closed = gateway_driver.await.unwrap();
        assert_eq!(
            (closed.by, closed.code, closed.reason.as_str()),
            (ClosedBy::Peer, CloseCode::NORMAL, "done")
        );
    });
}

#[test]
fn a_worker_pinning_another_gateway_key_refuses_the_glommio_gateway() {
    on_glommio(|| async {
        let pinned = identity(9).peer_id();
        let (worker, gateway) = establish(&test_config(), pinned).await;
        match worker {
            Err(ConnectError::Handshake(HandshakeError::UnexpectedRemote { expected, got })) => {
                assert_eq!(expected, pinned);
                assert_eq!(got, gateway_identity().peer_id());
            }
            other => panic!("expected UnexpectedRemote, got {other:?}"),
        }
        // The worker hung up before revealing itself: the gateway learns nobody.
        assert!(
            matches!(gateway, Err(HandshakeError::Closed)),
            "{gateway:?}"
        );
    });
}

#[test]
fn a_thousand_concurrent_requests_on_one_glommio_link_get_their_own_answers() {
    on_glommio(|| async {
        let (worker, gateway) = establish_pair(&test_config()).await;
        let worker_driver = spawn_local(worker.driver.run());
        let _gateway_driver = spawn_local(gateway.driver.run());
        let _server = spawn_local(serve_echo(gateway.link.clone(), gateway.inbound));

        // All spawned before any runs: the executor polls them once this task yields.
        let requests: Vec<_> = (0..1000)
            .map(|n| {
                let link = worker.link.clone();
                spawn_local(async move {
                    let path = format!("/drive/relay/file-{n}");
                    let answer = link.request(http_get(&path)).await;
                    (path, answer)
                })
            })
            .collect();
        for request in requests {
            let (path, answer) = request.await;
            assert_eq!(echoed_path(&answer.unwrap()), path);
        }
        assert_eq!(worker.link.requests_in_flight(), 0);
        worker.link.close(CloseCode::NORMAL, "done").await.unwrap();
        assert!(worker_driver.await.is_ok());
    });
}

fn fast_heartbeats() -> LinkConfig {
    test_config()
        .with_heartbeat_interval(Duration::from_millis(20))
        .with_dead_after(Duration::from_millis(200))
}

#[test]
fn heartbeats_keep_an_idle_glommio_link_alive_past_its_dead_peer_timeout() {
    on_glommio(|| async {
        let config = fast_heartbeats();
        let (worker, gateway) = establish_pair(&config).await;
        let worker_driver = spawn_local(worker.driver.run());
        let gateway_driver = spawn_local(gateway.driver.run());
        let server = spawn_local(serve_echo(gateway.link.clone(), gateway.inbound));
        let worker_inbound = worker.inbound;
        let _drain = spawn_local(async move { while worker_inbound.recv().await.is_some() {} });

        // Idle for five dead-peer timeouts: only heartbeats cross the link.
        GlommioTimer.sleep(config.dead_after() * 5).await;
        assert_eq!(worker.link.closed(), None);
        assert_eq!(gateway.link.closed(), None);

        // Still usable.
        let answer = worker.link.request(http_get("/after/idle")).await.unwrap();
        assert_eq!(echoed_path(&answer), "/after/idle");
        worker.link.close(CloseCode::NORMAL, "done").await.unwrap();
        assert!(worker_driver.await.is_ok());
        assert!(gateway_driver.await.is_ok());
        assert!(
            server.await > 0,
            "the worker's heartbeats reach the gateway's user"
        );
    });
}

#[test]
fn a_silent_peer_is_declared_dead_on_glommio_timers() {
    on_glommio(|| async {
        let (worker, silent_gateway) = establish_pair(&fast_heartbeats()).await;
        // The gateway's driver never runs: it neither reads nor answers heartbeats.
        let result = worker.driver.run().await;
        assert!(
            matches!(result, Err(LinkError::PeerSilent { .. })),
            "{result:?}"
        );
        assert_eq!(worker.link.closed().unwrap().code, CloseCode::TIMEOUT);
        drop(silent_gateway);
    });
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// A raw client sends `garbage` and half-closes; returns what `accept_tcp` made of it and
/// whether the gateway then closed the connection (the client's read ends).
async fn gateway_facing(garbage: Vec<u8>) -> (HandshakeError, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = test_config().with_handshake_timeout(Duration::from_secs(5));
    let gateway = gateway_identity();
    let client = async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&garbage).await.unwrap();
        client.shutdown(Shutdown::Write).await.unwrap();
        client
    };
    let (mut client, result) = future::zip(client, async {
        let stream = listener.accept().await.unwrap();
        accept_tcp(stream, &gateway, &AcceptPolicy::Open, &config).await
    })
    .await;
    let error = result.expect_err("garbage must not complete a handshake");
    // The stream was dropped with the error: the client sees the end (or a reset).
    let mut rest = Vec::new();
    let closed = match client.read_to_end(&mut rest).await {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (error, closed)
}

#[test]
fn garbage_before_the_handshake_ends_a_glommio_connection_with_an_error_and_no_panic() {
    on_glommio(|| async {
        // An HTTP client: "GE" declares an 18,245-byte handshake message.
        let (http, closed) = gateway_facing(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(
            matches!(http, HandshakeError::MessageTooLong { len: 18245, .. }),
            "{http:?}"
        );
        assert!(closed);

        for seed in 0..10 {
            let (error, closed) = gateway_facing(random_bytes(seed, 700)).await;
            assert!(error.is_peer_fault(), "seed {seed}: {error:?}");
            assert!(closed, "seed {seed}: the connection stayed open");
        }

        // The other direction: a "gateway" that answers the worker with garbage.
        for seed in 0..5 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let reply = random_bytes(100 + seed, 300);
            let raw_gateway = async {
                let mut raw = listener.accept().await.unwrap();
                let mut first = [0u8; 2];
                raw.read_exact(&mut first).await.unwrap();
                raw.write_all(&reply).await.unwrap();
                raw.shutdown(Shutdown::Write).await.unwrap();
                raw
            };
            let (_raw, result) = future::zip(
                raw_gateway,
                connect_tcp(
                    addr,
                    &worker_identity(),
                    gateway_identity().peer_id(),
                    &test_config(),
                ),
            )
            .await;
            match result {
                Err(ConnectError::Handshake(error)) => {
                    assert!(error.is_peer_fault(), "seed {seed}: {error:?}");
                }
                other => panic!("seed {seed}: expected a handshake error, got {other:?}"),
            }
        }
    });
}

#[test]
fn dialling_a_closed_port_is_a_tcp_error_naming_the_address() {
    on_glommio(|| async {
        // Bind, learn the port, release it: nothing listens there now.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let result = connect_tcp(
            addr,
            &worker_identity(),
            gateway_identity().peer_id(),
            &test_config(),
        )
        .await;
        match result {
            Err(error @ ConnectError::Tcp { .. }) => {
                assert!(error.to_string().contains(&addr.to_string()), "{error}");
            }
            other => panic!("expected a TCP error, got {other:?}"),
        }
    });
}
