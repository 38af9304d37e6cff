//! One way to open the database, for every binary: a URL (or the embedded SQLite file) and the
//! pool settings; nothing touches the network until the first query.

use std::path::Path;

use crate::db::Db;
use crate::options::DbOptions;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;

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
