//! [`FeedCursor`]: a position in the change feed, what a reader has seen so far (see the crate
//! documentation for why it is a snapshot on PostgreSQL), and how it is read out of rows.

use crate::error::{StoreError, StoreResult};
use crate::statement::Rows;

/// A position in the change feed: what a reader has seen so far. Opaque; only the store that made
/// it can interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor(pub(crate) Cursor);

impl FeedCursor {
    /// The position before the first change of a SQLite feed. Readers get their positions from
    /// the store; this one serves tests of code that only carries cursors around.
    pub fn sqlite_origin() -> Self {
        Self(Cursor::Id(0))
    }

    /// The highest change id the position has seen.
    pub(crate) fn last_id(&self) -> i64 {
        match self.0 {
            Cursor::Id(id) | Cursor::Snapshot { last_id: id, .. } => id,
        }
    }

    /// The position a dialect's `feed_start` statement returned: a snapshot and the highest id it
    /// sees (PostgreSQL), or the highest id alone (SQLite).
    ///
    /// # Errors
    ///
    /// The rows are not a position.
    pub(crate) fn from_rows(rows: &Rows) -> StoreResult<Self> {
        let (snapshot, last_id) = rows.one::<(Option<String>, i64)>("feed position")?;
        Ok(Self(match snapshot {
            Some(snapshot) => Cursor::Snapshot { snapshot, last_id },
            None => Cursor::Id(last_id),
        }))
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
        /// from a sequence handing out one value at a time) or was written by a transaction that
        /// had not completed when the snapshot was taken: one the snapshot lists as running, or
        /// one at or above its `xmax`, which is one past the latest *completed* transaction, so a
        /// running one can be above it, unlisted. Those three sets are all a poll has to read.
        last_id: i64,
    },
}

/// The transactions `snapshot` saw in progress, as an `xid8[]` literal (`{790,805}`). Spelled
/// out rather than computed in the statement (`pg_snapshot_xip`), and cast from the untyped
/// literal itself (`E'{790}'::xid8[]`, a constant once parsed, where `::text::xid8[]` is a cast
/// evaluated at run time), so the planner sees how few they are and reads them through the xid
/// index. An array it cannot see is the one estimate of this plan it must guess, and under the
/// poll's `LIMIT` a guess of many rows makes a walk of the primary key look cheaper: the
/// long-open-writer test once caught polls reading every row of a feed of millions.
///
/// # Errors
///
/// `snapshot` is not `xmin:xmax:xip,…` of numbers.
pub(crate) fn in_progress(snapshot: &str) -> StoreResult<String> {
    let malformed = || StoreError::Data(format!("malformed snapshot {snapshot:?}"));
    let xip = snapshot.splitn(3, ':').nth(2).ok_or_else(malformed)?;
    let mut list = String::from("{");
    for xid in xip.split(',').filter(|x| !x.is_empty()) {
        let xid: u64 = xid.parse().map_err(|_| malformed())?;
        if list.len() > 1 {
            list.push(',');
        }
        list.push_str(&xid.to_string());
    }
    list.push('}');
    Ok(list)
}

/// The `xmax` of `snapshot` (`xmin:xmax:xip,…`), as a number's text: every transaction at or above
/// it had not completed when the snapshot was taken, whether or not the snapshot lists it.
///
/// # Errors
///
/// `snapshot` is not `xmin:xmax:…` of numbers.
pub(crate) fn snapshot_xmax(snapshot: &str) -> StoreResult<String> {
    let malformed = || StoreError::Data(format!("malformed snapshot {snapshot:?}"));
    let xmax: u64 = snapshot.split(':').nth(1).ok_or_else(malformed)?.parse().map_err(|_| malformed())?;
    Ok(xmax.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshots_in_progress_transactions_become_an_array_literal() {
        assert_eq!(in_progress("790:792:790").unwrap(), "{790}");
        assert_eq!(in_progress("790:805:790,801").unwrap(), "{790,801}");
        assert_eq!(in_progress("805:805:").unwrap(), "{}");
        assert!(in_progress("805:805:1;DROP").is_err());
        assert!(in_progress("805").is_err());
    }

    #[test]
    fn a_snapshots_xmax_is_read_as_a_number() {
        assert_eq!(snapshot_xmax("790:805:790,801").unwrap(), "805");
        assert!(snapshot_xmax("790:8x5:").is_err());
        assert!(snapshot_xmax("790").is_err());
    }
}
