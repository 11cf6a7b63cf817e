-- The cache rebuild's catch-up pass reads the records committed since the rebuild began
-- (`Store::active_page` with a recent `committed_at` bound). Without an index on `committed_at`
-- that pass scanned the whole table: about half a minute at ten million records. Records are
-- committed in `committed_at` order, so a BRIN index fits, at next to no cost to the write path.
CREATE INDEX suppressions_committed ON suppressions USING brin (committed_at);
