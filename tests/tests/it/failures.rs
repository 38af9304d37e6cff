//! The database fails: stale copies are served where they exist, otherwise a fast `503` with
//! `Retry-After`, never a hang until the request times out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::{Backend, TestApp, TestDb};

/// A TCP forwarder to PostgreSQL that can be cut, like a database that stops mid-run.
struct Proxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Self { addr, tasks }
    }

    /// Drops every connection and stops listening: new connections are refused.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn pg_addr(url: &str) -> SocketAddr {
    let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    authority.parse().unwrap()
}

fn through(url: &str, proxy: SocketAddr) -> String {
    url.replace(&pg_addr(url).to_string(), &proxy.to_string())
}

const ACQUIRE: &str = "500ms";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn database_stopping_mid_run_serves_stale_then_fast_503() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = Proxy::start(pg_addr(&db.url)).await;
    let app = TestApp::with_url(db.clone(), &through(&db.url, proxy.addr), &["--db-acquire-timeout", ACQUIRE]).await;

    let fresh = app.get("/v1/sightings/latest").await;
    assert_eq!(fresh.status, 200);
    proxy.cut();
    // sightings_latest keeps its entry 1 s in process; its stale-if-error window is an hour.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let started = Instant::now();
    let stale = app.get("/v1/sightings/latest").await;
    assert_eq!(stale.status, 200, "{:?}", stale.body);
    assert_eq!(stale.header("x-local-cache"), "stale");
    assert_eq!(stale.body, fresh.body);
    assert_eq!(stale.header("etag"), fresh.header("etag"));
    assert_eq!(stale.header("x-edgerail-version"), fresh.header("x-edgerail-version"), "the copy says what it shows");
    assert!(!fresh.header("x-edgerail-version").is_empty());
    assert_eq!(stale.header("cache-control"), "public, max-age=0, s-maxage=5");

    let never_cached = app.get("/v1/formations").await;
    assert_eq!(never_cached.status, 503);
    assert_eq!(never_cached.header("retry-after"), "1");
    assert_eq!(never_cached.header("cache-control"), "no-store");
    assert_eq!(never_cached.json()["error"]["code"], "unavailable");
    assert!(!String::from_utf8_lossy(&never_cached.body).contains("connect"));
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the acquire timeout: {:?}", started.elapsed());

    let deep = app.get("/health-check?deep=1").await;
    assert_eq!(deep.status, 503);
    assert_eq!(app.get("/health-check").await.status, 200, "liveness does not depend on the database");
}

async fn answers_503_within_the_acquire_timeout(url: &str) {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with_url(db, url, &["--db-acquire-timeout", ACQUIRE]).await;
    let started = Instant::now();
    let res = app.get("/v1/lines").await;
    let took = started.elapsed();
    assert_eq!(res.status, 503);
    assert_eq!(res.header("retry-after"), "1");
    assert!(took < Duration::from_secs(2), "503 after {took:?}, acquire timeout {ACQUIRE}");
    // Requests right after fail fast too, instead of each waiting out the timeout.
    let started = Instant::now();
    assert_eq!(app.get("/v1/formations").await.status, 503);
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn refused_connections_answer_503_fast() {
    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    answers_503_within_the_acquire_timeout(&format!("postgres://edgerail:edgerail@127.0.0.1:{port}/x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_database_that_never_answers_gives_503_not_a_hang() {
    // Accepts TCP connections and never says anything, like a saturated server or a dropped route.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    answers_503_within_the_acquire_timeout(&format!("postgres://edgerail:edgerail@{addr}/x")).await;
    held.abort();
}

/// One route's reads running out of time (its table locked by an import) fail that route's
/// requests, fast after the first, and leave every other route answering: a statement timeout
/// says a route is slow, not that the database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_routes_statement_timeout_does_not_take_the_other_routes_down() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with(db.clone(), &["--db-statement-timeout", "500ms"]).await;
    assert_eq!(app.get("/v1/lines").await.status, 200, "following the feed");
    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sightings IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let slow = app.get("/v1/stations/M01/sightings").await;
    assert_eq!(slow.status, 503, "the locked route times out: {:?}", slow.body);
    // Right after, within the breaker's second: the station route fails fast, the others answer.
    let started = std::time::Instant::now();
    assert_eq!(app.get("/v1/stations/M02/sightings").await.status, 503);
    assert!(started.elapsed() < std::time::Duration::from_millis(400), "the slow route fails fast now");
    for path in ["/v1/lines/minato/stations", "/v1/lines/sakura/stations", "/v1/operations/2026-01-01"] {
        let res = app.get(path).await;
        assert_eq!(res.status, 200, "{path} answers while another route's table is locked: {:?}", res.body);
        assert_eq!(res.header("x-local-cache"), "miss");
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
}
