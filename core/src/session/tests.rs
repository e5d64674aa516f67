use std::time::Instant;

use super::*;
use crate::nostr::testing::signed_event;
use crate::nostr::{Event, Tag};

fn now() -> Instant {
    crate::time::test_start()
}

fn session() -> Session {
    Session::new(SessionConfig::default(), SignatureVerifier::new())
}

fn note(secret: u8, created_at: u64, content: &str) -> Event {
    signed_event(secret, created_at, 1, Vec::new(), content)
}

fn effects(session: &mut Session) -> Vec<Effect> {
    std::iter::from_fn(|| session.poll_effect()).collect()
}

fn frames(session: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|frame| frame.to_json())
        .collect()
}

fn event_frame(sub: &str, event: &Event) -> String {
    format!(r#"["EVENT","{sub}",{}]"#, event.to_json())
}

fn sub(id: &str) -> SubscriptionId {
    SubscriptionId::new(id).unwrap()
}

/// Sends a REQ and returns its query id (the REQ must need a query).
fn req(session: &mut Session, text: &str) -> QueryId {
    session.handle_client_text(text, now());
    let mut query = None;
    for effect in effects(session) {
        if let Effect::Query { query: id, .. } = effect {
            query = Some(id);
        }
    }
    query.expect("the REQ asked for stored events")
}

#[test]
fn req_gets_stored_events_newest_first_then_eose_then_live_events() {
    let mut s = session();
    s.handle_client_text(r#"["REQ","a",{"kinds":[1]}]"#, now());
    let emitted = effects(&mut s);
    assert!(
        matches!(&emitted[0], Effect::Subscribe { subscription, .. } if subscription.as_str() == "a")
    );
    let Effect::Query { query, filters, .. } = &emitted[1] else {
        panic!("expected a query, got {emitted:?}");
    };
    assert_eq!(filters.len(), 1);
    let old = note(1, 10, "old");
    let new = note(1, 20, "new");
    s.handle_query_result(*query, vec![old.clone(), new.clone()])
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![
            event_frame("a", &new),
            event_frame("a", &old),
            r#"["EOSE","a"]"#.into()
        ]
    );
    let live = note(2, 30, "live");
    s.handle_live_event(&sub("a"), &live);
    assert_eq!(frames(&mut s), vec![event_frame("a", &live)]);
}

#[test]
fn limit_zero_req_gets_eose_at_once_without_a_query_and_then_live_events() {
    let mut s = session();
    s.handle_client_text(r#"["REQ","z",{"kinds":[1],"limit":0}]"#, now());
    let emitted = effects(&mut s);
    assert_eq!(emitted.len(), 1, "only Subscribe: {emitted:?}");
    assert!(matches!(emitted[0], Effect::Subscribe { .. }));
    assert_eq!(frames(&mut s), vec![r#"["EOSE","z"]"#.to_owned()]);
    let live = note(1, 5, "x");
    s.handle_live_event(&sub("z"), &live);
    assert_eq!(frames(&mut s), vec![event_frame("z", &live)]);
}

#[test]
fn limit_zero_filter_beside_another_asks_stored_events_only_for_the_other() {
    let mut s = session();
    s.handle_client_text(
        r#"["REQ","m",{"kinds":[1],"limit":0},{"kinds":[7]}]"#,
        now(),
    );
    let emitted = effects(&mut s);
    let Effect::Query { query, filters, .. } = &emitted[1] else {
        panic!("{emitted:?}");
    };
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].limit, None);
    let reaction = signed_event(1, 3, 7, Vec::new(), "+");
    // The adapter wrongly hands in a kind-1 event: only the limit-0 filter matches it.
    s.handle_query_result(*query, vec![note(1, 4, "n"), reaction.clone()])
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![event_frame("m", &reaction), r#"["EOSE","m"]"#.into()]
    );
}

#[test]
fn verified_event_is_published_and_accepted_with_ok_true() {
    let mut s = session();
    let event = note(3, 1, "hello");
    s.handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now());
    assert_eq!(
        effects(&mut s),
        vec![Effect::Publish {
            event: Box::new(event.clone())
        }]
    );
    assert!(frames(&mut s).is_empty());
    s.handle_publish_result(event.id, PublishOutcome::Accepted)
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![format!(r#"["OK","{}",true,""]"#, event.id)]
    );
    assert_eq!(s.pending_publishes(), 0);
}

#[test]
fn tampered_event_is_refused_invalid_and_never_published() {
    let mut s = session();
    let mut event = note(3, 1, "hello");
    event.content = "changed".into();
    s.handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now());
    assert!(effects(&mut s).is_empty());
    assert_eq!(
        frames(&mut s),
        vec![format!(
            r#"["OK","{}",false,"invalid: event id does not match"]"#,
            event.id
        )]
    );

    let mut forged = note(3, 1, "hello");
    forged.sig = note(4, 1, "other").sig;
    s.handle_client_text(&format!(r#"["EVENT",{}]"#, forged.to_json()), now());
    assert!(effects(&mut s).is_empty());
    assert_eq!(
        frames(&mut s),
        vec![format!(
            r#"["OK","{}",false,"invalid: bad signature"]"#,
            forged.id
        )]
    );
}

#[test]
fn ephemeral_event_is_published_for_live_delivery_and_gets_ok() {
    let mut s = session();
    let event = signed_event(3, 1, 20001, Vec::new(), "typing");
    s.handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now());
    assert!(matches!(&effects(&mut s)[..], [Effect::Publish { .. }]));
    s.handle_publish_result(event.id, PublishOutcome::Accepted)
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![format!(r#"["OK","{}",true,""]"#, event.id)]
    );
}

#[test]
fn publish_outcomes_become_the_nip01_ok_messages() {
    let mut s = session();
    let cases = [
        (
            PublishOutcome::Duplicate,
            vec![r#"true,"duplicate: already have this event"]"#],
        ),
        (
            PublishOutcome::Rejected("blocked: not on the list".into()),
            vec![r#"false,"blocked: not on the list"]"#],
        ),
        (
            PublishOutcome::Rejected("disk full".into()),
            vec![r#"false,"error: disk full"]"#],
        ),
        (
            PublishOutcome::ReadOnly("no writer".into()),
            vec![r#"false,"read-only: no writer"]"#],
        ),
    ];
    for (i, (outcome, endings)) in cases.into_iter().enumerate() {
        let event = note(5, u64::try_from(i).unwrap(), "x");
        s.handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now());
        let _ = effects(&mut s);
        let read_only = matches!(outcome, PublishOutcome::ReadOnly(_));
        s.handle_publish_result(event.id, outcome).unwrap();
        let sent = frames(&mut s);
        let ok = sent.last().unwrap();
        assert!(ok.starts_with(&format!(r#"["OK","{}","#, event.id)), "{ok}");
        assert!(ok.ends_with(endings[0]), "{ok}");
        if read_only {
            assert_eq!(
                sent[0],
                r#"["NOTICE","Relay is read-only while workers are offline"]"#
            );
            assert_eq!(sent.len(), 2);
        } else {
            assert_eq!(sent.len(), 1);
        }
    }
}

#[test]
fn the_same_event_sent_twice_is_published_twice_and_answered_twice() {
    let mut s = session();
    let event = note(3, 1, "again");
    let text = format!(r#"["EVENT",{}]"#, event.to_json());
    s.handle_client_text(&text, now());
    s.handle_client_text(&text, now());
    assert_eq!(effects(&mut s).len(), 2);
    s.handle_publish_result(event.id, PublishOutcome::Accepted)
        .unwrap();
    s.handle_publish_result(event.id, PublishOutcome::Duplicate)
        .unwrap();
    assert_eq!(frames(&mut s).len(), 2);
    assert_eq!(
        s.handle_publish_result(event.id, PublishOutcome::Accepted),
        Err(SessionError::UnknownPublish(event.id))
    );
}

#[test]
fn close_ends_the_subscription_and_later_live_events_and_answers_are_ignored() {
    let mut s = session();
    let query = req(&mut s, r#"["REQ","c",{}]"#);
    s.handle_client_text(r#"["CLOSE","c"]"#, now());
    assert_eq!(
        effects(&mut s),
        vec![Effect::Unsubscribe {
            subscription: sub("c")
        }]
    );
    assert_eq!(
        s.handle_query_result(query, vec![note(1, 1, "late")]),
        Ok(())
    );
    s.handle_live_event(&sub("c"), &note(1, 2, "live"));
    assert!(
        frames(&mut s).is_empty(),
        "CLOSE gets no reply, late events none"
    );
    s.handle_client_text(r#"["CLOSE","never-opened"]"#, now());
    assert!(effects(&mut s).is_empty());
    assert!(frames(&mut s).is_empty());
}

#[test]
fn req_with_an_open_id_replaces_it_and_the_old_answer_is_ignored() {
    let mut s = session();
    let first = req(&mut s, r#"["REQ","r",{"kinds":[1]}]"#);
    s.handle_client_text(r#"["REQ","r",{"kinds":[7]}]"#, now());
    let emitted = effects(&mut s);
    assert!(
        matches!(&emitted[0], Effect::Unsubscribe { subscription } if subscription.as_str() == "r")
    );
    assert!(matches!(&emitted[1], Effect::Subscribe { .. }));
    let Effect::Query { query: second, .. } = emitted[2] else {
        panic!("{emitted:?}");
    };
    assert_ne!(first, second);
    s.handle_query_result(first, vec![note(1, 1, "kind 1")])
        .unwrap();
    assert!(frames(&mut s).is_empty());
    let reaction = signed_event(1, 2, 7, Vec::new(), "+");
    s.handle_query_result(second, vec![reaction.clone()])
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![event_frame("r", &reaction), r#"["EOSE","r"]"#.into()]
    );
    assert_eq!(s.subscription_count(), 1);
}

#[test]
fn too_many_subscriptions_are_closed_with_an_error_prefix_but_replacing_one_is_allowed() {
    let config = SessionConfig {
        max_subscriptions: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, SignatureVerifier::new());
    s.handle_client_text(r#"["REQ","1",{"limit":0}]"#, now());
    s.handle_client_text(r#"["REQ","2",{"limit":0}]"#, now());
    let _ = (effects(&mut s), frames(&mut s));
    s.handle_client_text(r#"["REQ","3",{"limit":0}]"#, now());
    assert!(effects(&mut s).is_empty());
    assert_eq!(
        frames(&mut s),
        vec![
            r#"["CLOSED","3","error: too many subscriptions (the limit is 2 per connection)"]"#
                .to_owned()
        ]
    );
    s.handle_client_text(r#"["REQ","2",{"kinds":[1],"limit":0}]"#, now());
    assert_eq!(frames(&mut s), vec![r#"["EOSE","2"]"#.to_owned()]);
    assert_eq!(s.subscription_count(), 2);
}

#[test]
fn malformed_frames_get_notices_and_a_bad_filter_closes_its_subscription() {
    let mut s = session();
    s.handle_client_text("not json", now());
    s.handle_client_text(r#"{"a":1}"#, now());
    s.handle_client_text(r#"["REQ"]"#, now());
    assert_eq!(
        frames(&mut s),
        vec![
            r#"["NOTICE","Invalid message payload"]"#.to_owned(),
            r#"["NOTICE","Malformed Nostr frame"]"#.to_owned(),
            r#"["NOTICE","REQ frame missing subscription id"]"#.to_owned(),
        ]
    );
    s.handle_client_text(r#"["REQ","b",{"limit":0}]"#, now());
    let _ = (effects(&mut s), frames(&mut s));
    s.handle_client_text(r#"["REQ","b",{"kinds":"x"}]"#, now());
    assert_eq!(
        effects(&mut s),
        vec![Effect::Unsubscribe {
            subscription: sub("b")
        }]
    );
    let sent = frames(&mut s);
    assert!(
        sent[0].starts_with(r#"["CLOSED","b","invalid: filter 0"#),
        "{sent:?}"
    );
    assert!(!s.has_subscription(&sub("b")));
}

#[test]
fn an_event_is_sent_once_per_subscription_across_filters_and_live_delivery() {
    let mut s = session();
    let query = req(
        &mut s,
        r#"["REQ","d",{"kinds":[1]},{"authors":[]},{"since":0}]"#,
    );
    let event = note(1, 10, "both");
    s.handle_query_result(query, vec![event.clone(), event.clone()])
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![event_frame("d", &event), r#"["EOSE","d"]"#.into()]
    );
    s.handle_live_event(&sub("d"), &event);
    let fresh = note(1, 11, "fresh");
    s.handle_live_event(&sub("d"), &fresh);
    s.handle_live_event(&sub("d"), &fresh);
    assert_eq!(frames(&mut s), vec![event_frame("d", &fresh)]);
}

#[test]
fn live_events_arriving_before_the_stored_answer_follow_eose_without_repeats() {
    let mut s = session();
    let query = req(&mut s, r#"["REQ","e",{}]"#);
    let stored = note(1, 10, "stored");
    let racing = note(1, 12, "stored and live");
    let early = note(1, 11, "live only");
    s.handle_live_event(&sub("e"), &racing);
    s.handle_live_event(&sub("e"), &early);
    assert!(frames(&mut s).is_empty());
    s.handle_query_result(query, vec![stored.clone(), racing.clone()])
        .unwrap();
    assert_eq!(
        frames(&mut s),
        vec![
            event_frame("e", &racing),
            event_frame("e", &stored),
            r#"["EOSE","e"]"#.into(),
            event_frame("e", &early),
        ]
    );
}

#[test]
fn too_many_early_live_events_close_the_subscription() {
    let config = SessionConfig {
        max_early_live: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, SignatureVerifier::new());
    let query = req(&mut s, r#"["REQ","f",{}]"#);
    for i in 0..3 {
        s.handle_live_event(&sub("f"), &note(1, i, "x"));
    }
    assert_eq!(
        effects(&mut s),
        vec![Effect::Unsubscribe {
            subscription: sub("f")
        }]
    );
    let sent = frames(&mut s);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with(r#"["CLOSED","f","error: "#), "{sent:?}");
    assert_eq!(s.handle_query_result(query, Vec::new()), Ok(()));
    assert!(frames(&mut s).is_empty());
}

#[test]
fn live_event_matching_no_filter_is_not_sent() {
    let mut s = session();
    s.handle_client_text(r#"["REQ","g",{"kinds":[7],"limit":0}]"#, now());
    let _ = (effects(&mut s), frames(&mut s));
    s.handle_live_event(&sub("g"), &note(1, 1, "kind 1"));
    let tagged = signed_event(1, 1, 7, vec![Tag::new(["e", "x"])], "+");
    s.handle_live_event(&sub("g"), &tagged);
    assert_eq!(frames(&mut s), vec![event_frame("g", &tagged)]);
}

#[test]
fn a_failed_query_closes_its_subscription_with_an_error() {
    let mut s = session();
    let query = req(&mut s, r#"["REQ","h",{}]"#);
    s.handle_query_failed(query, "index unavailable").unwrap();
    assert_eq!(
        frames(&mut s),
        vec![r#"["CLOSED","h","error: index unavailable"]"#.to_owned()]
    );
    assert_eq!(
        effects(&mut s),
        vec![Effect::Unsubscribe {
            subscription: sub("h")
        }]
    );
}

#[test]
fn answers_to_queries_never_issued_are_errors() {
    let mut s = session();
    assert_eq!(
        s.handle_query_result(QueryId(0), Vec::new()),
        Err(SessionError::UnknownQuery(QueryId(0)))
    );
    let query = req(&mut s, r#"["REQ","i",{}]"#);
    s.handle_query_result(query, Vec::new()).unwrap();
    // Answered once already: a repeat is a late answer, ignored.
    assert_eq!(s.handle_query_result(query, Vec::new()), Ok(()));
    assert_eq!(frames(&mut s), vec![r#"["EOSE","i"]"#.to_owned()]);
}

#[test]
fn a_dropped_live_feed_closes_the_subscription_with_the_reason() {
    let mut s = session();
    s.handle_client_text(r#"["REQ","j",{"limit":0}]"#, now());
    let _ = (effects(&mut s), frames(&mut s));
    s.handle_live_dropped(&sub("j"), "subscriber too slow");
    assert_eq!(
        frames(&mut s),
        vec![r#"["CLOSED","j","error: subscriber too slow"]"#.to_owned()]
    );
    assert_eq!(
        effects(&mut s),
        vec![Effect::Unsubscribe {
            subscription: sub("j")
        }]
    );
    s.handle_live_dropped(&sub("j"), "again");
    assert!(frames(&mut s).is_empty());
}

#[test]
fn disconnect_unsubscribes_every_open_subscription_and_drops_unsent_frames() {
    let mut s = session();
    s.handle_client_text(r#"["REQ","k1",{"limit":0}]"#, now());
    s.handle_client_text(r#"["REQ","k2",{}]"#, now());
    let event = note(3, 1, "in flight");
    s.handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now());
    let _ = effects(&mut s);
    s.handle_disconnect();
    // The publish in flight still completes in the adapter; its late result is ignored.
    assert_eq!(
        s.handle_publish_result(event.id, PublishOutcome::Accepted),
        Ok(())
    );
    assert!(frames(&mut s).is_empty());
    assert_eq!(
        effects(&mut s),
        vec![
            Effect::Unsubscribe {
                subscription: sub("k1")
            },
            Effect::Unsubscribe {
                subscription: sub("k2")
            },
        ]
    );
    assert_eq!(s.subscription_count(), 0);
}

#[test]
fn binary_frames_get_a_notice() {
    let mut s = session();
    s.handle_client_binary(now());
    let sent = frames(&mut s);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with(r#"["NOTICE","Binary frames"#));
}

#[test]
fn live_dedup_window_forgets_the_oldest_ids_first() {
    let config = SessionConfig {
        live_dedup_window: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, SignatureVerifier::new());
    s.handle_client_text(r#"["REQ","w",{"limit":0}]"#, now());
    let _ = (effects(&mut s), frames(&mut s));
    let events: Vec<Event> = (0..3).map(|i| note(1, i, "w")).collect();
    for event in &events {
        s.handle_live_event(&sub("w"), event);
    }
    assert_eq!(frames(&mut s).len(), 3);
    s.handle_live_event(&sub("w"), &events[2]);
    assert!(frames(&mut s).is_empty(), "recent ids are remembered");
    s.handle_live_event(&sub("w"), &events[0]);
    assert_eq!(
        frames(&mut s).len(),
        1,
        "the oldest id fell out of the window"
    );
}

#[test]
fn session_records_when_the_client_last_spoke() {
    let mut s = session();
    assert_eq!(s.last_client_frame_at(), None);
    let t = now();
    s.handle_client_text("[]", t);
    assert_eq!(s.last_client_frame_at(), Some(t));
}

#[test]
fn session_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Session>();
}
