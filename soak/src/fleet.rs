//! A fleet of `api` processes run the way Lambda runs a function, behind a front that behaves like
//! its Function URL.
//!
//! - Each instance is the release binary in Lambda mode with a Runtime API of its own (an HTTP
//!   server in this process), handed one event at a time.
//! - A request goes to an idle instance of the current build (the most recently used, as warm
//!   instances are reused). With none idle a new one starts, a real cold start, up to the reserved
//!   concurrency; past it the front answers `429` as Lambda does.
//! - An instance is frozen (`SIGSTOP`) when it asks for its next event and none is waiting, and
//!   thawed (`SIGCONT`) when one arrives: its background work does not run while it is idle.
//! - An instance idle for `idle_retire`, or of a build no longer current, is retired: `SIGTERM`,
//!   500 ms to exit, then `SIGKILL`. Its database connections must be gone afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::{lock, signal};

/// How the fleet's instances are started.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub api: PathBuf,
    /// Instance `n` reaches the database as `sources[n % len]` says (directly, through the pooler,
    /// through a proxy, from a secret naming the server, from one naming the pooler).
    pub sources: Vec<Source>,
    /// Settings every instance gets.
    pub env: Vec<(String, String)>,
    /// Lambda's reserved concurrency: at most this many instances at once.
    pub reserved: usize,
    pub idle_retire: Duration,
    pub memory_mb: u32,
    /// The function timeout.
    pub timeout: Duration,
    /// Where the instances' logs go.
    pub log: PathBuf,
    /// A database URL the fleet may read `pg_stat_activity` with.
    pub monitor_url: String,
}

/// How an instance reaches the database.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name in failures' details and the report.
    pub name: &'static str,
    /// Settings that say where the database is (`DATABASE_URL`, or a secret's).
    pub env: Vec<(String, String)>,
    /// Through the pooler: its server connections are shared, so a retired instance's connections
    /// are not checked by name.
    pub pooled: bool,
}

impl Source {
    /// An instance given `url`.
    pub fn url(name: &'static str, url: &str, pooled: bool) -> Self {
        Self { name, env: vec![("DATABASE_URL".to_owned(), url.to_owned())], pooled }
    }
}

/// What the fleet did, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FleetStats {
    pub invocations: u64,
    pub cold_starts: u64,
    pub throttles: u64,
    /// Invocations that ended without a response (the instance died, or reported an error).
    pub function_errors: u64,
    pub timeouts: u64,
    pub retired: u64,
    /// Retired instances that had not exited 500 ms after SIGTERM.
    pub killed_after_shutdown_window: u64,
    /// Retired instances whose database connections were still open 10 s after they exited.
    pub lingering_connections: u64,
    /// Instances that exited on their own.
    pub crashed: u64,
    pub peak_instances: usize,
    /// Spawn → first request for an event, per cold start.
    pub init_ms: Vec<f64>,
    pub deploys: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Busy,
    Idle(Instant),
    /// Kept frozen by a fault until then.
    Held(Instant),
    Retiring,
}

#[derive(Debug)]
struct Slot {
    instance: Arc<Instance>,
    status: Status,
    last_used: Instant,
}

#[derive(Debug)]
struct Instance {
    id: u64,
    build: String,
    pooled: bool,
    runtime: Arc<Runtime>,
    exited: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct Fleet {
    slots: Vec<Slot>,
    /// Instances being started (counted against the reserved concurrency).
    starting: usize,
    next_id: u64,
    build: String,
    /// The run is over: no invocation starts, those running finish.
    closing: bool,
}

/// The front and the fleet behind it.
#[derive(Debug, Clone)]
pub struct Front {
    config: Arc<FleetConfig>,
    /// Every instance's pid, and whether it reached PostgreSQL through the pooler.
    pids: Arc<Mutex<HashMap<u32, bool>>>,
    fleet: Arc<Mutex<Fleet>>,
    stats: Arc<Mutex<FleetStats>>,
}

#[derive(Debug)]
enum Reply {
    Response(Value),
    Error,
}

#[derive(Debug)]
struct Pending {
    event: Value,
    reply: oneshot::Sender<Reply>,
}

/// One instance's Runtime API.
#[derive(Debug)]
struct Runtime {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    sender: mpsc::UnboundedSender<Pending>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    pid: AtomicU32,
    next_id: AtomicU64,
    spawned: Instant,
    initialized: OnceLock<Duration>,
    timeout: Duration,
}

impl Front {
    pub fn new(config: FleetConfig, build: &str) -> Self {
        let fleet = Fleet { build: build.to_owned(), ..Fleet::default() };
        let front = Self {
            config: Arc::new(config),
            pids: Arc::default(),
            fleet: Arc::new(Mutex::new(fleet)),
            stats: Arc::default(),
        };
        tokio::spawn(front.clone().reap());
        front
    }

    /// The front's HTTP server (the Function URL).
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback(front).with_state(self.clone())
    }

    pub fn stats(&self) -> FleetStats {
        lock(&self.stats).clone()
    }

    /// Whether the instance with this pid reached PostgreSQL through the pooler (`None`: not an
    /// instance of this fleet).
    pub fn pooled(&self, pid: u32) -> Option<bool> {
        lock(&self.pids).get(&pid).copied()
    }

    /// Instances alive now.
    pub fn instances(&self) -> usize {
        let fleet = lock(&self.fleet);
        fleet.slots.len() + fleet.starting
    }

    /// A new build: new events go to new instances; idle ones of the old build are retired.
    pub fn deploy(&self, build: &str) {
        lock(&self.fleet).build = build.to_owned();
        lock(&self.stats).deploys += 1;
    }

    /// Keeps up to `count` idle instances frozen for `length` (they take no events meanwhile).
    pub fn hold(&self, count: usize, length: Duration) -> usize {
        let until = Instant::now() + length;
        let mut fleet = lock(&self.fleet);
        let mut held = 0;
        for slot in fleet.slots.iter_mut().filter(|s| matches!(s.status, Status::Idle(_))).take(count) {
            slot.status = Status::Held(until);
            held += 1;
        }
        held
    }

    /// Retires every instance (the end of the soak).
    pub async fn shutdown(&self) {
        // As Lambda lets a running invocation finish: what is still in flight when the viewers
        // stop (an edge's background refresh, a warm request) ends first, within the invocation
        // timeout, and nothing new starts. Retiring a busy instance would drop its answer.
        lock(&self.fleet).closing = true;
        let until = Instant::now() + self.config.timeout;
        while Instant::now() < until {
            let busy = {
                let fleet = lock(&self.fleet);
                fleet.starting > 0 || fleet.slots.iter().any(|s| s.status == Status::Busy)
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let instances: Vec<Arc<Instance>> = {
            let mut fleet = lock(&self.fleet);
            fleet.build = String::new();
            fleet.slots.iter_mut().for_each(|s| s.status = Status::Retiring);
            fleet.slots.iter().map(|s| s.instance.clone()).collect()
        };
        futures_util::future::join_all(instances.into_iter().map(|i| self.clone().retire(i, false))).await;
    }

    /// Runs one invocation; returns the response and which instance answered (`id/route`).
    async fn invoke(&self, event: Value) -> Result<(Value, String), StatusCode> {
        lock(&self.stats).invocations += 1;
        let chosen = {
            let mut fleet = lock(&self.fleet);
            if fleet.closing {
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
            let build = fleet.build.clone();
            let live = fleet.slots.len() + fleet.starting;
            let idle = fleet
                .slots
                .iter_mut()
                .filter(|s| matches!(s.status, Status::Idle(_)) && s.instance.build == build)
                .max_by_key(|s| s.last_used);
            if let Some(slot) = idle {
                slot.status = Status::Busy;
                Ok(slot.instance.clone())
            } else if live < self.config.reserved {
                fleet.starting += 1;
                fleet.next_id += 1;
                Err((fleet.next_id, build))
            } else {
                drop(fleet);
                lock(&self.stats).throttles += 1;
                return Err(StatusCode::TOO_MANY_REQUESTS);
            }
        };
        let instance = match chosen {
            Ok(instance) => instance,
            Err((id, build)) => {
                let started = self.start(id, &build).await;
                let mut fleet = lock(&self.fleet);
                fleet.starting -= 1;
                let instance = match started {
                    Ok(instance) => instance,
                    Err(e) => {
                        eprintln!("soak: instance {id} did not start: {e:#}");
                        drop(fleet);
                        lock(&self.stats).function_errors += 1;
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                };
                fleet.slots.push(Slot { instance: instance.clone(), status: Status::Busy, last_used: Instant::now() });
                let live = fleet.slots.len() + fleet.starting;
                drop(fleet);
                let mut stats = lock(&self.stats);
                stats.cold_starts += 1;
                stats.peak_instances = stats.peak_instances.max(live);
                instance
            }
        };

        let (reply, answer) = oneshot::channel();
        let _ = instance.runtime.sender.send(Pending { event, reply });
        let outcome = tokio::time::timeout(self.config.timeout, answer).await;
        let route = self.config.sources[instance.id as usize % self.config.sources.len()].name;
        let mut fleet = lock(&self.fleet);
        let slot = fleet.slots.iter_mut().find(|s| s.instance.id == instance.id);
        match outcome {
            Ok(Ok(Reply::Response(response))) => {
                if let Some(slot) = slot
                    && slot.status == Status::Busy
                {
                    slot.status = Status::Idle(Instant::now());
                    slot.last_used = Instant::now();
                }
                Ok((response, format!("{}/{}", instance.id, route)))
            }
            Ok(Ok(Reply::Error) | Err(_)) => {
                if let Some(slot) = slot
                    && slot.status == Status::Busy
                {
                    slot.status = Status::Idle(Instant::now());
                }
                drop(fleet);
                lock(&self.stats).function_errors += 1;
                Err(StatusCode::BAD_GATEWAY)
            }
            Err(_) => {
                // Lambda ends an instance whose invocation timed out.
                if let Some(slot) = slot {
                    slot.status = Status::Retiring;
                }
                drop(fleet);
                signal(instance.runtime.pid.load(Ordering::Relaxed), Signal::SIGKILL);
                lock(&self.stats).timeouts += 1;
                Err(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// Starts instance `id`: its Runtime API, then the process. Returns once it is spawned (its
    /// first event is waiting for it, as on Lambda, where a cold start is caused by an event).
    async fn start(&self, id: u64, build: &str) -> anyhow::Result<Arc<Instance>> {
        let (sender, events) = mpsc::unbounded_channel();
        let runtime = Arc::new(Runtime {
            events: tokio::sync::Mutex::new(events),
            sender,
            in_flight: Mutex::default(),
            pid: AtomicU32::new(0),
            next_id: AtomicU64::new(0),
            spawned: Instant::now(),
            initialized: OnceLock::new(),
            timeout: self.config.timeout,
        });
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(failed))
            .route("/2018-06-01/runtime/init/error", post(|| async { StatusCode::ACCEPTED }))
            .merge(testbed::runtime::extensions_api())
            .with_state(runtime.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let source = &self.config.sources[id as usize % self.config.sources.len()];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.config.log)?;
        let mut child = tokio::process::Command::new(&self.config.api)
            .env_clear()
            .envs(testbed::runtime::lambda_env(addr, self.config.memory_mb))
            .envs(source.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BUILD_ID", build)
            .envs(self.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        runtime.pid.store(pid, Ordering::Relaxed);
        lock(&self.pids).insert(pid, source.pooled);
        let (exit_tx, exited) = watch::channel(false);
        {
            let (runtime, front) = (runtime.clone(), self.clone());
            tokio::spawn(async move {
                let _ = child.wait().await;
                server.abort();
                // Whatever it was handed is lost: its callers get a function error.
                lock(&runtime.in_flight).clear();
                runtime.events.lock().await.close();
                let _ = exit_tx.send(true);
                if let Some(init) = runtime.initialized.get() {
                    lock(&front.stats).init_ms.push(init.as_secs_f64() * 1e3);
                }
                let mut fleet = lock(&front.fleet);
                let before = fleet.slots.len();
                let crashed = fleet.slots.iter().any(|s| s.instance.id == id && s.status != Status::Retiring);
                fleet.slots.retain(|s| s.instance.id != id);
                let gone = before != fleet.slots.len();
                drop(fleet);
                if gone && crashed {
                    lock(&front.stats).crashed += 1;
                }
            });
        }
        Ok(Arc::new(Instance { id, build: build.to_owned(), pooled: source.pooled, runtime, exited }))
    }

    /// Every 250 ms: ends holds, retires instances idle too long or of an old build.
    async fn reap(self) {
        let mut timer = tokio::time::interval(Duration::from_millis(250));
        loop {
            timer.tick().await;
            let now = Instant::now();
            let retiring: Vec<Arc<Instance>> = {
                let mut fleet = lock(&self.fleet);
                let build = fleet.build.clone();
                let mut retiring = Vec::new();
                for slot in &mut fleet.slots {
                    match slot.status {
                        Status::Held(until) if until <= now => slot.status = Status::Idle(now),
                        Status::Idle(since)
                            if slot.instance.build != build || now - since >= self.config.idle_retire =>
                        {
                            slot.status = Status::Retiring;
                            retiring.push(slot.instance.clone());
                        }
                        _ => {}
                    }
                }
                retiring
            };
            for instance in retiring {
                tokio::spawn(self.clone().retire(instance, true));
            }
        }
    }

    /// SIGTERM, 500 ms to exit, SIGKILL; then checks that its connections are gone.
    async fn retire(self, instance: Arc<Instance>, check: bool) {
        let pid = instance.runtime.pid.load(Ordering::Relaxed);
        signal(pid, Signal::SIGTERM);
        signal(pid, Signal::SIGCONT);
        let mut exited = instance.exited.clone();
        let in_time = tokio::time::timeout(Duration::from_millis(500), exited.wait_for(|e| *e)).await.is_ok();
        if !in_time {
            signal(pid, Signal::SIGKILL);
            let _ = exited.wait_for(|e| *e).await;
        }
        {
            let mut stats = lock(&self.stats);
            stats.retired += 1;
            if !in_time {
                stats.killed_after_shutdown_window += 1;
            }
        }
        if check && !instance.pooled && self.lingers(pid).await {
            lock(&self.stats).lingering_connections += 1;
        }
    }

    /// Whether connections named after `pid` are still open 10 s after it exited.
    async fn lingers(&self, pid: u32) -> bool {
        let name = format!("edgerail-api-{pid}");
        // One connection for every look (reopened only if it fails, as in a database restart).
        let mut conn: Option<sqlx::PgConnection> = None;
        for _ in 0..40 {
            if conn.is_none() {
                conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.config.monitor_url).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                let open: Result<i64, _> =
                    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                        .bind(&name)
                        .fetch_one(&mut *c)
                        .await;
                match open {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        true
    }
}

async fn next(State(runtime): State<Arc<Runtime>>) -> Response {
    runtime.initialized.get_or_init(|| runtime.spawned.elapsed());
    let mut events = runtime.events.lock().await;
    let pending = match events.try_recv() {
        Ok(pending) => Some(pending),
        Err(_) => {
            // Nothing waiting: frozen until an event arrives, as Lambda freezes an idle instance.
            let pid = runtime.pid.load(Ordering::Relaxed);
            signal(pid, Signal::SIGSTOP);
            let pending = events.recv().await;
            signal(pid, Signal::SIGCONT);
            pending
        }
    };
    drop(events);
    let Some(Pending { event, reply }) = pending else {
        return std::future::pending().await;
    };
    let id = format!("soak-{}", runtime.next_id.fetch_add(1, Ordering::Relaxed));
    lock(&runtime.in_flight).insert(id.clone(), reply);
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(runtime.timeout)
        .as_millis()
        .to_string();
    testbed::runtime::invocation(&id, &deadline, event)
}

async fn respond(State(runtime): State<Arc<Runtime>>, Path(id): Path<String>, body: bytes::Bytes) -> StatusCode {
    if let Some(reply) = lock(&runtime.in_flight).remove(&id) {
        let _ = reply.send(serde_json::from_slice(&body).map_or(Reply::Error, Reply::Response));
    }
    StatusCode::ACCEPTED
}

async fn failed(State(runtime): State<Arc<Runtime>>, Path(id): Path<String>) -> StatusCode {
    if let Some(reply) = lock(&runtime.in_flight).remove(&id) {
        let _ = reply.send(Reply::Error);
    }
    StatusCode::ACCEPTED
}

/// The Function URL: a request becomes an event (as CloudFront forwards it), its response an answer.
async fn front(State(front): State<Front>, request: Request) -> Response {
    let event = event_of(&request);
    match front.invoke(event).await {
        Ok((response, instance)) => {
            let mut answer = answer_of(&response);
            // Which instance answered, as Lambda's request id would let one find it in the logs.
            if let Ok(value) = HeaderValue::from_str(&instance) {
                answer.headers_mut().insert("x-soak-instance", value);
            }
            answer
        }
        Err(StatusCode::TOO_MANY_REQUESTS) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("x-amzn-errortype", "TooManyRequestsException"), ("content-type", "application/json")],
            r#"{"Message":"Rate Exceeded."}"#,
        )
            .into_response(),
        Err(status) => (status, [("content-type", "application/json")], r#"{"Message":null}"#).into_response(),
    }
}

fn event_of(request: &Request) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in request.headers() {
        let value = value.to_str().unwrap_or_default();
        headers
            .entry(name.as_str())
            .and_modify(|v| *v = Value::String(format!("{},{value}", v.as_str().unwrap_or_default())))
            .or_insert_with(|| Value::String(value.to_owned()));
    }
    let uri = request.uri();
    testbed::runtime::function_url_request(request.method().as_str(), uri.path(), uri.query().unwrap_or(""), headers)
}

fn answer_of(response: &Value) -> Response {
    let status = response["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    if let Some(map) = response["headers"].as_object() {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) =
                (axum::http::HeaderName::from_bytes(name.as_bytes()), value.as_str().map(HeaderValue::from_str))
            {
                headers.append(name, value);
            }
        }
    }
    let text = response["body"].as_str().unwrap_or_default();
    let body = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let mut answer = Response::new(Body::from(body));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}
