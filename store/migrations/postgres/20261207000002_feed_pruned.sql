-- The change feed reads changes by id, processed or not, so a reader that last polled before a
-- change was processed and pruned would never see it. The prune records here the latest
-- `processed_at` it has deleted (or is about to); a poll from a position read before that time
-- reports its page lost (an overflow: the reader drops everything it cached and starts afresh).
-- A change missing from that position committed after it was read, and was processed after it
-- committed, so this catches every one.
CREATE TABLE cache_feed_pruned (
    id      INT PRIMARY KEY CHECK (id = 1),
    through TIMESTAMPTZ NOT NULL
);
INSERT INTO cache_feed_pruned (id, through) VALUES (1, '-infinity');
