//! Every route's miss on production-sized data: an api with its in-process cache off
//! (`LOCAL_CACHE_MAX_BYTES=0`) against the ten-million-sighting database, each case requested in
//! turn, sequentially, on a warm connection. The figure is the database time the api itself
//! reports (`Server-Timing: db;dur=…`), so neither the client nor the HTTP stack is in it; the
//! client's whole round trip is given beside it.
//!
//! The cases are chosen from the data: the most-sighted formation and station, the oldest and the
//! newest service day and an operation of each, a day with no operations, and ids that do not
//! exist (a miss for them reads as much as the planner needs to find nothing).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use sqlx::{Connection, PgConnection};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api, with its in-process cache off.
    #[arg(long)]
    base: String,
    /// Its database, to choose the cases from.
    #[arg(long)]
    database_url: String,
    /// Requests per case.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// One URL to measure: the route it exercises and what is special about it.
struct Case {
    route: &'static str,
    what: String,
    path: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cases = cases(&args.database_url).await?;
    let client = reqwest::Client::new();
    let mut results = Vec::new();
    for case in &cases {
        let url = format!("{}{}", args.base, case.path);
        // One unmeasured request: the connection to the api, and the api's to the database.
        client.get(&url).send().await?.bytes().await?;
        let (mut db, mut total): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut status = 0;
        for _ in 0..args.requests {
            let started = Instant::now();
            let response = client.get(&url).send().await?;
            status = response.status().as_u16();
            let timing = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("db;dur="))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<f64>().ok());
            response.bytes().await?;
            total.push(started.elapsed().as_secs_f64() * 1e3);
            db.push(timing.ok_or_else(|| anyhow::anyhow!("{url}: no Server-Timing db duration: is the cache off?"))?);
        }
        db.sort_by(f64::total_cmp);
        total.sort_by(f64::total_cmp);
        eprintln!("  {:<18} {:<40} db p99 {:.2} ms", case.route, case.what, testbed::percentile(&db, 99.0));
        results.push(json!({
            "route": case.route,
            "case": case.what,
            "path": case.path,
            "status": status,
            "db_p50_ms": testbed::percentile(&db, 50.0),
            "db_p99_ms": testbed::percentile(&db, 99.0),
            "db_max_ms": db.last(),
            "total_p99_ms": testbed::percentile(&total, 99.0),
        }));
    }
    let mut conn = PgConnection::connect(&args.database_url).await?;
    let (sightings,): (i64,) = sqlx::query_as("SELECT count(*) FROM sightings").fetch_one(&mut conn).await?;
    let (operations,): (i64,) = sqlx::query_as("SELECT count(*) FROM operations").fetch_one(&mut conn).await?;
    let out = json!({ "sightings": sightings, "operations": operations, "requests": args.requests, "cases": results });
    testbed::write_json(&args.out, &out)
}

/// The cases, from what the database holds.
async fn cases(database_url: &str) -> anyhow::Result<Vec<Case>> {
    let mut conn = PgConnection::connect(database_url).await?;
    let one = |sql: &'static str| sqlx::query_as::<_, (String,)>(sql);
    let (line,) = one("SELECT id FROM lines ORDER BY id LIMIT 1").fetch_one(&mut conn).await?;
    // The busiest by the planner's statistics: counting ten million rows would take longer than
    // the whole measurement.
    let (formation,) =
        one("SELECT coalesce((SELECT v::text FROM pg_stats s, unnest(s.most_common_vals::text::text[]) v \
         WHERE s.tablename = 'sightings' AND s.attname = 'formation_id' LIMIT 1), (SELECT min(id) FROM formations))")
        .fetch_one(&mut conn)
        .await?;
    let (station,) =
        one("SELECT coalesce((SELECT v::text FROM pg_stats s, unnest(s.most_common_vals::text::text[]) v \
         WHERE s.tablename = 'sightings' AND s.attname = 'station_id' LIMIT 1), (SELECT min(id) FROM stations))")
        .fetch_one(&mut conn)
        .await?;
    let (oldest, oldest_number): (String, String) = sqlx::query_as(
        "SELECT to_char(service_date, 'YYYY-MM-DD'), number FROM operations ORDER BY service_date, number LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let (newest, newest_number): (String, String) = sqlx::query_as(
        "SELECT to_char(service_date, 'YYYY-MM-DD'), number FROM operations ORDER BY service_date DESC, number LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let (empty_day,) =
        one("SELECT to_char(min(service_date) - 1, 'YYYY-MM-DD') FROM operations").fetch_one(&mut conn).await?;
    let case = |route, what: &str, path: String| Case { route, what: what.to_owned(), path };
    Ok(vec![
        case("lines", "all", "/v1/lines".into()),
        case("line_stations", "a line", format!("/v1/lines/{line}/stations")),
        case("line_stations", "unknown line", "/v1/lines/no-such-line/stations".into()),
        case("formations", "all, each with its latest sighting", "/v1/formations".into()),
        case("formation", "the most sighted", format!("/v1/formations/{formation}")),
        case("formation", "unknown", "/v1/formations/NOPE9F".into()),
        case("operations", "the oldest day", format!("/v1/operations/{oldest}")),
        case("operations", "the newest day", format!("/v1/operations/{newest}")),
        case("operations", "a day without operations", format!("/v1/operations/{empty_day}")),
        case("operation", "on the oldest day", format!("/v1/operations/{oldest}/{oldest_number}")),
        case("operation", "on the newest day", format!("/v1/operations/{newest}/{newest_number}")),
        case("operation", "unknown number", format!("/v1/operations/{newest}/NOPE")),
        case("sightings_latest", "default page", "/v1/sightings/latest".into()),
        case("sightings_latest", "largest page", "/v1/sightings/latest?limit=200".into()),
        case("station_sightings", "the most sighted", format!("/v1/stations/{station}/sightings")),
        case("station_sightings", "largest page", format!("/v1/stations/{station}/sightings?limit=200")),
        case("station_sightings", "unknown", "/v1/stations/NOPE/sightings".into()),
    ])
}
