//! [`Db`]: the configured backend, and the one primitive every statement of this crate goes
//! through.
//!
//! Everything above this module (each read, each step of the change feed, of the warmer's outbox
//! and of the learned paths, the demo loader) is written once, as [`Statement`]s, in a method of
//! `Db` in the module that owns its tables. Only two things differ between the backends, and both
//! live here:
//!
//! - [`Db::read`] and [`Db::read_at`]: statements in one read-only round trip, each with its rows,
//!   and with `read_at` the change feed's position their data is at least as new as. On
//!   PostgreSQL that is one simple-query message with the values spelled as literals
//!   (`onemessage`); on SQLite a transaction with bound parameters.
//! - [`Db::write`]: statements as one transaction in one bounded round trip, for every write but
//!   the demo loader's; [`Db::begin`] and [`Tx`]: an explicit transaction of unnamed statements
//!   with bound parameters, for that one.
//!
//! Where the SQL itself must be spelled differently (time arithmetic, JSON, snapshots), the
//! statement takes its text from the backend's [`Dialect`].

use sqlx::{Postgres, Transaction};

use crate::cursor::FeedCursor;
use crate::error::{StoreError, StoreResult};
use crate::postgres::{self, PgStore};
#[cfg(feature = "sqlite")]
use crate::sqlite::{self, SqliteStore};
use crate::statement::{Limit, Rows, Statement};

pub(crate) use crate::sql::Dialect;

/// The configured store: PostgreSQL in production, SQLite as the embedded default.
///
/// One type over both backends, rather than a trait with an implementation each: every statement
/// is written once, on the primitive below, and the same test suite runs it on both.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (RDS, RDS Proxy, PgBouncer, local).
    Postgres(PgStore),
    /// SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
}

/// An open transaction on either backend. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(Transaction<'static, sqlx::Sqlite>),
}

impl Tx {
    /// Runs `statement`; returns the rows it affected.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction is then aborted.
    pub(crate) async fn execute(&mut self, statement: Statement<'_>) -> StoreResult<u64> {
        Ok(match self {
            Self::Postgres(tx) => postgres::query(&statement).execute(&mut **tx).await?.rows_affected(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => sqlite::query(&statement).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs `statement`; returns its rows.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction is then aborted.
    pub(crate) async fn fetch(&mut self, statement: Statement<'_>) -> StoreResult<Rows> {
        Ok(match self {
            Self::Postgres(tx) => Rows::Postgres(postgres::query(&statement).fetch_all(&mut **tx).await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => Rows::Sqlite(sqlite::query(&statement).fetch_all(&mut **tx).await?),
        })
    }

    /// Commits.
    ///
    /// # Errors
    ///
    /// The commit failed; nothing of the transaction was kept.
    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// What a read reads first, in the same round trip as its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Nothing.
    Nothing,
    /// The data's version (see [`Db::read_versioned`]).
    Version,
    /// The change feed's position (see [`Db::read_at`]).
    Position,
}

/// The version a dialect's `visible_mark` statement returned.
fn version_of(rows: &Rows) -> StoreResult<String> {
    rows.one::<(String,)>("version").map(|(v,)| v)
}

/// `N` results, one per statement.
fn each<const N: usize>(rows: Vec<Rows>) -> StoreResult<[Rows; N]> {
    rows.try_into().map_err(|_| StoreError::Data("a result per statement".into()))
}

impl Db {
    /// Runs `statements` in one read-only round trip and returns each one's rows.
    ///
    /// # Errors
    ///
    /// The database failed or did not answer within the limit.
    pub(crate) async fn read<const N: usize>(
        &self,
        limit: Limit,
        statements: [Statement<'_>; N],
    ) -> StoreResult<[Rows; N]> {
        Ok(self.read_marked(limit, Mark::Nothing, statements).await?.0)
    }

    /// [`Db::read`], reading first, in the same round trip, the data's version: on PostgreSQL the
    /// snapshot the statements see at least (`xmin:xmax:xip`, which takes no lock), on SQLite the
    /// last change id (ids become visible in order there). The data reflects every change the
    /// version sees (see [`crate::version_sees`]).
    ///
    /// # Errors
    ///
    /// The database failed or did not answer within the limit.
    pub(crate) async fn read_versioned<const N: usize>(
        &self,
        limit: Limit,
        statements: [Statement<'_>; N],
    ) -> StoreResult<([Rows; N], Option<String>)> {
        let (rows, version) = self.read_marked(limit, Mark::Version, statements).await?;
        Ok((rows, version.map(|(_, v)| version_of(&v)).transpose()?))
    }

    /// [`Db::read`], reading first, in the same round trip, the change feed's position: every
    /// change at or before it is in the data the statements return, so a reader that follows the
    /// feed from it misses nothing. The position is `None` when it could not be read without
    /// waiting (something holds the feed locked): the data is then read with its version alone.
    /// The version is the position's, or that one's.
    ///
    /// # Errors
    ///
    /// The database failed or did not answer within the limit.
    pub(crate) async fn read_at<const N: usize>(
        &self,
        limit: Limit,
        statements: [Statement<'_>; N],
    ) -> StoreResult<([Rows; N], Option<FeedCursor>, Option<String>)> {
        let (rows, at) = self.read_marked(limit, Mark::Position, statements).await?;
        match at {
            Some((Mark::Position, at)) => {
                let at = FeedCursor::from_rows(&at)?;
                let version = at.version();
                Ok((rows, Some(at), Some(version)))
            }
            Some((_, version)) => Ok((rows, None, Some(version_of(&version)?))),
            None => Ok((rows, None, None)),
        }
    }

    /// A read, with the rows of what `mark` asks to read first.
    async fn read_marked<const N: usize>(
        &self,
        limit: Limit,
        mark: Mark,
        statements: [Statement<'_>; N],
    ) -> StoreResult<([Rows; N], Option<(Mark, Rows)>)> {
        let (rows, at) = match self {
            Self::Postgres(s) => {
                let (rows, at) = s.read(limit, mark, &statements).await?;
                (rows.into_iter().map(Rows::Postgres).collect(), at.map(|(m, r)| (m, Rows::Postgres(r))))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => {
                let (rows, at) = s.read(mark, &statements).await?;
                (rows.into_iter().map(Rows::Sqlite).collect(), at.map(|r| (mark, Rows::Sqlite(r))))
            }
        };
        Ok((each(rows)?, at))
    }

    /// A prune that reads first: `check` says (one boolean) whether anything is to go, and only
    /// then `writes` run, in one transaction, the last deleting it and returning a row per deleted
    /// row (any before it record what goes). A tick with nothing old writes nothing (on SQLite it
    /// never takes the write lock). Returns how many went.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub(crate) async fn prune_if_any<const N: usize>(
        &self,
        check: Statement<'_>,
        writes: [Statement<'_>; N],
    ) -> StoreResult<u64> {
        let [any] = self.read(Limit::Data, [check]).await?;
        if !any.one::<(bool,)>("prunable")?.0 {
            return Ok(0);
        }
        let done = self.write(writes).await?;
        let gone = done.last().map(|gone| gone.decode::<(i64,)>()).transpose()?;
        Ok(gone.map_or(0, |gone| gone.len() as u64))
    }

    /// Runs `statements` as one transaction and returns each one's rows: on PostgreSQL one message
    /// and one round trip, in which the server may be silent for at most the statement timeout
    /// (a silent connection is dropped, never held); on SQLite a short write transaction. The
    /// path of every write the warmer and the api make: nothing holds a transaction open across a
    /// call to anything else.
    ///
    /// # Errors
    ///
    /// The database failed or did not answer in time; nothing was written.
    pub(crate) async fn write<const N: usize>(&self, statements: [Statement<'_>; N]) -> StoreResult<[Rows; N]> {
        let rows: Vec<Rows> = match self {
            Self::Postgres(s) => {
                s.read(Limit::Write, Mark::Nothing, &statements).await?.0.into_iter().map(Rows::Postgres).collect()
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.write(&statements).await?.into_iter().map(Rows::Sqlite).collect(),
        };
        each(rows)
    }

    /// Opens a transaction for a long write (the demo loader's): SQLite takes its write lock up
    /// front (`BEGIN IMMEDIATE`), so a second writer waits at the start rather than failing at its
    /// first write.
    ///
    /// # Errors
    ///
    /// No connection could be had.
    pub(crate) async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self {
            Self::Postgres(s) => Tx::Postgres(s.begin().await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => Tx::Sqlite(s.pool().begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// The backend's spelling of the statements that differ.
    pub(crate) fn sql(&self) -> &'static Dialect {
        match self {
            Self::Postgres(_) => &crate::sql::POSTGRES,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => &crate::sql::SQLITE,
        }
    }

    /// Whether a read can take the feed's position in the same round trip as its data at no
    /// extra cost to a reader (PostgreSQL: one message). On SQLite, a local file, a reader polls
    /// for its first position instead, which costs microseconds.
    pub fn reads_feed_start_with_data(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// A trivial round trip, for the deep health check.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn ping(&self) -> StoreResult<()> {
        self.read(Limit::Data, [Statement::new("SELECT 1")]).await?;
        Ok(())
    }

    /// Closes every connection; later calls fail as unavailable.
    pub async fn close(&self) {
        match self {
            Self::Postgres(s) => s.close().await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.close().await,
        }
    }

    /// Read round trips started so far (data and change feed): observability for tests and
    /// benchmarks ("database queries per origin request").
    pub fn reads(&self) -> u64 {
        match self {
            Self::Postgres(s) => s.reads(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.reads(),
        }
    }
}
