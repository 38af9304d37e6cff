//! [`Db`]: the configured backend, and the one primitive every statement of this crate goes
//! through.
//!
//! Everything above this module (each read, each step of the change feed and of the warmer's
//! outbox, the demo loader) is written once, as [`Statement`]s: constant SQL text with typed
//! values. Only two things differ between the backends, and both live here:
//!
//! - [`Db::read`]: statements in one read-only round trip, each with its rows. On PostgreSQL that
//!   is one simple-query message with the values spelled as literals (`onemessage`); on SQLite a
//!   transaction with bound parameters.
//! - [`Db::begin`] and [`Tx`]: an explicit transaction of unnamed statements with bound
//!   parameters, for writes and for the warmer's claims, which stay open across a call to the
//!   CDN.
//!
//! Where the SQL itself must be spelled differently (time arithmetic, JSON, snapshots), the
//! statement takes its text from the backend's [`Dialect`].

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Postgres, Transaction};

use crate::error::{StoreError, StoreResult};
use crate::postgres::PgStore;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteStore;

/// The configured store: PostgreSQL in production, SQLite as the embedded default.
///
/// An enum rather than `dyn Store` keeps the trait's async methods free of boxing.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (RDS, RDS Proxy, PgBouncer, local).
    Postgres(PgStore),
    /// SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
}

/// A value a [`Statement`] carries for one of its `$n` placeholders.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    /// Text.
    Text(&'a str),
    /// Text or `NULL`.
    OptText(Option<&'a str>),
    /// An integer.
    Int(i64),
    /// A date.
    Date(NaiveDate),
    /// An instant.
    Time(DateTime<Utc>),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Self::OptText(text)
    }
}

impl From<i64> for Value<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<NaiveDate> for Value<'_> {
    fn from(date: NaiveDate) -> Self {
        Self::Date(date)
    }
}

impl From<DateTime<Utc>> for Value<'_> {
    fn from(at: DateTime<Utc>) -> Self {
        Self::Time(at)
    }
}

/// One statement: SQL text that only a constant can provide (so no value is ever spliced into it
/// but through [`Statement::bind`]), and its values in placeholder order (`$1`, `$2`, …).
#[derive(Debug, Clone)]
pub(crate) struct Statement<'a> {
    /// The text, with `$n` placeholders.
    pub(crate) sql: &'static str,
    /// `values[n - 1]` is `$n`.
    pub(crate) values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    /// A statement without values (yet).
    pub(crate) const fn new(sql: &'static str) -> Self {
        Self { sql, values: Vec::new() }
    }

    /// Adds the value of the next placeholder.
    pub(crate) fn bind(mut self, value: impl Into<Value<'a>>) -> Self {
        self.values.push(value.into());
        self
    }
}

/// What a row type must decode from: a row of either backend.
#[cfg(feature = "sqlite")]
pub(crate) trait FromRows: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>> FromRows for T {}
/// What a row type must decode from: a row of either backend.
#[cfg(not(feature = "sqlite"))]
pub(crate) trait FromRows: for<'r> FromRow<'r, PgRow> {}
#[cfg(not(feature = "sqlite"))]
impl<T: for<'r> FromRow<'r, PgRow>> FromRows for T {}

/// The rows one statement returned.
pub(crate) enum Rows {
    /// PostgreSQL rows (text format).
    Postgres(Vec<PgRow>),
    /// SQLite rows.
    #[cfg(feature = "sqlite")]
    Sqlite(Vec<SqliteRow>),
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = match self {
            Self::Postgres(rows) => rows.len(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(rows) => rows.len(),
        };
        f.debug_struct("Rows").field("rows", &rows).finish()
    }
}

impl Rows {
    /// Every row as a `T`.
    ///
    /// # Errors
    ///
    /// A row does not fit `T`.
    pub(crate) fn decode<T: FromRows>(&self) -> StoreResult<Vec<T>> {
        fn all<R: sqlx::Row, T: for<'r> FromRow<'r, R>>(rows: &[R]) -> StoreResult<Vec<T>> {
            rows.iter().map(|row| T::from_row(row).map_err(StoreError::from)).collect()
        }
        match self {
            Self::Postgres(rows) => all(rows),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(rows) => all(rows),
        }
    }

    /// The first row as a `T`, if there is one.
    ///
    /// # Errors
    ///
    /// The row does not fit `T`.
    pub(crate) fn first<T: FromRows>(&self) -> StoreResult<Option<T>> {
        fn row<R: sqlx::Row, T: for<'r> FromRow<'r, R>>(rows: &[R]) -> StoreResult<Option<T>> {
            rows.first().map(|row| T::from_row(row).map_err(StoreError::from)).transpose()
        }
        match self {
            Self::Postgres(rows) => row(rows),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(rows) => row(rows),
        }
    }

    /// The one row a statement always returns (an aggregate).
    ///
    /// # Errors
    ///
    /// No row, or it does not fit `T`.
    pub(crate) fn one<T: FromRows>(&self, what: &str) -> StoreResult<T> {
        self.first()?.ok_or_else(|| StoreError::Data(format!("no {what}")))
    }
}

/// How a transaction from [`Db::begin`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// As usual: locks are taken as statements need them.
    Deferred,
    /// SQLite takes its write lock up front (`BEGIN IMMEDIATE`), so a second writer waits at the
    /// start rather than failing at its first write. PostgreSQL locks rows as usual.
    Write,
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

/// An instant as fixed-width UTC text (`2026-11-28T12:00:00.000000Z`): how SQLite stores
/// timestamps, so that text order is time order, and how the demo loader sends them to either.
pub(crate) fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `statement` as an unnamed PostgreSQL statement with bound parameters (never prepared by name,
/// so it works behind transaction pooling).
fn pg_query<'q>(statement: &'q Statement<'q>) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(statement.sql).persistent(false);
    for value in &statement.values {
        query = match *value {
            Value::Text(text) => query.bind(text),
            Value::OptText(text) => query.bind(text),
            Value::Int(n) => query.bind(n),
            Value::Date(date) => query.bind(date),
            Value::Time(at) => query.bind(at),
        };
    }
    query
}

/// `statement` for SQLite: instants as fixed-width UTC text, so text order is time order.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_query<'q>(
    statement: &'q Statement<'q>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let mut query = sqlx::query(statement.sql);
    for value in &statement.values {
        query = match *value {
            Value::Text(text) => query.bind(text),
            Value::OptText(text) => query.bind(text),
            Value::Int(n) => query.bind(n),
            Value::Date(date) => query.bind(date),
            Value::Time(at) => query.bind(timestamp_text(at)),
        };
    }
    query
}

impl Tx {
    /// Runs `statement`; returns the rows it affected.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction is then aborted.
    pub(crate) async fn execute(&mut self, statement: Statement<'_>) -> StoreResult<u64> {
        Ok(match self {
            Self::Postgres(tx) => pg_query(&statement).execute(&mut **tx).await?.rows_affected(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => sqlite_query(&statement).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs `statement`; returns its rows.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction is then aborted.
    pub(crate) async fn fetch(&mut self, statement: Statement<'_>) -> StoreResult<Rows> {
        Ok(match self {
            Self::Postgres(tx) => Rows::Postgres(pg_query(&statement).fetch_all(&mut **tx).await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => Rows::Sqlite(sqlite_query(&statement).fetch_all(&mut **tx).await?),
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

    /// Rolls back now (a dropped transaction rolls back only when its connection is next used).
    ///
    /// # Errors
    ///
    /// The rollback could not be sent; the connection rolls back when it is reused.
    pub(crate) async fn rollback(self) -> StoreResult<()> {
        match self {
            Self::Postgres(tx) => tx.rollback().await?,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// Which feed timeout a [`Db::read`] runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A data read: the statement timeout.
    Data,
    /// A change-feed read: the shorter feed timeout, so a locked feed fails a poll quickly.
    Feed,
    /// A write from a serving instance (its learned paths): the statement timeout, in a round
    /// trip bounded like a read's, so a silent connection is dropped rather than held.
    Write,
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
        let rows: Vec<Rows> = match self {
            Self::Postgres(s) => s.read(limit, &statements).await?.into_iter().map(Rows::Postgres).collect(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.read(&statements).await?.into_iter().map(Rows::Sqlite).collect(),
        };
        rows.try_into().map_err(|_| StoreError::Data("a result per statement".into()))
    }

    /// Runs one write in a round trip of its own, bounded like a read: on PostgreSQL its
    /// connection may be silent for at most the statement timeout and is dropped, not kept, when
    /// it is. The path of a serving instance's writes, which must never hold its one connection.
    ///
    /// # Errors
    ///
    /// The database failed; nothing was written.
    pub(crate) async fn write_bounded(&self, statement: Statement<'_>) -> StoreResult<()> {
        match self {
            Self::Postgres(s) => s.read(Limit::Write, &[statement]).await.map(drop),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => self.execute(statement).await.map(drop),
        }
    }

    /// Opens a transaction.
    ///
    /// # Errors
    ///
    /// No connection could be had.
    pub(crate) async fn begin(&self, begin: Begin) -> StoreResult<Tx> {
        Ok(match self {
            // Row locks are taken by the statements themselves (`FOR UPDATE SKIP LOCKED`).
            Self::Postgres(s) => Tx::Postgres({
                let _ = begin;
                s.pool().begin().await?
            }),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => Tx::Sqlite(match begin {
                Begin::Deferred => s.pool().begin().await?,
                Begin::Write => s.pool().begin_with("BEGIN IMMEDIATE").await?,
            }),
        })
    }

    /// Runs one statement in a transaction of its own; returns its rows.
    ///
    /// # Errors
    ///
    /// The database failed; nothing was kept.
    pub(crate) async fn fetch(&self, statement: Statement<'_>) -> StoreResult<Rows> {
        let mut tx = self.begin(Begin::Deferred).await?;
        let rows = tx.fetch(statement).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Runs one statement in a transaction of its own; returns the rows it affected.
    ///
    /// # Errors
    ///
    /// The database failed; nothing was kept.
    pub(crate) async fn execute(&self, statement: Statement<'_>) -> StoreResult<u64> {
        let mut tx = self.begin(Begin::Deferred).await?;
        let affected = tx.execute(statement).await?;
        tx.commit().await?;
        Ok(affected)
    }

    /// The backend's spelling of the statements that differ.
    pub(crate) fn sql(&self) -> &'static Dialect {
        match self {
            Self::Postgres(_) => &crate::sql::POSTGRES,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => &crate::sql::SQLITE,
        }
    }

    /// Whether a read inside [`crate::with_feed_start`] also reads the feed's position in the same
    /// round trip (PostgreSQL). SQLite reads a local file, where a separate
    /// [`crate::Store::feed_start`] costs microseconds.
    pub fn reads_feed_start_with_data(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

pub(crate) use crate::sql::Dialect;
