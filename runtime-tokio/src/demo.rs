//! `hypergate demo`: the gateway core driven in real time through worker churn.
//!
//! What it shows, on real tokio timers and channels: workers register a
//! relay and heartbeat; a client session is routed to a worker (peer first);
//! every worker crashes silently; the health machine notices the missed
//! heartbeats, the router sweeps and falls back to the relay's replica; one
//! worker restarts and the session returns to it with its subscriptions.
//! The workers are in-process tasks (the networked worker agent is a later
//! piece), but every decision is the production core's. The run checks its
//! own timeline and fails (exit 1) if fallback or return did not happen.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hypergate_core::gateway::{Gateway, GatewayConfig, GatewayEvent};
use hypergate_core::health::{HealthConfig, HealthEvent};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::registry::RegistryEvent;
use hypergate_core::router::{RouterConfig, RouterEvent, SessionKind};
use hypergate_core::wire::{
    BoundedString, BoundedVec, Frame, Heartbeat, Message, RegisterRelays, RelayMetadata,
    RelayRegistration,
};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{DriverInput, TimedEvent, run_gateway};
use hypergate_adapters::clock::{Clock, SystemClock};

/// Knobs of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Workers serving the relay.
    pub workers: u8,
    /// Heartbeat interval of workers and of the health machine.
    pub heartbeat: Duration,
    /// Print one JSON object per event instead of a table.
    pub json: bool,
}

const RELAY: RelayKey = RelayKey([0x42; 32]);
const RELAY_ALIAS: &str = "npub1demo:lobby";

struct WorkerHandle {
    peer: PeerId,
    alive: Arc<AtomicBool>,
    pings: mpsc::Sender<oneshot::Sender<()>>,
}

/// Runs the scenario; `Ok` only if the session fell back and came back.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let clock = SystemClock;
    let start = clock.now();
    let config = GatewayConfig {
        health: HealthConfig {
            heartbeat_interval: options.heartbeat,
            miss_limit: 3,
            failure_limit: 3,
        },
        router: RouterConfig {
            attempt_timeout: options.heartbeat / 2,
            replica_retry: options.heartbeat,
        },
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, start, clock.unix_now());
    let (input_tx, input_rx) = mpsc::channel(1024);
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<TimedEvent>();
    let driver = tokio::spawn(run_gateway(gateway, input_rx, event_tx));

    let mut workers = Vec::new();
    for index in 0..options.workers.max(1) {
        let handle = spawn_worker(PeerId([index + 1; 32]), options.heartbeat, input_tx.clone());
        connect_worker(&handle, &input_tx).await?;
        workers.push(handle);
    }
    input_tx
        .send(DriverInput::MirrorStored {
            relay: RELAY,
            core: [0x43; 32],
            length: 128,
        })
        .await?;

    let mut timeline = Timeline::new(start, options.json);
    let phases = Phases::new(options.heartbeat);
    tokio::time::sleep(phases.open_session).await;
    let (reply, answer) = oneshot::channel();
    input_tx
        .send(DriverInput::OpenSession {
            relay_name: RELAY_ALIAS.to_owned(),
            kind: SessionKind::Client,
            reply,
        })
        .await?;
    let session = answer.await.context("driver stopped")??;
    pump_ready_events(&mut event_rx, &workers, &input_tx, &mut timeline);
    timeline.note(&format!(
        "client session {} opened on {RELAY_ALIAS}",
        session.0
    ));

    let crash_at = tokio::time::Instant::now() + phases.crash;
    let restart_at = crash_at + phases.restart;
    let stop_at = restart_at + phases.settle;
    let (mut crashed, mut restarted) = (false, false);
    loop {
        tokio::select! {
            Some((at, event)) = event_rx.recv() => {
                handle_event(at, &event, &workers, &input_tx, &mut timeline);
            }
            () = tokio::time::sleep_until(crash_at), if !crashed => {
                crashed = true;
                pump_ready_events(&mut event_rx, &workers, &input_tx, &mut timeline);
                for worker in &workers {
                    worker.alive.store(false, Ordering::SeqCst);
                }
                timeline.note("every worker crashes silently (no heartbeats, no answers)");
            }
            () = tokio::time::sleep_until(restart_at), if !restarted => {
                restarted = true;
                pump_ready_events(&mut event_rx, &workers, &input_tx, &mut timeline);
                let back = &workers[workers.len() - 1];
                back.alive.store(true, Ordering::SeqCst);
                connect_worker(back, &input_tx).await?;
                timeline.note(&format!("worker {} restarts and reconnects", back.peer.short()));
            }
            () = tokio::time::sleep_until(stop_at) => break,
        }
    }
    input_tx.send(DriverInput::Shutdown).await?;
    let gateway = driver.await?;
    while let Ok((at, event)) = event_rx.try_recv() {
        timeline.record(at, &event);
    }
    timeline.summary(&gateway);
    timeline.verdict()
}

/// Acts on one core event: performs attempts the router asks for, and records it.
fn handle_event(
    at: Instant,
    event: &GatewayEvent,
    workers: &[WorkerHandle],
    driver: &mpsc::Sender<DriverInput>,
    timeline: &mut Timeline,
) {
    if let GatewayEvent::Router(RouterEvent::Attempt {
        session,
        attempt,
        peer,
        deadline,
        ..
    }) = event
    {
        answer_attempt(workers, *session, *attempt, *peer, *deadline, driver);
    }
    timeline.record(at, event);
}

/// Handles every event already queued, so notes print in timeline order.
fn pump_ready_events(
    events: &mut mpsc::UnboundedReceiver<TimedEvent>,
    workers: &[WorkerHandle],
    driver: &mpsc::Sender<DriverInput>,
    timeline: &mut Timeline,
) {
    while let Ok((at, event)) = events.try_recv() {
        handle_event(at, &event, workers, driver, timeline);
    }
}

struct Phases {
    open_session: Duration,
    crash: Duration,
    restart: Duration,
    settle: Duration,
}

impl Phases {
    fn new(heartbeat: Duration) -> Self {
        Self {
            open_session: heartbeat,
            crash: heartbeat * 3,
            // Down takes `miss_limit` intervals plus slack; leave room for the sweep.
            restart: heartbeat * 8,
            settle: heartbeat * 3,
        }
    }
}

fn spawn_worker(
    peer: PeerId,
    heartbeat: Duration,
    driver: mpsc::Sender<DriverInput>,
) -> WorkerHandle {
    let alive = Arc::new(AtomicBool::new(true));
    let (pings, mut ping_rx) = mpsc::channel::<oneshot::Sender<()>>(64);
    let task_alive = Arc::clone(&alive);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(heartbeat);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if !task_alive.load(Ordering::SeqCst) { continue; }
                    seq += 1;
                    let frame = Frame {
                        request_id: seq,
                        message: Message::Heartbeat(Heartbeat { seq, sent_at: SystemClock.unix_now() }),
                    };
                    if driver.send(DriverInput::Frame { peer, frame }).await.is_err() { break; }
                }
                ping = ping_rx.recv() => {
                    let Some(reply) = ping else { break };
                    if task_alive.load(Ordering::SeqCst) {
                        let _ = reply.send(());
                    }
                }
            }
        }
    });
    WorkerHandle { peer, alive, pings }
}

/// Brings a worker's link up and registers the relay over it.
async fn connect_worker(
    worker: &WorkerHandle,
    driver: &mpsc::Sender<DriverInput>,
) -> anyhow::Result<()> {
    // The demo's workers ignore the gateway's replies; a real link reads them.
    let (outbound, mut replies) = mpsc::channel::<Frame>(256);
    tokio::spawn(async move { while replies.recv().await.is_some() {} });
    driver
        .send(DriverInput::LinkUp {
            peer: worker.peer,
            outbound,
        })
        .await?;
    let registration = RelayRegistration {
        relay_key: RELAY,
        identifiers: BoundedVec::new(vec![BoundedString::new(RELAY_ALIAS)?])?,
        metadata: RelayMetadata {
            name: Some(BoundedString::new("demo lobby")?),
            ..RelayMetadata::default()
        },
        requires_auth: false,
        escrow: None,
    };
    let frame = Frame {
        request_id: 0,
        message: Message::RegisterRelays(RegisterRelays {
            relays: BoundedVec::new(vec![registration])?,
        }),
    };
    driver
        .send(DriverInput::Frame {
            peer: worker.peer,
            frame,
        })
        .await?;
    Ok(())
}

/// Performs an attempt: ping the worker and report if it answers in time.
/// A worker that does not answer is left to the core's attempt timer.
fn answer_attempt(
    workers: &[WorkerHandle],
    session: hypergate_core::router::SessionId,
    attempt: hypergate_core::router::AttemptId,
    peer: PeerId,
    deadline: Instant,
    driver: &mpsc::Sender<DriverInput>,
) {
    let Some(worker) = workers.iter().find(|worker| worker.peer == peer) else {
        return;
    };
    let pings = worker.pings.clone();
    let driver = driver.clone();
    tokio::spawn(async move {
        let (reply, answered) = oneshot::channel();
        if pings.send(reply).await.is_err() {
            return;
        }
        let limit = tokio::time::Instant::from_std(deadline);
        if let Ok(Ok(())) = tokio::time::timeout_at(limit, answered).await {
            let _ = driver
                .send(DriverInput::AttemptOutcome {
                    session,
                    attempt,
                    peer,
                    succeeded: true,
                    reason: String::new(),
                })
                .await;
        }
    });
}

/// The printed timeline and the self-check.
struct Timeline {
    start: Instant,
    json: bool,
    routed: u32,
    fallback_started: u32,
    fallback_ended: u32,
}

impl Timeline {
    fn new(start: Instant, json: bool) -> Self {
        Self {
            start,
            json,
            routed: 0,
            fallback_started: 0,
            fallback_ended: 0,
        }
    }

    fn note(&self, text: &str) {
        self.print(Instant::now(), "demo", "step", text);
    }

    fn record(&mut self, at: Instant, event: &GatewayEvent) {
        let (source, kind, detail) = describe(event);
        match event {
            GatewayEvent::Router(RouterEvent::Routed { .. }) => self.routed += 1,
            GatewayEvent::Router(RouterEvent::FallbackStarted { .. }) => self.fallback_started += 1,
            GatewayEvent::Router(RouterEvent::FallbackEnded { .. }) => self.fallback_ended += 1,
            _ => {}
        }
        self.print(at, source, kind, &detail);
    }

    fn print(&self, at: Instant, source: &str, kind: &str, detail: &str) {
        let offset = at.saturating_duration_since(self.start).as_secs_f64();
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. piped into `head`) must not crash the run.
        let _ = if self.json {
            let line =
                serde_json::json!({"t": offset, "source": source, "event": kind, "detail": detail});
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{offset:>7.3}s  {source:<8} {kind:<22} {detail}")
        };
    }

    fn summary(&self, gateway: &Gateway) {
        if let Some(counters) = gateway.router().counters(&RELAY) {
            let text = format!(
                "sessions entered replica mode: {}, attempts: {:?}, fallback durations observed: {}",
                counters.fallbacks_started,
                counters
                    .sweep_attempts
                    .iter()
                    .map(|(outcome, count)| format!("{}={count}", outcome.as_str()))
                    .collect::<Vec<_>>(),
                counters.fallback_duration.count(),
            );
            self.note(&text);
        }
        let unix = gateway.unix_time(Instant::now());
        self.note(&format!(
            "registry: {} relay(s); wall clock {} ms (derived from the core's anchor)",
            gateway.registry().len(),
            unix.as_millis()
        ));
    }

    fn verdict(&self) -> anyhow::Result<()> {
        if self.routed == 0 {
            bail!("the session was never routed to a worker");
        }
        if self.fallback_started == 0 {
            bail!("the session never fell back to the replica");
        }
        if self.fallback_ended == 0 {
            bail!("the session never returned to the restarted worker");
        }
        self.note("ok: peer first, replica fallback, and return to the worker all happened");
        Ok(())
    }
}

fn describe(event: &GatewayEvent) -> (&'static str, &'static str, String) {
    match event {
        GatewayEvent::Registry(RegistryEvent::RelayAdded { relay }) => (
            "registry",
            "relay-added",
            format!("relay={}", relay.short()),
        ),
        GatewayEvent::Registry(RegistryEvent::WorkerAttached { relay, worker }) => (
            "registry",
            "worker-attached",
            format!("relay={} worker={}", relay.short(), worker.short()),
        ),
        GatewayEvent::Registry(other) => ("registry", "change", format!("{other:?}")),
        GatewayEvent::Health(HealthEvent::PeerChanged {
            peer,
            from,
            to,
            cause,
        }) => (
            "health",
            "peer-changed",
            format!(
                "peer={} {} -> {} ({cause:?})",
                peer.short(),
                from.map_or("new", |from| from.as_str()),
                to.as_str()
            ),
        ),
        GatewayEvent::Health(HealthEvent::MirrorSyncChanged { relay, in_sync }) => (
            "health",
            "mirror-sync",
            format!("relay={} in_sync={in_sync}", relay.short()),
        ),
        GatewayEvent::Router(RouterEvent::Attempt { session, peer, .. }) => (
            "router",
            "attempt",
            format!("session={} peer={}", session.0, peer.short()),
        ),
        GatewayEvent::Router(RouterEvent::AttemptFinished {
            session, record, ..
        }) => (
            "router",
            "attempt-finished",
            format!(
                "session={} peer={} outcome={} reason={} latency={}ms",
                session.0,
                record.peer.short(),
                record.outcome.as_str(),
                record.reason,
                record.latency.as_millis()
            ),
        ),
        GatewayEvent::Router(RouterEvent::Routed { session, peer, .. }) => (
            "router",
            "routed",
            format!("session={} peer={}", session.0, peer.short()),
        ),
        GatewayEvent::Router(RouterEvent::FallbackStarted { session, relay }) => (
            "router",
            "fallback-started",
            format!(
                "session={} relay={} (serving from replica)",
                session.0,
                relay.short()
            ),
        ),
        GatewayEvent::Router(RouterEvent::FallbackEnded {
            session,
            peer,
            duration,
            ..
        }) => (
            "router",
            "fallback-ended",
            format!(
                "session={} back to peer={} after {}ms in replica mode",
                session.0,
                peer.short(),
                duration.as_millis()
            ),
        ),
        GatewayEvent::Router(other) => ("router", "other", format!("{other:?}")),
        GatewayEvent::Inbound { peer, frame } => (
            "link",
            "inbound",
            format!("peer={} message={}", peer.short(), frame.message.kind()),
        ),
        // Leases, pushes and writes do not occur in this read-only scenario.
        other => ("core", "other", format!("{other:?}")),
    }
}
