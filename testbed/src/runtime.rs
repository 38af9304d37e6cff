//! A local Lambda Runtime API: hands the function one event at a time and times each invocation
//! from the moment its event is handed over to the moment its response is posted, which is what
//! Lambda bills (plus the init phase, measured separately).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One finished invocation.
#[derive(Debug)]
pub struct Invocation {
    /// Event handed over → response posted.
    pub handler: Duration,
    /// When the response arrived.
    pub posted: Instant,
    /// The posted response (a Function URL response: `statusCode`, `headers`, `body`).
    pub response: Value,
}

impl Invocation {
    /// A response header, lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response["headers"][name].as_str()
    }
}

#[derive(Clone)]
struct Shared {
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>>,
    handed: Arc<Mutex<HashMap<String, Instant>>>,
    done: mpsc::UnboundedSender<Invocation>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// The Runtime API server, and the ends the benchmark drives it with.
#[derive(Debug)]
pub struct LocalRuntime {
    /// Give as `AWS_LAMBDA_RUNTIME_API`.
    pub addr: SocketAddr,
    events: mpsc::UnboundedSender<Value>,
    done: mpsc::UnboundedReceiver<Invocation>,
    server: tokio::task::JoinHandle<()>,
}

impl LocalRuntime {
    pub async fn start() -> anyhow::Result<Self> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            events: Arc::new(tokio::sync::Mutex::new(events_rx)),
            handed: Arc::default(),
            done: done_tx,
            next_id: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .merge(extensions_api())
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, events: events_tx, done: done_rx, server })
    }

    /// Queues an event for the function.
    pub fn send(&self, event: Value) {
        let _ = self.events.send(event);
    }

    /// The next finished invocation, or an error after `timeout`.
    pub async fn finished(&mut self, timeout: Duration) -> anyhow::Result<Invocation> {
        tokio::time::timeout(timeout, self.done.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no response within {timeout:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the runtime stopped"))
    }

    /// One invocation: sends `event` and waits for its response.
    pub async fn invoke(&mut self, event: Value) -> anyhow::Result<Invocation> {
        self.send(event);
        self.finished(Duration::from_secs(30)).await
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Shared>) -> axum::response::Response {
    // No event: the function waits, as a frozen instance would.
    let Some(event) = shared.events.lock().await.recv().await else {
        return std::future::pending().await;
    };
    let id = format!("bench-{}", shared.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    shared.handed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), Instant::now());
    invocation(&id, "4102444800000", event)
}

/// An invocation as the Runtime API's `next` hands it to the function: `event`, with its request id
/// and its deadline (milliseconds since the Unix epoch).
pub fn invocation(id: &str, deadline_ms: &str, event: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline_ms),
            ("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:api"),
        ],
        axum::Json(event),
    )
        .into_response()
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: bytes::Bytes) -> &'static str {
    let posted = Instant::now();
    let handed = shared.handed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    let response = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let handler = handed.map_or(Duration::ZERO, |at| posted - at);
    let _ = shared.done.send(Invocation { handler, posted, response });
    "{}"
}

/// The Extensions API, as far as the api uses it: its graceful-shutdown handler registers an
/// internal extension (so Lambda sends it SIGTERM), whose next event never comes while it runs.
pub fn extensions_api<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
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
}

/// A Function URL event for `GET path`, as CloudFront forwards it (compression on, so the
/// encodings CloudFront normalises `Accept-Encoding` to).
pub fn function_url_event(path: &str) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let headers = [
        ("accept-encoding", "br,gzip"),
        ("via", "2.0 bench.cloudfront.net (CloudFront)"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
        ("user-agent", "Amazon CloudFront"),
    ];
    let headers = headers.into_iter().map(|(name, value)| (name.to_owned(), Value::from(value))).collect();
    function_url_request("GET", path, query, headers)
}

/// A Function URL event for any request: `method` on `path` with `query`, and `headers` as they
/// arrived (a header sent more than once joined with commas), the Function URL's host in place of
/// theirs.
pub fn function_url_request(
    method: &str,
    path: &str,
    query: &str,
    mut headers: serde_json::Map<String, Value>,
) -> Value {
    headers.insert("host".to_owned(), "x.lambda-url.us-east-1.on.aws".into());
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": headers,
        "requestContext": {"accountId": "123456789012", "apiId": "x", "domainName": "x.lambda-url.us-east-1.on.aws",
            "domainPrefix": "x", "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
            "sourceIp": "198.51.100.7", "userAgent": "Amazon CloudFront"}, "requestId": "r", "routeKey": "$default",
            "stage": "$default", "time": "28/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
        "isBase64Encoded": false
    })
}

/// The environment Lambda gives a function of `memory_mb`, with its Runtime API at `addr`.
pub fn lambda_env(addr: SocketAddr, memory_mb: u32) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_RUNTIME_API", addr.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "api".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}
