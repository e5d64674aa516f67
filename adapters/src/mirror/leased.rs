//! [`LeasedWriter`]: how the gateway appends to a relay's gateway writer log under a lease
//! without the leased secret ever touching its disk.
//!
//! Contract:
//! - The log's durable copy is a core of the [`MirrorStore`] (role `gateway-writer`), like
//!   every other log the gateway holds: a replica with the public key only. The secret key
//!   lives in an in-memory hypercore (the *signer*), dropped with the writer; the vault holds
//!   the key itself and wipes it when the lease ends.
//! - [`LeasedWriter::open`] rebuilds the signer by appending the mirror's blocks again.
//!   Hypercore trees and ed25519 signatures are deterministic, so the signer reaches the
//!   mirror's exact signed tree; if it did not, the first append's proofs would not verify and
//!   the append would fail instead of storing anything.
//! - [`LeasedWriter::append`] returns only after the mirror verified and stored every new
//!   block (the mirror's store syncs to disk). If that fails, the signer may be ahead of the
//!   disk: the next append first rebuilds it from the mirror (dropping the blocks that never
//!   became durable), and fails if that is not possible, so memory and disk never drift.
//! - Workers fetch the log from the mirror like any mirrored core
//!   ([`MirrorStore::answer_request`]).

use ed25519_dalek::SigningKey;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::relay::WriterKey;
use hypergate_core::time::UnixTime;

use super::{CoreAnnouncement, CoreKey, CoreRole, MirrorError, MirrorStore};
use crate::log::{HyperLog, LogError};

/// Why a leased append failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeasedWriterError {
    // --- local storage ---
    /// The mirror could not store or read the log.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The in-memory signer failed.
    #[error("gateway writer signer: {0}")]
    Signer(#[from] LogError),
    // --- state ---
    /// The mirror refused blocks the signer made (the signer's tree differs from the mirror's),
    /// or held fewer blocks after the append than the signer: nothing more is appended.
    #[error("gateway writer {core} is out of step with its mirror: {detail}")]
    OutOfStep {
        /// The writer log.
        core: CoreKey,
        /// What differed.
        detail: String,
    },
}

/// The gateway's signer for one relay's gateway writer log. See the module docs.
#[derive(Debug)]
pub struct LeasedWriter {
    relay: RelayKey,
    core: CoreKey,
    signer: HyperLog,
    /// The leased key, to rebuild the signer after a failed append (zeroized on drop).
    key: SigningKey,
    poisoned: bool,
}

impl LeasedWriter {
    /// Opens the writer for `relay` with its leased `key`: registers the log in `mirror` if it
    /// is new (owned by `holder`, this gateway) and replays what the mirror holds into the
    /// in-memory signer.
    pub async fn open(
        mirror: &mut MirrorStore,
        relay: RelayKey,
        key: SigningKey,
        holder: PeerId,
        now: UnixTime,
    ) -> Result<LeasedWriter, LeasedWriterError> {
        let core = CoreKey(key.verifying_key().to_bytes());
        if mirror.core(&core).is_none() {
            let announcement = CoreAnnouncement::new(core, holder, relay, CoreRole::GatewayWriter);
            let _ = mirror.register_core(announcement, now).await?;
        }
        let signer = replay(mirror, core, key.clone()).await?;
        Ok(LeasedWriter {
            relay,
            core,
            signer,
            key,
            poisoned: false,
        })
    }

    /// The relay written to.
    #[must_use]
    pub fn relay(&self) -> RelayKey {
        self.relay
    }

    /// The writer log's key (its core key in the mirror).
    #[must_use]
    pub fn writer_key(&self) -> WriterKey {
        WriterKey(*self.core.as_bytes())
    }

    /// Blocks in the log.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.signer.len()
    }

    /// Whether the log has no blocks yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.signer.is_empty()
    }

    /// Appends `blocks` and returns the new length once the mirror stored them durably.
    pub async fn append<B: AsRef<[u8]>>(
        &mut self,
        mirror: &mut MirrorStore,
        blocks: &[B],
        now: UnixTime,
    ) -> Result<u64, LeasedWriterError> {
        if self.poisoned {
            // An earlier append failed (e.g. a full disk): start again from what is durable.
            self.signer = replay(mirror, self.core, self.key.clone()).await?;
            self.poisoned = false;
        }
        let result = self.append_unchecked(mirror, blocks, now).await;
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    async fn append_unchecked<B: AsRef<[u8]>>(
        &mut self,
        mirror: &mut MirrorStore,
        blocks: &[B],
        now: UnixTime,
    ) -> Result<u64, LeasedWriterError> {
        let start = self.signer.len();
        let held = mirror.len(&self.core)?;
        if held != start {
            return Err(LeasedWriterError::OutOfStep {
                core: self.core,
                detail: format!("the mirror holds {held} blocks, the signer {start}"),
            });
        }
        let _ = self.signer.append_batch(blocks).await?;
        let end = self.signer.len();
        let proofs = self.signer.export_range(start, start..end).await?;
        let outcome = mirror.store_blocks(&self.core, &proofs, now).await?;
        if outcome.rejected_blocks > 0 || outcome.local_length != end {
            return Err(LeasedWriterError::OutOfStep {
                core: self.core,
                detail: format!(
                    "the mirror stored {} of {} blocks (now {}): {}",
                    outcome.stored_blocks,
                    end - start,
                    outcome.local_length,
                    outcome.first_rejection.unwrap_or_default()
                ),
            });
        }
        Ok(end)
    }
}

/// An in-memory signer holding `key`, with every block the mirror holds of `core` appended
/// again (the same tree and signatures, which are deterministic).
async fn replay(
    mirror: &mut MirrorStore,
    core: CoreKey,
    key: SigningKey,
) -> Result<HyperLog, LeasedWriterError> {
    let mut signer = HyperLog::create_in_memory(&core.short(), key).await?;
    let held = mirror.len(&core)?;
    let mut index = 0;
    while index < held {
        let end = held.min(index + 256);
        let mut blocks = Vec::with_capacity(usize::try_from(end - index).unwrap_or(0));
        for at in index..end {
            match mirror.read_block(&core, at).await? {
                Some(block) => blocks.push(block),
                None => {
                    return Err(LeasedWriterError::OutOfStep {
                        core,
                        detail: format!("block {at} of {held} is missing from the mirror"),
                    });
                }
            }
        }
        let _ = signer.append_batch(&blocks).await?;
        index = end;
    }
    Ok(signer)
}
