//! Change-feed eviction: writes by anyone become visible after the poll interval, on every
//! instance, and only the entries they touch are evicted.

use std::time::Duration;

use crate::helpers::{Backend, TestApp, TestDb};

const POLL: &str = "100ms";

/// A short poll interval, and requests that wait for a due poll however long it takes: these tests
/// check what a poll evicts, not the bound on waiting for one (tests/tests/it/faults.rs does), and
/// a loaded machine can take longer than the default 50 ms for a poll.
const WAIT_FOR_POLLS: &[&str] = &["--change-poll-interval", POLL, "--change-poll-wait", "5s", "--change-max-lag", "6s"];

fn after_poll_interval() -> tokio::time::Sleep {
    // The interval itself is what must pass; there is no other signal for "time went by".
    tokio::time::sleep(Duration::from_millis(150))
}

crate::both_backends!(
    a_write_is_visible_after_the_poll_interval,
    every_instance_evicts,
    idle_instances_do_not_poll,
    an_instance_that_missed_a_pruned_change_drops_what_it_holds,
    an_answers_version_sees_exactly_the_changes_it_shows,
);

async fn a_write_is_visible_after_the_poll_interval(backend: Backend) {
    let app = TestApp::with(TestDb::new(backend).await, WAIT_FOR_POLLS).await;
    let before = app.get("/v1/lines").await;
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
    let formation = app.get("/v1/formations/3001F").await;
    assert_eq!(formation.header("x-local-cache"), "miss");

    app.db.exec("INSERT INTO lines (id, name, color) VALUES ('harbour', 'Harbour Line', '#123456')").await;
    after_poll_interval().await;

    let after = app.get("/v1/lines").await;
    assert_eq!(after.header("x-local-cache"), "miss");
    assert_ne!(after.header("etag"), before.header("etag"));
    let ids: Vec<_> =
        after.json()["lines"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&"harbour".to_owned()), "{ids:?}");
    // An unrelated entry survives the eviction.
    assert_eq!(app.get("/v1/formations/3001F").await.header("x-local-cache"), "hit");

    // A negatively cached 404 is evicted when the resource appears.
    assert_eq!(app.get("/v1/lines/harbour/stations").await.status, 200);
    let missing = app.get("/v1/formations/9001F").await;
    assert_eq!(missing.status, 404);
    app.db.exec("INSERT INTO formations (id, series, cars, note) VALUES ('9001F', '9000', 8, NULL)").await;
    after_poll_interval().await;
    let found = app.get("/v1/formations/9001F").await;
    assert_eq!(found.status, 200);
    assert_eq!(found.json()["series"], "9000");
}

async fn every_instance_evicts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = TestApp::with(db.clone(), WAIT_FOR_POLLS).await;
    let b = TestApp::with(db.clone(), WAIT_FOR_POLLS).await;
    for app in [&a, &b] {
        assert_eq!(app.get("/v1/formations/10701F").await.json()["note"], "Refurbished interior");
        assert_eq!(app.get("/v1/formations/10701F").await.header("x-local-cache"), "hit");
    }
    db.exec("UPDATE formations SET note = 'Olympic livery' WHERE id = '10701F'").await;
    after_poll_interval().await;
    for app in [&a, &b] {
        let res = app.get("/v1/formations/10701F").await;
        assert_eq!(res.json()["note"], "Olympic livery");
        assert_eq!(res.header("x-local-cache"), "miss");
    }
}

async fn idle_instances_do_not_poll(backend: Backend) {
    let app = TestApp::with(TestDb::new(backend).await, WAIT_FOR_POLLS).await;
    app.get("/v1/lines").await;
    let reads = app.store().reads();
    // Several poll intervals pass with no request: no database work at all.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(app.store().reads(), reads);
    // The next request polls once (and is otherwise a hit).
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
    assert_eq!(app.store().reads(), reads + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn polls_at_most_once_per_interval() {
    let app = TestApp::with(
        TestDb::new(Backend::Postgres).await,
        &["--change-poll-interval", "1h", "--change-max-lag", "2h"],
    )
    .await;
    app.get("/v1/lines").await;
    let reads = app.store().reads();
    for _ in 0..50 {
        assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
    }
    assert_eq!(app.store().reads(), reads, "hits within the interval touch nothing");
}

/// A `TRUNCATE` and reload records the table's tag families, not each row's tags: every page that
/// showed a removed row is evicted (whatever formation, station or day it was about), and a page
/// of another table stays cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_truncate_and_reload_evicts_every_page_of_the_table_and_no_other() {
    let app = TestApp::with(TestDb::new(Backend::Postgres).await, WAIT_FOR_POLLS).await;
    let pages = ["/v1/formations/3001F", "/v1/stations/M01/sightings", "/v1/operations/today", "/v1/sightings/latest"];
    for page in pages.iter().chain(&["/v1/lines"]) {
        assert_eq!(app.get(page).await.status, 200, "{page}");
        assert_eq!(app.get(page).await.header("x-local-cache"), "hit", "{page}");
    }
    assert!(!app.get("/v1/stations/M01/sightings").await.json()["sightings"].as_array().unwrap().is_empty());

    app.db
        .exec(
            "BEGIN; TRUNCATE sightings; \
             INSERT INTO sightings (formation_id, station_id, seen_at) VALUES ('3002F', 'M02', now()); COMMIT",
        )
        .await;
    after_poll_interval().await;
    for page in pages {
        assert_eq!(app.get(page).await.header("x-local-cache"), "miss", "{page}");
    }
    assert!(app.get("/v1/formations/3001F").await.json()["sightings"].as_array().unwrap().is_empty());
    assert!(app.get("/v1/stations/M01/sightings").await.json()["sightings"].as_array().unwrap().is_empty());
    let latest = app.get("/v1/sightings/latest").await.json();
    assert_eq!(latest["sightings"][0]["formation_id"], "3002F", "{latest}");
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit", "lines are not sightings");
}

/// The feed reads changes by id, processed or not. An instance that last polled before a change
/// was processed and pruned (idle for longer than the warmer's retention) cannot read it: its next
/// poll learns of the loss and drops everything it holds, instead of vouching for an answer the
/// change touched.
async fn an_instance_that_missed_a_pruned_change_drops_what_it_holds(backend: Backend) {
    let app = TestApp::with(TestDb::new(backend).await, WAIT_FOR_POLLS).await;
    assert_eq!(app.get("/v1/formations/10701F").await.json()["note"], "Refurbished interior");
    assert_eq!(app.get("/v1/formations/10701F").await.header("x-local-cache"), "hit");

    // While the instance serves nothing (so does not poll), a write, the warmer's tick that
    // processes it, and a prune with no retention at all.
    app.db.exec("UPDATE formations SET note = 'Olympic livery' WHERE id = '10701F'").await;
    let store = app.store();
    let claim = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let accepted = store::outbox::Accepted {
        id: Some("test"),
        backend: "none",
        caller_reference: "test",
        items: 1,
        status: "Completed",
    };
    claim.complete(store, &accepted).await.unwrap();
    // SQLite's clock has milliseconds: let the processing time pass.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.prune_changes(Duration::ZERO).await.unwrap() >= 2, "the update's changes are pruned");

    after_poll_interval().await;
    let after = app.get("/v1/formations/10701F").await;
    assert_eq!(after.json()["note"], "Olympic livery", "the answer the pruned change touched was dropped");
    assert_eq!(after.header("x-local-cache"), "miss");
}

/// `x-edgerail-version` names the data an answer shows: it sees a change the answer shows, and
/// does not see one committed after the answer was read, on a miss and on the hits that follow.
async fn an_answers_version_sees_exactly_the_changes_it_shows(backend: Backend) {
    let app = TestApp::with(TestDb::new(backend).await, WAIT_FOR_POLLS).await;
    let before = app.get("/v1/formations/10701F").await;
    assert_eq!(before.json()["note"], "Refurbished interior");
    let old = before.header("x-edgerail-version").to_owned();
    assert_eq!(app.get("/v1/formations/10701F").await.header("x-edgerail-version"), old);

    app.db.exec("UPDATE formations SET note = 'Olympic livery' WHERE id = '10701F'").await;
    // The feed's position once the update committed: it sees the update.
    let written = app.store().feed_start().await.unwrap().version();
    assert_eq!(store::version_sees(&old, &written), Some(false), "read before the update: {old} against {written}");

    after_poll_interval().await;
    let after = app.get("/v1/formations/10701F").await;
    assert_eq!(after.json()["note"], "Olympic livery");
    let new = after.header("x-edgerail-version").to_owned();
    assert_eq!(store::version_sees(&new, &written), Some(true), "read after the update: {new} against {written}");
    let hit = app.get("/v1/formations/10701F").await;
    assert_eq!(hit.header("x-local-cache"), "hit");
    assert_eq!(hit.header("x-edgerail-version"), new);
    // A 404 says it too: a version that sees the update, since it was read after it.
    let missing = app.get("/v1/formations/NOPE9F").await;
    assert_eq!(missing.status, 404);
    assert_eq!(store::version_sees(missing.header("x-edgerail-version"), &written), Some(true));
}
