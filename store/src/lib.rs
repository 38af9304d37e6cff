//! Data access: the [`Store`] trait and its PostgreSQL and SQLite implementations.
//!
//! Both implementations pass one test suite (`tests/tests/it/store.rs`), so the embedded SQLite
//! default behaves like production PostgreSQL.

mod postgres;
mod sqlite;

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use postgres::{PgStore, PgStoreOptions};
pub use sqlite::SqliteStore;

use crate::calendar::ServiceCalendar;
use crate::seed::DemoData;

/// A railway line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Line {
    /// Stable identifier, e.g. `minato`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Brand colour as `#rrggbb`, when the line has one.
    pub color: Option<String>,
}

/// A station on a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Station {
    /// Stable identifier.
    pub id: String,
    /// The line the station belongs to.
    pub line_id: String,
    /// Display name.
    pub name: String,
    /// Order along the line, from 1.
    pub position: i32,
}

/// A line with its stations in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineStations {
    /// The line.
    pub line: Line,
    /// Its stations, ordered by position.
    pub stations: Vec<Station>,
}

/// A train formation (a fixed set of cars), e.g. `10701F` of series `10000`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Formation {
    /// Formation number.
    pub id: String,
    /// Rolling-stock series.
    pub series: String,
    /// Number of cars.
    pub cars: i32,
    /// Free-text remark (liveries, refurbishment).
    pub note: Option<String>,
}

/// A report that a formation was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Sighting {
    /// Identifier, increasing with insertion.
    pub id: i64,
    /// The formation seen.
    pub formation_id: String,
    /// The operation it was running, if known.
    pub operation_number: Option<String>,
    /// Where it was seen, if known.
    pub station_id: Option<String>,
    /// When it was seen.
    pub seen_at: DateTime<Utc>,
}

/// A formation with its latest sighting (`/v1/formations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormationSummary {
    /// The formation.
    #[serde(flatten)]
    pub formation: Formation,
    /// Its most recent sighting.
    pub latest_sighting: Option<Sighting>,
}

/// A formation with its latest sightings (`/v1/formations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormationDetail {
    /// The formation.
    #[serde(flatten)]
    pub formation: Formation,
    /// Its [`FORMATION_SIGHTINGS`] most recent sightings, newest first.
    pub sightings: Vec<Sighting>,
}

/// How many sightings a formation's page shows.
pub const FORMATION_SIGHTINGS: i64 = 20;

/// One operation (a numbered daily working) of a service day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Operation {
    /// The service day.
    pub service_date: NaiveDate,
    /// Operation number, e.g. `0612`.
    pub number: String,
    /// The formation assigned, if any.
    pub formation_id: Option<String>,
}

/// An operation with the sightings reported for it that service day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationDetail {
    /// The operation.
    #[serde(flatten)]
    pub operation: Operation,
    /// Sightings naming this operation during its service day, newest first.
    pub sightings: Vec<Sighting>,
}

/// One row of the change feed: a cache tag touched by a data write.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Change {
    /// Feed position.
    pub id: i64,
    /// The tag, in the vocabulary responses carry.
    pub tag: String,
}

/// Why a store call failed. The split decides the HTTP answer: an unavailable database is a `503`
/// with `Retry-After` (or a stale copy), anything else a generic `500`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached in time: pool exhausted, connection refused or lost,
    /// statement timeout, server shutting down or out of connections.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error that retrying will not fix.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value read from the database does not fit the model (e.g. a malformed date text in SQLite).
    #[error("unexpected data in the database: {0}")]
    Data(String),
}

impl StoreError {
    /// Whether a retry later can succeed (drives `503` vs `500`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &err {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Protocol(_) => true,
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // 57014 query_canceled (statement_timeout), 57P0x shutdown/cannot connect now,
                // 53300 too_many_connections, 08xxx connection exceptions; SQLite 5/6 busy/locked.
                code == "57014"
                    || code.starts_with("57P")
                    || code == "53300"
                    || code.starts_with("08")
                    || code == "5"
                    || code == "6"
            }
            _ => false,
        };
        if unavailable { Self::Unavailable(err) } else { Self::Query(err) }
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Read access to the railway data plus the change feed, over PostgreSQL or SQLite.
///
/// Every read is one short transaction on at most one pooled connection, so it works behind
/// PgBouncer transaction pooling and RDS Proxy.
pub trait Store: Send + Sync + 'static {
    /// Every line, ordered by id.
    fn lines(&self) -> impl Future<Output = StoreResult<Vec<Line>>> + Send;
    /// A line and its stations; `None` when the line does not exist.
    fn line_stations(&self, line_id: &str) -> impl Future<Output = StoreResult<Option<LineStations>>> + Send;
    /// Every formation with its latest sighting, ordered by id.
    fn formations(&self) -> impl Future<Output = StoreResult<Vec<FormationSummary>>> + Send;
    /// One formation with its latest sightings; `None` when it does not exist.
    fn formation(&self, id: &str) -> impl Future<Output = StoreResult<Option<FormationDetail>>> + Send;
    /// The operations of a service day, ordered by number.
    fn operations(&self, date: NaiveDate) -> impl Future<Output = StoreResult<Vec<Operation>>> + Send;
    /// One operation and its sightings within `[from, until)`, the service day in UTC.
    fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Option<OperationDetail>>> + Send;
    /// The latest `limit` sightings, newest first.
    fn latest_sightings(&self, limit: i64) -> impl Future<Output = StoreResult<Vec<Sighting>>> + Send;

    /// The highest change id so far (0 when the feed is empty).
    fn max_change_id(&self) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Changes with an id above `after`, or in `also` (ids seen missing earlier, which a slower
    /// concurrent transaction may since have committed), ordered by id, at most `limit`.
    fn changes_since(
        &self,
        after: i64,
        also: &[i64],
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<Change>>> + Send;

    /// A trivial round trip, for the deep health check.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// Applies the embedded migrations and records the service calendar the triggers use.
    fn migrate(&self, calendar: &ServiceCalendar) -> impl Future<Output = StoreResult<()>> + Send;
    /// Whether the schema exists and holds any line (used to seed the embedded default once).
    fn has_data(&self) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Replaces all data with `data`, reporting progress in rows.
    fn load_demo(
        &self,
        data: &DemoData,
        progress: &indicatif::ProgressBar,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Closes every connection; later calls fail as unavailable.
    fn close(&self) -> impl Future<Output = ()> + Send;
    /// Read round trips started so far (data and change feed): observability for tests and
    /// benchmarks ("database queries per origin request").
    fn reads(&self) -> u64;
}

/// The configured store: PostgreSQL in production, SQLite as the embedded default.
///
/// An enum rather than `dyn Store` keeps the trait's async methods free of boxing.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (RDS, RDS Proxy, PgBouncer, local).
    Postgres(PgStore),
    /// SQLite file.
    Sqlite(SqliteStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Postgres($s) => $call.await,
            Db::Sqlite($s) => $call.await,
        }
    };
}

impl Store for Db {
    async fn lines(&self) -> StoreResult<Vec<Line>> {
        delegate!(self, s => s.lines())
    }
    async fn line_stations(&self, line_id: &str) -> StoreResult<Option<LineStations>> {
        delegate!(self, s => s.line_stations(line_id))
    }
    async fn formations(&self) -> StoreResult<Vec<FormationSummary>> {
        delegate!(self, s => s.formations())
    }
    async fn formation(&self, id: &str) -> StoreResult<Option<FormationDetail>> {
        delegate!(self, s => s.formation(id))
    }
    async fn operations(&self, date: NaiveDate) -> StoreResult<Vec<Operation>> {
        delegate!(self, s => s.operations(date))
    }
    async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<OperationDetail>> {
        delegate!(self, s => s.operation(date, number, from, until))
    }
    async fn latest_sightings(&self, limit: i64) -> StoreResult<Vec<Sighting>> {
        delegate!(self, s => s.latest_sightings(limit))
    }
    async fn max_change_id(&self) -> StoreResult<i64> {
        delegate!(self, s => s.max_change_id())
    }
    async fn changes_since(&self, after: i64, also: &[i64], limit: i64) -> StoreResult<Vec<Change>> {
        delegate!(self, s => s.changes_since(after, also, limit))
    }
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self, s => s.ping())
    }
    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        delegate!(self, s => s.migrate(calendar))
    }
    async fn has_data(&self) -> StoreResult<bool> {
        delegate!(self, s => s.has_data())
    }
    async fn load_demo(&self, data: &DemoData, progress: &indicatif::ProgressBar) -> StoreResult<()> {
        delegate!(self, s => s.load_demo(data, progress))
    }
    async fn close(&self) {
        delegate!(self, s => s.close())
    }
    fn reads(&self) -> u64 {
        match self {
            Db::Postgres(s) => s.reads(),
            Db::Sqlite(s) => s.reads(),
        }
    }
}

/// Query text shared by both backends (standard SQL both dialects accept).
pub(crate) mod sql {
    pub const LINES: &str = "SELECT id, name, color FROM lines ORDER BY id";
    pub const LINE: &str = "SELECT id, name, color FROM lines WHERE id = $1";
    pub const STATIONS: &str =
        "SELECT id, line_id, name, position FROM stations WHERE line_id = $1 ORDER BY position, id";
    pub const FORMATIONS: &str = "SELECT id, series, cars, note FROM formations ORDER BY id";
    pub const FORMATION: &str = "SELECT id, series, cars, note FROM formations WHERE id = $1";
    pub const FORMATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
         FROM sightings s WHERE s.formation_id = $1 ORDER BY s.seen_at DESC, s.id DESC LIMIT $2";
    /// The latest sighting of every formation; the correlated subquery walks the
    /// `(formation_id, seen_at DESC, id DESC)` index once per formation.
    pub const LATEST_PER_FORMATION: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
         FROM formations f JOIN sightings s ON s.id = (SELECT s2.id FROM sightings s2 WHERE s2.formation_id = f.id \
         ORDER BY s2.seen_at DESC, s2.id DESC LIMIT 1)";
    pub const OPERATIONS: &str =
        "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 ORDER BY number";
    pub const OPERATION: &str =
        "SELECT service_date, number, formation_id FROM operations WHERE service_date = $1 AND number = $2";
    pub const OPERATION_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
         FROM sightings s WHERE s.operation_number = $1 AND s.seen_at >= $2 AND s.seen_at < $3 \
         ORDER BY s.seen_at DESC, s.id DESC LIMIT 200";
    pub const LATEST_SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
         FROM sightings s ORDER BY s.seen_at DESC, s.id DESC LIMIT $1";
    pub const MAX_CHANGE: &str = "SELECT COALESCE(MAX(id), 0) FROM cache_changes";
    pub const HAS_DATA: &str = "SELECT EXISTS (SELECT 1 FROM lines)";
    /// After a bulk load: one new row per distinct tag recorded in `($1, $2]` …
    pub const COMPACT_CHANGES_INSERT: &str =
        "INSERT INTO cache_changes (tag) SELECT DISTINCT tag FROM cache_changes WHERE id > $1 AND id <= $2";
    /// … then the per-row originals go.
    pub const COMPACT_CHANGES_DELETE: &str = "DELETE FROM cache_changes WHERE id > $1 AND id <= $2";
}

/// Merges per-formation latest sightings into summaries, keeping the formation order.
pub(crate) fn summaries(formations: Vec<Formation>, latest: Vec<Sighting>) -> Vec<FormationSummary> {
    let mut by_formation: std::collections::HashMap<String, Sighting> =
        latest.into_iter().map(|s| (s.formation_id.clone(), s)).collect();
    formations
        .into_iter()
        .map(|formation| FormationSummary { latest_sighting: by_formation.remove(&formation.id), formation })
        .collect()
}
