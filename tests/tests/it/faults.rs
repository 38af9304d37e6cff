//! Freshness under faults, against real PostgreSQL: a locked change feed, a jump of millions of
//! burned change ids, a transaction open when an instance starts, a database connection that goes
//! silent. Each test provokes the fault and checks what a reader sees, and how fast.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, TestDb, TestResponse};

/// A reader's bound for a hit while the feed is in trouble: far below the 5 s statement timeout
/// that hits used to wait out, with room for a loaded 2-core CI machine.
const FAST: Duration = Duration::from_millis(1_000);

async fn timed(app: &TestApp, uri: &str) -> (TestResponse, Duration) {
    let started = Instant::now();
    let res = app.get(uri).await;
    (res, started.elapsed())
}

fn minato_name(res: &TestResponse) -> String {
    let lines = res.json()["lines"].as_array().unwrap().clone();
    lines.iter().find(|l| l["id"] == "minato").unwrap()["name"].as_str().unwrap().to_owned()
}

async fn connect(db: &TestDb) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&db.url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_locked_feed_never_stalls_hits_and_the_freshness_bound_still_holds() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with(db.clone(), &["--change-poll-interval", "200ms", "--change-max-lag", "1500ms"]).await;
    let loaded = Instant::now();
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "miss");
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");

    // A migration, VACUUM FULL or long transaction holds the feed.
    let mut locker = connect(&db).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    // A write that records no change (its trigger is disabled for the statement): only the
    // freshness bound can bring it to readers while the feed is unreadable.
    let mut writer = connect(&db).await;
    sqlx::raw_sql(
        "BEGIN; ALTER TABLE lines DISABLE TRIGGER lines_changes_update; \
         UPDATE lines SET name = 'Minato Line (unseen)' WHERE id = 'minato'; \
         ALTER TABLE lines ENABLE TRIGGER lines_changes_update; COMMIT",
    )
    .execute(&mut writer)
    .await
    .unwrap();

    // Hits spaced past the poll interval: every one finds a poll due, and none waits for it.
    while loaded.elapsed() < Duration::from_millis(900) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (res, took) = timed(&app, "/v1/lines").await;
        assert_eq!(res.status, 200);
        assert!(took < FAST, "a hit took {took:?} while the feed was locked");
        assert_eq!(res.header("x-local-cache"), "hit");
    }
    // Past the bound the entry is not vouched for any more: it is reloaded (the data tables are
    // fine), so the reader sees the write although no poll could.
    tokio::time::sleep(Duration::from_millis(1_700).saturating_sub(loaded.elapsed())).await;
    let (res, took) = timed(&app, "/v1/lines").await;
    assert_eq!(res.status, 200);
    assert!(took < FAST, "{took:?}");
    assert_eq!(res.header("x-local-cache"), "miss");
    assert_eq!(minato_name(&res), "Minato Line (unseen)");
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
}

/// A cold instance on PostgreSQL reads its feed position with its first data. While something
/// holds the change feed locked, that read does not wait for the lock: the data is read alone and
/// served (not a `503` once the statement timeout ends the wait), and not kept, since no position
/// vouches for it. Once the lock is gone the next read takes the position and is kept. (The soak
/// found it: instances started during a feed lock answered `503`s with the database up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_cold_instance_answers_while_the_feed_is_locked() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut locker = connect(&db).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let app = TestApp::with(db.clone(), &[]).await;
    for _ in 0..2 {
        let res = app.get("/v1/lines").await;
        assert_eq!(res.status, 200, "a cold read waited for the locked feed");
        assert_eq!(res.header("x-local-cache"), "miss", "kept without a feed position");
        assert_eq!(minato_name(&res), "Minato Line");
        // It still says which data it shows: the snapshot needs no lock.
        let version = res.header("x-edgerail-version");
        assert_eq!(store::version_sees(version, version), Some(true), "a version: {version:?}");
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "miss");
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn millions_of_burned_change_ids_cost_no_memory_and_no_latency() {
    let db = TestDb::new(Backend::Postgres).await;
    // A long bound, so only the feed can make the change visible: the test checks that it does.
    let app = TestApp::with(
        db.clone(),
        &["--change-poll-interval", "100ms", "--change-max-lag", "60s", "--change-poll-timeout", "5s"],
    )
    .await;
    app.get("/v1/lines").await;
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
    let before = rss_kib();

    // A rolled-back bulk write burns two million ids; then a real change lands after the jump.
    db.exec(
        "BEGIN; INSERT INTO cache_changes (tag) SELECT 'burned' FROM generate_series(1, 2000000); ROLLBACK; \
         UPDATE lines SET name = 'Minato Line (after the jump)' WHERE id = 'minato'",
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut slowest = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (res, took) = timed(&app, "/v1/lines").await;
        slowest = slowest.max(took);
        if minato_name(&res) == "Minato Line (after the jump)" {
            break;
        }
        assert!(Instant::now() < deadline, "the change after the jump was never seen");
    }
    for _ in 0..20 {
        let (res, took) = timed(&app, "/v1/lines").await;
        assert_eq!(res.status, 200);
        slowest = slowest.max(took);
    }
    assert!(slowest < FAST, "a request took {slowest:?} after the id jump");
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 40, "memory grew by {grown_mib} MiB after the id jump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_transaction_open_when_an_instance_starts_is_not_missed() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut slow = connect(&db).await;
    sqlx::raw_sql("BEGIN; UPDATE lines SET name = 'Minato Line (slow writer)' WHERE id = 'minato'")
        .execute(&mut slow)
        .await
        .unwrap();
    // Later ids commit first, as they do under concurrent writers.
    db.exec("UPDATE formations SET note = 'quick writer' WHERE id = '3001F'").await;

    // Requests wait for due polls (a loaded machine may take longer than the default 50 ms), so
    // the test sees what the feed evicts, not the bound on waiting for it.
    let app = TestApp::with(
        db.clone(),
        &["--change-poll-interval", "100ms", "--change-poll-wait", "5s", "--change-max-lag", "60s"],
    )
    .await;
    app.get("/v1/lines").await;
    let cached = app.get("/v1/lines").await;
    assert_eq!(cached.header("x-local-cache"), "hit");
    assert_eq!(minato_name(&cached), "Minato Line");

    sqlx::raw_sql("COMMIT").execute(&mut slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let after = app.get("/v1/lines").await;
    assert_eq!(after.header("x-local-cache"), "miss", "the late commit evicted the entry");
    assert_eq!(minato_name(&after), "Minato Line (slow writer)");
}

/// Bytes that trip a connection, and how long everything then stays silent (none: only it, for
/// good).
type Trigger = (Vec<u8>, Option<Duration>);

/// A TCP forwarder to PostgreSQL that can go silent: connections stay open, bytes stop flowing,
/// like a dropped route or a frozen NAT entry. Nothing ever answers, nothing ever closes. Either
/// everything goes silent ([`Self::go_silent`]), or only the connections open at that moment
/// ([`Self::silence_existing`]), as after a failover: new connections reach the new server. Or
/// it can be slow without ever being silent ([`Self::go_slow`]): the server's bytes keep
/// arriving, a little at a time, like a busy machine or a thin link.
struct SilentProxy {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    /// Connections accepted before this generation are silent.
    generation: Arc<AtomicU64>,
    /// A connection that passes these bytes on to the server goes silent right after: the
    /// server runs what they ask, and its answer never arrives. With a duration, everything goes
    /// silent for that long (connections open then stay silent; later ones work).
    trigger: Arc<std::sync::Mutex<Option<Trigger>>>,
}

impl SilentProxy {
    /// While slow, the server's bytes are passed on this many at a time, one piece per [`Self::PACE`].
    const PIECE: usize = 4 * 1024;
    const PACE: Duration = Duration::from_millis(20);

    async fn start(target: SocketAddr) -> Self {
        let silent: Arc<AtomicBool> = Arc::default();
        let slow: Arc<AtomicBool> = Arc::default();
        let generation: Arc<AtomicU64> = Arc::default();
        let trigger: Arc<std::sync::Mutex<Option<Trigger>>> = Arc::default();
        let (flag, slowed, current, pattern) = (silent.clone(), slow.clone(), generation.clone(), trigger.clone());
        let addr = crate::helpers::forward(target, move |client_read, client_write, server_read, server_write| {
            let (flag, slowed, current, pattern) = (flag.clone(), slowed.clone(), current.clone(), pattern.clone());
            let born = current.load(Ordering::SeqCst);
            let tripped: Arc<AtomicBool> = Arc::default();
            async move {
                let trips = tripped.clone();
                let everything = flag.clone();
                let silenced = move || {
                    flag.load(Ordering::SeqCst)
                        || current.load(Ordering::SeqCst) != born
                        || trips.load(Ordering::SeqCst)
                };
                let never = || false;
                let sent = move |bytes: &[u8]| {
                    let pattern = pattern.lock().unwrap();
                    let Some((p, blackout)) = pattern.as_ref() else { return };
                    if bytes.windows(p.len()).any(|w| w == p.as_slice()) {
                        tripped.store(true, Ordering::SeqCst);
                        if let Some(blackout) = *blackout {
                            everything.store(true, Ordering::SeqCst);
                            let everything = everything.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(blackout).await;
                                everything.store(false, Ordering::SeqCst);
                            });
                        }
                    }
                };
                tokio::spawn(Self::pump(client_read, server_write, silenced.clone(), never, sent));
                Self::pump(server_read, client_write, silenced, move || slowed.load(Ordering::SeqCst), |_: &[u8]| {})
                    .await;
            }
        })
        .await;
        Self { addr, silent, slow, generation, trigger }
    }

    async fn pump(
        mut from: impl AsyncReadExt + Unpin,
        mut to: impl AsyncWriteExt + Unpin,
        silenced: impl Fn() -> bool,
        slowed: impl Fn() -> bool,
        sent: impl Fn(&[u8]),
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(n) = from.read(&mut buf).await else { return };
            if n == 0 {
                return;
            }
            if silenced() {
                // Swallow everything from now on, keeping both sockets open.
                std::future::pending::<()>().await;
            }
            // Seen before it is passed on: a trigger then silences the answer, however soon the
            // server sends it.
            sent(&buf[..n]);
            let slow = slowed();
            for piece in buf[..n].chunks(if slow { Self::PIECE } else { n }) {
                if slow {
                    tokio::time::sleep(Self::PACE).await;
                }
                if to.write_all(piece).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Silences each connection right after it passes `bytes` on to the server.
    fn silence_after(&self, bytes: &str) {
        *self.trigger.lock().unwrap() = Some((bytes.as_bytes().to_vec(), None));
    }

    /// Once a connection passes `bytes` on, everything goes silent for `blackout` (a network
    /// that drops out, a server that restarts): the connections open then never answer again,
    /// new ones work once it is over.
    fn black_out_after(&self, bytes: &str, blackout: Duration) {
        *self.trigger.lock().unwrap() = Some((bytes.as_bytes().to_vec(), Some(blackout)));
    }

    fn go_slow(&self) {
        self.slow.store(true, Ordering::SeqCst);
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    fn silence_existing(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// `db`'s URL through this proxy.
    fn url(&self, db: &TestDb) -> String {
        let authority = db.url.split('@').nth(1).unwrap().split('/').next().unwrap();
        db.url.replace(authority, &self.addr.to_string())
    }
}

/// `db`'s server address, for a proxy in front of it.
fn server(db: &TestDb) -> SocketAddr {
    db.url.split('@').nth(1).unwrap().split('/').next().unwrap().parse().unwrap()
}

/// One connection, short limits: an instance as on Lambda, where a connection stuck for good
/// would stop the whole instance.
const ONE_CONNECTION: &[&str] = &[
    "--change-poll-interval",
    "200ms",
    "--db-acquire-timeout",
    "500ms",
    "--db-statement-timeout",
    "1s",
    "--db-max-connections",
    "1",
];

/// After a failover black-holes the connection in use, the first miss gets its `503` as
/// designed; the silent connection is then dropped, not kept, and the next misses are answered
/// over a fresh connection within seconds (not once the kernel gives up on the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_silent_connection_is_replaced_and_misses_recover_within_seconds() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = SilentProxy::start(server(&db)).await;
    let app = TestApp::with_url(db.clone(), &proxy.url(&db), ONE_CONNECTION).await;
    assert_eq!(app.get("/v1/lines").await.status, 200);

    proxy.silence_existing();
    let (first, took) = timed(&app, "/v1/formations").await;
    assert_eq!(first.status, 503);
    assert!(took < Duration::from_secs(4), "{took:?}");
    let recovered = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let res = app.get("/v1/formations/3001F").await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503);
        assert!(
            recovered.elapsed() < Duration::from_secs(6),
            "misses still fail {:?} after the first 503",
            recovered.elapsed()
        );
    }
    assert_eq!(app.get("/v1/formations").await.status, 200);
}

/// The learned paths' flush meets a database gone silent: the request that started it is
/// answered from the cache at once (the flush runs in a task of its own), the flush gives up
/// within the store's limits and its tally is dropped, not retried, and once the database answers
/// again the next tally is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_flush_of_learned_paths_into_a_silent_database_holds_no_request_and_is_dropped() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = SilentProxy::start(server(&db)).await;
    let flags: Vec<&str> = ONE_CONNECTION.iter().copied().chain(["--learn-flush-interval", "1ms"]).collect();
    let app = TestApp::with_url(db.clone(), &proxy.url(&db), &flags).await;
    assert_eq!(app.get("/v1/lines").await.status, 200);
    crate::learn::learned_once(&app, |rows| crate::learn::fetches(rows, "/v1/lines") == Some(1)).await;

    proxy.silence_existing();
    let (hit, took) = timed(&app, "/v1/lines").await;
    assert_eq!((hit.status.as_u16(), hit.header("x-local-cache")), (200, "hit"));
    assert!(took < FAST, "{took:?}: a flush into the silent database held the request");

    // The silent connection is dropped within the store's limits; misses then recover.
    let recovered = Instant::now();
    while app.get("/v1/formations/3001F").await.status != 200 {
        assert!(recovered.elapsed() < Duration::from_secs(10), "misses never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows =
        crate::learn::learned_once(&app, |rows| crate::learn::fetches(rows, "/v1/formations/3001F").is_some()).await;
    assert_eq!(crate::learn::fetches(&rows, "/v1/lines"), Some(1), "the failed flush's tally was dropped: {rows:?}");
}

/// A `DELETE` of every sighting records every tag its rows carried: a change-feed page of
/// thousands of rows.
/// Arriving slowly (a busy machine, a thin link) but steadily, it comes over a live connection:
/// the poll succeeds and evicts, and no reader is answered stale or `503` while the database is up.
/// (Bounding the whole read instead of the server's silence took the connection for dead, and the
/// breaker then served stale answers, every poll re-reading the same page.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_large_feed_page_arriving_slowly_is_not_a_dead_connection() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = SilentProxy::start(server(&db)).await;
    // A bound long enough that hits stay vouched for while the page arrives: the only connection
    // is the poll's until then.
    let flags = [ONE_CONNECTION, &["--change-max-lag", "15s"]].concat();
    let app = TestApp::with_url(db.clone(), &proxy.url(&db), &flags).await;
    let page = "/v1/formations/3001F";
    assert!(!app.get(page).await.json()["sightings"].as_array().unwrap().is_empty());
    assert_eq!(app.get(page).await.header("x-local-cache"), "hit");

    proxy.go_slow();
    sqlx::query("DELETE FROM sightings").execute(&mut connect(&db).await).await.unwrap();
    let deleted = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = app.get(page).await;
        assert_eq!(res.status, 200, "{:?} after the DELETE", deleted.elapsed());
        assert_ne!(res.header("x-local-cache"), "stale", "{:?} after the DELETE", deleted.elapsed());
        if res.json()["sightings"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(14), "the DELETE was never seen");
    }
    // The page took longer than the old whole-read limit (the statement timeout and a margin).
    assert!(deleted.elapsed() > Duration::from_millis(1_500), "{:?}: not slow enough", deleted.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_silent_database_connection_never_holds_a_reader() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = SilentProxy::start(server(&db)).await;
    let app = TestApp::with_url(db.clone(), &proxy.url(&db), ONE_CONNECTION).await;
    let fresh = app.get("/v1/sightings/latest").await;
    app.get("/v1/lines").await;
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");

    proxy.go_silent();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // A hit: the due poll hangs on the silent connection in the background.
    let (hit, took) = timed(&app, "/v1/lines").await;
    assert_eq!(hit.header("x-local-cache"), "hit");
    assert!(took < FAST, "{took:?}");
    // A miss: bounded by the client-side limit (acquire + statement + 1 s), not forever.
    let (never_cached, took) = timed(&app, "/v1/formations").await;
    assert_eq!(never_cached.status, 503);
    assert!(took < Duration::from_secs(4), "{took:?}");
    // An expired entry is served stale instead.
    let stale = app.get("/v1/sightings/latest").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-local-cache"), "stale");
    assert_eq!(stale.body, fresh.body);
}

/// Rows of `cache_changes` read so far by backends that have flushed their statistics.
async fn change_rows_read(conn: &mut sqlx::PgConnection) -> i64 {
    let (read,): (i64,) = sqlx::query_as(
        "SELECT (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::bigint FROM pg_stat_user_tables \
         WHERE relname = 'cache_changes'",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    read
}

/// A writer left idle in its transaction, and two million changes committed after it. A poll
/// reads only what is new, never the rows written since the writer began: counted by the
/// database itself (a backend's table statistics are flushed when it exits), three polls read a
/// handful of rows, not six million. So polls keep succeeding, hits stay fast, and the writer's
/// own change is seen as soon as it commits, long before the freshness bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_long_open_writer_costs_polls_nothing_and_is_seen_when_it_commits() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut writer = connect(&db).await;
    sqlx::raw_sql("BEGIN; UPDATE lines SET name = 'Minato Line (late)' WHERE id = 'minato'")
        .execute(&mut writer)
        .await
        .unwrap();
    db.exec("INSERT INTO cache_changes (tag) SELECT 'formation:3001F' FROM generate_series(1, 2000000)").await;
    let mut stats = connect(&db).await;
    let before = change_rows_read(&mut stats).await;

    // The store's own polls, from a position taken behind the open writer, on a connection of
    // their own that is closed afterwards (which flushes its statistics).
    let poller = TestApp::with(db.clone(), &[]).await;
    let start = poller.store().feed_start().await.unwrap();
    for _ in 0..3 {
        let page = poller.store().feed_since(&start, 10_000).await.unwrap();
        assert!(page.changes.is_empty());
    }
    poller.store().close().await;
    // The statistics are flushed when the poller's backend exits, and by an idle backend within
    // about a second of its last transaction anyway: wait for the first (the API's connections
    // name themselves `edgerail-api-<pid>`), at most a few seconds, then read them.
    let connected = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND application_name LIKE 'edgerail-api-%'";
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (open,): (i64,) = sqlx::query_as(connected).fetch_one(&mut stats).await.unwrap();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = change_rows_read(&mut stats).await - before;
    assert!(read < 10_000, "three polls read {read} rows of cache_changes");

    let app = TestApp::with(db.clone(), &["--change-poll-interval", "100ms", "--change-max-lag", "60s"]).await;
    assert_eq!(minato_name(&app.get("/v1/lines").await), "Minato Line");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (res, took) = timed(&app, "/v1/lines").await;
        assert_eq!(res.header("x-local-cache"), "hit");
        assert!(took < FAST, "{took:?}");
    }
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let committed = Instant::now();
    let mut seen = false;
    while committed.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if minato_name(&app.get("/v1/lines").await) == "Minato Line (late)" {
            seen = true;
            break;
        }
    }
    assert!(seen, "the long writer's change was not seen within 5 s of its commit (the bound here is 60 s)");
}

/// A writer that begins while the feed is locked takes its transaction id at once but its change
/// ids only when the lock goes; a poll between the two, and one after its commit, must still
/// report its change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_writer_that_began_while_the_feed_was_locked_is_seen_when_it_commits() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with(db.clone(), &[]).await;
    let store = app.store();
    let mut cursor = store.feed_start().await.unwrap();
    let mut locker = connect(&db).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let (mut writer, mut other) = (connect(&db).await, connect(&db).await);
    let write = async {
        sqlx::raw_sql("BEGIN; UPDATE lines SET name = 'Tama Line (locked)' WHERE id = 'tama'")
            .execute(&mut writer)
            .await
            .unwrap();
    };
    // Others write meanwhile, and commit once the lock goes, after the writer took its id.
    let others = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("UPDATE formations SET note = 'other' WHERE id = '3001F'").execute(&mut other).await.unwrap();
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    };
    tokio::join!(write, others, release);
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let page = store.feed_since(&cursor, 10_000).await.unwrap();
        seen.extend(page.changes.into_iter().map(|c| c.tag));
        cursor = page.cursor;
    }
    assert!(!seen.contains("line:tama"), "not committed yet: {seen:?}");
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let page = store.feed_since(&cursor, 10_000).await.unwrap();
    let tags: BTreeSet<String> = page.changes.into_iter().map(|c| c.tag).collect();
    assert!(tags.contains("line:tama"), "the writer's change, after its commit: {tags:?} (before: {seen:?})");
}

/// PostgreSQL's snapshot `xmax` is one past the latest *completed* transaction, not the next one
/// to be assigned: a transaction still running when a poll's snapshot is taken can have an id at
/// or above `xmax`, and is then not listed among the snapshot's running ones. If it wrote its
/// change before a lower transaction that has committed wrote a higher change id, its change is
/// below the poll's last id too: a poll that read only "ids above the last one" and "changes of
/// the listed transactions" never reported it, and every instance served the old answer as a hit
/// until its local TTL ran out (the soak found it after feed locks, which make exactly this
/// interleaving common). Replayed exactly, retried when another test's commit moves `xmax` past
/// the writer in the few milliseconds the scenario needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_change_of_a_transaction_above_the_snapshots_xmax_is_not_missed() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with(db.clone(), &[]).await;
    let store = app.store();
    for attempt in 0..50 {
        let (mut low, mut high, mut look) = (connect(&db).await, connect(&db).await, connect(&db).await);
        // The lower transaction takes its id first; the higher one writes its change first.
        sqlx::raw_sql("BEGIN").execute(&mut low).await.unwrap();
        current_xid(&mut low).await;
        sqlx::raw_sql("BEGIN").execute(&mut high).await.unwrap();
        let high_xid = current_xid(&mut high).await;
        let name = format!("Tama Line (above xmax {attempt})");
        sqlx::query("UPDATE lines SET name = $1 WHERE id = 'tama'").bind(&name).execute(&mut high).await.unwrap();
        sqlx::raw_sql(&format!("UPDATE formations SET note = 'low {attempt}' WHERE id = '3001F'; COMMIT"))
            .execute(&mut low)
            .await
            .unwrap();
        // A poll now: the higher transaction is running, its change id below the last one seen.
        let cursor = store.feed_start().await.unwrap();
        let xmax: u64 = sqlx::query_scalar::<_, String>("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
            .fetch_one(&mut look)
            .await
            .unwrap()
            .parse()
            .unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut high).await.unwrap();
        if xmax > high_xid {
            // Another commit came in between: the scenario did not happen; try again.
            continue;
        }
        let mut tags = BTreeSet::new();
        let mut cursor = cursor;
        for _ in 0..3 {
            let page = store.feed_since(&cursor, 10_000).await.unwrap();
            tags.extend(page.changes.into_iter().map(|c| c.tag));
            cursor = page.cursor;
        }
        assert!(tags.contains("line:tama"), "the running transaction's change was never reported: {tags:?}");
        return;
    }
    panic!("other transactions kept committing: the scenario never happened in 50 attempts");
}

/// The id of the transaction open on `conn` (assigning one if it has none yet).
async fn current_xid(conn: &mut sqlx::PgConnection) -> u64 {
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(conn).await.unwrap();
    xid.parse().unwrap()
}

/// A connection that goes silent just after it sent the warmer's claim: the claim commits, its
/// answer never arrives. The tick fails within its statement bound (not the kernel's TCP
/// timeout), says the failure is retryable, and leaves every change pending; the next tick
/// takes the changes the lost claim marked and sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_connection_silent_after_the_claim_fails_the_tick_in_bound_and_the_next_proceeds() {
    let db = TestDb::new(Backend::Postgres).await;
    let total = crate::warmer::pending(&db).await;
    assert!(total > 0);
    let proxy = SilentProxy::start(server(&db)).await;
    proxy.silence_after("SET claim");
    // In the clear, so the proxy can see which statement a connection sends.
    let through = TestDb { url: format!("{}?sslmode=disable", proxy.url(&db)), ..db.clone() };
    let started = Instant::now();
    let (ok, failed) = crate::warmer::warmer_once(&through, &[("DB_STATEMENT_TIMEOUT", "2s")]).await;
    let took = started.elapsed();
    assert!(!ok, "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("database"), "{failed}");
    assert!(took < Duration::from_secs(20), "bounded by the statement timeout, not TCP's: {took:?}");
    assert_eq!(crate::warmer::pending(&db).await, total, "nothing was lost");
    let mut conn = connect(&db).await;
    let (claimed,): (i64,) = sqlx::query_as("SELECT count(*) FROM cache_changes WHERE claim IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(claimed, total, "the claim committed; only its answer was lost");

    // The failed tick gave its lease back: the next tick works at once.
    let (ok, next) = crate::warmer::warmer_once(&db, &[]).await;
    assert!(ok && next["lease_held"].is_null(), "{next}");
    assert_eq!(next["changes"].as_i64().unwrap(), total, "{next}");
    assert_eq!(crate::warmer::pending(&db).await, 0);
}

/// The database drops out for a few seconds in the middle of a tick, right after its claim: the
/// tick fails, and gives its lease back as soon as the database answers again, so the next tick
/// works at once. (A lease left to expire, `WARMER_LEASE`, two minutes by default, stopped every
/// invalidation that long after each database restart that caught a tick.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_tick_failed_by_a_database_outage_gives_its_lease_back_when_the_database_returns() {
    let db = TestDb::new(Backend::Postgres).await;
    let total = crate::warmer::pending(&db).await;
    assert!(total > 0);
    let proxy = SilentProxy::start(server(&db)).await;
    proxy.black_out_after("SET claim", Duration::from_secs(4));
    let through = TestDb { url: format!("{}?sslmode=disable", proxy.url(&db)), ..db.clone() };
    let lease = [("DB_STATEMENT_TIMEOUT", "1s"), ("WARMER_LEASE", "60s")];
    let (ok, failed) = crate::warmer::warmer_once(&through, &lease).await;
    assert!(!ok, "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");

    let (ok, next) = crate::warmer::warmer_once(&db, &lease).await;
    assert!(ok && next["lease_held"].is_null(), "the failed tick kept the lease: {next}");
    assert_eq!(next["changes"].as_i64().unwrap(), total, "{next}");
    assert_eq!(crate::warmer::pending(&db).await, 0);
}

/// A CloudFront API that accepts the connection and never answers: the call fails at
/// INVALIDATION_TIMEOUT, the tick fails (retryable) with its changes pending and its lease given
/// back, and the next tick, against an API that answers, sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_cloudfront_api_that_never_answers_fails_the_tick_in_bound_and_the_next_proceeds() {
    let db = TestDb::new(Backend::Postgres).await;
    let total = crate::warmer::pending(&db).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let distribution = crate::warmer::moto_distribution();
    let mut env = crate::warmer::cloudfront_env(&distribution, &stalled);
    env.extend([("INVALIDATION_TIMEOUT", "1s"), ("INVALIDATION_RETRY_BASE", "10ms")]);
    let started = Instant::now();
    let (ok, failed) = crate::warmer::warmer_once(&db, &env).await;
    let took = started.elapsed();
    assert!(!ok, "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");
    assert!(took < Duration::from_secs(20), "bounded by INVALIDATION_TIMEOUT: {took:?}");
    assert_eq!(crate::warmer::pending(&db).await, total);

    let moto = crate::warmer::moto();
    let (ok, next) = crate::warmer::warmer_once(&db, &crate::warmer::cloudfront_env(&distribution, &moto)).await;
    assert!(ok && next["lease_held"].is_null(), "{next}");
    assert_eq!(next["changes"].as_i64().unwrap(), total, "{next}");
    assert_eq!(crate::warmer::pending(&db).await, 0);
}

/// A reload that overlaps the eviction of *another* tag keeps the key's stale-if-error copy: a
/// database outage after it answers that copy, labelled stale, not `503`. (With one eviction
/// generation for every tag, steady writes elsewhere cost every key its copy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn an_eviction_of_other_tags_during_a_reload_keeps_the_stale_copy() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = SilentProxy::start(server(&db)).await;
    let flags = ["--change-poll-interval", "100ms", "--db-statement-timeout", "2s"];
    let app = TestApp::with_url(db.clone(), &proxy.url(&db), &flags).await;
    let page = "/v1/formations/10701F";
    assert_eq!(app.get(page).await.header("x-local-cache"), "miss");
    // Past the route's local TTL (5 s), the next request reloads it.
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    // The reload waits behind a lock on sightings while another formation changes and the
    // instance evicts that formation's tags.
    let mut locker = connect(&db).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE sightings IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let reload = {
        let app = app.clone();
        tokio::spawn(async move { app.get(page).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.exec("UPDATE formations SET note = 'elsewhere' WHERE id = '3001F'").await;
    // Polls run on requests: these (of lines, which the lock does not hold up) make the instance
    // read the change and evict the other formation's tags while the reload waits.
    for _ in 0..8 {
        assert_eq!(app.get("/v1/lines").await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!reload.is_finished(), "the reload must still be waiting on the lock");
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    assert_eq!(reload.await.unwrap().status, 200);
    // The database goes silent; once the reloaded answer has expired, its copy is served.
    proxy.go_silent();
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let res = app.get(page).await;
    assert_eq!((res.status.as_u16(), res.header("x-local-cache")), (200, "stale"), "{:?}", res.body);
}

/// A warmer run killed while its statement waits on a lock (Lambda's timeout: `SIGKILL`, no
/// shutdown) does not leave that statement holding its connection, and its place in the lock's
/// queue, until the statement timeout (30 s): the server checks every second that the client is
/// still there, and ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_killed_warmer_runs_waiting_statement_ends_with_it() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let mut run = tokio::process::Command::new(crate::helpers::binary("warmer"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("INVALIDATOR", "none")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let name = format!("edgerail-warmer-{}", run.id().unwrap());
    let mut watcher = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while backends_of(&mut watcher, &name, true).await == 0 {
        assert!(Instant::now() < deadline, "the run's statement never waited on the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.start_kill().unwrap();
    run.wait().await.unwrap();
    // The lock stays held: only the server's check of its client can end the statement.
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends_of(&mut watcher, &name, false).await > 0 {
        assert!(Instant::now() < deadline, "the killed run's statement still holds its connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
}

/// Server processes of the client named `name` (only those waiting on a lock, if `waiting`).
async fn backends_of(conn: &mut sqlx::PgConnection, name: &str, waiting: bool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND (NOT $2 OR wait_event_type = 'Lock')",
    )
    .bind(name)
    .bind(waiting)
    .fetch_one(conn)
    .await
    .unwrap()
}
