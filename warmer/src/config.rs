//! Settings shared by `warmer` and `cachectl`: flags with environment fallbacks.

use std::time::Duration;

use clap::{Args, ValueEnum};
use plumbing::settings::parse_duration;

/// Which invalidation backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InvalidatorKind {
    /// CloudFront `CreateInvalidation` (DISTRIBUTION_ID).
    Cloudfront,
    /// HTTP PURGE to a Varnish-style cache (PURGE_URL).
    Purge,
    /// Log only.
    None,
}

/// How changed tags become invalidation items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// `#tag` items (CloudFront cache tags, Varnish xkey).
    Tags,
    /// Paths from the policy's route templates.
    Paths,
}

impl From<ModeArg> for cache_policy::plan::Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Tags => Self::Tags,
            ModeArg::Paths => Self::Paths,
        }
    }
}

/// Where invalidations go and how they are planned.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Invalidation backend.
    #[arg(long, env = "INVALIDATOR", value_enum, default_value = "none")]
    pub invalidator: InvalidatorKind,
    /// CloudFront distribution to invalidate (INVALIDATOR=cloudfront).
    #[arg(long, env = "DISTRIBUTION_ID")]
    pub distribution_id: Option<String>,
    /// Base URL of the cache to purge (INVALIDATOR=purge), e.g. http://127.0.0.1:6081.
    #[arg(long, env = "PURGE_URL")]
    pub purge_url: Option<String>,
    /// Invalidate by cache tag or by path.
    #[arg(long, env = "INVALIDATION_MODE", value_enum, default_value = "paths")]
    pub mode: ModeArg,
    /// Paths per calendar month (CloudFront's free tier is 1000). Batches are coarsened within
    /// collections to fit; once spent, batches are coalesced (see INVALIDATION_OVER_BUDGET_EVERY).
    #[arg(long, env = "INVALIDATION_PATH_BUDGET", default_value_t = 1000)]
    pub path_budget: usize,
    /// Over the month's budget, at most one batch per this interval; changes wait and coalesce.
    #[arg(long, env = "INVALIDATION_OVER_BUDGET_EVERY", default_value = "5m", value_parser = parse_duration)]
    pub over_budget_every: Duration,
    /// This many paths under one prefix become one wildcard.
    #[arg(long, env = "INVALIDATION_COLLAPSE_AT", default_value_t = 50)]
    pub collapse_at: usize,
    /// First delay when CloudFront says too many invalidations are in progress (doubles each retry).
    #[arg(long, env = "INVALIDATION_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Attempts when CloudFront says too many invalidations are in progress.
    #[arg(long, env = "INVALIDATION_RETRY_ATTEMPTS", default_value_t = 5)]
    pub retry_attempts: u32,
    /// How long to wait for an invalidation to complete before warming (CloudFront).
    #[arg(long, env = "INVALIDATION_WAIT", default_value = "90s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// How often to ask CloudFront whether an invalidation completed.
    #[arg(long, env = "INVALIDATION_POLL", default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// The longest one call to the invalidation API may take (CloudFront's, or a purge): one
    /// that accepts a request and never answers fails the call.
    #[arg(long, env = "INVALIDATION_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub call_timeout: Duration,
}

/// How the edge is warmed.
#[derive(Debug, Clone, Args)]
pub struct WarmArgs {
    /// Base URL warm requests go to: the distribution, or the local edge. Unset: no warming.
    #[arg(long = "base-url", env = "WARM_BASE_URL")]
    pub base_url: Option<String>,
    /// Upper bound of the warm set's floor (policy routes with `warm = true`, expanded with ids).
    #[arg(long, env = "WARM_MAX_PATHS", default_value_t = 200)]
    pub max_paths: usize,
    /// Most warm requests one tick sends: what invalidations emptied first, then what is due.
    #[arg(long = "warm-budget", env = "WARM_BUDGET", default_value_t = 200)]
    pub budget: usize,
    /// Most learned paths kept and warmed (those ranked first stay: paths that exist, then by
    /// recent fetches).
    #[arg(long, env = "WARM_LEARNED_MAX", default_value_t = 1000)]
    pub learned_max: usize,
    /// A learned path the edge has not fetched from the origin for this long is forgotten.
    #[arg(long, env = "WARM_LEARNED_MAX_AGE", default_value = "1h", value_parser = parse_duration)]
    pub learned_max_age: Duration,
    /// Warm requests in flight at once.
    #[arg(long, env = "WARM_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Timeout of one warm request.
    #[arg(long, env = "WARM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Sent as `x-edgerail-warm` with every warm request, so the API (given the same WARM_SECRET)
    /// does not learn the warmer's own fetches. Unset: the header is not sent, and the API counts
    /// the warmer's fetches like a viewer's.
    #[arg(long, env = "WARM_SECRET", hide_env_values = true)]
    pub warm_secret: Option<String>,
}

/// The database and the service calendar (for `today`): what every command that reads the
/// database shares.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The API's database (the change feed lives there).
    #[command(flatten)]
    pub database: plumbing::settings::DatabaseSettings,
    /// The service calendar (the same as the API's).
    #[command(flatten)]
    pub service_calendar: plumbing::settings::CalendarSettings,
    /// The longest one database round trip may take (a statement waiting on a lock, or a
    /// connection gone silent): past it the call fails, and with it the warmer's tick, which the
    /// next one retries.
    #[arg(long = "db-statement-timeout", env = "DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
}

/// How a tick drains the outbox: the warmer's own settings, not the database's.
#[derive(Debug, Clone, Args)]
pub struct OutboxArgs {
    /// Most distinct tags one tick claims; it takes every pending change that carries them, so
    /// one tick drains any backlog of those tags, however many rows it has.
    #[arg(long, env = "WARMER_BATCH", default_value_t = 10_000)]
    pub batch: i64,
    /// How long a change must have been visible (committed) before it is claimed, so every API
    /// instance has evicted it before the edge refetches. At least the API's CHANGE_MAX_LAG.
    #[arg(long, env = "WARMER_SETTLE", default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Processed changes older than this are deleted. At least twice the longest local TTL of a
    /// route with tags (2 min): an instance whose last poll predates a deleted change drops its
    /// cache.
    #[arg(long, env = "WARMER_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
    /// The longest a tick holds the warmer's lease, at most one tick working at a time whatever
    /// invokes it. At least the longest a tick takes (the function's timeout on Lambda): a tick
    /// killed at its timeout blocks the next for at most this long.
    #[arg(long, env = "WARMER_LEASE", default_value = "2m", value_parser = parse_duration)]
    pub lease: Duration,
    /// Send every completed invalidation once more, whether or not the warmer read a stale page
    /// back. For layered caches (CloudFront with Origin Shield): a location purged before the
    /// shield can refill from the shield's old copy, and the warmer reads back at one location
    /// only; the second purge, after the first completed, clears every location. Doubles the
    /// invalidation paths.
    #[arg(long, env = "INVALIDATION_REPEAT", default_value_t = false, action = clap::ArgAction::Set)]
    pub repeat: bool,
}

impl OutboxArgs {
    /// The defaults, for commands that warm without draining the outbox.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: OutboxArgs,
        }
        <Only as clap::Parser>::parse_from(["defaults"]).args
    }
}

impl BackendArgs {
    /// The defaults, for commands that only warm.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: BackendArgs,
        }
        <Only as clap::Parser>::parse_from(["defaults"]).args
    }
}
