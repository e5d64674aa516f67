-- hypergate escrow store, schema 1. The original's table names, with its
-- defects fixed (original-system.md §2.9):
--   * ids are TEXT: the service's ids are `escrow_<…>` / `lease-<relay>-<epoch>`,
--     which never fit the original's UUID columns;
--   * no plain UNIQUE on relay_key: a rotation inserts the relay's next deposit
--     and keeps the old one as history; a partial unique index allows exactly
--     one *current* deposit per relay;
--   * revoked_by / revoked_reason are persisted with revoked_at;
--   * the audit index is keyed by the audit log's sequence number, which makes
--     every write idempotent (a retried write finds its own audit row).
-- Times are TIMESTAMPTZ with millisecond values.

CREATE TABLE escrow_deposits (
    id                   TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    relay_key            TEXT NOT NULL,
    owner_peer_key       TEXT NOT NULL,
    permitted_requesters JSONB NOT NULL,
    metadata             JSONB NOT NULL DEFAULT '{}',
    encrypted_package    JSONB NOT NULL,
    writer_hash          TEXT NOT NULL,
    policy_version       TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    revoked_at           TIMESTAMPTZ NULL,
    revoked_by           TEXT NULL,
    revoked_reason       TEXT NULL,
    -- Deferred: a rotation points the old deposit at the new one before inserting it.
    superseded_by        TEXT NULL REFERENCES escrow_deposits (id) DEFERRABLE INITIALLY DEFERRED,
    unlocks_used         BIGINT NOT NULL DEFAULT 0 CHECK (unlocks_used >= 0),
    is_current           BOOLEAN NOT NULL,
    -- Insertion order: the relay's deposit history, oldest first.
    deposit_seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);

CREATE UNIQUE INDEX escrow_deposits_one_current_per_relay
    ON escrow_deposits (relay_key) WHERE is_current;
CREATE INDEX idx_escrow_deposits_relay_key ON escrow_deposits (relay_key, deposit_seq);
CREATE INDEX idx_escrow_deposits_unrevoked_owner
    ON escrow_deposits (owner_peer_key) WHERE revoked_at IS NULL;

CREATE TABLE escrow_lease_history (
    lease_id       TEXT PRIMARY KEY,
    escrow_id      TEXT NOT NULL REFERENCES escrow_deposits (id),
    relay_key      TEXT NOT NULL,
    epoch          BIGINT NOT NULL CHECK (epoch > 0),
    requester_id   TEXT NOT NULL,
    issued_at      TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    evidence       JSONB NOT NULL,
    reasons        JSONB NOT NULL DEFAULT '[]',
    payload_digest TEXT NOT NULL,
    released_at    TIMESTAMPTZ NULL,
    release_reason TEXT NULL,
    UNIQUE (relay_key, epoch),
    CHECK ((released_at IS NULL) = (release_reason IS NULL))
);

-- One lease per relay: at most one that has not ended.
CREATE UNIQUE INDEX escrow_lease_history_one_open_per_relay
    ON escrow_lease_history (relay_key) WHERE released_at IS NULL;
CREATE INDEX idx_escrow_lease_history_escrow_id ON escrow_lease_history (escrow_id);

CREATE TABLE escrow_audit_log (
    seq          BIGINT PRIMARY KEY CHECK (seq >= 0),
    created_at   TIMESTAMPTZ NOT NULL,
    event_type   TEXT NOT NULL,
    escrow_id    TEXT NOT NULL,
    lease_id     TEXT NULL,
    relay_key    TEXT NOT NULL,
    actor        TEXT NOT NULL,
    block_digest TEXT NOT NULL
);

CREATE INDEX idx_escrow_audit_log_created_at ON escrow_audit_log (created_at);
