use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

#[test]
fn identity_is_created_with_mode_0600_and_reloads_to_the_same_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.json");
    let created = Identity::load_or_create(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let loaded = Identity::load_or_create(&path).unwrap();
    assert_eq!(created.peer_id(), loaded.peer_id());
    assert_eq!(
        created.signing_key().to_bytes(),
        loaded.signing_key().to_bytes()
    );
    assert_eq!(
        created.peer_id().0,
        created.signing_key().verifying_key().to_bytes()
    );
}

#[test]
fn identity_file_readable_by_others_is_refused_with_the_chmod_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.json");
    Identity::load_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let error = Identity::load_or_create(&path).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    // Refusing does not rewrite or loosen anything.
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
}

fn write_0600(path: &Path, text: &str) {
    keyfile::create_private(path, text.as_bytes()).unwrap();
}

#[test]
fn malformed_identity_files_are_errors_that_do_not_show_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = hex::encode(key.verifying_key().as_bytes());
    let secret = hex::encode(key.to_bytes());
    let other_public = hex::encode(
        SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let cases = [
        ("not-json", "secret".to_owned(), "malformed"),
        (
            "short-secret",
            format!(
                r#"{{"publicKey":"{public}","secretKey":"{}"}}"#,
                &secret[..62]
            ),
            "malformed",
        ),
        (
            "non-hex",
            format!(
                r#"{{"publicKey":"{public}","secretKey":"{}zz"}}"#,
                &secret[..62]
            ),
            "malformed",
        ),
        (
            "extra-field",
            format!(r#"{{"publicKey":"{public}","secretKey":"{secret}","x":1}}"#),
            "malformed",
        ),
        (
            "mismatch",
            format!(r#"{{"publicKey":"{other_public}","secretKey":"{secret}"}}"#),
            "does not match",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        write_0600(&path, &content);
        let error = Identity::load_or_create(&path).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(text.contains(expected), "{name}: {text}");
        assert!(!text.contains(&secret[..16]), "{name}: {text}");
        // The broken file is left for the operator, not replaced.
        assert_eq!(fs::read_to_string(&path).unwrap(), content);
    }
}

#[test]
fn identity_debug_shows_the_peer_id_only() {
    let identity = Identity::from_signing_key(SigningKey::from_bytes(&[9u8; 32]));
    let debug = format!("{identity:?}");
    assert!(debug.contains(&identity.peer_id().to_hex()));
    assert!(!debug.contains(&hex::encode([9u8; 32])), "{debug}");
}

#[test]
fn box_key_pair_persists_as_the_original_keypair_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escrow").join("keypair.json");
    let created = BoxKeyPair::load_or_create(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["publicKey"], created.public_key_base64());
    assert_eq!(
        json["secretKey"],
        BASE64.encode(created.secret_key().to_bytes())
    );
    let loaded = BoxKeyPair::load_or_create(&path).unwrap();
    assert_eq!(loaded.public_key(), created.public_key());
    assert_eq!(
        loaded.secret_key().to_bytes(),
        created.secret_key().to_bytes()
    );
    let debug = format!("{loaded:?}");
    assert!(!debug.contains(&BASE64.encode(loaded.secret_key().to_bytes())));
}

#[test]
fn box_key_pair_file_must_be_private_base64_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let secret = crypto_box::SecretKey::from_bytes([5u8; 32]);
    let public = BASE64.encode(secret.public_key().as_bytes());
    let secret_b64 = BASE64.encode([5u8; 32]);
    let cases = [
        (
            "hex-secret",
            format!(
                r#"{{"publicKey":"{public}","secretKey":"{}"}}"#,
                hex::encode([5u8; 32])
            ),
            "malformed",
        ),
        (
            "short",
            format!(
                r#"{{"publicKey":"{public}","secretKey":"{}"}}"#,
                BASE64.encode([5u8; 31])
            ),
            "malformed",
        ),
        (
            "mismatch",
            format!(
                r#"{{"publicKey":"{}","secretKey":"{secret_b64}"}}"#,
                BASE64.encode([1u8; 32])
            ),
            "does not match",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        write_0600(&path, &content);
        let text = BoxKeyPair::load_or_create(&path).unwrap_err().to_string();
        assert!(text.contains(expected), "{name}: {text}");
        assert!(!text.contains(&secret_b64), "{name}: {text}");
    }
    let path = dir.path().join("good");
    write_0600(
        &path,
        &format!(r#"{{"publicKey":"{public}","secretKey":"{secret_b64}"}}"#),
    );
    assert_eq!(
        BoxKeyPair::load_or_create(&path).unwrap().public_key(),
        &secret.public_key()
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    assert!(matches!(
        BoxKeyPair::load_or_create(&path),
        Err(IdentityError::File(
            KeyFileError::InsecurePermissions { .. }
        ))
    ));
}
