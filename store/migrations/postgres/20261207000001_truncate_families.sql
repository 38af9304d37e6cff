-- A TRUNCATE records its table's tag families instead of the tags of every row it removes.
--
-- The trigger it replaces read the whole table through the tag function while TRUNCATE held the
-- table's ACCESS EXCLUSIVE lock: 11 s for a million sightings, during which every read of the
-- table waited (the fifteen-minute bench saw 503s and stale answers from it). Its arguments are now
-- the families `api migrate` derives from the policy (`formation:*`, `operation:*:*`, the literal
-- tags as they are), so its cost no longer depends on what the table holds. They are recorded even
-- when the table looks empty: a snapshot (REPEATABLE READ, row security) can hide rows that the
-- TRUNCATE removes all the same.
--
-- Once a transaction has recorded a table's families, every tag a later write of that table in
-- the same transaction could touch is already covered, so those writes record nothing (the
-- tables' change triggers, which `api migrate` generates, check the mark): the reload of a
-- `TRUNCATE; COPY …` import costs no tag computation while the lock is held. The mark is a
-- transaction-local setting, undone with the transaction or the savepoint that set it, like the
-- families themselves. It holds the transaction's id, which the triggers compare with their own:
-- a value set for the session (`SET`, or left on a pooled connection) matches no later
-- transaction and so skips nothing.
CREATE FUNCTION edgerail_record_truncate_families() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_changes (tag) SELECT unnest(TG_ARGV);
    PERFORM set_config('edgerail.truncated_' || TG_RELID, pg_current_xact_id()::text, true);
    RETURN NULL;
END
$$;
