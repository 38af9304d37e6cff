//! The settings every binary that opens the database shares, declared once for clap: where the
//! database is, and the service calendar. The API and the warmer flatten these into their own
//! configuration, so a variable means the same in both and is documented once.

use clap::Args;

use crate::calendar::{CalendarError, ServiceCalendar};

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

impl CalendarSettings {
    /// The calendar these settings describe.
    ///
    /// # Errors
    ///
    /// An unknown zone or a malformed day start.
    pub fn calendar(&self) -> Result<ServiceCalendar, CalendarError> {
        ServiceCalendar::new(&self.service_tz, &self.service_day_start)
    }
}
