-- Each change row records its writer's (top-level) transaction id, so readers can ask for "what
-- became visible since my last snapshot" instead of "ids above the last one I saw": a transaction
-- takes its ids when it writes but makes them visible when it commits, possibly after later ids
-- were read. The index serves those reads (`xid >= snapshot xmin`).
ALTER TABLE cache_changes ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX cache_changes_xid ON cache_changes (xid);

-- The warmer prunes processed changes older than its retention window.
CREATE INDEX cache_changes_processed ON cache_changes (processed_at) WHERE processed_at IS NOT NULL;
