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
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;
use sqlx::{Postgres, Transaction};

use crate::db::Db;
use crate::error::StoreResult;

/// The statements whose spelling differs between the dialects (time arithmetic, JSON, snapshots).
/// Everything else is one text for both.
struct Dialect {
    /// Starts a claim: SQLite must take the write lock up front.
    claim_begin: &'static str,
    /// Takes the pending changes visible at a mark: `$1` most distinct tags, `$2` visibility mark,
    /// `$3` the claim's marker, written into `invalidation_id` until the claim completes.
    claim: &'static str,
    /// What the claim took, a row per tag: `$1` the claim's marker.
    claimed: &'static str,
    /// `$1` invalidation id, `$2` the claim's marker.
    complete: &'static str,
    /// The current visibility mark, as text.
    visible_mark: &'static str,
    /// Items sent to CloudFront since the start of this calendar month (UTC).
    items_this_month: &'static str,
    /// `$1` JSON array of `[path, status, x_cache]`.
    record_warm: &'static str,
    /// `$1` retention in seconds.
    prune: &'static str,
}

const POSTGRES: Dialect = Dialect {
    claim_begin: "BEGIN",
    // SKIP LOCKED: rows another warmer's open claim holds are left to it. `processed_at = now()`
    // (constant in a transaction) lets the later statements find the claim's rows by index.
    claim: "UPDATE cache_changes SET processed_at = now(), invalidation_id = $3 WHERE id IN ( \
                SELECT id FROM cache_changes \
                WHERE processed_at IS NULL AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
                  AND tag IN (SELECT tag FROM cache_changes \
                              WHERE processed_at IS NULL AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
                              GROUP BY tag ORDER BY min(id) LIMIT $1) \
                FOR UPDATE SKIP LOCKED)",
    claimed: "SELECT tag, count(*) AS changes, min(id) AS first_id, max(id) AS last_id FROM cache_changes \
              WHERE processed_at = now() AND invalidation_id = $1 GROUP BY tag ORDER BY min(id)",
    complete: "UPDATE cache_changes SET invalidation_id = $1 WHERE processed_at = now() AND invalidation_id = $2",
    visible_mark: "SELECT pg_current_snapshot()::text",
    items_this_month: "SELECT COALESCE(SUM(items), 0)::BIGINT FROM cache_invalidations \
                       WHERE backend = 'cloudfront' AND created_at >= date_trunc('month', now())",
    record_warm: "INSERT INTO warm_state (path, warmed_at, status, x_cache) \
                  SELECT value->>0, now(), (value->>1)::int, value->>2 FROM json_array_elements($1::json) \
                  ON CONFLICT (path) DO UPDATE SET warmed_at = EXCLUDED.warmed_at, status = EXCLUDED.status, \
                  x_cache = EXCLUDED.x_cache",
    prune: "DELETE FROM cache_changes WHERE processed_at IS NOT NULL \
            AND processed_at < now() - make_interval(secs => $1::float8)",
};

#[cfg(feature = "sqlite")]
const SQLITE: Dialect = Dialect {
    claim_begin: "BEGIN IMMEDIATE",
    // The claim holds the write lock, so nothing else can take these rows meanwhile.
    claim: "UPDATE cache_changes SET processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), invalidation_id = $3 \
            WHERE processed_at IS NULL AND id <= CAST($2 AS INTEGER) \
              AND tag IN (SELECT tag FROM cache_changes WHERE processed_at IS NULL AND id <= CAST($2 AS INTEGER) \
                          GROUP BY tag ORDER BY min(id) LIMIT $1)",
    claimed: "SELECT tag, count(*) AS changes, min(id) AS first_id, max(id) AS last_id FROM cache_changes WHERE invalidation_id = $1 \
              GROUP BY tag ORDER BY min(id)",
    complete: "UPDATE cache_changes SET invalidation_id = $1 WHERE invalidation_id = $2",
    visible_mark: "SELECT CAST(COALESCE(MAX(id), 0) AS TEXT) FROM cache_changes",
    items_this_month: "SELECT COALESCE(SUM(items), 0) FROM cache_invalidations \
                       WHERE backend = 'cloudfront' AND created_at >= strftime('%Y-%m-01T00:00:00', 'now')",
    record_warm: "INSERT INTO warm_state (path, warmed_at, status, x_cache) \
                  SELECT value->>0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), value->>1, value->>2 FROM json_each($1) \
                  WHERE true ON CONFLICT (path) DO UPDATE SET warmed_at = excluded.warmed_at, status = excluded.status, \
                  x_cache = excluded.x_cache",
    prune: "DELETE FROM cache_changes WHERE processed_at IS NOT NULL \
            AND processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', $1))",
};

/// Records a sent invalidation.
const RECORD_INVALIDATION: &str = "INSERT INTO cache_invalidations (id, backend, caller_reference, items, changes, status) \
                                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";

/// Runs `$body` in a transaction on whichever backend `$db` is, with `$tx` the open transaction
/// and `$sql` the backend's [`Dialect`]. The body is written once and compiled for both executor
/// types.
macro_rules! in_tx {
    ($db:expr, |$tx:ident, $sql:ident| $body:block) => {
        match $db {
            Db::Postgres(s) => {
                let $sql = &POSTGRES;
                let mut $tx = s.pool().begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            #[cfg(feature = "sqlite")]
            Db::Sqlite(s) => {
                let $sql = &SQLITE;
                let mut $tx = s.pool().begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// What the database could see at one moment: a PostgreSQL snapshot, or SQLite's last change id.
/// A claim made with a mark takes only the changes visible at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleMark(String);

/// The present [`VisibleMark`].
///
/// The warmer takes a mark, waits its settle time, then claims what the mark saw: every claimed
/// change has then been visible (committed) for at least the settle time, whenever its transaction
/// started, so every API instance has had time to evict it before the edge is refilled.
///
/// # Errors
///
/// The database failed.
pub async fn visible_mark(db: &Db) -> StoreResult<VisibleMark> {
    let (mark,): (String,) =
        in_tx!(db, |tx, sql| { sqlx::query_as(sql.visible_mark).persistent(false).fetch_one(&mut *tx).await? });
    Ok(VisibleMark(mark))
}

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
    tx: ClaimTx,
    /// The claimed tags, ordered by their first change.
    pub tags: Vec<ClaimedTag>,
}

#[derive(Debug)]
enum ClaimTx {
    Postgres(Transaction<'static, Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(Transaction<'static, Sqlite>),
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

/// Claims the pending changes that were visible at `mark`, of at most `max_tags` distinct tags
/// (the earliest changed first; the rest wait for the next tick).
///
/// # Errors
///
/// The database failed; nothing is claimed.
pub async fn claim(db: &Db, max_tags: i64, mark: &VisibleMark) -> StoreResult<Claim> {
    macro_rules! claim_on {
        ($store:expr, $sql:expr, $variant:ident) => {{
            let mut tx = $store.pool().begin_with($sql.claim_begin).await?;
            sqlx::query($sql.claim)
                .persistent(false)
                .bind(max_tags.max(1))
                .bind(&mark.0)
                .bind(CLAIMING)
                .execute(&mut *tx)
                .await?;
            let tags = sqlx::query_as::<_, ClaimedTag>($sql.claimed)
                .persistent(false)
                .bind(CLAIMING)
                .fetch_all(&mut *tx)
                .await?;
            Ok(Claim { tx: ClaimTx::$variant(tx), tags })
        }};
    }
    match db {
        Db::Postgres(s) => claim_on!(s, POSTGRES, Postgres),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(s) => claim_on!(s, SQLITE, Sqlite),
    }
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
        let result = match self.tx {
            ClaimTx::Postgres(tx) => tx.rollback().await,
            #[cfg(feature = "sqlite")]
            ClaimTx::Sqlite(tx) => tx.rollback().await,
        };
        if let Err(err) = result {
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
        macro_rules! complete_on {
            ($tx:expr, $sql:expr) => {{
                let mut tx = $tx;
                sqlx::query($sql.complete).persistent(false).bind(accepted.id).bind(CLAIMING).execute(&mut *tx).await?;
                record(&mut *tx, accepted, changes).await?;
                tx.commit().await?;
            }};
        }
        match self.tx {
            ClaimTx::Postgres(tx) => complete_on!(tx, POSTGRES),
            #[cfg(feature = "sqlite")]
            ClaimTx::Sqlite(tx) => complete_on!(tx, SQLITE),
        }
        Ok(())
    }
}

/// Inserts the record of an accepted invalidation (nothing when it had no id), on either backend.
async fn record<'c, DB, E>(executor: E, accepted: &Accepted<'_>, changes: i64) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database + sqlx::database::HasStatementCache,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let Some(id) = accepted.id else { return Ok(()) };
    sqlx::query(RECORD_INVALIDATION)
        .persistent(false)
        .bind(id)
        .bind(accepted.backend)
        .bind(accepted.caller_reference)
        .bind(i64::try_from(accepted.items).unwrap_or(i64::MAX))
        .bind(changes)
        .bind(accepted.status)
        .execute(executor)
        .await?;
    Ok(())
}

/// Records an invalidation that covers no claimed change (`cachectl invalidate`).
///
/// # Errors
///
/// The database failed.
pub async fn record_invalidation(db: &Db, accepted: &Accepted<'_>) -> StoreResult<()> {
    in_tx!(db, |tx, _sql| { record(&mut *tx, accepted, 0).await? });
    Ok(())
}

/// Invalidation items sent to CloudFront since the start of this calendar month (UTC), for the
/// path budget.
///
/// # Errors
///
/// The database failed.
pub async fn items_this_month(db: &Db) -> StoreResult<i64> {
    let (n,): (i64,) =
        in_tx!(db, |tx, sql| { sqlx::query_as(sql.items_this_month).persistent(false).fetch_one(&mut *tx).await? });
    Ok(n)
}

/// The pending part of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Changes not processed yet.
    pub count: i64,
    /// When the oldest of them was recorded.
    pub oldest: Option<DateTime<Utc>>,
}

/// Pending changes: how many, and when the oldest was recorded.
///
/// # Errors
///
/// The database failed.
pub async fn pending(db: &Db) -> StoreResult<Pending> {
    const SQL: &str = "SELECT COUNT(*), MIN(changed_at) FROM cache_changes WHERE processed_at IS NULL";
    let (count, oldest): (i64, Option<DateTime<Utc>>) =
        in_tx!(db, |tx, _sql| { sqlx::query_as(SQL).persistent(false).fetch_one(&mut *tx).await? });
    Ok(Pending { count, oldest })
}

/// Deletes processed changes older than `retention`; returns how many went.
///
/// # Errors
///
/// The database failed.
pub async fn prune(db: &Db, retention: Duration) -> StoreResult<u64> {
    let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let deleted = in_tx!(db, |tx, sql| {
        sqlx::query(sql.prune).persistent(false).bind(secs).execute(&mut *tx).await?.rows_affected()
    });
    Ok(deleted)
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

/// The latest `n` invalidations.
///
/// # Errors
///
/// The database failed.
pub async fn recent_invalidations(db: &Db, n: i64) -> StoreResult<Vec<InvalidationRecord>> {
    const SQL: &str = "SELECT id, backend, CAST(items AS BIGINT), CAST(changes AS BIGINT), status, created_at \
                       FROM cache_invalidations ORDER BY created_at DESC, id DESC LIMIT $1";
    let rows: Vec<(String, String, i64, i64, String, DateTime<Utc>)> =
        in_tx!(db, |tx, _sql| { sqlx::query_as(SQL).persistent(false).bind(n).fetch_all(&mut *tx).await? });
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
pub async fn warm_state(db: &Db) -> StoreResult<HashMap<String, DateTime<Utc>>> {
    const SQL: &str = "SELECT path, warmed_at FROM warm_state";
    let rows: Vec<(String, DateTime<Utc>)> =
        in_tx!(db, |tx, _sql| { sqlx::query_as(SQL).persistent(false).fetch_all(&mut *tx).await? });
    Ok(rows.into_iter().collect())
}

/// Records warm results: `(path, status, x_cache)`.
///
/// # Errors
///
/// The database failed.
pub async fn record_warm(db: &Db, results: &[(String, u16, Option<String>)]) -> StoreResult<()> {
    if results.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = results.iter().map(|(p, s, x)| serde_json::json!([p, s, x])).collect();
    let json = serde_json::Value::Array(rows).to_string();
    in_tx!(db, |tx, sql| {
        sqlx::query(sql.record_warm).persistent(false).bind(&json).execute(&mut *tx).await?;
    });
    Ok(())
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

/// Whether `build` differs from the build seen last, without recording it (the warmer records it
/// with [`record_build`] once the invalidation it calls for was accepted, so a failure is
/// retried). Compared with the last build, not with every build ever seen: rolling back to an
/// earlier build is a deploy as well.
///
/// # Errors
///
/// The database failed.
pub async fn build_status(db: &Db, build: &str) -> StoreResult<BuildSeen> {
    let last: Option<(String, i64)> = in_tx!(db, |tx, _sql| {
        sqlx::query_as("SELECT build, CAST(seen_seq AS BIGINT) FROM deploys ORDER BY seen_seq DESC LIMIT 1")
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?
    });
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
pub async fn record_build(db: &Db, build: &str, invalidation_id: Option<&str>) -> StoreResult<()> {
    in_tx!(db, |tx, _sql| {
        sqlx::query(
            "INSERT INTO deploys (build, invalidation_id, seen_seq) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(seen_seq), 0) + 1 FROM deploys)) \
             ON CONFLICT (build) DO UPDATE SET seen_seq = excluded.seen_seq, \
             invalidation_id = COALESCE(excluded.invalidation_id, deploys.invalidation_id)",
        )
        .persistent(false)
        .bind(build)
        .bind(invalidation_id)
        .execute(&mut *tx)
        .await?;
    });
    Ok(())
}
