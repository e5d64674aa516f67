//! [`PostgresEscrowStore`]: the escrow store on PostgreSQL, for production
//! and for several escrow instances sharing one database.
//!
//! - **Connections**: a pool (`r2d2`, [`PostgresSettings::pool_size`],
//!   default 5) of `postgres` clients; every new connection gets
//!   `statement_timeout` and `idle_in_transaction_session_timeout`, and the
//!   client's `connect_timeout` bounds connecting. Plain TCP (`NoTls`).
//! - **Writes** run the store's rules in one transaction that first takes a
//!   transaction-scoped advisory lock, so writes from every process are
//!   serialised exactly like the embedded store's single writer (escrow writes
//!   are rare: deposits, unlocks, revokes).
//! - **Retries**: an operation whose connection broke (closed socket, I/O
//!   error, SQLSTATE class 08, or the server shutting the session down with
//!   57P01–57P03) is run again on a fresh connection after an exponential
//!   backoff ([`RetryPolicy`]); any other error is returned at once. A retry
//!   after a commit whose outcome is unknown is safe because every write is
//!   keyed by its audit sequence number: the second run finds its own audit
//!   row and answers [`WriteOutcome::AlreadyApplied`].
//! - **Migrations** are embedded in the binary ([`MIGRATIONS`]) and applied by
//!   [`PostgresEscrowStore::migrate`] in order, each in its own transaction
//!   together with its row in `escrow_migrations(name, applied_at)`, under an
//!   advisory lock (concurrent runs wait for each other; a second run is a
//!   no-op). A database with migrations this build does not know is refused.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::{Client, IsolationLevel, NoTls};
use hypergate_core::escrow::EscrowSnapshot;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::{UnixTime, duration_millis};
use r2d2::{CustomizeConnection, HandleError, Pool};
use r2d2_postgres::PostgresConnectionManager;

use super::rows::{
    AuditIndexEntry, LeaseRecord, Revocation, StoredDeposit, check_escrow_id, check_time, parse_key,
};
use super::rules::{self, WriteTx};
use super::{EscrowStore, EscrowStoreError, WriteOutcome};

mod tx;

use tx::{
    AUDIT_COLUMNS, DEPOSIT_COLUMNS, DEPOSIT_RECORD_COLUMNS, LEASE_COLUMNS, PgTx, audit_entry,
    deposit_record, from_bigint, get, lease_record, stored_deposit, to_sql_time,
};

/// The schema migrations, in the order they are applied: `(name, SQL)`.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_hypergate_escrow.sql",
    include_str!("../migrations/0001_hypergate_escrow.sql"),
)];

/// Advisory lock held by every write transaction ("hgescw01").
const WRITE_LOCK_KEY: i64 = 0x6867_6573_6377_3031;
/// Advisory lock held while migrating ("hgescm01").
const MIGRATION_LOCK_KEY: i64 = 0x6867_6573_636d_3031;

/// How operations whose connection broke are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    #[must_use]
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// How to reach PostgreSQL and how to treat the connections.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Where and as whom to connect (its `Debug` hides the password).
    pub config: ::postgres::Config,
    /// Connections in the pool (the original's `ESCROW_DB_POOL_SIZE`, default 5).
    pub pool_size: u32,
    /// Bound on establishing a connection, and on waiting for a pooled one.
    pub connect_timeout: Duration,
    /// Bound on every statement (and on a transaction left idle), server-side.
    pub statement_timeout: Duration,
    /// Idle connections above one are closed after this long (the original's
    /// `ESCROW_DB_IDLE_TIMEOUT_MS`, default 10 s).
    pub idle_timeout: Duration,
    /// Retries of operations whose connection broke.
    pub retry: RetryPolicy,
}

impl PostgresSettings {
    /// Settings for a `postgres://` URL (or `key=value` string) with the defaults.
    pub fn from_url(url: &str) -> Result<Self, EscrowStoreError> {
        let config: ::postgres::Config = url.parse().map_err(|error| {
            EscrowStoreError::InvalidInput(format!("invalid database URL: {error}"))
        })?;
        Ok(Self {
            config,
            pool_size: 5,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        })
    }

    fn check(&self) -> Result<(), EscrowStoreError> {
        let invalid = |what: &str| Err(EscrowStoreError::InvalidInput(what.to_owned()));
        if self.pool_size == 0 {
            return invalid("the pool needs at least one connection");
        }
        if self.connect_timeout.is_zero()
            || self.statement_timeout.is_zero()
            || self.idle_timeout.is_zero()
        {
            return invalid("database timeouts must be positive");
        }
        if self.retry.max_attempts == 0 {
            return invalid("at least one attempt is needed");
        }
        Ok(())
    }
}

/// What [`PostgresEscrowStore::migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this run, in order.
    pub applied: Vec<String>,
    /// Migrations found applied already.
    pub already_applied: Vec<String>,
}

/// Sets the session's timeouts on every new connection.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout_ms: u64,
}

impl CustomizeConnection<Client, ::postgres::Error> for SessionSettings {
    fn on_acquire(&self, client: &mut Client) -> Result<(), ::postgres::Error> {
        let ms = self.statement_timeout_ms;
        client.batch_execute(&format!(
            "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"
        ))
    }
}

/// Reports the pool's background connection failures through `tracing`.
#[derive(Debug)]
struct TracingErrors;

impl HandleError<::postgres::Error> for TracingErrors {
    fn handle_error(&self, error: ::postgres::Error) {
        tracing::warn!(%error, "escrow store: postgres connection failed");
    }
}

/// Whether the error means the connection broke (so the operation may be
/// retried on a new one), as opposed to the server refusing the statement.
fn connection_lost(error: &::postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

/// The escrow store on PostgreSQL (tables `escrow_deposits`,
/// `escrow_lease_history`, `escrow_audit_log`, `escrow_migrations`).
///
/// A pool of [`PostgresSettings::pool_size`] connections, each with the
/// settings' statement timeout; writes are serialised across processes by a
/// transaction-scoped advisory lock; an operation whose connection broke is
/// retried on a new one per [`RetryPolicy`] (safe: every write is keyed by its
/// audit sequence number). Run [`PostgresEscrowStore::migrate`] before use.
/// Connections are plain TCP (no TLS).
pub struct PostgresEscrowStore {
    pool: Pool<PostgresConnectionManager<NoTls>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for PostgresEscrowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEscrowStore")
            .field("pool", &self.pool.state())
            .field("retry", &self.retry)
            .finish()
    }
}

impl PostgresEscrowStore {
    /// Opens the pool; fails if no connection can be made within the
    /// connect timeout. Does not migrate: call [`Self::migrate`].
    pub fn connect(settings: &PostgresSettings) -> Result<Self, EscrowStoreError> {
        settings.check()?;
        let mut config = settings.config.clone();
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("hypergate-escrow");
        }
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(1))
            .connection_timeout(settings.connect_timeout)
            .idle_timeout(Some(settings.idle_timeout))
            .error_handler(Box::new(TracingErrors))
            .connection_customizer(Box::new(SessionSettings {
                statement_timeout_ms: duration_millis(settings.statement_timeout),
            }))
            .build(PostgresConnectionManager::new(config, NoTls))?;
        Ok(Self {
            pool,
            retry: settings.retry,
        })
    }

    /// Applies the embedded migrations not yet applied, in order; a no-op
    /// when all are. Safe to run from several processes at once.
    pub fn migrate(&self) -> Result<MigrationReport, EscrowStoreError> {
        self.run(|client| {
            let mut report = MigrationReport::default();
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS escrow_migrations (\
                   name TEXT PRIMARY KEY, \
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())",
            )?;
            let mut unknown = Vec::new();
            for row in tx.query("SELECT name FROM escrow_migrations ORDER BY name", &[])? {
                let name: String = get(&row, "name")?;
                if !MIGRATIONS.iter().any(|(known, _)| *known == name) {
                    unknown.push(name);
                }
            }
            if !unknown.is_empty() {
                return Err(EscrowStoreError::UnknownMigrations(unknown));
            }
            tx.commit()?;
            for (name, sql) in MIGRATIONS {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
                let done = tx
                    .query_opt("SELECT 1 FROM escrow_migrations WHERE name = $1", &[name])?
                    .is_some();
                if done {
                    report.already_applied.push((*name).to_owned());
                    continue;
                }
                tx.batch_execute(sql)?;
                tx.execute("INSERT INTO escrow_migrations (name) VALUES ($1)", &[name])?;
                tx.commit()?;
                tracing::info!(migration = name, "escrow store: migration applied");
                report.applied.push((*name).to_owned());
            }
            Ok(report)
        })
    }

    /// Runs `operation` on a pooled connection, again on a new one (after a
    /// backoff) while the connection breaks, up to the retry policy's attempts.
    fn run<T>(
        &self,
        mut operation: impl FnMut(&mut Client) -> Result<T, EscrowStoreError>,
    ) -> Result<T, EscrowStoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.pool.get()?;
            match operation(&mut client) {
                Err(EscrowStoreError::Postgres(error)) if connection_lost(&error) => {
                    // The pool drops the broken client when it comes back.
                    drop(client);
                    if attempt >= self.retry.max_attempts {
                        return Err(EscrowStoreError::Unavailable {
                            attempts: attempt,
                            last: error,
                        });
                    }
                    let delay = self.retry.delay_after(attempt);
                    tracing::warn!(%error, attempt, ?delay, "escrow store: connection lost, retrying");
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    /// Runs one rule in a write transaction under the write lock; commits
    /// only what it applied.
    fn write(
        &self,
        apply: impl Fn(&mut dyn WriteTx) -> Result<WriteOutcome, EscrowStoreError>,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK_KEY])?;
            let outcome = apply(&mut PgTx { tx: &mut tx })?;
            match outcome {
                WriteOutcome::Applied => tx.commit()?,
                WriteOutcome::AlreadyApplied => tx.rollback()?,
            }
            Ok(outcome)
        })
    }

    fn query_deposits(
        &self,
        filter: &str,
        relay: Option<&RelayKey>,
    ) -> Result<Vec<StoredDeposit>, EscrowStoreError> {
        let query = format!("SELECT {DEPOSIT_COLUMNS} FROM escrow_deposits WHERE {filter}");
        let relay = relay.map(RelayKey::to_hex);
        self.run(|client| {
            let rows = match &relay {
                Some(relay) => client.query(query.as_str(), &[relay])?,
                None => client.query(query.as_str(), &[])?,
            };
            rows.iter().map(stored_deposit).collect()
        })
    }
}

impl EscrowStore for PostgresEscrowStore {
    fn put_deposit(
        &self,
        deposit: &StoredDeposit,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::put_deposit(tx, deposit, audit))
    }

    fn revoke_deposit(
        &self,
        escrow_id: &str,
        revocation: &Revocation,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::revoke_deposit(tx, escrow_id, revocation, audit))
    }

    fn revoke_owner(
        &self,
        owner: &PeerId,
        revocation: &Revocation,
        audit: &[AuditIndexEntry],
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::revoke_owner(tx, owner, revocation, audit))
    }

    fn record_lease_issued(
        &self,
        lease: &LeaseRecord,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::record_lease_issued(tx, lease, audit))
    }

    fn record_lease_renewed(
        &self,
        lease: LeaseId,
        expires_at: UnixTime,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::record_lease_renewed(tx, lease, expires_at, audit))
    }

    fn record_lease_ended(
        &self,
        lease: LeaseId,
        at: UnixTime,
        reason: &str,
        audit: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::record_lease_ended(tx, lease, at, reason, audit))
    }

    fn append_audit_index(
        &self,
        entry: &AuditIndexEntry,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        self.write(|tx| rules::append_audit_index(tx, entry))
    }

    fn current_deposit(&self, relay: &RelayKey) -> Result<Option<StoredDeposit>, EscrowStoreError> {
        Ok(self
            .query_deposits("relay_key = $1 AND is_current", Some(relay))?
            .pop())
    }

    fn deposit(&self, escrow_id: &str) -> Result<Option<StoredDeposit>, EscrowStoreError> {
        check_escrow_id(escrow_id)?;
        let query = format!("SELECT {DEPOSIT_COLUMNS} FROM escrow_deposits WHERE id = $1");
        self.run(|client| {
            client
                .query_opt(query.as_str(), &[&escrow_id])?
                .as_ref()
                .map(stored_deposit)
                .transpose()
        })
    }

    fn deposit_history(&self, relay: &RelayKey) -> Result<Vec<StoredDeposit>, EscrowStoreError> {
        self.query_deposits("relay_key = $1 ORDER BY deposit_seq", Some(relay))
    }

    fn current_deposits(&self) -> Result<Vec<StoredDeposit>, EscrowStoreError> {
        // Sorted here, not by the database's collation.
        let mut current = self.query_deposits("is_current", None)?;
        current.sort_by_key(|deposit| deposit.record.relay_key);
        Ok(current)
    }

    fn active_leases(&self, now: UnixTime) -> Result<Vec<LeaseRecord>, EscrowStoreError> {
        check_time("now", now)?;
        let now = to_sql_time(now)?;
        let query = format!(
            "SELECT {LEASE_COLUMNS} FROM escrow_lease_history \
             WHERE released_at IS NULL AND expires_at > $1"
        );
        let mut active = self.run(|client| {
            client
                .query(query.as_str(), &[&now])?
                .iter()
                .map(lease_record)
                .collect::<Result<Vec<_>, _>>()
        })?;
        active.sort_by_key(LeaseRecord::relay);
        Ok(active)
    }

    fn lease_history(&self, relay: &RelayKey) -> Result<Vec<LeaseRecord>, EscrowStoreError> {
        let query = format!(
            "SELECT {LEASE_COLUMNS} FROM escrow_lease_history WHERE relay_key = $1 ORDER BY epoch"
        );
        let relay = relay.to_hex();
        self.run(|client| {
            client
                .query(query.as_str(), &[&relay])?
                .iter()
                .map(lease_record)
                .collect()
        })
    }

    fn max_lease_epoch(&self, relay: &RelayKey) -> Result<u64, EscrowStoreError> {
        let relay = relay.to_hex();
        self.run(|client| {
            let row = client.query_one(
                "SELECT COALESCE(MAX(epoch), 0) AS epoch FROM escrow_lease_history \
                 WHERE relay_key = $1",
                &[&relay],
            )?;
            from_bigint("lease epoch", get(&row, "epoch")?)
        })
    }

    fn audit_index(&self, seqs: Range<u64>) -> Result<Vec<AuditIndexEntry>, EscrowStoreError> {
        // Stored sequence numbers fit BIGINT; clamp the bounds to it.
        let clamp = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
        let (start, end) = (clamp(seqs.start), clamp(seqs.end));
        let query = format!(
            "SELECT {AUDIT_COLUMNS} FROM escrow_audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq"
        );
        self.run(|client| {
            client
                .query(query.as_str(), &[&start, &end])?
                .iter()
                .map(audit_entry)
                .collect()
        })
    }

    fn last_audit_seq(&self) -> Result<Option<u64>, EscrowStoreError> {
        self.run(|client| {
            let row = client.query_one("SELECT MAX(seq) AS seq FROM escrow_audit_log", &[])?;
            get::<Option<i64>>(&row, "seq")?
                .map(|seq| from_bigint("audit seq", seq))
                .transpose()
        })
    }

    fn escrow_snapshot(&self) -> Result<EscrowSnapshot, EscrowStoreError> {
        let deposits_query = format!("SELECT {DEPOSIT_RECORD_COLUMNS} FROM escrow_deposits");
        let leases_query =
            format!("SELECT {LEASE_COLUMNS} FROM escrow_lease_history WHERE released_at IS NULL");
        self.run(|client| {
            // One consistent view of all four reads.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let deposits = tx
                .query(deposits_query.as_str(), &[])?
                .iter()
                .map(deposit_record)
                .collect::<Result<Vec<_>, _>>()?;
            let mut current = BTreeMap::new();
            for row in tx.query(
                "SELECT relay_key, id FROM escrow_deposits WHERE is_current",
                &[],
            )? {
                current.insert(
                    parse_key::<RelayKey>("relay key", get(&row, "relay_key")?)?,
                    get::<String>(&row, "id")?,
                );
            }
            let mut epochs = BTreeMap::new();
            for row in tx.query(
                "SELECT relay_key, MAX(epoch) AS epoch FROM escrow_lease_history \
                 GROUP BY relay_key",
                &[],
            )? {
                epochs.insert(
                    parse_key::<RelayKey>("relay key", get(&row, "relay_key")?)?,
                    from_bigint("lease epoch", get(&row, "epoch")?)?,
                );
            }
            let open_leases = tx
                .query(leases_query.as_str(), &[])?
                .iter()
                .map(lease_record)
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            rules::snapshot(deposits, current, epochs, open_leases)
        })
    }
}

// Compile-time check: the service shares one store across its blocking pool.
const _: fn() = || {
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<PostgresEscrowStore>();
};
