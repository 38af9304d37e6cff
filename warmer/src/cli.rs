//! Command lines of `warmer` and `cachectl`, and assembling their parts from configuration.

use std::time::Duration;

use cache_policy::Policy;
use cache_policy::cost::BudgetPolicy;
use cache_policy::plan::Limits;
use clap::{Args, Parser, Subcommand};
use plumbing::settings::{MetricsMode, parse_duration};
use store::credentials::UrlSource;
use store::{Db, DbOptions, ServiceCalendar};

use crate::backend::{CloudFront, Invalidator, Purge};
use crate::config::{BackendArgs, DatabaseArgs, InvalidatorKind, OutboxArgs, WarmArgs};
use crate::tick::Warmer;

/// `warmer`: one tick, a loop, or (with AWS_LAMBDA_RUNTIME_API) a scheduled Lambda function.
#[derive(Debug, Parser)]
#[command(name = "warmer", version, about = "Turns database changes into edge invalidations and warms hot paths")]
pub struct WarmerCli {
    /// Run one tick and exit.
    #[arg(long, conflicts_with = "every")]
    pub once: bool,
    /// Run a tick every interval (e.g. `60s`) until SIGTERM/Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Set by the Lambda service; its presence selects Lambda mode.
    #[arg(long, env = "AWS_LAMBDA_RUNTIME_API", hide = true)]
    pub lambda_runtime_api: Option<String>,
    /// An Embedded Metric Format line per tick on stdout [default: on Lambda, off locally].
    #[arg(long, env = "METRICS", value_enum)]
    pub metrics: Option<MetricsMode>,
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// How each tick drains the outbox.
    #[command(flatten)]
    pub outbox: OutboxArgs,
    /// Invalidation settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Warming settings.
    #[command(flatten)]
    pub warm: WarmArgs,
}

/// `cachectl`: the operator's CLI for the edge cache.
#[derive(Debug, Parser)]
#[command(name = "cachectl", version, about = "Inspect and operate edgerail's edge cache")]
pub struct CachectlCli {
    /// What to do.
    #[command(subcommand)]
    pub command: CachectlCommand,
}

/// `cachectl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CachectlCommand {
    /// Print the cache policy as a table.
    Policy,
    /// Print the items an invalidation of these tags or paths would send, and what it would cost
    /// this month (sends nothing).
    Plan {
        /// What to plan.
        #[command(flatten)]
        target: Target,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Settings (the mode and budget matter here).
        #[command(flatten)]
        backend: BackendArgs,
        /// Service calendar, for `today`.
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Invalidate tags or paths now.
    Invalidate {
        /// What to invalidate.
        #[command(flatten)]
        target: Target,
        /// Show progress until the invalidation completes.
        #[arg(long)]
        wait: bool,
        /// Print what would be sent and stop.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Backend settings.
        #[command(flatten)]
        backend: BackendArgs,
        /// Database (optional; records the invalidation when set).
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Fetch the whole warm set through the edge now.
    Warm {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Warming settings.
        #[command(flatten)]
        warm: WarmArgs,
        /// Database (the warm set is expanded with its ids).
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Read paths through the edge (WARM_BASE_URL) and check that each answer shows every change
    /// already sent for invalidation that covers it; exits non-zero when one does not.
    Verify {
        /// Paths, e.g. `/v1/lines /v1/formations/10701F`.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Changes sent for invalidation this recently are not checked: their invalidation may
        /// still be in progress (CloudFront's usually completes within a minute or two; a purge
        /// at once).
        #[arg(long, default_value = "90s", value_parser = plumbing::settings::parse_duration)]
        propagation: std::time::Duration,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The edge to read through.
        #[command(flatten)]
        warm: WarmArgs,
        /// Database settings.
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Pending changes, this month's invalidation items against the budget, recent invalidations,
    /// and the last hour's checks of invalidations through the edge.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The budget to report against.
        #[command(flatten)]
        backend: BackendArgs,
        /// Database settings.
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Tags or paths named on the command line.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Cache tags, e.g. `formation:10701F`, or a family such as `formation:*` (every formation)
    /// (repeatable).
    #[arg(long = "tag", num_args = 1..)]
    pub tags: Vec<String>,
    /// Paths, e.g. `/v1/lines` or `/v1/formations/*` (repeatable).
    #[arg(long = "path", num_args = 1..)]
    pub paths: Vec<String>,
}

/// A setup problem, reported before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A required setting is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database secret gave no URL.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
}

impl DatabaseArgs {
    /// Whether a database is configured (a URL, or a secret holding one).
    pub fn is_configured(&self) -> bool {
        self.database.is_configured()
    }
}

/// The embedded policy.
///
/// # Errors
///
/// The policy is invalid (a build defect).
pub fn policy() -> Result<&'static Policy, SetupError> {
    Policy::embedded().map_err(|e| SetupError::Invalid(format!("embedded policy: {e}")))
}

/// The service calendar.
///
/// # Errors
///
/// Invalid zone or day start.
pub fn calendar(db: &DatabaseArgs) -> Result<ServiceCalendar, SetupError> {
    let settings = &db.service_calendar;
    ServiceCalendar::new(&settings.service_tz, &settings.service_day_start)
        .map_err(|e| SetupError::Invalid(e.to_string()))
}

/// Credentials for the database secret from the standard AWS chain: the environment,
/// `AWS_PROFILE` (SSO and credential processes included), the container or instance role, as
/// for CloudFront.
///
/// # Errors
///
/// No credentials or no region could be found.
async fn chain_credentials() -> Result<secret::Credentials, SetupError> {
    use aws_credential_types::provider::ProvideCredentials as _;

    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::backend::https_client())
        .load()
        .await;
    let region = match config.region() {
        Some(region) => region.to_string(),
        None => secret::region_from_env()?,
    };
    let provider = config
        .credentials_provider()
        .ok_or(SetupError::Missing("AWS credentials for DATABASE_SECRET_ARN (none in the standard chain)"))?;
    let identity = provider
        .provide_credentials()
        .await
        .map_err(|e| SetupError::Invalid(format!("no AWS credentials for DATABASE_SECRET_ARN: {e}")))?;
    Ok(secret::Credentials { identity, region })
}

/// Database connections a warmer run opens at most: it is one more client of a small database
/// (the template caps its runs at once too).
pub const MAX_CONNECTIONS: u32 = 2;

/// Opens the database (lazily, [`MAX_CONNECTIONS`]: the warmer is one more client of a small
/// database). Statements are proxy-safe: the warmer may reach the database through RDS Proxy or
/// PgBouncer.
///
/// # Errors
///
/// DATABASE_URL is missing or malformed.
pub async fn open_db(args: &DatabaseArgs) -> Result<Db, SetupError> {
    let (url, url_source) = match (&args.database.database_url, &args.database.database_secret_arn) {
        (Some(url), _) => (url.clone(), None),
        (None, Some(secret)) => {
            let credentials = chain_credentials().await?;
            let url = secret::database_url(secret, &credentials).await?;
            (url, Some(secret_source(secret.clone(), credentials)))
        }
        (None, None) => return Err(SetupError::Missing("DATABASE_URL or DATABASE_SECRET_ARN is required")),
    };
    let options = DbOptions {
        max_connections: MAX_CONNECTIONS,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: args.statement_timeout,
        feed_timeout: args.statement_timeout,
        idle_timeout: Duration::from_secs(30),
        proxy_compat: true,
        application_name: format!("edgerail-warmer-{}", std::process::id()),
        url_source,
    };
    store::open(Some(url.as_str()), std::path::Path::new(""), &options).map_err(|e| SetupError::Invalid(e.to_string()))
}

/// The secret as a source of the URL, read again when the database refuses the credentials (a
/// rotated password), so a long-running warmer recovers without a restart.
fn secret_source(secret: String, credentials: secret::Credentials) -> UrlSource {
    let (secret, credentials) = (std::sync::Arc::new(secret), std::sync::Arc::new(credentials));
    UrlSource::new(move || {
        let (secret, credentials) = (secret.clone(), credentials.clone());
        Box::pin(
            async move { secret::database_url(&secret, &credentials).await.map_err(|e| plumbing::error_chain(&e)) },
        )
    })
}

/// Builds the configured invalidation backend.
///
/// # Errors
///
/// A setting the backend needs is missing.
pub async fn invalidator(args: &BackendArgs) -> Result<Invalidator, SetupError> {
    Ok(match args.invalidator {
        InvalidatorKind::Cloudfront => {
            let id = args
                .distribution_id
                .clone()
                .ok_or(SetupError::Missing("INVALIDATOR=cloudfront needs DISTRIBUTION_ID (or --distribution-id)"))?;
            Invalidator::CloudFront(
                CloudFront::from_env(id, args.retry_base, args.retry_attempts, args.call_timeout).await,
            )
        }
        InvalidatorKind::Purge => {
            let url = args
                .purge_url
                .as_deref()
                .ok_or(SetupError::Missing("INVALIDATOR=purge needs PURGE_URL (or --purge-url)"))?;
            Invalidator::Purge(Purge::new(url, args.call_timeout).map_err(|e| SetupError::Invalid(e.to_string()))?)
        }
        InvalidatorKind::None => Invalidator::None,
    })
}

/// Planner limits from the settings.
pub fn limits(args: &BackendArgs) -> Limits {
    Limits { collapse_at: args.collapse_at, ..Limits::default() }
}

/// The monthly path budget and the over-budget policy from the settings.
pub fn budget(args: &BackendArgs) -> BudgetPolicy {
    BudgetPolicy { budget: args.path_budget as u64, over_budget_every: args.over_budget_every }
}

/// Assembles a [`Warmer`].
///
/// # Errors
///
/// Missing or invalid settings.
pub async fn warmer(
    db: &DatabaseArgs,
    outbox: &OutboxArgs,
    backend: &BackendArgs,
    warm: &WarmArgs,
) -> Result<Warmer, SetupError> {
    // The warmer's mark on every request through the edge (the health check's too, which no one
    // learns), marked sensitive so that no log prints it.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = warm.warm_secret.as_deref().filter(|s| !s.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(secret)
            .map_err(|_| SetupError::Invalid("WARM_SECRET must be visible ASCII".into()))?;
        value.set_sensitive(true);
        headers.insert(cache_policy::WARM_HEADER, value);
    }
    let http = reqwest::Client::builder()
        .timeout(warm.timeout)
        .user_agent(concat!("edgerail-warmer/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .build()
        .map_err(|e| SetupError::Invalid(e.to_string()))?;
    let policy = policy()?;
    check_retention(outbox.retention, policy)?;
    let store = open_db(db).await?;
    Ok(Warmer {
        db: store,
        invalidator: invalidator(backend).await?,
        policy,
        calendar: calendar(db)?,
        mode: backend.mode.into(),
        limits: limits(backend),
        budget: budget(backend),
        batch: outbox.batch.max(1),
        settle: outbox.settle,
        retention: outbox.retention,
        lease: outbox.lease,
        repeat: outbox.repeat,
        warm: warm.clone(),
        wait_timeout: backend.wait_timeout,
        poll_interval: backend.poll_interval,
        http,
        metrics: false,
    })
}

/// Refuses a `WARMER_RETENTION` shorter than twice the longest local TTL of a route the feed
/// evicts. An instance whose last poll predates the processing of a pruned change drops its whole
/// cache on its next poll (it cannot read that change any more). A fresh answer was loaded less
/// than its local TTL ago, and a change it lacks was processed after that, so with a retention of
/// that TTL no instance loses a fresh answer to the prune; the factor two leaves room for the
/// load's own duration and the prune's clock.
///
/// # Errors
///
/// The retention is shorter than that.
pub fn check_retention(retention: Duration, policy: &Policy) -> Result<(), SetupError> {
    let floor = policy.max_evicted_local_ttl() * 2;
    if retention < floor {
        return Err(SetupError::Invalid(format!(
            "WARMER_RETENTION ({} s) must be at least {} s (twice the longest local TTL of a route the change \
             feed evicts): instances would drop fresh answers for changes pruned before they polled",
            retention.as_secs(),
            floor.as_secs(),
        )));
    }
    Ok(())
}

/// Makes sure the warmer's tables exist (they come with the API's migrations).
///
/// # Errors
///
/// The database is unreachable or not migrated.
pub async fn check_schema(db: &Db) -> Result<(), SetupError> {
    db.feed_start()
        .await
        .map(|_| ())
        .map_err(|e| SetupError::Invalid(format!("cannot read the change feed (run `api migrate`?): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definitions_are_consistent() {
        WarmerCli::command().debug_assert();
        CachectlCli::command().debug_assert();
    }

    #[test]
    fn plan_needs_tags_or_paths_but_not_both() {
        assert!(CachectlCli::try_parse_from(["cachectl", "plan"]).is_err());
        assert!(CachectlCli::try_parse_from(["cachectl", "plan", "--tag", "lines", "--path", "/v1/lines"]).is_err());
        let cli = CachectlCli::try_parse_from(["cachectl", "plan", "--tag", "lines", "formation:10701F"]).unwrap();
        let CachectlCommand::Plan { target, .. } = cli.command else { panic!() };
        assert_eq!(target.tags, ["lines", "formation:10701F"]);
    }

    #[test]
    fn a_retention_shorter_than_twice_the_longest_evicted_local_ttl_is_refused() {
        let policy = policy().unwrap();
        // The line pages keep 60 s; the OpenAPI document's hour is never evicted and does not count.
        assert_eq!(policy.max_evicted_local_ttl(), Duration::from_secs(60));
        let err = check_retention(Duration::from_secs(119), policy).unwrap_err().to_string();
        assert!(err.contains("WARMER_RETENTION (119 s) must be at least 120 s"), "{err}");
        check_retention(Duration::from_secs(120), policy).unwrap();
        check_retention(OutboxArgs::defaults().retention, policy).unwrap();
    }

    #[test]
    fn once_and_every_are_exclusive() {
        assert!(WarmerCli::try_parse_from(["warmer", "--once", "--every", "60s"]).is_err());
        assert!(WarmerCli::try_parse_from(["warmer", "--every", "soon"]).is_err());
        assert!(WarmerCli::try_parse_from(["warmer", "--every", "60s"]).unwrap().every.is_some());
    }
}
