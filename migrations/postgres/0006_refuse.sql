-- The worker commits a batch of opt-outs with their audit entries in one autocommitted statement that
-- assumes two things: every record in it is new, and the audit head is where this worker last left
-- it (see `store::audit::commit_at_once`). When either fails the statement must change nothing, so it
-- calls this, which raises, and PostgreSQL rolls the whole statement back; the worker then commits
-- the batch the careful way, under the head's lock. SQL has no RAISE of its own; PL/pgSQL does.
CREATE FUNCTION suppressd_refuse(reason TEXT) RETURNS INTEGER LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SDR01', MESSAGE = reason;
END
$$;
