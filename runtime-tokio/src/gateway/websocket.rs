//! The tokio driver's relay URLs: a WebSocket upgrade through axum becomes a client session
//! ([`clients::serve`] over axum's socket); any other GET answers the relay's page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage};
use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _, future};

use super::clients::{self, FromClient, ToClient};
use super::http::{self, HttpState};

/// `GET /relay/{relayKey}` and the original's `GET /{a}/{b}` (the relay named by its
/// identifier `a:b`).
pub(crate) fn relay_routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/relay/{relay_key}", get(relay))
        .route("/{a}/{b}", get(relay_alias))
}

async fn relay(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(&state, relay_key, remote, &uri, &headers, upgrade)
}

async fn relay_alias(
    State(state): State<Arc<HttpState>>,
    Path((a, b)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(&state, format!("{a}:{b}"), remote, &uri, &headers, upgrade)
}

fn serve(
    state: &Arc<HttpState>,
    relay_name: String,
    remote: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return http::relay_page(state, &relay_name, headers);
    };
    let (access, slot) = http::admit_websocket(state, &relay_name, remote.ip(), uri, headers);
    let cap = http::websocket_message_cap(state);
    let shared = Arc::clone(&state.shared);
    let config = state.client;
    let shutdown = state.shutdown.clone();
    upgrade
        .max_message_size(cap)
        .max_frame_size(cap)
        .read_buffer_size(crate::WEBSOCKET_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let (sink, stream) = socket.split();
            let outgoing = sink.with(|frame| future::ready(Ok::<_, axum::Error>(to_axum(frame))));
            let incoming = stream.map(from_axum);
            clients::serve(
                outgoing, incoming, shared, relay_name, config, access, shutdown,
            )
            .await;
        })
}

/// A frame for the client, as axum's WebSocket sends it.
fn to_axum(frame: ToClient) -> WsMessage {
    match frame {
        ToClient::Text(text) => WsMessage::text(text),
        ToClient::Close(code, reason) => WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

/// What axum's WebSocket read, as the session sees it.
fn from_axum(read: Result<WsMessage, axum::Error>) -> FromClient {
    match read {
        Ok(WsMessage::Text(text)) => FromClient::Text(text.as_str().to_owned()),
        Ok(WsMessage::Binary(_)) => FromClient::Binary,
        Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => FromClient::Control,
        Ok(WsMessage::Close(_)) | Err(_) => FromClient::Closed,
    }
}
