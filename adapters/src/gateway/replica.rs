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
use crate::rt::{self, Spawner};
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

/// A host as the sessions of its shard share it.
type SharedHost = Arc<Mutex<ReplicaHost>>;

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

/// The replica hosts, by relay and shard: each shard of a thread-per-core driver serves its
/// sessions from hosts of its own ([`rt::current_shard`]), so replica reads never wait for a
/// lock another core holds; a tokio driver has shard 0 only. Hosts of one relay converge:
/// every one of them is refreshed when the mirror or a gateway write adds events.
pub(crate) struct ReplicaHosts {
    index_dir: PathBuf,
    mirror: Arc<Mutex<MirrorStore>>,
    writers: LeasedWriters,
    hosts: Mutex<BTreeMap<(RelayKey, usize), SharedHost>>,
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

    /// The calling shard's host of `relay`, opened (and caught up with the mirror) on first
    /// use.
    pub(crate) async fn host(&self, relay: RelayKey) -> Result<Arc<Mutex<ReplicaHost>>, String> {
        let shard = rt::current_shard();
        let mut hosts = self.hosts.lock().await;
        if let Some(host) = hosts.get(&(relay, shard)) {
            return Ok(Arc::clone(host));
        }
        std::fs::create_dir_all(&self.index_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.index_dir.display()))?;
        // Each shard's index is a file of its own (redb locks a file to one opener).
        let path = match shard {
            0 => self.index_dir.join(format!("{}.redb", relay.to_hex())),
            shard => self
                .index_dir
                .join(format!("{}.shard-{shard}.redb", relay.to_hex())),
        };
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
        hosts.insert((relay, shard), Arc::clone(&host));
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

    /// Catches every open host of `relay` (one per shard that serves it) up with the mirror.
    pub(crate) async fn refresh(&self, relay: RelayKey) {
        let hosts: Vec<_> = self
            .hosts
            .lock()
            .await
            .range((relay, 0)..=(relay, usize::MAX))
            .map(|(_, host)| Arc::clone(host))
            .collect();
        for host in hosts {
            if let Err(error) = host.lock().await.refresh().await {
                tracing::warn!(relay = %relay.short(), %error, "replica refresh failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Test set-up: a failed step should fail the test loudly.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mirror::{CoreAnnouncement, CoreKey, CoreRole, MirrorConfig};
    use crate::relay::{RelayLogs, owner_log_key};
    use hypercore::SigningKey;
    use hypergate_core::ids::PeerId;
    use hypergate_core::nostr::Filter;
    use hypergate_core::nostr::testing::signed_event;
    use hypergate_core::time::UnixTime;

    /// Mirrors what `logs` holds of `key` that `mirror` does not yet.
    async fn mirror_log(logs: &mut RelayLogs, mirror: &Mutex<MirrorStore>, key: WriterKey) {
        let relay = logs.relay_key();
        let (log, role) = if key == owner_log_key(&relay) {
            (logs.owner_log(), CoreRole::Owner)
        } else {
            (logs.writer_log(&key).await.unwrap(), CoreRole::Writer)
        };
        let core = CoreKey(*key.as_bytes());
        let now = UnixTime(1_000);
        let mut mirror = mirror.lock().await;
        let _ = mirror
            .register_core(
                CoreAnnouncement::new(core, PeerId([9; 32]), relay, role),
                now,
            )
            .await
            .unwrap();
        let held = mirror.len(&core).unwrap();
        let proofs = log.export_range(held, held..log.len()).await.unwrap();
        mirror.advertise(&core, log.len(), now).unwrap();
        let _ = mirror.store_blocks(&core, &proofs, now).await.unwrap();
    }

    async fn count(host: &SharedHost) -> usize {
        let all = Filter::parse_json(r#"{"kinds":[1]}"#).unwrap();
        host.lock().await.query(&[all]).unwrap().events.len()
    }

    #[test]
    fn each_shard_reads_its_own_host_and_a_refresh_reaches_every_shard() {
        smol::block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let mut logs =
                RelayLogs::create(&tmp.path().join("worker"), SigningKey::from_bytes(&[1; 32]))
                    .await
                    .unwrap();
            let relay = logs.relay_key();
            let writer = logs
                .add_local_writer(SigningKey::from_bytes(&[2; 32]))
                .await
                .unwrap();
            let first = signed_event(7, 100, 1, Vec::new(), "first");
            logs.append_events(&writer, &[first]).await.unwrap();
            let mirror = MirrorStore::open(&tmp.path().join("mirror"), MirrorConfig::default())
                .await
                .unwrap();
            let mirror = Arc::new(Mutex::new(mirror));
            mirror_log(&mut logs, &mirror, owner_log_key(&relay)).await;
            mirror_log(&mut logs, &mirror, writer).await;
            let hosts = ReplicaHosts::new(
                tmp.path().join("replica-index"),
                Arc::clone(&mirror),
                Arc::default(),
                Spawner::new(|task| smol::spawn(task).detach()),
            );

            rt::set_current_shard(0);
            let on_zero = hosts.host(relay).await.unwrap();
            rt::set_current_shard(1);
            let on_one = hosts.host(relay).await.unwrap();
            assert!(!Arc::ptr_eq(&on_zero, &on_one), "one host per shard");
            assert!(Arc::ptr_eq(&on_one, &hosts.host(relay).await.unwrap()));
            assert_eq!((count(&on_zero).await, count(&on_one).await), (1, 1));

            // New blocks in the mirror, one refresh: both shards' hosts serve them.
            let later = signed_event(7, 200, 1, Vec::new(), "later");
            logs.append_events(&writer, &[later]).await.unwrap();
            mirror_log(&mut logs, &mirror, writer).await;
            rt::set_current_shard(0);
            hosts.refresh(relay).await;
            assert_eq!((count(&on_zero).await, count(&on_one).await), (2, 2));
        });
    }
}
