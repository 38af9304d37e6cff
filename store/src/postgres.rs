//! PostgreSQL store: RDS, RDS Proxy, PgBouncer or a local server.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::calendar::ServiceCalendar;
use crate::demo::DemoData;
use crate::error::{StoreError, StoreResult};
use crate::feed::{Cursor, FeedCursor, FeedPage, split_overflow};
use crate::model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
use crate::options::DbOptions;
use crate::read::Store;
use crate::sql::{self, summaries};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Lazily connecting pool: nothing touches the network until the first query.
    pool: PgPool,
    /// `BEGIN READ ONLY; SET LOCAL statement_timeout = …`, sent as one simple query per read.
    begin_read: Cow<'static, str>,
    /// The same with the (shorter) feed timeout, for change-feed reads.
    begin_feed: Cow<'static, str>,
    /// Whether statements may be prepared under a name and cached on the connection.
    persistent: bool,
    /// Read transactions started, shared by clones.
    reads: Arc<AtomicU64>,
}

impl PgStore {
    /// Creates the store without connecting (Lambda init must not do network I/O).
    ///
    /// # Errors
    ///
    /// A malformed `url`.
    pub fn connect_lazy(url: &str, options: &DbOptions) -> Result<Self, sqlx::Error> {
        let mut connect: PgConnectOptions = url.parse()?;
        connect = connect.application_name(&options.application_name);
        if options.proxy_compat {
            // PgBouncer rejects unknown startup parameters, and named statements would be prepared
            // on one server connection and executed on another.
            connect = connect.statement_cache_capacity(0).extra_float_digits(None);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Some(options.idle_timeout))
            .max_lifetime(Some(Duration::from_secs(30 * 60)))
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        let begin = |timeout: Duration| {
            Cow::Owned(format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {}", timeout.as_millis().max(1)))
        };
        Ok(Self {
            pool,
            begin_read: begin(options.statement_timeout),
            begin_feed: begin(options.feed_timeout.min(options.statement_timeout)),
            persistent: !options.proxy_compat,
            reads: Arc::default(),
        })
    }

    /// The underlying pool, for this crate's other statements (the warmer's outbox).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One short read-only transaction: it pins a single server connection for its duration even
    /// behind transaction pooling, and carries the statement timeout with it.
    async fn read(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.pool.begin_with(self.begin_read.clone()).await?)
    }

    /// A read-only transaction under the feed timeout.
    async fn read_feed(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.pool.begin_with(self.begin_feed.clone()).await?)
    }

    fn rows<'q, T>(&self, sql: &'q str) -> sqlx::query::QueryAs<'q, Postgres, T, sqlx::postgres::PgArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        sqlx::query_as::<_, T>(sql).persistent(self.persistent)
    }
}

impl Store for PgStore {
    async fn lines(&self) -> StoreResult<Vec<Line>> {
        let mut tx = self.read().await?;
        let lines = self.rows(sql::LINES).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(lines)
    }

    async fn line_stations(&self, line_id: &str) -> StoreResult<Option<LineStations>> {
        let mut tx = self.read().await?;
        let Some(line) = self.rows::<Line>(sql::LINE).bind(line_id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let stations: Vec<Station> = self.rows(sql::STATIONS).bind(line_id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(LineStations { line, stations }))
    }

    async fn formations(&self) -> StoreResult<Vec<FormationSummary>> {
        let mut tx = self.read().await?;
        let formations: Vec<Formation> = self.rows(sql::FORMATIONS).fetch_all(&mut *tx).await?;
        let latest: Vec<Sighting> = self.rows(sql::LATEST_PER_FORMATION).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(summaries(formations, latest))
    }

    async fn formation(&self, id: &str) -> StoreResult<Option<FormationDetail>> {
        let mut tx = self.read().await?;
        let Some(formation) = self.rows::<Formation>(sql::FORMATION).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let sightings =
            self.rows(sql::FORMATION_SIGHTINGS).bind(id).bind(FORMATION_SIGHTINGS).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(FormationDetail { formation, sightings }))
    }

    async fn operations(&self, date: NaiveDate) -> StoreResult<Vec<Operation>> {
        let mut tx = self.read().await?;
        let ops = self.rows(sql::OPERATIONS).bind(date).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(ops)
    }

    async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<OperationDetail>> {
        let mut tx = self.read().await?;
        let Some(operation) =
            self.rows::<Operation>(sql::OPERATION).bind(date).bind(number).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let sightings =
            self.rows(sql::OPERATION_SIGHTINGS).bind(number).bind(from).bind(until).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(OperationDetail { operation, sightings }))
    }

    async fn latest_sightings(&self, limit: i64) -> StoreResult<Vec<Sighting>> {
        let mut tx = self.read().await?;
        let rows = self.rows(sql::LATEST_SIGHTINGS).bind(limit).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn feed_start(&self) -> StoreResult<FeedCursor> {
        let mut tx = self.read_feed().await?;
        let (snapshot,): (String,) = self.rows("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(FeedCursor(Cursor::Snapshot(snapshot)))
    }

    async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        let FeedCursor(Cursor::Snapshot(since)) = cursor else {
            return Err(StoreError::Data("a SQLite feed cursor was given to PostgreSQL".into()));
        };
        let mut tx = self.read_feed().await?;
        // One statement, so the rows and the new cursor come from the same snapshot. No ORDER BY:
        // it would tempt the planner into walking the primary key past every old row; the
        // `xid >= xmin` range on its index is the selective part.
        let rows: Vec<(String, Option<i64>, Option<String>)> = self
            .rows(
                "SELECT cur.s::text, c.id, c.tag \
                 FROM (SELECT pg_current_snapshot() AS s) cur LEFT JOIN LATERAL ( \
                     SELECT id, tag FROM cache_changes \
                     WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot) \
                       AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot) \
                     LIMIT $2) c ON true",
            )
            .bind(since)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let snapshot = rows.first().map(|r| r.0.clone()).ok_or_else(|| StoreError::Data("no snapshot".into()))?;
        let mut changes: Vec<Change> =
            rows.into_iter().filter_map(|(_, id, tag)| Some(Change { id: id?, tag: tag? })).collect();
        changes.sort_by_key(|c| c.id);
        let (changes, overflow) = split_overflow(changes, limit);
        Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Snapshot(snapshot)), overflow })
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut tx = self.read().await?;
        sqlx::query("SELECT 1").persistent(self.persistent).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        sqlx::query("UPDATE service_calendar SET time_zone = $1, day_start = make_interval(mins => $2)")
            .persistent(self.persistent)
            .bind(calendar.zone_name())
            .bind(calendar.day_start_minutes())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        let mut tx = self.read().await?;
        let row = self
            .rows("SELECT time_zone, (EXTRACT(EPOCH FROM day_start) / 60)::int FROM service_calendar")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn has_data(&self) -> StoreResult<bool> {
        let mut tx = self.read().await?;
        let (exists,): (bool,) = self.rows(sql::HAS_DATA).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(exists)
    }

    async fn load_demo(&self, data: &DemoData, progress: &(dyn Fn(u64) + Send + Sync)) -> StoreResult<()> {
        const CHUNK: usize = 10_000;
        let mut tx = self.pool.begin().await?;
        let (before,): (i64,) = sqlx::query_as(sql::MAX_CHANGE).fetch_one(&mut *tx).await?;
        for table in ["sightings", "operations", "stations", "formations", "lines"] {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }

        // One statement per table and chunk: arrays bound as parameters, unnested server-side.
        let lines = &data.lines;
        sqlx::query("INSERT INTO lines (id, name, color) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])")
            .bind(lines.iter().map(|l| l.id.clone()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.color.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        progress(lines.len() as u64);
        let stations = &data.stations;
        sqlx::query(
            "INSERT INTO stations (id, line_id, name, position) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[])",
        )
        .bind(stations.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
        .bind(stations.iter().map(|s| s.line_id.clone()).collect::<Vec<_>>())
        .bind(stations.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        .bind(stations.iter().map(|s| s.position).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        progress(stations.len() as u64);
        let formations = &data.formations;
        sqlx::query(
            "INSERT INTO formations (id, series, cars, note) SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[])",
        )
        .bind(formations.iter().map(|f| f.id.clone()).collect::<Vec<_>>())
        .bind(formations.iter().map(|f| f.series.clone()).collect::<Vec<_>>())
        .bind(formations.iter().map(|f| f.cars).collect::<Vec<_>>())
        .bind(formations.iter().map(|f| f.note.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        progress(formations.len() as u64);
        for chunk in data.operations.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO operations (service_date, number, formation_id) SELECT * FROM UNNEST($1::date[], $2::text[], $3::text[])",
            )
            .bind(chunk.iter().map(|o| o.service_date).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.number.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.formation_id.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            progress(chunk.len() as u64);
        }
        for chunk in data.sightings.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[])",
            )
            .bind(chunk.iter().map(|s| s.formation_id.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.operation_number.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.station_id.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.seen_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            progress(chunk.len() as u64);
        }
        sql::compact_changes::<Postgres>(&mut tx, before).await?;
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
