//! The codec's invariants, over arbitrary frames and arbitrary bytes.

use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies;
use crate::wire::*;

/// Decoding must either fail or yield a frame that re-encodes to something decoding to itself
/// (the fuzz target's check, run on every proptest input too).
fn assert_decode_is_total(bytes: &[u8]) {
    if let Ok(frame) = decode(bytes) {
        let again = encode(&frame).unwrap();
        assert_eq!(decode(&again).unwrap(), frame);
    }
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(bytes);
    while let Ok(Some(_)) = decoder.next_frame() {}
}

proptest! {
    #[test]
    fn decode_inverts_encode_for_every_frame(frame in strategies::frame()) {
        let bytes = encode(&frame).unwrap();
        prop_assert_eq!(decode(&bytes), Ok(frame));
    }

    #[test]
    fn encoding_is_deterministic(frame in strategies::frame()) {
        prop_assert_eq!(encode(&frame).unwrap(), encode(&frame.clone()).unwrap());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        assert_decode_is_total(&bytes);
    }

    #[test]
    fn decode_never_panics_on_corrupted_frames(
        frame in strategies::frame(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        // Random bytes rarely get past the version; corrupting valid frames reaches the body.
        let mut bytes = encode(&frame).unwrap();
        for (at, byte, how) in edits {
            let at = at.index(bytes.len().max(1));
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at.min(bytes.len()), byte),
                _ => bytes.truncate(at),
            }
        }
        assert_decode_is_total(&bytes);
    }

    #[test]
    fn any_other_version_prefix_is_unsupported_whatever_follows(
        version in any::<u16>().prop_filter("not ours", |v| *v != PROTOCOL_VERSION),
        body in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend(body);
        prop_assert_eq!(
            decode(&bytes),
            Err(WireError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION })
        );
    }

    #[test]
    fn changing_the_first_byte_of_a_frame_makes_it_unsupported(
        frame in strategies::frame(),
        first in any::<u8>().prop_filter("changed", |b| *b != PROTOCOL_VERSION.to_be_bytes()[0]),
    ) {
        let mut bytes = encode(&frame).unwrap();
        bytes[0] = first;
        let is_unsupported = matches!(decode(&bytes), Err(WireError::UnsupportedVersion { .. }));
        prop_assert!(is_unsupported);
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_rejected(frame in strategies::frame()) {
        let bytes = encode(&frame).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(decode(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        }
    }

    #[test]
    fn frame_decoder_yields_the_same_frames_however_the_stream_is_chunked(
        frames in vec(strategies::frame(), 0..6),
        chunk_sizes in vec(1usize..40, 1..16),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend(encode_length_prefixed(frame).unwrap());
        }
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut received = Vec::new();
        let mut rest = stream.as_slice();
        for size in chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            decoder.push(&[]); // a read that returned nothing changes nothing
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame().unwrap() {
                received.push(frame);
            }
        }
        while let Some(frame) = decoder.next_frame().unwrap() {
            received.push(frame);
        }
        prop_assert_eq!(received, frames);
        prop_assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn length_prefix_states_the_encoded_frame_length(frame in strategies::frame()) {
        let prefixed = encode_length_prefixed(&frame).unwrap();
        let plain = encode(&frame).unwrap();
        let declared = u32::from_be_bytes(prefixed[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(declared, plain.len());
        prop_assert_eq!(&prefixed[4..], plain.as_slice());
    }
}
