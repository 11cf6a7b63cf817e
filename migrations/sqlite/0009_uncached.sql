-- A person's opt-outs the store took while Redis could not (issue 18): the record is in
-- `suppressions` with its audit entry; this row says the cache may lack it. Every replica polls this
-- table, stops answering from the cache while it holds a row, writes the record into the cache and
-- deletes the row. Empty almost always.
CREATE TABLE uncached (
    receipt_id  TEXT PRIMARY KEY,
    recorded_at BIGINT NOT NULL
);
