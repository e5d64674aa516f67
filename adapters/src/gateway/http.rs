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
//!   are the operator API ([`operator`](super::operator)); the drive, pfp and artifact routes
//!   are in [`drive`](super::drive) and [`artifacts`](super::artifacts).
//! - Every error is a status and JSON `{error}`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hypergate_core::session::RelayInformation;
use serde_json::json;
use tokio::sync::watch;

use super::clients::ClientConfig;
use super::metrics::MirrorSnapshot;
use super::state::Shared;
use super::{artifacts, drive, operator};

/// What the HTTP handlers share (the state of the service's axum routes).
pub struct HttpState {
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
pub(crate) struct IpSlot {
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

/// The gateway's routes, but for the relays' own URLs (the driver adds those, with or
/// without its WebSocket upgrade).
pub(crate) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/blind-peer", get(operator::blind_peer))
        .route("/api/blind-peer/replicas", get(operator::replicas))
        .route("/api/escrow/leases", get(operator::leases))
        .route("/api/escrow/leases/query", post(operator::leases_query))
        .route(
            "/api/escrow/leases/{relay_key}/request",
            post(operator::lease_request),
        )
        .route(
            "/api/relays",
            get(operator::relays).post(operator::register_relay),
        )
        .route("/api/relays/{relay_key}", delete(operator::remove_relay))
        .route(
            "/api/relays/{relay_key}/escrow/revoke",
            post(operator::revoke),
        )
        .route(
            "/api/relays/{relay_key}/resync-complete",
            post(operator::resync_complete),
        )
        .route("/api/relay-tokens/issue", post(operator::issue_token))
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
}

/// The relay routes without WebSocket upgrades (a driver that upgrades before routing):
/// `GET /relay/{relayKey}` and `GET /{a}/{b}` answer [`relay_page`].
pub(crate) fn relay_page_routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route(
            "/relay/{relay_key}",
            get(
                |State(state): State<Arc<HttpState>>,
                 Path(relay_key): Path<String>,
                 headers: HeaderMap| async move {
                    relay_page(&state, &relay_key, &headers)
                },
            ),
        )
        .route(
            "/{a}/{b}",
            get(
                |State(state): State<Arc<HttpState>>,
                 Path((a, b)): Path<(String, String)>,
                 headers: HeaderMap| async move {
                    relay_page(&state, &format!("{a}:{b}"), &headers)
                },
            ),
        )
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let relays = state.shared.read_every(|cores| {
        cores
            .iter()
            .map(|core| core.core.registry().len())
            .sum::<usize>()
    });
    let peers = state.shared.links().outbound.len();
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
    // The mirror first, without the core's locks (never hold both).
    let mirror = match crate::rt::timeout(MIRROR_SCRAPE_WAIT, shared.mirror.lock()).await {
        Ok(store) => Some(MirrorSnapshot::of(&store, shared.unix_now())),
        Err(_) => {
            tracing::debug!("mirror store busy: mirror gauges not refreshed this scrape");
            None
        }
    };
    let now = shared.clock_now();
    let unix_now = shared.unix_now();
    let text = shared.read_every(|cores| {
        shared
            .metrics
            .render(cores, &shared.links(), mirror.as_ref(), now, unix_now)
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
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
    let found = state.shared.resolve(relay_name).and_then(|relay| {
        state.shared.read_relay(&relay, |core| {
            let record = core.core.registry().relay(&relay)?;
            Some((relay, record.requires_auth))
        })
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

/// Admits a WebSocket of `relay_name` from `remote`: its slot among the address's
/// connections (held for the connection's life) and how it gets in.
pub(crate) fn admit_websocket(
    state: &HttpState,
    relay_name: &str,
    remote: IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Access, Option<IpSlot>) {
    let slot = IpSlot::take(&state.per_ip, remote, state.max_connections_per_ip);
    let access = match &slot {
        None => Access::Refused(1008, "Too many connections from this address"),
        Some(_) => ws_access(state, relay_name, uri, headers),
    };
    (access, slot)
}

/// The largest WebSocket frame or message a client may send: twice the NIP-01 frame limit
/// (a frame over the limit gets a NIP-01 answer, not a dropped connection).
pub(crate) fn websocket_message_cap(state: &HttpState) -> usize {
    state
        .client
        .session
        .limits
        .max_frame_bytes
        .saturating_mul(2)
}

/// What a plain GET of a relay's URL answers: its NIP-11 document with `Accept:
/// application/nostr+json`, a short text otherwise, 404 `{error}` for an unknown relay.
pub(crate) fn relay_page(state: &HttpState, relay_name: &str, headers: &HeaderMap) -> Response {
    let known = state.shared.resolve(relay_name);
    let Some(relay) = known else {
        return error(StatusCode::NOT_FOUND, "unknown relay");
    };
    if accepts_nostr_json(headers) {
        let information = RelayInformation::new(
            format!("hypergate relay {}", relay.short()),
            format!("Nostr relay {relay}, served through a hypergate gateway"),
            &state.client.session,
            crate::index::QueryLimits::default().default_limit,
            crate::index::QueryLimits::default().max_limit,
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

/// Whether the request asks for the NIP-11 document (`Accept: application/nostr+json`).
pub fn accepts_nostr_json(headers: &HeaderMap) -> bool {
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

/// The relay a WebSocket URL names: `/relay/{key}`, or the original's `/{a}/{b}` (the
/// identifier `a:b`), as the route table and the relay routes read them; `None` for a URL a route
/// of its own takes (first segments `api`, `pfp`, `drive`, …, as axum prefers static segments
/// over `{a}`). For a driver that sees upgrades before routing.
pub fn websocket_relay_name(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["relay", key] if !key.is_empty() => Some(percent_decoded(key)),
        // Routes of their own take these first segments (as axum prefers static segments).
        [
            "api" | "pfp" | "relay" | "drive" | "post" | "callback" | "health" | "metrics",
            _,
        ] => None,
        [a, b] if !a.is_empty() && !b.is_empty() => {
            Some(format!("{}:{}", percent_decoded(a), percent_decoded(b)))
        }
        _ => None,
    }
}

/// A path segment with its `%xx` escapes decoded (axum's `Path` does the same).
fn percent_decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_name_relays_and_other_urls_do_not() {
        assert_eq!(websocket_relay_name("/relay/abc").as_deref(), Some("abc"));
        assert_eq!(
            websocket_relay_name("/npub1x/my-relay").as_deref(),
            Some("npub1x:my-relay")
        );
        assert_eq!(websocket_relay_name("/a%3Ab/c").as_deref(), Some("a:b:c"));
        assert_eq!(websocket_relay_name("/api/relays"), None);
        assert_eq!(websocket_relay_name("/pfp/file.png"), None);
        assert_eq!(websocket_relay_name("/health"), None);
        assert_eq!(websocket_relay_name("/drive/a/b"), None);
        assert_eq!(websocket_relay_name("/relay/"), None);
        assert_eq!(websocket_relay_name("/"), None);
    }
}
