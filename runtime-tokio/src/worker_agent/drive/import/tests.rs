//! The import against a scripted gateway over a real link pair (in-memory duplex, real
//! handshake) and a real drive on disk. The script answers the link routes with fixed
//! listings and bytes, so a gateway that lies about a file can be played.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex as StdMutex};

use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::drive::GatewayDrives;
use hypergate_adapters::peer_link::{AcceptPolicy, Inbound, LinkConfig, accept, connect};
use hypergate_core::wire::Frame;
use serde_json::json;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

use super::*;

fn sleeper(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

/// What the scripted gateway answers, by path (query included); anything else is a 404.
type Script = Arc<StdMutex<BTreeMap<String, (u16, Vec<u8>)>>>;

/// The worker's end of a link whose gateway end answers from `script`, and the paths asked.
async fn scripted_gateway(script: Script) -> (PeerLink, Arc<StdMutex<Vec<String>>>) {
    let (worker_io, gateway_io) = tokio::io::duplex(1 << 16);
    let gateway = Identity::from_signing_key(SigningKey::from_bytes(&[1; 32]));
    let worker = Identity::from_signing_key(SigningKey::from_bytes(&[2; 32]));
    let config = LinkConfig::default();
    let (worker_side, gateway_side) = tokio::join!(
        connect(
            worker_io.compat(),
            &worker,
            gateway.peer_id(),
            &config,
            sleeper
        ),
        accept(
            gateway_io.compat(),
            &gateway,
            &AcceptPolicy::Open,
            &config,
            sleeper
        ),
    );
    let (worker_side, gateway_side) = (worker_side.unwrap(), gateway_side.unwrap());
    tokio::spawn(worker_side.driver.run());
    tokio::spawn(gateway_side.driver.run());
    let asked = Arc::new(StdMutex::new(Vec::new()));
    tokio::spawn(answer(
        gateway_side.link,
        gateway_side.inbound,
        script,
        Arc::clone(&asked),
    ));
    (worker_side.link, asked)
}

async fn answer(
    link: PeerLink,
    inbound: Inbound,
    script: Script,
    asked: Arc<StdMutex<Vec<String>>>,
) {
    while let Some(frame) = inbound.recv().await {
        let Message::HttpRequest(request) = frame.message else {
            continue;
        };
        let path = request.path.as_str().to_owned();
        asked.lock().unwrap().push(path.clone());
        let (status, body) = script
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or((404, b"{}".to_vec()));
        let response = HttpResponse {
            status,
            headers: BoundedVec::default(),
            body: BoundedBytes::new(body).unwrap(),
        };
        link.send(Frame::new(
            frame.request_id,
            Message::HttpResponse(response),
        ))
        .await
        .unwrap();
    }
}

fn relay() -> RelayKey {
    RelayKey([9; 32])
}

fn put(version: u64, file: &str, content: &[u8]) -> serde_json::Value {
    json!({
        "version": version,
        "path": format!("/{}/{file}", relay().to_hex()),
        "size": content.len(),
        "sha256": hex::encode(Sha256::digest(content)),
    })
}

fn changes_path(since: u64) -> String {
    format!(
        "/.hypergate/drive-changes/{}?since={since}",
        relay().to_hex()
    )
}

fn file_path(file: &str) -> String {
    format!("/.hypergate/drive-file/{}/{file}", relay().to_hex())
}

fn listing(version: u64, changes: Vec<serde_json::Value>) -> (u16, Vec<u8>) {
    (
        200,
        json!({ "version": version, "changes": changes })
            .to_string()
            .into_bytes(),
    )
}

async fn stored(drives: &RelayDrives, file: &str) -> Option<Vec<u8>> {
    drives
        .read_file(relay(), &relay().to_hex(), file)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_last_change_of_each_path_is_applied_and_the_next_import_starts_where_this_one_ended()
 {
    let dir = tempfile::tempdir().unwrap();
    let drives = RelayDrives::new(dir.path());
    let script = Script::default();
    {
        let mut script = script.lock().unwrap();
        let deleted = json!({
            "version": 4,
            "path": format!("/{}/a.png", relay().to_hex()),
            "deleted": true,
        });
        script.insert(
            changes_path(0),
            listing(
                5,
                vec![
                    put(2, "a.png", b"old a"),
                    put(3, "b.txt", b"old b"),
                    deleted,
                    put(5, "b.txt", b"new b"),
                ],
            ),
        );
        // The gateway serves current content only: asking for the old `b.txt` would fail.
        script.insert(file_path("b.txt"), (200, b"new b".to_vec()));
        script.insert(changes_path(5), listing(5, Vec::new()));
    }
    let (link, asked) = scripted_gateway(Arc::clone(&script)).await;
    let summary = import_gateway_drives(&link, &drives, relay(), None, Some(5))
        .await
        .unwrap();
    assert_eq!(
        (summary.fetched, summary.unchanged, summary.deleted),
        (1, 0, 0)
    );
    assert_eq!(stored(&drives, "b.txt").await.unwrap(), b"new b");
    assert_eq!(stored(&drives, "a.png").await, None);
    assert!(!asked.lock().unwrap().contains(&file_path("a.png")));

    // The record moved to 5: the next import asks from there and fetches nothing.
    asked.lock().unwrap().clear();
    let again = import_gateway_drives(&link, &drives, relay(), None, Some(5))
        .await
        .unwrap();
    assert_eq!(again, ImportSummary::default());
    assert_eq!(*asked.lock().unwrap(), vec![changes_path(5)]);

    // With the record lost, a file already held is recognised by its digest, not refetched.
    std::fs::remove_file(drives.relay_dir(&relay()).join(IMPORT_RECORD_FILE)).unwrap();
    asked.lock().unwrap().clear();
    let redo = import_gateway_drives(&link, &drives, relay(), None, None)
        .await
        .unwrap();
    assert_eq!((redo.fetched, redo.unchanged), (0, 1));
    assert!(!asked.lock().unwrap().contains(&file_path("b.txt")));
}

#[tokio::test]
async fn a_file_whose_digest_differs_from_the_listing_is_refused_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let drives = RelayDrives::new(dir.path());
    let script = Script::default();
    {
        let mut script = script.lock().unwrap();
        script.insert(
            changes_path(0),
            listing(2, vec![put(2, "photo.png", b"honest")]),
        );
        // Same length, other bytes.
        script.insert(file_path("photo.png"), (200, b"forged".to_vec()));
    }
    let (link, _) = scripted_gateway(script).await;
    let error = import_gateway_drives(&link, &drives, relay(), None, Some(2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DriveImportError::ContentMismatch { .. }),
        "{error}"
    );
    assert_eq!(stored(&drives, "photo.png").await, None);
    // Nothing recorded: the retry asks from the start again.
    assert!(!drives.relay_dir(&relay()).join(IMPORT_RECORD_FILE).exists());
}

#[tokio::test]
async fn a_listing_that_reaches_outside_the_identifier_folder_or_lags_the_push_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let drives = RelayDrives::new(dir.path());
    let script = Script::default();
    let escape = json!({
        "version": 2,
        "path": "/someone-else/photo.png",
        "size": 1,
        "sha256": hex::encode(Sha256::digest(b"x")),
    });
    script
        .lock()
        .unwrap()
        .insert(changes_path(0), listing(2, vec![escape]));
    let (link, asked) = scripted_gateway(Arc::clone(&script)).await;
    let error = import_gateway_drives(&link, &drives, relay(), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DriveImportError::BadListing { .. }),
        "{error}"
    );
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|path| !path.contains("drive-file"))
    );

    script
        .lock()
        .unwrap()
        .insert(changes_path(0), listing(2, Vec::new()));
    let behind = import_gateway_drives(&link, &drives, relay(), None, Some(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            behind,
            DriveImportError::Behind {
                listed: 2,
                announced: 3,
                ..
            }
        ),
        "{behind}"
    );
}

#[tokio::test]
async fn a_refusal_by_the_gateway_fails_the_import_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let drives = RelayDrives::new(dir.path());
    let script = Script::default();
    script.lock().unwrap().insert(
        changes_path(0),
        (403, br#"{"error":"not a worker of this relay"}"#.to_vec()),
    );
    let (link, _) = scripted_gateway(script).await;
    let error = import_gateway_drives(&link, &drives, relay(), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DriveImportError::Refused { status: 403, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn the_pushed_identifier_and_the_relay_key_are_both_imported_into_their_own_folders() {
    let dir = tempfile::tempdir().unwrap();
    let drives = RelayDrives::new(dir.path());
    let script = Script::default();
    {
        let mut script = script.lock().unwrap();
        let (_, alias_path) = GatewayDrives::relay_file_path("team", "notes.txt").unwrap();
        script.insert(
            "/.hypergate/drive-changes/team?since=0".into(),
            listing(
                2,
                vec![json!({
                    "version": 2,
                    "path": alias_path,
                    "size": 4,
                    "sha256": hex::encode(Sha256::digest(b"note")),
                })],
            ),
        );
        script.insert(
            "/.hypergate/drive-file/team/notes.txt".into(),
            (200, b"note".to_vec()),
        );
        script.insert(
            changes_path(0),
            listing(2, vec![put(2, "photo.png", b"png")]),
        );
        script.insert(file_path("photo.png"), (200, b"png".to_vec()));
    }
    let (link, _) = scripted_gateway(script).await;
    let summary = import_gateway_drives(&link, &drives, relay(), Some("team"), Some(2))
        .await
        .unwrap();
    assert_eq!(summary.fetched, 2);
    assert_eq!(stored(&drives, "photo.png").await.unwrap(), b"png");
    let note = drives
        .read_file(relay(), "team", "notes.txt")
        .await
        .unwrap();
    assert_eq!(note.unwrap(), b"note");
}

#[test]
fn the_import_record_survives_a_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(IMPORT_RECORD_FILE);
    assert!(load_record(&path).drives.is_empty());
    let mut record = ImportRecord::default();
    record.drives.insert(
        "alias".into(),
        ImportedDrive {
            identifier: "alias".into(),
            version: 7,
        },
    );
    save_record(&path, &record).unwrap();
    let loaded = load_record(&path);
    assert_eq!(loaded.version, RECORD_FORMAT);
    assert_eq!(loaded.drives["alias"].version, 7);
    std::fs::write(&path, b"not json").unwrap();
    assert!(load_record(&path).drives.is_empty());
}

#[test]
fn identifiers_the_link_routes_cannot_carry_are_refused() {
    assert!(sanitise("a/b").is_err());
    assert!(sanitise("a?since=3").is_err());
    assert!(sanitise("...").is_err());
    assert_eq!(sanitise("npub1x:team").unwrap(), "npub1x:team");
}

#[test]
fn a_put_without_a_valid_digest_is_a_bad_listing() {
    let change = |sha256: Option<&str>, size| ListedChange {
        version: 2,
        path: "/r/a.png".into(),
        size,
        sha256: sha256.map(str::to_owned),
        deleted: false,
    };
    assert!(expected_content(&change(None, Some(1))).is_err());
    assert!(expected_content(&change(Some("zz"), Some(1))).is_err());
    assert!(expected_content(&change(Some(&"ab".repeat(32)), None)).is_err());
    let (size, digest) = expected_content(&change(Some(&"ab".repeat(32)), Some(3))).unwrap();
    assert_eq!((size, digest), (3, [0xab; 32]));
}
