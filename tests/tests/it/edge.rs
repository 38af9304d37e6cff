//! The local edge (Varnish with `local/varnish.vcl`) in front of the API over real sockets, and
//! the warmer's purge backend against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{Backend, TestApp, TestDb, assert_generated, binary, splice};

/// A varnishd of its own, in front of `api`, stopped on drop.
struct Varnish {
    addr: SocketAddr,
    _child: tokio::process::Child,
    dir: PathBuf,
}

impl Varnish {
    async fn start(api: SocketAddr) -> Self {
        let varnishd = crate::helpers::env("TEST_VARNISHD");
        let dir = std::env::temp_dir().join(format!("edgerail-varnish-{}-{}", std::process::id(), api.port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let vcl =
            std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../local/varnish.vcl")).unwrap();
        let vcl = vcl.replace(".port = \"3000\";", &format!(".port = \"{}\";", api.port()));
        std::fs::write(dir.join("edge.vcl"), vcl).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = tokio::process::Command::new(varnishd)
            .args(["-F", "-n"])
            .arg(dir.join("work"))
            .args(["-a", &addr.to_string(), "-f"])
            .arg(dir.join("edge.vcl"))
            .args(["-s", "malloc,64m", "-p", "default_grace=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start varnishd");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("http://{addr}/health-check")).send().await.is_ok() {
                return Self { addr, _child: child, dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("varnishd did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Got {
    status: u16,
    x_cache: String,
    version: String,
    body: Value,
}

async fn get(client: &reqwest::Client, url: &str) -> Got {
    let res = client.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let header = |name| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (x_cache, version) = (header("x-cache"), header("x-edgerail-version"));
    let body = res.json().await.unwrap_or(Value::Null);
    Got { status, x_cache, version, body }
}

/// The warmer's mark these tests' API and warmer share (`WARM_SECRET`).
const WARM_SECRET: &str = "edge-test-mark";

async fn stack() -> (TestApp, Varnish, tokio::sync::oneshot::Sender<()>) {
    let app = TestApp::with(
        TestDb::new(Backend::Postgres).await,
        &["--change-poll-interval", "100ms", "--warm-secret", WARM_SECRET],
    )
    .await;
    let (addr, stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    (app, edge, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_edge_caches_by_s_maxage_and_negatively() {
    let (_app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    let first = get(&client, &edge.url("/v1/lines")).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "Miss"));
    let second = get(&client, &edge.url("/v1/lines")).await;
    assert_eq!((second.status, second.x_cache.as_str()), (200, "Hit"));
    assert_eq!(first.body, second.body);
    // The answer's version passes the edge, stored with the copy.
    assert!(store::version_sees(&first.version, &first.version).unwrap(), "a version: {:?}", first.version);
    assert_eq!(second.version, first.version);

    let missing = get(&client, &edge.url("/v1/formations/0000F")).await;
    assert_eq!((missing.status, missing.x_cache.as_str()), (404, "Miss"));
    let again = get(&client, &edge.url("/v1/formations/0000F")).await;
    assert_eq!((again.status, again.x_cache.as_str()), (404, "Hit"), "404s are cached briefly");

    // `no-store` is never kept, like CloudFront with DefaultTTL 0.
    get(&client, &edge.url("/health-check")).await;
    assert_eq!(get(&client, &edge.url("/health-check")).await.x_cache, "Miss", "no-store answers are not cached");

    // sightings/latest: max-age=5 but s-maxage=60. Still a hit after max-age: the edge follows s-maxage.
    assert_eq!(get(&client, &edge.url("/v1/sightings/latest")).await.x_cache, "Miss");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(get(&client, &edge.url("/v1/sightings/latest")).await.x_cache, "Hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cors_is_answered_at_the_edge_and_origin_never_splits_the_cache() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for origin in ["https://a.example", "https://b.example", "https://evil.example"] {
        let res = client.get(edge.url("/v1/lines")).header("origin", origin).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert!(res.headers()["access-control-expose-headers"].to_str().unwrap().contains("etag"));
        seen.push(res.headers()["x-cache"].to_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["Miss", "Hit", "Hit"], "one cached copy serves every Origin");
    // Without an Origin the same copy comes back, with no CORS headers in it.
    let plain = client.get(edge.url("/v1/lines")).send().await.unwrap();
    assert_eq!(plain.headers()["x-cache"], "Hit");
    assert!(plain.headers().get("access-control-allow-origin").is_none());

    let preflight = client
        .request(reqwest::Method::OPTIONS, edge.url("/v1/formations/10701F"))
        .header("origin", "https://a.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("GET"));
    assert_eq!(preflight.headers()["access-control-allow-headers"], "if-none-match");
    // The origin itself never speaks CORS.
    let direct = app.get("/v1/lines").await;
    assert!(direct.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn random_undeclared_query_strings_reach_the_origin_at_most_once() {
    let (_app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    let mut misses = 0;
    for i in 0..100 {
        let noise = format!("{:x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let got = get(&client, &edge.url(&format!("/v1/sightings/latest?limit=10&utm_{noise}={i}&cb={noise}"))).await;
        assert_eq!(got.status, 200);
        if got.x_cache == "Miss" {
            misses += 1;
        }
    }
    assert!(misses <= 1, "{misses} origin requests for one declared-parameter key");
    // The declared parameter is part of the key.
    assert_eq!(get(&client, &edge.url("/v1/sightings/latest?limit=11&x=1")).await.x_cache, "Miss");
}

/// Waits (up to 10 s) until the origin itself answers `path` with data `fresh` accepts. In
/// production the warmer's WARMER_SETTLE (at least the API's freshness bound) guarantees that before
/// it refills the edge; these tests run the warmer without a settle, so they wait for the origin.
async fn until_origin(app: &TestApp, path: &str, fresh: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fresh(&app.get(path).await.json()) {
        assert!(std::time::Instant::now() < deadline, "the origin never served the change to {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn warmer_purge(db: &TestDb, edge: &Varnish, mode: &str) -> Value {
    warmer_purge_with(db, edge, mode, &[]).await
}

/// One warmer tick purging `edge` and warming through it, with extra settings.
async fn warmer_purge_with(db: &TestDb, edge: &Varnish, mode: &str, settings: &[(&str, &str)]) -> Value {
    warmer_tick(db, &edge.url(""), mode, settings).await
}

/// One warmer tick purging the edge at `edge` and warming through it, with extra settings.
async fn warmer_tick(db: &TestDb, edge: &str, mode: &str, settings: &[(&str, &str)]) -> Value {
    warmer_tick_lines(db, edge, mode, settings).await.pop().unwrap()
}

/// The same, every line it printed (its metrics line, with `METRICS=emf`, then its summary).
async fn warmer_tick_lines(db: &TestDb, edge: &str, mode: &str, settings: &[(&str, &str)]) -> Vec<Value> {
    warmer_tick_logged(db, edge, mode, settings).await.0
}

/// The same, with what it logged (stderr).
async fn warmer_tick_logged(db: &TestDb, edge: &str, mode: &str, settings: &[(&str, &str)]) -> (Vec<Value>, String) {
    let out = tokio::process::Command::new(binary("warmer"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("WARMER_SETTLE", "0s")
        .env("INVALIDATOR", "purge")
        .env("PURGE_URL", edge)
        .env("INVALIDATION_MODE", mode)
        .env("WARM_BASE_URL", edge)
        .env("WARM_SECRET", WARM_SECRET)
        .envs(settings.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `cachectl` with the stack's database and edge: whether it succeeded, and its JSON output.
async fn cachectl(db: &TestDb, edge: &str, args: &[&str]) -> (bool, Value) {
    let out = tokio::process::Command::new(binary("cachectl"))
        .args(args)
        .arg("--json")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("WARM_BASE_URL", edge)
        .env("WARM_SECRET", WARM_SECRET)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|e| panic!("{e}: {printed} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), value)
}

/// A purge endpoint in front of `edge` that answers `200` to every purge but passes on only those
/// it has seen `passes_after` times before (the same method, path and tags): `usize::MAX` drops
/// them all, as an edge that reports purges it never does; `1` drops each first one, as a
/// shielded edge refilled from a shield the purge had not reached yet.
async fn purge_gate(edge: &Varnish, passes_after: usize) -> String {
    purge_gate_with(edge, move |_, times| if times < passes_after { Gate::Pretend } else { Gate::Pass }).await
}

/// What a purge gate does with a purge, told its key (method, path, tags) and how many times it
/// saw that key before.
enum Gate {
    /// Purges the edge.
    Pass,
    /// Answers that it purged, and does not.
    Pretend,
    /// Never answers.
    Stall,
}

/// A purge gate in front of `edge`, each purge's fate decided by `decide`.
async fn purge_gate_with(edge: &Varnish, decide: impl Fn(&str, usize) -> Gate + Send + Sync + 'static) -> String {
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", gate.local_addr().unwrap());
    let target = edge.url("");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let client = reqwest::Client::new();
    let decide = std::sync::Arc::new(decide);
    let handler = move |request: axum::extract::Request| {
        let (seen, client, target, decide) = (seen.clone(), client.clone(), target.clone(), decide.clone());
        async move {
            let tags = request.headers().get("xkey-purge").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let key = format!("{} {} {tags}", request.method(), request.uri());
            let times = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(key.clone()).or_default();
                *n += 1;
                *n - 1
            };
            match decide(&key, times) {
                Gate::Pass => {}
                Gate::Pretend => return "purged (not really)".to_owned(),
                Gate::Stall => std::future::pending::<()>().await,
            }
            let res = client
                .request(request.method().clone(), format!("{target}{}", request.uri()))
                .header("xkey-purge", tags)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "the edge refused a purge: {}", res.status());
            "purged".to_owned()
        }
    };
    tokio::spawn(async move { axum::serve(gate, axum::Router::new().fallback(handler)).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_purge_backend_invalidates_the_edge_and_rewarms_it() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    // Drain the fixture's pending changes and warm the warm set.
    let first = warmer_purge(&app.db, &edge, "tags").await;
    assert!(first["warmed"].as_u64().unwrap() > 100, "{first}");
    let cached = get(&client, &edge.url("/v1/formations/10701F")).await;
    assert_eq!(cached.x_cache, "Hit", "warmed");
    let mut note = cached.body["note"].clone();

    for (round, mode) in ["tags", "paths"].into_iter().enumerate() {
        let new_note = format!("Repainted {round}");
        app.db.exec(&format!("UPDATE formations SET note = '{new_note}' WHERE id = '10701F'")).await;
        // Stale until invalidated: the edge keeps it for an hour.
        assert_eq!(get(&client, &edge.url("/v1/formations/10701F")).await.body["note"], note);
        let (committed, committed_at) = (std::time::Instant::now(), chrono::Utc::now());
        until_origin(&app, "/v1/formations/10701F", |v| v["note"] == new_note.as_str()).await;
        let before_tick = committed.elapsed().as_secs_f64();
        let logging = [("RUST_LOG", "warn,warmer::check=debug"), ("AWS_LAMBDA_LOG_FORMAT", "JSON")];
        let (mut lines, log) = warmer_tick_logged(&app.db, &edge.url(""), mode, &logging).await;
        let summary = lines.pop().unwrap();
        let after_tick = committed.elapsed().as_secs_f64();
        // The mark the claim took was seen after the commit, and each page read back is logged
        // with it, after it was sent.
        let time =
            |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}"))).unwrap();
        let marked = time(&summary["marked_at"]);
        assert!(marked > committed_at, "{summary}");
        let checks: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "warmer::check")
            .collect();
        assert_eq!(checks.len() as u64, summary["verified"].as_u64().unwrap(), "{mode}: {log}");
        let page = checks.iter().find(|c| c["path"] == "/v1/formations/10701F").unwrap_or_else(|| panic!("{log}"));
        assert_eq!(page["outcome"], "fresh", "{page}");
        assert!((time(&page["marked"]) - marked).num_microseconds().unwrap().abs() <= 1, "{page} {summary}");
        assert!(time(&page["sent"]) > marked && page["freshness_s"].as_f64().unwrap() >= before_tick, "{page}");
        assert!(summary["invalidation_id"].as_str().unwrap().starts_with("purge-"), "{summary}");
        // Freshness: from the commit (this cluster records commit timestamps) to the first edge
        // answer that showed it, which the tick read between its start and its end.
        assert_eq!(summary["freshness_from"], "commit", "{summary}");
        let freshness = summary["freshness_max_s"].as_f64().unwrap();
        assert!(freshness >= before_tick && freshness <= after_tick + 0.5, "{before_tick} {freshness} {after_tick}");
        assert!(summary["freshness_p50_s"].as_f64().unwrap() <= freshness, "{summary}");
        assert_eq!((summary["repaired"].as_u64(), summary["repair_invalidation"].as_str()), (Some(0), None));
        assert!(summary["warmed"].as_u64().unwrap() >= 2, "affected paths were re-warmed: {summary}");
        assert_eq!(summary["failures"], 0);
        // Read back through the edge, every emptied path shows the change.
        assert!(summary["verified"].as_u64().unwrap() >= 2, "{mode}: {summary}");
        assert_eq!(summary["verified_stale"], 0, "{mode}: {summary}");
        let after = get(&client, &edge.url("/v1/formations/10701F")).await;
        assert_eq!(after.body["note"], new_note.as_str(), "{mode}: {summary}");
        assert_eq!(after.x_cache, "Hit", "{mode}: served from the re-warmed edge");
        let list = get(&client, &edge.url("/v1/formations")).await;
        let row = list.body["formations"].as_array().unwrap().iter().find(|f| f["id"] == "10701F").cloned().unwrap();
        assert_eq!(row["note"], new_note.as_str(), "{mode}: the list page was invalidated too");
        note = Value::from(new_note);
    }
    // An unrelated page stayed cached throughout.
    assert_eq!(get(&client, &edge.url("/v1/lines")).await.x_cache, "Hit");
}

/// The learned warm set through the edge: a page no `warm = true` route declares, once a viewer
/// made the edge fetch it, is re-warmed by the warmer right after the purge that a write to it
/// caused, so the next viewer finds it at the edge. The warmer's own fetches teach nothing, and a
/// tick sends no more warm requests than its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_learned_page_is_rewarmed_after_its_purge_and_warming_keeps_to_its_budget() {
    let app = TestApp::with(
        TestDb::new(Backend::Postgres).await,
        &["--change-poll-interval", "100ms", "--learn-flush-interval", "1ms", "--warm-secret", WARM_SECRET],
    )
    .await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();

    let budgeted = warmer_purge_with(&app.db, &edge, "tags", &[("WARM_BUDGET", "3")]).await;
    assert_eq!(budgeted["warmed"], 3, "{budgeted}");
    assert!(budgeted["warm_skipped"].as_u64().unwrap() > 100, "the rest of the floor waits: {budgeted}");
    let full = warmer_purge(&app.db, &edge, "tags").await;
    assert!(full["warmed"].as_u64().unwrap() > 100, "{full}");
    app.state.flush_learned().await;
    let learned = app.store().learned_top(1000).await.unwrap();
    assert!(learned.is_empty(), "the warmer's fetches are not learned: {learned:?}");

    let page = "/v1/stations/M01/sightings?limit=5";
    assert_eq!(get(&client, &edge.url(page)).await.x_cache, "Miss");
    crate::learn::learned_once(&app, |rows| crate::learn::fetches(rows, page) == Some(1)).await;
    app.db
        .exec("INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) VALUES ('3001F', NULL, 'M01', '2099-01-01T00:00:00Z')")
        .await;
    let newest = |v: &Value| v["sightings"][0]["seen_at"].as_str().is_some_and(|t| t.starts_with("2099"));
    until_origin(&app, page, newest).await;
    let summary = warmer_purge(&app.db, &edge, "tags").await;
    assert_eq!(summary["learned"], 1, "{summary}");
    assert_eq!(summary["learned_rewarmed"], 1, "{summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    let next = get(&client, &edge.url(page)).await;
    assert_eq!(next.x_cache, "Hit", "the next viewer finds the page warm: {summary}");
    assert!(newest(&next.body), "with the write in it");
    // Not fetched again until the edge's copy nears the end of its TTL.
    let idle = warmer_purge(&app.db, &edge, "tags").await;
    assert_eq!(idle["learned_rewarmed"], 0, "{idle}");
}

/// Every query parameter a route declares reaches the origin through the edge and keys the edge's
/// copy: asked for `?limit=2`, the edge answers what the origin answers for `?limit=2`, not the
/// route's default page. The VCL names the routes whose `limit` it keeps; a route added without
/// it would be answered its default page under every viewer's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_edge_forwards_every_declared_query_parameter() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    let policy = cache_policy::Policy::embedded().unwrap();
    let sample = |name: &str| match name {
        "line_id" => "minato",
        "station_id" => "M01",
        "formation_id" => "3001F",
        "date" => "today",
        other => panic!("no sample value for the route parameter `{other}`: add one here"),
    };
    let mut checked = 0;
    for route in policy.routes().iter().filter(|r| !r.query.is_empty()) {
        let path = route.path.render(|name| Some(sample(name))).unwrap();
        for param in &route.query {
            let cache_policy::QueryKind::Integer { min, default, .. } = param.kind;
            for value in [min, min + 1].into_iter().filter(|v| *v != default) {
                let url = format!("{path}?{}={value}", param.name);
                let at_edge = get(&client, &edge.url(&url)).await;
                assert_eq!(at_edge.status, 200, "{url}");
                assert_eq!(at_edge.body, app.get(&url).await.json(), "{}: the edge answered another page", route.name);
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "two values of each route's declared parameter: {checked}");
}

/// The station route end to end, on both backends: served through the edge, invalidated by the
/// warmer when a sighting at that station is written (and only then), and refilled.
async fn a_sighting_at_a_station_refreshes_that_stations_page_through_the_edge(backend: Backend) {
    let app = TestApp::with(TestDb::new(backend).await, &["--change-poll-interval", "100ms"]).await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();
    warmer_purge(&app.db, &edge, "tags").await;
    let page = "/v1/stations/M01/sightings?limit=5";
    let other = "/v1/stations/K01/sightings?limit=5";
    let first = get(&client, &edge.url(page)).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "Miss"));
    assert_eq!(get(&client, &edge.url(page)).await.x_cache, "Hit");
    assert_eq!(get(&client, &edge.url(other)).await.status, 200);
    assert_eq!(get(&client, &edge.url("/v1/stations/NOPE/sightings")).await.status, 404);

    let seen_at = match backend {
        Backend::Postgres => "'2099-01-01T00:00:00Z'",
        Backend::Sqlite => "'2099-01-01T00:00:00.000000Z'",
    };
    app.db
        .exec(&format!(
            "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) VALUES ('3001F', NULL, 'M01', {seen_at})"
        ))
        .await;
    let newest = |v: &Value| {
        v["sightings"][0]["formation_id"] == "3001F"
            && v["sightings"][0]["seen_at"].as_str().is_some_and(|t| t.starts_with("2099"))
    };
    assert!(!newest(&get(&client, &edge.url(page)).await.body), "the edge keeps its copy until invalidated");
    until_origin(&app, page, newest).await;
    let summary = warmer_purge(&app.db, &edge, "tags").await;
    assert_eq!(summary["failures"], 0, "{summary}");
    // The page is not warmed (`warm = false`): the first viewer's fetch after the purge refills it,
    // from an origin that has evicted its copy (`until_origin` saw it do so for this very URL).
    let refilled = get(&client, &edge.url(page)).await;
    assert_eq!(refilled.x_cache, "Miss", "{summary}");
    assert!(newest(&refilled.body), "the station's page was refilled with the new sighting: {summary}");
    assert_eq!(get(&client, &edge.url(other)).await.x_cache, "Hit", "another station's page stayed cached");
}

crate::both_backends!(a_sighting_at_a_station_refreshes_that_stations_page_through_the_edge);

/// A `TRUNCATE` and reload records tag families (`station:*`), which no answer carries: the warmer
/// turns them into its routes' wildcards in either mode, so every page of a removed row leaves
/// the edge, whichever station or formation it was about, and a page of another table stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_truncate_and_reload_purges_every_page_of_the_table_at_the_edge_in_either_mode() {
    let app = TestApp::with(TestDb::new(Backend::Postgres).await, &["--change-poll-interval", "100ms"]).await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();
    warmer_purge(&app.db, &edge, "tags").await;
    let station = "/v1/stations/M01/sightings?limit=5";
    let formation = "/v1/formations/3001F";
    for page in [station, formation, "/v1/lines"] {
        get(&client, &edge.url(page)).await;
        assert_eq!(get(&client, &edge.url(page)).await.x_cache, "Hit", "{page}");
    }
    for (round, mode) in ["tags", "paths"].into_iter().enumerate() {
        let id = format!("300{}F", round + 2);
        app.db
            .exec(&format!(
                "BEGIN; TRUNCATE sightings; INSERT INTO sightings (formation_id, station_id, seen_at) \
                 VALUES ('{id}', 'M01', '2099-01-0{}T00:00:00Z'); COMMIT",
                round + 1
            ))
            .await;
        let reloaded = |v: &Value| v["sightings"][0]["formation_id"] == id.as_str();
        assert!(!reloaded(&get(&client, &edge.url(station)).await.body), "the edge keeps its copy until invalidated");
        until_origin(&app, station, reloaded).await;
        until_origin(&app, formation, |v| v["sightings"].as_array().is_some_and(Vec::is_empty)).await;
        let summary = warmer_purge(&app.db, &edge, mode).await;
        assert_eq!(summary["failures"], 0, "{mode}: {summary}");
        assert!(reloaded(&get(&client, &edge.url(station)).await.body), "{mode}: {summary}");
        let emptied = get(&client, &edge.url(formation)).await;
        assert_eq!(emptied.body["sightings"].as_array().map(Vec::len), Some(0), "{mode}: {summary}");
        assert_eq!(get(&client, &edge.url("/v1/lines")).await.x_cache, "Hit", "{mode}: lines are not sightings");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn purge_is_refused_from_elsewhere_and_prefix_purges_work() {
    let (_app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    get(&client, &edge.url("/v1/formations/3001F")).await;
    get(&client, &edge.url("/v1/formations/3002F")).await;
    assert_eq!(get(&client, &edge.url("/v1/formations/3001F")).await.x_cache, "Hit");
    let purge = reqwest::Method::from_bytes(b"PURGE").unwrap();
    let res = client.request(purge, edge.url("/v1/formations/*")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get(&client, &edge.url("/v1/formations/3001F")).await.x_cache, "Miss");
    assert_eq!(get(&client, &edge.url("/v1/formations/3002F")).await.x_cache, "Miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn paths_mode_reaches_query_variants_and_non_canonical_spellings() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    warmer_purge(&app.db, &edge, "paths").await;

    // Copies a reader can make the edge hold: undeclared query variants, a percent-encoded path.
    let variants = ["/v1/lines?limit=1", "/v1/lines?limit=7", "/v1/formations/10701F?limit=3"];
    for url in variants {
        get(&client, &edge.url(url)).await;
        assert_eq!(get(&client, &edge.url(url)).await.x_cache, "Hit", "{url} is cached at the edge");
    }
    let encoded = edge.url("/v1/formations/10701%46");
    let redirect = no_redirects.get(&encoded).send().await.unwrap();
    assert_eq!(redirect.status(), 308, "a non-canonical spelling points at the canonical path");
    assert_eq!(redirect.headers()["location"], "/v1/formations/10701F");
    assert!(redirect.headers()["cache-control"].to_str().unwrap().contains("s-maxage="));

    app.db.exec("UPDATE lines SET name = 'Minato Line (renamed)' WHERE id = 'minato'").await;
    app.db.exec("UPDATE formations SET note = 'Anniversary wrap' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Anniversary wrap").await;
    until_origin(&app, "/v1/lines", |v| {
        v["lines"].as_array().unwrap().iter().any(|l| l["name"] == "Minato Line (renamed)")
    })
    .await;
    let summary = warmer_purge(&app.db, &edge, "paths").await;
    assert_eq!(summary["failures"], 0, "{summary}");

    for url in &variants[..2] {
        let lines = get(&client, &edge.url(url)).await;
        let minato = lines.body["lines"].as_array().unwrap().iter().find(|l| l["id"] == "minato").cloned().unwrap();
        assert_eq!(minato["name"], "Minato Line (renamed)", "{url} was not left stale");
    }
    assert_eq!(get(&client, &edge.url(variants[2])).await.body["note"], "Anniversary wrap");
    // Following the cached redirect lands on the invalidated canonical object.
    assert_eq!(get(&client, &encoded).await.body["note"], "Anniversary wrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_deploy_clears_what_the_old_code_left_at_the_edge() {
    let db = TestDb::new(Backend::Postgres).await;
    // The old code learns nothing: the 404 it served would otherwise be learned (flushed when it
    // stops) and re-warmed from the new code right after the deploy's purge, and this test looks
    // for the purge itself.
    let old = TestApp::with(
        db.clone(),
        &["--change-poll-interval", "100ms", "--build-id", "one", "--learn-flush-interval", "0s"],
    )
    .await;
    let (addr, stop_old) = old.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();
    let first = warmer_purge(&db, &edge, "paths").await;
    assert!(first["deploy_invalidation"].is_null(), "{first}");
    get(&client, &edge.url("/v1/formations/0000F")).await;
    assert_eq!(get(&client, &edge.url("/v1/formations/0000F")).await.x_cache, "Hit", "the old code's 404 is cached");

    // The deploy: the old code stops, the new code answers on the same origin.
    let _ = stop_old.send(());
    let new = TestApp::with(db.clone(), &["--change-poll-interval", "100ms", "--build-id", "two"]).await;
    let (_, _stop_new) = new.serve_at(addr).await;
    // The edge's pooled connections may still reach the old server while it drains: wait until
    // the new code answers through the edge (the warmer would otherwise pick the deploy up at its
    // next tick).
    let new_code_answers = async {
        loop {
            if let Ok(res) = client.get(edge.url("/health-check")).send().await
                && res.json::<Value>().await.is_ok_and(|v| v["build"] == "two")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), new_code_answers).await.expect("the edge reaches the new code");
    let deployed = warmer_purge(&db, &edge, "paths").await;
    assert!(deployed["deploy_invalidation"].as_str().unwrap_or("").starts_with("purge-"), "{deployed}");
    assert_eq!(get(&client, &edge.url("/v1/formations/0000F")).await.x_cache, "Miss", "invalidated");
    assert_eq!(get(&client, &edge.url("/v1/lines")).await.x_cache, "Hit", "the warm set was re-warmed: {deployed}");
    let again = warmer_purge(&db, &edge, "paths").await;
    assert!(again["deploy_invalidation"].is_null(), "once per build: {again}");
}

/// With repeated invalidations (behind a shield) a deploy's flush is two `/*`s. When the backend
/// refuses the second, the tick fails and the build stays unrecorded, so the next tick sends both
/// again and records it then. Recording it anyway would leave the old code's answers wherever
/// the first `/*` reached an edge location before the shield.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_deploy_whose_second_flush_is_refused_is_flushed_again_by_the_next_tick() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let db = TestDb::new(Backend::Postgres).await;
    // A purge endpoint that takes every purge but the second of the whole edge.
    let flushes = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = flushes.clone();
    let purges = axum::Router::new().fallback(move |uri: http::Uri| {
        let counted = counted.clone();
        async move {
            if uri.path() == "/*" && counted.fetch_add(1, Ordering::SeqCst) == 1 {
                http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let purge_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, purges).await });
    let tick = |origin: String| {
        let (db, purge_url) = (db.clone(), purge_url.clone());
        async move {
            let env = [
                ("INVALIDATOR", "purge"),
                ("PURGE_URL", purge_url.as_str()),
                ("WARM_BASE_URL", origin.as_str()),
                ("INVALIDATION_REPEAT", "true"),
            ];
            crate::warmer::warmer_once(&db, &env).await
        }
    };
    let serve = |build: &'static str| {
        let db = db.clone();
        async move {
            let app = TestApp::with(db, &["--build-id", build]).await;
            let (addr, stop) = app.serve().await;
            (app, format!("http://{addr}"), stop)
        }
    };
    let (_one, one, _stop_one) = serve("one").await;
    let (ok, first) = tick(one).await;
    assert!(ok && first["deploy_invalidation"].is_null(), "the first build seen flushes nothing: {first}");

    let (_two, two, _stop_two) = serve("two").await;
    let (ok, refused) = tick(two.clone()).await;
    assert!(!ok, "a flush that did not go whole fails the tick: {refused}");
    assert_eq!(refused["retryable"], true, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("PURGE /* answered 503")), "{refused}");
    assert!(refused["deploy_invalidation"].is_null(), "not recorded as done: {refused}");
    assert_eq!(flushes.load(Ordering::SeqCst), 2, "the first `/*` went, the second was refused");

    let (ok, flushed) = tick(two.clone()).await;
    assert!(ok, "{flushed}");
    assert!(flushed["deploy_invalidation"].is_string(), "the next tick flushes again: {flushed}");
    assert_eq!(flushes.load(Ordering::SeqCst), 4, "both `/*`s again");
    let (ok, after) = tick(two).await;
    assert!(ok && after["deploy_invalidation"].is_null(), "then it is recorded: {after}");
    assert_eq!(flushes.load(Ordering::SeqCst), 4);
}

/// An origin the test scripts: `/health-check` always answers `200` (CloudFront never asks it
/// anyway), every other path answers `v1` with short windows until `failing` is set, then `503`.
async fn scripted_origin(failing: std::sync::Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    use axum::http::header::CACHE_CONTROL;
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route("/health-check", axum::routing::get(|| async { ([(CACHE_CONTROL, "no-store")], "{\"status\":\"ok\"}") }))
        .fallback(move || {
            let failing = failing.clone();
            async move {
                if failing.load(std::sync::atomic::Ordering::SeqCst) {
                    (http::StatusCode::SERVICE_UNAVAILABLE, [(CACHE_CONTROL, "no-store")], "{}").into_response()
                } else {
                    let policy = "public, max-age=0, s-maxage=1, stale-while-revalidate=1, stale-if-error=600";
                    ([(CACHE_CONTROL, policy)], "{\"v\":1}").into_response()
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Like CloudFront: past its stale-while-revalidate window a copy is refreshed from the origin,
/// and when the origin fails (whatever its health check says) the stale copy is served within
/// its stale-if-error window instead of the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_edge_serves_its_stale_copy_when_the_origin_fails_a_refresh() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let origin = scripted_origin(failing.clone()).await;
    let edge = Varnish::start(origin).await;
    let client = reqwest::Client::new();
    let first = get(&client, &edge.url("/v1/lines")).await;
    assert_eq!((first.status, first.body["v"].as_u64()), (200, Some(1)));
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    // Past s-maxage (1 s) and stale-while-revalidate (1 s): the edge must ask the origin.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for _ in 0..3 {
        let stale = get(&client, &edge.url("/v1/lines")).await;
        assert_eq!((stale.status, stale.body["v"].as_u64()), (200, Some(1)), "the stale copy, not the origin's 503");
        assert_eq!(stale.x_cache, "Stale", "a copy served because the origin failed says so");
    }
    // Nothing held: the origin's error is the answer.
    assert_eq!(get(&client, &edge.url("/v1/formations")).await.status, 503);
    // The origin recovers: the next refresh replaces the copy.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let fresh = get(&client, &edge.url("/v1/lines")).await;
    assert_eq!((fresh.status, fresh.x_cache.as_str()), (200, "Miss"));
}

/// A TCP forwarder to PostgreSQL that can be cut: open connections are closed and new ones
/// refused until it is restored, as while the database restarts.
struct Cuttable {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let cut: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let flag = cut.clone();
        let addr = crate::helpers::forward(target, move |client_read, client_write, server_read, server_write| {
            let flag = flag.clone();
            async move {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let mut client = client_read.reunite(client_write).unwrap();
                let mut server = server_read.reunite(server_write).unwrap();
                let watch = async {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = watch => {}
                }
            }
        })
        .await;
        Self { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

/// While the database restarts, no viewer of the local edge gets a `503` for anything the API
/// still holds: the edge forwards its misses (it has no health probe to mark the API sick), and
/// the API answers from its cache, stale copies included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn while_the_database_restarts_the_edge_forwards_misses_and_the_api_serves_its_copies() {
    let db = TestDb::new(Backend::Postgres).await;
    let server: SocketAddr = db.url.split('@').nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let proxy = Cuttable::start(server).await;
    let url = db.url.replace(&server.to_string(), &proxy.addr.to_string());
    let app =
        TestApp::with_url(db.clone(), &url, &["--change-poll-interval", "100ms", "--db-acquire-timeout", "500ms"])
            .await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();
    // The API holds these (asked directly); the edge holds none of them.
    let held = ["/v1/formations/3001F", "/v1/lines/minato/stations", "/v1/sightings/latest", "/v1/lines"];
    for path in held {
        assert_eq!(client.get(format!("http://{addr}{path}")).send().await.unwrap().status(), 200, "{path}");
    }

    proxy.set_cut(true);
    // Longer than a health probe takes to mark an origin sick.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for round in 0..3 {
        for path in held {
            let res = client.get(edge.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "round {round}: {path} while the database is down");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing held anywhere: the API's own 503, with its Retry-After.
    let res = client.get(edge.url("/v1/formations/3002F")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    proxy.set_cut(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.get(edge.url("/v1/formations/3002F")).send().await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "the API did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The part of `vcl_recv` that keeps, on each route, the query parameters the policy declares for
/// it and drops every other one (and every query string of a route that declares none): what the
/// distribution's cache key holds, and all the origin is asked for.
fn query_keys_vcl(policy: &cache_policy::Policy) -> String {
    let mut out = String::from(
        "    # BEGIN query keys: generated from cache-policy/policy.toml by the test\n    \
         # edge::the_edges_query_keys_are_the_policys (regenerate with EDGERAIL_BLESS=1); not edited by hand.\n    \
         if (req.url ~ \"\\?\") {\n        unset req.http.x-keep;\n",
    );
    let mut first = true;
    for route in policy.routes().iter().filter(|r| !r.query.is_empty()) {
        let mut pattern = String::from("^");
        for segment in route.path.segments() {
            pattern.push('/');
            match segment {
                cache_policy::Segment::Literal(text) => pattern.push_str(&text.replace('.', "\\.")),
                cache_policy::Segment::Param(_) => pattern.push_str("[^/?]+"),
            }
        }
        let keyword = if first { "if" } else { "} elsif" };
        first = false;
        out.push_str(&format!("        {keyword} (req.url ~ \"{pattern}\\?\") {{\n"));
        for param in &route.query {
            let name = &param.name;
            out.push_str(&format!(
                "            if (req.url ~ \"[?&]{name}=\") {{\n                \
                 set req.http.x-keep = req.http.x-keep + \"&\" + regsub(req.url, \"^.*[?&]({name}=[^&]*).*$\", \"\\1\");\n            \
                 }}\n"
            ));
        }
    }
    if !first {
        out.push_str("        }\n");
    }
    out.push_str(
        "        set req.url = regsub(req.url, \"\\?.*$\", \"\");\n        \
         if (req.http.x-keep) {\n            \
         set req.url = req.url + \"?\" + regsub(req.http.x-keep, \"^&\", \"\");\n            \
         unset req.http.x-keep;\n        }\n    }\n    # END query keys\n",
    );
    out
}

#[test]
fn the_edges_query_keys_are_the_policys() {
    let vcl = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../local/varnish.vcl")).unwrap();
    let generated = query_keys_vcl(cache_policy::Policy::embedded().unwrap());
    let vcl = splice(&vcl, "    # BEGIN query keys", "    # END query keys", &generated);
    assert_generated("local/varnish.vcl", &vcl, "the_edges_query_keys");
}

/// A viewer's miss whose load waits behind a lock (an import holding `sightings`) for longer than
/// the warmer's settle time, while a change to the same page commits and the warmer purges the
/// edge. The load then finishes with the data it read before the change. It is served, but the
/// edge must not keep it: stored after the purge, it would be served for the route's whole edge
/// TTL (an hour) although the instance itself already answers the new data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_load_slower_than_the_bound_is_not_kept_by_the_edge_past_the_purge_of_a_change_it_lacks() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::with(db.clone(), &["--change-poll-interval", "100ms", "--change-max-lag", "1s"]).await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let client = reqwest::Client::new();
    let page = "/v1/formations/10701F";
    // The fixture's pending changes out of the way, the instance following the feed, and the page
    // in neither cache (the warmer's fetch put it in both; a write evicts the instance's copy).
    warmer_purge(&db, &edge, "paths").await;
    db.exec("UPDATE formations SET cars = cars WHERE id = '10701F'").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.get("/v1/lines").await;
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit", "following the feed");
    let purge = edge.url(page);
    reqwest::Client::new().request(reqwest::Method::from_bytes(b"PURGE").unwrap(), &purge).send().await.unwrap();

    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sightings IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let viewer = {
        let (client, url) = (client.clone(), edge.url(page));
        tokio::spawn(async move {
            let res = client.get(&url).send().await.unwrap();
            let cache_control = res.headers()["cache-control"].to_str().unwrap().to_owned();
            (cache_control, res.json::<Value>().await.unwrap())
        })
    };
    // The load has read the formation and waits for its sightings; the note changes meanwhile,
    // and the warmer settles, claims the change and purges the edge (its re-warm of the page then
    // waits behind the same lock). The lock goes before the load's statement timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.exec("UPDATE formations SET note = 'after the import' WHERE id = '10701F'").await;
    let warmer = {
        let (db, edge_url) = (db.clone(), edge.url(""));
        tokio::spawn(async move { warmer_tick(&db, &edge_url, "paths", &[("WARMER_SETTLE", "1s")]).await })
    };
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    let summary = warmer.await.unwrap();
    assert!(summary["changes"].as_u64().unwrap() > 0, "the warmer purged the change: {summary}");

    let (cache_control, served) = viewer.await.unwrap();
    assert_eq!(served["id"], "10701F", "{served}");
    assert_ne!(served["note"], "after the import", "the slow load read before the change");
    assert!(cache_control.contains("s-maxage=0"), "no cache keeps a load slower than the bound: {cache_control}");
    let after = get(&client, &edge.url(page)).await;
    assert_eq!(after.body["note"], "after the import", "the edge kept the pre-change answer ({})", after.x_cache);
}

/// A migration or an import holding a data table locked must not hold back the invalidation of
/// changes committed before it: the warmer reads the warm set from the data tables, but only after
/// it has sent the purge. The lock (on `formations`, which the warm set enumerates) is held until
/// the edge shows the change, or for at most 20 s, far past the tick's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_lock_on_a_data_table_does_not_hold_back_the_purge_of_an_earlier_change() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    warmer_purge(&app.db, &edge, "paths").await;
    let page = edge.url("/v1/lines");
    get(&client, &page).await;
    assert_eq!(get(&client, &page).await.x_cache, "Hit", "the edge keeps the page");
    app.db.exec("UPDATE lines SET name = 'renamed before the lock' WHERE id = 'minato'").await;

    let mut locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE formations IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let warmer = {
        let (db, edge_url) = (app.db.clone(), edge.url(""));
        tokio::spawn(async move { warmer_tick(&db, &edge_url, "paths", &[]).await })
    };
    let mut shown = false;
    for _ in 0..100 {
        if get(&client, &page).await.body.to_string().contains("renamed before the lock") {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    let summary = warmer.await.unwrap();
    assert!(shown, "the edge did not show the change while `formations` was locked: {summary}");
    assert!(summary["changes"].as_u64().unwrap() > 0, "{summary}");
}

/// When the edge last fetched a path from the origin: `fetched_at` in the warm state.
async fn fetched_at(db: &TestDb, path: &str) -> chrono::DateTime<chrono::Utc> {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar("SELECT fetched_at FROM warm_state WHERE path = $1")
        .bind(path)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A warm request the edge answers from its copy (a hit) does not make that copy live longer,
/// so the warm state keeps when the edge fetched it (the request's time less the copy's `Age`),
/// and the path falls due by the copy's age, not by the warmer's last request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_warm_hit_keeps_the_time_the_edge_fetched_the_copy() {
    let (app, edge, _stop) = stack().await;
    let first = warmer_purge(&app.db, &edge, "tags").await;
    assert!(first["warm_misses"].as_u64().unwrap() > 100, "{first}");
    let fetched = fetched_at(&app.db, "/v1/lines").await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let out = tokio::process::Command::new(binary("cachectl"))
        .arg("warm")
        .env_clear()
        .env("DATABASE_URL", &app.db.url)
        .env("WARM_BASE_URL", edge.url(""))
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.lines().any(|l| l.starts_with("200 Hit") && l.ends_with(" /v1/lines")), "{printed}");
    let after = fetched_at(&app.db, "/v1/lines").await;
    // Age counts whole seconds, and the first time recorded is when the warmer sent its miss,
    // a little before the edge stored the answer: the two stay within a second and that miss's
    // own time (1.5 s allows for a loaded machine), where the time of the warmer's later request
    // would be 3 s or more later.
    let moved = (after - fetched).num_milliseconds().abs();
    assert!(moved < 1_500, "a hit is not a fetch: {fetched} -> {after}");
}

/// `warmer --every` on the embedded SQLite while another process writes: the warmer never holds
/// the write lock for long (no transaction spans a backend call, an idle tick writes nothing), so
/// every write succeeds within a short busy timeout, and every change reaches the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn on_sqlite_the_warmer_loop_never_locks_a_writer_out() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::with(db.clone(), &["--change-poll-interval", "100ms"]).await;
    let (addr, _stop) = app.serve().await;
    let edge = Varnish::start(addr).await;
    let mut warmer = tokio::process::Command::new(binary("warmer"))
        .args(["--every", "300ms"])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("WARMER_SETTLE", "500ms")
        .env("INVALIDATOR", "purge")
        .env("PURGE_URL", edge.url(""))
        .env("WARM_BASE_URL", edge.url(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ids = ["10701F", "3001F", "5051F"];
    for id in ids {
        get(&client, &edge.url(&format!("/v1/formations/{id}"))).await;
    }
    // A writer that gives up after 250 ms of waiting for the lock, as a web request would.
    let options =
        db.url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().busy_timeout(Duration::from_millis(250));
    let mut writer = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    let mut failed = Vec::new();
    for i in 0..40 {
        let id = ids[i % ids.len()];
        let write = format!("UPDATE formations SET note = 'note {i}' WHERE id = '{id}'");
        if let Err(err) = sqlx::raw_sql(&write).execute(&mut writer).await {
            failed.push(format!("{i}: {err}"));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(failed.is_empty(), "writes the warmer locked out: {failed:?}");
    // Every formation's last note reaches the edge.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for (k, id) in ids.iter().enumerate() {
        let last = (0..40).filter(|i| i % ids.len() == k).max().unwrap();
        let want = format!("note {last}");
        loop {
            let got = get(&client, &edge.url(&format!("/v1/formations/{id}"))).await;
            if got.body["note"] == want.as_str() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never reached the edge: {}", got.body["note"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    warmer.start_kill().unwrap();
}

/// An edge that drops purges (a purge endpoint that answers `200` and does nothing, as a CDN that
/// reports `Completed` for a purge that did not take): the warmer, reading the emptied paths back
/// through the edge, finds them older than the changes it invalidated, says which, invalidates
/// them again, finds them stale still and raises the alarm's metric; `cachectl verify` finds
/// the same. A setup that never invalidates (`INVALIDATOR=none`) raises it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_purge_that_did_not_take_is_found_stale_by_reading_back_through_the_edge() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    warmer_purge(&app.db, &edge, "paths").await;
    assert_eq!(get(&client, &edge.url("/v1/formations/10701F")).await.x_cache, "Hit", "warmed");

    let gate_url = purge_gate(&edge, usize::MAX).await;
    app.db.exec("UPDATE formations SET note = 'Never purged' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Never purged").await;
    let gated = [("PURGE_URL", gate_url.as_str()), ("METRICS", "emf")];
    let lines = warmer_tick_lines(&app.db, &edge.url(""), "paths", &gated).await;
    let (metrics, summary) = (&lines[0], &lines[1]);
    assert_eq!(summary["invalidation_status"], "Completed", "{summary}");
    assert!(summary["verified_stale"].as_u64().unwrap() >= 2, "{summary}");
    let paths = |key: &str| -> Vec<String> {
        summary[key].as_array().unwrap().iter().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let stale = paths("stale_paths");
    assert!(stale.contains(&"/v1/formations/10701F".into()) && stale.contains(&"/v1/formations".into()), "{summary}");
    // Invalidated again, once, and read back again: stale still.
    assert!(summary["repair_invalidation"].as_str().unwrap().starts_with("purge-repair-"), "{summary}");
    assert_eq!(summary["repaired"], 0, "{summary}");
    assert_eq!(paths("repair_failed_paths"), stale, "{summary}");
    assert_eq!(metrics["RepairFailed"].as_f64(), Some(stale.len() as f64), "the alarm's metric: {metrics}");
    assert_eq!(metrics["VerifiedStale"].as_f64(), Some(stale.len() as f64), "{metrics}");
    // Indeed: the edge still serves the old note.
    assert_ne!(get(&client, &edge.url("/v1/formations/10701F")).await.body["note"], "Never purged");
    // The operator's check says the same, and fails; a page no change covers is not stale.
    let verify = ["verify", "/v1/formations/10701F", "/v1/lines", "--propagation", "0s"];
    let (ok, checked) = cachectl(&app.db, &edge.url(""), &verify).await;
    assert!(!ok, "{checked}");
    assert_eq!(checked["stale"], 1, "{checked}");
    assert_eq!(checked["paths"][0]["verdict"], "stale", "{checked}");
    assert_ne!(checked["paths"][1]["verdict"], "stale", "{checked}");
    let (ok, status) = cachectl(&app.db, &edge.url(""), &["status"]).await;
    assert!(ok, "{status}");
    assert_eq!(status["verified_last_hour"]["stale"].as_u64(), Some(stale.len() as u64), "{status}");

    // No invalidation at all: the same alarm, and the pages' freshness is at least how long they
    // have been stale.
    app.db.exec("UPDATE formations SET note = 'Never invalidated' WHERE id = '3001F'").await;
    let committed = std::time::Instant::now();
    until_origin(&app, "/v1/formations/3001F", |v| v["note"] == "Never invalidated").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stale_for = committed.elapsed().as_secs_f64();
    let none = [("INVALIDATOR", "none"), ("METRICS", "emf")];
    let lines = warmer_tick_lines(&app.db, &edge.url(""), "paths", &none).await;
    let (metrics, summary) = (&lines[0], &lines[1]);
    assert!(summary["repair_failed"].as_u64().unwrap() >= 2, "{summary}");
    assert!(metrics["RepairFailed"].as_f64().unwrap() >= 2.0, "{metrics}");
    assert!(metrics["FreshnessMaxSeconds"].as_f64().unwrap() >= stale_for, "{stale_for} {metrics}");
}

/// A purge that takes only the second time (as a shielded edge refilled from its shield before
/// the purge reached it): the warmer finds the emptied pages stale, invalidates them again, finds
/// them fresh, and records them repaired with the freshness the edge gave, which `cachectl status`
/// reports; the edge serves the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_purge_that_takes_the_second_time_is_repaired_by_the_warmer() {
    let (app, edge, _stop) = stack().await;
    let client = reqwest::Client::new();
    warmer_purge(&app.db, &edge, "tags").await;
    let gate_url = purge_gate(&edge, 1).await;
    app.db.exec("UPDATE formations SET note = 'Purged twice' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Purged twice").await;
    let summary = warmer_tick(&app.db, &edge.url(""), "tags", &[("PURGE_URL", &gate_url)]).await;
    let stale = summary["verified_stale"].as_u64().unwrap();
    assert!(stale >= 2, "{summary}");
    assert_eq!(summary["repaired"].as_u64(), Some(stale), "{summary}");
    assert_eq!(summary["repair_failed"], 0, "{summary}");
    let after = get(&client, &edge.url("/v1/formations/10701F")).await;
    assert_eq!((after.body["note"].as_str(), after.x_cache.as_str()), (Some("Purged twice"), "Hit"), "{summary}");
    let (ok, status) = cachectl(&app.db, &edge.url(""), &["status"]).await;
    assert!(ok, "{status}");
    let last_hour = &status["verified_last_hour"];
    assert_eq!(last_hour["repaired"].as_u64(), Some(stale), "{status}");
    assert_eq!(last_hour["stale"], 0, "{status}");
    assert!(last_hour["freshness_max_s"].as_f64().unwrap() > 0.0, "{status}");
    let (ok, checked) =
        cachectl(&app.db, &edge.url(""), &["verify", "/v1/formations/10701F", "--propagation", "0s"]).await;
    assert!(ok, "{checked}");
    assert_eq!(checked["paths"][0]["verdict"], "fresh", "{checked}");

    // Repeating every batch (INVALIDATION_REPEAT, for layered caches): the second purge goes
    // before anything is read back, so nothing is found stale, and the edge serves the change.
    let gate_url = purge_gate(&edge, 1).await;
    app.db.exec("UPDATE formations SET note = 'Sent twice' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Sent twice").await;
    let repeat = [("PURGE_URL", gate_url.as_str()), ("INVALIDATION_REPEAT", "true")];
    let summary = warmer_tick(&app.db, &edge.url(""), "tags", &repeat).await;
    let stale = (summary["verified_stale"].as_u64(), summary["repair_failed"].as_u64());
    assert_eq!(stale, (Some(0), Some(0)), "{summary}");
    assert!(summary["verified"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(get(&client, &edge.url("/v1/formations/10701F")).await.body["note"], "Sent twice", "{summary}");
    let (ok, status) = cachectl(&app.db, &edge.url(""), &["status"]).await;
    assert!(ok, "{status}");
    let sent = status["recent_invalidations"].as_array().unwrap();
    assert!(sent.iter().any(|i| i["id"].as_str().is_some_and(|id| id.starts_with("purge-again-"))), "{status}");
}

/// Behind a shield every batch is sent twice (`INVALIDATION_REPEAT`): a location the first purge
/// reached before the shield may have refilled from the shield's old copy. A tick that dies
/// between the two (Lambda's timeout: `SIGKILL`, no shutdown) must not lose the second, which
/// was all that would have cleared such a location: it is owed in the feed from the moment the
/// first was accepted, and the next tick sends it, as a repair, and reads the page back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_tick_killed_before_its_repeat_leaves_the_repeat_to_the_next() {
    let (app, edge, _stop) = stack().await;
    warmer_purge(&app.db, &edge, "tags").await;
    let (gate_url, mut repeats) = repeat_stalling_gate(&edge).await;
    app.db.exec("UPDATE formations SET note = 'Repeat owed' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Repeat owed").await;
    let mut tick = tokio::process::Command::new(binary("warmer"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &app.db.url)
        .env("WARMER_SETTLE", "0s")
        .env("WARMER_LEASE", "10s")
        .env("INVALIDATOR", "purge")
        .env("PURGE_URL", &gate_url)
        .env("INVALIDATION_MODE", "tags")
        .env("INVALIDATION_REPEAT", "true")
        .env("WARM_BASE_URL", edge.url(""))
        .env("WARM_SECRET", WARM_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The first purge went through; the repeat reached the gate, which does not answer: the tick
    // dies waiting, as Lambda kills it.
    tokio::time::timeout(Duration::from_secs(30), repeats.recv()).await.expect("the repeat was sent").unwrap();
    tick.start_kill().unwrap();
    tick.wait().await.unwrap();
    assert!(crate::warmer::pending(&app.db).await > 0, "the repeat is owed");
    // Once the dead tick's lease expired, the next tick sends the repeat and reads the page back.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let summary = warmer_tick(&app.db, &edge.url(""), "tags", &[("INVALIDATION_REPEAT", "true")]).await;
    assert!(summary["changes"].as_u64().unwrap() > 0, "the repeat went: {summary}");
    assert!(summary["verified"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(
        (summary["verified_stale"].as_u64(), summary["repair_failed"].as_u64()),
        (Some(0), Some(0)),
        "{summary}"
    );
    assert_eq!(crate::warmer::pending(&app.db).await, 0, "nothing more is owed: {summary}");
    let page = get(&reqwest::Client::new(), &edge.url("/v1/formations/10701F")).await;
    assert_eq!(page.body["note"], "Repeat owed", "{summary}");
}

/// A purge gate in front of `edge` that passes each purge the first time, and the second time
/// (the repeat) says so on the channel and never answers.
async fn repeat_stalling_gate(edge: &Varnish) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tell, repeats) = tokio::sync::mpsc::unbounded_channel();
    let url = purge_gate_with(edge, move |key, times| {
        if times == 0 {
            return Gate::Pass;
        }
        let _ = tell.send(key.to_owned());
        Gate::Stall
    })
    .await;
    (url, repeats)
}

/// Through the CloudFront backend (moto, which purges no edge of ours): the warmer reads the
/// emptied pages back through the local edge, finds them stale, sends the repair to CloudFront
/// once and raises the alarm's count; over the month's budget, the repair waits as any batch
/// would (a batch went out just now), and nothing more is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn through_cloudfront_a_purge_that_misses_the_edge_is_repaired_once_within_the_budget() {
    let (app, edge, _stop) = stack().await;
    warmer_purge(&app.db, &edge, "paths").await;
    let distribution = crate::warmer::moto_distribution();
    let moto = crate::warmer::moto();
    let mut cloudfront = crate::warmer::cloudfront_env(&distribution, &moto);
    cloudfront.extend([
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("INVALIDATION_POLL", "50ms"),
        ("INVALIDATION_OVER_BUDGET_EVERY", "2s"),
    ]);
    app.db.exec("UPDATE formations SET note = 'Sent to CloudFront' WHERE id = '10701F'").await;
    until_origin(&app, "/v1/formations/10701F", |v| v["note"] == "Sent to CloudFront").await;
    let summary = warmer_tick(&app.db, &edge.url(""), "paths", &cloudfront).await;
    let stale = summary["verified_stale"].as_u64().unwrap();
    assert!(stale >= 2, "{summary}");
    let repair = summary["repair_invalidation"].as_str().expect("a repair was sent");
    assert_eq!(summary["repair_failed"].as_u64(), Some(stale), "{summary}");
    let sent = crate::warmer::moto_invalidations(&distribution).await;
    assert_eq!(sent.len(), 2, "the batch and its repair, once: {sent:?} ({repair})");
    assert!(sent.iter().all(|items| items.contains(&"/v1/formations/10701F".to_owned())), "{sent:?}");

    // Over the budget: the batch goes (the last one is older than the spacing), its repair waits.
    crate::warmer::spend_the_month(&app.db, 5_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.db.exec("UPDATE formations SET note = 'Over budget' WHERE id = '3001F'").await;
    until_origin(&app, "/v1/formations/3001F", |v| v["note"] == "Over budget").await;
    let summary = warmer_tick(&app.db, &edge.url(""), "paths", &cloudfront).await;
    assert!(summary["invalidation_id"].is_string(), "{summary}");
    let stale = summary["verified_stale"].as_u64().unwrap();
    assert!(stale >= 2, "{summary}");
    assert_eq!(summary["repair_deferred"].as_u64(), Some(stale), "{summary}");
    assert!(summary["repair_invalidation"].is_null(), "{summary}");
    assert_eq!(crate::warmer::moto_invalidations(&distribution).await.len(), 3, "no repair sent");
    // It waits as a pending change, and goes with the next batch the budget allows; read back
    // stale again, it is the second failure: the alarm's count, and no third invalidation.
    assert!(crate::warmer::pending(&app.db).await > 0, "the repair is pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = warmer_tick(&app.db, &edge.url(""), "paths", &cloudfront).await;
    assert!(summary["invalidation_id"].is_string(), "the repair went: {summary}");
    assert!(summary["repair_failed"].as_u64().unwrap() >= 2, "{summary}");
    assert!(summary["repair_invalidation"].is_null(), "{summary}");
    assert_eq!(crate::warmer::moto_invalidations(&distribution).await.len(), 4);
    assert_eq!(crate::warmer::pending(&app.db).await, 0);
}
