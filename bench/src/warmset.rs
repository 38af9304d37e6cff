//! The warm set, fixed against learned, side by side in one run: the same Zipf(s) workload over
//! every demo URL (operations of every demo day included) through the local edge, with writes to
//! popular and unpopular objects and warmer ticks, once with the declared `warm = true` routes only
//! (`WARM_LEARNED_MAX=0`) and once with the learned paths too. Before each arm the edge is emptied
//! and the learned paths and warm state are cleared.
//!
//! **Found warm**: of the objects the edge held when an invalidation reached them (a viewer
//! fetched them within their edge TTL before it completed), and that a viewer asked for again more
//! than 5 s after it completed, the share whose next viewer request was an edge hit.
//!
//! The API under test must learn quickly enough for a run of this length: `bench/run.sh` starts it
//! with `LEARN_FLUSH_INTERVAL=5s`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_policy::Policy;
use cache_policy::plan::{Context, covers, route_paths};
use serde_json::{Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The edge, the database and the warmer (it ticks every `tick_every`).
    #[command(flatten)]
    through: testbed::workload::Edge,
    /// How long viewers send requests, per arm.
    #[arg(long, default_value = "60s", value_parser = testbed::parse_duration)]
    duration: Duration,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.1)]
    s: f64,
    /// A write arrives this often, alternately to a popular and a uniformly chosen object.
    #[arg(long, default_value = "500ms", value_parser = testbed::parse_duration)]
    write_every: Duration,
    /// Warmer tick interval.
    #[arg(long, default_value = "2s", value_parser = testbed::parse_duration)]
    tick_every: Duration,
    /// The warmer's budget of warm requests per tick.
    #[arg(long, default_value_t = 200)]
    warm_budget: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// One viewer request: when, which URL, and whether the edge had it.
struct Viewed {
    at: Instant,
    url: usize,
    hit: bool,
}

/// One write: when it committed, and the URLs whose answers it changed.
struct Written {
    at: Instant,
    urls: Vec<usize>,
}

/// One warmer tick: when it started and ended, and its summary.
struct Tick {
    started: Instant,
    ended: Instant,
    summary: Value,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let policy = Policy::embedded().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (today, days) = testbed::workload::service_days()?;
    let mut urls = testbed::workload::urls(&days);
    fastrand::seed(11);
    fastrand::shuffle(&mut urls);
    let mut arms = serde_json::Map::new();
    for (name, learned_max) in [("fixed", 0usize), ("learned", 1000)] {
        reset(&args).await?;
        let arm = arm(&args, policy, &urls, &today.to_string(), learned_max).await?;
        arms.insert(name.to_owned(), arm);
    }
    let ratio = |field: &str| {
        let (fixed, learned) = (arms["fixed"][field].as_f64().unwrap_or(0.0), arms["learned"][field].as_f64());
        learned.map(|l| l / fixed.max(f64::MIN_POSITIVE))
    };
    let summary = json!({
        "zipf_s": args.s,
        "urls": urls.len(),
        "duration_s": args.duration.as_secs_f64(),
        "writes_per_s": 1.0 / args.write_every.as_secs_f64(),
        "warm_budget": args.warm_budget,
        "learned_vs_fixed": {
            "edge_miss_ratio": ratio("edge_miss_ratio"),
            "origin_per_viewer_request": ratio("origin_per_viewer_request"),
        },
        "arms": arms,
    });
    testbed::write_json(&args.out, &summary)
}

/// Empties the edge, drains the pending changes, and clears what was learned and warmed.
async fn reset(args: &Args) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let purge = reqwest::Method::from_bytes(b"PURGE")?;
    client.request(purge, format!("{}/*", args.through.edge)).send().await?.error_for_status()?;
    tick(args, 0).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&args.through.database_url).await?;
    sqlx::query("DELETE FROM learned_paths").execute(&mut conn).await?;
    sqlx::query("DELETE FROM warm_state").execute(&mut conn).await?;
    Ok(())
}

/// One warmer tick, keeping `learned_max` learned paths; its summary.
async fn tick(args: &Args, learned_max: usize) -> Value {
    let settings = [("WARM_BUDGET", args.warm_budget.to_string()), ("WARM_LEARNED_MAX", learned_max.to_string())];
    args.through.tick(&settings).await
}

/// The URLs (by index) whose answers a write touching `tags` changes.
fn affected(policy: &Policy, urls: &[String], tags: &[String], today: &str) -> Vec<usize> {
    let context = Context { today: Some(today.to_owned()) };
    let items: Vec<String> = tags
        .iter()
        .flat_map(|tag| policy.routes().iter().flat_map(|route| route_paths(route, tag, &context)))
        .collect();
    (0..urls.len()).filter(|&i| items.iter().any(|item| covers(item, &urls[i]))).collect()
}

/// A write to the object behind `url`, and the tags it touches (`None` for a URL with no writable
/// object of its own, such as a list).
async fn write(conn: &mut sqlx::PgConnection, url: &str, n: u32) -> Option<Vec<String>> {
    let parts: Vec<&str> = url.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "formations", id] => {
            sqlx::query("UPDATE formations SET note = $1 WHERE id = $2")
                .bind(format!("warmset {n}"))
                .bind(id)
                .execute(&mut *conn)
                .await
                .ok()?;
            Some(vec![format!("formation:{id}"), "formations".to_owned()])
        }
        ["v1", "operations", date, number] => {
            let formation: (String,) = sqlx::query_as(
                "SELECT formation_id FROM operations WHERE service_date = $1::date AND number = $2 \
                 AND formation_id IS NOT NULL",
            )
            .bind(date)
            .bind(number)
            .fetch_optional(&mut *conn)
            .await
            .ok()??;
            // Within the operation's service day (04:00 to 04:00 in Tokyo): noon there.
            sqlx::query(
                "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) \
                 VALUES ($1, $2, NULL, ($3::date + time '12:00') AT TIME ZONE 'Asia/Tokyo')",
            )
            .bind(&formation.0)
            .bind(number)
            .bind(date)
            .execute(&mut *conn)
            .await
            .ok()?;
            Some(vec![
                "sightings".to_owned(),
                "formations".to_owned(),
                format!("formation:{}", formation.0),
                format!("operations:{date}"),
                format!("operation:{date}:{number}"),
            ])
        }
        _ => None,
    }
}

async fn arm(
    args: &Args,
    policy: &'static Policy,
    urls: &[String],
    today: &str,
    learned_max: usize,
) -> anyhow::Result<Value> {
    let zipf = Arc::new(testbed::workload::Zipf::new(urls.len(), args.s));
    let urls = Arc::new(urls.to_vec());
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writes: Arc<Mutex<Vec<Written>>> = Arc::default();
    let ticks: Arc<Mutex<Vec<Tick>>> = Arc::default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let started = Instant::now();

    let writer = {
        let (running, writes, urls, zipf, database_url, every, today) = (
            running.clone(),
            writes.clone(),
            urls.clone(),
            zipf.clone(),
            args.through.database_url.clone(),
            args.write_every,
            today.to_owned(),
        );
        tokio::spawn(async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url).await.expect("database");
            let mut rng = fastrand::Rng::with_seed(99);
            let mut n = 0u32;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // Alternately an object as popular as viewers make it, and one chosen uniformly.
                let pick = if n.is_multiple_of(2) { zipf.sample(&mut rng) } else { rng.usize(..urls.len()) };
                if let Some(tags) = write(&mut conn, &urls[pick], n).await {
                    let at = Instant::now();
                    let touched = affected(policy, &urls, &tags, &today);
                    writes.lock().unwrap_or_else(|e| e.into_inner()).push(Written { at, urls: touched });
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let ticker = {
        let (running, ticks, every) = (running.clone(), ticks.clone(), args.tick_every);
        let args = args.clone();
        tokio::spawn(async move {
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let tick_started = Instant::now();
                let summary = tick(&args, learned_max).await;
                ticks.lock().unwrap_or_else(|e| e.into_inner()).push(Tick {
                    started: tick_started,
                    ended: Instant::now(),
                    summary,
                });
                tokio::time::sleep(every).await;
            }
        })
    };

    let duration = args.duration;
    let viewers = futures_util::future::join_all((0..args.concurrency).map(|c| {
        let (urls, zipf, client, edge) = (urls.clone(), zipf.clone(), client.clone(), args.through.edge.clone());
        async move {
            let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
            let mut seen = Vec::new();
            let mut errors = 0usize;
            while started.elapsed() < duration {
                let url = zipf.sample(&mut rng);
                match client.get(format!("{edge}{}", urls[url])).header("accept-encoding", "br").send().await {
                    Ok(res) => {
                        let hit = res.headers().get("x-cache").is_some_and(|v| v == "Hit");
                        if res.status().is_server_error() {
                            errors += 1;
                        }
                        let _ = res.bytes().await;
                        seen.push(Viewed { at: Instant::now(), url, hit });
                    }
                    Err(_) => errors += 1,
                }
            }
            (seen, errors)
        }
    }))
    .await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
    let _ = ticker.await;

    let errors: usize = viewers.iter().map(|(_, e)| e).sum();
    let mut viewed: Vec<Viewed> = viewers.into_iter().flat_map(|(v, _)| v).collect();
    viewed.sort_by_key(|v| v.at);
    let writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|e| e.into_inner()));
    let ticks = std::mem::take(&mut *ticks.lock().unwrap_or_else(|e| e.into_inner()));
    let edge_ttl: Vec<Duration> = urls
        .iter()
        .map(|u| policy.match_path(u.split('?').next().unwrap_or(u)).map_or(Duration::ZERO, |(r, _)| r.edge_ttl))
        .collect();
    Ok(figures(&viewed, &writes, &ticks, &edge_ttl, args.warm_budget, errors))
}

/// The arm's figures from what happened in it.
fn figures(
    viewed: &[Viewed],
    writes: &[Written],
    ticks: &[Tick],
    edge_ttl: &[Duration],
    budget: usize,
    errors: usize,
) -> Value {
    // Each URL's viewer requests, in time order.
    let mut by_url: HashMap<usize, Vec<&Viewed>> = HashMap::new();
    for v in viewed {
        by_url.entry(v.url).or_default().push(v);
    }
    // A write is invalidated by the first tick that starts after it (the tick's mark sees it) and
    // claims something; it has completed by the end of that tick's invalidation, before its end.
    let mut invalidated: Vec<(Instant, usize)> = Vec::new();
    for w in writes {
        let Some(tick) = ticks.iter().find(|t| t.started >= w.at && t.summary["changes"].as_u64().unwrap_or(0) > 0)
        else {
            continue;
        };
        invalidated.extend(w.urls.iter().map(|&u| (tick.ended, u)));
    }
    invalidated.sort_by_key(|(at, u)| (*u, *at));
    invalidated.dedup();
    let (mut held_then_asked, mut found_warm) = (0usize, 0usize);
    for (i, &(done, url)) in invalidated.iter().enumerate() {
        let Some(requests) = by_url.get(&url) else { continue };
        let held = requests.iter().any(|v| v.at <= done && done.duration_since(v.at) < edge_ttl[url]);
        // The next invalidation of the same URL ends this one's window.
        let until = invalidated.get(i + 1).filter(|(_, u)| *u == url).map(|(at, _)| *at);
        let next = requests.iter().find(|v| v.at > done + Duration::from_secs(5) && until.is_none_or(|end| v.at < end));
        if let (true, Some(next)) = (held, next) {
            held_then_asked += 1;
            found_warm += usize::from(next.hit);
        }
    }
    let misses = viewed.iter().filter(|v| !v.hit).count();
    let warm_origin: u64 = ticks.iter().map(|t| t.summary["warm_misses"].as_u64().unwrap_or(0)).sum();
    let warm_per_tick: Vec<u64> = ticks
        .iter()
        .map(|t| t.summary["warmed"].as_u64().unwrap_or(0) + t.summary["failures"].as_u64().unwrap_or(0))
        .collect();
    let most = warm_per_tick.iter().copied().max().unwrap_or(0);
    let learned: BTreeSet<u64> = ticks.iter().filter_map(|t| t.summary["learned"].as_u64()).collect();
    let total = viewed.len().max(1) as f64;
    json!({
        "viewer_requests": viewed.len(),
        "edge_misses": misses,
        "edge_miss_ratio": misses as f64 / total,
        "warm_origin_requests": warm_origin,
        "origin_per_viewer_request": (misses as f64 + warm_origin as f64) / total,
        "invalidated_then_asked": held_then_asked,
        "found_warm": found_warm,
        "found_warm_share": if held_then_asked == 0 { Value::Null } else { Value::from(found_warm as f64 / held_then_asked as f64) },
        "ticks": ticks.len(),
        "warm_requests_per_tick_max": most,
        "within_budget": most <= budget as u64,
        "learned_paths_max": learned.last().copied().unwrap_or(0),
        "learned_rewarmed": ticks.iter().map(|t| t.summary["learned_rewarmed"].as_u64().unwrap_or(0)).sum::<u64>(),
        "errors": errors,
    })
}
