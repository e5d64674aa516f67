//! # hypergate-glommio
//!
//! The thread-per-core glommio runtime of hypergate. glommio runs on
//! io_uring, whose buffers must be locked in memory, so every executor is
//! started through [`executor::start`], which sizes io_uring memory to the
//! host's `RLIMIT_MEMLOCK` and fails with a clear message (and the advice to
//! use the tokio gateway) instead of glommio's opaque errors.
//!
//! - [`executor`]: memlock-aware executor start-up.
//! - [`timers`]: the timer half of the core's drive loop on glommio timers,
//!   and [`timers::GlommioTimer`], the peer link's timer.
//! - [`peer_link`]: the gateway⇄worker link over glommio TCP.
//! - [`http`]: HTTP/1.1 and WebSocket serving, one `SO_REUSEPORT` listener
//!   per pinned executor.
//! - `listener`: those listening sockets, with `SO_REUSEADDR` too (the crate's one
//!   `unsafe` block, which adopts the socket into glommio).
//! - [`gateway`]: the gateway service of `hypergate_adapters::gateway` on those shards
//!   (`hypergate gateway --runtime glommio`).

pub mod executor;
pub mod gateway;
pub mod http;
mod listener;
pub mod peer_link;
pub mod timers;
