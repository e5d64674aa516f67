//! One client WebSocket: feeds frames to a core [`Session`], lets the relay's [`RelayHost`]
//! execute its effects, and sends its frames.
//!
//! Contract:
//! - **No client can stall another.** Frames go out through a bounded queue drained by a
//!   writer task; a client that lets the queue fill (it does not read) is disconnected at once,
//!   and nothing else waits for it. Live events reach the connection through bounded channels
//!   too: a subscription whose events pile up is dropped by the relay's feed and the client
//!   gets `CLOSED`.
//! - The relay's host is shared by its connections behind an async mutex, taken only while a
//!   session has effects to execute (a publish holds it until the append is durable).
//! - When the connection ends, for whatever reason, its live subscriptions are unregistered.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use hypergate_adapters::index::{LiveMessage, SubscriberId};
use hypergate_adapters::relay::{HostedSession, LiveStarted, RelayHost};
use hypergate_core::nostr::{SignatureVerifier, SubscriptionId};
use hypergate_core::session::{Session, SessionConfig};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use super::WorkerStore;

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// The session's limits.
    pub session: SessionConfig,
    /// Frames waiting to be written before the client counts as too slow.
    pub outbound_queue: usize,
}

/// How long a closing connection may take to flush its queued frames.
const FLUSH_ON_CLOSE: std::time::Duration = std::time::Duration::from_secs(2);

/// Live messages waiting for the connection task, across all its subscriptions.
const LIVE_CHANNEL: usize = 256;

type LiveItem = (SubscriptionId, SubscriberId, LiveMessage);

/// Serves one upgraded WebSocket until it closes, the client is too slow, or shutdown.
pub(super) async fn serve(
    socket: WebSocket,
    host: Arc<Mutex<RelayHost<WorkerStore>>>,
    config: ConnectionConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(config.outbound_queue.max(1));
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let (live_tx, mut live_rx) = mpsc::channel::<LiveItem>(LIVE_CHANNEL);
    let mut forwarders = JoinSet::new();
    let mut conn = HostedSession::new(Session::new(config.session, SignatureVerifier::new()));

    let ending = 'conn: loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    conn.session_mut().handle_client_text(text.as_str(), Instant::now());
                }
                Some(Ok(Message::Binary(_))) => {
                    conn.session_mut().handle_client_binary(Instant::now());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break 'conn Ending::Closed,
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    break 'conn Ending::Closed;
                }
            },
            Some((subscription, subscriber, message)) = live_rx.recv() => {
                conn.handle_live(&subscription, subscriber, &message);
            }
            _ = shutdown.changed() => break 'conn Ending::Closed,
        }
        if conn.session().has_pending_effects() {
            let driven = host.lock().await.drive(&mut conn).await;
            for failure in driven.failures {
                tracing::warn!(%failure, "relay storage failed while answering a client");
            }
            for live in driven.started {
                forwarders.spawn(forward(live, live_tx.clone()));
            }
        }
        while let Some(frame) = conn.session_mut().poll_transmit() {
            match out_tx.try_send(Message::text(frame.to_json())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => break 'conn Ending::TooSlow,
                Err(mpsc::error::TrySendError::Closed(_)) => break 'conn Ending::Closed,
            }
        }
    };

    forwarders.abort_all();
    host.lock().await.end_session(conn);
    drop(out_tx);
    match ending {
        Ending::TooSlow => {
            tracing::info!(
                queue = config.outbound_queue,
                "client disconnected: it did not read its frames"
            );
            writer.abort();
        }
        Ending::Closed => {
            // Let the writer flush what is queued and close, but not wait on a client that
            // stopped reading.
            let abort = writer.abort_handle();
            if tokio::time::timeout(FLUSH_ON_CLOSE, writer).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Why a connection ended.
enum Ending {
    /// The client closed, the socket failed, or the worker shuts down.
    Closed,
    /// The client let its outbound queue fill.
    TooSlow,
}

/// Moves one live subscription's messages to the connection task; ends with the subscription.
async fn forward(live: LiveStarted, to: mpsc::Sender<LiveItem>) {
    while let Some(message) = live.receiver.recv().await {
        let item = (live.subscription.clone(), live.subscriber, message);
        if to.send(item).await.is_err() {
            return;
        }
    }
}
