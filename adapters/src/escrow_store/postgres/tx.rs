//! The store's primitives over one PostgreSQL transaction, and the mapping
//! between rows and the store's types. Every value read back is checked:
//! a row that does not decode is [`EscrowStoreError::Corrupt`], never a panic.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::postgres::types::FromSql;
use ::postgres::{Row, Transaction};
use hypergate_core::escrow::DepositRecord;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::{UnixTime, duration_millis};
use serde_json::Value;

use crate::escrow_store::EscrowStoreError;
use crate::escrow_store::rows::{
    AuditIndexEntry, LeaseRecord, StoredDeposit, corrupt, lease_id_text, parse_audit_kind,
    parse_digest, parse_key, parse_reasons, parse_stored_lease_id, reasons_json,
};
use crate::escrow_store::rules::WriteTx;

/// The columns of a deposit's core record.
macro_rules! deposit_record_columns {
    () => {
        "id, relay_key, owner_peer_key, permitted_requesters::text AS permitted_requesters, \
         policy_version, created_at, expires_at, revoked_at, revoked_by, revoked_reason, \
         superseded_by, unlocks_used"
    };
}

pub(super) const DEPOSIT_RECORD_COLUMNS: &str = deposit_record_columns!();
pub(super) const DEPOSIT_COLUMNS: &str = concat!(
    deposit_record_columns!(),
    ", encrypted_package::text AS encrypted_package, metadata::text AS metadata, writer_hash"
);
pub(super) const LEASE_COLUMNS: &str = "lease_id, escrow_id, requester_id, issued_at, expires_at, \
     evidence::text AS evidence, reasons::text AS reasons, payload_digest, released_at, \
     release_reason";
pub(super) const AUDIT_COLUMNS: &str =
    "seq, event_type, escrow_id, lease_id, relay_key, actor, created_at, block_digest";

// ---- values ----

pub(super) fn to_sql_time(time: UnixTime) -> Result<SystemTime, EscrowStoreError> {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(time.0))
        .ok_or_else(|| EscrowStoreError::InvalidInput(format!("time {} is out of range", time.0)))
}

fn from_sql_time(time: SystemTime) -> Result<UnixTime, EscrowStoreError> {
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| corrupt("a stored time is before 1970"))?;
    Ok(UnixTime(duration_millis(since_epoch)))
}

fn to_sql_times(time: Option<UnixTime>) -> Result<Option<SystemTime>, EscrowStoreError> {
    time.map(to_sql_time).transpose()
}

/// A `u64` the store checked to fit BIGINT (sequence numbers, epochs).
pub(super) fn to_bigint(value: u64) -> Result<i64, EscrowStoreError> {
    i64::try_from(value)
        .map_err(|_| EscrowStoreError::InvalidInput(format!("{value} is above 2^63-1")))
}

pub(super) fn from_bigint(field: &str, value: i64) -> Result<u64, EscrowStoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{field} {value} is negative")))
}

pub(super) fn json_text(value: &Value) -> String {
    value.to_string()
}

fn parse_json(field: &str, text: &str) -> Result<Value, EscrowStoreError> {
    serde_json::from_str(text).map_err(|error| corrupt(format!("{field}: {error}")))
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> Result<T, EscrowStoreError> {
    row.try_get(column).map_err(EscrowStoreError::Postgres)
}

fn time(row: &Row, column: &str) -> Result<UnixTime, EscrowStoreError> {
    from_sql_time(get(row, column)?)
}

fn optional_time(row: &Row, column: &str) -> Result<Option<UnixTime>, EscrowStoreError> {
    get::<Option<SystemTime>>(row, column)?
        .map(from_sql_time)
        .transpose()
}

// ---- rows ----

pub(super) fn deposit_record(row: &Row) -> Result<DepositRecord, EscrowStoreError> {
    let requesters: Vec<String> = serde_json::from_value(parse_json(
        "permitted requesters",
        get(row, "permitted_requesters")?,
    )?)
    .map_err(|error| corrupt(format!("permitted requesters: {error}")))?;
    let permitted_requesters = requesters
        .iter()
        .map(|text| parse_key("permitted requester", text))
        .collect::<Result<BTreeSet<PeerId>, _>>()?;
    let unlocks_used: i64 = get(row, "unlocks_used")?;
    Ok(DepositRecord {
        escrow_id: get(row, "id")?,
        relay_key: parse_key("relay key", get(row, "relay_key")?)?,
        owner: parse_key("owner", get(row, "owner_peer_key")?)?,
        permitted_requesters,
        policy_version: get(row, "policy_version")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        revoked_at: optional_time(row, "revoked_at")?,
        revoked_by: get(row, "revoked_by")?,
        revoked_reason: get(row, "revoked_reason")?,
        superseded_by: get(row, "superseded_by")?,
        unlocks_used: u32::try_from(unlocks_used)
            .map_err(|_| corrupt(format!("unlock count {unlocks_used} is out of range")))?,
    })
}

pub(super) fn stored_deposit(row: &Row) -> Result<StoredDeposit, EscrowStoreError> {
    Ok(StoredDeposit {
        record: deposit_record(row)?,
        sealed_package: parse_json("sealed package", get(row, "encrypted_package")?)?,
        metadata: parse_json("metadata", get(row, "metadata")?)?,
        writer_hash: parse_digest("writer hash", get(row, "writer_hash")?)?,
    })
}

pub(super) fn lease_record(row: &Row) -> Result<LeaseRecord, EscrowStoreError> {
    Ok(LeaseRecord {
        id: parse_stored_lease_id(get(row, "lease_id")?)?,
        escrow_id: get(row, "escrow_id")?,
        requester: parse_key("requester", get(row, "requester_id")?)?,
        issued_at: time(row, "issued_at")?,
        expires_at: time(row, "expires_at")?,
        evidence: parse_json("evidence", get(row, "evidence")?)?,
        reasons: parse_reasons(parse_json("reasons", get(row, "reasons")?)?)?,
        payload_digest: parse_digest("payload digest", get(row, "payload_digest")?)?,
        released_at: optional_time(row, "released_at")?,
        release_reason: get(row, "release_reason")?,
    })
}

pub(super) fn audit_entry(row: &Row) -> Result<AuditIndexEntry, EscrowStoreError> {
    Ok(AuditIndexEntry {
        seq: from_bigint("audit seq", get(row, "seq")?)?,
        kind: parse_audit_kind(get(row, "event_type")?)?,
        escrow_id: get(row, "escrow_id")?,
        lease_id: get::<Option<&str>>(row, "lease_id")?
            .map(parse_stored_lease_id)
            .transpose()?,
        relay: parse_key("audit relay", get(row, "relay_key")?)?,
        actor: get(row, "actor")?,
        at: time(row, "created_at")?,
        block_digest: parse_digest("block digest", get(row, "block_digest")?)?,
    })
}

// ---- the transaction's primitives ----

pub(super) struct PgTx<'a, 'c> {
    pub(super) tx: &'a mut Transaction<'c>,
}

impl PgTx<'_, '_> {
    fn expect_one_row(&self, changed: u64, what: &str) -> Result<(), EscrowStoreError> {
        if changed == 1 {
            Ok(())
        } else {
            Err(corrupt(format!(
                "{what}: {changed} rows changed, expected 1"
            )))
        }
    }
}

impl WriteTx for PgTx<'_, '_> {
    fn claim_audit(
        &mut self,
        entry: &AuditIndexEntry,
    ) -> Result<Option<AuditIndexEntry>, EscrowStoreError> {
        let seq = to_bigint(entry.seq)?;
        let inserted = self.tx.execute(
            "INSERT INTO escrow_audit_log \
               (seq, event_type, escrow_id, lease_id, relay_key, actor, created_at, block_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (seq) DO NOTHING",
            &[
                &seq,
                &entry.kind.as_str(),
                &entry.escrow_id,
                &entry.lease_id.map(lease_id_text),
                &entry.relay.to_hex(),
                &entry.actor,
                &to_sql_time(entry.at)?,
                &hex::encode(entry.block_digest),
            ],
        )?;
        if inserted == 1 {
            return Ok(None);
        }
        let query = format!("SELECT {AUDIT_COLUMNS} FROM escrow_audit_log WHERE seq = $1");
        let row = self.tx.query_one(query.as_str(), &[&seq])?;
        audit_entry(&row).map(Some)
    }

    fn deposit(&mut self, escrow_id: &str) -> Result<Option<DepositRecord>, EscrowStoreError> {
        let query = format!("SELECT {DEPOSIT_RECORD_COLUMNS} FROM escrow_deposits WHERE id = $1");
        self.tx
            .query_opt(query.as_str(), &[&escrow_id])?
            .as_ref()
            .map(deposit_record)
            .transpose()
    }

    fn current_escrow_id(&mut self, relay: &RelayKey) -> Result<Option<String>, EscrowStoreError> {
        let row = self.tx.query_opt(
            "SELECT id FROM escrow_deposits WHERE relay_key = $1 AND is_current",
            &[&relay.to_hex()],
        )?;
        row.as_ref().map(|row| get(row, "id")).transpose()
    }

    fn insert_current_deposit(&mut self, deposit: &StoredDeposit) -> Result<(), EscrowStoreError> {
        let record = &deposit.record;
        let relay = record.relay_key.to_hex();
        self.tx.execute(
            "UPDATE escrow_deposits SET is_current = FALSE, updated_at = NOW() \
             WHERE relay_key = $1 AND is_current",
            &[&relay],
        )?;
        let requesters: Vec<String> = record
            .permitted_requesters
            .iter()
            .map(PeerId::to_hex)
            .collect();
        let requesters = Value::from(requesters);
        self.tx.execute(
            "INSERT INTO escrow_deposits \
               (id, relay_key, owner_peer_key, permitted_requesters, metadata, encrypted_package, \
                writer_hash, policy_version, created_at, expires_at, unlocks_used, is_current) \
             VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6::text::jsonb, \
                     $7, $8, $9, $10, 0, TRUE)",
            &[
                &record.escrow_id,
                &relay,
                &record.owner.to_hex(),
                &json_text(&requesters),
                &json_text(&deposit.metadata),
                &json_text(&deposit.sealed_package),
                &hex::encode(deposit.writer_hash),
                &record.policy_version,
                &to_sql_time(record.created_at)?,
                &to_sql_time(record.expires_at)?,
            ],
        )?;
        Ok(())
    }

    fn update_deposit(&mut self, record: &DepositRecord) -> Result<(), EscrowStoreError> {
        let changed = self.tx.execute(
            "UPDATE escrow_deposits SET revoked_at = $2, revoked_by = $3, revoked_reason = $4, \
               superseded_by = $5, unlocks_used = $6, updated_at = NOW() \
             WHERE id = $1",
            &[
                &record.escrow_id,
                &to_sql_times(record.revoked_at)?,
                &record.revoked_by,
                &record.revoked_reason,
                &record.superseded_by,
                &i64::from(record.unlocks_used),
            ],
        )?;
        self.expect_one_row(changed, "deposit update")
    }

    fn unrevoked_deposits_of(
        &mut self,
        owner: &PeerId,
    ) -> Result<Vec<DepositRecord>, EscrowStoreError> {
        let query = format!(
            "SELECT {DEPOSIT_RECORD_COLUMNS} FROM escrow_deposits \
             WHERE owner_peer_key = $1 AND revoked_at IS NULL"
        );
        let mut deposits = self
            .tx
            .query(query.as_str(), &[&owner.to_hex()])?
            .iter()
            .map(deposit_record)
            .collect::<Result<Vec<_>, _>>()?;
        deposits.sort_by(|a, b| a.escrow_id.cmp(&b.escrow_id));
        Ok(deposits)
    }

    fn lease(&mut self, id: LeaseId) -> Result<Option<LeaseRecord>, EscrowStoreError> {
        let query = format!("SELECT {LEASE_COLUMNS} FROM escrow_lease_history WHERE lease_id = $1");
        self.tx
            .query_opt(query.as_str(), &[&lease_id_text(id)])?
            .as_ref()
            .map(lease_record)
            .transpose()
    }

    fn open_lease(&mut self, relay: &RelayKey) -> Result<Option<LeaseRecord>, EscrowStoreError> {
        let query = format!(
            "SELECT {LEASE_COLUMNS} FROM escrow_lease_history \
             WHERE relay_key = $1 AND released_at IS NULL"
        );
        self.tx
            .query_opt(query.as_str(), &[&relay.to_hex()])?
            .as_ref()
            .map(lease_record)
            .transpose()
    }

    fn max_lease_epoch(&mut self, relay: &RelayKey) -> Result<u64, EscrowStoreError> {
        let row = self.tx.query_one(
            "SELECT COALESCE(MAX(epoch), 0) AS epoch FROM escrow_lease_history \
             WHERE relay_key = $1",
            &[&relay.to_hex()],
        )?;
        from_bigint("lease epoch", get(&row, "epoch")?)
    }

    fn insert_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError> {
        self.tx.execute(
            "INSERT INTO escrow_lease_history \
               (lease_id, escrow_id, relay_key, epoch, requester_id, issued_at, expires_at, \
                evidence, reasons, payload_digest, released_at, release_reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11, $12)",
            &[
                &lease_id_text(lease.id),
                &lease.escrow_id,
                &lease.relay().to_hex(),
                &to_bigint(lease.id.epoch)?,
                &lease.requester.to_hex(),
                &to_sql_time(lease.issued_at)?,
                &to_sql_time(lease.expires_at)?,
                &json_text(&lease.evidence),
                &json_text(&reasons_json(&lease.reasons)),
                &hex::encode(lease.payload_digest),
                &to_sql_times(lease.released_at)?,
                &lease.release_reason,
            ],
        )?;
        Ok(())
    }

    fn update_lease(&mut self, lease: &LeaseRecord) -> Result<(), EscrowStoreError> {
        let changed = self.tx.execute(
            "UPDATE escrow_lease_history SET expires_at = $2, released_at = $3, \
               release_reason = $4 \
             WHERE lease_id = $1",
            &[
                &lease_id_text(lease.id),
                &to_sql_time(lease.expires_at)?,
                &to_sql_times(lease.released_at)?,
                &lease.release_reason,
            ],
        )?;
        self.expect_one_row(changed, "lease update")
    }
}
