//! Concurrent misses for one key are served by one database query.

use std::time::Duration;

use futures_util::future::join_all;

use crate::helpers::{Backend, TestApp, TestDb};

const CONCURRENT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn concurrent_misses_make_one_query_postgres() {
    let app = TestApp::with(
        TestDb::new(Backend::Postgres).await,
        &["--change-poll-interval", "1h", "--change-max-lag", "2h"],
    )
    .await;
    app.get("/health-check").await;
    app.get("/v1/lines").await; // the change feed position is known; nothing else is cached
    let reads = app.store().reads();

    // Hold the formations table so the one load that gets through blocks in the database while
    // every other request arrives; release it once PostgreSQL shows the load waiting on the lock.
    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE formations IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let requests = join_all((0..CONCURRENT).map(|_| app.get("/v1/formations/10701F")));
    let release = async {
        let mut observer = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url).await.unwrap();
        loop {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut observer)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    };
    let (responses, ()) = tokio::join!(requests, release);

    assert!(responses.iter().all(|r| r.status == 200));
    assert!(responses.iter().all(|r| r.body == responses[0].body));
    assert_eq!(app.store().reads(), reads + 1, "{CONCURRENT} concurrent misses, one query");
    let misses = responses.iter().filter(|r| r.header("x-local-cache") == "miss").count();
    assert_eq!(misses, CONCURRENT, "all of them missed: they shared the load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn concurrent_misses_make_one_query_sqlite() {
    let app =
        TestApp::with(TestDb::new(Backend::Sqlite).await, &["--change-poll-interval", "1h", "--change-max-lag", "2h"])
            .await;
    app.get("/v1/lines").await;
    let reads = app.store().reads();
    // All requests are polled once before the first load can finish its database I/O.
    let responses = join_all((0..CONCURRENT).map(|_| app.get("/v1/formations"))).await;
    assert!(responses.iter().all(|r| r.status == 200 && r.body == responses[0].body));
    assert_eq!(app.store().reads(), reads + 1);
}
