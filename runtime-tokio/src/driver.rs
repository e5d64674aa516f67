//! The tokio event loop around the core [`Gateway`].
//!
//! Contract: the driver task owns the core exclusively. Other tasks talk to
//! it through a bounded [`DriverInput`] channel and hear back through the
//! events channel. After every batch of inputs (at most
//! [`MAX_INPUTS_PER_TURN`], so timers are never starved) or a timer firing,
//! it drains transmits to the peers' outbound channels, then events, then
//! re-arms its single timer from `poll_timeout`. A peer whose outbound queue
//! is full is treated as a dead link: the core is told, and the peer's queue
//! is dropped, which is the backpressure contract of the peer link. The loop
//! ends when every input sender is dropped or [`DriverInput::Shutdown`]
//! arrives, and returns the core so its state can be persisted.

use std::collections::BTreeMap;
use std::time::Instant;

use hypergate_adapters::clock::{Clock, SystemClock};
use hypergate_core::gateway::{Gateway, GatewayError, GatewayEvent};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::router::{AttemptId, SessionId, SessionKind};
use hypergate_core::wire::Frame;
use tokio::sync::{mpsc, oneshot};

/// Inputs handled per wake-up before outputs are drained and timers checked.
pub const MAX_INPUTS_PER_TURN: usize = 64;

/// What other tasks ask of the driver.
#[derive(Debug)]
pub enum DriverInput {
    /// A peer link authenticated; frames for the peer go to `outbound`.
    LinkUp {
        /// The peer.
        peer: PeerId,
        /// Its outbound frame queue.
        outbound: mpsc::Sender<Frame>,
    },
    /// A peer link closed.
    LinkDown {
        /// The peer.
        peer: PeerId,
    },
    /// A frame arrived from a peer.
    Frame {
        /// The peer.
        peer: PeerId,
        /// The frame.
        frame: Frame,
    },
    /// The mirror store holds `length` verified blocks of a relay's core.
    MirrorStored {
        /// The relay.
        relay: RelayKey,
        /// The core.
        core: [u8; 32],
        /// Verified blocks stored.
        length: u64,
    },
    /// Open a routed session.
    OpenSession {
        /// Relay key or alias, as the client wrote it.
        relay_name: String,
        /// Client or one-shot request.
        kind: SessionKind,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SessionId, GatewayError>>,
    },
    /// The outcome of an attempt the core asked for.
    AttemptOutcome {
        /// The session.
        session: SessionId,
        /// The attempt.
        attempt: AttemptId,
        /// The peer tried.
        peer: PeerId,
        /// Whether it answered.
        succeeded: bool,
        /// Why not, if not.
        reason: String,
    },
    /// Close a session.
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// Stop the loop.
    Shutdown,
}

/// A core event with the monotonic time it was drained at.
pub type TimedEvent = (Instant, GatewayEvent);

/// Runs the gateway core until shutdown; returns it for persistence.
pub async fn run_gateway(
    mut gateway: Gateway,
    mut inputs: mpsc::Receiver<DriverInput>,
    events: mpsc::UnboundedSender<TimedEvent>,
) -> Gateway {
    let clock = SystemClock;
    let mut outbound: BTreeMap<PeerId, mpsc::Sender<Frame>> = BTreeMap::new();
    loop {
        let deadline = gateway.poll_timeout().map(|(at, _)| at);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            // Inputs first: a timer is only a fallback when nothing happens.
            biased;
            input = inputs.recv() => {
                let Some(input) = input else { break };
                if !apply(&mut gateway, &mut outbound, input, clock.now()) {
                    break;
                }
                for _ in 1..MAX_INPUTS_PER_TURN {
                    let Ok(input) = inputs.try_recv() else { break };
                    if !apply(&mut gateway, &mut outbound, input, clock.now()) {
                        return drain_and_return(gateway, &mut outbound, &events, &clock);
                    }
                }
            }
            () = sleep => gateway.handle_timeout(clock.now()),
        }
        drain(&mut gateway, &mut outbound, &events, &clock);
    }
    drain_and_return(gateway, &mut outbound, &events, &clock)
}

fn drain_and_return(
    mut gateway: Gateway,
    outbound: &mut BTreeMap<PeerId, mpsc::Sender<Frame>>,
    events: &mpsc::UnboundedSender<TimedEvent>,
    clock: &SystemClock,
) -> Gateway {
    drain(&mut gateway, outbound, events, clock);
    gateway
}

/// Applies one input; `false` means shut down.
fn apply(
    gateway: &mut Gateway,
    outbound: &mut BTreeMap<PeerId, mpsc::Sender<Frame>>,
    input: DriverInput,
    now: Instant,
) -> bool {
    match input {
        DriverInput::LinkUp {
            peer,
            outbound: queue,
        } => {
            outbound.insert(peer, queue);
            gateway.handle_link_up(peer, now);
        }
        DriverInput::LinkDown { peer } => {
            outbound.remove(&peer);
            gateway.handle_link_down(peer, now);
        }
        DriverInput::Frame { peer, frame } => gateway.handle_frame(peer, frame, now),
        DriverInput::MirrorStored {
            relay,
            core,
            length,
        } => gateway.handle_mirror_stored(relay, core, length, now),
        DriverInput::OpenSession {
            relay_name,
            kind,
            reply,
        } => {
            // The requester may have given up; that is not the core's concern.
            let _ = reply.send(gateway.open_session(&relay_name, kind, now));
        }
        DriverInput::AttemptOutcome {
            session,
            attempt,
            peer,
            succeeded,
            reason,
        } => {
            if let Err(error) =
                gateway.handle_attempt_outcome(session, attempt, peer, succeeded, &reason, now)
            {
                // A late answer after the attempt timed out: expected under load.
                tracing::debug!(%error, "stale attempt outcome ignored");
            }
        }
        DriverInput::CloseSession { session } => {
            if let Err(error) = gateway.close_session(session, now) {
                tracing::debug!(%error, "close of an unknown session ignored");
            }
        }
        DriverInput::Shutdown => return false,
    }
    true
}

fn drain(
    gateway: &mut Gateway,
    outbound: &mut BTreeMap<PeerId, mpsc::Sender<Frame>>,
    events: &mpsc::UnboundedSender<TimedEvent>,
    clock: &SystemClock,
) {
    loop {
        let mut overloaded = Vec::new();
        while let Some(transmit) = gateway.poll_transmit() {
            let Some(queue) = outbound.get(&transmit.peer) else {
                continue; // the link closed since the core queued this
            };
            if queue.try_send(transmit.frame).is_err() {
                overloaded.push(transmit.peer);
            }
        }
        while let Some(event) = gateway.poll_event() {
            // Nobody listening is fine (e.g. during shutdown).
            let _ = events.send((clock.now(), event));
        }
        if overloaded.is_empty() {
            break;
        }
        for peer in overloaded {
            tracing::warn!(peer = %peer.short(), "peer outbound queue full: closing its link");
            outbound.remove(&peer);
            gateway.handle_link_down(peer, clock.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hypergate_core::gateway::GatewayConfig;
    use hypergate_core::health::{HealthCause, HealthEvent, PeerHealth};
    use hypergate_core::time::UnixTime;
    use hypergate_core::wire::{Heartbeat, Message};

    use super::*;

    const PEER: PeerId = PeerId([5; 32]);

    fn heartbeat(seq: u64) -> Frame {
        Frame {
            request_id: seq,
            message: Message::Heartbeat(Heartbeat {
                seq,
                sent_at: UnixTime(0),
            }),
        }
    }

    fn spawn_driver() -> (
        mpsc::Sender<DriverInput>,
        mpsc::UnboundedReceiver<TimedEvent>,
        tokio::task::JoinHandle<Gateway>,
    ) {
        let gateway = Gateway::new(GatewayConfig::default(), SystemClock.now(), UnixTime(0));
        let (inputs, input_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_gateway(gateway, input_rx, events_tx));
        (inputs, events, task)
    }

    #[tokio::test]
    async fn heartbeat_frame_is_acked_on_the_peers_outbound_queue() {
        let (inputs, _events, task) = spawn_driver();
        let (outbound, mut frames) = mpsc::channel(8);
        inputs
            .send(DriverInput::LinkUp {
                peer: PEER,
                outbound,
            })
            .await
            .unwrap();
        inputs
            .send(DriverInput::Frame {
                peer: PEER,
                frame: heartbeat(9),
            })
            .await
            .unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(5), frames.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.request_id, 9);
        assert!(matches!(
            ack.message,
            Message::HeartbeatAck(Heartbeat { seq: 9, .. })
        ));
        inputs.send(DriverInput::Shutdown).await.unwrap();
        let gateway = task.await.unwrap();
        assert_eq!(gateway.health().health_of(&PEER), PeerHealth::Healthy);
    }

    #[tokio::test]
    async fn a_full_outbound_queue_closes_that_peers_link() {
        let (inputs, mut events, task) = spawn_driver();
        let (outbound, _never_read) = mpsc::channel(1);
        inputs
            .send(DriverInput::LinkUp {
                peer: PEER,
                outbound,
            })
            .await
            .unwrap();
        for seq in 0..3 {
            inputs
                .send(DriverInput::Frame {
                    peer: PEER,
                    frame: heartbeat(seq),
                })
                .await
                .unwrap();
        }
        let went_down = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some((_, event)) = events.recv().await {
                if let GatewayEvent::Health(HealthEvent::PeerChanged {
                    to: PeerHealth::Down,
                    cause: HealthCause::LinkDown,
                    ..
                }) = event
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap();
        assert!(went_down);
        drop(inputs);
        // Dropping every sender ends the loop, like a shutdown.
        let gateway = task.await.unwrap();
        assert_eq!(gateway.health().health_of(&PEER), PeerHealth::Down);
    }
}
