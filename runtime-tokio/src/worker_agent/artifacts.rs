//! Replaying the HTTP artifacts the gateway stored while the worker was away (the
//! `ReplayHttpArtifacts` resync step).
//!
//! Contract:
//! - The artifacts are JSON files in the relay's gateway drive (`<identifier>/join-*.json`,
//!   `callback-*.json`; see `gateway/artifacts.rs`). The step first imports the gateway drives
//!   (the same verified import as `FetchDriveFiles`), then handles every artifact file of the
//!   identifier's folder it has not handled before, in name order (names start with the
//!   gateway's receive time).
//! - A **join** carries `{event}` of kind 9021 (the original worker's `/post/join`): the event
//!   is verified (id and signature) and appended to the worker's own writer log, as if the
//!   client had posted it here. A join whose event is missing, of another kind or does not
//!   verify is recorded as refused with the reason and never appended.
//! - A **callback** (`/callback/finalize-auth`) has no handler on this worker (it keeps no
//!   auth sessions): it is recorded as received and logged, and the file stays in the drive.
//! - What was handled is recorded in `<relay dir>/artifacts-replayed.json` (written atomically
//!   after the appends), so a retry or a later push never replays an artifact twice. A step
//!   that fails before the record is written is retried; an event appended again then is the
//!   same event, and the relay view (a set) does not change.

use std::collections::BTreeMap;
use std::path::Path;

use hypergate_adapters::drive::GatewayDrives;
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::{Event, SignatureVerifier};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::drive::import::import_gateway_drives;
use hypergate_adapters::peer_link::PeerLink;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, Header, HttpRequest, HttpResponse,
};

/// The record of handled artifacts, next to the relay's drive.
pub const REPLAY_RECORD_FILE: &str = "artifacts-replayed.json";

/// The kind of a NIP-29-style join request, which `/post/join` carries.
const JOIN_KIND: u16 = 9021;

/// What became of one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handled {
    /// `joined` (event appended), `refused` (with why), `received` (no handler here).
    pub outcome: String,
    /// Why, for refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Imports the gateway drives, then replays the artifacts of `identifier`'s folder not handled
/// yet. Returns how many were handled now.
pub(crate) async fn replay(
    link: &PeerLink,
    shared: &Shared,
    relay: RelayKey,
    drive_identifier: Option<&str>,
) -> Result<usize, String> {
    import_gateway_drives(link, &shared.drives, relay, drive_identifier, None)
        .await
        .map_err(|e| e.to_string())?;
    let identifier = drive_identifier.map_or_else(|| relay.to_hex(), str::to_owned);
    let (folder, _) =
        GatewayDrives::relay_file_path(&identifier, "x").map_err(|e| e.to_string())?;
    let prefix = format!("/{folder}/");
    let record_path = shared.drives.relay_dir(&relay).join(REPLAY_RECORD_FILE);
    let mut record = load(&record_path);
    let names: Vec<String> = shared
        .drives
        .with_drive(relay, async |drive| {
            drive.list(&prefix).map(|files| {
                files
                    .into_iter()
                    .map(|stat| stat.entry.path)
                    .filter(|path| is_artifact(path))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut handled = 0;
    let verifier = SignatureVerifier::new();
    for path in names {
        if record.contains_key(&path) {
            continue;
        }
        let bytes = shared
            .drives
            .with_drive(relay, async |drive| drive.read_to_vec(&path).await)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let outcome = handle(shared, relay, &bytes, &verifier).await?;
        tracing::info!(relay = %relay.short(), artifact = %path, outcome = %outcome.outcome,
            reason = outcome.reason.as_deref().unwrap_or(""), "HTTP artifact replayed");
        record.insert(path, outcome);
        handled += 1;
    }
    if handled > 0 {
        save(&record_path, &record).map_err(|e| format!("saving {REPLAY_RECORD_FILE}: {e}"))?;
    }
    Ok(handled)
}

fn is_artifact(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    (name.starts_with("join-") || name.starts_with("callback-")) && name.ends_with(".json")
}

async fn handle(
    shared: &Shared,
    relay: RelayKey,
    bytes: &[u8],
    verifier: &SignatureVerifier,
) -> Result<Handled, String> {
    let refused = |reason: &str| {
        Ok(Handled {
            outcome: "refused".into(),
            reason: Some(reason.to_owned()),
        })
    };
    let Ok(artifact) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return refused("not JSON");
    };
    match artifact["category"].as_str() {
        Some("join") => {}
        Some("callback") => {
            return Ok(Handled {
                outcome: "received".into(),
                reason: None,
            });
        }
        _ => return refused("unknown category"),
    }
    match join(shared, relay, &artifact["body"], verifier).await? {
        Ok(()) => Ok(Handled {
            outcome: "joined".into(),
            reason: None,
        }),
        Err(reason) => refused(&reason),
    }
}

/// A join request `{event}`: the kind-9021 event, verified, appended to the worker's own
/// writer log. `Ok(Err(reason))` when the request is refused (the original's texts); `Err`
/// when local storage failed.
async fn join(
    shared: &Shared,
    relay: RelayKey,
    body: &serde_json::Value,
    verifier: &SignatureVerifier,
) -> Result<Result<(), String>, String> {
    let Some(event) = body.get("event") else {
        return Ok(Err("Missing required fields".into()));
    };
    let event = match Event::parse_json(&event.to_string()) {
        Ok(event) => event,
        Err(e) => return Ok(Err(format!("invalid event: {e}"))),
    };
    if event.kind.0 != JOIN_KIND {
        return Ok(Err("Invalid event kind".into()));
    }
    if let Err(e) = event.verify(verifier) {
        return Ok(Err(format!("invalid: {e}")));
    }
    let mut relays = shared.relays.lock().await;
    let hosted = relays
        .get_mut(&relay)
        .ok_or_else(|| format!("relay {relay} is not hosted here"))?;
    let writer = hosted
        .local_writer
        .ok_or_else(|| format!("relay {relay} has no local writer"))?;
    // A replay cut short before its record was saved appends the event again on retry: the
    // relay view is a set of events, so the repeat changes nothing a client sees.
    hosted
        .logs
        .append_events(&writer, std::slice::from_ref(&event))
        .await
        .map_err(|e| format!("appending a join: {e}"))?;
    drop(relays);
    shared.changed.notify_one();
    Ok(Ok(()))
}

/// Answers the gateway's forwarded `POST /post/join/<identifier>` (the join is published:
/// 200 `{status:"pending"}`; 400 `Missing required fields` / `Invalid event kind` / invalid
/// events; 404 `Relay not found`) and `POST /callback/finalize-auth/<identifier>` (this worker
/// keeps no auth sessions: 404 `No pending join session`). Any other POST: 404.
pub(crate) async fn answer_post(shared: &Shared, request: &HttpRequest) -> HttpResponse {
    let reply = |status: u16, body: serde_json::Value| HttpResponse {
        status,
        headers: BoundedVec::new(vec![Header {
            name: BoundedString::truncating("content-type"),
            value: BoundedString::truncating("application/json"),
        }])
        .unwrap_or_default(),
        body: BoundedBytes::new(body.to_string().into_bytes()).unwrap_or_default(),
    };
    let path = request.path.as_str();
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path.starts_with("/callback/finalize-auth/") {
        return reply(
            404,
            serde_json::json!({ "error": "No pending join session" }),
        );
    }
    let Some(identifier) = path.strip_prefix("/post/join/") else {
        return reply(404, serde_json::json!({ "error": "no such route" }));
    };
    let hosted: Vec<RelayKey> = shared.relays.lock().await.keys().copied().collect();
    // The worker knows its relays by key; an alias names its only relay, if it has one.
    let relay = match identifier.parse::<RelayKey>() {
        Ok(key) if hosted.contains(&key) => Some(key),
        Ok(_) => None,
        Err(_) => (hosted.len() == 1).then(|| hosted[0]),
    };
    let Some(relay) = relay else {
        return reply(404, serde_json::json!({ "error": "Relay not found" }));
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(request.body.as_bytes()) else {
        return reply(400, serde_json::json!({ "error": "the body must be JSON" }));
    };
    match join(shared, relay, &body, &SignatureVerifier::new()).await {
        Ok(Ok(())) => reply(200, serde_json::json!({ "status": "pending" })),
        Ok(Err(reason)) => reply(400, serde_json::json!({ "error": reason })),
        Err(failure) => {
            tracing::warn!(%failure, "a forwarded join could not be stored");
            reply(
                500,
                serde_json::json!({ "error": "the join could not be stored" }),
            )
        }
    }
}

fn load(path: &Path) -> BTreeMap<String, Handled> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save(path: &Path, record: &BTreeMap<String, Handled>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, &bytes)?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
