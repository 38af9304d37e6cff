//! PostgreSQL store: RDS, RDS Proxy, PgBouncer or a local server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};

use crate::calendar::ServiceCalendar;
use crate::demo::DemoData;
use crate::error::{StoreError, StoreResult};
use crate::feed::{self, Cursor, FeedCursor, FeedPage, split_overflow};
use crate::model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
use crate::onemessage::{self, Literal, bind, decode};
use crate::options::DbOptions;
use crate::read::Store;
use crate::sql::{self, summaries};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The certificate authorities of Amazon RDS, Aurora and RDS Proxy, for `sslmode=verify-full`.
const RDS_CERTIFICATE_AUTHORITIES: &[u8] = include_bytes!("../certs/aws-rds-ca-bundle.pem");

/// The feed's present position.
const SNAPSHOT: &str = "SELECT pg_current_snapshot()::text";

/// The position [`SNAPSHOT`] returned.
fn snapshot(rows: &[PgRow]) -> StoreResult<FeedCursor> {
    let (snapshot,) = decode::<(String,)>(rows)?.pop().ok_or_else(|| StoreError::Data("no snapshot".into()))?;
    Ok(FeedCursor(Cursor::Snapshot(snapshot)))
}

/// The PostgreSQL implementation of [`Store`]. Clones share everything (requests clone it).
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Lazily connecting pool: nothing touches the network until the first query.
    pool: PgPool,
    /// The settings that open every read's message (read-only, the statement timeout, UTC and ISO
    /// dates so text results decode the same on every server).
    read_preamble: Arc<str>,
    /// The same with the (shorter) feed timeout, for change-feed reads.
    feed_preamble: Arc<str>,
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
        // A server to verify and no authority named: the RDS ones this binary carries (see
        // store/certs/README.md), so a function needs no certificate file.
        if matches!(connect.get_ssl_mode(), PgSslMode::VerifyCa | PgSslMode::VerifyFull)
            && !url.contains("sslrootcert=")
        {
            connect = connect.ssl_root_cert_from_pem(RDS_CERTIFICATE_AUTHORITIES.to_vec());
        }
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
        let preamble = |timeout: Duration| {
            format!(
                "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; SET LOCAL TimeZone = 'UTC'; \
                 SET LOCAL DateStyle = 'ISO'",
                timeout.as_millis().max(1)
            )
        };
        Ok(Self {
            pool,
            read_preamble: preamble(options.statement_timeout).into(),
            feed_preamble: preamble(options.feed_timeout.min(options.statement_timeout)).into(),
            reads: Arc::default(),
        })
    }

    /// The underlying pool, for this crate's other statements (the warmer's outbox).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One read: its statements in one message, one round trip (see `onemessage`).
    async fn read<const N: usize>(&self, statements: [String; N]) -> StoreResult<[Vec<PgRow>; N]> {
        self.run(&self.read_preamble, statements).await
    }

    /// A change-feed read, under the feed timeout.
    async fn read_feed<const N: usize>(&self, statements: [String; N]) -> StoreResult<[Vec<PgRow>; N]> {
        self.run(&self.feed_preamble, statements).await
    }

    async fn run<const N: usize>(&self, preamble: &str, statements: [String; N]) -> StoreResult<[Vec<PgRow>; N]> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.pool.acquire().await?;
        let results = if feed::start_wanted() {
            // The position first: in a read-committed transaction each statement sees at least
            // what the one before it saw, so whatever the data statements miss is not visible in
            // the position either, and the first poll from it reports it.
            let mut with_start = Vec::with_capacity(N + 1);
            with_start.push(SNAPSHOT.to_owned());
            with_start.extend(statements);
            let mut results = onemessage::run(&mut conn, preamble, &with_start).await?;
            let start = results.remove(0);
            feed::start_read(snapshot(&start)?);
            results
        } else {
            onemessage::run(&mut conn, preamble, &statements).await?
        };
        results.try_into().map_err(|_| StoreError::Data("a result per statement".into()))
    }
}

impl Store for PgStore {
    async fn lines(&self) -> StoreResult<Vec<Line>> {
        let [lines] = self.read([sql::LINES.to_owned()]).await?;
        decode(&lines)
    }

    async fn line_stations(&self, line_id: &str) -> StoreResult<Option<LineStations>> {
        let id = [Literal::Text(line_id)];
        let [line, stations] = self.read([bind(sql::LINE, &id)?, bind(sql::STATIONS, &id)?]).await?;
        let Some(line) = decode::<Line>(&line)?.pop() else { return Ok(None) };
        Ok(Some(LineStations { line, stations: decode::<Station>(&stations)? }))
    }

    async fn formations(&self) -> StoreResult<Vec<FormationSummary>> {
        let [formations, latest] =
            self.read([sql::FORMATIONS.to_owned(), sql::LATEST_PER_FORMATION.to_owned()]).await?;
        Ok(summaries(decode::<Formation>(&formations)?, decode::<Sighting>(&latest)?))
    }

    async fn formation(&self, id: &str) -> StoreResult<Option<FormationDetail>> {
        let [formation, sightings] = self
            .read([
                bind(sql::FORMATION, &[Literal::Text(id)])?,
                bind(sql::FORMATION_SIGHTINGS, &[Literal::Text(id), Literal::Int(FORMATION_SIGHTINGS)])?,
            ])
            .await?;
        let Some(formation) = decode::<Formation>(&formation)?.pop() else { return Ok(None) };
        Ok(Some(FormationDetail { formation, sightings: decode(&sightings)? }))
    }

    async fn operations(&self, date: NaiveDate) -> StoreResult<Vec<Operation>> {
        let [ops] = self.read([bind(sql::OPERATIONS, &[Literal::Date(date)])?]).await?;
        decode(&ops)
    }

    async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<OperationDetail>> {
        let [operation, sightings] = self
            .read([
                bind(sql::OPERATION, &[Literal::Date(date), Literal::Text(number)])?,
                bind(sql::OPERATION_SIGHTINGS, &[Literal::Text(number), Literal::Time(from), Literal::Time(until)])?,
            ])
            .await?;
        let Some(operation) = decode::<Operation>(&operation)?.pop() else { return Ok(None) };
        Ok(Some(OperationDetail { operation, sightings: decode(&sightings)? }))
    }

    async fn latest_sightings(&self, limit: i64) -> StoreResult<Vec<Sighting>> {
        let [rows] = self.read([bind(sql::LATEST_SIGHTINGS, &[Literal::Int(limit)])?]).await?;
        decode(&rows)
    }

    async fn feed_start(&self) -> StoreResult<FeedCursor> {
        let [rows] = self.read_feed([SNAPSHOT.to_owned()]).await?;
        snapshot(&rows)
    }

    async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        let FeedCursor(Cursor::Snapshot(since)) = cursor else {
            return Err(StoreError::Data("a SQLite feed cursor was given to PostgreSQL".into()));
        };
        // One statement, so the rows and the new cursor come from the same snapshot. No ORDER BY:
        // it would tempt the planner into walking the primary key past every old row; the
        // `xid >= xmin` range on its index is the selective part.
        let statement = bind(
            "SELECT cur.s::text, c.id, c.tag \
             FROM (SELECT pg_current_snapshot() AS s) cur LEFT JOIN LATERAL ( \
                 SELECT id, tag FROM cache_changes \
                 WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot) \
                   AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot) \
                 LIMIT $2) c ON true",
            &[Literal::Text(since), Literal::Int(i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1)],
        )?;
        let [rows] = self.read_feed([statement]).await?;
        let rows: Vec<(String, Option<i64>, Option<String>)> = decode(&rows)?;
        let snapshot = rows.first().map(|r| r.0.clone()).ok_or_else(|| StoreError::Data("no snapshot".into()))?;
        let mut changes: Vec<Change> =
            rows.into_iter().filter_map(|(_, id, tag)| Some(Change { id: id?, tag: tag? })).collect();
        changes.sort_by_key(|c| c.id);
        let (changes, overflow) = split_overflow(changes, limit);
        Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Snapshot(snapshot)), overflow })
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(["SELECT 1".to_owned()]).await?;
        Ok(())
    }

    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        sqlx::query("UPDATE service_calendar SET time_zone = $1, day_start = make_interval(mins => $2)")
            .persistent(false)
            .bind(calendar.zone_name())
            .bind(calendar.day_start_minutes())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        let [rows] = self
            .read(["SELECT time_zone, (EXTRACT(EPOCH FROM day_start) / 60)::int FROM service_calendar".to_owned()])
            .await?;
        decode(&rows)?.pop().ok_or_else(|| StoreError::Data("no service calendar".into()))
    }

    async fn has_data(&self) -> StoreResult<bool> {
        let [rows] = self.read([sql::HAS_DATA.to_owned()]).await?;
        Ok(decode::<(bool,)>(&rows)?.pop().is_some_and(|(exists,)| exists))
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
