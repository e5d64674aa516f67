//! The loopback ceiling: the least a NIP-01 server can do, so the same load generator shows
//! what the machine, the loopback and the client cost on their own.
//!
//! Contract:
//! - `hypergate bench echo --listen ADDR` accepts WebSocket connections on any path and answers
//!   each `REQ` with its `EOSE` (no events) and each `EVENT` with `OK true` for its id; `CLOSE`
//!   is ignored and so is anything else it cannot read (a benchmark target, not a relay: no
//!   signature check, no storage). It prints `echo listening on <addr>` on stdout once bound.
//! - Frames are parsed with the core's client-message parser (the JSON work any relay does
//!   before anything else); answers are written and flushed one per request, with Nagle off,
//!   like the gateway's client sockets.
//! - A connection that errors is dropped on its own; the server runs until killed.

use futures_util::{SinkExt as _, StreamExt as _};
use hypergate_core::nostr::{ClientMessage, Limits, RelayMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Binds `listen`, prints the bound address and serves until the process is killed.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("echo listening on {}", listener.local_addr()?);
    serve_on(listener).await
}

/// Serves connections accepted on `listener` until accepting fails.
pub async fn serve_on(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(answer(stream));
    }
}

/// Serves one connection until it closes or errors.
async fn answer(stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let limits = Limits::default();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Some(reply) = reply_to(text.as_str(), &limits) else {
            continue;
        };
        if ws.send(Message::text(reply)).await.is_err() {
            return;
        }
    }
}

/// The one frame answering `frame`, if it asks for one.
#[must_use]
pub fn reply_to(frame: &str, limits: &Limits) -> Option<String> {
    match ClientMessage::parse(frame, limits).ok()? {
        ClientMessage::Event(event) => Some(
            RelayMessage::Ok {
                event_id: event.id,
                accepted: true,
                message: String::new(),
            }
            .to_json(),
        ),
        ClientMessage::Req {
            subscription_id, ..
        } => Some(RelayMessage::Eose(subscription_id).to_json()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::events::EventPool;

    #[test]
    fn echo_answers_event_with_ok_for_its_id_and_req_with_its_eose() {
        let limits = Limits::default();
        let pool = EventPool::sign("echo", 1, 1_700_000_000, 8).unwrap();
        let signed = pool.take().unwrap();
        let ok = reply_to(&signed.frame, &limits).unwrap();
        assert_eq!(
            RelayMessage::parse(&ok).unwrap(),
            RelayMessage::Ok {
                event_id: hypergate_core::nostr::EventId::from_hex(&signed.id).unwrap(),
                accepted: true,
                message: String::new(),
            }
        );
        let eose = reply_to(r#"["REQ","s1",{"kinds":[1],"limit":10}]"#, &limits).unwrap();
        assert!(matches!(
            RelayMessage::parse(&eose).unwrap(),
            RelayMessage::Eose(id) if id.as_str() == "s1"
        ));
    }

    #[tokio::test]
    async fn the_load_generator_completes_event_and_req_against_the_echo_without_errors() {
        use std::sync::Arc;
        use std::time::Duration;

        use crate::bench::load::{self, LoadConfig, Workload};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(serve_on(listener));
        let config = LoadConfig {
            url,
            connections: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            request_timeout: Duration::from_secs(10),
            progress: None,
        };
        let pool = Arc::new(EventPool::sign("echo-load", 50, 1_700_000_000, 8).unwrap());
        let events = load::run(&config, &Workload::Event(pool)).await.unwrap();
        assert!(events.requests > 0);
        assert_eq!(events.errors, 0, "{:?}", events.first_error);
        let reqs = load::run(&config, &Workload::req(r#"{"limit":10}"#).unwrap())
            .await
            .unwrap();
        assert!(reqs.requests > 0);
        assert_eq!(reqs.errors, 0, "{:?}", reqs.first_error);
        assert_eq!(reqs.events_per_req, 0.0);
        server.abort();
    }

    #[test]
    fn echo_ignores_close_and_unreadable_frames() {
        let limits = Limits::default();
        assert_eq!(reply_to(r#"["CLOSE","s1"]"#, &limits), None);
        assert_eq!(reply_to("not json", &limits), None);
        assert_eq!(reply_to(r#"["EVENT",{}]"#, &limits), None);
    }
}
