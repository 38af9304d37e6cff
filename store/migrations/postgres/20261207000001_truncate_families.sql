-- A TRUNCATE records its table's tag families instead of the tags of every row it removes.
--
-- The trigger it replaces read the whole table through the tag function while TRUNCATE held the
-- table's ACCESS EXCLUSIVE lock: 11 s for a million sightings, during which every read of the
-- table waited (the fifteen-minute bench saw 503s and stale answers from it). Its arguments are now
-- the families `api migrate` derives from the policy (`formation:*`, `operation:*:*`, the literal
-- tags as they are), so its cost no longer depends on what the table holds. An empty table records
-- nothing.
--
-- Once a transaction has recorded a table's families, every tag a later write of that table in
-- the same transaction could touch is already covered, so those writes record nothing (the
-- tables' change triggers, which `api migrate` generates, check the mark): the reload of a
-- `TRUNCATE; COPY …` import costs no tag computation while the lock is held. The mark is a
-- transaction-local setting, undone with the transaction or the savepoint that set it, like the
-- families themselves.
CREATE FUNCTION edgerail_record_truncate_families() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    held BOOLEAN;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO held;
    IF held THEN
        INSERT INTO cache_changes (tag) SELECT unnest(TG_ARGV);
        PERFORM set_config('edgerail.truncated_' || TG_RELID, 'on', true);
    END IF;
    RETURN NULL;
END
$$;
