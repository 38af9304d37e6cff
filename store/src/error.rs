//! [`StoreError`]: why a store call failed, split by what the caller should do about it.

/// Why a store call failed. The split decides the HTTP answer: an unavailable database is a `503`
/// with `Retry-After` (or a stale copy), anything else a generic `500`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached in time: pool exhausted, connection refused or lost,
    /// statement timeout, server shutting down or out of connections.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database did not answer within the caller's own time limit (a connection that went
    /// silent cannot be caught by the server-side statement timeout).
    #[error("database did not answer in time")]
    TimedOut,
    /// The database answered with an error that retrying will not fix.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value read from the database does not fit the model (e.g. a malformed date text in SQLite).
    #[error("unexpected data in the database: {0}")]
    Data(String),
    /// A table or column the cache policy does not declare was asked for.
    #[error("{0} is not declared in the cache policy")]
    Undeclared(String),
}

impl StoreError {
    /// Whether a retry later can succeed (drives `503` vs `500`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::TimedOut)
    }

    /// Whether the server, or a pooler in front of it, refused our login (a rotated password, a
    /// removed role): the URL may be worth reading again. PostgreSQL says so with SQLSTATE class
    /// 28; PgBouncer (up to 1.18 at least) with its catch-all 08P01 and a message naming the
    /// failed authentication (`SASL authentication failed`, `password authentication failed`).
    /// Read only as a class 28, a rotation through PgBouncer left every instance on the secret
    /// refused until it was recycled: none of them ever read the new password.
    pub fn is_refused_login(&self) -> bool {
        matches!(self, Self::Unavailable(sqlx::Error::Database(db))
            if db.code().is_some_and(|c| refuses_login(&c) || (c == "08P01" && db.message().contains("authentication failed"))))
    }

    /// Whether the server refused the statement for want of a privilege (SQLSTATE 42501).
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Query(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501"))
    }

    /// Whether the database itself could not be reached (no connection, or the server refusing
    /// them), as opposed to a statement that was too slow or waited on a lock: the first says
    /// every other call will fail too, the second only that this one did.
    pub fn is_unreachable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            Self::TimedOut => true,
            Self::Unavailable(err) => match err {
                E::Database(db) => db.code().is_some_and(|c| refuses_connections(&c)),
                _ => true,
            },
            _ => false,
        }
    }
}

/// SQLSTATEs of a server that cannot serve us right now: 57P0x shutting down or not yet
/// accepting connections, 53300 too many connections, 08xxx connection exceptions, and 28xxx
/// (28P01 a wrong password, 28000 no such role or no access): a rotated credential is an outage
/// until the new one is in use, never an error of the request.
fn refuses_connections(code: &str) -> bool {
    code.starts_with("57P") || code == "53300" || code.starts_with("08") || refuses_login(code)
}

/// SQLSTATEs of a login the server refused (class 28).
fn refuses_login(code: &str) -> bool {
    code.starts_with("28")
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &err {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Protocol(_) => true,
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // 57014 query_canceled (statement_timeout); SQLite 5/6 busy/locked.
                code == "57014" || refuses_connections(&code) || code == "5" || code == "6"
            }
            _ => false,
        };
        if unavailable { Self::Unavailable(err) } else { Self::Query(err) }
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;
