-- One row per recorded opt-out. The subject is the keyed hash of the recipient; no raw identifier is
-- ever stored. Times are milliseconds since the Unix epoch.
CREATE TABLE suppressions (
    receipt_id      TEXT PRIMARY KEY,
    subject         BYTEA NOT NULL,
    tenant          TEXT NOT NULL,
    channel         INTEGER NOT NULL,
    topic           TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    reason          INTEGER NOT NULL,
    source          INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    effective_at    BIGINT NOT NULL,
    expires_at      BIGINT,
    idempotency_key TEXT,
    committed_at    BIGINT NOT NULL
);

CREATE UNIQUE INDEX suppressions_idempotency ON suppressions (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX suppressions_subject ON suppressions (subject, tenant);
