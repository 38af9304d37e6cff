//! The database URL from AWS Secrets Manager (moto standing in for it), and TLS verification
//! against the RDS authorities the binaries carry.

use std::process::Stdio;
use std::time::Duration;

use secret::Credentials;

use crate::helpers::{Backend, TestDb, binary, env};

fn credentials() -> Credentials {
    Credentials {
        identity: aws_credential_types::Credentials::new(
            "testing",
            "testing",
            Some("testing-session".into()),
            None,
            "test",
        ),
        region: "us-east-1".into(),
    }
}

/// Calls Secrets Manager (moto) with a signed request, as the binaries do.
async fn secrets_manager(target: &str, body: serde_json::Value) -> serde_json::Value {
    let moto = env("TEST_MOTO_URL");
    let body = body.to_string();
    let uri: http::Uri = format!("{moto}/").parse().unwrap();
    let signed =
        secret::signed_request(&credentials(), &uri, target, body.clone(), std::time::SystemTime::now()).unwrap();
    let mut request = reqwest::Client::new().post(format!("{moto}/")).body(body);
    for (name, value) in signed.headers() {
        request = request.header(name.as_str(), value.to_str().unwrap());
    }
    request.send().await.unwrap().error_for_status().unwrap().json().await.unwrap()
}

/// A new version of the secret `arn` (what a rotation's last step makes current).
async fn put_secret(arn: &str, value: &str) {
    secrets_manager("secretsmanager.PutSecretValue", serde_json::json!({ "SecretId": arn, "SecretString": value }))
        .await;
}

/// Stores a secret in moto (through the same signed request the binaries make) and returns its ARN.
async fn create_secret(value: &str) -> String {
    let moto = env("TEST_MOTO_URL");
    let name = format!("edgerail/test/{:x}", fastrand());
    let body = serde_json::json!({ "Name": name, "SecretString": value }).to_string();
    let uri: http::Uri = format!("{moto}/").parse().unwrap();
    let signed = secret::signed_request(
        &credentials(),
        &uri,
        "secretsmanager.CreateSecret",
        body.clone(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let mut request = reqwest::Client::new().post(format!("{moto}/")).body(body);
    for (name, value) in signed.headers() {
        request = request.header(name.as_str(), value.to_str().unwrap());
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

/// The api's answer to `GET /v1/lines` on `port` once it listens (10 s at most).
async fn first_answer(port: u16) -> Option<reqwest::Response> {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(res) = client.get(format!("http://127.0.0.1:{port}/v1/lines")).send().await {
            return Some(res);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_api_reads_its_database_url_from_an_rds_shaped_secret_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let secret = create_secret(&rds_shaped(&db.url)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _child = api_with_secret(&secret, port).spawn().unwrap();
    let res = first_answer(port).await.expect("the api started with its URL from the secret");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["lines"].as_array().unwrap().iter().any(|l| l["id"] == "minato"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
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

/// A throwaway certificate authority and a certificate it issued for `localhost`, made with the
/// `openssl` command; returns (authority PEM, certificate PEM, key PEM) paths in `dir`.
fn localhost_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=edgerail test CA",
        "-days",
        "2",
        "-out",
        "ca.pem",
    ]);
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.key"]);
    openssl(&["req", "-new", "-key", "leaf.key", "-subj", "/CN=localhost", "-out", "leaf.csr"]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key"))
}

/// Terminates TLS on a loopback port with `cert`/`key` and relays each connection to moto;
/// returns the port. The task ends with the test's runtime.
async fn tls_front_for_moto(cert: &std::path::Path, key: &std::path::Path) -> u16 {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let moto = env("TEST_MOTO_URL").trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, moto) = (acceptor.clone(), moto.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&moto).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

/// Secrets Manager is reached over HTTPS, trusting the system's certificate store (which
/// `SSL_CERT_FILE` replaces here): a server whose certificate chains to it is read, and the same
/// server is refused, with the endpoint named and nothing started, when the store lacks its
/// authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_secret_is_read_over_https_trusting_the_system_certificate_store() {
    let dir = std::env::temp_dir().join(format!("edgerail-tls-{:x}", fastrand()));
    std::fs::create_dir_all(&dir).unwrap();
    let (authority, cert, key) = localhost_certificate(&dir);
    let port = tls_front_for_moto(&cert, &key).await;
    let endpoint = format!("https://localhost:{port}");
    let db = TestDb::new(Backend::Postgres).await;
    let secret = create_secret(&rds_shaped(&db.url)).await;

    // Trusted: the api starts on the secret's database.
    let api_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut api = api_with_secret(&secret, api_port);
    let _child = api.env("AWS_ENDPOINT_URL", &endpoint).env("SSL_CERT_FILE", &authority).spawn().unwrap();
    let status = first_answer(api_port).await.map(|res| res.status());
    assert_eq!(status, Some(reqwest::StatusCode::OK), "the api read its secret over HTTPS");

    // Not trusted: an authority file without it (the RDS bundle the binaries carry) stands in for
    // a system store that lacks it.
    let other = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/certs/aws-rds-ca-bundle.pem");
    let api_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut api = api_with_secret(&secret, api_port);
    api.env("AWS_ENDPOINT_URL", &endpoint).env("SSL_CERT_FILE", &other);
    let output = tokio::time::timeout(Duration::from_secs(30), api.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach Secrets Manager at {endpoint}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "the cause is named: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
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

/// `cachectl` signs with the standard credential chain: an operator's `AWS_PROFILE` (here a
/// profile with static keys in `AWS_CONFIG_FILE`; SSO sessions and credential processes resolve
/// through the same chain) reads the secret with no `AWS_ACCESS_KEY_ID` in the environment, and
/// without the profile the command stops with an error that says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn cachectl_reads_the_secret_with_the_operators_aws_profile() {
    let db = TestDb::new(Backend::Postgres).await;
    let secret = create_secret(&serde_json::json!({ "url": db.url }).to_string()).await;
    let dir = std::env::temp_dir().join(format!("edgerail-profile-{:x}", fastrand()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        "[profile operator]\nregion = us-east-1\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let status = |profile: Option<&str>| {
        let mut command = tokio::process::Command::new(binary("cachectl"));
        command
            .args(["status", "--json"])
            .env_clear()
            .env("DATABASE_SECRET_ARN", &secret)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", env("TEST_MOTO_URL"))
            .env("INVALIDATOR", "none");
        if let Some(profile) = profile {
            command.env("AWS_PROFILE", profile);
        }
        command.output()
    };
    let output = status(Some("operator")).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let status_json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(status_json.get("pending").is_some(), "{status_json}");

    let output = status(None).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("AWS_REGION") || stderr.contains("credentials"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `sslmode=verify-full` without a root certificate checks the server against the RDS authorities
/// the binary carries (sqlx adds the system's store to them): a certificate none of them signed
/// (here PostgreSQL's self-signed one) is refused, where `sslmode=require` (encrypted, unverified)
/// connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn verify_full_refuses_a_certificate_no_rds_authority_signed() {
    let db = TestDb::new(Backend::Postgres).await;
    let options = store::DbOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        feed_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        proxy_compat: false,
        application_name: "edgerail-test".into(),
        url_source: None,
    };
    let encrypted =
        store::Db::Postgres(store::PgStore::connect_lazy(&format!("{}?sslmode=require", db.url), &options).unwrap());
    encrypted.ping().await.expect("the test server speaks TLS");
    let verified = store::Db::Postgres(
        store::PgStore::connect_lazy(&format!("{}?sslmode=verify-full", db.url), &options).unwrap(),
    );
    let err = verified.ping().await.expect_err("a certificate from no RDS authority is refused");
    let chain = format!("{err:?}");
    assert!(chain.to_lowercase().contains("certificate") || chain.contains("Tls"), "{chain}");
}

/// A login role of its own on the test database, that may do what the api and the warmer do, with
/// `password`; the test role may terminate its connections (to make the next request log in
/// again, as a new Lambda instance or a recycled connection would).
async fn login_role(db: &TestDb, password: &str) -> String {
    let role = format!("rot_{:x}", fastrand() % 0xffff_ffff);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT {role} TO CURRENT_USER; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
    ))
    .await;
    role
}

/// `db`'s URL, logging in as `role` with `password`.
fn url_as(db: &TestDb, role: &str, password: &str) -> String {
    let rest = db.url.split_once('@').unwrap().1;
    format!("postgres://{role}:{password}@{rest}")
}

/// Changes `role`'s password and ends its open connections.
async fn rotate(db: &TestDb, role: &str, password: &str) {
    db.exec(&format!(
        "ALTER ROLE {role} PASSWORD '{password}'; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
}

/// A rotated password without a secret: every miss is a `503` with `Retry-After` (an outage of the
/// database, as the breaker and stale-if-error treat one), never a `500`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_rotated_password_without_a_secret_answers_503_never_500() {
    let db = TestDb::new(Backend::Postgres).await;
    let role = login_role(&db, "before").await;
    let app = crate::helpers::TestApp::with_url(db.clone(), &url_as(&db, &role, "before"), &[]).await;
    assert_eq!(app.get("/v1/lines").await.status, 200);
    rotate(&db, &role, "after").await;
    for path in ["/v1/formations/10701F", "/v1/formations/3001F", "/v1/lines/minato/stations"] {
        let res = app.get(path).await;
        assert_eq!(res.status, 503, "{path}: {:?}", res.body);
        assert_eq!(res.header("retry-after"), "1");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
}

/// The api on a secret, through the two ways RDS rotates one: a new password for the same user,
/// and alternating between two users. While the database refuses the old credentials a miss is a
/// `503` (never a `500`); once the secret's new version is current, the api reads it again and
/// answers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_api_and_the_warmer_recover_from_a_rotation_by_reading_the_secret_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let (user, clone) = (login_role(&db, "first").await, login_role(&db, "clone-first").await);
    let secret = create_secret(&rds_shaped(&url_as(&db, &user, "first"))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _api = api_with_secret(&secret, port).spawn().unwrap();
    assert_eq!(first_answer(port).await.unwrap().status(), 200);
    let warmer_out = std::env::temp_dir().join(format!("edgerail-rotation-{port}.jsonl"));
    let mut warmer = tokio::process::Command::new(binary("warmer"));
    warmer
        .args(["--every", "400ms"])
        .env_clear()
        .env("DATABASE_SECRET_ARN", &secret)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "testing-session")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", env("TEST_MOTO_URL"))
        .env("WARMER_SETTLE", "0s")
        .stdout(std::fs::File::create(&warmer_out).unwrap())
        .stderr(std::fs::File::create(warmer_out.with_extension("log")).unwrap())
        .kill_on_drop(true);
    let _warmer = warmer.spawn().unwrap();
    let ticks = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&warmer_out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let started = std::time::Instant::now();
    while ticks().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the warmer never ticked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://127.0.0.1:{port}{path}")).send();
    // Misses of pages not cached yet, one formation after another.
    let mut formations = (10_701..10_731).map(|n| format!("/v1/formations/{n}F"));
    for (step, (role, old, new, secret_now)) in [
        // Single user: its password changes, then the secret says so.
        (user.clone(), "first", "second", url_as(&db, &user, "second")),
        // Alternating users: the secret moves to the clone, whose password was set beforehand,
        // and the user it left gets a new password.
        (user.clone(), "second", "third", url_as(&db, &clone, "clone-first")),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = old;
        rotate(&db, &role, new).await;
        // Refused: an outage, not an error.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let refused = get(&formations.next().unwrap()).await.unwrap();
        assert_eq!(refused.status(), 503, "step {step}: {:?}", refused.text().await);
        put_secret(&secret, &rds_shaped(&secret_now)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let res = get(&formations.next().unwrap()).await.unwrap();
            assert_ne!(res.status(), 500, "step {step}");
            if res.status() == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "step {step}: the api never read the secret again");
        }
    }
    // The warmer's ticks failed while the database refused it, and succeed again since.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ticks = ticks();
        let failed = ticks.iter().position(|t| !t["error"].is_null());
        let recovered = failed.is_some_and(|f| ticks[f..].iter().any(|t| t["error"].is_null()));
        if recovered && ticks.last().is_some_and(|t| t["error"].is_null()) {
            assert!(ticks.iter().all(|t| t["retryable"] != false), "a refused login is retryable");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the warmer never recovered: {ticks:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Both RDS rotations through PgBouncer, which finds the roles' passwords in the server
/// (`auth_query`): PgBouncer refuses an old password in words of its own (SQLSTATE 08P01, "SASL
/// authentication failed", not PostgreSQL's class 28), and the api must read the secret again on
/// that too. Its misses are `503`s while refused and `200`s again once the new secret is read,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn the_api_recovers_from_a_rotation_through_pgbouncer_by_reading_the_secret_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let (user, clone) = (login_role(&db, "first").await, login_role(&db, "clone-first").await);
    let pooled = |role: &str, password: &str| {
        let rest = db.via_pgbouncer();
        format!("postgres://{role}:{password}@{}", rest.split_once('@').unwrap().1)
    };
    let secret = create_secret(&rds_shaped(&pooled(&user, "first"))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _api = api_with_secret(&secret, port).env("DB_PROXY_COMPAT", "1").spawn().unwrap();
    assert_eq!(first_answer(port).await.unwrap().status(), 200, "the api did not answer through PgBouncer");

    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("http://127.0.0.1:{port}{path}")).send();
    // Misses of pages not cached yet, a different one each time: today's operations (300).
    let today = crate::helpers::calendar().service_date(chrono::Utc::now());
    let mut pages = ["M", "S", "K", "T", "U"]
        .into_iter()
        .flat_map(|line| (1..=60).map(move |k| format!("{k:02}{line}")))
        .map(|number| format!("/v1/operations/{today}/{number}"));
    for (step, (new, secret_now)) in [
        // Single user: its password changes, then the secret says so.
        ("second", pooled(&user, "second")),
        // Alternating users: the secret moves to the clone, whose password was set beforehand,
        // and the user it left gets a new password.
        ("third", pooled(&clone, "clone-first")),
    ]
    .into_iter()
    .enumerate()
    {
        rotate(&db, &user, new).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let refused = get(pages.next().unwrap()).await.unwrap();
        assert_eq!(refused.status(), 503, "step {step}: {:?}", refused.text().await);
        put_secret(&secret, &rds_shaped(&secret_now)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let res = get(pages.next().unwrap()).await.unwrap();
            assert_ne!(res.status(), 500, "step {step}");
            if res.status() == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "step {step}: the api never read the secret again");
        }
    }
}

/// A rotation that completes while an instance holds its connection (the password changes and the
/// secret says so, seconds apart): the instance learns of it only when it next logs in, with the
/// old password. That miss must not pay for it: refused, the api reads the secret again and logs
/// in with what it says within the same request. Directly and through PgBouncer (whose refusal is
/// SQLSTATE 08P01). Before, the request that found the refusal answered `503` (or a stale copy)
/// and only later ones had the new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_rotation_completed_while_connected_costs_the_next_login_nothing() {
    let db = TestDb::new(Backend::Postgres).await;
    let today = crate::helpers::calendar().service_date(chrono::Utc::now());
    // (An instance that keeps its client connection to PgBouncer across the rotation is not
    // covered: PgBouncer then logs in to the server with the old password's keys and pauses the
    // user's logins for its server_login_retry, which docs/deploy.md states as a limit.)
    for (way, through) in [("directly", db.url.clone()), ("through PgBouncer", db.via_pgbouncer())] {
        let user = login_role(&db, "first").await;
        let url = |password: &str| {
            let rest = through.split_once('@').unwrap().1;
            format!("postgres://{user}:{password}@{rest}")
        };
        let secret = create_secret(&rds_shaped(&url("first"))).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Idle connections close after a second, as a Lambda instance's do after its idle timeout,
        // so the next miss logs in again (sqlx closes them within two idle timeouts).
        let _api =
            api_with_secret(&secret, port).env("DB_PROXY_COMPAT", "1").env("DB_IDLE_TIMEOUT", "1s").spawn().unwrap();
        assert_eq!(first_answer(port).await.unwrap().status(), 200, "{way}: the api did not answer");
        rotate(&db, &user, "second").await;
        put_secret(&secret, &rds_shaped(&url("second"))).await;
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let client = reqwest::Client::new();
        let get = |number: &str| client.get(format!("http://127.0.0.1:{port}/v1/operations/{today}/{number}")).send();
        for number in ["01M", "02M", "03M"] {
            let res = get(number).await.unwrap();
            assert_eq!(res.status(), 200, "{way}, {number}: {:?}", res.text().await);
        }
    }
}

/// The store alone, on a URL its source has since replaced (the password changed and the secret
/// says so): its one call is refused at login, reads the source again while it waits, and
/// succeeds on its second login within the same call. Nothing else runs (no change feed in the
/// background to read the source first), so this is the retry itself; without it the call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_refused_login_is_retried_within_the_call_once_the_source_says_otherwise() {
    let db = TestDb::new(Backend::Postgres).await;
    let role = login_role(&db, "first").await;
    let current = std::sync::Arc::new(std::sync::Mutex::new(url_as(&db, &role, "first")));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let source = {
        let (current, reads) = (current.clone(), reads.clone());
        store::credentials::UrlSource::new(move || {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = current.lock().unwrap().clone();
            Box::pin(async move { Ok(url) })
        })
    };
    let options = store::DbOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
        feed_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        proxy_compat: false,
        application_name: "edgerail-test".into(),
        url_source: Some(source),
    };
    let store = store::Db::Postgres(store::PgStore::connect_lazy(&url_as(&db, &role, "first"), &options).unwrap());
    rotate(&db, &role, "second").await;
    *current.lock().unwrap() = url_as(&db, &role, "second");
    store.ping().await.expect("the call logs in again with what the source says");
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1, "the source is read once");
    store.ping().await.expect("and keeps it");
}
