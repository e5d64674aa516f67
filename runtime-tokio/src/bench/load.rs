//! The NIP-01 load generator: N WebSocket connections, one request in flight on each.
//!
//! Contract:
//! - Closed loop: each connection sends a request, waits for its answer, records the latency,
//!   and sends the next. Throughput is successful answers per second of the measured window;
//!   p50/p99 are nearest-rank percentiles over every measured request (see [`super::stats`]).
//! - Two workloads: [`Workload::Event`] publishes a pre-signed event and waits for its `OK`
//!   (`OK false` is an error); [`Workload::Req`] sends `["REQ", id, filter]`, waits for `EOSE`
//!   (a `CLOSED` for it is an error), then sends `CLOSE` without waiting. Every REQ uses a fresh
//!   subscription id, so late frames of an earlier one are never mistaken for an answer.
//! - Timing: all connections are opened first; requests sent during `warmup` are not measured;
//!   no request starts after `warmup + duration`; the window ends at the last measured answer.
//!   An event pool that runs dry ends the run early (reported, never papered over by reuse).
//! - A connection that fails (closed, or no answer within `request_timeout`) counts one error
//!   and is reopened; if it cannot be reopened it stops. Only failing to open the connections
//!   at all is an error of [`run`]. Nothing here panics on what a server sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hypergate_core::nostr::{Filter, FilterError, RelayMessage};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::events::EventPool;
use super::stats::{Latencies, LatencySummary};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    // The target's fault.
    /// The target refused or failed the WebSocket handshake.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL.
        url: String,
        /// What went wrong.
        source: tungstenite::Error,
    },
    // The caller's fault.
    /// The REQ filter is not a valid NIP-01 filter.
    #[error("the REQ filter is not valid")]
    Filter(#[from] FilterError),
    /// Zero connections asked for.
    #[error("at least one connection is needed")]
    NoConnections,
}

/// What each request is.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Publish one event from the pool and wait for its `OK`.
    Event(Arc<EventPool>),
    /// Query with this filter (its canonical JSON) and wait for `EOSE`.
    Req(Arc<str>),
}

impl Workload {
    /// A REQ workload for `filter_json` (validated here).
    pub fn req(filter_json: &str) -> Result<Workload, LoadError> {
        let filter = Filter::parse_json(filter_json)?;
        Ok(Workload::Req(filter.to_json().into()))
    }

    /// `"EVENT"` or `"REQ"`.
    #[must_use]
    pub fn verb(&self) -> &'static str {
        match self {
            Workload::Event(_) => "EVENT",
            Workload::Req(_) => "REQ",
        }
    }
}

/// How to load one target.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The WebSocket URL (`ws://host:port/relay/<key>`).
    pub url: String,
    /// Parallel connections, one request in flight on each.
    pub connections: usize,
    /// Unmeasured time at the start.
    pub warmup: Duration,
    /// Measured time after the warmup.
    pub duration: Duration,
    /// Longest wait for one answer before the connection counts as failed.
    pub request_timeout: Duration,
    /// A label for progress lines on stderr; `None`: silent.
    pub progress: Option<String>,
}

/// What one load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// `"EVENT"` or `"REQ"`.
    pub verb: &'static str,
    /// Connections used.
    pub connections: usize,
    /// Successful answers in the measured window.
    pub requests: u64,
    /// Failed requests in the measured window (`OK false`, `CLOSED`, timeouts, closed sockets).
    pub errors: u64,
    /// Successful answers including the warmup (for EVENT: events the target stored).
    pub completed_total: u64,
    /// The measured window, in seconds.
    pub elapsed_secs: f64,
    /// Successful answers per second of the window.
    pub per_second: f64,
    /// Latency of the measured successful requests; `None` if there were none.
    pub latency: Option<LatencySummary>,
    /// Events received per REQ (mean over measured REQs); 0 for EVENT.
    pub events_per_req: f64,
    /// The first error's description, if any.
    pub first_error: Option<String>,
    /// The event pool ran dry before the window ended.
    pub pool_exhausted: bool,
}

/// Counters shared with the progress printer.
#[derive(Default)]
struct Progress {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// When requests count, and when to stop starting them.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
}

/// What one connection measured.
#[derive(Default)]
struct ConnectionTally {
    latencies: Latencies,
    errors: u64,
    completed_total: u64,
    events: u64,
    last_answer: Option<Instant>,
    first_error: Option<String>,
}

/// Runs `workload` against `config.url`.
pub async fn run(config: &LoadConfig, workload: &Workload) -> Result<LoadReport, LoadError> {
    if config.connections == 0 {
        return Err(LoadError::NoConnections);
    }
    let mut sockets = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        sockets.push(open(&config.url).await?);
    }
    let start = Instant::now();
    let window = Window {
        measure_from: start + config.warmup,
        stop_at: start + config.warmup + config.duration,
    };
    let progress = Arc::new(Progress::default());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, ws) in sockets.into_iter().enumerate() {
        tasks.spawn(drive(
            index,
            ws,
            config.clone(),
            workload.clone(),
            window,
            Arc::clone(&progress),
        ));
    }
    let printer = config.progress.clone().map(|label| {
        let progress = Arc::clone(&progress);
        tokio::spawn(print_progress(label, progress, start, window.stop_at))
    });
    let mut latencies = Latencies::default();
    let mut tally = ConnectionTally::default();
    while let Some(joined) = tasks.join_next().await {
        let Ok(one) = joined else {
            // A connection task cannot panic on server input; a panic is a bug: count it.
            tally.errors += 1;
            continue;
        };
        latencies.merge(one.latencies);
        tally.errors += one.errors;
        tally.completed_total += one.completed_total;
        tally.events += one.events;
        tally.last_answer = tally.last_answer.max(one.last_answer);
        if tally.first_error.is_none() {
            tally.first_error = one.first_error;
        }
    }
    if let Some(printer) = printer {
        printer.abort();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }
    let requests = latencies.len() as u64;
    let elapsed = match tally.last_answer {
        Some(last) if last > window.measure_from => last - window.measure_from,
        _ => config.duration,
    };
    let elapsed_secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(LoadReport {
        verb: workload.verb(),
        connections: config.connections,
        requests,
        errors: tally.errors,
        completed_total: tally.completed_total,
        elapsed_secs,
        per_second: requests as f64 / elapsed_secs,
        latency: latencies.summary(),
        events_per_req: match workload {
            Workload::Req(_) if requests > 0 => tally.events as f64 / requests as f64,
            _ => 0.0,
        },
        first_error: tally.first_error,
        pool_exhausted: matches!(workload, Workload::Event(pool) if pool.exhausted()),
    })
}

pub(crate) async fn open(url: &str) -> Result<Ws, LoadError> {
    // Nagle off: small frames each way, one at a time; without it delayed ACKs add ~40 ms.
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|source| LoadError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// One connection's loop.
async fn drive(
    index: usize,
    mut ws: Ws,
    config: LoadConfig,
    workload: Workload,
    window: Window,
    progress: Arc<Progress>,
) -> ConnectionTally {
    let mut tally = ConnectionTally::default();
    let mut sequence: u64 = 0;
    loop {
        let sent_at = Instant::now();
        if sent_at >= window.stop_at {
            break;
        }
        let measured = sent_at >= window.measure_from;
        let outcome = match &workload {
            Workload::Event(pool) => {
                let Some(signed) = pool.take() else { break };
                publish(&mut ws, &signed.frame, &signed.id, config.request_timeout).await
            }
            Workload::Req(filter) => {
                sequence += 1;
                let subscription = format!("b{index}-{sequence}");
                query(&mut ws, &subscription, filter, config.request_timeout).await
            }
        };
        let answered_at = Instant::now();
        match outcome {
            Ok(events) => {
                tally.completed_total += 1;
                progress.ok.fetch_add(1, Ordering::Relaxed);
                if measured {
                    tally.latencies.record(answered_at - sent_at);
                    tally.events += events;
                    tally.last_answer = Some(answered_at);
                }
            }
            Err(failure) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    tally.errors += 1;
                }
                if tally.first_error.is_none() {
                    tally.first_error = Some(failure.to_string());
                }
                if let Failure::Connection(_) = failure {
                    match open(&config.url).await {
                        Ok(fresh) => ws = fresh,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    tally
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The server answered with a refusal; the connection is still usable.
    #[error("refused: {0}")]
    Refused(String),
    /// The connection is unusable (closed, errored, or silent past the timeout).
    #[error("connection: {0}")]
    Connection(String),
}

/// `["EVENT", …]` and wait for its `OK`. `Ok(0)` when accepted.
async fn publish(ws: &mut Ws, frame: &str, id: &str, timeout: Duration) -> Result<u64, Failure> {
    send(ws, frame).await?;
    let deadline = Instant::now() + timeout;
    loop {
        match receive(ws, deadline).await? {
            RelayMessage::Ok {
                event_id,
                accepted: true,
                ..
            } if event_id.to_hex() == id => return Ok(0),
            RelayMessage::Ok {
                event_id, message, ..
            } if event_id.to_hex() == id => return Err(Failure::Refused(message)),
            _ => {}
        }
    }
}

/// `["REQ", subscription, filter]`, wait for `EOSE`, then `CLOSE`. The events received.
pub(crate) async fn query(
    ws: &mut Ws,
    subscription: &str,
    filter: &str,
    timeout: Duration,
) -> Result<u64, Failure> {
    send(ws, &format!(r#"["REQ","{subscription}",{filter}]"#)).await?;
    let deadline = Instant::now() + timeout;
    let mut events = 0;
    loop {
        match receive(ws, deadline).await? {
            RelayMessage::Event {
                subscription_id, ..
            } if subscription_id.as_str() == subscription => events += 1,
            RelayMessage::Eose(id) if id.as_str() == subscription => break,
            RelayMessage::Closed {
                subscription_id,
                message,
            } if subscription_id.as_str() == subscription => {
                return Err(Failure::Refused(message));
            }
            _ => {}
        }
    }
    send(ws, &format!(r#"["CLOSE","{subscription}"]"#)).await?;
    Ok(events)
}

async fn send(ws: &mut Ws, frame: &str) -> Result<(), Failure> {
    ws.send(Message::text(frame))
        .await
        .map_err(|e| Failure::Connection(e.to_string()))
}

/// The next relay frame (pings and other non-text frames skipped); unparseable text is a
/// refusal-free protocol error and ends the connection.
async fn receive(ws: &mut Ws, deadline: Instant) -> Result<RelayMessage, Failure> {
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| Failure::Connection("no answer before the request timeout".into()))?;
        match next {
            None => return Err(Failure::Connection("closed by the server".into())),
            Some(Err(e)) => return Err(Failure::Connection(e.to_string())),
            Some(Ok(Message::Text(text))) => {
                return RelayMessage::parse(text.as_str()).map_err(|e| {
                    Failure::Connection(format!("unparseable frame: {}", e.notice_text()))
                });
            }
            Some(Ok(Message::Close(_))) => {
                return Err(Failure::Connection("closed by the server".into()));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Prints the running counts on stderr about once a second.
async fn print_progress(label: String, progress: Arc<Progress>, start: Instant, end: Instant) {
    use std::io::{IsTerminal as _, Write as _};
    let total = (end - start).as_secs_f64();
    let terminal = std::io::stderr().is_terminal();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let line = format!(
            "{label}: {:>5.1}/{total:.1} s  {} ok  {} errors",
            start.elapsed().as_secs_f64(),
            progress.ok.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
        );
        let mut stderr = std::io::stderr().lock();
        // On a terminal one line is rewritten; in a log, one line per second.
        let _ = if terminal {
            write!(stderr, "\r{line}")
        } else {
            writeln!(stderr, "{line}")
        };
    }
}

/// Publishes events from `pool` one at a time on one connection, `pause` apart, until one
/// is accepted; how long that took from the call, or `None` if none was within `limit` (or
/// the pool ran dry). Refusals and failed connections are retried; used to wait for a lease.
pub async fn publish_until_accepted(
    url: &str,
    pool: &EventPool,
    pause: Duration,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut ws = None;
    while Instant::now() < deadline {
        let socket = match ws.take() {
            Some(socket) => socket,
            None => match open(url).await {
                Ok(socket) => socket,
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let mut socket = socket;
        let signed = pool.take()?;
        match publish(&mut socket, &signed.frame, &signed.id, pause.max(limit / 4)).await {
            Ok(_) => return Some(start.elapsed()),
            Err(Failure::Refused(_)) => ws = Some(socket),
            Err(Failure::Connection(_)) => {}
        }
        tokio::time::sleep(pause).await;
    }
    None
}
