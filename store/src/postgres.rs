//! PostgreSQL store: RDS, RDS Proxy, PgBouncer or a local server.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station, Store, StoreResult, sql, summaries,
};
use crate::calendar::ServiceCalendar;
use crate::seed::DemoData;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How the PostgreSQL pool behaves; see SPEC §6.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Upper bound of pooled connections (1 per Lambda instance by default).
    pub max_connections: u32,
    /// How long a request may wait for a connection before the API answers `503`.
    pub acquire_timeout: Duration,
    /// Server-side limit for each statement, set per transaction so it works through poolers.
    pub statement_timeout: Duration,
    /// Idle connections are closed after this, so a quiet instance holds no server slot.
    pub idle_timeout: Duration,
    /// No named prepared statements and no unusual startup parameters: required behind PgBouncer
    /// transaction pooling, and avoids pinning behind RDS Proxy.
    pub proxy_compat: bool,
    /// Shown in `pg_stat_activity`, so operators can tell whose connections they see.
    pub application_name: String,
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Lazily connecting pool: nothing touches the network until the first query.
    pool: PgPool,
    /// `BEGIN READ ONLY; SET LOCAL statement_timeout = …`, sent as one simple query per read.
    begin_read: Cow<'static, str>,
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
    pub fn connect_lazy(url: &str, options: &PgStoreOptions) -> Result<Self, sqlx::Error> {
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
        let ms = options.statement_timeout.as_millis().max(1);
        Ok(Self {
            pool,
            begin_read: Cow::Owned(format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}")),
            persistent: !options.proxy_compat,
            reads: Arc::default(),
        })
    }

    /// The underlying pool (tests inspect it; the warmer shares it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One short read-only transaction: it pins a single server connection for its duration even
    /// behind transaction pooling, and carries the statement timeout with it.
    async fn read(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.pool.begin_with(self.begin_read.clone()).await?)
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

    async fn max_change_id(&self) -> StoreResult<i64> {
        let mut tx = self.read().await?;
        let (max,): (i64,) = self.rows(sql::MAX_CHANGE).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(max)
    }

    async fn changes_since(&self, after: i64, also: &[i64], limit: i64) -> StoreResult<Vec<Change>> {
        let mut tx = self.read().await?;
        let rows = self
            .rows("SELECT id, tag FROM cache_changes WHERE id > $1 OR id = ANY($2) ORDER BY id LIMIT $3")
            .bind(after)
            .bind(also)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
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

    async fn has_data(&self) -> StoreResult<bool> {
        let mut tx = self.read().await?;
        let (exists,): (bool,) = self.rows(sql::HAS_DATA).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(exists)
    }

    async fn load_demo(&self, data: &DemoData, progress: &indicatif::ProgressBar) -> StoreResult<()> {
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
        progress.inc(lines.len() as u64);
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
        progress.inc(stations.len() as u64);
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
        progress.inc(formations.len() as u64);
        for chunk in data.operations.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO operations (service_date, number, formation_id) SELECT * FROM UNNEST($1::date[], $2::text[], $3::text[])",
            )
            .bind(chunk.iter().map(|o| o.service_date).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.number.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.formation_id.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            progress.inc(chunk.len() as u64);
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
            progress.inc(chunk.len() as u64);
        }
        compact_changes(&mut tx, before).await?;
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

/// A bulk load records the same tags many times; keep one row per distinct tag so API instances
/// and the warmer still see every touched tag, without processing thousands of duplicates.
async fn compact_changes(tx: &mut Transaction<'static, Postgres>, before: i64) -> StoreResult<()> {
    let (last,): (i64,) = sqlx::query_as(sql::MAX_CHANGE).fetch_one(&mut **tx).await?;
    sqlx::query(sql::COMPACT_CHANGES_INSERT).bind(before).bind(last).execute(&mut **tx).await?;
    sqlx::query(sql::COMPACT_CHANGES_DELETE).bind(before).bind(last).execute(&mut **tx).await?;
    Ok(())
}
