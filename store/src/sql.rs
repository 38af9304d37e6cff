//! Query text both backends share (standard SQL that PostgreSQL and SQLite accept alike), and
//! the assembly of multi-query answers.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use crate::model::{Formation, FormationSummary, Sighting};

pub(crate) const LINES: &str = "SELECT id, name, color FROM lines ORDER BY id";
pub(crate) const LINE: &str = "SELECT id, name, color FROM lines WHERE id = $1";
pub(crate) const STATIONS: &str =
    "SELECT id, line_id, name, position FROM stations WHERE line_id = $1 ORDER BY position, id";
pub(crate) const FORMATIONS: &str = "SELECT id, series, cars, note FROM formations ORDER BY id";
pub(crate) const FORMATION: &str = "SELECT id, series, cars, note FROM formations WHERE id = $1";
pub(crate) const FORMATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s WHERE s.formation_id = $1 ORDER BY s.seen_at DESC, s.id DESC LIMIT $2";
/// The latest sighting of every formation; the correlated subquery walks the
/// `(formation_id, seen_at DESC, id DESC)` index once per formation.
pub(crate) const LATEST_PER_FORMATION: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM formations f JOIN sightings s ON s.id = (SELECT s2.id FROM sightings s2 WHERE s2.formation_id = f.id \
     ORDER BY s2.seen_at DESC, s2.id DESC LIMIT 1)";
pub(crate) const OPERATIONS: &str =
    "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 ORDER BY number";
pub(crate) const OPERATION: &str =
    "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 AND number = $2";
pub(crate) const OPERATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s WHERE s.operation_number = $1 AND s.seen_at >= $2 AND s.seen_at < $3 \
     ORDER BY s.seen_at DESC, s.id DESC LIMIT 200";
pub(crate) const LATEST_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
     FROM sightings s ORDER BY s.seen_at DESC, s.id DESC LIMIT $1";
pub(crate) const MAX_CHANGE: &str = "SELECT COALESCE(MAX(id), 0) FROM cache_changes";
pub(crate) const HAS_DATA: &str = "SELECT EXISTS (SELECT 1 FROM lines)";
/// After a bulk load: one new row per distinct tag recorded in `($1, $2]` …
pub(crate) const COMPACT_CHANGES_INSERT: &str =
    "INSERT INTO cache_changes (tag) SELECT DISTINCT tag FROM cache_changes WHERE id > $1 AND id <= $2";
/// … then the per-row originals go.
pub(crate) const COMPACT_CHANGES_DELETE: &str = "DELETE FROM cache_changes WHERE id > $1 AND id <= $2";

/// Merges per-formation latest sightings into summaries, keeping the formation order.
pub(crate) fn summaries(formations: Vec<Formation>, latest: Vec<Sighting>) -> Vec<FormationSummary> {
    let mut by_formation: std::collections::HashMap<String, Sighting> =
        latest.into_iter().map(|s| (s.formation_id.clone(), s)).collect();
    formations
        .into_iter()
        .map(|formation| FormationSummary { latest_sighting: by_formation.remove(&formation.id), formation })
        .collect()
}

/// A bulk load records the same tags many times; keep one row per distinct tag recorded after
/// `before`, so API instances and the warmer still see every touched tag without processing
/// thousands of duplicates. Runs inside the load's transaction, on either backend.
pub(crate) async fn compact_changes<DB>(conn: &mut DB::Connection, before: i64) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let (last,): (i64,) = sqlx::query_as(MAX_CHANGE).fetch_one(&mut *conn).await?;
    sqlx::query(COMPACT_CHANGES_INSERT).bind(before).bind(last).execute(&mut *conn).await?;
    sqlx::query(COMPACT_CHANGES_DELETE).bind(before).bind(last).execute(&mut *conn).await?;
    Ok(())
}
