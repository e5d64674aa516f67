//! Group commit of the gateway's leased writes.
//!
//! Contract: every accepted `EVENT` of a relay in replica mode goes through the relay's one
//! [`WriteBatcher`]. It takes whatever writes are waiting (up to [`MAX_BATCH`]), plans them
//! with the relay's host ([`RelayHost::plan_batch`]: duplicates and ephemeral events are
//! settled there), stores the rest with **one** append to the leased writer log (one signing
//! pass, one mirror store, one set of fsyncs) *without holding the host*, so other sessions
//! keep reading and queueing their writes meanwhile, then catches the host's index up and
//! answers each write with its own outcome once that append is durable. While a batch is
//! being stored the next one gathers, so under concurrent writers the disk syncs are shared
//! instead of paid per event; a lone writer waits for nothing extra. Writes of different
//! writer keys (a rotation between them) are stored in separate appends, in order; only the
//! batcher appends gateway writes, so a planned batch cannot race another.
//!
//! [`RelayHost::plan_batch`]: crate::relay::RelayHost::plan_batch

use std::sync::{Arc, Weak};

use crate::rt::Spawner;
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Event;
use hypergate_core::registry::PendingMark;
use hypergate_core::relay::WriterKey;
use hypergate_core::session::PublishOutcome;
use hypergate_core::wire::PendingType;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::relay::RelayStore as _;

use super::replica::{MirrorSource, ReplicaHost};
use super::state::Shared;

/// Writes stored by one append at most.
pub(crate) const MAX_BATCH: usize = 256;
/// Writes waiting for a batch, per relay.
const QUEUE: usize = 4096;

/// What became of one write.
#[derive(Debug)]
pub(crate) struct StoredWrite {
    /// The client's answer.
    pub(crate) outcome: PublishOutcome,
    /// Whether the core was told the write was appended (which ends its append in flight):
    /// if not, the caller reports it failed, so that count settles exactly once.
    pub(crate) reported: bool,
}

impl StoredWrite {
    fn unreported(outcome: PublishOutcome) -> StoredWrite {
        StoredWrite {
            outcome,
            reported: false,
        }
    }
}

/// One write waiting for its batch.
struct WriteJob {
    event: Event,
    writer: WriterKey,
    /// The lease epoch the core allowed the write under.
    epoch: u64,
    done: oneshot::Sender<StoredWrite>,
}

/// A relay's batcher: a task that owns the order of the relay's gateway writes.
pub(crate) struct WriteBatcher {
    jobs: mpsc::Sender<WriteJob>,
}

impl WriteBatcher {
    /// Starts the batcher of `host`'s relay.
    pub(crate) fn spawn(
        shared: Weak<Shared>,
        relay: RelayKey,
        host: Arc<Mutex<ReplicaHost>>,
        source: MirrorSource,
        spawner: &Spawner,
    ) -> WriteBatcher {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let relay_writes = RelayWrites {
            shared,
            relay,
            host,
            source,
        };
        spawner.spawn(relay_writes.run(queue));
        WriteBatcher { jobs }
    }

    /// Stores `event` in `writer`'s log with whatever writes wait beside it; its outcome once
    /// the batch is durable (or refused).
    pub(crate) async fn store(&self, event: Event, writer: WriterKey, epoch: u64) -> StoredWrite {
        let (done, outcome) = oneshot::channel();
        let job = WriteJob {
            event,
            writer,
            epoch,
            done,
        };
        let stopped = || {
            StoredWrite::unreported(PublishOutcome::Rejected(
                "error: the relay's writer stopped".to_owned(),
            ))
        };
        if self.jobs.send(job).await.is_err() {
            return stopped();
        }
        outcome.await.unwrap_or_else(|_| stopped())
    }
}

/// The batcher task's state. It holds the gateway weakly: the gateway owns the batcher.
struct RelayWrites {
    shared: Weak<Shared>,
    relay: RelayKey,
    host: Arc<Mutex<ReplicaHost>>,
    source: MirrorSource,
}

impl RelayWrites {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteJob>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut jobs = batch.into_iter().peekable();
            while let Some(job) = jobs.next() {
                // One append per run of the same writer key.
                let writer = job.writer;
                let mut run = vec![job];
                while let Some(next) = jobs.next_if(|next| next.writer == writer) {
                    run.push(next);
                }
                tracing::debug!(writes = run.len(), "storing a write batch");
                let outcomes = self.store(writer, &run).await;
                for (job, outcome) in run.into_iter().zip(outcomes) {
                    // A writer that stopped waiting has nobody to answer.
                    let _ = job.done.send(outcome);
                }
            }
        }
    }

    /// Appends one run of writes, marks the stored ones pending in the core and makes that
    /// durable; what became of each.
    async fn store(&mut self, writer: WriterKey, run: &[WriteJob]) -> Vec<StoredWrite> {
        let events = run.iter().map(|job| job.event.clone()).collect();
        let mut plan = self.host.lock().await.plan_batch(events);
        if !plan.to_store().is_empty() {
            match self.source.append_events(&writer, plan.to_store()).await {
                Ok(()) => {
                    // Durable: the indexes catch up (a failure here only delays reads; the
                    // next refresh catches up from the logs). Every shard's host of the relay,
                    // so live subscriptions everywhere see the writes.
                    match self.shared.upgrade() {
                        Some(shared) => shared.replicas.refresh(self.relay).await,
                        None => {
                            if let Err(error) = self.host.lock().await.refresh().await {
                                tracing::warn!(%error, "replica refresh after a write batch failed");
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, writes = run.len(), "gateway write batch failed");
                    plan.append_failed();
                }
            }
        }
        let mut stored: Vec<StoredWrite> = plan
            .into_outcomes()
            .into_iter()
            .map(StoredWrite::unreported)
            .collect();
        let appended = |write: &StoredWrite| write.outcome.is_ok();
        if !stored.iter().any(appended) {
            return stored;
        }
        let Some(shared) = self.shared.upgrade() else {
            return stored; // the gateway is shutting down
        };
        let relay = self.relay;
        shared.with_relay(relay, |state, now| {
            for (job, write) in run.iter().zip(&mut stored) {
                if !appended(write) {
                    continue;
                }
                let mark = PendingMark {
                    kind: PendingType::Event,
                    reason: Some("replica-write".into()),
                    drive_identifier: None,
                    drive_version: None,
                    lease_version: None,
                };
                // The core ends the append in flight either way; an error is only the mark.
                write.reported = true;
                if let Err(error) = state
                    .core
                    .handle_write_appended(relay, job.epoch, mark, now)
                {
                    tracing::warn!(%error, "pending mark failed");
                }
            }
        });
        // The pending marks are on disk before any client hears `OK true`.
        if let Err(error) = shared.persist_registry().await {
            tracing::error!(%error, "the registry snapshot could not be written");
            for write in stored.iter_mut().filter(|write| appended(write)) {
                write.outcome = PublishOutcome::Rejected(
                    "error: the write could not be recorded as pending".to_owned(),
                );
            }
        }
        stored
    }
}
