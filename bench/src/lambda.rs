//! Lambda-mode cost per invocation, and memory at the smallest size: the api runs as it does on
//! Lambda, against the local Runtime API ([`testbed::runtime`]), reading PostgreSQL.
//!
//! - Handler time (event handed over → response posted), over `invocations` invocations of one
//!   route: all hits on one instance, all misses on another with the in-process cache off.
//! - A Zipf workload over every demo URL (every service day's operations) at
//!   `AWS_LAMBDA_FUNCTION_MEMORY_SIZE = memory`: peak RSS, against Lambda's limit.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use testbed::runtime::{LocalRuntime, function_url_event, lambda_env};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api binary (release build).
    #[arg(long)]
    api: PathBuf,
    /// PostgreSQL with the demo data.
    #[arg(long)]
    database_url: String,
    /// Route of the hit and miss measurements.
    #[arg(long, default_value = "/v1/formations/10701F")]
    route: String,
    /// Invocations per handler-time measurement.
    #[arg(long, default_value_t = 1_000)]
    invocations: usize,
    /// Invocations of the Zipf workload.
    #[arg(long, default_value_t = 20_000)]
    zipf_invocations: usize,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.1)]
    s: f64,
    /// Function memory size (MB) for every measurement.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// An api process in Lambda mode behind its own local Runtime API.
struct Function {
    runtime: LocalRuntime,
    child: tokio::process::Child,
}

impl Function {
    async fn start(args: &Args, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let runtime = LocalRuntime::start().await?;
        let mut command = tokio::process::Command::new(&args.api);
        command.env_clear().envs(lambda_env(runtime.addr, args.memory)).env("DATABASE_URL", &args.database_url);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        Ok(Self { runtime, child })
    }

    /// Invokes `path`; returns the handler time in ms and the `x-local-cache` outcome.
    async fn invoke(&mut self, path: &str) -> anyhow::Result<(f64, String)> {
        let done = self.runtime.invoke(function_url_event(path)).await?;
        let status = done.response["statusCode"].as_u64().unwrap_or(0);
        anyhow::ensure!(status == 200, "{path} answered {status}");
        Ok((done.handler.as_secs_f64() * 1e3, done.header("x-local-cache").unwrap_or("none").to_owned()))
    }

    /// Peak and current resident set, KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = self.child.id().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let field = |name: &str| -> u64 {
            status
                .as_deref()
                .and_then(|s| s.lines().find(|l| l.starts_with(name)))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

fn summary(mut samples: Vec<f64>, outcomes: &[String]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    let count = |o: &str| outcomes.iter().filter(|x| *x == o).count();
    json!({
        "invocations": samples.len(), "mean_ms": mean,
        "p50_ms": testbed::percentile(&samples, 50.0), "p90_ms": testbed::percentile(&samples, 90.0),
        "p99_ms": testbed::percentile(&samples, 99.0), "max_ms": samples.last(),
        "hits": count("hit"), "misses": count("miss"),
    })
}

/// `n` invocations of one route; the first (which fills the cache) is not counted.
async fn repeat(function: &mut Function, route: &str, n: usize) -> anyhow::Result<serde_json::Value> {
    function.invoke(route).await?;
    let (mut samples, mut outcomes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (ms, outcome) = function.invoke(route).await?;
        samples.push(ms);
        outcomes.push(outcome);
    }
    Ok(summary(samples, &outcomes))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cached = Function::start(&args, &[]).await?;
    let hit = repeat(&mut cached, &args.route, args.invocations).await?;
    drop(cached);
    let mut uncached = Function::start(&args, &[("LOCAL_CACHE_MAX_BYTES", "0")]).await?;
    let miss = repeat(&mut uncached, &args.route, args.invocations).await?;
    drop(uncached);

    let (_, days) = testbed::workload::service_days()?;
    let mut urls = testbed::workload::urls(&days);
    let mut rng = fastrand::Rng::with_seed(11);
    rng.shuffle(&mut urls);
    let zipf = testbed::workload::Zipf::new(urls.len(), args.s);
    let mut function = Function::start(&args, &[]).await?;
    let (mut samples, mut outcomes) = (Vec::new(), Vec::new());
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..args.zipf_invocations {
        let url = &urls[zipf.sample(&mut rng)];
        distinct.insert(url.clone());
        let (ms, outcome) = function.invoke(url).await?;
        samples.push(ms);
        outcomes.push(outcome);
    }
    // Let the cache's housekeeping (evictions past the bound) settle before the last look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (peak, now) = function.rss_kib();
    let mut workload = summary(samples, &outcomes);
    workload["urls"] = json!(urls.len());
    workload["distinct_urls_requested"] = json!(distinct.len());
    workload["zipf_s"] = json!(args.s);
    workload["peak_rss_kib"] = json!(peak);
    workload["rss_kib_at_end"] = json!(now);
    testbed::write_json(
        &args.out,
        &json!({ "memory_mb": args.memory, "route": args.route, "hit": hit, "miss": miss, "zipf": workload }),
    )
}
