//! [`DbOptions`]: how a process's pool behaves.

use std::time::Duration;

use crate::credentials::UrlSource;

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
    /// Where to read the URL again when the server refuses the credentials (a rotated
    /// password); `None`: the URL is all there is, and a refused login stays an outage.
    pub url_source: Option<UrlSource>,
}
