//! Relays on disk: the logs a relay is made of, and the reader that turns them
//! into the relay's view.
//!
//! Contract:
//! - [`RelayLogs`] is the worker's copy of a relay: the owner log (its key is the
//!   relay key; it carries `AddWriter` / `RemoveWriter`) and one log per writer
//!   under `<dir>/writers/<hex key>/`. Logs the worker can sign (its own writer,
//!   the owner log) are writable; the gateway writer log arrives as a replica
//!   filled with verified proofs ([`RelayLogs::import_writer_proofs`]).
//! - [`RelayReader`] reads any [`BlockSource`] — the worker's [`RelayLogs`] or the
//!   gateway's mirror store — and keeps the core's [`Membership`](hypergate_core::relay::Membership) and
//!   [`RelayView`](hypergate_core::relay::RelayView) up to date. [`RelayReader::catch_up`] returns exactly the
//!   [`ViewChange`](hypergate_core::relay::ViewChange)s an index must apply. Every event is checked (id and BIP-340
//!   signature) before it reaches the view; an entry that is not a valid event is
//!   skipped and counted, never fatal: one bad writer cannot stop a relay.
//! - Only counted entries are read: a writer's entries while it is a member, and
//!   up to `final_length` after its removal. A removal that cuts below what was
//!   already read rebuilds the view from the logs and reports the difference, so
//!   the changes stay exact.
//! - [`IndexedRelay`] keeps a reader's view in an on-disk [`crate::index::RelayIndex`]
//!   and offers newly visible events to live subscribers.
//! - [`RelayHost`] serves one relay to NIP-01 clients: it executes the core
//!   session's effects (queries against the index, publishes appended to a
//!   writer log before `OK true`, live subscriptions on the index's feed).
//! - [`ReplicaViews`] keeps the gateway's views over mirrored cores open in a
//!   bounded least-recently-used set (default 32).
//! - A block a source does not hold yet (a mirror still catching up) stops that
//!   log's reading at the gap; the next catch-up resumes there.

mod host;
mod indexed;
mod local;
mod reader;
mod replicas;

pub use host::{
    BatchPlan, Driven, HostConfig, HostError, HostedSession, LiveStarted, ReadOnlySource,
    ReadOnlyStore, RelayHost, RelayStore, StoreError,
};
pub use indexed::{IndexedRelay, IndexedRelayError, Refreshed};
pub use local::{RelayLogs, RelayLogsError};
pub use reader::{BlockSource, CatchUp, ReaderStats, RelayReader};
pub use replicas::{DEFAULT_OPEN_VIEWS, ReplicaViews};

use hypergate_core::ids::RelayKey;
use hypergate_core::relay::WriterKey;

/// The owner log's key as a writer key: the relay key is the owner log's public key.
pub fn owner_log_key(relay: &RelayKey) -> WriterKey {
    WriterKey(*relay.as_bytes())
}

#[cfg(test)]
mod tests;
