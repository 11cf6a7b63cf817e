-- The legal clocks' gauge (`Store::slow_records`) reads the records received within the longest
-- window that took effect later than the shortest deadline after receipt. The BRIN on
-- `received_at` cannot narrow that when every record is recent (a young deployment, a bulk
-- import): at ten million records the query read them all, one to three seconds of PostgreSQL
-- each minute on every replica. Almost every record takes effect when it is received, so an index
-- of only those that took effect later is small and is all the query needs.
CREATE INDEX suppressions_late_effective ON suppressions (received_at)
    WHERE effective_at > received_at;
