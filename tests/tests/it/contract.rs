//! The HTTP contract (docs/design.md), for every route: in process (`oneshot`) on both backends, and
//! over a real socket.

use std::io::Read;
use std::net::SocketAddr;

use cache_policy::Policy;
use chrono::Utc;
use http::StatusCode;

use crate::helpers::{Backend, TestApp, TestResponse};

/// In process, or over TCP with a real HTTP client.
enum Client {
    InProcess(TestApp),
    Socket(reqwest::Client, SocketAddr),
}

impl Client {
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.request("GET", uri, headers).await
    }

    async fn request(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> TestResponse {
        match self {
            Self::InProcess(app) => {
                let mut req = http::Request::builder().method(method).uri(uri);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                app.send(req.body(axum::body::Body::empty()).unwrap()).await
            }
            Self::Socket(client, addr) => {
                let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{uri}"));
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let res = req.send().await.unwrap();
                TestResponse { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap() }
            }
        }
    }
}

fn policy() -> &'static Policy {
    Policy::embedded().unwrap()
}

fn today() -> String {
    crate::helpers::calendar().service_date(Utc::now()).to_string()
}

/// One concrete URL per route, with the tags its answer must carry and a body check.
fn samples() -> Vec<(&'static str, String, Vec<String>)> {
    let day = today();
    vec![
        ("lines", "/v1/lines".into(), vec!["lines".into()]),
        ("line_stations", "/v1/lines/minato/stations".into(), vec!["line:minato".into()]),
        ("formations", "/v1/formations".into(), vec!["formations".into()]),
        ("formation", "/v1/formations/10701F".into(), vec!["formation:10701F".into()]),
        ("operations", format!("/v1/operations/{day}"), vec![format!("operations:{day}")]),
        ("operation", format!("/v1/operations/{day}/01M"), vec![format!("operation:{day}:01M")]),
        ("sightings_latest", "/v1/sightings/latest?limit=3".into(), vec!["sightings".into()]),
        ("station_sightings", "/v1/stations/M01/sightings?limit=3".into(), vec!["station:M01".into()]),
        ("openapi", "/openapi.json".into(), vec![]),
    ]
}

fn check_body(route: &str, body: &serde_json::Value) {
    match route {
        "lines" => assert_eq!(body["lines"].as_array().unwrap().len(), 5),
        "line_stations" => {
            assert_eq!(body["line"]["id"], "minato");
            assert_eq!(body["stations"].as_array().unwrap().len(), 16);
        }
        "formations" => {
            let all = body["formations"].as_array().unwrap();
            assert_eq!(all.len(), 100);
            assert!(all.iter().all(|f| f.get("latest_sighting").is_some()));
        }
        "formation" => {
            assert_eq!(body["id"], "10701F");
            assert_eq!(body["sightings"].as_array().unwrap().len(), 20);
        }
        "operations" => assert_eq!(body["operations"].as_array().unwrap().len(), 300),
        "operation" => {
            assert_eq!(body["number"], "01M");
            assert!(body["sightings"].is_array());
        }
        "sightings_latest" => assert_eq!(body["sightings"].as_array().unwrap().len(), 3),
        "station_sightings" => {
            assert_eq!(body["station"]["id"], "M01");
            let sightings = body["sightings"].as_array().unwrap();
            assert_eq!(sightings.len(), 3);
            assert!(sightings.iter().all(|s| s["station_id"] == "M01"));
            assert!(sightings.windows(2).all(|w| w[0]["seen_at"].as_str() >= w[1]["seen_at"].as_str()));
        }
        "openapi" => assert_eq!(body["openapi"], "3.1.0"),
        other => panic!("no check for {other}"),
    }
}

async fn every_route(client: &Client) {
    for (name, uri, tags) in samples() {
        let route = policy().route(name).unwrap();
        let first = client.get(&uri, &[]).await;
        assert_eq!(first.status, StatusCode::OK, "{uri}: {:?}", first.body);
        assert_eq!(first.header("content-type"), "application/json", "{uri}");
        assert_eq!(first.header("cache-control"), route.cache_control(), "{uri}");
        let etag = first.header("etag");
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10, "{uri}: strong ETag, got {etag:?}");
        assert_eq!(first.header("cache-tag"), tags.join(","), "{uri}");
        assert_eq!(first.header("x-local-cache"), "miss", "{uri}");
        assert!(first.header("server-timing").starts_with("db;dur="), "{uri}");
        // Which data it shows: every answer a change can touch says (the OpenAPI document shows none).
        let version = first.header("x-edgerail-version");
        assert_eq!(store::version_sees(version, version), (!tags.is_empty()).then_some(true), "{uri}: {version:?}");
        check_body(name, &first.json());
        crate::openapi::assert_conforms(&uri, 200, &first.body);

        let second = client.get(&uri, &[]).await;
        assert_eq!(second.header("x-local-cache"), "hit", "{uri}");
        assert_eq!(second.header("etag"), etag, "{uri}");
        assert_eq!(second.header("x-edgerail-version"), version, "{uri}: a hit shows what its load read");
        assert_eq!(second.body, first.body, "{uri}");

        let not_modified = client.get(&uri, &[("if-none-match", etag)]).await;
        assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(not_modified.header("etag"), etag, "{uri}");
        assert_eq!(not_modified.header("cache-control"), route.cache_control(), "{uri}");
        assert_eq!(not_modified.header("x-edgerail-version"), version, "{uri}");
        assert!(not_modified.body.is_empty());
        let changed = client.get(&uri, &[("if-none-match", "\"something-else\"")]).await;
        assert_eq!(changed.status, StatusCode::OK, "{uri}");

        let head = client.request("HEAD", &uri, &[]).await;
        assert_eq!(head.status, StatusCode::OK, "{uri}");
        assert!(head.body.is_empty(), "{uri}: HEAD has no body");
        assert_eq!(head.header("etag"), etag, "{uri}");
        assert_eq!(head.header("content-length"), first.body.len().to_string(), "{uri}");
    }
}

async fn errors(client: &Client) {
    let bad = [
        "/v1/operations/2026-02-30",
        "/v1/operations/yesterday",
        "/v1/operations/2026-1-1/01M",
        "/v1/formations/a%20b",
        "/v1/formations/%27%3B%20DROP%20TABLE%20lines",
        "/v1/lines/x%FFy/stations",
        "/v1/sightings/latest?limit=0",
        "/v1/sightings/latest?limit=201",
        "/v1/sightings/latest?limit=abc",
        "/v1/sightings/latest?limit=5&limit=6",
        "/v1/stations/%27%3B%20DROP%20TABLE%20stations/sightings",
        "/v1/stations/M01/sightings?limit=0",
        "/v1/stations/M01/sightings?limit=x",
        "/health-check?deep=maybe",
    ];
    for uri in bad {
        let res = client.get(uri, &[]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{uri}: {:?}", res.body);
        crate::openapi::assert_conforms(uri, 400, &res.body);
        assert_eq!(res.json()["error"]["code"], "bad_request", "{uri}");
        assert!(!res.json()["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(res.header("content-type"), "application/json");
        if uri.starts_with("/v1") {
            assert!(res.header("cache-control").starts_with("public, max-age=0, s-maxage="), "{uri}");
        }
    }
    let latest = policy().route("sightings_latest").unwrap();
    let res = client.get("/v1/sightings/latest?limit=0", &[]).await;
    assert_eq!(res.header("cache-control"), latest.negative_cache_control());

    for uri in ["/v1/formations/99999F", "/v1/lines/nowhere/stations", "/v1/operations/2026-11-28/NOPE"] {
        let res = client.get(uri, &[]).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(res.json()["error"]["code"], "not_found");
        crate::openapi::assert_conforms(uri, 404, &res.body);
        assert_eq!(res.header("cache-control"), "public, max-age=0, s-maxage=10", "{uri}");
        assert!(!res.header("cache-tag").is_empty(), "{uri}: a 404 carries the tags that would create it");
        assert!(res.header("etag").is_empty());
    }
    let res = client.get("/v1/formations/99999F", &[]).await;
    assert_eq!(res.header("cache-tag"), "formation:99999F");

    for uri in ["/v2/lines", "/", "/v1/lines/", "/v1/formations/10701F/extra"] {
        let res = client.get(uri, &[]).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(res.json()["error"]["code"], "not_found");
        assert_eq!(res.header("cache-control"), "public, max-age=0, s-maxage=10");
    }
    // A CORS preflight: 204, cacheable, and no CORS headers (the edge adds them after its cache).
    for uri in ["/v1/lines", "/v1/formations/10701F", "/v1/sightings/latest"] {
        let res = client
            .request("OPTIONS", uri, &[("origin", "https://app.example"), ("access-control-request-method", "GET")])
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{uri}");
        assert_eq!(res.header("allow"), "GET, HEAD, OPTIONS");
        assert_eq!(res.header("cache-control"), "public, max-age=86400");
        assert!(res.headers.get("access-control-allow-origin").is_none());
        assert!(res.body.is_empty());
    }
    assert_eq!(client.request("OPTIONS", "/v2/lines", &[]).await.status, StatusCode::NOT_FOUND);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let res = client.request(method, "/v1/lines", &[]).await;
        assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(res.json()["error"]["code"], "method_not_allowed");
        assert!(res.header("allow").contains("GET"), "{method}");
        assert_eq!(res.header("cache-control"), "no-store");
    }
}

async fn health(client: &Client) {
    let res = client.get("/health-check", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["status"], "ok");
    assert!(!res.json()["build"].as_str().unwrap().is_empty(), "the build id is reported");
    crate::openapi::assert_conforms("/health-check", 200, &res.body);
    assert_eq!(res.header("cache-control"), "no-store");
    let res = client.get("/health-check?deep=1", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["database"], "ok");
    assert_eq!(res.header("cache-control"), "no-store");
}

async fn compression(client: &Client) {
    let day = today();
    let uri = format!("/v1/operations/{day}");
    let plain = client.get(&uri, &[]).await;
    assert_eq!(plain.header("vary"), "accept-encoding");
    assert_eq!(plain.header("content-encoding"), "");

    let br = client.get(&uri, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(br.header("content-encoding"), "br");
    assert_eq!(br.header("vary"), "accept-encoding");
    assert_ne!(br.header("etag"), plain.header("etag"), "each representation has its own strong ETag");
    let mut decoded = Vec::new();
    brotli::Decompressor::new(&br.body[..], 4096).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, plain.body);
    assert!(br.body.len() < plain.body.len() / 3);

    let gz = client.get(&uri, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, plain.body);

    // A validator of any representation revalidates; the 304 names the negotiated one.
    let revalidated = client.get(&uri, &[("accept-encoding", "br"), ("if-none-match", plain.header("etag"))]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), br.header("etag"));

    // Small bodies are not worth compressing and do not vary.
    let lines = client.get("/v1/lines", &[("accept-encoding", "br")]).await;
    assert_eq!(lines.header("content-encoding"), "");
    assert_eq!(lines.header("vary"), "");
}

async fn undeclared_query_parameters_are_ignored(app: &TestApp, client: &Client) {
    let first = client.get("/v1/sightings/latest?limit=4", &[]).await;
    assert_eq!(first.header("x-local-cache"), "miss");
    let reads = app.store().reads();
    for uri in [
        "/v1/sightings/latest?limit=4&utm_source=x",
        "/v1/sightings/latest?cachebuster=12345&limit=4",
        "/v1/sightings/latest?limit=4&limit_=9&",
    ] {
        let res = client.get(uri, &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{uri}");
        assert_eq!(res.header("x-local-cache"), "hit", "{uri}");
        assert_eq!(res.header("etag"), first.header("etag"), "{uri}");
    }
    assert_eq!(app.store().reads(), reads, "no database query for undeclared parameters");
    // The default is part of the key too: no limit and limit=50 are the same entry.
    let a = client.get("/v1/sightings/latest", &[]).await;
    let b = client.get("/v1/sightings/latest?limit=50", &[]).await;
    assert_eq!(a.header("x-local-cache"), "miss");
    assert_eq!(b.header("x-local-cache"), "hit");
    assert_eq!(a.json()["sightings"].as_array().unwrap().len(), 50);
}

async fn today_alias_expires_at_rollover(client: &Client) {
    let day = today();
    let dated = client.get(&format!("/v1/operations/{day}"), &[]).await;
    let res = client.get("/v1/operations/today", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["service_date"], day.as_str());
    assert_eq!(res.header("etag"), dated.header("etag"));
    assert_eq!(res.header("x-local-cache"), "hit", "shares the dated URL's entry");
    assert_eq!(res.header("cache-tag"), format!("operations:{day}"));
    let cc = res.header("cache-control");
    assert!(!cc.contains("stale-"), "no stale serving past the rollover: {cc}");
    let remaining = crate::helpers::calendar().until_rollover(Utc::now()).as_secs();
    let max_age: u64 = cc.split("s-maxage=").nth(1).unwrap().parse().unwrap();
    assert!(max_age <= remaining.max(1), "{cc} vs {remaining}s left");
    let op = client.get("/v1/operations/today/01M", &[]).await;
    assert_eq!(op.json()["service_date"], day.as_str());
}

async fn openapi_describes_every_route(client: &Client) {
    let doc = client.get("/openapi.json", &[]).await.json();
    let paths = doc["paths"].as_object().unwrap();
    for route in policy().routes() {
        assert!(paths.contains_key(route.path.as_str()), "{} missing from openapi.json", route.path);
    }
    assert!(paths.contains_key("/health-check"));
    assert_eq!(paths.len(), policy().routes().len() + 1, "openapi.json documents a route the API does not serve");
}

crate::both_backends!(contract_in_process);

async fn contract_in_process(backend: Backend) {
    let app = TestApp::new(backend).await;
    let client = Client::InProcess(app.clone());
    every_route(&client).await;
    errors(&client).await;
    health(&client).await;
    compression(&client).await;
    undeclared_query_parameters_are_ignored(&app, &client).await;
    today_alias_expires_at_rollover(&client).await;
    openapi_describes_every_route(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn contract_over_a_socket() {
    let app = TestApp::new(Backend::Postgres).await;
    let (addr, stop) = app.serve().await;
    let client = Client::Socket(reqwest::Client::new(), addr);
    every_route(&client).await;
    errors(&client).await;
    health(&client).await;
    compression(&client).await;
    undeclared_query_parameters_are_ignored(&app, &client).await;
    today_alias_expires_at_rollover(&client).await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn internal_errors_are_generic() {
    let app = TestApp::new(Backend::Postgres).await;
    app.db.exec("ALTER TABLE formations RENAME COLUMN series TO series_name").await;
    let res = app.get("/v1/formations/10701F").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.json(), serde_json::json!({"error": {"code": "internal", "message": "internal error"}}));
    assert_eq!(res.header("cache-control"), "no-store");
    let text = String::from_utf8_lossy(&res.body);
    assert!(!text.contains("series") && !text.contains("column"), "{text}");
}
