use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::nostr::{EventId, Kind, PublicKey, Signature, Tag};

fn json(text: &str) -> EventJson {
    EventJson::new(text.as_bytes().to_vec()).unwrap()
}

fn sample_event() -> Event {
    let mut event = Event {
        id: EventId([0; 32]),
        pubkey: PublicKey([7; 32]),
        created_at: 1_700_000_000,
        kind: Kind(1),
        tags: vec![Tag::new(["t", "garden"])],
        content: "hello \"plants\" 🌱".to_owned(),
        sig: Signature([9; 64]),
    };
    event.id = event.compute_id();
    event
}

#[test]
fn encodings_are_pinned_because_logs_outlive_builds() {
    // version 1 (BE u16) | variant tag | body
    assert_eq!(
        RelayOp::Event(json("{}")).encode(),
        [0x00, 0x01, 0x00, 0x02, b'{', b'}']
    );
    let mut add = vec![0x00, 0x01, 0x01];
    add.extend([0x11; 32]);
    assert_eq!(
        RelayOp::AddWriter {
            key: WriterKey([0x11; 32])
        }
        .encode(),
        add
    );
    let mut remove = vec![0x00, 0x01, 0x02];
    remove.extend([0x22; 32]);
    remove.extend([0xac, 0x02]); // 300 as a varint
    assert_eq!(
        RelayOp::RemoveWriter {
            key: WriterKey([0x22; 32]),
            final_length: 300
        }
        .encode(),
        remove
    );
}

#[test]
fn an_event_op_round_trips_and_parses_back_to_the_event() {
    let event = sample_event();
    let op = RelayOp::event(&event).unwrap();
    let decoded = RelayOp::decode(&op.encode()).unwrap();
    assert_eq!(decoded, op);
    let RelayOp::Event(payload) = decoded else {
        panic!("not an event op: {decoded:?}");
    };
    assert_eq!(payload.parse().unwrap(), event);
}

#[test]
fn empty_and_one_byte_inputs_are_rejected() {
    assert_eq!(RelayOp::decode(&[]), Err(RelayOpError::Empty));
    assert_eq!(
        RelayOp::decode(&[0x00]),
        Err(RelayOpError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd
        ))
    );
}

#[test]
fn another_version_is_rejected_before_the_body_is_read() {
    let mut bytes = RelayOp::AddWriter {
        key: WriterKey([1; 32]),
    }
    .encode();
    bytes[1] = 2;
    let expected = Err(RelayOpError::UnsupportedVersion {
        got: 2,
        supported: FORMAT_VERSION,
    });
    assert_eq!(RelayOp::decode(&bytes), expected);
    assert_eq!(RelayOp::decode(&[0x00, 0x02]), expected);
}

#[test]
fn trailing_bytes_after_an_op_are_rejected() {
    let mut bytes = RelayOp::Event(json("{}")).encode();
    bytes.extend([0, 0]);
    assert_eq!(
        RelayOp::decode(&bytes),
        Err(RelayOpError::TrailingBytes { count: 2 })
    );
}

#[test]
fn unknown_variant_and_truncated_body_are_malformed() {
    assert!(matches!(
        RelayOp::decode(&[0x00, 0x01, 0x03]),
        Err(RelayOpError::Malformed(_))
    ));
    let bytes = RelayOp::AddWriter {
        key: WriterKey([1; 32]),
    }
    .encode();
    assert!(matches!(
        RelayOp::decode(&bytes[..bytes.len() - 1]),
        Err(RelayOpError::Malformed(_))
    ));
    // A payload that declares more bytes than follow.
    assert!(matches!(
        RelayOp::decode(&[0x00, 0x01, 0x00, 0x05, b'{']),
        Err(RelayOpError::Malformed(_))
    ));
}

#[test]
fn a_payload_at_the_limit_round_trips_and_one_byte_more_is_rejected() {
    let at_limit = RelayOp::Event(EventJson::new(vec![b'x'; MAX_EVENT_JSON_BYTES]).unwrap());
    let bytes = at_limit.encode();
    assert_eq!(bytes.len(), MAX_ENCODED_OP_BYTES);
    assert_eq!(RelayOp::decode(&bytes), Ok(at_limit));

    // Hand-built: the encoder cannot produce it.
    let len = MAX_EVENT_JSON_BYTES + 1;
    let mut over = vec![0x00, 0x01, 0x00];
    over.extend(postcard::to_allocvec(&(len as u64)).unwrap());
    over.extend(vec![b'x'; len]);
    assert_eq!(
        RelayOp::decode(&over),
        Err(RelayOpError::EventTooLarge {
            len,
            max: MAX_EVENT_JSON_BYTES
        })
    );
}

#[test]
fn a_payload_that_is_not_utf8_is_rejected() {
    let bytes = [0x00, 0x01, 0x00, 0x03, b'{', 0xff, b'}'];
    assert_eq!(
        RelayOp::decode(&bytes),
        Err(RelayOpError::EventNotUtf8 { valid_up_to: 1 })
    );
}

#[test]
fn event_json_constructor_refuses_what_decode_would_reject() {
    let too_large = EventJson::new(vec![b' '; MAX_EVENT_JSON_BYTES + 1]).unwrap_err();
    assert_eq!(
        too_large,
        RelayOpError::PayloadTooLarge {
            len: MAX_EVENT_JSON_BYTES + 1,
            max: MAX_EVENT_JSON_BYTES
        }
    );
    assert!(!too_large.is_log_fault());
    let not_utf8 = EventJson::new(vec![b'a', 0xc3]).unwrap_err();
    assert_eq!(not_utf8, RelayOpError::PayloadNotUtf8 { valid_up_to: 1 });
    assert!(!not_utf8.is_log_fault());
    assert!(RelayOpError::Empty.is_log_fault());
    assert!(RelayOpError::EventNotUtf8 { valid_up_to: 0 }.is_log_fault());
}

#[test]
fn a_payload_that_is_not_an_event_is_an_op_but_does_not_parse() {
    let op = RelayOp::decode(&RelayOp::Event(json("[1,2]")).encode()).unwrap();
    let RelayOp::Event(payload) = op else {
        panic!("not an event op");
    };
    assert!(matches!(payload.parse(), Err(EventError::Malformed(_))));
}

#[test]
fn writer_key_prints_and_parses_as_hex_and_serialises_by_format() {
    let key = WriterKey([0xab; 32]);
    let text = key.to_string();
    assert_eq!(text, "ab".repeat(32));
    assert_eq!(text.parse::<WriterKey>(), Ok(key));
    assert_eq!("AB".repeat(32).parse::<WriterKey>(), Ok(key), "either case");
    assert_eq!(format!("{key:?}"), "WriterKey(abababab)");
    assert_eq!(
        "abc".parse::<WriterKey>(),
        Err(KeyParseError::WrongLength(3))
    );
    assert_eq!(
        "zz".repeat(32).parse::<WriterKey>(),
        Err(KeyParseError::NotHex)
    );

    let json = serde_json::to_string(&key).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<WriterKey>(&json).unwrap(), key);
    assert!(serde_json::from_str::<WriterKey>("\"abcd\"").is_err());
    let binary = postcard::to_allocvec(&key).unwrap();
    assert_eq!(binary, [0xab; 32]);
    assert_eq!(postcard::from_bytes::<WriterKey>(&binary).unwrap(), key);
}

fn op() -> impl Strategy<Value = RelayOp> {
    prop_oneof![
        ".{0,40}".prop_map(|text| RelayOp::Event(EventJson::new(text).unwrap())),
        any::<[u8; 32]>().prop_map(|key| RelayOp::AddWriter {
            key: WriterKey(key)
        }),
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(key, final_length)| {
            RelayOp::RemoveWriter {
                key: WriterKey(key),
                final_length,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn decode_inverts_encode_for_every_op(op in op()) {
        prop_assert_eq!(RelayOp::decode(&op.encode()), Ok(op));
    }

    #[test]
    fn decode_never_panics_and_what_it_accepts_re_encodes_to_itself(
        versioned in any::<bool>(),
        body in vec(any::<u8>(), 0..96),
    ) {
        // Half the inputs carry our version, so the body decoder sees arbitrary bytes too.
        let mut bytes = if versioned { FORMAT_VERSION.to_be_bytes().to_vec() } else { Vec::new() };
        bytes.extend(body);
        if let Ok(op) = RelayOp::decode(&bytes) {
            prop_assert_eq!(RelayOp::decode(&op.encode()), Ok(op));
        }
    }

    #[test]
    fn decode_never_panics_on_corrupted_ops(
        op in op(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..5),
    ) {
        // Random bytes rarely get past the version; corrupting valid ops reaches the body.
        let mut bytes = op.encode();
        for (at, byte, how) in edits {
            let at = at.index(bytes.len().max(1));
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at.min(bytes.len()), byte),
                _ => bytes.truncate(at),
            }
        }
        if let Ok(op) = RelayOp::decode(&bytes) {
            prop_assert_eq!(RelayOp::decode(&op.encode()), Ok(op));
        }
    }

    #[test]
    fn any_other_version_is_unsupported_whatever_follows(
        version in any::<u16>().prop_filter("not ours", |v| *v != FORMAT_VERSION),
        body in vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend(body);
        prop_assert_eq!(
            RelayOp::decode(&bytes),
            Err(RelayOpError::UnsupportedVersion { got: version, supported: FORMAT_VERSION })
        );
    }
}
