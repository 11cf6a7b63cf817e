-- The append-only audit log (one entry per change), the aligned complete subtrees of its RFC 9162
-- Merkle tree (level 0 = leaf hashes), the signed checkpoints, and the head that serializes appends.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    recorded_at INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    subject     BLOB NOT NULL,
    channel     INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    reason      INTEGER NOT NULL,
    source      INTEGER NOT NULL,
    receipt_id  TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    expires_at  INTEGER
);
CREATE UNIQUE INDEX audit_log_change ON audit_log (receipt_id, action);
CREATE INDEX audit_log_subject ON audit_log (subject, tenant);

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE audit_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    size     INTEGER NOT NULL,
    frontier BLOB NOT NULL
);
INSERT INTO audit_head (id, size, frontier) VALUES (1, 0, X'');
