//! Replica mode: relays served from the gateway's mirror, and written to under a lease.
//!
//! Contract:
//! - One [`RelayHost`] per relay, opened on first use over [`MirrorSource`]: its view and
//!   index are rebuilt from the mirrored logs (owner, writers, the gateway writer), every
//!   event verified by the reader. The index file lives under `<data>/replica-index/` and is
//!   rebuilt on open, so it can never disagree with the mirror.
//! - [`ReplicaHosts::refresh`] catches a host up after the mirror stored blocks of its relay:
//!   new events reach live subscriptions of every replica-mode session (the original had no
//!   live subscriptions in replica mode).
//! - Appends go to the relay's [`LeasedWriter`] only when its key is the writer asked for;
//!   with no leased writer the append fails and the client is told so.
//! - Lock order: a host, then the leased writers, then the mirror; never the other way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::mirror::{LeasedWriter, LeasedWriterError, MirrorError, MirrorStore};
use crate::relay::{BlockSource, HostConfig, IndexedRelay, RelayHost, RelayStore};
use crate::rt::Spawner;
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::LeaseId;
use hypergate_core::nostr::Event;
use hypergate_core::relay::{RelayOp, WriterKey};
use hypergate_core::session::PublishOutcome;
use tokio::sync::Mutex;

use super::state::Shared;
use super::write_batch::{StoredWrite, WriteBatcher};

/// Live messages a replica subscription may queue before it is dropped (`CLOSED`).
const LIVE_QUEUE: usize = 1024;

/// A relay host serving the mirror.
pub(crate) type ReplicaHost = RelayHost<MirrorSource>;

/// A relay's leased gateway writer and the lease it belongs to.
pub(crate) struct Leased {
    /// The lease; only its end removes this writer (a newer lease replaces it).
    pub(crate) lease: LeaseId,
    /// The writer.
    pub(crate) writer: LeasedWriter,
}

/// The leased writers, by relay (lock before the mirror, never after).
pub(crate) type LeasedWriters = Arc<Mutex<BTreeMap<RelayKey, Leased>>>;

/// Why a gateway append failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicaWriteError {
    /// No lease is held for the writer asked for (it ended meanwhile).
    #[error("no leased gateway writer {0} for this relay")]
    NoLease(String),
    /// The event could not be encoded as a relay op.
    #[error("event could not be encoded: {0}")]
    Encode(String),
    /// The leased append failed.
    #[error(transparent)]
    Append(#[from] LeasedWriterError),
}

/// The mirror as one relay's block source, with its leased writer for appends.
#[derive(Clone)]
pub(crate) struct MirrorSource {
    relay: RelayKey,
    mirror: Arc<Mutex<MirrorStore>>,
    writers: LeasedWriters,
}

impl std::fmt::Debug for MirrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSource")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl BlockSource for MirrorSource {
    type Error = MirrorError;

    async fn held_len(&mut self, key: &WriterKey) -> Result<Option<u64>, MirrorError> {
        BlockSource::held_len(&mut *self.mirror.lock().await, key).await
    }

    async fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        BlockSource::read_block(&mut *self.mirror.lock().await, key, index).await
    }
}

impl RelayStore for MirrorSource {
    type WriteError = ReplicaWriteError;

    async fn append_events(
        &mut self,
        writer: &WriterKey,
        events: &[Event],
    ) -> Result<(), ReplicaWriteError> {
        let blocks = events
            .iter()
            .map(|event| {
                RelayOp::event(event)
                    .map(|op| op.encode())
                    .map_err(|e| ReplicaWriteError::Encode(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut writers = self.writers.lock().await;
        let leased = writers
            .get_mut(&self.relay)
            .map(|leased| &mut leased.writer)
            .filter(|leased| leased.writer_key() == *writer)
            .ok_or_else(|| ReplicaWriteError::NoLease(writer.to_hex()))?;
        let mut mirror = self.mirror.lock().await;
        let _ = leased
            .append(&mut mirror, &blocks, SystemClock.unix_now())
            .await?;
        Ok(())
    }
}

/// The replica hosts, by relay.
pub(crate) struct ReplicaHosts {
    index_dir: PathBuf,
    mirror: Arc<Mutex<MirrorStore>>,
    writers: LeasedWriters,
    hosts: Mutex<BTreeMap<RelayKey, Arc<Mutex<ReplicaHost>>>>,
    /// Each open host's write batcher (group commit).
    batchers: Mutex<BTreeMap<RelayKey, Arc<WriteBatcher>>>,
    /// Starts the batchers' tasks.
    spawner: Spawner,
}

impl ReplicaHosts {
    pub(crate) fn new(
        index_dir: PathBuf,
        mirror: Arc<Mutex<MirrorStore>>,
        writers: LeasedWriters,
        spawner: Spawner,
    ) -> ReplicaHosts {
        ReplicaHosts {
            index_dir,
            mirror,
            writers,
            hosts: Mutex::new(BTreeMap::new()),
            batchers: Mutex::new(BTreeMap::new()),
            spawner,
        }
    }

    /// `relay`'s view of the mirror, with its leased writer for appends.
    fn source(&self, relay: RelayKey) -> MirrorSource {
        MirrorSource {
            relay,
            mirror: Arc::clone(&self.mirror),
            writers: Arc::clone(&self.writers),
        }
    }

    /// The host of `relay`, opened (and caught up with the mirror) on first use.
    pub(crate) async fn host(&self, relay: RelayKey) -> Result<Arc<Mutex<ReplicaHost>>, String> {
        let mut hosts = self.hosts.lock().await;
        if let Some(host) = hosts.get(&relay) {
            return Ok(Arc::clone(host));
        }
        std::fs::create_dir_all(&self.index_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.index_dir.display()))?;
        let path = self.index_dir.join(format!("{}.redb", relay.to_hex()));
        let indexed = IndexedRelay::create(relay, &path, LIVE_QUEUE).map_err(|e| e.to_string())?;
        let source = self.source(relay);
        let config = HostConfig {
            read_only_reason: "no lease for this relay".to_owned(),
            ..HostConfig::default()
        };
        let host = RelayHost::open(indexed, source, None, config)
            .await
            .map_err(|e| e.to_string())?;
        let host = Arc::new(Mutex::new(host));
        hosts.insert(relay, Arc::clone(&host));
        Ok(host)
    }

    /// Stores a leased write of `relay` in `writer`'s log, batched with the relay's other
    /// waiting writes; its outcome once durable (see [`super::write_batch`]).
    pub(crate) async fn store_write(
        &self,
        shared: &Arc<Shared>,
        relay: RelayKey,
        event: Event,
        writer: WriterKey,
        epoch: u64,
    ) -> StoredWrite {
        let batcher = {
            let existing = self.batchers.lock().await.get(&relay).cloned();
            match existing {
                Some(batcher) => batcher,
                None => match self.host(relay).await {
                    Ok(host) => {
                        // The batcher appends through its own handle on the mirror, so that the
                        // host stays free for other sessions during the append's syncs.
                        let source = self.source(relay);
                        let mut batchers = self.batchers.lock().await;
                        Arc::clone(batchers.entry(relay).or_insert_with(|| {
                            Arc::new(WriteBatcher::spawn(
                                Arc::downgrade(shared),
                                relay,
                                host,
                                source,
                                &self.spawner,
                            ))
                        }))
                    }
                    Err(error) => {
                        return StoredWrite {
                            outcome: PublishOutcome::Rejected(format!("error: {error}")),
                            reported: false,
                        };
                    }
                },
            }
        };
        batcher.store(event, writer, epoch).await
    }

    /// Catches `relay`'s host up with the mirror, if it is open.
    pub(crate) async fn refresh(&self, relay: RelayKey) {
        let host = self.hosts.lock().await.get(&relay).cloned();
        if let Some(host) = host
            && let Err(error) = host.lock().await.refresh().await
        {
            tracing::warn!(relay = %relay.short(), %error, "replica refresh failed");
        }
    }
}
