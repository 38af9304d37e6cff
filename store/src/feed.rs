//! The change feed's position and pages (see the crate documentation for why the position is a
//! snapshot on PostgreSQL).

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
    /// PostgreSQL: the text form of the snapshot of the last read.
    Snapshot(String),
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
