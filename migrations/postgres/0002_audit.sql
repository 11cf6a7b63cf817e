-- The append-only audit log (one entry per change), the aligned complete subtrees of its RFC 9162
-- Merkle tree (level 0 = leaf hashes), the signed checkpoints, and the head that serializes appends.
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
    expires_at  BIGINT
);
CREATE UNIQUE INDEX audit_log_change ON audit_log (receipt_id, action);
CREATE INDEX audit_log_subject ON audit_log (subject, tenant);

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

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
