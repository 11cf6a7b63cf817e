-- A rollback pages through one import batch in receipt order (`import_batch = $1 AND receipt_id > $2
-- ORDER BY receipt_id LIMIT n`): with the batch and the receipt in one index each page is a range
-- read, where the batch-only index of 0003 made every page read and sort the whole batch.
CREATE INDEX suppressions_import_batch_receipt ON suppressions (import_batch, receipt_id)
    WHERE import_batch IS NOT NULL;
DROP INDEX suppressions_import_batch;
