-- Audit blocks: a committed batch of opt-outs as one row instead of one row per entry (issue 24:
-- the entry rows and their index were the largest part of what the audit log cost the write
-- path). A block holds each entry's fields as a JSON array in the canonical encoding's order, one
-- per line, and for each entry its stored hashes (one byte giving how many 32-byte hashes follow:
-- its leaf hash, then the subtrees it completes), so a block answers everything an `audit_log` row
-- does. An opt-out's entry is found through its record: the entry's time is the record's
-- `committed_at`, which the block is indexed by.
--
-- Expand only: this release reads both shapes and writes blocks only with `--audit-blocks`, off by
-- default, since the previous release reads `audit_log` alone. Turn it on once every replica runs
-- this release.
CREATE TABLE audit_blocks (
    last_seq     BIGINT PRIMARY KEY,
    first_seq    BIGINT NOT NULL,
    committed_at BIGINT NOT NULL,
    entries      BYTEA NOT NULL,
    hashes       BYTEA NOT NULL
);
-- Compressing a block with LZ4 took about as much of the commit's CPU as its smaller writes saved
-- (bench/examples/audit_cost): blocks are stored as they are, inline or out of line.
ALTER TABLE audit_blocks ALTER COLUMN entries SET STORAGE EXTERNAL;
ALTER TABLE audit_blocks ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE INDEX audit_blocks_committed ON audit_blocks (committed_at);
