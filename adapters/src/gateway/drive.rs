//! The gateway's drive surface: `GET|PUT /drive/:identifier/:file`, `GET /pfp/…`, and the
//! link-only routes workers fetch gateway-written files with at resync.
//!
//! Contract:
//! - `GET /drive/:identifier/:file` (no auth, as in the original): the relay named by
//!   `identifier` (alias or key; unknown: 404 `Relay not registered with gateway`) is asked
//!   peer first — one linked worker, over the peer link, bounded by [`PEER_TIMEOUT`]; a status
//!   ≥ 400, an empty body or no answer falls back to the gateway drive, served as
//!   `application/octet-stream`; neither: 404 `File not found`.
//! - `PUT /drive/:identifier/:file`: a client token (`?token=` or `x-relay-token`; 401
//!   `token-required`, 403 `invalid-token`), a non-empty body (400 `Empty payload`) of at most
//!   [`MAX_UPLOAD_BYTES`] (413). The write needs a lease exactly as an EVENT does: with a
//!   healthy worker or a refused lease the answer is 425 `gateway-escrow-lease-missing`
//!   with the reason. Stored: 202 `{status:'stored', mode:'gateway-drive', relayKey,
//!   driveVersion}` once the drive's logs are synced, and the relay's writes are marked
//!   pending (type `drive`) so the push reaches its workers.
//! - `GET /pfp/:file`, `GET /pfp/:owner/:file`: the gateway's pfp drive (404 `Avatar not
//!   found`).
//! - Over the peer link only, for a worker of the relay: `GET /.hypergate/drive-changes/
//!   <identifier>?since=<version>` → `{version, changes:[{version, path, size, sha256} |
//!   {version, path, deleted:true}]}` and `GET /.hypergate/drive-file/<identifier>/<file>` →
//!   the bytes. No stored file can be named `.hypergate` (sanitisation strips leading dots).

use std::sync::Arc;
use std::time::Duration;

use crate::drive::{DriveEntry, GatewayDrives};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hypergate_core::gateway::WriteVerdict;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::registry::PendingMark;
use hypergate_core::router::SessionKind;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, Header, HttpMethod, HttpRequest, HttpResponse,
    Message, PendingType,
};
use serde_json::json;
use tokio::sync::oneshot;

use super::http::{HttpState, error};
use super::state::{Shared, WriteDecision};

/// Longest wait for a worker's answer to a forwarded read.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest upload (the peer link carries at most 8 MiB per HTTP body).
pub(crate) const MAX_UPLOAD_BYTES: usize = hypergate_core::wire::MAX_HTTP_BODY_BYTES - 1024;
/// Longest wait for the escrow's answer to a lease request.
const LEASE_WAIT: Duration = Duration::from_secs(30);

/// `GET /drive/:identifier/:file`.
pub(crate) async fn get_drive(
    State(state): State<Arc<HttpState>>,
    Path((identifier, file)): Path<(String, String)>,
) -> Response {
    let shared = &state.shared;
    let Some(relay) = shared.resolve(&identifier) else {
        return error(StatusCode::NOT_FOUND, "Relay not registered with gateway");
    };
    if let Some(response) =
        ask_a_worker(shared, relay, &format!("/drive/{identifier}/{file}")).await
    {
        return response;
    }
    let read = shared
        .drives
        .lock()
        .await
        .read_relay_file(&identifier, &file)
        .await;
    match read {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "File not found"),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Forwards a GET to one linked worker of `relay`; its answer when it has the content.
async fn ask_a_worker(shared: &Shared, relay: RelayKey, path: &str) -> Option<Response> {
    let response =
        worker_request(shared, relay, HttpMethod::Get, path, Vec::new(), Vec::new()).await?;
    if response.status >= 400 || response.body.is_empty() {
        return None;
    }
    Some(relay_response(response, "application/octet-stream"))
}

/// Sends an HTTP request to one linked worker of `relay` over the peer link; its answer, or
/// `None` when no worker is linked, the request cannot be encoded or no answer comes within
/// [`PEER_TIMEOUT`].
pub(crate) async fn worker_request(
    shared: &Shared,
    relay: RelayKey,
    method: HttpMethod,
    path: &str,
    headers: Vec<Header>,
    body: Vec<u8>,
) -> Option<HttpResponse> {
    let workers: Vec<_> = shared.read_relay(&relay, |core| {
        core.core.registry().workers_of(&relay).collect()
    });
    let link = {
        let links = shared.links();
        workers
            .iter()
            .find_map(|peer| links.links.get(peer).cloned())
    }?;
    let request = Message::HttpRequest(HttpRequest {
        method,
        path: BoundedString::new(path).ok()?,
        headers: BoundedVec::new(headers).ok()?,
        body: BoundedBytes::new(body).ok()?,
    });
    match crate::rt::timeout(PEER_TIMEOUT, link.request(request)).await {
        Ok(Ok(Message::HttpResponse(response))) => Some(response),
        _ => None,
    }
}

/// A worker's HTTP answer as the gateway's (its status, content type and body).
pub(crate) fn relay_response(response: HttpResponse, default_content_type: &str) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case("content-type"))
        .map_or(default_content_type.to_owned(), |h| {
            h.value.as_str().to_owned()
        });
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        response.body.into_inner(),
    )
        .into_response()
}

/// The client token of a write request: `?token=` or `x-relay-token`.
fn token_of(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let from_query = uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_owned)
    });
    from_query.or_else(|| {
        headers
            .get("x-relay-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    })
}

/// Checks the client token for `relay`: `None` when it is valid, else the answer.
pub(crate) fn check_token(
    state: &HttpState,
    relay: RelayKey,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let Some(token) = token_of(uri, headers) else {
        return Some(error(StatusCode::UNAUTHORIZED, "token-required"));
    };
    let now = state.shared.unix_now().0;
    match state.shared.tokens.verify(&token, relay, now) {
        Ok(_) => None,
        Err(reason) => Some(
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "error": "invalid-token", "reason": reason.to_string() })),
            )
                .into_response(),
        ),
    }
}

/// An append the core allowed and counts as in flight until it is reported: made
/// ([`AppendPermit::appended`]) or, when the permit is dropped unused (a failed write, or the
/// client went away mid-request), failed — so the relay's pending writes can always clear.
pub(crate) struct AppendPermit {
    shared: Arc<Shared>,
    relay: RelayKey,
    epoch: u64,
    settled: bool,
}

impl AppendPermit {
    /// The write was made durably: the relay's writes are marked pending under the lease.
    pub(crate) fn appended(mut self, mark: PendingMark) {
        self.settled = true;
        let (relay, epoch) = (self.relay, self.epoch);
        self.shared.with_relay(relay, |state, now| {
            if let Err(e) = state.core.handle_write_appended(relay, epoch, mark, now) {
                tracing::warn!(error = %e, "pending mark for a gateway write failed");
            }
        });
    }
}

impl Drop for AppendPermit {
    fn drop(&mut self) {
        if !self.settled {
            let relay = self.relay;
            self.shared.with_relay(relay, |state, now| {
                state.core.handle_write_failed(relay, now)
            });
        }
    }
}

/// Decides whether the gateway may write for `relay` now: a permit for the append, or the
/// 425 answer.
pub(crate) async fn lease_for_write(
    shared: &Arc<Shared>,
    relay: RelayKey,
) -> Result<AppendPermit, Response> {
    let permit = |epoch| AppendPermit {
        shared: Arc::clone(shared),
        relay,
        epoch,
        settled: false,
    };
    let missing = |reason: String| {
        (
            StatusCode::TOO_EARLY,
            axum::Json(json!({ "error": "gateway-escrow-lease-missing", "reason": reason })),
        )
            .into_response()
    };
    let decision = shared.with_relay(relay, |state, now| {
        let session = state
            .core
            .open_session(&relay.to_hex(), SessionKind::Request, now)
            .map_err(|e| e.to_string())?;
        let write = Shared::next_write_id(state);
        let verdict = state.core.handle_client_write(session, write, now);
        let _ = state.core.close_session(session, now);
        match verdict.map_err(|e| e.to_string())? {
            WriteVerdict::Append { epoch } => Ok(Ok(epoch)),
            WriteVerdict::Wait => {
                let (tx, rx) = oneshot::channel();
                state.waiting_writes.insert(write, tx);
                Ok(Err(rx))
            }
            WriteVerdict::ReadOnly { reason } => Err(reason),
            WriteVerdict::Forward(_) | WriteVerdict::Hold => {
                Err("a worker of this relay is online: write to it".to_owned())
            }
        }
    });
    match decision {
        Ok(Ok(epoch)) => Ok(permit(epoch)),
        Ok(Err(waiting)) => match crate::rt::timeout(LEASE_WAIT, waiting).await {
            Ok(Ok(WriteDecision::Append(epoch))) => Ok(permit(epoch)),
            Ok(Ok(WriteDecision::ReadOnly(reason))) => Err(missing(reason)),
            Ok(Err(_)) | Err(_) => Err(missing("the escrow did not answer in time".into())),
        },
        Err(reason) => Err(missing(reason)),
    }
}

/// `PUT /drive/:identifier/:file`.
pub(crate) async fn put_drive(
    State(state): State<Arc<HttpState>>,
    Path((identifier, file)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &state.shared;
    let Some(relay) = shared.resolve(&identifier) else {
        return error(StatusCode::NOT_FOUND, "Relay not registered with gateway");
    };
    if let Some(refusal) = check_token(&state, relay, &uri, &headers) {
        return refusal;
    }
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "Empty payload");
    }
    if body.len() > MAX_UPLOAD_BYTES {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }
    if let Err(e) = GatewayDrives::relay_file_path(&identifier, &file) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let permit = match lease_for_write(shared, relay).await {
        Ok(permit) => permit,
        Err(answer) => return answer,
    };
    let written = shared
        .drives
        .lock()
        .await
        .write_relay_file(&identifier, &file, &body, shared.unix_now())
        .await;
    match written {
        Ok(receipt) => {
            let mark = PendingMark {
                kind: PendingType::Drive,
                reason: Some("drive-upload".into()),
                drive_identifier: Some(identifier.clone()),
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
                    "status": "stored",
                    "mode": "gateway-drive",
                    "relayKey": relay.to_hex(),
                    "driveVersion": receipt.version,
                    "path": receipt.path,
                })),
            )
                .into_response()
        }
        Err(e) => {
            drop(permit); // reported failed
            tracing::warn!(error = %e, "gateway drive write failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "gateway-drive-unavailable")
        }
    }
}

/// The answer to a leased drive write or artifact that is stored but whose pending mark could
/// not be written to the registry snapshot: not `202`, because a crash now would leave the
/// write unmarked and never resynced, so the client is told to retry (as a leased `EVENT`
/// is answered `OK false "error: …"`). The stored file is harmless: a retry stores a new
/// version, and a later snapshot still marks the relay pending.
pub(crate) fn unrecorded_write(cause: &std::io::Error) -> Response {
    tracing::error!(error = %cause, "the registry snapshot could not be written");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "gateway-pending-write-not-recorded",
    )
}

/// `GET /pfp/:file`.
pub(crate) async fn get_pfp(
    State(state): State<Arc<HttpState>>,
    Path(file): Path<String>,
) -> Response {
    pfp(&state, None, &file).await
}

/// `GET /pfp/:owner/:file`.
pub(crate) async fn get_owner_pfp(
    State(state): State<Arc<HttpState>>,
    Path((owner, file)): Path<(String, String)>,
) -> Response {
    pfp(&state, Some(&owner), &file).await
}

async fn pfp(state: &HttpState, owner: Option<&str>, file: &str) -> Response {
    let read = state
        .shared
        .drives
        .lock()
        .await
        .read_pfp_file(owner, file)
        .await;
    match read {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) | Err(_) => error(StatusCode::NOT_FOUND, "Avatar not found"),
    }
}

/// Answers a worker's link-only drive request (see the module docs).
pub(crate) async fn answer_link_request(
    shared: &Shared,
    peer: PeerId,
    request: &HttpRequest,
) -> HttpResponse {
    let path = request.path.as_str();
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let reply = |status: u16, body: Vec<u8>| HttpResponse {
        status,
        headers: BoundedVec::default(),
        body: BoundedBytes::new(body).unwrap_or_default(),
    };
    let json_reply =
        |status: u16, value: serde_json::Value| reply(status, value.to_string().into_bytes());
    if request.method != HttpMethod::Get {
        return json_reply(405, json!({ "error": "method not allowed" }));
    }
    let (identifier, file) = if let Some(rest) = route.strip_prefix("/.hypergate/drive-changes/") {
        (rest, None)
    } else if let Some(rest) = route.strip_prefix("/.hypergate/drive-file/") {
        match rest.split_once('/') {
            Some((identifier, file)) => (identifier, Some(file)),
            None => return json_reply(400, json!({ "error": "no file named" })),
        }
    } else {
        return json_reply(404, json!({ "error": "no such route" }));
    };
    // Only a worker serving the relay may read what the gateway wrote for it.
    let allowed = shared.resolve(identifier).is_some_and(|relay| {
        shared.read_relay(&relay, |core| {
            core.core.registry().workers_of(&relay).any(|w| w == peer)
        })
    });
    if !allowed {
        return json_reply(403, json!({ "error": "not a worker of this relay" }));
    }
    let mut drives = shared.drives.lock().await;
    match file {
        Some(file) => match drives.read_relay_file(identifier, file).await {
            Ok(Some(bytes)) => reply(200, bytes),
            Ok(None) => json_reply(404, json!({ "error": "File not found" })),
            Err(e) => json_reply(400, json!({ "error": e.to_string() })),
        },
        None => {
            let since = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("since="))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0);
            let drive = match drives.existing_relay_drive(identifier).await {
                Ok(Some(drive)) => drive,
                Ok(None) => return json_reply(200, json!({ "version": 0, "changes": [] })),
                Err(e) => return json_reply(400, json!({ "error": e.to_string() })),
            };
            let version = drive.version();
            match drive.entries_since(since).await {
                Ok(changes) => {
                    let changes: Vec<serde_json::Value> = changes
                        .iter()
                        .map(|change| match &change.entry {
                            DriveEntry::Put(file) => json!({
                                "version": change.version,
                                "path": file.path,
                                "size": file.size,
                                "sha256": hex::encode(file.sha256),
                            }),
                            other => json!({
                                "version": change.version,
                                "path": other.path(),
                                "deleted": true,
                            }),
                        })
                        .collect();
                    json_reply(200, json!({ "version": version, "changes": changes }))
                }
                Err(e) => json_reply(500, json!({ "error": e.to_string() })),
            }
        }
    }
}
