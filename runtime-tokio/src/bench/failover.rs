//! Failover time: SIGKILL the worker under a steady REQ load through the gateway, and time
//! until the first answer the gateway serves from its replica.
//!
//! Contract — one trial, on a fresh [`Topology`] (so no trial inherits a lease, a rotation
//! or a session already in replica mode):
//! 1. seed [`SEED_EVENTS`] events through the worker and wait until the gateway mirrored them;
//! 2. start [`LOAD_CONNECTIONS`] connections to the gateway, each looping `REQ` (limit 10) →
//!    `EOSE` → `CLOSE`; a REQ unanswered within [`REQ_TIMEOUT`] counts as failed and its
//!    connection is reopened; after [`STEADY`] of that load,
//! 3. SIGKILL the worker (`t_kill`: just before the signal) and reap it (`t_dead`);
//! 4. the failover time is from `t_kill` to the first complete answer (EOSE after
//!    [`EXPECTED_EVENTS`] events) to a REQ **sent after `t_dead`**: the worker process no
//!    longer exists then, so the answer can only come from the gateway's replica. As a
//!    cross-check, the gateway's `gateway_replica_fallback_total` must have grown; a trial
//!    where it did not is reported as not confirmed (never silently counted).
//! - A trial with no replica answer within [`FAILOVER_LIMIT`] is an error of the trial.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::events::EventPool;
use super::load::{self, LoadConfig, Workload};
use super::topology::{Topology, TopologyOptions};

/// Events stored before the trial (more than the REQ's limit, so a full answer has 10).
pub const SEED_EVENTS: usize = 20;
/// Events a complete answer to the load's REQ carries.
pub const EXPECTED_EVENTS: u64 = 10;
/// The load's filter.
const FILTER: &str = r#"{"kinds":[1],"limit":10}"#;
/// Connections looping REQ during the trial.
pub const LOAD_CONNECTIONS: usize = 4;
/// How long one REQ may go unanswered before its connection is reopened.
pub const REQ_TIMEOUT: Duration = Duration::from_secs(2);
/// Steady load before the kill.
pub const STEADY: Duration = Duration::from_secs(1);
/// Longest wait for a replica answer after the kill.
pub const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the mirror to hold the seed (a guard).
const MIRROR_LIMIT: Duration = Duration::from_secs(60);

/// One trial's outcome.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverTrial {
    /// From the SIGKILL to the first replica-served answer, in microseconds.
    pub failover_us: u64,
    /// REQs that failed (timeout, closed, refused) between the kill and that answer.
    pub failed_requests: u64,
    /// The gateway's replica-fallback counter grew during the trial.
    pub replica_confirmed: bool,
}

/// One answered (or failed) REQ of the load.
struct Answer {
    sent_at: Instant,
    answered_at: Instant,
    /// `Some(events)` if answered with EOSE, `None` if it failed.
    events: Option<u64>,
}

/// Runs one trial on a fresh topology.
pub async fn trial(label: &str, options: &TopologyOptions) -> anyhow::Result<FailoverTrial> {
    let mut topology = Topology::start(options).await?;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let seed = Arc::new(EventPool::sign(label, SEED_EVENTS, created_at, 200)?);
    let seeded = load::run(
        &LoadConfig {
            url: topology.worker_url(),
            connections: 1,
            warmup: Duration::ZERO,
            duration: MIRROR_LIMIT,
            request_timeout: Duration::from_secs(10),
            progress: None,
        },
        &Workload::Event(seed),
    )
    .await?;
    if seeded.completed_total < SEED_EVENTS as u64 {
        bail!(
            "seeding stored {} of {SEED_EVENTS} events (first error: {:?})",
            seeded.completed_total,
            seeded.first_error
        );
    }
    if !topology
        .wait_mirrored(SEED_EVENTS as u64, MIRROR_LIMIT)
        .await
    {
        bail!("the gateway did not mirror the seed events within {MIRROR_LIMIT:?}");
    }
    let fallbacks_before = replica_fallbacks(&topology.gateway_metrics().await);

    let (stop_tx, stop) = watch::channel(false);
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let mut load = tokio::task::JoinSet::new();
    for index in 0..LOAD_CONNECTIONS {
        load.spawn(req_loop(
            index,
            topology.gateway_url(),
            stop.clone(),
            answers_tx.clone(),
        ));
    }
    drop(answers_tx);
    tokio::time::sleep(STEADY).await;

    let killed_at = Instant::now();
    topology.kill_worker();
    let dead_at = Instant::now();
    let deadline = killed_at + FAILOVER_LIMIT;
    let mut failed_requests = 0;
    let served_at = loop {
        let answer = tokio::time::timeout_at(deadline, answers.recv()).await;
        let Ok(Some(answer)) = answer else {
            let _ = stop_tx.send(true);
            bail!(
                "no replica-served answer within {FAILOVER_LIMIT:?} of the SIGKILL{}",
                topology.gateway_log_tail()
            );
        };
        match answer.events {
            None if answer.answered_at >= killed_at => failed_requests += 1,
            Some(events) if answer.sent_at >= dead_at && events == EXPECTED_EVENTS => {
                break answer.answered_at;
            }
            _ => {}
        }
    };
    let _ = stop_tx.send(true);
    while load.join_next().await.is_some() {}
    let fallbacks_after = replica_fallbacks(&topology.gateway_metrics().await);
    topology.shutdown().await;
    Ok(FailoverTrial {
        failover_us: u64::try_from((served_at - killed_at).as_micros()).unwrap_or(u64::MAX),
        failed_requests,
        replica_confirmed: fallbacks_after > fallbacks_before,
    })
}

/// One load connection: REQ, EOSE, CLOSE, repeat until told to stop; every outcome is sent.
async fn req_loop(
    index: usize,
    url: String,
    mut stop: watch::Receiver<bool>,
    answers: mpsc::UnboundedSender<Answer>,
) {
    let mut ws = None;
    let mut sequence = 0u64;
    while !*stop.borrow() {
        let socket = match ws.take() {
            Some(socket) => Some(socket),
            None => load::open(&url).await.ok(),
        };
        let sent_at = Instant::now();
        let Some(mut socket) = socket else {
            let _ = answers.send(Answer {
                sent_at,
                answered_at: sent_at,
                events: None,
            });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        sequence += 1;
        let subscription = format!("f{index}-{sequence}");
        let outcome = load::query(&mut socket, &subscription, FILTER, REQ_TIMEOUT).await;
        let answered_at = Instant::now();
        let events = match outcome {
            Ok(events) => {
                ws = Some(socket);
                Some(events)
            }
            Err(load::Failure::Refused(_)) => {
                ws = Some(socket);
                None
            }
            Err(load::Failure::Connection(_)) => None,
        };
        if answers
            .send(Answer {
                sent_at,
                answered_at,
                events,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The sum of `gateway_replica_fallback_total` over its label sets in an OpenMetrics text.
#[must_use]
pub fn replica_fallbacks(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("gateway_replica_fallback_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_fallbacks_sums_every_label_set_and_ignores_other_metrics() {
        let text = "# HELP gateway_replica_fallback Sessions that entered replica mode\n\
                    gateway_replica_fallback_total{relay=\"ab\",mode=\"session\"} 3\n\
                    gateway_replica_fallback_total{relay=\"cd\",mode=\"session\"} 2\n\
                    gateway_relay_fallback_writes_total{relay=\"ab\",result=\"accepted\"} 9\n\
                    # EOF\n";
        assert_eq!(replica_fallbacks(text), 5.0);
        assert_eq!(replica_fallbacks(""), 0.0);
    }
}
