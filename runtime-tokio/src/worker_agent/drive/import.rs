//! `FetchDriveFiles`: copying what the gateway wrote to its drive for a relay into the worker's
//! drive of that relay.
//!
//! Contract:
//! - Which gateway drives: the one the push named (absent: the relay key, which the gateway
//!   always resolves), the relay key's, and every identifier imported before — the gateway
//!   keeps one drive per identifier and a push names only the latest one written.
//! - Per drive: `GET /.hypergate/drive-changes/<identifier>?since=<imported version>` over the
//!   link; only the last change of each path counts (the gateway serves current content, so
//!   an older put could never be checked). A put whose size and SHA-256 the worker's drive
//!   already holds is skipped (a re-run after a crash costs a listing); any other put is
//!   fetched with `GET /.hypergate/drive-file/<identifier>/<file>`, checked against the
//!   listing's size and SHA-256 and only then written at the listing's path; a delete is
//!   applied. A listing path outside `/<sanitised identifier>/` is refused.
//! - Crash safety: the version imported is saved to `<relay dir>/drive-import.json`
//!   (temporary file, fsync, rename) only after every file of the listing is in the drive, so
//!   a crash repeats the import instead of skipping files.
//! - Any failure (a refused request, a listing that does not parse, a hash mismatch, a local
//!   drive error) fails the step, which the core retries; nothing unchecked is ever stored.
//! - A listing behind the imported version means the gateway's drive was replaced: the import
//!   starts over from version 0. A listing behind the push's `drive_version` is an error.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypergate_adapters::drive::{DriveError, sanitize_segment, validate_segment};
use hypergate_adapters::peer_link::PeerLink;
use hypergate_core::ids::RelayKey;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, HttpMethod, HttpRequest, HttpResponse, Message,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::RelayDrives;

/// The import record's file name inside the relay's directory.
pub const IMPORT_RECORD_FILE: &str = "drive-import.json";
/// Longest wait for one answer from the gateway: a stuck request must not hold the agent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A progress line every this many files.
const PROGRESS_EVERY: usize = 50;
const RECORD_FORMAT: u32 = 1;

/// Why importing a gateway drive failed, grouped by blame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveImportError {
    // --- the gateway (or the link to it) ---
    /// The link failed, or the gateway answered with something else than an HTTP response.
    #[error("drive request {path}: {detail}")]
    Link {
        /// The path asked for.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The gateway refused a request.
    #[error("drive request {path}: status {status}: {body}")]
    Refused {
        /// The path asked for.
        path: String,
        /// The status it answered.
        status: u16,
        /// Its body, as text (truncated).
        body: String,
    },
    /// A listing does not parse or names a path it may not.
    #[error("drive listing of {identifier}: {detail}")]
    BadListing {
        /// The gateway drive.
        identifier: String,
        /// What is wrong.
        detail: String,
    },
    /// A fetched file does not match the listing; it was not stored.
    #[error("drive file {path}: {detail}")]
    ContentMismatch {
        /// The drive path.
        path: String,
        /// Which check failed.
        detail: String,
    },
    /// The gateway's drive is behind the version the push announced.
    #[error("gateway drive {identifier} is at version {listed}, the push named {announced}")]
    Behind {
        /// The gateway drive.
        identifier: String,
        /// The version listed.
        listed: u64,
        /// The version the push named.
        announced: u64,
    },
    // --- the push ---
    /// The drive identifier cannot name a gateway drive.
    #[error("drive identifier {0:?} cannot be used: {1}")]
    BadIdentifier(String, String),
    // --- local storage ---
    /// The worker's drive failed.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The import record could not be written.
    #[error("import record {path}: {source}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Files fetched and stored.
    pub fetched: usize,
    /// Files already held with the same content.
    pub unchanged: usize,
    /// Files deleted.
    pub deleted: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportRecord {
    version: u32,
    /// By sanitised identifier (the gateway's drive name).
    drives: BTreeMap<String, ImportedDrive>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportedDrive {
    /// The identifier as the gateway resolves it.
    identifier: String,
    /// The gateway drive version imported through.
    version: u64,
}

#[derive(Debug, Deserialize)]
struct Listing {
    version: u64,
    changes: Vec<ListedChange>,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedChange {
    version: u64,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// Imports the relay's gateway drives into its worker drive; see the module docs.
pub async fn import_gateway_drives(
    link: &PeerLink,
    drives: &RelayDrives,
    relay: RelayKey,
    drive_identifier: Option<&str>,
    drive_version: Option<u64>,
) -> Result<ImportSummary, DriveImportError> {
    let record_path = drives.relay_dir(&relay).join(IMPORT_RECORD_FILE);
    let mut record = load_record(&record_path);
    let pushed = drive_identifier.map_or_else(|| relay.to_hex(), str::to_owned);
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for identifier in [pushed.clone(), relay.to_hex()] {
        let sanitised = sanitise(&identifier)?;
        wanted.entry(sanitised).or_insert(identifier);
    }
    for (sanitised, imported) in &record.drives {
        wanted
            .entry(sanitised.clone())
            .or_insert_with(|| imported.identifier.clone());
    }
    let pushed = sanitise(&pushed)?;
    let mut summary = ImportSummary::default();
    for (sanitised, identifier) in wanted {
        let since = record.drives.get(&sanitised).map_or(0, |d| d.version);
        let announced = drive_version.filter(|_| sanitised == pushed);
        let version = import_one(
            link,
            drives,
            relay,
            &identifier,
            &sanitised,
            since,
            announced,
            &mut summary,
        )
        .await?;
        record.drives.insert(
            sanitised,
            ImportedDrive {
                identifier,
                version,
            },
        );
        save_record(&record_path, &record)?;
    }
    tracing::info!(
        relay = %relay.short(),
        fetched = summary.fetched,
        unchanged = summary.unchanged,
        deleted = summary.deleted,
        "gateway drive imported"
    );
    Ok(summary)
}

fn sanitise(identifier: &str) -> Result<String, DriveImportError> {
    // The link routes split on `/` and `?`: such an identifier cannot be asked for.
    if identifier.contains(['/', '?']) {
        return Err(DriveImportError::BadIdentifier(
            identifier.to_owned(),
            "contains '/' or '?'".into(),
        ));
    }
    sanitize_segment(identifier)
        .map_err(|e| DriveImportError::BadIdentifier(identifier.to_owned(), e.to_string()))
}

/// Imports one gateway drive from `since`; returns the version imported through.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn import_one(
    link: &PeerLink,
    drives: &RelayDrives,
    relay: RelayKey,
    identifier: &str,
    sanitised: &str,
    since: u64,
    announced: Option<u64>,
    summary: &mut ImportSummary,
) -> Result<u64, DriveImportError> {
    let mut listing = list(link, identifier, since).await?;
    if listing.version < since {
        tracing::warn!(relay = %relay.short(), identifier, since, listed = listing.version,
            "the gateway drive is behind what was imported (replaced?): importing it again");
        listing = list(link, identifier, 0).await?;
    }
    if let Some(announced) = announced
        && listing.version < announced
    {
        return Err(DriveImportError::Behind {
            identifier: identifier.to_owned(),
            listed: listing.version,
            announced,
        });
    }
    let prefix = format!("/{sanitised}/");
    // The last change of each path, then in version order.
    let mut last: BTreeMap<String, ListedChange> = BTreeMap::new();
    for change in listing.changes {
        let keep = last
            .get(&change.path)
            .is_none_or(|seen| seen.version <= change.version);
        if keep {
            last.insert(change.path.clone(), change);
        }
    }
    let mut plan: Vec<ListedChange> = last.into_values().collect();
    plan.sort_by_key(|change| change.version);
    let total = plan.len();
    for (done, change) in plan.into_iter().enumerate() {
        let bad = |detail: String| DriveImportError::BadListing {
            identifier: identifier.to_owned(),
            detail,
        };
        let file = change
            .path
            .strip_prefix(&prefix)
            .ok_or_else(|| bad(format!("path {} is outside {prefix}", change.path)))?;
        validate_segment(file).map_err(|e| bad(format!("path {}: {e}", change.path)))?;
        if change.deleted {
            let path = change.path.clone();
            let removed = drives
                .with_drive(relay, async |drive| drive.delete(&path).await)
                .await??;
            summary.deleted += usize::from(removed.is_some());
        } else {
            let (size, sha256) = expected_content(&change).map_err(bad)?;
            let path = change.path.clone();
            let held = drives
                .with_drive(relay, async |drive| {
                    drive
                        .stat(&path)
                        .is_some_and(|stat| stat.entry.size == size && stat.entry.sha256 == sha256)
                })
                .await?;
            if held {
                summary.unchanged += 1;
            } else {
                let bytes = fetch_file(link, identifier, file, &path, size, sha256).await?;
                let now = super::super::effects::unix_now();
                drives
                    .with_drive(relay, async |drive| drive.write(&path, &bytes, now).await)
                    .await??;
                summary.fetched += 1;
            }
        }
        if (done + 1) % PROGRESS_EVERY == 0 {
            tracing::info!(relay = %relay.short(), identifier, files = done + 1, total, "importing the gateway drive");
        }
    }
    Ok(listing.version)
}

fn expected_content(change: &ListedChange) -> Result<(u64, [u8; 32]), String> {
    let size = change
        .size
        .ok_or_else(|| format!("put of {} has no size", change.path))?;
    let digest = change
        .sha256
        .as_deref()
        .ok_or_else(|| format!("put of {} has no sha256", change.path))?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(digest, &mut sha256)
        .map_err(|e| format!("put of {}: sha256 {e}", change.path))?;
    Ok((size, sha256))
}

async fn list(link: &PeerLink, identifier: &str, since: u64) -> Result<Listing, DriveImportError> {
    let path = format!("/.hypergate/drive-changes/{identifier}?since={since}");
    let response = get(link, &path).await?;
    serde_json::from_slice(&response.body).map_err(|e| DriveImportError::BadListing {
        identifier: identifier.to_owned(),
        detail: e.to_string(),
    })
}

async fn fetch_file(
    link: &PeerLink,
    identifier: &str,
    file: &str,
    path: &str,
    size: u64,
    sha256: [u8; 32],
) -> Result<Vec<u8>, DriveImportError> {
    let response = get(link, &format!("/.hypergate/drive-file/{identifier}/{file}")).await?;
    let bytes = response.body.into_inner().to_vec();
    let mismatch = |detail: String| DriveImportError::ContentMismatch {
        path: path.to_owned(),
        detail,
    };
    if bytes.len() as u64 != size {
        return Err(mismatch(format!(
            "{} bytes received, the listing says {size}",
            bytes.len()
        )));
    }
    let got: [u8; 32] = Sha256::digest(&bytes).into();
    if got != sha256 {
        return Err(mismatch(format!(
            "sha256 {} received, the listing says {}",
            hex::encode(got),
            hex::encode(sha256)
        )));
    }
    Ok(bytes)
}

/// `GET path` over the link; a 2xx answer or an error.
async fn get(link: &PeerLink, path: &str) -> Result<HttpResponse, DriveImportError> {
    let failed = |detail: String| DriveImportError::Link {
        path: path.to_owned(),
        detail,
    };
    let request = Message::HttpRequest(HttpRequest {
        method: HttpMethod::Get,
        path: BoundedString::new(path).map_err(|e| failed(e.to_string()))?,
        headers: BoundedVec::default(),
        body: BoundedBytes::default(),
    });
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, link.request(request))
        .await
        .map_err(|_| failed("no answer in time".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let Message::HttpResponse(response) = answer else {
        return Err(failed(format!("answered with {}", answer.kind())));
    };
    if !(200..300).contains(&response.status) {
        let body = String::from_utf8_lossy(&response.body);
        return Err(DriveImportError::Refused {
            path: path.to_owned(),
            status: response.status,
            body: body.chars().take(256).collect(),
        });
    }
    Ok(response)
}

/// The record, or an empty one when it is missing or unreadable (an import from 0 only costs
/// listings: files already held are skipped).
fn load_record(path: &Path) -> ImportRecord {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "unreadable drive import record: importing from the start");
            ImportRecord::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ImportRecord::default(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unreadable drive import record: importing from the start");
            ImportRecord::default()
        }
    }
}

/// Writes the record through a temporary file and a rename.
fn save_record(path: &Path, record: &ImportRecord) -> Result<(), DriveImportError> {
    let failed = |source: std::io::Error| DriveImportError::Record {
        path: path.to_owned(),
        source,
    };
    let disk = ImportRecord {
        version: RECORD_FORMAT,
        drives: record.drives.clone(),
    };
    let json = serde_json::to_vec_pretty(&disk).map_err(|e| failed(e.into()))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(failed)?;
    file.write_all(&json).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests;
