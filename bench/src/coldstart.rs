//! Cold start: exec → first `200` (local server; SQLite, and PostgreSQL against `/health-check` with
//! the same configuration), peak RSS, and Lambda mode against a local Runtime API (exec → first
//! response posted).
//!
//! Beside the PostgreSQL start it times the database conversation of that first request alone,
//! from this already running process: a new connection (the server starts a backend, TLS when the
//! server offers it, SCRAM) and the same first read. No client can answer its first request sooner
//! than a started process plus that conversation, so the report can say how much of a cold start is
//! the api's own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use testbed::runtime::{LocalRuntime, function_url_event, lambda_env};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api binary (release build).
    #[arg(long)]
    api: PathBuf,
    /// Database for the runs (a seeded SQLite file URL keeps the network out of the measurement).
    #[arg(long)]
    database_url: String,
    /// A seeded PostgreSQL: exec → first 200 of a route it serves, against `/health-check` with the
    /// same configuration.
    #[arg(long)]
    postgres_url: Option<String>,
    /// The same database through a transaction pooler (PgBouncer): exec → first 200 of the same
    /// route when the server connection is already open, as with RDS Proxy.
    #[arg(long)]
    pooler_url: Option<String>,
    /// Starts per measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// One raw HTTP/1.1 GET; the status code, or `None` while nothing listens.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 16];
    stream.read_exact(&mut buf[..12]).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Starts the server on `database_url` and measures exec → first 200 on `path`; returns (ms, peak
/// RSS KiB).
fn local_start(args: &Args, database_url: &str, path: &str) -> anyhow::Result<(f64, u64)> {
    local_start_with(args, database_url, path, &[])
}

/// [`local_start`] with extra environment.
fn local_start_with(
    args: &Args,
    database_url: &str,
    path: &str,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(f64, u64)> {
    let addr = testbed::free_addr()?;
    let started = Instant::now();
    let mut child = Command::new(&args.api)
        .env_clear()
        .env("BIND_ADDR", addr.to_string())
        .env("DATABASE_URL", database_url)
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let elapsed = loop {
        if status(addr, path) == Some(200) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            anyhow::bail!("no 200 from {path} within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let rss = peak_rss_kib(child.id()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    Ok((elapsed.as_secs_f64() * 1e3, rss))
}

/// exec → first response posted, in Lambda mode against a local Runtime API.
async fn lambda_start(args: &Args) -> anyhow::Result<f64> {
    let mut runtime = LocalRuntime::start().await?;
    runtime.send(function_url_event("/health-check"));
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.api)
        .env_clear()
        .envs(lambda_env(runtime.addr, 512))
        .env("DATABASE_URL", &args.database_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let done = runtime.finished(Duration::from_secs(10)).await?;
    let _ = child.kill().await;
    Ok((done.posted - started).as_secs_f64() * 1e3)
}

/// The api's settings for `url`, as the binary would read them with only `DATABASE_URL` set.
#[derive(Debug, Parser)]
struct ApiSettings {
    #[command(flatten)]
    config: api::config::Config,
}

/// A new connection and the first read of `/v1/lines` (with the feed position, as a cold instance
/// reads it), from this process: the database's share of a cold first answer, in ms.
async fn conversation(url: &str) -> anyhow::Result<f64> {
    let config = ApiSettings::try_parse_from(["api", "--database-url", url])?.config;
    let db = store::open(Some(url), &config.sqlite_path, &config.db_options())?;
    let started = Instant::now();
    let read = db.lines(store::Position::Take).await;
    let elapsed = started.elapsed();
    db.close().await;
    let read = read?;
    anyhow::ensure!(
        !read.value.is_empty() && read.position.is_some(),
        "the first read of {url} returned no lines or no position"
    );
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// `url` with TLS turned off (`None` when it already chooses an `sslmode`).
fn without_tls(url: &str) -> Option<String> {
    (!url.contains("sslmode=")).then(|| format!("{url}{}sslmode=disable", if url.contains('?') { '&' } else { '?' }))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (mut health, mut db_route, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pg_health, mut pg_route, mut pooled_route) = (Vec::new(), Vec::new(), Vec::new());
    let (mut talk, mut talk_plain) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (ms, kib) = local_start(&args, &args.database_url, "/health-check")?;
        health.push(ms);
        rss.push(kib);
        let (ms, kib) = local_start(&args, &args.database_url, "/v1/formations")?;
        db_route.push(ms);
        rss.push(kib);
        if let Some(pg) = &args.postgres_url {
            pg_health.push(local_start(&args, pg, "/health-check")?.0);
            pg_route.push(local_start(&args, pg, "/v1/lines")?.0);
            talk.push(conversation(pg).await?);
            if let Some(plain) = without_tls(pg) {
                talk_plain.push(conversation(&plain).await?);
            }
        }
        if let Some(pooler) = &args.pooler_url {
            // PgBouncer refuses sqlx's extra startup parameter; the proxy setting leaves it out.
            pooled_route.push(local_start_with(&args, pooler, "/v1/lines", &[("DB_PROXY_COMPAT", "true")])?.0);
        }
    }
    let mut lambda = Vec::new();
    for _ in 0..args.runs {
        lambda.push(lambda_start(&args).await?);
    }
    for v in [
        &mut health,
        &mut db_route,
        &mut lambda,
        &mut pg_health,
        &mut pg_route,
        &mut pooled_route,
        &mut talk,
        &mut talk_plain,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let summary = |v: &[f64]| {
        json!({ "runs": v.len(), "p50_ms": testbed::percentile(v, 50.0), "p90_ms": testbed::percentile(v, 90.0),
                "max_ms": v.last(), "samples_ms": v })
    };
    testbed::write_json(
        &args.out,
        &json!({
            "health_check": summary(&health),
            "database_route": summary(&db_route),
            "postgres_health_check": summary(&pg_health),
            "postgres_route": summary(&pg_route),
            "pooled_route": summary(&pooled_route),
            "postgres_conversation": summary(&talk),
            "postgres_conversation_without_tls": summary(&talk_plain),
            "lambda_mode": summary(&lambda),
            "peak_rss_kib_max": rss.iter().max(),
        }),
    )
}
