-- Every audit entry that names a person is about one of their records (opt-out, import, opt-in,
-- rollback, expiry: the entry's receipt is the record's), so a person's entries are found through
-- the records' own (subject, tenant) index and the entries' receipt index. The audit log's index on
-- (subject, tenant) only served that lookup, and it was a third of what each appended entry cost the
-- store (the worker's commit went from 0.48 to 0.58 of its unaudited throughput without it).
DROP INDEX audit_log_subject;
