-- The identifier vault and erasure (issue 22). `sealed_identifier`: the person's raw identifier,
-- sealed (ChaCha20-Poly1305 under a vault key from the key file, never the pepper), kept only when
-- the opt-out asked for it and a vault key was configured; the store never sees it in clear.
-- ForgetPerson sets it to NULL. `erased_at`: when an audit entry's free text (`detail`) was erased;
-- the row keeps its stored leaf hash, and the `erasure` entry that erased it vouches for the rest.
ALTER TABLE suppressions ADD COLUMN sealed_identifier BLOB;
ALTER TABLE audit_log ADD COLUMN erased_at INTEGER;
