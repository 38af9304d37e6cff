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
//! The simple protocol has no bound parameters, so a [`Statement`]'s values are spelled as
//! literals: text as an `E'…'` string (correct whatever `standard_conforming_strings` says), and
//! dates, numbers and timestamps typed explicitly. Only the placeholders of a statement's constant
//! text are replaced (the text cannot come from a request: [`Statement`] takes `&'static str`).
//! Rows come back in text format, which sqlx decodes. (`postgres-protocol`'s `escape_literal`
//! would do the text part, but not refuse NUL, which no PostgreSQL text can hold; a crate for a
//! dozen lines is not worth it.)

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use futures_util::TryStreamExt;
use sqlx::Either;
use sqlx::postgres::{PgConnection, PgRow};

use crate::error::{StoreError, StoreResult};
use crate::statement::{Statement, Value};

impl Value<'_> {
    /// Writes the value as a PostgreSQL literal.
    fn write(self, out: &mut String) -> StoreResult<()> {
        match self {
            Self::OptText(None) => out.push_str("NULL"),
            Self::Text(text) | Self::OptText(Some(text)) => {
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

/// The statement's text with each `$n` replaced by its value.
///
/// # Errors
///
/// A placeholder without a value, or a value that cannot be spelled.
pub(crate) fn spell(statement: &Statement<'_>) -> StoreResult<String> {
    let (sql, params) = (&*statement.sql, &statement.values);
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

/// How long a read whose silence bound has passed is given to show an answer that had already
/// arrived (see `run`): the next turn of the runtime's I/O driver, with room to spare.
const THAW_GRACE: Duration = Duration::from_millis(100);

/// Runs `statements` after `preamble` as one message and returns each statement's rows.
///
/// `silence` bounds the wait for each message from the server (a row, or the end of a
/// statement's results), not the whole read: the server ends any statement within its timeout,
/// so a longer silence means the connection is dead, while a large result that keeps arriving is
/// alive however long it takes to transfer.
///
/// # Errors
///
/// The database failed (the implicit transaction was rolled back), or the server went silent
/// for longer than `silence` and [`THAW_GRACE`] more ([`StoreError::TimedOut`]; the connection
/// is then unusable).
pub(crate) async fn run(
    conn: &mut PgConnection,
    preamble: &str,
    statements: &[String],
    silence: Duration,
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
    loop {
        let step = match tokio::time::timeout(silence, stream.try_next()).await {
            Ok(step) => step,
            // Once more, briefly: a process frozen while it waited (a Lambda instance between
            // events, its change poll in flight) can see its timer fire on thaw before the answer
            // already waiting in its socket. The soak's fleet caught it: a poll taken for silent
            // after 1.7 s while PgBouncer's clients waited 0.1 ms on average that minute.
            Err(_) => match tokio::time::timeout(THAW_GRACE, stream.try_next()).await {
                Ok(step) => step,
                Err(_) => return Err(StoreError::TimedOut),
            },
        };
        match step? {
            Some(Either::Left(_)) => results.push(std::mem::take(&mut rows)),
            Some(Either::Right(row)) => rows.push(row),
            None => break,
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    #[test]
    fn values_are_spelled_as_safe_typed_literals() {
        let mut statement = Statement::new("SELECT $1, $2, $3, $4, $10, $11")
            .bind("it's a \\ test")
            .bind(-5_i64)
            .bind(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap())
            .bind("2026-11-28T12:00:00Z".parse::<DateTime<Utc>>().unwrap());
        for _ in 0..5 {
            statement = statement.bind(0_i64);
        }
        let statement = statement.bind("tenth").bind(None::<&str>);
        assert_eq!(
            spell(&statement).unwrap(),
            "SELECT E'it''s a \\\\ test', -5, '2026-11-28'::date, '2026-11-28 12:00:00.000000+00'::timestamptz, \
             E'tenth', NULL"
        );
        assert!(spell(&Statement::new("SELECT $2").bind(1_i64)).is_err(), "a missing value is an error");
        assert!(spell(&Statement::new("SELECT $1").bind("a\0b")).is_err());
    }

    #[test]
    fn the_extreme_dates_are_spelled_as_postgres_reads_them() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let at = |d: NaiveDate| d.and_hms_opt(19, 0, 0).unwrap().and_utc();
        let spelled = spell(
            &Statement::new("$1 $2 $3 $4")
                .bind(date(0, 1, 1))
                .bind(at(date(0, 12, 31)))
                .bind(date(10_000, 1, 1))
                .bind(at(date(10_000, 1, 1))),
        )
        .unwrap();
        assert_eq!(
            spelled,
            "'0001-01-01 BC'::date '0001-12-31 19:00:00.000000+00 BC'::timestamptz '10000-01-01'::date \
             '10000-01-01 19:00:00.000000+00'::timestamptz"
        );
    }
}
