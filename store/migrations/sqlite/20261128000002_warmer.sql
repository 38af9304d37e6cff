-- State of the warmer: the invalidations it sent (for the monthly path budget and `cachectl status`)
-- and when each warm-set path was last fetched (so warming is no more frequent than edge TTLs need).

CREATE TABLE cache_invalidations (
    id               TEXT PRIMARY KEY NOT NULL,
    backend          TEXT    NOT NULL,
    caller_reference TEXT    NOT NULL,
    items            INTEGER NOT NULL,
    changes          INTEGER NOT NULL,
    status           TEXT    NOT NULL,
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX cache_invalidations_created ON cache_invalidations (created_at DESC);

CREATE TABLE warm_state (
    path      TEXT PRIMARY KEY NOT NULL,
    warmed_at TEXT    NOT NULL,
    status    INTEGER NOT NULL,
    x_cache   TEXT
);
