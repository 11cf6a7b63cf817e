-- One row per recorded opt-out. The subject is the keyed hash of the recipient; no raw identifier is
-- ever stored. Times are milliseconds since the Unix epoch.
CREATE TABLE suppressions (
    receipt_id      TEXT PRIMARY KEY,
    subject         BLOB NOT NULL,
    tenant          TEXT NOT NULL,
    channel         INTEGER NOT NULL,
    topic           TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    reason          INTEGER NOT NULL,
    source          INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    effective_at    INTEGER NOT NULL,
    expires_at      INTEGER,
    idempotency_key TEXT,
    committed_at    INTEGER NOT NULL
);

CREATE UNIQUE INDEX suppressions_idempotency ON suppressions (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX suppressions_subject ON suppressions (subject, tenant);
