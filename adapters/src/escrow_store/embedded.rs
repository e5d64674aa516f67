//! [`EmbeddedEscrowStore`]: the default escrow store, one redb file
//! (`<dir>/escrow.redb`), no server.
//!
//! redb commits are atomic and durable when `commit` returns (copy-on-write
//! B-trees with a checksummed root switch), and it allows one write
//! transaction at a time, so the store's rules run serialised without locks
//! of their own. The file carries a format version, checked at open: a file
//! of another version is refused rather than misread. Rows are JSON (the
//! core's serde forms), so a file can be inspected and the format stays
//! readable across field additions.
//!
//! Tables (keys of 32-byte relay keys sort like [`RelayKey`]):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `format_version`, `next_deposit_seq` | u64 |
//! | `deposits` | escrow id | deposit row |
//! | `relay_deposits` | (relay, deposit seq) | escrow id: the history, oldest first |
//! | `current_deposits` | relay | escrow id |
//! | `leases` | (relay, epoch) | lease row |
//! | `open_leases` | relay | epoch of the lease that has not ended |
//! | `audit_index` | audit seq | audit row |

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hypergate_core::escrow::{AuditKind, DepositRecord, EscrowSnapshot, RejectReason};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rows::{
    AuditIndexEntry, LeaseRecord, Revocation, StoredDeposit, check_escrow_id, check_time, corrupt,
    lease_id_text, parse_digest, parse_key, parse_stored_lease_id,
};
use super::rules::{self, WriteTx};
use super::{EscrowStore, EscrowStoreError, WriteOutcome};

/// The file the store keeps in its directory.
pub const EMBEDDED_FILE_NAME: &str = "escrow.redb";

/// The file format this build reads and writes.
pub const EMBEDDED_FORMAT_VERSION: u64 = 1;

const FORMAT_KEY: &str = "format_version";
const NEXT_DEPOSIT_SEQ_KEY: &str = "next_deposit_seq";

type RelayBytes = [u8; 32];

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const DEPOSITS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("deposits");
const RELAY_DEPOSITS: TableDefinition<'_, (RelayBytes, u64), &str> =
    TableDefinition::new("relay_deposits");
const CURRENT: TableDefinition<'_, RelayBytes, &str> = TableDefinition::new("current_deposits");
const LEASES: TableDefinition<'_, (RelayBytes, u64), &[u8]> = TableDefinition::new("leases");
const OPEN_LEASES: TableDefinition<'_, RelayBytes, u64> = TableDefinition::new("open_leases");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit_index");

/// The escrow store in one local redb file, `<dir>/escrow.redb`: no server.
///
/// Each write is one redb transaction, atomic and durable when it returns;
/// redb runs one write transaction at a time, so writes are serialised. The
/// file's format version is checked at open, and one process at a time may
/// hold the file open.
pub struct EmbeddedEscrowStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedEscrowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedEscrowStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedEscrowStore {
    /// Opens (creating if needed) `<dir>/escrow.redb`, checking its integrity
    /// and format version. One process at a time may hold it open.
    pub fn open(dir: &Path) -> Result<Self, EscrowStoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(EMBEDDED_FILE_NAME);
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)?;
        let txn = db.begin_write()?;
        let existing = txn.list_tables()?.count();
        {
            let mut meta = txn.open_table(META)?;
            let version = meta.get(FORMAT_KEY)?.map(|guard| guard.value());
            match version {
                Some(EMBEDDED_FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(EscrowStoreError::FormatVersion {
                        found,
                        expected: EMBEDDED_FORMAT_VERSION,
                    });
                }
                None if existing == 0 => {
                    meta.insert(FORMAT_KEY, EMBEDDED_FORMAT_VERSION)?;
                    meta.insert(NEXT_DEPOSIT_SEQ_KEY, 0)?;
                }
                None => return Err(corrupt("the file has tables but no format version")),
            }
        }
        // Creates the tables of a new file, so readers always find them.
        drop(RedbTx::open(&txn)?);
        txn.commit()?;
        Ok(Self { db, path })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one rule in a write transaction; commits only what it applied.
    fn write(
        &self,
        apply: impl FnOnce(&mut dyn WriteTx) -> Result<WriteOutcome, EscrowStoreError>,
    ) -> Result<WriteOutcome, EscrowStoreError> {
        let txn = self.db.begin_write()?;
        let outcome = match RedbTx::open(&txn) {
            Ok(mut tx) => apply(&mut tx),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(WriteOutcome::Applied) => {
                txn.commit()?;
                Ok(WriteOutcome::Applied)
            }
            other => {
                // Nothing to keep. A failed abort is logged, not reported: the
                // write's own answer is what the caller needs, and redb rolls
                // back an unfinished transaction on the next open anyway.
                if let Err(error) = txn.abort() {
                    tracing::warn!(%error, "escrow store: aborting a write transaction failed");
                }
                other
            }
        }
    }
}

// ---- rows ----

#[derive(Serialize, Deserialize)]
struct DepositRow {
    seq: u64,
    record: DepositRecord,
    sealed_package: Value,
    metadata: Value,
    writer_hash: String,
}

impl DepositRow {
    fn into_stored(self) -> Result<StoredDeposit, EscrowStoreError> {
        Ok(StoredDeposit {
            writer_hash: parse_digest("writer hash", &self.writer_hash)?,
            record: self.record,
            sealed_package: self.sealed_package,
            metadata: self.metadata,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct LeaseRow {
    lease_id: String,
    escrow_id: String,
    requester: String,
    issued_at: UnixTime,
    expires_at: UnixTime,
    evidence: Value,
    reasons: Vec<RejectReason>,
    payload_digest: String,
    released_at: Option<UnixTime>,
    release_reason: Option<String>,
}

impl LeaseRow {
    fn from_record(lease: &LeaseRecord) -> Self {
        Self {
            lease_id: lease_id_text(lease.id),
            escrow_id: lease.escrow_id.clone(),
            requester: lease.requester.to_hex(),
            issued_at: lease.issued_at,
            expires_at: lease.expires_at,
            evidence: lease.evidence.clone(),
            reasons: lease.reasons.clone(),
            payload_digest: hex::encode(lease.payload_digest),
            released_at: lease.released_at,
            release_reason: lease.release_reason.clone(),
        }
    }

    fn into_record(self) -> Result<LeaseRecord, EscrowStoreError> {
        Ok(LeaseRecord {
            id: parse_stored_lease_id(&self.lease_id)?,
            escrow_id: self.escrow_id,
            requester: parse_key("lease requester", &self.requester)?,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            evidence: self.evidence,
            reasons: self.reasons,
            payload_digest: parse_digest("payload digest", &self.payload_digest)?,
            released_at: self.released_at,
            release_reason: self.release_reason,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct AuditRow {
    kind: AuditKind,
    escrow_id: String,
    lease_id: Option<String>,
    relay_key: String,
    actor: String,
    at: UnixTime,
    block_digest: String,
}

impl AuditRow {
    fn from_entry(entry: &AuditIndexEntry) -> Self {
        Self {
            kind: entry.kind,
            escrow_id: entry.escrow_id.clone(),
            lease_id: entry.lease_id.map(lease_id_text),
            relay_key: entry.relay.to_hex(),
            actor: entry.actor.clone(),
            at: entry.at,
            block_digest: hex::encode(entry.block_digest),
        }
    }

    fn into_entry(self, seq: u64) -> Result<AuditIndexEntry, EscrowStoreError> {
        Ok(AuditIndexEntry {
            seq,
            kind: self.kind,
            escrow_id: self.escrow_id,
            lease_id: self
                .lease_id
                .as_deref()
                .map(parse_stored_lease_id)
                .transpose()?,
            relay: parse_key("audit relay", &self.relay_key)?,
            actor: self.actor,
            at: self.at,
            block_digest: parse_digest("block digest", &self.block_digest)?,
        })
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, EscrowStoreError> {
    serde_json::from_slice(bytes).map_err(|error| corrupt(format!("{what} row: {error}")))
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, EscrowStoreError> {
    serde_json::to_vec(row)
        .map_err(|error| EscrowStoreError::InvalidInput(format!("row not serialisable: {error}")))
}

// ---- reads over any table handle (read or write transaction) ----

fn read_deposit(
    deposits: &impl ReadableTable<&'static str, &'static [u8]>,
    escrow_id: &str,
) -> Result<Option<DepositRow>, EscrowStoreError> {
    deposits
        .get(escrow_id)?
        .map(|guard| decode("deposit", guard.value()))
        .transpose()
}

fn read_lease(
    leases: &impl ReadableTable<(RelayBytes, u64), &'static [u8]>,
    id: LeaseId,
) -> Result<Option<LeaseRecord>, EscrowStoreError> {
    leases
        .get((id.relay.0, id.epoch))?
        .map(|guard| decode::<LeaseRow>("lease", guard.value())?.into_record())
        .transpose()
}

fn read_max_epoch(
    leases: &impl ReadableTable<(RelayBytes, u64), &'static [u8]>,
    relay: &RelayKey,
) -> Result<u64, EscrowStoreError> {
    let last = leases
        .range((relay.0, 0)..=(relay.0, u64::MAX))?
        .next_back();
    match last {
        Some(entry) => Ok(entry?.0.value().1),
        None => Ok(0),
    }
}

fn read_open_lease(
    open: &impl ReadableTable<RelayBytes, u64>,
    leases: &impl ReadableTable<(RelayBytes, u64), &'static [u8]>,
    relay: &RelayKey,
) -> Result<Option<LeaseRecord>, EscrowStoreError> {
    let Some(epoch) = open.get(relay.0)?.map(|guard| guard.value()) else {
        return Ok(None);
    };
    let id = LeaseId {
        relay: *relay,
        epoch,
    };
    read_lease(leases, id)?
        .map(Some)
        .ok_or_else(|| corrupt(format!("open lease {id} is missing")))
}

// ---- the write transaction's primitives ----

struct RedbTx<'t> {
    meta: Table<'t, &'static str, u64>,
    deposits: Table<'t, &'static str, &'static [u8]>,
    relay_deposits: Table<'t, (RelayBytes, u64), &'static str>,
    current: Table<'t, RelayBytes, &'static str>,
    leases: Table<'t, (RelayBytes, u64), &'static [u8]>,
    open_leases: Table<'t, RelayBytes, u64>,
    audit: Table<'t, u64, &'static [u8]>,
}

impl<'t> RedbTx<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, EscrowStoreError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            deposits: txn.open_table(DEPOSITS)?,
            relay_deposits: txn.open_table(RELAY_DEPOSITS)?,
            current: txn.open_table(CURRENT)?,
            leases: txn.open_table(LEASES)?,
            open_leases: txn.open_table(OPEN_LEASES)?,
            audit: txn.open_table(AUDIT)?,
        })
    }

    fn deposit_row(&self, escrow_id: &str) -> Result<DepositRow, EscrowStoreError> {
        read_deposit(&self.deposits, escrow_id)?
            .ok_or_else(|| corrupt(format!("deposit {escrow_id:?} is missing")))
    }
}

impl WriteTx for RedbTx<'_> {
    fn claim_audit(
        &mut self,
        entry: &AuditIndexEntry,
    ) -> Result<Option<AuditIndexEntry>, EscrowStoreError> {
        let existing = self
            .audit
            .get(entry.seq)?
            .map(|guard| decode::<AuditRow>("audit", guard.value()))
            .transpose()?;
        if let Some(row) = existing {
            return Ok(Some(row.into_entry(entry.seq)?));
        }
        self.audit
            .insert(entry.seq, encode(&AuditRow::from_entry(entry))?.as_slice())?;
        Ok(None)
    }

    fn deposit(&mut self, escrow_id: &str) -> Result<Option<DepositRecord>, EscrowStoreError> {
        Ok(read_deposit(&self.deposits, escrow_id)?.map(|row| row.record))
    }

    fn current_escrow_id(&mut self, relay: &RelayKey) -> Result<Option<String>, EscrowStoreError> {
        Ok(self
            .current
            .get(relay.0)?
            .map(|guard| guard.value().to_owned()))
    }

    fn insert_current_deposit(&mut self, deposit: &StoredDeposit) -> Result<(), EscrowStoreError> {
        let seq = self
            .meta
            .get(NEXT_DEPOSIT_SEQ_KEY)?
            .map(|guard| guard.value())
            .ok_or_else(|| corrupt("the deposit counter is missing"))?;
        let next = seq
            .checked_add(1)
            .ok_or_else(|| corrupt("the deposit counter overflowed"))?;
        let record = &deposit.record;
        let row = DepositRow {
            seq,
            record: record.clone(),
            sealed_package: deposit.sealed_package.clone(),
            metadata: deposit.metadata.clone(),
            writer_hash: hex::encode(deposit.writer_hash),
        };
        let escrow_id = record.escrow_id.as_str();
        self.deposits.insert(escrow_id, encode(&row)?.as_slice())?;
        self.relay_deposits
            .insert((record.relay_key.0, seq), escrow_id)?;
        self.current.insert(record.relay_key.0, escrow_id)?;
        self.meta.insert(NEXT_DEPOSIT_SEQ_KEY, next)?;
        Ok(())
    }

    fn update_deposit(&mut self, record: &DepositRecord) -> Result<(), EscrowStoreError> {
        let mut row = self.deposit_row(&record.escrow_id)?;
        row.record = record.clone();
        self.deposits
            .insert(record.escrow_id.as_str(), encode(&row)?.as_slice())?;
        Ok(())
    }

    fn unrevoked_deposits_of(
        &mut self,
        owner: &PeerId,
    ) -> Result<Vec<DepositRecord>, EscrowStoreError> {
        // A rare operator action: a scan is cheaper than keeping an owner index.
        let mut found = Vec::new();
        for entry in self.deposits.iter()? {
            let (_, value) = entry?;
            let row: DepositRow = decode("deposit", value.value())?;
            if row.record.owner == *owner && row.record.revoked_at.is_none() {
                found.push(row.record);
            }
        }
        Ok(found)
    }

    fn lease(&mut self, id: LeaseId) -> Result<Option<LeaseRecord>, EscrowStoreError> {
        read_lease(&self.leases, id)
    }

    fn open_lease(&mut self, relay: &RelayKey) -> Result<Option<LeaseRecord>, EscrowStoreError> {
        read_open_lease(&self.open_leases, &self.leases, relay)
    }

    fn max_lease_epoch(&mut self, relay: &RelayKey) -> Result<u64, EscrowStoreError> {
        read_max_epoch(&self.leases, relay)
    }

    fn insert_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError> {
        let key = (lease.id.relay.0, lease.id.epoch);
        self.leases
            .insert(key, encode(&LeaseRow::from_record(lease))?.as_slice())?;
        if lease.released_at.is_none() {
            self.open_leases.insert(lease.id.relay.0, lease.id.epoch)?;
        }
        Ok(())
    }

    fn update_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError> {
        if read_lease(&self.leases, lease.id)?.is_none() {
            return Err(corrupt(format!("lease {} is missing", lease.id)));
        }
        let key = (lease.id.relay.0, lease.id.epoch);
        self.leases
            .insert(key, encode(&LeaseRow::from_record(lease))?.as_slice())?;
        if lease.released_at.is_some() {
            let open = self.open_leases.get(lease.id.relay.0)?.map(|g| g.value());
            if open == Some(lease.id.epoch) {
                self.open_leases.remove(lease.id.relay.0)?;
            }
        }
        Ok(())
    }
}

// ---- the trait ----

impl EscrowStore for EmbeddedEscrowStore {
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
        let txn = self.db.begin_read()?;
        let Some(escrow_id) = txn
            .open_table(CURRENT)?
            .get(relay.0)?
            .map(|guard| guard.value().to_owned())
        else {
            return Ok(None);
        };
        read_deposit(&txn.open_table(DEPOSITS)?, &escrow_id)?
            .ok_or_else(|| corrupt(format!("current deposit {escrow_id:?} is missing")))?
            .into_stored()
            .map(Some)
    }

    fn deposit(&self, escrow_id: &str) -> Result<Option<StoredDeposit>, EscrowStoreError> {
        check_escrow_id(escrow_id)?;
        let txn = self.db.begin_read()?;
        read_deposit(&txn.open_table(DEPOSITS)?, escrow_id)?
            .map(DepositRow::into_stored)
            .transpose()
    }

    fn deposit_history(&self, relay: &RelayKey) -> Result<Vec<StoredDeposit>, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        let deposits = txn.open_table(DEPOSITS)?;
        let mut history = Vec::new();
        for entry in txn
            .open_table(RELAY_DEPOSITS)?
            .range((relay.0, 0)..=(relay.0, u64::MAX))?
        {
            let (_, escrow_id) = entry?;
            let escrow_id = escrow_id.value();
            let row = read_deposit(&deposits, escrow_id)?
                .ok_or_else(|| corrupt(format!("deposit {escrow_id:?} is missing")))?;
            history.push(row.into_stored()?);
        }
        Ok(history)
    }

    fn current_deposits(&self) -> Result<Vec<StoredDeposit>, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        let deposits = txn.open_table(DEPOSITS)?;
        let mut current = Vec::new();
        for entry in txn.open_table(CURRENT)?.iter()? {
            let (_, escrow_id) = entry?;
            let escrow_id = escrow_id.value();
            let row = read_deposit(&deposits, escrow_id)?
                .ok_or_else(|| corrupt(format!("current deposit {escrow_id:?} is missing")))?;
            current.push(row.into_stored()?);
        }
        Ok(current)
    }

    fn active_leases(&self, now: UnixTime) -> Result<Vec<LeaseRecord>, EscrowStoreError> {
        check_time("now", now)?;
        let txn = self.db.begin_read()?;
        let open = txn.open_table(OPEN_LEASES)?;
        let leases = txn.open_table(LEASES)?;
        let mut active = Vec::new();
        for entry in open.iter()? {
            let (relay, _) = entry?;
            let relay = RelayKey(relay.value());
            if let Some(lease) = read_open_lease(&open, &leases, &relay)? {
                if lease.is_active(now) {
                    active.push(lease);
                }
            }
        }
        Ok(active)
    }

    fn lease_history(&self, relay: &RelayKey) -> Result<Vec<LeaseRecord>, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        let mut history = Vec::new();
        for entry in txn
            .open_table(LEASES)?
            .range((relay.0, 0)..=(relay.0, u64::MAX))?
        {
            let (_, row) = entry?;
            history.push(decode::<LeaseRow>("lease", row.value())?.into_record()?);
        }
        Ok(history)
    }

    fn max_lease_epoch(&self, relay: &RelayKey) -> Result<u64, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        read_max_epoch(&txn.open_table(LEASES)?, relay)
    }

    fn audit_index(&self, seqs: Range<u64>) -> Result<Vec<AuditIndexEntry>, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        let mut entries = Vec::new();
        if seqs.is_empty() {
            return Ok(entries);
        }
        for entry in txn.open_table(AUDIT)?.range(seqs)? {
            let (seq, row) = entry?;
            entries.push(decode::<AuditRow>("audit", row.value())?.into_entry(seq.value())?);
        }
        Ok(entries)
    }

    fn last_audit_seq(&self) -> Result<Option<u64>, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(AUDIT)?.last()?.map(|(seq, _)| seq.value()))
    }

    fn escrow_snapshot(&self) -> Result<EscrowSnapshot, EscrowStoreError> {
        let txn = self.db.begin_read()?;
        let mut deposits = Vec::new();
        for entry in txn.open_table(DEPOSITS)?.iter()? {
            let (_, row) = entry?;
            deposits.push(decode::<DepositRow>("deposit", row.value())?.record);
        }
        let leases = txn.open_table(LEASES)?;
        let mut current = BTreeMap::new();
        let mut epochs = BTreeMap::new();
        for entry in txn.open_table(CURRENT)?.iter()? {
            let (relay, escrow_id) = entry?;
            let relay = RelayKey(relay.value());
            current.insert(relay, escrow_id.value().to_owned());
            epochs.insert(relay, read_max_epoch(&leases, &relay)?);
        }
        let open = txn.open_table(OPEN_LEASES)?;
        let mut open_leases = Vec::new();
        for entry in open.iter()? {
            let (relay, _) = entry?;
            if let Some(lease) = read_open_lease(&open, &leases, &RelayKey(relay.value()))? {
                open_leases.push(lease);
            }
        }
        rules::snapshot(deposits, current, epochs, open_leases)
    }
}

// Compile-time check: the service shares one store across its blocking pool.
const _: fn() = || {
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<EmbeddedEscrowStore>();
};
