-- What the warmer's last check of a path through the edge found, kept with its record of warming
-- it (no statement more per tick): whether the edge's answer showed the changes its invalidation
-- was sent for (`fresh`, `repaired` after a second invalidation, `stale` after that one too,
-- `unknown` when the answer could not say), when, and for a fresh one how long after the first of
-- those changes became visible. `cachectl status` reads the last hour's.
ALTER TABLE warm_state ADD COLUMN verified TEXT;
ALTER TABLE warm_state ADD COLUMN freshness_ms INTEGER;
ALTER TABLE warm_state ADD COLUMN verified_at TEXT;
CREATE INDEX warm_state_verified ON warm_state (verified_at) WHERE verified_at IS NOT NULL;
