//! NIP-01 for the gateway: the frames clients and workers exchange, the events they carry and
//! the filters that select them.
//!
//! ## Contract
//! - **No input can panic or balloon.** [`ClientMessage::parse`] refuses a frame longer than
//!   [`Limits::max_frame_bytes`] before reading it and bounds every list it keeps; nothing here
//!   indexes, unwraps or recurses on peer data beyond serde_json's own depth limit.
//! - **Parsing is not trusting.** A parsed [`Event`] has the right shapes (lowercase hex of the
//!   right lengths, a kind in `0..=65535`, integer timestamps); only [`Event::verify`] shows that
//!   its id is the hash of its content and that its author signed it. Every gateway write path
//!   verifies.
//! - **Every refusal has its NIP-01 answer.** [`FrameError::reply`] picks `OK false`, `CLOSED`
//!   or `NOTICE`; messages start with a [`MachineReadablePrefix`].
//! - **Serialisation is canonical.** [`Event::compute_id`] hashes the NIP-01 canonical array;
//!   `to_json` output parses back to an equal value. Both are checked against the independent
//!   `nostr` crate in `core/tests/nostr_oracle.rs`.
//! - **Replacement is order-independent.** [`Event::supersedes`] is NIP-01's rule (newer
//!   `created_at`, then lower id), so every node keeps the same event whatever order events
//!   arrived in.
//!
//! ## Map
//! - [`EventId`], [`PublicKey`], [`Signature`]: 32/32/64-byte values in strict lowercase hex.
//! - [`Kind`]: the regular / replaceable / ephemeral / addressable ranges.
//! - [`Event`], [`Tag`], [`ReplacementKey`], [`SignatureVerifier`]: events and their checks.
//! - [`Filter`]: `REQ` filters and matching.
//! - [`ClientMessage`], [`RelayMessage`], [`SubscriptionId`], [`Limits`]: frames.
//! - [`check_auth_event`]: NIP-42 authentication answers (kind 22242).

mod auth;
mod event;
mod filter;
mod hex;
mod kind;
mod limits;
mod message;
mod reason;
mod subscription;

pub use auth::{
    AUTH_KIND, AUTH_REQUIRED, AuthError, AuthGate, MAX_AUTH_SKEW_SECS, Screened, check_auth_event,
};
#[cfg(any(test, feature = "test-support"))]
pub use event::testing;
pub use event::{Event, EventError, ReplacementKey, SignatureVerifier, Tag};
pub use filter::{Filter, FilterError};
pub use hex::{EventId, HexError, PublicKey, Signature};
pub use kind::Kind;
pub use limits::Limits;
pub use message::{ClientMessage, FrameError, RelayMessage};
pub use reason::MachineReadablePrefix;
pub use subscription::{SubscriptionId, SubscriptionIdError};

use serde::Serialize;

/// Compact JSON of one of this module's values.
///
/// Cannot fail: these values serialise only strings, integers, booleans, sequences and maps
/// with string keys, which serde_json always accepts.
#[allow(clippy::expect_used)]
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("NIP-01 values always serialise")
}

/// Compact JSON of one of this module's values, streamed into `writer`.
///
/// Cannot fail for the same reason as [`to_json`], as long as `writer` cannot: callers pass
/// in-memory writers (a hasher) only.
#[allow(clippy::expect_used)]
fn write_json<W: std::io::Write, T: Serialize + ?Sized>(writer: W, value: &T) {
    serde_json::to_writer(writer, value).expect("NIP-01 values always serialise");
}

/// A parse error as a short human-readable detail for an `OK`/`CLOSED`/`NOTICE` message.
///
/// serde_json quotes offending strings whole; cut them so that a client sending a 100 KiB
/// string does not get it echoed back (or into our logs).
fn detail(error: &serde_json::Error) -> String {
    const MAX_CHARS: usize = 160;
    let text = error.to_string();
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}
