//! Shared fixtures of the peer-link tests: identities, timers, link pairs over real sockets,
//! a scripted in-memory stream, and scenarios run on more than one runtime.

// Test helpers may unwrap: a failed fixture is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_lite::io::{AsyncRead, AsyncWrite, Cursor};
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{
    AcceptPolicy, CloseCode, ClosedBy, Established, Inbound, LinkClosed, LinkConfig, PeerLink,
    RequestError, Sleeper, accept, connect,
};
use hypergate_core::ids::RelayKey;
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, Frame, Heartbeat, HttpMethod, HttpRequest,
    HttpResponse, Message, NostrFrame,
};

pub fn identity(seed: u8) -> Identity {
    Identity::from_signing_key(SigningKey::from_bytes(&[seed; 32]))
}

pub fn gateway_identity() -> Identity {
    identity(1)
}

pub fn worker_identity() -> Identity {
    identity(2)
}

/// smol's timer as a [`Sleeper`].
pub async fn smol_timer(duration: Duration) {
    smol::Timer::after(duration).await;
}

/// A timer that never fires: for tests whose streams never stall.
pub fn never(_: Duration) -> std::future::Pending<()> {
    std::future::pending()
}

/// Handshake timeout and heartbeats short enough for tests, long enough not to fire by accident.
pub fn test_config() -> LinkConfig {
    LinkConfig::default()
        .with_handshake_timeout(Duration::from_secs(10))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_dead_after(Duration::from_secs(10))
        .with_close_timeout(Duration::from_millis(300))
}

/// Runs `connect` and `accept` against each other over two ends of one connection.
pub async fn establish_pair<S, T>(
    worker_end: S,
    gateway_end: S,
    config: &LinkConfig,
    timer: T,
) -> (Established<S, T>, Established<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Sleeper + Clone,
{
    let worker = worker_identity();
    let gateway = gateway_identity();
    let (worker_side, gateway_side) = futures_lite::future::zip(
        connect(
            worker_end,
            &worker,
            gateway.peer_id(),
            config,
            timer.clone(),
        ),
        accept(gateway_end, &gateway, &AcceptPolicy::Open, config, timer),
    )
    .await;
    (worker_side.unwrap(), gateway_side.unwrap())
}

/// Two ends of a real loopback TCP connection on smol.
pub async fn smol_tcp_pair() -> (smol::net::TcpStream, smol::net::TcpStream) {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (client, server) =
        futures_lite::future::zip(smol::net::TcpStream::connect(address), listener.accept()).await;
    (client.unwrap(), server.unwrap().0)
}

/// Spawns on the test's runtime; the scenarios below run on any runtime through it.
pub type Spawn = fn(Pin<Box<dyn Future<Output = ()> + Send>>);

/// Spawns `future` and returns a receiver of its output.
pub fn run<O: Send + 'static>(
    spawn: Spawn,
    future: impl Future<Output = O> + Send + 'static,
) -> async_channel::Receiver<O> {
    let (done_tx, done_rx) = async_channel::bounded(1);
    spawn(Box::pin(async move {
        let _ = done_tx.send(future.await).await;
    }));
    done_rx
}

pub fn http_get(path: &str) -> Message {
    Message::HttpRequest(HttpRequest {
        method: HttpMethod::Get,
        path: BoundedString::new(path).unwrap(),
        headers: BoundedVec::empty(),
        body: BoundedBytes::copy_from_slice(&[]).unwrap(),
    })
}

pub fn heartbeat(seq: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        seq,
        sent_at: UnixTime(seq),
    })
}

pub fn nostr(session: u64, text: &str) -> Message {
    Message::NostrFrame(NostrFrame {
        relay_key: RelayKey([7; 32]),
        session,
        frame: BoundedString::new(text).unwrap(),
    })
}

/// The answer the test gateway gives to a GET: status 200, the path echoed as the body.
pub fn echo_of(request: &Message) -> Option<Message> {
    let Message::HttpRequest(request) = request else {
        return None;
    };
    Some(Message::HttpResponse(HttpResponse {
        status: 200,
        headers: BoundedVec::empty(),
        body: BoundedBytes::copy_from_slice(request.path.as_bytes()).unwrap(),
    }))
}

/// Answers every GET with [`echo_of`], in batches answered in reverse order (so answers cross),
/// drops heartbeats, and forwards every other frame to `others`. Returns when the link ends.
pub async fn serve_echo(link: PeerLink, inbound: Inbound, others: async_channel::Sender<Frame>) {
    let mut batch: Vec<Frame> = Vec::new();
    while let Some(first) = inbound.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            if let Some(answer) = echo_of(&frame.message) {
                batch.push(Frame::new(frame.request_id, answer));
            } else if matches!(frame.message, Message::Heartbeat(_)) {
                // The worker link's keep-alives: nothing to answer in these tests.
            } else {
                let _ = others.send(frame).await;
            }
            next = if batch.len() < 16 {
                inbound.try_recv()
            } else {
                None
            };
        }
        for answer in batch.drain(..).rev() {
            if link.send(answer).await.is_err() {
                return;
            }
        }
    }
}

/// The path a [`echo_of`] answer echoes.
pub fn echoed_path(answer: &Message) -> String {
    let Message::HttpResponse(response) = answer else {
        panic!("expected an HTTP response, got {}", answer.kind());
    };
    String::from_utf8(response.body.as_bytes().to_vec()).unwrap()
}

// ---- scenarios, run on every runtime ----------------------------------------------------

/// Requests in both directions are answered, unsolicited frames arrive in order, and each side
/// reports the other's proven identity.
pub async fn scenario_requests_and_unsolicited_frames<S, T>(
    worker: Established<S, T>,
    gateway: Established<S, T>,
    spawn: Spawn,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Sleeper + Send + Sync + 'static,
    T::Sleep: Send,
{
    assert_eq!(worker.link.remote(), gateway_identity().peer_id());
    assert_eq!(gateway.link.remote(), worker_identity().peer_id());
    let worker_driver = run(spawn, worker.driver.run());
    let gateway_driver = run(spawn, gateway.driver.run());
    let (others_tx, others_rx) = async_channel::unbounded();
    run(
        spawn,
        serve_echo(gateway.link.clone(), gateway.inbound, others_tx),
    );

    let answer = worker.link.request(http_get("/drive/a/b")).await.unwrap();
    assert_eq!(echoed_path(&answer), "/drive/a/b");

    for session in 0..5 {
        worker
            .link
            .send(Frame::new(0, nostr(session, "[\"REQ\",\"s\",{}]")))
            .await
            .unwrap();
    }
    for session in 0..5 {
        let frame = others_rx.recv().await.unwrap();
        assert_eq!(frame.message, nostr(session, "[\"REQ\",\"s\",{}]"));
    }

    // The gateway asks; the worker's user answers through its own handle.
    let worker_link = worker.link.clone();
    let worker_inbound = worker.inbound;
    run(spawn, async move {
        while let Some(frame) = worker_inbound.recv().await {
            if let Message::Heartbeat(beat) = frame.message {
                if frame.request_id < hypergate_adapters::peer_link::FIRST_REQUEST_ID
                    || frame.request_id == hypergate_adapters::peer_link::LINK_HEARTBEAT_ID
                {
                    continue;
                }
                let ack = Frame::new(frame.request_id, Message::HeartbeatAck(beat));
                worker_link.send(ack).await.unwrap();
            }
        }
    });
    let ack = gateway.link.request(heartbeat(41)).await.unwrap();
    assert_eq!(
        ack,
        Message::HeartbeatAck(Heartbeat {
            seq: 41,
            sent_at: UnixTime(41)
        })
    );

    worker.link.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(worker_driver.recv().await.unwrap().is_ok());
    assert!(gateway_driver.recv().await.unwrap().is_ok());
}

/// 1,000 requests in flight at once on one link each get their own answer, although the
/// gateway answers them out of order.
pub async fn scenario_thousand_concurrent_requests<S, T>(
    worker: Established<S, T>,
    gateway: Established<S, T>,
    spawn: Spawn,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Sleeper + Send + Sync + 'static,
    T::Sleep: Send,
{
    let worker_driver = run(spawn, worker.driver.run());
    run(spawn, async move {
        let _ = gateway.driver.run().await;
    });
    let (others_tx, _others_rx) = async_channel::unbounded();
    run(
        spawn,
        serve_echo(gateway.link.clone(), gateway.inbound, others_tx),
    );

    let requests: Vec<_> = (0..1000)
        .map(|n| {
            let link = worker.link.clone();
            run(spawn, async move {
                let path = format!("/drive/relay/file-{n}");
                let answer = link.request(http_get(&path)).await;
                (path, answer)
            })
        })
        .collect();
    for request in requests {
        let (path, answer) = request.recv().await.unwrap();
        assert_eq!(echoed_path(&answer.unwrap()), path);
    }
    assert_eq!(worker.link.requests_in_flight(), 0);
    worker.link.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(worker_driver.recv().await.unwrap().is_ok());
}

/// A close code and reason sent by one side arrive at the other; requests waiting on the
/// closed link fail with that reason; the inbound queue ends.
pub async fn scenario_close_reasons_arrive<S, T>(
    worker: Established<S, T>,
    gateway: Established<S, T>,
    spawn: Spawn,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Sleeper + Send + Sync + 'static,
    T::Sleep: Send,
{
    let worker_driver = run(spawn, worker.driver.run());
    let gateway_driver = run(spawn, gateway.driver.run());

    // The worker asks; nobody on the gateway answers. The gateway then shuts down.
    let link = worker.link.clone();
    let waiting = run(spawn, async move { link.request(http_get("/never")).await });
    let request = gateway.inbound.recv().await.unwrap();
    assert_eq!(request.message, http_get("/never"));
    gateway
        .link
        .close(CloseCode::GOING_AWAY, "gateway restarting")
        .await
        .unwrap();

    let expected_remote = LinkClosed {
        by: ClosedBy::Peer,
        code: CloseCode::GOING_AWAY,
        reason: "gateway restarting".into(),
    };
    assert_eq!(
        worker_driver.recv().await.unwrap().unwrap(),
        expected_remote
    );
    let local = gateway_driver.recv().await.unwrap().unwrap();
    assert_eq!(local.by, ClosedBy::Local);
    assert_eq!(local.code, CloseCode::GOING_AWAY);

    match waiting.recv().await.unwrap() {
        Err(RequestError::Closed(closed)) => assert_eq!(closed, expected_remote),
        other => panic!("expected the request to fail with the close reason, got {other:?}"),
    }
    assert_eq!(worker.link.closed(), Some(expected_remote.clone()));
    assert_eq!(worker.inbound.recv().await, None);
    assert!(matches!(
        worker.link.send(Frame::new(1, heartbeat(1))).await,
        Err(RequestError::Closed(_))
    ));
}

// ---- a scripted in-memory stream ---------------------------------------------------------

/// Reads come from a fixed script, then end of stream; writes are kept.
pub struct Scripted {
    input: Cursor<Vec<u8>>,
    pub written: Vec<u8>,
}

impl Scripted {
    pub fn new(input: Vec<u8>) -> Self {
        Self {
            input: Cursor::new(input),
            written: Vec::new(),
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
