//! # hypergate-core
//!
//! The sans-IO heart of the hypergate public gateway. This crate contains no
//! networking code, no async runtime, and never reads a clock or the operating
//! system's randomness: every input arrives through a `handle_*` method with
//! `now: Instant` as its last argument, and every output is drained from a
//! queue with a `poll_*` method. The runtime crates (`hypergate-tokio`,
//! `hypergate-glommio`) own sockets, timers and disks and feed them in.
//!
//! ## Modules
//! - [`registry`]: relays, the workers serving them, and their pending-write flags.
//! - [`health`]: per-peer liveness and per-relay mirror freshness.
//! - [`router`]: peer-first routing of client sessions and HTTP requests, with
//!   replica fallback and return.
//! - [`gateway`]: the composition that wires registry, health and router.
//! - [`wire`]: the versioned postcard codec of the gateway⇄worker peer link.
//! - [`nostr`]: NIP-01 frames, filters, event ids and signatures.
//! - [`session`]: one client connection's NIP-01 conversation with a relay (REQ, EVENT,
//!   CLOSE, live delivery), whose effects an adapter executes against the relay's index.
//! - [`timer`]: the deadline queue behind every `poll_timeout`.
//! - [`partition`]: splitting the gateway's core state by relay, one [`gateway::Gateway`]
//!   per shard of a thread-per-core driver.
//! - [`fair_queue`]: per-flow queues served in round robin onto one outbound link, with
//!   reserved room for calm flows and for the link's own control frames.
//! - [`ids`], [`time`]: identities and time types shared by all of the above.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod escrow;
pub mod fair_queue;
pub mod gateway;
pub mod health;
pub mod histogram;
pub mod ids;
pub mod lease;
pub mod nostr;
pub mod partition;
pub mod push;
pub mod registry;
pub mod relay;
pub mod router;
pub mod session;
pub mod time;
pub mod timer;
pub mod wire;
pub mod worker;

// Compile-time check: runtimes move machines across threads, so every machine is `Send`.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<gateway::Gateway>();
    assert_send::<registry::Registry>();
    assert_send::<health::Health>();
    assert_send::<router::Router>();
    assert_send::<session::Session>();
    assert_send::<fair_queue::FairQueue<u64, wire::Frame>>();
};
