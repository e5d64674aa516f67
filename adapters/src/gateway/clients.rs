//! One client WebSocket on the gateway: peer-first, replica fallback, and back.
//!
//! Contract:
//! - The session is opened with the core router, which sweeps the relay's workers. Until it
//!   is routed, client frames wait (bounded). Routed to a worker, every client frame is
//!   forwarded over the peer link and every frame the worker sends back is passed on.
//! - With no usable worker, the session is served from the mirror by a core [`Session`] on
//!   the relay's replica host: stored events newest first, `EOSE`, then **live** events as
//!   the mirror or gateway writes add them.
//! - Writes in replica mode are accepted only under a lease (the core decides: append now,
//!   wait for the escrow, or read-only); `OK true` only after the append is durable.
//! - **Switching without duplicates or gaps.** The session remembers its open `REQ`s. On a
//!   switch (worker → replica or back) it re-sends them to the new side, which answers with
//!   its stored events, `EOSE`, then live events. Per subscription the session remembers the
//!   ids it already delivered (core's [`DeliveredLog`]) and whether `EOSE` was sent: a
//!   repeat is dropped, so the client sees each event once and one `EOSE`; an event that
//!   arrived during the switch is in the new side's stored answer. (A `limit`ed REQ re-sent
//!   after more than `limit` new events can only return the newest `limit`.)
//! - **No client stalls another.** Frames to the client go through a bounded queue; a client
//!   that lets it fill is disconnected.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::index::{LiveMessage, SubscriberId};
use crate::relay::{HostedSession, LiveStarted};
use crate::rt;
use futures_util::future::{self, BoxFuture, Either, RemoteHandle};
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hypergate_core::gateway::WriteVerdict;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::nostr::{
    AuthGate, ClientMessage, Event, RelayMessage, Screened, SignatureVerifier, SubscriptionId,
};
use hypergate_core::router::{SessionId, SessionKind};
use hypergate_core::session::{DeliveredLog, FrameBudget, PublishOutcome, Session, SessionConfig};
use hypergate_core::wire::{BoundedString, Frame, MAX_NOSTR_FRAME_BYTES, Message, NostrFrame};
use rand_core::{OsRng, TryRngCore};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::http::Access;
use super::metrics::RATE_LIMIT;
use super::replica::ReplicaHost;
use super::state::{Forwarded, SessionSignal, Shared, WriteDecision};
use super::write_batch::StoredWrite;

/// Client frames held while the session is being routed.
const HELD_FRAMES: usize = 256;
/// Signals queued for one session.
const SIGNAL_QUEUE: usize = 1024;
/// Live messages queued for the session task across its replica subscriptions.
const LIVE_CHANNEL: usize = 256;
/// How long a closing connection may take to flush.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);
/// How long a write may wait for the escrow's answer.
const LEASE_WAIT: Duration = Duration::from_secs(30);

/// Bounds of one client connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConfig {
    pub(crate) session: SessionConfig,
    pub(crate) outbound_queue: usize,
    /// Sustained client frames per second; beyond it frames are refused (`rate-limited:`).
    pub(crate) frames_per_second: u32,
    /// Frames a client may send in a burst above the sustained rate.
    pub(crate) frame_burst: u32,
}

type LiveItem = (SubscriptionId, SubscriberId, LiveMessage);
/// The session's live channel, once it has one.
type LiveChannel = Option<(mpsc::Sender<LiveItem>, mpsc::Receiver<LiveItem>)>;

/// A client write once the core's answer (and the escrow's, if it waited) is in.
struct WriteDone {
    event: Event,
    result: Result<u64, PublishOutcome>,
    /// Whether the core counted it as an append in flight from the start.
    counted: bool,
}

/// Where the session's frames go now.
enum Mode {
    Pending(VecDeque<String>),
    Peer(PeerId),
    Replica(Box<ReplicaConn>),
    Unavailable,
}

struct ReplicaConn {
    host: Arc<Mutex<ReplicaHost>>,
    conn: HostedSession,
    /// The live-subscription forwarders; dropping a handle stops its forwarder.
    forwarders: Vec<RemoteHandle<()>>,
}

/// One connection's task state.
struct Client {
    shared: Arc<Shared>,
    config: ClientConfig,
    session: SessionId,
    relay: RelayKey,
    mode: Mode,
    /// Open REQs by subscription id, as the client sent them.
    subscriptions: BTreeMap<String, String>,
    delivered: DeliveredLog,
    out: flume::Sender<ToClient>,
    /// Live messages of the replica subscriptions' forwarders, made with the first one: an
    /// idle session does not pay for the channel's first block.
    live: LiveChannel,
    /// Writes waiting for the core's or the escrow's answer, polled by the session loop.
    writes: FuturesUnordered<BoxFuture<'static, WriteDone>>,
    /// Of `writes`, those whose append the core already counts as in flight from the start
    /// (an `Append` verdict); each must be settled, also when the connection ends first.
    counted_in_flight: usize,
    /// NIP-42, for a relay that requires authentication and a client without a token.
    auth: Option<AuthGate>,
}

/// Where a live-subscription forwarder sends; the channel is made on first use.
fn live_sender(live: &mut LiveChannel) -> mpsc::Sender<LiveItem> {
    let (sender, _) = live.get_or_insert_with(|| mpsc::channel(LIVE_CHANNEL));
    sender.clone()
}

/// The next live message, once the session has a live channel.
async fn next_live(live: &mut LiveChannel) -> Option<LiveItem> {
    match live {
        Some((_, receiver)) => receiver.recv().await,
        None => None,
    }
}

/// A fresh NIP-42 gate: the challenge must differ per connection.
fn new_auth_gate(url: String) -> AuthGate {
    let mut bytes = [0u8; 16];
    // The OS RNG does not fail on Linux.
    let _ = OsRng.try_fill_bytes(&mut bytes);
    AuthGate::new(hex::encode(bytes), url)
}

/// Why the connection ends.
enum Ending {
    Closed,
    TooSlow,
    /// Closed by the gateway with this WebSocket close code and reason.
    Refused(u16, &'static str),
}

/// A frame the driver read from the client's WebSocket.
#[derive(Debug)]
pub enum FromClient {
    /// A text frame (NIP-01 JSON).
    Text(String),
    /// A binary frame (refused with a NOTICE).
    Binary,
    /// A ping or pong (the WebSocket library answers pings).
    Control,
    /// A close frame, the end of the stream, or a read error.
    Closed,
}

/// A frame for the client's WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// A text frame.
    Text(String),
    /// A close frame with this code and reason.
    Close(u16, &'static str),
}

/// Serves one upgraded WebSocket for the relay named `relay_name` (key or alias): `incoming`
/// is what the client sends, `outgoing` where frames for it go. Runtime-neutral: the writer
/// runs beside the session in the caller's task, so a driver's socket need not be `Send`.
pub(crate) async fn serve<Si, St>(
    outgoing: Si,
    incoming: St,
    shared: Arc<Shared>,
    relay_name: String,
    config: ClientConfig,
    access: Access,
    shutdown: watch::Receiver<bool>,
) where
    Si: Sink<ToClient> + Unpin,
    St: Stream<Item = FromClient> + Unpin,
{
    // flume, not tokio's mpsc: its queue allocates as frames arrive, where tokio's allocates
    // a 32-slot block per channel up front, which every idle connection paid (D129).
    let (out, out_rx) = flume::bounded::<ToClient>(config.outbound_queue.max(1));
    let writer = write_to_client(outgoing, out_rx);
    let session = run_session(incoming, out, shared, relay_name, config, access, shutdown);
    futures_util::pin_mut!(writer, session);
    let (ending, writer) = match future::select(session, writer).await {
        Either::Left((ending, writer)) => (ending, Some(writer)),
        // The socket failed: the session ends when it next sends or reads.
        Either::Right(((), session)) => (session.await, None),
    };
    let Some(writer) = writer else { return };
    match ending {
        Ending::TooSlow => {
            tracing::info!("client disconnected: it did not read its frames");
        }
        // What was queued (and a refusal's close frame) goes out first, within bounds.
        Ending::Closed | Ending::Refused(..) => {
            let _ = rt::timeout(FLUSH_ON_CLOSE, writer).await;
        }
    }
}

/// Writes queued frames to the client until the queue closes, then closes the socket.
async fn write_to_client<Si: Sink<ToClient> + Unpin>(
    mut sink: Si,
    queue: flume::Receiver<ToClient>,
) {
    // Everything queued goes out in one flush: a REQ's answer is one write, not eleven.
    let mut incoming = queue.stream();
    while let Some(message) = incoming.next().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(more) = queue.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// The session of one connection, until it ends; frames for the client go to `out` (a
/// refusal's close frame last).
async fn run_session<St: Stream<Item = FromClient> + Unpin>(
    mut stream: St,
    out: flume::Sender<ToClient>,
    shared: Arc<Shared>,
    relay_name: String,
    config: ClientConfig,
    access: Access,
    mut shutdown: watch::Receiver<bool>,
) -> Ending {
    if let Access::Refused(code, reason) = access {
        let _ = out.try_send(ToClient::Close(code, reason));
        return Ending::Refused(code, reason);
    }
    let (signal_tx, signals) = flume::bounded(SIGNAL_QUEUE);
    // A stream keeps its wake-up registration between polls; a fresh `recv_async` per turn
    // of the loop would allocate and unregister one every time.
    let mut signals = signals.into_stream();
    // The session lives in the partition of the relay its URL names.
    let opened = match shared.resolve(&relay_name) {
        Some(relay) => shared.with_relay(relay, |state, now| {
            let session = state
                .core
                .open_session(&relay.to_hex(), SessionKind::Client, now)?;
            state.sessions.insert(session, signal_tx);
            Ok::<_, hypergate_core::gateway::GatewayError>((session, relay))
        }),
        None => Err(hypergate_core::gateway::GatewayError::RelayNotRegistered(
            relay_name.clone(),
        )),
    };
    let (session, relay) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            tracing::debug!(%error, relay = relay_name, "client asked for an unknown relay");
            let _ = out.try_send(ToClient::Close(4404, "Relay not registered"));
            return Ending::Refused(4404, "Relay not registered");
        }
    };
    shared.metrics.client_connected();

    let mut budget = FrameBudget::new(
        config.frames_per_second,
        config.frame_burst,
        shared.clock_now(),
    );
    let mut client = Client {
        shared: Arc::clone(&shared),
        config,
        session,
        relay,
        mode: Mode::Pending(VecDeque::new()),
        subscriptions: BTreeMap::new(),
        delivered: DeliveredLog::default(),
        out,
        live: None,
        writes: FuturesUnordered::new(),
        counted_in_flight: 0,
        auth: match access {
            Access::Nip42 { url } => Some(new_auth_gate(url)),
            Access::Granted | Access::Refused(..) => None,
        },
    };
    let mut ending = None;
    if let Some(gate) = &client.auth
        && let Err(refused) = client.send_text(format!(
            r#"["AUTH",{}]"#,
            serde_json::Value::from(gate.challenge())
        ))
    {
        ending = Some(refused);
    }

    let ending = match ending {
        Some(ending) => ending,
        None => loop {
            // The handlers are boxed: they reach the replica host's log reads, whose futures
            // run to ~10 KiB, and unboxed that size would be part of every session's future,
            // idle or not; boxed it is allocated only while a frame is handled (D132).
            let step = tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(FromClient::Text(text)) => {
                        if budget.admit(shared.clock_now()) {
                            Box::pin(client.on_client_text(text)).await
                        } else {
                            shared.metrics.client_frame_refused(RATE_LIMIT);
                            client.refuse_rate_limited(&text)
                        }
                    }
                    Some(FromClient::Binary) => {
                        client.send(&RelayMessage::Notice("binary frames are not supported".into()))
                    }
                    Some(FromClient::Control) => Ok(()),
                    Some(FromClient::Closed) | None => Err(Ending::Closed),
                },
                Some(signal) = signals.next() => Box::pin(client.on_signal(signal)).await,
                Some((subscription, subscriber, message)) = next_live(&mut client.live),
                    if client.live.is_some() =>
                {
                    client.on_live(&subscription, subscriber, &message)
                }
                Some(done) = client.writes.next(), if !client.writes.is_empty() => {
                    if done.counted {
                        client.counted_in_flight -= 1;
                    }
                    Box::pin(client.on_write_done(done.event, done.result)).await
                }
                _ = shutdown.changed() => Err(Ending::Closed),
            };
            if let Err(ending) = step {
                break ending;
            }
        },
    };

    client.settle_unfinished_writes();
    Box::pin(client.leave_mode()).await;
    let out_close = client.out.clone();
    shared.with_relay(relay, |state, now| {
        state.sessions.remove(&session);
        let _ = state.core.close_session(session, now);
    });
    shared.metrics.client_disconnected();
    drop(client);
    if let Ending::Refused(code, reason) = ending {
        // The close frame goes after whatever was queued; then the writer closes.
        let _ = out_close.try_send(ToClient::Close(code, reason));
    }
    ending
}

impl Client {
    /// Queues a frame for the client.
    fn send_text(&self, text: String) -> Result<(), Ending> {
        match self.out.try_send(ToClient::Text(text)) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => Err(Ending::TooSlow),
            Err(flume::TrySendError::Disconnected(_)) => Err(Ending::Closed),
        }
    }

    fn send(&self, message: &RelayMessage) -> Result<(), Ending> {
        self.send_text(message.to_json())
    }

    /// Remembers REQ / CLOSE, whatever serves the session.
    fn track(&mut self, text: &str) {
        match ClientMessage::parse(text, &self.config.session.limits) {
            Ok(ClientMessage::Req {
                subscription_id, ..
            }) => {
                // A REQ replacing an open one starts afresh.
                self.delivered.forget(subscription_id.as_str());
                self.subscriptions
                    .insert(subscription_id.as_str().to_owned(), text.to_owned());
            }
            Ok(ClientMessage::Close(subscription_id)) => {
                self.subscriptions.remove(subscription_id.as_str());
                self.delivered.forget(subscription_id.as_str());
            }
            _ => {}
        }
    }

    async fn on_client_text(&mut self, text: String) -> Result<(), Ending> {
        if self.auth.is_some() && self.auth_gate(&text)? {
            return Ok(());
        }
        self.track(&text);
        self.dispatch(text).await
    }

    /// Sends one client frame to whatever serves the session now.
    async fn dispatch(&mut self, text: String) -> Result<(), Ending> {
        match &mut self.mode {
            Mode::Pending(held) => {
                if held.len() >= HELD_FRAMES {
                    return self.send(&RelayMessage::Notice(
                        "too many frames while the relay is being reached; slow down".into(),
                    ));
                }
                held.push_back(text);
                Ok(())
            }
            Mode::Peer(peer) => {
                let peer = *peer;
                match self.forward(peer, text.clone()) {
                    Forwarded::Queued => Ok(()),
                    // This session's backlog on the worker's link, or the link's room, is
                    // full: this client's frame is refused, not the link dropped (a client
                    // must not take a worker away from everyone).
                    Forwarded::Refused(refused) => {
                        self.shared.metrics.client_frame_refused(refused.as_str());
                        self.refuse_rate_limited(&text)
                    }
                    Forwarded::NoLink => {
                        // The link is gone: route again, and send the frame where that leads.
                        self.mode = Mode::Pending(VecDeque::from([text]));
                        let session = self.session;
                        self.shared.with_relay(self.relay, |state, now| {
                            let _ = state.core.router_mut().handle_forward_failure(
                                session,
                                "worker-link-gone",
                                now,
                            );
                        });
                        Ok(())
                    }
                }
            }
            Mode::Replica(replica) => {
                replica
                    .conn
                    .session_mut()
                    .handle_client_text(&text, self.shared.clock_now());
                self.drive_replica().await
            }
            Mode::Unavailable => self.refuse_unavailable(&text),
        }
    }

    /// Forwards a client frame to `peer`, in this session's flow of its link.
    fn forward(&self, peer: PeerId, text: String) -> Forwarded {
        let frame = match BoundedString::new(text) {
            Ok(frame) => frame,
            Err(_) => {
                let _ = self.send(&RelayMessage::Notice("frame too large".into()));
                return Forwarded::Queued;
            }
        };
        let frame = self.worker_frame(frame);
        let session = self.session;
        self.shared.forward_to_peer(peer, session, frame)
    }

    /// Tells `peer` this session left it (an empty frame); what it still had queued there
    /// is dropped.
    fn end_on_peer(&self, peer: PeerId) {
        let ended = self.worker_frame(BoundedString::default());
        let session = self.session;
        self.shared.end_session_on_peer(peer, session, ended);
    }

    fn worker_frame(&self, frame: BoundedString<MAX_NOSTR_FRAME_BYTES>) -> Frame {
        Frame::new(
            0,
            Message::NostrFrame(NostrFrame {
                relay_key: self.relay,
                session: self.session.0,
                frame,
            }),
        )
    }

    /// NIP-42 (core's [`AuthGate`]): answers `AUTH`, and refuses everything else until the
    /// client authenticated. Whether the frame was consumed here.
    fn auth_gate(&mut self, text: &str) -> Result<bool, Ending> {
        let now = self.shared.unix_now();
        let limits = self.config.session.limits;
        let Some(gate) = &mut self.auth else {
            return Ok(false);
        };
        match gate.screen(text, &limits, now, &SignatureVerifier::new()) {
            Screened::Pass => Ok(false),
            Screened::Drop => Ok(true),
            Screened::Answer(reply) => {
                self.send(&reply)?;
                Ok(true)
            }
        }
    }

    /// Answers a frame over the connection's rate: `OK false` for an EVENT, `CLOSED` for a
    /// REQ, a NOTICE otherwise; nothing is executed.
    fn refuse_rate_limited(&self, text: &str) -> Result<(), Ending> {
        let detail = "rate-limited: slow down";
        match ClientMessage::parse(text, &self.config.session.limits) {
            Ok(ClientMessage::Event(event)) => self.send(&RelayMessage::Ok {
                event_id: event.id,
                accepted: false,
                message: detail.into(),
            }),
            Ok(ClientMessage::Req {
                subscription_id, ..
            }) => self.send(&RelayMessage::Closed {
                subscription_id,
                message: detail.into(),
            }),
            _ => self.send(&RelayMessage::Notice(detail.into())),
        }
    }

    fn refuse_unavailable(&self, text: &str) -> Result<(), Ending> {
        let detail = "no worker and no replica of this relay is available";
        match ClientMessage::parse(text, &self.config.session.limits) {
            Ok(ClientMessage::Event(event)) => self.send(&RelayMessage::Ok {
                event_id: event.id,
                accepted: false,
                message: format!("error: {detail}"),
            }),
            Ok(ClientMessage::Req {
                subscription_id, ..
            }) => self.send(&RelayMessage::Closed {
                subscription_id,
                message: format!("error: {detail}"),
            }),
            Ok(ClientMessage::Close(_)) => Ok(()),
            Err(error) => self.send(&error.reply()),
        }
    }

    async fn on_signal(&mut self, signal: SessionSignal) -> Result<(), Ending> {
        match signal {
            SessionSignal::Peer(peer) => {
                if matches!(self.mode, Mode::Peer(current) if current == peer) {
                    return Ok(());
                }
                let held = self.leave_mode().await;
                self.mode = Mode::Peer(peer);
                // Re-open the subscriptions on the worker; repeats are dropped on the way back.
                let replay: Vec<String> = self.subscriptions.values().cloned().collect();
                for text in replay {
                    let _ = self.forward(peer, text);
                }
                for text in held {
                    self.dispatch(text).await?;
                }
                Ok(())
            }
            SessionSignal::Replica => {
                if matches!(self.mode, Mode::Replica(_)) {
                    return Ok(());
                }
                let held = self.leave_mode().await;
                match self.shared.replicas.host(self.relay).await {
                    Ok(host) => {
                        let session = Session::new(self.config.session, SignatureVerifier::new());
                        self.mode = Mode::Replica(Box::new(ReplicaConn {
                            host,
                            conn: HostedSession::new(session),
                            forwarders: Vec::new(),
                        }));
                        let replay: Vec<String> = self.subscriptions.values().cloned().collect();
                        for text in replay.into_iter().chain(held) {
                            self.dispatch(text).await?;
                        }
                        Ok(())
                    }
                    Err(error) => {
                        // The mirror exists but cannot be served (storage): the original's
                        // close for an internal error.
                        tracing::error!(relay = %self.relay.short(), %error, "replica unavailable");
                        drop(held);
                        self.mode = Mode::Unavailable;
                        Err(Ending::Refused(1011, "Internal error"))
                    }
                }
            }
            SessionSignal::Unavailable => {
                // The original's close: neither a worker nor a replica can serve the relay.
                let _ = self.leave_mode().await;
                self.mode = Mode::Unavailable;
                Err(Ending::Refused(1013, "No peers available"))
            }
            SessionSignal::FromWorker(peer, text) => {
                if !matches!(self.mode, Mode::Peer(current) if current == peer) {
                    return Ok(()); // from a worker this session has left
                }
                if text.is_empty() {
                    // The worker will not serve this session: sweep again.
                    self.mode = Mode::Pending(VecDeque::new());
                    let session = self.session;
                    self.shared.with_relay(self.relay, |state, now| {
                        let _ = state.core.router_mut().handle_forward_failure(
                            session,
                            "worker-ended-session",
                            now,
                        );
                    });
                    return Ok(());
                }
                match RelayMessage::parse(&text) {
                    Ok(message) => {
                        if self.delivered.admit(&message) {
                            self.send_text(text)?;
                        }
                        Ok(())
                    }
                    // Not ours to judge: pass it on as the worker wrote it.
                    Err(_) => self.send_text(text),
                }
            }
        }
    }

    fn on_live(
        &mut self,
        subscription: &SubscriptionId,
        subscriber: SubscriberId,
        message: &LiveMessage,
    ) -> Result<(), Ending> {
        if let Mode::Replica(replica) = &mut self.mode {
            replica.conn.handle_live(subscription, subscriber, message);
            return self.flush_replica();
        }
        Ok(())
    }

    /// Leaves the current mode; returns the frames held while pending.
    async fn leave_mode(&mut self) -> Vec<String> {
        match std::mem::replace(&mut self.mode, Mode::Pending(VecDeque::new())) {
            Mode::Pending(held) => held.into(),
            Mode::Peer(peer) => {
                // Tell the worker the session moved on (its subscriptions end there).
                self.end_on_peer(peer);
                Vec::new()
            }
            Mode::Replica(replica) => {
                let ReplicaConn {
                    host,
                    conn,
                    forwarders,
                } = *replica;
                drop(forwarders); // stops them
                host.lock().await.end_session(conn);
                Vec::new()
            }
            Mode::Unavailable => Vec::new(),
        }
    }

    /// Executes the replica session's effects and sends its frames.
    async fn drive_replica(&mut self) -> Result<(), Ending> {
        let Mode::Replica(replica) = &mut self.mode else {
            return Ok(());
        };
        if replica.conn.session().has_pending_effects() {
            let (driven, publishes) = replica
                .host
                .lock()
                .await
                .drive_deferring_publishes(&mut replica.conn)
                .await;
            for failure in driven.failures {
                tracing::warn!(%failure, "replica storage failed while answering a client");
            }
            for live in driven.started {
                let forwarder = self
                    .shared
                    .spawner
                    .spawn_with_handle(forward_live(live, live_sender(&mut self.live)));
                replica.forwarders.push(forwarder);
            }
            for event in publishes {
                self.start_write(event);
            }
        }
        self.flush_replica()
    }

    fn flush_replica(&mut self) -> Result<(), Ending> {
        let Mode::Replica(replica) = &mut self.mode else {
            return Ok(());
        };
        let mut frames = Vec::new();
        while let Some(message) = replica.conn.session_mut().poll_transmit() {
            frames.push(message);
        }
        for message in frames {
            if self.delivered.admit(&message) {
                self.send(&message)?;
            }
        }
        Ok(())
    }

    /// Asks the core whether `event` may be written, in the background.
    fn start_write(&mut self, event: Event) {
        let session = self.session;
        let decision = self.shared.with_relay(self.relay, |state, now| {
            let write = Shared::next_write_id(state);
            match state.core.handle_client_write(session, write, now) {
                Ok(WriteVerdict::Append { epoch }) => Pending::Now(epoch),
                Ok(WriteVerdict::Wait) => {
                    let (tx, rx) = oneshot::channel();
                    state.waiting_writes.insert(write, tx);
                    Pending::Waiting(rx)
                }
                Ok(WriteVerdict::ReadOnly { reason }) => Pending::Refused(reason),
                Ok(WriteVerdict::Forward(_) | WriteVerdict::Hold) => Pending::Retry,
                Err(error) => Pending::Error(error.to_string()),
            }
        });
        let counted = matches!(decision, Pending::Now(_));
        self.counted_in_flight += usize::from(counted);
        self.writes.push(Box::pin(async move {
            let result = match decision {
                Pending::Now(epoch) => Ok(epoch),
                Pending::Waiting(rx) => match rt::timeout(LEASE_WAIT, rx).await {
                    Ok(Ok(WriteDecision::Append(epoch))) => Ok(epoch),
                    Ok(Ok(WriteDecision::ReadOnly(reason))) => {
                        Err(PublishOutcome::ReadOnly(reason))
                    }
                    Ok(Err(_)) | Err(_) => Err(PublishOutcome::ReadOnly(
                        "the escrow did not answer in time".into(),
                    )),
                },
                Pending::Refused(reason) => Err(PublishOutcome::ReadOnly(reason)),
                Pending::Retry => Err(PublishOutcome::Rejected(
                    "error: a worker of this relay is back; send it again".into(),
                )),
                Pending::Error(detail) => Err(PublishOutcome::Rejected(format!("error: {detail}"))),
            };
            WriteDone {
                event,
                result,
                counted,
            }
        }));
    }

    /// The connection ends with writes not yet answered: each one the core counts as an
    /// append in flight is reported failed (it was not made), or the relay's pending writes
    /// could never be cleared. Writes still waiting for a lease are settled by the core when
    /// the lease answer finds their waiter gone.
    fn settle_unfinished_writes(&mut self) {
        self.writes.clear();
        let unsettled = std::mem::take(&mut self.counted_in_flight);
        let relay = self.relay;
        if unsettled > 0 {
            self.shared.with_relay(relay, |state, now| {
                for _ in 0..unsettled {
                    state.core.handle_write_failed(relay, now);
                }
            });
        }
    }

    /// Appends an allowed write (or answers a refused one) and reports it to the core.
    async fn on_write_done(
        &mut self,
        event: Event,
        result: Result<u64, PublishOutcome>,
    ) -> Result<(), Ending> {
        let relay = self.relay;
        let Mode::Replica(replica) = &mut self.mode else {
            // The session left replica mode meanwhile: the write was not made.
            if let Ok(_epoch) = result {
                self.shared.with_relay(relay, |state, now| {
                    state.core.handle_write_failed(relay, now)
                });
            }
            return self.send(&RelayMessage::Ok {
                event_id: event.id,
                accepted: false,
                message: "error: the relay moved to a worker; send it again".into(),
            });
        };
        let epoch = match result {
            Ok(epoch) => epoch,
            Err(refusal) => {
                self.shared
                    .metrics
                    .fallback_write_for(&relay.to_hex(), "readonly");
                let failures = replica
                    .host
                    .lock()
                    .await
                    .answer_publish(&mut replica.conn, event, Err(refusal))
                    .await;
                for failure in failures {
                    tracing::warn!(%failure, "answering a refused write failed");
                }
                return self.flush_replica();
            }
        };
        let writer = self
            .shared
            .writers
            .lock()
            .await
            .get(&relay)
            .map(|leased| leased.writer.writer_key());
        let id = event.id;
        let stored = match writer {
            // Stored with the relay's other waiting writes: one append, one set of syncs, and
            // the pending mark on disk (one registry snapshot per batch) before the answer.
            Some(writer) => {
                self.shared
                    .replicas
                    .store_write(&self.shared, relay, event, writer, epoch)
                    .await
            }
            None => StoredWrite {
                outcome: PublishOutcome::ReadOnly("the lease ended before the write".to_owned()),
                reported: false,
            },
        };
        let accepted = stored.outcome.is_ok();
        self.shared
            .metrics
            .fallback_write_for(&relay.to_hex(), if accepted { "accepted" } else { "error" });
        if !stored.reported {
            // Not marked pending: the core's append in flight ends as failed.
            self.shared.with_relay(relay, |state, now| {
                state.core.handle_write_failed(relay, now)
            });
        }
        let failures =
            replica
                .host
                .lock()
                .await
                .answer_publish_outcome(&mut replica.conn, id, stored.outcome);
        for failure in &failures {
            tracing::warn!(%failure, "answering a gateway write failed");
        }
        self.flush_replica()
    }
}

/// What the core said about a write, before waiting.
enum Pending {
    Now(u64),
    Waiting(oneshot::Receiver<WriteDecision>),
    Refused(String),
    Retry,
    Error(String),
}

/// Moves one live subscription's messages to the session task.
async fn forward_live(live: LiveStarted, to: mpsc::Sender<LiveItem>) {
    while let Some(message) = live.receiver.recv().await {
        if to
            .send((live.subscription.clone(), live.subscriber, message))
            .await
            .is_err()
        {
            return;
        }
    }
}
