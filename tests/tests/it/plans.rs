//! The data reads' plans on a database large enough for the planner to choose as it would in
//! production: every read of `sightings` and `operations` uses an index, for ids that exist and
//! ids that do not, the oldest day and the newest, and an index that finds the rows rather than
//! one walked while a filter drops the rest (for an id with few rows or none, that walk reads the
//! whole index). (A sequential scan of the small `lines`, `stations` and `formations` is the
//! planner's right choice, and allowed.)

use chrono::{Days, NaiveDate};
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{Backend, TestDb};

/// The tables whose reads must go through an index.
const LARGE: [&str; 2] = ["sightings", "operations"];

/// Every relation a plan scans sequentially, and every index of a large table it walks with a
/// filter (`relation via index, filtering …`).
fn sequential_scans(plan: &Value, found: &mut Vec<String>) {
    let relation = plan["Relation Name"].as_str().unwrap_or("?");
    if plan["Node Type"] == "Seq Scan" {
        found.push(relation.to_owned());
    }
    if matches!(plan["Node Type"].as_str(), Some("Index Scan" | "Index Only Scan"))
        && LARGE.contains(&relation)
        && let Some(filter) = plan["Filter"].as_str()
    {
        found.push(format!("{relation} via {}, filtering {filter}", plan["Index Name"].as_str().unwrap_or("?")));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        sequential_scans(child, found);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn every_read_of_the_large_tables_uses_an_index() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // Three years of a busy site, written with the triggers off (they are not what is measured):
    // 100 operations a day and 200,000 sightings over 1,100 days.
    sqlx::raw_sql(
        "ALTER TABLE operations DISABLE TRIGGER USER; ALTER TABLE sightings DISABLE TRIGGER USER; \
         INSERT INTO operations (service_date, number, formation_id) \
           SELECT DATE '2024-01-01' + d, lpad((n % 60 + 1)::text, 2, '0') || (ARRAY['M','S','K','T','U'])[n / 60 + 1], NULL \
           FROM generate_series(0, 1099) d, generate_series(0, 99) n ON CONFLICT DO NOTHING; \
         INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
           SELECT f.ids[1 + g % array_length(f.ids, 1)], \
                  CASE WHEN g % 3 = 0 THEN NULL ELSE lpad((g % 60 + 1)::text, 2, '0') || 'M' END, \
                  s.ids[1 + g % array_length(s.ids, 1)], \
                  TIMESTAMPTZ '2024-01-01 00:00+00' + g * INTERVAL '237 seconds' \
           FROM (SELECT array_agg(id ORDER BY id) AS ids FROM formations) f, \
                (SELECT array_agg(id ORDER BY id) AS ids FROM stations) s, \
                generate_series(1, 200000) g; \
         ALTER TABLE operations ENABLE TRIGGER USER; ALTER TABLE sightings ENABLE TRIGGER USER; ANALYZE",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (oldest, newest) = (NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 1, 4).unwrap());
    let calendar = crate::helpers::calendar();
    let mut failures = Vec::new();
    for (line, formation, station, day, number) in [
        ("minato", "10701F", "M01", oldest, "01M"),
        ("nowhere", "99999F", "X99", newest, "99X"),
        ("tama", "3001F", "T03", newest.checked_sub_days(Days::new(1)).unwrap(), "30M"),
    ] {
        let (from, until) = calendar.day_bounds(day);
        let asked = store::explain::Asked { line, formation, station, day: (day, number, from, until), limit: 50 };
        for (read, statement) in store::explain::postgres_reads(&asked).unwrap() {
            let explained: Value = sqlx::query_scalar::<_, Value>(&format!("EXPLAIN (FORMAT JSON) {statement}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let mut scans = Vec::new();
            sequential_scans(&explained[0]["Plan"], &mut scans);
            if scans.iter().any(|t| LARGE.contains(&t.as_str()) || t.contains(" via ")) {
                failures.push(format!("{read} ({line}, {formation}, {station}, {day}): {scans:?}\n{statement}"));
            }
        }
    }
    assert!(failures.is_empty(), "sequential scans of a large table:\n{}", failures.join("\n"));
}

/// Right after a `TRUNCATE` and a reload, before anything analyzed the table again, the planner
/// misjudges `sightings`: the list of formations must still read it only through the formation's
/// index (a plan that hashed the whole table, or walked the index of every sighting filtering for
/// the formation, made the busiest list read every sighting for each formation with none: seconds
/// on a busy machine, past the statement timeout on a large table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_formations_list_uses_the_index_after_a_truncate_and_reload() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(
        "TRUNCATE sightings; \
         INSERT INTO sightings (formation_id, seen_at) \
           SELECT f.ids[1 + g % 5], TIMESTAMPTZ '2020-01-01 00:00+00' - g * INTERVAL '1 second' \
           FROM (SELECT array_agg(id ORDER BY id) AS ids FROM formations) f, generate_series(1, 30000) g",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let asked = store::explain::Asked {
        line: "minato",
        formation: "10701F",
        station: "M01",
        day: (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), "01M", chrono::Utc::now(), chrono::Utc::now()),
        limit: 50,
    };
    let (_, statement) = store::explain::postgres_reads(&asked)
        .unwrap()
        .into_iter()
        .find(|(read, _)| *read == "formations/latest")
        .unwrap();
    let explained: Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {statement}")).fetch_one(&mut *tx).await.unwrap();
    let mut scans = Vec::new();
    sequential_scans(&explained[0]["Plan"], &mut scans);
    assert!(!scans.iter().any(|t| t.starts_with("sightings")), "{scans:?}\n{explained:#}");

    // Whatever the costs, the statement cannot walk the index of every sighting with a filter:
    // without the formation's index the planner has to sort what the filter keeps.
    sqlx::query("DROP INDEX sightings_formation_latest").execute(&mut *tx).await.unwrap();
    let explained: Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {statement}")).fetch_one(&mut *tx).await.unwrap();
    let mut scans = Vec::new();
    sequential_scans(&explained[0]["Plan"], &mut scans);
    assert!(!scans.iter().any(|t| t.contains("sightings_latest")), "{scans:?}\n{explained:#}");
}
