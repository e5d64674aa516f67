//! One worker link's outbound frames, scheduled fairly: the core's [`FairQueue`] with one
//! flow per client session and one for the gateway's own control frames, and the task that
//! writes them onto the link.
//!
//! Contract:
//! - [`LinkQueue::push`] never waits: a frame is queued or refused with the bound that
//!   refused it ([`Refused`]); a refused client frame is the client's `rate-limited:` answer,
//!   a refused control frame takes the link down (the caller's decision, see `state.rs`).
//! - Client sessions are served in round robin, one frame per turn, with the control flow as
//!   one more turn: a client flooding the link waits behind itself, not in front of others.
//!   Each session has a few frames of reserved room, so a calm session is admitted however
//!   full the shared room is (the limits are below).
//! - [`write_frames`] pops and hands each frame to the link, which seals and batches what is
//!   queued and flushes when its own queue is empty; with nothing queued here it waits on a
//!   [`Notify`] that every push signals.
//! - A session that leaves the worker ([`LinkQueue::end_session`]) drops what it still had
//!   queued there (the worker's answers to it would be ignored now) and queues the "session
//!   ended" frame in its own flow, so it is ordered after everything of the session that was
//!   already sent and before anything the session sends there later.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::peer_link::PeerLink;
use hypergate_core::fair_queue::{FairQueue, FairQueueLimits, Flow, Refused};
use hypergate_core::router::SessionId;
use hypergate_core::wire::Frame;
use tokio::sync::Notify;

/// Bounds of each link's queue, in frames.
///
/// `per_flow` lets a session's full default burst (400 frames) queue; `reserved_per_flow`
/// covers a client that pipelines a few requests; `reserved_total` keeps that promise for
/// up to 1 024 busy sessions per worker; `shared` is the old single queue's size; `control`
/// is far above what the gateway's own frames (acks, pushes, session ends) ever queue.
pub(crate) const LINK_QUEUE_LIMITS: FairQueueLimits = FairQueueLimits {
    per_flow: 512,
    reserved_per_flow: 4,
    reserved_total: 4096,
    shared: 4096,
    control: 1024,
};

/// One link's fair queue and the writer's wake-up. See the module docs.
pub(crate) struct LinkQueue {
    queue: Mutex<FairQueue<SessionId, Frame>>,
    ready: Notify,
}

impl LinkQueue {
    pub(crate) fn new() -> LinkQueue {
        LinkQueue {
            queue: Mutex::new(FairQueue::new(LINK_QUEUE_LIMITS)),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FairQueue<SessionId, Frame>> {
        // Every operation leaves the queue consistent before it could panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` in `flow` and wakes the writer, or says why not.
    pub(crate) fn push(&self, flow: Flow<SessionId>, frame: Frame) -> Result<(), Refused> {
        self.lock().push(flow, frame)?;
        // One writer: a permit stored while it is busy makes its next wait return at once.
        self.ready.notify_one();
        Ok(())
    }

    /// The session left this worker: drops its queued frames and queues `ended` (the
    /// "session ended" frame) behind what was already sent. Returns the frames dropped.
    pub(crate) fn end_session(&self, session: SessionId, ended: Frame) -> usize {
        let mut queue = self.lock();
        let dropped = queue.remove_flow(&session);
        // The flow is empty now, so only a reserved room taken by 1 024 busy sessions
        // refuses it; then it goes with the control frames (which a return to this worker
        // right away could overtake; nothing is lost either way but the worker's session).
        let queued = queue
            .push(Flow::Client(session), ended.clone())
            .or_else(|_| queue.push(Flow::Control, ended));
        drop(queue);
        match queued {
            Ok(()) => self.ready.notify_one(),
            Err(refused) => {
                tracing::warn!(session = session.0, %refused, "session end not queued for the worker");
            }
        }
        dropped
    }

    /// Frames queued, all flows.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The next frame in fair order, waiting for one.
    async fn next(&self) -> Frame {
        loop {
            if let Some((_, frame)) = self.lock().pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }
}

/// Writes `queue`'s frames onto `link` until the link ends.
pub(crate) async fn write_frames(queue: &LinkQueue, link: &PeerLink) {
    loop {
        let frame = queue.next().await;
        if link.send(frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hypergate_core::wire::{Heartbeat, Message};

    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame::new(
            seq,
            Message::Heartbeat(Heartbeat {
                seq,
                sent_at: hypergate_core::time::UnixTime::EPOCH,
            }),
        )
    }

    async fn next_id(queue: &LinkQueue) -> u64 {
        tokio::time::timeout(Duration::from_secs(5), queue.next())
            .await
            .map(|frame| frame.request_id)
            .unwrap_or(u64::MAX)
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_pushed_later() {
        let queue = std::sync::Arc::new(LinkQueue::new());
        let waiting = tokio::spawn({
            let queue = std::sync::Arc::clone(&queue);
            async move { next_id(&queue).await }
        });
        tokio::task::yield_now().await;
        queue.push(Flow::Control, frame(7)).unwrap();
        assert_eq!(waiting.await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_session_that_leaves_drops_its_backlog_and_its_end_follows_what_was_sent() {
        let queue = LinkQueue::new();
        let (calm, flooder) = (SessionId(1), SessionId(2));
        for seq in 10..20 {
            queue.push(Flow::Client(flooder), frame(seq)).unwrap();
        }
        queue.push(Flow::Client(calm), frame(1)).unwrap();
        assert_eq!(next_id(&queue).await, 10);
        assert_eq!(next_id(&queue).await, 1, "the calm session is served next");
        assert_eq!(queue.end_session(flooder, frame(99)), 9);
        queue.push(Flow::Client(flooder), frame(100)).unwrap();
        assert_eq!(next_id(&queue).await, 99);
        assert_eq!(next_id(&queue).await, 100);
        assert_eq!(queue.len(), 0);
    }
}
