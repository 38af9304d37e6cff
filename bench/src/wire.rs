//! Database round trips on the wire, and what they cost when each one takes longer than on
//! loopback (in a VPC, or behind RDS Proxy, a round trip is 0.5–2 ms).
//!
//! A proxy between the api and PostgreSQL holds every chunk the server sends for `delay` before
//! passing it on (so each round trip costs `delay` more) and counts the server's ReadyForQuery
//! messages: every round trip of the protocol ends with one. For each api binary given (edgerail,
//! and optionally a baseline build), with the in-process cache off:
//!
//! - round trips per miss and miss latency (sequential requests), without and with the delay;
//! - the round trips of a cold instance's first request (cache on): connecting and reading.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api binary (release build).
    #[arg(long)]
    api: PathBuf,
    /// Another api build to measure the same way (e.g. from before a change), labelled "baseline".
    #[arg(long)]
    baseline_api: Option<PathBuf>,
    /// PostgreSQL with the demo data (no TLS between proxy and api, so the proxy can read it).
    #[arg(long)]
    database_url: String,
    /// Route of the measurement.
    #[arg(long, default_value = "/v1/formations/10701F")]
    route: String,
    /// Sequential misses per measurement.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Added to every round trip, in ms.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// The delaying, counting proxy.
struct Proxy {
    addr: SocketAddr,
    /// ReadyForQuery messages: protocol round trips (a connection's startup is one, however many
    /// exchanges its authentication takes).
    ready: Arc<AtomicUsize>,
    /// Turns: the server answering after the client spoke. A network round trip each, the
    /// authentication exchanges included.
    turns: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr, delay: Duration) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ready, turns): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let counters = (ready.clone(), turns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut client_read, client_write) = client.into_split();
                let (server_read, mut server_write) = server.into_split();
                let spoke = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let client_spoke = spoke.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        client_spoke.store(true, Ordering::SeqCst);
                    }
                });
                tokio::spawn(Self::answers(server_read, client_write, delay, counters.clone(), spoke));
            }
        });
        Ok(Self { addr, ready, turns, accept })
    }

    /// Server → client: counted, then held for `delay` (in order) before being passed on.
    async fn answers(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: Duration,
        (counter, turns): (Arc<AtomicUsize>, Arc<AtomicUsize>),
        spoke: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due.into()).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        // Server messages: a type byte, then a length that counts itself.
        let (mut pending, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if spoke.swap(false, Ordering::SeqCst) {
                turns.fetch_add(1, Ordering::SeqCst);
            }
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 5 {
                let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
                if pending.len() < 1 + len {
                    break;
                }
                if pending[0] == b'Z' {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                pending.drain(..1 + len);
            }
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Round trips so far, once the count has stopped moving (sqlx checks a connection with a
    /// ping after the request has its answer).
    async fn round_trips(&self) -> usize {
        let mut last = self.ready.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.ready.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// An api server reading through `proxy`.
async fn serve(
    api: &Path,
    database_url: &str,
    proxy: &Proxy,
    cache: bool,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let authority = database_url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("a postgres:// URL with a host"))?;
    let url = format!("{}?sslmode=disable", database_url.replace(authority, &proxy.addr.to_string()));
    let port = testbed::free_addr()?.port();
    let mut command = tokio::process::Command::new(api);
    command
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if !cache {
        command.env("LOCAL_CACHE_MAX_BYTES", "0");
    }
    let child = command.spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/health-check")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok((child, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{} did not start", api.display())
}

async fn target(database_url: &str) -> anyhow::Result<SocketAddr> {
    let authority = database_url.split('@').nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_default();
    tokio::net::lookup_host(authority).await?.next().ok_or_else(|| anyhow::anyhow!("no address for {authority}"))
}

/// Misses of `route` through a proxy adding `delay`: latency and round trips per request.
async fn misses(args: &Args, api: &Path, delay: Duration) -> anyhow::Result<serde_json::Value> {
    let proxy = Proxy::start(target(&args.database_url).await?, delay).await?;
    let (_child, base) = serve(api, &args.database_url, &proxy, false).await?;
    let client = reqwest::Client::new();
    let url = format!("{base}{}", args.route);
    client.get(&url).send().await?.error_for_status()?;
    let before = proxy.round_trips().await;
    let mut samples = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        let started = Instant::now();
        let res = client.get(&url).send().await?.error_for_status()?;
        res.bytes().await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let trips = (proxy.round_trips().await - before) as f64 / args.requests as f64;
    samples.sort_by(f64::total_cmp);
    Ok(json!({
        "added_ms_per_round_trip": delay.as_secs_f64() * 1e3,
        "round_trips_per_miss": trips,
        "p50_ms": testbed::percentile(&samples, 50.0),
        "p90_ms": testbed::percentile(&samples, 90.0),
        "p99_ms": testbed::percentile(&samples, 99.0),
    }))
}

/// Round trips of a cold instance's first request, connecting included: protocol round trips
/// (ReadyForQuery) and network turns (authentication exchanges included; TLS, off here so the
/// protocol can be read, would add its own).
async fn cold_first_request(args: &Args, api: &Path) -> anyhow::Result<serde_json::Value> {
    let proxy = Proxy::start(target(&args.database_url).await?, Duration::ZERO).await?;
    let (_child, base) = serve(api, &args.database_url, &proxy, true).await?;
    let (ready, turns) = (proxy.round_trips().await, proxy.turns.load(Ordering::SeqCst));
    reqwest::get(format!("{base}/v1/lines")).await?.error_for_status()?;
    let ready = proxy.round_trips().await - ready;
    Ok(json!({ "protocol": ready, "network": proxy.turns.load(Ordering::SeqCst) - turns }))
}

async fn measure(args: &Args, api: &Path) -> anyhow::Result<serde_json::Value> {
    Ok(json!({
        "loopback": misses(args, api, Duration::ZERO).await?,
        "delayed": misses(args, api, Duration::from_millis(args.delay_ms)).await?,
        "cold_first_request_round_trips": cold_first_request(args, api).await?,
    }))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let edgerail = measure(&args, &args.api).await?;
    let baseline = match &args.baseline_api {
        Some(api) => Some(measure(&args, api).await?),
        None => None,
    };
    testbed::write_json(&args.out, &json!({ "route": args.route, "edgerail": edgerail, "baseline": baseline }))
}
