//! Properties of the session machine over arbitrary client input and adapter timing.

use std::collections::BTreeMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::nostr::Event;
use crate::nostr::testing::signed_event;

const SUBS: [&str; 4] = ["a", "b", "c", "dd"];

/// One step of a client (or of the relay's live feed).
#[derive(Clone, Debug)]
enum Step {
    /// Any text at all.
    Text(String),
    /// A well-formed REQ for one of a few ids.
    Req { sub: usize, filter: usize },
    /// A REQ for an open id with a filter that does not parse.
    BadReq { sub: usize },
    /// CLOSE of one of a few ids.
    Close { sub: usize },
    /// An EVENT from a small pool, maybe tampered with.
    Event { pool: usize, tampered: bool },
    /// A live event from the pool, for one of the ids.
    Live { sub: usize, pool: usize },
}

const FILTERS: [&str; 5] = [
    "{}",
    r#"{"kinds":[1]}"#,
    r#"{"kinds":[1],"limit":0}"#,
    r#"{"limit":2},{"kinds":[20001]}"#,
    r#"{"authors":[]}"#,
];

fn pool() -> Vec<Event> {
    (0..6u8)
        .map(|i| {
            let kind = if i == 5 { 20001 } else { 1 };
            signed_event(1 + i % 3, u64::from(i), kind, Vec::new(), "p")
        })
        .collect()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        ".{0,40}".prop_map(Step::Text),
        r#"\["(REQ|CLOSE|EVENT|COUNT|AUTH)",.{0,30}\]"#.prop_map(Step::Text),
        (0..SUBS.len(), 0..FILTERS.len()).prop_map(|(sub, filter)| Step::Req { sub, filter }),
        (0..SUBS.len()).prop_map(|sub| Step::BadReq { sub }),
        (0..SUBS.len()).prop_map(|sub| Step::Close { sub }),
        (0..6usize, any::<bool>()).prop_map(|(pool, tampered)| Step::Event { pool, tampered }),
        (0..SUBS.len(), 0..6usize).prop_map(|(sub, pool)| Step::Live { sub, pool }),
    ]
}

/// What the client and the adapter observed, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Subscribe(String),
    Unsubscribe(String),
    Eose(String),
    Ok(EventId),
}

struct Harness {
    session: Session,
    pool: Vec<Event>,
    answer_queries_at_once: bool,
    deferred: Vec<(QueryId, Vec<Filter>)>,
    log: Vec<Seen>,
    events_sent: BTreeMap<EventId, u32>,
}

impl Harness {
    fn new(answer_queries_at_once: bool) -> Harness {
        Harness {
            session: Session::new(SessionConfig::default(), SignatureVerifier::new()),
            pool: pool(),
            answer_queries_at_once,
            deferred: Vec::new(),
            log: Vec::new(),
            events_sent: BTreeMap::new(),
        }
    }

    fn stored_answer(&self, filters: &[Filter]) -> Vec<Event> {
        self.pool
            .iter()
            .filter(|e| !e.kind.is_ephemeral() && filters.iter().any(|f| f.matches(e)))
            .cloned()
            .collect()
    }

    fn run(&mut self, step: &Step, now: Instant) {
        match step {
            Step::Text(text) => self.session.handle_client_text(text, now),
            Step::Req { sub, filter } => self.session.handle_client_text(
                &format!(r#"["REQ","{}",{}]"#, SUBS[*sub], FILTERS[*filter]),
                now,
            ),
            Step::BadReq { sub } => self
                .session
                .handle_client_text(&format!(r#"["REQ","{}",{{"ids":1}}]"#, SUBS[*sub]), now),
            Step::Close { sub } => self
                .session
                .handle_client_text(&format!(r#"["CLOSE","{}"]"#, SUBS[*sub]), now),
            Step::Event { pool, tampered } => {
                let mut event = self.pool[*pool].clone();
                if *tampered {
                    event.content.push('!');
                }
                *self.events_sent.entry(event.id).or_insert(0) += 1;
                self.session
                    .handle_client_text(&format!(r#"["EVENT",{}]"#, event.to_json()), now);
            }
            Step::Live { sub, pool } => {
                let event = self.pool[*pool].clone();
                self.session
                    .handle_live_event(&SubscriptionId::new(SUBS[*sub]).unwrap(), &event);
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::Subscribe { subscription, .. } => {
                    self.log.push(Seen::Subscribe(subscription.to_string()));
                }
                Effect::Unsubscribe { subscription } => {
                    self.log.push(Seen::Unsubscribe(subscription.to_string()));
                }
                Effect::Query { query, filters, .. } => {
                    if self.answer_queries_at_once {
                        let answer = self.stored_answer(&filters);
                        self.session.handle_query_result(query, answer).unwrap();
                    } else {
                        self.deferred.push((query, filters));
                    }
                }
                Effect::Publish { event } => {
                    self.session
                        .handle_publish_result(event.id, PublishOutcome::Accepted)
                        .unwrap();
                }
            }
        }
        while let Some(frame) = self.session.poll_transmit() {
            match frame {
                RelayMessage::Eose(sub) => self.log.push(Seen::Eose(sub.to_string())),
                RelayMessage::Ok { event_id, .. } => self.log.push(Seen::Ok(event_id)),
                _ => {}
            }
        }
    }

    fn count(&self, wanted: &Seen) -> usize {
        self.log.iter().filter(|seen| *seen == wanted).count()
    }
}

fn now() -> Instant {
    crate::time::test_start()
}

proptest! {
    #[test]
    fn every_accepted_req_yields_exactly_one_eose_when_queries_are_answered_at_once(
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let mut h = Harness::new(true);
        let t = now();
        for step in &steps {
            h.run(step, t);
        }
        for sub in SUBS {
            prop_assert_eq!(
                h.count(&Seen::Eose(sub.into())),
                h.count(&Seen::Subscribe(sub.into())),
                "sub {}: {:?}", sub, h.log
            );
        }
    }

    #[test]
    fn open_subscriptions_get_exactly_one_eose_after_late_answers_in_any_order(
        steps in prop::collection::vec(step(), 0..40),
        order in prop::collection::vec(any::<u32>(), 40),
    ) {
        let mut h = Harness::new(false);
        let t = now();
        for step in &steps {
            h.run(step, t);
        }
        let mut deferred = std::mem::take(&mut h.deferred);
        let mut keyed: Vec<(u32, (QueryId, Vec<Filter>))> =
            deferred.drain(..).zip(order.iter().cycle()).map(|(q, &k)| (k, q)).collect();
        keyed.sort_by_key(|(k, (q, _))| (*k, *q));
        for (_, (query, filters)) in keyed {
            let answer = h.stored_answer(&filters);
            h.session.handle_query_result(query, answer).unwrap();
            h.drain();
        }
        for sub in SUBS {
            let id = SubscriptionId::new(sub).unwrap();
            let eoses = h.count(&Seen::Eose(sub.into()));
            prop_assert!(eoses <= h.count(&Seen::Subscribe(sub.into())));
            if h.session.has_subscription(&id) {
                let last = h.log.iter().rposition(|s| *s == Seen::Subscribe(sub.into())).unwrap();
                let after = h.log[last..].iter().filter(|s| **s == Seen::Eose(sub.into())).count();
                prop_assert_eq!(after, 1, "sub {}: {:?}", sub, h.log);
            }
        }
    }

    #[test]
    fn every_event_frame_gets_one_ok_and_subscriptions_pair_with_unsubscribes(
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let mut h = Harness::new(true);
        let t = now();
        for step in &steps {
            h.run(step, t);
        }
        for (id, &sent) in &h.events_sent {
            prop_assert_eq!(h.count(&Seen::Ok(*id)), sent as usize);
        }
        h.session.handle_disconnect();
        h.drain();
        for sub in SUBS {
            let mut open = 0i32;
            for seen in &h.log {
                match seen {
                    Seen::Subscribe(s) if s == sub => open += 1,
                    Seen::Unsubscribe(s) if s == sub => open -= 1,
                    _ => {}
                }
                prop_assert!((0..=1).contains(&open), "sub {}: {:?}", sub, h.log);
            }
            prop_assert_eq!(open, 0);
        }
    }
}
