-- API builds the warmer has seen answer through the edge. A build seen for the first time (after
-- another) means new code is serving: the edge copies made by the old code are invalidated once.
CREATE TABLE deploys (
    build           TEXT PRIMARY KEY NOT NULL,
    first_seen_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    invalidation_id TEXT
);
