use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

use super::*;
use crate::nostr::event::testing::signed_event;
use crate::nostr::{Kind, PublicKey, Signature, Tag};

fn parse(text: &str) -> Result<ClientMessage, FrameError> {
    ClientMessage::parse(text, &Limits::default())
}

fn sub(id: &str) -> SubscriptionId {
    SubscriptionId::new(id).unwrap()
}

fn notice(text: &str) -> RelayMessage {
    RelayMessage::Notice(text.to_owned())
}

#[test]
fn parses_event_req_and_close_frames() {
    let event = signed_event(1, 10, 1, vec![Tag::new(["t", "x"])], "hi");
    let frame = format!("[\"EVENT\",{}]", event.to_json());
    assert_eq!(parse(&frame), Ok(ClientMessage::Event(Box::new(event))));

    let req = r##"["REQ","s1",{"kinds":[1]},{"#t":["x"],"limit":5}]"##;
    let Ok(ClientMessage::Req {
        subscription_id,
        filters,
    }) = parse(req)
    else {
        panic!("not a REQ: {:?}", parse(req));
    };
    assert_eq!(subscription_id, sub("s1"));
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[1].limit, Some(5));

    assert_eq!(
        parse(r#"["CLOSE","s1"]"#),
        Ok(ClientMessage::Close(sub("s1")))
    );
}

#[test]
fn whitespace_and_escaped_verbs_are_plain_json() {
    assert_eq!(
        parse(" [ \"\\u0043LOSE\" ,\n\"s\" ] \n"),
        Ok(ClientMessage::Close(sub("s")))
    );
}

#[test]
fn text_that_is_not_json_gets_invalid_message_payload() {
    for text in [
        "",
        "[",
        "{",
        "[\"REQ\",",
        "nope",
        "[\"CLOSE\",\"s\"] x",
        "[1,]",
    ] {
        let error = parse(text).unwrap_err();
        assert_eq!(error, FrameError::NotJson, "{text:?}");
        assert_eq!(error.reply(), notice("Invalid message payload"));
    }
}

#[test]
fn json_that_is_not_a_verb_array_is_a_malformed_frame() {
    for text in [
        "{}",
        "\"EVENT\"",
        "1",
        "null",
        "[]",
        "[1]",
        "[null,\"s\"]",
        "[[\"REQ\"]]",
    ] {
        let error = parse(text).unwrap_err();
        assert_eq!(error, FrameError::NotAFrame, "{text:?}");
        assert_eq!(error.reply(), notice("Malformed Nostr frame"));
    }
}

#[test]
fn unknown_verbs_are_malformed_frames_and_cut_short() {
    let error = parse(r#"["event",{}]"#).unwrap_err();
    assert_eq!(
        error,
        FrameError::UnknownVerb {
            verb: "event".to_owned()
        }
    );
    assert_eq!(error.reply(), notice("Malformed Nostr frame"));
    let long = format!("[\"{}\"]", "V".repeat(1000));
    let Err(FrameError::UnknownVerb { verb }) = parse(&long) else {
        panic!("expected unknown verb");
    };
    assert_eq!(verb.len(), 32);
}

#[test]
fn event_frame_without_an_event_object_gets_invalid_event_payload() {
    for text in [
        r#"["EVENT"]"#,
        r#"["EVENT","x"]"#,
        r#"["EVENT",{}]"#,
        r#"["EVENT",[]]"#,
        r#"["EVENT",{},{}]"#,
    ] {
        let error = parse(text).unwrap_err();
        assert!(
            matches!(error, FrameError::InvalidEvent { event_id: None, .. }),
            "{text}"
        );
        assert_eq!(error.reply(), notice("Invalid EVENT payload"));
    }
}

#[test]
fn malformed_event_with_readable_id_is_answered_with_ok_false() {
    let event = signed_event(1, 10, 1, vec![], "hi");
    let broken = event.to_json().replace("\"kind\":1", "\"kind\":\"1\"");
    let error = parse(&format!("[\"EVENT\",{broken}]")).unwrap_err();
    let RelayMessage::Ok {
        event_id,
        accepted,
        message,
    } = error.reply()
    else {
        panic!("expected OK, got {:?}", error.reply());
    };
    assert_eq!(event_id, event.id);
    assert!(!accepted);
    assert!(
        message.starts_with("invalid: malformed event:"),
        "{message}"
    );
}

#[test]
fn event_over_limits_is_refused_with_ok_false() {
    let limits = Limits {
        max_tags: 1,
        max_content_bytes: 3,
        ..Limits::default()
    };
    let too_many_tags = signed_event(1, 1, 1, vec![Tag::new(["a"]), Tag::new(["b"])], "");
    let error = ClientMessage::parse(
        &ClientMessage::Event(Box::new(too_many_tags.clone())).to_json(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(
        error.reply(),
        RelayMessage::Ok {
            event_id: too_many_tags.id,
            accepted: false,
            message: "invalid: too many tags (2 > 1)".to_owned()
        }
    );
    let too_long = signed_event(1, 1, 1, vec![], "four");
    let error = ClientMessage::parse(
        &ClientMessage::Event(Box::new(too_long.clone())).to_json(),
        &limits,
    )
    .unwrap_err();
    assert_eq!(error.event_id(), Some(too_long.id));
    assert_eq!(
        error,
        FrameError::InvalidEvent {
            event_id: Some(too_long.id),
            error: EventError::ContentTooLarge { len: 4, max: 3 }
        }
    );
}

#[test]
fn req_without_subscription_id_gets_the_original_notice() {
    for text in [
        r#"["REQ"]"#,
        r#"["REQ",1,{}]"#,
        r#"["REQ",null]"#,
        r#"["REQ",{}]"#,
    ] {
        let error = parse(text).unwrap_err();
        assert_eq!(
            error,
            FrameError::MissingSubscriptionId { verb: "REQ" },
            "{text}"
        );
        assert_eq!(error.reply(), notice("REQ frame missing subscription id"));
    }
    assert_eq!(
        parse(r#"["CLOSE"]"#).unwrap_err().notice_text(),
        "CLOSE frame missing subscription id"
    );
}

#[test]
fn subscription_id_is_bounded_by_limits_and_nip01() {
    let id = "a".repeat(65);
    assert_eq!(
        parse(&format!(r#"["REQ","{id}",{{}}]"#)).unwrap_err(),
        FrameError::InvalidSubscriptionId {
            verb: "REQ",
            error: SubscriptionIdError::TooLong { max: 64 }
        }
    );
    assert_eq!(
        parse(r#"["CLOSE",""]"#).unwrap_err(),
        FrameError::InvalidSubscriptionId {
            verb: "CLOSE",
            error: SubscriptionIdError::Empty
        }
    );
    let strict = Limits {
        max_subscription_id_len: 3,
        ..Limits::default()
    };
    assert!(ClientMessage::parse(r#"["CLOSE","abc"]"#, &strict).is_ok());
    let error = ClientMessage::parse(r#"["CLOSE","abcd"]"#, &strict).unwrap_err();
    assert_eq!(
        error.reply(),
        notice(
            "CLOSE frame has an invalid subscription id: subscription id longer than 3 characters"
        )
    );
}

#[test]
fn req_with_a_bad_filter_is_closed_with_invalid_prefix() {
    let error = parse(r#"["REQ","s",{},{"kinds":"1"}]"#).unwrap_err();
    assert_eq!(error.subscription_id(), Some(&sub("s")));
    assert!(matches!(error, FrameError::InvalidFilter { index: 1, .. }));
    let RelayMessage::Closed {
        subscription_id,
        message,
    } = error.reply()
    else {
        panic!("expected CLOSED");
    };
    assert_eq!(subscription_id, sub("s"));
    assert!(
        message.starts_with("invalid: filter 1: malformed filter:"),
        "{message}"
    );
}

#[test]
fn req_over_filter_value_limit_is_closed() {
    let limits = Limits {
        max_filter_values: 2,
        ..Limits::default()
    };
    let error = ClientMessage::parse(r#"["REQ","s",{"kinds":[1,2,3]}]"#, &limits).unwrap_err();
    assert_eq!(
        error.reply(),
        RelayMessage::Closed {
            subscription_id: sub("s"),
            message: "invalid: filter 0: too many values in kinds (3 > 2)".to_owned()
        }
    );
}

#[test]
fn req_with_too_many_filters_is_closed_and_counts_every_filter() {
    let frame = format!("[\"REQ\",\"s\"{}]", ",{}".repeat(5000));
    let error = parse(&frame).unwrap_err();
    assert_eq!(
        error,
        FrameError::TooManyFilters {
            subscription_id: sub("s"),
            count: 5000,
            max: 10
        }
    );
    assert_eq!(
        error.reply(),
        RelayMessage::Closed {
            subscription_id: sub("s"),
            message: "invalid: too many filters (5000 > 10)".to_owned()
        }
    );
    let ten = format!("[\"REQ\",\"s\"{}]", ",{}".repeat(10));
    assert!(parse(&ten).is_ok());
}

#[test]
fn req_without_filters_is_closed() {
    let error = parse(r#"["REQ","s"]"#).unwrap_err();
    assert_eq!(
        error.reply(),
        RelayMessage::Closed {
            subscription_id: sub("s"),
            message: "invalid: REQ needs at least one filter".to_owned()
        }
    );
}

#[test]
fn frame_over_max_frame_bytes_is_refused_before_parsing() {
    let limits = Limits {
        max_frame_bytes: 14,
        ..Limits::default()
    };
    assert!(ClientMessage::parse(r#"["CLOSE","ab"]"#, &limits).is_ok());
    let error = ClientMessage::parse(r#"["CLOSE","abc"]"#, &limits).unwrap_err();
    assert_eq!(error, FrameError::FrameTooLarge { len: 15, max: 14 });
    assert_eq!(
        error.reply(),
        notice("Frame too large: the limit is 14 bytes")
    );
    // Not even looked at: garbage over the limit is "too large", not "not JSON".
    assert!(matches!(
        ClientMessage::parse(&"x".repeat(15), &limits),
        Err(FrameError::FrameTooLarge { .. })
    ));
}

#[test]
fn close_with_extra_elements_is_malformed() {
    let error = parse(r#"["CLOSE","s","t"]"#).unwrap_err();
    assert!(matches!(error, FrameError::Malformed { verb: "CLOSE", .. }));
    assert_eq!(error.reply(), notice("Malformed Nostr frame"));
}

#[test]
fn auth_and_count_are_refused_with_the_reply_their_nips_expect() {
    let auth = signed_event(1, 1, 22242, vec![], "");
    let error = parse(&format!("[\"AUTH\",{}]", auth.to_json())).unwrap_err();
    assert_eq!(
        error.reply(),
        RelayMessage::Ok {
            event_id: auth.id,
            accepted: false,
            message: "error: AUTH is not supported".to_owned()
        }
    );
    let error = parse(r#"["COUNT","c",{}]"#).unwrap_err();
    assert_eq!(
        error.reply(),
        RelayMessage::Closed {
            subscription_id: sub("c"),
            message: "error: COUNT is not supported".to_owned()
        }
    );
    assert_eq!(
        parse(r#"["AUTH"]"#).unwrap_err().reply(),
        notice("AUTH is not supported")
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 60_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(parse(&nested).is_err());
    assert!(parse(&format!("[\"REQ\",\"s\",{{\"x\":{nested}}}]")).is_ok());
    assert!(parse(&format!("[\"REQ\",\"s\",{{\"kinds\":{nested}}}]")).is_err());
    assert!(parse(&format!("[\"EVENT\",{nested}]")).is_err());
    assert!(RelayMessage::parse(&nested).is_err());
    assert!(RelayMessage::parse(&format!("[\"NOTICE\",{nested}]")).is_err());
}

#[test]
fn relay_messages_have_nip01_wire_shapes() {
    let event = signed_event(1, 1, 1, vec![], "x");
    let id = event.id.to_hex();
    let cases = [
        (
            RelayMessage::Event {
                subscription_id: sub("s"),
                event: Box::new(event.clone()),
            },
            format!("[\"EVENT\",\"s\",{}]", event.to_json()),
        ),
        (RelayMessage::Eose(sub("s")), r#"["EOSE","s"]"#.to_owned()),
        (
            RelayMessage::Ok {
                event_id: event.id,
                accepted: true,
                message: String::new(),
            },
            format!("[\"OK\",\"{id}\",true,\"\"]"),
        ),
        (
            notice("hi \"there\""),
            r#"["NOTICE","hi \"there\""]"#.to_owned(),
        ),
        (
            RelayMessage::Closed {
                subscription_id: sub("s"),
                message: "invalid: x".to_owned(),
            },
            r#"["CLOSED","s","invalid: x"]"#.to_owned(),
        ),
    ];
    for (message, json) in cases {
        assert_eq!(message.to_json(), json);
        assert_eq!(RelayMessage::parse(&json), Ok(message));
    }
}

#[test]
fn relay_parse_rejects_wrong_arity_types_and_verbs() {
    let id = "ab".repeat(32);
    let bad = [
        (r#"["EOSE"]"#.to_owned(), "missing"),
        (r#"["EOSE","s","t"]"#.to_owned(), "malformed"),
        (format!("[\"OK\",\"{id}\",true]"), "malformed"),
        (format!("[\"OK\",\"{id}\",\"true\",\"\"]"), "malformed"),
        (r#"["OK","ab",true,""]"#.to_owned(), "malformed"),
        (r#"["NOTICE",1]"#.to_owned(), "malformed"),
        (r#"["CLOSED","s"]"#.to_owned(), "malformed"),
        (r#"["EVENT","s",{}]"#.to_owned(), "event"),
        (r#"["EVENT",1,{}]"#.to_owned(), "missing"),
        (r#"["REQ","s",{}]"#.to_owned(), "verb"),
        (r#"["AUTH","challenge"]"#.to_owned(), "unsupported"),
    ];
    for (text, kind) in bad {
        let error = RelayMessage::parse(&text).unwrap_err();
        let got = match error {
            FrameError::MissingSubscriptionId { .. } => "missing",
            FrameError::Malformed { .. } => "malformed",
            FrameError::InvalidEvent { .. } => "event",
            FrameError::UnknownVerb { .. } => "verb",
            FrameError::Unsupported { .. } => "unsupported",
            _ => "other",
        };
        assert_eq!(got, kind, "{text}");
    }
}

#[test]
fn relay_parse_forwards_events_over_client_limits() {
    let event = signed_event(1, 1, 1, vec![], &"x".repeat(70_000));
    let message = RelayMessage::Event {
        subscription_id: sub("s"),
        event: Box::new(event),
    };
    assert_eq!(RelayMessage::parse(&message.to_json()), Ok(message));
}

// ---- properties ----

fn any_string(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn any_subscription_id() -> impl Strategy<Value = SubscriptionId> {
    vec(any::<char>(), 1..=64).prop_map(|chars| sub(&String::from_iter(chars)))
}

fn any_bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    vec(any::<u8>(), N).prop_map(|bytes| {
        let mut array = [0u8; N];
        array.copy_from_slice(&bytes);
        array
    })
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        any_bytes::<32>(),
        any_bytes::<32>(),
        any::<u64>(),
        any::<u16>(),
        vec(vec(any_string(8), 0..4).prop_map(Tag), 0..4),
        any_string(40),
        any_bytes::<64>(),
    )
        .prop_map(|(id, pubkey, created_at, kind, tags, content, sig)| Event {
            id: EventId(id),
            pubkey: PublicKey(pubkey),
            created_at,
            kind: Kind(kind),
            tags,
            content,
            sig: Signature(sig),
        })
}

fn any_filter() -> impl Strategy<Value = Filter> {
    (
        proptest::option::of(btree_set(any_bytes::<32>().prop_map(EventId), 0..3)),
        proptest::option::of(btree_set(any_bytes::<32>().prop_map(PublicKey), 0..3)),
        proptest::option::of(btree_set(any::<u16>().prop_map(Kind), 0..3)),
        btree_map(
            proptest::char::ranges(vec!['a'..='z', 'A'..='Z'].into()),
            btree_set(any_string(6), 0..3),
            0..3,
        ),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(ids, authors, kinds, tags, since, until, limit)| Filter {
            ids,
            authors,
            kinds,
            tags,
            since,
            until,
            limit,
        })
}

fn any_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        any_event().prop_map(|event| ClientMessage::Event(Box::new(event))),
        (any_subscription_id(), vec(any_filter(), 1..=10)).prop_map(
            |(subscription_id, filters)| {
                ClientMessage::Req {
                    subscription_id,
                    filters,
                }
            }
        ),
        any_subscription_id().prop_map(ClientMessage::Close),
    ]
}

fn any_relay_message() -> impl Strategy<Value = RelayMessage> {
    prop_oneof![
        (any_subscription_id(), any_event()).prop_map(|(subscription_id, event)| {
            RelayMessage::Event {
                subscription_id,
                event: Box::new(event),
            }
        }),
        any_subscription_id().prop_map(RelayMessage::Eose),
        (any_bytes::<32>(), any::<bool>(), any_string(30)).prop_map(|(id, accepted, message)| {
            RelayMessage::Ok {
                event_id: EventId(id),
                accepted,
                message,
            }
        }),
        any_string(30).prop_map(RelayMessage::Notice),
        (any_subscription_id(), any_string(30)).prop_map(|(subscription_id, message)| {
            RelayMessage::Closed {
                subscription_id,
                message,
            }
        }),
    ]
}

/// Text built from JSON's own punctuation and NIP-01 verbs, so that the parser gets past the
/// first byte far more often than with uniformly random text.
fn json_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"EVENT\"".to_owned()),
        Just("\"REQ\"".to_owned()),
        Just("\"CLOSE\"".to_owned()),
        Just("\"COUNT\"".to_owned()),
        Just("\"AUTH\"".to_owned()),
        Just("\"ids\"".to_owned()),
        Just("\"kinds\"".to_owned()),
        Just("\"#e\"".to_owned()),
        Just("\"id\"".to_owned()),
        Just("null".to_owned()),
        Just("-1".to_owned()),
        Just("65536".to_owned()),
        Just("1e400".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        any_string(4).prop_map(|text| format!("{text:?}")),
        any::<u64>().prop_map(|n| n.to_string()),
    ];
    vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

proptest! {
    #[test]
    fn client_parse_never_panics_on_arbitrary_text(text in any_string(300)) {
        let _ = ClientMessage::parse(&text, &Limits::default());
        let _ = RelayMessage::parse(&text);
    }

    #[test]
    fn client_parse_never_panics_on_json_like_text(text in json_ish()) {
        if let Err(error) = ClientMessage::parse(&text, &Limits::default()) {
            // Every error has an answer.
            let _ = error.reply();
        }
        let _ = RelayMessage::parse(&text);
    }

    #[test]
    fn client_parse_never_panics_on_mutated_valid_frames(
        message in any_client_message(),
        cut in any::<prop::sample::Index>(),
        insert in any_string(3),
    ) {
        let json = message.to_json();
        let chars: Vec<char> = json.chars().collect();
        let at = cut.index(chars.len() + 1);
        let mutated: String = chars[..at].iter().copied().chain(insert.chars()).chain(chars[at..].iter().copied().skip(1)).collect();
        let _ = ClientMessage::parse(&mutated, &Limits::default());
        let _ = RelayMessage::parse(&mutated);
    }

    #[test]
    fn client_parse_inverts_to_json(message in any_client_message()) {
        let json = message.to_json();
        prop_assert_eq!(ClientMessage::parse(&json, &Limits::default()), Ok(message));
    }

    #[test]
    fn relay_parse_inverts_to_json(message in any_relay_message()) {
        let json = message.to_json();
        prop_assert_eq!(RelayMessage::parse(&json), Ok(message));
    }

    #[test]
    fn canonical_serialisation_matches_serde_json_for_any_content(content in any_string(64)) {
        // NIP-01's escaping rules, restated independently of serde_json.
        let mut expected = String::from("\"");
        for c in content.chars() {
            match c {
                '"' => expected.push_str("\\\""),
                '\\' => expected.push_str("\\\\"),
                '\n' => expected.push_str("\\n"),
                '\r' => expected.push_str("\\r"),
                '\t' => expected.push_str("\\t"),
                '\u{8}' => expected.push_str("\\b"),
                '\u{c}' => expected.push_str("\\f"),
                c if (c as u32) < 0x20 => expected.push_str(&format!("\\u{:04x}", c as u32)),
                c => expected.push(c),
            }
        }
        expected.push('"');
        prop_assert_eq!(serde_json::to_string(&content).unwrap(), expected);
    }
}
