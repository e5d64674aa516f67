//! The gateway's relay and pfp drives: layout, sanitisation, lazy opening.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use hypergate_adapters::drive::{
    Drive, DriveError, GATEWAY_DRIVES_DIR, GatewayDrives, MAX_SEGMENT_BYTES, PathError,
    sanitize_segment,
};
use hypergate_core::time::UnixTime;

const T0: UnixTime = UnixTime(1_700_000_000_000);
const RELAY: &str = "npub1abc:my-relay";

#[test]
fn sanitisation_matches_the_original_and_refuses_what_it_let_through() {
    let cases = [
        ("../../etc/passwd", "etc_passwd"),
        ("a/b", "a_b"),
        ("./\\.hidden", "hidden"),
        ("\\..\\windows", "windows"),
        ("a..b", "ab"),
        ("a...b", "a.b"),
        ("x/../y", "x__y"),
        ("café.png", "caf_.png"),
        // The original's regex replaced UTF-16 code units: two for an emoji.
        ("😀.png", "__.png"),
        ("hello world?.txt", "hello_world_.txt"),
        (RELAY, RELAY),
        ("AbC-09_.:x", "AbC-09_.:x"),
    ];
    for (raw, expected) in cases {
        assert_eq!(sanitize_segment(raw).as_deref(), Ok(expected), "{raw:?}");
    }
    for empty in ["", "..", "...", "./", "/", "\\\\", "./../.."] {
        assert!(
            matches!(sanitize_segment(empty), Err(PathError::EmptyName(_))),
            "{empty:?}"
        );
    }
    let longest = "a".repeat(MAX_SEGMENT_BYTES);
    assert_eq!(sanitize_segment(&longest).as_deref(), Ok(longest.as_str()));
    assert_eq!(
        sanitize_segment(&format!("{longest}b")),
        Err(PathError::NameTooLong {
            found: MAX_SEGMENT_BYTES + 1
        })
    );
    // Growth through replacement counts too: 128 emoji become 256 underscores.
    assert!(matches!(
        sanitize_segment(&"😀".repeat(128)),
        Err(PathError::NameTooLong { found: 256 })
    ));
}

#[test]
fn relay_files_live_at_identifier_slash_file_in_the_relays_own_drive() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        let receipt = drives
            .write_relay_file(RELAY, "../avatar.png", b"png bytes", T0)
            .await
            .unwrap();
        assert_eq!(receipt.path, format!("/{RELAY}/avatar.png"));
        assert_eq!(receipt.identifier.as_deref(), Some(RELAY));
        assert_eq!(receipt.bytes_written, 9);
        let json = serde_json::to_value(&receipt).unwrap();
        assert_eq!(json["identifier"], RELAY);

        let drive_dir = tmp
            .path()
            .join(GATEWAY_DRIVES_DIR)
            .join("relay")
            .join(RELAY);
        assert!(Drive::exists(&drive_dir));
        assert!(drive_dir.join("meta").is_dir() && drive_dir.join("blobs").is_dir());
        let drive = drives.relay_drive(RELAY).await.unwrap();
        assert_eq!(receipt.key, hex::encode(drive.key()));
        assert_eq!(receipt.version, drive.version());

        // The same sanitised name reads it back, whatever the raw spelling.
        for spelling in ["avatar.png", "./avatar.png", "/avatar.png"] {
            assert_eq!(
                drives.read_relay_file(RELAY, spelling).await.unwrap(),
                Some(b"png bytes".to_vec()),
                "{spelling:?}"
            );
        }
        assert_eq!(
            drives.read_relay_file(RELAY, "other.png").await.unwrap(),
            None
        );

        // Another relay has another drive with another key.
        let other = drives
            .write_relay_file("relay-two", "avatar.png", b"two", T0)
            .await
            .unwrap();
        assert_ne!(other.key, receipt.key);
        assert_eq!(
            drives.read_relay_file(RELAY, "avatar.png").await.unwrap(),
            Some(b"png bytes".to_vec())
        );
    });
}

#[test]
fn pfp_files_live_under_their_owner_or_global_in_one_shared_drive() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        let owned = drives
            .write_pfp_file(Some("abcdef01"), "me.jpg", b"mine", T0)
            .await
            .unwrap();
        let global = drives
            .write_pfp_file(None, "default.jpg", b"everyone", T0)
            .await
            .unwrap();
        assert_eq!(owned.path, "/abcdef01/me.jpg");
        assert_eq!(global.path, "/global/default.jpg");
        assert_eq!(owned.key, global.key, "one shared pfp drive");
        assert!(Drive::exists(
            &tmp.path().join(GATEWAY_DRIVES_DIR).join("pfp")
        ));
        assert_eq!(
            drives
                .read_pfp_file(Some("abcdef01"), "me.jpg")
                .await
                .unwrap(),
            Some(b"mine".to_vec())
        );
        assert_eq!(
            drives.read_pfp_file(None, "default.jpg").await.unwrap(),
            Some(b"everyone".to_vec())
        );
        assert_eq!(drives.read_pfp_file(None, "me.jpg").await.unwrap(), None);
        assert_eq!(
            drives
                .read_pfp_file(Some("someone"), "me.jpg")
                .await
                .unwrap(),
            None
        );
    });
}

#[test]
fn reads_never_create_drives() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        assert_eq!(drives.read_relay_file(RELAY, "f").await.unwrap(), None);
        assert_eq!(drives.read_pfp_file(None, "f").await.unwrap(), None);
        assert!(drives.existing_relay_drive(RELAY).await.unwrap().is_none());
        assert!(drives.existing_pfp_drive().await.unwrap().is_none());
        let root = tmp.path().join(GATEWAY_DRIVES_DIR);
        assert!(root.is_dir());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    });
}

#[test]
fn names_that_sanitise_to_nothing_are_refused_and_create_no_drive() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        for (identifier, file) in [("..", "f"), ("", "f"), (RELAY, ".."), (RELAY, "")] {
            assert!(
                matches!(
                    drives.write_relay_file(identifier, file, b"x", T0).await,
                    Err(DriveError::InvalidPath(PathError::EmptyName(_)))
                ),
                "{identifier:?} / {file:?}"
            );
        }
        let too_long = "x".repeat(MAX_SEGMENT_BYTES + 1);
        assert!(matches!(
            drives.write_relay_file(RELAY, &too_long, b"x", T0).await,
            Err(DriveError::InvalidPath(PathError::NameTooLong { .. }))
        ));
        assert!(matches!(
            drives.write_pfp_file(Some("../.."), "f", b"x", T0).await,
            Err(DriveError::InvalidPath(PathError::EmptyName(_)))
        ));
        assert!(matches!(
            drives.read_relay_file(RELAY, "..").await,
            Err(DriveError::InvalidPath(_))
        ));
        let root = tmp.path().join(GATEWAY_DRIVES_DIR);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    });
}

#[test]
fn drives_keep_their_files_and_keys_across_a_gateway_restart() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        let first = drives
            .write_relay_file(RELAY, "a.txt", b"a", T0)
            .await
            .unwrap();
        let second = drives
            .write_relay_file(RELAY, "a.txt", b"a2", T0)
            .await
            .unwrap();
        assert_eq!(second.version, first.version + 1);
        drives
            .write_pfp_file(None, "p.png", b"p", T0)
            .await
            .unwrap();
        drop(drives);

        let mut drives = GatewayDrives::open(tmp.path()).unwrap();
        assert_eq!(
            drives.read_relay_file(RELAY, "a.txt").await.unwrap(),
            Some(b"a2".to_vec())
        );
        assert_eq!(
            drives.read_pfp_file(None, "p.png").await.unwrap(),
            Some(b"p".to_vec())
        );
        let drive = drives.existing_relay_drive(RELAY).await.unwrap().unwrap();
        assert_eq!(hex::encode(drive.key()), second.key);
        assert_eq!(drive.version(), second.version);
        let changes = drive.entries_since(first.version).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].version, second.version);
        assert_eq!(changes[0].entry.path(), format!("/{RELAY}/a.txt"));
    });
}
