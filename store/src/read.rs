//! The [`Store`] trait: read access to the railway data plus the change feed, which both
//! backends implement and one test suite checks.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};

use crate::calendar::ServiceCalendar;
use crate::demo::DemoData;
use crate::error::StoreResult;
use crate::feed::{FeedCursor, FeedPage};
use crate::model::{FormationDetail, FormationSummary, Line, LineStations, Operation, OperationDetail, Sighting};

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
