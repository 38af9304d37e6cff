//! One store test suite, run against PostgreSQL and SQLite.

use std::collections::BTreeSet;

use chrono::Utc;
use std::time::Duration;

use store::{FeedCursor, Position, StoreError, outbox};

use crate::helpers::{Backend, TestApp};

crate::both_backends!(
    one_claim_drains_a_backlog_of_any_size,
    a_released_claim_leaves_everything_pending,
    reads_lines_and_stations,
    reads_formations_with_latest_sightings,
    reads_operations_of_a_service_day,
    reads_latest_sightings,
    triggers_record_the_tags_each_write_touches,
    the_triggers_touch_exactly_what_the_policy_declares,
    change_feed_returns_what_became_visible_after_a_cursor,
    closed_store_reports_unavailable,
    a_claim_takes_only_what_was_visible_at_its_mark,
    a_completed_claim_owes_its_repeat_until_it_is_settled,
    processed_changes_older_than_the_retention_are_pruned,
    migrate_drops_the_change_triggers_of_tables_no_longer_declared,
    the_triggers_and_the_api_agree_on_service_days_across_clock_changes,
    a_demo_load_records_the_families_of_every_table_not_each_tag,
    a_poll_from_before_a_pruned_change_reports_its_page_lost,
    the_warmers_checks_through_the_edge_are_kept_with_its_warm_record,
);

async fn app(backend: Backend) -> TestApp {
    TestApp::new(backend).await
}

async fn reads_lines_and_stations(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let lines = store.lines(Position::Skip).await.unwrap().value;
    let ids: Vec<_> = lines.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["kaigan", "kawagoe", "minato", "sakura", "tama"]);
    let minato = store.line_stations("minato", Position::Skip).await.unwrap().value.unwrap();
    assert_eq!(minato.line.name, "Minato Line");
    assert_eq!(minato.stations.len(), 16);
    assert!(minato.stations.iter().enumerate().all(|(i, s)| s.position == i as i32 + 1 && s.line_id == "minato"));
    assert!(store.line_stations("nowhere", Position::Skip).await.unwrap().value.is_none());
}

async fn reads_formations_with_latest_sightings(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let formations = store.formations(Position::Skip).await.unwrap().value;
    assert_eq!(formations.len(), 100);
    assert!(formations.windows(2).all(|w| w[0].formation.id < w[1].formation.id));
    let detail = store.formation("10701F", Position::Skip).await.unwrap().value.unwrap();
    assert_eq!(detail.formation.series, "10000");
    assert_eq!(detail.formation.cars, 10);
    assert_eq!(detail.sightings.len(), 20);
    assert!(detail.sightings.windows(2).all(|w| w[0].seen_at >= w[1].seen_at));
    assert!(detail.sightings.iter().all(|s| s.formation_id == "10701F"));
    let summary = formations.iter().find(|f| f.formation.id == "10701F").unwrap();
    assert_eq!(summary.latest_sighting.as_ref(), detail.sightings.first());
    assert!(store.formation("99999F", Position::Skip).await.unwrap().value.is_none());
}

async fn reads_operations_of_a_service_day(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let calendar = crate::helpers::calendar();
    let today = calendar.service_date(Utc::now());
    let ops = store.operations(today, Position::Skip).await.unwrap().value;
    assert_eq!(ops.len(), 300);
    assert!(ops.windows(2).all(|w| w[0].number < w[1].number));
    assert!(ops.iter().all(|o| o.service_date == today));
    // Pick an operation that has been sighted this service day.
    let (from, until) = calendar.day_bounds(today);
    let yesterday = today.pred_opt().unwrap();
    let (y_from, y_until) = calendar.day_bounds(yesterday);
    let mut checked = 0;
    for op in store.operations(yesterday, Position::Skip).await.unwrap().value.iter().take(60) {
        let detail =
            store.operation(yesterday, &op.number, (y_from, y_until), Position::Skip).await.unwrap().value.unwrap();
        assert_eq!(detail.operation, *op);
        for s in &detail.sightings {
            assert_eq!(s.operation_number.as_deref(), Some(op.number.as_str()));
            assert!(s.seen_at >= y_from && s.seen_at < y_until);
            checked += 1;
        }
    }
    assert!(checked > 0, "yesterday's operations have sightings");
    assert!(store.operation(today, "nope", (from, until), Position::Skip).await.unwrap().value.is_none());
    let empty = store.operations("2001-01-01".parse().unwrap(), Position::Skip).await.unwrap().value;
    assert!(empty.is_empty());
}

async fn reads_latest_sightings(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let latest = store.latest_sightings(7, Position::Skip).await.unwrap().value;
    assert_eq!(latest.len(), 7);
    assert!(latest.windows(2).all(|w| (w[0].seen_at, w[0].id) >= (w[1].seen_at, w[1].id)));
    let at = (Utc::now() + chrono::Duration::seconds(5)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    app.db
        .exec(&format!(
            "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) VALUES ('3001F', NULL, 'K01', '{at}')"
        ))
        .await;
    let newest = &store.latest_sightings(1, Position::Skip).await.unwrap().value[0];
    assert_eq!(newest.formation_id, "3001F");
    assert_eq!(newest.station_id.as_deref(), Some("K01"));
    assert_eq!(newest.operation_number, None);
}

async fn tags_after(store: &store::Db, after: &FeedCursor) -> BTreeSet<String> {
    store.feed_since(after, 1000).await.unwrap().changes.into_iter().map(|c| c.tag).collect()
}

fn set(tags: &[&str]) -> BTreeSet<String> {
    tags.iter().map(|t| (*t).to_owned()).collect()
}

/// A sample row's columns and their values (`None` is `NULL`).
type Columns = &'static [(&'static str, Option<&'static str>)];

/// One row per declared table, as its columns' values (`None` is `NULL`), with the statement that
/// inserts it. Every table the policy declares must have one here.
const SAMPLE_ROWS: &[(&str, &str, Columns)] = &[
    ("lines", "INSERT INTO lines (id, name) VALUES ('vocab', 'Vocabulary Line')", &[("id", Some("vocab"))]),
    (
        "stations",
        "INSERT INTO stations (id, line_id, name, position) VALUES ('V01', 'minato', 'Vocabulary', 99)",
        &[("id", Some("V01")), ("line_id", Some("minato"))],
    ),
    ("formations", "INSERT INTO formations (id, series, cars) VALUES ('V1F', '1', 1)", &[("id", Some("V1F"))]),
    (
        "operations",
        "INSERT INTO operations (service_date, number) VALUES ('2030-02-03', '77V')",
        &[("service_date", Some("2030-02-03")), ("number", Some("77V"))],
    ),
    (
        "sightings",
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         VALUES ('3001F', '77V', 'M01', '2030-02-03T18:30:00.000000Z')",
        &[
            ("formation_id", Some("3001F")),
            ("operation_number", Some("77V")),
            ("station_id", Some("M01")),
            ("seen_at", Some("2030-02-03T18:30:00Z")),
        ],
    ),
    (
        "sightings",
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         VALUES ('3001F', NULL, NULL, '2030-02-03T19:30:00.000000Z')",
        &[
            ("formation_id", Some("3001F")),
            ("operation_number", None),
            ("station_id", None),
            ("seen_at", Some("2030-02-03T19:30:00Z")),
        ],
    ),
];

/// The tags a row touches by the policy's declaration of its table, computed here in Rust.
fn declared_tags(table: &cache_policy::Table, row: &[(&str, Option<&str>)]) -> BTreeSet<String> {
    let calendar = crate::helpers::calendar();
    let value = |column: &str| -> Option<String> {
        let raw = row.iter().find(|(c, _)| *c == column).unwrap_or_else(|| panic!("sample lacks {column}")).1?;
        Some(match table.column_kind(column) {
            cache_policy::ColumnKind::ServiceDay => {
                calendar.service_date(raw.parse().expect("a sample timestamp")).format("%Y-%m-%d").to_string()
            }
            _ => raw.to_owned(),
        })
    };
    table
        .tags
        .iter()
        .filter(|tag| tag.when.as_deref().is_none_or(|column| value(column).is_some()))
        .filter_map(|tag| {
            let values: Vec<(String, Option<String>)> =
                tag.template.params().map(|p| (p.to_owned(), value(p))).collect();
            tag.template.render(|p| values.iter().find(|(n, _)| n == p).and_then(|(_, v)| v.as_deref()))
        })
        .collect()
}

/// The triggers are generated from the policy's table declarations: for a row of every declared
/// table, inserted and then deleted, the database records exactly the tags the declaration gives
/// (computed here independently of the SQL). A trigger edited by hand, or a generator that
/// misspells a column, fails this; a route whose tags drift from the tables fails the policy's
/// own validation.
async fn the_triggers_touch_exactly_what_the_policy_declares(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let policy = cache_policy::Policy::embedded().unwrap();
    for table in policy.tables() {
        assert!(SAMPLE_ROWS.iter().any(|(t, _, _)| *t == table.name), "no sample row for table {}", table.name);
    }
    for (name, insert, row) in SAMPLE_ROWS {
        let table = policy.tables().iter().find(|t| t.name == *name).unwrap();
        let expected = declared_tags(table, row);
        assert!(!expected.is_empty());
        let mark = store.feed_start().await.unwrap();
        app.db.exec(insert).await;
        assert_eq!(tags_after(store, &mark).await, expected, "inserting into {name}");
        let mark = store.feed_start().await.unwrap();
        let key: Vec<String> = row
            .iter()
            .filter(|(c, _)| ["id", "service_date", "number"].contains(c) || (*name == "sightings" && *c == "seen_at"))
            .map(|(c, v)| match v {
                Some(v) if *c == "seen_at" => format!("{c} = '{}'", v.replace('Z', ".000000Z")),
                Some(v) => format!("{c} = '{v}'"),
                None => format!("{c} IS NULL"),
            })
            .collect();
        app.db.exec(&format!("DELETE FROM {name} WHERE {}", key.join(" AND "))).await;
        assert_eq!(tags_after(store, &mark).await, expected, "deleting from {name}");
    }
}

async fn triggers_record_the_tags_each_write_touches(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let db = &app.db;

    let mark = store.feed_start().await.unwrap();
    db.exec("UPDATE lines SET name = 'Minato Line (renamed)' WHERE id = 'minato'").await;
    assert_eq!(tags_after(store, &mark).await, set(&["lines", "line:minato"]));

    let mark = store.feed_start().await.unwrap();
    db.exec("INSERT INTO stations (id, line_id, name, position) VALUES ('M17', 'minato', 'Newport', 17)").await;
    assert_eq!(tags_after(store, &mark).await, set(&["line:minato", "station:M17"]));

    let mark = store.feed_start().await.unwrap();
    db.exec("UPDATE formations SET note = 'Wrapped' WHERE id = '10701F'").await;
    assert_eq!(tags_after(store, &mark).await, set(&["formations", "formation:10701F"]));

    let mark = store.feed_start().await.unwrap();
    db.exec("INSERT INTO operations (service_date, number, formation_id) VALUES ('2030-01-02', '99X', '10701F')").await;
    assert_eq!(tags_after(store, &mark).await, set(&["operations:2030-01-02", "operation:2030-01-02:99X"]));

    // 2030-01-02 20:30 UTC is 05:30 on the 3rd in Tokyo: the 3rd's service day.
    let mark = store.feed_start().await.unwrap();
    db.exec(
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         VALUES ('10701F', '12M', 'M01', '2030-01-02T20:30:00.000000Z')",
    )
    .await;
    assert_eq!(
        tags_after(store, &mark).await,
        set(&[
            "sightings",
            "formations",
            "formation:10701F",
            "operations:2030-01-03",
            "operation:2030-01-03:12M",
            "station:M01"
        ])
    );
    // 03:30 local is still the previous service day.
    let mark = store.feed_start().await.unwrap();
    db.exec(
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         VALUES ('3001F', '07K', NULL, '2030-01-02T18:30:00.000000Z')",
    )
    .await;
    assert_eq!(
        tags_after(store, &mark).await,
        set(&["sightings", "formations", "formation:3001F", "operations:2030-01-02", "operation:2030-01-02:07K"])
    );
    // Without an operation, no operation tags.
    let mark = store.feed_start().await.unwrap();
    db.exec(
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         VALUES ('3002F', NULL, NULL, '2030-01-02T18:30:00.000000Z')",
    )
    .await;
    assert_eq!(tags_after(store, &mark).await, set(&["sightings", "formations", "formation:3002F"]));

    let mark = store.feed_start().await.unwrap();
    db.exec("DELETE FROM operations WHERE service_date = '2030-01-02' AND number = '99X'").await;
    assert_eq!(tags_after(store, &mark).await, set(&["operations:2030-01-02", "operation:2030-01-02:99X"]));
}

/// A load replaces every table: what it records is each table's tag families, a handful of rows
/// whatever the volume (one per tag would be over a million for ten years of sightings, which the
/// warmer drains ten thousand a tick).
async fn a_demo_load_records_the_families_of_every_table_not_each_tag(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let policy = cache_policy::Policy::embedded().unwrap();
    let start = store.feed_start().await.unwrap();
    let data = store::demo::generate(&crate::helpers::calendar(), Utc::now(), 0.01, 3);
    assert!(data.sighting_count() >= 1000);
    store.load_demo(&data, policy.tables(), &|_| {}).await.unwrap();
    let page = store.feed_since(&start, 1000).await.unwrap();
    let recorded: Vec<&str> = page.changes.iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(
        recorded.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "formation:*",
            "formations",
            "line:*",
            "lines",
            "operation:*:*",
            "operations:*",
            "sightings",
            "station:*"
        ]),
    );
    assert_eq!(recorded.len(), 8, "each family once: {recorded:?}");
}

async fn change_feed_returns_what_became_visible_after_a_cursor(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let start = store.feed_start().await.unwrap();
    app.db.exec("UPDATE formations SET note = 'a' WHERE id = '3001F'").await;
    let page = store.feed_since(&start, 1000).await.unwrap();
    assert_eq!(page.changes.len(), 2);
    assert!(!page.overflow);
    assert!(page.changes.windows(2).all(|w| w[0].id < w[1].id));
    // Nothing new after the returned cursor; the old cursor still sees the same changes.
    assert!(store.feed_since(&page.cursor, 1000).await.unwrap().changes.is_empty());
    assert_eq!(store.feed_since(&start, 1000).await.unwrap().changes, page.changes);
    // Past the limit, the page overflows: its cursor skips to the present.
    let over = store.feed_since(&start, 1).await.unwrap();
    assert!(over.overflow);
    assert_eq!(over.changes.len(), 1, "limit applies");
    assert!(store.feed_since(&over.cursor, 1000).await.unwrap().changes.is_empty());
}

async fn closed_store_reports_unavailable(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    store.ping().await.unwrap();
    store.close().await;
    let err = store.lines(Position::Skip).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

async fn a_claim_takes_only_what_was_visible_at_its_mark(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    // Drain what the fixture left pending.
    let drain = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    drain.complete(store, &accepted()).await.unwrap();

    let mark = store.visible_mark().await.unwrap();
    app.db.exec("UPDATE formations SET note = 'after the mark' WHERE id = '3001F'").await;
    let claim = store.claim(100, &mark, "test").await.unwrap();
    assert!(claim.is_empty(), "{:?}", claim.tags);
    claim.release(store).await.unwrap();
    let claim = store.claim(100, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    assert_eq!(claim.changes(), 2);
    claim.complete(store, &accepted()).await.unwrap();
    assert_eq!(store.pending().await.unwrap().count, 0);
}

/// A batch sent twice (`INVALIDATION_REPEAT`) owes its repeat from the moment it is completed:
/// its tags are pending again, as repairs carrying what the first batch's answers must show,
/// until the tick settles them; left unsettled (the tick died), the next claim takes them.
async fn a_completed_claim_owes_its_repeat_until_it_is_settled(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let drain = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let writers = |tags: &[outbox::ClaimedTag]| -> std::collections::HashSet<String> {
        tags.iter().flat_map(|t| t.written_by.split(',').map(str::to_owned).collect::<Vec<_>>()).collect()
    };
    let mut known = writers(&drain.tags);
    drain.complete(store, &accepted()).await.unwrap();

    app.db.exec("UPDATE formations SET note = 'sent twice' WHERE id = '3001F'").await;
    let claim = store.claim(100, &store.visible_mark().await.unwrap(), "first").await.unwrap();
    let first: Vec<(String, String)> = claim.tags.iter().map(|t| (t.tag.clone(), t.written_by.clone())).collect();
    assert_eq!(first.len(), 2, "{first:?}");
    known.extend(writers(&claim.tags));
    let owed = claim.complete_owing_repeat(store, &accepted()).await.unwrap().expect("a repeat owed");
    assert_eq!(owed.tags, 2);
    assert_eq!(store.pending().await.unwrap().count, 2, "the repeat is owed");
    owed.settle(store, "again").await.unwrap();
    assert_eq!(store.pending().await.unwrap().count, 0, "settled once sent");
    // Sent, a repeat still shows what its first batch's answers must show, not the warmer's own
    // transaction (`cachectl verify` checks answers against it).
    let sent = store.processed_since(Duration::from_secs(60), Duration::ZERO).await.unwrap();
    let shown = writers(&sent);
    assert!(shown.is_subset(&known), "{shown:?} beyond what the batches' writers were: {known:?}");

    // A tick that dies before its repeat: the next claim takes the repeat, as a repair of what the
    // first batch's answers must show; a repair owes no repeat of its own.
    app.db.exec("UPDATE formations SET note = 'died before the repeat' WHERE id = '3001F'").await;
    let claim = store.claim(100, &store.visible_mark().await.unwrap(), "dead").await.unwrap();
    let first: Vec<(String, String)> = claim.tags.iter().map(|t| (t.tag.clone(), t.written_by.clone())).collect();
    let _left = claim.complete_owing_repeat(store, &accepted()).await.unwrap().expect("a repeat owed").leave();
    let next = store.claim(100, &store.visible_mark().await.unwrap(), "next").await.unwrap();
    let repeat: Vec<(String, String)> =
        next.tags.iter().map(|t| (t.tag.clone(), t.repaired_by.clone().expect("a repair"))).collect();
    assert_eq!(repeat, first);
    let owed = next.complete_owing_repeat(store, &accepted()).await.unwrap();
    assert!(owed.is_none(), "a repeat is not repeated: {owed:?}");
    assert_eq!(store.pending().await.unwrap().count, 0);
}

fn accepted() -> outbox::Accepted<'static> {
    outbox::Accepted { id: Some("test"), backend: "none", caller_reference: "test", items: 1, status: "Completed" }
}

/// The prune deletes processed changes, which the feed reads by id: a reader whose position was
/// read before a change was processed learns, on its next poll, that it may have missed it (the
/// page overflows); a reader that read its position after it does not.
async fn a_poll_from_before_a_pruned_change_reports_its_page_lost(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let before = store.feed_start().await.unwrap();
    app.db.exec("UPDATE formations SET note = 'pruned' WHERE id = '3001F'").await;
    let claim = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    claim.complete(store, &accepted()).await.unwrap();
    // SQLite's clock has milliseconds: let the processing time pass before each reading of it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = store.feed_start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let unpruned = store.feed_since(&before, 1000).await.unwrap();
    assert!(!unpruned.overflow, "nothing pruned yet: {unpruned:?}");
    assert_eq!(unpruned.changes.len(), 2);

    assert!(store.prune_changes(Duration::ZERO).await.unwrap() >= 2);
    let lost = store.feed_since(&before, 1000).await.unwrap();
    assert!(lost.overflow, "the update's changes were pruned unread: {lost:?}");
    assert!(lost.changes.is_empty());
    let page = store.feed_since(&after, 1000).await.unwrap();
    assert!(!page.overflow && page.changes.is_empty(), "read after the processing: nothing lost: {page:?}");
    // The lost page's cursor is the present: polling on from it loses nothing more.
    assert!(!store.feed_since(&lost.cursor, 1000).await.unwrap().overflow);
    // Positions never go back, though the prune deleted the newest changes.
    let now = store.feed_start().await.unwrap();
    assert_eq!(store::version_sees(&now.version(), &after.version()), Some(true), "{now:?} after {after:?}");
}

async fn processed_changes_older_than_the_retention_are_pruned(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    // Enough changes to take two prunes.
    app.db
        .exec(match backend {
            Backend::Postgres => {
                "INSERT INTO cache_changes (tag) SELECT 'formation:T' || g FROM generate_series(1, 6000) g"
            }
            Backend::Sqlite => {
                "WITH RECURSIVE g (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 6000) \
                 INSERT INTO cache_changes (tag) SELECT 'formation:T' || n FROM g"
            }
        })
        .await;
    let claim = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let processed = claim.changes();
    assert!(processed > 5_000, "enough to take two prunes: {processed}");
    claim.complete(store, &accepted()).await.unwrap();
    app.db.exec("UPDATE formations SET note = 'pending' WHERE id = '3001F'").await;
    // Nothing is old enough yet.
    assert_eq!(store.prune_changes(Duration::from_secs(3600)).await.unwrap(), 0);
    let old = match backend {
        Backend::Postgres => {
            "UPDATE cache_changes SET processed_at = now() - interval '8 days' WHERE processed_at IS NOT NULL"
        }
        Backend::Sqlite => {
            "UPDATE cache_changes SET processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days') \
                            WHERE processed_at IS NOT NULL"
        }
    };
    app.db.exec(old).await;
    // At most 5,000 a call, so a tick's delete stays short; the next call takes the rest.
    let first = store.prune_changes(Duration::from_secs(7 * 86_400)).await.unwrap();
    assert_eq!(first, (processed as u64).min(5_000));
    let rest = store.prune_changes(Duration::from_secs(7 * 86_400)).await.unwrap();
    assert_eq!(first + rest, processed as u64);
    assert_eq!(store.prune_changes(Duration::from_secs(7 * 86_400)).await.unwrap(), 0);
    assert_eq!(store.pending().await.unwrap().count, 2, "pending changes are never pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_claim_waits_for_a_late_commit_to_settle_however_early_it_started() {
    let app = app(Backend::Postgres).await;
    let store = app.store();
    let drain = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    drain.complete(store, &accepted()).await.unwrap();
    // A transaction that started long before the mark but commits after it.
    let mut slow = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; UPDATE formations SET note = 'slow' WHERE id = '3001F'").execute(&mut slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mark = store.visible_mark().await.unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut slow).await.unwrap();
    // Its `changed_at` is old, but it was not visible at the mark: not claimed yet.
    let early = store.claim(100, &mark, "test").await.unwrap();
    assert!(early.is_empty());
    early.release(store).await.unwrap();
    let later = store.visible_mark().await.unwrap();
    assert_eq!(store.claim(100, &later, "test").await.unwrap().changes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn sqlite_insert_or_replace_records_the_replaced_rows_tags() {
    let app = app(Backend::Sqlite).await;
    let store = app.store();
    let mark = store.feed_start().await.unwrap();
    // Moves station M01 from the Minato line to the Sakura line by replacing the row.
    app.db
        .exec("INSERT OR REPLACE INTO stations (id, line_id, name, position) VALUES ('M01', 'sakura', 'Shiodome', 99)")
        .await;
    assert_eq!(tags_after(store, &mark).await, set(&["line:minato", "line:sakura", "station:M01"]));
}

/// An import that empties a table with `TRUNCATE` records the table's tag families: every tag
/// its rows could carry, so every page they were on is evicted and invalidated. It reads none of
/// the rows it removes while it holds the table's exclusive lock (the trigger it replaces read them
/// all: 11 s for a million sightings, every read of the table waiting), and the reload in its
/// transaction records nothing more. A `TRUNCATE` undone by a savepoint's rollback leaves the
/// writes after it recording their own tags, and so does a mark set for the whole session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn truncate_records_its_tables_families_without_reading_the_rows_it_removes() {
    use sqlx::Connection;
    let app = app(Backend::Postgres).await;
    let store = app.store();
    // A table far larger than the demo's, so that reading it would show.
    app.db
        .exec(
            "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
             SELECT '3001F', 'n' || (g % 50), 'M01', now() - g * interval '1 minute' FROM generate_series(1, 20000) g",
        )
        .await;
    let mut conn = <sqlx::PgConnection as Connection>::connect(&app.db.url).await.unwrap();
    let mark = store.feed_start().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("TRUNCATE sightings").execute(&mut *tx).await.unwrap();
    let (read,): (i64,) = sqlx::query_as(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables WHERE relname = 'sightings'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(read <= 1, "the TRUNCATE read {read} rows of the table it removes");
    sqlx::query(
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
         SELECT '3002F', 'r' || g, 'M02', now() - g * interval '1 minute' FROM generate_series(1, 5000) g",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let page = store.feed_since(&mark, 1_000_000).await.unwrap();
    let mut recorded: Vec<&str> = page.changes.iter().map(|c| c.tag.as_str()).collect();
    recorded.sort_unstable();
    assert_eq!(
        recorded,
        ["formation:*", "formations", "operation:*:*", "operations:*", "sightings", "station:*"],
        "the families once each, and nothing for the reload they cover"
    );

    // Rolled back to a savepoint, the TRUNCATE's mark goes with its families.
    let mark = store.feed_start().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut savepoint = tx.begin().await.unwrap();
    sqlx::query("TRUNCATE sightings").execute(&mut *savepoint).await.unwrap();
    savepoint.rollback().await.unwrap();
    sqlx::query("INSERT INTO sightings (formation_id, seen_at) VALUES ('3003F', now())")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let page = store.feed_since(&mark, 1_000_000).await.unwrap();
    let recorded: BTreeSet<&str> = page.changes.iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(recorded, BTreeSet::from(["formation:3003F", "formations", "sightings"]));

    // The mark is the transaction's own: one set for the session (by hand, or left behind on a
    // pooled connection) skips nothing.
    let mark = store.feed_start().await.unwrap();
    for (value, formation) in [("'on'", "3004F"), ("pg_current_xact_id()::text", "3005F")] {
        let set = format!("SELECT set_config('edgerail.truncated_' || 'sightings'::regclass::oid, {value}, false)");
        sqlx::raw_sql(&set).execute(&mut conn).await.unwrap();
        let insert = format!("INSERT INTO sightings (formation_id, seen_at) VALUES ('{formation}', now())");
        sqlx::raw_sql(&insert).execute(&mut conn).await.unwrap();
    }
    let page = store.feed_since(&mark, 1_000_000).await.unwrap();
    let recorded: BTreeSet<&str> = page.changes.iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(recorded, BTreeSet::from(["formation:3004F", "formation:3005F", "formations", "sightings"]));
}

/// The triggers' service day and the API's (`ServiceCalendar`) are one rule: `migrate` gives the
/// database the calendar's runs of days, in a zone whose day starts inside its clock changes (a
/// fold in November, a gap in March), so the page a sighting appears on is the page its tags
/// invalidate, on either backend (SQLite's triggers once used the zone's offset at migrate time,
/// wrong for half the year where clocks change).
async fn the_triggers_and_the_api_agree_on_service_days_across_clock_changes(backend: Backend) {
    use chrono::{DateTime, TimeDelta};
    let app = app(backend).await;
    let store = app.store();
    for start in ["01:30", "02:30"] {
        let calendar = store::ServiceCalendar::new("America/New_York", start).unwrap();
        store.migrate(&calendar, cache_policy::Policy::embedded().unwrap().tables()).await.unwrap();
        let mut instants: Vec<DateTime<Utc>> = Vec::new();
        for (from, until) in
            [("2026-03-07T00:00:00Z", "2026-03-09T12:00:00Z"), ("2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z")]
        {
            let (mut at, until): (DateTime<Utc>, DateTime<Utc>) = (from.parse().unwrap(), until.parse().unwrap());
            while at < until {
                instants.push(at);
                at += TimeDelta::minutes(5);
            }
        }
        // Each day's first instant, and the last microsecond before it.
        for day in ["2026-03-07", "2026-03-08", "2026-03-09", "2026-10-31", "2026-11-01", "2026-11-02"] {
            let (from, _) = calendar.day_bounds(day.parse().unwrap());
            instants.extend([from, from - TimeDelta::microseconds(1)]);
        }
        // Each sighting's operation number is its instant's index, so its tag names its day.
        let rows: Vec<String> = instants
            .iter()
            .enumerate()
            .map(|(i, at)| format!("('3001F', 'n{i}', '{}')", at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            .collect();
        let mark = store.feed_start().await.unwrap();
        app.db
            .exec(&format!(
                "INSERT INTO sightings (formation_id, operation_number, seen_at) VALUES {}",
                rows.join(", ")
            ))
            .await;
        let tags = store.feed_since(&mark, 100_000).await.unwrap().changes;
        let mut days = std::collections::BTreeMap::new();
        for tag in tags.iter().filter_map(|c| c.tag.strip_prefix("operation:")) {
            let (day, number) = tag.split_once(":n").unwrap();
            days.insert(number.parse::<usize>().unwrap(), day.to_owned());
        }
        assert_eq!(days.len(), instants.len(), "{backend:?} {start}: every sighting is tagged with its operation");
        for (i, at) in instants.iter().enumerate() {
            assert_eq!(days[&i], calendar.service_date(*at).to_string(), "{backend:?} {start}: {at}");
        }
    }
}

/// A bulk write's tags are computed in one set-based plan: no tag function calls a function
/// PostgreSQL cannot inline, a SQL function whose body reads a table, which would run once per row
/// (the service day's runs are read by a subquery of the tag function itself). One that did held a
/// TRUNCATE of the soak's sightings for seconds (when its trigger still computed every removed
/// row's tags), every read of the table waiting behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_tag_functions_call_only_functions_the_planner_inlines() {
    let app = app(Backend::Postgres).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url).await.unwrap();
    let calls: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.proname::text, f.proname::text, f.prosrc FROM pg_proc t JOIN pg_proc f \
             ON t.prosrc ~ ('\\m' || f.proname || '\\(') AND f.proname LIKE 'edgerail\\_%' \
         WHERE t.proname LIKE 'edgerail\\_tags\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let (sightings,): (String,) =
        sqlx::query_as("SELECT prosrc FROM pg_proc WHERE proname = 'edgerail_tags_sightings'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        sightings.contains("FROM service_day_runs"),
        "the service day is looked up in the plan itself: {sightings}"
    );
    for (tags, called, body) in calls {
        assert!(
            !body.to_lowercase().split_whitespace().any(|w| w == "from"),
            "{tags} calls {called}, which reads a table and so runs once per row"
        );
    }
}

/// Every change trigger runs static statements, which PL/pgSQL prepares once per session: a
/// function that built its statement's text with `EXECUTE` was parsed and planned anew on every
/// write, which made a single-row sighting insert cost 2.2× the same insert without the triggers
/// (`bench writes`: 1.4× with static statements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_change_triggers_run_static_statements() {
    let app = app(Backend::Postgres).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url).await.unwrap();
    let triggers: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.tgname::text, p.proname::text, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
         WHERE NOT t.tgisinternal AND t.tgname LIKE '%\\_changes\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(triggers.len(), 5 * 4, "insert, update, delete and truncate on each table: {triggers:?}");
    for (trigger, function, body) in triggers {
        if trigger.ends_with("_truncate") {
            continue; // Its one dynamic statement reads at most one row, once per TRUNCATE.
        }
        assert!(
            !body.to_uppercase().contains("EXECUTE"),
            "{trigger} calls {function}, which plans its SQL on every write"
        );
    }
}

/// Many changes of one tag: a claim takes them all as one tag (the planner sees one tag, not
/// a hundred thousand rows), and one statement marks them processed.
async fn one_claim_drains_a_backlog_of_any_size(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let drain = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    drain.complete(store, &accepted()).await.unwrap();
    let backlog = match backend {
        Backend::Postgres => "INSERT INTO cache_changes (tag) SELECT 'formation:3001F' FROM generate_series(1, 100000)",
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             INSERT INTO cache_changes (tag) SELECT 'formation:3001F' FROM n"
        }
    };
    app.db.exec(backlog).await;
    app.db.exec("UPDATE lines SET color = '#000000' WHERE id = 'minato'").await;
    // A claim bounded to fewer tags than are pending takes whole tags, earliest first.
    let first = store.claim(1, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    assert_eq!(first.tags.len(), 1);
    assert_eq!((first.tags[0].tag.as_str(), first.tags[0].changes), ("formation:3001F", 100_000));
    first.release(store).await.unwrap();
    let claim = store.claim(10_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let tags: BTreeSet<&str> = claim.tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(tags, BTreeSet::from(["formation:3001F", "lines", "line:minato"]));
    assert_eq!(claim.changes(), 100_002);
    claim.complete(store, &accepted()).await.unwrap();
    assert_eq!(store.pending().await.unwrap().count, 0, "one claim drained the backlog");
}

/// A claim whose invalidation was not accepted leaves every change pending, unmarked.
async fn a_released_claim_leaves_everything_pending(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let before = store.pending().await.unwrap().count;
    assert!(before > 0);
    let claim = store.claim(10_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    assert_eq!(i64::try_from(claim.changes()).unwrap(), before);
    claim.release(store).await.unwrap();
    assert_eq!(store.pending().await.unwrap().count, before);
    let again = store.claim(10_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    assert_eq!(i64::try_from(again.changes()).unwrap(), before, "the same changes, claimable again");
}

/// A table the policy no longer declares (here one an earlier release tagged) stops recording
/// changes once `migrate` runs: its triggers and tag function go, the declared tables' stay.
async fn migrate_drops_the_change_triggers_of_tables_no_longer_declared(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let db = &app.db;
    db.exec(match backend {
        Backend::Postgres => {
            "CREATE TABLE depots (id TEXT PRIMARY KEY); \
             CREATE FUNCTION edgerail_tags_depots(r depots) RETURNS SETOF TEXT LANGUAGE sql STABLE \
                 AS $$ SELECT 'depot:' || r.id $$; \
             CREATE FUNCTION edgerail_record_changes_depots() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 INSERT INTO cache_changes (tag) SELECT DISTINCT t FROM new_rows r, edgerail_tags_depots(r) t; \
                 RETURN NULL; END $$; \
             CREATE TRIGGER depots_changes_insert AFTER INSERT ON depots REFERENCING NEW TABLE AS new_rows \
                 FOR EACH STATEMENT EXECUTE FUNCTION edgerail_record_changes_depots()"
        }
        Backend::Sqlite => {
            "CREATE TABLE depots (id TEXT PRIMARY KEY); \
             CREATE TRIGGER depots_changes_insert AFTER INSERT ON depots BEGIN \
                 INSERT INTO cache_changes (tag) VALUES ('depot:' || NEW.id); END"
        }
    })
    .await;
    let mark = store.feed_start().await.unwrap();
    db.exec("INSERT INTO depots (id) VALUES ('north')").await;
    assert_eq!(tags_after(store, &mark).await, set(&["depot:north"]), "the earlier release's trigger records");

    store.migrate(&crate::helpers::calendar(), cache_policy::Policy::embedded().unwrap().tables()).await.unwrap();
    let mark = store.feed_start().await.unwrap();
    db.exec("INSERT INTO depots (id) VALUES ('south')").await;
    db.exec("UPDATE formations SET note = 'Wrapped' WHERE id = '10701F'").await;
    assert_eq!(tags_after(store, &mark).await, set(&["formations", "formation:10701F"]));
    if backend == Backend::Postgres {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        let (left,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('edgerail_tags_depots', 'edgerail_record_changes_depots')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(left, 0, "the tag and change functions of the undeclared table are dropped");
    }
}

/// What the warmer's verification reads and writes: a claim says how long ago its changes became
/// visible (and from when it counts), the processed changes list what wrote them, and a path's
/// check is kept with its warm record until a later check replaces it.
async fn the_warmers_checks_through_the_edge_are_kept_with_its_warm_record(backend: Backend) {
    let app = app(backend).await;
    let store = app.store();
    let before = store.feed_start().await.unwrap();
    // A transaction that commits a second after it wrote: the age counts from the commit.
    app.db
        .exec(match backend {
            Backend::Postgres => {
                "BEGIN; UPDATE formations SET note = 'checked' WHERE id = '3001F'; SELECT pg_sleep(1); COMMIT"
            }
            Backend::Sqlite => "UPDATE formations SET note = 'checked' WHERE id = '3001F'",
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claim = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let tag = claim.tags.iter().find(|t| t.tag == "formation:3001F").cloned().unwrap();
    // The test cluster records commit timestamps; SQLite keeps none (the warmer counts from its
    // mark instead).
    assert_eq!(tag.from_commit, backend == Backend::Postgres, "{tag:?}");
    if tag.from_commit {
        assert!((300..1_000).contains(&tag.age_ms), "committed 300 ms before the claim, written 1 s before: {tag:?}");
    }
    assert!(tag.repaired_by.is_none(), "{tag:?}");
    assert!(store::version_shows(&store.feed_start().await.unwrap().version(), &tag.written_by).unwrap());
    assert!(!store::version_shows(&before.version(), &tag.written_by).unwrap());
    claim.complete(store, &accepted()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = store.processed_since(Duration::from_secs(60), Duration::ZERO).await.unwrap();
    let listed = sent.iter().find(|t| t.tag == "formation:3001F").unwrap();
    assert_eq!(listed.written_by, tag.written_by);
    let propagating = store.processed_since(Duration::from_secs(60), Duration::from_secs(30)).await.unwrap();
    assert!(propagating.is_empty(), "sent too recently to be owed: {propagating:?}");
    // A repair that waits is a pending change again, and its claim says it is a repair.
    // It must show what the original change's writers wrote, not the requeue's own transaction.
    store.requeue(&[("formation:3001F", tag.written_by.as_str())]).await.unwrap();
    let claim = store.claim(1_000_000, &store.visible_mark().await.unwrap(), "test").await.unwrap();
    let requeued: Vec<(&str, Option<&str>, &str)> =
        claim.tags.iter().map(|t| (t.tag.as_str(), t.repaired_by.as_deref(), t.written_by.as_str())).collect();
    let writers = tag.written_by.as_str();
    assert_eq!(requeued, [("formation:3001F", Some(writers), writers)]);
    claim.complete(store, &accepted()).await.unwrap();

    let now = Utc::now();
    let warmed = |path: &str, verified: Option<outbox::Verification>| outbox::Warmed {
        path: path.into(),
        status: 200,
        x_cache: Some("Miss".into()),
        fetched_at: now,
        verified,
    };
    let check = |outcome, freshness| Some(outbox::Verification { outcome, freshness, at: now });
    store
        .record_warm(&[
            warmed("/v1/formations/3001F", check("repaired", Some(Duration::from_millis(4_500)))),
            warmed("/v1/formations", check("stale", None)),
            warmed("/v1/lines", None),
        ])
        .await
        .unwrap();
    // A later warm request that checked nothing keeps the check.
    store.record_warm(&[warmed("/v1/formations/3001F", None)]).await.unwrap();
    let checks = store.verified_since(Duration::from_secs(3600)).await.unwrap();
    let found: Vec<(&str, &str, Option<i64>)> =
        checks.iter().map(|c| (c.path.as_str(), c.outcome.as_str(), c.freshness_ms)).collect();
    assert_eq!(found, [("/v1/formations", "stale", None), ("/v1/formations/3001F", "repaired", Some(4_500))]);
}
