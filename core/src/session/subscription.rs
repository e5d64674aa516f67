//! One open subscription: its filters, whether its stored events are still being queried, and
//! the ids it has sent (so that no event goes to it twice).

use std::collections::{BTreeSet, VecDeque};

use super::{QueryId, SessionConfig};
use crate::nostr::{Event, EventId, Filter};

/// Where a subscription is in its life.
#[derive(Debug)]
enum Phase {
    /// Its stored events are being queried; live events that arrive meanwhile wait here.
    Stored { query: QueryId, early: Vec<Event> },
    /// `EOSE` was sent; live events go out as they come.
    Live,
}

/// What to do with a live event.
pub(super) enum EarlyLive {
    /// The stored events are not sent yet; the event was held back.
    Held,
    /// The hold-back buffer is full: end the subscription.
    Overflow,
    /// The subscription is live: send it (unless already sent).
    SendNow,
}

#[derive(Debug)]
pub(super) struct Subscription {
    filters: Vec<Filter>,
    phase: Phase,
    max_early: usize,
    pub(super) sent: SentIds,
}

impl Subscription {
    /// A subscription whose stored events are being fetched by `query`, or live at once when
    /// there is none (every filter had `limit: 0`).
    pub(super) fn new(
        filters: Vec<Filter>,
        query: Option<QueryId>,
        config: &SessionConfig,
    ) -> Subscription {
        let phase = match query {
            Some(query) => Phase::Stored {
                query,
                early: Vec::new(),
            },
            None => Phase::Live,
        };
        Subscription {
            filters,
            phase,
            max_early: config.max_early_live,
            sent: SentIds::new(config.live_dedup_window),
        }
    }

    /// The query still outstanding for this subscription.
    pub(super) fn pending_query(&self) -> Option<QueryId> {
        match self.phase {
            Phase::Stored { query, .. } => Some(query),
            Phase::Live => None,
        }
    }

    /// A stored event belongs in the answer when a filter that asked for stored events matches.
    pub(super) fn wants_stored(&self, event: &Event) -> bool {
        self.filters
            .iter()
            .any(|filter| filter.limit != Some(0) && filter.matches(event))
    }

    /// A live event belongs to the subscription when any filter matches (`limit` aside).
    pub(super) fn wants_live(&self, event: &Event) -> bool {
        self.filters.iter().any(|filter| filter.matches(event))
    }

    /// Holds `event` back while the stored events are loading.
    pub(super) fn hold_if_early(&mut self, event: &Event) -> EarlyLive {
        match &mut self.phase {
            Phase::Live => EarlyLive::SendNow,
            Phase::Stored { early, .. } if early.len() >= self.max_early => EarlyLive::Overflow,
            Phase::Stored { early, .. } => {
                early.push(event.clone());
                EarlyLive::Held
            }
        }
    }

    /// `EOSE` is out: the subscription is live; returns the events held back, in arrival order.
    pub(super) fn go_live(&mut self) -> Vec<Event> {
        match std::mem::replace(&mut self.phase, Phase::Live) {
            Phase::Stored { early, .. } => early,
            Phase::Live => Vec::new(),
        }
    }
}

/// The ids a subscription has sent: every stored one, and a window of recent live ones.
///
/// The stored set is as large as the stored answer (which the adapter bounds by the query
/// limits); live ids are forgotten oldest first beyond the window, which is enough because a
/// live feed hands each newly visible event out once.
#[derive(Debug)]
pub(super) struct SentIds {
    stored: BTreeSet<EventId>,
    live: BTreeSet<EventId>,
    live_order: VecDeque<EventId>,
    live_window: usize,
}

impl SentIds {
    fn new(live_window: usize) -> SentIds {
        SentIds {
            stored: BTreeSet::new(),
            live: BTreeSet::new(),
            live_order: VecDeque::new(),
            live_window: live_window.max(1),
        }
    }

    /// Records a stored event; `false` if it was already sent.
    pub(super) fn insert_stored(&mut self, id: EventId) -> bool {
        !self.live.contains(&id) && self.stored.insert(id)
    }

    /// Records a live event; `false` if it was already sent.
    pub(super) fn insert_live(&mut self, id: EventId) -> bool {
        if self.stored.contains(&id) || !self.live.insert(id) {
            return false;
        }
        self.live_order.push_back(id);
        if self.live_order.len() > self.live_window {
            if let Some(oldest) = self.live_order.pop_front() {
                self.live.remove(&oldest);
            }
        }
        true
    }
}
