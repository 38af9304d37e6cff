//! The plumbing the `api`, `warmer` and `cachectl` binaries share at their edge: how a process
//! logs, writes metrics, learns that it must stop, and reads the settings every binary has.
//!
//! It lives in a crate of its own so that the warmer can set up logging and wait for a shutdown
//! signal without linking the API (axum, lambda_http, moka, compression).
//!
//! # Layout
//!
//! - [`init_logging`] and [`LogFormat`]: JSON lines on Lambda, readable text locally; the level
//!   from `RUST_LOG` (a level, or `target=level` pairs such as `info,store=debug`), else Lambda's
//!   `AWS_LAMBDA_LOG_LEVEL`.
//! - [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.
//! - [`error_chain`]: an error with its causes, the one form every binary logs errors in.
//! - [`emf`]: metrics as CloudWatch Embedded Metric Format lines on stdout.
//! - [`settings`]: the duration parser and `METRICS` mode both binaries' settings use.

pub mod emf;
pub mod settings;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (CloudWatch Logs Insights can query it), with the current span's
    /// fields, so a line can be tied to its request or warmer tick.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// The format in effect: the one asked for, else the one Lambda's logging configuration asks
    /// for (`AWS_LAMBDA_LOG_FORMAT`), else JSON on Lambda and text elsewhere.
    pub fn resolve(explicit: Option<Self>, on_lambda: bool) -> Self {
        let lambda = std::env::var("AWS_LAMBDA_LOG_FORMAT").ok().and_then(|f| match f.to_ascii_uppercase().as_str() {
            "JSON" => Some(Self::Json),
            "TEXT" => Some(Self::Text),
            _ => None,
        });
        explicit.or(lambda).unwrap_or(if on_lambda { Self::Json } else { Self::Text })
    }
}

/// The level filter from `rust_log` (`RUST_LOG`) when set, else from `lambda_level`
/// (`AWS_LAMBDA_LOG_LEVEL`, set by the function's logging configuration), else `info`; with a
/// warning to log when `rust_log` could not be read.
///
/// `RUST_LOG` takes a level (`debug`) or `target=level` pairs (`warn,api=debug,store=trace`):
/// tracing's `Targets` syntax, which covers what an operator sets without linking a regex engine
/// (span and field filters are not supported).
fn filter(rust_log: Option<&str>, lambda_level: Option<&str>) -> (Targets, Option<String>) {
    let level = match lambda_level.map(str::to_ascii_uppercase).as_deref() {
        Some("TRACE") => tracing::Level::TRACE,
        Some("DEBUG") => tracing::Level::DEBUG,
        Some("WARN") => tracing::Level::WARN,
        Some("ERROR" | "FATAL") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let fallback = Targets::new().with_default(level);
    match rust_log.map(str::trim).filter(|spec| !spec.is_empty()) {
        None => (fallback, None),
        Some(spec) => match spec.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(err) => (fallback, Some(format!("RUST_LOG={spec:?} ignored ({err}); logging at {level}"))),
        },
    }
}

/// Installs the global subscriber (see [`LogFormat::resolve`] and [`filter`] for the level).
/// A second call (tests build several apps in one process) is a no-op.
pub fn init_logging(format: LogFormat) {
    let (filter, warning) =
        filter(std::env::var("RUST_LOG").ok().as_deref(), std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_ansi(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry().with(layer.compact().with_filter(filter)).try_init(),
    };
    if let (Ok(()), Some(warning)) = (installed, warning) {
        tracing::warn!("{warning}");
    }
}

/// An error with its chain of causes (`outer: cause: root cause`), for one log field or summary:
/// every binary logs an error once, whole, in this one form.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves on SIGTERM (what Lambda, systemd and container runtimes send) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::level_filters::LevelFilter;

    use super::filter;

    #[test]
    fn an_error_is_written_with_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("root"));
        assert_eq!(super::error_chain(&err), "outer: root");
    }

    #[test]
    fn rust_log_sets_levels_per_target() {
        let (targets, warning) = filter(Some("warn,store=debug"), Some("ERROR"));
        assert_eq!(warning, None);
        assert!(targets.would_enable("store::postgres", &Level::DEBUG));
        assert!(!targets.would_enable("store::postgres", &Level::TRACE));
        assert!(targets.would_enable("api::cache", &Level::WARN));
        assert!(!targets.would_enable("api::cache", &Level::INFO));
    }

    #[test]
    fn lambda_level_applies_without_rust_log() {
        let (targets, warning) = filter(None, Some("debug"));
        assert_eq!((targets.default_level(), warning), (Some(LevelFilter::DEBUG), None));
        let (targets, _) = filter(Some("  "), Some("FATAL"));
        assert_eq!(targets.default_level(), Some(LevelFilter::ERROR));
        assert_eq!(filter(None, None).0.default_level(), Some(LevelFilter::INFO));
    }

    #[test]
    fn unreadable_rust_log_falls_back_with_a_warning() {
        let (targets, warning) = filter(Some("store=loud"), Some("WARN"));
        assert_eq!(targets.default_level(), Some(LevelFilter::WARN));
        assert!(warning.as_deref().is_some_and(|w| w.contains("store=loud") && w.contains("WARN")), "{warning:?}");
    }
}
