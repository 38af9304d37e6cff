//! The warmer's side of the change feed: its lease, claiming pending `cache_changes` rows, marking
//! them processed once the backend accepted their invalidation, pruning, and the warmer's own
//! bookkeeping (sent invalidations, warm state, builds seen).
//!
//! At most one tick works at a time: a tick with work takes the [lease](Db::take_lease) first,
//! and a tick that finds it held ends at once. A row, not a session lock, so it holds behind
//! transaction pooling; a lease a killed tick left expires.
//!
//! A claim is committed, never a transaction held open: the claimed changes carry the claiming
//! tick's token until the backend accepted their invalidation ([`Claim::complete`] marks them
//! processed) or did not ([`Claim::release`] clears the token). A tick that dies in between
//! leaves them pending, with a stale token the next tick's claim overwrites (the lease says no
//! other tick is claiming): at-least-once, never lost, and no lock (SQLite's write lock, or
//! PostgreSQL's row locks) is held while the backend is called.
//!
//! Every statement here is one bounded round trip (see [`Db::write`]): a silent connection fails
//! the call within the statement timeout instead of holding the tick.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::error::StoreResult;
use crate::sql::RECORD_INVALIDATION;
use crate::statement::{Limit, Statement};

/// What the database could see at one moment: a PostgreSQL snapshot, or SQLite's last change id.
/// A claim made with a mark takes only the changes visible at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleMark(String);

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
    /// What an answer's version must see to show them all ([`crate::version_shows`]): on
    /// PostgreSQL their transactions' ids, comma-separated (empty when more than 1,000 wrote
    /// them: not listed, so not checked); on SQLite the highest change id.
    pub written_by: String,
    /// How long before the claim, on the database's clock, the first of them committed, in
    /// milliseconds; meaningful only when `from_commit`.
    pub age_ms: i64,
    /// Whether the database knows when each of them committed (PostgreSQL with
    /// `track_commit_timestamp` on, for transactions since it was turned on).
    pub from_commit: bool,
    /// When one of them is a repair the warmer requeued ([`Db::requeue`]), what the answers it
    /// repairs must show: an answer still lacking that failed a second time.
    pub repaired_by: Option<String>,
}

/// Claimed changes, until [`Claim::complete`] or [`Claim::release`].
///
/// A claim takes every pending change its mark saw, coalesced by tag: a backlog of any size drains
/// in one tick, and what a tick plans and sends grows with the distinct tags, never with rows.
#[derive(Debug)]
#[must_use = "a claim is completed or released"]
pub struct Claim {
    /// The token the claimed changes carry.
    token: String,
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

    /// Leaves the claimed changes pending for the next tick (the backend did not accept them).
    ///
    /// # Errors
    ///
    /// The database failed: they stay claimed by a token no tick uses, and the next tick's claim
    /// takes them anyway.
    pub async fn release(self, db: &Db) -> StoreResult<()> {
        db.write([Statement::new(RELEASE).bind(self.token.as_str())]).await?;
        Ok(())
    }

    /// Marks the claimed changes processed with the invalidation id and records the invalidation:
    /// one transaction, whatever their number.
    ///
    /// # Errors
    ///
    /// The database failed; the changes stay pending (and are invalidated again by a later tick).
    pub async fn complete(self, db: &Db, accepted: &Accepted<'_>) -> StoreResult<()> {
        let changes = i64::try_from(self.changes()).unwrap_or(i64::MAX);
        let complete = Statement::new(db.sql().complete).bind(accepted.id).bind(self.token.as_str());
        match record(accepted, changes) {
            Some(record) => db.write([complete, record]).await.map(drop),
            None => db.write([complete]).await.map(drop),
        }
    }

    /// As [`Claim::complete`], and in the same transaction records the repeat the batch owes
    /// (`INVALIDATION_REPEAT`: behind a shield, a location the first purge reached before the
    /// shield may have refilled from the shield's old copy): its tags as pending changes again,
    /// each with what its answers must show, under the claim's token. The tick settles them once
    /// it sent the repeat ([`OwedRepeat::settle`]); a tick that dies first (Lambda's timeout),
    /// or whose batch did not complete in time, leaves them pending, and the next tick sends
    /// them as a repair. A tag that is itself a repair owes none (it is the second purge): a
    /// claim of repairs only is completed as by [`Claim::complete`], and owes nothing (`None`).
    ///
    /// # Errors
    ///
    /// The database failed; the changes stay pending, and nothing is owed.
    pub async fn complete_owing_repeat(self, db: &Db, accepted: &Accepted<'_>) -> StoreResult<Option<OwedRepeat>> {
        let owed: Vec<(&str, &str)> = self
            .tags
            .iter()
            .filter(|t| t.repaired_by.is_none())
            .map(|t| (t.tag.as_str(), t.written_by.as_str()))
            .collect();
        if owed.is_empty() {
            self.complete(db, accepted).await?;
            return Ok(None);
        }
        let changes = i64::try_from(self.changes()).unwrap_or(i64::MAX);
        let json = serde_json::to_string(&owed).unwrap_or_else(|_| "[]".into());
        let token = self.token.as_str();
        let complete = Statement::new(db.sql().complete).bind(accepted.id).bind(token);
        let owe = Statement::new(db.sql().owe_repeat).bind(json.as_str()).bind(token);
        match record(accepted, changes) {
            Some(record) => db.write([complete, record, owe]).await.map(drop)?,
            None => db.write([complete, owe]).await.map(drop)?,
        }
        Ok(Some(OwedRepeat { token: self.token, tags: owed.len() }))
    }
}

/// The repeat a completed claim owes ([`Claim::complete_owing_repeat`]), pending until settled.
#[derive(Debug)]
#[must_use = "an owed repeat is settled, or left to the next tick"]
pub struct OwedRepeat {
    /// The claim's token, which the owed changes carry.
    token: String,
    /// How many tags it owes.
    pub tags: usize,
}

impl OwedRepeat {
    /// Marks the owed repeat processed once sent (invalidation `id`). Its changes keep what they
    /// carry (`cachectl verify` reads their first batch's writers from them).
    ///
    /// # Errors
    ///
    /// The database failed: the repeat stays pending, and the next tick sends it again.
    pub async fn settle(self, db: &Db, id: &str) -> StoreResult<()> {
        db.write([Statement::new(db.sql().complete).bind(id).bind(self.token.as_str())]).await.map(drop)
    }

    /// Leaves the owed repeat to the next tick: its batch did not complete in time, CloudFront
    /// already had it from a tick that died before its repeat, or the repeat did not go (over the
    /// month's budget, refused, out of time). The next tick sends it as a repair.
    pub fn leave(self) -> usize {
        self.tags
    }
}

/// What the warmer's check of a path through the edge found ([`Warmed::verified`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// `fresh`, `repaired` (fresh after a second invalidation), `stale` (still after that one) or
    /// `unknown` (the answer could not say).
    pub outcome: &'static str,
    /// For an answer that showed its changes: how long after the first of them became visible.
    pub freshness: Option<Duration>,
    /// When the answer was read.
    pub at: DateTime<Utc>,
}

/// A path's last check through the edge, as [`Db::verified_since`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifiedPath {
    /// The path.
    pub path: String,
    /// What the check found (see [`Verification::outcome`]).
    pub outcome: String,
    /// How long after its changes became visible the edge showed them, in milliseconds.
    pub freshness_ms: Option<i64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Most processed changes one [`Db::prune_changes`] deletes.
pub const PRUNE_BATCH: u64 = 5_000;

/// Clears a claim's token from the changes it did not complete.
const RELEASE: &str = "UPDATE cache_changes SET claim = NULL WHERE claim = $1 AND processed_at IS NULL";

/// The statement recording an accepted invalidation (none when it had no id).
fn record<'a>(accepted: &Accepted<'a>, changes: i64) -> Option<Statement<'a>> {
    let id = accepted.id?;
    Some(
        Statement::new(RECORD_INVALIDATION)
            .bind(id)
            .bind(accepted.backend)
            .bind(accepted.caller_reference)
            .bind(i64::try_from(accepted.items).unwrap_or(i64::MAX))
            .bind(changes)
            .bind(accepted.status),
    )
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

/// Who holds the warmer's lease, when a tick could not take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// Taken: this tick works, until the lease's expiry.
    Taken,
    /// Another tick holds it.
    Held {
        /// Its holder.
        holder: String,
        /// When it expires, unless released before.
        until: Option<DateTime<Utc>>,
    },
}

/// One row of the warm state: when the edge last fetched a path from the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmed {
    /// The path.
    pub path: String,
    /// The status of the warmer's request.
    pub status: u16,
    /// The edge's `X-Cache` answer.
    pub x_cache: Option<String>,
    /// When the edge fetched it from the origin (its `Age` before the warmer's request).
    pub fetched_at: DateTime<Utc>,
    /// What reading it back found, when the request was a check of an invalidation (`None`
    /// keeps the path's last check).
    pub verified: Option<Verification>,
}

impl Db {
    /// Takes the warmer's lease for `holder` until `ttl` from now, unless another holder has it
    /// and it has not expired (the holder may take it again).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn take_lease(&self, holder: &str, ttl: Duration) -> StoreResult<Lease> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let [taken] = self.write([Statement::new(self.sql().take_lease).bind(holder).bind(secs)]).await?;
        if taken.first::<(String,)>()?.is_some() {
            return Ok(Lease::Taken);
        }
        const HOLDER: &str = "SELECT COALESCE(holder, ''), expires_at FROM warmer_lease WHERE id = 1";
        let [held] = self.read(Limit::Data, [Statement::new(HOLDER)]).await?;
        let (holder, until) = held.one::<(String, Option<DateTime<Utc>>)>("lease")?;
        Ok(Lease::Held { holder, until })
    }

    /// Extends the lease `holder` holds by `ttl` from now; `false` when it does not hold it any
    /// more (it expired and another tick took it, whether or not that one has released it since).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn renew_lease(&self, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let [renewed] = self.write([Statement::new(self.sql().renew_lease).bind(holder).bind(secs)]).await?;
        Ok(renewed.first::<(String,)>()?.is_some())
    }

    /// Whether anything is old enough to prune: processed changes past `retention`, learned
    /// paths past `learned_max_age` or beyond the `learned_keep` ranked first, warm state past
    /// `warm_max_age`, invalidations recorded before last month. Reads only.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn anything_to_prune(
        &self,
        retention: Duration,
        learned_max_age: Duration,
        learned_keep: usize,
        warm_max_age: Duration,
    ) -> StoreResult<bool> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let sql = self.sql();
        let [changes, learned, warm, invalidations] = self
            .read(
                Limit::Data,
                [
                    Statement::new(sql.prunable).bind(secs(retention)),
                    Statement::new(sql.learned_prunable)
                        .bind(secs(learned_max_age))
                        .bind(i64::try_from(learned_keep).unwrap_or(i64::MAX)),
                    Statement::new(sql.warm_state_prunable).bind(secs(warm_max_age)),
                    Statement::new(sql.invalidations_prunable),
                ],
            )
            .await?;
        Ok(changes.one::<(bool,)>("prunable")?.0
            || learned.one::<(bool,)>("prunable")?.0
            || warm.one::<(bool,)>("prunable")?.0
            || invalidations.one::<(bool,)>("prunable")?.0)
    }

    /// Gives the lease back, if `holder` still has it.
    ///
    /// # Errors
    ///
    /// The database failed: the lease expires on its own.
    pub async fn release_lease(&self, holder: &str) -> StoreResult<()> {
        const RELEASE_LEASE: &str =
            "UPDATE warmer_lease SET holder = NULL, expires_at = NULL WHERE id = 1 AND holder = $1";
        self.write([Statement::new(RELEASE_LEASE).bind(holder)]).await.map(drop)
    }

    /// The present [`VisibleMark`].
    ///
    /// The warmer takes a mark, waits its settle time, then claims what the mark saw: every claimed
    /// change has then been visible (committed) for at least the settle time, whenever its
    /// transaction started, so every API instance has had time to evict it before the edge is
    /// refilled.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn visible_mark(&self) -> StoreResult<VisibleMark> {
        let [mark] = self.read(Limit::Data, [Statement::new(self.sql().visible_mark)]).await?;
        Ok(VisibleMark(mark.one::<(String,)>("visibility mark")?.0))
    }

    /// Whether any change was pending at `mark` (a read: an idle tick writes nothing).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn pending_at(&self, mark: &VisibleMark) -> StoreResult<bool> {
        let [any] = self.read(Limit::Data, [Statement::new(self.sql().pending_at).bind(mark.0.as_str())]).await?;
        Ok(any.one::<(bool,)>("pending")?.0)
    }

    /// Claims, for the tick holding the lease, the pending changes that were visible at `mark`,
    /// of at most `max_tags` distinct tags (the earliest changed first; the rest wait for the next
    /// tick), under `token`. Committed at once: nothing stays locked meanwhile.
    ///
    /// # Errors
    ///
    /// The database failed; nothing is claimed.
    pub async fn claim(&self, max_tags: i64, mark: &VisibleMark, token: &str) -> StoreResult<Claim> {
        let sql = self.sql();
        let [_, tags] = self
            .write([
                Statement::new(sql.claim).bind(max_tags.max(1)).bind(mark.0.as_str()).bind(token),
                Statement::new(sql.claimed).bind(token),
            ])
            .await?;
        Ok(Claim { token: token.to_owned(), tags: tags.decode()? })
    }

    /// What tells this database's history from a restored copy of it, whose change ids rewind:
    /// on PostgreSQL the cluster's system identifier, the timeline it writes on (a point-in-time
    /// restore starts a new one) and the database's oid (a logical restore, or a copy, makes a
    /// new database). Part of CloudFront's `CallerReference`, so a change after a restore is not
    /// taken for the one before it with the same ids. Where the server denies its control data
    /// to the warmer's role, the database's oid alone (which tells logical restores and copies
    /// apart, not a point-in-time restore of the same cluster).
    ///
    /// # Errors
    ///
    /// The database failed: the tick fails rather than send a reference that could repeat one
    /// of the past, or differ from a retry's.
    pub async fn identity(&self) -> StoreResult<String> {
        let read = |sql: &'static str| async move {
            let [rows] = self.read(Limit::Data, [Statement::new(sql)]).await?;
            rows.one::<(String,)>("identity").map(|(id,)| id)
        };
        match read(self.sql().identity).await {
            Err(err) if err.is_denied() => {
                tracing::warn!(error = %err, "the cluster's control data is denied: CallerReference cannot tell a point-in-time restore");
                read(self.sql().identity_fallback).await
            }
            other => other,
        }
    }

    /// Records an invalidation that covers no claimed change (`cachectl invalidate`, a deploy's).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_invalidation(&self, accepted: &Accepted<'_>) -> StoreResult<()> {
        match record(accepted, 0) {
            Some(record) => self.write([record]).await.map(drop),
            None => Ok(()),
        }
    }

    /// Invalidation items sent to CloudFront since the start of this calendar month (UTC), for the
    /// path budget.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn items_this_month(&self) -> StoreResult<i64> {
        let [sum] = self.read(Limit::Data, [Statement::new(self.sql().items_this_month)]).await?;
        Ok(sum.one::<(i64,)>("sum")?.0)
    }

    /// Pending changes: how many, and when the oldest was recorded.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn pending(&self) -> StoreResult<Pending> {
        const SQL: &str = "SELECT COUNT(*), MIN(changed_at) FROM cache_changes WHERE processed_at IS NULL";
        let [pending] = self.read(Limit::Data, [Statement::new(SQL)]).await?;
        let (count, oldest) = pending.one::<(i64, Option<DateTime<Utc>>)>("count")?;
        Ok(Pending { count, oldest })
    }

    /// Deletes processed changes older than `retention`, at most [`PRUNE_BATCH`] of them (a short
    /// statement, and on SQLite a short hold of the write lock; call again for more); returns
    /// how many went. Reads first, and writes only when something is to go.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_changes(&self, retention: Duration) -> StoreResult<u64> {
        let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let sql = self.sql();
        // The mark first, in the same transaction: no reader can poll past a deleted change
        // without learning of the loss.
        self.prune_if_any(
            Statement::new(sql.prunable).bind(secs),
            [Statement::new(sql.mark_pruned).bind(secs), Statement::new(sql.prune).bind(secs)],
        )
        .await
    }

    /// The latest `n` invalidations.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn recent_invalidations(&self, n: i64) -> StoreResult<Vec<InvalidationRecord>> {
        const SQL: &str = "SELECT id, backend, CAST(items AS BIGINT), CAST(changes AS BIGINT), status, created_at \
                           FROM cache_invalidations ORDER BY created_at DESC, id DESC LIMIT $1";
        let [rows] = self.read(Limit::Data, [Statement::new(SQL).bind(n)]).await?;
        let rows: Vec<(String, String, i64, i64, String, DateTime<Utc>)> = rows.decode()?;
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

    /// When the edge last fetched each of `paths` from the origin, as far as the warmer knows:
    /// only those paths are read, so a tick's work does not grow with the table's history.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn warm_state(&self, paths: &[&str]) -> StoreResult<HashMap<String, DateTime<Utc>>> {
        if paths.is_empty() {
            return Ok(HashMap::new());
        }
        let json = serde_json::to_string(paths).unwrap_or_else(|_| "[]".into());
        let [rows] = self.read(Limit::Data, [Statement::new(self.sql().warm_state).bind(json.as_str())]).await?;
        let rows: Vec<(String, DateTime<Utc>)> = rows.decode()?;
        Ok(rows.into_iter().collect())
    }

    /// Records what warm requests found.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_warm(&self, warmed: &[Warmed]) -> StoreResult<()> {
        if warmed.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = warmed
            .iter()
            .map(|w| {
                let v = w.verified.as_ref();
                serde_json::json!([
                    w.path,
                    w.status,
                    w.x_cache,
                    crate::statement::timestamp_text(w.fetched_at),
                    v.map(|v| v.outcome),
                    v.and_then(|v| v.freshness).map(|f| i64::try_from(f.as_millis()).unwrap_or(i64::MAX)),
                    v.map(|v| crate::statement::timestamp_text(v.at)),
                ])
            })
            .collect();
        let json = serde_json::Value::Array(rows).to_string();
        self.write([Statement::new(self.sql().record_warm).bind(json.as_str())]).await.map(drop)
    }

    /// Records `tags` as pending changes again, each with what its answers must show (its
    /// original changes' writers, [`ClaimedTag::written_by`]): the warmer's second invalidation
    /// of pages it found stale, when the month's budget (or the backend, or the tick's time) made
    /// it wait. The next tick takes them like any change; their claim says they are a repair
    /// ([`ClaimedTag::repair`]) and lists those writers, not the requeue's own transaction.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn requeue(&self, tags: &[(&str, &str)]) -> StoreResult<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        self.write([Statement::new(self.sql().requeue).bind(json.as_str())]).await.map(drop)
    }

    /// Each path's last check through the edge within `within` of now (`cachectl status`).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn verified_since(&self, within: Duration) -> StoreResult<Vec<VerifiedPath>> {
        let secs = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        let [rows] = self.read(Limit::Data, [Statement::new(self.sql().verified_since).bind(secs)]).await?;
        let rows: Vec<(String, String, Option<i64>, DateTime<Utc>)> = rows.decode()?;
        Ok(rows
            .into_iter()
            .map(|(path, outcome, freshness_ms, at)| VerifiedPath { path, outcome, freshness_ms, at })
            .collect())
    }

    /// Per tag, what wrote the changes processed (sent for invalidation) within `within` of now
    /// but not within `propagating` (their invalidation may still be in progress), as a claim
    /// lists them: what an edge answer must show (`cachectl verify`).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn processed_since(&self, within: Duration, propagating: Duration) -> StoreResult<Vec<ClaimedTag>> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let statement = Statement::new(self.sql().processed_since).bind(secs(within)).bind(secs(propagating));
        let [rows] = self.read(Limit::Data, [statement]).await?;
        rows.decode()
    }

    /// Deletes the warm state of paths the edge has not fetched for `max_age` (past every edge
    /// TTL, such a path is due anyway, and its row says nothing more); returns how many went.
    /// Writes only when something is to go.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_warm_state(&self, max_age: Duration) -> StoreResult<u64> {
        let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let sql = self.sql();
        self.prune_if_any(
            Statement::new(sql.warm_state_prunable).bind(secs),
            [Statement::new(sql.prune_warm_state).bind(secs)],
        )
        .await
    }

    /// Deletes the invalidations recorded before the previous calendar month (UTC); returns how
    /// many went. The month's budget sums only the current month's, and the previous one stays
    /// for an operator comparing the two; without this the table grew by every batch ever sent.
    /// Writes only when something is to go.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_invalidations(&self) -> StoreResult<u64> {
        let sql = self.sql();
        self.prune_if_any(Statement::new(sql.invalidations_prunable), [Statement::new(sql.prune_invalidations)]).await
    }

    /// Whether `build` differs from the build seen last, without recording it (the warmer records
    /// it with [`Db::record_build`] once the invalidation it calls for was accepted, so a failure
    /// is retried). Compared with the last build, not with every build ever seen: rolling back to
    /// an earlier build is a deploy as well.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn build_status(&self, build: &str) -> StoreResult<BuildSeen> {
        const SQL: &str = "SELECT build, CAST(seen_seq AS BIGINT) FROM deploys ORDER BY seen_seq DESC LIMIT 1";
        let [last] = self.read(Limit::Data, [Statement::new(SQL)]).await?;
        Ok(match last.first::<(String, i64)>()? {
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
        self.write([Statement::new(SQL).bind(build).bind(invalidation_id)]).await.map(drop)
    }
}
