//! [`FeedCursor`]: a position in the change feed, what a reader has seen so far (see the crate
//! documentation for why it is a snapshot on PostgreSQL), and how it is read out of rows.

use crate::error::{StoreError, StoreResult};
use crate::statement::Rows;

/// A position in the change feed: what a reader has seen so far, and when the database read it
/// (its clock, as text: a poll from here learns whether a change it would have read was pruned
/// since; `None` for a position made up by a test, which never learns it). Opaque; only the store
/// that made it can interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor(pub(crate) Cursor, pub(crate) Option<String>);

impl FeedCursor {
    /// The position before the first change of a SQLite feed. Readers get their positions from
    /// the store; this one serves tests of code that only carries cursors around.
    pub fn sqlite_origin() -> Self {
        Self(Cursor::Id(0), None)
    }

    /// A PostgreSQL position from its snapshot's text (`xmin:xmax:xip,…`) and the highest change
    /// id it saw. Readers get their positions from the store; this one serves tests of code that
    /// compares them.
    pub fn postgres(snapshot: &str, last_id: i64) -> Self {
        Self(Cursor::Snapshot { snapshot: snapshot.to_owned(), last_id }, None)
    }

    /// The position as a data version (see [`version_sees`]): the snapshot on PostgreSQL, the
    /// last change id on SQLite.
    pub fn version(&self) -> String {
        match &self.0 {
            Cursor::Snapshot { snapshot, .. } => snapshot.clone(),
            Cursor::Id(id) => id.to_string(),
        }
    }

    /// When the database read this position, as a statement parameter: a time after every
    /// pruned change's processing for a position that does not know its time (none is lost).
    pub(crate) fn read_at(&self) -> &str {
        self.1.as_deref().unwrap_or("infinity")
    }

    /// The highest change id the position has seen.
    pub(crate) fn last_id(&self) -> i64 {
        match self.0 {
            Cursor::Id(id) | Cursor::Snapshot { last_id: id, .. } => id,
        }
    }

    /// Whether every change visible at `other` is visible at this position too: a reader that
    /// follows the feed from `other` then reports every change this position lacks. On
    /// PostgreSQL, every transaction `other`'s snapshot sees as completed this one sees as
    /// completed; on SQLite, this position's last id is at least `other`'s. A snapshot that cannot
    /// be read sees nothing for sure.
    pub fn sees_everything_at(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Cursor::Id(mine), Cursor::Id(theirs)) => mine >= theirs,
            (Cursor::Snapshot { snapshot: mine, .. }, Cursor::Snapshot { snapshot: theirs, .. }) => {
                match (Snapshot::parse(mine), Snapshot::parse(theirs)) {
                    (Some(mine), Some(theirs)) => mine.sees_everything_at(&theirs),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The position a dialect's `feed_start` statement returned: a snapshot and the highest id it
    /// sees (PostgreSQL), or the highest id alone (SQLite), and the database's time.
    ///
    /// # Errors
    ///
    /// The rows are not a position.
    pub(crate) fn from_rows(rows: &Rows) -> StoreResult<Self> {
        let (snapshot, last_id, read_at) = rows.one::<(Option<String>, i64, String)>("feed position")?;
        let cursor = match snapshot {
            Some(snapshot) => Cursor::Snapshot { snapshot, last_id },
            None => Cursor::Id(last_id),
        };
        Ok(Self(cursor, Some(read_at)))
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

/// Whether data at `version` reflects every change visible at `mark`: both as a read returns them
/// ([`crate::Read::version`]) or the warmer marks its claims. On PostgreSQL each is a snapshot
/// (`xmin:xmax:xip,…`), and the data reflects a change when its snapshot sees the change's
/// transaction as completed, so it reflects everything `mark` sees when it sees every transaction
/// `mark` sees as completed. A change id alone could not say it: ids are handed out at write time
/// and become visible at commit, in another order. On SQLite each is the last change id, and ids
/// become visible in order. `None` when either is not a version of the same backend.
pub fn version_sees(version: &str, mark: &str) -> Option<bool> {
    if let (Ok(version), Ok(mark)) = (version.parse::<i64>(), mark.parse::<i64>()) {
        return Some(version >= mark);
    }
    Some(Snapshot::parse(version)?.sees_everything_at(&Snapshot::parse(mark)?))
}

/// Whether data at `version` shows the changes `written_by` names: on PostgreSQL (a snapshot
/// version) the ids of the transactions that wrote them, comma-separated, each of which the
/// snapshot must see as completed; on SQLite (an id version) the highest of their change ids.
/// Unlike [`version_sees`] against a mark, transactions that wrote nothing the answer shows do not
/// count. `None` when they are not of one backend.
pub fn version_shows(version: &str, written_by: &str) -> Option<bool> {
    if let Ok(version) = version.parse::<i64>() {
        return Some(version >= written_by.parse::<i64>().ok()?);
    }
    let snapshot = Snapshot::parse(version)?;
    let mut all = true;
    for xid in written_by.split(',') {
        all &= snapshot.completed(xid.trim().parse().ok()?);
    }
    Some(all)
}

/// A PostgreSQL snapshot's parts: a transaction is seen as completed when it is below `xmax` and
/// not listed in progress.
struct Snapshot {
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Snapshot {
    /// `xmin:xmax:xip,…`, or `None`.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress =
            parts.next()?.split(',').filter(|x| !x.is_empty()).map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(Self { xmax, in_progress })
    }

    fn completed(&self, xid: u64) -> bool {
        xid < self.xmax && !self.in_progress.contains(&xid)
    }

    /// Whether every transaction `other` sees as completed, this one does too: those between this
    /// snapshot's `xmax` and `other`'s must all be in progress for `other`, and those this one
    /// has in progress must be in progress (or not yet begun) for `other`.
    fn sees_everything_at(&self, other: &Self) -> bool {
        let above = other.xmax.saturating_sub(self.xmax);
        let above_completed = above > other.in_progress.len() as u64
            || (self.xmax..other.xmax).any(|xid| !other.in_progress.contains(&xid));
        !above_completed && !self.in_progress.iter().any(|&xid| other.completed(xid))
    }
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

    fn at(snapshot: &str) -> FeedCursor {
        FeedCursor(Cursor::Snapshot { snapshot: snapshot.into(), last_id: 0 }, None)
    }

    #[test]
    fn a_position_sees_everything_at_another_when_no_transaction_completed_only_there() {
        // The same snapshot, and a later one with nothing completed in between but more running.
        assert!(at("790:805:790,801").sees_everything_at(&at("790:805:790,801")));
        assert!(at("790:810:790,801,807").sees_everything_at(&at("790:805:790,801")));
        // Transaction 801 completed in between: the later snapshot sees it, the earlier does not.
        assert!(!at("790:805:790,801").sees_everything_at(&at("790:806:790")));
        assert!(at("790:806:790").sees_everything_at(&at("790:805:790,801")));
        // 805 and 806 began after this snapshot: fine while the other has them in progress.
        assert!(at("790:805:790").sees_everything_at(&at("790:807:790,805,806")));
        assert!(!at("790:805:790").sees_everything_at(&at("790:807:790,806")), "805 completed");
        assert!(!at("790:805:").sees_everything_at(&at("not a snapshot")));
        let ids = |id| FeedCursor(Cursor::Id(id), None);
        assert!(ids(7).sees_everything_at(&ids(7)) && !ids(6).sees_everything_at(&ids(7)));
    }

    #[test]
    fn a_version_sees_a_mark_when_it_sees_every_transaction_completed_there() {
        // A snapshot version: as the positions above.
        assert_eq!(version_sees("790:806:790", "790:805:790,801"), Some(true));
        assert_eq!(version_sees("790:805:790,801", "790:806:790"), Some(false), "801 completed only at the mark");
        assert_eq!(version_sees("790:805:790,801", "790:805:790,801"), Some(true));
        // The cursor's version is its snapshot, whatever its last id.
        assert_eq!(version_sees(&at("790:806:790").version(), "790:805:790,801"), Some(true));
        // A SQLite version: the last change id.
        assert_eq!(version_sees("41", "41"), Some(true));
        assert_eq!(version_sees("40", "41"), Some(false));
        assert_eq!(FeedCursor(Cursor::Id(41), None).version(), "41");
        // Not versions of one backend.
        assert_eq!(version_sees("41", "790:805:"), None);
        assert_eq!(version_sees("790:805:x", "790:805:"), None);
        assert_eq!(version_sees("", "1"), None);
    }

    #[test]
    fn a_version_shows_changes_when_it_sees_their_transactions_and_no_others_count() {
        // 801 completed, 803 still running, 806 not begun.
        let version = "790:805:790,803";
        assert_eq!(version_shows(version, "801"), Some(true));
        assert_eq!(version_shows(version, "801,803"), Some(false), "803 was running");
        assert_eq!(version_shows(version, "806"), Some(false), "806 had not begun");
        assert_eq!(version_shows(version, "801, 795"), Some(true));
        assert_eq!(version_shows(version, "x"), None);
        // SQLite: the version is the last id handed out, and the changes their highest id.
        assert_eq!(version_shows("41", "41"), Some(true));
        assert_eq!(version_shows("40", "41"), Some(false));
        assert_eq!(version_shows("41", "801,803"), None);
    }

    #[test]
    fn a_snapshots_xmax_is_read_as_a_number() {
        assert_eq!(snapshot_xmax("790:805:790,801").unwrap(), "805");
        assert!(snapshot_xmax("790:8x5:").is_err());
        assert!(snapshot_xmax("790").is_err());
    }
}
