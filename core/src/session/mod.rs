//! One client connection speaking NIP-01 to one relay, as a sans-IO machine.
//!
//! ## Contract
//! - **Every frame has its NIP-01 answer.** Each `EVENT` gets exactly one `OK` (ephemeral kinds
//!   included); each accepted `REQ` gets its stored events, then exactly one `EOSE`, then live
//!   events until `CLOSE`, a replacing `REQ` with the same id, or a `CLOSED` from the relay. A
//!   `REQ` whose filters all have `limit: 0` asks for no stored events: `EOSE` comes at once and
//!   the subscription is live. Malformed frames get [`FrameError::reply`] (`NOTICE`, or `OK false` /
//!   `CLOSED` when the id could be read). `CLOSE` of an unknown id is ignored (NIP-01 asks for no
//!   reply).
//! - **Nothing unverified is published.** An event's id and BIP-340 signature are checked here,
//!   with the session's [`SignatureVerifier`], before [`Effect::Publish`] is emitted; a failure
//!   is answered `OK false "invalid: …"` and never reaches the adapter.
//! - **Each event at most once per subscription.** Stored events are deduplicated across filters
//!   and against live delivery; a live event that the stored answer already carried, or that was
//!   already delivered live (within [`SessionConfig::live_dedup_window`] recent ids), is dropped.
//!   Only events matching one of the subscription's filters are sent, whatever the adapter hands
//!   in; stored events go out newest first (`created_at` descending, then id ascending).
//! - **Live before stored is held back.** Live events that arrive while a subscription's stored
//!   events are still being queried are buffered (at most [`SessionConfig::max_early_live`]) and
//!   sent after `EOSE`; a subscription that overflows the buffer is ended with `CLOSED`.
//! - **Subscriptions are bounded.** A `REQ` for a new id beyond
//!   [`SessionConfig::max_subscriptions`] is answered `CLOSED "error: too many subscriptions …"`
//!   and changes nothing.
//! - **Effects pair up.** Every [`Effect::Subscribe`] is followed, sooner or later, by exactly one
//!   [`Effect::Unsubscribe`] for that subscription (on `CLOSE`, replacement, a `CLOSED` from the
//!   relay, or [`Session::handle_disconnect`]), so an adapter's live registrations never leak.
//!   Every [`Effect::Query`] is answered with [`Session::handle_query_result`] or
//!   [`Session::handle_query_failed`]; an answer to a query whose subscription has since ended is
//!   ignored, so answers may arrive late. Every [`Effect::Publish`] is answered with
//!   [`Session::handle_publish_result`].
//! - **Read-only relays say so the original's way:** `NOTICE "Relay is read-only while workers
//!   are offline"`, then `OK false "read-only: <reason>"`.
//!
//! The machine performs no I/O and reads no clock: `now` is recorded only so an adapter can
//! close idle connections ([`Session::last_client_frame_at`]).
//!
//! ## Drive loop
//! After every input, drain [`Session::poll_effect`] (executing each, which may feed more input)
//! and [`Session::poll_transmit`] until both are empty:
//!
//! ```
//! use std::time::Instant;
//! use hypergate_core::nostr::SignatureVerifier;
//! use hypergate_core::session::{Effect, PublishOutcome, Session, SessionConfig};
//!
//! // The adapter reads its clock and passes `now` in; the core never reads one.
//! // Run with a real clock in `tests/tests/drive_loops.rs`.
//! fn drive(now: Instant) {
//!     let mut session = Session::new(SessionConfig::default(), SignatureVerifier::new());
//!     session.handle_client_text(r#"["REQ","feed",{"kinds":[1]}]"#, now);
//!     while let Some(effect) = session.poll_effect() {
//!         match effect {
//!             Effect::Query { query, .. } => {
//!                 // Look the filters up in the relay's index; here the relay is empty.
//!                 session.handle_query_result(query, Vec::new()).unwrap();
//!             }
//!             Effect::Publish { event } => {
//!                 session.handle_publish_result(event.id, PublishOutcome::Accepted).unwrap();
//!             }
//!             Effect::Subscribe { .. } | Effect::Unsubscribe { .. } => {
//!                 // Register with, or leave, the relay's live feed.
//!             }
//!         }
//!     }
//!     let mut sent = Vec::new();
//!     while let Some(frame) = session.poll_transmit() {
//!         sent.push(frame.to_json());
//!     }
//!     assert_eq!(sent, vec![r#"["EOSE","feed"]"#.to_owned()]);
//! }
//! ```
//!
//! ## Map
//! - [`Session`], [`SessionConfig`], [`Effect`], [`PublishOutcome`], [`QueryId`],
//!   [`SessionError`]: the machine (this file).
//! - `subscription.rs`: one subscription's phase and the ids it has sent.
//! - [`RelayInformation`]: the NIP-11 document a relay built on this machine advertises.

mod budget;
mod info;
mod repeats;
mod subscription;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

pub use budget::FrameBudget;
pub use info::{RelayInformation, RelayLimitation};
pub use repeats::{DELIVERED_WINDOW, DeliveredLog};

use crate::nostr::{
    ClientMessage, Event, EventId, Filter, FrameError, Limits, MachineReadablePrefix, RelayMessage,
    SignatureVerifier, SubscriptionId,
};
use subscription::{EarlyLive, Subscription};

/// The original gateway's NOTICE before a refused write on a relay it cannot write to.
pub const READ_ONLY_NOTICE: &str = "Relay is read-only while workers are offline";

/// The `OK` message of an event the relay already had.
pub const DUPLICATE_MESSAGE: &str = "duplicate: already have this event";

/// Misuse of the session's API by its adapter. Client misbehaviour is never an error: it is
/// answered on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    // The adapter is at fault: it answered something the session never asked.
    /// No [`Effect::Query`] with this id was ever emitted.
    #[error("query {0:?} was never issued by this session")]
    UnknownQuery(QueryId),
    /// No [`Effect::Publish`] of this event is waiting for its result.
    #[error("no publish of event {0} is waiting for a result")]
    UnknownPublish(EventId),
}

/// Bounds of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Per-frame limits for [`ClientMessage::parse`].
    pub limits: Limits,
    /// Open subscriptions per connection. Default 20.
    pub max_subscriptions: usize,
    /// Live events buffered for one subscription while its stored events are queried.
    /// Default 1000.
    pub max_early_live: usize,
    /// Recent live event ids remembered per subscription to drop repeats. Default 4096.
    pub live_dedup_window: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            max_subscriptions: 20,
            max_early_live: 1000,
            live_dedup_window: 4096,
        }
    }
}

/// Names one [`Effect::Query`]; never reused within a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// Work the adapter does for the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start delivering new events matching `filters` to this subscription through
    /// [`Session::handle_live_event`]. Emitted before the subscription's query, so that no event
    /// stored between the two is missed (the session drops the repeats).
    Subscribe {
        /// The client's subscription id.
        subscription: SubscriptionId,
        /// All of the `REQ`'s filters (`limit` plays no part in live matching).
        filters: Vec<Filter>,
    },
    /// Look up stored events and answer with [`Session::handle_query_result`] (or
    /// [`Session::handle_query_failed`]), each filter within its own `limit`.
    Query {
        /// Names the answer.
        query: QueryId,
        /// The subscription it is for.
        subscription: SubscriptionId,
        /// The filters that ask for stored events (those with `limit: 0` are left out).
        filters: Vec<Filter>,
    },
    /// Stop live delivery to this subscription.
    Unsubscribe {
        /// The subscription.
        subscription: SubscriptionId,
    },
    /// Store the event (id and signature already verified) and deliver it live, then answer
    /// with [`Session::handle_publish_result`]. Ephemeral kinds are delivered, not stored.
    Publish {
        /// The verified event.
        event: Box<Event>,
    },
}

/// What became of a published event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored durably (or, for an ephemeral kind, delivered): `OK true ""`.
    Accepted,
    /// The relay already had it: `OK true "duplicate: …"`.
    Duplicate,
    /// Refused: `OK false` with this message. A message without a NIP-01 machine-readable
    /// prefix gets `error: ` in front.
    Rejected(String),
    /// The relay cannot be written here now: the read-only NOTICE, then
    /// `OK false "read-only: <reason>"`.
    ReadOnly(String),
}

impl PublishOutcome {
    /// Whether the client hears `OK true` (stored, or already held).
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, PublishOutcome::Accepted | PublishOutcome::Duplicate)
    }
}

/// One client connection's NIP-01 state. See the module docs for the contract.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    verifier: SignatureVerifier,
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    /// Queries waiting for an answer, and the subscription each is for.
    queries: BTreeMap<QueryId, SubscriptionId>,
    next_query: u64,
    /// Publishes waiting for a result, counted per event (a client may send one twice).
    publishes: BTreeMap<EventId, u32>,
    transmits: VecDeque<RelayMessage>,
    effects: VecDeque<Effect>,
    last_client_frame_at: Option<Instant>,
    /// Set by [`Session::handle_disconnect`]: late results are ignored, nothing is sent.
    disconnected: bool,
}

impl Session {
    /// A session with no subscriptions. `verifier` checks every published event.
    #[must_use]
    pub fn new(config: SessionConfig, verifier: SignatureVerifier) -> Session {
        Session {
            config,
            verifier,
            subscriptions: BTreeMap::new(),
            queries: BTreeMap::new(),
            next_query: 0,
            publishes: BTreeMap::new(),
            transmits: VecDeque::new(),
            effects: VecDeque::new(),
            last_client_frame_at: None,
            disconnected: false,
        }
    }

    // ---- getters ----

    /// The session's bounds.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Open subscriptions.
    #[must_use]
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Whether `subscription` is open.
    #[must_use]
    pub fn has_subscription(&self, subscription: &SubscriptionId) -> bool {
        self.subscriptions.contains_key(subscription)
    }

    /// Publishes waiting for [`Session::handle_publish_result`].
    #[must_use]
    pub fn pending_publishes(&self) -> usize {
        self.publishes.values().map(|&n| n as usize).sum()
    }

    /// Whether effects are waiting for [`Session::poll_effect`] (so an adapter can skip taking
    /// a shared relay's lock when there is nothing to execute).
    #[must_use]
    pub fn has_pending_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// When the client last sent a frame.
    #[must_use]
    pub fn last_client_frame_at(&self) -> Option<Instant> {
        self.last_client_frame_at
    }

    // ---- inputs ----

    /// A text frame from the client.
    pub fn handle_client_text(&mut self, text: &str, now: Instant) {
        self.last_client_frame_at = Some(now);
        match ClientMessage::parse(text, &self.config.limits) {
            Ok(ClientMessage::Event(event)) => self.publish(event),
            Ok(ClientMessage::Req {
                subscription_id,
                filters,
            }) => self.open(subscription_id, filters),
            Ok(ClientMessage::Close(subscription_id)) => {
                self.end(&subscription_id);
            }
            Err(error) => self.refuse(&error),
        }
    }

    /// A binary frame from the client: NIP-01 is text only.
    pub fn handle_client_binary(&mut self, now: Instant) {
        self.last_client_frame_at = Some(now);
        self.transmits.push_back(RelayMessage::Notice(
            "Binary frames are not supported: NIP-01 frames are text".to_owned(),
        ));
    }

    /// The stored events for `query`, in any order; the session sends those matching the
    /// subscription (each once, newest first), then `EOSE`, then the live events held back.
    pub fn handle_query_result(
        &mut self,
        query: QueryId,
        mut events: Vec<Event>,
    ) -> Result<(), SessionError> {
        let Some(subscription_id) = self.take_query(query)? else {
            return Ok(());
        };
        let Some(subscription) = self.subscriptions.get_mut(&subscription_id) else {
            return Ok(());
        };
        events.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        for event in events {
            if subscription.wants_stored(&event) && subscription.sent.insert_stored(event.id) {
                self.transmits.push_back(RelayMessage::Event {
                    subscription_id: subscription_id.clone(),
                    event: Box::new(event),
                });
            }
        }
        self.transmits
            .push_back(RelayMessage::Eose(subscription_id.clone()));
        for event in subscription.go_live() {
            if subscription.sent.insert_live(event.id) {
                self.transmits.push_back(RelayMessage::Event {
                    subscription_id: subscription_id.clone(),
                    event: Box::new(event),
                });
            }
        }
        Ok(())
    }

    /// The query for `query` failed: the subscription ends with `CLOSED "error: <reason>"`.
    pub fn handle_query_failed(
        &mut self,
        query: QueryId,
        reason: &str,
    ) -> Result<(), SessionError> {
        if let Some(subscription_id) = self.take_query(query)? {
            self.close_with(
                &subscription_id,
                MachineReadablePrefix::Error.message(reason),
            );
        }
        Ok(())
    }

    /// A new event for a live subscription. Ignored when the subscription has ended (the
    /// adapter's feed may lag behind a `CLOSE`), when it matches none of its filters, or when
    /// this subscription has already sent it.
    pub fn handle_live_event(&mut self, subscription_id: &SubscriptionId, event: &Event) {
        let Some(subscription) = self.subscriptions.get_mut(subscription_id) else {
            return;
        };
        if !subscription.wants_live(event) {
            return;
        }
        match subscription.hold_if_early(event) {
            EarlyLive::Held => {}
            EarlyLive::Overflow => {
                let message = MachineReadablePrefix::Error
                    .message("too many new events arrived while stored events were loading");
                self.close_with(subscription_id, message);
            }
            EarlyLive::SendNow => {
                if subscription.sent.insert_live(event.id) {
                    self.transmits.push_back(RelayMessage::Event {
                        subscription_id: subscription_id.clone(),
                        event: Box::new(event.clone()),
                    });
                }
            }
        }
    }

    /// The adapter's live feed dropped the subscription (e.g. the client read too slowly): it
    /// ends with `CLOSED "error: <reason>"`.
    pub fn handle_live_dropped(&mut self, subscription_id: &SubscriptionId, reason: &str) {
        if self.subscriptions.contains_key(subscription_id) {
            self.close_with(
                subscription_id,
                MachineReadablePrefix::Error.message(reason),
            );
        }
    }

    /// What became of an [`Effect::Publish`].
    pub fn handle_publish_result(
        &mut self,
        event_id: EventId,
        outcome: PublishOutcome,
    ) -> Result<(), SessionError> {
        if self.disconnected {
            return Ok(());
        }
        match self.publishes.get_mut(&event_id) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.publishes.remove(&event_id);
            }
            None => return Err(SessionError::UnknownPublish(event_id)),
        }
        let (accepted, message) = match outcome {
            PublishOutcome::Accepted => (true, String::new()),
            PublishOutcome::Duplicate => (true, DUPLICATE_MESSAGE.to_owned()),
            PublishOutcome::Rejected(message) => {
                if MachineReadablePrefix::of(&message).is_some() {
                    (false, message)
                } else {
                    (false, MachineReadablePrefix::Error.message(&message))
                }
            }
            PublishOutcome::ReadOnly(reason) => {
                self.transmits
                    .push_back(RelayMessage::Notice(READ_ONLY_NOTICE.to_owned()));
                (false, format!("read-only: {reason}"))
            }
        };
        self.transmits.push_back(RelayMessage::Ok {
            event_id,
            accepted,
            message,
        });
        Ok(())
    }

    /// The connection is gone: every subscription ends ([`Effect::Unsubscribe`] each), frames
    /// not yet sent are dropped, and results still to come are ignored.
    pub fn handle_disconnect(&mut self) {
        let open: Vec<SubscriptionId> = self.subscriptions.keys().cloned().collect();
        for subscription in open {
            self.end(&subscription);
        }
        self.queries.clear();
        self.publishes.clear();
        self.transmits.clear();
        self.disconnected = true;
        self.effects
            .retain(|effect| matches!(effect, Effect::Unsubscribe { .. }));
    }

    // ---- outputs ----

    /// The next frame to send to the client.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<RelayMessage> {
        self.transmits.pop_front()
    }

    /// The next effect for the adapter.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    // ---- internals ----

    fn publish(&mut self, event: Box<Event>) {
        if let Err(error) = event.verify(&self.verifier) {
            self.transmits.push_back(RelayMessage::Ok {
                event_id: event.id,
                accepted: false,
                message: error.to_ok_message(),
            });
            return;
        }
        *self.publishes.entry(event.id).or_insert(0) += 1;
        self.effects.push_back(Effect::Publish { event });
    }

    fn open(&mut self, subscription_id: SubscriptionId, filters: Vec<Filter>) {
        let replacing = self.end(&subscription_id);
        if !replacing && self.subscriptions.len() >= self.config.max_subscriptions {
            self.transmits.push_back(RelayMessage::Closed {
                subscription_id,
                message: MachineReadablePrefix::Error.message(&format!(
                    "too many subscriptions (the limit is {} per connection)",
                    self.config.max_subscriptions
                )),
            });
            return;
        }
        let stored: Vec<Filter> = filters
            .iter()
            .filter(|filter| filter.limit != Some(0))
            .cloned()
            .collect();
        self.effects.push_back(Effect::Subscribe {
            subscription: subscription_id.clone(),
            filters: filters.clone(),
        });
        let query = if stored.is_empty() {
            self.transmits
                .push_back(RelayMessage::Eose(subscription_id.clone()));
            None
        } else {
            let query = QueryId(self.next_query);
            self.next_query += 1;
            self.queries.insert(query, subscription_id.clone());
            self.effects.push_back(Effect::Query {
                query,
                subscription: subscription_id.clone(),
                filters: stored,
            });
            Some(query)
        };
        let subscription = Subscription::new(filters, query, &self.config);
        self.subscriptions.insert(subscription_id, subscription);
    }

    /// Ends a subscription quietly; `false` if it was not open.
    fn end(&mut self, subscription_id: &SubscriptionId) -> bool {
        let Some(subscription) = self.subscriptions.remove(subscription_id) else {
            return false;
        };
        if let Some(query) = subscription.pending_query() {
            self.queries.remove(&query);
        }
        self.effects.push_back(Effect::Unsubscribe {
            subscription: subscription_id.clone(),
        });
        true
    }

    /// Ends a subscription and tells the client why.
    fn close_with(&mut self, subscription_id: &SubscriptionId, message: String) {
        self.end(subscription_id);
        self.transmits.push_back(RelayMessage::Closed {
            subscription_id: subscription_id.clone(),
            message,
        });
    }

    /// Answers a frame that failed to parse. A `CLOSED` reply ends the subscription of that id
    /// if one was open: NIP-01 says `CLOSED` means the relay is no longer serving it.
    fn refuse(&mut self, error: &FrameError) {
        let reply = error.reply();
        if let RelayMessage::Closed {
            subscription_id, ..
        } = &reply
        {
            self.end(subscription_id);
        }
        self.transmits.push_back(reply);
    }

    /// The subscription a query was for; `None` for an answer that arrives after its
    /// subscription ended, an error for a query never issued.
    fn take_query(&mut self, query: QueryId) -> Result<Option<SubscriptionId>, SessionError> {
        match self.queries.remove(&query) {
            Some(subscription) => Ok(Some(subscription)),
            None if query.0 < self.next_query => Ok(None),
            None => Err(SessionError::UnknownQuery(query)),
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
