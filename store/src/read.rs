//! The [`Store`] trait: read access to the railway data plus the change feed, and its one
//! implementation, for [`Db`]: each read is written once, as statements for `Db::read`, and one
//! test suite runs it on both backends.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};

use crate::calendar::ServiceCalendar;
use crate::db::{Begin, Db, Limit, Statement, timestamp_text};
use crate::demo::DemoData;
use crate::error::{StoreError, StoreResult};
use crate::feed::{self, FeedCursor, FeedPage};
use crate::model::{
    FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation, OperationDetail,
    Sighting, Station,
};
use crate::sql::{self, summaries};

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
    /// A station and the latest `limit` sightings there, newest first; `None` when the station
    /// does not exist.
    fn station_sightings(
        &self,
        station_id: &str,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Option<(Station, Vec<Sighting>)>>> + Send;

    /// The present position of the change feed: a reader starting here sees every change that
    /// becomes visible from now on, including those of transactions open right now.
    fn feed_start(&self) -> impl Future<Output = StoreResult<FeedCursor>> + Send;
    /// The changes that became visible after `cursor`, at most `limit` of them (see
    /// [`FeedPage::overflow`]). On PostgreSQL it runs under the store's feed timeout, which is
    /// shorter than the statement timeout: a locked feed fails the poll quickly.
    fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> impl Future<Output = StoreResult<FeedPage>> + Send;

    /// A trivial round trip, for the deep health check.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// Applies the embedded migrations, installs the triggers that record the tags the policy's
    /// tables declare (generated for this backend's dialect), and records the service calendar
    /// the triggers use.
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

impl Store for Db {
    async fn lines(&self) -> StoreResult<Vec<Line>> {
        let [lines] = self.read(Limit::Data, [Statement::new(sql::LINES)]).await?;
        lines.decode()
    }

    async fn line_stations(&self, line_id: &str) -> StoreResult<Option<LineStations>> {
        let [line, stations] = self
            .read(Limit::Data, [Statement::new(sql::LINE).bind(line_id), Statement::new(sql::STATIONS).bind(line_id)])
            .await?;
        let Some(line) = line.first::<Line>()? else { return Ok(None) };
        Ok(Some(LineStations { line, stations: stations.decode::<Station>()? }))
    }

    async fn formations(&self) -> StoreResult<Vec<FormationSummary>> {
        let [formations, latest] = self
            .read(Limit::Data, [Statement::new(sql::FORMATIONS), Statement::new(sql::LATEST_PER_FORMATION)])
            .await?;
        Ok(summaries(formations.decode::<Formation>()?, latest.decode::<Sighting>()?))
    }

    async fn formation(&self, id: &str) -> StoreResult<Option<FormationDetail>> {
        let [formation, sightings] = self
            .read(
                Limit::Data,
                [
                    Statement::new(sql::FORMATION).bind(id),
                    Statement::new(sql::FORMATION_SIGHTINGS).bind(id).bind(FORMATION_SIGHTINGS),
                ],
            )
            .await?;
        let Some(formation) = formation.first::<Formation>()? else { return Ok(None) };
        Ok(Some(FormationDetail { formation, sightings: sightings.decode()? }))
    }

    async fn operations(&self, date: NaiveDate) -> StoreResult<Vec<Operation>> {
        let [operations] = self.read(Limit::Data, [Statement::new(sql::OPERATIONS).bind(date)]).await?;
        operations.decode()
    }

    async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<OperationDetail>> {
        let [operation, sightings] = self
            .read(
                Limit::Data,
                [
                    Statement::new(sql::OPERATION).bind(date).bind(number),
                    Statement::new(sql::OPERATION_SIGHTINGS).bind(number).bind(from).bind(until),
                ],
            )
            .await?;
        let Some(operation) = operation.first::<Operation>()? else { return Ok(None) };
        Ok(Some(OperationDetail { operation, sightings: sightings.decode()? }))
    }

    async fn latest_sightings(&self, limit: i64) -> StoreResult<Vec<Sighting>> {
        let [sightings] = self.read(Limit::Data, [Statement::new(sql::LATEST_SIGHTINGS).bind(limit)]).await?;
        sightings.decode()
    }

    async fn station_sightings(&self, station_id: &str, limit: i64) -> StoreResult<Option<(Station, Vec<Sighting>)>> {
        const STATION: &str = "SELECT id, line_id, name, position FROM stations WHERE id = $1";
        // The latest-sightings index walked newest first, keeping this station's: a station sees
        // about one sighting in eighty, so a page of 50 reads a few thousand index entries.
        const SIGHTINGS: &str = "SELECT s.id, s.formation_id, s.operation_number, s.station_id, s.seen_at \
             FROM sightings s WHERE s.station_id = $1 ORDER BY s.seen_at DESC, s.id DESC LIMIT $2";
        let [station, sightings] = self
            .read(
                Limit::Data,
                [Statement::new(STATION).bind(station_id), Statement::new(SIGHTINGS).bind(station_id).bind(limit)],
            )
            .await?;
        let Some(station) = station.first::<Station>()? else { return Ok(None) };
        Ok(Some((station, sightings.decode()?)))
    }

    async fn feed_start(&self) -> StoreResult<FeedCursor> {
        feed::start(self).await
    }

    async fn feed_since(&self, cursor: &FeedCursor, limit: usize) -> StoreResult<FeedPage> {
        feed::since(self, cursor, limit).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(Limit::Data, [Statement::new("SELECT 1")]).await?;
        Ok(())
    }

    async fn migrate(&self, calendar: &ServiceCalendar) -> StoreResult<()> {
        let policy = cache_policy::Policy::embedded().map_err(|e| StoreError::Data(e.to_string()))?;
        match self {
            Self::Postgres(s) => s.migrate(calendar, policy.tables()).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.migrate(calendar, policy.tables()).await,
        }
    }

    async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        let [calendar] = self.read(Limit::Data, [Statement::new(self.sql().trigger_calendar)]).await?;
        calendar.one("service calendar")
    }

    async fn has_data(&self) -> StoreResult<bool> {
        let [schema] = self.read(Limit::Data, [Statement::new(self.sql().has_schema)]).await?;
        if !schema.one::<(bool,)>("catalogue row")?.0 {
            return Ok(false);
        }
        let [data] = self.read(Limit::Data, [Statement::new(sql::HAS_DATA)]).await?;
        Ok(data.one::<(bool,)>("row")?.0)
    }

    async fn load_demo(&self, data: &DemoData, progress: &(dyn Fn(u64) + Send + Sync)) -> StoreResult<()> {
        const CHUNK: usize = 10_000;
        // Rows travel as one JSON array per chunk and table, unpacked server-side: one statement
        // per chunk instead of one per row.
        let tables: [Vec<serde_json::Value>; 5] = [
            data.lines.iter().map(|l| serde_json::json!([l.id, l.name, l.color])).collect(),
            data.stations.iter().map(|s| serde_json::json!([s.id, s.line_id, s.name, s.position])).collect(),
            data.formations.iter().map(|f| serde_json::json!([f.id, f.series, f.cars, f.note])).collect(),
            data.operations
                .iter()
                .map(|o| serde_json::json!([o.service_date.to_string(), o.number, o.formation_id]))
                .collect(),
            data.sightings
                .iter()
                .map(|s| {
                    serde_json::json!([s.formation_id, s.operation_number, s.station_id, timestamp_text(s.seen_at)])
                })
                .collect(),
        ];
        let mut tx = self.begin(Begin::Write).await?;
        let before = tx.fetch(Statement::new(sql::MAX_CHANGE)).await?.one::<(i64,)>("change id")?.0;
        for delete in sql::DEMO_TABLES {
            tx.execute(Statement::new(delete)).await?;
        }
        for (insert, rows) in self.sql().demo_inserts.into_iter().zip(&tables) {
            for chunk in rows.chunks(CHUNK) {
                let json = serde_json::Value::Array(chunk.to_vec()).to_string();
                tx.execute(Statement::new(insert).bind(json.as_str())).await?;
                progress(chunk.len() as u64);
            }
        }
        // The triggers recorded the touched tags once per statement (PostgreSQL) or per row
        // (SQLite): keep one row per distinct tag.
        let last = tx.fetch(Statement::new(sql::MAX_CHANGE)).await?.one::<(i64,)>("change id")?.0;
        tx.execute(Statement::new(sql::COMPACT_CHANGES_INSERT).bind(before).bind(last)).await?;
        tx.execute(Statement::new(sql::COMPACT_CHANGES_DELETE).bind(before).bind(last)).await?;
        tx.commit().await
    }

    async fn close(&self) {
        match self {
            Self::Postgres(s) => s.close().await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.close().await,
        }
    }

    fn reads(&self) -> u64 {
        match self {
            Self::Postgres(s) => s.reads(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.reads(),
        }
    }
}
