//! The warmer's side of the change feed: claiming pending `cache_changes` rows, marking them
//! processed once the backend accepted their invalidation, and the warmer's own bookkeeping
//! (sent invalidations, warm state).
//!
//! A claim is a database transaction that stays open while the backend is called. On PostgreSQL
//! the rows are locked `FOR UPDATE SKIP LOCKED`, so a second warmer running at the same time skips
//! them; on SQLite the claim takes the write lock (`BEGIN IMMEDIATE`), so a second warmer waits and
//! then finds them processed. If the warmer fails or dies before completing, the transaction rolls
//! back and the changes stay pending for the next tick: at-least-once, never lost.

use std::collections::HashMap;
use std::time::Duration;

use api::store::{Change, Db};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};

/// A database failure in the warmer.
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct FeedError(#[from] sqlx::Error);

/// Claimed changes, locked until [`Claim::complete`] or drop.
#[derive(Debug)]
pub struct Claim {
    /// The open transaction holding the claim.
    tx: ClaimTx,
    /// The claimed rows, ordered by id.
    pub changes: Vec<Change>,
}

#[derive(Debug)]
enum ClaimTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Records a sent invalidation (both dialects accept this statement).
const RECORD_INVALIDATION: &str = "INSERT INTO cache_invalidations (id, backend, caller_reference, items, changes, status) \
                                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";

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

/// Claims up to `limit` pending changes.
///
/// # Errors
///
/// The database failed.
/// Changes recorded less than `settle` ago are left for the next tick.
pub async fn claim(db: &Db, limit: i64, settle: Duration) -> Result<Claim, FeedError> {
    let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
    match db {
        Db::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let changes = sqlx::query_as::<_, Change>(
                "SELECT id, tag FROM cache_changes WHERE processed_at IS NULL \
                 AND changed_at <= now() - make_interval(secs => $2::float8 / 1000) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .persistent(false)
            .bind(limit)
            .bind(settle_ms)
            .fetch_all(&mut *tx)
            .await?;
            Ok(Claim { tx: ClaimTx::Postgres(tx), changes })
        }
        Db::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let changes = sqlx::query_as::<_, Change>(
                "SELECT id, tag FROM cache_changes WHERE processed_at IS NULL \
                 AND changed_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%.3f seconds', $2 / 1000.0)) \
                 ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .bind(settle_ms)
            .fetch_all(&mut *tx)
            .await?;
            Ok(Claim { tx: ClaimTx::Sqlite(tx), changes })
        }
    }
}

impl Claim {
    /// Ids of the claimed changes.
    pub fn ids(&self) -> Vec<i64> {
        self.changes.iter().map(|c| c.id).collect()
    }

    /// Marks the claimed changes processed with the invalidation id, records the invalidation,
    /// and releases the claim.
    ///
    /// # Errors
    ///
    /// The database failed; the changes stay pending.
    pub async fn complete(self, accepted: &Accepted<'_>) -> Result<(), FeedError> {
        let ids = self.ids();
        let changes = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let items = i64::try_from(accepted.items).unwrap_or(i64::MAX);
        match self.tx {
            ClaimTx::Postgres(mut tx) => {
                sqlx::query("UPDATE cache_changes SET processed_at = now(), invalidation_id = $1 WHERE id = ANY($2)")
                    .persistent(false)
                    .bind(accepted.id)
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                if let Some(id) = accepted.id {
                    sqlx::query(RECORD_INVALIDATION)
                        .persistent(false)
                        .bind(id)
                        .bind(accepted.backend)
                        .bind(accepted.caller_reference)
                        .bind(items)
                        .bind(changes)
                        .bind(accepted.status)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            ClaimTx::Sqlite(mut tx) => {
                let json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                sqlx::query(
                    "UPDATE cache_changes SET processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), invalidation_id = $1 \
                     WHERE id IN (SELECT value FROM json_each($2))",
                )
                .bind(accepted.id)
                .bind(json)
                .execute(&mut *tx)
                .await?;
                if let Some(id) = accepted.id {
                    sqlx::query(RECORD_INVALIDATION)
                        .bind(id)
                        .bind(accepted.backend)
                        .bind(accepted.caller_reference)
                        .bind(items)
                        .bind(changes)
                        .bind(accepted.status)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// Records an invalidation that covers no claimed change (`cachectl invalidate`). It goes through an
/// empty claim, so the statement and its bindings live in [`Claim::complete`] only.
///
/// # Errors
///
/// The database failed.
pub async fn record_invalidation(db: &Db, accepted: &Accepted<'_>) -> Result<(), FeedError> {
    claim(db, 0, Duration::ZERO).await?.complete(accepted).await
}

/// Invalidation items sent since the start of this calendar month (UTC), for the path budget.
///
/// # Errors
///
/// The database failed.
pub async fn items_this_month(db: &Db) -> Result<i64, FeedError> {
    let (n,): (i64,) = match db {
        Db::Postgres(s) => {
            sqlx::query_as(
                "SELECT COALESCE(SUM(items), 0)::BIGINT FROM cache_invalidations \
                 WHERE backend = 'cloudfront' AND created_at >= date_trunc('month', now())",
            )
            .persistent(false)
            .fetch_one(s.pool())
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(
                "SELECT COALESCE(SUM(items), 0) FROM cache_invalidations \
                 WHERE backend = 'cloudfront' AND created_at >= strftime('%Y-%m-01T00:00:00', 'now')",
            )
            .fetch_one(s.pool())
            .await?
        }
    };
    Ok(n)
}

/// Pending changes: how many, and when the oldest was recorded.
///
/// # Errors
///
/// The database failed.
pub async fn pending(db: &Db) -> Result<(i64, Option<String>), FeedError> {
    const SQL: &str = "SELECT COUNT(*), MIN(changed_at) FROM cache_changes WHERE processed_at IS NULL";
    Ok(match db {
        Db::Postgres(s) => {
            let (n, oldest): (i64, Option<DateTime<Utc>>) =
                sqlx::query_as(SQL).persistent(false).fetch_one(s.pool()).await?;
            (n, oldest.map(|t| t.to_rfc3339()))
        }
        Db::Sqlite(s) => sqlx::query_as(SQL).fetch_one(s.pool()).await?,
    })
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
    /// When it was sent (RFC 3339).
    pub created_at: String,
}

/// The latest `n` invalidations.
///
/// # Errors
///
/// The database failed.
pub async fn recent_invalidations(db: &Db, n: i64) -> Result<Vec<InvalidationRecord>, FeedError> {
    const SQL: &str = "SELECT id, backend, items, changes, status, created_at FROM cache_invalidations \
                       ORDER BY created_at DESC, id DESC LIMIT $1";
    Ok(match db {
        Db::Postgres(s) => {
            let rows: Vec<(String, String, i32, i32, String, DateTime<Utc>)> =
                sqlx::query_as(SQL).persistent(false).bind(n).fetch_all(s.pool()).await?;
            rows.into_iter()
                .map(|(id, backend, items, changes, status, at)| InvalidationRecord {
                    id,
                    backend,
                    items: items.into(),
                    changes: changes.into(),
                    status,
                    created_at: at.to_rfc3339(),
                })
                .collect()
        }
        Db::Sqlite(s) => {
            let rows: Vec<(String, String, i64, i64, String, String)> =
                sqlx::query_as(SQL).bind(n).fetch_all(s.pool()).await?;
            rows.into_iter()
                .map(|(id, backend, items, changes, status, created_at)| InvalidationRecord {
                    id,
                    backend,
                    items,
                    changes,
                    status,
                    created_at,
                })
                .collect()
        }
    })
}

/// When each path was last warmed.
///
/// # Errors
///
/// The database failed.
pub async fn warm_state(db: &Db) -> Result<HashMap<String, DateTime<Utc>>, FeedError> {
    const SQL: &str = "SELECT path, warmed_at FROM warm_state";
    Ok(match db {
        Db::Postgres(s) => {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(SQL).persistent(false).fetch_all(s.pool()).await?;
            rows.into_iter().collect()
        }
        Db::Sqlite(s) => {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(SQL).fetch_all(s.pool()).await?;
            rows.into_iter().collect()
        }
    })
}

/// Records warm results: `(path, status, x_cache)`.
///
/// # Errors
///
/// The database failed.
pub async fn record_warm(db: &Db, results: &[(String, u16, Option<String>)]) -> Result<(), FeedError> {
    if results.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = results.iter().map(|(p, s, x)| serde_json::json!([p, s, x])).collect();
    let json = serde_json::Value::Array(rows).to_string();
    match db {
        Db::Postgres(s) => {
            sqlx::query(
                "INSERT INTO warm_state (path, warmed_at, status, x_cache) \
                 SELECT value->>0, now(), (value->>1)::int, value->>2 FROM json_array_elements($1::json) \
                 ON CONFLICT (path) DO UPDATE SET warmed_at = EXCLUDED.warmed_at, status = EXCLUDED.status, x_cache = EXCLUDED.x_cache",
            )
            .persistent(false)
            .bind(json)
            .execute(s.pool())
            .await?;
        }
        Db::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO warm_state (path, warmed_at, status, x_cache) \
                 SELECT value->>0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), value->>1, value->>2 FROM json_each($1) WHERE true \
                 ON CONFLICT (path) DO UPDATE SET warmed_at = excluded.warmed_at, status = excluded.status, x_cache = excluded.x_cache",
            )
            .bind(json)
            .execute(s.pool())
            .await?;
        }
    }
    Ok(())
}
