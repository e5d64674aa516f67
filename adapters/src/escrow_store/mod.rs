//! The escrow service's durable state: deposits, lease history and the audit
//! index, behind one [`EscrowStore`] trait with an embedded default
//! ([`EmbeddedEscrowStore`], one redb file, no server) and a PostgreSQL
//! implementation ([`PostgresEscrowStore`]) for production and
//! multi-gateway deployments.
//!
//! Contract:
//! - **Blocking.** Every method blocks the calling thread until the change is
//!   durable (or the query answered). The escrow service calls the store from
//!   a blocking thread pool (`spawn_blocking`), never from an async task: the
//!   `postgres` client runs its own runtime internally and must not be driven
//!   from inside another one.
//! - **One change, one transaction, one audit-index row.** Every write takes
//!   the [`AuditIndexEntry`] of the audit-log record the escrow core emitted
//!   for it (the record is appended to the audit log first: audit before
//!   answer) and commits the rows it changes together with that entry, or
//!   nothing. A crash in the middle leaves the state before or after, never a
//!   mix.
//! - **The audit entry is the idempotency key.** Repeating a write with an
//!   entry that is already indexed, identical, changes nothing and answers
//!   [`WriteOutcome::AlreadyApplied`]; that is what makes a retry after an
//!   unknown commit outcome safe. A different entry under a used sequence
//!   number is [`EscrowStoreError::DuplicateAuditSeq`].
//! - **The store checks the escrow's invariants again** rather than trusting
//!   the caller: a relay has exactly one current deposit (its newest; a
//!   rotation marks the previous unrevoked one `superseded_by` and keeps it in
//!   history), lease epochs only grow, a relay has at most one lease that has
//!   not ended, leases release the relay's current unrevoked deposit, and the
//!   audit entry must describe the change it is committed with. Violations,
//!   unknown ids and malformed input are errors that write nothing.
//! - **Restart.** [`EscrowStore::escrow_snapshot`] returns what
//!   [`hypergate_core::escrow::Escrow::restore`] needs: every deposit, each
//!   relay's current deposit, its highest lease epoch and its lease that has
//!   not ended (a lease that expired while the service was down is ended by
//!   the core on restore, and then recorded with
//!   [`EscrowStore::record_lease_ended`]).
//!
//! How the escrow service maps the core's audit records to writes:
//!
//! | audit kind | write |
//! | --- | --- |
//! | `deposit` | [`EscrowStore::put_deposit`] |
//! | `unlock-issued` | [`EscrowStore::record_lease_issued`] (after recording the end of the previous lease, which the core reports after the issue record) |
//! | `lease-renewed` | [`EscrowStore::record_lease_renewed`] |
//! | `lease-released`, `lease-expired` | [`EscrowStore::record_lease_ended`] |
//! | `deposit-revoked` | [`EscrowStore::revoke_deposit`], or all of a [`RevokeTarget::Owner`](hypergate_core::escrow::RevokeTarget) revoke at once with [`EscrowStore::revoke_owner`] |
//! | `unlock-rejected`, `unlock-refetched` | [`EscrowStore::append_audit_index`] |

use std::ops::Range;

use hypergate_core::escrow::EscrowSnapshot;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;

mod embedded;
mod postgres;
mod rows;
mod rules;

pub use embedded::{EMBEDDED_FILE_NAME, EMBEDDED_FORMAT_VERSION, EmbeddedEscrowStore};
pub use postgres::{
    MIGRATIONS, MigrationReport, PostgresEscrowStore, PostgresSettings, RetryPolicy,
};
pub use rows::{
    AuditIndexEntry, LeaseRecord, MAX_JSON_BYTES, MAX_STORED_TIME, MAX_TEXT_BYTES, Revocation,
    StoredDeposit, lease_id_text, parse_lease_id,
};

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum WriteOutcome {
    /// The change was committed now.
    Applied,
    /// The audit entry was already indexed with the same content: the change
    /// was committed before (a retry), and nothing was written now.
    AlreadyApplied,
}

/// The escrow service's durable state. See the [module docs](self) for the
/// contract; every method **blocks** the calling thread.
pub trait EscrowStore: Send + Sync {
    // ---- writes: one transaction each, with their audit-index row ----

    /// Stores a new deposit (fresh: not revoked, superseded or unlocked) and
    /// makes it the relay's current one; the previous current deposit, if
    /// unrevoked, gets `superseded_by` and stays in the history. `audit` is
    /// the `deposit` record of the same escrow id and relay.
    fn put_deposit(
        &self,
        deposit: &StoredDeposit,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Revokes one deposit (recording when, by whom and why) and ends its
    /// lease that has not ended, if any, with reason `revoked:<reason>`.
    /// Unknown or already revoked deposits are errors. `audit` is the
    /// `deposit-revoked` record of that escrow id.
    fn revoke_deposit(
        &self,
        escrow_id: &str,
        revocation: &Revocation,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Revokes every unrevoked deposit of `owner` (its current ones and any
    /// superseded ones, as the core's owner revoke does), ending their leases
    /// as [`EscrowStore::revoke_deposit`] does. `audit` must hold exactly one
    /// `deposit-revoked` entry per deposit revoked, else nothing is written.
    fn revoke_owner(
        &self,
        owner: &PeerId,
        revocation: &Revocation,
        audit: &[AuditIndexEntry],
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Records a lease just issued (not ended) and counts one unlock of its
    /// deposit. The deposit must be the relay's current, unrevoked one, the
    /// epoch above every earlier epoch of the relay, and no other lease of the
    /// relay may still be open. `audit` is the `unlock-issued` record naming
    /// the lease.
    fn record_lease_issued(
        &self,
        lease: &LeaseRecord,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Moves an open lease's expiry to `expires_at` (not earlier than its
    /// current one). `audit` is the `lease-renewed` record naming the lease.
    fn record_lease_renewed(
        &self,
        lease: LeaseId,
        expires_at: UnixTime,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Ends an open lease at `at` with `reason` (the core's end reason text:
    /// `expired`, `peer-healthy`, `manual:<why>`, …). `audit` is the
    /// `lease-released` or `lease-expired` record naming the lease.
    fn record_lease_ended(
        &self,
        lease: LeaseId,
        at: UnixTime,
        reason: &str,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError>;

    /// Indexes an audit record that changes no other row (`unlock-rejected`,
    /// `unlock-refetched`); records of the kinds above must go through their
    /// write.
    fn append_audit_index(&self, entry: &AuditIndexEntry)
    -> Result<WriteOutcome, EscrowStoreError>;

    // ---- queries ----

    /// The relay's current (newest) deposit, revoked or not.
    fn current_deposit(&self, relay: &RelayKey) -> Result<Option<StoredDeposit>, EscrowStoreError>;

    /// A deposit by escrow id.
    fn deposit(&self, escrow_id: &str) -> Result<Option<StoredDeposit>, EscrowStoreError>;

    /// Every deposit of the relay, oldest first.
    fn deposit_history(&self, relay: &RelayKey) -> Result<Vec<StoredDeposit>, EscrowStoreError>;

    /// Every relay's current deposit, in relay order.
    fn current_deposits(&self) -> Result<Vec<StoredDeposit>, EscrowStoreError>;

    /// The leases that have not ended and expire after `now`, in relay order.
    fn active_leases(&self, now: UnixTime) -> Result<Vec<LeaseRecord>, EscrowStoreError>;

    /// Every lease of the relay, in epoch order.
    fn lease_history(&self, relay: &RelayKey) -> Result<Vec<LeaseRecord>, EscrowStoreError>;

    /// The relay's highest lease epoch (0: never leased).
    fn max_lease_epoch(&self, relay: &RelayKey) -> Result<u64, EscrowStoreError>;

    /// The audit-index entries whose sequence numbers fall in `seqs`, in
    /// sequence order.
    fn audit_index(&self, seqs: Range<u64>) -> Result<Vec<AuditIndexEntry>, EscrowStoreError>;

    /// The highest indexed audit sequence number (to reconcile the index with
    /// the audit log after a crash between the append and the write).
    fn last_audit_seq(&self) -> Result<Option<u64>, EscrowStoreError>;

    /// The state [`hypergate_core::escrow::Escrow::restore`] rebuilds the
    /// escrow machine from, read in one consistent transaction.
    fn escrow_snapshot(&self) -> Result<EscrowSnapshot, EscrowStoreError>;
}

/// Why a store operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EscrowStoreError {
    // The caller's: malformed input, or a change the stored state forbids.
    /// A field is malformed, too long, or out of the storable range.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No deposit has this escrow id.
    #[error("unknown escrow id {0:?}")]
    UnknownDeposit(String),
    /// No lease has this id.
    #[error("unknown lease {0}")]
    UnknownLease(LeaseId),
    /// A deposit with this escrow id exists already.
    #[error("escrow id {0:?} exists already")]
    DuplicateEscrowId(String),
    /// The audit sequence number is indexed already, with different content.
    #[error("audit seq {0} is indexed already with different content")]
    DuplicateAuditSeq(u64),
    /// The audit entry does not describe the change it came with.
    #[error("audit entry does not match the change: {0}")]
    AuditMismatch(String),
    /// The deposit was revoked before.
    #[error("deposit {0:?} is revoked already")]
    AlreadyRevoked(String),
    /// A lease may only release the relay's current, unrevoked deposit of the same relay.
    #[error("deposit {escrow_id:?} cannot back lease {lease}: {why}")]
    NotUnlockable {
        /// The deposit.
        escrow_id: String,
        /// The lease.
        lease: LeaseId,
        /// What is wrong.
        why: &'static str,
    },
    /// Lease epochs of a relay only grow.
    #[error("lease {lease} is not above the relay's highest epoch {highest}")]
    StaleEpoch {
        /// The lease.
        lease: LeaseId,
        /// The relay's highest epoch so far.
        highest: u64,
    },
    /// The relay still has a lease that has not ended.
    #[error("lease {0} has not ended")]
    LeaseStillOpen(LeaseId),
    /// The lease has ended already.
    #[error("lease {0} has ended already")]
    LeaseEnded(LeaseId),
    // The stored data's.
    /// The embedded file was written by another format version.
    #[error("escrow store format version {found} is not supported (this build reads {expected})")]
    FormatVersion {
        /// The file's version.
        found: u64,
        /// The version this build reads.
        expected: u64,
    },
    /// The database was migrated by a newer build.
    #[error("the database has migrations this build does not know: {0:?}")]
    UnknownMigrations(Vec<String>),
    /// A stored row cannot be read back or contradicts the store's invariants.
    #[error("stored escrow data is corrupt: {0}")]
    Corrupt(String),
    // The backend's.
    /// The embedded database failed.
    #[error("embedded escrow store: {0}")]
    Embedded(#[from] redb::Error),
    /// Creating the embedded store's directory failed.
    #[error("escrow store directory: {0}")]
    Io(#[from] std::io::Error),
    /// PostgreSQL answered with an error (not a lost connection).
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// No pooled PostgreSQL connection could be had within the connect timeout.
    #[error("postgres pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The connection to PostgreSQL broke on every attempt.
    #[error("postgres unreachable after {attempts} attempts: {last}")]
    Unavailable {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: ::postgres::Error,
    },
}

impl EscrowStoreError {
    /// Whether the caller's input or request was at fault (an HTTP 4xx), as
    /// opposed to the stored data or the backend (a 5xx).
    #[must_use]
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            EscrowStoreError::InvalidInput(_)
                | EscrowStoreError::UnknownDeposit(_)
                | EscrowStoreError::UnknownLease(_)
                | EscrowStoreError::DuplicateEscrowId(_)
                | EscrowStoreError::DuplicateAuditSeq(_)
                | EscrowStoreError::AuditMismatch(_)
                | EscrowStoreError::AlreadyRevoked(_)
                | EscrowStoreError::NotUnlockable { .. }
                | EscrowStoreError::StaleEpoch { .. }
                | EscrowStoreError::LeaseStillOpen(_)
                | EscrowStoreError::LeaseEnded(_)
        )
    }
}

/// redb reports through one error type per operation; all of them are the store's backend failing.
macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for EscrowStoreError {
            fn from(error: $error) -> Self {
                EscrowStoreError::Embedded(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
