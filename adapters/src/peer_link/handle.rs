//! What callers hold once a link is up: the cloneable [`PeerLink`] handle and the [`Inbound`]
//! queue of unsolicited frames.
//!
//! Contract:
//! - [`PeerLink::request`] sends a request with an id it allocates (from [`FIRST_REQUEST_ID`]
//!   up) and returns the peer's answer to that id: the matching answer kind, the peer's
//!   [`Message::Error`] as [`RequestError::Remote`], or [`RequestError::Closed`] if the link
//!   ends first. Dropping the future withdraws the request; a late answer is then dropped.
//!   At most [`LinkConfig::max_in_flight`](super::LinkConfig::max_in_flight) requests await an
//!   answer; more wait for a slot.
//! - [`PeerLink::send`] sends a frame as given: answers to the peer's requests (echoing its id)
//!   and exchanges the caller numbers itself (use ids below [`FIRST_REQUEST_ID`], e.g. the core's
//!   push ids). Its answers arrive on [`Inbound`] like everything else.
//! - A frame goes to a waiting [`PeerLink::request`] only if it is an answer kind (an ack, a
//!   response or an error) carrying the id of one of this side's outstanding requests. Every
//!   other frame is delivered on [`Inbound`], in arrival order, including the peer's heartbeats
//!   (the gateway core answers them and counts them for health).
//! - Answers are routed by the same reader that fills [`Inbound`]: a task that drains
//!   `Inbound` must not itself wait on [`PeerLink::request`] (spawn the request), or a full
//!   inbound queue holds back the answer it waits for.
//! - Sending waits while the outbound queue is full. Once the link has ended every call fails
//!   with the [`LinkClosed`] reason, and [`Inbound::recv`] returns the frames already queued,
//!   then `None`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hypergate_core::ids::PeerId;
use hypergate_core::wire::{ErrorMessage, Frame, Message, WireError, encode_length_prefixed};

use super::record::CloseCode;

/// First request id [`PeerLink::request`] allocates; ids below are the caller's.
pub const FIRST_REQUEST_ID: u64 = 1 << 63;
/// Request id of the link's own heartbeats; the peer's answer to it is consumed by the link.
pub const LINK_HEARTBEAT_ID: u64 = u64::MAX;

/// Which side ended the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// This side closed it (on request, or because the peer failed).
    Local,
    /// The peer sent a close record, or the connection dropped.
    Peer,
}

/// Why a link ended, as every holder of the link sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClosed {
    /// Which side ended it.
    pub by: ClosedBy,
    /// The close code (sent, received, or [`CloseCode::CONNECTION_LOST`]).
    pub code: CloseCode,
    /// The reason in words.
    pub reason: String,
}

impl fmt::Display for LinkClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.by {
            ClosedBy::Local => "locally",
            ClosedBy::Peer => "by the peer",
        };
        write!(f, "closed {by} with {}: {}", self.code, self.reason)
    }
}

/// Why a request or send failed, grouped by who is at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    // The link is gone.
    /// The link ended; the reason says how.
    #[error("link {0}")]
    Closed(LinkClosed),

    // The peer's answer.
    /// The peer answered with an error.
    #[error("peer answered with error {}: {}", .0.code, .0.message)]
    Remote(ErrorMessage),
    /// The peer answered with a message of the wrong kind.
    #[error("expected {expected} in answer, the peer sent {got}")]
    UnexpectedAnswer {
        /// The answer kind the request calls for.
        expected: &'static str,
        /// The kind that came.
        got: &'static str,
    },

    // The caller's input.
    /// [`PeerLink::request`] was given a message that has no answer; use [`PeerLink::send`].
    #[error("{kind} is not a request: it has no answer")]
    NotARequest {
        /// The message kind.
        kind: &'static str,
    },
    /// The frame could not be encoded (e.g. over the frame limit). Nothing was sent.
    #[error("frame could not be encoded: {0}")]
    Encode(#[from] WireError),
}

/// The answer kind a request calls for, or `None` for messages that are not requests.
#[must_use]
pub fn answer_kind(message: &Message) -> Option<&'static str> {
    match message {
        Message::RegisterRelays(_) => Some("register_ack"),
        Message::Heartbeat(_) => Some("heartbeat_ack"),
        Message::HttpRequest(_) => Some("http_response"),
        Message::MirrorRangeRequest(_) | Message::MirrorProofRequest(_) => {
            Some("mirror_range_response")
        }
        Message::PendingWritePush(_) => Some("push_ack"),
        Message::ResyncComplete(_) => Some("resync_ack"),
        _ => None,
    }
}

/// Whether `message` answers a request (so its id names one of the receiver's requests).
#[must_use]
pub fn is_answer(message: &Message) -> bool {
    matches!(
        message,
        Message::RegisterAck(_)
            | Message::HeartbeatAck(_)
            | Message::HttpResponse(_)
            | Message::MirrorRangeResponse(_)
            | Message::PushAck(_)
            | Message::ResyncAck(_)
            | Message::Error(_)
    )
}

/// What the handles queue for the driver's writer.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame, already [`encode_length_prefixed`].
    Frame(Vec<u8>),
    /// Close after everything queued before.
    Close { code: CloseCode, reason: String },
}

/// State shared by the handles and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    remote: PeerId,
    /// Outstanding requests by id. Never iterated in an order that matters.
    pending: Mutex<BTreeMap<u64, async_channel::Sender<Message>>>,
    next_id: AtomicU64,
    in_flight: async_lock::Semaphore,
    closed: Mutex<Option<LinkClosed>>,
}

/// Locks a mutex whose critical sections cannot panic, so poisoning carries no meaning here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(remote: PeerId, max_in_flight: usize) -> Self {
        Self {
            remote,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(FIRST_REQUEST_ID),
            in_flight: async_lock::Semaphore::new(max_in_flight),
            closed: Mutex::new(None),
        }
    }

    /// The next request id: from [`FIRST_REQUEST_ID`] up, skipping [`LINK_HEARTBEAT_ID`],
    /// wrapping back to [`FIRST_REQUEST_ID`].
    fn allocate_id(&self) -> u64 {
        let step = |id: u64| {
            Some(if id >= LINK_HEARTBEAT_ID - 1 {
                FIRST_REQUEST_ID
            } else {
                id + 1
            })
        };
        // The closure always returns Some, so both arms carry the previous value.
        match self
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        {
            Ok(id) | Err(id) => id,
        }
    }

    /// The waiter of outstanding request `id`, removed.
    pub(crate) fn take_waiter(&self, id: u64) -> Option<async_channel::Sender<Message>> {
        lock(&self.pending).remove(&id)
    }

    /// Records why the link ended; the first reason recorded wins.
    pub(crate) fn record_closed(&self, closed: LinkClosed) {
        lock(&self.closed).get_or_insert(closed);
    }

    /// Fails every waiting request: dropping the senders wakes the waiters, which then read the
    /// recorded reason.
    pub(crate) fn fail_waiters(&self) {
        let waiters = std::mem::take(&mut *lock(&self.pending));
        drop(waiters);
    }

    pub(crate) fn remote(&self) -> PeerId {
        self.remote
    }

    pub(crate) fn closed(&self) -> Option<LinkClosed> {
        lock(&self.closed).clone()
    }

    fn closed_error(&self) -> RequestError {
        RequestError::Closed(self.closed().unwrap_or_else(|| LinkClosed {
            by: ClosedBy::Local,
            code: CloseCode::INTERNAL,
            reason: "link driver stopped".into(),
        }))
    }
}

/// Removes its request from the pending table when dropped (answered, failed or withdrawn).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// A handle to an established link. Clones share the link; it closes with
/// [`CloseCode::NORMAL`] when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct PeerLink {
    shared: Arc<Shared>,
    outbound: async_channel::Sender<Outbound>,
}

impl PeerLink {
    pub(crate) fn new(shared: Arc<Shared>, outbound: async_channel::Sender<Outbound>) -> Self {
        Self { shared, outbound }
    }

    /// The identity the remote proved in the handshake.
    #[must_use]
    pub fn remote(&self) -> PeerId {
        self.shared.remote
    }

    /// Sends `message` as a request and waits for its answer.
    pub async fn request(&self, message: Message) -> Result<Message, RequestError> {
        let Some(expected) = answer_kind(&message) else {
            return Err(RequestError::NotARequest {
                kind: message.kind(),
            });
        };
        let _slot = self.shared.in_flight.acquire().await;
        let id = self.shared.allocate_id();
        let bytes = encode_length_prefixed(&Frame::new(id, message))?;
        let (answer_tx, answer_rx) = async_channel::bounded(1);
        lock(&self.shared.pending).insert(id, answer_tx);
        let _pending = PendingGuard {
            shared: &self.shared,
            id,
        };
        self.enqueue(Outbound::Frame(bytes)).await?;
        match answer_rx.recv().await {
            Ok(Message::Error(error)) => Err(RequestError::Remote(error)),
            Ok(answer) if answer.kind() == expected => Ok(answer),
            Ok(answer) => Err(RequestError::UnexpectedAnswer {
                expected,
                got: answer.kind(),
            }),
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    /// Sends `frame` as it is, without waiting for an answer.
    pub async fn send(&self, frame: Frame) -> Result<(), RequestError> {
        let bytes = encode_length_prefixed(&frame)?;
        self.enqueue(Outbound::Frame(bytes)).await
    }

    /// Closes the link after the frames already queued: the peer receives `code` and `reason`
    /// (cut to 256 bytes). Returns once the close is queued; the driver future completes when it
    /// has been sent.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), RequestError> {
        self.enqueue(Outbound::Close {
            code,
            reason: reason.to_owned(),
        })
        .await
    }

    /// Why the link ended, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<LinkClosed> {
        self.shared.closed()
    }

    /// Requests sent and not yet answered.
    #[must_use]
    pub fn requests_in_flight(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    async fn enqueue(&self, item: Outbound) -> Result<(), RequestError> {
        self.outbound
            .send(item)
            .await
            .map_err(|_| self.shared.closed_error())
    }
}

/// Unsolicited frames from the peer, in arrival order.
#[derive(Debug)]
pub struct Inbound {
    frames: async_channel::Receiver<Frame>,
    shared: Arc<Shared>,
}

impl Inbound {
    pub(crate) fn new(frames: async_channel::Receiver<Frame>, shared: Arc<Shared>) -> Self {
        Self { frames, shared }
    }

    /// The next frame; `None` once the link has ended and every queued frame was taken.
    pub async fn recv(&self) -> Option<Frame> {
        self.frames.recv().await.ok()
    }

    /// The next frame if one is queued.
    #[must_use]
    pub fn try_recv(&self) -> Option<Frame> {
        self.frames.try_recv().ok()
    }

    /// The identity the remote proved in the handshake.
    #[must_use]
    pub fn remote(&self) -> PeerId {
        self.shared.remote
    }

    /// Why the link ended, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<LinkClosed> {
        self.shared.closed()
    }
}
