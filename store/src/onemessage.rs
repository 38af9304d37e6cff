//! PostgreSQL reads in one round trip.
//!
//! A read is one simple-query message: `SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = N;`
//! and the read's statements. PostgreSQL runs a multi-statement message as one implicit
//! transaction, so the settings apply to these statements only, an error rolls everything back and
//! leaves the connection clean, and a transaction pooler (PgBouncer, RDS Proxy) keeps the whole
//! message on one server connection without any prepared statement to pin. The extended protocol
//! would cost two round trips per unnamed statement (parse, then execute) plus `BEGIN` and
//! `COMMIT`: six for a formation's page, which behind RDS Proxy or in a VPC is milliseconds.
//!
//! The simple protocol has no bound parameters, so values are spelled as literals: [`Literal`]
//! escapes text as an `E'…'` string (correct whatever `standard_conforming_strings` says) and types
//! dates, numbers and timestamps explicitly. Rows come back in text format, which sqlx decodes.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sqlx::Either;
use sqlx::postgres::{PgConnection, PgRow};

use crate::error::{StoreError, StoreResult};

/// A value to splice into a statement in place of a `$n` placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Literal<'a> {
    /// Text.
    Text(&'a str),
    /// An integer.
    Int(i64),
    /// A date.
    Date(NaiveDate),
    /// An instant.
    Time(DateTime<Utc>),
}

impl Literal<'_> {
    fn write(self, out: &mut String) -> StoreResult<()> {
        match self {
            Self::Text(text) => {
                if text.contains('\0') {
                    return Err(StoreError::Data("text with a NUL character cannot be sent".into()));
                }
                out.push_str("E'");
                for c in text.chars() {
                    match c {
                        '\'' => out.push_str("''"),
                        '\\' => out.push_str("\\\\"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
            }
            Self::Int(n) => out.push_str(&n.to_string()),
            Self::Date(d) => {
                out.push('\'');
                let era = push_date(out, d);
                out.push_str(era);
                out.push_str("'::date");
            }
            Self::Time(t) => {
                out.push('\'');
                let era = push_date(out, t.date_naive());
                let _ = write!(out, " {}+00{era}", t.format("%H:%M:%S%.6f"));
                out.push_str("'::timestamptz");
            }
        }
        Ok(())
    }
}

/// Writes `date` as PostgreSQL reads it and returns the era suffix to put after the whole value.
///
/// chrono's year 0 is 1 BC, and PostgreSQL has no year 0: it reads `0001-01-01 BC`. A year past
/// 9999 must not carry the `+` that ISO 8601 (and chrono) put before it: PostgreSQL would read it
/// as a UTC offset. Every date a request can name (`0000-01-01` to `9999-12-31`, and the end of
/// that last service day) is then one the server accepts.
fn push_date(out: &mut String, date: NaiveDate) -> &'static str {
    let year = date.year();
    let (year, era) = if year <= 0 { (1 - year, " BC") } else { (year, "") };
    let _ = write!(out, "{year:04}-{:02}-{:02}", date.month(), date.day());
    era
}

/// `sql` with each `$n` replaced by `params[n - 1]`.
///
/// # Errors
///
/// A placeholder without a value, or a value that cannot be spelled.
pub(crate) fn bind(sql: &str, params: &[Literal<'_>]) -> StoreResult<String> {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut end = i + 1;
        while let Some((j, d)) = chars.peek().copied() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        let index: usize = sql[i + 1..end].parse().map_err(|_| StoreError::Data(format!("a bare $ in {sql:?}")))?;
        let value = params
            .get(index.wrapping_sub(1))
            .ok_or_else(|| StoreError::Data(format!("no value for ${index} in {sql:?}")))?;
        value.write(&mut out)?;
    }
    Ok(out)
}

/// Runs `statements` after `preamble` as one message and returns each statement's rows.
///
/// # Errors
///
/// The database failed; the implicit transaction was rolled back.
pub(crate) async fn run(
    conn: &mut PgConnection,
    preamble: &str,
    statements: &[String],
) -> StoreResult<Vec<Vec<PgRow>>> {
    let mut text = String::with_capacity(preamble.len() + statements.iter().map(|s| s.len() + 2).sum::<usize>());
    text.push_str(preamble);
    for statement in statements {
        text.push_str("; ");
        text.push_str(statement);
    }
    let mut results: Vec<Vec<PgRow>> = Vec::with_capacity(statements.len() + 2);
    let mut rows = Vec::new();
    let mut stream = sqlx::raw_sql(&text).fetch_many(conn);
    while let Some(step) = stream.try_next().await? {
        match step {
            Either::Left(_) => results.push(std::mem::take(&mut rows)),
            Either::Right(row) => rows.push(row),
        }
    }
    drop(stream);
    // The preamble's statements come first and return nothing.
    let skip = results.len().saturating_sub(statements.len());
    let results: Vec<Vec<PgRow>> = results.into_iter().skip(skip).collect();
    if results.len() != statements.len() {
        return Err(StoreError::Data(format!("{} results for {} statements", results.len(), statements.len())));
    }
    Ok(results)
}

/// Decodes rows.
///
/// # Errors
///
/// A row does not fit `T`.
pub(crate) fn decode<T>(rows: &[PgRow]) -> StoreResult<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, PgRow>,
{
    rows.iter().map(|row| T::from_row(row).map_err(StoreError::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_spelled_as_safe_typed_literals() {
        let sql = "SELECT $1, $2, $3, $4, $10";
        let params = [
            Literal::Text("it's a \\ test"),
            Literal::Int(-5),
            Literal::Date(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()),
            Literal::Time("2026-11-28T12:00:00Z".parse().unwrap()),
            Literal::Int(0),
            Literal::Int(0),
            Literal::Int(0),
            Literal::Int(0),
            Literal::Int(0),
            Literal::Text("tenth"),
        ];
        assert_eq!(
            bind(sql, &params).unwrap(),
            "SELECT E'it''s a \\\\ test', -5, '2026-11-28'::date, '2026-11-28 12:00:00.000000+00'::timestamptz, E'tenth'"
        );
        assert!(bind("SELECT $2", &[Literal::Int(1)]).is_err(), "a missing value is an error");
        assert!(bind("SELECT $1", &[Literal::Text("a\0b")]).is_err());
    }

    #[test]
    fn the_extreme_dates_are_spelled_as_postgres_reads_them() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let at = |d: NaiveDate| d.and_hms_opt(19, 0, 0).unwrap().and_utc();
        let spelled = bind(
            "$1 $2 $3 $4",
            &[
                Literal::Date(date(0, 1, 1)),
                Literal::Time(at(date(0, 12, 31))),
                Literal::Date(date(10_000, 1, 1)),
                Literal::Time(at(date(10_000, 1, 1))),
            ],
        )
        .unwrap();
        assert_eq!(
            spelled,
            "'0001-01-01 BC'::date '0001-12-31 19:00:00.000000+00 BC'::timestamptz '10000-01-01'::date \
             '10000-01-01 19:00:00.000000+00'::timestamptz"
        );
    }
}
