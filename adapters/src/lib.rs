//! # hypergate-adapters
//!
//! Runtime-neutral I/O for the hypergate core: everything here works over
//! `futures-io` traits or plain std, so the tokio and glommio runtimes (and
//! smol, in tests) share one implementation. Adapters are small and boring:
//! protocol logic belongs in `hypergate-core`.
//!
//! - [`framed`]: the peer link's length-prefixed frames over any byte stream.
//! - [`clock`]: the one place wall-clock and monotonic time are read.
//! - [`index`]: the relay index (one redb file per relay answering NIP-01 filters) and the live
//!   feed of newly visible events.

pub mod clock;
pub mod framed;
pub mod index;
