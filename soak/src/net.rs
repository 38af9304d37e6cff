//! The soak's network faults: a TCP proxy that can black-hole its connections or slow some of
//! them down, and the two ways invalidations reach the edge caches, each of which can refuse,
//! stall or answer slowly: a gate in front of their purge endpoints, and a stand-in for
//! CloudFront's API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A switch a fault turns on for a while.
#[derive(Debug, Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    pub fn on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// On for `length`, then off: a fault's window.
    pub async fn hold(&self, length: Duration) {
        self.set(true);
        tokio::time::sleep(length).await;
        self.set(false);
    }

    /// Waits while the switch is on.
    async fn pass(&self) {
        while self.on() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Slow links a fault sets for a while: while set (a nonzero seed), every connection delivers
/// what the server sends late, each by its own delay of 0.5–8 s drawn anew each window, as a
/// congested path or an overloaded replica slows some round trips by much and others by little.
#[derive(Debug, Clone, Default)]
pub struct Delay(Arc<AtomicU64>);

impl Delay {
    /// Slows links from now on, each by a delay drawn from `seed` (0: none).
    pub fn set(&self, seed: u64) {
        self.0.store(seed, Ordering::SeqCst);
    }

    /// The delay of connection `connection` in this window.
    fn of(&self, connection: u64) -> Duration {
        let seed = self.0.load(Ordering::SeqCst);
        if seed == 0 {
            return Duration::ZERO;
        }
        let mut rng = fastrand::Rng::with_seed(seed ^ connection.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Duration::from_millis(rng.u64(500..8000))
    }
}

/// Forwards TCP connections to `upstream`. While `hole` is on nothing moves in either direction,
/// not even a close, and new connections are accepted but not connected onwards: a network
/// partition as the two ends see it. When it ends, what was held is delivered. While `slow` is
/// set, each connection delivers each piece the server sends its own delay later: round trips
/// of seconds on the connections of some instances (those behind this proxy).
pub async fn proxy(upstream: SocketAddr, hole: Switch, slow: Delay) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut connections = 0u64;
        while let Ok((client, _)) = listener.accept().await {
            connections += 1;
            let (hole, slow) = (hole.clone(), Some((slow.clone(), connections)));
            tokio::spawn(async move {
                hole.pass().await;
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, hole.clone(), None));
                let down = tokio::spawn(pipe(server_read, client_write, hole, slow));
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(addr)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hole: Switch,
    slow: Option<(Delay, u64)>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        hole.pass().await;
        if let Some(delay) = slow.as_ref().map(|(slow, connection)| slow.of(*connection)).filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    hole.pass().await;
    let _ = to.shutdown().await;
}

/// How a purge reaches the cache layers (every edge cache, and the shield if there is one): each
/// after a random delay up to `within`, so in a random order, as CloudFront's locations and its
/// Origin Shield may get an invalidation. Counts the purges each layer took.
#[derive(Debug, Clone)]
pub struct Propagation {
    layers: Arc<Vec<String>>,
    within: Duration,
    rng: Arc<std::sync::Mutex<fastrand::Rng>>,
    purged: Arc<Vec<AtomicU64>>,
}

impl Propagation {
    /// `layers` by base URL; delays drawn from a generator seeded with `seed`.
    pub fn new(layers: Vec<String>, within: Duration, seed: u64) -> Self {
        let purged = Arc::new(layers.iter().map(|_| AtomicU64::new(0)).collect());
        Self {
            layers: Arc::new(layers),
            within,
            rng: Arc::new(std::sync::Mutex::new(fastrand::Rng::with_seed(seed))),
            purged,
        }
    }

    /// Purges each layer took so far, in the order of `layers`.
    pub fn purged(&self) -> Vec<u64> {
        self.purged.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// Purges `paths` on every layer as CloudFront propagates one invalidation: each layer after
    /// its own random delay, all the paths at once there. Retries a layer that refuses, a few
    /// times (the invalidation completes anyway at CloudFront). For a propagation above zero.
    async fn propagate(&self, client: &reqwest::Client, paths: &[String]) {
        let method = reqwest::Method::from_bytes(b"PURGE").unwrap_or(reqwest::Method::DELETE);
        let delays = self.delays();
        let layers = self.layers.iter().zip(delays).enumerate().map(|(n, (layer, delay))| {
            let method = method.clone();
            async move {
                tokio::time::sleep(delay).await;
                self.purged[n].fetch_add(1, Ordering::Relaxed);
                for path in paths {
                    for _ in 0..5 {
                        let sent = client.request(method.clone(), format!("{layer}{path}")).send().await;
                        if sent.is_ok_and(|res| res.status().is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        futures_util::future::join_all(layers).await;
    }

    fn delays(&self) -> Vec<Duration> {
        let ms = u64::try_from(self.within.as_millis()).unwrap_or(u64::MAX);
        let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.layers.iter().map(|_| Duration::from_millis(if ms == 0 { 0 } else { rng.u64(0..=ms) })).collect()
    }
}

#[derive(Debug, Clone)]
struct Gate {
    propagation: Propagation,
    client: reqwest::Client,
    down: Switch,
    stalled: Switch,
    requests: Arc<AtomicU64>,
}

impl Gate {
    fn new(propagation: Propagation, down: Switch, stalled: Switch) -> Self {
        Self { propagation, client: reqwest::Client::new(), down, stalled, requests: Arc::default() }
    }

    /// The invalidation API's faults as a request meets them. While `down` is on every request
    /// is refused. While `stalled` is on, requests take turns: one waits for the stall to end and
    /// is then refused; one is carried out and then answers nothing until the stall ends (the
    /// caller's timeout loses an answer to a request that took effect, and its retry must cope);
    /// one is carried out a second and a half late, inside the warmer's two-second bound.
    async fn fault(&self) -> Met {
        if self.down.on() {
            return Met::Refused("the invalidation endpoint is down (soak fault)");
        }
        if self.stalled.on() {
            match self.requests.fetch_add(1, Ordering::SeqCst) % 3 {
                0 => {
                    self.stalled.pass().await;
                    return Met::Refused("the invalidation endpoint stalled (soak fault)");
                }
                1 => return Met::Through { then_hang: true },
                _ => tokio::time::sleep(Duration::from_millis(1500)).await,
            }
        }
        Met::Through { then_hang: false }
    }

    /// Holds a request carried out under [`Met::Through`] until the stall ends, if it must hang.
    async fn answer_after(&self, met: Met) {
        if matches!(met, Met::Through { then_hang: true }) {
            self.stalled.pass().await;
        }
    }

    /// Sends `method target` with `headers` to every cache layer, each after its propagation
    /// delay: the first failure among their answers, else the first answer, once all answered.
    async fn to_every_edge(
        &self,
        method: &axum::http::Method,
        target: &str,
        headers: &axum::http::HeaderMap,
    ) -> (StatusCode, axum::body::Bytes) {
        let delays = self.propagation.delays();
        let layers = self.propagation.layers.iter().zip(delays).enumerate();
        let purges = layers.map(|(n, (edge, delay))| {
            let mut forwarded = self.client.request(method.clone(), format!("{edge}{target}"));
            for (name, value) in headers {
                if name != "host" && name != "content-length" {
                    forwarded = forwarded.header(name, value);
                }
            }
            let purged = self.propagation.purged.clone();
            async move {
                tokio::time::sleep(delay).await;
                purged[n].fetch_add(1, Ordering::Relaxed);
                match forwarded.send().await {
                    Ok(res) => (res.status(), res.bytes().await.unwrap_or_default()),
                    Err(_) => (StatusCode::BAD_GATEWAY, axum::body::Bytes::new()),
                }
            }
        });
        let answers = futures_util::future::join_all(purges).await;
        let worst = answers.iter().position(|(status, _)| !status.is_success()).unwrap_or(0);
        answers.into_iter().nth(worst).unwrap_or((StatusCode::BAD_GATEWAY, axum::body::Bytes::new()))
    }
}

/// What a request to the invalidation API met (see `Gate::fault`).
#[derive(Debug, Clone, Copy)]
enum Met {
    Refused(&'static str),
    Through { then_hang: bool },
}

/// Forwards the warmer's PURGE requests to every edge cache of `edges`, as an invalidation reaches
/// every CloudFront location, and answers the first failure among theirs, if any. While `down` or
/// `stalled` is on, the invalidation API refuses, hangs or crawls (see `Gate::fault`), with `503`.
pub async fn purge_gate(edges: Propagation, down: Switch, stalled: Switch) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(Gate::new(edges, down, stalled));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn forward(State(gate): State<Gate>, request: Request) -> Response {
    let met = gate.fault().await;
    if let Met::Refused(why) = met {
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let answer = gate.to_every_edge(request.method(), &target, request.headers()).await;
    gate.answer_after(met).await;
    answer.into_response()
}

/// The CloudFront API as the warmer's `cloudfront` backend calls it (`CreateInvalidation`,
/// `GetInvalidation`, in CloudFront's XML), for the soak's invocations on that backend: their SDK,
/// its timeouts and its retries run for real. Without a propagation, an invalidation's paths are
/// purged on every cache layer (a trailing `*` purges the prefix, as `local/varnish.vcl` does it)
/// before it is accepted, `InProgress`, and asked again it is `Completed`. With one, it is accepted
/// at once and reaches each layer after its own delay, the whole batch together; it is `Completed`
/// once every layer has it (see [`Propagation`]). A caller reference it has seen gets that
/// invalidation back, as CloudFront answers a retried batch (`InProgress` while its purge runs).
/// The same faults as the purge gate refuse, hang or slow it, with CloudFront's `503
/// ServiceUnavailable`.
pub async fn cloudfront_api(edges: Propagation, down: Switch, stalled: Switch) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api =
        CloudFrontApi { gate: Gate::new(edges, down, stalled), accepted: Arc::default(), last_id: Arc::default() };
    let app = axum::Router::new()
        .route("/2020-05-31/distribution/{distribution}/invalidation", axum::routing::post(create_invalidation))
        .route("/2020-05-31/distribution/{distribution}/invalidation/{id}", axum::routing::get(get_invalidation))
        .with_state(api);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

#[derive(Debug, Clone)]
struct CloudFrontApi {
    gate: Gate,
    /// Every invalidation accepted, and those being carried out.
    accepted: Arc<std::sync::Mutex<Vec<Accepted>>>,
    /// The last invalidation id given.
    last_id: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
struct Accepted {
    id: String,
    reference: String,
    paths: Vec<String>,
    /// Its paths are purged on every edge.
    done: bool,
}

const CLOUDFRONT_XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";

async fn create_invalidation(
    State(api): State<CloudFrontApi>,
    axum::extract::Path(distribution): axum::extract::Path<String>,
    body: String,
) -> Response {
    let met = api.gate.fault().await;
    if let Met::Refused(why) = met {
        return cloudfront_error(StatusCode::SERVICE_UNAVAILABLE, "Receiver", "ServiceUnavailable", why);
    }
    let (paths, reference) = (xml_elements(&body, "Path"), xml_elements(&body, "CallerReference"));
    let Some(reference) = reference.into_iter().next() else {
        return cloudfront_error(StatusCode::BAD_REQUEST, "Sender", "MissingBody", "no CallerReference");
    };
    if paths.is_empty() {
        return cloudfront_error(StatusCode::BAD_REQUEST, "Sender", "InvalidArgument", "no paths");
    }
    // Looked up and, if new, recorded at once: two requests with one reference make one
    // invalidation, as at CloudFront.
    let (id, new) = {
        let mut accepted = api.accepted();
        match accepted.iter().find(|a| a.reference == reference) {
            Some(known) if known.paths == paths => (known.id.clone(), false),
            Some(_) => {
                return cloudfront_error(
                    StatusCode::CONFLICT,
                    "Sender",
                    "InvalidationBatchAlreadyExists",
                    "a different batch was sent with this caller reference",
                );
            }
            None => {
                let id = format!("I{:012X}", api.last_id.fetch_add(1, Ordering::SeqCst) + 1);
                accepted.push(Accepted {
                    id: id.clone(),
                    reference: reference.clone(),
                    paths: paths.clone(),
                    done: false,
                });
                (id, true)
            }
        }
    };
    if new && !api.gate.propagation.within.is_zero() {
        // Accepted and in progress while it reaches the layers, each in its own time, the whole
        // batch together: `Completed` once every layer has it.
        let (gate, accepted, id, paths) = (api.gate.clone(), api.accepted.clone(), id.clone(), paths.clone());
        tokio::spawn(async move {
            gate.propagation.propagate(&gate.client, &paths).await;
            let mut accepted = accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(a) = accepted.iter_mut().find(|a| a.id == id) {
                a.done = true;
            }
        });
    } else if new {
        let purge = axum::http::Method::from_bytes(b"PURGE").unwrap_or(axum::http::Method::DELETE);
        for path in &paths {
            let (status, _) = api.gate.to_every_edge(&purge, path, &axum::http::HeaderMap::new()).await;
            if !status.is_success() {
                // Not accepted after all: a retry under the same reference purges again.
                api.accepted().retain(|a| a.id != id);
                return cloudfront_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Receiver",
                    "ServiceUnavailable",
                    "an edge did not take the purge",
                );
            }
        }
        if let Some(accepted) = api.accepted().iter_mut().find(|a| a.id == id) {
            accepted.done = true;
        }
    }
    api.gate.answer_after(met).await;
    let location = format!("https://cloudfront.amazonaws.com/2020-05-31/distribution/{distribution}/invalidation/{id}");
    let body = invalidation_xml(&id, "InProgress", &paths, &reference);
    (StatusCode::CREATED, [("location", location.as_str()), ("content-type", "text/xml")], body).into_response()
}

async fn get_invalidation(
    State(api): State<CloudFrontApi>,
    axum::extract::Path((_, id)): axum::extract::Path<(String, String)>,
) -> Response {
    let met = api.gate.fault().await;
    if let Met::Refused(why) = met {
        return cloudfront_error(StatusCode::SERVICE_UNAVAILABLE, "Receiver", "ServiceUnavailable", why);
    }
    let known = api.accepted().iter().find(|a| a.id == id).cloned();
    api.gate.answer_after(met).await;
    match known {
        Some(a) => {
            let status = if a.done { "Completed" } else { "InProgress" };
            ([("content-type", "text/xml")], invalidation_xml(&a.id, status, &a.paths, &a.reference)).into_response()
        }
        None => cloudfront_error(StatusCode::NOT_FOUND, "Sender", "NoSuchInvalidation", "no such invalidation"),
    }
}

impl CloudFrontApi {
    fn accepted(&self) -> std::sync::MutexGuard<'_, Vec<Accepted>> {
        self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn invalidation_xml(id: &str, status: &str, paths: &[String], reference: &str) -> String {
    let items: String = paths.iter().map(|p| format!("<Path>{}</Path>", xml_escape(p))).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Invalidation xmlns=\"{CLOUDFRONT_XMLNS}\"><Id>{id}</Id>\
         <Status>{status}</Status><CreateTime>{}</CreateTime><InvalidationBatch><Paths><Quantity>{}</Quantity>\
         <Items>{items}</Items></Paths><CallerReference>{}</CallerReference></InvalidationBatch></Invalidation>",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        paths.len(),
        xml_escape(reference),
    )
}

fn cloudfront_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"{CLOUDFRONT_XMLNS}\"><Error><Type>{kind}</Type>\
         <Code>{code}</Code><Message>{}</Message></Error><RequestId>soak</RequestId></ErrorResponse>",
        xml_escape(message)
    );
    (status, [("content-type", "text/xml")], body).into_response()
}

/// The text of every `<name>…</name>` element of `xml`, unescaped (CloudFront's bodies have no
/// attributes on these, nor nested elements).
fn xml_elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    found
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// One answer the edge gave the warmer, as [`recorder`] passed it on.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path and query asked for, as the warmer names the page.
    pub target: String,
    /// When the request reached the recorder, in seconds from the soak's epoch.
    pub sent: f64,
    pub status: u16,
    /// The edge's `Age`: how long before the answer its copy was made (whole seconds).
    pub age: Option<u64>,
    /// Decoded (`None`: an encoding it could not decode).
    pub body: Option<Vec<u8>>,
    /// The newest `SK{n}` formation created when it was sent (what the checker reads a list with).
    pub newest_created: u64,
}

/// Passes the warmer's reads on to `upstream` (the edge cache it reaches) over real HTTP, headers
/// and all, and keeps every answer: the soak judges the very answers the warmer read back.
pub async fn recorder(
    upstream: String,
    epoch: std::time::Instant,
    newest_created: Arc<AtomicU64>,
) -> anyhow::Result<(SocketAddr, Arc<std::sync::Mutex<Vec<Recorded>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let kept: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
    // Idle connections dropped before Varnish closes them (its `timeout_idle`, 5 s), as the
    // viewers' client does: a request on a connection being closed would fail with no answer.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?;
    let state = Recorder { upstream, epoch, newest_created, client, kept: kept.clone() };
    let app = axum::Router::new().fallback(record).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, kept))
}

#[derive(Debug, Clone)]
struct Recorder {
    upstream: String,
    epoch: std::time::Instant,
    newest_created: Arc<AtomicU64>,
    client: reqwest::Client,
    kept: Arc<std::sync::Mutex<Vec<Recorded>>>,
}

async fn record(State(recorder): State<Recorder>, request: Request) -> Response {
    let sent = recorder.epoch.elapsed().as_secs_f64();
    let newest_created = recorder.newest_created.load(Ordering::Relaxed);
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut forwarded = recorder.client.request(request.method().clone(), format!("{}{target}", recorder.upstream));
    for (name, value) in request.headers() {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name, value);
        }
    }
    let Ok(answer) = forwarded.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (age, encoding) = (header("age").and_then(|v| v.parse().ok()), header("content-encoding"));
    let mut headers = answer.headers().clone();
    for hop in ["connection", "transfer-encoding", "content-length"] {
        headers.remove(hop);
    }
    let Ok(body) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    // Kept as the checker reads a body: decoded (the warmer asks for compression, as a browser
    // does); passed on as it came.
    let decoded = decode(encoding.as_deref(), &body);
    recorder.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Recorded {
        target,
        sent,
        status: status.as_u16(),
        age,
        body: decoded,
        newest_created,
    });
    (status, headers, body).into_response()
}

/// `body` decoded from `encoding` (none, `gzip` or `br`); `None` for another, or a body that does
/// not decode.
fn decode(encoding: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    match encoding.map(str::trim) {
        None | Some("" | "identity") => return Some(body.to_vec()),
        Some("gzip") => flate2::read::GzDecoder::new(body).read_to_end(&mut out).ok()?,
        Some("br") => brotli::Decompressor::new(body, 4096).read_to_end(&mut out).ok()?,
        Some(_) => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn slow_links_slow_each_connection_by_its_own_delay() {
        let slow = Delay::default();
        assert!((1..200).all(|c| slow.of(c).is_zero()), "none while unset");
        slow.set(2168);
        let delays: Vec<Duration> = (1..=200).map(|c| slow.of(c)).collect();
        assert!(delays.iter().all(|d| (Duration::from_millis(500)..Duration::from_secs(8)).contains(d)));
        assert!(
            delays.iter().any(|d| *d < Duration::from_secs(2)) && delays.iter().any(|d| *d > Duration::from_secs(6))
        );
        assert_eq!(delays, (1..=200).map(|c| slow.of(c)).collect::<Vec<_>>(), "a connection keeps its delay");
        slow.set(1373);
        assert_ne!(delays, (1..=200).map(|c| slow.of(c)).collect::<Vec<_>>(), "another window, another draw");
        slow.set(0);
        assert!((1..200).all(|c| slow.of(c).is_zero()));
    }

    #[test]
    fn an_invalidation_batch_reads_back_as_sent() {
        let paths = vec!["/v1/formations/10701F".to_owned(), "/v1/lines/a&b*".to_owned()];
        let xml = invalidation_xml("I1", "InProgress", &paths, "ref<1>");
        assert_eq!(xml_elements(&xml, "Path"), paths);
        assert_eq!(xml_elements(&xml, "CallerReference"), ["ref<1>"]);
        assert_eq!(xml_elements(&xml, "Quantity"), ["2"]);
        assert!(xml_elements(&xml, "Missing").is_empty());
    }

    #[test]
    fn the_recorder_decodes_what_the_edge_compressed_and_nothing_else() {
        let body = br#"{"id":"3001F","note":"soak-1"}"#.repeat(50);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&body).unwrap();
        let gzip = gzip.finish().unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(&body).unwrap();
        assert_eq!(decode(Some("gzip"), &gzip).as_deref(), Some(&body[..]));
        assert_eq!(decode(Some("br"), &br).as_deref(), Some(&body[..]));
        assert_eq!(decode(None, &body).as_deref(), Some(&body[..]));
        assert_eq!(decode(Some("identity"), &body).as_deref(), Some(&body[..]));
        // An encoding it does not know, or a body that does not decode: unreadable.
        assert_eq!(decode(Some("zstd"), &gzip), None);
        assert_eq!(decode(Some("gzip"), &body), None);
    }
}
