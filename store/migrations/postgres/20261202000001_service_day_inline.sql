-- A sighting's service day, computed inside the trigger's one set-based plan rather than by a
-- function call per row. `edgerail_service_day` reads the calendar with a FROM clause, which
-- PostgreSQL cannot inline, so every row of a bulk write (or of a TRUNCATE, whose trigger reads
-- the whole table while holding its exclusive lock) paid a separate function execution: about
-- 0.25 ms a row: 7 s for a TRUNCATE of 30,000 sightings, during which every read of the table
-- waited and timed out (the soak found it). The rule itself is unchanged and now lives in `edgerail_day_of`, a pure
-- expression the planner inlines; the tag function joins the calendar once.

-- Day D starts at day_start on D, read as PostgreSQL reads a local time (inside a gap or a fold,
-- the later instant); an instant belongs to the day whose start it has passed and whose
-- successor's it has not.
CREATE FUNCTION edgerail_day_of(ts TIMESTAMPTZ, time_zone TEXT, day_start INTERVAL) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT to_char(CASE
               WHEN ts < (((ts AT TIME ZONE time_zone) - day_start)::date + day_start) AT TIME ZONE time_zone
                   THEN ((ts AT TIME ZONE time_zone) - day_start)::date - 1
               WHEN ts >= (((ts AT TIME ZONE time_zone) - day_start)::date + 1 + day_start) AT TIME ZONE time_zone
                   THEN ((ts AT TIME ZONE time_zone) - day_start)::date + 1
               ELSE ((ts AT TIME ZONE time_zone) - day_start)::date
           END, 'YYYY-MM-DD')
$$;

CREATE OR REPLACE FUNCTION edgerail_service_day(ts TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT edgerail_day_of(ts, c.time_zone, c.day_start) FROM service_calendar c
$$;

-- The calendar is read in a fenced subquery, so the day is computed once per row and the tag
-- expressions refer to it rather than each repeating the whole CASE.
CREATE OR REPLACE FUNCTION edgerail_tags_sightings(r sightings) RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT t FROM (VALUES ('sightings'), ('formations'), ('formation:' || r.formation_id)) v (t)
    UNION ALL
    SELECT t FROM (SELECT edgerail_day_of(r.seen_at, c.time_zone, c.day_start) AS d FROM service_calendar c OFFSET 0) day,
        LATERAL (VALUES ('operations:' || day.d), ('operation:' || day.d || ':' || r.operation_number)) v (t)
    WHERE r.operation_number IS NOT NULL
$$;
