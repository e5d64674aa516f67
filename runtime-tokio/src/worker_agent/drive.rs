//! The worker's relay drives: where the files the gateway wrote while the worker was away end
//! up, and how they are served back.
//!
//! Contract:
//! - **One drive per relay**, `<data>/relays/<relay hex>/drive/` (an `adapters::drive::Drive`),
//!   opened on first use and kept open. Its paths are the gateway drives' paths,
//!   `/<sanitised identifier>/<sanitised file>` ([`GatewayDrives::relay_file_path`]), so a file
//!   keeps its name from the gateway to the worker; the files of several identifiers of one
//!   relay (its key, an alias) share the relay's drive under their own folders. Reads never
//!   create a drive.
//! - **Import at resync** ([`import`]): `FetchDriveFiles` copies the gateway drive's changes
//!   since the version this worker last imported, checking every file's size and SHA-256
//!   against the gateway's listing before it is stored; the imported version is recorded in
//!   `<relay dir>/drive-import.json` only after the files are in the drive.
//! - **Serving**: `GET /drive/<identifier>/<file>` (the gateway's peer-first read over the link,
//!   and the worker's local HTTP server) answers 200 with the bytes and a `content-type` from
//!   the file's extension (jpg/jpeg/png/gif/pdf/txt, else `application/octet-stream`), 404
//!   JSON `{error:"File not found"}` when absent, 400 JSON for a name that sanitises to
//!   nothing, 405 for any other method (over the link; axum does it locally), 500 JSON when the
//!   drive on disk is damaged. `<identifier>` is a hosted relay's key or, for an alias, looked
//!   up in every hosted relay's drive.

pub mod import;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hypergate_adapters::drive::{Drive, DriveError, GatewayDrives};
use hypergate_core::ids::RelayKey;
use hypergate_core::wire::{
    BoundedBytes, BoundedString, BoundedVec, Header, HttpMethod, HttpRequest, HttpResponse,
};
use tokio::sync::Mutex;

pub use import::{DriveImportError, IMPORT_RECORD_FILE, ImportSummary, import_gateway_drives};

/// The directory of a relay's drive inside the relay's directory.
pub const RELAY_DRIVE_DIR: &str = "drive";

/// Every hosted relay's drive; see the module docs. Shared by the agent (which imports into
/// it) and the local HTTP server (which reads it).
#[derive(Debug)]
pub struct RelayDrives {
    relays_dir: PathBuf,
    open: Mutex<BTreeMap<RelayKey, Drive>>,
}

/// An answer to `GET /drive/<identifier>/<file>`, for either HTTP surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveAnswer {
    /// HTTP status.
    pub status: u16,
    /// `content-type` of the body.
    pub content_type: &'static str,
    /// The file's bytes, or a JSON `{error}`.
    pub body: Vec<u8>,
}

impl DriveAnswer {
    fn error(status: u16, message: &str) -> DriveAnswer {
        DriveAnswer {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        }
    }
}

impl RelayDrives {
    /// The drives of the relays under `<data_dir>/relays/`. Opens nothing yet.
    #[must_use]
    pub fn new(data_dir: &Path) -> RelayDrives {
        RelayDrives {
            relays_dir: super::relays_dir(data_dir),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// The relay's directory.
    #[must_use]
    pub fn relay_dir(&self, relay: &RelayKey) -> PathBuf {
        self.relays_dir.join(relay.to_hex())
    }

    /// Where the relay's drive lives.
    #[must_use]
    pub fn drive_dir(&self, relay: &RelayKey) -> PathBuf {
        self.relay_dir(relay).join(RELAY_DRIVE_DIR)
    }

    /// Runs `work` on the relay's drive, creating the drive if needed.
    pub async fn with_drive<T>(
        &self,
        relay: RelayKey,
        work: impl AsyncFnOnce(&mut Drive) -> T,
    ) -> Result<T, DriveError> {
        let mut open = self.open.lock().await;
        let drive = match open.entry(relay) {
            std::collections::btree_map::Entry::Occupied(drive) => drive.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Drive::open_or_create(&self.drive_dir(&relay)).await?)
            }
        };
        Ok(work(drive).await)
    }

    /// Runs `work` on the relay's drive if it exists (never creates one).
    pub async fn with_existing_drive<T>(
        &self,
        relay: RelayKey,
        work: impl AsyncFnOnce(&mut Drive) -> T,
    ) -> Result<Option<T>, DriveError> {
        if !self.open.lock().await.contains_key(&relay) && !Drive::exists(&self.drive_dir(&relay)) {
            return Ok(None);
        }
        self.with_drive(relay, work).await.map(Some)
    }

    /// The verified content of `identifier`'s `file` in the relay's drive, if it is there.
    /// Never creates a drive.
    pub async fn read_file(
        &self,
        relay: RelayKey,
        identifier: &str,
        file: &str,
    ) -> Result<Option<Vec<u8>>, DriveError> {
        let (_, path) = GatewayDrives::relay_file_path(identifier, file)?;
        if !self.open.lock().await.contains_key(&relay) && !Drive::exists(&self.drive_dir(&relay)) {
            return Ok(None);
        }
        self.with_drive(relay, async |drive| drive.read_to_vec(&path).await)
            .await?
    }

    /// Answers `GET /drive/<identifier>/<file>` for a worker hosting `hosted`.
    pub async fn answer_get(
        &self,
        hosted: &[RelayKey],
        identifier: &str,
        file: &str,
    ) -> DriveAnswer {
        // Refuse a bad name before looking at any relay.
        if let Err(error) = GatewayDrives::relay_file_path(identifier, file) {
            return DriveAnswer::error(400, &error.to_string());
        }
        let candidates: Vec<RelayKey> = match identifier.parse::<RelayKey>() {
            Ok(key) => hosted.iter().copied().filter(|h| *h == key).collect(),
            // An alias: whichever hosted relay's drive has a folder of that name.
            Err(_) => hosted.to_vec(),
        };
        for relay in candidates {
            match self.read_file(relay, identifier, file).await {
                Ok(Some(bytes)) => {
                    return DriveAnswer {
                        status: 200,
                        content_type: content_type(file),
                        body: bytes,
                    };
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(relay = %relay.short(), %error, "drive read failed");
                    return DriveAnswer::error(500, &error.to_string());
                }
            }
        }
        DriveAnswer::error(404, "File not found")
    }

    /// Answers an `HttpRequest` the gateway sent over the link: `GET /drive/<identifier>/<file>`
    /// (see the module docs); any other path is a 404.
    pub async fn answer_link_request(
        &self,
        hosted: &[RelayKey],
        request: &HttpRequest,
    ) -> HttpResponse {
        let route = request
            .path
            .as_str()
            .strip_prefix("/drive/")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(identifier, file)| !identifier.is_empty() && !file.is_empty());
        let answer = match route {
            None => DriveAnswer::error(404, "no such route"),
            Some(_) if request.method != HttpMethod::Get => {
                DriveAnswer::error(405, "method not allowed")
            }
            Some((identifier, file)) => self.answer_get(hosted, identifier, file).await,
        };
        let headers = BoundedVec::new(vec![Header {
            name: BoundedString::truncating("content-type"),
            value: BoundedString::truncating(answer.content_type),
        }])
        .unwrap_or_default();
        HttpResponse {
            status: answer.status,
            headers,
            // Never larger than an upload the gateway accepted (< 8 MiB); an oversized file
            // (written locally) is refused rather than sent empty.
            body: match BoundedBytes::new(answer.body) {
                Ok(body) => body,
                Err(_) => {
                    return HttpResponse {
                        status: 413,
                        headers: BoundedVec::default(),
                        body: BoundedBytes::default(),
                    };
                }
            },
        }
    }
}

/// The `content-type` of a drive file, from its extension.
#[must_use]
pub fn content_type(file: &str) -> &'static str {
    let extension = file
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(method: HttpMethod, path: &str) -> HttpRequest {
        HttpRequest {
            method,
            path: BoundedString::new(path).unwrap(),
            headers: BoundedVec::default(),
            body: BoundedBytes::default(),
        }
    }

    fn relay(byte: u8) -> RelayKey {
        RelayKey([byte; 32])
    }

    #[test]
    fn content_type_follows_the_extension_case_insensitively() {
        assert_eq!(content_type("a.JPG"), "image/jpeg");
        assert_eq!(content_type("a.jpeg"), "image/jpeg");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("a.gif"), "image/gif");
        assert_eq!(content_type("a.pdf"), "application/pdf");
        assert_eq!(content_type("notes.txt"), "text/plain");
        assert_eq!(content_type("archive.tar"), "application/octet-stream");
        assert_eq!(content_type("noextension"), "application/octet-stream");
    }

    #[tokio::test]
    async fn a_stored_file_is_served_by_relay_key_and_by_alias_with_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let drives = RelayDrives::new(dir.path());
        let key = relay(1);
        let (_, by_key) = GatewayDrives::relay_file_path(&key.to_hex(), "photo.png").unwrap();
        let (_, by_alias) = GatewayDrives::relay_file_path("npub1x:team", "notes.txt").unwrap();
        drives
            .with_drive(key, async |drive| {
                drive
                    .write(&by_key, b"png bytes", Default::default())
                    .await?;
                drive.write(&by_alias, b"text", Default::default()).await
            })
            .await
            .unwrap()
            .unwrap();
        let hosted = [relay(0), key];
        let answer = drives
            .answer_link_request(
                &hosted,
                &request(
                    HttpMethod::Get,
                    &format!("/drive/{}/photo.png", key.to_hex()),
                ),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"png bytes");
        assert_eq!(answer.headers[0].value.as_str(), "image/png");
        let alias = drives.answer_get(&hosted, "npub1x:team", "notes.txt").await;
        assert_eq!((alias.status, alias.body.as_slice()), (200, &b"text"[..]));
        assert_eq!(alias.content_type, "text/plain");
    }

    #[tokio::test]
    async fn absent_files_odd_paths_and_other_methods_get_clear_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let drives = RelayDrives::new(dir.path());
        let key = relay(2);
        let hosted = [key];
        let status = async |method, path: &str| {
            drives
                .answer_link_request(&hosted, &request(method, path))
                .await
                .status
        };
        let file = format!("/drive/{}/photo.png", key.to_hex());
        assert_eq!(status(HttpMethod::Get, &file).await, 404);
        assert_eq!(status(HttpMethod::Put, &file).await, 405);
        assert_eq!(status(HttpMethod::Get, "/drive//x").await, 404);
        assert_eq!(status(HttpMethod::Get, "/drive/.../x").await, 400);
        // A traversal attempt sanitises to a plain name inside the drive.
        let traversal = format!("/drive/{}/../../identity.json", key.to_hex());
        assert_eq!(status(HttpMethod::Get, &traversal).await, 404);
        assert_eq!(
            status(HttpMethod::Get, "/drive/only-one-segment").await,
            404
        );
        assert_eq!(status(HttpMethod::Get, "/status").await, 404);
        let other = format!("/drive/{}/photo.png", relay(3).to_hex());
        assert_eq!(status(HttpMethod::Get, &other).await, 404);
        // Reading created no drive.
        assert!(!Drive::exists(&drives.drive_dir(&key)));
    }
}
