//! K simulated Lambda instances, each configured as the api configures itself on Lambda (one
//! lazily opened connection, proxy-safe statements, 2 s acquire timeout), each serving requests one
//! at a time, against PostgreSQL through PgBouncer or directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use api::startup;
use clap::Parser;
use futures_util::future::join_all;
use serde_json::json;
use tower::ServiceExt;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// URL the instances use (PgBouncer, or PostgreSQL itself).
    #[arg(long)]
    url: String,
    /// Direct URL for counting server connections (pg_stat_activity).
    #[arg(long)]
    admin_url: String,
    /// Instances.
    #[arg(long)]
    instances: usize,
    /// Requests per instance.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Label for the report.
    #[arg(long)]
    label: String,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut apps = Vec::with_capacity(args.instances);
    for _ in 0..args.instances {
        let cli = api::config::Cli::try_parse_from([
            "api",
            "--database-url",
            &args.url,
            "--db-max-connections",
            "1",
            "--db-proxy-compat",
            "true",
            "--db-idle-timeout",
            "30s",
            // Every request reaches the database: this measures the connection path, not the cache.
            "--local-cache-max-bytes",
            "0",
        ])?;
        cli.config.validate()?;
        let store = startup::open_store(&cli.config, None)?;
        apps.push(api::app(startup::build_state(&cli.config, store)?));
    }

    let peak = Arc::new(AtomicI64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (peak, running, admin) = (peak.clone(), running.clone(), args.admin_url.clone());
        tokio::spawn(async move {
            let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await else { return };
            while running.load(Ordering::Relaxed) {
                if let Ok((n,)) = sqlx::query_as::<_, (i64,)>(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .fetch_one(&mut conn)
                .await
                {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let started = Instant::now();
    let results = join_all(apps.into_iter().enumerate().map(|(i, app)| async move {
        let mut out = Vec::new();
        for r in 0..args.requests {
            let id = 10701 + ((i * 7 + r) % 30);
            let req =
                http::Request::get(format!("/v1/formations/{id}F")).body(axum::body::Body::empty()).unwrap_or_default();
            let t = Instant::now();
            let status = app.clone().oneshot(req).await.map(|r| r.status().as_u16()).unwrap_or(0);
            out.push((status, t.elapsed().as_secs_f64() * 1e3));
        }
        out
    }))
    .await;
    let wall = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let _ = monitor.await;

    let all: Vec<(u16, f64)> = results.into_iter().flatten().collect();
    let errors = all.iter().filter(|(s, _)| *s != 200).count();
    let unavailable = all.iter().filter(|(s, _)| *s == 503).count();
    let mut latencies: Vec<f64> = all.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    testbed::write_json(
        &args.out,
        &json!({
            "label": args.label,
            "instances": args.instances,
            "requests": all.len(),
            "errors": errors,
            "unavailable_503": unavailable,
            "p50_ms": testbed::percentile(&latencies, 50.0),
            "p99_ms": testbed::percentile(&latencies, 99.0),
            "max_ms": latencies.last(),
            "peak_server_connections": peak.load(Ordering::Relaxed),
            "wall_s": wall.as_secs_f64(),
        }),
    )
}
