-- API builds the warmer has seen answer through the edge. A build seen for the first time (after
-- another) means new code is serving: the edge copies made by the old code are invalidated once.
CREATE TABLE deploys (
    build           TEXT PRIMARY KEY,
    first_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    invalidation_id TEXT
);
