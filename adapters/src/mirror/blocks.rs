//! Blocks in and out of the mirror: verified storage, onward export, reads,
//! and the small cache of open logs behind them.
//!
//! A batch of proofs is applied proof by proof, so each is accepted or
//! rejected on its own (every proof of [`HyperLog::export_range`] carries what
//! it needs to verify alone). The batch then ends with the log's checkpoint
//! ([`HyperLog::apply_proofs`] on the last accepted proof, which re-applies it
//! idempotently), so the replica reopens after a crash or restart.

use std::ops::Range;

use hypergate_core::time::UnixTime;

use super::error::MirrorError;
use super::record::CoreKey;
use super::{MirrorStore, dir_bytes};
use crate::log::{self, HyperLog, LogError, Proof, RangeRequest};

/// An open core and when it was last used (for the least-recently-used choice).
#[derive(Debug)]
pub(super) struct OpenLog {
    log: HyperLog,
    last_used: u64,
}

/// What one [`MirrorStore::store_blocks`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct StoreOutcome {
    /// Proofs whose block verified and was stored.
    pub stored_blocks: u64,
    /// Proofs that failed verification (nothing of them was stored).
    pub rejected_blocks: u64,
    /// Why the first rejected proof failed, for the log line about the sender.
    pub first_rejection: Option<String>,
    /// Blocks the mirror now holds without a gap from block 0.
    pub local_length: u64,
    /// The remote length now known (advertised or signed).
    pub remote_length: u64,
}

impl MirrorStore {
    /// Verifies each proof against the core's key and signed tree and stores
    /// the blocks that verify. Rejected proofs are counted, in the outcome, in
    /// the core's record and in the store's totals; they are not an error.
    /// An error means local storage failed (the blocks verified before it
    /// stay stored and counted).
    pub async fn store_blocks(
        &mut self,
        core: &CoreKey,
        proofs: &[Proof],
        now: UnixTime,
    ) -> Result<StoreOutcome, MirrorError> {
        if let Some(record) = self.records.get_mut(core) {
            // In sync up to now with what was known before this batch.
            record.touch(now);
        }
        let log = self.log_mut(*core).await?;
        let mut stored = 0u64;
        let mut rejected = 0u64;
        let mut first_rejection = None;
        let mut last_accepted = None;
        let mut failure = None;
        for proof in proofs {
            match log.apply_proof(proof).await {
                Ok(()) => {
                    stored += u64::from(proof.block.is_some());
                    last_accepted = Some(proof);
                }
                Err(LogError::ProofRejected { detail, .. }) => {
                    rejected += 1;
                    first_rejection.get_or_insert(detail);
                }
                Err(e @ LogError::BlockTooLarge(_)) => {
                    rejected += 1;
                    first_rejection.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none()
            && let Some(proof) = last_accepted
            && let Err(e) = log.apply_proofs(std::slice::from_ref(proof)).await
        {
            failure = Some(e);
        }

        self.counters.verified_blocks = self.counters.verified_blocks.saturating_add(stored);
        self.counters.rejected_blocks = self.counters.rejected_blocks.saturating_add(rejected);
        self.refresh_from_log(*core)?;
        let record = self
            .records
            .get_mut(core)
            .ok_or(MirrorError::UnknownCore(*core))?;
        record.verified_blocks = record.verified_blocks.saturating_add(stored);
        record.rejected_blocks = record.rejected_blocks.saturating_add(rejected);
        record.touch(now);
        let outcome = StoreOutcome {
            stored_blocks: stored,
            rejected_blocks: rejected,
            first_rejection,
            local_length: record.local_length,
            remote_length: record.remote_length,
        };
        if let Some(reason) = &outcome.first_rejection {
            tracing::warn!(
                core = %core.short(), owner = %record.owner.short(), rejected, reason = %reason,
                "mirror rejected proofs that do not verify"
            );
        }
        self.persist(core, false)?;
        match failure {
            Some(e) => Err(MirrorError::log(*core, e)),
            None => Ok(outcome),
        }
    }

    /// Proofs that carry blocks `range` of a mirrored core to a replica whose
    /// signed tree covers `remote_length` blocks, so the gateway can serve the
    /// mirror onwards. Stops at the first block the mirror does not hold.
    pub async fn export_blocks(
        &mut self,
        core: &CoreKey,
        remote_length: u64,
        range: Range<u64>,
    ) -> Result<Vec<Proof>, MirrorError> {
        let log = self.log_mut(*core).await?;
        log.export_range(remote_length, range)
            .await
            .map_err(|e| MirrorError::log(*core, e))
    }

    /// The request to send a core's owner for blocks `range` (see
    /// [`HyperLog::request_range`](crate::log::HyperLog::request_range)): works
    /// from any state an interrupted batch left the mirror in.
    pub async fn request_range(
        &mut self,
        core: &CoreKey,
        range: Range<u64>,
    ) -> Result<RangeRequest, MirrorError> {
        let log = self.log_mut(*core).await?;
        log.request_range(range)
            .await
            .map_err(|e| MirrorError::log(*core, e))
    }

    /// Reads block `index` of a mirrored core; `None` when it is not held.
    pub async fn read_block(
        &mut self,
        core: &CoreKey,
        index: u64,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        let log = self.log_mut(*core).await?;
        log.get(index).await.map_err(|e| MirrorError::log(*core, e))
    }

    /// Answers a replica's [`RangeRequest`] for a mirrored core (a worker catching up on a
    /// log the gateway holds, such as the gateway writer log): proofs that verify from any
    /// state the asker is in. Stops at the first block the mirror does not hold.
    pub async fn answer_request(
        &mut self,
        core: &CoreKey,
        request: &RangeRequest,
    ) -> Result<Vec<Proof>, MirrorError> {
        let log = self.log_mut(*core).await?;
        log.answer_request(request)
            .await
            .map_err(|e| MirrorError::log(*core, e))
    }

    /// Blocks of a mirrored core held without a gap from block 0 (what
    /// [`MirrorStore::read_block`] can serve).
    pub fn len(&self, core: &CoreKey) -> Result<u64, MirrorError> {
        self.records
            .get(core)
            .map(|record| record.local_length)
            .ok_or(MirrorError::UnknownCore(*core))
    }

    /// The open log of a registered core, opening (or creating an empty
    /// replica) if needed and closing the least recently used beyond the cap.
    pub(super) async fn log_mut(&mut self, core: CoreKey) -> Result<&mut HyperLog, MirrorError> {
        if !self.records.contains_key(&core) {
            return Err(MirrorError::UnknownCore(core));
        }
        self.tick += 1;
        if !self.open_logs.contains_key(&core) {
            let public = core
                .verifying_key()
                .ok_or(MirrorError::InvalidCoreKey(core))?;
            let dir = self.core_dir(&core);
            let opened = if log::exists(&dir) {
                HyperLog::open_expecting(&dir, &public).await
            } else {
                HyperLog::create_replica(&dir, public).await
            };
            let log = opened.map_err(|e| MirrorError::log(core, e))?;
            self.cache_log(core, log);
        }
        let open = self
            .open_logs
            .get_mut(&core)
            .ok_or(MirrorError::UnknownCore(core))?;
        open.last_used = self.tick;
        Ok(&mut open.log)
    }

    /// Keeps `log` open, closing the least recently used log beyond the cap.
    pub(super) fn cache_log(&mut self, core: CoreKey, log: HyperLog) {
        while self.open_logs.len() >= self.config.max_open_cores.max(1) {
            let Some(oldest) = self
                .open_logs
                .iter()
                .min_by_key(|(_, open)| open.last_used)
                .map(|(key, _)| *key)
            else {
                break;
            };
            self.open_logs.remove(&oldest);
        }
        self.tick += 1;
        self.open_logs.insert(
            core,
            OpenLog {
                log,
                last_used: self.tick,
            },
        );
    }

    /// Copies the open log's lengths and the directory's size into the record.
    pub(super) fn refresh_from_log(&mut self, core: CoreKey) -> Result<(), MirrorError> {
        let bytes = dir_bytes(&self.core_dir(&core));
        let (local, signed) = self
            .open_logs
            .get(&core)
            .map(|open| (open.log.contiguous_len(), open.log.len()))
            .ok_or(MirrorError::UnknownCore(core))?;
        let record = self
            .records
            .get_mut(&core)
            .ok_or(MirrorError::UnknownCore(core))?;
        record.local_length = local;
        record.signed_length = signed;
        record.remote_length = record.remote_length.max(signed);
        record.bytes = bytes;
        Ok(())
    }
}
