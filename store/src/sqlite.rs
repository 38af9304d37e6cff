//! SQLite store: the embedded default, so `cargo run -p api` works with no database server.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::calendar::ServiceCalendar;
use crate::db::Mark;
use crate::error::StoreResult;
use crate::sql::SQLITE;
use crate::statement::{Statement, Value, timestamp_text};
use crate::tags;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite backend of [`crate::Db`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// WAL-mode pool: readers never block the occasional writer.
    pool: SqlitePool,
    /// Reads started, shared by clones.
    reads: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, lazily.
    ///
    /// # Errors
    ///
    /// The parent directory cannot be created.
    pub fn open_file(path: &Path, acquire_timeout: Duration) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self::with_options(SqliteConnectOptions::new().filename(path).create_if_missing(true), acquire_timeout))
    }

    /// Opens a `sqlite:` URL, lazily.
    ///
    /// # Errors
    ///
    /// A malformed URL.
    pub fn connect_lazy(url: &str, acquire_timeout: Duration) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Ok(Self::with_options(options, acquire_timeout))
    }

    fn with_options(options: SqliteConnectOptions, acquire_timeout: Duration) -> Self {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Self { pool, reads: Arc::default() }
    }

    /// The underlying pool, for this crate's other statements (the warmer's outbox).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// One read: its statements in one transaction, each with its rows. With a `mark`, the
    /// transaction first reads the change feed's position or the data's version (both the last
    /// change id: one writer at a time commits, so ids become visible in order), which its data
    /// statements then see no less than.
    pub(crate) async fn read(
        &self,
        mark: Mark,
        statements: &[Statement<'_>],
    ) -> StoreResult<(Vec<Vec<SqliteRow>>, Option<Vec<SqliteRow>>)> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut tx = self.pool.begin().await?;
        let at = match mark {
            Mark::Position => Some(sqlx::query(SQLITE.feed_start).fetch_all(&mut *tx).await?),
            Mark::Version => Some(sqlx::query(SQLITE.visible_mark).fetch_all(&mut *tx).await?),
            Mark::Nothing => None,
        };
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            results.push(query(statement).fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok((results, at))
    }

    /// One write: its statements in one transaction that takes the write lock at once (`BEGIN
    /// IMMEDIATE`, so a second writer waits at the start instead of failing later), each with its
    /// rows. Held for the statements alone, never across anything else.
    pub(crate) async fn write(&self, statements: &[Statement<'_>]) -> StoreResult<Vec<Vec<SqliteRow>>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            results.push(query(statement).fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// Applies the embedded migrations, installs the tag triggers generated from the policy's
    /// tables, and records the service calendar the triggers use (one transaction after the
    /// migrations).
    pub(crate) async fn migrate(&self, calendar: &ServiceCalendar, tables: &[cache_policy::Table]) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut keys = std::collections::HashMap::new();
        for table in tables {
            let key: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk")
                .bind(&table.name)
                .fetch_all(&mut *tx)
                .await?;
            keys.insert(table.name.as_str(), key.into_iter().map(|(c,)| c).collect::<Vec<_>>());
        }
        // A table no longer declared stops recording changes.
        let undeclared: Vec<(String,)> =
            sqlx::query_as(&tags::sqlite_undeclared(tables)).persistent(false).fetch_all(&mut *tx).await?;
        for (trigger,) in undeclared {
            sqlx::query(&format!("DROP TRIGGER \"{}\"", trigger.replace('"', "\"\"")))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for statement in tags::sqlite(tables, |table| keys.get(table).cloned().unwrap_or_default()) {
            sqlx::query(&statement).persistent(false).execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE service_calendar SET time_zone = $1, utc_offset_min = $2, day_start_min = $3")
            .bind(calendar.zone_name())
            .bind(calendar.utc_offset_minutes(Utc::now()))
            .bind(calendar.day_start_minutes())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM service_day_runs").execute(&mut *tx).await?;
        for chunk in calendar.day_runs().chunks(1000) {
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO service_day_runs (starts_at, day, last_day) VALUES {rows}");
            let mut insert = sqlx::query(&sql).persistent(false);
            for run in chunk {
                insert =
                    insert.bind(timestamp_text(run.starts_at)).bind(run.day.to_string()).bind(run.last_day.to_string());
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads started so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// `statement` for SQLite: instants as fixed-width UTC text, so text order is time order.
pub(crate) fn query<'q>(
    statement: &'q Statement<'q>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let mut query = sqlx::query(&statement.sql);
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
