//! The live feed under smol: each matching event reaches each subscriber once, and a slow
//! subscriber is dropped (and told why) without holding up the others.

use std::collections::BTreeSet;
use std::sync::Arc;

use hypergate_adapters::index::{DropReason, LiveFeed, LiveMessage, LiveReceiver};
use hypergate_core::nostr::{Event, EventId, Filter, Kind, PublicKey, Signature};

fn event(n: u8, kind: u16) -> Event {
    Event {
        id: EventId([n; 32]),
        pubkey: PublicKey([1; 32]),
        created_at: 100 + u64::from(n),
        kind: Kind(kind),
        tags: vec![],
        content: String::new(),
        sig: Signature([0; 64]),
    }
}

fn kinds(kinds: &[u16]) -> Filter {
    Filter {
        kinds: Some(kinds.iter().copied().map(Kind).collect::<BTreeSet<_>>()),
        ..Filter::default()
    }
}

/// Every message queued for `receiver`, without waiting.
fn drain(receiver: &LiveReceiver) -> Vec<LiveMessage> {
    std::iter::from_fn(|| receiver.try_recv()).collect()
}

fn delivered(events: &[Event]) -> Vec<LiveMessage> {
    events
        .iter()
        .map(|event| LiveMessage::Event(Arc::new(event.clone())))
        .collect()
}

#[test]
fn a_matching_event_is_delivered_once_even_when_several_filters_match() {
    smol::block_on(async {
        let mut feed = LiveFeed::new(16);
        let (_, receiver) = feed.subscribe(vec![kinds(&[1]), kinds(&[1, 7]), Filter::default()]);
        let note = event(1, 1);
        let published = feed.publish(&[note.clone(), note.clone()]);
        assert_eq!(published.deliveries, 1);
        assert_eq!(
            receiver.recv().await,
            Some(LiveMessage::Event(Arc::new(note)))
        );
        assert!(receiver.is_empty());
    });
}

#[test]
fn each_subscriber_gets_only_the_events_its_filters_match_in_order() {
    smol::block_on(async {
        let mut feed = LiveFeed::new(16);
        let (_, notes) = feed.subscribe(vec![kinds(&[1])]);
        let (_, reactions) = feed.subscribe(vec![kinds(&[7])]);
        let (_, nothing) = feed.subscribe(vec![]);
        let events = [event(1, 1), event(2, 7), event(3, 1)];
        let published = feed.publish(&events);
        assert_eq!(published.deliveries, 3);
        assert_eq!(
            drain(&notes),
            delivered(&[events[0].clone(), events[2].clone()])
        );
        assert_eq!(drain(&reactions), delivered(&[events[1].clone()]));
        assert!(drain(&nothing).is_empty());
    });
}

#[test]
fn a_full_queue_drops_only_the_slow_subscriber_and_tells_it_why() {
    smol::block_on(async {
        let mut feed = LiveFeed::new(2);
        let (slow_id, slow) = feed.subscribe(vec![Filter::default()]);
        let (_, fast) = feed.subscribe(vec![Filter::default()]);
        let events: Vec<Event> = (1..=5).map(|n| event(n, 1)).collect();
        let mut fast_got = Vec::new();
        let mut dropped = Vec::new();
        for event in &events {
            let published = feed.publish(std::slice::from_ref(event));
            dropped.extend(published.dropped);
            // The fast subscriber keeps up.
            while let Some(message) = fast.try_recv() {
                fast_got.push(message);
            }
        }
        assert_eq!(dropped, vec![slow_id]);
        assert_eq!(feed.len(), 1);
        assert_eq!(fast_got, delivered(&events));
        // The slow one reads what fit, then why it was dropped, then the end.
        assert_eq!(slow.recv().await, delivered(&events[..1]).pop());
        assert_eq!(slow.recv().await, delivered(&events[1..2]).pop());
        assert_eq!(
            slow.recv().await,
            Some(LiveMessage::Dropped(DropReason::QueueFull { capacity: 2 }))
        );
        assert_eq!(slow.recv().await, None);
    });
}

#[test]
fn a_waiting_receiver_on_another_task_is_woken_by_publish() {
    smol::block_on(async {
        let mut feed = LiveFeed::new(4);
        let (_, receiver) = feed.subscribe(vec![kinds(&[1])]);
        let waiter = smol::spawn(async move { receiver.recv().await });
        smol::future::yield_now().await;
        let note = event(9, 1);
        let _ = feed.publish(&[event(8, 7), note.clone()]);
        assert_eq!(waiter.await, Some(LiveMessage::Event(Arc::new(note))));
    });
}

#[test]
fn unsubscribe_ends_the_stream_after_what_was_queued() {
    smol::block_on(async {
        let mut feed = LiveFeed::new(4);
        let (id, receiver) = feed.subscribe(vec![Filter::default()]);
        let note = event(1, 1);
        let _ = feed.publish(std::slice::from_ref(&note));
        assert!(feed.unsubscribe(id));
        assert!(!feed.unsubscribe(id));
        let _ = feed.publish(&[event(2, 1)]);
        assert_eq!(
            receiver.recv().await,
            Some(LiveMessage::Event(Arc::new(note)))
        );
        assert_eq!(receiver.recv().await, None);
    });
}

#[test]
fn a_subscriber_whose_receiver_is_gone_is_forgotten() {
    let mut feed = LiveFeed::new(4);
    let (_, receiver) = feed.subscribe(vec![Filter::default()]);
    let (_, kept) = feed.subscribe(vec![Filter::default()]);
    drop(receiver);
    let published = feed.publish(&[event(1, 1)]);
    assert_eq!(published.deliveries, 1);
    assert!(published.dropped.is_empty());
    assert_eq!(feed.len(), 1);
    assert_eq!(kept.len(), 1);
}

#[test]
fn live_matching_honours_since_and_until() {
    let mut feed = LiveFeed::new(4);
    let window = Filter {
        since: Some(102),
        until: Some(103),
        ..Filter::default()
    };
    let (_, receiver) = feed.subscribe(vec![window]);
    let events: Vec<Event> = (1..=4).map(|n| event(n, 1)).collect();
    let _ = feed.publish(&events);
    assert_eq!(drain(&receiver), delivered(&events[1..3]));
}
