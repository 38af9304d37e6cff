-- TRUNCATE fires no row or statement trigger of the kinds above, so an import that runs
-- `TRUNCATE sightings; COPY …` would record no change. A BEFORE TRUNCATE trigger still sees the
-- rows about to vanish: it records each distinct tag they carry, exactly as a DELETE of every row
-- would (a full scan of the table, once per TRUNCATE). Tables truncated by CASCADE fire theirs too.
CREATE FUNCTION edgerail_record_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- (The row goes through a fenced subquery: PostgreSQL 15 fails to plan DISTINCT over a set
    -- function of a table's whole row written directly, "variable not found in subplan target list".)
    EXECUTE format('INSERT INTO cache_changes (tag) SELECT DISTINCT t FROM (SELECT r FROM %I.%I r OFFSET 0) x, %I(x.r) t',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    tbl TEXT;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['lines', 'stations', 'formations', 'operations', 'sightings'] LOOP
        EXECUTE format('CREATE TRIGGER %1$s_changes_truncate BEFORE TRUNCATE ON %1$I
            FOR EACH STATEMENT EXECUTE FUNCTION edgerail_record_truncate(%2$L)', tbl, 'edgerail_tags_' || tbl);
    END LOOP;
END
$$;

-- The order in which builds were seen answering, latest highest: a build seen again after another
-- (a rollback) is a deploy too, and must flush what the other build put at the edge.
ALTER TABLE deploys ADD COLUMN seen_seq BIGINT NOT NULL DEFAULT 0;
UPDATE deploys d SET seen_seq = r.n
FROM (SELECT build, row_number() OVER (ORDER BY first_seen_at, build) AS n FROM deploys) r
WHERE d.build = r.build;

-- One rule for a sighting's service day, the one the API's day bounds follow: day D starts at
-- SERVICE_DAY_START on D, read as PostgreSQL reads a local time (inside a gap or a fold, the later
-- instant), and an instant belongs to the day whose start it has passed and whose successor's it
-- has not. By the wall clock alone, a day starting inside a fold would claim the repeated hour's
-- second pass for the day before, while that day's bounds (and its page) end before it.
CREATE OR REPLACE FUNCTION edgerail_service_day(ts TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT to_char(CASE
               WHEN ts < (w.d + c.day_start) AT TIME ZONE c.time_zone THEN w.d - 1
               WHEN ts >= (w.d + 1 + c.day_start) AT TIME ZONE c.time_zone THEN w.d + 1
               ELSE w.d
           END, 'YYYY-MM-DD')
    FROM service_calendar c,
        LATERAL (SELECT ((ts AT TIME ZONE c.time_zone) - c.day_start)::date AS d) w
$$;
