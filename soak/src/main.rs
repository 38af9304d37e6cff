//! `soak`: edgerail run as production runs it, with faults on a seeded schedule, and every read
//! checked against what the database committed.
//!
//! - A Lambda-shaped fleet of `api` instances (`fleet`) behind a Function-URL-like front, Varnish
//!   with `local/varnish.vcl` in front of that, the warmer invoked as EventBridge invokes the
//!   function (`scheduler`: every period, killed at its timeout, sometimes twice at once) with the
//!   purge backend or the CloudFront one (against the stand-in for its API in `net`), and PostgreSQL reached directly, through PgBouncer (transaction pooling),
//!   through a proxy, and with credentials from a secret (moto) that rotates (`rotation`), to the
//!   server or through PgBouncer.
//! - Writers (`writers`) as other systems write: short updates, transactions held open, bulk
//!   imports, deletes, `TRUNCATE` and reload. Each records when its COMMIT returned.
//! - Viewers read through the edge and straight from the front; the checker (`checker`) judges
//!   every read from its body and headers alone.
//! - Faults (`faults`) one at a time; the report says which reads they excused.
//!
//! Exits 1 when any read broke a bound or an answer broke a rule (see `Failure`), so a short run
//! with a fixed seed is a test (`scripts/soak.sh`, from `./scripts/test.sh`), and 3 when its own
//! harness failed (a fault it could not provoke or end), which is no verdict on the product. The
//! local Runtime API, the edge and the workload come from the `testbed` crate the benchmarks share.

mod checker;
mod faults;
mod fleet;
mod net;
mod readback;
mod rotation;
mod scheduler;
mod writers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sqlx::Connection;

use checker::{History, Judgement, Layer, Rules};
use faults::Kind;

/// A setup broken on purpose, to show that the checker catches staleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Broken {
    /// The warmer invalidates nothing (`INVALIDATOR=none`): the edge keeps what it has.
    NoInvalidation,
    /// Instances run with `CHANGE_MAX_LAG` ten times the one they are judged by, and the feed is
    /// locked now and then: they serve what they hold for too long.
    Lag,
}

/// `soak`'s command line.
#[derive(Debug, clap::Parser)]
#[command(name = "soak", about = "edgerail under seeded faults, every read checked (scripts/soak.sh)")]
pub struct Args {
    /// The api binary (run in Lambda mode).
    #[arg(long)]
    api: PathBuf,
    /// The warmer binary.
    #[arg(long)]
    warmer: PathBuf,
    /// varnishd.
    #[arg(long, default_value = "varnishd")]
    varnishd: PathBuf,
    /// The VCL (its backend is pointed at the front).
    #[arg(long, default_value = "local/varnish.vcl")]
    vcl: PathBuf,
    /// PostgreSQL server, as a role that may create databases (`postgres://role:pw@host:port`).
    #[arg(long)]
    postgres: String,
    /// PgBouncer (transaction pooling) in front of that server. It must find the rotated roles'
    /// passwords itself (`auth_query`) and cap its server connections with `max_db_connections`
    /// (`--pooler-cap`; its per-user pools would otherwise add up): `scripts/soak.sh` sets it up so.
    #[arg(long)]
    pgbouncer: String,
    /// Local Secrets Manager (moto): some instances, and the warmer, read their database URL from a
    /// secret there, and the rotation fault rotates it.
    #[arg(long)]
    moto: String,
    /// Demo data scale the soak database is seeded with (1 = 100,000 sightings); the bulk writer
    /// restores the volume each `TRUNCATE` removes.
    #[arg(long, default_value_t = 0.3)]
    scale: f64,
    /// The warmer function's timeout: an invocation still running then is SIGKILLed. Its lease
    /// (WARMER_LEASE) is as long, as the template sets it.
    #[arg(long, default_value = "6s", value_parser = testbed::parse_duration)]
    invocation_timeout: Duration,
    /// Share of the schedule's periods that start two warmer invocations at once.
    #[arg(long, default_value_t = 0.15)]
    overlap: f64,
    /// The warmer function's reserved concurrency, as the template sets it: most invocations at
    /// once (more are throttled); with two connections each, the warmer's connection cap.
    #[arg(long, default_value_t = 2)]
    warmer_concurrency: usize,
    /// Without a shield, the share of the warmer's invocations on the `cloudfront` backend,
    /// against the harness's stand-in for CloudFront's API (the others purge through the purge
    /// gate). With one, every invocation uses it.
    #[arg(long, default_value_t = 0.5)]
    cloudfront_share: f64,
    /// PgBouncer's `max_db_connections`: the instances' server connections through it never
    /// exceed it, whatever the number of users (a rotation between two users included).
    #[arg(long, default_value_t = 13)]
    pooler_cap: i64,
    /// Shell command that restarts the PostgreSQL server (fast shutdown).
    #[arg(long)]
    restart_postgres: String,
    /// Shell command that kills and starts PgBouncer again.
    #[arg(long)]
    restart_pgbouncer: String,
    /// How long viewers read.
    #[arg(long, default_value = "90s", value_parser = testbed::parse_duration)]
    duration: Duration,
    /// Seeds the fault schedule, the viewers and the writers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 12)]
    viewers: usize,
    /// Share of reads sent straight to the front (judged by the instance bound).
    #[arg(long, default_value_t = 0.1)]
    direct_share: f64,
    /// Lambda's reserved concurrency for the api.
    #[arg(long, default_value_t = 10)]
    reserved: usize,
    /// An idle instance is retired after this.
    #[arg(long, default_value = "10s", value_parser = testbed::parse_duration)]
    idle_retire: Duration,
    /// The instances' CHANGE_MAX_LAG: the instance bound.
    #[arg(long, default_value = "2s", value_parser = testbed::parse_duration)]
    change_max_lag: Duration,
    /// The warmer's schedule: an invocation every this long.
    #[arg(long, default_value = "1s", value_parser = testbed::parse_duration)]
    tick: Duration,
    /// The warmer's WARMER_SETTLE (at least CHANGE_MAX_LAG).
    #[arg(long, default_value = "2s", value_parser = testbed::parse_duration)]
    settle: Duration,
    /// What a tick may take beyond its settle wait (claim, invalidation, warming): part of the edge
    /// bound; the report compares it with the longest tick seen.
    #[arg(long, default_value = "2s", value_parser = testbed::parse_duration)]
    tick_work: Duration,
    /// The instances' RUST_LOG (`warn,api::cache=debug` to follow their caches while diagnosing).
    #[arg(long, default_value = "warn")]
    api_log: String,
    /// Edge caches, as CloudFront's locations: viewers are spread over them, every purge reaches
    /// each, and the warmer warms through the first only, as it reaches one location.
    #[arg(long, default_value_t = 2)]
    edge_caches: usize,
    /// No shield cache. By default one sits between the edge caches and the fleet, as CloudFront's
    /// Origin Shield (which the template turns on): an edge's miss goes to the shield, the
    /// shield's to the fleet.
    #[arg(long)]
    no_shield: bool,
    /// How long a purge takes to reach each cache layer: each gets it after a random delay up to
    /// this, so the layers are purged in a random order (0: all at once). Default: 300 ms with a
    /// shield, 0 without.
    #[arg(long, value_parser = testbed::parse_duration)]
    propagation: Option<Duration>,
    /// With a shield, the warmer repeats each completed invalidation (`INVALIDATION_REPEAT`), as a
    /// layered edge needs; `--no-repeat` shows what happens without.
    #[arg(long)]
    no_repeat: bool,
    /// The fault kinds to schedule (default: every kind), e.g. `--faults feed-lock` to provoke
    /// one kind again and again.
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Kind>,
    /// No faults (with `--broken`, to show what the checker sees without them).
    #[arg(long)]
    no_faults: bool,
    /// Break the setup on purpose; with it the run succeeds only if violations are reported.
    #[arg(long, value_enum)]
    broken: Option<Broken>,
    /// Working directory (logs, the VCL, Varnish's state).
    #[arg(long)]
    run_dir: PathBuf,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

impl Args {
    /// How long a purge takes to reach each layer (see `--propagation`).
    fn propagation(&self) -> Duration {
        self.propagation.unwrap_or(if self.no_shield { Duration::ZERO } else { Duration::from_millis(300) })
    }
}

/// One read, as the viewer saw it.
#[derive(Debug)]
struct Read {
    /// The instance that answered (the front's `x-soak-instance`) and its `x-local-cache`, for
    /// the failures' details.
    instance: Option<Box<str>>,
    /// Seconds from the soak's epoch to when the request was sent.
    at: f64,
    latency_ms: f32,
    layer: Layer,
    /// 0: no answer at all.
    status: u16,
    /// Served stale on purpose (`x-local-cache: stale`, or `X-Cache: Stale` at the edge).
    stale: bool,
    edge_hit: bool,
    /// Which edge cache answered (at the edge).
    edge: Option<u8>,
    /// An edge miss answered from the shield's copy (its `Age` is a second or more).
    refilled: bool,
    path: u32,
    facts: Option<Vec<(checker::KeyId, checker::StateId)>>,
}

/// A fault that happened, from the soak's epoch.
#[derive(Debug, Clone, serde::Serialize)]
struct Happened {
    kind: Kind,
    start: f64,
    end: f64,
    detail: String,
    /// It found nothing to act on (no invocation ran to stop, no instance was idle to freeze):
    /// no fault, so it excuses nothing and is not counted.
    idle: bool,
}

/// The mark the fleet and the warmer share, as a deployed stack's: the warmer's fetches are not
/// learned as viewers'.
const WARM_SECRET: &str = "soak-warm-mark";

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn signal(pid: u32, signal: Signal) {
    if pid != 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh").arg("-c").arg(command).status().await?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

/// A fault the soak could not provoke, or could not end, as it records it: the run's verdict would
/// then describe another world than the one reported, so it is no verdict on the product at all.
#[derive(Debug, thiserror::Error)]
#[error("the soak's harness failed, so its verdict says nothing about the product: {0}")]
pub struct HarnessFailure(pub String);

/// How long a restarted service may take to accept connections again before the restart counts
/// as failed.
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// Runs `command` (a restart of the server at `url`) and waits until `url` accepts a connection
/// again, at most `limit`.
///
/// # Errors
///
/// The command failed, or the server did not come back in time: the outage would outlast the
/// window the report records.
async fn restart(command: &str, url: &str, limit: Duration) -> Result<(), String> {
    shell(command).await.map_err(|e| format!("{e:#}"))?;
    if until_connects(url, limit).await {
        Ok(())
    } else {
        Err(format!("`{command}` ran, but the server did not accept a connection within {limit:?}"))
    }
}

/// Waits until `url` accepts a connection (at most `limit`). Connects as the API does in proxy
/// mode (no unusual startup parameter), which PgBouncer accepts.
async fn until_connects(url: &str, limit: Duration) -> bool {
    let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else { return false };
    let options = options.statement_cache_capacity(0).extra_float_digits(None).application_name("soak-fault");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let attempt = tokio::time::timeout(Duration::from_secs(1), sqlx::PgConnection::connect_with(&options)).await;
        if matches!(attempt, Ok(Ok(_))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The exit status of a run whose harness failed: distinct from a failed verdict (1).
const HARNESS_FAILED: u8 = 3;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(<Args as clap::Parser>::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:?}");
            if err.downcast_ref::<HarnessFailure>().is_some() {
                std::process::ExitCode::from(HARNESS_FAILED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.run_dir)?;
    for log in ["api.log", "warmer.log"] {
        let _ = std::fs::remove_file(args.run_dir.join(log));
    }
    let database = "edgerail_soak";
    let admin = format!("{}/postgres", args.postgres);
    let direct = format!("{}/{database}", args.postgres);
    let pooled = format!("{}/{database}", args.pgbouncer);
    {
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&mut conn).await?;
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut conn).await?;
    }
    let seeded = tokio::process::Command::new(&args.api)
        .args(["seed", "--demo", "--scale", &args.scale.to_string()])
        .env("DATABASE_URL", &direct)
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(seeded.success(), "seeding the soak database failed");
    // The seed's changes are no one's concern: marked processed, as a warmer tick would have.
    {
        let mut conn = sqlx::PgConnection::connect(&direct).await?;
        sqlx::query(
            "UPDATE cache_changes SET processed_at = now(), invalidation_id = 'seed' WHERE processed_at IS NULL",
        )
        .execute(&mut conn)
        .await?;
    }

    // The roles the secrets rotate between, and the secrets (in moto): one names the server, one
    // PgBouncer.
    let run_tag = format!("{}-{}", args.seed, std::process::id());
    let rotation = rotation::Rotation::set_up(&args.moto, &args.postgres, &args.pgbouncer, database, &run_tag).await?;
    // The volume of sightings the bulk writer restores after each TRUNCATE.
    let volume: i64 = {
        let mut conn = sqlx::PgConnection::connect(&direct).await?;
        sqlx::query_scalar("SELECT count(*) FROM sightings").fetch_one(&mut conn).await?
    };

    let epoch = Instant::now();
    // The same moment on the wall clock, so a failure's time in the soak can be found in the logs.
    let epoch_unix = chrono::Utc::now();
    let mut seeded = History::default();
    writers::seed_history(&direct, &mut seeded).await?;
    let history = Arc::new(Mutex::new(seeded));
    let all_formations: Vec<String> = {
        let mut conn = sqlx::PgConnection::connect(&direct).await?;
        sqlx::query_scalar("SELECT id FROM formations").fetch_all(&mut conn).await?
    };

    // The network faults' switches and the proxy some instances reach PostgreSQL through.
    let (hole, purge_down, purge_stalled) = (net::Switch::default(), net::Switch::default(), net::Switch::default());
    let slow = net::Delay::default();
    let pg_addr: SocketAddr = {
        let authority = args.postgres.rsplit('@').next().unwrap_or_default();
        authority.parse()?
    };
    let proxy = net::proxy(pg_addr, hole.clone(), slow.clone()).await?;
    let proxied = direct.replace(&pg_addr.to_string(), &proxy.to_string());

    // The fleet and its front.
    let lag = match args.broken {
        Some(Broken::Lag) => args.change_max_lag * 10,
        _ => args.change_max_lag,
    };
    let front = fleet::Front::new(
        fleet::FleetConfig {
            api: args.api.clone(),
            sources: vec![
                fleet::Source::url("direct", &direct, false),
                fleet::Source::url("pooled", &pooled, true),
                fleet::Source::url("proxied", &proxied, false),
                fleet::Source {
                    name: "secret",
                    env: rotation::secret_env(&args.moto, rotation.server_arn()),
                    pooled: false,
                },
                fleet::Source {
                    name: "secret-pooled",
                    env: rotation::secret_env(&args.moto, rotation.pooler_arn()),
                    pooled: true,
                },
            ],
            env: vec![
                ("CHANGE_MAX_LAG".to_owned(), format!("{}ms", lag.as_millis())),
                ("RUST_LOG".to_owned(), args.api_log.clone()),
                ("WARM_SECRET".to_owned(), WARM_SECRET.to_owned()),
            ],
            reserved: args.reserved,
            idle_retire: args.idle_retire,
            memory_mb: 256,
            timeout: Duration::from_secs(30),
            log: args.run_dir.join("api.log"),
            monitor_url: admin.clone(),
        },
        "soak-1",
    );
    let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front_addr = front_listener.local_addr()?;
    {
        let app = front.router();
        tokio::spawn(async move {
            let _ = axum::serve(front_listener, app).await;
        });
    }

    // Varnish in front of the front: the edge caches, behind them the shield if there is one.
    let shield = if !args.no_shield {
        Some(testbed::edge::Varnish::start(&args.varnishd, &args.vcl, front_addr.port(), &args.run_dir, "soak-shield")?)
    } else {
        None
    };
    let upstream = match &shield {
        Some(shield) => shield.url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(front_addr.port()),
        None => front_addr.port(),
    };
    let mut varnishes = (0..args.edge_caches.max(1))
        .map(|n| {
            let name = if n == 0 { "soak".to_owned() } else { format!("soak-{n}") };
            testbed::edge::Varnish::start(&args.varnishd, &args.vcl, upstream, &args.run_dir, &name)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let edges: Arc<Vec<String>> = Arc::new(varnishes.iter().map(|v| v.url.clone()).collect());
    // Every layer a purge reaches: the edge caches, then the shield.
    let layers: Vec<String> = edges.iter().cloned().chain(shield.as_ref().map(|s| s.url.clone())).collect();
    varnishes.extend(shield);
    // The one the warmer reaches, through a recorder that keeps the answers it reads back.
    let newest_created: Arc<AtomicU64> = Arc::default();
    let (recorder, recorded) = net::recorder(edges[0].clone(), epoch, newest_created.clone()).await?;
    // Idle connections are dropped well before Varnish closes them (its `timeout_idle`, 5 s): a
    // request on a connection the server is closing fails with no answer, which a browser would
    // retry and the soak would count as a failure.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    for edge in edges.iter() {
        testbed::edge::wait_http(&client, &format!("{edge}/health-check")).await?;
    }
    let propagation = net::Propagation::new(layers, args.propagation(), args.seed ^ 17);
    let purge = net::purge_gate(propagation.clone(), purge_down.clone(), purge_stalled.clone()).await?;
    let cloudfront = net::cloudfront_api(propagation.clone(), purge_down.clone(), purge_stalled.clone()).await?;

    // The warmer, as EventBridge invokes the function, on the rotating secret.
    let mut warmer_env = rotation::secret_env(&args.moto, rotation.server_arn());
    warmer_env.extend([
        (
            "INVALIDATOR".to_owned(),
            if args.broken == Some(Broken::NoInvalidation) { "none" } else { "purge" }.to_owned(),
        ),
        ("PURGE_URL".to_owned(), format!("http://{purge}")),
        ("WARM_BASE_URL".to_owned(), format!("http://{recorder}")),
        ("WARMER_SETTLE".to_owned(), format!("{}ms", args.settle.as_millis())),
        ("WARM_TIMEOUT".to_owned(), "2s".to_owned()),
        ("INVALIDATION_RETRY_BASE".to_owned(), "100ms".to_owned()),
        ("INVALIDATION_RETRY_ATTEMPTS".to_owned(), "2".to_owned()),
        // Each page it reads back, logged as JSON: set beside the checker's judgement of it.
        ("RUST_LOG".to_owned(), "warn,warmer::check=debug".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT".to_owned(), "JSON".to_owned()),
        ("WARM_SECRET".to_owned(), WARM_SECRET.to_owned()),
        // The template's: the lease as long as the function's timeout, each call to the
        // invalidation API bounded.
        ("WARMER_LEASE".to_owned(), format!("{}ms", args.invocation_timeout.as_millis())),
        ("INVALIDATION_TIMEOUT".to_owned(), "2s".to_owned()),
        ("INVALIDATION_REPEAT".to_owned(), (!args.no_shield && !args.no_repeat).to_string()),
    ]);
    let warmer = Arc::new(scheduler::Schedule {
        binary: args.warmer.clone(),
        env: warmer_env,
        // The CloudFront backend through the AWS SDK, its timeouts and retries, against the
        // stand-in. Its month's path budget is a paying distribution's: what is under test is the
        // path to the edge, not the over-budget policy (the warmer's own tests cover that).
        other_env: [
            ("INVALIDATOR", "cloudfront".to_owned()),
            ("DISTRIBUTION_ID", "ESOAKSTANDIN".to_owned()),
            ("AWS_ENDPOINT_URL_CLOUDFRONT", format!("http://{cloudfront}")),
            ("INVALIDATION_PATH_BUDGET", "1000000000".to_owned()),
            ("INVALIDATION_POLL", format!("{}ms", INVALIDATION_POLL.as_millis())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        // Behind a shield every invocation uses CloudFront's API, whose stand-in propagates a
        // batch as CloudFront does (the purge gate, a local cache's, purges path by path).
        other_share: match args.broken {
            Some(Broken::NoInvalidation) => 0.0,
            _ if !args.no_shield => 1.0,
            _ => args.cloudfront_share,
        },
        log: args.run_dir.join("warmer.log"),
        period: args.tick,
        timeout: args.invocation_timeout,
        overlap: args.overlap,
        concurrency: args.warmer_concurrency,
        active: AtomicUsize::new(0),
        throttled: AtomicU64::new(0),
        running: Mutex::default(),
        paused_until: Mutex::default(),
        ticks: Arc::default(),
        timed_out: Mutex::default(),
        invocations: AtomicU64::new(0),
        others: AtomicU64::new(0),
        overlapped: AtomicU64::new(0),
        killed: AtomicU64::new(0),
    });

    // Writers.
    let running = Arc::new(AtomicBool::new(true));
    let shared = writers::Shared {
        history: history.clone(),
        epoch,
        running: running.clone(),
        newest_created,
        editing: Arc::default(),
        seq: Arc::default(),
        writes: Arc::default(),
        unknown: Arc::default(),
    };
    let mut tasks = vec![
        tokio::spawn(warmer.clone().run(running.clone(), epoch, args.seed ^ 16)),
        tokio::spawn(writers::hot(shared.clone(), direct.clone(), args.seed ^ 11)),
        tokio::spawn(writers::long(shared.clone(), direct.clone(), 0, args.seed ^ 12)),
        tokio::spawn(writers::long(shared.clone(), direct.clone(), 1, args.seed ^ 13)),
        tokio::spawn(writers::bulk(shared.clone(), direct.clone(), all_formations, volume, args.seed ^ 14)),
        tokio::spawn(writers::deletes(shared.clone(), direct.clone(), args.seed ^ 15)),
    ];
    for editor in 0..writers::EDITORS {
        tasks.push(tokio::spawn(writers::edits(
            shared.clone(),
            direct.clone(),
            editor,
            args.seed ^ (17 + editor as u64),
        )));
    }

    // Database connections, sampled.
    let connections = Arc::new(Mutex::new(Connections::default()));
    let caps = (args.reserved as i64, args.pooler_cap, warmer_connections_cap(args.warmer_concurrency));
    let holders = Holders { front: front.clone(), warmer: warmer.clone() };
    let monitor =
        tokio::spawn(monitor(admin.clone(), database, caps, connections.clone(), holders, running.clone(), epoch));

    // Faults.
    let plan = if args.no_faults && args.broken != Some(Broken::Lag) {
        Vec::new()
    } else if args.broken == Some(Broken::Lag) {
        // Only feed locks: the fault a too-long lag lets through.
        (0..)
            .map(|i| faults::Planned {
                kind: Kind::FeedLock,
                at: Duration::from_secs(8 + 10 * i),
                length: Duration::from_secs(6),
                param: 0,
            })
            .take_while(|p| p.at + p.length + Duration::from_secs(5) < args.duration)
            .collect()
    } else {
        let kinds = if args.faults.is_empty() { faults::ALL.to_vec() } else { args.faults.clone() };
        faults::schedule(args.seed, args.duration, faults::LEAD_IN, faults::LEAD_OUT, &kinds)
    };
    let happened: Arc<Mutex<Vec<Happened>>> = Arc::default();
    // Harness failures, and the signal that ends the viewers early after one.
    let harness: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let injector = {
        let context = FaultContext {
            epoch,
            warmer: warmer.clone(),
            front: front.clone(),
            hole: hole.clone(),
            slow: slow.clone(),
            purge_down: purge_down.clone(),
            purge_stalled: purge_stalled.clone(),
            rotation: Arc::new(tokio::sync::Mutex::new(rotation)),
            restart_postgres: args.restart_postgres.clone(),
            restart_pgbouncer: args.restart_pgbouncer.clone(),
            direct: direct.clone(),
            pooled: pooled.clone(),
            happened: happened.clone(),
        };
        let plan = plan.clone();
        let (harness, stop) = (harness.clone(), stop.clone());
        tokio::spawn(async move {
            for planned in plan {
                tokio::time::sleep_until((epoch + planned.at).into()).await;
                if let Err(why) = context.inject(planned).await {
                    // What follows would be judged against a world the report does not
                    // describe: the run stops here.
                    eprintln!("soak: harness failure: {why}");
                    lock(&harness).push(why);
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
            }
        })
    };

    // Viewers.
    let (today, _) = testbed::workload::service_days()?;
    // Every page the checker judges, and today's operations (read, not judged).
    let mut paths = testbed::workload::urls(&[]);
    paths.push(format!("/v1/operations/{today}"));
    let mut rng = fastrand::Rng::with_seed(args.seed);
    rng.shuffle(&mut paths);
    let extra = paths.len();
    let paths = Arc::new(Mutex::new(paths));
    let zipf = Arc::new(testbed::workload::Zipf::new(extra, 1.1));
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let started = Instant::now();
    let viewers: Vec<_> = (0..args.viewers)
        .map(|v| {
            let (client, edges, paths, zipf, reads, shared, stop) = (
                client.clone(),
                edges.clone(),
                paths.clone(),
                zipf.clone(),
                reads.clone(),
                shared.clone(),
                stop.clone(),
            );
            let front = format!("http://{front_addr}");
            let (duration, direct_share, seed) = (args.duration, args.direct_share, args.seed);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed * 1000 + v as u64);
                let mut mine = Vec::new();
                while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                    let newest = shared.newest_created.load(Ordering::Relaxed);
                    let (index, path) = {
                        let mut paths = lock(&paths);
                        let mut index_of = |path: String| {
                            let index = paths.iter().position(|p| *p == path).unwrap_or_else(|| {
                                paths.push(path.clone());
                                paths.len() - 1
                            });
                            (index, path)
                        };
                        // Now and then a formation just created, or one being edited.
                        if newest > 0 && rng.f64() < 0.05 {
                            index_of(format!("/v1/formations/SK{}", newest.saturating_sub(rng.u64(0..6)).max(1)))
                        } else if rng.f64() < 0.03
                            && let Some(id) = writers::edited_now(&shared, rng.usize(..writers::EDITORS))
                        {
                            index_of(format!("/v1/formations/{id}"))
                        } else {
                            let i = zipf.sample(&mut rng);
                            (i, paths[i].clone())
                        }
                    };
                    let layer = if rng.f64() < direct_share { Layer::Instance } else { Layer::Edge };
                    let edge = (layer == Layer::Edge).then(|| rng.usize(..edges.len()));
                    let base = edge.map_or(&front, |e| &edges[e]);
                    let at = epoch.elapsed().as_secs_f64();
                    let sent = Instant::now();
                    let answer = client.get(format!("{base}{path}")).send().await;
                    let mut read = Read {
                        instance: None,
                        at,
                        latency_ms: 0.0,
                        layer,
                        status: 0,
                        stale: false,
                        edge_hit: false,
                        edge: edge.and_then(|e| u8::try_from(e).ok()),
                        refilled: false,
                        path: index as u32,
                        facts: None,
                    };
                    if let Ok(res) = answer {
                        let header =
                            |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        read.status = res.status().as_u16();
                        // The instance and how its cache answered (`hit`, `miss`, `stale`): what a
                        // failure's detail needs to tell a cache fault from a database one.
                        read.instance = header("x-soak-instance").map(|instance| {
                            match header("x-local-cache") {
                                Some(local) => format!("{instance} ({local})"),
                                None => instance,
                            }
                            .into_boxed_str()
                        });
                        let x_cache = header("x-cache");
                        read.edge_hit = x_cache.as_deref() == Some("Hit");
                        let age = header("age").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                        read.refilled = edge.is_some() && x_cache.as_deref() == Some("Miss") && age > 0;
                        read.stale =
                            header("x-local-cache").as_deref() == Some("stale") || x_cache.as_deref() == Some("Stale");
                        let body = res.bytes().await.unwrap_or_default();
                        read.latency_ms = sent.elapsed().as_secs_f32() * 1e3;
                        read.facts = writers::observe(&path, read.status, &body, newest, &shared.history);
                    } else {
                        read.latency_ms = sent.elapsed().as_secs_f32() * 1e3;
                    }
                    mine.push(read);
                }
                lock(&reads).extend(mine);
            })
        })
        .collect();
    for viewer in viewers {
        let _ = viewer.await;
    }
    let wall = started.elapsed();
    injector.abort();
    running.store(false, Ordering::Relaxed);
    for task in tasks.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let _ = monitor.await;
    // End every fault still in force.
    hole.set(false);
    slow.set(0);
    purge_down.set(false);
    purge_stalled.set(false);
    warmer.stop();
    front.shutdown().await;
    for varnish in varnishes {
        varnish.stop().await;
    }

    // Judge. A fault still in force when the viewers stopped ended then; one that found nothing
    // to act on is listed, but excuses nothing and is not counted.
    let stopped = epoch.elapsed().as_secs_f64();
    let faults: Vec<Happened> = lock(&happened)
        .iter()
        .cloned()
        .map(|mut h| {
            h.end = h.end.min(stopped);
            h
        })
        .collect();
    let happened: Vec<Happened> = faults.iter().filter(|h| !h.idle).cloned().collect();
    // On a schedule, a change waits at most a period plus the longest tick for a tick to take its
    // mark (runs that find the lease held end at once), then that tick's own length.
    let tick_length = args.settle + args.tick_work;
    // The purge reaches every layer within the propagation; behind a shield, an edge refilled
    // from the shield's old copy (purged later) waits one repair: another purge.
    let repair = if args.no_shield { Duration::ZERO } else { args.propagation() };
    let edge_bound = args.tick + tick_length + tick_length + args.propagation() + repair;
    // A killed or stopped invocation holds the lease until it expires (WARMER_LEASE, the timeout).
    let lease = args.invocation_timeout.as_secs_f64();
    let held = |kind: Kind| if matches!(kind, Kind::WarmerKill | Kind::WarmerStop) { lease } else { 0.0 };
    let mut edge_outages: Vec<(f64, f64)> =
        happened.iter().filter(|h| h.kind.stops_invalidation()).map(|h| (h.start, h.end + held(h.kind))).collect();
    edge_outages.extend(lock(&warmer.timed_out).iter().map(|&t| (t, t + lease)));
    let rules = Rules {
        instance_bound: args.change_max_lag.as_secs_f64(),
        edge_bound: edge_bound.as_secs_f64(),
        edge_outages,
        db_outages: happened.iter().filter(|h| h.kind.database_unavailable()).map(|h| (h.start, h.end)).collect(),
        // A load that began in the outage gives up within its statement timeout (5 s) plus 1.25 s;
        // after the database is back, loads fail fast for 1 s more.
        instance_stale_slack: 7.5,
        // The edge may keep an instance's stale answer for its s-maxage (5 s).
        edge_stale_slack: 12.5,
    };
    let reads = std::mem::take(&mut *lock(&reads));
    // The answers the warmer read back, as the checker reads them.
    // (A page asked for with a query, such as a learned `?limit=`, shows part of what the checker
    // reads its path for: not judged.)
    let answers: Vec<readback::Answer> = lock(&recorded)
        .iter()
        .map(|r| readback::Answer {
            path: r.target.clone(),
            sent: r.sent,
            age: r.age,
            readable: r.body.is_some(),
            facts: r
                .body
                .as_deref()
                .filter(|_| !r.target.contains('?'))
                .and_then(|body| writers::observe(&r.target, r.status, body, r.newest_created, &history)),
        })
        .collect();
    let history = lock(&history);
    let paths = lock(&paths).clone();
    let verdict = judge_all(&reads, &history, &rules, &paths);
    let ticks = lock(&warmer.ticks).clone();
    let tick_ms: Vec<f64> = ticks.iter().filter_map(|t| t["duration_ms"].as_f64()).collect();
    let connections = lock(&connections).clone();
    let stats = front.stats();
    let deploy_windows: Vec<(f64, f64)> =
        happened.iter().filter(|h| h.kind == Kind::Deploy).map(|h| (h.start, h.start + 10.0)).collect();

    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for h in &happened {
        *counts.entry(h.kind).or_default() += 1;
    }
    let mut failure_counts = verdict.failure_counts.clone();
    if !connections.over_cap.is_empty() {
        failure_counts.insert("database connections above the cap", connections.over_cap.len());
    }
    let (leaked, errors) = (stats.lingering_connections, stats.function_errors + stats.timeouts + stats.crashed);
    if leaked > 0 {
        failure_counts.insert("connections left open by a retired instance", leaked as usize);
    }
    if errors > 0 {
        failure_counts.insert("invocations without an answer", errors as usize);
    }
    // The warmer's own checks, reported beside the checker's. Not a verdict of their own: the
    // warmer does not know the fault windows, and a page it finds stale that a viewer then reads
    // is the checker's violation anyway.
    let checks = warmer_checks(&ticks);
    let repair_failed = checks["repair_failed"].as_u64().unwrap_or(0);
    // Its verdicts, though, page by page, must be what the checker finds in the same answers, and
    // its freshness what the users at its edge cache got (see readback.rs).
    let agreement = {
        let log = std::fs::read_to_string(args.run_dir.join("warmer.log")).unwrap_or_default();
        let seen: Vec<readback::Seen<'_>> = reads
            .iter()
            .filter(|r| r.edge == Some(0))
            .filter_map(|r| Some((paths.get(r.path as usize)?.as_str(), r.at, r.edge_hit, r.facts.as_deref()?)))
            .collect();
        // The marks of the ticks whose batch was sent: what committed before each was sent.
        let sent: Vec<f64> = ticks
            .iter()
            .filter(|t| t["invalidation_id"].is_string() || (t["changes"] == 0 && t["error"].is_null()))
            .filter_map(|t| readback::since(epoch_unix, &t["marked_at"]))
            .collect();
        let checks = readback::checks(&log, epoch_unix);
        // The warmer reads once the batch, and its repeat, completed: each took the propagation and
        // up to one poll (INVALIDATION_POLL) more.
        let purges = if !args.no_shield && !args.no_repeat { 2.0 } else { 1.0 };
        let per_purge = args.propagation().as_secs_f64() + INVALIDATION_POLL.as_secs_f64();
        let timing = readback::Timing {
            tolerance: args.tick.as_secs_f64() + purges * per_purge,
            instance_bound: args.change_max_lag.as_secs_f64(),
        };
        readback::compare(&checks, &answers, &seen, &sent, &timing, &history)
    };
    if !agreement.missed.is_empty() {
        failure_counts.insert("the warmer found fresh an answer that lacked a claimed write", agreement.missed.len());
    }
    // A warmer that read pages back must have logged them, each matched to the answer it read
    // (binaries from before the log line, whose summaries have no `marked_at`, are not held to it).
    let logs_checks = ticks.iter().any(|t| t.get("marked_at").is_some());
    if logs_checks && checks["verified"].as_u64().unwrap_or(0) > 0 && agreement.judged == 0 {
        failure_counts.insert("the warmer's checks could not be set beside the checker's", 1);
    }
    if agreement.freshness_agrees() == Some(false) {
        failure_counts.insert("the warmer's freshness outside its users' bracket", 1);
    }
    // A figure counted from the wrong start leaves the comparison (as measured from a later
    // change, or an earlier one the checker does not follow): with pages to compare, most of them
    // may not leave it.
    let (pages, compared, short) = (agreement.freshness.len(), agreement.comparable(), agreement.short());
    if logs_checks && pages >= 20 && (compared == 0 || short > compared) {
        failure_counts.insert("the warmer's freshness could not be set beside its users'", 1);
    }
    if !agreement.false_alarms.is_empty() {
        failure_counts
            .insert("the warmer found stale an answer made after its claimed writes", agreement.false_alarms.len());
    }
    let report = json!({
        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%MZ").to_string(),
        "seed": args.seed,
        "epoch": epoch_unix.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "broken": args.broken.map(|b| format!("{b:?}")),
        "duration_s": wall.as_secs_f64(),
        "settings": {
            "reserved_concurrency": args.reserved,
            "idle_retire_s": args.idle_retire.as_secs_f64(),
            "change_max_lag_s": args.change_max_lag.as_secs_f64(),
            "instances_change_max_lag_s": lag.as_secs_f64(),
            "tick_s": args.tick.as_secs_f64(),
            "invocation_timeout_s": args.invocation_timeout.as_secs_f64(),
            "overlap": args.overlap,
            "scale": args.scale,
            "sightings": volume,
            "settle_s": args.settle.as_secs_f64(),
            "tick_work_s": args.tick_work.as_secs_f64(),
            "viewers": args.viewers,
            "direct_share": args.direct_share,
        },
        "bounds_s": { "instance": rules.instance_bound, "edge": rules.edge_bound },
        "reads": reads.len(),
        "reads_per_s": reads.len() as f64 / wall.as_secs_f64(),
        "layers": verdict.layers,
        "failures": failure_counts.values().sum::<usize>(),
        "failures_by_kind": failure_counts,
        "failures_per_second": verdict.failure_seconds,
        "first_failures": first_of_each(&verdict.failures, 3),
        "first_failure_per_path": first_per_path(&verdict.failures, 20),
        "harness_errors": lock(&harness).clone(),
        "writes": shared.writes.load(Ordering::Relaxed),
        "writes_unknown_outcome": shared.unknown.load(Ordering::Relaxed),
        "faults": faults,
        "fault_counts": counts,
        "by_fault": by_fault(&happened, &reads, &verdict.failures),
        "fleet": stats,
        "connections": {
            "peak_direct": connections.peak_direct,
            "direct_cap": args.reserved,
            "peak_pooled": connections.peak_pooled,
            "pooled_cap": args.pooler_cap,
            "peak_warmer": connections.peak_warmer,
            "warmer_cap": warmer_connections_cap(args.warmer_concurrency),
            "peak_warmer_lingering": connections.peak_warmer_lingering,
            "peak_total": connections.peak_total,
            "peak_per_instance": connections.peak_per_instance.0,
            "peak_per_instance_at": connections.peak_per_instance.1,
            "over_cap_at": connections.over_cap,
            "samples": connections.samples,
        },
        "warmer": {
            "ticks": ticks.len(),
            "failed_ticks": ticks.iter().filter(|t| !t["error"].is_null()).count(),
            "invocations": warmer.invocations.load(Ordering::Relaxed),
            "cloudfront_invocations": warmer.others.load(Ordering::Relaxed),
            "overlapping_starts": warmer.overlapped.load(Ordering::Relaxed),
            "throttled": warmer.throttled.load(Ordering::Relaxed),
            "killed_by_faults": warmer.killed.load(Ordering::Relaxed),
            "killed_at_timeout": lock(&warmer.timed_out).len(),
            "lease_held": ticks.iter().filter(|t| t["lease_held"].is_string()).count(),
            "tick_ms": { "p50": pct(&tick_ms, 50.0), "p99": pct(&tick_ms, 99.0), "max": pct(&tick_ms, 100.0) },
            "tick_allowance_ms": tick_length.as_millis() as u64,
        },
        "warmer_checks": checks,
        "warmer_agreement": agreement.report(),
        "edge_caches": {
            "shield": !args.no_shield,
            "repeat": !args.no_shield && !args.no_repeat,
            "propagation_s": args.propagation().as_secs_f64(),
            "per_edge": verdict.edges,
            "purges_per_layer": propagation.purged(),
        },
        "latency_ms": latency(&reads, &deploy_windows),
        "staleness_series": verdict.series,
    });
    testbed::write_json(&args.out, &report)?;
    let violations = verdict.violations;
    eprintln!(
        "soak: {} reads, {} violations, failures: {:?}; report in {}",
        reads.len(),
        violations,
        failure_counts,
        args.out.display()
    );
    if args.broken.is_none() && !failure_counts.is_empty() {
        eprint!("{}", diagnosis(&report, &verdict.failure_seconds));
    }
    let harness = lock(&harness).clone();
    if !harness.is_empty() {
        return Err(HarnessFailure(harness.join("; ")).into());
    }
    match args.broken {
        Some(broken) => {
            anyhow::ensure!(violations > 0, "the checker found no violation in a setup broken on purpose");
            // With nothing invalidated, the warmer's own check of the edge must see it too.
            anyhow::ensure!(
                broken != Broken::NoInvalidation || repair_failed > 0,
                "the warmer's check found no page stale with nothing invalidated"
            );
        }
        None => anyhow::ensure!(failure_counts.is_empty(), "the soak failed: {failure_counts:?}"),
    }
    Ok(())
}

/// What a failed run needs to be understood from its console output alone (a CI log keeps no
/// files): the faults as they happened, when each kind of failure occurred (`per_second`, in
/// order), and its first cases.
fn diagnosis(report: &Value, per_second: &BTreeMap<&'static str, BTreeMap<u64, usize>>) -> String {
    use std::fmt::Write as _;
    let mut out = format!("soak diagnosis (t = 0 at {}):\n", report["epoch"].as_str().unwrap_or("?"));
    for fault in report["faults"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  fault {:<18} {:>7.2}–{:<7.2} {}",
            fault["kind"].as_str().unwrap_or("?"),
            fault["start"].as_f64().unwrap_or(f64::NAN),
            fault["end"].as_f64().unwrap_or(f64::NAN),
            fault["detail"].as_str().unwrap_or("")
        );
    }
    for (kind, seconds) in per_second {
        let shown: Vec<String> = seconds.iter().take(30).map(|(t, n)| format!("{t}s×{n}")).collect();
        let _ = writeln!(out, "  {kind} in the soak's seconds: {}", shown.join(" "));
    }
    for failure in report["first_failures"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  first: {failure}");
    }
    let paths = report["first_failure_per_path"].as_array().map_or(0, Vec::len);
    if paths > 1 {
        let _ = writeln!(out, "  first failures on {paths} paths: see `first_failure_per_path` in the report");
    }
    let _ = writeln!(out, "  fleet: {}", report["fleet"]);
    let _ = writeln!(out, "  warmer: {}", report["warmer"]);
    out
}

/// Per fault kind, what happened while one was in force: reads checked (at the edge and at
/// instances), freshness violations, `503`s and stale answers.
fn by_fault(happened: &[Happened], reads: &[Read], failures: &[Failure]) -> BTreeMap<Kind, Value> {
    let mut out: BTreeMap<Kind, [usize; 6]> = BTreeMap::new();
    for h in happened {
        let during = |t: f64| h.start <= t && t <= h.end;
        let row = out.entry(h.kind).or_default();
        row[0] += 1;
        for read in reads.iter().filter(|r| during(r.at) && r.facts.is_some()) {
            row[if read.layer == Layer::Edge { 1 } else { 2 }] += 1;
        }
        row[3] += failures.iter().filter(|f| f.kind == "freshness violation" && during(f.at)).count();
        row[4] += reads.iter().filter(|r| during(r.at) && r.status == 503).count();
        row[5] += reads.iter().filter(|r| during(r.at) && r.stale).count();
    }
    out.into_iter()
        .map(|(kind, [times, edge, instance, violations, unavailable, stale])| {
            (
                kind,
                json!({
                    "times": times,
                    "checked_edge": edge,
                    "checked_instance": instance,
                    "violations": violations,
                    "503": unavailable,
                    "stale": stale,
                }),
            )
        })
        .collect()
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() { 0.0 } else { testbed::percentile(&sorted, p) }
}

/// What the warmer's own checks through the edge (the first edge cache) found over the run,
/// summed from its ticks' summaries, to set beside the checker's: pages read back, stale after
/// their invalidation completed, repaired by a second one, stale still; and the freshness it
/// measured (the median of the ticks' medians, and the largest).
fn warmer_checks(ticks: &[Value]) -> Value {
    let sum = |key: &str| ticks.iter().filter_map(|t| t[key].as_u64()).sum::<u64>();
    let values = |key: &str| ticks.iter().filter_map(|t| t[key].as_f64()).collect::<Vec<f64>>();
    let (medians, maxima) = (values("freshness_p50_s"), values("freshness_max_s"));
    let from: std::collections::BTreeSet<&str> = ticks.iter().filter_map(|t| t["freshness_from"].as_str()).collect();
    json!({
        "verified": sum("verified"),
        "verified_stale": sum("verified_stale"),
        "verified_unknown": sum("verified_unknown"),
        "repaired": sum("repaired"),
        "repair_failed": sum("repair_failed"),
        "repair_deferred": sum("repair_deferred"),
        "ticks_measured": medians.len(),
        "freshness_p50_s": (!medians.is_empty()).then(|| pct(&medians, 50.0)),
        "freshness_max_s": (!maxima.is_empty()).then(|| pct(&maxima, 100.0)),
        "freshness_from": from,
    })
}

/// How often the warmer's `cloudfront` invocations ask whether their invalidation completed.
const INVALIDATION_POLL: Duration = Duration::from_millis(250);

/// The warmer's connection cap: two per invocation (its pool), times its reserved concurrency.
fn warmer_connections_cap(concurrency: usize) -> i64 {
    2 * i64::try_from(concurrency).unwrap_or(i64::MAX / 2)
}

/// How long a stop or a freeze waits for something to act on: twice the default warmer period, within
/// the 3–7 s the schedule leaves between faults.
const TARGET_WAIT: Duration = Duration::from_secs(2);

/// Calls `act` every 50 ms until it acts on something (returns more than zero), for at most
/// `within`; returns what it acted on last.
async fn until_some(within: Duration, mut act: impl FnMut() -> usize) -> usize {
    let until = Instant::now() + within;
    loop {
        let acted = act();
        if acted > 0 || Instant::now() >= until {
            return acted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Queries of a CPU burst: one more than the machine has cores (the soak's PostgreSQL runs on
/// this machine), so the database is starved on any machine, not only one of two cores; at most
/// 16, a quarter of the soak cluster's connections.
fn cpu_burst() -> usize {
    (std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) + 1).min(16)
}

struct FaultContext {
    epoch: Instant,
    warmer: Arc<scheduler::Schedule>,
    front: fleet::Front,
    hole: net::Switch,
    slow: net::Delay,
    purge_down: net::Switch,
    purge_stalled: net::Switch,
    rotation: Arc<tokio::sync::Mutex<rotation::Rotation>>,
    restart_postgres: String,
    restart_pgbouncer: String,
    direct: String,
    pooled: String,
    happened: Arc<Mutex<Vec<Happened>>>,
}

impl FaultContext {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// A stop or a freeze (fault `index`): calls `act` until it acts on something, for at most
    /// [`TARGET_WAIT`], and returns how many it acted on. Once it did, the fault is in force from
    /// then; until then (and if it never does) it is idle.
    async fn on_target(&self, index: usize, act: impl FnMut() -> usize) -> usize {
        let found = until_some(TARGET_WAIT, act).await;
        if found > 0 {
            let now = self.now();
            let mut happened = lock(&self.happened);
            happened[index].start = now;
            happened[index].idle = false;
        }
        found
    }

    /// Provokes `planned`. It is recorded as it starts (and its end when it ends), so a fault the
    /// end of the soak cut short still counts.
    ///
    /// # Errors
    ///
    /// The fault could not be provoked, or not ended (a server that did not come back): the
    /// harness failed, and the text says how.
    async fn inject(&self, planned: faults::Planned) -> Result<(), String> {
        let start = self.now();
        let index = {
            let mut happened = lock(&self.happened);
            // A stop or a freeze is idle until it acts on something (one the end of the soak cuts
            // short while it waits excuses nothing).
            let idle = matches!(planned.kind, Kind::WarmerStop | Kind::InstanceFreeze);
            happened.push(Happened { kind: planned.kind, start, end: f64::INFINITY, detail: String::new(), idle });
            happened.len() - 1
        };
        let (mut detail, mut failed) = (String::new(), None);
        match planned.kind {
            Kind::WarmerKill => {
                // Whatever runs is killed mid-tick, and the schedule stops for a while.
                let running = lock(&self.warmer.running).len();
                self.warmer.kill_all(planned.length);
                detail = format!("{running} invocations killed");
                tokio::time::sleep(planned.length).await;
            }
            Kind::WarmerStop => {
                // An invocation starts every period: the stop waits for one to run (at most
                // TARGET_WAIT, inside the gap before the next fault), and lasts its length from then.
                let stopped = self.on_target(index, || self.warmer.signal_all(Signal::SIGSTOP)).await;
                if stopped == 0 {
                    detail = "no invocation ran to stop".to_owned();
                } else {
                    detail = format!("{stopped} invocations stopped");
                    tokio::time::sleep(planned.length).await;
                    self.warmer.signal_all(Signal::SIGCONT);
                }
            }
            Kind::InstanceFreeze => {
                // As the stop: the freeze waits for an idle instance (all may be busy).
                let held = self.on_target(index, || self.front.hold(usize::MAX, planned.length)).await;
                if held == 0 {
                    detail = "no instance was idle to freeze".to_owned();
                } else {
                    detail = format!("{held} idle instances held frozen");
                    tokio::time::sleep(planned.length).await;
                }
            }
            Kind::PostgresRestart => {
                failed = restart(&self.restart_postgres, &self.direct, RESTART_LIMIT).await.err();
            }
            Kind::PgbouncerRestart => {
                failed = restart(&self.restart_pgbouncer, &self.pooled, RESTART_LIMIT).await.err();
            }
            Kind::FeedLock => {
                failed = self.lock_feed(planned.length).await.err().map(|e| format!("the feed lock failed: {e:#}"));
            }
            Kind::BlackHole => {
                self.hole.hold(planned.length).await;
            }
            Kind::PurgeDown => {
                self.purge_down.hold(planned.length).await;
            }
            Kind::Deploy => {
                let n = self.front.stats().deploys + 2;
                self.front.deploy(&format!("soak-{n}"));
                detail = format!("build soak-{n}");
            }
            Kind::SlowLinks => {
                self.slow.set(planned.param);
                detail = format!("each proxied connection 0.5–8 s a round trip (draw {})", planned.param);
                tokio::time::sleep(planned.length).await;
                self.slow.set(0);
            }
            Kind::TableLock => {
                let table = if planned.param == 0 { "sightings" } else { "formations" };
                detail = format!("ACCESS EXCLUSIVE on {table}");
                failed = self.lock_table(table, planned.length).await.err().map(|e| format!("the lock failed: {e:#}"));
            }
            Kind::CpuBurst => {
                detail = format!("{} expensive queries at once", cpu_burst());
                failed = self.burn(planned.length).await.err().map(|e| format!("the burst failed: {e:#}"));
            }
            Kind::PurgeStall => {
                self.purge_stalled.hold(planned.length).await;
            }
            Kind::Rotation => {
                let rotated = self.rotation.lock().await.rotate(planned.param == 1, planned.length).await;
                match rotated {
                    Ok(what) => {
                        detail = what;
                        tokio::time::sleep(faults::ROTATION_SETTLES).await;
                    }
                    Err(e) => failed = Some(format!("the rotation failed: {e:#}")),
                }
            }
        }
        let end = self.now();
        let mut happened = lock(&self.happened);
        happened[index].end = end;
        happened[index].detail = failed.clone().unwrap_or(detail);
        match failed {
            Some(why) => Err(format!("{:?} at {start:.2} s: {why}", planned.kind)),
            None => Ok(()),
        }
    }

    /// Takes `table` as a migration or an import does, for `length` once granted. Not being
    /// granted the lock within 30 s is a harness failure.
    async fn lock_table(&self, table: &str, length: Duration) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.direct).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
        tokio::time::sleep(length).await;
        tx.rollback().await?;
        Ok(())
    }

    /// Another client's expensive queries, more than the machine has cores, for `length`.
    async fn burn(&self, length: Duration) -> anyhow::Result<()> {
        let burns: Vec<_> = (0..cpu_burst())
            .map(|_| {
                let url = self.direct.clone();
                tokio::spawn(async move {
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    let limit = format!("SET statement_timeout = {}", length.as_millis());
                    sqlx::query(&limit).execute(&mut conn).await?;
                    // Cancelled by its statement timeout: that ends the burst, it is no failure.
                    let _ =
                        sqlx::query("SELECT count(*) FROM generate_series(1, 10000000000)").execute(&mut conn).await;
                    anyhow::Ok(())
                })
            })
            .collect();
        for burn in burns {
            burn.await??;
        }
        Ok(())
    }

    async fn lock_feed(&self, length: Duration) -> anyhow::Result<()> {
        // A lock request waits for the transactions that hold the table, and everything that
        // comes after it waits behind it: the feed is locked from the request on, as it is when a
        // migration asks for the lock.
        self.lock_table("cache_changes", length).await
    }
}

/// Database connections seen in `pg_stat_activity`, by who holds them.
#[derive(Debug, Clone, Default)]
struct Connections {
    /// Connections of instances that reach PostgreSQL directly (or through the proxy).
    peak_direct: i64,
    /// PgBouncer's server connections (named after the last instance they served).
    peak_pooled: i64,
    /// The warmer's runs (those running).
    peak_warmer: i64,
    /// Connections of warmer runs that ended (killed mid-statement), not yet gone.
    peak_warmer_lingering: i64,
    peak_total: i64,
    /// The most connections one instance held at once, and when.
    peak_per_instance: (i64, f64),
    /// `[t, direct, pooled, warmer, total, instances]` once a second.
    samples: Vec<[f64; 6]>,
    /// Samples in which the direct instances held more than the reserved concurrency, PgBouncer
    /// more than its pool, or the warmer more than its invocations' connections.
    over_cap: Vec<f64>,
}

/// Who may hold the connections [`monitor`] counts: the fleet's instances, the warmer's runs.
struct Holders {
    front: fleet::Front,
    warmer: Arc<scheduler::Schedule>,
}

async fn monitor(
    url: String,
    database: &'static str,
    caps: (i64, i64, i64),
    connections: Arc<Mutex<Connections>>,
    holders: Holders,
    running: Arc<AtomicBool>,
    epoch: Instant,
) {
    let Holders { front, warmer } = holders;
    let mut conn: Option<sqlx::PgConnection> = None;
    let mut last_sample = -1.0f64;
    while running.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = tokio::time::timeout(Duration::from_secs(2), sqlx::PgConnection::connect(&url))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(c) = conn.as_mut() {
            let counted: Result<Vec<(String, i64)>, _> = sqlx::query_as(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND backend_type = 'client backend' GROUP BY 1",
            )
            .bind(database)
            .fetch_all(&mut *c)
            .await;
            match counted {
                Ok(rows) => {
                    let t = epoch.elapsed().as_secs_f64();
                    let (mut direct, mut pooled, mut warmer_live, mut total, mut per_instance) = (0, 0, 0, 0, 0);
                    let mut lingering = 0;
                    let runs = lock(&warmer.running).clone();
                    for (name, n) in rows {
                        total += n;
                        // A run's connections count against its cap while it runs; a killed run's
                        // last statement lingers until PostgreSQL notices (about a second).
                        match name.strip_prefix("edgerail-warmer-").map(|p| p.parse::<u32>().ok()) {
                            Some(Some(pid)) if runs.contains(&pid) => warmer_live += n,
                            Some(_) => lingering += n,
                            None => {}
                        }
                        let pid = name.strip_prefix("edgerail-api-").and_then(|p| p.parse::<u32>().ok());
                        match pid.and_then(|pid| front.pooled(pid)) {
                            Some(true) => pooled += n,
                            Some(false) => {
                                direct += n;
                                per_instance = per_instance.max(n);
                            }
                            None => {}
                        }
                    }
                    let mut seen = lock(&connections);
                    seen.peak_direct = seen.peak_direct.max(direct);
                    seen.peak_pooled = seen.peak_pooled.max(pooled);
                    seen.peak_warmer = seen.peak_warmer.max(warmer_live);
                    seen.peak_warmer_lingering = seen.peak_warmer_lingering.max(lingering);
                    seen.peak_total = seen.peak_total.max(total);
                    if per_instance > seen.peak_per_instance.0 {
                        seen.peak_per_instance = (per_instance, t);
                    }
                    if direct > caps.0 || pooled > caps.1 || warmer_live > caps.2 {
                        seen.over_cap.push(t);
                    }
                    if t - last_sample >= 1.0 {
                        last_sample = t;
                        seen.samples.push([
                            t,
                            direct as f64,
                            pooled as f64,
                            (warmer_live + lingering) as f64,
                            total as f64,
                            front.instances() as f64,
                        ]);
                    }
                }
                Err(_) => conn = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A read that broke a rule.
#[derive(Debug, Clone, serde::Serialize)]
struct Failure {
    kind: &'static str,
    at: f64,
    layer: Layer,
    path: String,
    status: u16,
    detail: String,
}

#[derive(Debug, Default, serde::Serialize)]
struct LayerVerdict {
    reads: usize,
    judged: usize,
    fresh: usize,
    violations: usize,
    excused_by_outage: usize,
    stale_answers: usize,
    stale_answers_outside_outage: usize,
    unreadable: usize,
    by_status: BTreeMap<u16, usize>,
    edge_hits: usize,
    staleness_ms: BTreeMap<&'static str, f64>,
}

/// What the viewers saw at one edge cache.
#[derive(Debug, Default, serde::Serialize)]
struct EdgeVerdict {
    reads: usize,
    hits: usize,
    /// Misses answered from the shield's copy.
    refills_from_shield: usize,
    violations: usize,
}

struct Verdict {
    layers: HashMap<Layer, LayerVerdict>,
    /// Per edge cache.
    edges: BTreeMap<u8, EdgeVerdict>,
    failures: Vec<Failure>,
    failure_counts: BTreeMap<&'static str, usize>,
    /// Per kind, failures per second of the soak.
    failure_seconds: BTreeMap<&'static str, BTreeMap<u64, usize>>,
    violations: usize,
    /// `[t, edge max staleness, instance max staleness]` per second.
    series: Vec<[f64; 3]>,
}

fn judge_all(reads: &[Read], history: &History, rules: &Rules, paths: &[String]) -> Verdict {
    let mut layers: HashMap<Layer, LayerVerdict> = HashMap::new();
    let mut failures = Vec::new();
    let mut failure_counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failure_seconds: BTreeMap<&'static str, BTreeMap<u64, usize>> = BTreeMap::new();
    let mut staleness: HashMap<Layer, Vec<f64>> = HashMap::new();
    let mut series: BTreeMap<u64, [f64; 2]> = BTreeMap::new();
    let mut violations = 0;
    let mut edges: BTreeMap<u8, EdgeVerdict> = BTreeMap::new();
    for read in reads {
        let path = paths.get(read.path as usize).cloned().unwrap_or_default();
        if let Some(edge) = read.edge {
            let ev = edges.entry(edge).or_default();
            ev.reads += 1;
            ev.hits += usize::from(read.edge_hit);
            ev.refills_from_shield += usize::from(read.refilled);
        }
        let lv = layers.entry(read.layer).or_default();
        lv.reads += 1;
        *lv.by_status.entry(read.status).or_default() += 1;
        lv.edge_hits += usize::from(read.edge_hit);
        let mut fail = |kind: &'static str, detail: String| {
            *failure_counts.entry(kind).or_default() += 1;
            *failure_seconds.entry(kind).or_default().entry(read.at as u64).or_default() += 1;
            let detail = match &read.instance {
                Some(i) => format!("instance {i}; {detail}"),
                None => detail,
            };
            let detail = match read.edge {
                Some(edge) => format!("edge cache {edge}; {detail}"),
                None => detail,
            };
            failures.push(Failure {
                kind,
                at: read.at,
                layer: read.layer,
                path: path.clone(),
                status: read.status,
                detail,
            });
        };
        let in_outage = rules.in_db_outage(read.layer, read.at, read.at + f64::from(read.latency_ms) / 1e3);
        match read.status {
            0 => fail("no answer", String::new()),
            429 if read.edge_hit => fail("429 served from the edge cache", String::new()),
            503 if !in_outage => fail("503 outside a database outage", String::new()),
            s if s >= 500 && s != 503 => fail("5xx other than 503", String::new()),
            _ => {}
        }
        if read.stale {
            lv.stale_answers += 1;
            if !in_outage {
                lv.stale_answers_outside_outage += 1;
                fail("stale answer outside a database outage", String::new());
            }
        }
        let Some(facts) = &read.facts else {
            if read.status == 200 && writers::judged(&path) {
                lv.unreadable += 1;
                fail("unreadable body", String::new());
            }
            continue;
        };
        lv.judged += 1;
        let mut worst = Judgement::Fresh { staleness: 0.0 };
        let mut worst_key = None;
        for &(key, state) in facts {
            let judgement = checker::judge(&history.histories[key as usize], rules, read.layer, read.at, state);
            let rank = |j: &Judgement| match j {
                Judgement::Fresh { staleness } => (0, *staleness),
                Judgement::Excused { staleness } => (1, *staleness),
                Judgement::Violation { staleness, .. } => (2, *staleness),
            };
            if rank(&judgement) > rank(&worst) {
                worst = judgement;
                worst_key = Some((key, state));
            }
        }
        let s = match worst {
            Judgement::Fresh { staleness } => {
                lv.fresh += 1;
                staleness
            }
            Judgement::Excused { staleness } => {
                lv.excused_by_outage += 1;
                staleness
            }
            Judgement::Violation { staleness, required } => {
                if read.stale && in_outage {
                    // Served stale on purpose while the database was down: counted, not judged.
                    lv.excused_by_outage += 1;
                } else {
                    lv.violations += 1;
                    violations += 1;
                    if let Some(edge) = read.edge {
                        edges.entry(edge).or_default().violations += 1;
                    }
                    let (key, state) = worst_key.unwrap_or_default();
                    let h = &history.histories[key as usize];
                    let entry = h.entries.get(required);
                    fail(
                        "freshness violation",
                        format!(
                            "{} showed {:?}; {:?} committed at {:.3} s (bound {:.1} s)",
                            history.key_name(key),
                            history.state_name(state),
                            entry.map(|e| history.state_name(e.state)).unwrap_or_default(),
                            entry.and_then(|e| e.committed).unwrap_or_default(),
                            if read.layer == Layer::Edge { rules.edge_bound } else { rules.instance_bound },
                        ),
                    );
                }
                staleness
            }
        };
        staleness.entry(read.layer).or_default().push(s * 1e3);
        let slot = series.entry(read.at as u64).or_default();
        let i = usize::from(read.layer == Layer::Instance);
        slot[i] = slot[i].max(s);
    }
    for (layer, mut samples) in staleness {
        samples.sort_by(f64::total_cmp);
        let lv = layers.entry(layer).or_default();
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            lv.staleness_ms.insert(name, testbed::percentile(&samples, p));
        }
    }
    Verdict {
        layers,
        edges,
        failures,
        failure_counts,
        failure_seconds,
        violations,
        series: series.into_iter().map(|(t, [e, i])| [t as f64, e, i]).collect(),
    }
}

/// The first `n` failures of each kind.
fn first_of_each(failures: &[Failure], n: usize) -> Vec<&Failure> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    failures
        .iter()
        .filter(|f| {
            let count = seen.entry(f.kind).or_default();
            *count += 1;
            *count <= n
        })
        .collect()
}

/// The first failure of each kind on each path, for at most `n` paths: a later burst on another
/// page (one no viewer follows, found stale long after its change) is named too, where
/// `first_failures` keeps only the run's first few of each kind.
fn first_per_path(failures: &[Failure], n: usize) -> Vec<&Failure> {
    let mut seen = std::collections::HashSet::new();
    failures.iter().filter(|f| seen.insert((f.kind, f.path.as_str()))).take(n).collect()
}

/// Viewer latency per layer, and at the edge in the ten seconds after each deploy.
fn latency(reads: &[Read], deploys: &[(f64, f64)]) -> Value {
    let summarize = |samples: Vec<f64>| json!({ "n": samples.len(), "p50": pct(&samples, 50.0), "p99": pct(&samples, 99.0), "max": pct(&samples, 100.0) });
    let of = |layer: Layer| reads.iter().filter(|r| r.layer == layer).map(|r| f64::from(r.latency_ms)).collect();
    let flush = reads
        .iter()
        .filter(|r| r.layer == Layer::Edge && deploys.iter().any(|&(a, b)| r.at >= a && r.at <= b))
        .map(|r| f64::from(r.latency_ms))
        .collect();
    json!({ "edge": summarize(of(Layer::Edge)), "instance": summarize(of(Layer::Instance)), "edge_after_deploy": summarize(flush) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restart_that_fails_or_leaves_the_server_down_is_a_harness_failure() {
        // A port nothing listens on: the "restarted" server never comes back.
        let down = format!("postgres://soak:soak@{}/soak", testbed::free_addr().unwrap());
        let limit = Duration::from_millis(300);
        let err = restart("true", &down, limit).await.unwrap_err();
        assert!(err.contains("did not accept a connection"), "{err}");
        let err = restart("exit 3", &down, limit).await.unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }

    #[tokio::test]
    async fn a_stop_or_freeze_waits_for_something_to_act_on_and_says_when_nothing_came() {
        // Nothing to act on for the first calls, then three (an invocation started).
        let mut calls = 0;
        let acted = until_some(Duration::from_secs(60), || {
            calls += 1;
            if calls < 3 { 0 } else { 3 }
        })
        .await;
        assert_eq!((acted, calls), (3, 3));
        // Never anything: it gives up once its length has passed, and says it acted on nothing.
        assert_eq!(until_some(Duration::from_millis(120), || 0).await, 0);
    }
}
