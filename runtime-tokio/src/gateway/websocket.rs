//! The tokio driver's relay URLs: a WebSocket upgrade through axum becomes a client session
//! of the service (over axum's socket); any other GET answers the relay's page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage};
use axum::extract::{ConnectInfo, Path, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _, future};
use hypergate_adapters::gateway::{FromClient, GatewayService, HttpState, ToClient};

/// `GET /relay/{relayKey}` and the original's `GET /{a}/{b}` (the relay named by its
/// identifier `a:b`).
pub(crate) fn relay_routes(service: Arc<GatewayService>) -> Router<Arc<HttpState>> {
    let by_alias = Arc::clone(&service);
    Router::new()
        .route(
            "/relay/{relay_key}",
            get(
                move |Path(relay_key): Path<String>,
                      ConnectInfo(remote): ConnectInfo<SocketAddr>,
                      uri: Uri,
                      headers: HeaderMap,
                      upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| async move {
                    serve(&service, relay_key, remote, &uri, &headers, upgrade)
                },
            ),
        )
        .route(
            "/{a}/{b}",
            get(
                move |Path((a, b)): Path<(String, String)>,
                      ConnectInfo(remote): ConnectInfo<SocketAddr>,
                      uri: Uri,
                      headers: HeaderMap,
                      upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| async move {
                    serve(&by_alias, format!("{a}:{b}"), remote, &uri, &headers, upgrade)
                },
            ),
        )
}

fn serve(
    service: &Arc<GatewayService>,
    relay_name: String,
    remote: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return service.relay_page(&relay_name, headers);
    };
    let admission = service.admit_websocket(relay_name, remote.ip(), uri, headers);
    let cap = service.websocket_message_cap();
    let service = Arc::clone(service);
    upgrade
        .max_message_size(cap)
        .max_frame_size(cap)
        .read_buffer_size(crate::WEBSOCKET_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            let outgoing = sink.with(|frame| future::ready(Ok::<_, axum::Error>(to_axum(frame))));
            let incoming = stream.map(from_axum);
            service.serve_client(admission, outgoing, incoming).await;
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
