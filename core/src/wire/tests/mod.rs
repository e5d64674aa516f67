//! Tests of the codec and the stream framing; properties in `properties.rs`, every bound in
//! `bounds.rs`, the fuzz seed corpus in `corpus.rs`.

mod bounds;
mod corpus;
mod properties;
mod strategies;

use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;
use crate::wire::*;

pub(super) fn relay() -> RelayKey {
    RelayKey([0x11; 32])
}

/// postcard's varint of `n`.
pub(super) fn varint(n: u64) -> Vec<u8> {
    postcard::to_allocvec(&n).unwrap()
}

fn text<const MAX: usize>(value: &str) -> BoundedString<MAX> {
    BoundedString::new(value).unwrap()
}

fn list<T, const MAX: usize>(items: Vec<T>) -> BoundedVec<T, MAX> {
    BoundedVec::new(items).unwrap()
}

/// One realistic frame of every message kind, in wire-tag order.
pub(super) fn sample_frames() -> Vec<Frame> {
    let owner_core = [0x44; 32];
    let messages = vec![
        Message::Hello(Hello {
            peer_id: PeerId([0x22; 32]),
            role: PeerRole::Worker,
            agent: text("hypergate-worker/0.1.0"),
            capabilities: list(Capability::ALL.to_vec()),
        }),
        Message::RegisterRelays(RegisterRelays {
            relays: list(vec![RelayRegistration {
                relay_key: relay(),
                identifiers: list(vec![text("npub1garden:garden")]),
                metadata: RelayMetadata {
                    name: Some(text("Garden")),
                    description: Some(text("A relay about plants")),
                    avatar_url: Some(text("https://example.invalid/garden.png")),
                    is_public: Some(true),
                    metadata_updated_at: Some(UnixTime(1_700_000_000_000)),
                },
                requires_auth: true,
                escrow: Some(EscrowRegistration {
                    escrow_id: text("escrow-7f3a"),
                    policy_version: text("2024-06"),
                    permitted_gateways: list(vec![PeerId([0x33; 32])]),
                    expires_at: UnixTime(1_800_000_000_000),
                }),
            }]),
        }),
        Message::RegisterAck(RegisterAck {
            accepted: list(vec![relay()]),
            rejected: list(vec![RejectedRelay {
                relay_key: RelayKey([0x55; 32]),
                reason: text("not-owner"),
            }]),
            lease_epochs: list(vec![RelayLeaseEpoch {
                relay_key: relay(),
                epoch: 3,
            }]),
        }),
        Message::Heartbeat(Heartbeat {
            seq: 42,
            sent_at: UnixTime(1_700_000_000_123),
        }),
        Message::HeartbeatAck(Heartbeat {
            seq: 42,
            sent_at: UnixTime(1_700_000_000_123),
        }),
        Message::NostrFrame(NostrFrame {
            relay_key: relay(),
            session: 9,
            frame: text(r#"["REQ","sub1",{"kinds":[1],"limit":10}]"#),
        }),
        Message::HttpRequest(HttpRequest {
            method: HttpMethod::Put,
            path: text("/drive/npub1garden:garden/notes.txt"),
            headers: list(vec![Header {
                name: text("content-type"),
                value: text("text/plain"),
            }]),
            body: HttpBody::new(&b"hello drive"[..]).unwrap(),
        }),
        Message::HttpResponse(HttpResponse {
            status: 202,
            headers: BoundedVec::empty(),
            body: HttpBody::new(&br#"{"status":"stored"}"#[..]).unwrap(),
        }),
        Message::MirrorAdvertise(MirrorAdvertise {
            cores: list(vec![
                CoreAdvert {
                    core_key: owner_core,
                    relay_key: relay(),
                    role: CoreRole::Owner,
                    length: 120,
                    announce: false,
                    priority: 1,
                },
                CoreAdvert {
                    core_key: [0x66; 32],
                    relay_key: relay(),
                    role: CoreRole::GatewayWriter,
                    length: 3,
                    announce: false,
                    priority: 2,
                },
            ]),
        }),
        Message::MirrorRangeRequest(MirrorRangeRequest::new(owner_core, 100, 120).unwrap()),
        Message::MirrorRangeResponse(MirrorRangeResponse {
            core_key: owner_core,
            start: 100,
            blocks: list(vec![
                MirrorBlock::new(&b"block-100"[..]).unwrap(),
                MirrorBlock::new(&b"block-101"[..]).unwrap(),
            ]),
            proof: BoundedBytes::new(vec![0xaa; 8]).unwrap(),
        }),
        Message::PendingWritePush(PendingWritePush {
            push_id: 0x1d2c_3b4a,
            relay_key: relay(),
            state: PendingState::Pending,
            reason: text("replica-write"),
            types: list(vec![PendingType::Event, PendingType::Drive]),
            drive_identifier: Some(text("npub1garden:garden")),
            drive_version: Some(17),
            pending_since: UnixTime(1_700_000_100_000),
            updated_at: UnixTime(1_700_000_200_000),
            lease_version: Some(3),
            lease_active: true,
            cleared_at: None,
        }),
        Message::PushAck(PushAck {
            push_id: 0x1d2c_3b4a,
            relay_key: relay(),
            updated_at: UnixTime(1_700_000_200_000),
            status: AckStatus::Accepted,
        }),
        Message::ResyncComplete(ResyncComplete {
            relay_key: relay(),
            resynced_through: UnixTime(1_700_000_300_000),
            gateway_writer_length: 3,
        }),
        Message::Error(ErrorMessage {
            code: ErrorCode::NotFound,
            message: BoundedString::truncating("relay is not served by this worker"),
        }),
        Message::ResyncAck(ResyncAck {
            relay_key: relay(),
            resynced_through: UnixTime(1_700_000_300_000),
            status: ResyncStatus::Cleared,
        }),
        Message::MirrorProofRequest(MirrorProofRequest {
            core_key: owner_core,
            signed_length: 120,
            blocks: list(vec![(100, 2), (101, 0), (102, 1)]),
        }),
    ];
    messages
        .into_iter()
        .zip(1..)
        .map(|(message, id)| Frame::new(id, message))
        .collect()
}

/// Wire tags in order; the index of a kind is its postcard variant tag.
const KINDS_IN_TAG_ORDER: [&str; 17] = [
    "hello",
    "register_relays",
    "register_ack",
    "heartbeat",
    "heartbeat_ack",
    "nostr_frame",
    "http_request",
    "http_response",
    "mirror_advertise",
    "mirror_range_request",
    "mirror_range_response",
    "pending_write_push",
    "push_ack",
    "resync_complete",
    "error",
    "resync_ack",
    "mirror_proof_request",
];

// --- codec -----------------------------------------------------------------------------------

#[test]
fn sample_frames_cover_every_kind_once_in_tag_order() {
    let kinds: Vec<&str> = sample_frames()
        .iter()
        .map(|frame| frame.message.kind())
        .collect();
    assert_eq!(kinds, KINDS_IN_TAG_ORDER);
}

#[test]
fn message_tags_are_pinned_because_reordering_breaks_older_peers() {
    for (tag, frame) in sample_frames().into_iter().enumerate() {
        let bytes = encode(&Frame::new(0, frame.message.clone())).unwrap();
        // version (2 bytes), request id 0 (1 byte), then the variant tag.
        assert_eq!(usize::from(bytes[3]), tag, "{}", frame.message.kind());
    }
}

#[test]
fn heartbeat_ack_encoding_is_pinned() {
    let frame = Frame::new(
        7,
        Message::HeartbeatAck(Heartbeat {
            seq: 300,
            sent_at: UnixTime(1),
        }),
    );
    // version 2 (BE u16) | request id 7 | tag 4 | seq 300 as varint | sent_at 1
    assert_eq!(
        encode(&frame).unwrap(),
        [0x00, 0x02, 0x07, 0x04, 0xac, 0x02, 0x01]
    );
}

#[test]
fn sample_frames_round_trip() {
    for frame in sample_frames() {
        assert_eq!(decode(&encode(&frame).unwrap()), Ok(frame));
    }
}

#[test]
fn empty_input_is_rejected_as_empty() {
    assert_eq!(decode(&[]), Err(WireError::Empty));
}

#[test]
fn one_byte_input_is_malformed_not_a_version() {
    assert_eq!(
        decode(&[0x00]),
        Err(WireError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd
        ))
    );
}

#[test]
fn input_over_the_frame_limit_is_rejected_before_parsing() {
    let mut bytes = vec![0u8; MAX_FRAME_BYTES + 1];
    bytes[..2].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(WireError::TooLong {
            what: "frame",
            max: MAX_FRAME_BYTES,
            got: MAX_FRAME_BYTES + 1
        })
    );
}

#[test]
fn unknown_version_is_rejected_before_the_body_is_parsed() {
    // A valid body behind the next version (or the previous one) is still refused, and so is
    // garbage behind it.
    for other in [PROTOCOL_VERSION + 1, PROTOCOL_VERSION - 1] {
        let mut bytes = encode(&sample_frames()[3]).unwrap();
        bytes[..2].copy_from_slice(&other.to_be_bytes());
        let expected = Err(WireError::UnsupportedVersion {
            got: other,
            supported: PROTOCOL_VERSION,
        });
        assert_eq!(decode(&bytes), expected);
        let [high, low] = other.to_be_bytes();
        assert_eq!(decode(&[high, low, 0xff, 0xff]), expected);
        assert_eq!(decode(&[high, low]), expected);
    }
}

#[test]
fn trailing_bytes_after_a_frame_are_rejected() {
    let mut bytes = encode(&sample_frames()[0]).unwrap();
    bytes.extend([0, 0, 0]);
    assert_eq!(decode(&bytes), Err(WireError::TrailingBytes { count: 3 }));
}

#[test]
fn unknown_message_tag_is_malformed() {
    let bytes = [0x00, 0x02, 0x00, 17, 0, 0];
    assert!(matches!(decode(&bytes), Err(WireError::Malformed(_))));
}

#[test]
fn invalid_utf8_in_a_string_is_malformed() {
    // Error message: tag 14, code Internal (4), message of 2 bytes that are not UTF-8.
    let bytes = [0x00, 0x02, 0x00, 14, 4, 2, 0xff, 0xfe];
    assert_eq!(
        decode(&bytes),
        Err(WireError::Malformed(postcard::Error::DeserializeBadUtf8))
    );
}

fn range_request_bytes(start: u64, end: u64) -> Vec<u8> {
    // version | request id 0 | tag 9 | core key | start | end
    let mut bytes = vec![0x00, 0x02, 0x00, 9];
    bytes.extend([0x44; 32]);
    bytes.extend(varint(start));
    bytes.extend(varint(end));
    bytes
}

#[test]
fn bad_mirror_range_is_rejected_at_decode() {
    let max = MAX_MIRROR_BLOCKS_PER_RANGE as u64;
    assert!(
        decode(&range_request_bytes(10, 10 + max)).is_ok(),
        "a full range is fine"
    );
    assert_eq!(
        decode(&range_request_bytes(10, 11 + max)),
        Err(WireError::BadRange {
            start: 10,
            end: 11 + max
        })
    );
    assert_eq!(
        decode(&range_request_bytes(7, 6)),
        Err(WireError::BadRange { start: 7, end: 6 })
    );
    assert_eq!(
        decode(&range_request_bytes(u64::MAX, 0)),
        Err(WireError::BadRange {
            start: u64::MAX,
            end: 0
        })
    );
}

#[test]
fn over_long_list_is_rejected_from_its_declared_length_before_elements_are_read() {
    // MirrorAdvertise declaring 4097 cores, followed by 4097 bytes that are no cores at all: the
    // declared length alone is refused (a malformed-element error would mean we started reading).
    let mut bytes = vec![0x00, 0x02, 0x00, 8];
    bytes.extend(varint(MAX_CORE_ADVERTS as u64 + 1));
    bytes.extend(vec![0xff; MAX_CORE_ADVERTS + 1]);
    assert_eq!(
        decode(&bytes),
        Err(WireError::TooLong {
            what: "list",
            max: MAX_CORE_ADVERTS,
            got: MAX_CORE_ADVERTS + 1
        })
    );
}

#[test]
fn a_bound_violation_is_not_reported_for_a_later_unrelated_decode() {
    let mut bytes = vec![0x00, 0x02, 0x00, 14, 4];
    bytes.extend(varint(MAX_ERROR_MESSAGE_BYTES as u64 + 1));
    bytes.extend(vec![b'x'; MAX_ERROR_MESSAGE_BYTES + 1]);
    assert!(matches!(decode(&bytes), Err(WireError::TooLong { .. })));
    assert!(matches!(
        decode(&[0x00, 0x02, 0x00, 15]),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn encode_refuses_a_frame_over_the_limit_and_says_how_big_it_was() {
    let block = MirrorBlock::new(vec![0; MAX_MIRROR_BLOCK_BYTES]).unwrap();
    let frame = Frame::new(
        1,
        Message::MirrorRangeResponse(MirrorRangeResponse {
            core_key: [0; 32],
            start: 0,
            blocks: list(vec![block; 16]),
            proof: BoundedBytes::default(),
        }),
    );
    // version 2 + request id 1 + tag 1 + core key 32 + start 1 + count 1 + 16 × (3 + 1 MiB) + proof 1
    let expected = 2 + 1 + 1 + 32 + 1 + 1 + 16 * (3 + MAX_MIRROR_BLOCK_BYTES) + 1;
    let error = WireError::FrameTooLarge {
        max: MAX_FRAME_BYTES,
        got: expected,
    };
    assert_eq!(encode(&frame), Err(error.clone()));
    assert_eq!(encode_length_prefixed(&frame), Err(error.clone()));
    assert!(!error.is_peer_fault());
}

#[test]
fn decode_errors_are_peer_faults_and_constructor_errors_are_not() {
    assert!(WireError::Empty.is_peer_fault());
    assert!(WireError::BadRange { start: 1, end: 0 }.is_peer_fault());
    assert!(!BoundedString::<1>::new("ab").unwrap_err().is_peer_fault());
    assert!(
        !MirrorRangeRequest::new([0; 32], 1, 0)
            .unwrap_err()
            .is_peer_fault()
    );
}

#[test]
fn kind_names_are_distinct_snake_case() {
    let mut seen = std::collections::BTreeSet::new();
    for kind in KINDS_IN_TAG_ORDER {
        assert!(
            kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{kind}"
        );
        assert!(seen.insert(kind), "{kind} twice");
    }
}

// --- framing ---------------------------------------------------------------------------------

fn prefix(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

#[test]
fn frame_decoder_waits_for_a_partial_frame_and_then_yields_it() {
    let frame = sample_frames().remove(0);
    let bytes = encode_length_prefixed(&frame).unwrap();
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(&bytes[..bytes.len() - 1]);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered_len(), bytes.len() - 1);
    decoder.push(&bytes[bytes.len() - 1..]);
    assert_eq!(decoder.next_frame(), Ok(Some(frame)));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn oversize_length_prefix_is_rejected_as_soon_as_its_four_bytes_arrive() {
    let mut decoder = FrameDecoder::new(1000);
    decoder.push(&prefix(1000)[..3]);
    assert_eq!(
        decoder.next_frame(),
        Ok(None),
        "three bytes are not a length yet"
    );
    decoder.push(&[0xe9]); // 1001
    assert_eq!(
        decoder.buffered_len(),
        0,
        "nothing of the oversized frame is kept"
    );
    let expected = WireError::TooLong {
        what: "frame",
        max: 1000,
        got: 1001,
    };
    assert_eq!(decoder.error(), Some(&expected));
    assert_eq!(decoder.next_frame(), Err(expected));
}

#[test]
fn a_length_prefix_at_the_maximum_is_awaited_not_rejected() {
    let mut decoder = FrameDecoder::new(1000);
    decoder.push(&prefix(1000));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.error(), None);
}

#[test]
fn frame_decoder_stays_failed_after_an_error_and_drops_later_bytes() {
    let good = encode_length_prefixed(&sample_frames()[3]).unwrap();
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    // A 3-byte frame of version 9, then a good frame.
    decoder.push(&prefix(3));
    decoder.push(&[0x00, 0x09, 0x00]);
    decoder.push(&good);
    let expected = WireError::UnsupportedVersion {
        got: 9,
        supported: PROTOCOL_VERSION,
    };
    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    assert_eq!(
        decoder.next_frame(),
        Err(expected.clone()),
        "the good frame is not trusted"
    );
    decoder.push(&good);
    assert_eq!(decoder.next_frame(), Err(expected));
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn zero_length_frame_is_rejected_as_empty() {
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(&prefix(0));
    assert_eq!(decoder.next_frame(), Err(WireError::Empty));
}

#[test]
fn frames_before_a_bad_one_are_still_delivered() {
    let first = sample_frames().remove(3);
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(&encode_length_prefixed(&first).unwrap());
    decoder.push(&prefix(0));
    assert_eq!(decoder.next_frame(), Ok(Some(first)));
    assert_eq!(decoder.next_frame(), Err(WireError::Empty));
}

#[test]
fn frame_decoder_maximum_is_capped_at_the_protocol_frame_limit() {
    let mut decoder = FrameDecoder::new(usize::MAX);
    decoder.push(&prefix(u32::MAX));
    let too_long = u32::MAX as usize;
    assert_eq!(
        decoder.next_frame(),
        Err(WireError::TooLong {
            what: "frame",
            max: MAX_FRAME_BYTES,
            got: too_long
        })
    );
}
