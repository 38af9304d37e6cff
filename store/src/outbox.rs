//! The warmer's side of the change feed: claiming pending `cache_changes` rows, marking them
//! processed once the backend accepted their invalidation, pruning old ones, and the warmer's own
//! bookkeeping (sent invalidations, warm state).
//!
//! A claim is a database transaction that stays open while the backend is called. On PostgreSQL
//! the rows are locked `FOR UPDATE SKIP LOCKED`, so a second warmer running at the same time skips
//! them; on SQLite the claim takes the write lock (`BEGIN IMMEDIATE`), so a second warmer waits and
//! then finds them processed. If the warmer fails or dies before completing, the transaction rolls
//! back and the changes stay pending for the next tick: at-least-once, never lost.
//!
//! Every statement here runs inside an explicit transaction with unnamed statements: behind
//! PgBouncer transaction pooling or RDS Proxy, the parse and the execution of one statement could
//! otherwise land on two different server connections.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::{Begin, Db, Tx};
use crate::error::StoreResult;
use crate::sql::RECORD_INVALIDATION;
use crate::statement::Statement;

/// What the database could see at one moment: a PostgreSQL snapshot, or SQLite's last change id.
/// A claim made with a mark takes only the changes visible at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleMark(String);

/// What a claim holds in `invalidation_id` until it completes. Only the claim's own transaction
/// ever sees it: completing replaces it before the commit, and releasing rolls it back. So one
/// constant serves every claim.
const CLAIMING: &str = "(claimed, not yet accepted)";

/// One tag among the claimed changes, with the changes that carried it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedTag {
    /// The tag.
    pub tag: String,
    /// How many claimed changes carried it.
    pub changes: i64,
    /// The lowest of their ids.
    pub first_id: i64,
    /// The highest of their ids.
    pub last_id: i64,
}

/// Claimed changes, held until [`Claim::complete`] or [`Claim::release`] (or drop).
///
/// A claim takes every pending change its mark saw, coalesced by tag: a backlog of any size drains
/// in one tick, and what a tick plans and sends grows with the distinct tags, never with rows.
#[derive(Debug)]
pub struct Claim {
    /// The open transaction holding the claim.
    tx: Tx,
    /// The statement that completes it, in its backend's dialect.
    complete: &'static str,
    /// The claimed tags, ordered by their first change.
    pub tags: Vec<ClaimedTag>,
}

/// What to record about an accepted invalidation.
#[derive(Debug, Clone)]
pub struct Accepted<'a> {
    /// Backend id of the invalidation (`None`: the changes needed no invalidation).
    pub id: Option<&'a str>,
    /// Backend name.
    pub backend: &'a str,
    /// The caller reference sent.
    pub caller_reference: &'a str,
    /// Items in the batch.
    pub items: usize,
    /// Status reported by the backend.
    pub status: &'a str,
}

impl Claim {
    /// Changes claimed, over all tags.
    pub fn changes(&self) -> usize {
        self.tags.iter().map(|t| usize::try_from(t.changes).unwrap_or(0)).sum()
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Releases the claim without processing anything: the changes stay pending for the next
    /// tick. (Dropping a claim does the same, but only once its connection is next used; this
    /// rolls back now, so SQLite's write lock is free at once.)
    pub async fn release(self) {
        if let Err(err) = self.tx.rollback().await {
            tracing::warn!(error = %err, "releasing a claim failed; the connection will roll back on reuse");
        }
    }

    /// Marks the claimed changes processed with the invalidation id (one statement, whatever
    /// their number), records the invalidation, and releases the claim.
    ///
    /// # Errors
    ///
    /// The database failed; the changes stay pending.
    pub async fn complete(self, accepted: &Accepted<'_>) -> StoreResult<()> {
        let changes = i64::try_from(self.changes()).unwrap_or(i64::MAX);
        let mut tx = self.tx;
        tx.execute(Statement::new(self.complete).bind(accepted.id).bind(CLAIMING)).await?;
        record(&mut tx, accepted, changes).await?;
        tx.commit().await
    }
}

/// Inserts the record of an accepted invalidation (nothing when it had no id).
async fn record(tx: &mut Tx, accepted: &Accepted<'_>, changes: i64) -> StoreResult<()> {
    let Some(id) = accepted.id else { return Ok(()) };
    let insert = Statement::new(RECORD_INVALIDATION)
        .bind(id)
        .bind(accepted.backend)
        .bind(accepted.caller_reference)
        .bind(i64::try_from(accepted.items).unwrap_or(i64::MAX))
        .bind(changes)
        .bind(accepted.status);
    tx.execute(insert).await?;
    Ok(())
}

/// The pending part of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Changes not processed yet.
    pub count: i64,
    /// When the oldest of them was recorded.
    pub oldest: Option<DateTime<Utc>>,
}

/// A sent invalidation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvalidationRecord {
    /// Backend id.
    pub id: String,
    /// Backend name.
    pub backend: String,
    /// Items in the batch.
    pub items: i64,
    /// Changes it covered.
    pub changes: i64,
    /// Status when sent.
    pub status: String,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
}

/// What the warmer knows of an API build it has just seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildSeen {
    /// The build seen last: nothing to do.
    Known,
    /// The first build ever seen: the edge holds nothing from an older one.
    First,
    /// Other code answered last (a new build, or a rollback to an older one): the edge may hold
    /// that code's answers.
    Deployed {
        /// This sighting's place in the order of builds seen; it tells one deploy of a build from
        /// a later one (CloudFront treats a repeated `CallerReference` as the same request).
        sequence: i64,
    },
}

impl Db {
    /// The present [`VisibleMark`].
    ///
    /// The warmer takes a mark, waits its settle time, then claims what the mark saw: every claimed
    /// change has then been visible (committed) for at least the settle time, whenever its transaction
    /// started, so every API instance has had time to evict it before the edge is refilled.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn visible_mark(&self) -> StoreResult<VisibleMark> {
        let (mark,) = self.fetch(Statement::new(self.sql().visible_mark)).await?.one::<(String,)>("visibility mark")?;
        Ok(VisibleMark(mark))
    }

    /// Claims the pending changes that were visible at `mark`, of at most `max_tags` distinct tags
    /// (the earliest changed first; the rest wait for the next tick).
    ///
    /// # Errors
    ///
    /// The database failed; nothing is claimed.
    pub async fn claim(&self, max_tags: i64, mark: &VisibleMark) -> StoreResult<Claim> {
        let sql = self.sql();
        let mut tx = self.begin(Begin::Write).await?;
        tx.execute(Statement::new(sql.claim).bind(max_tags.max(1)).bind(mark.0.as_str()).bind(CLAIMING)).await?;
        let tags = tx.fetch(Statement::new(sql.claimed).bind(CLAIMING)).await?.decode()?;
        Ok(Claim { tx, complete: sql.complete, tags })
    }

    /// Records an invalidation that covers no claimed change (`cachectl invalidate`).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_invalidation(&self, accepted: &Accepted<'_>) -> StoreResult<()> {
        let mut tx = self.begin(Begin::Deferred).await?;
        record(&mut tx, accepted, 0).await?;
        tx.commit().await
    }

    /// Invalidation items sent to CloudFront since the start of this calendar month (UTC), for the
    /// path budget.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn items_this_month(&self) -> StoreResult<i64> {
        Ok(self.fetch(Statement::new(self.sql().items_this_month)).await?.one::<(i64,)>("sum")?.0)
    }

    /// Pending changes: how many, and when the oldest was recorded.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn pending(&self) -> StoreResult<Pending> {
        const SQL: &str = "SELECT COUNT(*), MIN(changed_at) FROM cache_changes WHERE processed_at IS NULL";
        let (count, oldest) = self.fetch(Statement::new(SQL)).await?.one::<(i64, Option<DateTime<Utc>>)>("count")?;
        Ok(Pending { count, oldest })
    }

    /// Deletes processed changes older than `retention`; returns how many went.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_changes(&self, retention: Duration) -> StoreResult<u64> {
        let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        self.execute(Statement::new(self.sql().prune).bind(secs)).await
    }

    /// The latest `n` invalidations.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn recent_invalidations(&self, n: i64) -> StoreResult<Vec<InvalidationRecord>> {
        const SQL: &str = "SELECT id, backend, CAST(items AS BIGINT), CAST(changes AS BIGINT), status, created_at \
                           FROM cache_invalidations ORDER BY created_at DESC, id DESC LIMIT $1";
        let rows: Vec<(String, String, i64, i64, String, DateTime<Utc>)> =
            self.fetch(Statement::new(SQL).bind(n)).await?.decode()?;
        Ok(rows
            .into_iter()
            .map(|(id, backend, items, changes, status, created_at)| InvalidationRecord {
                id,
                backend,
                items,
                changes,
                status,
                created_at,
            })
            .collect())
    }

    /// When each path was last warmed.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn warm_state(&self) -> StoreResult<HashMap<String, DateTime<Utc>>> {
        const SQL: &str = "SELECT path, warmed_at FROM warm_state";
        let rows: Vec<(String, DateTime<Utc>)> = self.fetch(Statement::new(SQL)).await?.decode()?;
        Ok(rows.into_iter().collect())
    }

    /// Records warm results: `(path, status, x_cache)`.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_warm(&self, results: &[(String, u16, Option<String>)]) -> StoreResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = results.iter().map(|(p, s, x)| serde_json::json!([p, s, x])).collect();
        let json = serde_json::Value::Array(rows).to_string();
        self.execute(Statement::new(self.sql().record_warm).bind(json.as_str())).await?;
        Ok(())
    }

    /// Whether `build` differs from the build seen last, without recording it (the warmer records it
    /// with [`record_build`] once the invalidation it calls for was accepted, so a failure is
    /// retried). Compared with the last build, not with every build ever seen: rolling back to an
    /// earlier build is a deploy as well.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn build_status(&self, build: &str) -> StoreResult<BuildSeen> {
        const SQL: &str = "SELECT build, CAST(seen_seq AS BIGINT) FROM deploys ORDER BY seen_seq DESC LIMIT 1";
        let last: Option<(String, i64)> = self.fetch(Statement::new(SQL)).await?.first()?;
        Ok(match last {
            None => BuildSeen::First,
            Some((last, _)) if last == build => BuildSeen::Known,
            Some((_, sequence)) => BuildSeen::Deployed { sequence: sequence + 1 },
        })
    }

    /// Records `build` as the build seen last, with the invalidation sent for it, if any.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_build(&self, build: &str, invalidation_id: Option<&str>) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO deploys (build, invalidation_id, seen_seq) \
                           VALUES ($1, $2, (SELECT COALESCE(MAX(seen_seq), 0) + 1 FROM deploys)) \
                           ON CONFLICT (build) DO UPDATE SET seen_seq = excluded.seen_seq, \
                           invalidation_id = COALESCE(excluded.invalidation_id, deploys.invalidation_id)";
        self.execute(Statement::new(SQL).bind(build).bind(invalidation_id)).await?;
        Ok(())
    }
}
