//! The operator API (`/api/…`): registry, mirrors, leases, revokes, client tokens.
//!
//! Contract: every route needs `Authorization: Bearer <admin token>` when the gateway has one
//! (401 `admin token required` otherwise, compared in constant time); relay keys in paths are
//! checked (400); every answer is JSON, every error `{error}` with its status. `hypergate ctl`
//! wraps these routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hypergate_core::gateway::GatewayError;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::RequestOutcome;
use hypergate_core::registry::Removal;
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{
    BoundedString, BoundedVec, Frame, Message, RelayMetadata as WireRelayMetadata,
    RelayRegistration, ResyncComplete,
};
use serde_json::{Value, json};

use super::http::{HttpState, error};
use super::state::relays_in_key_order;

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
pub(super) async fn register_relay(
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
    state.shared.with_relay(relay, |core, now| {
        core.core.handle_operator_registration(&registration, now);
    });
    if let Err(e) = state.shared.persist_registry().await {
        tracing::error!(error = %e, "the registry snapshot could not be written");
    }
    let identifiers = state.shared.read_relay(&relay, |core| {
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
        None | Some(Value::Null) => state.shared.read_relay(&relay, |core| {
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
pub(super) async fn relays(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let linked = |peer: &PeerId| state.shared.links().outbound.contains_key(peer);
    let relays: Vec<Value> = state.shared.read_every(|cores| {
        relays_in_key_order(cores)
            .into_iter()
            .map(|(core, record)| {
                let workers: Vec<Value> = record
                    .workers
                    .keys()
                    .map(|peer| {
                        json!({
                            "peerKey": peer.to_hex(),
                            "health": core.core.health().health_of(peer).as_str(),
                            "linked": linked(peer),
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

pub(super) async fn blind_peer(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Response {
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
pub(super) async fn replicas(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
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
    let facts: Vec<RelayFacts> = state.shared.read_every(|cores| {
        relays_in_key_order(cores)
            .into_iter()
            .map(|(core, record)| {
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
                .find(|core| core.role == crate::mirror::CoreRole::Owner)
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

pub(super) async fn leases(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    axum::Json(json!({ "leases": lease_list(&state, None) })).into_response()
}

/// `POST /api/escrow/leases/query` with `{"relayKeys": [...]}` (absent: all).
pub(super) async fn leases_query(
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
pub(super) async fn lease_request(
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
    let outcome = state.shared.with_relay(relay, |core, now| {
        core.core.handle_operator_lease_request(relay, now)
    });
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
pub(super) async fn revoke(
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
    let ended = state.shared.with_relay(relay, |core, now| {
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
pub(super) async fn remove_relay(
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
        .read_relay(&relay, |core| core.core.registry().relay(&relay).is_some());
    if !known {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    }
    match state.shared.with_relay(relay, |core, now| {
        core.core.handle_relay_removal(relay, mode, now)
    }) {
        Ok(()) => axum::Json(json!({ "removed": relay.to_hex(), "forced": force })).into_response(),
        Err(other) => error(StatusCode::CONFLICT, &other.to_string()),
    }
}

/// `POST /api/relays/:relayKey/resync-complete` `{"workerPeerKey", "resyncedThrough",
/// "gatewayWriterLength"}`: the HTTP form of the link message, for an operator who confirmed
/// a worker's resync by other means. The admin token stands in for the link identity; the
/// core applies the same rules as for the link message (the worker must serve the relay).
pub(super) async fn resync_complete(
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
    let pending = state.shared.with_relay(relay, |core, now| {
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
pub(super) async fn issue_token(
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
    state.shared.read_every(|cores| {
        let mut leases: Vec<_> = cores
            .iter()
            .flat_map(|core| core.core.leases().active_leases(now))
            .collect();
        leases.sort_by_key(|lease| lease.id.relay);
        leases
            .into_iter()
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
