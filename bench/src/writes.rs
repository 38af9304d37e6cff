//! What edgerail's triggers cost the writers, on production-sized data: each write measured with
//! the triggers and without them (`ALTER TABLE … DISABLE TRIGGER USER`, which leaves the foreign
//! keys' own triggers on), in alternating rounds of one run, so the ratio compares like with like.
//! Every write is a client's: one statement sent from here, committed with `synchronous_commit`
//! on, the round trip included.
//!
//! - a single-row sighting insert, each in its own transaction;
//! - an update of a hot formation's row, each in its own transaction;
//!
//!   both also as their floor: without the triggers, the statement itself writing the outbox rows
//!   they would record (six for a sighting, two for a formation), which any trigger that records
//!   them costs at least;
//! - a bulk insert of `bulk_rows` sightings in one statement;
//! - an import: `TRUNCATE sightings` and a reload of `reload_rows` in one transaction, which holds
//!   the table's `ACCESS EXCLUSIVE` lock from the `TRUNCATE` until it ends: every reader waits that
//!   long. Measured up to the end of the reload and then rolled back, so the table keeps its
//!   volume for the next round (a `COMMIT` adds one WAL flush, a few milliseconds).
//!
//! Rows written are deleted again with the triggers off, and the outbox rows the measured writes
//! recorded are deleted too, so the database ends as it began (apart from dead tuples).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// PostgreSQL with the demo data at the volume to measure (`api seed --demo --scale 100`),
    /// as a role that owns the tables; nothing else may write to it meanwhile.
    #[arg(long)]
    database_url: String,
    /// Single-row writes per round and mode.
    #[arg(long, default_value_t = 100)]
    single: usize,
    /// Rows of the bulk insert.
    #[arg(long, default_value_t = 100_000)]
    bulk_rows: i64,
    /// Rows reloaded after the `TRUNCATE`.
    #[arg(long, default_value_t = 1_000_000)]
    reload_rows: i64,
    /// Rounds of the single-row writes (each mode once a round).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Rounds of the bulk insert (each mode once a round).
    #[arg(long, default_value_t = 3)]
    bulk_rounds: usize,
    /// Rounds of the import (each mode once a round).
    #[arg(long, default_value_t = 1)]
    import_rounds: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// With edgerail's triggers, without them, or without them but with the outbox rows the triggers
/// would record written by the statement itself: the floor of any trigger that records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Triggers,
    Bare,
    Floor,
}

impl Mode {
    /// Triggers and bare, the order alternating by round, so neither always runs on a warmer cache.
    fn order(round: usize) -> [Self; 2] {
        if round.is_multiple_of(2) { [Self::Triggers, Self::Bare] } else { [Self::Bare, Self::Triggers] }
    }

    /// All three, the order rotating by round.
    fn rotation(round: usize) -> [Self; 3] {
        let all = [Self::Triggers, Self::Bare, Self::Floor];
        [all[round % 3], all[(round + 1) % 3], all[(round + 2) % 3]]
    }
}

/// A single-row sighting insert, and the same with its six outbox rows in the same statement.
const INSERT_ONE: &str = "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
    VALUES ('10701F', 'S' || $1::int, 'M01', now())";
const INSERT_ONE_FLOOR: &str = "WITH s AS (INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
        VALUES ('10701F', 'S' || $1::int, 'M01', now()) RETURNING formation_id, operation_number, station_id) \
    INSERT INTO cache_changes (tag) SELECT t FROM s, LATERAL (VALUES ('sightings'), ('formations'), \
        ('formation:' || s.formation_id), ('operations:' || $2), ('operation:' || $2 || ':' || s.operation_number), \
        ('station:' || s.station_id)) v (t)";
/// An update of a hot formation, and the same with its two outbox rows.
const UPDATE_ONE: &str = "UPDATE formations SET note = $1 WHERE id = '10701F'";
const UPDATE_ONE_FLOOR: &str = "WITH f AS (UPDATE formations SET note = $1 WHERE id = '10701F' RETURNING id) \
    INSERT INTO cache_changes (tag) SELECT t FROM f, LATERAL (VALUES ('formations'), ('formation:' || f.id)) v (t)";

/// The bulk and reload rows: the demo's formations and stations, operation numbers, and times
/// spread over the last days, so each row touches every tag a sighting can (its service day
/// looked up as for any write).
const GENERATE: &str = "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
    SELECT f.ids[1 + g % array_length(f.ids, 1)], 'B' || (g % 500), s.ids[1 + g % array_length(s.ids, 1)], \
           now() - interval '1 day' - g * interval '200 milliseconds' \
    FROM generate_series(1, $1::bigint) g, \
         (SELECT array_agg(id ORDER BY id) ids FROM formations) f, (SELECT array_agg(id ORDER BY id) ids FROM stations) s";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let measured = measure(&args).await;
    // Whatever failed, the triggers are on again (from a connection of its own, in case the
    // measuring one is what failed): a database left without them records no change.
    let mut conn = PgConnection::connect(&args.database_url).await?;
    set_triggers(&mut conn, Mode::Triggers).await?;
    measured
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&args.database_url).await?;
    sqlx::query("SET synchronous_commit = on").execute(&mut conn).await?;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM sightings").fetch_one(&mut conn).await?;
    let (first_sighting,): (i64,) =
        sqlx::query_as("SELECT coalesce(max(id), 0) FROM sightings").fetch_one(&mut conn).await?;
    let (first_change,): (i64,) =
        sqlx::query_as("SELECT coalesce(max(id), 0) FROM cache_changes").fetch_one(&mut conn).await?;
    let (note,): (Option<String>,) =
        sqlx::query_as("SELECT note FROM formations WHERE id = '10701F'").fetch_one(&mut conn).await?;
    eprintln!("writes at scale: {rows} sightings");

    let (today,): (String,) = sqlx::query_as("SELECT to_char(now(), 'YYYY-MM-DD')").fetch_one(&mut conn).await?;
    let mut single = Samples::default();
    let mut update = Samples::default();
    for round in 0..args.rounds {
        for mode in Mode::rotation(round) {
            set_triggers(&mut conn, mode).await?;
            for i in 0..args.single {
                let number = i32::try_from(i % 100)?;
                let started = Instant::now();
                if mode == Mode::Floor {
                    sqlx::query(INSERT_ONE_FLOOR).bind(number).bind(&today).execute(&mut conn).await?;
                } else {
                    sqlx::query(INSERT_ONE).bind(number).execute(&mut conn).await?;
                }
                single.push(mode, started);
                let started = Instant::now();
                let query = if mode == Mode::Floor { UPDATE_ONE_FLOOR } else { UPDATE_ONE };
                sqlx::query(query).bind(format!("bench {round} {i}")).execute(&mut conn).await?;
                update.push(mode, started);
            }
        }
        set_triggers(&mut conn, Mode::Triggers).await?;
        clean(&mut conn, first_sighting, first_change, note.as_deref()).await?;
    }
    let mut bulk = Samples::default();
    for round in 0..args.bulk_rounds {
        for mode in Mode::order(round) {
            set_triggers(&mut conn, mode).await?;
            let started = Instant::now();
            sqlx::query(GENERATE).bind(args.bulk_rows).execute(&mut conn).await?;
            bulk.push(mode, started);
            eprintln!("  bulk {round} {mode:?}: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
            set_triggers(&mut conn, Mode::Triggers).await?;
            clean(&mut conn, first_sighting, first_change, note.as_deref()).await?;
        }
    }

    let mut import = Vec::new();
    for round in 0..args.import_rounds {
        for mode in Mode::order(round) {
            let mut tx = conn.begin().await?;
            if mode == Mode::Bare {
                sqlx::query("ALTER TABLE sightings DISABLE TRIGGER USER").execute(&mut *tx).await?;
            }
            let started = Instant::now();
            sqlx::query("TRUNCATE sightings").execute(&mut *tx).await?;
            let truncated = started.elapsed();
            sqlx::query(GENERATE).bind(args.reload_rows).execute(&mut *tx).await?;
            let held = started.elapsed();
            let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM cache_changes WHERE id > $1")
                .bind(first_change)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            eprintln!("  import {round} {mode:?}: lock held {:.2} s", held.as_secs_f64());
            import.push(json!({
                "mode": label(mode),
                "truncate_ms": truncated.as_secs_f64() * 1e3,
                "lock_held_s": held.as_secs_f64(),
                "changes_recorded": recorded,
            }));
        }
    }

    let lock = |mode: Mode| -> Vec<f64> {
        import.iter().filter(|i| i["mode"] == label(mode)).filter_map(|i| i["lock_held_s"].as_f64()).collect()
    };
    let result = json!({
        "sightings": rows,
        "single_insert": single.summary(),
        "hot_update": update.summary(),
        "bulk_insert": json!({ "rows": args.bulk_rows, "ms": bulk.summary() }),
        "import": {
            "reload_rows": args.reload_rows,
            "runs": import,
            "added_lock_s": median(&lock(Mode::Triggers)) - median(&lock(Mode::Bare)),
        },
    });
    testbed::write_json(&args.out, &result)
}

fn label(mode: Mode) -> &'static str {
    match mode {
        Mode::Triggers => "triggers",
        Mode::Bare => "bare",
        Mode::Floor => "floor",
    }
}

/// Turns edgerail's triggers (every user trigger: the foreign keys' are system triggers) on or
/// off for the tables written.
async fn set_triggers(conn: &mut PgConnection, mode: Mode) -> anyhow::Result<()> {
    let verb = if mode == Mode::Triggers { "ENABLE" } else { "DISABLE" };
    for table in ["sightings", "formations"] {
        sqlx::query(&format!("ALTER TABLE {table} {verb} TRIGGER USER")).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes what the measured writes added, recording nothing, and puts the formation's note back.
async fn clean(conn: &mut PgConnection, sightings: i64, changes: i64, note: Option<&str>) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("ALTER TABLE sightings DISABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("ALTER TABLE formations DISABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM sightings WHERE id > $1").bind(sightings).execute(&mut *tx).await?;
    sqlx::query("UPDATE formations SET note = $1 WHERE id = '10701F'").bind(note).execute(&mut *tx).await?;
    sqlx::query("ALTER TABLE sightings ENABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("ALTER TABLE formations ENABLE TRIGGER USER").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM cache_changes WHERE id > $1").bind(changes).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Milliseconds per write, by mode.
#[derive(Debug, Default)]
struct Samples {
    triggers: Vec<f64>,
    bare: Vec<f64>,
    floor: Vec<f64>,
}

impl Samples {
    fn push(&mut self, mode: Mode, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match mode {
            Mode::Triggers => self.triggers.push(ms),
            Mode::Bare => self.bare.push(ms),
            Mode::Floor => self.floor.push(ms),
        }
    }

    fn summary(&self) -> Value {
        let (with, without, floor) = (median(&self.triggers), median(&self.bare), median(&self.floor));
        let mut summary = json!({
            "triggers_p50": with,
            "bare_p50": without,
            "triggers_p90": percentile(&self.triggers, 90.0),
            "bare_p90": percentile(&self.bare, 90.0),
            "ratio": with / without,
            "samples": self.triggers.len(),
        });
        if !self.floor.is_empty() {
            summary["floor_p50"] = json!(floor);
            summary["floor_ratio"] = json!(floor / without);
            summary["over_floor"] = json!(with / floor);
        }
        summary
    }
}

/// The `p`-th percentile of unsorted samples, as every bench figure takes it.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    testbed::percentile(&sorted, p)
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}
