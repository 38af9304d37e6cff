//! The warmer against real PostgreSQL and moto (the CloudFront API), recorded CloudFront error
//! responses replayed to the real SDK client, and the purge backend against a real Varnish.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_cloudfront::config::{BehaviorVersion, Credentials, Region};
use axum::Router;
use axum::response::{IntoResponse, Response};
use cache_policy::Policy;
use cache_policy::plan::{Context, Limits, Mode, plan};
use serde_json::Value;
use warmer::backend::{CloudFront, InvalidationError};

use crate::helpers::{Backend, TestDb, binary};

pub(crate) fn moto() -> String {
    crate::helpers::env("TEST_MOTO_URL")
}

/// A CloudFront client for `endpoint` with test credentials.
fn client(endpoint: &str) -> aws_sdk_cloudfront::Client {
    let config = aws_sdk_cloudfront::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .http_client(warmer::backend::https_client())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_cloudfront::Client::from_conf(config)
}

/// Creates a distribution in moto (through boto3, which moto ships with) and returns its id.
pub(crate) fn moto_distribution() -> String {
    let script = r#"
import boto3, sys, uuid
cf = boto3.client("cloudfront", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
d = cf.create_distribution(DistributionConfig={
    "CallerReference": str(uuid.uuid4()), "Comment": "edgerail test", "Enabled": True,
    "Origins": {"Quantity": 1, "Items": [{"Id": "api", "DomainName": "example.lambda-url.us-east-1.on.aws",
        "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443, "OriginProtocolPolicy": "https-only"}}]},
    "DefaultCacheBehavior": {"TargetOriginId": "api", "ViewerProtocolPolicy": "redirect-to-https",
        "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}}, "MinTTL": 0}})
print(d["Distribution"]["Id"])
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(moto()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Paths of every invalidation of a distribution in moto, newest first.
pub(crate) async fn moto_invalidations(distribution: &str) -> Vec<Vec<String>> {
    let cf = client(&moto());
    let list = cf.list_invalidations().distribution_id(distribution).send().await.unwrap();
    let mut out = Vec::new();
    for summary in list.invalidation_list().map(|l| l.items()).unwrap_or_default() {
        let inv = cf.get_invalidation().distribution_id(distribution).id(summary.id()).send().await.unwrap();
        let mut items = inv
            .invalidation()
            .and_then(|i| i.invalidation_batch())
            .and_then(|b| b.paths())
            .map(|p| p.items().to_vec())
            .unwrap_or_default();
        items.sort();
        out.push(items);
    }
    out
}

/// Runs `warmer --once` as a process with the given environment; returns (success, summary).
pub(crate) async fn warmer_once(db: &TestDb, env: &[(&str, &str)]) -> (bool, Value) {
    let (ok, stdout) = warmer_once_output(db, env).await;
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no summary: {stdout}"));
    let summary: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (ok, summary)
}

/// Runs `warmer --once`; returns (success, everything it printed on stdout).
pub(crate) async fn warmer_once_output(db: &TestDb, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(binary("warmer"));
    cmd.arg("--once")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("WARMER_SETTLE", "0s")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("INVALIDATION_POLL", "50ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.is_empty(), "no output; stderr: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

pub(crate) async fn pending(db: &TestDb) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM cache_changes WHERE processed_at IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n
}

async fn pending_tags(db: &TestDb) -> BTreeSet<String> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT tag FROM cache_changes WHERE processed_at IS NULL").fetch_all(&mut conn).await.unwrap();
    rows.into_iter().map(|(t,)| t).collect()
}

pub(crate) fn cloudfront_env<'a>(distribution: &'a str, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("INVALIDATOR", "cloudfront"), ("DISTRIBUTION_ID", distribution), ("AWS_ENDPOINT_URL_CLOUDFRONT", endpoint)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_write_to_each_table_becomes_a_cloudfront_invalidation() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let env = cloudfront_env(&distribution, &moto);
    // The fixture's own load left pending changes: the first tick drains them.
    let (ok, first) = warmer_once(&db, &env).await;
    assert!(ok, "{first}");
    assert!(first["changes"].as_u64().unwrap() > 0);
    assert_eq!(pending(&db).await, 0);

    let today = crate::helpers::calendar().service_date(chrono::Utc::now()).to_string();
    let writes = [
        "UPDATE lines SET name = 'Tama Line (new)' WHERE id = 'tama'".to_owned(),
        "INSERT INTO stations (id, line_id, name, position) VALUES ('T17', 'tama', 'Minami-Osawa', 17)".to_owned(),
        "UPDATE formations SET note = 'Wrapped' WHERE id = '3005F'".to_owned(),
        format!("INSERT INTO operations (service_date, number, formation_id) VALUES ('{today}', '99T', '5051F')"),
        "INSERT INTO sightings (formation_id, operation_number, station_id, seen_at) VALUES ('5052F', '02T', 'T03', now())".to_owned(),
    ];
    let policy = Policy::embedded().unwrap();
    for (i, sql) in writes.iter().enumerate() {
        db.exec(sql).await;
        let tags = pending_tags(&db).await;
        assert!(!tags.is_empty(), "{sql} recorded changes");
        let expected = plan(policy, &tags, Mode::Paths, &Limits::default(), &Context { today: Some(today.clone()) });
        let (ok, summary) = warmer_once(&db, &env).await;
        assert!(ok, "{sql}: {summary}");
        let id = summary["invalidation_id"].as_str().unwrap_or_else(|| panic!("{summary}")).to_owned();
        assert_eq!(summary["items"].as_u64().unwrap() as usize, expected.items.len());
        assert_eq!(summary["invalidation_status"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("completed"));
        let invalidations = moto_invalidations(&distribution).await;
        assert_eq!(invalidations.len(), i + 2, "one invalidation per tick with changes");
        assert!(
            invalidations.contains(&expected.items),
            "{sql}: moto has {invalidations:?}, planned {:?}",
            expected.items
        );
        assert_eq!(pending(&db).await, 0, "{sql}: marked processed");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        let (marked,): (i64,) = sqlx::query_as("SELECT count(*) FROM cache_changes WHERE invalidation_id = $1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(marked as usize, summary["changes"].as_u64().unwrap() as usize);
    }
    // A tick with nothing to do does nothing.
    let (ok, idle) = warmer_once(&db, &env).await;
    assert!(ok);
    assert_eq!(idle["changes"], 0);
    assert!(idle["invalidation_id"].is_null());
    assert_eq!(moto_invalidations(&distribution).await.len(), writes.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_failing_backend_leaves_changes_pending_and_the_retry_sends_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let before = pending(&db).await;
    assert!(before > 0);
    let dead = format!(
        "http://127.0.0.1:{}",
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
    );
    let (ok, failed) = warmer_once(&db, &cloudfront_env(&distribution, &dead)).await;
    assert!(!ok, "a failed tick exits non-zero");
    assert!(failed["error"].as_str().unwrap().contains("CloudFront request failed"), "{failed}");
    assert_eq!(failed["retryable"], true);
    assert!(failed["invalidation_id"].is_null());
    assert_eq!(pending(&db).await, before, "nothing lost");

    let moto = moto();
    let (ok, retried) = warmer_once(&db, &cloudfront_env(&distribution, &moto)).await;
    assert!(ok, "{retried}");
    assert_eq!(retried["changes"].as_i64().unwrap(), before);
    assert_eq!(pending(&db).await, 0);
    assert_eq!(moto_invalidations(&distribution).await.len(), 1, "the retry started exactly one invalidation");
}

/// Two ticks started together, as an EventBridge schedule whose runs overlap starts them, with
/// changes pending and the whole warm set due: one takes the warmer's lease and does all of it
/// (one batch, every change, the warming); the other ends at once and says who holds the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn two_ticks_at_once_one_does_the_work_and_the_other_says_why() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    for i in 0..40 {
        db.exec(&format!("UPDATE formations SET note = 'n{i}' WHERE id = '{}F'", 10701 + (i % 30))).await;
    }
    let total = pending(&db).await;
    let app = crate::helpers::TestApp::with(db.clone(), &[]).await;
    let (addr, _stop) = app.serve().await;
    let base = format!("http://{addr}");
    let moto = moto();
    let mut env = cloudfront_env(&distribution, &moto);
    // Long enough a settle that the second tick starts while the first holds the lease.
    env.extend([("WARM_BASE_URL", base.as_str()), ("WARMER_SETTLE", "2s")]);
    let ((ok_a, a), (ok_b, b)) = tokio::join!(warmer_once(&db, &env), warmer_once(&db, &env));
    assert!(ok_a && ok_b, "{a} {b}");
    let (worked, stood_by) = if a["lease_held"].is_null() { (&a, &b) } else { (&b, &a) };
    assert!(worked["lease_held"].is_null(), "{a} {b}");
    assert_eq!(worked["changes"].as_i64().unwrap(), total, "{worked}");
    assert!(worked["invalidation_id"].is_string(), "{worked}");
    assert!(worked["warmed"].as_u64().unwrap() > 100, "{worked}");
    let why = stood_by["lease_held"].as_str().unwrap_or_else(|| panic!("{stood_by}"));
    assert!(why.contains("another tick holds the lease"), "{why}");
    for field in ["changes", "items", "warmed", "warm_hits", "warm_misses"] {
        assert_eq!(stood_by[field], 0, "{field}: {stood_by}");
    }
    assert!(stood_by["invalidation_id"].is_null(), "{stood_by}");
    assert_eq!(pending(&db).await, 0);
    assert_eq!(moto_invalidations(&distribution).await.len(), 1, "one batch");
    // The lease was given back: the next tick is free to work at once.
    db.exec("UPDATE formations SET note = 'after' WHERE id = '10701F'").await;
    let (ok, next) = warmer_once(&db, &env).await;
    assert!(ok && next["lease_held"].is_null() && next["changes"] == 2, "{next}");
}

/// A tick killed while it holds the lease (at the function's timeout, or by a person) blocks
/// the ticks after it for at most the lease's expiry, then the next one does the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_killed_tick_blocks_the_next_for_at_most_its_lease() {
    let db = TestDb::new(Backend::Postgres).await;
    let total = pending(&db).await;
    assert!(total > 0);
    let mut killed = tokio::process::Command::new(binary("warmer"))
        .arg("--once")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("WARMER_SETTLE", "30s")
        .env("WARMER_LEASE", "3s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait until it holds the lease (it then sleeps out its settle time), then kill it.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (held,): (bool,) =
            sqlx::query_as("SELECT holder IS NOT NULL FROM warmer_lease").fetch_one(&mut conn).await.unwrap();
        if held {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the tick never took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let killed_at = std::time::Instant::now();
    let (ok, blocked) = warmer_once(&db, &[]).await;
    assert!(ok, "{blocked}");
    assert!(blocked["lease_held"].is_string(), "{blocked}");
    assert_eq!(pending(&db).await, total, "nothing was claimed by either");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed_at.elapsed()) + Duration::from_millis(200)).await;
    let (ok, after) = warmer_once(&db, &[]).await;
    assert!(ok && after["lease_held"].is_null(), "{after}");
    assert_eq!(after["changes"].as_i64().unwrap(), total, "{after}");
    assert_eq!(pending(&db).await, 0);
}

/// After a restore, change ids rewind: the same change of the same tags gets the same ids again
/// and plans the same batch. Its `CallerReference` must still differ from the one sent before
/// the restore, or CloudFront answers with that old, completed invalidation and purges nothing.
/// (moto does not enforce `CallerReference`, so the reference itself is compared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_restored_database_does_not_reuse_the_caller_references_of_its_past() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let env = cloudfront_env(&distribution, &moto);
    let (ok, drained) = warmer_once(&db, &env).await;
    assert!(ok, "{drained}");
    // The backup the restore brings back.
    let restored = db.copy().await;
    let change = "UPDATE formations SET note = 'Repainted' WHERE id = '10701F'";
    let env = &env;
    let sent = |db: TestDb| async move {
        db.exec(change).await;
        let (ok, summary) = warmer_once(&db, env).await;
        assert!(ok && summary["invalidation_id"].is_string(), "{summary}");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        let row: (String, i64, i64) = sqlx::query_as(
            "SELECT i.caller_reference, min(c.id), max(c.id) FROM cache_invalidations i \
             JOIN cache_changes c ON c.invalidation_id = i.id WHERE i.id = $1 GROUP BY 1",
        )
        .bind(summary["invalidation_id"].as_str().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        row
    };
    let before = sent(db.clone()).await;
    let after = sent(restored).await;
    assert_eq!((before.1, before.2), (after.1, after.2), "the restore rewound the change ids");
    assert_ne!(before.0, after.0, "the same reference would fetch the old invalidation");
}

/// The warm state is bounded: a row the edge has not fetched for longer than the longest edge
/// TTL says nothing (its path is due either way) and goes; a tick reads only the rows of the
/// paths it may warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_warm_state_is_pruned_past_the_longest_edge_ttl() {
    let db = TestDb::new(Backend::Postgres).await;
    db.exec(
        "INSERT INTO warm_state (path, status, x_cache, fetched_at) \
         SELECT '/v1/formations/' || i || 'X', 404, 'Miss', now() - interval '25 hours' FROM generate_series(1, 5000) i; \
         INSERT INTO warm_state (path, status, x_cache, fetched_at) VALUES ('/v1/lines', 200, 'Miss', now())",
    )
    .await;
    let (ok, summary) = warmer_once(&db, &[]).await;
    assert!(ok, "{summary}");
    assert_eq!(summary["warm_state_pruned"], 5000, "{summary}");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM warm_state").fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 1, "the recent row stays");
}

/// The record of invalidations sent is bounded: what came before last month goes (the budget sums
/// this month's, and last month's stays to compare with), on either backend.
async fn recorded_invalidations_before_last_month_are_pruned(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (ok, drained) = warmer_once(&db, &[]).await;
    assert!(ok, "{drained}");
    let (old, last_month, this_month) = match backend {
        Backend::Postgres => (
            "date_trunc('month', now()) - interval '1 month' - interval '1 second'",
            "date_trunc('month', now()) - interval '1 month'",
            "now()",
        ),
        Backend::Sqlite => (
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', 'start of month', '-1 month', '-1 second')",
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', 'start of month', '-1 month')",
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        ),
    };
    db.exec(&format!(
        "INSERT INTO cache_invalidations (id, backend, caller_reference, items, changes, status, created_at) VALUES \
         ('old', 'cloudfront', 'a', 10, 1, 'Completed', {old}), \
         ('last-month', 'cloudfront', 'b', 10, 1, 'Completed', {last_month}), \
         ('this-month', 'cloudfront', 'c', 10, 1, 'Completed', {this_month})"
    ))
    .await;
    let (ok, summary) = warmer_once(&db, &[]).await;
    assert!(ok, "{summary}");
    assert_eq!(summary["invalidations_pruned"], 1, "{summary}");
    let app = crate::helpers::TestApp::with(db.clone(), &[]).await;
    let recorded = app.store().recent_invalidations(100).await.unwrap();
    let mut left: Vec<&str> =
        recorded.iter().map(|r| r.id.as_str()).filter(|id| ["old", "last-month", "this-month"].contains(id)).collect();
    left.sort_unstable();
    assert_eq!(left, ["last-month", "this-month"]);
}

crate::both_backends!(recorded_invalidations_before_last_month_are_pruned);

/// On the embedded database, a tick with nothing to do takes no write lock: with another writer
/// holding SQLite's write lock, it still succeeds, and says it was idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn an_idle_tick_on_sqlite_writes_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (ok, drained) = warmer_once(&db, &[]).await;
    assert!(ok && drained["changes"].as_u64().unwrap() > 0, "{drained}");
    let mut writer = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE; UPDATE lines SET color = color WHERE 0").execute(&mut writer).await.unwrap();
    let (ok, idle) = warmer_once(&db, &[]).await;
    assert!(ok, "an idle tick must not need the write lock: {idle}");
    assert_eq!(idle["idle"], true, "{idle}");
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
}

/// Serves recorded CloudFront responses in order, counting requests.
async fn replay(responses: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let responses = Arc::new(responses);
    let router = Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let (status, body) = responses[n.min(responses.len() - 1)];
        async move {
            let mut res: Response = body.to_owned().into_response();
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            res.headers_mut().insert("content-type", "text/xml".parse().unwrap());
            res.headers_mut().insert("x-amz-request-id", "5d2b1d1e-0000-4000-8000-0123456789ab".parse().unwrap());
            if status == 201 {
                res.headers_mut().insert(
                    "location",
                    "https://cloudfront.amazonaws.com/2020-05-31/distribution/E2QWRUHEXAMPLE/invalidation/I2J0I21PCUYOIK".parse().unwrap(),
                );
            }
            res
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), calls)
}

fn recorded(name: &str) -> &'static str {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cloudfront").join(name);
    Box::leak(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_boxed_str())
}

fn backend(endpoint: &str) -> CloudFront {
    CloudFront::with_client(client(endpoint), "E2QWRUHEXAMPLE".into(), Duration::from_millis(10), 4)
}

fn items() -> Vec<String> {
    vec!["/v1/formations/10701F".into(), "/v1/formations".into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn too_many_invalidations_in_progress_is_retried_with_backoff() {
    let throttled = recorded("too-many-invalidations-in-progress.xml");
    let (endpoint, calls) =
        replay(vec![(400, throttled), (400, throttled), (201, recorded("create-invalidation-created.xml"))]).await;
    let submitted = backend(&endpoint).submit(&items(), "edgerail-1-2-2-abc").await.unwrap();
    assert_eq!(submitted.id, "I2J0I21PCUYOIK");
    assert_eq!(submitted.status, "InProgress");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (endpoint, calls) = replay(vec![(400, throttled)]).await;
    let err = backend(&endpoint).submit(&items(), "edgerail-1-2-2-abc").await.unwrap_err();
    assert!(matches!(err, InvalidationError::TooManyInProgress(4)), "{err:?}");
    assert!(err.retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn rejected_batches_are_not_retried() {
    type Expect = fn(&InvalidationError) -> bool;
    let cases: [(u16, &str, Expect); 3] = [
        (413, "batch-too-large.xml", |e| matches!(e, InvalidationError::BatchTooLarge(_))),
        (400, "invalid-argument.xml", |e| matches!(e, InvalidationError::InvalidArgument(_))),
        (403, "access-denied.xml", |e| matches!(e, InvalidationError::AccessDenied(_))),
    ];
    for (status, file, expected) in cases {
        let (endpoint, calls) = replay(vec![(status, recorded(file))]).await;
        let err = backend(&endpoint).submit(&items(), "edgerail-1-2-2-abc").await.unwrap_err();
        assert!(expected(&err), "{file}: {err:?}");
        assert!(!err.retryable(), "{file}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{file}: not retried");
    }
    // An invalid batch is refused before anything is sent.
    let (endpoint, calls) = replay(vec![(201, recorded("create-invalidation-created.xml"))]).await;
    let err = backend(&endpoint).submit(&["/v1/*/stations".to_owned()], "x").await.unwrap_err();
    assert!(matches!(err, InvalidationError::Batch(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn an_eventbridge_scheduled_event_runs_a_tick() {
    let db = TestDb::new(Backend::Postgres).await;
    let cli = <warmer::cli::WarmerCli as clap::Parser>::try_parse_from([
        "warmer",
        "--database-url",
        &db.url,
        "--invalidator",
        "none",
        "--settle",
        "0s",
    ])
    .unwrap();
    let warmer = warmer::cli::warmer(&cli.db, &cli.outbox, &cli.backend, &cli.warm).await.unwrap();
    let event: ScheduledEvent = serde_json::from_value(serde_json::json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-28T12:00:00Z",
        "region": "ap-northeast-1",
        "resources": ["arn:aws:events:ap-northeast-1:123456789012:rule/edgerail-warmer"],
        "detail": {}
    }))
    .unwrap();
    let pending_before = pending(&db).await;
    let summary = warmer::lambda::handle_scheduled_event(
        &warmer,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(summary.changes as i64, pending_before);
    assert!(summary.invalidation_id.unwrap().starts_with("none-"));
    assert_eq!(pending(&db).await, 0);
}

type ScheduledEvent = aws_lambda_events::eventbridge::EventBridgeEvent;

async fn cachectl(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(binary("cachectl"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cachectl_plan_prints_the_covering_items_in_both_modes() {
    let today =
        store::ServiceCalendar::new("Asia/Tokyo", "04:00").unwrap().service_date(chrono::Utc::now()).to_string();
    let ops = format!("operations:{today}");
    let args = ["plan", "--tag", "formation:10701F", "sightings", ops.as_str()];
    let (ok, paths, err) = cachectl(&args, &[]).await;
    assert!(ok, "{err}");
    let expected =
        format!("/v1/formations/10701F\n/v1/operations/{today}\n/v1/operations/today\n/v1/sightings/latest*\n");
    assert_eq!(paths, expected);
    let (ok, tags, _) = cachectl(&args, &[("INVALIDATION_MODE", "tags")]).await;
    assert!(ok);
    assert_eq!(tags, format!("#formation:10701F\n#operations:{today}\n#sightings\n"));
    let (ok, _, err) = cachectl(&["plan", "--tag", "no-such-tag"], &[]).await;
    assert!(!ok);
    assert!(err.contains("no route carries these tags"), "{err}");
    let (ok, out, _) = cachectl(&["policy"], &[]).await;
    assert!(ok);
    assert!(out.lines().count() == Policy::embedded().unwrap().routes().len() + 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cachectl_invalidate_waits_for_completion() {
    let distribution = moto_distribution();
    let moto = moto();
    let env = [
        ("INVALIDATOR", "cloudfront"),
        ("DISTRIBUTION_ID", distribution.as_str()),
        ("AWS_ENDPOINT_URL_CLOUDFRONT", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("INVALIDATION_POLL", "50ms"),
    ];
    let (ok, out, err) = cachectl(&["invalidate", "--path", "/v1/lines", "--wait"], &env).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("completed"), "{out}");
    assert_eq!(moto_invalidations(&distribution).await, [vec!["/v1/lines".to_owned()]]);

    let (ok, out, _) = cachectl(&["invalidate", "--path", "/v1/formations", "--dry-run"], &env).await;
    assert!(ok);
    assert!(out.contains("nothing sent"));
    assert_eq!(moto_invalidations(&distribution).await.len(), 1, "a dry run sends nothing");

    let (ok, _, err) = cachectl(&["invalidate", "--path", "v1/lines"], &env).await;
    assert!(!ok);
    assert!(err.contains("must start with /"), "{err}");
    let (ok, _, err) = cachectl(&["invalidate", "--path", "/v1/lines"], &[("INVALIDATOR", "cloudfront")]).await;
    assert!(!ok);
    assert!(err.contains("DISTRIBUTION_ID"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cachectl_status_reports_pending_changes_and_invalidations() {
    let db = TestDb::new(Backend::Postgres).await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (ok, out, err) = cachectl(&["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("pending changes: {}", pending(&db).await)), "{out}");
    assert!(out.contains("no invalidations yet"));
    let (ok, summary) = warmer_once(&db, &[("INVALIDATOR", "none")]).await;
    assert!(ok, "{summary}");
    let (_, out, _) = cachectl(&["status"], &env).await;
    assert!(out.contains("pending changes: 0"), "{out}");
    assert!(out.contains(summary["invalidation_id"].as_str().unwrap()), "{out}");
}

/// An edge stand-in: answers every warm request, fails one path, and records what was fetched
/// (except the health check the warmer reads the API's build from on every tick).
async fn recording_edge(failing: &'static str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: http::Uri| {
        let log = log.clone();
        async move {
            if uri.path() != "/health-check" {
                log.lock().unwrap().push(uri.path().to_owned());
            }
            let status = if uri.path() == failing { 500 } else { 200 };
            (http::StatusCode::from_u16(status).unwrap(), [("x-cache", "Miss")], "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn warming_is_cost_aware_and_one_failing_path_does_not_fail_the_tick() {
    let db = TestDb::new(Backend::Postgres).await;
    let (edge, seen) = recording_edge("/v1/lines").await;
    let cli = <warmer::cli::WarmerCli as clap::Parser>::try_parse_from([
        "warmer",
        "--database-url",
        &db.url,
        "--settle",
        "0s",
        "--base-url",
        &edge,
        "--max-paths",
        "500",
    ])
    .unwrap();
    let warmer = warmer::cli::warmer(&cli.db, &cli.outbox, &cli.backend, &cli.warm).await.unwrap();

    let first = warmer.tick().await.unwrap();
    // Lines, formations, latest sightings, 5 stations pages, 100 formations, today's operations twice.
    assert_eq!(first.warmed + first.failures, 3 + 5 + 100 + 2, "{first:?}");
    assert_eq!(first.failures, 1, "only /v1/lines failed");
    assert_eq!(first.warm_misses, first.warmed);
    assert!(seen.lock().unwrap().contains(&"/v1/operations/today".to_owned()));

    // Nothing is due again before its edge TTL (the failed path is retried).
    seen.lock().unwrap().clear();
    let second = warmer.tick().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["/v1/lines"], "{second:?}");

    // A change re-warms the paths it affects, due or not.
    db.exec("UPDATE formations SET note = 'x' WHERE id = '3003F'").await;
    seen.lock().unwrap().clear();
    let third = warmer.tick().await.unwrap();
    assert_eq!(third.changes, 2);
    let mut fetched = seen.lock().unwrap().clone();
    fetched.sort();
    assert_eq!(fetched, ["/v1/formations", "/v1/formations/3003F", "/v1/lines"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_batch_cloudfront_already_has_counts_as_accepted() {
    let (endpoint, calls) = replay(vec![(409, recorded("invalidation-batch-already-exists.xml"))]).await;
    let submitted = backend(&endpoint).submit(&items(), "edgerail-1-2-2-abc-def").await.unwrap();
    assert_eq!(submitted.id, "existing-edgerail-1-2-2-abc-def");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

pub(crate) async fn spend_the_month(db: &TestDb, items: i64) {
    db.exec(&format!(
        "INSERT INTO cache_invalidations (id, backend, caller_reference, items, changes, status) \
         VALUES ('earlier-this-month', 'cloudfront', 'x', {items}, 1, 'Completed')"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn over_budget_a_small_change_stays_precise_and_batches_are_spaced() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("INVALIDATION_OVER_BUDGET_EVERY", "0s"));
    let (ok, drained) = warmer_once(&db, &env).await;
    assert!(ok, "{drained}");
    spend_the_month(&db, 5_000).await;

    // Two formations change: each keeps its own path, not `/v1/formations/*` (a spent budget
    // used to count as a budget of one path, coarsening any two).
    db.exec("UPDATE formations SET note = 'Over budget' WHERE id IN ('10701F', '3001F')").await;
    let (ok, summary) = warmer_once(&db, &env).await;
    assert!(ok, "{summary}");
    let sent = moto_invalidations(&distribution).await;
    let latest = sent.iter().find(|items| items.iter().any(|i| i.contains("10701F"))).expect("the change was sent");
    assert_eq!(
        latest,
        &["/v1/formations".to_owned(), "/v1/formations/10701F".to_owned(), "/v1/formations/3001F".to_owned()],
        "precise, not /v1/formations/*"
    );
    assert!(!latest.iter().any(|i| i.ends_with('*')), "{sent:?}");

    // With the default spacing, a second batch right after waits: the change stays pending.
    db.exec("UPDATE formations SET note = 'Over budget again' WHERE id = '10701F'").await;
    let mut spaced = cloudfront_env(&distribution, &moto);
    spaced.push(("INVALIDATION_OVER_BUDGET_EVERY", "5m"));
    let (ok, deferred) = warmer_once(&db, &spaced).await;
    assert!(ok, "{deferred}");
    assert_eq!(deferred["deferred"], true, "{deferred}");
    assert_eq!(pending(&db).await, 2, "it waits to be coalesced with later changes");
    assert_eq!(moto_invalidations(&distribution).await.len(), sent.len());

    let (_, plan, err) = cachectl(
        &["plan", "--tag", "formation:10701F", "--json"],
        &[("DATABASE_URL", db.url.as_str()), ("INVALIDATION_PATH_BUDGET", "1000")],
    )
    .await;
    let plan: Value = serde_json::from_str(&plan).unwrap_or_else(|e| panic!("{e}: {plan} {err}"));
    assert!(plan["used_this_month"].as_u64().unwrap() >= 5_000, "{plan}");
    assert_eq!(plan["billable"], plan["count"], "{plan}");
    assert!(plan["cost_usd"].as_f64().unwrap() > 0.0, "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_warmer_works_through_pgbouncer_transaction_pooling() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let pooled = TestDb { url: db.via_pgbouncer(), ..db.clone() };
    let env = cloudfront_env(&distribution, &moto);
    let (ok, first) = warmer_once(&pooled, &env).await;
    assert!(ok, "{first}");
    for i in 0..5 {
        db.exec(&format!("UPDATE formations SET note = 'pooled {i}' WHERE id = '3001F'")).await;
        let (ok, summary) = warmer_once(&pooled, &env).await;
        assert!(ok, "{summary}");
        assert_eq!(summary["changes"], 2, "{summary}");
    }
    assert_eq!(pending(&db).await, 0);
    let (ok, status, err) = cachectl(&["status", "--json"], &[("DATABASE_URL", pooled.url.as_str())]).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["pending"], 0);
    assert_eq!(status["recent_invalidations"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cachectl_refuses_to_pretend_and_speaks_json() {
    let (ok, _, err) = cachectl(&["invalidate", "--path", "/v1/lines"], &[("INVALIDATOR", "none")]).await;
    assert!(!ok, "invalidate with INVALIDATOR=none must not report success");
    assert!(err.contains("INVALIDATOR is none"), "{err}");
    let (ok, out, _) = cachectl(&["invalidate", "--path", "/v1/lines", "--dry-run", "--json"], &[]).await;
    assert!(ok);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["items"], serde_json::json!(["/v1/lines"]));
    let (ok, out, _) = cachectl(&["plan", "--tag", "lines", "--json"], &[]).await;
    assert!(ok);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert!(out["items"].as_array().unwrap().contains(&Value::from("/v1/lines")));
    assert!(out["used_this_month"].is_null(), "no database: unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_calendar_that_differs_from_the_triggers_is_reported() {
    let db = TestDb::new(Backend::Postgres).await;
    let (ok, agreeing) = warmer_once(&db, &[("INVALIDATOR", "none")]).await;
    assert!(ok, "{agreeing}");
    assert!(agreeing["calendar_mismatch"].is_null(), "{agreeing}");
    let (ok, differing) = warmer_once(&db, &[("INVALIDATOR", "none"), ("SERVICE_TZ", "Europe/London")]).await;
    assert!(ok, "{differing}");
    let mismatch = differing["calendar_mismatch"].as_str().unwrap_or_else(|| panic!("{differing}"));
    assert!(mismatch.contains("Asia/Tokyo") && mismatch.contains("Europe/London"), "{mismatch}");
    let env = [("DATABASE_URL", db.url.as_str()), ("SERVICE_TZ", "Europe/London")];
    let (ok, out, err) = cachectl(&["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("warning: the database's triggers use Asia/Tokyo"), "{out}");
    let (_, out, _) = cachectl(&["status", "--json"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["calendar_matches"], true);
}

/// Zone rules that changed since `migrate` (here: the database learns of a clock change in a
/// month that this process's rules do not have, as a tzdata update would move one) are a calendar
/// mismatch although the zone and the day start agree: reported in the tick's summary, its
/// `CalendarMismatch` metric, and `cachectl status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn service_day_runs_that_differ_from_the_zone_rules_are_reported() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let (ok, agreeing) = warmer_once(&db, &[("INVALIDATOR", "none")]).await;
        assert!(ok && agreeing["calendar_mismatch"].is_null(), "{agreeing}");
        // Split the run in effect now: from the day thirty days ahead, days start an hour later.
        let calendar = crate::helpers::calendar();
        let day = calendar.service_date(chrono::Utc::now()) + chrono::Days::new(30);
        let starts = calendar.day_start_instant(day) + chrono::TimeDelta::hours(1);
        let (starts, previous) = (starts.format("%Y-%m-%dT%H:%M:%S%.3fZ"), day.pred_opt().unwrap());
        db.exec(&format!(
            "UPDATE service_day_runs SET last_day = '{previous}' WHERE day <= '{day}' AND last_day >= '{day}'; \
             INSERT INTO service_day_runs (starts_at, day, last_day) VALUES ('{starts}', '{day}', '9999-12-31')"
        ))
        .await;
        let (ok, out) = warmer_once_output(&db, &[("INVALIDATOR", "none"), ("METRICS", "emf")]).await;
        assert!(ok, "{out}");
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let [emf, summary] = &lines[..] else { panic!("{out}") };
        let mismatch = summary["calendar_mismatch"].as_str().unwrap_or_else(|| panic!("{backend:?}: {summary}"));
        assert!(mismatch.contains(&format!("service day {day}")), "{mismatch}");
        assert_eq!(emf["CalendarMismatch"], 1.0, "{emf}");
        let (_, out, _) = cachectl(&["status", "--json"], &[("DATABASE_URL", db.url.as_str())]).await;
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["calendar_matches"], false, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_tick_writes_its_metrics_line_before_its_summary() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("METRICS", "emf"));
    let (ok, stdout) = warmer_once_output(&db, &env).await;
    assert!(ok, "{stdout}");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let [emf, summary] = &lines[..] else { panic!("a metrics line and a summary: {stdout}") };
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "edgerail");
    for metric in directive["Metrics"].as_array().unwrap() {
        assert!(warmer::metrics::NAMES.contains(&metric["Name"].as_str().unwrap()), "{metric}");
    }
    assert_eq!(emf["Changes"].as_f64().unwrap(), summary["changes"].as_f64().unwrap());
    assert_eq!(emf["InvalidationItems"].as_f64().unwrap(), summary["items"].as_f64().unwrap());
    assert_eq!(emf["InvalidationsSent"], 1.0);
    assert_eq!(emf["PendingChanges"], 0.0);
    assert_eq!(emf["ItemsThisMonth"], 0.0, "before this tick");
    assert_eq!(emf["PathBudget"], 1000.0);
    assert_eq!(emf["TickFailedRetryable"], 0.0);
}

/// The API over a socket with a build id of its own, as a deploy would start it.
async fn api_build(
    db: &TestDb,
    build: &str,
) -> (crate::helpers::TestApp, std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = crate::helpers::TestApp::with(db.clone(), &["--build-id", build]).await;
    let (addr, stop) = app.serve().await;
    (app, addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_new_api_build_invalidates_the_distribution_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let (_old, old_addr, _stop_old) = api_build(&db, "build-one").await;
    let old_base = format!("http://{old_addr}");
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("WARM_BASE_URL", old_base.as_str()));
    let (ok, first) = warmer_once(&db, &env).await;
    assert!(ok, "{first}");
    assert!(first["deploy_invalidation"].is_null(), "the first build ever seen invalidates nothing: {first}");
    let before = moto_invalidations(&distribution).await.len();

    let (_new, new_addr, _stop_new) = api_build(&db, "build-two").await;
    let new_base = format!("http://{new_addr}");
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("WARM_BASE_URL", new_base.as_str()));
    let (ok, deployed) = warmer_once(&db, &env).await;
    assert!(ok, "{deployed}");
    assert!(deployed["deploy_invalidation"].is_string(), "{deployed}");
    let sent = moto_invalidations(&distribution).await;
    assert_eq!(sent.len(), before + 1);
    assert!(sent.contains(&vec!["/*".to_owned()]), "one path for the whole edge: {sent:?}");
    assert!(deployed["warmed"].as_u64().unwrap() > 100, "the whole warm set is re-warmed: {deployed}");

    let (ok, again) = warmer_once(&db, &env).await;
    assert!(ok, "{again}");
    assert!(again["deploy_invalidation"].is_null(), "once per build: {again}");
    assert_eq!(moto_invalidations(&distribution).await.len(), before + 1);

    // Rolling back to the first build is a deploy too: the second build's answers go.
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("WARM_BASE_URL", old_base.as_str()));
    let (ok, rolled_back) = warmer_once(&db, &env).await;
    assert!(ok, "{rolled_back}");
    assert!(rolled_back["deploy_invalidation"].is_string(), "a rollback flushes the edge: {rolled_back}");
    assert_ne!(rolled_back["deploy_invalidation"], deployed["deploy_invalidation"]);
    let sent = moto_invalidations(&distribution).await;
    assert_eq!(sent.iter().filter(|items| **items == ["/*"]).count(), 2, "one → two → one: {sent:?}");
    let (ok, again) = warmer_once(&db, &env).await;
    assert!(ok, "{again}");
    assert!(again["deploy_invalidation"].is_null(), "{again}");
}

/// A deploy that changes only the settings that shape answers (here the service day's start:
/// every `today` and dated answer moves) flushes the edge like a new build: same code, one `/*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_deploy_of_new_answer_settings_invalidates_the_distribution_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let serve = |start: &'static str| {
        let db = db.clone();
        async move {
            let app =
                crate::helpers::TestApp::with(db, &["--build-id", "same-build", "--service-day-start", start]).await;
            let (addr, stop) = app.serve().await;
            (app, format!("http://{addr}"), stop)
        }
    };
    let (_four, four, _stop_four) = serve("04:00").await;
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("WARM_BASE_URL", four.as_str()));
    let (ok, first) = warmer_once(&db, &env).await;
    assert!(ok && first["deploy_invalidation"].is_null(), "{first}");
    let before = moto_invalidations(&distribution).await.len();

    let (_five, five, _stop_five) = serve("05:00").await;
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("WARM_BASE_URL", five.as_str()));
    let (ok, moved) = warmer_once(&db, &env).await;
    assert!(ok && moved["deploy_invalidation"].is_string(), "{moved}");
    let sent = moto_invalidations(&distribution).await;
    assert_eq!(sent.len(), before + 1);
    assert!(sent.contains(&vec!["/*".to_owned()]), "{sent:?}");
    let (ok, again) = warmer_once(&db, &env).await;
    assert!(ok && again["deploy_invalidation"].is_null(), "once: {again}");
}

/// A database, a moto distribution and its endpoint, after a first tick that drained what the
/// fixture's own load left pending.
async fn drained() -> (TestDb, String, String) {
    let db = TestDb::new(Backend::Postgres).await;
    let distribution = moto_distribution();
    let moto = moto();
    let (ok, first) = warmer_once(&db, &cloudfront_env(&distribution, &moto)).await;
    assert!(ok, "{first}");
    (db, distribution, moto)
}

/// A tick waits out its settle time before it claims; one that starts before the service day
/// rolls over and claims after it plans for the new day, so the new day's `today` alias is
/// invalidated with that day's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_tick_that_straddles_the_rollover_plans_for_the_day_it_claims_in() {
    use chrono::{Duration as Days, Timelike, Utc};
    let (db, distribution, moto) = drained().await;

    // SERVICE_DAY_START is a minute of the day: roll over at the next minute boundary that leaves
    // time to start the tick before it.
    let now = Utc::now();
    let mut rollover = now.with_second(0).unwrap().with_nanosecond(0).unwrap() + Days::minutes(1);
    if rollover - now < Days::milliseconds(2_500) {
        rollover += Days::minutes(1);
    }
    let tokyo = rollover + Days::hours(9);
    let day_start = format!("{:02}:{:02}", tokyo.hour(), tokyo.minute());
    let new_day = tokyo.date_naive();
    db.exec(&format!(
        "INSERT INTO operations (service_date, number, formation_id) VALUES ('{new_day}', '99Z', '10701F')"
    ))
    .await;
    let until = (rollover - Days::milliseconds(1_500) - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until).await;
    let mut env = cloudfront_env(&distribution, &moto);
    env.extend([("SERVICE_DAY_START", day_start.as_str()), ("WARMER_SETTLE", "3s")]);
    let (ok, tick) = warmer_once(&db, &env).await;
    assert!(ok, "{tick}");
    assert!(Utc::now() > rollover, "the tick claimed after the rollover: {tick}");
    let sent = moto_invalidations(&distribution).await;
    let dated = format!("/v1/operations/{new_day}");
    let batch = sent.iter().find(|items| items.iter().any(|p| p.starts_with(&dated))).expect("the new day's batch");
    assert!(batch.iter().any(|p| p.starts_with("/v1/operations/today")), "{batch:?}");
}

/// Over the month's budget a tick still drains everything pending when it may send: the backlog
/// does not grow with the write rate, and the coalesced batch stays precise (no site-wide
/// wildcard for changes that touch a few collections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn over_the_budget_one_tick_drains_the_whole_backlog() {
    let (db, distribution, moto) = drained().await;
    let mut env = cloudfront_env(&distribution, &moto);
    env.push(("INVALIDATION_OVER_BUDGET_EVERY", "1s"));
    // The month's paths are spent, and the last batch (the drain's too) went out a while ago.
    db.exec(
        "INSERT INTO cache_invalidations (id, backend, caller_reference, items, changes, status) \
         VALUES ('spent', 'cloudfront', 'spent', 5000, 1, 'Completed'); \
         UPDATE cache_invalidations SET created_at = date_trunc('month', now())",
    )
    .await;
    db.exec("INSERT INTO cache_changes (tag) SELECT 'formation:' || f.id FROM formations f, generate_series(1, 250)")
        .await;
    db.exec("INSERT INTO cache_changes (tag) SELECT 'formations' FROM generate_series(1, 25000)").await;
    assert!(pending(&db).await >= 25_000);
    let (ok, tick) = warmer_once(&db, &env).await;
    assert!(ok, "{tick}");
    assert_eq!(tick["deferred"], false, "{tick}");
    assert_eq!(pending(&db).await, 0, "{tick}");
    let sent = moto_invalidations(&distribution).await;
    let batch = sent.iter().find(|items| items.iter().any(|p| p.starts_with("/v1/formations"))).unwrap();
    assert!(!batch.iter().any(|p| p == "/*" || p == "/v1/*"), "{batch:?}");
}

/// Half a million pending rows of one tag, under the budget: one tick, one tag planned, nothing
/// left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn one_tick_drains_half_a_million_changes_of_one_tag() {
    let (db, distribution, moto) = drained().await;
    let env = cloudfront_env(&distribution, &moto);
    db.exec("INSERT INTO cache_changes (tag) SELECT 'formation:3001F' FROM generate_series(1, 500000)").await;
    let (ok, tick) = warmer_once(&db, &env).await;
    assert!(ok, "{tick}");
    assert_eq!((tick["changes"].as_u64(), tick["tags"].as_u64()), (Some(500_000), Some(1)), "{tick}");
    assert_eq!(pending(&db).await, 0);
}
