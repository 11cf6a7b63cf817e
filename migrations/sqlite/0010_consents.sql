-- A person's consents (issue 19): where a consent requirement (a control of kind 'consent' in
-- `controls`) applies, a check lets a notice go only if a consent here covers it. The subject is the
-- keyed hash of the recipient; channel 0 and '' are wildcards as in `suppressions`. Consents are
-- never updated: a later opt-out of the person's own revokes one (see src/store/consents.rs).
CREATE TABLE consents (
    consent_id     TEXT PRIMARY KEY,
    subject        BLOB NOT NULL,
    tenant         TEXT NOT NULL,
    channel        INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    campaign       TEXT NOT NULL,
    source         TEXT NOT NULL,
    proof          TEXT NOT NULL,
    evidence_actor TEXT NOT NULL,
    actor          TEXT NOT NULL,
    received_at    INTEGER NOT NULL
);

CREATE INDEX consents_subject ON consents (subject, tenant);
