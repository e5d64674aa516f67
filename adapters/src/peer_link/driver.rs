//! The future that moves a link's bytes. The caller spawns [`LinkDriver::run`] on its own
//! executor; nothing here names a runtime.
//!
//! Contract:
//! - `run` reads, opens and routes the peer's records; seals and writes what the handles queue,
//!   batching whatever is already queued into as few chunks and writes as possible; sends a
//!   heartbeat every interval; and completes once the link has ended: `Ok(LinkClosed)` when a
//!   close record ended it (either side's), `Err(LinkError)` when a failure did. Handles see the
//!   same ending as a [`LinkClosed`] the moment it is decided, before any close record is sent.
//! - Liveness without a clock: on every heartbeat tick the driver looks at counters. No bytes
//!   from the peer for [`LinkConfig::dead_after`] is [`LinkError::PeerSilent`]; a write that has
//!   made no progress for as long is [`LinkError::PeerNotReading`]. While the link waits for the
//!   local [`Inbound`](super::Inbound) reader it does not read, and that time does not count as
//!   the peer's silence.
//! - On a peer's protocol error or silence the driver tries to tell it why (a close record,
//!   bounded by [`LinkConfig::close_timeout`]), unless a write was cut mid-chunk. Every ending
//!   then shuts the write side and reads until the peer closes too (again bounded), so the
//!   kernel never resets a connection with a close record still in flight.
//! - Dropping the future drops the stream and ends the link for every handle.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hypergate_core::ids::PeerId;
use hypergate_core::wire::{Frame, Heartbeat, Message, encode_length_prefixed};

use super::handle::{
    ClosedBy, FIRST_REQUEST_ID, LINK_HEARTBEAT_ID, LinkClosed, Outbound, Shared, is_answer,
};
use super::record::{
    CloseCode, Record, RecordError, SealedRecordDecoder, encode_close_record,
    push_encoded_frame_record,
};
use super::sealed::{SealError, Sealer};
use super::{LinkConfig, Sleeper};
use crate::clock::{Clock, SystemClock};

/// Bytes read from the stream per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Plaintext gathered into one batch before it is sealed and written.
const BATCH_BYTES: usize = 64 * 1024;

/// Why a link failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    // The peer broke the protocol or went away.
    /// The peer's bytes did not open, or did not decode as records and frames.
    #[error("peer sent invalid data: {0}")]
    Protocol(#[from] RecordError),
    /// The peer sent a record that is not valid at this point (a second welcome).
    #[error("peer sent a {kind} record after the handshake")]
    UnexpectedRecord {
        /// The record kind.
        kind: &'static str,
    },
    /// The stream ended without a close record.
    #[error("connection lost without a close record")]
    ConnectionLost,
    /// Nothing arrived from the peer for the dead-peer timeout.
    #[error("no data from the peer for {silent_for:?}")]
    PeerSilent {
        /// How long the peer was silent.
        silent_for: Duration,
    },
    /// The peer left a write unread for the dead-peer timeout.
    #[error("the peer left our writes unread for {stalled_for:?}")]
    PeerNotReading {
        /// How long the write made no progress.
        stalled_for: Duration,
    },

    // The transport or this side failed.
    /// The stream failed.
    #[error("link i/o failed: {0}")]
    Io(#[from] io::Error),
    /// This side could not seal any more data.
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl LinkError {
    /// The close code that reports this failure.
    #[must_use]
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Protocol(_) | Self::UnexpectedRecord { .. } => CloseCode::PROTOCOL_ERROR,
            Self::ConnectionLost | Self::Io(_) => CloseCode::CONNECTION_LOST,
            Self::PeerSilent { .. } | Self::PeerNotReading { .. } => CloseCode::TIMEOUT,
            Self::Seal(_) => CloseCode::INTERNAL,
        }
    }

    /// Whether the peer is to blame (protocol violations, silence) rather than the transport
    /// or this side.
    #[must_use]
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::Protocol(_)
                | Self::UnexpectedRecord { .. }
                | Self::PeerSilent { .. }
                | Self::PeerNotReading { .. }
        )
    }

    /// Which side the handles are told ended the link.
    fn closed_by(&self) -> ClosedBy {
        match self {
            Self::ConnectionLost | Self::Io(_) => ClosedBy::Peer,
            _ => ClosedBy::Local,
        }
    }

    /// Whether a close record should tell the peer about this failure.
    fn worth_telling_the_peer(&self) -> bool {
        matches!(
            self,
            Self::Protocol(_) | Self::UnexpectedRecord { .. } | Self::PeerSilent { .. }
        )
    }
}

/// How one of the driver's three loops ended the link.
enum Ending {
    /// This side closed: on request (`sent`: the close record is out) or because every handle
    /// was dropped.
    Local {
        code: CloseCode,
        reason: String,
        sent: bool,
    },
    /// The peer's close record arrived.
    Peer { code: CloseCode, reason: String },
    /// The link failed.
    Failed(LinkError),
}

/// Counters the loops share, so liveness needs no clock.
#[derive(Default)]
struct Activity {
    /// Successful reads with at least one byte.
    reads: AtomicU64,
    /// The reader is waiting for the local `Inbound` reader to make room.
    delivering: AtomicBool,
    /// A write is in progress.
    writing: AtomicBool,
    /// Successful write calls.
    writes: AtomicU64,
}

/// Drives one established link; see the module docs.
pub struct LinkDriver<S, T> {
    stream: S,
    sealer: Sealer,
    decoder: SealedRecordDecoder,
    shared: Arc<Shared>,
    outbound: async_channel::Receiver<Outbound>,
    inbound: async_channel::Sender<Frame>,
    config: LinkConfig,
    timer: T,
}

impl<S, T> std::fmt::Debug for LinkDriver<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkDriver")
            .field("remote", &self.shared.remote())
            .finish_non_exhaustive()
    }
}

/// Ends the link for every handle when dropped: records the reason (the first one recorded
/// wins), closes both queues, then fails the waiting requests. The order matters: a request
/// either fails to queue, or was registered before the waiters were failed.
struct EndGuard<'a> {
    shared: &'a Shared,
    outbound: &'a async_channel::Receiver<Outbound>,
    inbound: &'a async_channel::Sender<Frame>,
}

impl EndGuard<'_> {
    fn end(&self, closed: LinkClosed) {
        self.shared.record_closed(closed);
        self.outbound.close();
        self.inbound.close();
        self.shared.fail_waiters();
    }
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.end(LinkClosed {
            by: ClosedBy::Local,
            code: CloseCode::INTERNAL,
            reason: "link driver dropped".into(),
        });
    }
}

impl<S, T> LinkDriver<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Sleeper,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        stream: S,
        sealer: Sealer,
        decoder: SealedRecordDecoder,
        shared: Arc<Shared>,
        outbound: async_channel::Receiver<Outbound>,
        inbound: async_channel::Sender<Frame>,
        config: LinkConfig,
        timer: T,
    ) -> Self {
        Self {
            stream,
            sealer,
            decoder,
            shared,
            outbound,
            inbound,
            config,
            timer,
        }
    }

    /// Runs the link until it ends; see the module docs.
    pub async fn run(self) -> Result<LinkClosed, LinkError> {
        let Self {
            stream,
            mut sealer,
            mut decoder,
            shared,
            outbound,
            inbound,
            config,
            timer,
        } = self;
        let guard = EndGuard {
            shared: &shared,
            outbound: &outbound,
            inbound: &inbound,
        };
        let (mut read_half, mut write_half) = futures_lite::io::split(stream);
        let activity = Activity::default();
        let (heartbeat_tx, heartbeat_rx) = async_channel::bounded(1);
        let mut mid_chunk = false;

        let ending = future::or(
            future::or(
                write_loop(
                    &mut write_half,
                    &mut sealer,
                    &outbound,
                    &heartbeat_rx,
                    &activity,
                    &mut mid_chunk,
                ),
                read_loop(&mut read_half, &mut decoder, &shared, &inbound, &activity),
            ),
            tick_loop(&timer, &config, &heartbeat_tx, &activity),
        )
        .await;

        let (result, closed, tell_peer) = match ending {
            Ending::Local { code, reason, sent } => {
                let tell = (!sent).then(|| (code, reason.clone()));
                let closed = LinkClosed {
                    by: ClosedBy::Local,
                    code,
                    reason,
                };
                (Ok(closed.clone()), closed, tell)
            }
            Ending::Peer { code, reason } => {
                let closed = LinkClosed {
                    by: ClosedBy::Peer,
                    code,
                    reason,
                };
                (Ok(closed.clone()), closed, None)
            }
            Ending::Failed(error) => {
                let closed = LinkClosed {
                    by: error.closed_by(),
                    code: error.close_code(),
                    reason: error.to_string(),
                };
                let tell = error
                    .worth_telling_the_peer()
                    .then(|| (closed.code, closed.reason.clone()));
                (Err(error), closed, tell)
            }
        };
        guard.end(closed);

        let after = config.close_timeout();
        if let Some((code, reason)) = tell_peer.filter(|_| !mid_chunk) {
            let mut plain = Vec::new();
            encode_close_record(code, &reason, &mut plain);
            let mut wire = Vec::new();
            if sealer.seal_into(&plain, &mut wire).is_ok() {
                within(&timer, after, async {
                    // Best effort: the link is over whether or not the peer hears why.
                    let _ = write_half.write_all(&wire).await;
                    let _ = write_half.flush().await;
                })
                .await;
            }
        }
        within(&timer, after, async {
            let _ = write_half.close().await;
        })
        .await;
        // Read until the peer closes too: closing a socket with unread data makes the kernel
        // reset the connection, which can destroy the close record before the peer reads it.
        within(&timer, after, async {
            let mut sink = [0u8; 4096];
            while let Ok(1..) = read_half.read(&mut sink).await {}
        })
        .await;
        result
    }

    /// The identity the remote proved in the handshake.
    #[must_use]
    pub fn remote(&self) -> PeerId {
        self.shared.remote()
    }
}

/// Runs `work` for at most `after`.
async fn within<T: Sleeper>(timer: &T, after: Duration, work: impl Future<Output = ()>) {
    future::or(work, timer.sleep(after)).await;
}

/// Reads, opens and routes records until the link ends.
async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut SealedRecordDecoder,
    shared: &Shared,
    inbound: &async_channel::Sender<Frame>,
    activity: &Activity,
) -> Ending {
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        loop {
            match decoder.next_record() {
                Ok(None) => break,
                Ok(Some(Record::Frame(frame))) => route(frame, shared, inbound, activity).await,
                Ok(Some(Record::Close { code, reason })) => return Ending::Peer { code, reason },
                Ok(Some(Record::Welcome)) => {
                    return Ending::Failed(LinkError::UnexpectedRecord { kind: "welcome" });
                }
                Err(error) => return Ending::Failed(error.into()),
            }
        }
        let read = match reader.read(&mut buffer).await {
            Ok(0) => return Ending::Failed(LinkError::ConnectionLost),
            Ok(read) => read,
            Err(error) => return Ending::Failed(error.into()),
        };
        activity.reads.fetch_add(1, Ordering::Relaxed);
        decoder.push(buffer.get(..read).unwrap_or_default());
    }
}

/// Hands a frame to its waiting request, or to the inbound queue.
async fn route(
    frame: Frame,
    shared: &Shared,
    inbound: &async_channel::Sender<Frame>,
    activity: &Activity,
) {
    if is_answer(&frame.message) && frame.request_id >= FIRST_REQUEST_ID {
        // Answers in the link's id range belong to this side's requests. The answer to our
        // own heartbeat has no waiter; an answer to a withdrawn request neither: both end here.
        if frame.request_id != LINK_HEARTBEAT_ID {
            if let Some(waiter) = shared.take_waiter(frame.request_id) {
                let _ = waiter.try_send(frame.message);
            }
        }
        return;
    }
    activity.delivering.store(true, Ordering::Relaxed);
    // A dropped `Inbound` discards unsolicited frames; the link itself carries on.
    let _ = inbound.send(frame).await;
    activity.delivering.store(false, Ordering::Relaxed);
}

/// What the writer takes next.
enum Next {
    Heartbeat(Vec<u8>),
    Item(Outbound),
    HandlesGone,
}

/// Seals and writes queued frames, batching what is already queued, until the link ends.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    sealer: &mut Sealer,
    outbound: &async_channel::Receiver<Outbound>,
    heartbeats: &async_channel::Receiver<Vec<u8>>,
    activity: &Activity,
    mid_chunk: &mut bool,
) -> Ending {
    let mut plain = Vec::with_capacity(BATCH_BYTES);
    let mut wire = Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 8);
    loop {
        plain.clear();
        wire.clear();
        let first = future::or(
            async {
                match heartbeats.recv().await {
                    Ok(bytes) => Next::Heartbeat(bytes),
                    // The ticker outlives the writer; never chosen.
                    Err(_) => future::pending().await,
                }
            },
            async {
                match outbound.recv().await {
                    Ok(item) => Next::Item(item),
                    Err(_) => Next::HandlesGone,
                }
            },
        )
        .await;
        let mut closing = None;
        match first {
            Next::Heartbeat(bytes) | Next::Item(Outbound::Frame(bytes)) => {
                push_encoded_frame_record(&bytes, &mut plain);
            }
            Next::Item(Outbound::Close { code, reason }) => closing = Some((code, reason)),
            Next::HandlesGone => {
                return Ending::Local {
                    code: CloseCode::NORMAL,
                    reason: "every handle of the link was dropped".into(),
                    sent: false,
                };
            }
        }
        while closing.is_none() && plain.len() < BATCH_BYTES {
            if let Ok(bytes) = heartbeats.try_recv() {
                push_encoded_frame_record(&bytes, &mut plain);
                continue;
            }
            match outbound.try_recv() {
                Ok(Outbound::Frame(bytes)) => push_encoded_frame_record(&bytes, &mut plain),
                Ok(Outbound::Close { code, reason }) => closing = Some((code, reason)),
                Err(_) => break,
            }
        }
        if let Some((code, reason)) = &closing {
            encode_close_record(*code, reason, &mut plain);
        }
        if let Err(error) = sealer.seal_into(&plain, &mut wire) {
            return Ending::Failed(error.into());
        }
        *mid_chunk = true;
        activity.writing.store(true, Ordering::Relaxed);
        if let Err(error) = write_counted(writer, &wire, activity).await {
            return Ending::Failed(error);
        }
        activity.writing.store(false, Ordering::Relaxed);
        *mid_chunk = false;
        if let Some((code, reason)) = closing {
            return Ending::Local {
                code,
                reason,
                sent: true,
            };
        }
    }
}

/// Writes all of `bytes` and flushes, counting each write that makes progress.
async fn write_counted<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut bytes: &[u8],
    activity: &Activity,
) -> Result<(), LinkError> {
    while !bytes.is_empty() {
        let written = writer.write(bytes).await?;
        if written == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero).into());
        }
        activity.writes.fetch_add(1, Ordering::Relaxed);
        bytes = bytes.get(written..).unwrap_or_default();
    }
    writer.flush().await?;
    Ok(())
}

/// Every heartbeat interval: check the peer's liveness, then queue a heartbeat.
async fn tick_loop<T: Sleeper>(
    timer: &T,
    config: &LinkConfig,
    heartbeats: &async_channel::Sender<Vec<u8>>,
    activity: &Activity,
) -> Ending {
    let interval = config.heartbeat_interval();
    let dead_after = config.dead_after();
    let (mut silent, mut stalled) = (Duration::ZERO, Duration::ZERO);
    let (mut reads_seen, mut writes_seen) = (0, 0);
    let mut seq = 0u64;
    loop {
        timer.sleep(interval).await;

        let reads = activity.reads.load(Ordering::Relaxed);
        if reads != reads_seen || activity.delivering.load(Ordering::Relaxed) {
            silent = Duration::ZERO;
            reads_seen = reads;
        } else {
            silent = silent.saturating_add(interval);
            if silent >= dead_after {
                return Ending::Failed(LinkError::PeerSilent { silent_for: silent });
            }
        }

        let writes = activity.writes.load(Ordering::Relaxed);
        if activity.writing.load(Ordering::Relaxed) && writes == writes_seen {
            stalled = stalled.saturating_add(interval);
            if stalled >= dead_after {
                return Ending::Failed(LinkError::PeerNotReading {
                    stalled_for: stalled,
                });
            }
        } else {
            stalled = Duration::ZERO;
        }
        writes_seen = writes;

        seq += 1;
        let beat = Frame::new(
            LINK_HEARTBEAT_ID,
            Message::Heartbeat(Heartbeat {
                seq,
                sent_at: SystemClock.unix_now(),
            }),
        );
        if let Ok(bytes) = encode_length_prefixed(&beat) {
            // One heartbeat waiting is enough: a busy writer proves liveness anyway.
            let _ = heartbeats.try_send(bytes);
        }
    }
}
