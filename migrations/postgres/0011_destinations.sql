-- Webhook destinations (issue 22): systems that keep lists of their own (an ESP, a CRM, a
-- warehouse) and get every change they want, in audit log order, as signed POSTs.
-- `secret` is the signing secret (`whsec_…`): stored because every delivery is signed with it, so
-- this table is as secret as the key file. `delivered_seq` is the destination's cursor over the
-- audit log: every entry up to it was delivered or was not wanted (-1: none yet). One replica at a
-- time delivers a destination: the one whose lease (`lease_owner`, `lease_until`) is live.
CREATE TABLE destinations (
    destination_id  TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    tenants         TEXT NOT NULL,
    kinds           TEXT NOT NULL,
    secret          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    removed_at      BIGINT,
    delivered_seq   BIGINT NOT NULL,
    failures        INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    parked_at       BIGINT,
    last_error      TEXT NOT NULL,
    lease_owner     TEXT NOT NULL,
    lease_until     BIGINT NOT NULL
);

-- One row per change delivered to a destination: when, after how many attempts.
CREATE TABLE deliveries (
    destination_id TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    receipt_id     TEXT NOT NULL,
    delivered_at   BIGINT NOT NULL,
    attempts       INTEGER NOT NULL,
    PRIMARY KEY (destination_id, seq)
);
CREATE INDEX deliveries_receipt ON deliveries (receipt_id);
