//! # hypergate-tokio
//!
//! Tokio drivers of the hypergate core and the `hypergate` binary.
//!
//! - [`driver`]: the one event loop that owns a core [`Gateway`] on tokio:
//!   feeds inputs, drains outputs, arms one timer, shuts down cleanly.
//! - [`escrow`]: the escrow service (`hypergate escrow serve`) and its client.
//! - [`demo`]: `hypergate demo`, a real-time churn scenario that drives the
//!   gateway core through worker loss and return (the first-run job until
//!   the full gateway lands).
//! - [`gateway`]: `hypergate gateway`, the public front door: peer-first forwarding, replica
//!   fallback from the mirror, escrow-leased writes.
//! - [`up`]: `hypergate up`, gateway + escrow + one worker in one process for a first run.
//! - [`worker`]: `hypergate worker init|run`, a worker serving its relays over NIP-01
//!   WebSocket and NIP-11 on a local port.
//! - [`worker_agent`]: the worker's gateway side (link, registration, mirroring, escrow
//!   deposits, pending-write resync and rotation).
//! - [`bench`](mod@bench): `hypergate bench`, the NIP-01 load generator and the gateway benchmark.
//! - [`admin`]: operator commands over stored state (`hypergate audit verify`,
//!   `hypergate escrow migrate`).
//!
//! [`Gateway`]: hypergate_core::gateway::Gateway

#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod demo;
pub mod driver;
pub mod escrow;
pub mod gateway;
mod local_stack;
mod secret_file;
pub mod up;
pub mod worker;
pub mod worker_agent;

/// tungstenite's read buffer per client WebSocket (gateway and worker). tungstenite allocates
/// its default, 128 KiB, up front for every socket, which made an idle connection cost
/// ≈ 135 KiB (D115). Most Nostr frames fit in 1 KiB; a larger one gets a buffer reserved
/// for its whole length and is read 1 KiB per `read` (D129: 4 KiB cost ~3 KiB more per idle
/// connection).
pub(crate) const WEBSOCKET_READ_BUFFER_BYTES: usize = 1024;

/// A [`Spawner`](hypergate_adapters::rt::Spawner) for the runtime-neutral services (the escrow
/// client): tasks run on the tokio runtime current where they are spawned, else on the one
/// current when this spawner was made. With neither, the task is dropped with an error log
/// (the caller then sees its connection closed), never a panic.
#[must_use]
pub fn tokio_spawner() -> hypergate_adapters::rt::Spawner {
    let made_in = tokio::runtime::Handle::try_current().ok();
    hypergate_adapters::rt::Spawner::new(move |task| {
        match tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| made_in.clone())
        {
            Some(runtime) => drop(runtime.spawn(task)),
            None => tracing::error!("no tokio runtime to run a background task on; dropped"),
        }
    })
}
