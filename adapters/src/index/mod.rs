//! The relay index: one relay's view on disk, answering NIP-01 filters, and the live feed that
//! hands newly added events to subscriptions.
//!
//! ## Contract
//! - **The index mirrors the view, change for change.** [`RelayIndex::apply`] takes the view's
//!   changes ([`IndexChange::Insert`] / [`IndexChange::Remove`]) in order and applies them in
//!   *one* durable write transaction: after a crash the index holds all of a batch or none of
//!   it. Inserting an event that is present and removing one that is absent change nothing, so
//!   a batch may be re-applied after a crash. A removed event leaves no key behind and never
//!   comes back unless inserted again.
//! - **Queries answer exactly what [`Filter::matches`] says, in NIP-01 order.** Results are the
//!   matching events, `created_at` descending and then id ascending, at most
//!   `min(filter.limit, max_limit)` of them (no limit: `default_limit`). Indexes only choose
//!   what to look at; every candidate is checked with `Filter::matches` before it is returned.
//! - **Work is bounded.** A query examines at most [`QueryLimits::scan_cap`] index entries
//!   (shared by all filters of a [`RelayIndex::query_many`]); when it stops early it says so
//!   with [`QueryResult::truncated_by_scan_cap`], and what it returns is still correct and
//!   ordered, just possibly short. Untruncated results equal the naive model exactly
//!   (`adapters/tests/index_differential.rs`).
//! - **Bad bytes are errors.** A file that is not an index, an index of another format version
//!   or a record that does not decode gives an [`IndexError`], never a panic.
//! - **Live delivery never waits for a slow subscriber.** [`LiveFeed::publish`] hands each
//!   matching event to each subscriber once, into a bounded queue; a subscriber whose queue is
//!   full is dropped and told why ([`LiveMessage::Dropped`]).
//!
//! ## On-disk layout (format version [`FORMAT_VERSION`])
//! One redb file per relay (e.g. `<relay dir>/index.redb`), tables:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `"format_version"` | `u32` |
//! | `events` | event id (32 bytes) | the event, postcard ([`codec`]) |
//! | `by_time` | `rev(created_at) ‖ id` | `()` |
//! | `by_author` | `pubkey ‖ rev(created_at) ‖ id` | `()` |
//! | `by_kind` | `kind (u16 BE) ‖ rev(created_at) ‖ id` | `()` |
//! | `by_tag` | `letter ‖ len ‖ value ‖ rev(created_at) ‖ id` (values over 64 bytes: `letter ‖ 0xff ‖ sha256(value)`) | `()` |
//!
//! `rev(t) = u64::MAX - t` big-endian, so a forward scan of any prefix yields newest first with
//! the lowest id first among equals. Only tags whose name is one ASCII letter and that have a
//! value are in `by_tag`: those are the only ones a `#x` filter can select. [`RelayIndex::open`]
//! writes the version into a new file and refuses a file with another one.
//!
//! ## Map
//! - [`RelayIndex`], [`IndexChange`]: the store and its input (`store.rs`).
//! - [`codec`]: the stored form of an event.
//! - [`QueryLimits`], [`QueryResult`]: query bounds and answers; the planner (`query.rs`); the
//!   key-only k-way merge and leapfrog intersection of index ranges (`scan.rs`).
//! - [`LiveFeed`], [`SubscriberId`], [`LiveReceiver`], [`LiveMessage`], [`DropReason`],
//!   [`Published`]: live subscriptions (`live.rs`).
//!
//! [`Filter::matches`]: hypergate_core::nostr::Filter::matches

pub mod codec;
mod keys;
mod live;
mod query;
mod scan;
mod store;

pub use live::{DropReason, LiveFeed, LiveMessage, LiveReceiver, Published, SubscriberId};
pub use query::{QueryLimits, QueryResult};
pub use store::{FORMAT_VERSION, IndexChange, RelayIndex, SCRATCH_SYNC_EVERY};

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    // The file is at fault: it is not an index this code can read.
    /// The file holds an index of another format version.
    #[error("index format version {found} is not supported (expected {expected})")]
    UnsupportedFormat {
        /// The version in the file.
        found: u32,
        /// The version this code reads and writes.
        expected: u32,
    },
    /// The file's contents contradict the layout: a record that does not decode, an index key
    /// without its event, a missing or malformed version.
    #[error("index is corrupt: {0}")]
    Corrupt(String),

    // The local environment failed: the storage engine or the file system.
    /// The storage engine reported an error (I/O, a file that is not a redb database, a
    /// database already open in this process).
    #[error("index storage failed while {context}: {source}")]
    Storage {
        /// What the index was doing.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: redb::Error,
    },
    /// An event could not be encoded for storage.
    #[error("event could not be encoded: {0}")]
    Encode(#[from] postcard::Error),
}

/// Wraps a storage-engine error with what the index was doing.
fn storage<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> IndexError {
    move |error| IndexError::Storage {
        context,
        source: error.into(),
    }
}
