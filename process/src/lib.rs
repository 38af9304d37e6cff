//! Process plumbing shared by the `api`, `warmer` and `cachectl` binaries.
//!
//! It lives in a crate of its own so that the warmer can set up logging and wait for a shutdown
//! signal without linking the API (axum, lambda_http, moka, compression).
//!
//! # Layout
//!
//! - [`init_logging`] and [`LogFormat`]: JSON lines on Lambda, readable text locally.
//! - [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.

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

/// Installs the global subscriber. `RUST_LOG` filters it (default `info`). A second call (tests
/// build several apps in one process) is a no-op.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
