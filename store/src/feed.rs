//! The change feed: its present position ([`Db::feed_start`]) and what became visible since a
//! position ([`Db::feed_since`]). See the crate documentation for why the position is a snapshot
//! on PostgreSQL.

use crate::cursor::{Cursor, FeedCursor, in_progress, snapshot_xmax};
use crate::db::Db;
use crate::error::{StoreError, StoreResult};
use crate::model::Change;
use crate::statement::{Limit, Statement};

/// What one read of the change feed returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// Changes that became visible since the cursor, ordered by id; at most the limit asked for.
    pub changes: Vec<Change>,
    /// Where the next read starts.
    pub cursor: FeedCursor,
    /// More changes than the limit became visible, or a change processed after the cursor was
    /// read has been pruned (the reader may never have seen it): `changes` is incomplete and
    /// `cursor` has skipped to the present. The reader must forget everything it cached and start
    /// afresh.
    pub overflow: bool,
}

/// Cuts a read that asked for `limit + 1` rows (the extra one only detects overflow) back to
/// `limit`, saying whether it overflowed.
fn split_overflow(mut changes: Vec<Change>, limit: usize) -> (Vec<Change>, bool) {
    let overflow = changes.len() > limit;
    changes.truncate(limit);
    (changes, overflow)
}

/// A PostgreSQL poll: one statement, so the rows and the new cursor come from the same snapshot.
/// What became visible since the cursor is in three places (see `Cursor::Snapshot`): ids above
/// the last one seen, by the primary key; the changes of the transactions the cursor's snapshot
/// listed as running; and those of transactions at or above its `xmax`, which PostgreSQL does not
/// list (its `xmax` is one past the latest *completed* transaction, so one still running can be
/// above it, with a change written before the last id seen). The last two by the xid index, so
/// none walks the rows since the oldest open transaction: a writer left open for hours costs a
/// poll nothing. The visibility test against the cursor only guards the last two sets' rows
/// against being reported twice.
/// The same statement says whether the prune deleted a change processed after the cursor was
/// read (`cache_feed_pruned`): one the reader may never have seen.
/// `$1` snapshot, `$2` last id, `$3` limit + 1, `$4` the snapshot's listed running xids, `$5` its
/// `xmax`, `$6` when the cursor was read.
const POLL_SNAPSHOT: &str = "SELECT cur.s::text, cur.m, cur.t, cur.lost, c.id, c.tag \
     FROM (SELECT pg_current_snapshot() AS s, \
                  GREATEST($2, COALESCE((SELECT max(id) FROM cache_changes), 0)) AS m, now()::text AS t, \
                  COALESCE((SELECT through FROM cache_feed_pruned) >= $6::text::timestamptz, false) AS lost) cur \
     LEFT JOIN LATERAL ( \
         SELECT id, tag FROM ( \
             SELECT id, tag, xid FROM cache_changes WHERE id > $2 \
             UNION ALL \
             SELECT id, tag, xid FROM cache_changes \
             WHERE xid = ANY ($4::xid8[]) AND id <= $2 \
             UNION ALL \
             SELECT id, tag, xid FROM cache_changes \
             WHERE xid >= $5::xid8 AND id <= $2 \
         ) n WHERE NOT pg_visible_in_snapshot(n.xid, $1::text::pg_snapshot) \
         LIMIT $3) c ON true";

/// A row of [`POLL_SNAPSHOT`]: the new snapshot, the last id it sees, when it was read, whether a
/// change was lost to the prune, and a change (none on the row of an empty page).
type PollRow = (String, i64, String, bool, Option<i64>, Option<String>);

/// A SQLite poll: one writer at a time, so ids become visible in order and "after the last id" is
/// exact. `$1` last id, `$2` limit + 1.
const POLL_ID: &str = "SELECT id, tag FROM cache_changes WHERE id > $1 ORDER BY id LIMIT $2";

/// Whether the prune deleted a change processed after `$1`, when a SQLite cursor was read.
const LOST_ID: &str = "SELECT COALESCE((SELECT through FROM cache_feed_pruned) >= $1, 0)";

impl Db {
    /// The present position of the change feed: a reader starting here sees every change that
    /// becomes visible from now on, including those of transactions open right now.
    ///
    /// # Errors
    ///
    /// The database failed, or did not answer within the feed timeout.
    pub async fn feed_start(&self) -> StoreResult<FeedCursor> {
        let [rows] = self.read(Limit::Feed, [Statement::new(self.sql().feed_start)]).await?;
        FeedCursor::from_rows(&rows)
    }

    /// The changes that became visible after `cursor`, at most `limit` of them (see
    /// [`FeedPage::overflow`]). On PostgreSQL it runs under the store's feed timeout, which is
    /// shorter than the statement timeout: a locked feed fails the poll quickly.
    ///
    /// # Errors
    ///
    /// The database failed or did not answer in time, or `cursor` is the other backend's.
    pub async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        since(self, cursor, limit).await
    }
}

/// [`Db::feed_since`].
async fn since(db: &Db, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
    let asked = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    if db.reads_feed_start_with_data() != matches!(cursor.0, Cursor::Snapshot { .. }) {
        return Err(StoreError::Data("a feed cursor of the other backend".into()));
    }
    match &cursor.0 {
        Cursor::Snapshot { snapshot: since, last_id } => {
            let (xids, xmax) = (in_progress(since)?, snapshot_xmax(since)?);
            let poll = Statement::new(POLL_SNAPSHOT)
                .bind(since.as_str())
                .bind(*last_id)
                .bind(asked)
                .bind(&*xids)
                .bind(&*xmax)
                .bind(cursor.read_at());
            let [rows] = db.read(Limit::Feed, [poll]).await?;
            let rows: Vec<PollRow> = rows.decode()?;
            let (snapshot, last_id, read_at, lost) = rows
                .first()
                .map(|r| (r.0.clone(), r.1, r.2.clone(), r.3))
                .ok_or_else(|| StoreError::Data("no snapshot".into()))?;
            let mut changes: Vec<Change> =
                rows.into_iter().filter_map(|(_, _, _, _, id, tag)| Some(Change { id: id?, tag: tag? })).collect();
            changes.sort_by_key(|c| c.id);
            let (changes, overflow) = split_overflow(changes, limit);
            let cursor = FeedCursor(Cursor::Snapshot { snapshot, last_id }, Some(read_at));
            Ok(FeedPage { changes, cursor, overflow: overflow || lost })
        }
        Cursor::Id(after) => {
            // The present first: its time is then no later than what the page reads.
            let [present, changes, lost] = db
                .read(
                    Limit::Feed,
                    [
                        Statement::new(db.sql().feed_start),
                        Statement::new(POLL_ID).bind(*after).bind(asked),
                        Statement::new(LOST_ID).bind(cursor.read_at()),
                    ],
                )
                .await?;
            let (changes, overflow) = split_overflow(changes.decode()?, limit);
            let lost = lost.one::<(bool,)>("lost")?.0;
            let present = FeedCursor::from_rows(&present)?;
            let last = if overflow || lost { present.last_id() } else { changes.last().map_or(*after, |c| c.id) };
            Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Id(last), present.1), overflow: overflow || lost })
        }
    }
}
