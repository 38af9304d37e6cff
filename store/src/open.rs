//! One way to open the database, for every binary: a URL (or the embedded SQLite file) and the
//! pool settings; nothing touches the network until the first query.

use std::path::Path;

use crate::db::Db;
use crate::options::DbOptions;
use crate::postgres::PgStore;
#[cfg(feature = "sqlite")]
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
    /// SQLite was asked for (a `sqlite:` URL, or no URL at all) from a build without it: the Lambda
    /// build, which always reads PostgreSQL, leaves the embedded backend out.
    #[error("this build has no SQLite backend: set DATABASE_URL (or DATABASE_SECRET_ARN) to a PostgreSQL database")]
    NoSqlite,
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
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            PgStore::connect_lazy(url, options).map(Db::Postgres).map_err(OpenError::Url)
        }
        Some(url) if url.starts_with("sqlite:") => open_sqlite(Some(url), sqlite_path, options),
        Some(_) => Err(OpenError::Scheme),
        None => open_sqlite(None, sqlite_path, options),
    }
}

/// The SQLite database at `url`, or the embedded file at `path`.
#[cfg(feature = "sqlite")]
fn open_sqlite(url: Option<&str>, path: &Path, options: &DbOptions) -> Result<Db, OpenError> {
    match url {
        Some(url) => SqliteStore::connect_lazy(url, options.acquire_timeout).map(Db::Sqlite).map_err(OpenError::Url),
        None => SqliteStore::open_file(path, options.acquire_timeout)
            .map(Db::Sqlite)
            .map_err(|source| OpenError::Directory { path: path.display().to_string(), source }),
    }
}

/// Without the `sqlite` feature there is no embedded database to open.
#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_url: Option<&str>, _path: &Path, _options: &DbOptions) -> Result<Db, OpenError> {
    Err(OpenError::NoSqlite)
}
