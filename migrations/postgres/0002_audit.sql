-- The append-only audit log (one entry per change), the signed checkpoints, and the head that
-- serializes appends. Each entry row also carries `hashes`: its leaf hash followed by the hashes of
-- the aligned complete subtrees of the RFC 9162 Merkle tree that this leaf completes (level 1, 2, …),
-- which is all a proof needs, stored without a row of its own.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    recorded_at BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    subject     BYTEA NOT NULL,
    channel     INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    reason      INTEGER NOT NULL,
    source      INTEGER NOT NULL,
    receipt_id  TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    expires_at  BIGINT,
    hashes      BYTEA NOT NULL
);
CREATE INDEX audit_log_receipt ON audit_log (receipt_id);
CREATE INDEX audit_log_subject ON audit_log (subject, tenant);

CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    size     BIGINT NOT NULL,
    frontier BYTEA NOT NULL
);
INSERT INTO audit_head (id, size, frontier) VALUES (1, 0, '\x');
