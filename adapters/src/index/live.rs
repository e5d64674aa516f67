//! [`LiveFeed`]: hands newly visible events to live subscriptions.
//!
//! Contract: after the index applied a batch, its owner calls [`LiveFeed::publish`] with the
//! events the batch added. Each subscriber receives each event that matches any of its filters
//! exactly once per `publish` (several matching filters, or the same event twice in the slice,
//! still give one delivery), in slice order. Delivery never blocks: every subscriber has a
//! bounded queue, and a subscriber whose queue is full when an event is due is dropped: it
//! receives [`LiveMessage::Dropped`] (a slot is kept free for that notice) and then the end of
//! its stream. A slow consumer so loses its subscription, never anyone else's events.
//!
//! The queue is an `async-channel`, so receivers work under any executor (tokio, glommio,
//! smol); `publish` itself is synchronous and never awaits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use async_channel::{Receiver, Sender, TrySendError};
use hypergate_core::nostr::{Event, Filter};

/// A subscriber of one [`LiveFeed`]; never reused by that feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(u64);

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber-{}", self.0)
    }
}

/// Why the feed dropped a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its queue already held `capacity` undelivered events when another one was due.
    QueueFull {
        /// The queue's capacity in events.
        capacity: usize,
    },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::QueueFull { capacity } => write!(
                f,
                "subscriber too slow: {capacity} live events were waiting to be read"
            ),
        }
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveMessage {
    /// A newly visible event that matches one of the subscriber's filters.
    Event(Arc<Event>),
    /// The subscriber was dropped; nothing follows.
    Dropped(DropReason),
}

/// The receiving end of one subscription.
#[derive(Debug)]
pub struct LiveReceiver {
    inner: Receiver<LiveMessage>,
}

impl LiveReceiver {
    /// The next message; `None` once the subscription ended (unsubscribed, dropped after its
    /// [`LiveMessage::Dropped`], or the feed itself dropped) and every queued message was read.
    pub async fn recv(&self) -> Option<LiveMessage> {
        self.inner.recv().await.ok()
    }

    /// The next message if one is queued.
    pub fn try_recv(&self) -> Option<LiveMessage> {
        self.inner.try_recv().ok()
    }

    /// Messages waiting to be read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no message is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// What one [`LiveFeed::publish`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Published {
    /// Events queued, counting one per subscriber that received it.
    pub deliveries: usize,
    /// Subscribers dropped because their queue was full (they were told why).
    pub dropped: Vec<SubscriberId>,
}

struct Subscriber {
    filters: Vec<Filter>,
    sender: Sender<LiveMessage>,
}

/// Live subscriptions of one relay.
pub struct LiveFeed {
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    next_id: u64,
    queue_capacity: usize,
}

impl fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveFeed")
            .field("subscribers", &self.subscribers.len())
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl LiveFeed {
    /// A feed whose subscribers may each have up to `queue_capacity` unread events (at least 1).
    #[must_use]
    pub fn new(queue_capacity: usize) -> LiveFeed {
        LiveFeed {
            subscribers: BTreeMap::new(),
            next_id: 0,
            queue_capacity: queue_capacity.max(1),
        }
    }

    /// Registers a subscriber for events matching any of `filters` (`limit` plays no part).
    pub fn subscribe(&mut self, filters: Vec<Filter>) -> (SubscriberId, LiveReceiver) {
        let id = SubscriberId(self.next_id);
        self.next_id += 1;
        // One slot beyond the capacity is kept for the `Dropped` notice.
        let (sender, receiver) = async_channel::bounded(self.queue_capacity + 1);
        self.subscribers.insert(id, Subscriber { filters, sender });
        (id, LiveReceiver { inner: receiver })
    }

    /// Ends a subscription; its receiver reads what is queued, then the end. `false` if the id
    /// is not (or no longer) subscribed.
    pub fn unsubscribe(&mut self, id: SubscriberId) -> bool {
        self.subscribers.remove(&id).is_some()
    }

    /// Subscribers currently registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether no subscriber is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Queues each of `events` for each subscriber with a matching filter, once.
    ///
    /// Subscribers whose receiver is gone are forgotten silently; subscribers whose queue is
    /// full are dropped and told why, and listed in the result.
    pub fn publish(&mut self, events: &[Event]) -> Published {
        let mut seen = BTreeSet::new();
        let unique: Vec<&Event> = events
            .iter()
            .filter(|event| seen.insert(event.id))
            .collect();
        // Each event is shared by every subscriber it goes to, and built only if one does.
        let mut shared: Vec<Option<Arc<Event>>> = vec![None; unique.len()];
        let mut published = Published::default();
        let mut gone = Vec::new();
        for (&id, subscriber) in &self.subscribers {
            for (event, slot) in unique.iter().zip(shared.iter_mut()) {
                if !subscriber
                    .filters
                    .iter()
                    .any(|filter| filter.matches(event))
                {
                    continue;
                }
                if subscriber.sender.len() >= self.queue_capacity {
                    let reason = DropReason::QueueFull {
                        capacity: self.queue_capacity,
                    };
                    // The reserved slot is free: only this feed sends, and it sends nothing
                    // after this notice.
                    let _ = subscriber.sender.try_send(LiveMessage::Dropped(reason));
                    published.dropped.push(id);
                    gone.push(id);
                    break;
                }
                let event = slot.get_or_insert_with(|| Arc::new((*event).clone()));
                match subscriber
                    .sender
                    .try_send(LiveMessage::Event(Arc::clone(event)))
                {
                    Ok(()) => published.deliveries += 1,
                    Err(TrySendError::Closed(_) | TrySendError::Full(_)) => {
                        gone.push(id);
                        break;
                    }
                }
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
        published
    }
}
