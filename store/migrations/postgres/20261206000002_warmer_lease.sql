-- At most one warmer tick works at a time, whatever invokes it (a schedule whose runs overlap, a
-- person with `warmer --once`): a tick with work takes this lease first, for at most its expiry,
-- and a tick that finds it held ends at once. A lease row, not a session advisory lock, so it holds
-- behind PgBouncer's transaction pooling and RDS Proxy; one that a killed tick left expires.
CREATE TABLE warmer_lease (
    id         INT PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    expires_at TIMESTAMPTZ
);
INSERT INTO warmer_lease (id) VALUES (1);

-- A claim is committed: the claimed changes carry the claiming tick's token until the backend
-- accepted their invalidation (then they are processed) or did not (then the token is cleared).
-- No transaction stays open while the backend is called.
ALTER TABLE cache_changes ADD COLUMN claim TEXT;

-- When the edge last fetched each warm path from the origin (a hit's Age says how long before the
-- warmer's request that was), and pruning by it.
ALTER TABLE warm_state RENAME COLUMN warmed_at TO fetched_at;
CREATE INDEX warm_state_fetched ON warm_state (fetched_at);
