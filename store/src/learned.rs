//! The learned warm set: which paths the edge fetched from the origin, how often, and when last.
//!
//! Every request that reaches the API came from an edge that did not hold the answer (or was
//! refreshing it), so the API's own requests are a record of what the edge holds. Each API instance
//! keeps a bounded tally and adds it to `learned_paths` with one statement at most once a minute
//! ([`Db::record_learned`]); the warmer reads the most fetched paths ([`Db::learned_top`]) and
//! bounds the table each tick ([`Db::prune_learned`]).
//!
//! The write cost is one statement per instance per flush interval that served anything: with
//! the defaults, at most 60 an hour, 43,200 a month, for an instance serving all the time, each
//! upserting at most `LEARN_MAX_PATHS` rows.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::error::{StoreError, StoreResult};
use crate::statement::{Limit, Statement, timestamp_text};

/// One learned path.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct LearnedPath {
    /// The path and query as the edge asked for it.
    pub path: String,
    /// Origin fetches counted for it.
    pub fetches: i64,
    /// The latest of them.
    pub last_fetched_at: DateTime<Utc>,
    /// Whether the latest answer was one that exists (not a `404`): paths that do not exist rank
    /// below every path that does.
    pub found: bool,
}

impl Db {
    /// Adds an instance's tally to the table: each path's fetches are added to what is there, and
    /// its last fetch is the later of the two. One statement, whatever the number of paths.
    ///
    /// Rows are written in path order, so two instances flushing at once lock the rows they share
    /// in the same order and never deadlock. The round trip is bounded as a read's is: a silent
    /// connection is dropped, never held (an instance on Lambda has one).
    ///
    /// # Errors
    ///
    /// The database failed; nothing was written.
    pub async fn record_learned(&self, tally: &[LearnedPath]) -> StoreResult<()> {
        if tally.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<&LearnedPath> = tally.iter().collect();
        rows.sort_by(|a, b| a.path.cmp(&b.path));
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!([r.path, r.fetches, timestamp_text(r.last_fetched_at), r.found]))
            .collect();
        let json = serde_json::Value::Array(json).to_string();
        self.write([Statement::new(self.sql().record_learned).bind(json.as_str())]).await.map(drop)
    }

    /// The `limit` paths the edge fetched most lately, first: those that exist, by their decayed
    /// count (a fetch ten minutes old weighs half of one now, an hour old a seventh), then those
    /// answered `404`. Recent traffic wins, and ids that do not exist never displace a page.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn learned_top(&self, limit: usize) -> StoreResult<Vec<LearnedPath>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let [top] = self.read(Limit::Data, [Statement::new(self.sql().learned_top).bind(limit)]).await?;
        top.decode()
    }

    /// Bounds the table: deletes the paths not fetched within `max_age`, and all but the `keep`
    /// ranked first (see [`Db::learned_top`]). Returns how many rows went. Reads first, and writes only when something is
    /// to go: a tick with nothing to prune takes no write lock.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_learned(&self, max_age: Duration, keep: usize) -> StoreResult<u64> {
        let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let sql = self.sql();
        self.prune_if_any(
            Statement::new(sql.learned_prunable).bind(secs).bind(keep),
            [Statement::new(sql.prune_learned).bind(secs).bind(keep)],
        )
        .await
    }

    /// The distinct values of a column that `table` names in its tags, as text, in order: the ids
    /// a warm route's parameter can take. Only a column the table's tags name can be read, and
    /// the statement is built from the policy's names alone, never from input.
    ///
    /// # Errors
    ///
    /// [`StoreError::Undeclared`] for a column no tag of `table` names; the database failed.
    pub async fn column_values(&self, table: &cache_policy::Table, column: &str) -> StoreResult<Vec<String>> {
        if !table.tags.iter().any(|tag| tag.template.params().any(|p| p == column)) {
            return Err(StoreError::Undeclared(format!("{}.{column}", table.name)));
        }
        const VALUES: &str = "SELECT DISTINCT CAST({1} AS TEXT) FROM {0} WHERE {1} IS NOT NULL ORDER BY 1";
        let [rows] = self.read(Limit::Data, [Statement::naming(VALUES, &[&table.name, column])?]).await?;
        let rows: Vec<(String,)> = rows.decode()?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }
}
