-- The worker's expiry sweep (every second, on every replica) looks for records that expired and have
-- no `expire` audit entry yet. Without an index it read the whole table each time: a sequential scan
-- of every suppression per replica per second (about 1 M rows in the benchmark), which took CPU from
-- every other query on a small machine. Only system suppressions (BOUNCE, OPERATOR) ever expire, so
-- the partial index stays small.
CREATE INDEX suppressions_expiring ON suppressions (expires_at) WHERE expires_at IS NOT NULL;
