//! Setting types both binaries parse the same way.

use std::time::Duration;

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
