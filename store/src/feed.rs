//! The change feed's position and pages (see the crate documentation for why the position is a
//! snapshot on PostgreSQL).

use std::cell::RefCell;
use std::future::Future;

use crate::db::{Db, Limit, Rows, Statement};
use crate::error::{StoreError, StoreResult};
use crate::model::Change;
use crate::postgres::in_progress;

/// A position in the change feed: what a reader has seen so far. Opaque; only the store that made
/// it can interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor(pub(crate) Cursor);

impl FeedCursor {
    /// The position before the first change of a SQLite feed. Readers get their positions from
    /// [`crate::Store::feed_start`]; this one serves tests of code that only carries cursors around.
    pub fn sqlite_origin() -> Self {
        Self(Cursor::Id(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// SQLite: the highest change id seen (ids become visible in order there).
    Id(i64),
    /// PostgreSQL: the snapshot of the last read, and the highest change id visible in it.
    Snapshot {
        /// `pg_current_snapshot()` as text.
        snapshot: String,
        /// The highest change id the snapshot saw. A change that becomes visible later either
        /// has a higher id (its writer took the id after this snapshot was taken, since ids come
        /// from a sequence handing out one value at a time) or was written by a transaction the
        /// snapshot lists as in progress. Those two sets are all a poll has to read.
        last_id: i64,
    },
}

/// What one read of the change feed returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// Changes that became visible since the cursor, ordered by id; at most the limit asked for.
    pub changes: Vec<Change>,
    /// Where the next read starts.
    pub cursor: FeedCursor,
    /// More changes than the limit became visible: `changes` is incomplete and `cursor` has skipped
    /// to the present. The reader must forget everything it cached and start afresh.
    pub overflow: bool,
}

/// Cuts a read that asked for `limit + 1` rows (the extra one only detects overflow) back to
/// `limit`, saying whether it overflowed.
fn split_overflow(mut changes: Vec<Change>, limit: usize) -> (Vec<Change>, bool) {
    let overflow = changes.len() > limit;
    changes.truncate(limit);
    (changes, overflow)
}

/// The position the dialect's `feed_start` statement returned: a snapshot and the highest id it
/// sees (PostgreSQL), or the highest id alone (SQLite).
pub(crate) fn position(rows: &Rows) -> StoreResult<FeedCursor> {
    let (snapshot, last_id) = rows.one::<(Option<String>, i64)>("feed position")?;
    Ok(FeedCursor(match snapshot {
        Some(snapshot) => Cursor::Snapshot { snapshot, last_id },
        None => Cursor::Id(last_id),
    }))
}

/// A PostgreSQL poll: one statement, so the rows and the new cursor come from the same snapshot.
/// What became visible since the cursor is in two places (see `Cursor::Snapshot`): ids above the
/// last one seen, by the primary key, and the changes of the transactions the cursor's snapshot
/// had in progress, by the xid index (see `in_progress`). Neither walks the rows since the oldest
/// open transaction, so a writer left open for hours costs a poll nothing. The visibility test
/// against the cursor only guards the second set's rows against being reported twice.
/// `$1` snapshot, `$2` last id, `$3` limit + 1, `$4` the snapshot's in-progress xids.
const POLL_SNAPSHOT: &str = "SELECT cur.s::text, cur.m, c.id, c.tag \
     FROM (SELECT pg_current_snapshot() AS s, \
                  GREATEST($2, COALESCE((SELECT max(id) FROM cache_changes), 0)) AS m) cur \
     LEFT JOIN LATERAL ( \
         SELECT id, tag FROM ( \
             SELECT id, tag, xid FROM cache_changes WHERE id > $2 \
             UNION ALL \
             SELECT id, tag, xid FROM cache_changes \
             WHERE xid = ANY ($4::xid8[]) AND id <= $2 \
         ) n WHERE NOT pg_visible_in_snapshot(n.xid, $1::text::pg_snapshot) \
         LIMIT $3) c ON true";

/// A SQLite poll: one writer at a time, so ids become visible in order and "after the last id" is
/// exact. `$1` last id, `$2` limit + 1.
const POLL_ID: &str = "SELECT id, tag FROM cache_changes WHERE id > $1 ORDER BY id LIMIT $2";

/// [`crate::Store::feed_start`].
pub(crate) async fn start(db: &Db) -> StoreResult<FeedCursor> {
    let [rows] = db.read(Limit::Feed, [Statement::new(db.sql().feed_start)]).await?;
    position(&rows)
}

/// [`crate::Store::feed_since`].
pub(crate) async fn since(db: &Db, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
    let asked = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    if db.reads_feed_start_with_data() != matches!(cursor.0, Cursor::Snapshot { .. }) {
        return Err(StoreError::Data("a feed cursor of the other backend".into()));
    }
    match &cursor.0 {
        Cursor::Snapshot { snapshot: since, last_id } => {
            let xids = in_progress(since)?;
            let poll = Statement::new(POLL_SNAPSHOT).bind(since.as_str()).bind(*last_id).bind(asked).bind(&*xids);
            let [rows] = db.read(Limit::Feed, [poll]).await?;
            let rows: Vec<(String, i64, Option<i64>, Option<String>)> = rows.decode()?;
            let (snapshot, last_id) =
                rows.first().map(|r| (r.0.clone(), r.1)).ok_or_else(|| StoreError::Data("no snapshot".into()))?;
            let mut changes: Vec<Change> =
                rows.into_iter().filter_map(|(_, _, id, tag)| Some(Change { id: id?, tag: tag? })).collect();
            changes.sort_by_key(|c| c.id);
            let (changes, overflow) = split_overflow(changes, limit);
            Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Snapshot { snapshot, last_id }), overflow })
        }
        Cursor::Id(after) => {
            let [changes, present] = db
                .read(
                    Limit::Feed,
                    [Statement::new(POLL_ID).bind(*after).bind(asked), Statement::new(db.sql().feed_start)],
                )
                .await?;
            let (changes, overflow) = split_overflow(changes.decode()?, limit);
            let last = if overflow { position(&present)?.last_id() } else { changes.last().map_or(*after, |c| c.id) };
            Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Id(last)), overflow })
        }
    }
}

impl FeedCursor {
    /// The highest change id the position has seen.
    fn last_id(&self) -> i64 {
        match self.0 {
            Cursor::Id(id) | Cursor::Snapshot { last_id: id, .. } => id,
        }
    }
}

tokio::task_local! {
    /// Set while [`with_feed_start`] runs: the feed position read with the first read, once read.
    static START: RefCell<Option<FeedCursor>>;
}

/// Runs `read` and also returns the feed's position as of just before its data was read, when the
/// store could read it in the same round trip (PostgreSQL: the first read message inside `read`
/// begins with `pg_current_snapshot()`). `None` when it could not (SQLite, or `read` never
/// reached the database); then [`crate::Store::feed_start`] is the way to a position.
///
/// This is how a cold instance starts following the feed without a round trip of its own: a
/// change the read did not see is not visible in the position either, so the first poll from it
/// reports that change, and the answer can be kept.
pub async fn with_feed_start<F: Future>(read: F) -> (F::Output, Option<FeedCursor>) {
    START
        .scope(RefCell::new(None), async {
            let output = read.await;
            (output, START.with(|start| start.borrow_mut().take()))
        })
        .await
}

/// Whether the running read should also read the feed position (inside [`with_feed_start`], and
/// not read yet).
pub(crate) fn start_wanted() -> bool {
    START.try_with(|start| start.borrow().is_none()).unwrap_or(false)
}

/// Hands the position read with the data to [`with_feed_start`].
pub(crate) fn start_read(cursor: FeedCursor) {
    let _ = START.try_with(|start| *start.borrow_mut() = Some(cursor));
}
