//! SQLite store: the embedded default, so `cargo run -p api` works with no database server.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::calendar::ServiceCalendar;
use crate::demo::DemoData;
use crate::error::{StoreError, StoreResult};
use crate::feed::{Cursor, FeedCursor, FeedPage, split_overflow};
use crate::model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
use crate::read::Store;
use crate::sql::{self, summaries};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// WAL-mode pool: readers never block the occasional writer.
    pool: SqlitePool,
    /// Reads started, shared by clones.
    reads: Arc<AtomicU64>,
}

/// Timestamps are stored as fixed-width UTC text so that text order is time order.
pub(crate) fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
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

    fn count(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

impl Store for SqliteStore {
    async fn lines(&self) -> StoreResult<Vec<Line>> {
        self.count();
        Ok(sqlx::query_as(sql::LINES).fetch_all(&self.pool).await?)
    }

    async fn line_stations(&self, line_id: &str) -> StoreResult<Option<LineStations>> {
        self.count();
        let mut tx = self.pool.begin().await?;
        let Some(line) = sqlx::query_as::<_, Line>(sql::LINE).bind(line_id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let stations: Vec<Station> = sqlx::query_as(sql::STATIONS).bind(line_id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(LineStations { line, stations }))
    }

    async fn formations(&self) -> StoreResult<Vec<FormationSummary>> {
        self.count();
        let mut tx = self.pool.begin().await?;
        let formations: Vec<Formation> = sqlx::query_as(sql::FORMATIONS).fetch_all(&mut *tx).await?;
        let latest: Vec<Sighting> = sqlx::query_as(sql::LATEST_PER_FORMATION).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(summaries(formations, latest))
    }

    async fn formation(&self, id: &str) -> StoreResult<Option<FormationDetail>> {
        self.count();
        let mut tx = self.pool.begin().await?;
        let Some(formation) = sqlx::query_as::<_, Formation>(sql::FORMATION).bind(id).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let sightings =
            sqlx::query_as(sql::FORMATION_SIGHTINGS).bind(id).bind(FORMATION_SIGHTINGS).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(FormationDetail { formation, sightings }))
    }

    async fn operations(&self, date: NaiveDate) -> StoreResult<Vec<Operation>> {
        self.count();
        Ok(sqlx::query_as(sql::OPERATIONS).bind(date).fetch_all(&self.pool).await?)
    }

    async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<OperationDetail>> {
        self.count();
        let mut tx = self.pool.begin().await?;
        let Some(operation) =
            sqlx::query_as::<_, Operation>(sql::OPERATION).bind(date).bind(number).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let sightings = sqlx::query_as(sql::OPERATION_SIGHTINGS)
            .bind(number)
            .bind(timestamp_text(from))
            .bind(timestamp_text(until))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(OperationDetail { operation, sightings }))
    }

    async fn latest_sightings(&self, limit: i64) -> StoreResult<Vec<Sighting>> {
        self.count();
        Ok(sqlx::query_as(sql::LATEST_SIGHTINGS).bind(limit).fetch_all(&self.pool).await?)
    }

    async fn feed_start(&self) -> StoreResult<FeedCursor> {
        self.count();
        let (max,): (i64,) = sqlx::query_as(sql::MAX_CHANGE).fetch_one(&self.pool).await?;
        Ok(FeedCursor(Cursor::Id(max)))
    }

    async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        let FeedCursor(Cursor::Id(after)) = *cursor else {
            return Err(StoreError::Data("a PostgreSQL feed cursor was given to SQLite".into()));
        };
        self.count();
        // One writer at a time: ids become visible in order, so "after the last id" is exact.
        let mut tx = self.pool.begin().await?;
        let changes: Vec<Change> =
            sqlx::query_as("SELECT id, tag FROM cache_changes WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1)
                .fetch_all(&mut *tx)
                .await?;
        let (changes, overflow) = split_overflow(changes, limit);
        let last = if overflow {
            let (max,): (i64,) = sqlx::query_as(sql::MAX_CHANGE).fetch_one(&mut *tx).await?;
            max
        } else {
            changes.last().map_or(after, |c| c.id)
        };
        tx.commit().await?;
        Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Id(last)), overflow })
    }

    async fn ping(&self) -> StoreResult<()> {
        self.count();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        sqlx::query("UPDATE service_calendar SET time_zone = $1, utc_offset_min = $2, day_start_min = $3")
            .bind(calendar.zone_name())
            .bind(calendar.utc_offset_minutes(Utc::now()))
            .bind(calendar.day_start_minutes())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        Ok(sqlx::query_as("SELECT time_zone, day_start_min FROM service_calendar").fetch_one(&self.pool).await?)
    }

    async fn has_data(&self) -> StoreResult<bool> {
        let (tables,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'lines'")
                .fetch_one(&self.pool)
                .await?;
        if tables == 0 {
            return Ok(false);
        }
        let (exists,): (bool,) = sqlx::query_as(sql::HAS_DATA).fetch_one(&self.pool).await?;
        Ok(exists)
    }

    async fn load_demo(&self, data: &DemoData, progress: &(dyn Fn(u64) + Send + Sync)) -> StoreResult<()> {
        const CHUNK: usize = 10_000;
        let mut tx = self.pool.begin().await?;
        let (before,): (i64,) = sqlx::query_as(sql::MAX_CHANGE).fetch_one(&mut *tx).await?;
        for table in ["sightings", "operations", "stations", "formations", "lines"] {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }

        // Rows travel as one JSON array per chunk and are unpacked by json_each: one statement
        // per chunk instead of one per row.
        let tables: [(&str, Vec<serde_json::Value>); 5] = [
            (
                "INSERT INTO lines (id, name, color) SELECT value->>0, value->>1, value->>2 FROM json_each($1)",
                data.lines.iter().map(|l| serde_json::json!([l.id, l.name, l.color])).collect(),
            ),
            (
                "INSERT INTO stations (id, line_id, name, position) \
                 SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
                data.stations.iter().map(|s| serde_json::json!([s.id, s.line_id, s.name, s.position])).collect(),
            ),
            (
                "INSERT INTO formations (id, series, cars, note) \
                 SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
                data.formations.iter().map(|f| serde_json::json!([f.id, f.series, f.cars, f.note])).collect(),
            ),
            (
                "INSERT INTO operations (service_date, number, formation_id) \
                 SELECT value->>0, value->>1, value->>2 FROM json_each($1)",
                data.operations
                    .iter()
                    .map(|o| serde_json::json!([o.service_date.to_string(), o.number, o.formation_id]))
                    .collect(),
            ),
            (
                "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
                 SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
                data.sightings
                    .iter()
                    .map(|s| {
                        serde_json::json!([s.formation_id, s.operation_number, s.station_id, timestamp_text(s.seen_at)])
                    })
                    .collect(),
            ),
        ];
        for (insert, rows) in &tables {
            for chunk in rows.chunks(CHUNK) {
                let json = serde_json::Value::Array(chunk.to_vec()).to_string();
                sqlx::query(insert).bind(json).execute(&mut *tx).await?;
                progress(chunk.len() as u64);
            }
        }
        // Row triggers recorded every touched tag once per row: keep one row per distinct tag.
        sql::compact_changes::<sqlx::Sqlite>(&mut tx, before).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}
