//! HTTP/1.1 and WebSocket serving on glommio, one listener per core.
//!
//! Contract:
//! - [`serve`] starts `shards` glommio executors, each pinned to a CPU
//!   (round robin over the CPUs this process may use) with io_uring memory
//!   sized by [`crate::executor::plan_io_memory`], so a host whose
//!   `RLIMIT_MEMLOCK` or io_uring cannot run them fails at start with a clear
//!   [`ServeError`] (and the advice to run the tokio gateway), not later.
//! - Every shard binds its own listener on the same address with
//!   `SO_REUSEPORT` (and `SO_REUSEADDR`, see `listener.rs`), so the kernel spreads connections
//!   over the shards and no connection is ever handed between threads. Shard
//!   0 binds first; with port 0 the others bind the port it got.
//! - Each connection stays on the shard that accepted it. Its first request
//!   head is read here ([`head`]): a WebSocket upgrade is checked
//!   ([`websocket::check`]) and offered to the caller's
//!   [`Handlers::websocket`] (with the client's address), which accepts it
//!   with a task that owns the socket, refuses it with a status and reason (a
//!   JSON `{error}` answer), or passes it on as plain HTTP;
//!   any other request is served by hyper's HTTP/1.1 server with the
//!   caller's [`Handlers::http`] service, the bytes already read replayed.
//!   Handlers are built once per shard by the caller's factory, so they may
//!   hold shard-local state (`Rc`, no locks). `TCP_NODELAY` is set: NIP-01
//!   is request/response over small frames.
//! - [`ShardedServer::stop`] stops accepting within [`ACCEPT_POLL`], cancels
//!   every connection still open (its socket is closed) and returns once
//!   every shard's executor has finished.
//!
//! Not here: hyper's header-read timeout needs a `Send` timer and glommio's
//! is not, so slow-header clients are bounded by the caller (connection caps),
//! not by hyper.

pub mod head;
pub mod websocket;
/// The `futures-io` ⇄ hyper byte-stream adapters live in `hypergate_adapters::hyper_io` (the
/// runtime-neutral escrow client uses them too).
pub use hypergate_adapters::hyper_io as io;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hypergate_adapters::hyper_io::HyperIo;
use tungstenite::protocol::WebSocketConfig;

use crate::executor::{StartError, memlock_limit, plan_io_memory};
use crate::listener::PortSharing;
use head::{FirstHead, HeadError, Replayed, RequestHead};
use websocket::ServerSocket;

/// How often an idle accept loop checks whether it should stop.
pub const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// The response body every handler answers with.
pub type Body = Full<Bytes>;

/// A shard-local task.
pub type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// What a shard does with a WebSocket upgrade request.
pub enum Upgrade {
    /// Accept it: the task gets the socket once the `101` is sent.
    Accept {
        /// Limits of the socket (frame and message sizes).
        config: WebSocketConfig,
        /// The task that serves it.
        serve: Box<dyn FnOnce(ServerSocket) -> LocalTask>,
    },
    /// Not an upgrade this handler takes: serve the request as plain HTTP.
    Http,
    /// Refuse it with this status and reason.
    Refuse {
        /// The status.
        status: StatusCode,
        /// The reason, sent as `{"error": reason}`.
        reason: String,
    },
}

/// A shard's request handlers.
pub struct Handlers<S, W> {
    /// Every request that is not a WebSocket upgrade.
    pub http: S,
    /// Valid WebSocket upgrade requests, with the client's address.
    pub websocket: W,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// glommio cannot run here (memlock, io_uring).
    #[error(transparent)]
    Start(#[from] StartError),
    /// A shard could not bind the address.
    #[error("shard {shard} could not listen on {addr}: {detail}")]
    Bind {
        /// The shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// The error.
        detail: String,
    },
}

/// A running sharded server.
#[derive(Debug)]
pub struct ShardedServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl ShardedServer {
    /// The address every shard listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many shards serve.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.executors.len()
    }

    /// Stops accepting and waits for every shard to finish.
    pub fn stop(self) {
        stop_started(&self.stop, self.executors);
    }
}

/// Starts `shards` executors serving `listen` (see the module docs). `make_handlers(shard)`
/// runs on shard `shard`'s own thread.
pub fn serve<F, S, W>(
    listen: SocketAddr,
    shards: usize,
    make_handlers: F,
) -> Result<ShardedServer, ServeError>
where
    F: Fn(usize) -> Handlers<S, W> + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    W: Fn(&RequestHead, SocketAddr) -> Upgrade + 'static,
{
    let shards = shards.max(1);
    let io_memory = plan_io_memory(shards, memlock_limit())?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let make_handlers = Arc::new(make_handlers);
    let stop = Arc::new(AtomicBool::new(false));
    let mut executors = Vec::with_capacity(shards);
    let mut addr = listen;
    for shard in 0..shards {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let make_handlers = Arc::clone(&make_handlers);
        let stop_flag = Arc::clone(&stop);
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(shard % cpus))
            .name(&format!("hypergate-shard-{shard}"))
            .io_memory(io_memory)
            .spawn(move || async move {
                let bind = || crate::listener::bind(addr, PortSharing::Shared);
                let patience = hypergate_adapters::rt::BIND_PATIENCE;
                let listener = match hypergate_adapters::rt::bind_patiently(bind, patience).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = bound_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = bound_tx.send(listener.local_addr().map_err(|error| error.to_string()));
                accept_loop(listener, Rc::new(make_handlers(shard)), &stop_flag).await;
            });
        let executor = match spawned {
            Ok(executor) => executor,
            Err(error) => {
                stop_started(&stop, executors);
                return Err(StartError::Executor(error.to_string()).into());
            }
        };
        executors.push(executor);
        match bound_rx.recv() {
            Ok(Ok(bound)) => addr = bound,
            Ok(Err(detail)) => {
                stop_started(&stop, executors);
                return Err(ServeError::Bind {
                    shard,
                    addr,
                    detail,
                });
            }
            Err(_) => {
                stop_started(&stop, executors);
                return Err(ServeError::Bind {
                    shard,
                    addr,
                    detail: "the shard's executor ended before binding".into(),
                });
            }
        }
    }
    Ok(ShardedServer {
        local_addr: addr,
        stop,
        executors,
    })
}

/// Tells every started shard to stop and waits for each.
fn stop_started(stop: &AtomicBool, executors: Vec<ExecutorJoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for executor in executors {
        // A shard that panicked has nothing left to stop.
        let _ = executor.join();
    }
}

async fn accept_loop<S, W>(listener: TcpListener, handlers: Rc<Handlers<S, W>>, stop: &AtomicBool)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    W: Fn(&RequestHead, SocketAddr) -> Upgrade + 'static,
{
    // The shard's open connections, so that stopping can cancel them: a task
    // blocked on a read would otherwise keep the executor from finishing.
    let open: Rc<RefCell<BTreeMap<u64, JoinHandle<()>>>> = Rc::default();
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let accepted =
            glommio::timer::timeout(ACCEPT_POLL, async { Ok(listener.accept().await) }).await;
        let stream = match accepted {
            Err(_) => continue, // the poll interval passed
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => {
                // EMFILE and friends: back off instead of spinning.
                glommio::timer::sleep(ACCEPT_POLL).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let task = {
            let open = Rc::clone(&open);
            let handlers = Rc::clone(&handlers);
            glommio::spawn_local(async move {
                serve_connection(stream, handlers).await;
                open.borrow_mut().remove(&id);
            })
            .detach()
        };
        // The task has not run yet (spawning only queues it), so its removal comes later.
        open.borrow_mut().insert(id, task);
    }
    let still_open = std::mem::take(&mut *open.borrow_mut());
    for task in still_open.values() {
        task.cancel();
    }
    for (_, task) in still_open {
        let _ = task.await;
    }
}

/// One connection: a WebSocket if its first request asks for one, else HTTP.
async fn serve_connection<S, W>(mut stream: TcpStream, handlers: Rc<Handlers<S, W>>)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    W: Fn(&RequestHead, SocketAddr) -> Upgrade + 'static,
{
    let bytes = match head::read_first_head(&mut stream).await {
        Ok(FirstHead::Closed) | Err(HeadError::Io(_)) => return,
        Err(error @ HeadError::TooLarge) => {
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            let _ = websocket::write_error(&mut stream, status, &error.to_string()).await;
            return;
        }
        Ok(FirstHead::Complete {
            head,
            head_len,
            bytes,
        }) if head.wants_websocket() => {
            let remote = stream
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (status, reason) = match websocket::check(&head) {
                Err(refused) => (refused.status(), refused.to_string()),
                Ok(accept_key) => match (handlers.websocket)(&head, remote) {
                    Upgrade::Http => return serve_http(stream, bytes, &handlers).await,
                    Upgrade::Refuse { status, reason } => (status, reason),
                    Upgrade::Accept { config, serve } => {
                        let after_head = bytes.get(head_len..).unwrap_or_default().to_vec();
                        if let Ok(socket) =
                            websocket::complete(stream, &accept_key, after_head, config).await
                        {
                            serve(socket).await;
                        }
                        return;
                    }
                },
            };
            let _ = websocket::write_error(&mut stream, status, &reason).await;
            return;
        }
        Ok(FirstHead::Complete { bytes, .. } | FirstHead::Unparsed(bytes)) => bytes,
    };
    serve_http(stream, bytes, &handlers).await;
}

/// Serves a connection as HTTP/1.1, the bytes already read replayed first.
async fn serve_http<S, W>(stream: TcpStream, bytes: Vec<u8>, handlers: &Handlers<S, W>)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(HyperIo(Replayed::new(bytes, stream)), handlers.http.clone());
    // A client that hangs up mid-request is not the server's error.
    let _ = connection.await;
}
