//! The schema: applying the embedded migrations with the triggers the policy's tables declare,
//! and what a binary checks of it at start (whether it exists, which calendar its triggers use).

use cache_policy::Table;

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::calendar::{DayRun, ServiceCalendar};
use crate::db::Db;
use crate::error::StoreResult;
use crate::sql;
use crate::statement::{Limit, Statement};

impl Db {
    /// Applies the embedded migrations, installs the triggers that record the tags `tables`
    /// declare (generated for this backend's dialect), and records the service calendar the
    /// triggers use.
    ///
    /// # Errors
    ///
    /// A migration or a statement failed; what the migrations applied stays applied.
    pub async fn migrate(&self, calendar: &ServiceCalendar, tables: &[Table]) -> StoreResult<()> {
        match self {
            Self::Postgres(s) => s.migrate(calendar, tables).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.migrate(calendar, tables).await,
        }
    }

    /// The service calendar the database's triggers use (set by [`Db::migrate`]): time zone name
    /// and day start in minutes. A reader whose own calendar differs would look for changes under
    /// the wrong service day's tags.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        let [calendar] = self.read(Limit::Data, [Statement::new(self.sql().trigger_calendar)]).await?;
        calendar.one("service calendar")
    }

    /// Whether the database's triggers would put any instant within `window` of `now` in another
    /// service day than `calendar` does: the calendar `migrate` recorded (zone and day start), and
    /// the runs of days it wrote from the zone's rules then. A tzdata update since `migrate` that
    /// moved a clock change shows in the runs only. `None` when they agree; else what differs.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn calendar_mismatch(
        &self,
        calendar: &ServiceCalendar,
        now: DateTime<Utc>,
        window: Days,
    ) -> StoreResult<Option<String>> {
        let (zone, day_start) = self.trigger_calendar().await?;
        if let Some(text) = calendar.mismatch(&zone, day_start) {
            return Ok(Some(text));
        }
        let today = calendar.service_date(now);
        let (from, to) = (today - window, today + window);
        let (first, last) = (from.to_string(), to.to_string());
        let runs = Statement::new(self.sql().day_runs).bind(first.as_str()).bind(last.as_str());
        let [rows] = self.read(Limit::Data, [runs]).await?;
        let theirs: Vec<(DateTime<Utc>, NaiveDate, NaiveDate)> = rows.decode()?;
        let theirs: Vec<DayRun> =
            theirs.into_iter().map(|(starts_at, day, last_day)| DayRun { starts_at, day, last_day }).collect();
        Ok(calendar.runs_mismatch(&theirs, from, to))
    }

    /// Whether the schema exists and holds any line (used to seed the embedded default once).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn has_data(&self) -> StoreResult<bool> {
        let [schema] = self.read(Limit::Data, [Statement::new(self.sql().has_schema)]).await?;
        if !schema.one::<(bool,)>("catalogue row")?.0 {
            return Ok(false);
        }
        let [data] = self.read(Limit::Data, [Statement::new(sql::HAS_DATA)]).await?;
        Ok(data.one::<(bool,)>("row")?.0)
    }
}
