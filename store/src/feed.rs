//! The change feed's position and pages (see the crate documentation for why the position is a
//! snapshot on PostgreSQL).

use std::cell::RefCell;
use std::future::Future;

use crate::model::Change;

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
pub(crate) fn split_overflow(mut changes: Vec<Change>, limit: usize) -> (Vec<Change>, bool) {
    let overflow = changes.len() > limit;
    changes.truncate(limit);
    (changes, overflow)
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
