//! `hypergate gateway`: the public front door on tokio and axum.
//!
//! Contract:
//! - The gateway's behaviour is the runtime-neutral service in
//!   [`hypergate_adapters::gateway`]; this driver binds its two listeners, serves the
//!   service's routes with axum (the relay URLs' WebSocket upgrade in `websocket`), accepts
//!   worker links and hands each to the service, and runs the service's background work.
//! - [`start_on`] runs the same gateway on glommio shards instead
//!   (`hypergate_glommio::gateway`), behind the same [`GatewayHandle`], so one test suite
//!   covers both runtimes.
//! - [`GatewayHandle::shutdown`] ends leases (wiping their keys), stops the listeners and
//!   waits for the tasks.

pub mod cli;
pub mod ctl;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use hypergate_adapters::gateway::GatewayService;
use hypergate_adapters::rt;
use hypergate_core::ids::PeerId;
use hypergate_core::partition::Partitioning;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

pub use hypergate_adapters::gateway::{ClientLimits, GatewayOptions};

/// Which runtime serves a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRuntime {
    /// This tokio runtime (axum).
    Tokio,
    /// glommio: this many pinned executors, each with its own listener.
    Glommio {
        /// How many shards.
        shards: usize,
    },
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where clients connect.
    pub http_addr: SocketAddr,
    /// Where workers connect.
    pub peer_addr: SocketAddr,
    /// The gateway's identity, to pin in workers.
    pub peer_id: PeerId,
    serving: Serving,
}

/// What serves a [`GatewayHandle`].
enum Serving {
    Tokio {
        service: Arc<GatewayService>,
        tasks: JoinSet<()>,
    },
    Glommio(hypergate_glommio::gateway::GlommioGateway),
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("http_addr", &self.http_addr)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// Ends every lease (their keys are wiped), stops serving and waits for the tasks.
    pub async fn shutdown(self) {
        match self.serving {
            Serving::Tokio { service, mut tasks } => {
                service.shutdown();
                while tasks.join_next().await.is_some() {}
            }
            Serving::Glommio(gateway) => {
                // Joins the shards' threads: off this runtime's workers.
                let _ = tokio::task::spawn_blocking(move || gateway.shutdown()).await;
            }
        }
    }
}

/// Starts a gateway on `runtime`. glommio's shards are started (and later joined) off this
/// tokio runtime's threads and run no tokio code.
pub async fn start_on(
    runtime: GatewayRuntime,
    options: GatewayOptions,
) -> anyhow::Result<GatewayHandle> {
    match runtime {
        GatewayRuntime::Tokio => start(options).await,
        GatewayRuntime::Glommio { shards } => {
            let gateway = tokio::task::spawn_blocking(move || {
                hypergate_glommio::gateway::start(options, shards)
            })
            .await
            .context("the glommio gateway's start-up")?
            .context("starting the glommio gateway")?;
            Ok(GatewayHandle {
                http_addr: gateway.http_addr,
                peer_addr: gateway.peer_addr,
                peer_id: gateway.peer_id,
                serving: Serving::Glommio(gateway),
            })
        }
    }
}

/// A listener on `addr` (std's bind sets `SO_REUSEADDR`), waiting a moment for a port a
/// killed gateway has not released yet (`rt::bind_patiently`).
async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener =
        rt::bind_patiently(|| std::net::TcpListener::bind(addr), rt::BIND_PATIENCE).await?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Starts a gateway: opens its state, binds both listeners and spawns the tasks.
pub async fn start(options: GatewayOptions) -> anyhow::Result<GatewayHandle> {
    let http_listen = options.http_listen;
    let peer_listen = options.peer_listen;
    let service = Arc::new(
        GatewayService::open(options, Partitioning::single(), crate::tokio_spawner())
            .await
            .context("opening the gateway")?,
    );
    let peer_listener = bind(peer_listen)
        .await
        .with_context(|| format!("binding the peer-link listener {peer_listen}"))?;
    let http_listener = bind(http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener {http_listen}"))?;
    let peer_addr = peer_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let mut tasks = JoinSet::new();
    tasks.spawn(accept_links(Arc::clone(&service), peer_listener));
    tasks.spawn({
        let service = Arc::clone(&service);
        async move { service.run_background().await }
    });
    let app = service.routes(websocket::relay_routes(Arc::clone(&service)));
    let mut http_shutdown = service.shutdown_signal();
    tasks.spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        // Small NIP-01 frames must leave at once: with Nagle's algorithm every frame after the
        // first of an answer waited for the client's delayed ACK (~40 ms per REQ, measured).
        let http_listener = http_listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set on a client connection");
            }
        });
        let serving = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = http_shutdown.changed().await;
        });
        if let Err(error) = serving.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok(GatewayHandle {
        http_addr,
        peer_addr,
        peer_id: service.peer_id(),
        serving: Serving::Tokio { service, tasks },
    })
}

/// Accepts worker links until shutdown; each one's driver and service run in their own tasks.
async fn accept_links(service: Arc<GatewayService>, listener: TcpListener) {
    let mut shutdown = service.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "peer-link accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        // The handshake in its own task: a slow or silent dialler must not hold up the others.
        tokio::spawn(async move {
            let handshake = hypergate_adapters::peer_link::accept(
                stream.compat(),
                service.identity(),
                service.accept_policy(),
                service.link_config(),
                tokio::time::sleep,
            );
            match handshake.await {
                Ok(established) => {
                    tokio::spawn(established.driver.run());
                    service
                        .serve_link(established.link, established.inbound)
                        .await;
                }
                Err(error) => tracing::info!(%remote, %error, "peer-link handshake refused"),
            }
        });
    }
}
