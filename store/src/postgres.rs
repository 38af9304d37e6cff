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

/// The feed's present position: the statement's snapshot and the highest change id it sees (one
/// statement, so both come from the same snapshot).
const SNAPSHOT: &str = "SELECT pg_current_snapshot()::text, COALESCE((SELECT max(id) FROM cache_changes), 0)";

/// How long a cold instance's first read waits for the feed's lock before reading its data without
/// the position: the position takes microseconds, unless something holds the change feed locked
/// (`LOCK TABLE`, `VACUUM FULL`, a migration). Then its data is read alone, served once and not
/// kept, rather than waiting behind the lock until the statement timeout and answering `503`.
const POSITION_LOCK_WAIT: &str = "SET LOCAL lock_timeout = 100";
const LOCK_WAIT_RESET: &str = "SET LOCAL lock_timeout TO DEFAULT";

/// Whether `err` is PostgreSQL's `lock_not_available` (a `lock_timeout` ran out).
fn lock_not_available(err: &StoreError) -> bool {
    matches!(err, StoreError::Query(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
}

/// The position [`SNAPSHOT`] returned.
fn snapshot(rows: &[PgRow]) -> StoreResult<FeedCursor> {
    let (snapshot, last_id) =
        decode::<(String, i64)>(rows)?.pop().ok_or_else(|| StoreError::Data("no snapshot".into()))?;
    Ok(FeedCursor(Cursor::Snapshot { snapshot, last_id }))
}

/// The PostgreSQL implementation of [`Store`]. Clones share everything (requests clone it).
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Lazily connecting pool: nothing touches the network until the first query. Replaced by a
    /// fresh one when its connections are stuck (see [`Pools`]).
    pools: Arc<Pools>,
    /// The settings that open every read's message (read-only, the statement timeout, UTC and ISO
    /// dates so text results decode the same on every server, and no JIT: compiling a read of a
    /// few rows can cost more than running it, when the planner misjudges a freshly grown table).
    read_preamble: Arc<str>,
    /// The same with the (shorter) feed timeout, for change-feed reads.
    feed_preamble: Arc<str>,
    /// Read transactions started, shared by clones.
    reads: Arc<AtomicU64>,
    /// Client-side bound of a read once it has its connection: the server's statement timeout
    /// plus [`SILENCE_MARGIN`]. Past it the server would have ended the read itself, so the
    /// connection has gone silent.
    read_limit: Duration,
    /// The same for change-feed reads.
    feed_limit: Duration,
}

/// The pool in use, and how to make another.
///
/// sqlx checks every connection it takes back (a `Sync` round trip) with no time limit, in a task
/// that keeps the connection's pool slot. If the connection goes silent in that moment (a failover
/// black-holes it, or a Lambda instance is frozen between its answer and that check and thaws
/// onto a dead route), the slot is held until the kernel gives up on the socket, many minutes
/// later, and a one-connection instance answers every miss `503` meanwhile. Nothing can cancel
/// that task, so when an acquire times out while every slot is taken and none by a read of ours,
/// the pool is replaced by a fresh one with the same settings and the stuck slot is abandoned.
/// (The database may then count that dead connection until its own keepalive closes it.)
#[derive(Debug)]
struct Pools {
    /// The pool in use, and its generation (so concurrent failures replace it once).
    current: std::sync::RwLock<(u64, PgPool)>,
    /// The settings every pool is built with.
    options: PgPoolOptions,
    /// How every pool connects.
    connect: PgConnectOptions,
    /// Connections our reads hold right now (over all generations).
    held: std::sync::atomic::AtomicUsize,
}

impl Pools {
    fn new(options: PgPoolOptions, connect: PgConnectOptions) -> Self {
        let pool = options.clone().connect_lazy_with(connect.clone());
        Self { current: std::sync::RwLock::new((0, pool)), options, connect, held: Default::default() }
    }

    /// The pool in use.
    fn get(&self) -> (u64, PgPool) {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Called after an acquire from pool `generation` timed out: replaces it if its slots are
    /// all taken and none by a read of ours (so they are stuck being taken back).
    fn replace_if_stuck(&self, generation: u64, pool: &PgPool) {
        let max = self.options.get_max_connections();
        let stuck = pool.size() >= max && pool.num_idle() == 0 && self.held.load(Ordering::Acquire) == 0;
        if !stuck {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != generation {
            return;
        }
        tracing::warn!(connections = pool.size(), "database connections stuck being returned to the pool: replaced");
        let old = std::mem::replace(&mut current.1, self.options.clone().connect_lazy_with(self.connect.clone()));
        current.0 += 1;
        drop(current);
        // Stop the old pool from handing out or opening anything; its stuck slot goes with it.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.close()).await;
        });
    }
}

/// Counts a connection one of our reads holds, for [`Pools::replace_if_stuck`].
struct Held<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Held<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How much longer than its statement timeout a read may take before its connection is taken for
/// dead. Shorter than the margins the API's cache puts on a load and on a poll, so the store sees
/// a silent connection first and can drop it.
const SILENCE_MARGIN: Duration = Duration::from_millis(250);

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
        let pool_options = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Some(options.idle_timeout))
            .max_lifetime(Some(Duration::from_secs(30 * 60)))
            .test_before_acquire(false);
        let preamble = |timeout: Duration| {
            format!(
                "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; SET LOCAL TimeZone = 'UTC'; \
                 SET LOCAL DateStyle = 'ISO'; SET LOCAL jit = off",
                timeout.as_millis().max(1)
            )
        };
        let feed_timeout = options.feed_timeout.min(options.statement_timeout);
        Ok(Self {
            pools: Arc::new(Pools::new(pool_options, connect)),
            read_preamble: preamble(options.statement_timeout).into(),
            feed_preamble: preamble(feed_timeout).into(),
            reads: Arc::default(),
            read_limit: options.statement_timeout + SILENCE_MARGIN,
            feed_limit: feed_timeout + SILENCE_MARGIN,
        })
    }

    /// The pool in use, for this crate's other statements (the warmer's outbox).
    pub(crate) fn pool(&self) -> PgPool {
        self.pools.get().1
    }

    /// One read: its statements in one message, one round trip (see `onemessage`).
    async fn read<const N: usize>(&self, statements: [String; N]) -> StoreResult<[Vec<PgRow>; N]> {
        self.run(&self.read_preamble, self.read_limit, statements).await
    }

    /// A change-feed read, under the feed timeout.
    async fn read_feed<const N: usize>(&self, statements: [String; N]) -> StoreResult<[Vec<PgRow>; N]> {
        self.run(&self.feed_preamble, self.feed_limit, statements).await
    }

    /// Runs one read on a pooled connection, bounded by `limit` once the connection is acquired.
    ///
    /// A connection that goes silent (a failover or a dropped route black-holes it, and no TCP
    /// reset ever comes) is detached from the pool and dropped when the limit passes. Returned to
    /// the pool, sqlx would check it with no time limit in a task that keeps its pool slot, and a
    /// one-connection instance would then answer every miss `503` until the kernel gave up on the
    /// socket, many minutes later. Dropped, the next read opens a fresh connection.
    async fn run<const N: usize>(
        &self,
        preamble: &str,
        limit: Duration,
        statements: [String; N],
    ) -> StoreResult<[Vec<PgRow>; N]> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let (generation, pool) = self.pools.get();
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(err) => {
                if matches!(err, sqlx::Error::PoolTimedOut) {
                    self.pools.replace_if_stuck(generation, &pool);
                }
                return Err(err.into());
            }
        };
        let held = Held::new(&self.pools.held);
        let outcome = tokio::time::timeout(limit, Self::run_on(&mut conn, preamble, statements)).await;
        let result = match outcome {
            Ok(results) => {
                drop(conn);
                results
            }
            Err(_) => {
                drop(conn.detach());
                tracing::warn!(?limit, "a database connection went silent: dropped");
                Err(StoreError::TimedOut)
            }
        };
        // Only once the connection is handed back: until then it is ours, not stuck.
        drop(held);
        result
    }

    async fn run_on<const N: usize>(
        conn: &mut sqlx::pool::PoolConnection<Postgres>,
        preamble: &str,
        statements: [String; N],
    ) -> StoreResult<[Vec<PgRow>; N]> {
        let conn = &mut **conn;
        let results = if feed::start_wanted() {
            // The position first: in a read-committed transaction each statement sees at least
            // what the one before it saw, so whatever the data statements miss is not visible in
            // the position either, and the first poll from it reports it.
            // Only the position waits at most POSITION_LOCK_WAIT for its lock.
            let mut with_start = Vec::with_capacity(N + 3);
            with_start.extend([POSITION_LOCK_WAIT, SNAPSHOT, LOCK_WAIT_RESET].map(str::to_owned));
            with_start.extend(statements);
            match onemessage::run(conn, preamble, &with_start).await {
                Ok(mut results) => {
                    let start = results.drain(..3).nth(1).unwrap_or_default();
                    feed::start_read(snapshot(&start)?);
                    results
                }
                // The feed is locked: the data alone, without a position (so served once).
                Err(err) if lock_not_available(&err) => {
                    tracing::warn!("the change feed is locked: a cold read goes without its feed position");
                    onemessage::run(conn, preamble, &with_start[3..]).await?
                }
                Err(err) => return Err(err),
            }
        } else {
            onemessage::run(conn, preamble, &statements).await?
        };
        results.try_into().map_err(|_| StoreError::Data("a result per statement".into()))
    }
}

/// The transactions `snapshot` saw in progress, as an `xid8[]` literal (`{790,805}`). Spelled
/// out rather than computed in the statement (`pg_snapshot_xip`), and cast from the untyped
/// literal itself (`E'{790}'::xid8[]`, a constant once parsed, where `::text::xid8[]` is a cast
/// evaluated at run time), so the planner sees how few they are and reads them through the xid
/// index. An array it cannot see is the one estimate of this plan it must guess, and under the
/// poll's `LIMIT` a guess of many rows makes a walk of the primary key look cheaper: the
/// long-open-writer test once measured three polls reading every row of a two-million-row feed.
fn in_progress(snapshot: &str) -> StoreResult<String> {
    let malformed = || StoreError::Data(format!("malformed snapshot {snapshot:?}"));
    let xip = snapshot.splitn(3, ':').nth(2).ok_or_else(malformed)?;
    let mut list = String::from("{");
    for xid in xip.split(',').filter(|x| !x.is_empty()) {
        let xid: u64 = xid.parse().map_err(|_| malformed())?;
        if list.len() > 1 {
            list.push(',');
        }
        list.push_str(&xid.to_string());
    }
    list.push('}');
    Ok(list)
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
        let FeedCursor(Cursor::Snapshot { snapshot: since, last_id }) = cursor else {
            return Err(StoreError::Data("a SQLite feed cursor was given to PostgreSQL".into()));
        };
        // One statement, so the rows and the new cursor come from the same snapshot. What became
        // visible since the cursor is in two places (see `Cursor::Snapshot`): ids above the last
        // one seen, by the primary key, and the changes of the transactions the cursor's snapshot
        // had in progress, by the xid index (see `in_progress`). Neither walks the rows since the
        // oldest open transaction, so a writer left open for hours costs a poll nothing. The visibility test
        // against the cursor only guards the second set's rows against being reported twice.
        let statement = bind(
            "SELECT cur.s::text, cur.m, c.id, c.tag \
             FROM (SELECT pg_current_snapshot() AS s, \
                          GREATEST($2, COALESCE((SELECT max(id) FROM cache_changes), 0)) AS m) cur \
             LEFT JOIN LATERAL ( \
                 SELECT id, tag FROM ( \
                     SELECT id, tag, xid FROM cache_changes WHERE id > $2 \
                     UNION ALL \
                     SELECT id, tag, xid FROM cache_changes \
                     WHERE xid = ANY ($4::xid8[]) AND id <= $2 \
                 ) n WHERE NOT pg_visible_in_snapshot(n.xid, $1::text::pg_snapshot) \
                 LIMIT $3) c ON true",
            &[
                Literal::Text(since),
                Literal::Int(*last_id),
                Literal::Int(i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1),
                Literal::Text(&in_progress(since)?),
            ],
        )?;
        let [rows] = self.read_feed([statement]).await?;
        let rows: Vec<(String, i64, Option<i64>, Option<String>)> = decode(&rows)?;
        let (snapshot, last_id) =
            rows.first().map(|r| (r.0.clone(), r.1)).ok_or_else(|| StoreError::Data("no snapshot".into()))?;
        let mut changes: Vec<Change> =
            rows.into_iter().filter_map(|(_, _, id, tag)| Some(Change { id: id?, tag: tag? })).collect();
        changes.sort_by_key(|c| c.id);
        let (changes, overflow) = split_overflow(changes, limit);
        Ok(FeedPage { changes, cursor: FeedCursor(Cursor::Snapshot { snapshot, last_id }), overflow })
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(["SELECT 1".to_owned()]).await?;
        Ok(())
    }

    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        let pool = self.pool();
        MIGRATOR.run(&pool).await?;
        sqlx::query("UPDATE service_calendar SET time_zone = $1, day_start = make_interval(mins => $2)")
            .persistent(false)
            .bind(calendar.zone_name())
            .bind(calendar.day_start_minutes())
            .execute(&pool)
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
        let mut tx = self.pool().begin().await?;
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
        self.pool().close().await;
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshots_in_progress_transactions_become_an_array_literal() {
        assert_eq!(in_progress("790:792:790").unwrap(), "{790}");
        assert_eq!(in_progress("790:805:790,801").unwrap(), "{790,801}");
        assert_eq!(in_progress("805:805:").unwrap(), "{}");
        assert!(in_progress("805:805:1;DROP").is_err());
        assert!(in_progress("805").is_err());
    }
}
