-- The legal clocks' queries (issue 22) read the records received within the longest window. A
-- BRIN index fits: records are inserted in about the order they were received, and it costs the
-- write path next to nothing. SQLite has no BRIN; its deployments are small.
CREATE INDEX suppressions_received ON suppressions USING brin (received_at);
