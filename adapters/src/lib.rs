//! # hypergate-adapters
//!
//! Runtime-neutral I/O for the hypergate core: everything here works over
//! `futures-io` traits or plain std, so the tokio and glommio runtimes (and
//! smol, in tests) share one implementation. Adapters are small and boring:
//! protocol logic belongs in `hypergate-core`.
//!
//! - [`framed`]: the peer link's length-prefixed frames over any byte stream.
//! - [`clock`]: the one place wall-clock and monotonic time are read.
//! - [`escrow_store`]: the escrow service's deposits, lease history and audit
//!   index, embedded (redb) or on PostgreSQL.

pub mod clock;
pub mod escrow_store;
pub mod framed;
