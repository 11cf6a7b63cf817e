-- Send windows ('window') join halts and mandatory declarations in `controls` (issue 19). What only
-- one kind has (a window's hours and time zone, a declaration's rule for windows) is a small JSON
-- object here, so a new kind of control needs no new column.
ALTER TABLE controls ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
