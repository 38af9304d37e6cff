-- The service calendar as data. `migrate` fills this table from SERVICE_TZ and SERVICE_DAY_START
-- with the runs of days the API's own calendar computes (between two clock changes every service
-- day lasts 24 hours, so a run is a first day, its start, and its last day). The triggers look a
-- sighting's day up here, so a zone with daylight saving is right all year: before, they applied
-- the zone's UTC offset at migrate time. `service_calendar.utc_offset_min` is no longer read; it
-- stays because the triggers of the version being upgraded still name it until `migrate`
-- replaces them. Times are UTC text in the sightings' format, so text order is time order.
CREATE TABLE service_day_runs (
    starts_at TEXT PRIMARY KEY,
    day       TEXT NOT NULL,
    last_day  TEXT NOT NULL CHECK (last_day >= day)
);
