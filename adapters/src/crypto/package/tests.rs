use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_box::aead::OsRng;
use sha2::{Digest, Sha256};

use super::*;

fn package() -> (WriterPackage, SigningKey) {
    let writer = SigningKey::generate(&mut OsRng);
    let package = WriterPackage::new(
        RelayKey([0x11; 32]),
        &writer,
        PeerId([0x22; 32]),
        UnixTime(1_700_000_000_000),
        PackageMetadata {
            identifier: "npub1xyz:relay".into(),
            name: Some("My \"relay\"".into()),
        },
    );
    (package, writer)
}

#[test]
fn json_uses_the_original_field_names_plus_writer_secret() {
    let (package, writer) = package();
    let json: serde_json::Value = serde_json::from_slice(&package.to_json()).unwrap();
    assert_eq!(json["relayKey"], "11".repeat(32));
    assert_eq!(
        json["writerKey"],
        hex::encode(writer.verifying_key().as_bytes())
    );
    assert_eq!(json["writerSecret"], hex::encode(writer.to_bytes()));
    assert_eq!(json["ownerPeerKey"], "22".repeat(32));
    assert_eq!(json["createdAt"], 1_700_000_000_000u64);
    assert_eq!(json["metadata"]["identifier"], "npub1xyz:relay");
    assert_eq!(json["metadata"]["name"], "My \"relay\"");
    assert_eq!(json.as_object().unwrap().len(), 6);
}

#[test]
fn package_round_trips_and_validates() {
    let (package, writer) = package();
    let parsed = WriterPackage::from_json(&package.to_json()).unwrap();
    parsed.validate(&RelayKey([0x11; 32])).unwrap();
    assert_eq!(parsed.signing_key().to_bytes(), writer.to_bytes());
    assert_eq!(parsed.owner_peer_key, package.owner_peer_key);
    assert_eq!(parsed.created_at, package.created_at);
    assert_eq!(parsed.metadata, package.metadata);
    // The signing key signs what the stated public key verifies.
    use ed25519_dalek::{Signer, Verifier};
    let signature = parsed.signing_key().sign(b"block");
    parsed
        .writer_verifying_key()
        .unwrap()
        .verify(b"block", &signature)
        .unwrap();
}

#[test]
fn validate_rejects_a_public_key_that_does_not_derive_from_the_secret() {
    let (package, _) = package();
    let other = SigningKey::generate(&mut OsRng);
    let mut json: serde_json::Value = serde_json::from_slice(&package.to_json()).unwrap();
    // The original's defect: a package whose "secret" is not the writer's.
    json["writerSecret"] = hex::encode(other.to_bytes()).into();
    let forged = WriterPackage::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(
        forged.validate(&RelayKey([0x11; 32])),
        Err(PackageError::KeyMismatch)
    );
}

#[test]
fn validate_rejects_a_package_for_another_relay() {
    let (package, _) = package();
    assert_eq!(
        package.validate(&RelayKey([0x33; 32])),
        Err(PackageError::RelayMismatch {
            expected: RelayKey([0x33; 32]),
            found: RelayKey([0x11; 32]),
        })
    );
}

#[test]
fn digests_are_computed_as_the_original_did() {
    let (package, writer) = package();
    let public = writer.verifying_key().to_bytes();
    assert_eq!(package.writer_hash(), hex::encode(Sha256::digest(public)));
    assert_eq!(
        package.payload_digest(),
        hex::encode(Sha256::digest(hex::encode(public).as_bytes()))
    );
    assert_ne!(package.writer_hash(), package.payload_digest());
}

#[test]
fn debug_and_errors_never_show_the_secret() {
    let (package, writer) = package();
    let secret_hex = hex::encode(writer.to_bytes());
    let secret_b64 = BASE64.encode(writer.to_bytes());
    let debug = format!("{package:?}");
    assert!(!debug.contains(&secret_hex), "{debug}");
    assert!(!debug.contains(&secret_b64), "{debug}");
    assert!(debug.contains(&package.writer_hash()));

    // A bad secret field, an unknown field and a type error next to the secret.
    let mut json: serde_json::Value = serde_json::from_slice(&package.to_json()).unwrap();
    json["writerSecret"] = format!("{}zz", &secret_hex[..62]).into();
    let error = WriterPackage::from_json(json.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        error,
        PackageError::BadKey {
            field: "writerSecret"
        }
    );
    json["writerSecret"] = secret_hex.clone().into();
    json["createdAt"] = secret_hex.clone().into();
    let error = WriterPackage::from_json(json.to_string().as_bytes()).unwrap_err();
    for text in [format!("{error}"), format!("{error:?}")] {
        assert!(!text.contains(&secret_hex[..16]), "{text}");
    }
    let mut json: serde_json::Value = serde_json::from_slice(&package.to_json()).unwrap();
    json[secret_hex.as_str()] = 1.into();
    let error = WriterPackage::from_json(json.to_string().as_bytes()).unwrap_err();
    assert!(matches!(error, PackageError::MalformedJson { .. }));
    for text in [format!("{error}"), format!("{error:?}")] {
        assert!(!text.contains(&secret_hex[..16]), "{text}");
    }
}

#[test]
fn strict_parsing_rejects_bad_keys_missing_fields_and_long_metadata() {
    let (package, _) = package();
    let base: serde_json::Value = serde_json::from_slice(&package.to_json()).unwrap();
    for field in ["relayKey", "writerKey", "ownerPeerKey"] {
        let mut json = base.clone();
        json[field] = "ab".into();
        assert_eq!(
            WriterPackage::from_json(json.to_string().as_bytes()).unwrap_err(),
            PackageError::BadKey { field }
        );
    }
    let mut json = base.clone();
    json.as_object_mut().unwrap().remove("writerSecret");
    assert!(matches!(
        WriterPackage::from_json(json.to_string().as_bytes()),
        Err(PackageError::MalformedJson { .. })
    ));
    let mut json = base.clone();
    json["metadata"]["identifier"] = "x".repeat(MAX_METADATA_FIELD_BYTES + 1).into();
    assert_eq!(
        WriterPackage::from_json(json.to_string().as_bytes()).unwrap_err(),
        PackageError::TooLong {
            field: "metadata.identifier",
            max: MAX_METADATA_FIELD_BYTES
        }
    );
    let mut json = base;
    json["metadata"]["name"] = serde_json::Value::Null;
    let parsed = WriterPackage::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.metadata.name, None);
    assert!(matches!(
        WriterPackage::from_json(&vec![b' '; MAX_PACKAGE_JSON_BYTES + 1]),
        Err(PackageError::TooLong {
            field: "package",
            ..
        })
    ));
}

#[test]
fn sealed_deposit_opens_at_the_escrow_and_leases_open_at_the_gateway() {
    let (package, writer) = package();
    let escrow = crypto_box::SecretKey::generate(&mut OsRng);
    let deposit = package.seal_to(&escrow.public_key(), &mut OsRng).unwrap();
    let opened = WriterPackage::open_deposit(&escrow, &deposit).unwrap();
    opened.validate(&package.relay_key).unwrap();

    let session = crypto_box::SecretKey::generate(&mut OsRng);
    let lease = seal::seal_lease(
        &escrow,
        &session.public_key(),
        &opened.to_json(),
        &mut OsRng,
    )
    .unwrap();
    let released = WriterPackage::open_lease(&session, &escrow.public_key(), &lease).unwrap();
    released.validate(&package.relay_key).unwrap();
    assert_eq!(released.signing_key().to_bytes(), writer.to_bytes());

    let wrong = crypto_box::SecretKey::generate(&mut OsRng);
    assert_eq!(
        WriterPackage::open_deposit(&wrong, &deposit).unwrap_err(),
        PackageError::Seal(SealError::AuthenticationFailed)
    );
}
