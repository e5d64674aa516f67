//! The gateway service: the public front door's behaviour, whatever runtime drives it.
//!
//! Contract:
//! - Workers' links (`links`) register their relays and mirror their logs into the
//!   gateway's blind-peer store under `<data>/mirror`.
//! - Client WebSockets (`clients`) are forwarded to a worker of the relay while one is
//!   reachable, served from the mirror (`replica`) when none is, and moved back when one
//!   returns.
//! - Writes while no worker is reachable need a lease of the relay's gateway writer key from
//!   the escrow (`escrow_link`); the key is held in memory only.
//! - The core [`Gateway`](hypergate_core::gateway::Gateway) decides everything; `state` is
//!   the one place it is driven.
//! - The registry (relays, their workers, pending writes, lease epochs) is persisted to
//!   `<data>/registry.snapshot` after every change, and synchronously before a gateway write
//!   is acknowledged; a restart resumes from it (pending notices are pushed again).
//! - **Runtime-neutral.** Nothing here binds a socket or needs a particular executor: a
//!   driver (`hypergate-tokio`, `hypergate-glommio`) owns the listeners and sockets and hands
//!   in a [`Spawner`](crate::rt::Spawner); see [`GatewayService`] for what it calls. Timers
//!   are `async-io`'s; locks and channels are tokio's `sync` module, which needs no tokio
//!   runtime.

mod artifacts;
mod clients;
mod drive;
mod escrow_link;
mod http;
mod link_queue;
mod links;
mod metrics;
mod operator;
mod replica;
mod service;
mod state;
mod tokens;
mod write_batch;

pub use clients::{FromClient, ToClient};
pub use http::{HttpState, accepts_nostr_json, websocket_relay_name};
pub use service::{ClientAdmission, ClientLimits, GatewayOptions, GatewayService, StartError};
