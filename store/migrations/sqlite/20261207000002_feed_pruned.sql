-- The change feed reads changes by id, processed or not, so a reader that last polled before a
-- change was processed and pruned would never see it. The prune records here the latest
-- `processed_at` it has deleted (or is about to); a poll from a position read before that time
-- reports its page lost (an overflow: the reader drops everything it cached and starts afresh).
-- Timestamps are `%Y-%m-%dT%H:%M:%fZ` text, as `processed_at` is; the empty text sorts first.
CREATE TABLE cache_feed_pruned (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    through TEXT NOT NULL
);
INSERT INTO cache_feed_pruned (id, through) VALUES (1, '');
