use super::*;
use crate::peer_link::record::{Record, SealedRecordDecoder, encode_welcome_record};
use hypergate_core::wire::MAX_FRAME_BYTES;

fn identity(seed: u8) -> Identity {
    Identity::from_signing_key(SigningKey::from_bytes(&[seed; 32]))
}

/// Runs both sides in memory; returns (initiator's session, responder's session).
fn handshake(
    worker: &Identity,
    gateway: &Identity,
    pinned: PeerId,
) -> Result<(Session, Session), HandshakeError> {
    let (initiator, first) = Initiator::start(worker, pinned)?;
    let (awaiting, second) = Responder::new(gateway)?.respond(&first)?;
    let (worker_session, third) = initiator.finish(&second)?;
    let gateway_session = awaiting.finish(&third)?;
    Ok((worker_session, gateway_session))
}

#[test]
fn both_sides_learn_each_others_proven_identity_and_share_the_handshake_hash() {
    let (worker, gateway) = (identity(1), identity(2));
    let (worker_session, gateway_session) =
        handshake(&worker, &gateway, gateway.peer_id()).unwrap();
    assert_eq!(worker_session.remote(), gateway.peer_id());
    assert_eq!(gateway_session.remote(), worker.peer_id());
    assert_eq!(
        worker_session.handshake_hash(),
        gateway_session.handshake_hash()
    );
}

#[test]
fn split_keys_pair_each_sides_sealer_with_the_others_opener() {
    let (worker, gateway) = (identity(1), identity(2));
    let (worker_session, gateway_session) =
        handshake(&worker, &gateway, gateway.peer_id()).unwrap();
    let (_, mut worker_sealer, worker_opener) = worker_session.into_parts();
    let (_, mut gateway_sealer, gateway_opener) = gateway_session.into_parts();

    for (sealer, opener) in [
        (&mut worker_sealer, gateway_opener),
        (&mut gateway_sealer, worker_opener),
    ] {
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        encode_welcome_record(&mut plain);
        sealer.seal_into(&plain, &mut wire).unwrap();
        let mut decoder = SealedRecordDecoder::new(opener, MAX_FRAME_BYTES);
        decoder.push(&wire);
        assert_eq!(decoder.next_record().unwrap(), Some(Record::Welcome));
    }
}

#[test]
fn a_responder_with_another_key_is_refused_before_the_worker_reveals_itself() {
    let (worker, impostor, real_gateway) = (identity(1), identity(3), identity(2));
    let (initiator, first) = Initiator::start(&worker, real_gateway.peer_id()).unwrap();
    let (_, second) = Responder::new(&impostor).unwrap().respond(&first).unwrap();
    match initiator.finish(&second) {
        Err(HandshakeError::UnexpectedRemote { expected, got }) => {
            assert_eq!(expected, real_gateway.peer_id());
            assert_eq!(got, impostor.peer_id());
        }
        other => panic!("expected UnexpectedRemote, got {other:?}"),
    }
}

#[test]
fn a_proof_does_not_verify_for_another_role_hash_or_static_key() {
    let signer = identity(4);
    let encoded = IdentityProof::sign(signer.signing_key(), ROLE_RESPONDER, &[1; 64], &[2; 32]);
    let proof = decode_identity_proof(&encoded).unwrap();
    assert_eq!(proof.peer(), signer.peer_id());
    assert!(proof.verify(ROLE_RESPONDER, &[1; 64], &[2; 32]).is_ok());
    for (role, hash, key) in [
        (ROLE_INITIATOR, [1; 64], [2; 32]),
        (ROLE_RESPONDER, [9; 64], [2; 32]),
        (ROLE_RESPONDER, [1; 64], [9; 32]),
    ] {
        assert!(matches!(
            proof.verify(role, &hash, &key),
            Err(HandshakeError::BadSignature { .. })
        ));
    }
}

#[test]
fn identity_proofs_of_the_wrong_size_version_or_key_are_malformed() {
    let good = IdentityProof::sign(
        identity(5).signing_key(),
        ROLE_INITIATOR,
        &[0; 64],
        &[0; 32],
    );
    assert!(decode_identity_proof(&good).is_ok());
    assert!(matches!(
        decode_identity_proof(&good[..96]),
        Err(HandshakeError::Malformed { .. })
    ));
    let mut wrong_version = good.clone();
    wrong_version[0] = 2;
    assert!(matches!(
        decode_identity_proof(&wrong_version),
        Err(HandshakeError::Malformed { .. })
    ));
    // About half of all 32-byte strings are not ed25519 point encodings; use the first one.
    let not_a_point = (2u8..=255)
        .map(|first| {
            let mut key = [0u8; 32];
            key[0] = first;
            key
        })
        .find(|key| VerifyingKey::from_bytes(key).is_err())
        .unwrap();
    let mut bad_key = good;
    bad_key[1..33].copy_from_slice(&not_a_point);
    assert!(matches!(
        decode_identity_proof(&bad_key),
        Err(HandshakeError::Malformed { .. })
    ));
}

#[test]
fn a_first_message_for_another_protocol_is_refused_with_a_clear_error() {
    let params = NOISE_PARAMS.parse().unwrap();
    let mut stranger = snow::Builder::new(params)
        .prologue(LINK_PROTOCOL)
        .unwrap()
        .local_private_key(&[7; 32])
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut first = vec![0; 256];
    let len = stranger.write_message(b"some/other/1", &mut first).unwrap();
    first.truncate(len);
    let refused = Responder::new(&identity(2)).unwrap().respond(&first);
    assert!(matches!(
        refused,
        Err(HandshakeError::Malformed {
            detail: "peer does not speak hypergate/peer-link/1"
        })
    ));
}

#[test]
fn a_tampered_third_message_is_refused() {
    let (worker, gateway) = (identity(1), identity(2));
    let (initiator, first) = Initiator::start(&worker, gateway.peer_id()).unwrap();
    let (awaiting, second) = Responder::new(&gateway).unwrap().respond(&first).unwrap();
    let (_, mut third) = initiator.finish(&second).unwrap();
    let last = third.len() - 1;
    third[last] ^= 1;
    assert!(matches!(
        awaiting.finish(&third),
        Err(HandshakeError::Noise { .. })
    ));
}
