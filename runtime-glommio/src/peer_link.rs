//! The gateway⇄worker peer link on glommio TCP.
//!
//! Contract:
//! - The link itself is `hypergate_adapters::peer_link`, unchanged: glommio's [`TcpStream`]
//!   implements the `futures-io` traits it runs over, and [`GlommioTimer`] is its timer. This
//!   module only opens the socket and hands both over.
//! - [`accept_tcp`] (gateway side) and [`connect_tcp`] (worker side) turn Nagle's algorithm off
//!   (link frames are small and latency-bound) and run the adapters' `accept` / `connect`, so
//!   identity pinning, the accept policy, the handshake timeout and the "no frame before the
//!   welcome" rule are exactly those of the other runtimes.
//! - [`connect_tcp`] takes a resolved [`SocketAddr`]: name resolution blocks, and a shard's
//!   thread must not (glommio's own `connect` would also panic on a name that resolves to no
//!   address).
//! - Everything here is `!Send`, as glommio shards own their state: spawn
//!   [`Established::driver`]'s `run()` with `glommio::spawn_local` on the executor that
//!   accepted the stream, and call these functions only on a glommio executor thread.

use std::net::SocketAddr;

use glommio::net::TcpStream;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{
    AcceptPolicy, Established, HandshakeError, LinkConfig, accept, connect,
};
use hypergate_core::ids::PeerId;

use crate::timers::GlommioTimer;

/// An established link over glommio TCP, timed by glommio's timer.
pub type GlommioLink = Established<TcpStream, GlommioTimer>;

/// Why [`connect_tcp`] opened no link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection could not be made (refused, unreachable, …).
    #[error("could not reach the gateway at {addr}: {source}")]
    Tcp {
        /// Where the worker dialled.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The connection was made, but the handshake failed or the gateway refused the worker.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Gateway side: authenticates the worker on an accepted `stream` and admits it by `policy`.
pub async fn accept_tcp(
    stream: TcpStream,
    identity: &Identity,
    policy: &AcceptPolicy,
    config: &LinkConfig,
) -> Result<GlommioLink, HandshakeError> {
    disable_nagle(&stream);
    accept(stream, identity, policy, config, GlommioTimer).await
}

/// Worker side: dials `addr` and opens a link to the gateway whose identity is `gateway`.
pub async fn connect_tcp(
    addr: SocketAddr,
    identity: &Identity,
    gateway: PeerId,
    config: &LinkConfig,
) -> Result<GlommioLink, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| ConnectError::Tcp {
            addr,
            source: error.into(),
        })?;
    disable_nagle(&stream);
    Ok(connect(stream, identity, gateway, config, GlommioTimer).await?)
}

fn disable_nagle(stream: &TcpStream) {
    // Only latency is lost without it; the link works either way.
    let _ = stream.set_nodelay(true);
}
