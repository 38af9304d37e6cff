//! PostgreSQL store: RDS, RDS Proxy, PgBouncer or a local server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};

use crate::calendar::ServiceCalendar;
use crate::credentials::reread_wait;
use crate::db::Mark;
use crate::error::{StoreError, StoreResult};
use crate::onemessage;
use crate::options::DbOptions;
use crate::sql::POSTGRES;
use crate::statement::{Limit, Statement, Value};
use crate::tags;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The certificate authorities of Amazon RDS, Aurora and RDS Proxy, for `sslmode=verify-full`.
const RDS_CERTIFICATE_AUTHORITIES: &[u8] = include_bytes!("../certs/aws-rds-ca-bundle.pem");

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

/// The PostgreSQL backend of [`crate::Db`]. Clones share everything (requests clone it).
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
    /// The same for a write (the API's learned paths): not read-only.
    write_preamble: Arc<str>,
    /// Read transactions started, shared by clones.
    reads: Arc<AtomicU64>,
    /// Client-side bound of the server's silence during a read, once it has its connection: the
    /// statement timeout plus [`SILENCE_MARGIN`]. The server ends each statement within its
    /// timeout, so no message for longer means the connection has gone silent.
    read_limit: Duration,
    /// The same for change-feed reads.
    feed_limit: Duration,
    /// How a URL becomes connect options (the settings applied to every URL).
    options: DbOptions,
    /// The URL's re-reads after a refused login (see [`crate::credentials`]).
    reread: Arc<Reread>,
}

/// The re-reads of the URL after the server refused the credentials: when the last one began and
/// whether it is still running, and how many have finished, which a refused call waits on.
#[derive(Debug)]
struct Reread {
    state: std::sync::Mutex<RereadState>,
    finished: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct RereadState {
    last: Option<std::time::Instant>,
    running: bool,
    /// Re-reads in a row that found the URL the pool already connects with.
    unchanged: u32,
}

/// Marks the running re-read ended when dropped, and wakes the calls waiting for it.
struct RereadEnded(Arc<Reread>);

impl RereadEnded {
    /// Records what the re-read found: a new URL, or not (the same, or none could be read).
    fn found(&self, changed: bool) {
        let mut state = self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.unchanged = if changed { 0 } else { state.unchanged.saturating_add(1) };
    }
}

impl Drop for RereadEnded {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).running = false;
        self.0.finished.send_modify(|n| *n += 1);
    }
}

impl Default for Reread {
    fn default() -> Self {
        Self { state: Default::default(), finished: tokio::sync::watch::Sender::new(0) }
    }
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
    /// The pool in use, its generation (so concurrent failures replace it once), and how it
    /// connects (replaced when the URL is read again after a rotated password).
    current: std::sync::RwLock<Current>,
    /// The settings every pool is built with.
    options: PgPoolOptions,
    /// Connections our reads hold right now (over all generations).
    held: std::sync::atomic::AtomicUsize,
}

/// What [`Pools`] guards.
#[derive(Debug)]
struct Current {
    generation: u64,
    pool: PgPool,
    connect: PgConnectOptions,
}

impl Pools {
    fn new(options: PgPoolOptions, connect: PgConnectOptions) -> Self {
        let pool = options.clone().connect_lazy_with(connect.clone());
        Self {
            current: std::sync::RwLock::new(Current { generation: 0, pool, connect }),
            options,
            held: Default::default(),
        }
    }

    fn current(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pool in use.
    fn get(&self) -> (u64, PgPool) {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (current.generation, current.pool.clone())
    }

    /// Replaces the pool in use by a fresh one that connects with `connect` (a new URL), unless
    /// it connects that way already. Connections of the old pool go as they are returned.
    fn reconnect(&self, connect: PgConnectOptions) -> bool {
        let mut current = self.current();
        if format!("{:?}", current.connect) == format!("{connect:?}") {
            return false;
        }
        let pool = self.options.clone().connect_lazy_with(connect.clone());
        let old = std::mem::replace(&mut current.pool, pool);
        current.connect = connect;
        current.generation += 1;
        drop(current);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.close()).await;
        });
        true
    }

    /// Called after an acquire from pool `generation` timed out: replaces it if its slots are
    /// all taken and none by a read of ours (so they are stuck being taken back).
    fn replace_if_stuck(&self, generation: u64, pool: &PgPool) {
        let max = self.options.get_max_connections();
        let stuck = pool.size() >= max && pool.num_idle() == 0 && self.held.load(Ordering::Acquire) == 0;
        if !stuck {
            return;
        }
        let mut current = self.current();
        if current.generation != generation {
            return;
        }
        tracing::warn!(connections = pool.size(), "database connections stuck being returned to the pool: replaced");
        let fresh = self.options.clone().connect_lazy_with(current.connect.clone());
        let old = std::mem::replace(&mut current.pool, fresh);
        current.generation += 1;
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

/// How much longer than its statement timeout the server may be silent during a read before its
/// connection is taken for dead. Shorter than the margin the API's cache puts on a load, so the
/// store sees a silent connection first and can drop it.
const SILENCE_MARGIN: Duration = Duration::from_millis(250);

impl PgStore {
    /// Creates the store without connecting (Lambda init must not do network I/O).
    ///
    /// # Errors
    ///
    /// A malformed `url`.
    pub fn connect_lazy(url: &str, options: &DbOptions) -> Result<Self, sqlx::Error> {
        let connect = connect_options(url, options)?;
        let pool_options = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Some(options.idle_timeout))
            .max_lifetime(Some(Duration::from_secs(30 * 60)))
            .test_before_acquire(false);
        // `client_connection_check_interval`: a process killed mid-statement (Lambda's timeout:
        // no shutdown) leaves a server process running that statement, holding a connection and
        // its place in a lock queue until the statement ends; the server checks every second
        // that its client is still there, and ends the statement when it is gone.
        let settings = |timeout: Duration| {
            format!(
                "SET LOCAL statement_timeout = {}; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO'; \
                 SET LOCAL jit = off; SET LOCAL client_connection_check_interval = 1000",
                timeout.as_millis().max(1)
            )
        };
        let preamble = |timeout: Duration| format!("SET TRANSACTION READ ONLY; {}", settings(timeout));
        let feed_timeout = options.feed_timeout.min(options.statement_timeout);
        Ok(Self {
            pools: Arc::new(Pools::new(pool_options, connect)),
            read_preamble: preamble(options.statement_timeout).into(),
            feed_preamble: preamble(feed_timeout).into(),
            write_preamble: settings(options.statement_timeout).into(),
            reads: Arc::default(),
            read_limit: options.statement_timeout + SILENCE_MARGIN,
            feed_limit: feed_timeout + SILENCE_MARGIN,
            options: options.clone(),
            reread: Arc::default(),
        })
    }

    /// The server refused our credentials: reads the URL again from the source, if there is
    /// one and it was not read too recently (see [`reread_wait`]), and connects with what it says
    /// from then on. In a task of its own, shared by every call refused meanwhile. Whether a re-read is
    /// running (started now or before).
    fn reread_url(&self) -> bool {
        let Some(source) = self.options.url_source.clone() else { return false };
        {
            let mut state = self.reread.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.running {
                return true;
            }
            if state.last.is_some_and(|at| at.elapsed() < reread_wait(state.unchanged)) {
                return false;
            }
            state.last = Some(std::time::Instant::now());
            state.running = true;
        }
        let (pools, options) = (self.pools.clone(), self.options.clone());
        let ended = RereadEnded(self.reread.clone());
        tokio::spawn(async move {
            // `ended`, moved in here, ends the re-read however the task ends, a panic included.
            let changed =
                match source.url().await.and_then(|url| connect_options(&url, &options).map_err(|e| e.to_string())) {
                    Ok(connect) => {
                        let changed = pools.reconnect(connect);
                        if changed {
                            tracing::info!("the database refused the credentials: read them again, reconnecting");
                        } else {
                            tracing::warn!("the database refused the credentials, and their source still has the same");
                        }
                        changed
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the database refused the credentials: reading them again failed");
                        false
                    }
                };
            ended.found(changed);
        });
        true
    }

    /// The server refused our credentials on pool `generation`: whether to try once more, because
    /// the pool in use connects differently since. Starts a re-read of the URL (see
    /// [`Self::reread_url`]) and waits for it, at most the acquire timeout. So a rotation that
    /// completed while this instance held its connection (the password changed and the secret
    /// says so) costs nothing to the call that finds it at its next login.
    async fn renewed(&self, generation: u64) -> bool {
        // Before asking whether one runs, so that its end cannot be missed.
        let mut finished = self.reread.finished.subscribe();
        if self.reread_url() {
            let _ = tokio::time::timeout(self.options.acquire_timeout, finished.changed()).await;
        }
        self.pools.get().0 != generation
    }

    /// `attempt`, and once more if it failed on a refused login and the URL, read again, connects
    /// differently since (see [`Self::renewed`]). A refused login comes at a connection's login,
    /// or, through PgBouncer, during the read that made PgBouncer log in to the server: either
    /// way nothing ran, so the second attempt is safe for a write too. `attempt` is given the pool
    /// in use and its generation.
    async fn renewing<T, F, Fut>(&self, attempt: F) -> StoreResult<T>
    where
        F: Fn(u64, PgPool) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        let (generation, pool) = self.pools.get();
        match attempt(generation, pool).await {
            Err(err) if err.is_refused_login() && self.renewed(generation).await => {
                let (generation, pool) = self.pools.get();
                attempt(generation, pool).await
            }
            other => other,
        }
    }

    /// What taking from `pool` (of `generation`) gave: an acquire that timed out may replace a
    /// stuck pool (see [`Pools::replace_if_stuck`]).
    fn taken<T>(&self, generation: u64, pool: &PgPool, taken: Result<T, sqlx::Error>) -> StoreResult<T> {
        taken.map_err(|err| {
            if matches!(err, sqlx::Error::PoolTimedOut) {
                self.pools.replace_if_stuck(generation, pool);
            }
            StoreError::from(err)
        })
    }

    /// The pool in use, for this crate's other statements (the warmer's outbox).
    pub(crate) fn pool(&self) -> PgPool {
        self.pools.get().1
    }

    /// Opens a transaction on a pooled connection.
    ///
    /// # Errors
    ///
    /// No connection could be had (a refused login reads the URL again: see `renewing`).
    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.renewing(|generation, pool| async move {
            let begun = pool.begin().await;
            self.taken(generation, &pool, begun)
        })
        .await
    }

    /// One read (or a serving instance's one write): its statements in one message, one round
    /// trip (see `onemessage`), under the statement timeout or the feed's. With `position`, the
    /// message first reads the change feed's position, returned as its own rows (`None` when the
    /// feed was locked: see [`POSITION_LOCK_WAIT`]).
    pub(crate) async fn read(
        &self,
        limit: Limit,
        position: Mark,
        statements: &[Statement<'_>],
    ) -> StoreResult<(Vec<Vec<PgRow>>, Option<(Mark, Vec<PgRow>)>)> {
        let statements = statements.iter().map(onemessage::spell).collect::<StoreResult<Vec<_>>>()?;
        if limit != Limit::Write {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        let (preamble, silence) = match limit {
            Limit::Data => (&self.read_preamble, self.read_limit),
            Limit::Feed => (&self.feed_preamble, self.feed_limit),
            Limit::Write => (&self.write_preamble, self.read_limit),
        };
        self.run(preamble, silence, position, statements).await
    }

    /// Applies the embedded migrations, installs the tag functions and triggers generated from
    /// the policy's tables, and records the service calendar the triggers use (its name, and its
    /// days as runs): one transaction after the migrations, serialised with any other `migrate`
    /// by an advisory lock.
    pub(crate) async fn migrate(&self, calendar: &ServiceCalendar, tables: &[cache_policy::Table]) -> StoreResult<()> {
        let pool = self.pool();
        MIGRATOR.run(&pool).await?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('edgerail tag triggers'))")
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        for statement in tags::postgres(tables) {
            sqlx::query(&statement).persistent(false).execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE service_calendar SET time_zone = $1, day_start = make_interval(mins => $2)")
            .persistent(false)
            .bind(calendar.zone_name())
            .bind(calendar.day_start_minutes())
            .execute(&mut *tx)
            .await?;
        let runs = calendar.day_runs();
        sqlx::query("DELETE FROM service_day_runs").persistent(false).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO service_day_runs (starts_at, day, last_day) \
             SELECT * FROM unnest($1::timestamptz[], $2::date[], $3::date[])",
        )
        .persistent(false)
        .bind(runs.iter().map(|r| r.starts_at).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.day).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.last_day).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        self.pool().close().await;
    }

    /// Read round trips started so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Runs one read on a pooled connection; once the connection is acquired, the server may be
    /// silent for at most `limit` between two of its messages.
    ///
    /// A connection that goes silent (a failover or a dropped route black-holes it, and no TCP
    /// reset ever comes) is detached from the pool and dropped when the limit passes. Returned to
    /// the pool, sqlx would check it with no time limit in a task that keeps its pool slot, and a
    /// one-connection instance would then answer every miss `503` until the kernel gave up on the
    /// socket, many minutes later. Dropped, the next read opens a fresh connection.
    ///
    /// Silence, not the read's whole duration, is what is bounded: a change-feed page of
    /// thousands of tags (a bulk `DELETE` records every tag the table's rows carried) still arriving
    /// on a busy machine is a live connection, and taking it for dead would trip the API's
    /// breaker and serve stale answers while the database is up.
    async fn run(
        &self,
        preamble: &str,
        limit: Duration,
        position: Mark,
        statements: Vec<String>,
    ) -> StoreResult<(Vec<Vec<PgRow>>, Option<(Mark, Vec<PgRow>)>)> {
        self.renewing(|generation, pool| self.run_once(generation, pool, preamble, limit, position, &statements)).await
    }

    /// One attempt of [`Self::run`], on `pool` (of `generation`).
    async fn run_once(
        &self,
        generation: u64,
        pool: PgPool,
        preamble: &str,
        limit: Duration,
        position: Mark,
        statements: &[String],
    ) -> StoreResult<(Vec<Vec<PgRow>>, Option<(Mark, Vec<PgRow>)>)> {
        let acquired = pool.acquire().await;
        let mut conn = self.taken(generation, &pool, acquired)?;
        let held = Held::new(&self.pools.held);
        let result = Self::run_on(&mut conn, preamble, position, statements, limit).await;
        if matches!(result, Err(StoreError::TimedOut)) {
            drop(conn.detach());
            tracing::warn!(?limit, "a database connection went silent: dropped");
        } else {
            drop(conn);
        }
        // Only once the connection is handed back: until then it is ours, not stuck.
        drop(held);
        result
    }

    async fn run_on(
        conn: &mut sqlx::pool::PoolConnection<Postgres>,
        preamble: &str,
        position: Mark,
        statements: &[String],
        silence: Duration,
    ) -> StoreResult<(Vec<Vec<PgRow>>, Option<(Mark, Vec<PgRow>)>)> {
        let conn = &mut **conn;
        // The snapshot first: the data statements see at least what it sees. It reads no table,
        // so no lock can hold it.
        let versioned = |statements: &[String]| {
            let mut with_version = Vec::with_capacity(statements.len() + 1);
            with_version.push(POSTGRES.visible_mark.to_owned());
            with_version.extend(statements.iter().cloned());
            with_version
        };
        let split = |results: Vec<Vec<PgRow>>| {
            let mut results = results.into_iter();
            let version = results.next().unwrap_or_default();
            (results.collect::<Vec<_>>(), Some((Mark::Version, version)))
        };
        match position {
            Mark::Nothing => return Ok((onemessage::run(conn, preamble, statements, silence).await?, None)),
            Mark::Version => return Ok(split(onemessage::run(conn, preamble, &versioned(statements), silence).await?)),
            Mark::Position => {}
        }
        // The position first: in a read-committed transaction each statement sees at least what
        // the one before it saw, so whatever the data statements miss is not visible in the
        // position either, and the first poll from it reports it. Only the position waits at most
        // POSITION_LOCK_WAIT for its lock.
        let mut with_position = Vec::with_capacity(statements.len() + 3);
        with_position.extend([POSITION_LOCK_WAIT, POSTGRES.feed_start, LOCK_WAIT_RESET].map(str::to_owned));
        with_position.extend(statements.iter().cloned());
        match onemessage::run(conn, preamble, &with_position, silence).await {
            Ok(mut results) => {
                let position = results.drain(..3).nth(1).unwrap_or_default();
                Ok((results, Some((Mark::Position, position))))
            }
            // The feed is locked: the data with its version, without a position.
            Err(err) if lock_not_available(&err) => {
                tracing::warn!("the change feed is locked: a read goes without its feed position");
                Ok(split(onemessage::run(conn, preamble, &versioned(&with_position[3..]), silence).await?))
            }
            Err(err) => Err(err),
        }
    }
}

/// How every connection to `url` is made: named for `pg_stat_activity`, verifying RDS's
/// certificates when the URL asks for verification and names no authority, and with nothing a
/// pooler refuses in proxy mode.
fn connect_options(url: &str, options: &DbOptions) -> Result<PgConnectOptions, sqlx::Error> {
    let mut connect: PgConnectOptions = url.parse()?;
    connect = connect.application_name(&options.application_name);
    // A server to verify and no authority named: the RDS ones this binary carries (see
    // store/certs/README.md), so a function needs no certificate file.
    if matches!(connect.get_ssl_mode(), PgSslMode::VerifyCa | PgSslMode::VerifyFull) && !url.contains("sslrootcert=") {
        connect = connect.ssl_root_cert_from_pem(RDS_CERTIFICATE_AUTHORITIES.to_vec());
    }
    if options.proxy_compat {
        // PgBouncer rejects unknown startup parameters, and named statements would be prepared
        // on one server connection and executed on another.
        connect = connect.statement_cache_capacity(0).extra_float_digits(None);
    }
    Ok(connect)
}

/// `statement` as an unnamed PostgreSQL statement with bound parameters (never prepared by name,
/// so it works behind transaction pooling).
pub(crate) fn query<'q>(statement: &'q Statement<'q>) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(&statement.sql).persistent(false);
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
