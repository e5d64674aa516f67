//! Properties: no input makes the handshake or the record decoders panic, and none completes a
//! handshake without the keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use futures_lite::future::block_on;
use hypergate_adapters::peer_link::{
    AcceptPolicy, Initiator, Responder, accept, connect, decode_identity_proof,
    decode_record_stream, decode_sealed_stream,
};
use hypergate_core::wire::MAX_FRAME_BYTES;
use peer_link_support::*;
use proptest::prelude::*;

/// A valid message 1, framed for the stream.
fn framed_first_message() -> Vec<u8> {
    let (_, first) = Initiator::start(&worker_identity(), gateway_identity().peer_id()).unwrap();
    let mut framed = u16::try_from(first.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&first);
    framed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_responder_refuses_any_bytes_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let mut stream = Scripted::new(bytes);
        let result = block_on(accept(
            &mut stream,
            &gateway_identity(),
            &AcceptPolicy::Open,
            &test_config(),
            never,
        ));
        prop_assert!(result.is_err());
    }

    #[test]
    fn the_responder_refuses_any_third_message_after_a_valid_first_without_panicking(
        third in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let mut script = framed_first_message();
        script.extend_from_slice(&u16::try_from(third.len()).unwrap().to_be_bytes());
        script.extend_from_slice(&third);
        let mut stream = Scripted::new(script);
        let result = block_on(accept(
            &mut stream,
            &gateway_identity(),
            &AcceptPolicy::Open,
            &test_config(),
            never,
        ));
        prop_assert!(result.is_err());
        // It answered message 1 with its own message 2 before refusing message 3.
        prop_assert!(stream.written.len() > 2);
    }

    #[test]
    fn the_sans_io_responder_refuses_any_first_message_but_a_valid_one(
        first in proptest::collection::vec(any::<u8>(), 0..1200)
    ) {
        let result = Responder::new(&gateway_identity()).unwrap().respond(&first);
        prop_assert!(result.is_err());
    }

    #[test]
    fn the_initiator_refuses_any_answer_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let mut stream = Scripted::new(bytes);
        let result = block_on(connect(
            &mut stream,
            &worker_identity(),
            gateway_identity().peer_id(),
            &test_config(),
            never,
        ));
        prop_assert!(result.is_err());
    }

    #[test]
    fn identity_proof_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let decoded = decode_identity_proof(&bytes);
        prop_assert!(bytes.len() == 97 || decoded.is_err());
    }

    #[test]
    fn sealed_stream_decoding_never_panics_and_opens_nothing_unsealed(
        key in any::<[u8; 32]>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        // Without the sealer's key nothing opens: only empty input decodes (to nothing).
        if let Ok(records) = decode_sealed_stream(key, &bytes, MAX_FRAME_BYTES) {
            prop_assert!(bytes.is_empty() && records.is_empty());
        }
    }

    #[test]
    fn record_stream_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_record_stream(&bytes, 1 << 16);
    }
}
