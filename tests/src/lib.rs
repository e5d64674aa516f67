//! # hypergate-tests
//!
//! Integration tests and the deterministic churn simulation.
//!
//! - [`churn`]: the gateway core under seeded worker churn on a virtual
//!   clock, with invariants checked after every step, replayable seeds and a
//!   trace hash for determinism checks.
//! - [`sim`]: the whole core — gateway, escrow, workers, clients — on a
//!   seeded lossy network with churn, invariants after every step, a
//!   reference model, fault injection, and a final no-write-lost check.
//! - [`corpus`]: locating the committed fuzz corpus so `cargo test` replays it.
//! - [`decoders`]: the storage decoders behind the `storage_decode` fuzz target.

#![forbid(unsafe_code)]

pub mod churn;
pub mod corpus;
pub mod decoders;
pub mod sim;
