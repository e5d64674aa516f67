//! [`SessionPump`]: one NIP-01 client session served from a shared [`RelayHost`], whatever
//! carries its frames — the local WebSocket ([`super::connection`]) or the gateway's peer link
//! ([`crate::worker_agent`]'s forwarded sessions).
//!
//! Contract:
//! - The caller feeds client frames ([`SessionPump::handle_text`]) and live messages
//!   ([`SessionPump::next_live`] → [`SessionPump::handle_live`]), then calls
//!   [`SessionPump::settle`] after each input: the relay host executes the session's effects
//!   (taking the host lock only when there are some) and every frame the session produced is
//!   handed to the caller's sink, in order.
//! - The sink never waits: it queues a frame or refuses it (an [`Ending`]), and a refusal ends
//!   the session — one slow reader cannot hold the host lock or stall other sessions.
//! - Live events reach the pump through one bounded channel per session; a subscription whose
//!   events pile up is dropped by the relay's feed and the client gets `CLOSED`.
//! - [`SessionPump::end`] unregisters every live subscription of the session; a pump must end
//!   through it (dropping one leaves the host to notice the dead receivers on its next send).
//!
//! Lock order: the pump holds the host lock while the host reads or appends through the
//! agent's handle (host, then agent); the agent never takes a host lock.

use std::sync::Arc;
use std::time::Instant;

use hypergate_adapters::index::{LiveMessage, SubscriberId};
use hypergate_adapters::relay::{HostedSession, LiveStarted, RelayHost};
use hypergate_core::nostr::{SignatureVerifier, SubscriptionId};
use hypergate_core::session::{Session, SessionConfig};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::WorkerStore;

/// A relay's host, shared by every session of the relay (local or forwarded).
pub type SharedHost = Arc<Mutex<RelayHost<WorkerStore>>>;

/// Live messages waiting for the session task, across all its subscriptions.
const LIVE_CHANNEL: usize = 256;

/// One live message, named by the subscription and feed registration it belongs to.
pub(crate) type LiveItem = (SubscriptionId, SubscriberId, LiveMessage);

/// Why a session ends; a sink's refusal of a frame is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The frame queue is full: the reader is too slow.
    TooSlow,
    /// The reader (or the client) is gone.
    Closed,
}

/// One session against a shared host. See the module docs.
pub(crate) struct SessionPump {
    conn: HostedSession,
    host: SharedHost,
    live_tx: mpsc::Sender<LiveItem>,
    live_rx: mpsc::Receiver<LiveItem>,
    /// One task per live subscription, moving its messages into `live_tx`.
    forwarders: JoinSet<()>,
}

impl SessionPump {
    /// A fresh session with `config` on `host`.
    pub(crate) fn new(host: SharedHost, config: SessionConfig) -> SessionPump {
        let (live_tx, live_rx) = mpsc::channel(LIVE_CHANNEL);
        SessionPump {
            conn: HostedSession::new(Session::new(config, SignatureVerifier::new())),
            host,
            live_tx,
            live_rx,
            forwarders: JoinSet::new(),
        }
    }

    /// A client text frame.
    pub(crate) fn handle_text(&mut self, text: &str) {
        self.conn
            .session_mut()
            .handle_client_text(text, Instant::now());
    }

    /// A client binary frame (NIP-01 is text only: the session answers with a NOTICE).
    pub(crate) fn handle_binary(&mut self) {
        self.conn.session_mut().handle_client_binary(Instant::now());
    }

    /// The next live message of any subscription. Cancel-safe (for `select!`).
    pub(crate) async fn next_live(&mut self) -> Option<LiveItem> {
        self.live_rx.recv().await
    }

    /// A live message from [`Self::next_live`].
    pub(crate) fn handle_live(&mut self, (subscription, subscriber, message): LiveItem) {
        self.conn.handle_live(&subscription, subscriber, &message);
    }

    /// Lets the host execute the session's effects, then hands every frame to `sink`, in
    /// order. A refusal stops the draining and is returned: the caller ends the session.
    pub(crate) async fn settle(
        &mut self,
        mut sink: impl FnMut(String) -> Result<(), Ending>,
    ) -> Result<(), Ending> {
        if self.conn.session().has_pending_effects() {
            let driven = self.host.lock().await.drive(&mut self.conn).await;
            for failure in driven.failures {
                tracing::warn!(%failure, "relay storage failed while answering a client");
            }
            for live in driven.started {
                self.forwarders.spawn(forward(live, self.live_tx.clone()));
            }
        }
        while let Some(frame) = self.conn.session_mut().poll_transmit() {
            sink(frame.to_json())?;
        }
        Ok(())
    }

    /// Ends the session: its live subscriptions are unregistered from the host.
    pub(crate) async fn end(mut self) {
        self.forwarders.abort_all();
        self.host.lock().await.end_session(self.conn);
    }
}

/// Moves one live subscription's messages to the session task; ends with the subscription.
async fn forward(live: LiveStarted, to: mpsc::Sender<LiveItem>) {
    while let Some(message) = live.receiver.recv().await {
        let item = (live.subscription.clone(), live.subscriber, message);
        if to.send(item).await.is_err() {
            return;
        }
    }
}
