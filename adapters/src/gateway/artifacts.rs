//! `POST /post/join/:identifier` and `POST /callback/finalize-auth/:identifier`: forwarded to a
//! worker while one answers; otherwise kept as an HTTP artifact for the worker to replay.
//!
//! Contract:
//! - A client token is required (401 `token-required`, 403 `invalid-token`) — the original
//!   left these routes open. The body must be JSON (400).
//! - Peer first: the request goes to one linked worker of the relay over the peer link
//!   (`HttpRequest`, JSON body, only `content-type` forwarded), bounded by
//!   [`PEER_TIMEOUT`](super::drive::PEER_TIMEOUT); a worker's answer below 500 is relayed as is.
//! - Otherwise the request is stored, under a lease exactly as a write is (425
//!   `gateway-escrow-lease-missing` without one), as a JSON artifact in the relay's gateway
//!   drive: `{category, relayKey, driveIdentifier, receivedAt (ISO 8601), receivedAtMs, headers,
//!   query, body}` with `authorization`, `cookie`, `set-cookie`, `x-relay-token`, `x-signature`
//!   and hop-by-hop headers removed, at `/<identifier>/<category>-<ms>-<rand36>.json`
//!   (`category` is `join` or `callback`; the original nested them in folders, flat names keep
//!   them fetchable as ordinary drive files). The relay's writes are marked pending (type
//!   `http-artifact`) and the answer is 202 `{status:'queued', mode:'gateway-drive',
//!   artifactPath}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hypergate_core::ids::RelayKey;
use hypergate_core::registry::PendingMark;
use hypergate_core::wire::{BoundedString, Header, HttpMethod, PendingType};
use rand_core::{OsRng, TryRngCore};
use serde_json::{Map, Value, json};

use super::drive::{
    check_token, lease_for_write, relay_response, unrecorded_write, worker_request,
};
use super::http::{HttpState, error};

/// Headers never stored in an artifact.
const DROPPED_HEADERS: [&str; 13] = [
    "authorization",
    "cookie",
    "set-cookie",
    "x-relay-token",
    "x-signature",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `POST /post/join/:identifier`.
pub(crate) async fn post_join(
    State(state): State<Arc<HttpState>>,
    Path(identifier): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &state,
        "join",
        "/post/join",
        &identifier,
        &uri,
        &headers,
        &body,
    )
    .await
}

/// `POST /callback/finalize-auth/:identifier`.
pub(crate) async fn post_finalize_auth(
    State(state): State<Arc<HttpState>>,
    Path(identifier): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &state,
        "callback",
        "/callback/finalize-auth",
        &identifier,
        &uri,
        &headers,
        &body,
    )
    .await
}

async fn handle(
    state: &Arc<HttpState>,
    category: &'static str,
    route: &str,
    identifier: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let shared = &state.shared;
    let Some(relay) = shared.resolve(identifier) else {
        return error(StatusCode::NOT_FOUND, "Relay not registered with gateway");
    };
    if let Some(refusal) = check_token(state, relay, uri, headers) {
        return refusal;
    }
    let Ok(json_body) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON");
    };
    if let Some(answer) = forward(state, relay, &format!("{route}/{identifier}"), body).await {
        return answer;
    }
    let permit = match lease_for_write(shared, relay).await {
        Ok(permit) => permit,
        Err(answer) => return answer,
    };
    let received = shared.unix_now().0;
    let artifact = json!({
        "category": category,
        "relayKey": relay.to_hex(),
        "driveIdentifier": identifier,
        "receivedAt": iso8601(received),
        "receivedAtMs": received,
        "headers": kept_headers(headers),
        "query": query_map(uri),
        "body": json_body,
    });
    let name = format!("{category}-{received}-{}.json", random36());
    let written = shared
        .drives
        .lock()
        .await
        .write_relay_file(
            identifier,
            &name,
            artifact.to_string().as_bytes(),
            shared.unix_now(),
        )
        .await;
    match written {
        Ok(receipt) => {
            let mark = PendingMark {
                kind: PendingType::HttpArtifact,
                reason: Some(format!("http-{category}")),
                drive_identifier: Some(identifier.to_owned()),
                drive_version: Some(receipt.version),
                lease_version: None,
            };
            permit.appended(mark);
            if let Err(e) = shared.persist_registry().await {
                return unrecorded_write(&e);
            }
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "status": "queued",
                    "mode": "gateway-drive",
                    "artifactPath": receipt.path,
                })),
            )
                .into_response()
        }
        Err(e) => {
            drop(permit); // reported failed
            tracing::warn!(error = %e, "storing an HTTP artifact failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "gateway-drive-unavailable")
        }
    }
}

/// The worker's answer to the forwarded request, when one below 500 comes in time.
async fn forward(state: &HttpState, relay: RelayKey, path: &str, body: &Bytes) -> Option<Response> {
    let content_type = Header {
        name: BoundedString::new("content-type").ok()?,
        value: BoundedString::new("application/json").ok()?,
    };
    let response = worker_request(
        &state.shared,
        relay,
        HttpMethod::Post,
        path,
        vec![content_type],
        body.to_vec(),
    )
    .await?;
    (response.status < 500).then(|| relay_response(response, "application/json"))
}

fn kept_headers(headers: &HeaderMap) -> Value {
    let mut kept = Map::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            kept.insert(name, Value::String(value.to_owned()));
        }
    }
    Value::Object(kept)
}

fn query_map(uri: &Uri) -> Value {
    let mut query = Map::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // The token never goes into an artifact.
        if !key.is_empty() && key != "token" {
            query.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    Value::Object(query)
}

/// Eight base-36 characters from the OS RNG (the original's `Math.random().toString(36)`).
fn random36() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 8];
    // The OS RNG does not fail on Linux; a zeroed suffix would still be a valid name.
    let _ = OsRng.try_fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(DIGITS[usize::from(*byte) % 36]))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of Unix milliseconds (proleptic Gregorian, UTC).
pub(crate) fn iso8601(ms: u64) -> String {
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn secrets_never_reach_an_artifact() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer x".parse().unwrap());
        headers.insert("x-relay-token", "t".parse().unwrap());
        headers.insert("cookie", "c".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let kept = kept_headers(&headers);
        assert_eq!(kept, json!({"content-type": "application/json"}));
        let uri: Uri = "/post/join/x?token=secret&a=1".parse().unwrap();
        assert_eq!(query_map(&uri), json!({"a": "1"}));
    }
}
