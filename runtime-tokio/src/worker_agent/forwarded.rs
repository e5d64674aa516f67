//! NIP-01 sessions the gateway forwards over the peer link.
//!
//! Contract (the wire side is in `docs/api.md`, "Forwarded NIP-01 sessions"):
//! - The gateway sends `NostrFrame { relay_key, session, frame }` one-way (request id 0). The
//!   first frame of an unknown `(relay_key, session)` opens a session: a core `Session` with the
//!   local server's [`ConnectionConfig`], run through a [`SessionPump`] against the relay's
//!   [`SharedHost`] — the very host the local WebSocket server uses, so an event published
//!   either way reaches the live subscribers of both.
//! - Every frame the session produces goes back as a `NostrFrame` with the same `relay_key` and
//!   `session`, one-way, request id 0, in order.
//! - An empty `frame` ends a session. From the gateway: the client went away; frames already
//!   queued for the session are still executed, then its live subscriptions are unregistered
//!   and nothing more is sent. From the worker: it will not serve the session — no hosts yet
//!   ([`super::WorkerAgentHandle::serve_forwarded_sessions`] not called), the relay is not
//!   hosted here, [`ForwardedSessions::max_sessions`] reached, or the session's inbound or
//!   outbound queue overflowed — and the gateway re-routes it. The worker says so once;
//!   later frames of a session it ended are dropped until the gateway ends the session too.
//! - The link's read loop never waits on a session: it hands frames over with `try_send`.
//!   Each session runs in its own task with a bounded inbound queue and a bounded outbound
//!   queue drained by its own writer task; a full queue ends that session, never the link.
//! - When the link ends, every session of it ends (the table is dropped, each task sees its
//!   inbound queue close and unregisters its live subscriptions).
//!
//! The read loop is the agent's link task, which never takes a host lock: the session tasks
//! take it (host, then agent — the order the local server uses).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hypergate_adapters::peer_link::PeerLink;
use hypergate_core::ids::RelayKey;
use hypergate_core::wire::{BoundedString, Frame, Message, NostrFrame};
use tokio::sync::mpsc;

use super::session::UNSOLICITED_ID;
use crate::worker::ConnectionConfig;
use crate::worker::SharedHost;
use crate::worker::session_pump::{Ending, SessionPump};

/// What forwarded sessions are served from, and their bounds. Given to the agent with
/// [`super::WorkerAgentHandle::serve_forwarded_sessions`].
#[derive(Clone)]
pub struct ForwardedSessions {
    /// The hosts of the relays served, shared with the local server.
    pub hosts: BTreeMap<RelayKey, SharedHost>,
    /// Session limits and the outbound queue per session (the local server's).
    pub connection: ConnectionConfig,
    /// Open sessions per link; a frame opening one more is refused.
    pub max_sessions: usize,
    /// Frames from the gateway queued per session before it is ended.
    pub inbound_queue: usize,
}

impl ForwardedSessions {
    /// Default [`Self::max_sessions`].
    pub const DEFAULT_MAX_SESSIONS: usize = 4096;
    /// Default [`Self::inbound_queue`].
    pub const DEFAULT_INBOUND_QUEUE: usize = 1024;

    /// Serves `hosts` with the local server's `connection` bounds and the default limits.
    #[must_use]
    pub fn new(hosts: BTreeMap<RelayKey, SharedHost>, connection: ConnectionConfig) -> Self {
        ForwardedSessions {
            hosts,
            connection,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            inbound_queue: Self::DEFAULT_INBOUND_QUEUE,
        }
    }
}

impl std::fmt::Debug for ForwardedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedSessions")
            .field("relays", &self.hosts.keys().collect::<Vec<_>>())
            .field("connection", &self.connection)
            .field("max_sessions", &self.max_sessions)
            .field("inbound_queue", &self.inbound_queue)
            .finish()
    }
}

/// A session as the gateway names it.
type SessionKey = (RelayKey, u64);

/// The forwarded sessions of one link. Dropping it ends them all.
pub(crate) struct LinkSessions {
    sessions: BTreeMap<SessionKey, Entry>,
    /// Session tasks running (shared with the agent's status).
    open: Arc<AtomicUsize>,
}

struct Entry {
    /// Where the session task reads frames; `None` once the worker ended the session (the
    /// entry stays so that frames still in flight do not open a new session).
    inbound: Option<mpsc::Sender<String>>,
    /// Set before `inbound` is dropped when the worker ends the session, so the task tells
    /// the gateway instead of taking it for the gateway's end.
    ended_by_worker: Arc<AtomicBool>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.inbound.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

impl LinkSessions {
    /// No sessions yet; `open` counts the running session tasks.
    pub(crate) fn new(open: Arc<AtomicUsize>) -> Self {
        LinkSessions {
            sessions: BTreeMap::new(),
            open,
        }
    }

    /// Routes one frame from the gateway. Returns the "session ended" frame to send back
    /// when the worker refuses to open the session.
    pub(crate) fn route(
        &mut self,
        served: Option<&ForwardedSessions>,
        link: &PeerLink,
        frame: NostrFrame,
    ) -> Option<NostrFrame> {
        let key = (frame.relay_key, frame.session);
        if frame.frame.is_empty() {
            // The client went away. Dropping the sender lets the task run what is queued,
            // then end without answering.
            self.sessions.remove(&key);
            return None;
        }
        if let Some(entry) = self.sessions.get_mut(&key) {
            let Some(inbound) = &entry.inbound else {
                return None; // ended by the worker, which said so already
            };
            match inbound.try_send(frame.frame.into_inner()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(relay = %key.0.short(), session = key.1, "forwarded session ended: the gateway sent faster than it was served");
                    entry.ended_by_worker.store(true, Ordering::Release);
                    entry.inbound = None;
                }
                // The task ended on its own (its outbound queue overflowed) and said so.
                Err(mpsc::error::TrySendError::Closed(_)) => entry.inbound = None,
            }
            return None;
        }
        let refuse = |why: &str| {
            tracing::debug!(relay = %key.0.short(), session = key.1, why, "forwarded session refused");
            Some(ended(key))
        };
        let Some(served) = served else {
            return refuse("forwarded sessions are not served yet");
        };
        let Some(host) = served.hosts.get(&key.0) else {
            return refuse("relay not hosted here");
        };
        if self.sessions.len() >= served.max_sessions {
            self.sessions.retain(|_, entry| entry.is_live());
            if self.sessions.len() >= served.max_sessions {
                return refuse("too many sessions on this link");
            }
        }
        let (inbound, frames) = mpsc::channel(served.inbound_queue.max(1));
        let ended_by_worker = Arc::new(AtomicBool::new(false));
        // Cannot fail: the queue is new and holds at least one frame.
        let _ = inbound.try_send(frame.frame.into_inner());
        self.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_session(
            Arc::clone(&self.open),
            key,
            Arc::clone(host),
            served.connection,
            frames,
            Arc::clone(&ended_by_worker),
            link.clone(),
        ));
        self.sessions.insert(
            key,
            Entry {
                inbound: Some(inbound),
                ended_by_worker,
            },
        );
        None
    }
}

/// The empty frame: "this session ended".
fn ended((relay_key, session): SessionKey) -> NostrFrame {
    NostrFrame {
        relay_key,
        session,
        frame: BoundedString::truncating(""),
    }
}

/// Who ended a session.
enum End {
    /// The gateway (empty frame) or the link: nothing more is sent.
    ByGateway,
    /// The worker: the gateway is told with an empty frame.
    ByWorker(&'static str),
}

/// Runs one forwarded session until the gateway or the worker ends it.
async fn serve_session(
    open: Arc<AtomicUsize>,
    key: SessionKey,
    host: SharedHost,
    connection: ConnectionConfig,
    mut frames: mpsc::Receiver<String>,
    ended_by_worker: Arc<AtomicBool>,
    link: PeerLink,
) {
    let (out_tx, out_rx) = mpsc::channel::<String>(connection.outbound_queue.max(1));
    let writer = tokio::spawn(write_frames(link.clone(), key, out_rx));
    let mut pump = SessionPump::new(host, connection.session);
    let end = loop {
        tokio::select! {
            text = frames.recv() => match text {
                Some(text) => pump.handle_text(&text),
                None if ended_by_worker.load(Ordering::Acquire) => {
                    break End::ByWorker("its inbound queue overflowed");
                }
                None => break End::ByGateway,
            },
            Some(item) = pump.next_live() => pump.handle_live(item),
        }
        let queued = pump
            .settle(|frame| match out_tx.try_send(frame) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err(Ending::TooSlow),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Ending::Closed),
            })
            .await;
        match queued {
            Ok(()) => {}
            Err(Ending::TooSlow) => break End::ByWorker("its outbound queue overflowed"),
            Err(Ending::Closed) => break End::ByWorker("its reply could not be sent"),
        }
    };
    pump.end().await;
    open.fetch_sub(1, Ordering::Relaxed);
    drop(out_tx);
    match end {
        End::ByGateway => writer.abort(),
        End::ByWorker(why) => {
            tracing::info!(relay = %key.0.short(), session = key.1, why, "forwarded session ended by the worker");
            // After what is queued, so the gateway sees the session's frames, then its end.
            let _ = writer.await;
            let _ = link
                .send(Frame::new(UNSOLICITED_ID, Message::NostrFrame(ended(key))))
                .await;
        }
    }
}

/// Sends a session's frames over the link, in order; ends when the session or the link does.
async fn write_frames(
    link: PeerLink,
    (relay_key, session): SessionKey,
    mut out: mpsc::Receiver<String>,
) {
    while let Some(text) = out.recv().await {
        let frame = match BoundedString::new(text) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(relay = %relay_key.short(), session, %error, "a reply does not fit a link frame: the session ends");
                return;
            }
        };
        let message = Message::NostrFrame(NostrFrame {
            relay_key,
            session,
            frame,
        });
        if link
            .send(Frame::new(UNSOLICITED_ID, message))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
