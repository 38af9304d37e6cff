//! A busy site's write rate against the tables edgerail keeps for itself, on production-sized
//! data: sightings inserted at a steady rate (each a client's own transaction) while viewers read
//! through the local edge, the api behind it follows the change feed, and the warmer ticks on the
//! template's schedule. Every few seconds it samples:
//!
//! - the size of `cache_changes` (its indexes apart), `learned_paths`, `warm_state` and
//!   `cache_invalidations`: rows and bytes, so it shows whether each levels off within its
//!   retention instead of growing with history;
//! - from `pg_stat_statements`, the cost of the statements that read and bound the outbox: the
//!   instances' feed poll (rows read and buffers touched per poll, against the changes recorded
//!   meanwhile: a poll must read only what is new), the warmer's claim (claiming, reading the
//!   claim, marking it processed) and its prune;
//!
//! and keeps every tick's summary (what it claimed, what it left pending and how old).
//!
//! The run shortens `WARMER_RETENTION` to minutes so that the levelling shows in a ten-minute run;
//! the defaults' storage follows from the same rows per second (docs/operating.md).
//!
//! The sightings it wrote are deleted with the triggers off, and the outbox rows recorded since it
//! began with them, so the database keeps its volume for the next run. It needs the
//! `pg_stat_statements` extension in the database (bench/run.sh loads and creates it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The edge (an api on the database behind it), the database and the warmer.
    #[command(flatten)]
    through: testbed::workload::Edge,
    /// Sightings inserted per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long the writes go on.
    #[arg(long, default_value = "600s", value_parser = testbed::parse_duration)]
    duration: Duration,
    /// Warmer invocations are this far apart (the template's schedule: a minute).
    #[arg(long, default_value = "60s", value_parser = testbed::parse_duration)]
    tick_every: Duration,
    /// `WARMER_RETENTION` for the run: minutes, so that the levelling shows.
    #[arg(long, default_value = "2m", value_parser = testbed::parse_duration)]
    retention: Duration,
    /// `WARM_LEARNED_MAX` for the run: below the workload's distinct URLs, so that the bound is
    /// what holds `learned_paths`, not the workload.
    #[arg(long, default_value_t = 100)]
    learned_max: usize,
    /// The tables and statistics are sampled this often.
    #[arg(long, default_value = "10s", value_parser = testbed::parse_duration)]
    sample_every: Duration,
    /// Viewers reading through the edge, each a request every 50 ms.
    #[arg(long, default_value_t = 8)]
    viewers: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// The tables edgerail keeps for itself.
const TABLES: [&str; 4] = ["cache_changes", "learned_paths", "warm_state", "cache_invalidations"];

/// The statements whose cost is followed, by the start of their text as `pg_stat_statements`
/// keeps it (store/src/feed.rs and store/src/sql.rs write them).
const STATEMENTS: [(&str, &[&str]); 5] = [
    ("poll", &["SELECT cur.s::text", "SELECT id, tag FROM cache_changes WHERE id >"]),
    ("claim", &["UPDATE cache_changes SET claim = $"]),
    ("read claim", &["SELECT tag, count(*) AS changes"]),
    ("mark processed", &["UPDATE cache_changes SET processed_at"]),
    ("prune", &["DELETE FROM cache_changes WHERE id IN"]),
];

/// One statement kind's cumulative counters.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    calls: i64,
    rows: i64,
    ms: f64,
    blocks: i64,
}

impl Counters {
    fn minus(self, before: Self) -> Self {
        Self {
            calls: self.calls - before.calls,
            rows: self.rows - before.rows,
            ms: self.ms - before.ms,
            blocks: self.blocks - before.blocks,
        }
    }

    fn per_call(self) -> Value {
        let calls = self.calls.max(1) as f64;
        json!({
            "calls": self.calls,
            "rows_per_call": self.rows as f64 / calls,
            "ms_per_call": self.ms / calls,
            "blocks_per_call": self.blocks as f64 / calls,
        })
    }
}

/// What one sample saw: the elapsed time, each table's rows and bytes, the statements' counters
/// and the last change id.
struct Sample {
    at: f64,
    tables: BTreeMap<&'static str, (i64, i64, i64)>,
    statements: BTreeMap<&'static str, Counters>,
    last_change: i64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&args.through.database_url).await?;
    let (has_statistics,): (bool,) =
        sqlx::query_as("SELECT to_regclass('pg_stat_statements') IS NOT NULL").fetch_one(&mut conn).await?;
    anyhow::ensure!(
        has_statistics,
        "the database has no pg_stat_statements (shared_preload_libraries, then CREATE EXTENSION): bench/run.sh sets it up"
    );
    let (first_sighting,): (i64,) =
        sqlx::query_as("SELECT COALESCE(max(id), 0) FROM sightings").fetch_one(&mut conn).await?;
    let (sightings,): (i64,) = sqlx::query_as("SELECT count(*) FROM sightings").fetch_one(&mut conn).await?;
    let formations: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM formations ORDER BY id").fetch_all(&mut conn).await?;
    let stations: Vec<(String,)> = sqlx::query_as("SELECT id FROM stations ORDER BY id").fetch_all(&mut conn).await?;
    let numbers: Vec<(String,)> =
        sqlx::query_as("SELECT number FROM operations WHERE service_date = current_date ORDER BY number")
            .fetch_all(&mut conn)
            .await?;
    anyhow::ensure!(!formations.is_empty() && !stations.is_empty(), "the database has no demo data");
    let first = sample(&mut conn, 0.0).await?;

    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();

    // The writer: one sighting per period, each its own transaction, on one connection.
    let writer = {
        let (running, url) = (running.clone(), args.through.database_url.clone());
        let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let mut rng = fastrand::Rng::with_seed(11);
            let mut every = tokio::time::interval(period);
            let (mut written, mut failed, mut ms) = (0u64, 0u64, Vec::new());
            while running.load(Ordering::Relaxed) {
                every.tick().await;
                let number = numbers.get(rng.usize(..numbers.len().max(1))).map_or("B1", |n| n.0.as_str());
                let at = Instant::now();
                let result = sqlx::query(
                    "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) VALUES ($1, $2, $3, now())",
                )
                .bind(&formations[rng.usize(..formations.len())].0)
                .bind(number)
                .bind(&stations[rng.usize(..stations.len())].0)
                .execute(&mut conn)
                .await;
                match result {
                    Ok(_) => {
                        written += 1;
                        ms.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    Err(_) => failed += 1,
                }
            }
            ms.sort_by(f64::total_cmp);
            anyhow::Ok((written, failed, ms, started.elapsed().as_secs_f64()))
        })
    };

    // Viewers through the edge: what makes the api poll the feed and learn paths, and the edge
    // fetch what the warmer records.
    let requests = Arc::new(AtomicU64::new(0));
    let (today, _) = testbed::workload::service_days()?;
    let urls = Arc::new(testbed::workload::urls(&[today]));
    let zipf = Arc::new(testbed::workload::Zipf::new(urls.len(), 1.1));
    let client = reqwest::Client::new();
    let viewers: Vec<_> = (0..args.viewers)
        .map(|v| {
            let (running, requests, urls, zipf, client, edge) = (
                running.clone(),
                requests.clone(),
                urls.clone(),
                zipf.clone(),
                client.clone(),
                args.through.edge.clone(),
            );
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(v as u64 + 1);
                while running.load(Ordering::Relaxed) {
                    let url = &urls[zipf.sample(&mut rng)];
                    if let Ok(response) = client.get(format!("{edge}{url}")).send().await {
                        let _ = response.bytes().await;
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();

    // The warmer, invoked on schedule (one at a time: a tick takes seconds, the period a minute).
    let ticker = {
        let settings = [
            ("WARMER_RETENTION", format!("{}s", args.retention.as_secs())),
            ("WARMER_SETTLE", "3s".to_owned()),
            ("WARM_LEARNED_MAX", args.learned_max.to_string()),
        ];
        let (running, through) = (running.clone(), args.through.clone());
        let every = args.tick_every;
        tokio::spawn(async move {
            let mut ticks = Vec::new();
            let mut schedule = tokio::time::interval(every);
            loop {
                schedule.tick().await;
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                let at = started.elapsed().as_secs_f64();
                let settings: Vec<(&str, String)> = settings.iter().map(|(k, v)| (*k, v.clone())).collect();
                let summary = through.tick(&settings).await;
                ticks.push(json!({
                    "at_s": at,
                    // A warmer that printed no summary failed before its tick could report.
                    "summary": summary.is_object(),
                    "changes": summary["changes"],
                    "pending": summary["pending"],
                    "oldest_pending_age_s": summary["oldest_pending_age_s"],
                    "pruned": summary["pruned"],
                    "duration_ms": summary["duration_ms"],
                    "error": summary["error"],
                }));
            }
            ticks
        })
    };

    let first_change = first.last_change;
    let mut samples = vec![first];
    let mut sampled = Ok(());
    while started.elapsed() < args.duration {
        tokio::time::sleep(args.sample_every.min(args.duration.saturating_sub(started.elapsed()))).await;
        match sample(&mut conn, started.elapsed().as_secs_f64()).await {
            Ok(s) => samples.push(s),
            Err(err) => {
                sampled = Err(err);
                break;
            }
        }
    }
    running.store(false, Ordering::Relaxed);
    let wrote = writer.await;
    for viewer in viewers {
        let _ = viewer.await;
    }
    let ticks = ticker.await;

    // Leave the volume as it was, whatever failed above: the sightings written, then every outbox
    // row recorded since (a database with more sightings would be reseeded by bench/run.sh).
    let mut tx = conn.begin().await?;
    sqlx::query("ALTER TABLE sightings DISABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM sightings WHERE id > $1").bind(first_sighting).execute(&mut *tx).await?;
    sqlx::query("ALTER TABLE sightings ENABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM cache_changes WHERE id > $1").bind(first_change).execute(&mut *tx).await?;
    tx.commit().await?;
    sampled?;
    let (written, failed, write_ms, writing) = wrote??;
    let ticks = ticks?;

    let half = samples.iter().position(|s| s.at >= writing / 2.0).unwrap_or(samples.len() - 1);
    let last = samples.len() - 1;
    let halves = [(0, half), (half, last)].map(|(a, b)| {
        let (from, to) = (&samples[a], &samples[b]);
        let changes = to.last_change - from.last_change;
        let statements: serde_json::Map<String, Value> = STATEMENTS
            .iter()
            .map(|(kind, _)| {
                let delta = to.statements[kind].minus(from.statements[kind]);
                ((*kind).to_owned(), delta.per_call())
            })
            .collect();
        let polls = to.statements["poll"].minus(from.statements["poll"]).calls;
        json!({
            "from_s": from.at,
            "to_s": to.at,
            "changes_recorded": changes,
            "changes_per_poll": changes as f64 / polls.max(1) as f64,
            "statements": statements,
        })
    });
    let tables: serde_json::Map<String, Value> = TABLES
        .iter()
        .map(|table| {
            let series: Vec<Value> = samples
                .iter()
                .map(|s| {
                    let (rows, bytes, index_bytes) = s.tables[table];
                    json!([s.at, rows, bytes, index_bytes])
                })
                .collect();
            // The largest size in a window as long as one retention and one tick (what the
            // table holds swings with the ticks' prunes), ending at the middle and at the end.
            let window = args.retention.as_secs_f64() + args.tick_every.as_secs_f64();
            let largest = |end: f64, of: &dyn Fn(&Sample) -> i64| {
                samples.iter().filter(|s| s.at <= end && s.at >= end - window).map(of).max().unwrap_or(0)
            };
            let bytes = |s: &Sample| {
                let (_, bytes, index_bytes) = s.tables[table];
                bytes + index_bytes
            };
            let rows = |s: &Sample| s.tables[table].0;
            let (middle, end) = (samples[half].at, samples[last].at);
            let (bytes_middle, bytes_end) = (largest(middle, &bytes), largest(end, &bytes));
            (
                (*table).to_owned(),
                json!({
                    "series": series,
                    "window_s": window,
                    "bytes_middle": bytes_middle,
                    "bytes_end": bytes_end,
                    "growth": bytes_end as f64 / bytes_middle.max(1) as f64 - 1.0,
                    "rows_middle": largest(middle, &rows),
                    "rows_end": largest(end, &rows),
                }),
            )
        })
        .collect();
    testbed::write_json(
        &args.out,
        &json!({
            "sightings": sightings,
            "rate": args.rate,
            "duration_s": writing,
            "written": written,
            "write_failures": failed,
            "writes_per_s": written as f64 / writing,
            "write_ms": { "p50": testbed::percentile(&write_ms, 50.0), "p99": testbed::percentile(&write_ms, 99.0) },
            "viewer_requests": requests.load(Ordering::Relaxed),
            "tick_every_s": args.tick_every.as_secs_f64(),
            "retention_s": args.retention.as_secs(),
            "learned_max": args.learned_max,
            "settle_s": 3,
            "ticks": ticks,
            "tables": tables,
            "halves": halves,
        }),
    )
}

/// Each table's rows and bytes, the statements' counters and the last change id, now.
async fn sample(conn: &mut PgConnection, at: f64) -> anyhow::Result<Sample> {
    let mut tables = BTreeMap::new();
    for table in TABLES {
        let (rows, bytes, index_bytes): (i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {table}), pg_table_size('{table}'), pg_indexes_size('{table}')"
        ))
        .fetch_one(&mut *conn)
        .await?;
        tables.insert(table, (rows, bytes, index_bytes));
    }
    let rows: Vec<(String, i64, i64, f64, i64)> = sqlx::query_as(
        "SELECT query, calls, rows, total_exec_time, shared_blks_hit + shared_blks_read FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut statements: BTreeMap<&'static str, Counters> =
        STATEMENTS.iter().map(|(k, _)| (*k, Counters::default())).collect();
    for (query, calls, rows, ms, blocks) in rows {
        let query = query.trim_start();
        if let Some((kind, _)) = STATEMENTS.iter().find(|(_, starts)| starts.iter().any(|s| query.starts_with(s))) {
            let c = statements.entry(kind).or_default();
            c.calls += calls;
            c.rows += rows;
            c.ms += ms;
            c.blocks += blocks;
        }
    }
    // The id sequence, not the table's largest id: the prune may have emptied the table.
    let (last_change,): (i64,) =
        sqlx::query_as("SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('cache_changes', 'id')), 0)")
            .fetch_one(&mut *conn)
            .await?;
    Ok(Sample { at, tables, statements, last_change })
}
