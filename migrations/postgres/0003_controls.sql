-- Operator levers and a person's rights (issue 5). Records are never deleted: an opt-in or a rollback
-- ends a record (ended_at, and ended_by = the audit action that ended it), which keeps its history.
ALTER TABLE suppressions ADD COLUMN ended_at BIGINT;
ALTER TABLE suppressions ADD COLUMN ended_by TEXT;
-- The import batch that created the record, if one did: what a rollback selects, and all it selects.
ALTER TABLE suppressions ADD COLUMN import_batch TEXT;
CREATE INDEX suppressions_import_batch ON suppressions (import_batch) WHERE import_batch IS NOT NULL;
-- A rebuild's catch-up pass re-applies what ended while it ran.
CREATE INDEX suppressions_ended ON suppressions (ended_at) WHERE ended_at IS NOT NULL;

-- Free-text particulars of an entry (a halt's reason, a declaration's legal basis, an import's batch).
-- NULL for the entries that have none, whose canonical encoding is then unchanged.
ALTER TABLE audit_log ADD COLUMN detail TEXT;

-- Halts ('halt') and mandatory declarations ('mandatory'): few rows, read whole by every replica.
-- channels is a bit set (bit n = channel code n). A control is in force while ended_at is NULL
-- (and, for a declaration, until expires_at).
CREATE TABLE controls (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    topic      TEXT NOT NULL,
    campaign   TEXT NOT NULL,
    channels   INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    approver   TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    ended_at   BIGINT,
    ended_by   TEXT,
    end_reason TEXT
);

-- Bumped in the same transaction as every change to controls: replicas poll this one row and reload
-- the controls when it moves.
CREATE TABLE control_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO control_head (id, version) VALUES (1, 0);

CREATE TABLE imports (
    batch_id       TEXT PRIMARY KEY,
    actor          TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    imported       BIGINT NOT NULL DEFAULT 0,
    duplicates     BIGINT NOT NULL DEFAULT 0,
    rejected       BIGINT NOT NULL DEFAULT 0,
    rolled_back_at BIGINT,
    rolled_back_by TEXT
);
