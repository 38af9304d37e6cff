-- What the edge fetched from the origin, learned by the API: every request that reaches an API
-- instance came from an edge that did not hold the answer (or was refreshing it). Each instance
-- adds what it answered here, at most once a minute and never on a request's path; warmers'
-- own fetches are not counted. The warmer warms from this table, and bounds it each tick (paths
-- not fetched within WARM_LEARNED_MAX_AGE go, and only the WARM_LEARNED_MAX most fetched stay).
CREATE TABLE learned_paths (
    path            TEXT PRIMARY KEY,
    fetches         BIGINT NOT NULL,
    last_fetched_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX learned_paths_rank ON learned_paths (fetches DESC, last_fetched_at DESC, path);
