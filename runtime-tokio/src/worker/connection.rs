//! One client WebSocket: feeds frames to a core `Session` through a [`SessionPump`] (the same
//! pump the agent's forwarded sessions use), and sends its frames.
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

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use hypergate_core::session::SessionConfig;
use tokio::sync::{mpsc, watch};

use super::session_pump::{Ending, SessionPump, SharedHost};

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

/// Serves one upgraded WebSocket until it closes, the client is too slow, or shutdown.
pub(super) async fn serve(
    socket: WebSocket,
    host: SharedHost,
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
    let mut pump = SessionPump::new(host, config.session);

    let ending = loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => pump.handle_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => pump.handle_binary(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break Ending::Closed,
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    break Ending::Closed;
                }
            },
            Some(item) = pump.next_live() => pump.handle_live(item),
            _ = shutdown.changed() => break Ending::Closed,
        }
        let queued = pump
            .settle(|frame| match out_tx.try_send(Message::text(frame)) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err(Ending::TooSlow),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Ending::Closed),
            })
            .await;
        if let Err(ending) = queued {
            break ending;
        }
    };

    pump.end().await;
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
