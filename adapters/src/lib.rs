//! # hypergate-adapters
//!
//! Runtime-neutral I/O for the hypergate core: everything here works over
//! `futures-io` traits or plain std, so the tokio and glommio runtimes (and
//! smol, in tests) share one implementation. Adapters are small and boring:
//! protocol logic belongs in `hypergate-core`.
//!
//! - [`framed`]: the peer link's length-prefixed frames over any byte stream.
//! - [`peer_link`]: the authenticated, encrypted gateway⇄worker link (Noise XX handshake,
//!   sealed frames, request multiplexing, heartbeats, reconnect backoff).
//! - [`clock`]: the one place wall-clock and monotonic time are read.
//! - [`log`]: signed append-only logs (hypercore) and the proofs that replicate them.
//! - [`relay`]: a worker's relay logs and the reader that turns logs into the relay view.
//! - [`drive`]: versioned file stores on two logs, and the gateway's relay and pfp drives.
//! - [`crypto`]: identities, sealed envelopes, writer packages, the lease vault.
//! - [`audit`]: the escrow's append-only, verifiable audit log on a hypercore.
//! - [`escrow_store`]: the escrow service's deposits, lease history and audit
//!   index, embedded (redb) or on PostgreSQL.
//! - [`escrow_wire`]: the escrow API's strict request parsers, canonical JSON and request
//!   signature.
//! - [`escrow_client`]: the escrow API from the caller's side (gateway, worker), on any executor.
//! - [`tls`]: the rustls provider and PEM loading shared by the escrow service and its client.
//! - [`hyper_io`]: `futures-io` streams seen as hyper I/O and back.
//! - [`mirror`]: the blind-peer store of verified cores replicated from workers.
//! - [`rt`]: the runtime hooks (spawner, timers) of the runtime-neutral services.
//! - [`gateway`]: the gateway service (client sessions, worker links, replica mode, leased
//!   writes, HTTP routes), driven by the tokio or the glommio runtime.
//! - [`index`]: the relay index (one redb file per relay answering NIP-01 filters) and the live
//!   feed of newly visible events.

#![forbid(unsafe_code)]

pub mod audit;
pub mod clock;
pub mod crypto;
pub mod drive;
pub mod escrow_client;
pub mod escrow_store;
pub mod escrow_wire;
pub mod framed;
pub mod gateway;
pub mod hyper_io;
pub mod index;
pub mod log;
pub mod mirror;
pub mod peer_link;
pub mod relay;
pub mod rt;
pub mod tls;
