//! Errors of the mirror store, grouped by who is at fault.
//!
//! A proof that fails verification is *not* an error: it is the expected
//! defence against a misbehaving peer, counted in the
//! [`StoreOutcome`](super::StoreOutcome) and the store's counters.

use std::path::PathBuf;

use hypergate_core::ids::RelayKey;

use super::record::CoreKey;
use crate::log::LogError;

/// Why a mirror store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    // --- the announcing peer sent something impossible ---
    /// The core key is not an ed25519 public key, so no proof can verify against it.
    #[error("core key {0} is not a valid ed25519 public key")]
    InvalidCoreKey(CoreKey),
    /// The core is already mirrored for another relay; a core never switches relay.
    #[error("core {core} belongs to relay {registered}, not {announced}")]
    RelayMismatch {
        /// The core.
        core: CoreKey,
        /// The relay it was registered with.
        registered: RelayKey,
        /// The relay the new announcement names.
        announced: RelayKey,
    },
    // --- API misuse ---
    /// The core is not registered.
    #[error("core {0} is not mirrored here")]
    UnknownCore(CoreKey),
    /// A block range outside what the mirror holds was requested.
    #[error("core {core}: {source}")]
    Range {
        /// The core.
        core: CoreKey,
        /// The log's refusal.
        #[source]
        source: LogError,
    },
    /// Another store has the inventory open.
    #[error("mirror inventory {0} is in use by another store")]
    InventoryLocked(PathBuf),
    // --- local storage ---
    /// A core's log storage failed.
    #[error("core {core} storage: {source}")]
    Log {
        /// The core.
        core: CoreKey,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The inventory database failed.
    #[error("mirror inventory: {0}")]
    Inventory(#[source] Box<redb::Error>),
    /// A file system operation on the store's directories failed.
    #[error("mirror store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MirrorError {
    pub(super) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MirrorError::Io {
            path: path.into(),
            source,
        }
    }

    pub(super) fn log(core: CoreKey, source: LogError) -> Self {
        match source {
            LogError::OutOfRange { .. } => MirrorError::Range { core, source },
            source => MirrorError::Log { core, source },
        }
    }
}

/// Maps any of redb's error types to [`MirrorError::Inventory`].
pub(super) fn inventory(error: impl Into<redb::Error>) -> MirrorError {
    MirrorError::Inventory(Box::new(error.into()))
}
