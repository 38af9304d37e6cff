//! The database URL from AWS Secrets Manager (moto standing in for it), and TLS verification
//! against the RDS authorities the binaries carry.

use std::process::Stdio;
use std::time::Duration;

use store::secret::{Credentials, SignedRequest};

use crate::helpers::{Backend, TestDb, binary, env};

fn credentials() -> Credentials {
    Credentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: Some("testing-session".into()),
        region: "us-east-1".into(),
    }
}

/// Stores a secret in moto (through the same signed request the binaries make) and returns its ARN.
async fn create_secret(value: &str) -> String {
    let moto = env("TEST_MOTO_URL");
    let host = moto.trim_start_matches("http://").to_owned();
    let name = format!("edgerail/test/{:x}", fastrand());
    let body = serde_json::json!({ "Name": name, "SecretString": value }).to_string();
    let signed = SignedRequest::new(
        &credentials(),
        "secretsmanager",
        &host,
        "secretsmanager.CreateSecret",
        &body,
        chrono::Utc::now(),
    );
    let mut request = reqwest::Client::new().post(format!("{moto}/")).body(body);
    for (name, value) in signed.headers() {
        request = request.header(name, value);
    }
    let answer: serde_json::Value = request.send().await.unwrap().error_for_status().unwrap().json().await.unwrap();
    answer["ARN"].as_str().unwrap().to_owned()
}

fn fastrand() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The RDS shape of a secret for a test database (`postgres://user:password@host:port/name`).
fn rds_shaped(url: &str) -> String {
    let rest = url.trim_start_matches("postgres://");
    let (userinfo, rest) = rest.split_once('@').unwrap();
    let (username, password) = userinfo.split_once(':').unwrap();
    let (authority, dbname) = rest.split_once('/').unwrap();
    let (host, port) = authority.split_once(':').unwrap();
    serde_json::json!({
        "engine": "postgres", "host": host, "port": port.parse::<u16>().unwrap(),
        "username": username, "password": password, "dbname": dbname,
    })
    .to_string()
}

fn api_with_secret(secret: &str, port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("api"));
    command
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_SECRET_ARN", secret)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "testing-session")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", env("TEST_MOTO_URL"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_its_database_url_from_an_rds_shaped_secret_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let secret = create_secret(&rds_shaped(&db.url)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _child = api_with_secret(&secret, port).spawn().unwrap();
    let client = reqwest::Client::new();
    let mut answer = None;
    for _ in 0..200 {
        if let Ok(res) = client.get(format!("http://127.0.0.1:{port}/v1/lines")).send().await {
            answer = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = answer.expect("the api started with its URL from the secret");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["lines"].as_array().unwrap().iter().any(|l| l["id"] == "minato"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_secret_stops_the_process_with_a_clear_error_and_no_secret_text() {
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:edgerail/none-AbCdEf";
    let malformed = create_secret(r#"{"username": "u", "password": "hunter2-secret"}"#).await;
    for (secret, expected) in [(missing, "ResourceNotFoundException"), (malformed.as_str(), "\"host\"")] {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let output = tokio::time::timeout(Duration::from_secs(30), api_with_secret(secret, port).output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the secret's value must never be printed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warmer_reads_the_same_secret() {
    let db = TestDb::new(Backend::Postgres).await;
    let secret = create_secret(&serde_json::json!({ "url": db.url }).to_string()).await;
    let output = tokio::process::Command::new(binary("cachectl"))
        .args(["status", "--json"])
        .env_clear()
        .env("DATABASE_SECRET_ARN", &secret)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", env("TEST_MOTO_URL"))
        .env("INVALIDATOR", "none")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(status.get("pending").is_some(), "{status}");
}

/// `sslmode=verify-full` without a root certificate checks the server against the RDS authorities
/// the binary carries: a server with any other certificate (here PostgreSQL's self-signed one) is
/// refused, where `sslmode=require` (encrypted, unverified) connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_trusts_only_the_rds_authorities() {
    let db = TestDb::new(Backend::Postgres).await;
    let options = store::DbOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        feed_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        proxy_compat: false,
        application_name: "edgerail-test".into(),
    };
    use store::Store;
    let encrypted = store::PgStore::connect_lazy(&format!("{}?sslmode=require", db.url), &options).unwrap();
    encrypted.ping().await.expect("the test server speaks TLS");
    let verified = store::PgStore::connect_lazy(&format!("{}?sslmode=verify-full", db.url), &options).unwrap();
    let err = verified.ping().await.expect_err("a certificate from no RDS authority is refused");
    let chain = format!("{err:?}");
    assert!(chain.to_lowercase().contains("certificate") || chain.contains("Tls"), "{chain}");
}
