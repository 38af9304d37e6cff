//! Test fixtures: a fresh database per test (cloned from a seeded template that
//! `scripts/test.sh` prepares), the app in process and over a socket, raw SQL for "someone else
//! writes", and locating the built binaries.

use std::net::SocketAddr;
use std::path::PathBuf;

use api::config::Cli;
use api::startup::{self, Application};
use api::{AppState, app};
use axum::Router;
use axum::body::Body;
use clap::Parser;
use http::{Request, Response};
use store::Db;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tower::ServiceExt;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// What the integration tests talk to, as `./scripts/test.sh` provides it (or is given it).
const SERVICES: &[(&str, &str)] = &[
    (
        "TEST_DATABASE_URL",
        "PostgreSQL 13 or later: postgres://role:password@host:port, a role that may create databases and roles",
    ),
    ("TEST_PG_TEMPLATE", "the seeded template database on it (made by scripts/services.sh make_fixtures)"),
    (
        "TEST_PGBOUNCER_URL",
        "PgBouncer in transaction pooling mode in front of that PostgreSQL, finding roles it does not list with auth_query",
    ),
    ("TEST_SQLITE_TEMPLATE", "a seeded SQLite file (made by make_fixtures)"),
    ("TEST_MOTO_URL", "a moto server, the stand-in for the CloudFront API"),
    ("TEST_VARNISHD", "varnishd (Varnish 7 with varnish-modules)"),
];

/// A service's setting. When one is missing the test fails, saying which services are missing and
/// how to get them: the service-backed tests are `#[ignore]`d for a plain `cargo test`, and the test
/// command runs them with `--run-ignored all` after starting every service, so reaching this without
/// one is a failure, never a skip.
pub fn env(name: &str) -> String {
    if let Ok(value) = std::env::var(name) {
        return value;
    }
    let mut message = String::from("edgerail's integration tests talk to real services, and these are not given:\n");
    for (var, what) in SERVICES.iter().filter(|(var, _)| std::env::var(var).is_err()) {
        message.push_str(&format!("  {var}: {what}\n"));
    }
    message.push_str(
        "Run ./scripts/test.sh [nextest filter…]: it installs and starts them (using any already given by these \
         variables), then runs the tests.",
    );
    panic!("{message}");
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// A database of its own for one test, seeded with the small demo data set.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub backend: Backend,
    /// URL the app uses.
    pub url: String,
    /// Name of the PostgreSQL database (empty for SQLite).
    pub name: String,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = env("TEST_DATABASE_URL");
                let template = env("TEST_PG_TEMPLATE");
                let name = unique("edgerail_t");
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{admin}/postgres"))
                    .await
                    .expect("connect to the test PostgreSQL");
                // A backend of the process that seeded the template may still be exiting, and
                // PostgreSQL refuses to copy a database someone is connected to: retry briefly.
                let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
                let mut attempts = 0;
                while let Err(err) = sqlx::Executor::execute(&mut conn, create.as_str()).await {
                    attempts += 1;
                    assert!(
                        attempts < 50 && err.to_string().contains("accessed by other users"),
                        "clone the template: {err}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Self { backend, url: format!("{admin}/{name}"), name }
            }
            Backend::Sqlite => {
                let template = PathBuf::from(env("TEST_SQLITE_TEMPLATE"));
                // Under the test run's directory, which the test command empties before each run.
                let root = std::env::var_os("EDGERAIL_RUN").map_or_else(std::env::temp_dir, PathBuf::from);
                let dir = root.join("sqlite-tests").join(unique("edgerail_sqlite"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("db.sqlite");
                std::fs::copy(&template, &path).expect("copy the template SQLite file");
                Self { backend, url: format!("sqlite://{}", path.display()), name: String::new() }
            }
        }
    }

    /// A copy of this PostgreSQL database as it is now, as a restore of a backup taken now would
    /// make it: the same rows, the same sequences, another database.
    pub async fn copy(&self) -> Self {
        assert_eq!(self.backend, Backend::Postgres);
        let admin = env("TEST_DATABASE_URL");
        let name = unique("edgerail_t");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{admin}/postgres")).await.unwrap();
        let create = format!("CREATE DATABASE {name} TEMPLATE {}", self.name);
        let mut attempts = 0;
        while let Err(err) = sqlx::Executor::execute(&mut conn, create.as_str()).await {
            attempts += 1;
            assert!(attempts < 50 && err.to_string().contains("accessed by other users"), "copy: {err}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Self { backend: Backend::Postgres, url: format!("{admin}/{name}"), name }
    }

    /// Runs SQL as an outside writer would (the site's write path, a person with psql).
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Postgres => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            Backend::Sqlite => {
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// The same database reached through PgBouncer (transaction pooling).
    pub fn via_pgbouncer(&self) -> String {
        format!("{}/{}", env("TEST_PGBOUNCER_URL"), self.name)
    }
}

/// Parses the api's configuration from flags, as the binary would.
pub fn config(url: &str, extra: &[&str]) -> api::config::Config {
    let args = ["api", "--database-url", url].into_iter().chain(extra.iter().copied());
    Cli::try_parse_from(args).expect("valid test configuration").config
}

/// The app in process, driven with `oneshot`.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub db: TestDb,
    pub state: AppState,
    pub router: Router,
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with(TestDb::new(backend).await, &[]).await
    }

    /// An app over an existing database, with extra flags.
    pub async fn with(db: TestDb, extra: &[&str]) -> Self {
        Self::with_url(db.clone(), &db.url.clone(), extra).await
    }

    /// An app over `db`, connecting through `url` (a proxy, PgBouncer, a dead port).
    pub async fn with_url(db: TestDb, url: &str, extra: &[&str]) -> Self {
        let config = config(url, extra);
        config.validate().expect("valid configuration");
        let store = startup::open_store(&config, None).expect("open store");
        let state = startup::build_state(&config, store).expect("build state");
        let router = app(state.clone());
        Self { db, state, router }
    }

    pub fn store(&self) -> &Db {
        self.state.store()
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(req).await.unwrap();
        TestResponse::read(response).await
    }

    /// Serves the same state over a real socket on an ephemeral port.
    pub async fn serve(&self) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        self.serve_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves on `addr`, waiting (up to 10 s) for a server that is stopping there to let it go.
    pub async fn serve_at(&self, addr: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let mut tries = 0;
        let app = loop {
            match Application::bind(addr, self.state.clone(), std::time::Duration::from_secs(5)).await {
                Ok(app) => break app,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {addr}: {e}"),
            }
        };
        let addr = app.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        (addr, tx)
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl TestResponse {
    pub async fn read(response: Response<Body>) -> Self {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        Self { status: parts.status, headers: parts.headers, body }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Path of a binary built by `cargo build --workspace --bins` (scripts/test.sh does that first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> → target/<profile>/<name>
    let path = exe.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(path.exists(), "{} is not built: run ./scripts/test.sh (or cargo build --bins)", path.display());
    path
}

/// Whether this run rewrites the generated files (`EDGERAIL_BLESS=1`) instead of only checking them.
pub fn blessing() -> bool {
    std::env::var_os("EDGERAIL_BLESS").is_some()
}

/// Checks that the committed file at `path` (relative to the repository) is `generated`, what the
/// code it describes generates; with `EDGERAIL_BLESS=1` it writes it first. `test` names the test
/// that regenerates it.
pub fn assert_generated(path: &str, generated: &str, test: &str) {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    if blessing() {
        std::fs::write(&full, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} differs from what generates it: regenerate it with \
         EDGERAIL_BLESS=1 cargo nextest run --workspace -E 'test({test})'"
    );
}

/// `text` with its block from the line starting with `begin` to the line starting with `end`
/// (both included) replaced by `with`: a generated part of a hand-written file.
pub fn splice(text: &str, begin: &str, end: &str, with: &str) -> String {
    let start = text.find(begin).unwrap_or_else(|| panic!("no {begin:?}"));
    let stop = start + text[start..].find(end).unwrap_or_else(|| panic!("no {end:?}"));
    let stop = stop + text[stop..].find('\n').map_or(text.len() - stop, |n| n + 1);
    format!("{}{with}{}", &text[..start], &text[stop..])
}

/// The service calendar the test apps run with (the API's defaults).
pub fn calendar() -> store::ServiceCalendar {
    store::ServiceCalendar::new("Asia/Tokyo", "04:00").expect("the default calendar is valid")
}

/// A TCP forwarder on an ephemeral loopback port. Each accepted connection is paired with a new one
/// to `target`, and `each` gets (client read, client write, server read, server write) to move the
/// bytes as the test needs: counting, delaying or swallowing them.
pub async fn forward<F, Fut>(target: SocketAddr, each: F) -> SocketAddr
where
    F: Fn(OwnedReadHalf, OwnedWriteHalf, OwnedReadHalf, OwnedWriteHalf) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { continue };
            let (client_read, client_write) = inbound.into_split();
            let (server_read, server_write) = outbound.into_split();
            tokio::spawn(each(client_read, client_write, server_read, server_write));
        }
    });
    addr
}
