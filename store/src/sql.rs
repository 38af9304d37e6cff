//! Every statement's text: those both backends share (standard SQL that PostgreSQL and SQLite
//! accept alike), and in [`Dialect`] the few each spells its own way.

use crate::model::{Formation, FormationSummary, Sighting};

pub(crate) const LINES: &str = "SELECT id, name, color FROM lines ORDER BY id";
pub(crate) const LINE: &str = "SELECT id, name, color FROM lines WHERE id = $1";
pub(crate) const STATIONS: &str =
    "SELECT id, line_id, name, position FROM stations WHERE line_id = $1 ORDER BY position, id";
pub(crate) const FORMATIONS: &str = "SELECT id, series, cars, note FROM formations ORDER BY id";
pub(crate) const FORMATION: &str = "SELECT id, series, cars, note FROM formations WHERE id = $1";
pub(crate) const FORMATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s WHERE s.formation_id = $1 ORDER BY s.seen_at DESC, s.id DESC LIMIT $2";
pub(crate) const OPERATIONS: &str =
    "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 ORDER BY number";
pub(crate) const OPERATION: &str =
    "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 AND number = $2";
pub(crate) const OPERATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s WHERE s.operation_number = $1 AND s.seen_at >= $2 AND s.seen_at < $3 \
     ORDER BY s.seen_at DESC, s.id DESC LIMIT 200";
pub(crate) const STATION: &str = "SELECT id, line_id, name, position FROM stations WHERE id = $1";
/// The station's latest sightings, from the `(station_id, seen_at DESC, id DESC)` index.
pub(crate) const STATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s WHERE s.station_id = $1 ORDER BY s.seen_at DESC, s.id DESC LIMIT $2";
pub(crate) const LATEST_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s ORDER BY s.seen_at DESC, s.id DESC LIMIT $1";
pub(crate) const MAX_CHANGE: &str = "SELECT COALESCE(MAX(id), 0) FROM cache_changes";
pub(crate) const HAS_DATA: &str = "SELECT EXISTS (SELECT 1 FROM lines)";
/// After a load that replaced every table: the changes its statements recorded in `($1, $2]` go …
pub(crate) const LOAD_CHANGES_DELETE: &str = "DELETE FROM cache_changes WHERE id > $1 AND id <= $2";
/// … and one row per tag family takes their place.
pub(crate) const RECORD_CHANGE: &str = "INSERT INTO cache_changes (tag) VALUES ($1)";
/// What the demo loader replaces, children first.
pub(crate) const DEMO_TABLES: [&str; 5] = [
    "DELETE FROM sightings",
    "DELETE FROM operations",
    "DELETE FROM stations",
    "DELETE FROM formations",
    "DELETE FROM lines",
];
/// Records a sent invalidation.
pub(crate) const RECORD_INVALIDATION: &str = "INSERT INTO cache_invalidations \
     (id, backend, caller_reference, items, changes, status) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";

/// Merges per-formation latest sightings into summaries, keeping the formation order.
pub(crate) fn summaries(formations: Vec<Formation>, latest: Vec<Sighting>) -> Vec<FormationSummary> {
    let mut by_formation: std::collections::HashMap<String, Sighting> =
        latest.into_iter().map(|s| (s.formation_id.clone(), s)).collect();
    formations
        .into_iter()
        .map(|formation| FormationSummary { latest_sighting: by_formation.remove(&formation.id), formation })
        .collect()
}

/// The statements whose spelling differs between the dialects (time arithmetic, JSON, snapshots,
/// the catalogue). Everything else is one text for both.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// The feed's present position: the snapshot as text (`NULL` on SQLite, whose one writer at a
    /// time makes ids visible in order) and the highest change id it sees, from one statement.
    pub(crate) feed_start: &'static str,
    /// Whether the schema exists (`lines` is there).
    pub(crate) has_schema: &'static str,
    /// The calendar the triggers use: time zone and day start in minutes.
    pub(crate) trigger_calendar: &'static str,
    /// The runs of service days `migrate` wrote that overlap the days `$1` to `$2` (`YYYY-MM-DD`),
    /// in order: start, first day, last day.
    pub(crate) day_runs: &'static str,
    /// The latest sighting of every formation, each found by walking the
    /// `(formation_id, seen_at DESC, id DESC)` index from its newest entry. On PostgreSQL a lateral
    /// subquery, which reads `sightings` only there (a join of `sightings` on the ids a subquery
    /// found let the planner hash the whole table when its statistics were stale, right after a
    /// `TRUNCATE` and reload). Its formation is a range of one value, ordered by: with an
    /// equality the planner may instead walk the index of every sighting newest first and filter,
    /// which for a formation with few sightings or none reads the whole index (measured in the
    /// soak: 35,000 index entries for each of 100 formations, seconds per list). A range keeps the
    /// formation column in the order asked for, which only the formation's index gives.
    pub(crate) latest_per_formation: &'static str,
    /// The demo loader's inserts, a JSON array of rows in `$1`, in the order of
    /// [`crate::demo::DemoData`]'s tables.
    pub(crate) demo_inserts: [&'static str; 5],
    /// Takes the pending changes visible at a mark: `$1` most distinct tags, `$2` visibility mark,
    /// `$3` the claim's token.
    pub(crate) claim: &'static str,
    /// What the claim took, a row per tag: `$1` the claim's token.
    pub(crate) claimed: &'static str,
    /// Records tags as pending changes again, each with what its answers must show (JSON array
    /// `$1` of `[tag, written_by]`): a repair.
    pub(crate) requeue: &'static str,
    /// The same under the claim token `$2`: the repeat a completed claim owes, until its tick
    /// settles it (a tick that dies first leaves it pending, and the next claim takes it).
    pub(crate) owe_repeat: &'static str,
    /// Per tag, what wrote the changes processed within the last `$1` seconds but not the last `$2`
    /// (as `claimed`).
    pub(crate) processed_since: &'static str,
    /// `$1` invalidation id, `$2` the claim's token.
    pub(crate) complete: &'static str,
    /// The current visibility mark, as text.
    pub(crate) visible_mark: &'static str,
    /// Whether a change was pending at mark `$1`.
    pub(crate) pending_at: &'static str,
    /// Takes the lease for holder `$1` for `$2` seconds, returning a row if it did.
    pub(crate) take_lease: &'static str,
    /// Extends the lease holder `$1` still holds by `$2` seconds from now, returning a row if so.
    pub(crate) renew_lease: &'static str,
    /// The database's identity across restores (`system:timeline:database`).
    pub(crate) identity: &'static str,
    /// The same, from what any role may read, where the server denies the cluster's control data.
    pub(crate) identity_fallback: &'static str,
    /// Items sent to CloudFront since the start of this calendar month (UTC).
    pub(crate) items_this_month: &'static str,
    /// `$1` JSON array of `[path, status, x_cache, fetched_at, verified, freshness_ms, verified_at]`.
    pub(crate) record_warm: &'static str,
    /// The warm state of the paths in JSON array `$1`.
    pub(crate) warm_state: &'static str,
    /// Each path's last check through the edge within the last `$1` seconds.
    pub(crate) verified_since: &'static str,
    /// `$1` max age in seconds; a row per deleted path.
    pub(crate) prune_warm_state: &'static str,
    /// Whether a processed change is older than `$1` seconds.
    pub(crate) prunable: &'static str,
    /// Whether a warm state row is older than `$1` seconds.
    pub(crate) warm_state_prunable: &'static str,
    /// Whether an invalidation was recorded before the previous calendar month (UTC).
    pub(crate) invalidations_prunable: &'static str,
    /// Deletes the invalidations recorded before the previous calendar month; a row per deleted one.
    pub(crate) prune_invalidations: &'static str,
    /// Whether a learned path is older than `$1` seconds, or more than `$2` are kept.
    pub(crate) learned_prunable: &'static str,
    /// `$1` retention in seconds: records the latest `processed_at` of the changes old enough to
    /// go in `cache_feed_pruned`, before `prune` deletes (some of) them, so a feed read from an
    /// earlier position reports its loss.
    pub(crate) mark_pruned: &'static str,
    /// `$1` retention in seconds; a row per deleted change, at most 5,000 a call (a tick's delete,
    /// and on SQLite its hold of the write lock, stay short; a bigger backlog takes more ticks).
    pub(crate) prune: &'static str,
    /// `$1` JSON array of `[path, fetches, last_fetched_at, found]`, added to `learned_paths`.
    pub(crate) record_learned: &'static str,
    /// The `$1` most fetched learned paths.
    pub(crate) learned_top: &'static str,
    /// `$1` max age in seconds, `$2` how many of the most fetched stay.
    pub(crate) prune_learned: &'static str,
}

pub(crate) const POSTGRES: Dialect = Dialect {
    latest_per_formation: "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
        FROM formations f CROSS JOIN LATERAL (SELECT s2.id, s2.formation_id, s2.operation_number, s2.station_id, \
        s2.seen_at FROM sightings s2 WHERE s2.formation_id >= f.id AND s2.formation_id <= f.id \
        ORDER BY s2.formation_id, s2.seen_at DESC, s2.id DESC LIMIT 1) s",
    feed_start: "SELECT pg_current_snapshot()::text, COALESCE((SELECT max(id) FROM cache_changes), 0), now()::text",
    has_schema: "SELECT to_regclass('lines') IS NOT NULL",
    trigger_calendar: "SELECT time_zone, (EXTRACT(EPOCH FROM day_start) / 60)::int FROM service_calendar",
    day_runs: "SELECT starts_at, day, last_day FROM service_day_runs \
               WHERE last_day >= $1::date AND day <= $2::date ORDER BY starts_at",
    demo_inserts: [
        "INSERT INTO lines (id, name, color) SELECT value->>0, value->>1, value->>2 FROM json_array_elements($1::json)",
        "INSERT INTO stations (id, line_id, name, position) \
         SELECT value->>0, value->>1, value->>2, (value->>3)::int FROM json_array_elements($1::json)",
        "INSERT INTO formations (id, series, cars, note) \
         SELECT value->>0, value->>1, (value->>2)::int, value->>3 FROM json_array_elements($1::json)",
        "INSERT INTO operations (service_date, number, formation_id) \
         SELECT (value->>0)::date, value->>1, value->>2 FROM json_array_elements($1::json)",
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         SELECT value->>0, value->>1, value->>2, (value->>3)::timestamptz FROM json_array_elements($1::json)",
    ],
    // The lease says no other tick claims meanwhile: a token a dead tick left is overwritten.
    claim: "UPDATE cache_changes SET claim = $3 \
            WHERE processed_at IS NULL AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
              AND tag IN (SELECT tag FROM cache_changes \
                          WHERE processed_at IS NULL AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
                          GROUP BY tag ORDER BY min(id) LIMIT $1)",
    // Per tag, the transactions that wrote its changes, grouped first (a hash aggregate, no sort);
    // more than 1,000 (a backlog) are not listed: answers owing them are not checked.
    // How long ago the first of them committed, where the server records commit timestamps
    // (`track_commit_timestamp`; a transaction from before it was turned on has none, and then
    // `from_commit` is false). A pending change whose invalidation id reads `repair:…` is a
    // repair the warmer requeued (`requeue`): what an answer must show is the original changes'
    // writers it carries, not its own transaction.
    claimed: "SELECT tag, sum(n)::bigint AS changes, min(lo) AS first_id, max(hi) AS last_id, \
              CASE WHEN count(*) <= 1000 THEN string_agg(shows, ',') ELSE '' END AS written_by, \
              COALESCE((EXTRACT(EPOCH FROM now() - min(committed)) * 1000)::bigint, 0) AS age_ms, \
              bool_and(committed IS NOT NULL) AS from_commit, \
              string_agg(shows, ',') FILTER (WHERE repair) AS repaired_by \
              FROM (SELECT tag, xid, count(*) AS n, min(id) AS lo, max(id) AS hi, \
                    bool_or(COALESCE(invalidation_id, '') LIKE 'repair:%') AS repair, \
                    COALESCE(max(substr(invalidation_id, 8)) FILTER (WHERE invalidation_id LIKE 'repair:%'), \
                             xid::text) AS shows, \
                    CASE WHEN current_setting('track_commit_timestamp')::bool \
                         THEN pg_xact_commit_timestamp(xid::xid) END AS committed FROM cache_changes \
                    WHERE claim = $1 AND processed_at IS NULL GROUP BY tag, xid) w \
              GROUP BY tag ORDER BY min(lo)",
    requeue: "INSERT INTO cache_changes (tag, invalidation_id) \
              SELECT value->>0, 'repair:' || (value->>1) FROM json_array_elements($1::json)",
    owe_repeat: "INSERT INTO cache_changes (tag, invalidation_id, claim) \
              SELECT value->>0, 'repair:' || (value->>1), $2 FROM json_array_elements($1::json)",
    // A repair (or a repeat) shows its first batch's writers, as in `claimed`.
    processed_since: "SELECT tag, sum(n)::bigint AS changes, min(lo) AS first_id, max(hi) AS last_id, \
              CASE WHEN count(*) <= 1000 THEN string_agg(shows, ',') ELSE '' END AS written_by, \
              0::bigint AS age_ms, false AS from_commit, NULL::text AS repaired_by \
              FROM (SELECT tag, xid, count(*) AS n, min(id) AS lo, max(id) AS hi, \
                    COALESCE(max(substr(invalidation_id, 8)) FILTER (WHERE invalidation_id LIKE 'repair:%'), \
                             xid::text) AS shows FROM cache_changes \
                    WHERE processed_at >= now() - make_interval(secs => $1::float8) \
                      AND processed_at < now() - make_interval(secs => $2::float8) GROUP BY tag, xid) w \
              GROUP BY tag ORDER BY min(lo)",
    // A repair keeps what it carries (`repair:` and its first batch's writers).
    complete: "UPDATE cache_changes SET processed_at = now(), \
               invalidation_id = CASE WHEN invalidation_id LIKE 'repair:%' THEN invalidation_id ELSE $1 END, \
               claim = NULL WHERE claim = $2 AND processed_at IS NULL",
    visible_mark: "SELECT pg_current_snapshot()::text",
    pending_at: "SELECT EXISTS (SELECT 1 FROM cache_changes \
                 WHERE processed_at IS NULL AND pg_visible_in_snapshot(xid, $1::text::pg_snapshot))",
    take_lease: "UPDATE warmer_lease SET holder = $1, expires_at = now() + make_interval(secs => $2::float8) \
                 WHERE id = 1 AND (holder IS NULL OR holder = $1 OR expires_at < now()) RETURNING holder",
    renew_lease: "UPDATE warmer_lease SET expires_at = now() + make_interval(secs => $2::float8) \
                  WHERE id = 1 AND holder = $1 RETURNING holder",
    // The timeline the server writes on now (the first part of its current WAL file's name):
    // `pg_control_checkpoint()` shows the new one only after the first checkpoint since the
    // promotion that started it.
    identity: "SELECT s.system_identifier::text || ':' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) \
               || ':' || d.oid::text FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()",
    identity_fallback: "SELECT 'database:' || oid::text FROM pg_database WHERE datname = current_database()",
    items_this_month: "SELECT COALESCE(SUM(items), 0)::BIGINT FROM cache_invalidations \
                       WHERE backend = 'cloudfront' AND created_at >= date_trunc('month', now())",
    // A warm request that checked nothing keeps the path's last check.
    record_warm: "INSERT INTO warm_state (path, status, x_cache, fetched_at, verified, freshness_ms, verified_at) \
                  SELECT value->>0, (value->>1)::int, value->>2, (value->>3)::timestamptz, value->>4, \
                  (value->>5)::bigint, (value->>6)::timestamptz \
                  FROM json_array_elements($1::json) ORDER BY 1 \
                  ON CONFLICT (path) DO UPDATE SET fetched_at = EXCLUDED.fetched_at, status = EXCLUDED.status, \
                  x_cache = EXCLUDED.x_cache, \
                  freshness_ms = CASE WHEN EXCLUDED.verified IS NULL THEN warm_state.freshness_ms \
                                 ELSE EXCLUDED.freshness_ms END, \
                  verified = COALESCE(EXCLUDED.verified, warm_state.verified), \
                  verified_at = COALESCE(EXCLUDED.verified_at, warm_state.verified_at)",
    verified_since: "SELECT path, verified, freshness_ms, verified_at FROM warm_state \
                     WHERE verified_at >= now() - make_interval(secs => $1::float8) ORDER BY path",
    warm_state: "SELECT path, fetched_at FROM warm_state WHERE path IN (SELECT json_array_elements_text($1::json))",
    prune_warm_state: "DELETE FROM warm_state WHERE fetched_at < now() - make_interval(secs => $1::float8) RETURNING CAST(1 AS BIGINT)",
    prunable: "SELECT EXISTS (SELECT 1 FROM cache_changes WHERE processed_at IS NOT NULL \
               AND processed_at < now() - make_interval(secs => $1::float8))",
    warm_state_prunable: "SELECT EXISTS (SELECT 1 FROM warm_state \
                          WHERE fetched_at < now() - make_interval(secs => $1::float8))",
    invalidations_prunable: "SELECT EXISTS (SELECT 1 FROM cache_invalidations \
                             WHERE created_at < date_trunc('month', now()) - interval '1 month')",
    prune_invalidations: "DELETE FROM cache_invalidations \
                          WHERE created_at < date_trunc('month', now()) - interval '1 month' RETURNING CAST(1 AS BIGINT)",
    learned_prunable: "SELECT EXISTS (SELECT 1 FROM learned_paths \
                       WHERE last_fetched_at < now() - make_interval(secs => $1::float8)) \
                       OR (SELECT count(*) FROM learned_paths) > $2",
    mark_pruned: "UPDATE cache_feed_pruned SET through = GREATEST(through, (SELECT max(processed_at) FROM cache_changes \
                  WHERE processed_at IS NOT NULL AND processed_at < now() - make_interval(secs => $1::float8)))",
    prune: "DELETE FROM cache_changes WHERE id IN (SELECT id FROM cache_changes WHERE processed_at IS NOT NULL \
            AND processed_at < now() - make_interval(secs => $1::float8) LIMIT 5000) RETURNING CAST(1 AS BIGINT)",
    // The rank: the decayed score, what exists first (see the `learned_rank` migration).
    record_learned: "INSERT INTO learned_paths (path, fetches, last_fetched_at, score, found) \
                     SELECT value->>0, (value->>1)::bigint, (value->>2)::timestamptz, (value->>1)::float8, \
                     (value->>3)::boolean FROM json_array_elements($1::json) \
                     ON CONFLICT (path) DO UPDATE SET fetches = learned_paths.fetches + EXCLUDED.fetches, \
                     score = learned_paths.score * 600.0 / (600.0 + GREATEST(0, \
                         extract(epoch FROM EXCLUDED.last_fetched_at - learned_paths.last_fetched_at))) + EXCLUDED.score, \
                     found = EXCLUDED.found, \
                     last_fetched_at = GREATEST(learned_paths.last_fetched_at, EXCLUDED.last_fetched_at)",
    learned_top: "SELECT path, fetches, last_fetched_at, found FROM learned_paths \
                  ORDER BY found DESC, score * 600.0 / (600.0 + GREATEST(0, extract(epoch FROM now() - last_fetched_at))) DESC, \
                  path LIMIT $1",
    prune_learned: "DELETE FROM learned_paths WHERE last_fetched_at < now() - make_interval(secs => $1::float8) \
                    OR path NOT IN (SELECT path FROM learned_paths ORDER BY found DESC, \
                        score * 600.0 / (600.0 + GREATEST(0, extract(epoch FROM now() - last_fetched_at))) DESC, path LIMIT $2) \
                    RETURNING CAST(1 AS BIGINT)",
};

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Dialect = Dialect {
    latest_per_formation: "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
        FROM formations f JOIN sightings s ON s.id = (SELECT s2.id FROM sightings s2 WHERE s2.formation_id = f.id \
        ORDER BY s2.seen_at DESC, s2.id DESC LIMIT 1)",
    // The last id handed out (`AUTOINCREMENT` keeps it, committed with its row), not the largest
    // id kept: the prune may have deleted the newest rows, and a position must never go back.
    feed_start: "SELECT NULL, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'cache_changes'), 0), \
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    has_schema: "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lines')",
    trigger_calendar: "SELECT time_zone, day_start_min FROM service_calendar",
    day_runs: "SELECT starts_at, day, last_day FROM service_day_runs WHERE last_day >= $1 AND day <= $2 ORDER BY starts_at",
    demo_inserts: [
        "INSERT INTO lines (id, name, color) SELECT value->>0, value->>1, value->>2 FROM json_each($1)",
        "INSERT INTO stations (id, line_id, name, position) \
         SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
        "INSERT INTO formations (id, series, cars, note) \
         SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
        "INSERT INTO operations (service_date, number, formation_id) \
         SELECT value->>0, value->>1, value->>2 FROM json_each($1)",
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
    ],
    // The lease says no other tick claims meanwhile: a token a dead tick left is overwritten.
    claim: "UPDATE cache_changes SET claim = $3 \
            WHERE processed_at IS NULL AND id <= CAST($2 AS INTEGER) \
              AND tag IN (SELECT tag FROM cache_changes WHERE processed_at IS NULL AND id <= CAST($2 AS INTEGER) \
                          GROUP BY tag ORDER BY min(id) LIMIT $1)",
    // SQLite keeps no commit times.
    claimed: "SELECT tag, count(*) AS changes, min(id) AS first_id, max(id) AS last_id, \
              CAST(max(CASE WHEN invalidation_id LIKE 'repair:%' THEN CAST(substr(invalidation_id, 8) AS INTEGER) \
                            ELSE id END) AS TEXT) AS written_by, \
              0 AS age_ms, false AS from_commit, \
              max(CASE WHEN invalidation_id LIKE 'repair:%' THEN substr(invalidation_id, 8) END) AS repaired_by \
              FROM cache_changes \
              WHERE claim = $1 AND processed_at IS NULL GROUP BY tag ORDER BY min(id)",
    requeue: "INSERT INTO cache_changes (tag, invalidation_id) \
              SELECT value->>0, 'repair:' || (value->>1) FROM json_each($1)",
    owe_repeat: "INSERT INTO cache_changes (tag, invalidation_id, claim) \
              SELECT value->>0, 'repair:' || (value->>1), $2 FROM json_each($1)",
    processed_since: "SELECT tag, count(*) AS changes, min(id) AS first_id, max(id) AS last_id, \
              CAST(max(CASE WHEN invalidation_id LIKE 'repair:%' THEN CAST(substr(invalidation_id, 8) AS INTEGER) \
                            ELSE id END) AS TEXT) AS written_by, \
              0 AS age_ms, false AS from_commit, NULL AS repaired_by \
              FROM cache_changes \
              WHERE processed_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)) \
                AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $2)) \
              GROUP BY tag ORDER BY min(id)",
    complete: "UPDATE cache_changes SET processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
               invalidation_id = CASE WHEN invalidation_id LIKE 'repair:%' THEN invalidation_id ELSE $1 END, \
               claim = NULL WHERE claim = $2 AND processed_at IS NULL",
    visible_mark: "SELECT CAST(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'cache_changes'), 0) AS TEXT)",
    pending_at: "SELECT EXISTS (SELECT 1 FROM cache_changes WHERE processed_at IS NULL AND id <= CAST($1 AS INTEGER))",
    take_lease: "UPDATE warmer_lease SET holder = $1, \
                 expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('+%d seconds', $2)) \
                 WHERE id = 1 AND (holder IS NULL OR holder = $1 OR expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
                 RETURNING holder",
    renew_lease: "UPDATE warmer_lease SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('+%d seconds', $2)) \
                  WHERE id = 1 AND holder = $1 RETURNING holder",
    identity: "SELECT 'sqlite'",
    identity_fallback: "SELECT 'sqlite'",
    items_this_month: "SELECT COALESCE(SUM(items), 0) FROM cache_invalidations \
                       WHERE backend = 'cloudfront' AND created_at >= strftime('%Y-%m-01T00:00:00', 'now')",
    record_warm: "INSERT INTO warm_state (path, status, x_cache, fetched_at, verified, freshness_ms, verified_at) \
                  SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 \
                  FROM json_each($1) WHERE true ORDER BY 1 \
                  ON CONFLICT (path) DO UPDATE SET fetched_at = excluded.fetched_at, status = excluded.status, \
                  x_cache = excluded.x_cache, \
                  freshness_ms = CASE WHEN excluded.verified IS NULL THEN warm_state.freshness_ms \
                                 ELSE excluded.freshness_ms END, \
                  verified = COALESCE(excluded.verified, warm_state.verified), \
                  verified_at = COALESCE(excluded.verified_at, warm_state.verified_at)",
    verified_since: "SELECT path, verified, freshness_ms, verified_at FROM warm_state \
                     WHERE verified_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)) \
                     ORDER BY path",
    warm_state: "SELECT path, fetched_at FROM warm_state WHERE path IN (SELECT value FROM json_each($1))",
    prune_warm_state: "DELETE FROM warm_state \
                       WHERE fetched_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)) RETURNING 1",
    prunable: "SELECT EXISTS (SELECT 1 FROM cache_changes WHERE processed_at IS NOT NULL \
               AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)))",
    warm_state_prunable: "SELECT EXISTS (SELECT 1 FROM warm_state \
                          WHERE fetched_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)))",
    invalidations_prunable: "SELECT EXISTS (SELECT 1 FROM cache_invalidations \
                             WHERE created_at < strftime('%Y-%m-%dT%H:%M:%S', 'now', 'start of month', '-1 month'))",
    prune_invalidations: "DELETE FROM cache_invalidations \
                          WHERE created_at < strftime('%Y-%m-%dT%H:%M:%S', 'now', 'start of month', '-1 month') RETURNING 1",
    learned_prunable: "SELECT EXISTS (SELECT 1 FROM learned_paths \
                       WHERE last_fetched_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1))) \
                       OR (SELECT count(*) FROM learned_paths) > $2",
    mark_pruned: "UPDATE cache_feed_pruned SET through = MAX(through, COALESCE((SELECT max(processed_at) FROM cache_changes \
                  WHERE processed_at IS NOT NULL \
                  AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1))), through))",
    prune: "DELETE FROM cache_changes WHERE id IN (SELECT id FROM cache_changes WHERE processed_at IS NOT NULL \
            AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)) LIMIT 5000) RETURNING 1",
    // The rank: the decayed score, what exists first (see the `learned_rank` migration).
    record_learned: "INSERT INTO learned_paths (path, fetches, last_fetched_at, score, found) \
                     SELECT value->>0, value->>1, value->>2, CAST(value->>1 AS REAL), value->>3 FROM json_each($1) \
                     WHERE true ON CONFLICT (path) DO UPDATE SET fetches = learned_paths.fetches + excluded.fetches, \
                     score = learned_paths.score * 600.0 / (600.0 + max(0, \
                         (julianday(excluded.last_fetched_at) - julianday(learned_paths.last_fetched_at)) * 86400.0)) \
                         + excluded.score, \
                     found = excluded.found, \
                     last_fetched_at = max(learned_paths.last_fetched_at, excluded.last_fetched_at)",
    learned_top: "SELECT path, fetches, last_fetched_at, found FROM learned_paths \
                  ORDER BY found DESC, \
                  score * 600.0 / (600.0 + max(0, (julianday('now') - julianday(last_fetched_at)) * 86400.0)) DESC, \
                  path LIMIT $1",
    prune_learned: "DELETE FROM learned_paths \
                    WHERE last_fetched_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1)) \
                    OR path NOT IN (SELECT path FROM learned_paths ORDER BY found DESC, \
                        score * 600.0 / (600.0 + max(0, (julianday('now') - julianday(last_fetched_at)) * 86400.0)) DESC, \
                        path LIMIT $2) \
                    RETURNING 1",
};
