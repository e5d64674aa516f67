//! What a client was already sent, so that a session switching sides sends nothing twice.
//!
//! Contract: a gateway session moves between a worker and the gateway's replica; on each move
//! it re-sends its open `REQ`s to the new side, which answers with stored events, `EOSE`, then
//! live events. [`DeliveredLog::admit`] lets through, per subscription, each event id once
//! (remembering the last [`DELIVERED_WINDOW`] ids) and one `EOSE`; every other message passes.
//! [`DeliveredLog::forget`] clears a subscription when the client closes or replaces it, so a
//! new `REQ` with the same id starts afresh.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::nostr::{EventId, RelayMessage};

/// Event ids remembered per subscription.
pub const DELIVERED_WINDOW: usize = 10_000;

/// Per subscription, the ids and the `EOSE` already delivered (see the module docs).
#[derive(Debug, Clone)]
pub struct DeliveredLog {
    window: usize,
    ids: BTreeMap<String, (BTreeSet<EventId>, VecDeque<EventId>)>,
    eose: BTreeSet<String>,
}

impl Default for DeliveredLog {
    fn default() -> Self {
        Self::with_window(DELIVERED_WINDOW)
    }
}

impl DeliveredLog {
    /// A log remembering `window` ids per subscription (at least 1).
    #[must_use]
    pub fn with_window(window: usize) -> Self {
        Self {
            window: window.max(1),
            ids: BTreeMap::new(),
            eose: BTreeSet::new(),
        }
    }

    /// Whether `message` should reach the client; remembers it if so.
    #[must_use]
    pub fn admit(&mut self, message: &RelayMessage) -> bool {
        match message {
            RelayMessage::Event {
                subscription_id,
                event,
            } => {
                let (seen, order) = self
                    .ids
                    .entry(subscription_id.as_str().to_owned())
                    .or_default();
                if !seen.insert(event.id) {
                    return false;
                }
                order.push_back(event.id);
                if order.len() > self.window
                    && let Some(oldest) = order.pop_front()
                {
                    seen.remove(&oldest);
                }
                true
            }
            RelayMessage::Eose(subscription_id) => {
                self.eose.insert(subscription_id.as_str().to_owned())
            }
            _ => true,
        }
    }

    /// Forgets `subscription` (closed or replaced by the client).
    pub fn forget(&mut self, subscription: &str) {
        self.ids.remove(subscription);
        self.eose.remove(subscription);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::SubscriptionId;
    use crate::nostr::testing::signed_event;

    fn event_on(sub: &str, n: u64) -> RelayMessage {
        RelayMessage::Event {
            subscription_id: SubscriptionId::new(sub).unwrap(),
            event: Box::new(signed_event(3, 1_700_000_000 + n, 1, Vec::new(), "x")),
        }
    }

    fn eose(sub: &str) -> RelayMessage {
        RelayMessage::Eose(SubscriptionId::new(sub).unwrap())
    }

    #[test]
    fn a_switch_repeats_nothing_the_client_already_has() {
        let mut log = DeliveredLog::default();
        // The worker's answer, then the replica's answer to the re-sent REQ.
        let first: Vec<bool> = [event_on("a", 1), event_on("a", 2), eose("a")]
            .iter()
            .map(|message| log.admit(message))
            .collect();
        let again: Vec<bool> = [event_on("a", 2), event_on("a", 3), eose("a")]
            .iter()
            .map(|message| log.admit(message))
            .collect();
        assert_eq!(first, [true, true, true]);
        assert_eq!(again, [false, true, false]);
        // Another subscription is its own; notices always pass.
        assert!(log.admit(&event_on("b", 2)));
        assert!(log.admit(&RelayMessage::Notice("n".into())));
    }

    #[test]
    fn a_forgotten_subscription_starts_afresh_and_the_window_is_bounded() {
        let mut log = DeliveredLog::with_window(2);
        assert!(log.admit(&event_on("a", 1)));
        assert!(log.admit(&eose("a")));
        log.forget("a");
        assert!(log.admit(&event_on("a", 1)));
        assert!(log.admit(&eose("a")));
        assert!(log.admit(&event_on("a", 2)));
        assert!(log.admit(&event_on("a", 3)));
        // Event 1 fell out of the two-id window.
        assert!(log.admit(&event_on("a", 1)));
        assert!(!log.admit(&event_on("a", 3)));
    }
}
