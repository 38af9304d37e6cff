//! Everything edgerail keeps in its database, for the API and the warmer alike.
//!
//! The railway data is read through the [`Store`] trait, implemented for PostgreSQL (production,
//! behind RDS Proxy or PgBouncer) and SQLite (the embedded default). Both implementations pass one
//! test suite, so the default behaves like production. The crate also owns every statement on the
//! change feed (`cache_changes`, filled by database triggers so no writer has to know about
//! caching) and on the warmer's bookkeeping tables, the embedded migrations that create them, the
//! service calendar, and the demo data set.
//!
//! # Layout
//!
//! - [`model`]: the rows and answers ([`Line`] … [`Change`]).
//! - [`Store`] and [`Db`] (this file): read access plus the change feed, over either backend.
//! - `postgres` / `sqlite`: the two implementations; [`open`] picks one from a URL.
//! - [`outbox`]: the warmer's side of the feed: claiming, completing, pruning, its records.
//! - [`calendar`]: service days and their rollover.
//! - [`demo`]: realistic demo data, generated deterministically and loaded in bulk.
//! - [`StoreError`]: why a call failed, split into "unavailable, retry later" and the rest.
//!
//! # The change feed
//!
//! A reader keeps a [`FeedCursor`] and asks [`Store::feed_since`] for the changes that became
//! visible after it. Ids alone cannot say that on PostgreSQL: a transaction takes its ids when it
//! writes but makes them visible when it commits, possibly long after later ids were seen. So the
//! PostgreSQL cursor is a snapshot (`pg_current_snapshot()`) and each change row records its
//! writer's transaction id; a poll returns the rows visible now that were not visible in the
//! cursor's snapshot. No id is tracked, so a jump of millions of burned ids costs nothing, and a
//! transaction that was open when a reader started, or ran for an hour, is still seen when it
//! commits. SQLite has one writer at a time, so its ids become visible in order and the cursor is
//! the last id.

mod calendar;
pub mod demo;
mod error;
pub mod model;
mod open;
pub mod outbox;
mod postgres;
mod sql;
mod sqlite;

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};

pub use calendar::{CalendarError, ServiceCalendar};
pub use error::{StoreError, StoreResult};
pub use model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
pub use open::{DbOptions, OpenError, open};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use demo::DemoData;

/// A position in the change feed: what a reader has seen so far. Opaque; only the store that made
/// it can interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor(Cursor);

impl FeedCursor {
    /// The position before the first change of a SQLite feed. Readers get their positions from
    /// [`Store::feed_start`]; this one serves tests of code that only carries cursors around.
    pub fn sqlite_origin() -> Self {
        Self(Cursor::Id(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// SQLite: the highest change id seen (ids become visible in order there).
    Id(i64),
    /// PostgreSQL: the text form of the snapshot of the last read.
    Snapshot(String),
}

/// What one read of the change feed returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// Changes that became visible since the cursor, ordered by id; at most the limit asked for.
    pub changes: Vec<Change>,
    /// Where the next read starts.
    pub cursor: FeedCursor,
    /// More changes than the limit became visible: `changes` is incomplete and `cursor` has skipped
    /// to the present. The reader must forget everything it cached and start afresh.
    pub overflow: bool,
}

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

    /// The present position of the change feed: a reader starting here sees every change that
    /// becomes visible from now on, including those of transactions open right now.
    fn feed_start(&self) -> impl Future<Output = StoreResult<FeedCursor>> + Send;
    /// The changes that became visible after `cursor`, at most `limit` of them (see
    /// [`FeedPage::overflow`]). On PostgreSQL it runs under the store's feed timeout, which is
    /// shorter than the statement timeout: a locked feed fails the poll quickly.
    fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> impl Future<Output = StoreResult<FeedPage>> + Send;

    /// A trivial round trip, for the deep health check.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// Applies the embedded migrations and records the service calendar the triggers use.
    fn migrate(&self, calendar: &ServiceCalendar) -> impl Future<Output = StoreResult<()>> + Send;
    /// The service calendar the database's triggers use (set by [`Store::migrate`]): time zone
    /// name and day start in minutes. A reader whose own calendar differs would look for changes
    /// under the wrong service day's tags.
    fn trigger_calendar(&self) -> impl Future<Output = StoreResult<(String, i32)>> + Send;
    /// Whether the schema exists and holds any line (used to seed the embedded default once).
    fn has_data(&self) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Replaces all data with `data`, calling `progress` with the number of rows written after
    /// each chunk.
    fn load_demo(
        &self,
        data: &DemoData,
        progress: &(dyn Fn(u64) + Send + Sync),
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
            Db::Sqlite(s) => s.reads(),
        }
    }
}

/// How many ids are in a page of at most `limit` rows when one more row was asked for to detect
/// overflow: the page and whether it overflowed.
fn split_overflow(mut changes: Vec<Change>, limit: usize) -> (Vec<Change>, bool) {
    let overflow = changes.len() > limit;
    changes.truncate(limit);
    (changes, overflow)
}
