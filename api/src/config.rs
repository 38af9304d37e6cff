//! Configuration: one typed struct read from flags and environment variables (clap `env`),
//! validated at start so a mistake is a clear message, not a misbehaving deploy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use plumbing::LogFormat;
use plumbing::settings::{CalendarSettings, DatabaseSettings, MetricsMode, parse_duration};
use store::{CalendarError, DbOptions, ServiceCalendar};

/// The `api` command line.
#[derive(Debug, Parser)]
#[command(name = "api", version, about = "edgerail read API: serves HTTP locally, or runs on AWS Lambda")]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
}

/// `api` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (on Lambda when AWS_LAMBDA_RUNTIME_API is set, else on BIND_ADDR).
    Serve,
    /// Apply the embedded database migrations and record the service calendar.
    Migrate,
    /// Replace all data with generated demo data (migrating first).
    #[cfg(feature = "seed")]
    Seed {
        /// Load the demo data set (the only data set there is; required so seeding is explicit).
        #[arg(long, required = true)]
        demo: bool,
        /// Multiplies the number of sightings (1 gives about 100k).
        #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
        scale: f64,
        /// Service days the sightings are spread over, today included (3650: ten years of a
        /// site), each past day alike and today by the part of its service hours that has
        /// passed (none before 05:00); operations cover them and two weeks ahead.
        #[arg(long, default_value_t = store::demo::SIGHTING_DAYS, value_parser = clap::value_parser!(u64).range(1..=36_500))]
        days: u64,
    },
}

#[cfg(feature = "seed")]
fn parse_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err("expected a number from 0 to 100".into()),
    }
}

/// Every setting of the API. Defaults depend on where it runs: Lambda gets one connection per
/// instance, proxy-safe statements and JSON logs; a local server a normal pool and readable logs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// SQLite file used when DATABASE_URL is unset.
    #[arg(long, env = "SQLITE_PATH", default_value = "./data/edgerail.sqlite")]
    pub sqlite_path: PathBuf,
    /// Address of the local HTTP server.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind_addr: SocketAddr,
    /// The service calendar.
    #[command(flatten)]
    pub service_calendar: CalendarSettings,
    /// Response header that carries cache tags (CloudFront's CacheTagConfig, Varnish xkey).
    #[arg(long, env = "CACHE_TAG_HEADER", default_value = "Cache-Tag")]
    pub cache_tag_header: String,
    /// How often an instance that is serving checks the change feed.
    #[arg(long, env = "CHANGE_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub change_poll_interval: Duration,
    /// How long a request waits for a due change poll before answering from the cache anyway (not at
    /// all while the last poll took longer than this, or failed).
    #[arg(long, env = "CHANGE_POLL_WAIT", default_value = "50ms", value_parser = parse_duration)]
    pub change_poll_wait: Duration,
    /// How long one change poll's statement may run (a locked or slow feed fails the poll, not
    /// requests).
    #[arg(long, env = "CHANGE_POLL_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub change_poll_timeout: Duration,
    /// The freshness bound: a cached answer not vouched for by a successful change poll within
    /// this long is reloaded instead of served. The warmer's WARMER_SETTLE must be at least this.
    #[arg(long, env = "CHANGE_MAX_LAG", default_value = "3s", value_parser = parse_duration)]
    pub change_max_lag: Duration,
    /// Byte bound of the in-process cache, its fresh entries and stale-if-error copies together;
    /// 0 turns it off [default: a quarter of the function's memory on Lambda, 64 MiB locally].
    #[arg(long, env = "LOCAL_CACHE_MAX_BYTES")]
    pub local_cache_max_bytes: Option<u64>,
    /// Pooled PostgreSQL connections [default: 1 on Lambda, 10 locally].
    #[arg(long, env = "DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Longest wait for a connection before answering 503 (a login refused with credentials from
    /// a secret then waits up to as long for the secret's re-read, within the read's own bound).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Server-side timeout of each statement.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_statement_timeout: Duration,
    /// Idle connections are closed after this [default: 30s on Lambda, 10m locally].
    #[arg(long, env = "DB_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub db_idle_timeout: Option<Duration>,
    /// No named prepared statements (PgBouncer transaction pooling, RDS Proxy) [default: on for
    /// Lambda, off locally].
    #[arg(long, env = "DB_PROXY_COMPAT", value_parser = clap::builder::BoolishValueParser::new())]
    pub db_proxy_compat: Option<bool>,
    /// CloudWatch Embedded Metric Format lines on stdout [default: on Lambda, off locally].
    #[arg(long, env = "METRICS", value_enum)]
    pub metrics: Option<MetricsMode>,
    /// How often the metrics of an instance that is serving are written.
    #[arg(long, env = "METRICS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub metrics_interval: Duration,
    /// How often an instance that is serving adds the paths it answered for the edge to the
    /// learned warm set (one statement); 0 turns learning off.
    #[arg(long, env = "LEARN_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub learn_flush_interval: Duration,
    /// Most distinct paths an instance counts between two flushes (the rest are not counted).
    #[arg(long, env = "LEARN_MAX_PATHS", default_value_t = 1000)]
    pub learn_max_paths: usize,
    /// The value of `x-edgerail-warm` that marks the warmer's own fetches (the warmer's
    /// WARM_SECRET): they are not learned. A viewer cannot forge it; a request with any other
    /// value is a viewer's. Unset: every fetch is learned, the warmer's too.
    #[arg(long, env = "WARM_SECRET", hide_env_values = true)]
    pub warm_secret: Option<String>,
    /// Log format [default: AWS_LAMBDA_LOG_FORMAT on Lambda, else json there and text locally].
    /// Filter with RUST_LOG (else AWS_LAMBDA_LOG_LEVEL, else info).
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Local server: how long to wait for in-flight requests after SIGTERM/Ctrl-C.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// The build id `/health-check` reports [default: a hash of the code this binary was built
    /// from]. The warmer invalidates the edge once when it sees a new one.
    #[arg(long, env = "BUILD_ID", default_value = env!("EDGERAIL_BUILD_ID"))]
    pub build_id: String,
    /// Set by the Lambda service: the function's memory size in MB, which bounds the cache there.
    #[arg(long, env = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", hide = true)]
    pub lambda_memory_mb: Option<u64>,
    /// Set by the Lambda service; its presence selects Lambda mode.
    #[arg(long, env = "AWS_LAMBDA_RUNTIME_API", hide = true)]
    pub lambda_runtime_api: Option<String>,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Lambda has no writable disk for the SQLite default and no database next to it.
    #[error(
        "DATABASE_URL is not set: on AWS Lambda the API needs a PostgreSQL database \
         (set DATABASE_URL or DATABASE_SECRET_ARN, through the stack's DatabaseUrl or DatabaseSecretArn parameter)"
    )]
    MissingDatabaseUrl,
    /// SERVICE_TZ / SERVICE_DAY_START.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The freshness bound leaves no room for a poll.
    #[error("CHANGE_MAX_LAG must be longer than CHANGE_POLL_INTERVAL plus CHANGE_POLL_WAIT")]
    MaxLag,
    /// CACHE_TAG_HEADER is not a valid header name.
    #[error("CACHE_TAG_HEADER {0:?} is not a valid HTTP header name")]
    TagHeader(String),
    /// DATABASE_URL has an unsupported scheme.
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    DatabaseScheme,
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    /// Whether the process runs inside AWS Lambda.
    pub fn on_lambda(&self) -> bool {
        self.lambda_runtime_api.is_some()
    }

    /// Pool size in effect.
    pub fn max_connections(&self) -> u32 {
        self.db_max_connections.unwrap_or(if self.on_lambda() { 1 } else { 10 })
    }

    /// Idle timeout in effect.
    pub fn idle_timeout(&self) -> Duration {
        self.db_idle_timeout.unwrap_or(if self.on_lambda() {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(600)
        })
    }

    /// Proxy compatibility in effect.
    pub fn proxy_compat(&self) -> bool {
        self.db_proxy_compat.unwrap_or(self.on_lambda())
    }

    /// Log format in effect.
    pub fn log_format(&self) -> LogFormat {
        LogFormat::resolve(self.log_format, self.on_lambda())
    }

    /// The in-process cache's byte bound in effect: `LOCAL_CACHE_MAX_BYTES` when set; on Lambda a
    /// quarter of the function's memory (32 MiB at 128 MB), leaving the rest to the runtime,
    /// compressed variants and the allocator; 64 MiB elsewhere.
    pub fn cache_max_bytes(&self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match (self.local_cache_max_bytes, self.lambda_memory_mb) {
            (Some(bytes), _) => bytes,
            (None, Some(mb)) if self.on_lambda() => mb * MIB / 4,
            _ => 64 * MIB,
        }
    }

    /// Whether metrics are written.
    pub fn metrics_enabled(&self) -> bool {
        MetricsMode::enabled(self.metrics, self.on_lambda())
    }

    /// Pool settings in effect.
    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            max_connections: self.max_connections(),
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
            feed_timeout: self.change_poll_timeout,
            idle_timeout: self.idle_timeout(),
            proxy_compat: self.proxy_compat(),
            application_name: format!("edgerail-api-{}", std::process::id()),
            url_source: None,
        }
    }

    /// The service calendar.
    ///
    /// # Errors
    ///
    /// An unknown zone or malformed day start.
    pub fn calendar(&self) -> Result<ServiceCalendar, ConfigError> {
        let settings = &self.service_calendar;
        Ok(ServiceCalendar::new(&settings.service_tz, &settings.service_day_start)?)
    }

    /// A short hash of the settings that shape answers without changing the code: the service
    /// calendar (every `today` and dated answer) and the tag header (what the edge purges by).
    /// `/health-check` reports it beside the build id, and the warmer flushes the edge when either
    /// changes: a deploy that only changes these changes answers the edge holds.
    pub fn answer_settings(&self) -> String {
        let settings = &self.service_calendar;
        let text = format!(
            "SERVICE_TZ={}\nSERVICE_DAY_START={}\nCACHE_TAG_HEADER={}",
            settings.service_tz,
            settings.service_day_start,
            self.cache_tag_header.to_ascii_lowercase()
        );
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }

    /// The tag header name.
    ///
    /// # Errors
    ///
    /// Not a valid header name.
    pub fn tag_header(&self) -> Result<http::HeaderName, ConfigError> {
        http::HeaderName::try_from(self.cache_tag_header.as_str())
            .map_err(|_| ConfigError::TagHeader(self.cache_tag_header.clone()))
    }

    /// Checks everything that can be checked without I/O.
    ///
    /// # Errors
    ///
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.calendar()?;
        self.tag_header()?;
        match self.database.database_url.as_deref() {
            None if self.on_lambda() && self.database.database_secret_arn.is_none() => {
                return Err(ConfigError::MissingDatabaseUrl);
            }
            Some(url) if !["postgres://", "postgresql://", "sqlite:"].iter().any(|p| url.starts_with(p)) => {
                return Err(ConfigError::DatabaseScheme);
            }
            _ => {}
        }
        if self.change_max_lag <= self.change_poll_interval + self.change_poll_wait {
            return Err(ConfigError::MaxLag);
        }
        for (name, value) in [
            ("CHANGE_POLL_INTERVAL", self.change_poll_interval),
            ("CHANGE_POLL_TIMEOUT", self.change_poll_timeout),
            ("DB_ACQUIRE_TIMEOUT", self.db_acquire_timeout),
            ("DB_STATEMENT_TIMEOUT", self.db_statement_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("api").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lambda_defaults_differ_from_local_ones() {
        let local = parse(&[]).config;
        assert!(!local.on_lambda());
        assert_eq!(local.max_connections(), 10);
        assert!(!local.proxy_compat());
        assert_eq!(local.log_format(), LogFormat::Text);
        let lambda = parse(&["--lambda-runtime-api", "127.0.0.1:9001", "--database-url", "postgres://x/y"]).config;
        assert_eq!(lambda.max_connections(), 1);
        assert!(lambda.proxy_compat());
        assert_eq!(lambda.idle_timeout(), Duration::from_secs(30));
        assert_eq!(lambda.log_format(), LogFormat::Json);
        lambda.validate().unwrap();
    }

    #[test]
    fn the_cache_bound_follows_the_function_memory_on_lambda() {
        let lambda = ["--lambda-runtime-api", "127.0.0.1:9001", "--database-url", "postgres://x/y"];
        let sized = |extra: &[&str]| parse(&[&lambda[..], extra].concat()).config.cache_max_bytes();
        assert_eq!(sized(&["--lambda-memory-mb", "128"]), 32 * 1024 * 1024);
        assert_eq!(sized(&["--lambda-memory-mb", "1024"]), 256 * 1024 * 1024);
        assert_eq!(sized(&["--lambda-memory-mb", "128", "--local-cache-max-bytes", "1000"]), 1000, "explicit wins");
        assert_eq!(parse(&["--lambda-memory-mb", "128"]).config.cache_max_bytes(), 64 * 1024 * 1024, "not on Lambda");
    }

    #[test]
    fn lambda_without_database_url_is_a_clear_error() {
        let config = parse(&["--lambda-runtime-api", "127.0.0.1:9001"]).config;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL is not set"), "{err}");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(parse(&["--service-tz", "Nowhere/City"]).config.validate().is_err());
        assert!(parse(&["--cache-tag-header", "bad header"]).config.validate().is_err());
        assert!(parse(&["--database-url", "mysql://x"]).config.validate().is_err());
        assert!(parse(&["--db-acquire-timeout", "0s"]).config.validate().is_err());
        assert!(parse(&["--change-max-lag", "1s"]).config.validate().is_err(), "no room for a poll");
        assert!(parse(&["--change-max-lag", "2s"]).config.validate().is_ok());
        assert!(Cli::try_parse_from(["api", "--change-poll-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["api", "seed"]).is_err(), "seed needs --demo");
        assert!(Cli::try_parse_from(["api", "seed", "--demo", "--scale", "-1"]).is_err());
        assert!(matches!(
            parse(&["seed", "--demo", "--scale", "0.5"]).command,
            Some(Command::Seed { demo: true, scale, days: store::demo::SIGHTING_DAYS }) if (scale - 0.5).abs() < f64::EPSILON
        ));
        assert!(matches!(
            parse(&["seed", "--demo", "--scale", "100", "--days", "3650"]).command,
            Some(Command::Seed { days: 3650, .. })
        ));
        assert!(Cli::try_parse_from(["api", "seed", "--demo", "--days", "0"]).is_err());
        assert!(Cli::try_parse_from(["api", "seed", "--demo", "--days", "36501"]).is_err());
    }
}
