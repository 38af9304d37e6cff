//! The learned warm set: which paths the edge fetched from the origin, how often, and when last.
//!
//! Every request that reaches the API came from an edge that did not hold the answer (or was
//! refreshing it), so the API's own requests are a record of what the edge holds. Each API instance
//! keeps a bounded tally and adds it to `learned_paths` with one statement at most once a minute
//! ([`record`]); the warmer reads the most fetched paths ([`top`]) and bounds the table each tick
//! ([`prune`]).
//!
//! The write cost is one statement per instance per flush interval that served anything: with
//! the defaults, at most 60 an hour, 43,200 a month, for an instance serving all the time, each
//! upserting at most `LEARN_MAX_PATHS` rows.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::{Db, Statement, timestamp_text};
use crate::error::{StoreError, StoreResult};

/// One learned path.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct LearnedPath {
    /// The path and query as the edge asked for it.
    pub path: String,
    /// Origin fetches counted for it.
    pub fetches: i64,
    /// The latest of them.
    pub last_fetched_at: DateTime<Utc>,
}

/// Adds an instance's tally to the table: each path's fetches are added to what is there, and its
/// last fetch is the later of the two. One statement, whatever the number of paths.
///
/// Rows are written in path order, so two instances flushing at once lock the rows they share in
/// the same order and never deadlock. The round trip is bounded as a read's is: a silent
/// connection is dropped, never held (an instance on Lambda has one).
///
/// # Errors
///
/// The database failed; nothing was written.
pub async fn record(db: &Db, tally: &[LearnedPath]) -> StoreResult<()> {
    if tally.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<&LearnedPath> = tally.iter().collect();
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    let json: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::json!([r.path, r.fetches, timestamp_text(r.last_fetched_at)])).collect();
    let json = serde_json::Value::Array(json).to_string();
    db.write_bounded(Statement::new(db.sql().record_learned).bind(json.as_str())).await
}

/// The `limit` most fetched paths, the most fetched first (ties: the latest fetched first).
///
/// # Errors
///
/// The database failed.
pub async fn top(db: &Db, limit: usize) -> StoreResult<Vec<LearnedPath>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.fetch(Statement::new(db.sql().learned_top).bind(limit)).await?.decode()
}

/// Bounds the table: deletes the paths not fetched within `max_age`, and all but the `keep` most
/// fetched. Returns how many rows went.
///
/// # Errors
///
/// The database failed.
pub async fn prune(db: &Db, max_age: Duration, keep: usize) -> StoreResult<u64> {
    let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    db.execute(Statement::new(db.sql().prune_learned).bind(secs).bind(keep)).await
}

/// The distinct values of a column the policy's tables name in their tags, as text, in order: the
/// ids a warm route's parameter can take. Only declared tables and columns can be read, so the
/// statement is built from the embedded policy's names, never from input.
///
/// # Errors
///
/// [`StoreError::Undeclared`] for a table or column the policy does not declare; the database
/// failed.
pub async fn column_values(db: &Db, table: &str, column: &str) -> StoreResult<Vec<String>> {
    let (.., sql) = value_statements()
        .iter()
        .find(|(t, c, _)| *t == table && *c == column)
        .ok_or_else(|| StoreError::Undeclared(format!("{table}.{column}")))?;
    let rows: Vec<(String,)> = db.fetch(Statement::new(sql)).await?.decode()?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// One statement per (table, column) named in a tag of the embedded policy. The names are SQL
/// identifiers (the policy refuses others when it loads), so they need no quoting.
fn value_statements() -> &'static [(&'static str, &'static str, String)] {
    static STATEMENTS: OnceLock<Vec<(&'static str, &'static str, String)>> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        let Ok(policy) = cache_policy::Policy::embedded() else { return Vec::new() };
        policy
            .tables()
            .iter()
            .flat_map(|table| {
                table.tags.iter().flat_map(|tag| tag.template.params()).map(move |column| {
                    let sql = format!(
                        "SELECT DISTINCT CAST({column} AS TEXT) FROM {name} WHERE {column} IS NOT NULL ORDER BY 1",
                        name = table.name
                    );
                    (table.name.as_str(), column, sql)
                })
            })
            .collect()
    })
}
