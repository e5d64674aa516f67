//! Group commit of the gateway's leased writes.
//!
//! Contract: every accepted `EVENT` of a relay in replica mode goes through the relay's one
//! [`WriteBatcher`]. It takes whatever writes are waiting (up to [`MAX_BATCH`]), stores them
//! with **one** append to the leased writer log ([`RelayHost::store_batch`]: one signing
//! pass, one mirror store, one set of fsyncs) and answers each write with its own outcome once
//! that append is durable. While a batch is being stored the next one gathers, so under
//! concurrent writers the disk syncs are shared instead of paid per event; a lone writer waits
//! for nothing extra. Writes of different writer keys (a rotation between them) are stored
//! in separate appends, in order.
//!
//! [`RelayHost::store_batch`]: hypergate_adapters::relay::RelayHost::store_batch

use std::sync::Arc;

use hypergate_core::nostr::Event;
use hypergate_core::relay::WriterKey;
use hypergate_core::session::PublishOutcome;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::replica::ReplicaHost;

/// Writes stored by one append at most.
pub(crate) const MAX_BATCH: usize = 256;
/// Writes waiting for a batch, per relay.
const QUEUE: usize = 4096;

/// One write waiting for its batch.
struct WriteJob {
    event: Event,
    writer: WriterKey,
    done: oneshot::Sender<PublishOutcome>,
}

/// A relay's batcher: a task that owns the order of the relay's gateway writes.
pub(crate) struct WriteBatcher {
    jobs: mpsc::Sender<WriteJob>,
}

impl WriteBatcher {
    /// Starts the batcher of `host`'s relay.
    pub(crate) fn spawn(host: Arc<Mutex<ReplicaHost>>) -> WriteBatcher {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(host, queue));
        WriteBatcher { jobs }
    }

    /// Stores `event` in `writer`'s log with whatever writes wait beside it; its outcome once
    /// the batch is durable (or refused).
    pub(crate) async fn store(&self, event: Event, writer: WriterKey) -> PublishOutcome {
        let (done, outcome) = oneshot::channel();
        let job = WriteJob {
            event,
            writer,
            done,
        };
        if self.jobs.send(job).await.is_err() {
            return PublishOutcome::Rejected("error: the relay's writer stopped".to_owned());
        }
        outcome.await.unwrap_or_else(|_| {
            PublishOutcome::Rejected("error: the relay's writer stopped".to_owned())
        })
    }
}

async fn run(host: Arc<Mutex<ReplicaHost>>, mut queue: mpsc::Receiver<WriteJob>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut host = host.lock().await;
        let mut jobs = batch.into_iter().peekable();
        while let Some(job) = jobs.next() {
            // One append per run of the same writer key.
            let writer = job.writer;
            let mut run = vec![job];
            while let Some(next) = jobs.next_if(|next| next.writer == writer) {
                run.push(next);
            }
            let events = run.iter().map(|job| job.event.clone()).collect();
            let (outcomes, failures) = host.store_batch(writer, events).await;
            for failure in &failures {
                tracing::warn!(%failure, writes = run.len(), "gateway write batch failed");
            }
            for (job, outcome) in run.into_iter().zip(outcomes) {
                // A writer that stopped waiting has nobody to answer.
                let _ = job.done.send(outcome);
            }
        }
    }
}
