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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hypergate_core::gateway::GatewayError;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::RequestOutcome;
use hypergate_core::registry::Removal;
use hypergate_core::session::RelayInformation;
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedString, BoundedVec, Frame, Message, RelayMetadata as WireRelayMetadata,
    RelayRegistration, ResyncComplete,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::clients::{self, ClientConfig};
use super::metrics::MirrorSnapshot;
use super::state::Shared;
use super::{artifacts, drive};

/// What the handlers share.
pub(crate) struct HttpState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: ClientConfig,
    pub(crate) admin_token: Option<String>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Open WebSocket connections per client address.
    pub(crate) per_ip: Arc<std::sync::Mutex<BTreeMap<IpAddr, usize>>>,
    /// The most WebSocket connections one address may hold.
    pub(crate) max_connections_per_ip: usize,
}

/// One WebSocket connection counted against its address; uncounted when dropped.
struct IpSlot {
    table: Arc<std::sync::Mutex<BTreeMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    /// A slot for `ip`, or `None` when it already holds `max` connections.
    fn take(
        table: &Arc<std::sync::Mutex<BTreeMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<IpSlot> {
        let mut counts = table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The gateway's routes.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/blind-peer", get(blind_peer))
        .route("/api/blind-peer/replicas", get(replicas))
        .route("/api/escrow/leases", get(leases))
        .route("/api/escrow/leases/query", post(leases_query))
        .route(
            "/api/escrow/leases/{relay_key}/request",
            post(lease_request),
        )
        .route("/api/relays", get(relays).post(register_relay))
        .route("/api/relays/{relay_key}", delete(remove_relay))
        .route("/api/relays/{relay_key}/escrow/revoke", post(revoke))
        .route(
            "/api/relays/{relay_key}/resync-complete",
            post(resync_complete),
        )
        .route("/api/relay-tokens/issue", post(issue_token))
        .route(
            "/drive/{identifier}/{file}",
            get(drive::get_drive).put(drive::put_drive).layer(
                axum::extract::DefaultBodyLimit::max(drive::MAX_UPLOAD_BYTES + 1),
            ),
        )
        .route("/post/join/{identifier}", post(artifacts::post_join))
        .route(
            "/callback/finalize-auth/{identifier}",
            post(artifacts::post_finalize_auth),
        )
        .route("/pfp/{file}", get(drive::get_pfp))
        .route("/pfp/{owner}/{file}", get(drive::get_owner_pfp))
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

/// How long a scrape waits for the mirror store (busy storing a batch) before it answers with
/// the mirror gauges as they were.
const MIRROR_SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let shared = &state.shared;
    // The mirror first, without the core lock (never hold both).
    let mirror = match tokio::time::timeout(MIRROR_SCRAPE_WAIT, shared.mirror.lock()).await {
        Ok(store) => Some(MirrorSnapshot::of(&store, shared.unix_now())),
        Err(_) => {
            tracing::debug!("mirror store busy: mirror gauges not refreshed this scrape");
            None
        }
    };
    let now = shared.clock_now();
    let unix_now = shared.unix_now();
    let text = shared.read_core(|core| shared.metrics.render(core, mirror.as_ref(), now, unix_now));
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

/// The relay an operator route names, once the caller is authorised: its key, or the answer
/// (401 without the admin token, 400 for a malformed key).
fn operator_relay(
    state: &HttpState,
    headers: &HeaderMap,
    relay_key: &str,
) -> Result<RelayKey, Box<Response>> {
    if let Some(denied) = denied(state, headers) {
        return Err(Box::new(denied));
    }
    relay_key.parse::<RelayKey>().map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("invalid relay key: {e}"),
        ))
    })
}

/// `POST /api/relays` `{relayKey, identifiers?, metadata?:{name?, description?, avatarUrl?,
/// isPublic?}, requiresAuth?}`: registers a relay, or adds aliases and metadata to one, without
/// a worker (workers register over the peer link). 200 with the relay's record.
async fn register_relay(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let registration = match operator_registration(&state, &body) {
        Ok(registration) => registration,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let relay = registration.relay_key;
    state.shared.with_core(|core, now| {
        core.core.handle_operator_registration(&registration, now);
    });
    if let Err(e) = state.shared.persist_registry().await {
        tracing::error!(error = %e, "the registry snapshot could not be written");
    }
    let identifiers = state.shared.read_core(|core| {
        core.core
            .registry()
            .relay(&relay)
            .map(|record| record.identifiers.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    });
    axum::Json(json!({ "relayKey": relay.to_hex(), "identifiers": identifiers })).into_response()
}

/// `text` as a bounded wire string, or what is wrong with it.
fn bounded<const N: usize>(
    field: &str,
    text: Option<String>,
) -> Result<Option<BoundedString<N>>, String> {
    text.map(|text| BoundedString::new(text).map_err(|e| format!("{field}: {e}")))
        .transpose()
}

/// The registration an operator's `POST /api/relays` body describes, or what is wrong with it.
fn operator_registration(state: &HttpState, body: &Value) -> Result<RelayRegistration, String> {
    let relay = body
        .get("relayKey")
        .and_then(Value::as_str)
        .and_then(|key| key.parse::<RelayKey>().ok())
        .ok_or("relayKey (64 hex) is required")?;
    let text = |value: &Value, field: &str| -> Result<Option<String>, String> {
        match value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("{field} must be a string")),
        }
    };
    let identifiers = match body.get("identifiers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| "identifiers must be strings".to_owned())
                    .and_then(|alias| {
                        BoundedString::new(alias).map_err(|e| format!("identifier {alias}: {e}"))
                    })
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => return Err("identifiers must be an array".into()),
    };
    let metadata = body.get("metadata").cloned().unwrap_or(Value::Null);
    // Without `requiresAuth` the relay keeps what its workers said.
    let requires_auth = match body.get("requiresAuth") {
        Some(Value::Bool(flag)) => *flag,
        None | Some(Value::Null) => state.shared.read_core(|core| {
            core.core
                .registry()
                .relay(&relay)
                .is_some_and(|record| record.requires_auth)
        }),
        Some(_) => return Err("requiresAuth must be a boolean".into()),
    };
    Ok(RelayRegistration {
        relay_key: relay,
        identifiers: BoundedVec::new(identifiers).map_err(|e| format!("identifiers: {e}"))?,
        metadata: WireRelayMetadata {
            name: bounded("metadata.name", text(&metadata, "name")?)?,
            description: bounded("metadata.description", text(&metadata, "description")?)?,
            avatar_url: bounded("metadata.avatarUrl", text(&metadata, "avatarUrl")?)?,
            is_public: metadata.get("isPublic").and_then(Value::as_bool),
            metadata_updated_at: Some(state.shared.unix_now()),
        },
        requires_auth,
        escrow: None,
    })
}

/// `GET /api/relays`: the registry: relays, their workers and health, pending flags.
async fn relays(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let relays: Vec<Value> = state.shared.read_core(|core| {
        core.core
            .registry()
            .relays()
            .map(|record| {
                let workers: Vec<Value> = record
                    .workers
                    .keys()
                    .map(|peer| {
                        json!({
                            "peerKey": peer.to_hex(),
                            "health": core.core.health().health_of(peer).as_str(),
                            "linked": core.outbound.contains_key(peer),
                        })
                    })
                    .collect();
                json!({
                    "relayKey": record.relay_key.to_hex(),
                    "identifiers": record.identifiers,
                    "escrowEnabled": record.escrow_enabled(),
                    "requiresAuth": record.requires_auth,
                    "workers": workers,
                    "pending": record.pending,
                })
            })
            .collect()
    });
    axum::Json(json!({ "relays": relays })).into_response()
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

/// `GET /api/blind-peer/replicas[?limit=N]`: one item per relay with the original's field
/// names (`identifier`, `ownerPeerKey`, `type`, `totalCores`, `announcedCount`, `priorityMax`,
/// `priorityMin`, `lastEventAt`, `opened`, `healthy`, `lagMs`, the `writerLease*` and
/// `gatewayLease*` fields, and the relay's `gatewayPending*` flags), plus `lagBlocks` (the
/// original had lag in milliseconds only), `relayKey` and the `cores` themselves. Opened relays
/// first, then the most recent event first; at most `limit` (default 100).
async fn replicas(State(state): State<Arc<HttpState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let limit = uri
        .query()
        .and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("limit="))
                .and_then(|value| value.parse::<usize>().ok())
        })
        .unwrap_or(100);
    let now = state.shared.unix_now();
    let instant_now = state.shared.clock_now();
    struct RelayFacts {
        relay: RelayKey,
        identifier: String,
        pending: Value,
        lease: Option<(String, u64, u64)>,
    }
    let facts: Vec<RelayFacts> = state.shared.read_core(|core| {
        core.core
            .registry()
            .relays()
            .map(|record| {
                let lease = core
                    .core
                    .leases()
                    .active(&record.relay_key, instant_now)
                    .map(|lease| {
                        let left = lease.expires_at.saturating_duration_since(instant_now);
                        let expires = now
                            .0
                            .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
                        (lease.id.to_string(), lease.id.epoch, expires)
                    });
                RelayFacts {
                    relay: record.relay_key,
                    identifier: record
                        .identifiers
                        .iter()
                        .next()
                        .cloned()
                        .unwrap_or_else(|| record.relay_key.to_hex()),
                    pending: serde_json::to_value(&record.pending).unwrap_or(Value::Null),
                    lease,
                }
            })
            .collect()
    });
    let mirror = state.shared.mirror.lock().await;
    let mut replicas: Vec<(bool, u64, Value)> = facts
        .into_iter()
        .map(|facts| {
            let records: Vec<_> = mirror.cores_of_relay(&facts.relay).collect();
            let cores: Vec<Value> = records
                .iter()
                .map(|core| {
                    json!({
                        "coreKey": core.core_key.to_hex(),
                        "owner": core.owner.to_hex(),
                        "type": core.role.as_str(),
                        "announce": core.announce,
                        "priority": core.priority,
                        "localLength": core.local_length,
                        "remoteLength": core.remote_length,
                        "lagBlocks": core.lag_blocks(),
                        "lagMs": core.lag_ms(now),
                    })
                })
                .collect();
            let opened = records.iter().any(|core| core.local_length > 0);
            let last_event_at = records
                .iter()
                .map(|core| core.last_seen.0)
                .max()
                .unwrap_or(0);
            let owner = records
                .iter()
                .find(|core| core.role == hypergate_adapters::mirror::CoreRole::Owner)
                .or(records.first())
                .map(|core| core.owner.to_hex());
            let (lease_id, lease_epoch, lease_expires) = match &facts.lease {
                Some((id, epoch, expires)) => (json!(id), json!(epoch), json!(expires)),
                None => (Value::Null, Value::Null, Value::Null),
            };
            let mut item = json!({
                "identifier": facts.identifier,
                "relayKey": facts.relay.to_hex(),
                "ownerPeerKey": owner,
                "ownerAlias": Value::Null,
                "type": "relay",
                "totalCores": records.len(),
                "announcedCount": records.iter().filter(|core| core.announce).count(),
                "priorityMax": records.iter().map(|core| core.priority).max(),
                "priorityMin": records.iter().map(|core| core.priority).min(),
                "lastEventAt": last_event_at,
                "lastOpenedAt": Value::Null,
                "opened": opened,
                "healthy": records.iter().all(|core| core.lag_blocks() == 0),
                "lagMs": records.iter().map(|core| core.lag_ms(now)).max().unwrap_or(0),
                "lagBlocks": records.iter().map(|core| core.lag_blocks()).max().unwrap_or(0),
                "writerLeaseActive": facts.lease.is_some(),
                "writerLeaseExpiresAt": lease_expires.clone(),
                "writerLeaseId": lease_id.clone(),
                "gatewayLeaseActive": facts.lease.is_some(),
                "gatewayLeaseVersion": lease_epoch,
                "gatewayLeaseExpiresAt": lease_expires,
                "gatewayLeaseId": lease_id,
                "cores": cores,
            });
            // The relay's pending flags join the item; the lease fields above (from the lease
            // table, as the original's lease monitor reported them) win over the pending
            // record's own `gatewayLease*` (the lease of the latest write).
            if let (Some(fields), Value::Object(pending)) = (item.as_object_mut(), facts.pending) {
                for (key, value) in pending {
                    fields.entry(key).or_insert(value);
                }
            }
            (opened, last_event_at, item)
        })
        .collect();
    replicas.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let replicas: Vec<Value> = replicas
        .into_iter()
        .take(limit)
        .map(|(_, _, item)| item)
        .collect();
    axum::Json(json!({ "replicas": replicas })).into_response()
}

async fn leases(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    axum::Json(json!({ "leases": lease_list(&state, None) })).into_response()
}

/// `POST /api/escrow/leases/query` with `{"relayKeys": [...]}` (absent: all).
async fn leases_query(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let wanted = if body.is_empty() {
        None
    } else {
        let Ok(query) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "body is not JSON");
        };
        match query.get("relayKeys") {
            None | Some(Value::Null) => None,
            Some(Value::Array(keys)) => {
                let parsed: Option<Vec<RelayKey>> = keys
                    .iter()
                    .map(|key| key.as_str().and_then(|key| key.parse().ok()))
                    .collect();
                match parsed {
                    Some(keys) => Some(keys),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "relayKeys must be relay keys (64 hex)",
                        );
                    }
                }
            }
            Some(_) => return error(StatusCode::BAD_REQUEST, "relayKeys must be an array"),
        }
    };
    axum::Json(json!({ "leases": lease_list(&state, wanted.as_deref()) })).into_response()
}

/// `POST /api/escrow/leases/:relayKey/request`: ask the escrow now (its policy decides).
async fn lease_request(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let relay = match operator_relay(&state, &headers, &relay_key) {
        Ok(relay) => relay,
        Err(answer) => return *answer,
    };
    if state.shared.escrow.is_none() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no escrow is configured");
    }
    let outcome = state
        .shared
        .with_core(|core, now| core.core.handle_operator_lease_request(relay, now));
    match outcome {
        Ok(RequestOutcome::Started) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "requested", "relayKey": relay.to_hex() })),
        )
            .into_response(),
        Ok(RequestOutcome::InFlight) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "in-flight", "relayKey": relay.to_hex() })),
        )
            .into_response(),
        Ok(RequestOutcome::Active(lease)) => axum::Json(json!({
            "status": "active",
            "relayKey": relay.to_hex(),
            "leaseId": lease.to_string(),
        }))
        .into_response(),
        Err(GatewayError::RelayNotRegistered(_)) => error(StatusCode::NOT_FOUND, "unknown relay"),
        Err(other) => error(StatusCode::CONFLICT, &other.to_string()),
    }
}

/// `POST /api/relays/:relayKey/escrow/revoke` `{"reason"?}`: revokes every deposit of the
/// relay at the escrow and ends the gateway's lease of it.
async fn revoke(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let relay = match operator_relay(&state, &headers, &relay_key) {
        Ok(relay) => relay,
        Err(answer) => return *answer,
    };
    let reason = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| {
            body.get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "operator-revoke".to_owned());
    let Some(escrow) = &state.shared.escrow else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no escrow is configured");
    };
    let answer = match escrow.revoke_relay(relay, &reason).await {
        Ok(answer) => answer,
        Err(message) => return error(StatusCode::BAD_GATEWAY, &message),
    };
    let ended = state.shared.with_core(|core, now| {
        let current = core.core.leases().current(&relay).map(|lease| lease.id);
        current.map(|lease| {
            let _ = core.core.handle_lease_revoked(lease, &reason, now);
            lease.to_string()
        })
    });
    axum::Json(json!({
        "relayKey": relay.to_hex(),
        "escrow": answer,
        "endedLease": ended,
    }))
    .into_response()
}

/// `DELETE /api/relays/:relayKey[?force=true]`: forgets a relay; with pending writes only
/// when forced (409 otherwise).
async fn remove_relay(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let relay = match operator_relay(&state, &headers, &relay_key) {
        Ok(relay) => relay,
        Err(answer) => return *answer,
    };
    let force = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "force=true" || pair == "force=1")
    });
    let mode = if force {
        Removal::Force
    } else {
        Removal::IfNoPendingWrites
    };
    let known = state
        .shared
        .read_core(|core| core.core.registry().relay(&relay).is_some());
    if !known {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    }
    match state
        .shared
        .with_core(|core, now| core.core.handle_relay_removal(relay, mode, now))
    {
        Ok(()) => axum::Json(json!({ "removed": relay.to_hex(), "forced": force })).into_response(),
        Err(other) => error(StatusCode::CONFLICT, &other.to_string()),
    }
}

/// `POST /api/relays/:relayKey/resync-complete` `{"workerPeerKey", "resyncedThrough",
/// "gatewayWriterLength"}`: the HTTP form of the link message, for an operator who confirmed
/// a worker's resync by other means. The admin token stands in for the link identity; the
/// core applies the same rules as for the link message (the worker must serve the relay).
async fn resync_complete(
    State(state): State<Arc<HttpState>>,
    Path(relay_key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let relay = match operator_relay(&state, &headers, &relay_key) {
        Ok(relay) => relay,
        Err(answer) => return *answer,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let worker = body
        .get("workerPeerKey")
        .and_then(Value::as_str)
        .and_then(|key| key.parse::<PeerId>().ok());
    let through = body.get("resyncedThrough").and_then(Value::as_u64);
    let length = body.get("gatewayWriterLength").and_then(Value::as_u64);
    let (Some(worker), Some(through), Some(length)) = (worker, through, length) else {
        return error(
            StatusCode::BAD_REQUEST,
            "workerPeerKey (hex), resyncedThrough (ms) and gatewayWriterLength are required",
        );
    };
    let done = ResyncComplete {
        relay_key: relay,
        resynced_through: UnixTime(through),
        gateway_writer_length: length,
    };
    let pending = state.shared.with_core(|core, now| {
        core.core
            .handle_frame(worker, Frame::new(0, Message::ResyncComplete(done)), now);
        core.core
            .registry()
            .relay(&relay)
            .map(|record| record.pending.pending)
    });
    match pending {
        None => error(StatusCode::NOT_FOUND, "unknown relay"),
        Some(pending) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "relayKey": relay.to_hex(),
                "status": if pending { "still-pending" } else { "cleared" },
            })),
        )
            .into_response(),
    }
}

/// `POST /api/relay-tokens/issue` `{relayKey, pubkey?, ttlSeconds?}`: a client token for the
/// relay's write routes (default TTL 3600 s, the original's).
async fn issue_token(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let Some(relay) = body
        .get("relayKey")
        .and_then(Value::as_str)
        .and_then(|key| key.parse::<RelayKey>().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "relayKey (64 hex) is required");
    };
    let ttl = body
        .get("ttlSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(3600)
        .clamp(1, 30 * 86_400);
    let expires_at = state.shared.unix_now().0.saturating_add(ttl * 1000);
    let sequence = state.shared.unix_now().0;
    let token = state.shared.tokens.issue(
        relay,
        body.get("pubkey").and_then(Value::as_str),
        expires_at,
        sequence,
    );
    axum::Json(json!({ "token": token, "relayKey": relay.to_hex(), "expiresAt": expires_at }))
        .into_response()
}

fn lease_list(state: &HttpState, relays: Option<&[RelayKey]>) -> Vec<Value> {
    let now = state.shared.clock_now();
    state.shared.read_core(|core| {
        core.core
            .leases()
            .active_leases(now)
            .filter(|lease| relays.is_none_or(|relays| relays.contains(&lease.id.relay)))
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
    })
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
    // The original's `/:a/:b` names a relay by its identifier `a:b`.
    serve(&state, format!("{a}:{b}"), remote, &uri, &headers, upgrade)
}

/// How a client of a relay that requires authentication gets in.
pub(crate) enum Access {
    /// Open relay, or a valid client token.
    Granted,
    /// No token: NIP-42 — the session sends a challenge and serves nothing before a valid
    /// answer naming this URL.
    Nip42 {
        /// The relay URL the client connected to.
        url: String,
    },
    /// Closed right after the upgrade with this code and reason.
    Refused(u16, &'static str),
}

/// How a WebSocket for `relay_name` is admitted: open relays at once; a relay that requires
/// authentication with a valid client token in `?token=`, or by NIP-42 without one; a bad
/// token is closed with 4403 (the original's).
fn ws_access(state: &HttpState, relay_name: &str, uri: &Uri, headers: &HeaderMap) -> Access {
    let found = state.shared.read_core(|core| {
        let relay = core.core.registry().resolve(relay_name)?;
        let record = core.core.registry().relay(&relay)?;
        Some((relay, record.requires_auth))
    });
    let Some((relay, true)) = found else {
        return Access::Granted;
    };
    let token = uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    });
    match token {
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("localhost");
            Access::Nip42 {
                url: format!("ws://{host}{}", uri.path()),
            }
        }
        Some(token) => match state
            .shared
            .tokens
            .verify(token, relay, state.shared.unix_now().0)
        {
            Ok(_) => Access::Granted,
            Err(_) => Access::Refused(4403, "Invalid token"),
        },
    }
}

fn serve(
    state: &Arc<HttpState>,
    relay_name: String,
    remote: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let known = state
        .shared
        .read_core(|core| core.core.registry().resolve(&relay_name));
    if let Ok(upgrade) = upgrade {
        let slot = IpSlot::take(&state.per_ip, remote.ip(), state.max_connections_per_ip);
        let access = match &slot {
            None => Access::Refused(1008, "Too many connections from this address"),
            Some(_) => ws_access(state, &relay_name, uri, headers),
        };
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
            .on_upgrade(move |socket| async move {
                let _slot = slot;
                clients::serve(socket, shared, relay_name, config, access, shutdown).await;
            });
    }
    let Some(relay) = known else {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    };
    if crate::worker::accepts_nostr_json(headers) {
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

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
