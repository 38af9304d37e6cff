-- State of the warmer: the invalidations it sent (for the monthly path budget and `cachectl status`)
-- and when each warm-set path was last fetched (so warming is no more frequent than edge TTLs need).

CREATE TABLE cache_invalidations (
    id               TEXT PRIMARY KEY,
    backend          TEXT        NOT NULL,
    caller_reference TEXT        NOT NULL,
    items            INT         NOT NULL,
    changes          INT         NOT NULL,
    status           TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX cache_invalidations_created ON cache_invalidations (created_at DESC);

CREATE TABLE warm_state (
    path      TEXT PRIMARY KEY,
    warmed_at TIMESTAMPTZ NOT NULL,
    status    INT         NOT NULL,
    x_cache   TEXT
);
