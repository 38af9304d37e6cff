//! [`Db`]: the configured backend, as one type.

use chrono::{DateTime, NaiveDate, Utc};

use crate::calendar::ServiceCalendar;
use crate::demo::DemoData;
use crate::error::StoreResult;
use crate::feed::{FeedCursor, FeedPage};
use crate::model::{FormationDetail, FormationSummary, Line, LineStations, Operation, OperationDetail, Sighting};
use crate::postgres::PgStore;
use crate::read::Store;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteStore;

/// The configured store: PostgreSQL in production, SQLite as the embedded default.
///
/// An enum rather than `dyn Store` keeps the trait's async methods free of boxing.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (RDS, RDS Proxy, PgBouncer, local).
    Postgres(PgStore),
    /// SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
}

impl Db {
    /// Whether a read inside [`crate::with_feed_start`] also reads the feed's position in the same
    /// round trip (PostgreSQL). SQLite reads a local file, where a separate
    /// [`Store::feed_start`] costs microseconds.
    pub fn reads_feed_start_with_data(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Db::Postgres($s) => $call.await,
            #[cfg(feature = "sqlite")]
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
    async fn feed_start(&self) -> StoreResult<FeedCursor> {
        delegate!(self, s => s.feed_start())
    }
    async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        delegate!(self, s => s.feed_since(cursor, limit))
    }
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self, s => s.ping())
    }
    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        delegate!(self, s => s.migrate(calendar))
    }
    async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        delegate!(self, s => s.trigger_calendar())
    }
    async fn has_data(&self) -> StoreResult<bool> {
        delegate!(self, s => s.has_data())
    }
    async fn load_demo(&self, data: &DemoData, progress: &(dyn Fn(u64) + Send + Sync)) -> StoreResult<()> {
        delegate!(self, s => s.load_demo(data, progress))
    }
    async fn close(&self) {
        delegate!(self, s => s.close())
    }
    fn reads(&self) -> u64 {
        match self {
            Db::Postgres(s) => s.reads(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(s) => s.reads(),
        }
    }
}
