//! Lambda mode: the real `api` binary talks to a Runtime API (a local stand-in speaking the same
//! HTTP protocol), receives Function URL, API Gateway v2 and ALB events, converts them with
//! `lambda_http`, and posts the responses back. SIGTERM closes the database pool.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::helpers::{Backend, TestDb, binary};

/// The Lambda Runtime and Extensions APIs, as far as the runtime client uses them.
#[derive(Clone)]
struct FakeRuntime {
    events: Arc<Mutex<VecDeque<(String, Value)>>>,
    responses: mpsc::UnboundedSender<(String, Value)>,
}

async fn next_invocation(State(rt): State<FakeRuntime>) -> Response {
    let next = rt.events.lock().unwrap().pop_front();
    match next {
        Some((id, event)) => (
            [
                ("lambda-runtime-aws-request-id", id.as_str()),
                ("lambda-runtime-deadline-ms", "4102444800000"),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:ap-northeast-1:123456789012:function:edgerail-api",
                ),
                ("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
            ],
            Json(event),
        )
            .into_response(),
        // No more events: the instance waits, as a warm Lambda instance does between requests.
        None => std::future::pending().await,
    }
}

async fn invocation_response(
    State(rt): State<FakeRuntime>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> &'static str {
    let body = serde_json::from_slice(&body).expect("the runtime posts a JSON response");
    let _ = rt.responses.send((id, body));
    "{}"
}

async fn invocation_error(State(rt): State<FakeRuntime>, Path(id): Path<String>, body: String) -> &'static str {
    let _ = rt.responses.send((id, json!({ "runtime_error": body })));
    "{}"
}

async fn register_extension(headers: HeaderMap) -> Response {
    assert!(headers.contains_key("lambda-extension-name"));
    (
        [("lambda-extension-identifier", "ext-1")],
        Json(json!({ "functionName": "edgerail-api", "functionVersion": "$LATEST", "handler": "bootstrap" })),
    )
        .into_response()
}

async fn start_runtime(events: Vec<(String, Value)>) -> (SocketAddr, mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = FakeRuntime { events: Arc::new(Mutex::new(events.into())), responses: tx };
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(invocation_response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
        .route("/2020-01-01/extension/register", post(register_extension))
        .route("/2020-01-01/extension/event/next", get(std::future::pending::<&'static str>))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, rx)
}

fn function_url_event(path: &str, query: &str, headers: Value) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdefghijklmnop",
            "domainName": "abcdefghijklmnop.lambda-url.ap-northeast-1.on.aws",
            "domainPrefix": "abcdefghijklmnop",
            "http": { "method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "Amazon CloudFront" },
            "requestId": "c0ffee00-0000-4000-8000-000000000001",
            "routeKey": "$default",
            "stage": "$default",
            "time": "28/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_867_200_000_u64
        },
        "isBase64Encoded": false
    })
}

fn api_gateway_v2_event(path: &str) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "GET /{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": { "host": "api.example.com" },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.ap-northeast-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": { "method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "curl/8" },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "GET /{proxy+}",
            "stage": "$default",
            "time": "28/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_867_200_000_u64
        },
        "pathParameters": { "proxy": path.trim_start_matches('/') },
        "isBase64Encoded": false
    })
}

fn alb_event(path: &str) -> Value {
    json!({
        "requestContext": { "elb": { "targetGroupArn": "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/edgerail/6d0ecf831eec9f09" } },
        "httpMethod": "GET",
        "path": path,
        "queryStringParameters": {},
        "headers": { "host": "edgerail-alb.example.com" },
        "body": "",
        "isBase64Encoded": false
    })
}

fn lambda_command(runtime: SocketAddr, database_url: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary("api"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "edgerail-api")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd
}

/// Sends SIGTERM (what Lambda sends before shutting an instance down), waits up to 5 s for the
/// process to exit, and returns its exit status and what it wrote to stderr.
async fn terminate(child: &mut tokio::process::Child) -> (std::process::ExitStatus, String) {
    let pid = child.id().expect("still running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits promptly").unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    (exit, stderr)
}

fn header<'a>(response: &'a Value, name: &str) -> &'a str {
    response["headers"][name].as_str().unwrap_or("")
}

fn body_bytes(response: &Value) -> Vec<u8> {
    let body = response["body"].as_str().unwrap_or("");
    if response["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

async fn application_connections(db: &TestDb, pid: u32) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(format!("edgerail-api-{pid}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn lambda_events_are_served_and_sigterm_closes_the_pool() {
    let db = TestDb::new(Backend::Postgres).await;
    let events = vec![
        (
            "fn-url-lines".to_owned(),
            function_url_event("/v1/lines", "utm_source=x", json!({ "host": "x.lambda-url.on.aws" })),
        ),
        (
            "fn-url-br".to_owned(),
            function_url_event("/v1/formations", "", json!({ "host": "x", "accept-encoding": "gzip, br" })),
        ),
        ("fn-url-404".to_owned(), function_url_event("/v1/formations/0000F", "", json!({ "host": "x" }))),
        ("fn-url-400".to_owned(), function_url_event("/v1/sightings/latest", "limit=999", json!({ "host": "x" }))),
        (
            "fn-url-304".to_owned(),
            function_url_event("/v1/lines", "", json!({ "host": "x", "if-none-match": "PLACEHOLDER" })),
        ),
        ("apigw-v2".to_owned(), api_gateway_v2_event("/v1/lines/tama/stations")),
        ("alb".to_owned(), alb_event("/v1/sightings/latest")),
    ];
    // The 304 case needs the real ETag; compute it from the same data through the library.
    let probe = crate::helpers::TestApp::with(db.clone(), &[]).await;
    let etag = probe.get("/v1/lines").await.header("etag").to_owned();
    let events: Vec<_> = events
        .into_iter()
        .map(|(id, mut e)| {
            if id == "fn-url-304" {
                e["headers"]["if-none-match"] = json!(etag);
            }
            (id, e)
        })
        .collect();
    let count = events.len();
    let (runtime, mut responses) = start_runtime(events).await;

    let mut child = lambda_command(runtime, Some(&db.url)).spawn().unwrap();
    let pid = child.id().unwrap();
    let mut got = HashMap::new();
    while got.len() < count {
        let Ok(Some((id, body))) = tokio::time::timeout(Duration::from_secs(20), responses.recv()).await else {
            let _ = child.start_kill();
            let output = child.wait_with_output().await.unwrap();
            panic!("the function did not answer every event: {}", String::from_utf8_lossy(&output.stderr));
        };
        got.insert(id, body);
    }

    let lines = &got["fn-url-lines"];
    assert_eq!(lines["statusCode"], 200, "{lines}");
    assert_eq!(header(lines, "cache-control"), probe.get("/v1/lines").await.header("cache-control"));
    assert_eq!(header(lines, "etag"), etag);
    assert_eq!(header(lines, "cache-tag"), "lines");
    assert_eq!(header(lines, "content-type"), "application/json");
    assert_eq!(lines["isBase64Encoded"], false);
    let body: Value = serde_json::from_slice(&body_bytes(lines)).unwrap();
    assert_eq!(body["lines"].as_array().unwrap().len(), 5);

    let br = &got["fn-url-br"];
    assert_eq!(br["statusCode"], 200);
    assert_eq!(header(br, "content-encoding"), "br");
    assert_eq!(header(br, "vary"), "accept-encoding");
    assert_eq!(br["isBase64Encoded"], true, "compressed bodies travel base64-encoded");
    let mut json_bytes = Vec::new();
    brotli::Decompressor::new(&body_bytes(br)[..], 4096).read_to_end_sync(&mut json_bytes);
    let formations: Value = serde_json::from_slice(&json_bytes).unwrap();
    assert_eq!(formations["formations"].as_array().unwrap().len(), 100);

    assert_eq!(got["fn-url-404"]["statusCode"], 404);
    assert_eq!(header(&got["fn-url-404"], "cache-control"), "public, max-age=0, s-maxage=10");
    let not_found: Value = serde_json::from_slice(&body_bytes(&got["fn-url-404"])).unwrap();
    assert_eq!(not_found["error"]["code"], "not_found");
    assert_eq!(got["fn-url-400"]["statusCode"], 400);
    assert_eq!(got["fn-url-304"]["statusCode"], 304);
    assert_eq!(header(&got["fn-url-304"], "etag"), etag);

    let apigw = &got["apigw-v2"];
    assert_eq!(apigw["statusCode"], 200, "{apigw}");
    assert_eq!(header(apigw, "cache-tag"), "line:tama");
    let stations: Value = serde_json::from_slice(&body_bytes(apigw)).unwrap();
    assert_eq!(stations["stations"].as_array().unwrap().len(), 16);

    let alb = &got["alb"];
    assert_eq!(alb["statusCode"], 200, "{alb}");
    assert_eq!(header(alb, "cache-tag"), "sightings");

    // The pool holds its (one) connection between invocations ...
    assert_eq!(application_connections(&db, pid).await, 1, "one lazily opened connection per instance");
    // ... and SIGTERM, which Lambda sends before shutting an instance down, closes it.
    let (exit, stderr) = terminate(&mut child).await;
    assert!(exit.success(), "{exit:?}");
    assert!(stderr.contains("database pool closed"), "{stderr}");

    // The Embedded Metric Format lines on stdout (flushed at shutdown) add up to what was served.
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let total =
        |metric: &str| emf.iter().filter(|l| l.get("Route").is_some()).filter_map(|l| l[metric].as_f64()).sum::<f64>();
    let served_with = |f: &dyn Fn(&Value) -> bool| got.values().filter(|r| f(r)).count() as f64;
    let outcome = |name: &'static str| move |r: &Value| header(r, "x-local-cache") == name;
    assert_eq!(total("Hits"), served_with(&outcome("hit")), "{stdout}");
    assert_eq!(total("Misses"), served_with(&outcome("miss")), "{stdout}");
    assert_eq!(total("Misses") + total("Hits"), 6.0, "every policy answer but the 400 has an outcome: {stdout}");
    for (metric, class) in [("Status2xx", 2), ("Status3xx", 3), ("Status4xx", 4), ("Status5xx", 5)] {
        let served = served_with(&|r: &Value| r["statusCode"].as_u64().unwrap() / 100 == class);
        assert_eq!(total(metric), served, "{metric}: {stdout}");
    }
    let lines_route = emf.iter().find(|l| l["Route"] == "lines").expect("a line for /v1/lines");
    assert_eq!(lines_route["_aws"]["CloudWatchMetrics"][0]["Namespace"], "edgerail");
    assert!(emf.iter().any(|l| l.get("FeedLagMs").is_some()), "the instance line: {stdout}");
    for _ in 0..50 {
        if application_connections(&db, pid).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the connection is still open after shutdown");
}

/// A failed read is logged as JSON naming the resource it read, within the invocation's span (its
/// request id); the API's own request span is `debug`, so at `info` no line carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_failed_read_is_logged_with_its_resource_and_request_id() {
    // A port nothing listens on: the connection is refused, as for a database that is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://edgerail:edgerail@127.0.0.1:{port}/edgerail?sslmode=disable");
    let events =
        vec![("req-down-1".to_owned(), function_url_event("/v1/formations/10701F", "", json!({ "host": "x" })))];
    let (runtime, mut responses) = start_runtime(events).await;
    let mut child = lambda_command(runtime, Some(&url)).spawn().unwrap();
    let (id, response) =
        tokio::time::timeout(Duration::from_secs(20), responses.recv()).await.expect("an answer").unwrap();
    assert_eq!(id, "req-down-1");
    assert_eq!(response["statusCode"], 503, "{response}");
    let body = String::from_utf8(body_bytes(&response)).unwrap();
    assert!(!body.contains("refused") && !body.contains(&port.to_string()), "no internal detail: {body}");

    let (_, stderr) = terminate(&mut child).await;
    // The runtime client prints a few plain `[runtime]` lines of its own; ours are JSON.
    let ours = stderr.lines().filter(|l| !l.starts_with("[runtime]"));
    let lines: Vec<Value> = ours.map(|l| serde_json::from_str(l).expect(l)).collect();
    let failed = lines.iter().find(|l| l["message"] == "database unavailable").expect(&stderr);
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["resource"], "formation 10701F", "{failed}");
    assert_eq!(failed["span"]["requestId"], "req-down-1", "{failed}");
    assert!(lines.iter().all(|l| l["span"]["name"] != "request"), "the request span stays at debug: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn missing_database_url_on_lambda_is_a_clear_init_error() {
    let (runtime, _responses) = start_runtime(Vec::new()).await;
    let output =
        tokio::time::timeout(Duration::from_secs(10), lambda_command(runtime, None).output()).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL is not set"), "{stderr}");
}

trait ReadToEndSync {
    fn read_to_end_sync(self, out: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadToEndSync for R {
    fn read_to_end_sync(mut self, out: &mut Vec<u8>) {
        std::io::Read::read_to_end(&mut self, out).unwrap();
    }
}
