//! Cold start: exec → first `200` (local server), peak RSS, and Lambda mode against a local
//! Runtime API (exec → first response posted).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api binary (release build).
    #[arg(long)]
    api: PathBuf,
    /// Database for the runs (a seeded SQLite file URL keeps the database out of the measurement).
    #[arg(long)]
    database_url: String,
    /// Starts per measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
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

/// Starts the server and measures exec → first 200 on `path`; returns (ms, peak RSS KiB).
fn local_start(args: &Args, path: &str) -> anyhow::Result<(f64, u64)> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let mut child = Command::new(&args.api)
        .env_clear()
        .env("BIND_ADDR", addr.to_string())
        .env("DATABASE_URL", &args.database_url)
        .env("RUST_LOG", "warn")
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

#[derive(Clone)]
struct Runtime {
    served: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: tokio::sync::mpsc::UnboundedSender<Instant>,
}

/// exec → first response posted, in Lambda mode against a local Runtime API.
async fn lambda_start(args: &Args) -> anyhow::Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = Runtime { served: Default::default(), done: tx };
    let app = axum::Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(|State(rt): State<Runtime>| async move {
                if rt.served.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let event = json!({
                    "version": "2.0", "routeKey": "$default", "rawPath": "/health-check", "rawQueryString": "",
                    "headers": {"host": "x.lambda-url.us-east-1.on.aws"},
                    "requestContext": {"accountId": "123456789012", "apiId": "x", "domainName": "x.lambda-url.us-east-1.on.aws",
                        "domainPrefix": "x", "http": {"method": "GET", "path": "/health-check", "protocol": "HTTP/1.1",
                        "sourceIp": "127.0.0.1", "userAgent": "bench"}, "requestId": "r", "routeKey": "$default",
                        "stage": "$default", "time": "28/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
                    "isBase64Encoded": false
                });
                (
                    [
                        ("lambda-runtime-aws-request-id", "bench-1"),
                        ("lambda-runtime-deadline-ms", "4102444800000"),
                        ("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:api"),
                    ],
                    axum::Json(event),
                )
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(|State(rt): State<Runtime>| async move {
                let _ = rt.done.send(Instant::now());
                "{}"
            }),
        )
        .route(
            "/2020-01-01/extension/register",
            post(|| async {
                (
                    [("lambda-extension-identifier", "ext")],
                    axum::Json(json!({"functionName": "api", "functionVersion": "1", "handler": "bootstrap"})),
                )
            }),
        )
        .route("/2020-01-01/extension/event/next", get(std::future::pending::<&'static str>))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.api)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "api")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("DATABASE_URL", &args.database_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let posted = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no response"))?;
    let _ = child.kill().await;
    server.abort();
    Ok((posted - started).as_secs_f64() * 1e3)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut health = Vec::new();
    let mut db_route = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..args.runs {
        let (ms, kib) = local_start(&args, "/health-check")?;
        health.push(ms);
        rss.push(kib);
        let (ms, kib) = local_start(&args, "/v1/formations")?;
        db_route.push(ms);
        rss.push(kib);
    }
    let mut lambda = Vec::new();
    for _ in 0..args.runs {
        lambda.push(lambda_start(&args).await?);
    }
    for v in [&mut health, &mut db_route, &mut lambda] {
        v.sort_by(f64::total_cmp);
    }
    let summary = |v: &[f64]| {
        json!({ "runs": v.len(), "p50_ms": crate::percentile(v, 50.0), "p90_ms": crate::percentile(v, 90.0),
                "max_ms": v.last(), "samples_ms": v })
    };
    crate::write_json(
        &args.out,
        &json!({
            "health_check": summary(&health),
            "database_route": summary(&db_route),
            "lambda_mode": summary(&lambda),
            "peak_rss_kib_max": rss.iter().max(),
        }),
    )
}
