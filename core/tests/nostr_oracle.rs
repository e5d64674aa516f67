//! The `nostr` crate, an independent NIP-01 implementation, as an oracle for ours.
//!
//! Events are built and signed by `nostr` with fixed secret keys and deterministic auxiliary
//! randomness, serialised with `nostr`'s JSON, and read back with ours. Our `compute_id` must
//! equal theirs and `verify` must pass, above all for content and tags full of what JSON escaping
//! gets wrong (quotes, backslashes, control characters, `/`, non-ASCII, U+2028); and every kind of
//! tampering must be refused with the right error. Filters are parsed from the same JSON by both
//! and must agree on which events match.

// Helpers outside `#[test]` functions unwrap too: in a test, a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use hypergate_core::nostr::{self as ours, EventError, SignatureVerifier};
use nostr::prelude::{self as oracle, Keys, MatchEventOptions, Timestamp, UnsignedEvent};
use proptest::prelude::*;
use secp256k1::Secp256k1;

const SECRET_KEYS: [&str; 3] = [
    "0000000000000000000000000000000000000000000000000000000000000001",
    "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e",
    "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
];

/// Contents that exercise every escaping rule of NIP-01's canonical serialisation.
fn tricky_contents() -> Vec<String> {
    let all_controls: String = (0u8..0x20).map(char::from).collect();
    vec![
        String::new(),
        "plain".to_owned(),
        "quote \" and backslash \\ and \\\" both".to_owned(),
        "newline\nreturn\rtab\tbackspace\u{8}formfeed\u{c}".to_owned(),
        all_controls.clone(),
        format!("mixed{all_controls}mixed"),
        "slash / and </script>".to_owned(),
        "emoji 😀🏳️‍🌈 and ñandú, 日本語, Ελληνικά".to_owned(),
        "line separator \u{2028} paragraph separator \u{2029}".to_owned(),
        "delete \u{7f} nbsp \u{a0} bom \u{feff} max \u{10ffff}".to_owned(),
        "json inside: {\"a\":[1,\"b\\n\"]}".to_owned(),
        "x".repeat(10_000),
    ]
}

fn tricky_tags() -> Vec<Vec<String>> {
    vec![
        vec![
            "e".to_owned(),
            "a".repeat(64),
            "wss://relay.example/".to_owned(),
        ],
        vec!["p".to_owned(), "b".repeat(64)],
        vec!["t".to_owned(), "quote \" backslash \\ slash /".to_owned()],
        vec![
            "d".to_owned(),
            "newline\n tab\t nul\u{0} us\u{1f}".to_owned(),
        ],
        vec!["emoji".to_owned(), "😀".to_owned(), "\u{2028}".to_owned()],
        vec!["x".to_owned()],
        vec![String::new(), String::new()],
    ]
}

fn keys(index: usize) -> Keys {
    Keys::parse(SECRET_KEYS[index]).unwrap()
}

/// An event built and signed by the `nostr` crate only.
fn sign(
    keys: &Keys,
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> oracle::Event {
    let tags = tags
        .iter()
        .map(|tag| oracle::Tag::parse(tag.clone()).unwrap());
    let unsigned = UnsignedEvent::new(
        keys.public_key(),
        Timestamp::from_secs(created_at),
        oracle::Kind::from(kind),
        tags,
        content,
    );
    let id = unsigned.compute_id();
    let secp = Secp256k1::signing_only();
    let sig = keys.sign_schnorr_with_aux_rand(&secp, id.as_bytes(), &[7; 32]);
    // `add_signature` verifies with nostr's own code: the event is valid by the oracle's word.
    unsigned.add_signature(sig).unwrap()
}

/// Reads a `nostr` event with our parser.
fn read(theirs: &oracle::Event) -> ours::Event {
    ours::Event::parse_json(&theirs.as_json()).unwrap()
}

fn assert_agrees(theirs: &oracle::Event) {
    let verifier = SignatureVerifier::new();
    let event = read(theirs);
    assert_eq!(
        event.compute_id().as_bytes(),
        theirs.id.as_bytes(),
        "{}",
        theirs.as_json()
    );
    assert_eq!(event.verify(&verifier), Ok(()), "{}", theirs.as_json());
    // And the other way: what we write, they read as the same event.
    assert_eq!(&oracle::Event::from_json(event.to_json()).unwrap(), theirs);
}

#[test]
fn our_ids_equal_nostr_ids_for_tricky_content() {
    for (index, content) in tricky_contents().iter().enumerate() {
        let theirs = sign(
            &keys(index % 3),
            1_700_000_000 + index as u64,
            1,
            &[],
            content,
        );
        assert_agrees(&theirs);
    }
}

#[test]
fn our_ids_equal_nostr_ids_for_tricky_tags() {
    let tags = tricky_tags();
    for (index, content) in tricky_contents().iter().enumerate() {
        let theirs = sign(&keys(index % 3), index as u64, 30_023, &tags, content);
        assert_agrees(&theirs);
    }
}

#[test]
fn our_ids_equal_nostr_ids_across_kinds_and_timestamps() {
    for kind in [
        0,
        1,
        3,
        7,
        1984,
        10_002,
        20_000,
        29_999,
        30_000,
        39_999,
        40_000,
        u16::MAX,
    ] {
        for created_at in [
            0,
            1,
            1_700_000_000,
            u64::from(u32::MAX) + 1,
            i64::MAX as u64,
        ] {
            assert_agrees(&sign(&keys(1), created_at, kind, &tricky_tags(), "k"));
        }
    }
}

#[test]
fn nostr_client_frames_parse_with_our_frame_parser() {
    let theirs = sign(&keys(0), 42, 1, &tricky_tags(), "frame \"test\"\n");
    let frame = oracle::ClientMessage::event(theirs.clone()).as_json();
    let parsed = ours::ClientMessage::parse(&frame, &ours::Limits::default()).unwrap();
    assert_eq!(parsed, ours::ClientMessage::Event(Box::new(read(&theirs))));

    let filter = oracle::Filter::new()
        .author(keys(1).public_key())
        .kinds([oracle::Kind::from(1), oracle::Kind::from(30_023)])
        .hashtag("nostr")
        .since(Timestamp::from_secs(10))
        .limit(20);
    let frame =
        oracle::ClientMessage::req(oracle::SubscriptionId::new("sub-1"), vec![filter]).as_json();
    let ours::ClientMessage::Req {
        subscription_id,
        filters,
    } = ours::ClientMessage::parse(&frame, &ours::Limits::default()).unwrap()
    else {
        panic!("not a REQ: {frame}");
    };
    assert_eq!(subscription_id.as_str(), "sub-1");
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].limit, Some(20));
    assert_eq!(filters[0].tags[&'t'].iter().collect::<Vec<_>>(), ["nostr"]);
}

// ---- tampering: every change to a signed event is refused, and for the right reason ----

fn verify_json(json: &str) -> Result<(), EventError> {
    ours::Event::parse_json(json)?.verify(&SignatureVerifier::new())
}

#[test]
fn flipped_content_byte_is_an_id_mismatch() {
    for content in tricky_contents()
        .into_iter()
        .filter(|content| !content.is_empty())
    {
        let theirs = sign(&keys(0), 1, 1, &tricky_tags(), &content);
        let mut event = read(&theirs);
        let mut bytes = event.content.clone().into_bytes();
        // Flipping the lowest bit of an ASCII byte keeps it ASCII; of a UTF-8 continuation
        // byte, keeps it a continuation byte. Either way the text stays valid UTF-8.
        let at = bytes
            .iter()
            .position(|b| b.is_ascii() || (b & 0xc0) == 0x80)
            .unwrap();
        bytes[at] ^= 1;
        event.content = String::from_utf8(bytes).unwrap();
        assert_eq!(
            event.verify(&SignatureVerifier::new()),
            Err(EventError::IdMismatch)
        );
        assert!(
            oracle::Event::from_json(event.to_json())
                .unwrap()
                .verify()
                .is_err()
        );
    }
}

#[test]
fn flipped_id_hex_character_is_an_id_mismatch() {
    let theirs = sign(&keys(0), 1, 1, &tricky_tags(), "id");
    let json = theirs.as_json();
    let id = theirs.id.to_hex();
    for position in [0, 31, 63] {
        let mut flipped = id.clone().into_bytes();
        flipped[position] = if flipped[position] == b'0' {
            b'1'
        } else {
            b'0'
        };
        let tampered = json.replace(&id, std::str::from_utf8(&flipped).unwrap());
        assert_eq!(verify_json(&tampered), Err(EventError::IdMismatch));
    }
}

#[test]
fn flipped_signature_byte_is_a_bad_signature() {
    let theirs = sign(&keys(2), 1, 1, &tricky_tags(), "sig");
    for position in [0, 31, 32, 63] {
        let mut event = read(&theirs);
        event.sig.0[position] ^= 0x01;
        assert_eq!(
            event.verify(&SignatureVerifier::new()),
            Err(EventError::BadSignature)
        );
        assert_eq!(
            verify_json(&event.to_json()),
            Err(EventError::BadSignature),
            "byte {position}"
        );
    }
}

#[test]
fn swapped_pubkey_is_an_id_mismatch_and_with_fixed_id_a_bad_signature() {
    let theirs = sign(&keys(0), 1, 1, &[], "who");
    let other = ours::PublicKey(keys(1).public_key().to_bytes());
    let mut event = read(&theirs);
    event.pubkey = other;
    assert_eq!(
        event.verify(&SignatureVerifier::new()),
        Err(EventError::IdMismatch)
    );
    // An attacker who also recomputes the id still lacks the other key's signature.
    event.id = event.compute_id();
    assert_eq!(
        event.verify(&SignatureVerifier::new()),
        Err(EventError::BadSignature)
    );
    assert!(
        oracle::Event::from_json(event.to_json())
            .unwrap()
            .verify()
            .is_err()
    );
}

#[test]
fn changed_kind_tags_or_created_at_is_an_id_mismatch() {
    let theirs = sign(&keys(0), 100, 1, &tricky_tags(), "meta");
    let verifier = SignatureVerifier::new();
    let mut kind = read(&theirs);
    kind.kind = ours::Kind(2);
    let mut created_at = read(&theirs);
    created_at.created_at += 1;
    let mut tags = read(&theirs);
    tags.tags.pop();
    let mut tag_value = read(&theirs);
    tag_value.tags[0].0[1].push('x');
    for event in [kind, created_at, tags, tag_value] {
        assert_eq!(event.verify(&verifier), Err(EventError::IdMismatch));
    }
}

#[test]
fn tampering_errors_render_as_nip01_ok_messages() {
    let theirs = sign(&keys(0), 1, 1, &[], "ok");
    let mut event = read(&theirs);
    event.sig.0[5] ^= 0x80;
    let error = event.verify(&SignatureVerifier::new()).unwrap_err();
    assert_eq!(error.to_ok_message(), "invalid: bad signature");
    event.content.push('!');
    let error = event.verify(&SignatureVerifier::new()).unwrap_err();
    assert_eq!(error.to_ok_message(), "invalid: event id does not match");
}

// ---- properties ----

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Tags drawn from a small alphabet so that generated filters actually hit them.
fn small_tags() -> impl Strategy<Value = Vec<Vec<String>>> {
    let name = prop::sample::select(vec!["e", "p", "t", "d", "T", "ee"]);
    let value = prop::sample::select(vec!["a", "b", "c"]);
    prop::collection::vec(
        (name, prop::collection::vec(value, 0..3)).prop_map(|(name, values)| {
            std::iter::once(name.to_owned())
                .chain(values.into_iter().map(str::to_owned))
                .collect()
        }),
        0..4,
    )
}

/// A filter as JSON with only non-empty lists: for an empty list NIP-01 relays (strfry,
/// nostream, nostr-rs-relay, and we) match nothing while the `nostr` crate ignores the list.
fn small_filter_json() -> impl Strategy<Value = String> {
    let kinds = prop::option::of(prop::collection::btree_set(
        prop::sample::select(vec![0u16, 1, 3, 30_023]),
        1..3,
    ));
    let authors = prop::option::of(prop::sample::subsequence(vec![0usize, 1, 2], 1..=3));
    let tag = prop::sample::select(vec!['e', 'p', 't', 'd', 'T']);
    let tags = prop::collection::btree_map(
        tag,
        prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c"]), 1..3),
        0..3,
    );
    let time = prop::option::of(0u64..6);
    (kinds, authors, tags, time.clone(), time).prop_map(|(kinds, authors, tags, since, until)| {
        let mut fields = Vec::new();
        if let Some(kinds) = kinds {
            fields.push(format!(
                "\"kinds\":{}",
                serde_json::to_string(&kinds).unwrap()
            ));
        }
        if let Some(authors) = authors {
            let hex: Vec<String> = authors
                .iter()
                .map(|&i| keys(i).public_key().to_hex())
                .collect();
            fields.push(format!(
                "\"authors\":{}",
                serde_json::to_string(&hex).unwrap()
            ));
        }
        for (letter, values) in tags {
            fields.push(format!(
                "\"#{letter}\":{}",
                serde_json::to_string(&values).unwrap()
            ));
        }
        if let Some(since) = since {
            fields.push(format!("\"since\":{since}"));
        }
        if let Some(until) = until {
            fields.push(format!("\"until\":{until}"));
        }
        format!("{{{}}}", fields.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_content_and_tags_signed_by_nostr_verify_under_ours(
        key in 0usize..3,
        created_at in any::<u32>(),
        kind in any::<u16>(),
        content in any_text(200),
        tag_values in prop::collection::vec(prop::collection::vec(any_text(12), 1..4), 0..4),
    ) {
        let theirs = sign(&keys(key), u64::from(created_at), kind, &tag_values, &content);
        let event = read(&theirs);
        prop_assert_eq!(event.compute_id().0, theirs.id.to_bytes());
        prop_assert_eq!(event.verify(&SignatureVerifier::new()), Ok(()));
        prop_assert_eq!(&content, &event.content);
    }

    #[test]
    fn our_filter_matching_agrees_with_nostr(
        filter_json in small_filter_json(),
        key in 0usize..3,
        created_at in 0u64..6,
        kind in prop::sample::select(vec![0u16, 1, 3, 30_023]),
        tags in small_tags(),
    ) {
        let theirs_event = sign(&keys(key), created_at, kind, &tags, "");
        let theirs_filter = oracle::Filter::from_json(&filter_json).unwrap();
        let ours_filter = ours::Filter::parse_json(&filter_json).unwrap();
        prop_assert_eq!(
            ours_filter.matches(&read(&theirs_event)),
            theirs_filter.match_event(&theirs_event, MatchEventOptions::new()),
            "filter {} event {}", filter_json, theirs_event.as_json()
        );
    }
}
