//! The authenticated, encrypted gateway⇄worker link, over any `futures-io` byte stream.
//!
//! Contract:
//! - [`connect`] (worker) and [`accept`] (gateway) run a Noise XX handshake in which each side
//!   proves its ed25519 [`Identity`](crate::crypto::Identity). The worker pins the gateway's
//!   identity: any other key is refused before the worker reveals its own. The gateway admits
//!   workers by [`AcceptPolicy`]; a refused worker is told why ([`CloseCode::NOT_ALLOWED`]) and
//!   its `connect` fails with [`HandshakeError::Refused`]. The authenticated remote
//!   [`PeerId`](hypergate_core::ids::PeerId) is what [`PeerLink::remote`] reports.
//! - Nothing the peer sends is processed before the handshake completes. After it, every byte is
//!   ChaCha20-Poly1305 sealed; a chunk that fails to authenticate, a malformed record or a frame
//!   the core's codec rejects ends the link with [`LinkError`], never a panic.
//! - The link carries the core's [`Frame`](hypergate_core::wire::Frame)s.
//!   [`PeerLink::request`] allocates request ids and routes each answer to its caller, so any
//!   number of requests share one link; everything else arrives on [`Inbound`] in order.
//! - Every queue is bounded: a full outbound queue makes senders wait, a full inbound queue stops
//!   the link reading (TCP pushes back on the peer), and a peer that stops reading is declared
//!   dead after the dead-peer timeout instead of growing memory.
//! - Both sides send a heartbeat every [`LinkConfig::heartbeat_interval`]; a peer from which
//!   nothing arrives for [`LinkConfig::dead_after`] is declared dead.
//! - Closing is explicit: [`PeerLink::close`] sends a close record with a [`CloseCode`] and a
//!   reason, which the other side reports as [`LinkClosed`].
//! - Runtime-neutral: no runtime types in the API. The caller spawns the [`LinkDriver`] future
//!   on its executor and passes a [`Sleeper`] (its runtime's `sleep`) for timers.
//!
//! Layers, bottom up: [`handshake`] (Noise XX + identity proofs, sans-IO), [`sealed`] (chunks
//! sealed with the handshake's split keys), [`record`] (frames, close and welcome records inside
//! the sealed stream), [`driver`] (the future that moves bytes), [`handle`] (what callers hold),
//! [`establish`] (`connect` / `accept`), [`backoff`] (the worker's reconnect loop).

pub mod backoff;
pub mod driver;
pub mod establish;
pub mod handle;
pub mod handshake;
pub mod record;
pub mod sealed;

use std::future::Future;
use std::time::Duration;

use hypergate_core::wire::MAX_FRAME_BYTES;

pub use backoff::{Backoff, BackoffConfig, GaveUp, connect_with_backoff};
pub use driver::{LinkDriver, LinkError};
pub use establish::{AcceptPolicy, Established, accept, connect};
pub use handle::{
    ClosedBy, FIRST_REQUEST_ID, Inbound, LINK_HEARTBEAT_ID, LinkClosed, PeerLink, RequestError,
};
pub use handshake::{
    HandshakeError, IdentityProof, Initiator, Responder, ResponderAwaitingFinal, Session,
    decode_identity_proof, initiate, respond,
};
pub use record::{
    CloseCode, Record, RecordDecoder, RecordError, SealedRecordDecoder, decode_record_stream,
    decode_sealed_stream,
};
pub use sealed::{Opener, SealError, SealedDecoder, Sealer};

/// The runtime's timer, handed to the link so it never names a runtime.
///
/// Any `Fn(Duration) -> impl Future<Output = ()>` is one: `tokio::time::sleep`,
/// `glommio::timer::sleep`, or `|d| async move { smol::Timer::after(d).await; }`.
pub trait Sleeper {
    /// The future that completes after the duration.
    type Sleep: Future<Output = ()>;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

impl<F, Fut> Sleeper for F
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    type Sleep = Fut;

    fn sleep(&self, duration: Duration) -> Fut {
        self(duration)
    }
}

/// Limits and timers of one link. Setters clamp to sane values, so every value is usable.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    heartbeat_interval: Duration,
    dead_after: Duration,
    handshake_timeout: Duration,
    close_timeout: Duration,
    max_frame_bytes: usize,
    outbound_capacity: usize,
    inbound_capacity: usize,
    max_in_flight: usize,
}

impl Default for LinkConfig {
    /// Heartbeat 5 s (the core's health default), dead after 15 s of silence, 10 s to finish a
    /// handshake, 2 s to deliver a close record, frames up to the codec's 16 MiB, 64 frames
    /// queued each way, 1,024 requests in flight.
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_frame_bytes: MAX_FRAME_BYTES,
            outbound_capacity: 64,
            inbound_capacity: 64,
            max_in_flight: 1024,
        }
    }
}

/// Shortest heartbeat interval the link accepts; shorter values are raised to it.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

impl LinkConfig {
    /// How often each side sends a heartbeat (at least [`MIN_HEARTBEAT_INTERVAL`]). Liveness is
    /// checked on the same tick, so it is also the resolution of [`LinkConfig::dead_after`].
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(MIN_HEARTBEAT_INTERVAL);
        self.dead_after = self.dead_after.max(self.heartbeat_interval);
        self
    }

    /// How long the peer may stay silent (or leave our writes unread) before the link is
    /// declared dead; at least one heartbeat interval.
    #[must_use]
    pub fn with_dead_after(mut self, dead_after: Duration) -> Self {
        self.dead_after = dead_after.max(self.heartbeat_interval);
        self
    }

    /// How long `connect` / `accept` may take, handshake and welcome included.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long the driver tries to deliver a close record before it drops the stream.
    #[must_use]
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Largest frame accepted from the peer, in bytes (at most the codec's `MAX_FRAME_BYTES`).
    #[must_use]
    pub fn with_max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max.clamp(1, MAX_FRAME_BYTES);
        self
    }

    /// Frames queued for sending before senders wait (at least 1).
    #[must_use]
    pub fn with_outbound_capacity(mut self, capacity: usize) -> Self {
        self.outbound_capacity = capacity.max(1);
        self
    }

    /// Unsolicited frames queued for the [`Inbound`] reader before the link stops reading (at
    /// least 1).
    #[must_use]
    pub fn with_inbound_capacity(mut self, capacity: usize) -> Self {
        self.inbound_capacity = capacity.max(1);
        self
    }

    /// Requests awaiting an answer before [`PeerLink::request`] waits (at least 1).
    #[must_use]
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// The heartbeat interval.
    #[must_use]
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The dead-peer timeout.
    #[must_use]
    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }

    /// The handshake timeout.
    #[must_use]
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The close timeout.
    #[must_use]
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// The largest frame accepted from the peer.
    #[must_use]
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The outbound queue's capacity, in frames.
    #[must_use]
    pub fn outbound_capacity(&self) -> usize {
        self.outbound_capacity
    }

    /// The inbound queue's capacity, in frames.
    #[must_use]
    pub fn inbound_capacity(&self) -> usize {
        self.inbound_capacity
    }

    /// The most requests awaiting an answer at once.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}
