use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_box::aead::OsRng;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;

use super::*;

fn envelope_json() -> Value {
    json!({
        "cipherText": BASE64.encode([1u8; 48]),
        "nonce": BASE64.encode([2u8; 24]),
        "publicKey": BASE64.encode([3u8; 32]),
    })
}

/// A deposit body signed by `relay`.
fn deposit(relay: &SigningKey) -> Map<String, Value> {
    let mut body = json!({
        "relayKey": hex::encode(relay.verifying_key().as_bytes()),
        "ownerPeerKey": "22".repeat(32),
        "encryptedPackage": envelope_json(),
        "policyVersion": "2024-09-autobase-escrow-v1",
        "metadata": {"identifier": "npub1x:relay", "name": null, "writerHash": "ab".repeat(32)},
        "unlockConditions": {"peerLivenessTimeoutMs": 45000},
        "permittedRequesters": ["33".repeat(32)],
        "expiresAt": 1_700_086_400_000u64,
        "createdAt": 1_700_000_000_000u64,
    })
    .as_object()
    .unwrap()
    .clone();
    let digest = deposit_signing_digest(&body);
    body.insert(
        "ownerSignature".into(),
        Value::String(hex::encode(relay.sign(&digest).to_bytes())),
    );
    body
}

fn bytes(map: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(map).unwrap()
}

#[test]
fn a_well_formed_deposit_parses_and_its_owner_signature_verifies() {
    let relay = SigningKey::generate(&mut OsRng);
    let parsed = parse_deposit_request(&bytes(&deposit(&relay))).unwrap();
    assert_eq!(parsed.relay_key.0, relay.verifying_key().to_bytes());
    assert_eq!(parsed.permitted_requesters.len(), 1);
    assert_eq!(parsed.created_at, UnixTime(1_700_000_000_000));
    assert_eq!(parsed.stated_writer_hash(), Some("ab".repeat(32).as_str()));
    parsed.verify_owner_signature().unwrap();
}

#[test]
fn the_signing_digest_is_sha256_of_the_sorted_body_without_the_signature() {
    let body = json!({"b": 1, "a": {"d": 2, "c": 3}, "ownerSignature": "ignored"});
    let digest = deposit_signing_digest(body.as_object().unwrap());
    let expected: [u8; 32] = Sha256::digest(br#"{"a":{"c":3,"d":2},"b":1}"#).into();
    assert_eq!(digest, expected);
}

#[test]
fn a_deposit_signed_by_another_key_or_altered_after_signing_fails_verification() {
    let relay = SigningKey::generate(&mut OsRng);
    let other = SigningKey::generate(&mut OsRng);
    // Signed by the wrong key, relayKey unchanged.
    let mut forged = deposit(&other);
    forged.insert(
        "relayKey".into(),
        Value::String(hex::encode(relay.verifying_key().as_bytes())),
    );
    assert!(
        parse_deposit_request(&bytes(&forged))
            .unwrap()
            .verify_owner_signature()
            .is_err()
    );
    // Signed correctly, then a permitted gateway added.
    let mut altered = deposit(&relay);
    altered.insert(
        "permittedRequesters".into(),
        json!(["33".repeat(32), "44".repeat(32)]),
    );
    assert!(
        parse_deposit_request(&bytes(&altered))
            .unwrap()
            .verify_owner_signature()
            .is_err()
    );
}

#[test]
fn malformed_deposits_name_the_field_at_fault() {
    let relay = SigningKey::generate(&mut OsRng);
    let with = |key: &str, value: Value| {
        let mut body = deposit(&relay);
        body.insert(key.into(), value);
        parse_deposit_request(&bytes(&body)).unwrap_err()
    };
    let without = |key: &str| {
        let mut body = deposit(&relay);
        body.remove(key);
        parse_deposit_request(&bytes(&body)).unwrap_err()
    };
    assert_eq!(without("relayKey"), RequestError::MissingField("relayKey"));
    assert_eq!(
        without("createdAt"),
        RequestError::MissingField("createdAt")
    );
    assert_eq!(
        without("permittedRequesters"),
        RequestError::MissingField("permittedRequesters")
    );
    assert_eq!(
        with("relayKey", json!("abc")),
        RequestError::BadKey("relayKey")
    );
    assert_eq!(
        with("relayKey", json!(42)),
        RequestError::WrongType {
            field: "relayKey",
            expected: "a string"
        }
    );
    assert_eq!(with("expiresAt", json!("tomorrow")).code(), "wrong-type");
    assert_eq!(with("expiresAt", json!(-1)).code(), "wrong-type");
    assert_eq!(with("expiresAt", json!(1.5)).code(), "wrong-type");
    assert_eq!(
        with("permittedRequesters", json!([])).code(),
        "out-of-bounds"
    );
    assert_eq!(
        with("permittedRequesters", json!(["zz"])),
        RequestError::BadKey("permittedRequesters")
    );
    assert_eq!(with("ownerSignature", json!("00")).code(), "wrong-length");
    assert_eq!(with("metadata", json!([1])).code(), "wrong-type");
    assert_eq!(
        with("metadata", json!({"writerHash": "nope"})),
        RequestError::BadKey("metadata.writerHash")
    );
    assert_eq!(
        with("policyVersion", json!("x".repeat(MAX_TEXT_BYTES + 1))).code(),
        "out-of-bounds"
    );
    assert_eq!(
        with("policyVersion", json!("bad\u{0}version")).code(),
        "out-of-bounds"
    );
}

#[test]
fn envelope_errors_distinguish_bad_base64_from_wrong_lengths() {
    let relay = SigningKey::generate(&mut OsRng);
    let with_envelope = |field: &str, value: Value| {
        let mut body = deposit(&relay);
        let mut envelope = envelope_json();
        envelope[field] = value;
        body.insert("encryptedPackage".into(), envelope);
        parse_deposit_request(&bytes(&body)).unwrap_err()
    };
    assert_eq!(
        with_envelope("nonce", json!("!!!not base64!!!")),
        RequestError::BadBase64("encryptedPackage.nonce")
    );
    assert_eq!(
        with_envelope("publicKey", json!(BASE64.encode([0u8; 31]))),
        RequestError::WrongLength {
            field: "encryptedPackage.publicKey",
            expected: 32,
            actual: 31
        }
    );
    assert_eq!(
        with_envelope("cipherText", json!(BASE64.encode([0u8; 4]))).code(),
        "invalid-envelope"
    );
    assert_eq!(
        with_envelope("extra", json!("x")).code(),
        "invalid-envelope"
    );
}

#[test]
fn bodies_that_are_not_objects_or_too_large_are_refused_unread() {
    assert_eq!(
        parse_unlock_request(b"[]").unwrap_err(),
        RequestError::NotAnObject
    );
    assert_eq!(
        parse_revoke_request(b"null").unwrap_err(),
        RequestError::NotAnObject
    );
    assert_eq!(
        parse_deposit_request(b"{\"a\":").unwrap_err().code(),
        "invalid-json"
    );
    assert_eq!(
        parse_unlock_request(b"").unwrap_err().code(),
        "invalid-json"
    );
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        parse_deposit_request(&huge).unwrap_err(),
        RequestError::TooLarge
    );
    let deep = "[".repeat(10_000);
    assert_eq!(
        parse_unlock_request(deep.as_bytes()).unwrap_err().code(),
        "invalid-json"
    );
}

#[test]
fn unlock_bodies_need_a_relay_and_a_32_byte_base64_session_key() {
    let good = json!({
        "relayKey": "11".repeat(32),
        "requesterId": "22".repeat(32),
        "sessionPublicKey": BASE64.encode([9u8; 32]),
        "evidence": {"registration": {"escrowEnabled": true}, "peerHealth": {"healthyCount": 0}},
    });
    let parsed = parse_unlock_request(good.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.session_public_key, [9u8; 32]);
    assert_eq!(parsed.requester_id, Some(PeerId([0x22; 32])));
    let evidence = parsed.evidence.unwrap();
    assert_eq!(evidence.escrow_enabled, Some(true));
    assert_eq!(evidence.healthy_peer_count, Some(0));
    assert_eq!(evidence.last_healthy_at, None);

    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        parse_unlock_request(body.to_string().as_bytes()).unwrap_err()
    };
    assert_eq!(
        with("sessionPublicKey", json!("%%%")),
        RequestError::BadBase64("sessionPublicKey")
    );
    assert_eq!(
        with("sessionPublicKey", json!(BASE64.encode([1u8; 16]))),
        RequestError::WrongLength {
            field: "sessionPublicKey",
            expected: 32,
            actual: 16
        }
    );
    assert_eq!(
        with("sessionPublicKey", json!("A".repeat(10_000))).code(),
        "wrong-length"
    );
    assert_eq!(
        with("requesterId", json!("22")),
        RequestError::BadKey("requesterId")
    );
    assert_eq!(with("evidence", json!("all good")).code(), "wrong-type");
    // Absent evidence is allowed here: the policy judges it as missing.
    let mut no_evidence = good.clone();
    no_evidence.as_object_mut().unwrap().remove("evidence");
    assert!(
        parse_unlock_request(no_evidence.to_string().as_bytes())
            .unwrap()
            .evidence
            .is_none()
    );
}

#[test]
fn revoke_targets_follow_the_originals_precedence_and_defaults() {
    let parse = |value: Value| parse_revoke_request(value.to_string().as_bytes());
    let both = parse(json!({"escrowId": "escrow_1", "relayKey": "11".repeat(32)})).unwrap();
    assert_eq!(both.target, RevokeBodyTarget::EscrowId("escrow_1".into()));
    assert_eq!(both.reason, "unspecified");
    assert_eq!(both.actor, None);
    let relay =
        parse(json!({"relayKey": "11".repeat(32), "actor": "ops", "reason": "rotation"})).unwrap();
    assert_eq!(relay.target, RevokeBodyTarget::Relay(RelayKey([0x11; 32])));
    assert_eq!(relay.actor.as_deref(), Some("ops"));
    let owner = parse(json!({"ownerPeerKey": "22".repeat(32)})).unwrap();
    assert_eq!(owner.target, RevokeBodyTarget::Owner(PeerId([0x22; 32])));
    assert_eq!(parse(json!({})).unwrap_err().code(), "missing-field");
    assert_eq!(
        parse(json!({"escrowId": ""})).unwrap_err().code(),
        "out-of-bounds"
    );
    assert_eq!(
        parse(json!({"escrowId": 5})).unwrap_err().code(),
        "wrong-type"
    );
    assert_eq!(
        parse(json!({"relayKey": "11".repeat(32), "reason": "x".repeat(300)}))
            .unwrap_err()
            .code(),
        "out-of-bounds"
    );
}

#[test]
fn lease_ids_must_be_the_exact_canonical_form() {
    let relay = "11".repeat(32);
    let ok = json!({"leaseId": format!("lease-{relay}-3")});
    assert_eq!(
        parse_release_request(ok.to_string().as_bytes())
            .unwrap()
            .lease_id,
        LeaseId {
            relay: RelayKey([0x11; 32]),
            epoch: 3
        }
    );
    for bad in [
        format!("lease-{relay}-03"),
        format!("lease-{relay}-+3"),
        format!("lease-{}-3", "AB".repeat(32)),
        format!("lease-{relay}"),
        "lease_x".to_owned(),
    ] {
        let body = json!({"leaseId": bad});
        assert!(
            parse_renew_request(body.to_string().as_bytes()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn release_reasons_map_to_end_reasons() {
    let relay = "11".repeat(32);
    let reason = |text: Option<&str>| {
        let mut body = json!({"leaseId": format!("lease-{relay}-1")});
        if let Some(text) = text {
            body["reason"] = json!(text);
        }
        parse_release_request(body.to_string().as_bytes())
            .unwrap()
            .reason
    };
    assert_eq!(reason(None), EndReason::PeerHealthy);
    assert_eq!(reason(Some("worker-resync")), EndReason::WorkerResync);
    assert_eq!(reason(Some("shutdown")), EndReason::Shutdown);
    assert_eq!(
        reason(Some("operator asked")),
        EndReason::Manual {
            reason: "operator asked".into()
        }
    );
}

#[test]
fn parsers_never_panic_on_arbitrary_bytes() {
    // A cheap, deterministic sweep of odd inputs (the fuzz targets go further).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let samples = [
        &b"{\"relayKey\":"[..],
        b"{\"relayKey\":\"\\u0000\"}",
        b"{\"permittedRequesters\":[null,1,{}]}",
        b"{\"encryptedPackage\":{\"cipherText\":\"====\"}}",
        b"\xff\xfe{}",
        b"{\"expiresAt\":1e400}",
    ];
    for sample in samples {
        let _ = parse_deposit_request(sample);
        let _ = parse_unlock_request(sample);
        let _ = parse_revoke_request(sample);
    }
    for _ in 0..2_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = usize::try_from(seed % 64).unwrap();
        let input: Vec<u8> = (0..len)
            .map(|i| b"{}[]\":,0123456789abcdefnulltrue "[(seed as usize + i * 7) % 32])
            .collect();
        let _ = parse_deposit_request(&input);
        let _ = parse_unlock_request(&input);
        let _ = parse_revoke_request(&input);
    }
}

#[test]
fn stable_stringify_sorts_keys_recursively_and_keeps_array_order() {
    let value = json!({"b": [3, {"z": 1, "a": null}], "a": "x\"y", "c": {"y": true, "x": 1.5}});
    assert_eq!(
        stable_stringify(&value),
        r#"{"a":"x\"y","b":[3,{"a":null,"z":1}],"c":{"x":1.5,"y":true}}"#
    );
}
