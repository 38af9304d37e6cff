//! The learned warm set, API side: what an instance counts as fetched by the edge for viewers,
//! and its flush to the database.

use std::time::Duration;

use axum::body::Body;
use http::Request;
use store::learned::LearnedPath;

use crate::helpers::{Backend, TestApp, TestDb};

/// The learned paths in the database, once `done` accepts them (waiting up to 10 s: a flush is
/// written by a task of its own, after the answer that started it). Each look first flushes what
/// `app` counted since, unless a flush is writing.
pub(crate) async fn learned_once(app: &TestApp, done: impl Fn(&[LearnedPath]) -> bool) -> Vec<LearnedPath> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let db = store_of(&app.db);
    loop {
        app.state.flush_learned().await;
        let rows = db.learned_top(1000).await.unwrap();
        if done(&rows) {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "the learned paths never became what was expected: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A store of its own on `db`: the app's may be cut off from the database by a test's proxy.
fn store_of(db: &TestDb) -> store::Db {
    let config = crate::helpers::config(&db.url, &[]);
    api::startup::open_store(&config, None).expect("open store")
}

pub(crate) fn fetches(rows: &[LearnedPath], path: &str) -> Option<i64> {
    rows.iter().find(|r| r.path == path).map(|r| r.fetches)
}

/// Counted: a policy route's `200` and `404`, with the query as asked. Not counted: the warmer's
/// own fetches (its secret in `x-edgerail-warm`), a `400`, a redirect to the canonical spelling, a
/// `HEAD`, and what is not a route. A viewer who sends the header with any other value is
/// counted: the mark cannot be forged to opt out.
async fn an_instance_learns_what_the_edge_fetched_for_viewers_and_nothing_else(backend: Backend) {
    let app =
        TestApp::with(TestDb::new(backend).await, &["--learn-flush-interval", "1ms", "--warm-secret", "w4rm-s3cret"])
            .await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/lines").await.status, 200);
    }
    assert_eq!(app.get("/v1/sightings/latest?limit=5").await.status, 200);
    assert_eq!(app.get("/v1/formations/0000F").await.status, 404);
    assert_eq!(app.get("/v1/formations/bad%20id").await.status, 400);
    assert_eq!(app.get("/v1/formations/10701%46").await.status, 308);
    assert_eq!(app.get("/health-check").await.status, 200);
    assert_eq!(app.get("/nowhere").await.status, 404);
    let warm =
        Request::get("/v1/formations").header(cache_policy::WARM_HEADER, "w4rm-s3cret").body(Body::empty()).unwrap();
    assert_eq!(app.send(warm).await.status, 200);
    let forged =
        Request::get("/v1/formations/10701F").header(cache_policy::WARM_HEADER, "1").body(Body::empty()).unwrap();
    assert_eq!(app.send(forged).await.status, 200);
    let head = Request::head("/v1/formations/10701F").body(Body::empty()).unwrap();
    assert_eq!(app.send(head).await.status, 200);
    app.get("/v1/lines").await;

    let rows = learned_once(&app, |rows| fetches(rows, "/v1/lines") == Some(4)).await;
    assert_eq!(fetches(&rows, "/v1/sightings/latest?limit=5"), Some(1));
    assert_eq!(fetches(&rows, "/v1/formations/0000F"), Some(1), "a 404 is kept at the edge too");
    assert_eq!(fetches(&rows, "/v1/formations/10701F"), Some(1), "a forged mark is a viewer's fetch");
    let mut paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/v1/formations/0000F", "/v1/formations/10701F", "/v1/lines", "/v1/sightings/latest?limit=5"]);
    assert_eq!(rows[0].path, "/v1/lines", "the most fetched first");
    let missing = rows.iter().find(|r| r.path == "/v1/formations/0000F").unwrap();
    assert!(!missing.found && rows[0].found, "{rows:?}");
    assert_eq!(rows.last().unwrap().path, "/v1/formations/0000F", "what does not exist last");
    let age = chrono::Utc::now() - rows[0].last_fetched_at;
    assert!(age < chrono::TimeDelta::minutes(1) && age > chrono::TimeDelta::seconds(-5), "{age}");
}

crate::both_backends!(an_instance_learns_what_the_edge_fetched_for_viewers_and_nothing_else);

/// With learning off (`LEARN_FLUSH_INTERVAL=0`), nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn with_learning_off_an_instance_writes_nothing() {
    let app = TestApp::with(TestDb::new(Backend::Postgres).await, &["--learn-flush-interval", "0s"]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/lines").await.status, 200);
    }
    app.state.flush_learned().await;
    assert!(app.store().learned_top(10).await.unwrap().is_empty());
}

/// The instance's tallies add up in the table, and the warmer's pruning bounds it: by age, and to
/// the most fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn tallies_add_up_and_pruning_keeps_the_recent_and_most_fetched() {
    let app = TestApp::new(Backend::Postgres).await;
    let db = app.store();
    let now = chrono::Utc::now();
    let row = |path: &str, fetches, minutes_ago| LearnedPath {
        path: path.into(),
        fetches,
        last_fetched_at: now - chrono::TimeDelta::minutes(minutes_ago),
        found: true,
    };
    db.record_learned(&[row("/v1/lines", 2, 5), row("/v1/formations", 1, 0), row("/v1/formations/1F", 9, 120)])
        .await
        .unwrap();
    db.record_learned(&[row("/v1/lines", 3, 1), row("/v1/formations", 1, 30)]).await.unwrap();
    let rows = db.learned_top(10).await.unwrap();
    assert_eq!(fetches(&rows, "/v1/lines"), Some(5));
    let lines = rows.iter().find(|r| r.path == "/v1/lines").unwrap();
    assert!((now - lines.last_fetched_at - chrono::TimeDelta::minutes(1)).num_seconds().abs() < 1, "the later fetch");
    let formations = rows.iter().find(|r| r.path == "/v1/formations").unwrap();
    assert!((now - formations.last_fetched_at).num_seconds().abs() < 1, "the later fetch, not the later flush");

    assert_eq!(db.prune_learned(Duration::from_secs(3600), 10).await.unwrap(), 1, "not fetched for two hours");
    assert_eq!(db.prune_learned(Duration::from_secs(3600), 1).await.unwrap(), 1, "all but the most fetched");
    let rows = db.learned_top(10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/v1/lines"]);
}

/// Recent traffic wins: a page fetched a thousand times a day ago ranks below one fetched twenty
/// times in the last minutes and below one fetched steadily, five times every ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn learned_counts_decay_so_recent_traffic_ranks_first() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = TestApp::new(backend).await;
        let db = app.store();
        let now = chrono::Utc::now();
        let at = |path: &str, fetches, minutes_ago| LearnedPath {
            path: path.into(),
            fetches,
            last_fetched_at: now - chrono::TimeDelta::minutes(minutes_ago),
            found: true,
        };
        db.record_learned(&[at("/v1/formations/3001F", 1000, 24 * 60), at("/v1/formations/10701F", 20, 2)])
            .await
            .unwrap();
        // Steady traffic: five fetches every ten minutes for an hour.
        for minutes_ago in (0..=60).rev().step_by(10) {
            db.record_learned(&[at("/v1/formations/5051F", 5, minutes_ago)]).await.unwrap();
        }
        let rows = db.learned_top(10).await.unwrap();
        let order: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            order,
            ["/v1/formations/10701F", "/v1/formations/5051F", "/v1/formations/3001F"],
            "{backend:?}: {rows:?}"
        );
        assert_eq!(rows[2].fetches, 1000, "the count itself is kept");
        // Pruned to two, yesterday's goes.
        assert_eq!(db.prune_learned(Duration::from_secs(2 * 86_400), 2).await.unwrap(), 1);
        assert_eq!(db.learned_top(10).await.unwrap().len(), 2);
    }
}

/// Ids that do not exist, however often asked for (a negative answer expires sooner than a page,
/// so junk reaches the origin more often than a hot page does), never displace a page that exists,
/// neither in rank nor in pruning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_path_that_does_not_exist_never_displaces_one_that_does() {
    let app = TestApp::with(TestDb::new(Backend::Postgres).await, &["--learn-flush-interval", "1ms"]).await;
    for i in 0..3 {
        for _ in 0..20 {
            assert_eq!(app.get(&format!("/v1/formations/JUNK{i}")).await.status, 404);
        }
    }
    assert_eq!(app.get("/v1/stations/M01/sightings").await.status, 200);
    let rows = learned_once(&app, |rows| rows.len() == 4 && fetches(rows, "/v1/formations/JUNK2") == Some(20)).await;
    assert_eq!(rows[0].path, "/v1/stations/M01/sightings", "{rows:?}");
    let db = app.store();
    assert_eq!(db.prune_learned(Duration::from_secs(3600), 1).await.unwrap(), 3);
    let kept: Vec<String> = db.learned_top(10).await.unwrap().into_iter().map(|r| r.path).collect();
    assert_eq!(kept, ["/v1/stations/M01/sightings"]);
    // Once it exists, the same path ranks as found again.
    db.record_learned(&[LearnedPath {
        path: "/v1/formations/JUNK0".into(),
        fetches: 1,
        last_fetched_at: chrono::Utc::now(),
        found: true,
    }])
    .await
    .unwrap();
    assert!(db.learned_top(10).await.unwrap().iter().all(|r| r.found));
}
