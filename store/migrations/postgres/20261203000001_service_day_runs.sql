-- The service calendar as data. `migrate` fills this table from SERVICE_TZ and SERVICE_DAY_START
-- with the runs of days the API's own calendar computes (between two clock changes every service
-- day lasts 24 hours, so a run is a first day, its start, and its last day). The triggers look an
-- instant's day up here instead of recomputing the rule in SQL: the rule is written once, in the
-- API's code, and the two cannot disagree. `migrate` also drops the SQL rule this replaces
-- (`edgerail_day_of`, `edgerail_service_day`) once no tag function calls it.
CREATE TABLE service_day_runs (
    starts_at TIMESTAMPTZ PRIMARY KEY,
    day       DATE NOT NULL,
    last_day  DATE NOT NULL CHECK (last_day >= day)
);
