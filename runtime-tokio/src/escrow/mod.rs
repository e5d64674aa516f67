//! The escrow service (`hypergate escrow serve`): a signed HTTP API over
//! mutual TLS that holds relays' sealed gateway writer keys and releases one
//! to a gateway, as a short lease, when the automated policy agrees.
//!
//! Contract:
//! - **The core decides; this module does I/O.** Deposits, unlock plans,
//!   renewals, releases, revokes and expiry are the core's
//!   [`Escrow`](hypergate_core::escrow::Escrow) machine; this module
//!   authenticates requests, validates deposits cryptographically, persists
//!   through the [`EscrowStore`](hypergate_adapters::escrow_store::EscrowStore)
//!   and the audit log, seals leases and answers.
//! - **Audit before answer, fail closed**: every deposit, unlock decision,
//!   revoke, release, renewal and expiry is appended to the audit log (durable)
//!   before the answer; if the log cannot be written the request fails with
//!   503 and nothing is released ([`service`]).
//! - **Deposits are validated when made**: the package opens with the escrow
//!   key, its writer key pair is consistent, its relay is the deposit's, the
//!   relay key signed the deposit, and the expiry is clamped. Only the sealed
//!   envelope is stored ([`ops`]).
//! - **Secrets** (writer keys) exist decrypted only in zeroizing buffers for
//!   the duration of a request and in the [`LeaseVault`](hypergate_adapters::crypto::LeaseVault)
//!   while their lease lives; they never reach disk unencrypted, logs,
//!   metrics or error messages.
//! - **Bad input is a 4xx JSON `{error}`**, never a 500 or a panic
//!   ([`wire`], [`handlers`]).
//!
//! Modules: [`config`] (flags and environment), [`auth`] (HMAC, nonces,
//! allow-list), [`tls`] (rustls with client certificates, hot reload),
//! [`wire`] (request parsers), [`service`] (state and the rules that keep it
//! consistent), [`ops`] (the operations), [`handlers`] (routes), `sweep`
//! (expiry at TTL), [`metrics`] (Prometheus), [`server`] (start, accept,
//! shutdown), [`client`] (the API from the caller's side: runtime-neutral, in
//! `hypergate_adapters::escrow_client`, re-exported here; build it with
//! [`crate::tokio_spawner`]).

pub mod auth;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod service;
mod sweep;
pub mod tls;
/// The request parsers live in `hypergate_adapters::escrow_wire` (the fuzz targets use them).
pub use hypergate_adapters::escrow_wire as wire;

pub use client::{EscrowClient, EscrowClientConfig};
pub use config::{EscrowConfig, ServeArgs};
/// The escrow client is runtime-neutral and lives in `hypergate_adapters::escrow_client`.
pub use hypergate_adapters::escrow_client as client;
pub use server::{EscrowServer, StartError, serve};
pub use service::{EscrowService, ServiceError};
pub use wire::{parse_deposit_request, parse_revoke_request, parse_unlock_request};

use hypergate_adapters::clock::{Clock, SystemClock};
use hypergate_core::time::UnixTime;

/// The wall clock, read where a request's timestamp is judged.
pub(crate) fn unix_now() -> UnixTime {
    SystemClock.unix_now()
}
