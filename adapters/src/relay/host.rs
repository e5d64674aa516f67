//! [`RelayHost`]: one relay served to NIP-01 clients — the adapter that executes the core
//! [`Session`]'s effects against an [`IndexedRelay`].
//!
//! Contract:
//! - **Queries** are answered from the index within [`HostConfig::query_limits`]; an index that
//!   cannot be read ends that subscription with `CLOSED "error: …"` and is reported.
//! - **Publishes** need a writer: without one the answer is
//!   [`PublishOutcome::ReadOnly`] (the session adds the original's NOTICE). With one, an event
//!   already visible is [`PublishOutcome::Duplicate`]; an ephemeral event is handed to live
//!   subscribers and never stored; any other event is appended to the writer log, and `OK true`
//!   is given only after the append returned, i.e. after hypercore synced it to disk. The host
//!   then catches the view up from its store, which updates the index and delivers the event to
//!   every matching live subscriber, on every connection of this host.
//! - **Live subscriptions** are the index's [`LiveFeed`](crate::index::LiveFeed) receivers:
//!   [`RelayHost::drive`] hands each new one out as [`LiveStarted`]; the caller reads it and
//!   feeds the messages back through [`HostedSession::handle_live`], which ignores messages of a
//!   subscription that has since ended or been replaced. [`RelayHost::end_session`] unregisters
//!   everything a connection had.
//! - Every effect gets an answer, so no client waits forever; storage failures are also
//!   returned in [`Driven::failures`] for the caller to log.
//! - Runtime-neutral: futures only (tests run it under `smol::block_on`, the worker under tokio).
//!
//! The store is generic: the worker serves its own [`RelayLogs`] (the source of the view and
//! the log it appends to); a gateway serves a mirror through [`ReadOnlySource`], or a store of
//! its own that appends to the gateway writer log under a lease.

use std::collections::BTreeMap;
use std::future::Future;

use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::{Event, EventId, Filter, SubscriptionId};
use hypergate_core::relay::WriterKey;
use hypergate_core::session::{Effect, PublishOutcome, Session, SessionError};

use super::{BlockSource, IndexedRelay, IndexedRelayError, Refreshed, RelayLogs, RelayLogsError};
use crate::index::{IndexError, LiveMessage, LiveReceiver, QueryLimits, QueryResult, SubscriberId};

/// A [`BlockSource`] that can also append events to one of its writer logs.
pub trait RelayStore: BlockSource {
    /// Why an append failed.
    type WriteError;

    /// Appends `events` to `writer`'s log; returns once they are durable.
    fn append_events(
        &mut self,
        writer: &WriterKey,
        events: &[Event],
    ) -> impl Future<Output = Result<(), Self::WriteError>>;
}

impl RelayStore for RelayLogs {
    type WriteError = RelayLogsError;

    async fn append_events(
        &mut self,
        writer: &WriterKey,
        events: &[Event],
    ) -> Result<(), RelayLogsError> {
        RelayLogs::append_events(self, writer, events)
            .await
            .map(|_first| ())
    }
}

/// A source this process never writes to (a gateway's mirror without a lease).
#[derive(Debug)]
pub struct ReadOnlySource<S>(pub S);

/// An append to a [`ReadOnlySource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this relay store is read-only")]
pub struct ReadOnlyStore;

impl<S: BlockSource> BlockSource for ReadOnlySource<S> {
    type Error = S::Error;

    fn held_len(
        &mut self,
        key: &WriterKey,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> {
        self.0.held_len(key)
    }

    fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Self::Error>> {
        self.0.read_block(key, index)
    }
}

impl<S: BlockSource> RelayStore for ReadOnlySource<S> {
    type WriteError = ReadOnlyStore;

    async fn append_events(&mut self, _: &WriterKey, _: &[Event]) -> Result<(), ReadOnlyStore> {
        Err(ReadOnlyStore)
    }
}

/// Why hosting a relay failed. `R` is the store's read error, `W` its write error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError<R, W> {
    // The local storage failed.
    /// Reading the relay's logs failed.
    #[error("reading the relay's logs failed: {0}")]
    Read(R),
    /// Appending to the writer log failed; the client was answered `OK false "error: …"`.
    #[error("appending to the writer log failed: {0}")]
    Write(W),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    // This adapter misused the session (a bug).
    /// The session refused an answer.
    #[error("session refused an answer: {0}")]
    Session(#[from] SessionError),
}

impl<R, W> From<IndexedRelayError<R>> for HostError<R, W> {
    fn from(error: IndexedRelayError<R>) -> Self {
        match error {
            IndexedRelayError::Source(error) => HostError::Read(error),
            IndexedRelayError::Index(error) => HostError::Index(error),
        }
    }
}

/// The [`HostError`] of a store type.
pub type StoreError<S> = HostError<<S as BlockSource>::Error, <S as RelayStore>::WriteError>;

/// What a batch of gateway writes needs ([`RelayHost::plan_batch`]).
#[derive(Debug)]
#[must_use]
pub struct BatchPlan {
    outcomes: Vec<PublishOutcome>,
    to_store: Vec<Event>,
    stored_at: Vec<usize>,
}

impl BatchPlan {
    /// The events to append, in order (one append for all of them).
    #[must_use]
    pub fn to_store(&self) -> &[Event] {
        &self.to_store
    }

    /// The append failed: every event that was to be stored is refused with `error:`.
    pub fn append_failed(&mut self) {
        for &at in &self.stored_at {
            if let Some(outcome) = self.outcomes.get_mut(at) {
                *outcome =
                    PublishOutcome::Rejected("error: the event could not be stored".to_owned());
            }
        }
    }

    /// One outcome per event of the batch, in order.
    #[must_use]
    pub fn into_outcomes(self) -> Vec<PublishOutcome> {
        self.outcomes
    }
}

/// How a host answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Bounds on each REQ's stored answer.
    pub query_limits: QueryLimits,
    /// The detail of `OK false "read-only: …"` when the host has no writer.
    pub read_only_reason: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            query_limits: QueryLimits::default(),
            read_only_reason: "no writer for this relay is available here".to_owned(),
        }
    }
}

/// A live subscription a connection must now read: feed each message to
/// [`HostedSession::handle_live`] with this subscription and subscriber.
#[derive(Debug)]
pub struct LiveStarted {
    /// The client's subscription id.
    pub subscription: SubscriptionId,
    /// The feed's name for it.
    pub subscriber: SubscriberId,
    /// Where its events arrive.
    pub receiver: LiveReceiver,
}

/// What one [`RelayHost::drive`] did beyond answering the session.
#[derive(Debug)]
#[must_use]
pub struct Driven<R, W> {
    /// Live subscriptions opened.
    pub started: Vec<LiveStarted>,
    /// Storage failures met (each already answered to the client).
    pub failures: Vec<HostError<R, W>>,
}

/// One client connection to a hosted relay: its session and its live registrations.
#[derive(Debug)]
pub struct HostedSession {
    session: Session,
    live: BTreeMap<SubscriptionId, SubscriberId>,
}

impl HostedSession {
    /// Wraps a fresh session.
    #[must_use]
    pub fn new(session: Session) -> HostedSession {
        HostedSession {
            session,
            live: BTreeMap::new(),
        }
    }

    /// The session, to feed client frames and drain frames to send.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The session, read-only.
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A message from the live receiver of `subscription` registered as `subscriber`.
    /// Messages of a subscription that ended or was replaced since are ignored.
    pub fn handle_live(
        &mut self,
        subscription: &SubscriptionId,
        subscriber: SubscriberId,
        message: &LiveMessage,
    ) {
        if self.live.get(subscription) != Some(&subscriber) {
            return;
        }
        match message {
            LiveMessage::Event(event) => self.session.handle_live_event(subscription, event),
            LiveMessage::Dropped(reason) => {
                self.live.remove(subscription);
                self.session
                    .handle_live_dropped(subscription, &reason.to_string());
            }
        }
    }
}

/// One relay served from an [`IndexedRelay`] over a store, with an optional writer.
#[derive(Debug)]
pub struct RelayHost<S> {
    relay: IndexedRelay,
    store: S,
    writer: Option<WriterKey>,
    config: HostConfig,
}

impl<S: RelayStore> RelayHost<S> {
    /// Serves `relay` from `store`, appending accepted events to `writer`'s log (read-only when
    /// `None`). Catches the index up with the store first.
    pub async fn open(
        relay: IndexedRelay,
        store: S,
        writer: Option<WriterKey>,
        config: HostConfig,
    ) -> Result<RelayHost<S>, StoreError<S>> {
        let mut host = RelayHost {
            relay,
            store,
            writer,
            config,
        };
        let _ = host.refresh().await?;
        Ok(host)
    }

    /// The relay served.
    pub fn relay_key(&self) -> RelayKey {
        *self.relay.reader().relay()
    }

    /// Whether events are accepted.
    pub fn is_writable(&self) -> bool {
        self.writer.is_some()
    }

    /// The answering bounds.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The relay's view and index.
    pub fn indexed(&self) -> &IndexedRelay {
        &self.relay
    }

    /// The store (e.g. to mirror its logs).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Reads what is new in the store (e.g. blocks a mirror received), updates the index and
    /// delivers newly visible events to live subscribers.
    pub async fn refresh(&mut self) -> Result<Refreshed, StoreError<S>> {
        Ok(self.relay.catch_up(&mut self.store).await?)
    }

    /// The stored answer to `filters`, newest first.
    pub fn query(&self, filters: &[Filter]) -> Result<QueryResult, IndexError> {
        self.relay.query(filters, &self.config.query_limits)
    }

    /// Executes every effect `conn`'s session has emitted, answering each.
    pub async fn drive(&mut self, conn: &mut HostedSession) -> Driven<S::Error, S::WriteError> {
        self.drive_inner(conn, None).await
    }

    /// Executes `conn`'s effects; publishes go to `defer` when given.
    async fn drive_inner(
        &mut self,
        conn: &mut HostedSession,
        mut defer: Option<&mut Vec<Event>>,
    ) -> Driven<S::Error, S::WriteError> {
        let mut driven = Driven {
            started: Vec::new(),
            failures: Vec::new(),
        };
        while let Some(effect) = conn.session.poll_effect() {
            match effect {
                Effect::Subscribe {
                    subscription,
                    filters,
                } => {
                    let (subscriber, receiver) = self.relay.subscribe(filters);
                    if let Some(old) = conn.live.insert(subscription.clone(), subscriber) {
                        self.relay.unsubscribe(old);
                    }
                    driven.started.push(LiveStarted {
                        subscription,
                        subscriber,
                        receiver,
                    });
                }
                Effect::Unsubscribe { subscription } => {
                    if let Some(subscriber) = conn.live.remove(&subscription) {
                        self.relay.unsubscribe(subscriber);
                    }
                }
                Effect::Query { query, filters, .. } => {
                    let answered = match self.query(&filters) {
                        Ok(result) => conn.session.handle_query_result(query, result.events),
                        Err(error) => {
                            driven.failures.push(HostError::Index(error));
                            conn.session
                                .handle_query_failed(query, "the relay's index could not be read")
                        }
                    };
                    if let Err(error) = answered {
                        driven.failures.push(HostError::Session(error));
                    }
                }
                Effect::Publish { event } if defer.is_some() => {
                    if let Some(deferred) = defer.as_deref_mut() {
                        deferred.push(*event);
                    }
                }
                Effect::Publish { event } => {
                    let id = event.id;
                    let outcome = self.publish(*event, &mut driven.failures).await;
                    if let Err(error) = conn.session.handle_publish_result(id, outcome) {
                        driven.failures.push(HostError::Session(error));
                    }
                }
            }
        }
        driven
    }

    /// Like [`RelayHost::drive`], except that publishes of events not yet visible are handed
    /// back instead of executed: a gateway decides per event whether a lease lets it write
    /// (which may take an escrow round trip, so the caller releases the host meanwhile), then
    /// answers each with [`RelayHost::answer_publish`]. Events already visible are answered
    /// `duplicate:` here.
    pub async fn drive_deferring_publishes(
        &mut self,
        conn: &mut HostedSession,
    ) -> (Driven<S::Error, S::WriteError>, Vec<Event>) {
        let mut publishes = Vec::new();
        let mut driven = self.drive_inner(conn, Some(&mut publishes)).await;
        let mut deferred = Vec::new();
        for event in publishes {
            if self.relay.reader().view().get(&event.id).is_some() {
                if let Err(error) = conn
                    .session
                    .handle_publish_result(event.id, PublishOutcome::Duplicate)
                {
                    driven.failures.push(HostError::Session(error));
                }
            } else {
                deferred.push(event);
            }
        }
        (driven, deferred)
    }

    /// Answers a publish [`RelayHost::drive_deferring_publishes`] handed back: appended to
    /// `writer`'s log (and `OK true` once durable), or refused with `refusal`.
    pub async fn answer_publish(
        &mut self,
        conn: &mut HostedSession,
        event: Event,
        writer: Result<WriterKey, PublishOutcome>,
    ) -> Vec<StoreError<S>> {
        let mut failures = Vec::new();
        let id = event.id;
        let outcome = match writer {
            Ok(writer) => self.publish_to(writer, event, &mut failures).await,
            Err(refusal) => refusal,
        };
        if let Err(error) = conn.session.handle_publish_result(id, outcome) {
            failures.push(HostError::Session(error));
        }
        failures
    }

    /// The connection is gone: its live subscriptions are unregistered.
    pub fn end_session(&mut self, mut conn: HostedSession) {
        conn.session.handle_disconnect();
        while let Some(effect) = conn.session.poll_effect() {
            if let Effect::Unsubscribe { subscription } = effect {
                if let Some(subscriber) = conn.live.remove(&subscription) {
                    self.relay.unsubscribe(subscriber);
                }
            }
        }
        for subscriber in conn.live.into_values() {
            self.relay.unsubscribe(subscriber);
        }
    }

    /// Stores (or broadcasts) one verified event.
    async fn publish(&mut self, event: Event, failures: &mut Vec<StoreError<S>>) -> PublishOutcome {
        let Some(writer) = self.writer else {
            return PublishOutcome::ReadOnly(self.config.read_only_reason.clone());
        };
        self.publish_to(writer, event, failures).await
    }

    /// Stores (or broadcasts) one verified event in `writer`'s log.
    async fn publish_to(
        &mut self,
        writer: WriterKey,
        event: Event,
        failures: &mut Vec<StoreError<S>>,
    ) -> PublishOutcome {
        let (mut outcomes, batch_failures) = self.store_batch(writer, vec![event]).await;
        failures.extend(batch_failures);
        outcomes
            .pop()
            .unwrap_or_else(|| PublishOutcome::Rejected("error: nothing was stored".to_owned()))
    }

    /// Stores verified events of any sessions in `writer`'s log with **one** append (group
    /// commit): one outcome per event, in order, all decided once that append is durable.
    /// [`Self::plan_batch`], the append, then a refresh; answer each session with
    /// [`Self::answer_publish_outcome`]. A caller that must not hold the host during the
    /// append (other sessions need it meanwhile) runs those three steps itself.
    pub async fn store_batch(
        &mut self,
        writer: WriterKey,
        events: Vec<Event>,
    ) -> (Vec<PublishOutcome>, Vec<StoreError<S>>) {
        let mut failures = Vec::new();
        let mut plan = self.plan_batch(events);
        if plan.to_store().is_empty() {
            return (plan.into_outcomes(), failures);
        }
        if let Err(error) = self.store.append_events(&writer, plan.to_store()).await {
            failures.push(HostError::Write(error));
            plan.append_failed();
            return (plan.into_outcomes(), failures);
        }
        // The events are durable: the clients are told so even if the index lags behind (the
        // next refresh catches it up from the logs).
        if let Err(error) = self.refresh().await {
            failures.push(error);
        }
        (plan.into_outcomes(), failures)
    }

    /// Decides what a batch of verified events needs: ephemeral ones are broadcast now; one
    /// the relay already holds, or one earlier in the batch, is a duplicate; the rest are to
    /// be appended ([`BatchPlan::to_store`]). Their `Accepted` outcome holds only once that
    /// append is durable; after a failed append call [`BatchPlan::append_failed`].
    pub fn plan_batch(&mut self, events: Vec<Event>) -> BatchPlan {
        let mut plan = BatchPlan {
            outcomes: Vec::with_capacity(events.len()),
            to_store: Vec::new(),
            stored_at: Vec::new(),
        };
        for (at, event) in events.into_iter().enumerate() {
            if event.kind.is_ephemeral() {
                let _ = self.relay.broadcast(std::slice::from_ref(&event));
                plan.outcomes.push(PublishOutcome::Accepted);
            } else if self.relay.reader().view().get(&event.id).is_some()
                || plan.to_store.iter().any(|queued| queued.id == event.id)
            {
                plan.outcomes.push(PublishOutcome::Duplicate);
            } else {
                plan.outcomes.push(PublishOutcome::Accepted);
                plan.stored_at.push(at);
                plan.to_store.push(event);
            }
        }
        plan
    }

    /// Answers `conn`'s `EVENT` `id` with an outcome [`Self::store_batch`] decided.
    pub fn answer_publish_outcome(
        &mut self,
        conn: &mut HostedSession,
        id: EventId,
        outcome: PublishOutcome,
    ) -> Vec<StoreError<S>> {
        match conn.session.handle_publish_result(id, outcome) {
            Ok(()) => Vec::new(),
            Err(error) => vec![HostError::Session(error)],
        }
    }
}

#[cfg(test)]
mod tests;
