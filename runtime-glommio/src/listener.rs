//! The shards' listening sockets.
//!
//! glommio's own `TcpListener::bind` sets `SO_REUSEPORT` only. A port whose previous owner
//! was a tokio gateway (or any socket without `SO_REUSEPORT`) still has that process's
//! closed connections in `FIN-WAIT-2` / `TIME-WAIT` for up to a minute, and Linux refuses to
//! bind over them without `SO_REUSEADDR`: a gateway restarted with `--runtime glommio` right
//! after a tokio one (the runbook's fallback, in the other direction) would fail with
//! "address already in use". [`bind`] makes the socket with both options, as tokio's listener
//! does for `SO_REUSEADDR`, and hands it to glommio.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, IntoRawFd as _};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues for an accept loop (glommio's own value).
const BACKLOG: i32 = 1024;

/// Whether other sockets may listen on the same port (each glommio shard's client listener
/// does; the peer-link listener, one per gateway, does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortSharing {
    /// `SO_REUSEPORT`: the kernel spreads connections over every listener of the port.
    Shared,
    /// One listener.
    Exclusive,
}

/// A listening socket on `addr` with `SO_REUSEADDR` (and `SO_REUSEPORT` when `sharing` says),
/// owned by the calling shard's executor. Call it on a glommio executor thread.
pub(crate) fn bind(addr: SocketAddr, sharing: PortSharing) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if sharing == PortSharing::Shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is an open, bound and listening TCP socket that `socket` gave up with
    // `into_raw_fd` just above: nothing else owns or will close it, and the listener made from
    // it takes that ownership (glommio's `from_raw_fd` wraps it as its own `bind` does).
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    Ok(listener)
}
