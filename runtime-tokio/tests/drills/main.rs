//! Reliability drills (issue 9): each starts real processes or servers on loopback — the
//! gateway, the escrow over mTLS, `hypergate worker run`, or a worker speaking the real peer
//! link — injects one fault, and checks the promises while it lasts and after it ends:
//! - no write gets `OK true` without a lease the escrow granted, and none that got `OK true` is
//!   lost (it reaches the worker by resync, or is still served by the gateway);
//! - a refusal carries a reason a client or operator can act on;
//! - the system recovers by itself when the fault ends.
//!
//! Recovery telemetry (time to recover, counters before and after) is printed, never asserted
//! on; `docs/reliability.md` records the figures of the runs so far. Run them with
//! `cargo test -p hypergate-tokio --test drills -- --nocapture`.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../escrow_support/mod.rs"]
mod escrow_support;
#[path = "../gateway_support/mod.rs"]
mod gateway_support;

mod support;

mod corrupt_deposit;
mod disk_full;
mod escrow_mid_deposit;
mod escrow_outage;
mod flood;
mod postgres_outage;
mod tampered_mirror;
