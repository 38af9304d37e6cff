//! The settings every binary reads, declared once for clap, so a variable means the same in each
//! and is documented once. Libraries never see clap: the binaries turn these into the plain values
//! the libraries take (a URL, a `ServiceCalendar`, a duration).

use std::time::Duration;

use clap::Args;

/// A duration setting (`500ms`, `3s`, `5m`, `1h`, `7d`), as clap's value parser: the same grammar as
/// the cache policy's durations.
///
/// # Errors
///
/// The text is not a duration, with the reason.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    cache_policy::parse_duration(text).map_err(|e| e.to_string())
}

/// Whether metrics are written (`METRICS`): unset, they are on Lambda and off elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsMode {
    /// Embedded Metric Format lines on stdout.
    Emf,
    /// None.
    Off,
}

impl MetricsMode {
    /// Whether metrics are on, given the setting and whether the process runs on Lambda.
    pub fn enabled(setting: Option<Self>, on_lambda: bool) -> bool {
        setting.map_or(on_lambda, |mode| mode == Self::Emf)
    }
}

/// Where the database is.
#[derive(Debug, Clone, Default, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset,
    /// serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda
    /// it is required, or DATABASE_SECRET_ARN.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when
    /// DATABASE_URL is unset (docs/deploy.md lists the shapes understood).
    #[arg(long, env = "DATABASE_SECRET_ARN")]
    pub database_secret_arn: Option<String>,
}

impl DatabaseSettings {
    /// Whether a database is configured (a URL, or a secret holding one).
    pub fn is_configured(&self) -> bool {
        self.database_url.is_some() || self.database_secret_arn.is_some()
    }
}

/// The service calendar: when a service day starts, in which zone. The API's day bounds and the
/// warmer's `today` follow it, and `api migrate` records it for the database's triggers.
#[derive(Debug, Clone, Args)]
pub struct CalendarSettings {
    /// IANA time zone of the timetable.
    #[arg(long, env = "SERVICE_TZ", default_value = "Asia/Tokyo")]
    pub service_tz: String,
    /// Local time (HH:MM) at which a service day starts.
    #[arg(long, env = "SERVICE_DAY_START", default_value = "04:00")]
    pub service_day_start: String,
}
