//! Origin offload: a Zipf(s) workload over the demo data's URLs through the local edge, while
//! writes arrive at a fixed rate and the warmer ticks. Counts the end-user requests that reached the
//! origin against the minimum possible (distinct URL and data-version pairs requested), database
//! queries per origin request, and how long after a write the edge serves the new data.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The edge, the database and the warmer (it ticks every `tick_every`).
    #[command(flatten)]
    through: testbed::workload::Edge,
    /// How long end users send requests.
    #[arg(long, default_value = "30s", value_parser = testbed::parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.1)]
    s: f64,
    /// A formation is updated this often.
    #[arg(long, default_value = "500ms", value_parser = testbed::parse_duration)]
    write_every: Duration,
    /// Warmer tick interval.
    #[arg(long, default_value = "2s", value_parser = testbed::parse_duration)]
    tick_every: Duration,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (today, _) = testbed::workload::service_days()?;
    let mut urls = testbed::workload::urls(&[today]);
    fastrand::seed(7);
    fastrand::shuffle(&mut urls);
    let urls = Arc::new(urls);
    let zipf = Arc::new(testbed::workload::Zipf::new(urls.len(), args.s));
    // Data version of each URL: bumped by every write that affects it.
    let versions: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let requested: Arc<Mutex<HashSet<(String, u32)>>> = Arc::default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));

    // Writer: one formation note a tick; the formation page and the list change.
    let staleness: Arc<Mutex<Vec<f64>>> = Arc::default();
    let writer = {
        let (versions, running, staleness, client, edge, url) = (
            versions.clone(),
            running.clone(),
            staleness.clone(),
            client.clone(),
            args.through.edge.clone(),
            args.through.database_url.clone(),
        );
        let every = args.write_every;
        tokio::spawn(async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("database");
            let mut n = 0u32;
            let mut probes = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = format!("{}F", 10701 + (n % 30));
                let note = format!("bench {n}");
                let written = Instant::now();
                let _ = sqlx::query("UPDATE formations SET note = $1 WHERE id = $2")
                    .bind(&note)
                    .bind(&id)
                    .execute(&mut conn)
                    .await;
                {
                    let mut v = versions.lock().unwrap_or_else(|e| e.into_inner());
                    *v.entry(format!("/v1/formations/{id}")).or_default() += 1;
                    *v.entry("/v1/formations".to_owned()).or_default() += 1;
                }
                // Probe one write in four until the edge serves it (probes are not counted as users).
                if n.is_multiple_of(4) {
                    let (client, edge, staleness, running) =
                        (client.clone(), edge.clone(), staleness.clone(), running.clone());
                    probes.push(tokio::spawn(async move {
                        while running.load(std::sync::atomic::Ordering::Relaxed)
                            && written.elapsed() < Duration::from_secs(60)
                        {
                            let body = match client.get(format!("{edge}/v1/formations/{id}")).send().await {
                                Ok(res) => res.json::<serde_json::Value>().await.ok(),
                                Err(_) => None,
                            };
                            if body.is_some_and(|b| b["note"] == note.as_str()) {
                                staleness
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(written.elapsed().as_secs_f64() * 1e3);
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }));
                }
                tokio::time::sleep(every).await;
            }
            for p in probes {
                let _ = p.await;
            }
        })
    };

    // Warmer ticks.
    let ticker = {
        let (running, through) = (running.clone(), args.through.clone());
        let every = args.tick_every;
        tokio::spawn(async move {
            let (mut ticks, mut warm_origin) = (0u64, 0u64);
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                // Warm requests that the edge passed to the origin are origin load too.
                warm_origin += through.tick(&[]).await["warm_misses"].as_u64().unwrap_or(0);
                ticks += 1;
                tokio::time::sleep(every).await;
            }
            (ticks, warm_origin)
        })
    };

    let started = Instant::now();
    let duration = args.duration;
    let results = futures_util::future::join_all((0..args.concurrency).map(|c| {
        let (urls, zipf, versions, requested, client, edge) = (
            urls.clone(),
            zipf.clone(),
            versions.clone(),
            requested.clone(),
            client.clone(),
            args.through.edge.clone(),
        );
        async move {
            let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
            let (mut origin, mut db, mut errors, mut sent) = (0usize, 0usize, 0usize, 0usize);
            while started.elapsed() < duration {
                sent += 1;
                let url = &urls[zipf.sample(&mut rng)];
                let version = versions.lock().map(|v| v.get(url).copied().unwrap_or(0)).unwrap_or(0);
                requested.lock().map(|mut r| r.insert((url.clone(), version))).ok();
                match client.get(format!("{edge}{url}")).header("accept-encoding", "br").send().await {
                    Ok(res) => {
                        if res.headers().get("x-cache").is_some_and(|v| v == "Miss") {
                            origin += 1;
                            if res.headers().get("x-local-cache").is_some_and(|v| v == "miss") {
                                db += 1;
                            }
                        }
                        if !res.status().is_success() {
                            errors += 1;
                        }
                        let _ = res.bytes().await;
                    }
                    Err(_) => errors += 1,
                }
            }
            (origin, db, errors, sent)
        }
    }))
    .await;
    let wall = started.elapsed();
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
    let (ticks, warm_origin) = ticker.await.unwrap_or((0, 0));

    let (origin, db, errors, total) =
        results.iter().fold((0, 0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3));
    let minimum = requested.lock().map(|r| r.len()).unwrap_or(0);
    let mut stale: Vec<f64> = staleness.lock().map(|s| s.clone()).unwrap_or_default();
    stale.sort_by(f64::total_cmp);
    testbed::write_json(
        &args.out,
        &json!({
            "requests": total,
            "urls": urls.len(),
            "zipf_s": args.s,
            "origin_requests": origin,
            "origin_share": origin as f64 / total as f64,
            "minimum_origin_requests": minimum,
            "origin_vs_minimum": origin as f64 / minimum.max(1) as f64,
            "db_queries_per_origin_request": db as f64 / origin.max(1) as f64,
            "errors": errors,
            "writes_per_s": 1.0 / args.write_every.as_secs_f64(),
            "warmer_ticks": ticks,
            "warm_origin_requests": warm_origin,
            "staleness_ms": { "p50": testbed::percentile(&stale, 50.0), "p99": testbed::percentile(&stale, 99.0), "samples": stale },
            "wall_s": wall.as_secs_f64(),
        }),
    )
}
