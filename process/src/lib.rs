//! Process plumbing shared by the `api`, `warmer` and `cachectl` binaries.
//!
//! It lives in a crate of its own so that the warmer can set up logging and wait for a shutdown
//! signal without linking the API (axum, lambda_http, moka, compression).
//!
//! # Layout
//!
//! - [`init_logging`] and [`LogFormat`]: JSON lines on Lambda, readable text locally; the level
//!   from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`.
//! - [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.
//! - [`emf`]: metrics as CloudWatch Embedded Metric Format lines on stdout.

pub mod emf;

use tracing_subscriber::EnvFilter;

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

/// The level filter: `RUST_LOG` when set, else Lambda's `AWS_LAMBDA_LOG_LEVEL` (set by the
/// function's logging configuration), else `info`.
fn filter() -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let level = match std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_uppercase()).as_deref() {
        Ok("TRACE") => "trace",
        Ok("DEBUG") => "debug",
        Ok("WARN") => "warn",
        Ok("ERROR" | "FATAL") => "error",
        _ => "info",
    };
    EnvFilter::new(level)
}

/// Installs the global subscriber (see [`LogFormat::resolve`] and the level rules of this crate).
/// A second call (tests build several apps in one process) is a no-op.
pub fn init_logging(format: LogFormat) {
    let filter = filter();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).with_ansi(false).try_init()
        }
        LogFormat::Text => builder.compact().try_init(),
    };
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
