//! The gateway on glommio: thread-per-core serving of the same gateway service the tokio
//! driver runs (`hypergate_adapters::gateway`), with no tokio runtime.
//!
//! Contract:
//! - [`start`] opens the [`GatewayService`] on the calling thread, then starts `shards`
//!   pinned executors ([`crate::http::serve`]), each with its own `SO_REUSEPORT` listener for
//!   clients and operators. A WebSocket upgrade of a relay URL (`/relay/{key}`, `/{a}/{b}`)
//!   becomes a client session on the shard that accepted it; every other request goes
//!   through the service's axum routes, served by hyper on the shard.
//! - The core state (registry, routing, leases, pending writes) is split by relay key into
//!   one partition per shard (`hypergate_core::partition`, decisions D131): shard `n` runs
//!   partition `n`'s timers, and a relay's sessions, writes and worker frames feed that
//!   relay's partition under its own short lock, so relays on different partitions never
//!   contend. What spans partitions is fanned out by the service: link up/down and
//!   heartbeats reach every partition, a registration is answered with one merged ack, and
//!   one registry snapshot holds every partition's relays.
//! - Shard 0 also accepts worker links (`hypergate_adapters::peer_link` over glommio TCP,
//!   timed by glommio) and runs the registry persister. The service's own tasks are spawned
//!   on the shard whose work started them.
//! - Each shard owns its sockets, its connection tasks and its own replica hosts (relay
//!   views, indexes and live subscriptions, numbered by `rt::set_current_shard`), so replica
//!   reads stay on their core; the mirror or a gateway write adding events refreshes every
//!   shard's host of the relay (docs/architecture.md, decisions D123).
//! - [`GlommioGateway::shutdown`] (or dropping it) ends leases (wiping their keys), waits for
//!   the last registry snapshot, lets sessions flush their close, stops accepting and waits
//!   for every shard.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _, future};
use glommio::net::TcpListener;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper::{Request, Response, StatusCode};
use hypergate_adapters::gateway::{
    FromClient, GatewayOptions, GatewayService, ToClient, websocket_relay_name,
};
use hypergate_adapters::rt::{self, Spawner, Task};
use hypergate_core::ids::PeerId;
use hypergate_core::partition::Partitioning;
use tungstenite::Message;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::http::head::RequestHead;
use crate::http::{self, ACCEPT_POLL, Handlers, ServeError, ShardedServer, Upgrade};
use crate::listener::PortSharing;
use crate::peer_link::accept_tcp;

/// tungstenite's read buffer per client WebSocket: its 128 KiB default made an idle
/// connection cost ~138 KiB (D115); 4 KiB cost 2–3 KiB more per idle connection than 1 KiB,
/// which most Nostr frames fit (D129).
const READ_BUFFER_BYTES: usize = 1024;

/// How long sessions get to send their close frames at shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// How long shutdown waits for the background work's last registry snapshot.
const FINAL_SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

thread_local! {
    /// Whether this thread is a gateway shard (its executor can take spawned tasks).
    static ON_SHARD: Cell<bool> = const { Cell::new(false) };
}

/// Why the glommio gateway did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The gateway's state did not open.
    #[error(transparent)]
    Service(#[from] hypergate_adapters::gateway::StartError),
    /// The shard count cannot partition the core.
    #[error(transparent)]
    Partitions(#[from] hypergate_core::partition::PartitionError),
    /// The executors or the client listener did not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The peer-link listener could not bind.
    #[error("could not listen for workers on {addr}: {detail}")]
    PeerListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
}

/// A running glommio gateway.
pub struct GlommioGateway {
    /// Where clients connect.
    pub http_addr: SocketAddr,
    /// Where workers connect.
    pub peer_addr: SocketAddr,
    /// The gateway's identity, to pin in workers.
    pub peer_id: PeerId,
    service: Arc<GatewayService>,
    /// `None` once stopped.
    server: Option<ShardedServer>,
    /// Hears when the background work (timers, registry persister) has finished.
    background_done: std::sync::mpsc::Receiver<()>,
}

impl std::fmt::Debug for GlommioGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlommioGateway")
            .field("http_addr", &self.http_addr)
            .field("peer_addr", &self.peer_addr)
            .field("shards", &self.shards())
            .finish_non_exhaustive()
    }
}

impl GlommioGateway {
    /// How many shards serve.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.server.as_ref().map_or(0, ShardedServer::shards)
    }

    /// Ends every lease (their keys are wiped), stops serving and waits for the shards.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.service.shutdown();
            // The persister writes its last snapshot after the shutdown signal; the shards
            // must still run for that.
            if self
                .background_done
                .recv_timeout(FINAL_SNAPSHOT_WAIT)
                .is_err()
            {
                tracing::warn!("the last registry snapshot did not finish before shutdown");
            }
            std::thread::sleep(CLOSE_GRACE);
            server.stop();
        }
    }
}

impl Drop for GlommioGateway {
    /// A gateway dropped without [`GlommioGateway::shutdown`] is shut down all the same: its
    /// shards are threads that would otherwise keep serving.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The spawner of the service's tasks: on the shard that asks. A thread that is no shard
/// (none should ask) runs the task on a thread of its own rather than lose it.
fn shard_spawner() -> Spawner {
    Spawner::new(|task: Task| {
        if ON_SHARD.with(Cell::get) {
            glommio::spawn_local(task).detach();
        } else {
            tracing::warn!(
                "a gateway task was started off the shards; running it on its own thread"
            );
            std::thread::spawn(move || futures_lite::future::block_on(task));
        }
    })
}

/// Starts the gateway on `shards` executors (see the module docs).
pub fn start(options: GatewayOptions, shards: usize) -> Result<GlommioGateway, StartError> {
    let peer_listen = options.peer_listen;
    let http_listen = options.http_listen;
    // One core partition per shard, driven (timers) by that shard.
    let partitions = Partitioning::new(shards)?;
    let service = Arc::new(futures_lite::future::block_on(GatewayService::open(
        options,
        partitions,
        shard_spawner(),
    ))?);
    let peer_id = service.peer_id();
    let (peer_bound_tx, peer_bound_rx) = std::sync::mpsc::channel();
    let (background_done_tx, background_done) = std::sync::mpsc::channel();
    let router = service.routes(GatewayService::relay_page_routes());
    let server = {
        let service = Arc::clone(&service);
        http::serve(http_listen, shards, move |shard| {
            ON_SHARD.with(|on| on.set(true));
            hypergate_adapters::rt::set_current_shard(shard);
            if shard == 0 {
                start_shard_zero(&service, peer_listen, &peer_bound_tx, &background_done_tx);
            }
            let timers = Arc::clone(&service);
            glommio::spawn_local(async move { timers.run_timers_of(shard).await }).detach();
            Handlers {
                http: AxumService(router.clone()),
                websocket: {
                    let service = Arc::clone(&service);
                    move |head: &RequestHead, remote: SocketAddr| upgrade(&service, head, remote)
                },
            }
        })?
    };
    let peer_addr = match peer_bound_rx.recv() {
        Ok(Ok(addr)) => addr,
        Ok(Err(detail)) => {
            server.stop();
            return Err(StartError::PeerListen {
                addr: peer_listen,
                detail,
            });
        }
        Err(_) => {
            server.stop();
            return Err(StartError::PeerListen {
                addr: peer_listen,
                detail: "shard 0 ended before binding".into(),
            });
        }
    };
    tracing::info!(
        http = %server.local_addr(),
        peer = %peer_addr,
        shards = server.shards(),
        "glommio gateway serving"
    );
    Ok(GlommioGateway {
        http_addr: server.local_addr(),
        peer_addr,
        peer_id,
        service,
        server: Some(server),
        background_done,
    })
}

/// Shard 0's extra work: the peer-link listener and the registry persister.
fn start_shard_zero(
    service: &Arc<GatewayService>,
    listen: SocketAddr,
    bound: &std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    background_done: &std::sync::mpsc::Sender<()>,
) {
    let background = Arc::clone(service);
    let done = background_done.clone();
    glommio::spawn_local(async move {
        background.run_persister().await;
        let _ = done.send(());
    })
    .detach();
    let service = Arc::clone(service);
    let bound = bound.clone();
    glommio::spawn_local(async move {
        let bind = || crate::listener::bind(listen, PortSharing::Exclusive);
        let listener = match rt::bind_patiently(bind, rt::BIND_PATIENCE).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = bound.send(Err(error.to_string()));
                return;
            }
        };
        let _ = bound.send(listener.local_addr().map_err(|error| error.to_string()));
        accept_links(service, listener).await;
    })
    .detach();
}

/// Accepts worker links until the gateway shuts down (or shard 0 stops).
async fn accept_links(service: Arc<GatewayService>, listener: TcpListener) {
    let shutdown = service.shutdown_signal();
    while !*shutdown.borrow() {
        let accepted =
            glommio::timer::timeout(ACCEPT_POLL, async { Ok(listener.accept().await) }).await;
        let stream = match accepted {
            Err(_) => continue,
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::warn!(%error, "peer-link accept failed");
                glommio::timer::sleep(ACCEPT_POLL).await;
                continue;
            }
        };
        let remote = stream.peer_addr().ok();
        let service = Arc::clone(&service);
        glommio::spawn_local(async move {
            let established = match accept_tcp(
                stream,
                service.identity(),
                service.accept_policy(),
                service.link_config(),
            )
            .await
            {
                Ok(established) => established,
                Err(error) => {
                    tracing::info!(?remote, %error, "peer-link handshake refused");
                    return;
                }
            };
            glommio::spawn_local(established.driver.run()).detach();
            service
                .serve_link(established.link, established.inbound)
                .await;
        })
        .detach();
    }
}

/// What a shard does with a WebSocket upgrade: a relay URL becomes a client session; any
/// other URL is plain HTTP to the routes.
fn upgrade(service: &Arc<GatewayService>, head: &RequestHead, remote: SocketAddr) -> Upgrade {
    let Some(relay_name) = websocket_relay_name(&head.path) else {
        return Upgrade::Http;
    };
    let target = match &head.query {
        Some(query) => format!("{}?{query}", head.path),
        None => head.path.clone(),
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return Upgrade::Refuse {
            status: StatusCode::BAD_REQUEST,
            reason: "malformed request target".into(),
        };
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &head.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let admission = service.admit_websocket(relay_name, remote.ip(), &uri, &headers);
    let cap = service.websocket_message_cap();
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(cap);
    config.max_frame_size = Some(cap);
    config.read_buffer_size = READ_BUFFER_BYTES;
    let service = Arc::clone(service);
    Upgrade::Accept {
        config,
        serve: Box::new(move |socket| {
            Box::pin(async move {
                let (sink, stream) = socket.split();
                let outgoing = sink.with(|frame| {
                    future::ready(Ok::<_, tungstenite::Error>(to_tungstenite(frame)))
                });
                let incoming = stream.map(from_tungstenite);
                service.serve_client(admission, outgoing, incoming).await;
            })
        }),
    }
}

fn to_tungstenite(frame: ToClient) -> Message {
    match frame {
        ToClient::Text(text) => Message::text(text),
        ToClient::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    }
}

fn from_tungstenite(read: Result<Message, tungstenite::Error>) -> FromClient {
    match read {
        Ok(Message::Text(text)) => FromClient::Text(text.as_str().to_owned()),
        Ok(Message::Binary(_)) => FromClient::Binary,
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => FromClient::Control,
        Ok(Message::Close(_)) | Err(_) => FromClient::Closed,
    }
}

/// The service's axum routes as a hyper service on a shard; answers are collected into one
/// body (the largest is a drive file, bounded by the drive's upload limit).
#[derive(Clone)]
struct AxumService(axum::Router);

impl hyper::service::Service<Request<Incoming>> for AxumService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let router = self.0.clone();
        Box::pin(async move {
            let response = match tower::ServiceExt::oneshot(router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            match body.collect().await {
                Ok(collected) => Ok(Response::from_parts(parts, Full::new(collected.to_bytes()))),
                Err(error) => {
                    tracing::warn!(%error, "an HTTP answer could not be read");
                    let mut failed = Response::new(Full::new(Bytes::from_static(
                        br#"{"error":"internal error"}"#,
                    )));
                    *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(failed)
                }
            }
        })
    }
}
