//! What goes into the database and what comes out of it: a [`Statement`] (constant SQL text with
//! typed values) and the [`Rows`] it returns. Every statement of this crate is one of these, so
//! the two backends differ only in how they send one (`postgres`, `sqlite`, and `db` above them).
//!
//! This module depends on nothing else of the crate but its error type: the backends and every
//! module that writes statements build on it.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::FromRow;
use sqlx::postgres::PgRow;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::SqliteRow;

use crate::error::{StoreError, StoreResult};

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
    pub(crate) sql: Cow<'static, str>,
    /// `values[n - 1]` is `$n`.
    pub(crate) values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    /// A statement without values (yet).
    pub(crate) const fn new(sql: &'static str) -> Self {
        Self { sql: Cow::Borrowed(sql), values: Vec::new() }
    }

    /// A statement whose text names tables or columns, which SQL cannot take as values:
    /// `template` with `{0}`, `{1}`, … replaced by `names`. Each name must be a plain identifier
    /// (`[A-Za-z_][A-Za-z0-9_]*`), so nothing but a name reaches the text.
    ///
    /// # Errors
    ///
    /// [`StoreError::Undeclared`] for a name that is not a plain identifier.
    pub(crate) fn naming(template: &'static str, names: &[&str]) -> StoreResult<Self> {
        let mut sql = template.to_owned();
        for (i, name) in names.iter().enumerate() {
            let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(StoreError::Undeclared(format!("{name:?} (not an identifier)")));
            }
            sql = sql.replace(&format!("{{{i}}}"), name);
        }
        Ok(Self { sql: Cow::Owned(sql), values: Vec::new() })
    }

    /// Adds the value of the next placeholder.
    pub(crate) fn bind(mut self, value: impl Into<Value<'a>>) -> Self {
        self.values.push(value.into());
        self
    }
}

/// Which time limit a read runs under.
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

/// An instant as fixed-width UTC text (`2026-11-28T12:00:00.000000Z`): how SQLite stores
/// timestamps, so that text order is time order, and how the bulk loaders send them to either.
pub(crate) fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_named_in_a_statement() {
        let ok = Statement::naming("SELECT {1} FROM {0}", &["sightings", "station_id"]).unwrap();
        assert_eq!(ok.sql, "SELECT station_id FROM sightings");
        for bad in ["x; DROP TABLE lines", "1abc", "", "a-b", "\"q\""] {
            assert!(Statement::naming("SELECT {0}", &[bad]).is_err(), "{bad:?}");
        }
    }
}
