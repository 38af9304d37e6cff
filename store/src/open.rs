//! One way to open the database, for every binary: a URL (or the embedded SQLite file) and the
//! pool settings; nothing touches the network until the first query.

use std::path::Path;
use std::time::Duration;

use crate::{Db, PgStore, SqliteStore};

/// Pool settings. Which values suit depends on the caller: an API instance on Lambda holds one
/// connection, the warmer two, a local server ten.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a caller may wait for a connection before the call fails as unavailable.
    pub acquire_timeout: Duration,
    /// Server-side limit of each statement (PostgreSQL), and the client-side bound of each call.
    pub statement_timeout: Duration,
    /// Limit of one change-feed read: shorter than `statement_timeout`, so a locked feed fails
    /// the poll quickly instead of holding the connection.
    pub feed_timeout: Duration,
    /// Idle connections are closed after this, so a quiet instance holds no server slot.
    pub idle_timeout: Duration,
    /// No named prepared statements and no unusual startup parameters: needed behind PgBouncer
    /// transaction pooling and RDS Proxy.
    pub proxy_compat: bool,
    /// Shown in `pg_stat_activity`, so operators can tell whose connections they see.
    pub application_name: String,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is neither `postgres://`, `postgresql://` nor `sqlite:`.
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    Scheme,
    /// The URL could not be parsed.
    #[error("DATABASE_URL is not a valid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The directory of the embedded SQLite file cannot be created.
    #[error("cannot create the directory of {path}: {source}")]
    Directory {
        /// The SQLite file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Opens `url` lazily, or the SQLite file at `sqlite_path` when there is no URL.
///
/// # Errors
///
/// [`OpenError`] for a malformed URL or an uncreatable directory.
pub fn open(url: Option<&str>, sqlite_path: &Path, options: &DbOptions) -> Result<Db, OpenError> {
    match url {
        Some(url) if url.starts_with("sqlite:") => {
            SqliteStore::connect_lazy(url, options.acquire_timeout).map(Db::Sqlite).map_err(OpenError::Url)
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            PgStore::connect_lazy(url, options).map(Db::Postgres).map_err(OpenError::Url)
        }
        Some(_) => Err(OpenError::Scheme),
        None => SqliteStore::open_file(sqlite_path, options.acquire_timeout)
            .map(Db::Sqlite)
            .map_err(|source| OpenError::Directory { path: sqlite_path.display().to_string(), source }),
    }
}
