//! The worker's local HTTP surface: NIP-01 over WebSocket, the NIP-11 document and the status.
//!
//! Routes: `/relay/<relayKey>` for every hosted relay, `/` when the worker hosts exactly
//! one, `GET /status` (the [`WorkerStatus`] as JSON) and `GET /drive/<identifier>/<file>`
//! (the relay's drive, as the gateway reads it over the link: see
//! [`crate::worker_agent::drive`]; other methods 405). A WebSocket upgrade gets a NIP-01 session; `Accept: application/nostr+json` gets the
//! relay's NIP-11 document (with the CORS headers NIP-11 asks for); any other GET gets a short
//! text saying what the URL is. An unknown or malformed relay key is a 404 / 400 with a JSON
//! `{error}` body. Frames longer than twice the session's frame limit are refused by the
//! WebSocket layer itself (the connection closes); shorter ones over the limit get the
//! session's NOTICE.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hypergate_adapters::relay::RelayHost;
use hypergate_core::ids::RelayKey;
use tokio::sync::{Mutex, watch};

use super::connection::{self, ConnectionConfig};
use super::{WorkerStore, accepts_nostr_json};
use crate::worker_agent::{RelayDrives, WorkerAgentHandle, WorkerStatus};

/// One relay as the server sees it.
pub(super) struct ServedRelay {
    /// The relay's host, shared by its connections.
    pub(super) host: Arc<Mutex<RelayHost<WorkerStore>>>,
    /// Its NIP-11 document, as JSON.
    pub(super) information: String,
}

/// What every request handler shares.
pub(super) struct ServerState {
    /// Hosted relays by key.
    pub(super) relays: BTreeMap<RelayKey, ServedRelay>,
    /// Bounds of each connection.
    pub(super) connection: ConnectionConfig,
    /// Turns `true` when the worker shuts down.
    pub(super) shutdown: watch::Receiver<bool>,
    /// Where `/status` comes from.
    pub(super) status: StatusSource,
    /// The relays' drives (the agent's when there is one: it writes them).
    pub(super) drives: Arc<RelayDrives>,
}

/// Where `/status` comes from.
pub(super) enum StatusSource {
    /// The agent's live status.
    Agent(WorkerAgentHandle),
    /// No gateway: a fixed list of the relays.
    Standalone(WorkerStatus),
}

/// The router.
pub(super) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/relay/{relay_key}", get(relay))
        .route("/status", get(status))
        .route("/drive/{identifier}/{file}", get(drive))
        .with_state(state)
}

async fn root(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let mut keys = state.relays.keys();
    match (keys.next(), keys.next()) {
        (Some(only), None) => {
            let only = *only;
            serve(&state, only, &headers, upgrade)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "this worker hosts several relays: connect to /relay/<relayKey>",
        ),
    }
}

async fn status(State(state): State<Arc<ServerState>>) -> Response {
    let status = match &state.status {
        StatusSource::Agent(agent) => agent.status(),
        StatusSource::Standalone(status) => status.clone(),
    };
    axum::Json(status).into_response()
}

async fn drive(
    State(state): State<Arc<ServerState>>,
    Path((identifier, file)): Path<(String, String)>,
) -> Response {
    let hosted: Vec<RelayKey> = state.relays.keys().copied().collect();
    let answer = state.drives.answer_get(&hosted, &identifier, &file).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response()
}

async fn relay(
    State(state): State<Arc<ServerState>>,
    Path(relay_key): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match relay_key.parse::<RelayKey>() {
        Ok(key) => serve(&state, key, &headers, upgrade),
        Err(parse) => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid relay key: {parse}"),
        ),
    }
}

fn serve(
    state: &Arc<ServerState>,
    key: RelayKey,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(relay) = state.relays.get(&key) else {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    };
    if let Ok(upgrade) = upgrade {
        let cap = state
            .connection
            .session
            .limits
            .max_frame_bytes
            .saturating_mul(2);
        let host = Arc::clone(&relay.host);
        let config = state.connection;
        let shutdown = state.shutdown.clone();
        return upgrade
            .max_message_size(cap)
            .max_frame_size(cap)
            .read_buffer_size(crate::WEBSOCKET_READ_BUFFER_BYTES)
            .on_upgrade(move |socket| connection::serve(socket, host, config, shutdown));
    }
    if accepts_nostr_json(headers) {
        return (
            [
                (header::CONTENT_TYPE, "application/nostr+json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
                (header::ACCESS_CONTROL_ALLOW_METHODS, "GET"),
            ],
            relay.information.clone(),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "hypergate worker: Nostr relay {key}. Connect with a Nostr client over WebSocket; \
             send `Accept: application/nostr+json` for its NIP-11 document.\n"
        ),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
