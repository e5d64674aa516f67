//! The gateway's HTTP surface: NIP-01 WebSocket and NIP-11 per relay, health, metrics and
//! the operator API.
//!
//! Contract:
//! - `GET /relay/{relayKey}` and the original's `GET /{a}/{b}` form (the relay named by an
//!   alias `a:b`, or `a/b`): a WebSocket upgrade gets a client session; `Accept:
//!   application/nostr+json` gets the NIP-11 document; anything else a short text.
//!   An unknown relay is closed with code 4404 after the upgrade (what the original did), or
//!   answered 404 `{error}` without one.
//! - `GET /health` is open; `GET /metrics` is open (Prometheus scrapes it); the `/api/` routes
//!   need `Authorization: Bearer <admin token>` when a token is configured, and answer
//!   401 `{error}` otherwise.
//! - Every error is a status and JSON `{error}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hypergate_core::ids::RelayKey;
use hypergate_core::session::RelayInformation;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::clients::{self, ClientConfig};
use super::state::Shared;

/// What the handlers share.
pub(crate) struct HttpState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: ClientConfig,
    pub(crate) admin_token: Option<String>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The gateway's routes.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/blind-peer", get(blind_peer))
        .route("/api/blind-peer/replicas", get(replicas))
        .route("/api/escrow/leases", get(leases))
        .route("/relay/{relay_key}", get(relay))
        .route("/{a}/{b}", get(relay_alias))
        .with_state(state)
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let (relays, peers) = state
        .shared
        .read_core(|core| (core.core.registry().relays().count(), core.outbound.len()));
    axum::Json(json!({
        "status": "ok",
        "peerId": state.shared.peer_id().to_hex(),
        "relays": relays,
        "peersConnected": peers,
        "escrow": state.shared.escrow.is_some(),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let now = state.shared.clock_now();
    let text = state
        .shared
        .read_core(|core| state.shared.metrics.render(core, now));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `None` when the request may proceed, else the 401 answer.
fn denied(state: &HttpState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.admin_token else {
        return None;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    // Constant-time comparison: the token is a secret.
    let matches = given.is_some_and(|given| {
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    (!matches).then(|| error(StatusCode::UNAUTHORIZED, "admin token required"))
}

async fn blind_peer(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let mirror = state.shared.mirror.lock().await;
    let counters = mirror.counters();
    axum::Json(json!({
        "enabled": true,
        "cores": mirror.core_count(),
        "bytesAllocated": mirror.total_bytes(),
        "verifiedBlocks": counters.verified_blocks,
        "rejectedBlocks": counters.rejected_blocks,
        "quarantined": mirror.quarantined().len(),
    }))
    .into_response()
}

async fn replicas(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let now = state.shared.unix_now();
    let pending: Vec<(RelayKey, bool)> = state.shared.read_core(|core| {
        core.core
            .registry()
            .relays()
            .map(|record| (record.relay_key, record.pending.pending))
            .collect()
    });
    let mirror = state.shared.mirror.lock().await;
    let replicas: Vec<Value> = pending
        .into_iter()
        .map(|(relay, pending)| {
            let cores: Vec<Value> = mirror
                .cores_of_relay(&relay)
                .map(|core| {
                    json!({
                        "coreKey": core.core_key.to_hex(),
                        "owner": core.owner.to_hex(),
                        "type": core.role.as_str(),
                        "localLength": core.local_length,
                        "remoteLength": core.remote_length,
                        "lagBlocks": core.lag_blocks(),
                        "lagMs": core.lag_ms(now),
                    })
                })
                .collect();
            json!({
                "relayKey": relay.to_hex(),
                "gatewayPendingWrites": pending,
                "cores": cores,
            })
        })
        .collect();
    axum::Json(json!({ "replicas": replicas })).into_response()
}

async fn leases(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let now = state.shared.clock_now();
    let leases: Vec<Value> = state.shared.read_core(|core| {
        core.core
            .leases()
            .active_leases(now)
            .map(|lease| {
                json!({
                    "leaseId": lease.id.to_string(),
                    "relayKey": lease.id.relay.to_hex(),
                    "escrowId": lease.escrow_id,
                    "state": lease.state.as_str(),
                    "expiresInMs": u64::try_from(
                        lease.expires_at.saturating_duration_since(now).as_millis()
                    ).unwrap_or(u64::MAX),
                })
            })
            .collect()
    });
    axum::Json(json!({ "leases": leases })).into_response()
}

async fn relay(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(&state, relay_key, &headers, upgrade)
}

async fn relay_alias(
    State(state): State<Arc<HttpState>>,
    Path((a, b)): Path<(String, String)>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The original's `/:a/:b` names a relay by its identifier `a:b`.
    serve(&state, format!("{a}:{b}"), &headers, upgrade)
}

fn serve(
    state: &Arc<HttpState>,
    relay_name: String,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let known = state
        .shared
        .read_core(|core| core.core.registry().resolve(&relay_name));
    if let Ok(upgrade) = upgrade {
        let cap = state
            .client
            .session
            .limits
            .max_frame_bytes
            .saturating_mul(2);
        let shared = Arc::clone(&state.shared);
        let config = state.client;
        let shutdown = state.shutdown.clone();
        return upgrade
            .max_message_size(cap)
            .max_frame_size(cap)
            .on_upgrade(move |socket| {
                clients::serve(socket, shared, relay_name, config, shutdown)
            });
    }
    let Some(relay) = known else {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    };
    if accepts_nostr_json(headers) {
        let information = RelayInformation::new(
            format!("hypergate relay {}", relay.short()),
            format!("Nostr relay {relay}, served through a hypergate gateway"),
            &state.client.session,
            hypergate_adapters::index::QueryLimits::default().default_limit,
            hypergate_adapters::index::QueryLimits::default().max_limit,
            true,
        );
        return (
            [
                (header::CONTENT_TYPE, "application/nostr+json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
                (header::ACCESS_CONTROL_ALLOW_METHODS, "GET"),
            ],
            information.to_json(),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "hypergate gateway: Nostr relay {relay}. Connect with a Nostr client over WebSocket; \
             send `Accept: application/nostr+json` for its NIP-11 document.\n"
        ),
    )
        .into_response()
}

fn accepts_nostr_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/nostr+json"))
        })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
