//! Building the application from configuration, and running it: as a local HTTP server with
//! graceful shutdown, or on Lambda through `lambda_http`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "seed")]
use indicatif::{ProgressBar, ProgressStyle};
use store::credentials::UrlSource;
use store::{Db, StoreError};
use tokio::net::TcpListener;

use crate::cache::feed::FeedSettings;
use crate::cache::{LocalCache, LocalCacheConfig};
use crate::config::{Config, ConfigError};
use crate::http::{AppState, HttpSettings, Identity, app};
use crate::learn::Learner;
use crate::metrics::Metrics;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The embedded cache policy is invalid (a build defect; tests prevent it).
    #[error("the embedded cache policy is invalid: {0}")]
    Policy(&'static cache_policy::PolicyError),
    /// DATABASE_URL could not be opened.
    #[error(transparent)]
    Open(#[from] store::OpenError),
    /// DATABASE_SECRET_ARN gave no database URL.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// Local I/O (creating the SQLite directory, binding the port).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Migrating or seeding failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: &'static str,
        /// The store error.
        source: StoreError,
    },
}

/// Reads the database URL from DATABASE_SECRET_ARN when DATABASE_URL is unset: at start (on
/// Lambda, once per instance, during init; the only network call init makes), and again whenever
/// the database refuses the credentials (a rotated password), through the source returned.
///
/// # Errors
///
/// The secret could not be read or holds no database URL.
pub async fn resolve_database_url(config: &mut Config) -> Result<Option<UrlSource>, StartupError> {
    let (None, Some(secret)) = (&config.database.database_url, &config.database.database_secret_arn) else {
        return Ok(None);
    };
    let source = secret_source(secret.clone(), secret::Credentials::from_env()?);
    config.database.database_url = Some(secret::database_url(secret, &secret::Credentials::from_env()?).await?);
    tracing::info!("database URL read from its secret");
    Ok(Some(source))
}

/// The secret as a source of the URL, read again after a refused login.
fn secret_source(secret: String, credentials: secret::Credentials) -> UrlSource {
    let (secret, credentials) = (std::sync::Arc::new(secret), std::sync::Arc::new(credentials));
    UrlSource::new(move || {
        let (secret, credentials) = (secret.clone(), credentials.clone());
        Box::pin(
            async move { secret::database_url(&secret, &credentials).await.map_err(|e| plumbing::error_chain(&e)) },
        )
    })
}

/// Opens the configured store without connecting (the pool connects on first use); `source`, if
/// any, is where the URL is read again when the database refuses the credentials.
///
/// # Errors
///
/// A malformed `DATABASE_URL`, or the SQLite directory cannot be created.
pub fn open_store(config: &Config, source: Option<UrlSource>) -> Result<Db, StartupError> {
    let options = store::DbOptions { url_source: source, ..config.db_options() };
    Ok(store::open(config.database.database_url.as_deref(), &config.sqlite_path, &options)?)
}

/// Builds the shared state from configuration the caller has validated ([`Config::validate`],
/// once at start) and an opened store.
///
/// # Errors
///
/// The embedded policy does not load, or a setting `validate` checks is invalid after all.
pub fn build_state(config: &Config, store: Db) -> Result<AppState, StartupError> {
    let policy = cache_policy::Policy::embedded().map_err(StartupError::Policy)?;
    let cache = LocalCache::new(&LocalCacheConfig {
        max_bytes: config.cache_max_bytes(),
        feed: FeedSettings {
            poll_interval: config.change_poll_interval,
            poll_wait: config.change_poll_wait,
            poll_timeout: config.change_poll_timeout,
            max_lag: config.change_max_lag,
            start_with_first_read: store.reads_feed_start_with_data(),
        },
        // Waiting for a connection, then the statement, then a margin for the round trips. (A
        // login refused after a rotation waits for the secret's re-read and logs in again within
        // this too, which takes milliseconds unless Secrets Manager is slow; past it, the answer is
        // the stale copy or 503 it was before. Widening it would reach the Lambda's timeout.)
        load_timeout: config.db_acquire_timeout + config.db_statement_timeout + Duration::from_secs(1),
    });
    let identity = Identity { build: config.build_id.clone(), settings: config.answer_settings() };
    let http = HttpSettings::new(policy, config.calendar()?, config.tag_header()?, identity);
    let metrics =
        Metrics::new(config.metrics_enabled(), policy.routes().iter().map(|r| r.name.clone()), config.metrics_interval);
    let learner = Learner::new(config.learn_flush_interval, config.learn_max_paths, config.warm_secret.as_deref());
    Ok(AppState::new(store, cache, http, metrics, learner))
}

/// The embedded default (no DATABASE_URL): migrate, and seed demo data on first run, so
/// `cargo run -p api` serves something with no other setup.
///
/// # Errors
///
/// Migration or seeding failed.
#[cfg(feature = "sqlite")]
pub async fn prepare_embedded_default(config: &Config, store: &Db) -> Result<(), StartupError> {
    if config.database.database_url.is_some() {
        return Ok(());
    }
    let calendar = config.calendar()?;
    let fresh = !store
        .has_data()
        .await
        .map_err(|source| StartupError::Store { context: "cannot read the embedded database", source })?;
    migrate(store, &calendar).await?;
    if fresh {
        tracing::info!(path = %config.sqlite_path.display(), "first run: loading demo data into the embedded database");
        seed_demo(store, &calendar, 1.0, store::demo::SIGHTING_DAYS).await?;
    }
    Ok(())
}

/// Migrates, then replaces all data with demo data, showing a progress bar on a terminal.
///
/// # Errors
///
/// Migration or loading failed.
#[cfg(feature = "seed")]
pub async fn seed_demo(
    store: &Db,
    calendar: &store::ServiceCalendar,
    scale: f64,
    days: u64,
) -> Result<(), StartupError> {
    migrate(store, calendar).await?;
    let data = store::demo::generate(calendar, chrono::Utc::now(), scale, days);
    let progress = ProgressBar::new(data.row_count());
    progress.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.set_message("seeding demo data");
    let policy = cache_policy::Policy::embedded().map_err(StartupError::Policy)?;
    store
        .load_demo(&data, policy.tables(), &|rows| progress.inc(rows))
        .await
        .map_err(|source| StartupError::Store { context: "loading demo data failed", source })?;
    progress.finish_with_message("demo data loaded");
    tracing::info!(
        lines = data.lines.len(),
        stations = data.stations.len(),
        formations = data.formations.len(),
        operations = data.operations.len(),
        sightings = data.sighting_count(),
        "demo data loaded"
    );
    Ok(())
}

/// Applies the embedded migrations, with the triggers the embedded policy's tables declare.
///
/// # Errors
///
/// The policy does not load, or migrating failed.
pub async fn migrate(store: &Db, calendar: &store::ServiceCalendar) -> Result<(), StartupError> {
    let policy = cache_policy::Policy::embedded().map_err(StartupError::Policy)?;
    store
        .migrate(calendar, policy.tables())
        .await
        .map_err(|source| StartupError::Store { context: "migration failed", source })
}

/// The local HTTP server: bound, ready to run.
#[derive(Debug)]
pub struct Application {
    /// Bound before running so tests can use port 0 and learn the port.
    listener: TcpListener,
    /// Shared state; its store is closed after the server stops.
    state: AppState,
    /// How long in-flight requests may take after the shutdown signal.
    shutdown_timeout: Duration,
}

impl Application {
    /// Binds `addr`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn bind(addr: SocketAddr, state: AppState, shutdown_timeout: Duration) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Io { context: format!("cannot listen on {addr}"), source })?;
        Ok(Self { listener, state, shutdown_timeout })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains in-flight requests (up to
    /// the shutdown timeout) and closes the database pool.
    ///
    /// # Errors
    ///
    /// The server failed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, app(self.state.clone())).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown signal received, draining");
            let _ = stopping_tx.send(());
        });
        let drain_limit = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(self.shutdown_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = server => result,
            () = drain_limit => {
                tracing::warn!(timeout = ?self.shutdown_timeout, "in-flight requests did not finish in time");
                Ok(())
            }
        };
        self.state.flush_metrics();
        if tokio::time::timeout(Duration::from_secs(1), self.state.flush_learned()).await.is_err() {
            tracing::warn!("flushing the learned paths timed out: dropped");
        }
        self.state.store().close().await;
        tracing::info!("database pool closed");
        result
    }
}

/// Runs on AWS Lambda: registers the graceful-shutdown extension (so SIGTERM arrives and the pool
/// is closed within Lambda's 500 ms window), then hands every event to the same [`app`].
///
/// # Errors
///
/// The runtime failed.
pub async fn run_lambda(state: AppState) -> Result<(), lambda_http::Error> {
    let store = state.store().clone();
    let flushing = state.clone();
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        // What the last window counted, before the instance goes.
        flushing.flush_metrics();
        // Lambda sends SIGKILL 500 ms after SIGTERM: what was learned gets a short try, and the
        // pool's close and the process's exit the rest.
        if tokio::time::timeout(Duration::from_millis(100), flushing.flush_learned()).await.is_err() {
            tracing::warn!("flushing the learned paths timed out: dropped");
        }
        if tokio::time::timeout(Duration::from_millis(300), store.close()).await.is_err() {
            tracing::warn!("closing the database pool timed out");
        } else {
            tracing::info!("database pool closed");
        }
    })
    .await;
    lambda_http::run(app(state)).await
}
