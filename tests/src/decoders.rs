//! The decoders under two fuzz entry points. Storage:  `storage_decode`: the first
//! input byte picks the decoder, the rest is its input. Each decoder must return
//! a value or an error for any bytes (never panic, never allocate without bound),
//! and a value it returns must encode back to bytes that decode to the same value.
//!
//! Network-facing: `service_decode` ([`check_service_input`]) — the escrow API's
//! request bodies and the peer link's handshake and record decoders.
//!
//! The fuzz targets and the corpus replay (`tests/fuzz_corpus.rs`) call the same
//! functions, so CI replays exactly what the fuzzer ran.

use hypergate_adapters::crypto::SealedEnvelope;
use hypergate_adapters::drive::{decode_meta_block, encode_meta_block};
use hypergate_adapters::index::codec;
use hypergate_adapters::log::{decode_proof, encode_proof};
use hypergate_core::relay::RelayOp;

/// Which decoder an input is for (its first byte, modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDecoder {
    /// [`RelayOp::decode`]: relay log entries.
    RelayOp,
    /// [`decode_proof`]: hypercore proofs on the peer link.
    Proof,
    /// [`SealedEnvelope::from_json`]: sealed writer packages and leases.
    SealedEnvelope,
    /// [`decode_meta_block`]: drive metadata log entries.
    DriveMeta,
    /// [`codec::decode`]: events stored in the relay index.
    IndexRecord,
}

impl StorageDecoder {
    /// Every decoder, in selector order.
    pub const ALL: [StorageDecoder; 5] = [
        StorageDecoder::RelayOp,
        StorageDecoder::Proof,
        StorageDecoder::SealedEnvelope,
        StorageDecoder::DriveMeta,
        StorageDecoder::IndexRecord,
    ];

    /// The selector byte of this decoder.
    #[must_use]
    pub fn selector(self) -> u8 {
        match self {
            StorageDecoder::RelayOp => 0,
            StorageDecoder::Proof => 1,
            StorageDecoder::SealedEnvelope => 2,
            StorageDecoder::DriveMeta => 3,
            StorageDecoder::IndexRecord => 4,
        }
    }
}

/// Runs one fuzz input; returns whether the decoder accepted it. Panics (the
/// fuzzer's signal) only if a decoder panics or an accepted value does not
/// round-trip.
pub fn check_storage_input(data: &[u8]) -> bool {
    let Some((&selector, input)) = data.split_first() else {
        return false;
    };
    let decoder = StorageDecoder::ALL[usize::from(selector) % StorageDecoder::ALL.len()];
    match decoder {
        StorageDecoder::RelayOp => match RelayOp::decode(input) {
            Ok(op) => {
                assert_eq!(RelayOp::decode(&op.encode()).ok(), Some(op));
                true
            }
            Err(_) => false,
        },
        StorageDecoder::Proof => match decode_proof(input) {
            Ok(proof) => {
                assert_eq!(decode_proof(&encode_proof(&proof)).ok(), Some(proof));
                true
            }
            Err(_) => false,
        },
        StorageDecoder::SealedEnvelope => match SealedEnvelope::from_json(input) {
            Ok(envelope) => {
                let again = SealedEnvelope::from_json(envelope.to_json().as_bytes());
                assert_eq!(again.ok().map(|e| e.to_json()), Some(envelope.to_json()));
                true
            }
            Err(_) => false,
        },
        StorageDecoder::DriveMeta => match decode_meta_block(input) {
            Ok(block) => {
                assert_eq!(
                    decode_meta_block(&encode_meta_block(&block)).ok(),
                    Some(block)
                );
                true
            }
            Err(_) => false,
        },
        StorageDecoder::IndexRecord => match codec::decode(input) {
            Ok(event) => {
                if let Ok(bytes) = codec::encode(&event) {
                    assert_eq!(codec::decode(&bytes).ok(), Some(event));
                }
                true
            }
            Err(_) => false,
        },
    }
}

/// Runs one input through the network-facing parsers, for the `service_decode`
/// fuzz target: the first byte picks the parser — the escrow API's five request
/// bodies, and the peer link's identity proof, handshake responder, record
/// stream and sealed stream. None may panic; returns whether the input was
/// accepted.
pub fn check_service_input(data: &[u8]) -> bool {
    use hypergate_adapters::crypto::Identity;
    use hypergate_adapters::escrow_wire as escrow;
    use hypergate_adapters::peer_link::{
        Responder, decode_identity_proof, decode_record_stream, decode_sealed_stream,
    };

    /// Frames bigger than this are refused by the record decoders (as a link would).
    const MAX_FRAME: usize = 1 << 20;
    let Some((&selector, input)) = data.split_first() else {
        return false;
    };
    match selector % 9 {
        0 => escrow::parse_deposit_request(input).is_ok(),
        1 => escrow::parse_unlock_request(input).is_ok(),
        2 => escrow::parse_revoke_request(input).is_ok(),
        3 => escrow::parse_renew_request(input).is_ok(),
        4 => escrow::parse_release_request(input).is_ok(),
        5 => decode_identity_proof(input).is_ok(),
        6 => {
            let identity =
                Identity::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
            Responder::new(&identity).is_ok_and(|responder| responder.respond(input).is_ok())
        }
        7 => decode_record_stream(input, MAX_FRAME).is_ok(),
        _ => decode_sealed_stream([9; 32], input, MAX_FRAME).is_ok(),
    }
}
