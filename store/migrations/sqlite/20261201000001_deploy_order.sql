-- The order in which builds were seen answering, latest highest: a build seen again after another
-- (a rollback) is a deploy too, and must flush what the other build put at the edge.
-- (SQLite has no TRUNCATE: `DELETE FROM t` fires the row triggers whenever triggers exist.)
ALTER TABLE deploys ADD COLUMN seen_seq INTEGER NOT NULL DEFAULT 0;
UPDATE deploys SET seen_seq = (
    SELECT COUNT(*) FROM deploys d
    WHERE d.first_seen_at < deploys.first_seen_at
       OR (d.first_seen_at = deploys.first_seen_at AND d.build <= deploys.build)
);
