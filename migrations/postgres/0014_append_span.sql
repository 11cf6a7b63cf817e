-- The span that appended each checkpoint's entries (a W3C traceparent; empty when traces are off),
-- so a webhook delivery's trace links to the commit of the change it carries (issue 22). Not part
-- of any entry's encoding. Expand only: older releases insert checkpoints without it.
ALTER TABLE audit_checkpoints ADD COLUMN span TEXT NOT NULL DEFAULT '';
